//! What an answer cost, shown to the caller in the shape of its dialect.
//!
//! Invariants:
//! - The ingress never prices anything. The dispatcher prices a request's
//!   usage once, when it is known, records that cost in the request's
//!   outcome event and carries the same value in the answer's frame header
//!   ([`wire::COST`]); this module only reads it and shapes it.
//! - Amounts are integer micro-dollars until they are shown: the header is
//!   a decimal string with exactly six decimals, made without floats.
//! - An unpriced model shows no cost, only a flag: never `0` for "unknown".
//!
//! [`Dialect`] is the seam for ingress dialects: each one says how a
//! non-streamed answer and a stream's usage event show the cost. Every
//! dialect's non-streamed answers carry aigw's cost headers; OpenAI's
//! streams get `usage.cost_usd` in their usage chunk, Anthropic's in the
//! usage of their `message_delta` event (the event that carries the final
//! usage), Gemini's `usageMetadata.costUsd` in the last chunk that has
//! usage, Responses' `response.usage.cost_usd` in `response.completed`
//! (or `response.incomplete`); every other event passes as rendered.

use aigw_events::wire::{self, AnswerCost};
use axum::http::{HeaderMap, HeaderValue};
use bytes::Bytes;
use serde_json::Value;

use crate::chat::header_of;
pub use crate::dialects::Dialect;

/// Response header with a priced answer's cost in USD (`0.000210`).
pub const COST_USD: &str = "x-aigw-cost-usd";
/// Response header flagging an answer that has no cost: `unpriced`.
pub const COST_FLAGGED: &str = "x-aigw-cost-flagged";
/// The field a stream's usage object gets (OpenAI dialect), in USD.
pub const USAGE_COST_FIELD: &str = "cost_usd";

/// The cost a reply frame carries, if any (successful answers, and the
/// chunk with a stream's usage).
pub fn of_frame(msg: &async_nats::Message) -> Option<AnswerCost> {
    header_of(msg, wire::COST).and_then(|v| AnswerCost::parse(&v))
}

/// Micro-dollars as a USD decimal with six decimals: 210 is `0.000210`.
pub fn usd(micros: i64) -> String {
    let sign = if micros < 0 { "-" } else { "" };
    let m = micros.unsigned_abs();
    format!("{sign}{}.{:06}", m / 1_000_000, m % 1_000_000)
}

/// Micro-dollars as a JSON number of USD (`210` is `0.00021`): the nearest
/// `f64`, so `round(cost_usd * 1e6)` gives the micro-dollars back exactly
/// (for any amount below 2^53 micro-dollars, some nine billion dollars).
pub fn usd_number(micros: i64) -> Value {
    serde_json::json!(micros as f64 / 1_000_000.0)
}

impl Dialect {
    /// Sets the cost headers of a non-streamed answer: [`COST_USD`] when
    /// priced, [`COST_FLAGGED`] `unpriced` otherwise.
    pub fn answer_headers(self, headers: &mut HeaderMap, cost: AnswerCost) {
        match self {
            Dialect::OpenAi | Dialect::Anthropic | Dialect::Gemini | Dialect::Responses { .. } => {
                match cost {
                    AnswerCost::Micros(m) => {
                        if let Ok(v) = HeaderValue::from_str(&usd(m)) {
                            headers.insert(COST_USD, v);
                        }
                    }
                    AnswerCost::Unpriced => {
                        headers.insert(COST_FLAGGED, HeaderValue::from_static("unpriced"));
                    }
                }
            }
        }
    }

