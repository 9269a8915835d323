//! Prices and the cost of usage, in integer micro-dollars: the one place
//! aigw turns tokens and media units into money (the recorded cost, the
//! budget hold's worst case, the routing estimate) and the one place an
//! admin's USD amounts become integer rates ([`PriceUsd`]).
//!
//! Invariants:
//! - Money is an integer count of micro-dollars (`i64`), never a float; the
//!   only float is an admin's USD amount, converted once by
//!   [`usd_to_micros`], which refuses anything outside `0..=MAX_USD`.
//! - A cost is computed in `i128` millionths of a micro-dollar with checked
//!   arithmetic and rounded up once, at the end, to the next micro-dollar.
//!   [`Price::cost`] returns `None` rather than wrap or saturate when
//!   a result would not fit: callers refuse the request (admission) or flag
//!   the cost (recording), never bill a wrong amount.
//! - Each token is billed once, at the rate of its class (see [`Usage`]: the
//!   cache classes are parts of `prompt_tokens`, reasoning a part of
//!   `completion_tokens`). A class without a rate of its own falls back to
//!   its base rate (cached input and cache writes at the input rate,
//!   reasoning at the output rate) and the cost says so
//!   ([`Cost::fallback`]).
//! - [`Price::hold_micros`] is at least the cost of any split of the same
//!   totals into classes, so a budget hold is a true worst case whatever
//!   classes the provider later reports.

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
    /// Rate for prompt tokens of no other class (uncached input).
    pub input_micros_per_mtok: i64,
    /// Rate for completion tokens other than reasoning.
    pub output_micros_per_mtok: i64,
    /// Rate for prompt tokens read from the provider's cache; `None`: the
    /// input rate, flagged.
    #[serde(default)]
    pub cached_input_micros_per_mtok: Option<i64>,
    /// Rate for prompt tokens written to the provider's cache for 5
    /// minutes; `None`: the input rate, flagged.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub cache_write_5m_micros_per_mtok: Option<i64>,
    /// Rate for prompt tokens written to the provider's cache for an hour;
    /// `None`: the input rate, flagged.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub cache_write_1h_micros_per_mtok: Option<i64>,
    /// Rate for reasoning tokens; `None`: the output rate, flagged.
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
    /// Micro-dollars per thousand rerank search units.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub search_micros_per_k: Option<i64>,
}

/// What a usage costs at a price.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Cost {
    /// Micro-dollars, rounded up once.
    pub micros: i64,
    /// Some tokens were of a class the price has no rate for, and were
    /// billed at the fallback rate (cached input and cache writes at the
    /// input rate, reasoning at the output rate).
    pub fallback: bool,
}

impl Price {
    /// A token price without the optional rates.
    pub fn tokens(input_micros_per_mtok: i64, output_micros_per_mtok: i64) -> Self {
        Self {
            input_micros_per_mtok,
            output_micros_per_mtok,
            cached_input_micros_per_mtok: None,
            cache_write_5m_micros_per_mtok: None,
            cache_write_1h_micros_per_mtok: None,
            reasoning_micros_per_mtok: None,
            image_micros: None,
            character_micros_per_m: None,
            audio_micros_per_hour: None,
            search_micros_per_k: None,
        }
    }

    /// Cost of `usage`, each token at the rate of its class, rounded up to
    /// the next micro-dollar; `None` when it does not fit in an `i64` (or a
    /// rate is negative).
    pub fn cost(&self, usage: &Usage) -> Option<Cost> {
        let input = Some(self.input_micros_per_mtok);
        let output = Some(self.output_micros_per_mtok);
        // Each class with its own rate, or its base rate and a flag.
        let classes = [
            (
                usage.cached_tokens,
                self.cached_input_micros_per_mtok,
                input,
            ),
            (
                usage.cache_write_5m_tokens,
                self.cache_write_5m_micros_per_mtok,
                input,
            ),
            (
                usage.cache_write_1h_tokens,
                self.cache_write_1h_micros_per_mtok,
                input,
            ),
            (
                usage.reasoning_tokens,
                self.reasoning_micros_per_mtok,
                output,
            ),
        ];
        let fallback = classes
            .iter()
            .any(|&(count, own, _)| count > 0 && own.is_none());
        let mut pico = term(usage.uncached_prompt_tokens(), input, 1)?.checked_add(term(
            usage
                .completion_tokens
                .saturating_sub(usage.reasoning_tokens),
            output,
            1,
        )?)?;
        for (count, own, base) in classes {
            pico = pico.checked_add(term(count, own.or(base), 1)?)?;
        }
        let micros = i64::try_from(
            self.media_pico(usage)?
                .checked_add(pico)?
                .checked_add(999_999)?
                / 1_000_000,
        )
        .ok()?;
        Some(Cost { micros, fallback })
    }

