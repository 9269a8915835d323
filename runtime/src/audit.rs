//! Cost audits: recompute what every key should have been billed, straight
//! from the request events (with the cost each carries, priced when it ran),
//! and compare it with the billing view.
//!
//! Billing is monthly, so an audit covers the whole months its dates fall
//! in. It reads the events, the billing rows and the projector's checkpoint
//! in one repeatable-read snapshot and only counts events up to that
//! checkpoint, so a projector that is merely behind is not a difference.
//!
//! Quarantined events (see `quarantine`) are in the history but by design not
//! in the views, so the audit leaves them out of the expected side and lists
//! them instead, with their error: it can then say "clean except N
//! quarantined events" rather than report a difference, or stop. An outcome
//! event the audit cannot read is listed the same way (projected before the
//! quarantine existed, it is in no view either). A report with quarantined
//! events is not clean: the views omit what those events cost.

use std::collections::BTreeMap;
use std::fmt::Write as _;

use chrono::{DateTime, Datelike, NaiveDate, Utc};
use serde::Serialize;
use sqlx::PgPool;
use uuid::Uuid;

use crate::checkpoint::{self, Position, checkpoint};
use crate::outcome::{BillingKey, Outcome, month_of};
use crate::views::quarantine::error_text;
use aigw_events::RequestEvent;

/// What is audited: the months from `from` to `to`, one key or all.
#[derive(Debug, Clone, Copy)]
pub struct AuditScope {
    pub from: NaiveDate,
    pub to: NaiveDate,
    pub key: Option<Uuid>,
}

impl AuditScope {
    /// First day of the first month and first day of the last month.
    pub fn months(&self) -> (NaiveDate, NaiveDate) {
        (month_of(self.from), month_of(self.to))
    }

    fn covers(&self, key_id: Uuid, month: NaiveDate) -> bool {
        let (first, last) = self.months();
        first <= month && month <= last && self.key.is_none_or(|k| k == key_id)
    }
}

/// Billed amounts of one (key, month, model), with each token class.
#[derive(Debug, Default, Clone, Copy, PartialEq, Eq, Serialize)]
pub struct Totals {
    pub requests: i64,
    pub prompt_tokens: i64,
    pub completion_tokens: i64,
    pub cached_tokens: i64,
    pub cache_write_5m_tokens: i64,
    pub cache_write_1h_tokens: i64,
    pub reasoning_tokens: i64,
    pub cost_micros: i64,
    pub unpriced_requests: i64,
    pub price_fallback_requests: i64,
}

impl Totals {
    /// Adds one outcome, exactly as the billing view does.
    pub fn add(&mut self, o: &Outcome) {
        self.requests += 1;
        self.prompt_tokens += o.usage.prompt_tokens as i64;
        self.completion_tokens += o.usage.completion_tokens as i64;
        self.cached_tokens += o.usage.cached_tokens as i64;
        self.cache_write_5m_tokens += o.usage.cache_write_5m_tokens as i64;
        self.cache_write_1h_tokens += o.usage.cache_write_1h_tokens as i64;
        self.reasoning_tokens += o.usage.reasoning_tokens as i64;
        self.price_fallback_requests += i64::from(o.price_fallback);
        match o.cost_micros {
            Some(c) => self.cost_micros += c,
            None if !o.usage.is_empty() => self.unpriced_requests += 1,
            None => {}
        }
    }

    /// The sum of several rows.
    pub fn sum<'a>(rows: impl IntoIterator<Item = &'a Totals>) -> Totals {
        rows.into_iter().fold(Totals::default(), |a, t| Totals {
            requests: a.requests + t.requests,
            prompt_tokens: a.prompt_tokens + t.prompt_tokens,
            completion_tokens: a.completion_tokens + t.completion_tokens,
            cached_tokens: a.cached_tokens + t.cached_tokens,
            cache_write_5m_tokens: a.cache_write_5m_tokens + t.cache_write_5m_tokens,
            cache_write_1h_tokens: a.cache_write_1h_tokens + t.cache_write_1h_tokens,
            reasoning_tokens: a.reasoning_tokens + t.reasoning_tokens,
            cost_micros: a.cost_micros + t.cost_micros,
            unpriced_requests: a.unpriced_requests + t.unpriced_requests,
            price_fallback_requests: a.price_fallback_requests + t.price_fallback_requests,
        })
    }
}

