//! The shape of an `aigw.toml`: what it may declare and how each field is
//! read. Parsing never touches the running state.
//!
//! Invariants:
//! - every problem is collected (not only the first) and carries the line
//!   of the field it is about (or of its entry); the file's own syntax
//!   errors stop the reading at the first, which toml locates;
//! - a secret field (`api_key`, `api_keys`, `aws_secret_access_key`,
//!   `aws_session_token`) holds only an environment reference
//!   (`"${DEEPSEEK_API_KEY}"`): an inline value is refused, and no message
//!   ever repeats it;
//! - an entry's name is its table key (`[providers.deepseek]`), so names are
//!   unique within a section by TOML's own rule.

use std::collections::BTreeMap;

use aigw_events::{AliasTarget, Strategy};
use chrono::{DateTime, Utc};
use serde::Deserialize;
use serde::de::DeserializeOwned;
use toml::Spanned;

use crate::admin::PriceInput;

/// The largest file read (a deployment's whole configuration fits easily).
pub const MAX_FILE_BYTES: usize = 4 * 1024 * 1024;

/// One thing wrong with the file.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Problem {
    /// 1-based line in the file.
    pub line: usize,
    /// Where in the file: `providers.deepseek.api_key`.
    pub path: String,
    pub message: String,
}

/// Every problem of one file, in line order.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Problems {
    pub file: String,
    pub list: Vec<Problem>,
}

impl std::fmt::Display for Problems {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        for (n, p) in self.list.iter().enumerate() {
            if n > 0 {
                writeln!(f)?;
            }
            if p.path.is_empty() {
                write!(f, "{}:{}: {}", self.file, p.line, p.message)?;
            } else {
                write!(f, "{}:{}: {}: {}", self.file, p.line, p.path, p.message)?;
            }
        }
        Ok(())
    }
}

/// A reference to an environment variable holding a secret.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct EnvRef {
    pub var: String,
    pub line: usize,
    pub path: String,
}

/// A provider as declared: a preset plus overrides, or a custom
/// OpenAI-compatible endpoint (no `preset`).
#[derive(Debug, Clone, Default)]
pub struct ProviderDecl {
    pub name: String,
    pub line: usize,
    pub preset: Option<String>,
    pub base_url: Option<String>,
    pub variant: Option<String>,
    pub models: Option<Vec<String>>,
    pub prices: BTreeMap<String, PriceInput>,
    /// Azure: deployment name to the model it serves (`""`: not said).
    pub deployments: Option<BTreeMap<String, String>>,
    pub api_version: Option<String>,
    pub region: Option<String>,
    pub account_id: Option<String>,
    pub aws_access_key_id: Option<String>,
    pub api_key: Option<EnvRef>,
    pub api_keys: Vec<EnvRef>,
    pub aws_secret_access_key: Option<EnvRef>,
    pub aws_session_token: Option<EnvRef>,
    pub max_concurrency: Option<u32>,
    pub enabled: Option<bool>,
    /// The line of each field given.
    pub lines: BTreeMap<String, usize>,
}

/// An alias as declared.
#[derive(Debug, Clone)]
pub struct AliasDecl {
    pub name: String,
    pub line: usize,
    pub strategy: Option<Strategy>,
    pub targets: Vec<AliasTarget>,
    pub lines: BTreeMap<String, usize>,
}

/// A key as declared: its name and limits, never its secret.
#[derive(Debug, Clone, Default)]
pub struct KeyDecl {
    pub name: String,
    pub line: usize,
    pub owner: Option<String>,
    pub rpm: Option<u32>,
    pub tpm: Option<u64>,
    pub budget_usd: Option<f64>,
    pub budget_tokens: Option<i64>,
    pub budget_period: Option<aigw_events::key::BudgetPeriod>,
    pub max_concurrency: Option<u32>,
    pub allowed_models: Vec<String>,
    pub allowed_providers: Vec<String>,
    pub expires_at: Option<DateTime<Utc>>,
    pub lines: BTreeMap<String, usize>,
}

/// Everything one file declares.
#[derive(Debug, Clone, Default)]
pub struct Declared {
    pub providers: Vec<ProviderDecl>,
    pub aliases: Vec<AliasDecl>,
    pub keys: Vec<KeyDecl>,
}

