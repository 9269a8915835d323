//! The git commit the `aigw` binary is built from, for `aigw --version`:
//! `AIGW_BUILD_COMMIT` when set (a build without the repository, such as a
//! container image, passes it in), else `git rev-parse HEAD`, else
//! `unknown`.
//!
//! Invariant: the script reruns when HEAD moves (a commit, a checkout, a
//! reset), so the embedded commit never lags the checkout it was built in.
//! Uncommitted changes are not flagged.

#![allow(clippy::print_stdout)]

use std::path::PathBuf;
use std::process::Command;

/// `git <args>` run in this checkout, its trimmed stdout if it succeeded.
fn git(args: &[&str]) -> Option<String> {
    let out = Command::new("git")
        .args(args)
        .current_dir(env!("CARGO_MANIFEST_DIR"))
        .output()
        .ok()?;
    let text = String::from_utf8(out.stdout).ok()?.trim().to_string();
    (out.status.success() && !text.is_empty()).then_some(text)
}

fn main() {
    println!("cargo:rerun-if-env-changed=AIGW_BUILD_COMMIT");
    let commit = match std::env::var("AIGW_BUILD_COMMIT") {
        Ok(c) if !c.trim().is_empty() => c.trim().to_string(),
        _ => git(&["rev-parse", "HEAD"]).unwrap_or_else(|| "unknown".into()),
    };
    // HEAD itself (a checkout), the branch it points to (a commit) and the
    // packed refs (a gc); in a worktree HEAD is in its own git dir and the
    // refs in the common one.
    let mut watched: Vec<PathBuf> = Vec::new();
    if let Some(dir) = git(&["rev-parse", "--absolute-git-dir"]) {
        watched.push(PathBuf::from(&dir).join("HEAD"));
        let common = git(&["rev-parse", "--git-common-dir"])
            .map(|c| PathBuf::from(env!("CARGO_MANIFEST_DIR")).join(c))
            .unwrap_or_else(|| PathBuf::from(&dir));
        watched.push(common.join("packed-refs"));
        if let Some(branch) = git(&["symbolic-ref", "-q", "HEAD"]) {
            watched.push(common.join(branch));
        }
    }
    // A missing file would rerun the script on every build; a ref that is
    // packed later deletes its file, which reruns it.
    for path in watched.iter().filter(|p| p.exists()) {
        println!("cargo:rerun-if-changed={}", path.display());
    }
    // Without any rerun-if-changed above (no repository), this keeps cargo
    // from rerunning the script on every change in the package.
    println!("cargo:rerun-if-changed=build.rs");
    println!("cargo:rustc-env=AIGW_COMMIT={commit}");
}