/// A billing row that does not match the history.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Difference {
    pub key_id: Uuid,
    pub month: NaiveDate,
    pub model: String,
    pub expected: Totals,
    pub recorded: Totals,
}

/// An outcome event the views leave out: quarantined, or unreadable.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Excluded {
    pub request_id: String,
    pub sequence: i64,
    pub event_type: String,
    /// The outcome's key, month, model and cost, when its payload reads.
    pub key_id: Option<Uuid>,
    pub month: Option<NaiveDate>,
    pub model: Option<String>,
    pub cost_micros: Option<i64>,
    /// `None`: not in the quarantine (an unreadable event projected before
    /// the quarantine existed; a rebuild quarantines it).
    pub quarantined_at: Option<DateTime<Utc>>,
    pub error: String,
}

#[derive(Debug, Clone, Serialize)]
pub struct AuditReport {
    pub from_month: NaiveDate,
    pub to_month: NaiveDate,
    pub key_id: Option<Uuid>,
    /// Events read from the history.
    pub events_scanned: u64,
    /// Request outcomes within the audited months.
    pub requests: u64,
    pub expected_cost_micros: i64,
    pub recorded_cost_micros: i64,
    /// Every audited row summed, token classes included.
    pub expected_totals: Totals,
    pub recorded_totals: Totals,
    pub differences: Vec<Difference>,
    /// Outcome events in the audited months (or of unknown month) left out
    /// of both sides, in history order.
    pub quarantined: Vec<Excluded>,
}

impl AuditReport {
    /// No difference and no quarantined event.
    pub fn is_clean(&self) -> bool {
        self.differences.is_empty() && self.quarantined.is_empty()
    }
}

/// Every row where `expected` and `recorded` disagree (a missing row counts
/// as zeros), in key, month, model order.
pub fn compare(
    expected: &BTreeMap<BillingKey, Totals>,
    recorded: &BTreeMap<BillingKey, Totals>,
) -> Vec<Difference> {
    let mut all: Vec<&BillingKey> = expected.keys().chain(recorded.keys()).collect();
    all.sort();
    all.dedup();
    all.into_iter()
        .filter_map(|k| {
            let e = expected.get(k).copied().unwrap_or_default();
            let r = recorded.get(k).copied().unwrap_or_default();
            (e != r).then(|| Difference {
                key_id: k.0,
                month: k.1,
                model: k.2.clone(),
                expected: e,
                recorded: r,
            })
        })
        .collect()
}

type EventRow = (
    String,
    i64,
    String,
    String,
    String,
    i64,
    Option<String>,
    Option<DateTime<Utc>>,
);
type BillingRow = (
    Uuid,
    NaiveDate,
    String,
    i64,
    i64,
    i64,
    i64,
    i64,
    i64,
    i64,
    i64,
    i64,
    i64,
);