// Lines come from the keys' spans: a table only made by deeper headers
// (`prices` in `[providers.x.prices.m]`) has no span of its own. Values are
// read as JSON values, typed field by field.
type Table = BTreeMap<Spanned<String>, serde_json::Value>;
type Section = BTreeMap<Spanned<String>, Table>;
type Reserved = BTreeMap<Spanned<String>, serde_json::Value>;

/// The file's top level. Teams and projects will be sections of their own
/// (`[teams.<name>]`, `[projects.<name>]`) once aigw has them: one more
/// field here, one more reader below, one more arm in the plan.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct RawFile {
    #[serde(default)]
    providers: Section,
    #[serde(default)]
    aliases: Section,
    #[serde(default)]
    keys: Section,
    #[serde(default)]
    teams: Option<Reserved>,
    #[serde(default)]
    projects: Option<Reserved>,
}

/// The 1-based line of byte `offset` of `text`.
pub fn line_of(text: &str, offset: usize) -> usize {
    let end = offset.min(text.len());
    text.as_bytes()[..end]
        .iter()
        .filter(|b| **b == b'\n')
        .count()
        + 1
}

/// Reads `text` (the file `file`): what it declares, or every problem.
pub fn parse(file: &str, text: &str) -> Result<Declared, Problems> {
    let fail = |list: Vec<Problem>| Problems {
        file: file.to_string(),
        list,
    };
    if text.len() > MAX_FILE_BYTES {
        return Err(fail(vec![Problem {
            line: 1,
            path: String::new(),
            message: format!("the file is larger than {MAX_FILE_BYTES} bytes"),
        }]));
    }
    let raw: RawFile = toml::from_str(text).map_err(|e| {
        let line = e.span().map_or(1, |s| line_of(text, s.start));
        fail(vec![Problem {
            line,
            path: String::new(),
            message: e.message().trim().to_string(),
        }])
    })?;
    let mut problems = Vec::new();
    for (section, value) in [("teams", &raw.teams), ("projects", &raw.projects)] {
        if let Some(v) = value {
            let line = v.keys().next().map_or_else(
                || {
                    text.lines()
                        .position(|l| l.trim_start().trim_start_matches('[').starts_with(section))
                        .map_or(1, |n| n + 1)
                },
                |k| line_of(text, k.span().start),
            );
            problems.push(Problem {
                line,
                path: section.into(),
                message: format!(
                    "{section} do not exist in aigw yet; this section is reserved for them"
                ),
            });
        }
    }
    let mut declared = Declared::default();
    for (name, table) in raw.providers {
        let mut r = Reader::new(text, "providers", name, table, &mut problems);
        let decl = ProviderDecl {
            preset: r.take("preset"),
            base_url: r.take("base_url"),
            variant: r.take("variant"),
            models: r.take("models"),
            prices: r.take("prices").unwrap_or_default(),
            deployments: r.take("deployments"),
            api_version: r.take("api_version"),
            region: r.take("region"),
            account_id: r.take("account_id"),
            aws_access_key_id: r.take("aws_access_key_id"),
            api_key: r.secret("api_key"),
            api_keys: r.secrets("api_keys"),
            aws_secret_access_key: r.secret("aws_secret_access_key"),
            aws_session_token: r.secret("aws_session_token"),
            max_concurrency: r.take("max_concurrency"),
            enabled: r.take("enabled"),
            name: r.name.clone(),
            line: r.line,
            lines: BTreeMap::new(),
        };
        let lines = r.finish();
        declared.providers.push(ProviderDecl { lines, ..decl });
    }
    for (name, table) in raw.aliases {
        let mut r = Reader::new(text, "aliases", name, table, &mut problems);
        let strategy = r.take("strategy");
        let targets = r.take("targets");
        if targets.is_none() && !r.lines.contains_key("targets") {
            r.problem(r.line, "targets", "an alias needs 'targets'".into());
        }
        let (name, line) = (r.name.clone(), r.line);
        let lines = r.finish();
        declared.aliases.push(AliasDecl {
            name,
            line,
            strategy,
            targets: targets.unwrap_or_default(),
            lines,
        });
    }
    for (name, table) in raw.keys {
        let mut r = Reader::new(text, "keys", name, table, &mut problems);
        let decl = KeyDecl {
            owner: r.take("owner"),
            rpm: r.take("rpm"),
            tpm: r.take("tpm"),
            budget_usd: r.take("budget_usd"),
            budget_tokens: r.take("budget_tokens"),
            budget_period: r.take("budget_period"),
            max_concurrency: r.take("max_concurrency"),
            allowed_models: r.take("allowed_models").unwrap_or_default(),
            allowed_providers: r.take("allowed_providers").unwrap_or_default(),
            expires_at: r.time("expires_at"),
            name: r.name.clone(),
            line: r.line,
            lines: BTreeMap::new(),
        };
        let lines = r.finish();
        declared.keys.push(KeyDecl { lines, ..decl });
    }
    if problems.is_empty() {
        Ok(declared)
    } else {
        problems.sort_by_key(|p| p.line);
        Err(fail(problems))
    }
}

