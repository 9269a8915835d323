//! Properties of the budget arithmetic: whatever the request's shape and
//! whatever a provider plausibly bills for it, the hold is at least the
//! cost, and a budget that only ever settles holds to at most what they held
//! never spends past itself.

use aigw_events::Usage;
use aigw_events::pricing::Price;
use aigw_events::provider::ProviderKind;
use aigw_events::wire::Endpoint;
use proptest::prelude::*;
use serde_json::{Value, json};
use uuid::Uuid;

use super::*;
use crate::limits::{BudgetState, Hold};

/// A chat body of random shape: text (any script), images, files, tool
/// calls and their results, tools, `n` and an output cap (or none).
fn chat_body() -> impl Strategy<Value = Value> {
    let part = prop_oneof![
        "\\PC{0,40}".prop_map(|t| json!({"type": "text", "text": t})),
        Just(
            json!({"type": "image_url", "image_url": {"url": "data:image/png;base64,iVBORw0KGgo="}})
        ),
        Just(json!({"type": "file", "file": {"file_data": "JVBERi0xLjQ="}})),
    ];
    let message = prop_oneof![
        "\\PC{0,80}".prop_map(|t| json!({"role": "user", "content": t})),
        prop::collection::vec(part, 1..4).prop_map(|p| json!({"role": "user", "content": p})),
        "\\PC{0,60}".prop_map(|a| json!({"role": "assistant", "content": null,
            "tool_calls": [{"id": "c", "type": "function", "function": {"name": "f", "arguments": a}}]})),
        "\\PC{0,60}".prop_map(|t| json!({"role": "tool", "tool_call_id": "c", "content": t})),
    ];
    (
        prop::collection::vec(message, 1..6),
        1u64..=8,
        prop::option::of(1u64..=4_096),
        any::<bool>(),
    )
        .prop_map(|(messages, n, max_tokens, tools)| {
            let mut body = json!({"model": "m", "messages": messages, "n": n});
            if let Some(m) = max_tokens {
                body["max_tokens"] = json!(m);
            }
            if tools {
                body["tools"] = json!([{"type": "function", "function": {"name": "f",
                    "parameters": {"type": "object"}}}]);
            }
            body
        })
}

/// The most a provider can plausibly bill for `body`: every UTF-8 byte of
/// its text a token (tokenizers never produce more), the images and files
/// at their published maxima, its template's few tokens per message, and
/// `n` times the output cap it was given.
fn billed_at_most(body: &Value, cap: u64) -> Usage {
    fn text(v: &Value) -> u64 {
        match v {
            Value::String(s) => s.len() as u64,
            Value::Array(items) => items.iter().map(text).sum(),
            Value::Object(map) => map
                .iter()
                .map(|(k, v)| match k.as_str() {
                    "image_url" => 4_800,
                    "file" => 300_000,
                    _ => text(v),
                })
                .sum(),
            _ => 0,
        }
    }
    let messages = body["messages"].as_array().map_or(0, Vec::len) as u64;
    let tools = body.get("tools").map_or(0, |t| 350 + text(t));
    Usage {
        prompt_tokens: text(&body["messages"]) + 4 * messages + tools,
        completion_tokens: body["n"].as_u64().unwrap_or(1) * cap,
        ..Usage::default()
    }
}

fn kind() -> impl Strategy<Value = ProviderKind> {
    prop_oneof![
        Just(ProviderKind::OpenaiCompatible),
        Just(ProviderKind::Anthropic),
        Just(ProviderKind::Gemini),
    ]
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(256))]

    #[test]
    fn the_hold_is_at_least_what_a_provider_can_bill(
        body in chat_body(),
        kind in kind(),
        max_output in prop::option::of(1u64..=200_000),
        input in 0i64..=100_000_000,
        output in 0i64..=100_000_000,
    ) {
        let limits = TargetLimits { kind, context: None, max_output };
        let worst = worst_usage(Endpoint::Chat, &body, &limits).unwrap();
        let billed = billed_at_most(&body, output_cap(&body, &limits));
        prop_assert!(billed.prompt_tokens <= worst.prompt_tokens, "{billed:?} > {worst:?}");
        prop_assert!(billed.completion_tokens <= worst.completion_tokens);
        let price = Price::tokens(input, output);
        let hold = price.cost_micros(&worst).unwrap();
        prop_assert!(price.cost_micros(&billed).unwrap() <= hold);
    }

    #[test]
    fn costs_are_monotonic_and_never_wrap(
        a in any::<[u64; 5]>(),
        b in any::<[u64; 5]>(),
        rates in any::<[i64; 5]>(),
    ) {
        let usage = |c: [u64; 5]| Usage {
            prompt_tokens: c[0],
            completion_tokens: c[1],
            images: c[2],
            characters: c[3],
            audio_seconds: c[4],
            ..Usage::default()
        };
        let price = Price {
            image_micros: Some(rates[2]),
            character_micros_per_m: Some(rates[3]),
            audio_micros_per_hour: Some(rates[4]),
            ..Price::tokens(rates[0], rates[1])
        };
        let low: [u64; 5] = std::array::from_fn(|i| a[i].min(b[i]));
        match (price.cost_micros(&usage(low)), price.cost_micros(&usage(a))) {
            (Some(small), Some(big)) => prop_assert!(0 <= small && small <= big),
            // A larger usage may not fit where a smaller one does; never
            // the other way round.
            (None, Some(_)) => prop_assert!(false, "the smaller usage overflowed alone"),
            _ => {}
        }
    }

    #[test]
    fn a_budget_never_spends_past_itself(
        budget in 1i64..=1_000_000,
        steps in prop::collection::vec((1i64..=50_000, 0u8..=100, any::<bool>()), 1..200),
    ) {
        let mut state = BudgetState::default();
        let mut open: Vec<(Uuid, i64)> = Vec::new();
        let mut settled = 0i64;
        for (i, (hold, fraction, settle_one)) in steps.into_iter().enumerate() {
            let now_ms = 1_000 + i as i64;
            let request = Uuid::from_u128(i as u128 + 1);
            let h = Hold { micros: hold, tokens: 0, expires_ms: i64::MAX };
            if state.reserve(request, h, Some(budget), None, now_ms).is_ok() {
                open.push((request, hold));
            }
            if settle_one && !open.is_empty() {
                let (id, held) = open.remove(0);
                // Settles to at most what was held, as the worst case ensures.
                let cost = held * i64::from(fraction) / 100;
                prop_assert!(state.settle(id, None, cost, 0, now_ms));
                settled += cost;
                // A second settle of the same request changes nothing.
                prop_assert!(!state.settle(id, None, cost, 0, now_ms));
            }
            let (held, _) = state.held();
            prop_assert!(state.spent_micros + held <= budget);
            prop_assert_eq!(state.spent_micros, settled);
        }
    }
}
