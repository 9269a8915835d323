//! Operating aigw: `aigw --version`, `aigw doctor` and the Grafana
//! dashboard (`deploy/grafana/aigw.json`).

mod dashboard;
mod doctor;
mod version;
