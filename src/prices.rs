//! `aigw prices check`: which catalog prices are older than an age.
//!
//! The catalog (`runtime/catalog/presets.toml`) dates each preset's prices
//! (`prices_as_of`) and names their source (`price_source`); this lists the
//! presets whose prices were checked longer ago than `--older-than`, with
//! their priced models, so a maintainer knows what to re-check and where.
//! Progress goes to stderr, the list to stdout; the exit code says whether
//! anything is stale.

use std::fmt::Write as _;
use std::time::Duration;

use aigw_runtime::catalog::{self, StalePrices};
use chrono::NaiveDate;

/// The report: one block per stale preset, then a summary line.
pub fn render(stale: &[StalePrices<'_>], presets: usize, max_age_days: i64) -> String {
    let mut out = String::new();
    for s in stale {
        let _ = writeln!(
            out,
            "{}: prices as of {} ({} days old), source {}",
            s.preset.id,
            s.as_of,
            s.age_days,
            s.preset.price_source.as_deref().unwrap_or("(none)"),
        );
        for m in &s.models {
            let _ = writeln!(out, "  {m}");
        }
    }
    let models: usize = stale.iter().map(|s| s.models.len()).sum();
    let _ = writeln!(
        out,
        "{} of {presets} presets ({models} models) have prices older than {max_age_days} days",
        stale.len(),
    );
    out
}

/// Runs the check for `today`: the report and whether anything is stale.
pub fn check(today: NaiveDate, older_than: Duration) -> anyhow::Result<(String, bool)> {
    let catalog = catalog::catalog()?;
    let max_age_days = i64::try_from(older_than.as_secs() / 86_400)?;
    eprintln!(
        "checking the prices of {} catalog presets against an age of {max_age_days} days",
        catalog.preset.len()
    );
    let stale = catalog::stale_prices(catalog, today, max_age_days);
    Ok((
        render(&stale, catalog.preset.len(), max_age_days),
        !stale.is_empty(),
    ))
}