/// Runs an audit; `progress` gets the number of events read after each page.
pub async fn audit(
    pool: &PgPool,
    scope: AuditScope,
    page: i64,
    mut progress: impl FnMut(u64),
) -> crate::Result<AuditReport> {
    let mut tx = pool.begin().await?;
    sqlx::query("SET TRANSACTION ISOLATION LEVEL REPEATABLE READ READ ONLY")
        .execute(&mut *tx)
        .await?;
    let until = checkpoint(&mut tx, checkpoint::VIEWS).await?;
    let (first, last) = scope.months();
    let rows: Vec<BillingRow> = sqlx::query_as(
        "SELECT key_id, month, model, requests, prompt_tokens, completion_tokens, cost_micros,
                unpriced_requests, cached_tokens, cache_write_5m_tokens, cache_write_1h_tokens,
                reasoning_tokens, price_fallback_requests
         FROM billing_monthly
         WHERE month BETWEEN $1 AND $2 AND ($3::uuid IS NULL OR key_id = $3)",
    )
    .bind(first)
    .bind(last)
    .bind(scope.key)
    .fetch_all(&mut *tx)
    .await?;
    let recorded: BTreeMap<BillingKey, Totals> = rows
        .into_iter()
        .map(
            |(k, m, model, requests, p, c, cost, unpriced, cached, w5, w1, reasoning, fallback)| {
                (
                    (k, m, model),
                    Totals {
                        requests,
                        prompt_tokens: p,
                        completion_tokens: c,
                        cached_tokens: cached,
                        cache_write_5m_tokens: w5,
                        cache_write_1h_tokens: w1,
                        reasoning_tokens: reasoning,
                        cost_micros: cost,
                        unpriced_requests: unpriced,
                        price_fallback_requests: fallback,
                    },
                )
            },
        )
        .collect();

    let mut expected: BTreeMap<BillingKey, Totals> = BTreeMap::new();
    let mut at = Position::start();
    let mut scanned = 0u64;
    let mut requests = 0u64;
    let mut quarantined = Vec::new();
    loop {
        let page_rows: Vec<EventRow> = sqlx::query_as(
            "SELECT e.aggregate_id, e.sequence, e.event_type, e.payload::text, e.txid::text,
                    e.pos, q.error, q.quarantined_at
             FROM events e
             LEFT JOIN projector_quarantine q
               ON (q.aggregate_type, q.aggregate_id, q.sequence)
                = (e.aggregate_type, e.aggregate_id, e.sequence)
             WHERE (e.txid, e.pos) > ($1::text::xid8, $2)
               AND (e.txid, e.pos) <= ($3::text::xid8, $4)
               AND e.aggregate_type = 'request'
               AND e.event_type IN ('RequestCompleted', 'RequestFailed')
             ORDER BY e.txid, e.pos
             LIMIT $5",
        )
        .bind(&at.txid)
        .bind(at.pos)
        .bind(&until.txid)
        .bind(until.pos)
        .bind(page)
        .fetch_all(&mut *tx)
        .await?;
        let Some((_, _, _, _, txid, pos, _, _)) = page_rows.last().cloned() else {
            break;
        };
        scanned += page_rows.len() as u64;
        for (id, sequence, event_type, payload, _, _, error, quarantined_at) in page_rows {
            let read = serde_json::from_str::<RequestEvent>(&payload).map(Outcome::of);
            let outcome = read.as_ref().ok().and_then(Option::as_ref);
            let error = match (error, &read) {
                (Some(error), _) => Some(error),
                (None, Err(e)) => Some(error_text(e)),
                (None, Ok(_)) => None,
            };
            if let Some(error) = error {
                // Of unknown scope when unreadable: listed whatever the scope.
                if outcome.is_none_or(|o| scope.covers(o.key_id, o.month())) {
                    quarantined.push(Excluded {
                        request_id: id,
                        sequence,
                        event_type,
                        key_id: outcome.map(|o| o.key_id),
                        month: outcome.map(Outcome::month),
                        model: outcome.map(|o| o.model.clone()),
                        cost_micros: outcome.and_then(|o| o.cost_micros),
                        quarantined_at,
                        error,
                    });
                }
                continue;
            }
            let Some(o) = outcome else {
                continue;
            };
            if !scope.covers(o.key_id, o.month()) {
                continue;
            }
            requests += 1;
            expected
                .entry((o.key_id, o.month(), o.model.clone()))
                .or_default()
                .add(o);
        }
        at = Position { txid, pos };
        progress(scanned);
    }
    tx.commit().await?;
    let differences = compare(&expected, &recorded);
    Ok(AuditReport {
        from_month: first,
        to_month: last,
        key_id: scope.key,
        events_scanned: scanned,
        requests,
        expected_cost_micros: expected.values().map(|t| t.cost_micros).sum(),
        recorded_cost_micros: recorded.values().map(|t| t.cost_micros).sum(),
        expected_totals: Totals::sum(expected.values()),
        recorded_totals: Totals::sum(recorded.values()),
        differences,
        quarantined,
    })
}

