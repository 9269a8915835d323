//! Budget alerts: one short-lived aggregate per (level, id, period,
//! threshold), written once when a budget's spend in a period first reaches
//! the threshold.
//!
//! Invariant: exactly one `BudgetThresholdCrossed` per (level, id, period,
//! threshold), however many projector replicas look and however often.
//! The aggregate id ([`BudgetAlertAggregate::aggregate_id`]) names all four,
//! so a second recording is refused twice over: by the aggregate itself
//! ([`BudgetAlertError::AlreadyRecorded`]) and, for writers that race, by
//! the events table's primary key on (aggregate type, id, sequence 1). A
//! unique index on a view would also deduplicate, but only the event is
//! forever: the aggregate id keeps the rule where the history is.

use chrono::{DateTime, Utc};
use cqrs_es::event_sink::EventSink;
use cqrs_es::{Aggregate, DomainEvent};
use serde::{Deserialize, Serialize};
use uuid::Uuid;

/// What a budget belongs to: a key, a project or a team.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum AlertLevel {
    Key,
    Project,
    Team,
}

impl AlertLevel {
    pub fn as_str(self) -> &'static str {
        match self {
            AlertLevel::Key => "key",
            AlertLevel::Project => "project",
            AlertLevel::Team => "team",
        }
    }
}

/// Alert thresholds of a budget without its own: 50, 80 and 100 %.
pub const DEFAULT_THRESHOLDS: [u8; 3] = [50, 80, 100];
/// Most thresholds one budget may have.
pub const MAX_THRESHOLDS: usize = 10;

/// Whether `thresholds` is a valid list: 1 to [`MAX_THRESHOLDS`] distinct
/// percentages, each 1 to 100.
pub fn valid_thresholds(thresholds: &[u8]) -> bool {
    let mut seen = std::collections::BTreeSet::new();
    !thresholds.is_empty()
        && thresholds.len() <= MAX_THRESHOLDS
        && thresholds
            .iter()
            .all(|t| (1..=100).contains(t) && seen.insert(*t))
}

/// The thresholds `spent` has reached of `budget` (micro-dollars), in
/// ascending order: `t` is reached when `spent >= budget * t / 100`
/// (exactly, in 128-bit integers). A budget of zero or less has none.
pub fn reached(thresholds: &[u8], spent: i64, budget: i64) -> Vec<u8> {
    if budget <= 0 || spent <= 0 {
        return vec![];
    }
    let mut out: Vec<u8> = thresholds
        .iter()
        .copied()
        .filter(|&t| i128::from(spent) * 100 >= i128::from(budget) * i128::from(t))
        .collect();
    out.sort_unstable();
    out.dedup();
    out
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub enum BudgetAlertCommand {
    RecordCrossing {
        level: AlertLevel,
        id: Uuid,
        period: String,
        threshold: u8,
        spent: i64,
        budget: i64,
        at: DateTime<Utc>,
    },
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub enum BudgetAlertEvent {
    /// Spend of `id`'s budget in `period` reached `threshold` % of it:
    /// `spent` of `budget` micro-dollars when it was seen.
    BudgetThresholdCrossed {
        level: AlertLevel,
        id: Uuid,
        period: String,
        threshold: u8,
        spent: i64,
        budget: i64,
        at: DateTime<Utc>,
    },
}

impl DomainEvent for BudgetAlertEvent {
    fn event_type(&self) -> String {
        match self {
            BudgetAlertEvent::BudgetThresholdCrossed { .. } => "BudgetThresholdCrossed",
        }
        .to_string()
    }

    fn event_version(&self) -> String {
        crate::EVENT_VERSION.to_string()
    }
}

#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum BudgetAlertError {
    #[error("the alert is already recorded")]
    AlreadyRecorded,
}

#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct BudgetAlertAggregate {
    pub recorded: bool,
}

impl BudgetAlertAggregate {
    /// `alert:<level>:<id>:<period>:<threshold>`: one aggregate per alert.
    pub fn aggregate_id(level: AlertLevel, id: Uuid, period: &str, threshold: u8) -> String {
        format!("alert:{}:{id}:{period}:{threshold}", level.as_str())
    }
}

impl Aggregate for BudgetAlertAggregate {
    const TYPE: &'static str = "budget_alert";
    type Command = BudgetAlertCommand;
    type Event = BudgetAlertEvent;
    type Error = BudgetAlertError;
    type Services = ();

    async fn handle(
        &mut self,
        command: Self::Command,
        _: &(),
        sink: &EventSink<Self>,
    ) -> Result<(), Self::Error> {
        if self.recorded {
            return Err(BudgetAlertError::AlreadyRecorded);
        }
        let BudgetAlertCommand::RecordCrossing {
            level,
            id,
            period,
            threshold,
            spent,
            budget,
            at,
        } = command;
        let event = BudgetAlertEvent::BudgetThresholdCrossed {
            level,
            id,
            period,
            threshold,
            spent,
            budget,
            at,
        };
        sink.write(event, self).await;
        Ok(())
    }

    fn apply(&mut self, event: Self::Event) {
        match event {
            BudgetAlertEvent::BudgetThresholdCrossed { .. } => self.recorded = true,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use cqrs_es::test::TestFramework;

    fn crossing() -> BudgetAlertCommand {
        BudgetAlertCommand::RecordCrossing {
            level: AlertLevel::Key,
            id: Uuid::nil(),
            period: "2026-12".into(),
            threshold: 80,
            spent: 800,
            budget: 1000,
            at: DateTime::parse_from_rfc3339("2026-12-04T10:00:00Z")
                .unwrap()
                .to_utc(),
        }
    }

    #[test]
    fn an_alert_is_recorded_once() {
        let events = TestFramework::<BudgetAlertAggregate>::with(())
            .given_no_previous_events()
            .when(crossing())
            .inspect_result()
            .unwrap();
        assert_eq!(events.len(), 1);
        TestFramework::<BudgetAlertAggregate>::with(())
            .given(events)
            .when(crossing())
            .then_expect_error(BudgetAlertError::AlreadyRecorded);
    }

    #[test]
    fn thresholds_reached_exactly() {
        let t = DEFAULT_THRESHOLDS;
        assert_eq!(reached(&t, 0, 1000), Vec::<u8>::new());
        assert_eq!(reached(&t, 499, 1000), Vec::<u8>::new());
        assert_eq!(reached(&t, 500, 1000), [50]);
        assert_eq!(reached(&t, 799, 1000), [50]);
        assert_eq!(reached(&t, 1000, 1000), [50, 80, 100]);
        assert_eq!(reached(&t, 5000, 1000), [50, 80, 100]);
        assert_eq!(reached(&t, 10, 0), Vec::<u8>::new());
        // No overflow at the extremes.
        assert_eq!(reached(&t, i64::MAX, i64::MAX), [50, 80, 100]);
        assert_eq!(
            BudgetAlertAggregate::aggregate_id(AlertLevel::Key, Uuid::nil(), "total", 50),
            "alert:key:00000000-0000-0000-0000-000000000000:total:50"
        );
    }

    #[test]
    fn threshold_lists() {
        assert!(valid_thresholds(&[50, 80, 100]));
        assert!(valid_thresholds(&[1]));
        assert!(!valid_thresholds(&[]));
        assert!(!valid_thresholds(&[0]));
        assert!(!valid_thresholds(&[101]));
        assert!(!valid_thresholds(&[50, 50]));
        assert!(!valid_thresholds(&[1, 2, 3, 4, 5, 6, 7, 8, 9, 10, 11]));
    }
}
