//! The API key aggregate: issued, reconfigured, topped up, rotated, revoked.
//!
//! Only the SHA-256 hash of a key's secret is ever stored; the secret itself
//! is shown to the admin once, in the response that issues (or rotates) it.
//! Every change carries the admin identity that made it.

use std::collections::BTreeMap;

use chrono::{DateTime, Datelike, Utc};
use cqrs_es::event_sink::EventSink;
use cqrs_es::{Aggregate, DomainEvent};
use serde::{Deserialize, Serialize};

/// The period a budget renews over.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum BudgetPeriod {
    Daily,
    Monthly,
    /// Never renews (a lifetime budget).
    #[default]
    Total,
}

impl BudgetPeriod {
    /// The id of the period `at` falls in: `2026-11-26`, `2026-11` or `total`.
    pub fn period_id(self, at: DateTime<Utc>) -> String {
        match self {
            BudgetPeriod::Daily => at.format("%Y-%m-%d").to_string(),
            BudgetPeriod::Monthly => format!("{:04}-{:02}", at.year(), at.month()),
            BudgetPeriod::Total => "total".to_string(),
        }
    }
}

/// Limits and budgets of a key; `None` means unlimited.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct KeyLimits {
    #[serde(default)]
    pub rpm: Option<u32>,
    #[serde(default)]
    pub tpm: Option<u64>,
    /// Spend budget per period, in micro-dollars.
    #[serde(default)]
    pub budget_micros: Option<i64>,
    /// Token budget per period.
    #[serde(default)]
    pub budget_tokens: Option<i64>,
    #[serde(default)]
    pub budget_period: BudgetPeriod,
    /// Synchronous requests of the key in flight at once, across every
    /// ingress replica (absent in events written before it existed).
    #[serde(default)]
    pub max_concurrency: Option<u32>,
    /// Percentages of `budget_micros` whose crossing in a period is an alert
    /// (`crate::alert`); `None`: the defaults, 50, 80 and 100.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub alert_thresholds: Option<Vec<u8>>,
}

impl KeyLimits {
    /// The alert thresholds in force: the key's own, or the defaults.
    pub fn alert_thresholds(&self) -> Vec<u8> {
        self.alert_thresholds
            .clone()
            .unwrap_or_else(|| crate::alert::DEFAULT_THRESHOLDS.to_vec())
    }
}

/// What a key may use; an empty list allows everything.
///
/// Effective scopes (what a key in a project and team may use) carry the
/// scopes of those levels in `inherited`: every rule below must then hold
/// at every level (an intersection; never a merged list, where two
/// disjoint lists would intersect to the empty "everything").
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct KeyScopes {
    #[serde(default)]
    pub allowed_models: Vec<String>,
    #[serde(default)]
    pub allowed_providers: Vec<String>,
    /// The scopes of the key's project and team, in effective scopes only
    /// (never set on a stored key, team or project).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub inherited: Vec<KeyScopes>,
}

impl KeyScopes {
    /// These scopes, further limited by every level of `above` (the
    /// key's project's and team's scopes): a key's effective scopes.
    pub fn within<'a>(&self, above: impl IntoIterator<Item = &'a KeyScopes>) -> KeyScopes {
        let mut out = self.clone();
        for level in above {
            out.inherited.push(level.clone());
        }
        out
    }

    pub fn allows_model(&self, model: &str) -> bool {
        (self.allowed_models.is_empty() || self.allowed_models.iter().any(|m| m == model))
            && self.inherited.iter().all(|s| s.allows_model(model))
    }

    /// `provider` may be matched by id or by name.
    pub fn allows_provider(&self, id: &str, name: &str) -> bool {
        (self.allowed_providers.is_empty()
            || self.allowed_providers.iter().any(|p| p == id || p == name))
            && self.inherited.iter().all(|s| s.allows_provider(id, name))
    }

    /// Whether a request for `requested` may go to `model` at the provider
    /// `provider_id`/`provider_name`: the provider must be allowed, and
    /// either the name the caller asked for (a model, an alias an admin
    /// defined, `provider/model`) or the model the target serves must be.
    ///
    /// This one rule decides every target, wherever one is chosen:
    /// admission, routing, failover, aliases, pins, every endpoint.
    ///
    /// With inherited levels, the rule holds at each level on its own.
    pub fn allows_target(
        &self,
        requested: &str,
        model: &str,
        provider_id: &str,
        provider_name: &str,
    ) -> bool {
        let own = |s: &KeyScopes| {
            (s.allowed_providers.is_empty()
                || s.allowed_providers
                    .iter()
                    .any(|p| p == provider_id || p == provider_name))
                && (s.allowed_models.is_empty()
                    || s.allowed_models
                        .iter()
                        .any(|m| m == requested || m == model))
        };
        own(self)
            && self
                .inherited
                .iter()
                .all(|s| s.allows_target(requested, model, provider_id, provider_name))
    }
}

