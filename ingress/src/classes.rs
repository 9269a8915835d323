//! Token classes in the usage and billing views' answers (`/stats`,
//! `/admin/api/stats`, `/admin/api/usage`, `/admin/api/billing`): each row
//! and total shows its cached input, cache writes (5 min, 1 h) and
//! reasoning tokens (parts of its prompt and completion tokens), how many
//! requests were billed at a fallback price, and the rerank search units.
//!
//! The classes are read as one JSON column ([`SUMS`], [`COLUMNS`]) decoded
//! into [`Classes`], so each view query keeps a row type of its own size.

use serde::{Deserialize, Serialize};
use serde_json::Value;

/// The classes of a grouped query, summed.
pub const SUMS: &str = "jsonb_build_object(
    'cached_tokens', coalesce(sum(cached_tokens), 0)::int8,
    'cache_write_5m_tokens', coalesce(sum(cache_write_5m_tokens), 0)::int8,
    'cache_write_1h_tokens', coalesce(sum(cache_write_1h_tokens), 0)::int8,
    'reasoning_tokens', coalesce(sum(reasoning_tokens), 0)::int8,
    'price_fallback_requests', coalesce(sum(price_fallback_requests), 0)::int8,
    'searches', coalesce(sum(searches), 0)::int8)";

/// The classes of one view row.
pub const COLUMNS: &str = "jsonb_build_object(
    'cached_tokens', cached_tokens,
    'cache_write_5m_tokens', cache_write_5m_tokens,
    'cache_write_1h_tokens', cache_write_1h_tokens,
    'reasoning_tokens', reasoning_tokens,
    'price_fallback_requests', price_fallback_requests,
    'searches', searches)";

/// Token classes of a row or a total, as shown.
#[derive(Debug, Default, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub struct Classes {
    /// Prompt tokens read from the provider's cache.
    pub cached_tokens: i64,
    /// Prompt tokens written to the cache for 5 minutes.
    pub cache_write_5m_tokens: i64,
    /// Prompt tokens written to the cache for an hour.
    pub cache_write_1h_tokens: i64,
    /// Completion tokens spent reasoning.
    pub reasoning_tokens: i64,
    /// Requests with tokens of a class their price had no rate for.
    pub price_fallback_requests: i64,
    /// Rerank search units (not tokens: a unit of their own).
    #[serde(default)]
    pub searches: i64,
}

/// A `Classes` column as sqlx decodes it.
pub type ClassesColumn = sqlx::types::Json<Classes>;

impl Classes {
    /// Adds another row's classes.
    pub fn add(&mut self, o: &Classes) {
        self.cached_tokens += o.cached_tokens;
        self.cache_write_5m_tokens += o.cache_write_5m_tokens;
        self.cache_write_1h_tokens += o.cache_write_1h_tokens;
        self.reasoning_tokens += o.reasoning_tokens;
        self.price_fallback_requests += o.price_fallback_requests;
        self.searches += o.searches;
    }

    /// `row` (a JSON object) with the classes' fields added.
    pub fn shown_in(&self, mut row: Value) -> Value {
        if let (Some(obj), Ok(Value::Object(fields))) =
            (row.as_object_mut(), serde_json::to_value(self))
        {
            obj.extend(fields);
        }
        row
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn classes_add_up_and_show_beside_the_row() {
        let one = Classes {
            cached_tokens: 1,
            cache_write_5m_tokens: 2,
            cache_write_1h_tokens: 3,
            reasoning_tokens: 4,
            price_fallback_requests: 1,
            searches: 3,
        };
        let mut sum = Classes::default();
        sum.add(&one);
        sum.add(&one);
        assert_eq!(sum.cache_write_1h_tokens, 6);
        let row = sum.shown_in(json!({"model": "m"}));
        assert_eq!(row["model"], "m");
        assert_eq!(row["cached_tokens"], 2);
        assert_eq!(row["reasoning_tokens"], 8);
        assert_eq!(row["price_fallback_requests"], 2);
        assert_eq!(row["searches"], 6);
    }
}