    /// A stream's usage event with its cost added as `usage.cost_usd` (a
    /// number, next to the token counts), left out for an unpriced model
    /// (removing one the provider may have sent, so the field is only ever
    /// aigw's recorded cost). OpenAI's payload is the usage chunk's JSON;
    /// Anthropic's is one or more rendered SSE events, of which the
    /// `message_delta` gets the field. A payload that is not such an event
    /// passes unchanged.
    pub fn usage_event(self, payload: Bytes, cost: AnswerCost) -> Bytes {
        match self {
            Dialect::OpenAi => {
                let Ok(mut chunk) = serde_json::from_slice::<Value>(&payload) else {
                    return payload;
                };
                if !with_cost(&mut chunk, cost) {
                    return payload;
                }
                match serde_json::to_vec(&chunk) {
                    Ok(bytes) => Bytes::from(bytes),
                    Err(_) => payload,
                }
            }
            Dialect::Anthropic => anthropic_usage_event(payload, cost),
            Dialect::Gemini => gemini_usage_event(payload, cost),
            Dialect::Responses { .. } => responses_usage_event(payload, cost),
        }
    }
}

/// Sets (or, unpriced, removes) `usage.cost_usd` of an event; whether it
/// changed anything.
fn with_cost(event: &mut Value, cost: AnswerCost) -> bool {
    with_cost_at(event, "usage", USAGE_COST_FIELD, cost)
}

/// Sets `field` of the event's `usage` object (or removes it, unpriced);
/// whether it changed anything.
fn with_cost_at(event: &mut Value, usage: &str, field: &str, cost: AnswerCost) -> bool {
    let Some(usage) = event.get_mut(usage).and_then(Value::as_object_mut) else {
        return false;
    };
    match cost {
        AnswerCost::Micros(m) => {
            usage.insert(field.into(), usd_number(m));
            true
        }
        AnswerCost::Unpriced => usage.remove(field).is_some(),
    }
}

/// Gemini's field for the cost, in its own camelCase, in `usageMetadata`.
pub const GEMINI_COST_FIELD: &str = "costUsd";

/// Gemini SSE chunks (`data:` lines, LF or CRLF, as rendered or relayed)
/// with the cost in the last chunk's `usageMetadata.costUsd` (removed when
/// unpriced); every other byte as it was.
fn gemini_usage_event(payload: Bytes, cost: AnswerCost) -> Bytes {
    let Ok(text) = std::str::from_utf8(&payload) else {
        return payload;
    };
    let lines: Vec<&str> = text.split_inclusive('\n').collect();
    let parsed = |line: &str| {
        let data = line.strip_prefix("data: ")?.trim_end_matches(['\r', '\n']);
        let v: Value = serde_json::from_str(data).ok()?;
        v.get("usageMetadata")
            .is_some_and(Value::is_object)
            .then_some(v)
    };
    let Some((at, mut chunk)) = lines
        .iter()
        .enumerate()
        .rev()
        .find_map(|(i, l)| parsed(l).map(|v| (i, v)))
    else {
        return payload;
    };
    if !with_cost_at(&mut chunk, "usageMetadata", GEMINI_COST_FIELD, cost) {
        return payload;
    }
    let Ok(json) = serde_json::to_string(&chunk) else {
        return payload;
    };
    let line = lines[at];
    let ending = &line[line.trim_end_matches(['\r', '\n']).len()..];
    let mut out = String::with_capacity(text.len() + 24);
    for (i, l) in lines.iter().enumerate() {
        if i == at {
            out.push_str("data: ");
            out.push_str(&json);
            out.push_str(ending);
        } else {
            out.push_str(l);
        }
    }
    Bytes::from(out)
}

/// The Responses events that end a stream, whose `response.usage` gets
/// the cost.
const RESPONSES_FINAL: [&str; 2] = ["response.completed", "response.incomplete"];

