//! Operating aigw: `aigw --version` and `aigw doctor`.

mod doctor;
mod version;
