//! Budget alert rows (`budget_alerts`) as the projector records and
//! delivers them and the admin API lists them.
//!
//! Invariant: one row per `BudgetAlertAggregate` event (the projector writes
//! it in the event's transaction); [`AlertRow::to_json`] is the one shape
//! both the webhook and the admin API show.

use chrono::{DateTime, Utc};
use uuid::Uuid;

/// One alert as stored, delivered and listed.
#[derive(Debug, Clone, sqlx::FromRow)]
pub struct AlertRow {
    pub id: String,
    pub level: String,
    pub target_id: Uuid,
    pub period: String,
    pub threshold: i32,
    pub spent_micros: i64,
    pub budget_micros: i64,
    pub at: DateTime<Utc>,
    pub attempts: i32,
    pub last_status: Option<i32>,
    pub last_error: Option<String>,
    pub delivered_at: Option<DateTime<Utc>>,
}

impl AlertRow {
    /// The alert as the webhook receives it and the admin API lists it.
    pub fn to_json(&self) -> serde_json::Value {
        let usd = |m: i64| m as f64 / 1_000_000.0;
        serde_json::json!({
            "object": "budget_alert",
            "id": self.id,
            "type": "budget.threshold_crossed",
            "level": self.level,
            "target_id": self.target_id,
            "period": self.period,
            "threshold": self.threshold,
            "spent_micros": self.spent_micros,
            "spent_usd": usd(self.spent_micros),
            "budget_micros": self.budget_micros,
            "budget_usd": usd(self.budget_micros),
            "at": self.at,
        })
    }
}

/// The columns an [`AlertRow`] is read from, in order.
pub const ALERT_COLUMNS: &str = "id, level, target_id, period, threshold, spent_micros,
    budget_micros, at, attempts, last_status, last_error, delivered_at";
