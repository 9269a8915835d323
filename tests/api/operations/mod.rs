//! Operating aigw: the run command (`scripts/run`), `aigw --version`,
//! `aigw doctor` and the Grafana dashboard (`deploy/grafana/aigw.json`).

mod dashboard;
mod doctor;
mod run_command;
mod version;