/// Rendered Responses SSE events (`event: <name>` and one `data:` line
/// each) with the cost in the final event's `response.usage.cost_usd`.
fn responses_usage_event(payload: Bytes, cost: AnswerCost) -> Bytes {
    let Ok(text) = std::str::from_utf8(&payload) else {
        return payload;
    };
    let mut out = String::with_capacity(text.len() + 32);
    let mut changed = false;
    for event in text.split_inclusive("\n\n") {
        let name = event
            .lines()
            .find_map(|l| l.strip_prefix("event: "))
            .filter(|n| RESPONSES_FINAL.contains(n));
        let single = event.lines().filter(|l| l.starts_with("data:")).count() == 1;
        let rewritten = name.filter(|_| single).and_then(|name| {
            let data = event.lines().find_map(|l| l.strip_prefix("data: "))?;
            let mut v = serde_json::from_str::<Value>(data).ok()?;
            let response = v.get_mut("response")?;
            with_cost(response, cost).then_some(())?;
            Some((name, serde_json::to_string(&v).ok()?))
        });
        match rewritten {
            Some((name, json)) => {
                changed = true;
                out.push_str("event: ");
                out.push_str(name);
                out.push_str("\ndata: ");
                out.push_str(&json);
                out.push_str("\n\n");
            }
            None => out.push_str(event),
        }
    }
    if changed { Bytes::from(out) } else { payload }
}

/// Rendered Anthropic SSE events (`event: <name>` and one `data:` line
/// each, as aigw renders and relays them) with the cost in the
/// `message_delta` event's usage.
fn anthropic_usage_event(payload: Bytes, cost: AnswerCost) -> Bytes {
    let Ok(text) = std::str::from_utf8(&payload) else {
        return payload;
    };
    let mut out = String::with_capacity(text.len() + 32);
    let mut changed = false;
    for event in text.split_inclusive("\n\n") {
        let data = event.lines().find_map(|l| l.strip_prefix("data: "));
        let is_delta = event.lines().any(|l| l == "event: message_delta")
            && event.lines().filter(|l| l.starts_with("data:")).count() == 1;
        let rewritten = data
            .filter(|_| is_delta)
            .and_then(|d| serde_json::from_str::<Value>(d).ok())
            .and_then(|mut v| with_cost(&mut v, cost).then_some(v))
            .and_then(|v| serde_json::to_string(&v).ok());
        match rewritten {
            Some(json) => {
                changed = true;
                out.push_str("event: message_delta\ndata: ");
                out.push_str(&json);
                out.push_str("\n\n");
            }
            None => out.push_str(event),
        }
    }
    if changed { Bytes::from(out) } else { payload }
}

#[cfg(test)]
mod gemini_tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn the_last_usage_metadata_gets_the_cost_and_nothing_else_changes() {
        let first = "data: {\"candidates\":[{\"content\":{\"parts\":[{\"text\":\"Hi\"}]}}],\"usageMetadata\":{\"promptTokenCount\":3}}\r\n\r\n";
        let last = "data: {\"candidates\":[{\"finishReason\":\"STOP\"}],\"usageMetadata\":{\"promptTokenCount\":3,\"candidatesTokenCount\":5}}\r\n\r\n";
        let out = Dialect::Gemini.usage_event(
            Bytes::from(format!("{first}{last}")),
            AnswerCost::Micros(210),
        );
        let text = std::str::from_utf8(&out).unwrap();
        assert!(text.starts_with(first), "{text}");
        let rest = &text[first.len()..];
        assert!(rest.ends_with("\r\n\r\n"), "{rest:?}");
        let data: Value =
            serde_json::from_str(rest.strip_prefix("data: ").unwrap().trim_end()).unwrap();
        assert_eq!(data["usageMetadata"]["costUsd"], json!(0.00021));
        assert_eq!(data["usageMetadata"]["candidatesTokenCount"], 5);
        assert_eq!(data["candidates"][0]["finishReason"], "STOP");
        // LF framing keeps LF; unpriced, junk and chunks without usage pass unchanged.
        let lf = Bytes::from("data: {\"usageMetadata\":{\"totalTokenCount\":1}}\n\n");
        let out = Dialect::Gemini.usage_event(lf, AnswerCost::Micros(1));
        assert!(std::str::from_utf8(&out).unwrap().ends_with("}}\n\n"));
        for payload in [last, "data: {\"candidates\":[]}\n\n", "data: {junk\n\n"] {
            let b = Bytes::from(payload);
            for cost in [AnswerCost::Unpriced, AnswerCost::Micros(1)] {
                if payload == last && matches!(cost, AnswerCost::Micros(_)) {
                    continue;
                }
                assert_eq!(Dialect::Gemini.usage_event(b.clone(), cost), b, "{payload}");
            }
        }
    }
}

