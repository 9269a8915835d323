//! The difference between the running state and what a file asks for: the
//! changes `apply` makes, in the order it makes them, and their rendering.
//!
//! Invariants:
//! - an entry equal to its running counterpart is no change, so applying a
//!   file twice changes nothing the second time;
//! - providers are created and updated before the aliases that may target
//!   them, and removed after the aliases that did;
//! - without `prune` nothing is removed; the running things the file does
//!   not declare are only counted;
//! - the rendering never shows a secret: a changed credential is said to
//!   have changed, nothing more.

use aigw_events::AliasSpec;
use aigw_events::key::KeySettings;
use aigw_events::provider::ProviderSpec;
use serde_json::Value;
use uuid::Uuid;

use super::desired::{Desired, live_keys};
use crate::AppState;

/// One change, as a command of the admin API's.
#[derive(Debug, Clone)]
pub enum Change {
    CreateProvider {
        id: Uuid,
        spec: ProviderSpec,
    },
    UpdateProvider {
        id: Uuid,
        from: ProviderSpec,
        to: ProviderSpec,
    },
    RemoveProvider {
        id: Uuid,
        name: String,
    },
    DefineAlias(AliasSpec),
    UpdateAlias {
        from: AliasSpec,
        to: AliasSpec,
    },
    RemoveAlias(String),
    IssueKey(KeySettings),
    UpdateKey {
        id: Uuid,
        from: KeySettings,
        to: KeySettings,
    },
    RevokeKey {
        id: Uuid,
        name: String,
    },
}

/// The changes, in order, and how many running things the file leaves
/// alone because it does not declare them (without `prune`).
#[derive(Debug, Clone, Default)]
pub struct Plan {
    pub changes: Vec<Change>,
    pub undeclared: Vec<String>,
}

/// What it takes to go from the running state to `desired`.
pub fn diff(state: &AppState, desired: &Desired, prune: bool) -> Plan {
    let mut plan = Plan::default();
    let mut removals = Vec::new();
    let mut undeclared = Vec::new();
    for p in &desired.providers {
        match &p.current {
            None => plan.changes.push(Change::CreateProvider {
                id: p.id,
                spec: p.spec.clone(),
            }),
            Some(current) if current.spec != p.spec => plan.changes.push(Change::UpdateProvider {
                id: current.id,
                from: current.spec.clone(),
                to: p.spec.clone(),
            }),
            Some(_) => {}
        }
    }
    for a in &desired.aliases {
        match state.registry.alias(&a.name) {
            None => plan.changes.push(Change::DefineAlias(a.clone())),
            Some(current) if *current != *a => plan.changes.push(Change::UpdateAlias {
                from: (*current).clone(),
                to: a.clone(),
            }),
            Some(_) => {}
        }
    }
    for k in &desired.keys {
        match &k.current {
            None => plan.changes.push(Change::IssueKey(k.settings.clone())),
            Some(current) if current.state.settings != k.settings => {
                plan.changes.push(Change::UpdateKey {
                    id: current.id,
                    from: current.state.settings.clone(),
                    to: k.settings.clone(),
                })
            }
            Some(_) => {}
        }
    }
    for a in state.registry.aliases() {
        if !desired.aliases.iter().any(|d| d.name == a.name) {
            removals.push(Change::RemoveAlias(a.name.clone()));
            undeclared.push(format!("alias {}", a.name));
        }
    }
    for keys in live_keys(state).into_values() {
        for k in keys {
            if !desired
                .keys
                .iter()
                .any(|d| d.settings.name == k.state.settings.name)
            {
                removals.push(Change::RevokeKey {
                    id: k.id,
                    name: k.state.settings.name.clone(),
                });
                undeclared.push(format!("key {:?}", k.state.settings.name));
            }
        }
    }
    for p in state.registry.providers() {
        if !desired.providers.iter().any(|d| d.id == p.id) {
            removals.push(Change::RemoveProvider {
                id: p.id,
                name: p.spec.name.clone(),
            });
            undeclared.push(format!("provider {}", p.spec.name));
        }
    }
    if prune {
        plan.changes.extend(removals);
    } else {
        plan.undeclared = undeclared;
    }
    plan
}

impl Change {
    /// One line: what and which (`+ provider deepseek`).
    pub fn headline(&self) -> String {
        match self {
            Change::CreateProvider { spec, .. } => format!(
                "+ provider {} ({}, {} model(s))",
                spec.name,
                spec.preset
                    .as_deref()
                    .map_or_else(|| spec.base_url.clone(), |p| format!("preset {p}")),
                spec.served().len()
            ),
            Change::UpdateProvider { to, .. } => format!("~ provider {}", to.name),
            Change::RemoveProvider { name, .. } => format!("- provider {name}"),
            Change::DefineAlias(a) => format!(
                "+ alias {} ({}, {} target(s))",
                a.name,
                a.strategy.as_str(),
                a.targets.len()
            ),
            Change::UpdateAlias { to, .. } => format!("~ alias {}", to.name),
            Change::RemoveAlias(name) => format!("- alias {name}"),
            Change::IssueKey(s) => format!("+ key {:?}", s.name),
            Change::UpdateKey { to, .. } => format!("~ key {:?}", to.name),
            Change::RevokeKey { name, .. } => format!("- key {name:?} (revoked)"),
        }
    }