fn usd(micros: i64) -> String {
    let sign = if micros < 0 { "-" } else { "" };
    let m = micros.unsigned_abs();
    format!("{sign}{}.{:06}", m / 1_000_000, m % 1_000_000)
}

fn month_label(m: NaiveDate) -> String {
    format!("{:04}-{:02}", m.year(), m.month())
}

const HEADER: [&str; 21] = [
    "key_id",
    "month",
    "model",
    "expected_usd",
    "recorded_usd",
    "expected_requests",
    "recorded_requests",
    "expected_prompt_tokens",
    "recorded_prompt_tokens",
    "expected_completion_tokens",
    "recorded_completion_tokens",
    "expected_cached_tokens",
    "recorded_cached_tokens",
    "expected_cache_write_5m_tokens",
    "recorded_cache_write_5m_tokens",
    "expected_cache_write_1h_tokens",
    "recorded_cache_write_1h_tokens",
    "expected_reasoning_tokens",
    "recorded_reasoning_tokens",
    "expected_price_fallback_requests",
    "recorded_price_fallback_requests",
];

fn cells(d: &Difference) -> [String; 21] {
    [
        d.key_id.to_string(),
        month_label(d.month),
        d.model.clone(),
        usd(d.expected.cost_micros),
        usd(d.recorded.cost_micros),
        d.expected.requests.to_string(),
        d.recorded.requests.to_string(),
        d.expected.prompt_tokens.to_string(),
        d.recorded.prompt_tokens.to_string(),
        d.expected.completion_tokens.to_string(),
        d.recorded.completion_tokens.to_string(),
        d.expected.cached_tokens.to_string(),
        d.recorded.cached_tokens.to_string(),
        d.expected.cache_write_5m_tokens.to_string(),
        d.recorded.cache_write_5m_tokens.to_string(),
        d.expected.cache_write_1h_tokens.to_string(),
        d.recorded.cache_write_1h_tokens.to_string(),
        d.expected.reasoning_tokens.to_string(),
        d.recorded.reasoning_tokens.to_string(),
        d.expected.price_fallback_requests.to_string(),
        d.recorded.price_fallback_requests.to_string(),
    ]
}

/// The differences as CSV, one header line first.
pub fn to_csv(report: &AuditReport) -> String {
    let mut out = HEADER.join(",");
    out.push('\n');
    for d in &report.differences {
        let row: Vec<String> = cells(d)
            .into_iter()
            .map(|c| {
                if c.contains([',', '"', '\n']) {
                    format!("\"{}\"", c.replace('"', "\"\""))
                } else {
                    c
                }
            })
            .collect();
        out.push_str(&row.join(","));
        out.push('\n');
    }
    out
}

/// `text` on one line, cut to `max` characters.
fn short(text: &str, max: usize) -> String {
    let one_line = text.replace(['\n', '\r'], " ");
    if one_line.chars().count() <= max {
        return one_line;
    }
    let mut cut: String = one_line.chars().take(max - 1).collect();
    cut.push('…');
    cut
}

/// One line per quarantined (or unreadable) outcome event.
pub fn quarantine_lines(report: &AuditReport) -> String {
    let mut out = String::new();
    for q in &report.quarantined {
        let or_unknown = |v: Option<String>| v.unwrap_or_else(|| "?".into());
        let _ = writeln!(
            out,
            "{} request {} #{} {}: key {}, month {}, model {}, cost {}; {}{}",
            if q.quarantined_at.is_some() {
                "quarantined"
            } else {
                "unreadable"
            },
            q.request_id,
            q.sequence,
            q.event_type,
            or_unknown(q.key_id.map(|k| k.to_string())),
            or_unknown(q.month.map(month_label)),
            or_unknown(q.model.as_deref().map(|m| short(m, 40))),
            or_unknown(q.cost_micros.map(|c| format!("${}", usd(c)))),
            short(&q.error, 200),
            match q.quarantined_at {
                Some(at) => format!(" (since {})", at.format("%Y-%m-%d %H:%M:%S UTC")),
                None => " (not in the quarantine: `aigw projector rebuild` puts it there)".into(),
            },
        );
    }
    out
}