    /// Cost of `usage` in micro-dollars (see [`Price::cost`]).
    pub fn cost_micros(&self, usage: &Usage) -> Option<i64> {
        self.cost(usage).map(|c| c.micros)
    }

    /// The most `usage`'s totals can cost, whatever classes its prompt and
    /// completion tokens turn out to be of: every prompt token at the
    /// dearest input-side rate, every completion token at the dearest
    /// output-side rate. At least [`Price::cost`] of any usage with the same
    /// totals; `None` when it does not fit.
    pub fn hold_micros(&self, usage: &Usage) -> Option<i64> {
        let dearest = |base: i64, others: &[Option<i64>]| {
            others.iter().flatten().fold(base, |a, &b| a.max(b))
        };
        let worst = Price {
            input_micros_per_mtok: dearest(
                self.input_micros_per_mtok,
                &[
                    self.cached_input_micros_per_mtok,
                    self.cache_write_5m_micros_per_mtok,
                    self.cache_write_1h_micros_per_mtok,
                ],
            ),
            output_micros_per_mtok: dearest(
                self.output_micros_per_mtok,
                &[self.reasoning_micros_per_mtok],
            ),
            ..*self
        };
        let totals = Usage {
            prompt_tokens: usage.prompt_tokens,
            completion_tokens: usage.completion_tokens,
            images: usage.images,
            characters: usage.characters,
            audio_seconds: usage.audio_seconds,
            searches: usage.searches,
            ..Usage::default()
        };
        // A negative class rate makes `cost` refuse, so it does here too.
        let negative = [
            self.cached_input_micros_per_mtok,
            self.cache_write_5m_micros_per_mtok,
            self.cache_write_1h_micros_per_mtok,
            self.reasoning_micros_per_mtok,
        ]
        .iter()
        .flatten()
        .any(|&r| r < 0);
        if negative {
            return None;
        }
        worst.cost_micros(&totals)
    }

    /// Media units in millionths of a micro-dollar.
    fn media_pico(&self, usage: &Usage) -> Option<i128> {
        let audio = term(usage.audio_seconds, self.audio_micros_per_hour, 1_000_000)?
            .checked_add(3599)?
            / 3600;
        let searches = term(usage.searches, self.search_micros_per_k, 1_000)?;
        term(usage.images, self.image_micros, 1_000_000)?
            .checked_add(term(usage.characters, self.character_micros_per_m, 1)?)?
            .checked_add(audio)?
            .checked_add(searches)
    }
}

/// `count` at `rate` (none: free) times `scale`, in `i128`; `None` for a
/// negative rate or a product that does not fit.
fn term(count: u64, rate: Option<i64>, scale: i128) -> Option<i128> {
    let rate = i128::from(rate.unwrap_or(0));
    if rate < 0 {
        return None;
    }
    i128::from(count).checked_mul(rate)?.checked_mul(scale)
}

/// The budget hold of `worst` at a model priced `price`: its
/// [`Price::hold_micros`], or nothing for an unpriced model (its usage is
/// flagged, not billed). `None` when the worst case does not fit.
pub fn hold_micros(price: Option<&Price>, worst: &Usage) -> Option<i64> {
    match price {
        None => Some(0),
        Some(price) => price.hold_micros(worst),
    }
}

/// Converts a USD amount (as admins write it) to micro-dollars: `None` for
/// negative, non-finite or larger than [`MAX_USD`] amounts.
pub fn usd_to_micros(usd: f64) -> Option<i64> {
    (0.0..=MAX_USD)
        .contains(&usd)
        .then(|| (usd * 1_000_000.0).round() as i64)
}