#[cfg(test)]
mod responses_tests {
    use super::*;

    #[test]
    fn the_final_event_gets_the_cost_and_nothing_else_changes() {
        let done = "event: response.output_item.done\ndata: {\"type\":\"response.output_item.done\",\"sequence_number\":5}\n\n";
        let completed = "event: response.completed\ndata: {\"type\":\"response.completed\",\"sequence_number\":6,\"response\":{\"id\":\"resp_1\",\"usage\":{\"input_tokens\":3}}}\n\n";
        let out = Dialect::Responses {
            request_id: uuid::Uuid::nil(),
        }
        .usage_event(
            Bytes::from(format!("{done}{completed}")),
            AnswerCost::Micros(210),
        );
        let text = std::str::from_utf8(&out).unwrap();
        let events: Vec<&str> = text.split_inclusive("\n\n").collect();
        assert_eq!(events[0], done);
        assert!(events[1].starts_with("event: response.completed\ndata: "));
        let data: Value = serde_json::from_str(
            events[1]
                .lines()
                .nth(1)
                .unwrap()
                .strip_prefix("data: ")
                .unwrap(),
        )
        .unwrap();
        assert_eq!(data["response"]["usage"]["cost_usd"], 0.00021);
        assert_eq!(data["response"]["usage"]["input_tokens"], 3);
        assert_eq!(data["sequence_number"], 6);
        for (payload, cost) in [
            (done.to_string(), AnswerCost::Micros(1)),
            (completed.to_string(), AnswerCost::Unpriced),
            (
                "event: response.completed\ndata: {not json\n\n".to_string(),
                AnswerCost::Micros(1),
            ),
        ] {
            let b = Bytes::from(payload);
            assert_eq!(
                Dialect::Responses {
                    request_id: uuid::Uuid::nil(),
                }
                .usage_event(b.clone(), cost),
                b
            );
        }
    }
}

#[cfg(test)]
mod anthropic_tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn the_message_delta_gets_the_cost_and_nothing_else_changes() {
        let start = "event: message_start\ndata: {\"type\":\"message_start\",\"usage\":{\"input_tokens\":3}}\n\n";
        let delta = "event: message_delta\ndata: {\"type\":\"message_delta\",\"delta\":{\"stop_reason\":\"end_turn\"},\"usage\":{\"output_tokens\":5}}\n\n";
        let stop = "event: message_stop\ndata: {\"type\":\"message_stop\"}\n\n";
        let payload = Bytes::from(format!("{delta}{stop}"));
        let out = Dialect::Anthropic.usage_event(payload, AnswerCost::Micros(210));
        let text = std::str::from_utf8(&out).unwrap();
        let events: Vec<&str> = text.split_inclusive("\n\n").collect();
        assert_eq!(events.len(), 2, "{text}");
        assert_eq!(events[1], stop);
        let data: Value = serde_json::from_str(
            events[0]
                .lines()
                .nth(1)
                .unwrap()
                .strip_prefix("data: ")
                .unwrap(),
        )
        .unwrap();
        assert_eq!(
            data["usage"],
            json!({"output_tokens": 5, "cost_usd": 0.00021})
        );
        assert_eq!(data["delta"]["stop_reason"], "end_turn");
        // Other events, unpriced answers and junk pass unchanged.
        for (payload, cost) in [
            (start.to_string(), AnswerCost::Micros(1)),
            (delta.to_string(), AnswerCost::Unpriced),
            (
                "event: message_delta\ndata: {not json\n\n".to_string(),
                AnswerCost::Micros(1),
            ),
        ] {
            let b = Bytes::from(payload);
            assert_eq!(Dialect::Anthropic.usage_event(b.clone(), cost), b);
        }
        let invalid = Bytes::from_static(b"\xff\xfe");
        assert_eq!(
            Dialect::Anthropic.usage_event(invalid.clone(), AnswerCost::Micros(1)),
            invalid
        );
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn usd_has_six_decimals_and_no_float() {
        assert_eq!(usd(0), "0.000000");
        assert_eq!(usd(210), "0.000210");
        assert_eq!(usd(1_000_000), "1.000000");
        assert_eq!(usd(12_345_678), "12.345678");
        // The largest budget an admin can write, a billion dollars.
        assert_eq!(usd(1_000_000_000_000_000), "1000000000.000000");
        assert_eq!(usd(i64::MAX), "9223372036854.775807");
        assert_eq!(usd(-5), "-0.000005");
    }