/// Everything an admin can set on a key besides its secret.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct KeySettings {
    pub name: String,
    #[serde(default)]
    pub owner: Option<String>,
    #[serde(default)]
    pub limits: KeyLimits,
    #[serde(default)]
    pub scopes: KeyScopes,
    #[serde(default)]
    pub expires_at: Option<DateTime<Utc>>,
    /// The project the key belongs to (and through it, its team); none
    /// for keys created before projects existed, which keeps them on
    /// their own limits only. Moving a key is a `KeyUpdated` event.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub project_id: Option<uuid::Uuid>,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub enum KeyCommand {
    /// Issue a new key. `key_hash` is the hex SHA-256 of the secret.
    IssueKey {
        settings: KeySettings,
        key_hash: String,
        /// The first characters of the secret, to help people tell keys apart.
        prefix: String,
        actor: String,
        at: DateTime<Utc>,
    },
    /// Replace the key's settings (limits, scopes, name, owner, expiry).
    UpdateKey {
        settings: KeySettings,
        actor: String,
        at: DateTime<Utc>,
    },
    /// Add to the budget of the current period.
    TopUpKey {
        amount_micros: i64,
        tokens: i64,
        actor: String,
        at: DateTime<Utc>,
    },
    /// New secret, same key; the old secret keeps working until `grace_until`.
    RotateKey {
        key_hash: String,
        prefix: String,
        grace_until: Option<DateTime<Utc>>,
        actor: String,
        at: DateTime<Utc>,
    },
    /// Revoke the key; later calls with it get 401.
    RevokeKey { actor: String, at: DateTime<Utc> },
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub enum KeyEvent {
    KeyIssued {
        name: String,
        key_hash: String,
        prefix: String,
        actor: String,
        at: DateTime<Utc>,
        /// Absent in events written before limits existed.
        #[serde(default)]
        settings: Option<KeySettings>,
    },
    KeyUpdated {
        settings: KeySettings,
        actor: String,
        at: DateTime<Utc>,
    },
    KeyToppedUp {
        /// The budget period the top-up applies to (see [`BudgetPeriod::period_id`]).
        period: String,
        amount_micros: i64,
        tokens: i64,
        actor: String,
        at: DateTime<Utc>,
    },
    KeyRotated {
        key_hash: String,
        prefix: String,
        previous_hash: String,
        grace_until: Option<DateTime<Utc>>,
        actor: String,
        at: DateTime<Utc>,
    },
    KeyRevoked {
        actor: String,
        at: DateTime<Utc>,
    },
}

impl DomainEvent for KeyEvent {
    fn event_type(&self) -> String {
        match self {
            KeyEvent::KeyIssued { .. } => "KeyIssued",
            KeyEvent::KeyUpdated { .. } => "KeyUpdated",
            KeyEvent::KeyToppedUp { .. } => "KeyToppedUp",
            KeyEvent::KeyRotated { .. } => "KeyRotated",
            KeyEvent::KeyRevoked { .. } => "KeyRevoked",
        }
        .to_string()
    }

    fn event_version(&self) -> String {
        crate::EVENT_VERSION.to_string()
    }
}

#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum KeyError {
    #[error("the key already exists")]
    AlreadyIssued,
    #[error("no such key")]
    NotFound,
    #[error("the key is revoked")]
    Revoked,
    #[error("a top-up must add a positive amount")]
    EmptyTopUp,
}