/// Micro-dollars as USD (for showing a price; never for arithmetic).
pub fn micros_to_usd(micros: i64) -> f64 {
    micros as f64 / 1_000_000.0
}

/// A model's prices as admins write them: USD per million tokens of each
/// class, and for media models per image, per million characters, per
/// audio hour. The admin API takes and shows prices in this form.
#[derive(Debug, Clone, Copy, Default, PartialEq, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema), schema(as = PriceInput))]
#[serde(deny_unknown_fields)]
pub struct PriceUsd {
    pub input_usd_per_mtok: f64,
    pub output_usd_per_mtok: f64,
    #[serde(default)]
    pub cached_input_usd_per_mtok: Option<f64>,
    #[serde(default)]
    pub cache_write_5m_usd_per_mtok: Option<f64>,
    #[serde(default)]
    pub cache_write_1h_usd_per_mtok: Option<f64>,
    #[serde(default)]
    pub reasoning_usd_per_mtok: Option<f64>,
    #[serde(default)]
    pub per_image_usd: Option<f64>,
    #[serde(default)]
    pub per_mchar_usd: Option<f64>,
    #[serde(default)]
    pub per_hour_usd: Option<f64>,
    /// USD per thousand rerank search units.
    #[serde(default)]
    pub per_ksearch_usd: Option<f64>,
}

/// A USD amount that is negative, not finite or above [`MAX_USD`].
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
#[error("prices must be non-negative USD amounts of at most a billion")]
pub struct InvalidAmount;

impl PriceUsd {
    /// The integer price; every amount must pass [`usd_to_micros`].
    pub fn to_price(&self) -> Result<Price, InvalidAmount> {
        let amount = |v: f64| usd_to_micros(v).ok_or(InvalidAmount);
        let optional = |v: Option<f64>| v.map(amount).transpose();
        Ok(Price {
            input_micros_per_mtok: amount(self.input_usd_per_mtok)?,
            output_micros_per_mtok: amount(self.output_usd_per_mtok)?,
            cached_input_micros_per_mtok: optional(self.cached_input_usd_per_mtok)?,
            cache_write_5m_micros_per_mtok: optional(self.cache_write_5m_usd_per_mtok)?,
            cache_write_1h_micros_per_mtok: optional(self.cache_write_1h_usd_per_mtok)?,
            reasoning_micros_per_mtok: optional(self.reasoning_usd_per_mtok)?,
            image_micros: optional(self.per_image_usd)?,
            character_micros_per_m: optional(self.per_mchar_usd)?,
            audio_micros_per_hour: optional(self.per_hour_usd)?,
            search_micros_per_k: optional(self.per_ksearch_usd)?,
        })
    }
}