/// Takes the fields of one entry one by one, noting each one's line and
/// every problem; what is left at the end is unknown.
struct Reader<'a> {
    text: &'a str,
    section: &'static str,
    name: String,
    line: usize,
    table: Table,
    lines: BTreeMap<String, usize>,
    problems: &'a mut Vec<Problem>,
}

impl<'a> Reader<'a> {
    fn new(
        text: &'a str,
        section: &'static str,
        name: Spanned<String>,
        table: Table,
        problems: &'a mut Vec<Problem>,
    ) -> Self {
        Self {
            text,
            section,
            line: line_of(text, name.span().start),
            name: name.into_inner(),
            table,
            lines: BTreeMap::new(),
            problems,
        }
    }

    fn path(&self, field: &str) -> String {
        format!("{}.{}.{field}", self.section, toml_key(&self.name))
    }

    fn problem(&mut self, line: usize, field: &str, message: String) {
        let path = self.path(field);
        self.problems.push(Problem {
            line,
            path,
            message,
        });
    }

    /// The raw value of `field` and its line, if given.
    fn raw(&mut self, field: &str) -> Option<(serde_json::Value, usize)> {
        let (key, value) = self.table.remove_entry(field)?;
        let line = line_of(self.text, key.span().start);
        self.lines.insert(field.to_string(), line);
        Some((value, line))
    }

    fn take<T: DeserializeOwned>(&mut self, field: &str) -> Option<T> {
        let (value, line) = self.raw(field)?;
        match serde_json::from_value::<T>(value) {
            Ok(v) => Some(v),
            Err(e) => {
                self.problem(line, field, e.to_string());
                None
            }
        }
    }

    /// A time: a TOML date-time or an RFC 3339 string.
    fn time(&mut self, field: &str) -> Option<DateTime<Utc>> {
        let (value, line) = self.raw(field)?;
        // A TOML date-time reads as toml's private one-field table.
        let text = match &value {
            serde_json::Value::String(s) => s.clone(),
            serde_json::Value::Object(o) if o.len() == 1 => o
                .values()
                .next()
                .and_then(|v| v.as_str())
                .unwrap_or_default()
                .to_string(),
            _ => String::new(),
        };
        match DateTime::parse_from_rfc3339(&text) {
            Ok(t) => Some(t.with_timezone(&Utc)),
            Err(_) => {
                self.problem(
                    line,
                    field,
                    "must be a date and time with its offset, e.g. 2027-01-01T00:00:00Z".into(),
                );
                None
            }
        }
    }

    fn env_ref(&mut self, field: &str, line: usize, value: &str) -> Option<EnvRef> {
        match env_var_name(value) {
            Some(var) => Some(EnvRef {
                var: var.to_string(),
                line,
                path: self.path(field),
            }),
            None => {
                // Never repeat the value: it may be the secret itself.
                self.problem(
                    line,
                    field,
                    "secrets are never written in the file: give an environment reference such as \"${DEEPSEEK_API_KEY}\"".into(),
                );
                None
            }
        }
    }

    fn secret(&mut self, field: &str) -> Option<EnvRef> {
        let (value, line) = self.raw(field)?;
        match value {
            serde_json::Value::String(s) => self.env_ref(field, line, &s),
            _ => {
                self.problem(
                    line,
                    field,
                    "must be a string: an environment reference such as \"${DEEPSEEK_API_KEY}\""
                        .into(),
                );
                None
            }
        }
    }

    fn secrets(&mut self, field: &str) -> Vec<EnvRef> {
        let Some((value, line)) = self.raw(field) else {
            return Vec::new();
        };
        let serde_json::Value::Array(items) = value else {
            self.problem(
                line,
                field,
                "must be a list of environment references such as [\"${OPENAI_API_KEY_2}\"]".into(),
            );
            return Vec::new();
        };
        let mut refs = Vec::new();
        for item in items {
            match item {
                serde_json::Value::String(s) => refs.extend(self.env_ref(field, line, &s)),
                _ => self.problem(
                    line,
                    field,
                    "every entry must be an environment reference such as \"${OPENAI_API_KEY_2}\""
                        .into(),
                ),
            }
        }
        refs
    }

