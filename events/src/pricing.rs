//! Prices and the cost of usage, in integer micro-dollars.
//!
//! Invariants:
//! - Money is an integer count of micro-dollars (`i64`), never a float; the
//!   only float is an admin's USD amount, converted once by
//!   [`usd_to_micros`], which refuses anything outside `0..=MAX_USD`.
//! - A cost is computed in `i128` millionths of a micro-dollar with checked
//!   arithmetic and rounded up once, at the end, to the next micro-dollar.
//!   [`Price::cost_micros`] returns `None` rather than wrap or saturate when
//!   a result would not fit: callers refuse the request (admission) or flag
//!   the cost (recording), never bill a wrong amount.

use serde::{Deserialize, Serialize};

use crate::Usage;

/// The largest USD amount an admin can write (a price, a budget, a top-up):
/// a billion dollars, so sums of them stay far inside `i64` micro-dollars.
pub const MAX_USD: f64 = 1.0e9;

/// Prices of one model, in micro-dollars per million tokens (so 0.15 USD per
/// 1M tokens is 150_000), plus the per-unit prices of media models.
/// Integers, so costs add up exactly.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub struct Price {
    pub input_micros_per_mtok: i64,
    pub output_micros_per_mtok: i64,
    /// Rate for prompt tokens served from the provider's cache, if it bills them apart.
    #[serde(default)]
    pub cached_input_micros_per_mtok: Option<i64>,
    /// Rate for reasoning tokens, if the provider bills them apart from output.
    #[serde(default)]
    pub reasoning_micros_per_mtok: Option<i64>,
    /// Micro-dollars per generated image.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub image_micros: Option<i64>,
    /// Micro-dollars per million characters of speech.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub character_micros_per_m: Option<i64>,
    /// Micro-dollars per hour of transcribed audio.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub audio_micros_per_hour: Option<i64>,
}

impl Price {
    /// A token price without the optional rates.
    pub fn tokens(input_micros_per_mtok: i64, output_micros_per_mtok: i64) -> Self {
        Self {
            input_micros_per_mtok,
            output_micros_per_mtok,
            cached_input_micros_per_mtok: None,
            reasoning_micros_per_mtok: None,
            image_micros: None,
            character_micros_per_m: None,
            audio_micros_per_hour: None,
        }
    }

    /// Cost of `usage` in micro-dollars, rounded up to the next micro-dollar;
    /// `None` when it does not fit in an `i64` (or a rate is negative).
    pub fn cost_micros(&self, usage: &Usage) -> Option<i64> {
        let rate = |r: Option<i64>| -> Option<i128> {
            let r = i128::from(r.unwrap_or(0));
            (r >= 0).then_some(r)
        };
        let term = |count: u64, r: Option<i64>, scale: i128| -> Option<i128> {
            i128::from(count).checked_mul(rate(r)?)?.checked_mul(scale)
        };
        // In millionths of a micro-dollar.
        let audio = term(usage.audio_seconds, self.audio_micros_per_hour, 1_000_000)?
            .checked_add(3599)?
            / 3600;
        let pico = term(usage.prompt_tokens, Some(self.input_micros_per_mtok), 1)?
            .checked_add(term(
                usage.completion_tokens,
                Some(self.output_micros_per_mtok),
                1,
            )?)?
            .checked_add(term(usage.images, self.image_micros, 1_000_000)?)?
            .checked_add(term(usage.characters, self.character_micros_per_m, 1)?)?
            .checked_add(audio)?;
        i64::try_from(pico.checked_add(999_999)? / 1_000_000).ok()
    }
}

/// Converts a USD amount (as admins write it) to micro-dollars: `None` for
/// negative, non-finite or larger than [`MAX_USD`] amounts.
pub fn usd_to_micros(usd: f64) -> Option<i64> {
    (0.0..=MAX_USD)
        .contains(&usd)
        .then(|| (usd * 1_000_000.0).round() as i64)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn usage(p: u64, c: u64) -> Usage {
        Usage {
            prompt_tokens: p,
            completion_tokens: c,
            ..Default::default()
        }
    }

    #[test]
    fn costs_are_exact_micro_dollars_rounded_up() {
        let price = Price::tokens(150_000, 600_000);
        assert_eq!(price.cost_micros(&usage(1_000_000, 0)), Some(150_000));
        assert_eq!(price.cost_micros(&usage(1_000, 1_000)), Some(750));
        // 0.15 micro-dollars is billed as one.
        assert_eq!(price.cost_micros(&usage(1, 0)), Some(1));
        assert_eq!(price.cost_micros(&usage(0, 0)), Some(0));
        assert_eq!(usd_to_micros(0.05), Some(50_000));
        assert_eq!(usd_to_micros(-1.0), None);
        assert_eq!(usd_to_micros(f64::NAN), None);
        assert_eq!(usd_to_micros(f64::INFINITY), None);
        assert_eq!(usd_to_micros(MAX_USD), Some(1_000_000_000_000_000));
        assert_eq!(usd_to_micros(MAX_USD * 2.0), None);
    }

    #[test]
    fn media_units_are_billed_by_their_own_rates() {
        let price = Price {
            image_micros: Some(40_000),
            character_micros_per_m: Some(100_000_000),
            audio_micros_per_hour: Some(150_000),
            ..Price::tokens(1_000_000, 0)
        };
        let usage = |images, characters, audio_seconds| Usage {
            images,
            characters,
            audio_seconds,
            ..Default::default()
        };
        // Two images at $0.04.
        assert_eq!(price.cost_micros(&usage(2, 0, 0)), Some(80_000));
        // 1,000 characters at $100 per million.
        assert_eq!(price.cost_micros(&usage(0, 1_000, 0)), Some(100_000));
        // 60 s at $0.15 per hour = 2,500 micro-dollars.
        assert_eq!(price.cost_micros(&usage(0, 0, 60)), Some(2_500));
        // A model without a media rate bills its media units as nothing.
        assert_eq!(Price::tokens(1, 1).cost_micros(&usage(3, 3, 3)), Some(0));
    }

    #[test]
    fn a_cost_that_does_not_fit_is_none_not_a_wrapped_or_saturated_amount() {
        let dear = Price::tokens(i64::MAX, i64::MAX);
        assert_eq!(dear.cost_micros(&usage(u64::MAX, u64::MAX)), None);
        assert_eq!(dear.cost_micros(&usage(2_000_000, 0)), None);
        // Just inside: i64::MAX micro-dollars per million tokens, for a
        // million tokens.
        assert_eq!(dear.cost_micros(&usage(1_000_000, 0)), Some(i64::MAX));
        let images = Price {
            image_micros: Some(i64::MAX),
            ..Price::tokens(0, 0)
        };
        let many = Usage {
            images: 2,
            ..Default::default()
        };
        assert_eq!(images.cost_micros(&many), None);
        // A negative rate (never written by aigw) prices nothing.
        assert_eq!(Price::tokens(-1, 0).cost_micros(&usage(1, 0)), None);
    }
}