    #[test]
    fn usd_numbers_read_back_as_the_micro_dollars() {
        for m in [
            0_i64,
            1,
            18,
            210,
            999_999,
            123_456_789,
            1_000_000_000_000_000,
        ] {
            let text = serde_json::to_string(&usd_number(m)).unwrap();
            let back: f64 = text.parse().unwrap();
            assert_eq!((back * 1_000_000.0).round() as i64, m, "{text}");
        }
        assert_eq!(serde_json::to_string(&usd_number(210)).unwrap(), "0.00021");
    }

    #[test]
    fn openai_answers_carry_the_cost_or_the_flag() {
        let mut headers = HeaderMap::new();
        Dialect::OpenAi.answer_headers(&mut headers, AnswerCost::Micros(210));
        assert_eq!(headers[COST_USD], "0.000210");
        assert!(headers.get(COST_FLAGGED).is_none());
        let mut headers = HeaderMap::new();
        Dialect::OpenAi.answer_headers(&mut headers, AnswerCost::Unpriced);
        assert_eq!(headers[COST_FLAGGED], "unpriced");
        assert!(headers.get(COST_USD).is_none());
    }

    #[test]
    fn openai_usage_chunks_get_cost_usd_next_to_the_tokens() {
        let chunk = json!({"id":"c","object":"chat.completion.chunk","choices":[],
            "usage":{"prompt_tokens":8,"completion_tokens":2,"total_tokens":10}});
        let payload = Bytes::from(serde_json::to_vec(&chunk).unwrap());
        let out = Dialect::OpenAi.usage_event(payload.clone(), AnswerCost::Micros(18));
        let out: Value = serde_json::from_slice(&out).unwrap();
        assert_eq!(out["usage"]["cost_usd"], json!(0.000018));
        assert_eq!(out["usage"]["total_tokens"], 10);
        assert_eq!(out["id"], "c");
        // Unpriced: the chunk as the provider sent it...
        let same = Dialect::OpenAi.usage_event(payload.clone(), AnswerCost::Unpriced);
        assert_eq!(same, payload);
        // ...but never with a cost_usd that is not aigw's.
        let theirs = json!({"choices":[],"usage":{"total_tokens":10,"cost_usd":9.5}});
        let theirs = Bytes::from(serde_json::to_vec(&theirs).unwrap());
        let out = Dialect::OpenAi.usage_event(theirs.clone(), AnswerCost::Unpriced);
        let out: Value = serde_json::from_slice(&out).unwrap();
        assert_eq!(out["usage"], json!({"total_tokens": 10}));
        let out = Dialect::OpenAi.usage_event(theirs, AnswerCost::Micros(3));
        let out: Value = serde_json::from_slice(&out).unwrap();
        assert_eq!(out["usage"]["cost_usd"], json!(0.000003));
        // Not a usage chunk: unchanged.
        let other = Bytes::from_static(br#"{"choices":[]}"#);
        assert_eq!(
            Dialect::OpenAi.usage_event(other.clone(), AnswerCost::Micros(1)),
            other
        );
        let junk = Bytes::from_static(b"not json");
        assert_eq!(
            Dialect::OpenAi.usage_event(junk.clone(), AnswerCost::Micros(1)),
            junk
        );
    }
}