/// A human summary, the differences as an aligned table, and a line per
/// quarantined event.
pub fn to_table(report: &AuditReport) -> String {
    let mut out = String::new();
    let _ = writeln!(
        out,
        "audit {}..{}: {} events read, {} requests, expected ${}, recorded ${}, {} difference(s), \
         {} quarantined event(s)",
        month_label(report.from_month),
        month_label(report.to_month),
        report.events_scanned,
        report.requests,
        usd(report.expected_cost_micros),
        usd(report.recorded_cost_micros),
        report.differences.len(),
        report.quarantined.len(),
    );
    let t = &report.expected_totals;
    let _ = writeln!(
        out,
        "expected tokens: prompt {} (cached {}, cache writes 5m {}, 1h {}), completion {} \
         (reasoning {}); {} request(s) with a fallback price",
        t.prompt_tokens,
        t.cached_tokens,
        t.cache_write_5m_tokens,
        t.cache_write_1h_tokens,
        t.completion_tokens,
        t.reasoning_tokens,
        t.price_fallback_requests,
    );
    out.push_str(&differences_table(report));
    if !report.quarantined.is_empty() {
        if report.differences.is_empty() {
            let _ = writeln!(
                out,
                "clean except {} quarantined event(s), in the history but not in the views \
                 (left out of both sides):",
                report.quarantined.len()
            );
        }
        out.push_str(&quarantine_lines(report));
    }
    out
}