#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum KeyStatus {
    #[default]
    Unissued,
    Active,
    Revoked,
}

impl KeyStatus {
    pub fn as_str(self) -> &'static str {
        match self {
            KeyStatus::Unissued => "unissued",
            KeyStatus::Active => "active",
            KeyStatus::Revoked => "revoked",
        }
    }
}

/// A previous secret that still works until its grace period ends.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct PreviousSecret {
    pub key_hash: String,
    pub until: DateTime<Utc>,
}

/// Current state of one key, folded from its events.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct KeyAggregate {
    pub status: KeyStatus,
    pub settings: KeySettings,
    pub key_hash: String,
    pub prefix: String,
    #[serde(default)]
    pub previous: Option<PreviousSecret>,
    pub created_at: Option<DateTime<Utc>>,
    pub revoked_at: Option<DateTime<Utc>>,
    /// Top-ups by budget period id, in micro-dollars and tokens.
    #[serde(default)]
    pub topups: BTreeMap<String, (i64, i64)>,
}

impl KeyAggregate {
    /// The spend and token budgets of the period `at` falls in, top-ups included.
    pub fn budgets_at(&self, at: DateTime<Utc>) -> (String, Option<i64>, Option<i64>) {
        let limits = &self.settings.limits;
        let period = limits.budget_period.period_id(at);
        let (extra_micros, extra_tokens) = self.topups.get(&period).copied().unwrap_or((0, 0));
        (
            period,
            limits.budget_micros.map(|b| b.saturating_add(extra_micros)),
            limits.budget_tokens.map(|b| b.saturating_add(extra_tokens)),
        )
    }

    pub fn is_expired(&self, now: DateTime<Utc>) -> bool {
        self.settings.expires_at.is_some_and(|e| e <= now)
    }
}

impl Aggregate for KeyAggregate {
    const TYPE: &'static str = "key";
    type Command = KeyCommand;
    type Event = KeyEvent;
    type Error = KeyError;
    type Services = ();

    async fn handle(
        &mut self,
        command: Self::Command,
        _: &(),
        sink: &EventSink<Self>,
    ) -> Result<(), Self::Error> {
        if let KeyCommand::IssueKey {
            settings,
            key_hash,
            prefix,
            actor,
            at,
        } = command
        {
            if self.status != KeyStatus::Unissued {
                return Err(KeyError::AlreadyIssued);
            }
            let event = KeyEvent::KeyIssued {
                name: settings.name.clone(),
                key_hash,
                prefix,
                actor,
                at,
                settings: Some(settings),
            };
            sink.write(event, self).await;
            return Ok(());
        }
        match self.status {
            KeyStatus::Unissued => return Err(KeyError::NotFound),
            KeyStatus::Revoked => {
                // Revoking twice changes nothing and records nothing.
                if matches!(command, KeyCommand::RevokeKey { .. }) {
                    return Ok(());
                }
                return Err(KeyError::Revoked);
            }
            KeyStatus::Active => {}
        }
        let event = match command {
            KeyCommand::IssueKey { .. } => return Err(KeyError::AlreadyIssued),
            KeyCommand::UpdateKey {
                settings,
                actor,
                at,
            } => KeyEvent::KeyUpdated {
                settings,
                actor,
                at,
            },
            KeyCommand::TopUpKey {
                amount_micros,
                tokens,
                actor,
                at,
            } => {
                if amount_micros < 0 || tokens < 0 || amount_micros + tokens == 0 {
                    return Err(KeyError::EmptyTopUp);
                }
                KeyEvent::KeyToppedUp {
                    period: self.settings.limits.budget_period.period_id(at),
                    amount_micros,
                    tokens,
                    actor,
                    at,
                }
            }
            KeyCommand::RotateKey {
                key_hash,
                prefix,
                grace_until,
                actor,
                at,
            } => KeyEvent::KeyRotated {
                key_hash,
                prefix,
                previous_hash: self.key_hash.clone(),
                grace_until,
                actor,
                at,
            },
            KeyCommand::RevokeKey { actor, at } => KeyEvent::KeyRevoked { actor, at },
        };
        sink.write(event, self).await;
        Ok(())
    }

