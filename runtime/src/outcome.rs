//! A request's outcome (`RequestCompleted` or `RequestFailed`) as the views
//! and the cost audit count it: one fold, shared by the projector (which
//! writes the views) and the audit (which recomputes them from the events),
//! so the two cannot count differently.

use aigw_events::{Attribution, RequestEvent, Usage};
use chrono::{DateTime, Datelike, NaiveDate, Utc};
use uuid::Uuid;

/// Row key of the billing view: key, month (its first day), model.
pub type BillingKey = (Uuid, NaiveDate, String);

/// First day of `day`'s month.
pub fn month_of(day: NaiveDate) -> NaiveDate {
    day.with_day(1).unwrap_or(day)
}

/// The billable facts of a request outcome (`RequestCompleted` or `RequestFailed`).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Outcome {
    pub key_id: Uuid,
    pub project_id: Option<Uuid>,
    pub team_id: Option<Uuid>,
    pub provider: Option<String>,
    pub model: String,
    pub usage: Usage,
    pub estimated: bool,
    pub failed: bool,
    pub status: u16,
    pub error_type: Option<String>,
    pub cost_micros: Option<i64>,
    /// Some tokens were billed at a fallback rate.
    pub price_fallback: bool,
    pub latency_ms: u64,
    pub at: DateTime<Utc>,
    /// The caller's user and tags.
    pub attribution: Attribution,
}

impl Outcome {
    /// The outcome an event records, if it is one.
    pub fn of(event: RequestEvent) -> Option<Self> {
        match event {
            RequestEvent::RequestCompleted {
                key_id,
                project_id,
                team_id,
                provider,
                model,
                usage,
                usage_estimated,
                cost_micros,
                price_fallback,
                attribution,
                latency_ms,
                at,
                ..
            } => Some(Self {
                attribution,
                key_id,
                project_id,
                team_id,
                provider: Some(provider),
                model,
                usage,
                estimated: usage_estimated,
                failed: false,
                status: 200,
                error_type: None,
                cost_micros,
                price_fallback,
                latency_ms,
                at,
            }),
            RequestEvent::RequestFailed {
                key_id,
                project_id,
                team_id,
                model,
                status,
                error_type,
                usage,
                usage_estimated,
                cost_micros,
                price_fallback,
                attribution,
                latency_ms,
                at,
                ..
            } => Some(Self {
                attribution,
                key_id,
                project_id,
                team_id,
                provider: None,
                model,
                usage,
                estimated: usage_estimated,
                failed: true,
                status,
                error_type: Some(error_type),
                cost_micros,
                price_fallback,
                latency_ms,
                at,
            }),
            RequestEvent::RequestAccepted { .. } | RequestEvent::AttemptRecorded(_) => None,
        }
    }

    /// First day of the billing month the outcome falls in.
    pub fn month(&self) -> NaiveDate {
        month_of(self.at.date_naive())
    }
}