fn differences_table(report: &AuditReport) -> String {
    let mut out = String::new();
    if report.differences.is_empty() {
        return out;
    }
    let header = [
        "key_id",
        "month",
        "model",
        "expected_usd",
        "recorded_usd",
        "expected_requests",
        "recorded_requests",
    ];
    let rows: Vec<Vec<String>> = report
        .differences
        .iter()
        .map(|d| cells(d)[..7].to_vec())
        .collect();
    let widths: Vec<usize> = (0..header.len())
        .map(|i| {
            rows.iter()
                .map(|r| r[i].len())
                .chain([header[i].len()])
                .max()
                .unwrap_or(0)
        })
        .collect();
    let line = |cols: Vec<&str>| {
        cols.iter()
            .zip(&widths)
            .map(|(c, w)| format!("{c:<w$}"))
            .collect::<Vec<_>>()
            .join("  ")
    };
    let _ = writeln!(out, "{}", line(header.to_vec()));
    for r in &rows {
        let _ = writeln!(out, "{}", line(r.iter().map(String::as_str).collect()));
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    fn totals(requests: i64, cost: i64) -> Totals {
        Totals {
            requests,
            prompt_tokens: 10 * requests,
            completion_tokens: 5 * requests,
            cost_micros: cost,
            ..Totals::default()
        }
    }

    #[test]
    fn reports_changed_missing_and_extra_rows_only() {
        let k = Uuid::now_v7();
        let m: NaiveDate = "2026-11-01".parse().unwrap();
        let mut expected = BTreeMap::new();
        let mut recorded = BTreeMap::new();
        expected.insert((k, m, "same".to_string()), totals(2, 300));
        recorded.insert((k, m, "same".to_string()), totals(2, 300));
        expected.insert((k, m, "changed".to_string()), totals(2, 300));
        recorded.insert((k, m, "changed".to_string()), totals(2, 999));
        expected.insert((k, m, "missing".to_string()), totals(1, 10));
        recorded.insert((k, m, "extra".to_string()), totals(1, 10));
        let diffs = compare(&expected, &recorded);
        let models: Vec<&str> = diffs.iter().map(|d| d.model.as_str()).collect();
        assert_eq!(models, ["changed", "extra", "missing"]);
        assert_eq!(diffs[0].expected.cost_micros, 300);
        assert_eq!(diffs[0].recorded.cost_micros, 999);
        assert_eq!(diffs[1].expected, Totals::default());
        assert_eq!(diffs[2].recorded, Totals::default());
    }

    #[test]
    fn scope_covers_whole_months_and_one_key() {
        let k = Uuid::now_v7();
        let scope = AuditScope {
            from: "2026-11-26".parse().unwrap(),
            to: "2026-12-02".parse().unwrap(),
            key: Some(k),
        };
        assert!(scope.covers(k, "2026-11-01".parse().unwrap()));
        assert!(scope.covers(k, "2026-12-01".parse().unwrap()));
        assert!(!scope.covers(k, "2026-10-01".parse().unwrap()));
        assert!(!scope.covers(Uuid::now_v7(), "2026-11-01".parse().unwrap()));
    }

    #[test]
    fn formats_money_exactly() {
        assert_eq!(usd(1_500_001), "1.500001");
        assert_eq!(usd(-7), "-0.000007");
        let report = AuditReport {
            from_month: "2026-11-01".parse().unwrap(),
            to_month: "2026-11-01".parse().unwrap(),
            key_id: None,
            events_scanned: 3,
            requests: 1,
            expected_cost_micros: 5,
            recorded_cost_micros: 6,
            expected_totals: totals(1, 5),
            recorded_totals: totals(1, 6),
            differences: compare(
                &BTreeMap::from([(
                    (Uuid::nil(), "2026-11-01".parse().unwrap(), "a,b".into()),
                    totals(1, 5),
                )]),
                &BTreeMap::from([(
                    (Uuid::nil(), "2026-11-01".parse().unwrap(), "a,b".into()),
                    totals(1, 6),
                )]),
            ),
            quarantined: vec![],
        };
        let csv = to_csv(&report);
        assert!(
            csv.lines()
                .nth(1)
                .unwrap()
                .contains("\"a,b\",0.000005,0.000006,1,1")
        );
        assert!(to_table(&report).contains("1 difference(s)"));
    }

    #[test]
    fn quarantined_events_make_a_report_unclean_and_get_one_short_line_each() {
        let excluded = Excluded {
            request_id: Uuid::nil().to_string(),
            sequence: 3,
            event_type: "RequestFailed".into(),
            key_id: Some(Uuid::nil()),
            month: Some("2026-11-01".parse().unwrap()),
            model: Some("x".repeat(5000)),
            cost_micros: Some(18),
            quarantined_at: Some("2026-11-26T10:00:00Z".parse().unwrap()),
            error: format!("index row size\n{}", "y".repeat(900)),
        };
        let unreadable = Excluded {
            key_id: None,
            month: None,
            model: None,
            cost_micros: None,
            quarantined_at: None,
            error: "expected value".into(),
            ..excluded.clone()
        };
        let mut report = AuditReport {
            from_month: "2026-11-01".parse().unwrap(),
            to_month: "2026-11-01".parse().unwrap(),
            key_id: None,
            events_scanned: 2,
            requests: 0,
            expected_cost_micros: 0,
            recorded_cost_micros: 0,
            expected_totals: Totals::default(),
            recorded_totals: Totals::default(),
            differences: vec![],
            quarantined: vec![excluded],
        };
        assert!(!report.is_clean());
        let table = to_table(&report);
        assert!(
            table.contains("clean except 1 quarantined event(s)"),
            "{table}"
        );
        let lines: Vec<&str> = table.lines().collect();
        assert_eq!(lines.len(), 4, "{table}");
        assert!(lines[3].starts_with("quarantined request "));
        assert!(lines[3].contains(&format!("model {}…,", "x".repeat(39))));
        assert!(lines[3].contains("cost $0.000018"));
        assert!(lines[3].chars().count() < 500);
        report.quarantined.push(unreadable);
        let lines = quarantine_lines(&report);
        let last = lines.lines().last().unwrap();
        assert!(last.starts_with("unreadable request "), "{last}");
        assert!(last.contains("key ?, month ?, model ?, cost ?"), "{last}");
        // The CSV keeps its shape: differences only.
        assert_eq!(to_csv(&report).lines().count(), 1);
    }
}