    /// Reports the fields nobody took; returns the line of each taken one.
    fn finish(mut self) -> BTreeMap<String, usize> {
        let left: Vec<(String, usize)> = self
            .table
            .keys()
            .map(|k| (k.get_ref().clone(), line_of(self.text, k.span().start)))
            .collect();
        for (field, line) in left {
            self.problem(line, &field, "unknown field".into());
        }
        self.lines
    }
}

/// `VAR` of a whole `${VAR}` (letters, digits and `_`, not starting with a
/// digit), else `None`.
pub fn env_var_name(value: &str) -> Option<&str> {
    let var = value.strip_prefix("${")?.strip_suffix('}')?;
    let mut chars = var.chars();
    let first = chars.next()?;
    ((first.is_ascii_alphabetic() || first == '_')
        && chars.all(|c| c.is_ascii_alphanumeric() || c == '_'))
    .then_some(var)
}

/// A name as a TOML key: bare when it can be, quoted otherwise.
pub fn toml_key(name: &str) -> String {
    let bare = !name.is_empty()
        && name
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || c == '-' || c == '_');
    if bare {
        name.to_string()
    } else {
        toml::Value::String(name.to_string()).to_string()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_problem_is_listed_with_its_line() {
        let text = r#"
[providers.deepseek]
preset = "deepseek"
api_key = "sk-live-123456"

[providers.local]
base_url = "http://127.0.0.1:9/v1"
models = "not-a-list"
colour = "blue"

[keys.app]
rpm = "many"

[teams.a]
"#;
        let problems = parse("aigw.toml", text).unwrap_err();
        let got: Vec<(usize, &str)> = problems
            .list
            .iter()
            .map(|p| (p.line, p.path.as_str()))
            .collect();
        assert_eq!(
            got,
            [
                (4, "providers.deepseek.api_key"),
                (8, "providers.local.models"),
                (9, "providers.local.colour"),
                (12, "keys.app.rpm"),
                (14, "teams"),
            ]
        );
        // The inline secret is refused without being repeated.
        assert!(!problems.to_string().contains("sk-live"));
    }

    #[test]
    fn a_syntax_error_is_located() {
        let problems = parse("f.toml", "[keys.a]\nrpm = = 3\n").unwrap_err();
        assert_eq!(problems.list.len(), 1);
        assert_eq!(problems.list[0].line, 2);
    }

    #[test]
    fn environment_references() {
        assert_eq!(
            env_var_name("${DEEPSEEK_API_KEY}"),
            Some("DEEPSEEK_API_KEY")
        );
        assert_eq!(env_var_name("${_X1}"), Some("_X1"));
        for bad in ["DEEPSEEK", "$DEEPSEEK", "${}", "${1A}", "${A-B}", "x${A}"] {
            assert_eq!(env_var_name(bad), None, "{bad}");
        }
    }

    #[test]
    fn a_full_file_reads() {
        let text = r#"
[providers.openai]
base_url = "https://api.openai.com/v1"
api_key = "${OPENAI_API_KEY}"
api_keys = ["${OPENAI_API_KEY_2}"]
models = ["gpt-4o-mini"]
max_concurrency = 8
[providers.openai.prices.gpt-4o-mini]
input_usd_per_mtok = 0.15
output_usd_per_mtok = 0.6

[aliases.fast]
strategy = "latency"
targets = [{ provider = "openai", model = "gpt-4o-mini" }]

[keys."my app"]
budget_usd = 50
budget_period = "monthly"
expires_at = 2027-01-01T00:00:00Z
"#;
        let d = parse("aigw.toml", text).unwrap();
        let p = &d.providers[0];
        assert_eq!(p.api_key.as_ref().unwrap().var, "OPENAI_API_KEY");
        assert_eq!(p.api_keys[0].var, "OPENAI_API_KEY_2");
        assert_eq!(p.prices["gpt-4o-mini"].output_usd_per_mtok, 0.6);
        assert_eq!(d.aliases[0].targets[0].weight, 1);
        assert_eq!(d.keys[0].name, "my app");
        assert_eq!(d.keys[0].budget_usd, Some(50.0));
        assert!(d.keys[0].expires_at.is_some());
    }
}
