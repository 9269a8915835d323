//! Rebuild when a migration is added: `sqlx::migrate!` embeds the directory
//! at compile time and would otherwise miss new files.

#![allow(clippy::print_stdout)]

fn main() {
    println!("cargo:rerun-if-changed=../migrations");
}