    /// The fields an update changes, one line each, secrets never shown.
    pub fn details(&self) -> Vec<String> {
        let mut out = Vec::new();
        match self {
            Change::UpdateProvider { from, to, .. } => {
                fields(&public(from), &public(to), "", &mut out);
                secrets(from, to, &mut out);
            }
            Change::UpdateAlias { from, to } => fields(&json(from), &json(to), "", &mut out),
            Change::UpdateKey { from, to, .. } => {
                fields(&key_settings(from), &key_settings(to), "", &mut out)
            }
            _ => {}
        }
        out
    }
}

impl Plan {
    pub fn is_empty(&self) -> bool {
        self.changes.is_empty()
    }

    fn count(&self, sign: char) -> usize {
        self.changes
            .iter()
            .filter(|c| c.headline().starts_with(sign))
            .count()
    }

    /// The plan as people read it, ending with a summary line.
    pub fn render(&self, file: &str) -> String {
        let mut text = String::new();
        for change in &self.changes {
            text.push_str(&change.headline());
            text.push('\n');
            for line in change.details() {
                text.push_str("    ");
                text.push_str(&line);
                text.push('\n');
            }
        }
        if self.changes.is_empty() {
            text.push_str(&format!("No changes: the running state matches {file}.\n"));
        } else {
            text.push_str(&format!(
                "{} to create, {} to update, {} to remove.\n",
                self.count('+'),
                self.count('~'),
                self.count('-')
            ));
        }
        if !self.undeclared.is_empty() {
            text.push_str(&format!(
                "Not in {file}, left as they are (--prune removes them): {}.\n",
                self.undeclared.join(", ")
            ));
        }
        text
    }
}

fn json<T: serde::Serialize>(v: &T) -> Value {
    serde_json::to_value(v).unwrap_or(Value::Null)
}

/// A provider's spec without its sealed secrets, prices in USD as the
/// file writes them.
fn public(spec: &ProviderSpec) -> Value {
    let mut v = json(spec);
    if let Value::Object(map) = &mut v {
        for field in [
            "sealed_credential",
            "extra_credentials",
            "sealed_session_token",
        ] {
            map.remove(field);
        }
        let prices: serde_json::Map<String, Value> = spec
            .prices
            .iter()
            .map(|(m, p)| (m.clone(), crate::admin::price_view(p)))
            .collect();
        map.insert("prices".into(), Value::Object(prices));
    }
    v
}

/// A key's settings, its budget in USD as the file writes it.
fn key_settings(settings: &KeySettings) -> Value {
    let mut v = json(settings);
    if let Some(Value::Object(limits)) = v.get_mut("limits")
        && let Some(micros) = limits.remove("budget_micros")
    {
        let usd = micros.as_i64().map(|m| m as f64 / 1_000_000.0);
        limits.insert("budget_usd".into(), usd.into());
    }
    v
}

fn secrets(from: &ProviderSpec, to: &ProviderSpec, out: &mut Vec<String>) {
    let one =
        |name: &str, a: &Option<String>, b: &Option<String>, out: &mut Vec<String>| match (a, b) {
            (None, Some(_)) => out.push(format!("{name}: set (not shown)")),
            (Some(_), None) => out.push(format!("{name}: removed")),
            (Some(a), Some(b)) if a != b => out.push(format!("{name}: changed (not shown)")),
            _ => {}
        };
    one(
        "credential",
        &from.sealed_credential,
        &to.sealed_credential,
        out,
    );
    one(
        "aws_session_token",
        &from.sealed_session_token,
        &to.sealed_session_token,
        out,
    );
    if from.extra_credentials != to.extra_credentials {
        out.push(format!(
            "api_keys: changed ({} -> {}, not shown)",
            from.extra_credentials.len(),
            to.extra_credentials.len()
        ));
    }
}

/// Every leaf that differs between `a` and `b`, as `path: old -> new`.
fn fields(a: &Value, b: &Value, path: &str, out: &mut Vec<String>) {
    match (a, b) {
        (Value::Object(x), Value::Object(y)) => {
            let mut keys: Vec<&String> = x.keys().chain(y.keys()).collect();
            keys.sort();
            keys.dedup();
            for k in keys {
                let sub = if path.is_empty() {
                    k.clone()
                } else {
                    format!("{path}.{k}")
                };
                fields(
                    x.get(k).unwrap_or(&Value::Null),
                    y.get(k).unwrap_or(&Value::Null),
                    &sub,
                    out,
                );
            }
        }
        _ if a != b => out.push(format!("{path}: {a} -> {b}")),
        _ => {}
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn field_differences_name_their_path() {
        let mut out = Vec::new();
        fields(
            &json!({"a": 1, "b": {"c": "x", "d": [1]}}),
            &json!({"a": 1, "b": {"c": "y", "d": [1], "e": true}}),
            "",
            &mut out,
        );
        assert_eq!(out, ["b.c: \"x\" -> \"y\"", "b.e: null -> true"]);
    }

    #[test]
    fn secrets_are_never_shown() {
        let from = ProviderSpec {
            sealed_credential: Some("v2:sealed-a".into()),
            ..Default::default()
        };
        let to = ProviderSpec {
            sealed_credential: Some("v2:sealed-b".into()),
            base_url: "http://x".into(),
            ..Default::default()
        };
        let change = Change::UpdateProvider {
            id: Uuid::nil(),
            from,
            to,
        };
        let text = change.details().join("\n");
        assert!(text.contains("credential: changed (not shown)"), "{text}");
        assert!(text.contains("base_url"));
        assert!(!text.contains("sealed-"), "{text}");
    }
}