    fn apply(&mut self, event: Self::Event) {
        match event {
            KeyEvent::KeyIssued {
                name,
                key_hash,
                prefix,
                at,
                settings,
                ..
            } => {
                self.status = KeyStatus::Active;
                self.settings = settings.unwrap_or(KeySettings {
                    name,
                    ..KeySettings::default()
                });
                self.key_hash = key_hash;
                self.prefix = prefix;
                self.created_at = Some(at);
            }
            KeyEvent::KeyUpdated { settings, .. } => self.settings = settings,
            KeyEvent::KeyToppedUp {
                period,
                amount_micros,
                tokens,
                ..
            } => {
                // The admin API refuses top-ups that would not fit; stored
                // events are folded without ever panicking.
                let entry = self.topups.entry(period).or_insert((0, 0));
                entry.0 = entry.0.saturating_add(amount_micros);
                entry.1 = entry.1.saturating_add(tokens);
            }
            KeyEvent::KeyRotated {
                key_hash,
                prefix,
                previous_hash,
                grace_until,
                ..
            } => {
                self.previous = grace_until.map(|until| PreviousSecret {
                    key_hash: previous_hash,
                    until,
                });
                self.key_hash = key_hash;
                self.prefix = prefix;
            }
            KeyEvent::KeyRevoked { at, .. } => {
                self.status = KeyStatus::Revoked;
                self.revoked_at = Some(at);
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use cqrs_es::test::TestFramework;

    fn at() -> DateTime<Utc> {
        DateTime::parse_from_rfc3339("2026-11-26T10:00:00Z")
            .unwrap()
            .to_utc()
    }

    fn issued(period: BudgetPeriod) -> KeyEvent {
        KeyEvent::KeyIssued {
            name: "ci".into(),
            key_hash: "ab".into(),
            prefix: "aig_x".into(),
            actor: "admin".into(),
            at: at(),
            settings: Some(KeySettings {
                name: "ci".into(),
                limits: KeyLimits {
                    budget_micros: Some(50_000),
                    budget_period: period,
                    ..KeyLimits::default()
                },
                ..KeySettings::default()
            }),
        }
    }

    fn revoke() -> KeyCommand {
        KeyCommand::RevokeKey {
            actor: "admin".into(),
            at: at(),
        }
    }

    #[test]
    fn issue_then_revoke() {
        TestFramework::<KeyAggregate>::with(())
            .given(vec![issued(BudgetPeriod::Total)])
            .when(revoke())
            .then_expect_events(vec![KeyEvent::KeyRevoked {
                actor: "admin".into(),
                at: at(),
            }]);
    }

    #[test]
    fn revoking_twice_records_nothing_and_revoked_keys_are_frozen() {
        let revoked = KeyEvent::KeyRevoked {
            actor: "admin".into(),
            at: at(),
        };
        TestFramework::<KeyAggregate>::with(())
            .given(vec![issued(BudgetPeriod::Total), revoked.clone()])
            .when(revoke())
            .then_expect_events(vec![]);
        TestFramework::<KeyAggregate>::with(())
            .given(vec![issued(BudgetPeriod::Total), revoked])
            .when(KeyCommand::TopUpKey {
                amount_micros: 1,
                tokens: 0,
                actor: "a".into(),
                at: at(),
            })
            .then_expect_error(KeyError::Revoked);
    }

    #[test]
    fn revoking_an_unknown_key_fails() {
        TestFramework::<KeyAggregate>::with(())
            .given_no_previous_events()
            .when(revoke())
            .then_expect_error(KeyError::NotFound);
    }

    #[test]
    fn top_ups_count_for_their_period_only() {
        let mut key = KeyAggregate::default();
        key.apply(issued(BudgetPeriod::Daily));
        key.apply(KeyEvent::KeyToppedUp {
            period: "2026-11-26".into(),
            amount_micros: 10_000,
            tokens: 0,
            actor: "a".into(),
            at: at(),
        });
        let (period, usd, tokens) = key.budgets_at(at());
        assert_eq!(
            (period.as_str(), usd, tokens),
            ("2026-11-26", Some(60_000), None)
        );
        let next_day = at() + chrono::Duration::days(1);
        assert_eq!(key.budgets_at(next_day).1, Some(50_000));
    }

    #[test]
    fn rotation_keeps_the_old_secret_for_the_grace_period() {
        let mut key = KeyAggregate::default();
        key.apply(issued(BudgetPeriod::Total));
        let events = TestFramework::<KeyAggregate>::with(())
            .given(vec![issued(BudgetPeriod::Total)])
            .when(KeyCommand::RotateKey {
                key_hash: "cd".into(),
                prefix: "aig_y".into(),
                grace_until: Some(at()),
                actor: "a".into(),
                at: at(),
            })
            .inspect_result()
            .unwrap();
        for e in events {
            key.apply(e);
        }
        assert_eq!(key.key_hash, "cd");
        assert_eq!(key.previous.as_ref().unwrap().key_hash, "ab");
    }

    #[test]
    fn periods() {
        assert_eq!(BudgetPeriod::Daily.period_id(at()), "2026-11-26");
        assert_eq!(BudgetPeriod::Monthly.period_id(at()), "2026-11");
        assert_eq!(BudgetPeriod::Total.period_id(at()), "total");
    }

    #[test]
    fn a_target_needs_its_provider_and_its_model_or_the_name_asked_for() {
        let scopes = KeyScopes {
            allowed_models: vec!["small".into(), "fast".into()],
            allowed_providers: vec!["b".into()],
            ..KeyScopes::default()
        };
        // The provider decides first, whatever the model.
        assert!(!scopes.allows_target("small", "small", "id-a", "a"));
        assert!(scopes.allows_target("small", "small", "id-b", "b"));
        // An allowed alias may go to any of its targets' models...
        assert!(scopes.allows_target("fast", "big", "id-b", "b"));
        // ...and `provider/model` to an allowed model...
        assert!(scopes.allows_target("b/small", "small", "id-b", "b"));
        // ...but never to a model neither named nor allowed.
        assert!(!scopes.allows_target("big", "big", "id-b", "b"));
        assert!(!scopes.allows_target("b/big", "big", "id-b", "b"));
        let open = KeyScopes::default();
        assert!(open.allows_target("any", "thing", "id", "p"));
    }

    #[test]
    fn effective_scopes_hold_at_every_level() {
        let key = KeyScopes::default();
        let project = KeyScopes {
            allowed_models: vec!["small".into(), "big".into()],
            ..KeyScopes::default()
        };
        let team = KeyScopes {
            allowed_providers: vec!["b".into()],
            allowed_models: vec!["small".into(), "tiny".into()],
            ..KeyScopes::default()
        };
        let eff = key.within([&project, &team]);
        // Only what every level allows: model small at provider b.
        assert!(eff.allows_target("small", "small", "id-b", "b"));
        assert!(!eff.allows_target("small", "small", "id-a", "a"));
        assert!(
            !eff.allows_target("big", "big", "id-b", "b"),
            "team refuses big"
        );
        assert!(
            !eff.allows_target("tiny", "tiny", "id-b", "b"),
            "project refuses tiny"
        );
        assert!(eff.allows_model("small") && !eff.allows_model("big"));
        assert!(!eff.allows_provider("id-a", "a"));
        // Disjoint lists allow nothing (never "everything").
        let other = KeyScopes {
            allowed_models: vec!["other".into()],
            ..KeyScopes::default()
        };
        let none = other.within([&team]);
        for m in ["small", "tiny", "other", "x"] {
            assert!(!none.allows_target(m, m, "id-b", "b"), "{m}");
        }
        // Without levels, nothing changes; effective scopes read back.
        assert_eq!(key.within([]), key);
        let json = serde_json::to_value(&eff).unwrap();
        assert_eq!(serde_json::from_value::<KeyScopes>(json).unwrap(), eff);
        assert!(
            serde_json::to_value(&key)
                .unwrap()
                .get("inherited")
                .is_none()
        );
    }
}
