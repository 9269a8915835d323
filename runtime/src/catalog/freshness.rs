//! How current the catalog's prices are: every preset with prices names
//! where they come from (`price_source`, an https URL) and the day they were
//! last checked there (`prices_as_of`), validated with the catalog;
//! [`stale_prices`] lists the presets checked longer ago than an age (`aigw
//! prices check`).

use super::{Catalog, Preset};

/// A preset whose catalog prices were checked longer ago than allowed.
#[derive(Debug, Clone)]
pub struct StalePrices<'a> {
    pub preset: &'a Preset,
    pub as_of: chrono::NaiveDate,
    /// Whole days between `as_of` and the day of the check.
    pub age_days: i64,
    /// The priced models of the preset.
    pub models: Vec<&'a str>,
}

/// The presets of `catalog` with prices last checked more than `max_age_days`
/// days before `today`, oldest first (presets without prices are never
/// stale).
pub fn stale_prices(
    catalog: &Catalog,
    today: chrono::NaiveDate,
    max_age_days: i64,
) -> Vec<StalePrices<'_>> {
    let mut stale: Vec<StalePrices<'_>> = catalog
        .preset
        .iter()
        .filter_map(|p| {
            let as_of = p.prices_as_of?;
            let age_days = (today - as_of).num_days();
            let models: Vec<&str> = p
                .models
                .iter()
                .filter(|m| m.price().is_some())
                .map(|m| m.id.as_str())
                .collect();
            (age_days > max_age_days && !models.is_empty()).then_some(StalePrices {
                preset: p,
                as_of,
                age_days,
                models,
            })
        })
        .collect();
    stale.sort_by_key(|s| (s.as_of, s.preset.id.clone()));
    stale
}

/// A preset with prices says where they come from and as of when.
pub(super) fn check_price_source(preset: &Preset, priced: bool) -> Result<(), String> {
    match (&preset.price_source, preset.prices_as_of) {
        (Some(url), Some(_)) if url.starts_with("https://") => Ok(()),
        (Some(url), Some(_)) => Err(format!("price_source {url:?} is not an https:// URL")),
        (None, None) if !priced => Ok(()),
        _ => Err("a preset with prices needs both price_source and prices_as_of".into()),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::catalog::catalog;

    #[test]
    fn stale_prices_are_those_checked_longer_ago_than_the_age() {
        let c = catalog().unwrap();
        let day = |s: &str| s.parse::<chrono::NaiveDate>().unwrap();
        // Nothing is older than its own date plus a century.
        assert!(stale_prices(c, day("2026-12-03"), 36_500).is_empty());
        let all = stale_prices(c, day("2030-01-01"), 0);
        let priced = c
            .preset
            .iter()
            .filter(|p| p.models.iter().any(|m| m.price().is_some()))
            .count();
        assert_eq!(all.len(), priced);
        assert!(all.windows(2).all(|w| w[0].as_of <= w[1].as_of));
        // OpenAI's prices are as of 2026-08-02: 92 days old on 2026-11-02.
        let stale = stale_prices(c, day("2026-11-02"), 90);
        let openai = stale.iter().find(|s| s.preset.id == "openai").unwrap();
        assert_eq!(openai.age_days, 92);
        assert!(openai.models.contains(&"gpt-5.4"));
        assert!(
            !stale_prices(c, day("2026-10-31"), 90)
                .iter()
                .any(|s| s.preset.id == "openai")
        );
    }
}
