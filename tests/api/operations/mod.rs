//! Operating aigw: the run command (`scripts/run`), `aigw --version`,
//! `aigw doctor`, the Grafana dashboard (`deploy/grafana/aigw.json`) and the
//! Kubernetes manifests (`deploy/kubernetes/`).

mod dashboard;
mod doctor;
mod kubernetes;
mod run_command;
mod version;