impl From<&Price> for PriceUsd {
    fn from(p: &Price) -> Self {
        let usd = micros_to_usd;
        Self {
            input_usd_per_mtok: usd(p.input_micros_per_mtok),
            output_usd_per_mtok: usd(p.output_micros_per_mtok),
            cached_input_usd_per_mtok: p.cached_input_micros_per_mtok.map(usd),
            cache_write_5m_usd_per_mtok: p.cache_write_5m_micros_per_mtok.map(usd),
            cache_write_1h_usd_per_mtok: p.cache_write_1h_micros_per_mtok.map(usd),
            reasoning_usd_per_mtok: p.reasoning_micros_per_mtok.map(usd),
            per_image_usd: p.image_micros.map(usd),
            per_mchar_usd: p.character_micros_per_m.map(usd),
            per_hour_usd: p.audio_micros_per_hour.map(usd),
            per_ksearch_usd: p.search_micros_per_k.map(usd),
        }
    }
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
    fn rerank_search_units_are_billed_per_thousand_and_held_at_worst() {
        // Cohere's Rerank 3.5: $2.00 per 1,000 searches.
        let price = Price {
            search_micros_per_k: Some(2_000_000),
            ..Price::tokens(0, 0)
        };
        let searches = |searches, prompt_tokens| Usage {
            searches,
            prompt_tokens,
            ..Default::default()
        };
        assert_eq!(price.cost_micros(&searches(1, 0)), Some(2_000));
        assert_eq!(price.cost_micros(&searches(3, 5_000)), Some(6_000));
        assert_eq!(price.hold_micros(&searches(3, 5_000)), Some(6_000));
        // Token-priced rerankers (Jina, Voyage) bill their tokens instead.
        let tokens = Price::tokens(20_000, 0);
        assert_eq!(tokens.cost_micros(&searches(2, 1_000_000)), Some(20_000));
        let dear = Price {
            search_micros_per_k: Some(i64::MAX),
            ..Price::tokens(0, 0)
        };
        assert_eq!(dear.cost_micros(&searches(u64::MAX, 0)), None);
        let usd = PriceUsd {
            per_ksearch_usd: Some(2.0),
            ..PriceUsd::default()
        };
        assert_eq!(usd.to_price().unwrap().search_micros_per_k, Some(2_000_000));
        assert_eq!(PriceUsd::from(&usd.to_price().unwrap()), usd);
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

    /// The price of the examples: Anthropic's shape ($3 input, $15 output,
    /// cache read 0.1x, writes 1.25x and 2x) with a reasoning rate.
    fn classed() -> Price {
        Price {
            cached_input_micros_per_mtok: Some(300_000),
            cache_write_5m_micros_per_mtok: Some(3_750_000),
            cache_write_1h_micros_per_mtok: Some(6_000_000),
            reasoning_micros_per_mtok: Some(20_000_000),
            ..Price::tokens(3_000_000, 15_000_000)
        }
    }

    fn classes(
        prompt: u64,
        cached: u64,
        w5: u64,
        w1: u64,
        completion: u64,
        reasoning: u64,
    ) -> Usage {
        Usage {
            prompt_tokens: prompt,
            completion_tokens: completion,
            cached_tokens: cached,
            cache_write_5m_tokens: w5,
            cache_write_1h_tokens: w1,
            reasoning_tokens: reasoning,
            ..Default::default()
        }
    }

    #[test]
    fn each_token_class_is_billed_once_at_its_own_rate() {
        let p = classed();
        let cost = |u: Usage| p.cost(&u).unwrap();
        // A million tokens of each class alone.
        assert_eq!(cost(classes(1_000_000, 0, 0, 0, 0, 0)).micros, 3_000_000);
        assert_eq!(
            cost(classes(1_000_000, 1_000_000, 0, 0, 0, 0)).micros,
            300_000
        );
        assert_eq!(
            cost(classes(1_000_000, 0, 1_000_000, 0, 0, 0)).micros,
            3_750_000
        );
        assert_eq!(
            cost(classes(1_000_000, 0, 0, 1_000_000, 0, 0)).micros,
            6_000_000
        );
        assert_eq!(cost(classes(0, 0, 0, 0, 1_000_000, 0)).micros, 15_000_000);
        assert_eq!(
            cost(classes(0, 0, 0, 0, 1_000_000, 1_000_000)).micros,
            20_000_000
        );
        // All together: 1,000 uncached, 2,000 read, 3,000 + 4,000 written;
        // 500 output of which 200 reasoning. In millionths of a micro-dollar:
        // 1000*3e6 + 2000*3e5 + 3000*3.75e6 + 4000*6e6 + 300*15e6 + 200*20e6.
        let all = cost(classes(10_000, 2_000, 3_000, 4_000, 500, 200));
        let pico: i64 = 3_000_000_000
            + 600_000_000
            + 11_250_000_000
            + 24_000_000_000
            + 4_500_000_000
            + 4_000_000_000;
        assert_eq!(all.micros, (pico + 999_999) / 1_000_000);
        assert!(!all.fallback);
        // Old usage (no classes) costs what it always did.
        assert_eq!(
            p.cost_micros(&usage(1_000, 1_000)),
            Price::tokens(3_000_000, 15_000_000).cost_micros(&usage(1_000, 1_000))
        );
    }

    #[test]
    fn a_class_without_a_rate_falls_back_to_its_base_rate_and_says_so() {
        let bare = Price::tokens(3_000_000, 15_000_000);
        for u in [
            classes(1_000_000, 1_000_000, 0, 0, 0, 0),
            classes(1_000_000, 0, 1_000_000, 0, 0, 0),
            classes(1_000_000, 0, 0, 1_000_000, 0, 0),
        ] {
            assert_eq!(
                bare.cost(&u),
                Some(Cost {
                    micros: 3_000_000,
                    fallback: true
                })
            );
        }
        assert_eq!(
            bare.cost(&classes(0, 0, 0, 0, 1_000_000, 1_000_000)),
            Some(Cost {
                micros: 15_000_000,
                fallback: true
            })
        );
        // No tokens of the class: no fallback, whatever the price lacks.
        assert_eq!(
            bare.cost(&usage(1_000_000, 0)),
            Some(Cost {
                micros: 3_000_000,
                fallback: false
            })
        );
        // Only the missing class is at the fallback rate.
        let half = Price {
            cached_input_micros_per_mtok: Some(300_000),
            ..bare
        };
        assert_eq!(
            half.cost(&classes(2_000_000, 1_000_000, 1_000_000, 0, 0, 0)),
            Some(Cost {
                micros: 3_300_000,
                fallback: true
            })
        );
    }

    #[test]
    fn usd_prices_round_trip_every_class() {
        let usd = PriceUsd {
            input_usd_per_mtok: 3.0,
            output_usd_per_mtok: 15.0,
            cached_input_usd_per_mtok: Some(0.3),
            cache_write_5m_usd_per_mtok: Some(3.75),
            cache_write_1h_usd_per_mtok: Some(6.0),
            reasoning_usd_per_mtok: Some(20.0),
            ..PriceUsd::default()
        };
        assert_eq!(usd.to_price(), Ok(classed()));
        assert_eq!(PriceUsd::from(&classed()), usd);
        let bad = PriceUsd {
            cache_write_1h_usd_per_mtok: Some(-1.0),
            ..usd
        };
        assert_eq!(bad.to_price(), Err(InvalidAmount));
    }

    fn rate() -> impl proptest::strategy::Strategy<Value = Option<i64>> {
        proptest::option::of(0i64..=1_000_000_000)
    }

    proptest::proptest! {
        #![proptest_config(proptest::prelude::ProptestConfig::with_cases(512))]

        /// The hold of some totals covers every split of them into classes,
        /// and no split is billed twice: the cost of a split lies between
        /// the totals at the cheapest and at the dearest rates.
        #[test]
        fn the_hold_covers_every_split_into_classes(
            prompt in 0u64..=Usage::MAX_COUNT,
            completion in 0u64..=Usage::MAX_COUNT,
            shares in proptest::array::uniform4(0u64..=1_000),
            input in 0i64..=1_000_000_000,
            output in 0i64..=1_000_000_000,
            cached in rate(), w5 in rate(), w1 in rate(), reasoning in rate(),
        ) {
            let part = |whole: u64, share: u64| {
                u64::try_from(u128::from(whole) * u128::from(share) / 1_000).unwrap()
            };
            let cached_n = part(prompt, shares[0] / 3);
            let w5_n = part(prompt, shares[1] / 3);
            let w1_n = part(prompt, shares[2] / 3);
            let split = classes(prompt, cached_n, w5_n, w1_n, completion, part(completion, shares[3]));
            proptest::prop_assert!(split.is_plausible());
            let price = Price {
                cached_input_micros_per_mtok: cached,
                cache_write_5m_micros_per_mtok: w5,
                cache_write_1h_micros_per_mtok: w1,
                reasoning_micros_per_mtok: reasoning,
                ..Price::tokens(input, output)
            };
            let cost = price.cost(&split).unwrap().micros;
            let hold = price.hold_micros(&split).unwrap();
            proptest::prop_assert!(cost <= hold, "{cost} > {hold}");
            let cheapest = Price::tokens(
                [Some(input), cached, w5, w1].iter().flatten().copied().min().unwrap(),
                [Some(output), reasoning].iter().flatten().copied().min().unwrap(),
            );
            let floor = cheapest.cost_micros(&classes(prompt, 0, 0, 0, completion, 0)).unwrap();
            proptest::prop_assert!(floor <= cost, "{floor} > {cost}");
        }
    }
}
