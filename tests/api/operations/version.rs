//! `aigw --version`: the package version and the git commit the binary was
//! built from.

use std::process::Command;

fn git_head() -> Option<String> {
    let out = Command::new("git")
        .args(["rev-parse", "HEAD"])
        .current_dir(env!("CARGO_MANIFEST_DIR"))
        .output()
        .ok()?;
    out.status
        .success()
        .then(|| String::from_utf8(out.stdout).unwrap().trim().to_string())
}

#[test]
fn the_version_names_the_commit_it_was_built_from() {
    let out = Command::new(env!("CARGO_BIN_EXE_aigw"))
        .arg("--version")
        .output()
        .unwrap();
    assert!(out.status.success());
    let commit = std::env::var("AIGW_BUILD_COMMIT")
        .ok()
        .filter(|c| !c.trim().is_empty())
        .or_else(git_head)
        .unwrap_or_else(|| "unknown".into());
    assert_eq!(
        String::from_utf8(out.stdout).unwrap().trim(),
        format!("aigw {} (commit {commit})", env!("CARGO_PKG_VERSION"))
    );
}
