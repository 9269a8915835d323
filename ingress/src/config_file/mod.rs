//! Configuration as code: an `aigw.toml` declaring providers, aliases and
//! keys, planned against the running state, applied as the admin API's own
//! commands, and exported back from it.
//!
//! - [`schema`]: the file's shape and reading it, every problem with its line;
//! - [`desired`]: the state a file asks for, checked by the admin API's
//!   functions, environment references resolved;
//! - [`plan`]: the changes from the running state, and their rendering;
//! - [`apply`]: running them, one applier at a time;
//! - [`export`]: the running state as a file.
//!
//! Invariants: a file is applied whole or not at all (every problem is
//! found before the first command); applying the same file again changes
//! nothing; secrets live in the environment, never in the file, the plan or
//! the logs. Teams and projects have their seam in [`schema`] (reserved
//! sections) and [`plan::Change`] (one arm per kind of thing).

pub mod apply;
pub mod desired;
pub mod export;
pub mod plan;
pub mod schema;

use std::path::Path;

pub use apply::{Applied, Issued};
pub use plan::{Change, Plan};
pub use schema::{Declared, Problem, Problems};

use crate::AppState;
use crate::error::ApiError;

/// How a file is applied.
#[derive(Debug, Clone)]
pub struct Options {
    /// Also remove (revoke, for keys) what the file does not declare.
    pub prune: bool,
    /// Recorded as the actor of every event the apply makes.
    pub actor: String,
}

/// The actor of changes made from the file at `path`.
pub fn actor(path: &Path) -> String {
    format!("config:{}", path.display())
}

#[derive(Debug, thiserror::Error)]
pub enum ConfigError {
    #[error("cannot read {path}: {error}")]
    Read { path: String, error: std::io::Error },
    #[error("the configuration is invalid; nothing was applied:\n{0}")]
    Invalid(Problems),
    #[error(
        "{change} failed after {done} change(s) were applied: {error}; applying again goes on from there"
    )]
    Failed {
        change: String,
        done: usize,
        error: ApiError,
    },
    #[error("export: {0}")]
    Export(String),
    #[error("database: {0}")]
    Database(#[from] sqlx::Error),
    #[error(transparent)]
    Runtime(#[from] aigw_runtime::RuntimeError),
}

/// Reads and parses the file at `path`.
pub fn read(path: &Path) -> Result<Declared, ConfigError> {
    let shown = path.display().to_string();
    let read_error = |error| ConfigError::Read {
        path: shown.clone(),
        error,
    };
    let meta = std::fs::metadata(path).map_err(read_error)?;
    if meta.len() > schema::MAX_FILE_BYTES as u64 {
        return Err(ConfigError::Invalid(Problems {
            file: shown,
            list: vec![Problem {
                line: 1,
                path: String::new(),
                message: format!("the file is larger than {} bytes", schema::MAX_FILE_BYTES),
            }],
        }));
    }
    let text = std::fs::read_to_string(path).map_err(read_error)?;
    schema::parse(&shown, &text).map_err(ConfigError::Invalid)
}

fn process_env(var: &str) -> Option<String> {
    std::env::var(var).ok()
}

/// `aigw config plan`: what applying the file at `path` would change.
pub async fn plan_file(state: &AppState, path: &Path, prune: bool) -> Result<Plan, ConfigError> {
    let declared = read(path)?;
    apply::plan(
        state,
        &path.display().to_string(),
        &declared,
        &process_env,
        prune,
    )
    .await
}

/// `aigw config apply` and `AIGW_CONFIG`: applies the file at `path`.
pub async fn apply_file(
    state: &AppState,
    path: &Path,
    options: &Options,
) -> Result<Applied, ConfigError> {
    let declared = read(path)?;
    apply::apply(
        state,
        &path.display().to_string(),
        &declared,
        &process_env,
        options,
    )
    .await
}

/// `aigw config export`: the running state as a file, with a header
/// naming the environment variables it refers to.
pub async fn export_text(state: &AppState) -> Result<String, ConfigError> {
    state.registry.reload_all().await?;
    let (body, vars) = export::export(state)?;
    let mut text = String::from(
        "# aigw configuration, exported from the running state.\n\
         # Apply it with `aigw config apply -f <this file>`. Secrets are not in it:\n\
         # each credential is an environment reference, and keys are listed\n\
         # without their secrets.\n",
    );
    if !vars.is_empty() {
        text.push_str("# Set before applying: ");
        text.push_str(&vars.join(", "));
        text.push('\n');
    }
    text.push('\n');
    text.push_str(&body);
    Ok(text)
}
