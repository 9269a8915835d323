//! What a key (or a project, or a team) spent in a budget period according
//! to the request log, for a budget entry missing from the limits bucket (its first use in a period,
//! or a bucket lost with a NATS store): spend never restarts at zero.

use aigw_events::wire::Level;

use super::Owner;

/// The spend so far of a budget entry that is missing from the limits
/// bucket, from the request log (the projector's `request_log` view of the
/// request events): a key's first request in a period finds nothing there,
/// but after a lost or purged limits bucket the spend is not reset to zero.
/// Requests still running, or finished in the last instant before the loss
/// and not yet projected, are the only ones it can miss.
#[derive(Clone)]
pub struct SpendLog {
    pool: sqlx::PgPool,
}

impl SpendLog {
    pub fn new(pool: sqlx::PgPool) -> Self {
        Self { pool }
    }

    /// What the owner of budget entry `entry` (`budget.<owner>.<period>`,
    /// see `Owner`) spent in its period: micro-dollars and tokens.
    pub async fn spent(&self, entry: &str) -> std::result::Result<(i64, i64), String> {
        let mut parts = entry.splitn(3, '.');
        let (Some("budget"), Some(key), Some(period)) = (parts.next(), parts.next(), parts.next())
        else {
            return Err(format!("{entry}: not a budget entry"));
        };
        let owner = Owner::parse(key).ok_or_else(|| format!("{entry}: unknown owner"))?;
        owner_spend(&self.pool, owner, period)
            .await
            .map_err(|e| format!("reading the spend of {entry} from the request log: {e}"))
    }
}

/// What `owner` (a key, a project or a team) spent in budget period
/// `period` (see `BudgetPeriod::period_id`) according to the request log, on
/// any connection: micro-dollars and tokens. Budget alerts read it inside
/// the projector's transaction, so it counts the batch being projected.
pub async fn owner_spend<'e, E: sqlx::PgExecutor<'e>>(
    executor: E,
    owner: Owner,
    period: &str,
) -> Result<(i64, i64), sqlx::Error> {
    let (column, id) = match owner {
        Owner::Key(id) => ("key_id", id),
        Owner::Level(Level::Project(id)) => ("project_id", id),
        Owner::Level(Level::Team(id)) => ("team_id", id),
    };
    let (from, to) = period_bounds(period)
        .ok_or_else(|| sqlx::Error::Protocol(format!("unknown budget period {period:?}")))?;
    sqlx::query_as::<_, (i64, i64)>(&format!(
        "SELECT coalesce(sum(cost_micros), 0)::int8,
                coalesce(sum(coalesce(prompt_tokens, 0) + coalesce(completion_tokens, 0)), 0)::int8
         FROM request_log
         WHERE {column} = $1
           AND ($2::timestamptz IS NULL OR coalesce(at, finished_at) >= $2)
           AND ($3::timestamptz IS NULL OR coalesce(at, finished_at) < $3)",
    ))
    .bind(id)
    .bind(from)
    .bind(to)
    .fetch_one(executor)
    .await
}

type Bound = Option<chrono::DateTime<chrono::Utc>>;

/// The time span of a budget period id (see `BudgetPeriod::period_id`):
/// `total` (everything), `YYYY-MM` or `YYYY-MM-DD` (UTC).
fn period_bounds(period: &str) -> Option<(Bound, Bound)> {
    use chrono::{Datelike, NaiveDate, TimeZone, Utc};
    let at = |d: NaiveDate| Some(Utc.from_utc_datetime(&d.and_hms_opt(0, 0, 0)?));
    if period == "total" {
        return Some((None, None));
    }
    if let Ok(day) = NaiveDate::parse_from_str(period, "%Y-%m-%d") {
        return Some((at(day), at(day.succ_opt()?)));
    }
    let first = NaiveDate::parse_from_str(&format!("{period}-01"), "%Y-%m-%d").ok()?;
    let next = if first.month() == 12 {
        NaiveDate::from_ymd_opt(first.year() + 1, 1, 1)?
    } else {
        NaiveDate::from_ymd_opt(first.year(), first.month() + 1, 1)?
    };
    Some((at(first), at(next)))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn budget_periods_span_their_day_month_or_everything() {
        let at = |s: &str| Some(s.parse::<chrono::DateTime<chrono::Utc>>().unwrap());
        assert_eq!(period_bounds("total"), Some((None, None)));
        assert_eq!(
            period_bounds("2026-11-26"),
            Some((at("2026-11-26T00:00:00Z"), at("2026-11-27T00:00:00Z")))
        );
        assert_eq!(
            period_bounds("2026-12"),
            Some((at("2026-12-01T00:00:00Z"), at("2027-01-01T00:00:00Z")))
        );
        assert_eq!(
            period_bounds("2024-02-28"),
            Some((at("2024-02-28T00:00:00Z"), at("2024-02-29T00:00:00Z")))
        );
        assert_eq!(period_bounds("weekly"), None);
        assert_eq!(period_bounds("2026-13"), None);
        // The period ids the keys use.
        let now = chrono::Utc::now();
        for p in [
            aigw_events::key::BudgetPeriod::Daily,
            aigw_events::key::BudgetPeriod::Monthly,
            aigw_events::key::BudgetPeriod::Total,
        ] {
            let (from, to) = period_bounds(&p.period_id(now)).unwrap();
            assert!(
                from.is_none_or(|f| f <= now) && to.is_none_or(|t| now < t),
                "{p:?}"
            );
        }
    }
}
