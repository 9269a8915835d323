//! Rerank answers in one shape, whatever the provider: Cohere's v2
//! `/v2/rerank` (native), and the `/rerank` of OpenAI-compatible hosts
//! (Jina, SiliconFlow: `results`; Voyage: `data`).
//!
//! Invariants:
//! - The caller always gets `{id, model, results: [{index,
//!   relevance_score, document?}], usage?, meta?}`: Jina's and Cohere's
//!   shape together, results in the provider's order (most relevant
//!   first). A document is `{"text": ...}`, and present exactly when the
//!   caller asked `return_documents: true` (taken from the request where
//!   the provider does not echo it, as Cohere v2 does not).
//! - A caller in Voyage's shape (it sent `top_k` or `truncation`, as the
//!   voyageai SDK does) also gets Voyage's fields: `object: "list"`,
//!   `data` (the same results, a document as its string) and
//!   `usage.total_tokens` (0 when the provider billed no tokens), which
//!   that SDK requires.
//! - Usage is what the provider billed: tokens (`usage.total_tokens`,
//!   `meta.tokens.input_tokens` or `meta.billed_units.input_tokens`) and
//!   search units (`meta.billed_units.search_units`). An answer with
//!   neither has no usage: the request is billed by estimate, flagged.
//! - A result whose index is not one of the request's documents makes the
//!   whole answer unreadable (`InvalidResponse`), never a wrong document.

use aigw_events::Usage;
use bytes::Bytes;
use serde_json::{Map, Value, json};

use crate::answer::Answer;
use crate::upstream::{self, UpstreamError};

/// Cohere's v2 rerank request for a caller's body (`model` already the
/// provider's): documents as texts, `top_n` (or Voyage's `top_k`) and
/// `max_tokens_per_doc` kept.
pub fn to_cohere(body: &Value) -> Value {
    let documents: Vec<&str> = documents(body).iter().filter_map(text).collect();
    let mut out = json!({
        "model": body.get("model").and_then(Value::as_str).unwrap_or(""),
        "query": body.get("query").and_then(Value::as_str).unwrap_or(""),
        "documents": documents,
    });
    if let Some(n) = body
        .get("top_n")
        .or_else(|| body.get("top_k"))
        .filter(|n| n.is_u64())
    {
        out["top_n"] = n.clone();
    }
    if let Some(max) = body.get("max_tokens_per_doc").filter(|n| n.is_u64()) {
        out["max_tokens_per_doc"] = max.clone();
    }
    out
}

/// Why Cohere's v2 rerank cannot take `body`, if it cannot: a field that
/// changes the ranking and has no equivalent there (v2 dropped
/// `max_chunks_per_doc` for `max_tokens_per_doc`, and `rank_fields` with
/// structured documents).
pub fn untranslatable_for_cohere(body: &Value) -> Option<String> {
    ["max_chunks_per_doc", "rank_fields"]
        .into_iter()
        .find(|f| body.get(*f).is_some_and(|v| !v.is_null()))
        .map(|f| format!("'{f}' has no equivalent in Cohere's v2 rerank"))
}

/// The caller's documents.
fn documents(body: &Value) -> &[Value] {
    body.get("documents")
        .and_then(Value::as_array)
        .map_or(&[], Vec::as_slice)
}

/// A document's text: the string itself, or its `text`.
fn text(doc: &Value) -> Option<&str> {
    doc.as_str().or_else(|| doc.get("text")?.as_str())
}

/// Whether the caller speaks Voyage's rerank (`top_k`, `truncation`).
fn voyage_shaped(body: &Value) -> bool {
    body.get("top_k").is_some() || body.get("truncation").is_some()
}

/// What the provider billed, if it said.
pub fn usage(answer: &Value) -> Option<Usage> {
    let count = |pointer: &str| answer.pointer(pointer).and_then(Value::as_u64);
    let tokens = count("/usage/total_tokens")
        .or_else(|| count("/usage/prompt_tokens"))
        .or_else(|| count("/meta/tokens/input_tokens"))
        .or_else(|| count("/meta/billed_units/input_tokens"));
    let searches = count("/meta/billed_units/search_units");
    if tokens.is_none() && searches.is_none() {
        return None;
    }
    Some(Usage {
        prompt_tokens: tokens.unwrap_or(0),
        searches: searches.unwrap_or(0),
        ..Usage::default()
    })
}

/// The caller's answer from a provider's (see the module doc).
pub fn answer(parsed: &Value, body: &Value, provider: &str) -> Result<Answer, UpstreamError> {
    let unreadable = || upstream::not_json(provider);
    let listed = parsed
        .get("results")
        .or_else(|| parsed.get("data"))
        .and_then(Value::as_array)
        .ok_or_else(unreadable)?;
    let docs = documents(body);
    let with_documents = body.get("return_documents").and_then(Value::as_bool) == Some(true);
    let mut results = Vec::with_capacity(listed.len());
    for r in listed {
        let index = r
            .get("index")
            .and_then(Value::as_u64)
            .ok_or_else(unreadable)?;
        let score = r
            .get("relevance_score")
            .and_then(Value::as_f64)
            .ok_or_else(unreadable)?;
        let asked = usize::try_from(index)
            .ok()
            .and_then(|i| docs.get(i))
            .ok_or_else(unreadable)?;
        let mut result = Map::new();
        result.insert("index".into(), json!(index));
        result.insert("relevance_score".into(), json!(score));
        if with_documents {
            let given = r.get("document").and_then(|d| match d {
                Value::String(s) => Some(s.as_str()),
                other => other.get("text")?.as_str(),
            });
            let text = given.or_else(|| text(asked)).unwrap_or_default();
            result.insert("document".into(), json!({"text": text}));
        }
        results.push(Value::Object(result));
    }
    let usage = usage(parsed);
    let model = parsed
        .get("model")
        .or_else(|| body.get("model"))
        .and_then(Value::as_str)
        .unwrap_or_default();
    let mut out = json!({
        "id": parsed.get("id").and_then(Value::as_str).unwrap_or_default(),
        "model": model,
        "results": &results,
    });
    if let Some(u) = usage {
        if u.prompt_tokens > 0 {
            out["usage"] =
                json!({"prompt_tokens": u.prompt_tokens, "total_tokens": u.prompt_tokens});
        }
        if u.searches > 0 {
            out["meta"] = json!({"billed_units": {"search_units": u.searches}});
        }
    }
    if voyage_shaped(body) {
        let data: Vec<Value> = results
            .iter()
            .map(|r| {
                let mut r = r.clone();
                if let Some(text) = r.pointer("/document/text").cloned() {
                    r["document"] = text;
                }
                r
            })
            .collect();
        out["object"] = json!("list");
        out["data"] = Value::Array(data);
        if out.get("usage").is_none() {
            out["usage"] = json!({"total_tokens": 0});
        }
    }
    Ok(Answer::Full {
        body: Bytes::from(serde_json::to_vec(&out).unwrap_or_default()),
        usage,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn full(answer: Answer) -> (Value, Option<Usage>) {
        match answer {
            Answer::Full { body, usage } => (serde_json::from_slice(&body).unwrap(), usage),
            _ => panic!("not a full answer"),
        }
    }

    #[test]
    fn cohere_requests_take_texts_and_either_top_name() {
        let body = json!({"model": "rerank-v3.5", "query": "q",
            "documents": ["a", {"text": "b"}], "top_k": 1, "return_documents": true,
            "max_tokens_per_doc": 512});
        assert_eq!(
            to_cohere(&body),
            json!({"model": "rerank-v3.5", "query": "q", "documents": ["a", "b"],
                "top_n": 1, "max_tokens_per_doc": 512})
        );
    }

    #[test]
    fn cohere_refuses_by_name_what_v2_cannot_express() {
        let base = json!({"model": "m", "query": "q", "documents": ["a"]});
        assert_eq!(untranslatable_for_cohere(&base), None);
        let mut chunks = base.clone();
        chunks["max_chunks_per_doc"] = json!(4);
        assert_eq!(
            untranslatable_for_cohere(&chunks).as_deref(),
            Some("'max_chunks_per_doc' has no equivalent in Cohere's v2 rerank")
        );
        let mut fields = base.clone();
        fields["rank_fields"] = json!(["title"]);
        assert!(
            untranslatable_for_cohere(&fields)
                .unwrap()
                .contains("'rank_fields'")
        );
    }

    #[test]
    fn each_providers_answer_becomes_one_shape() {
        let body = json!({"model": "m", "query": "q", "documents": ["zero", {"text": "one"}],
            "return_documents": true});
        // Cohere v2: no documents echoed, search units billed.
        let cohere = json!({"id": "c1", "results": [
            {"index": 1, "relevance_score": 0.9}, {"index": 0, "relevance_score": 0.1}],
            "meta": {"api_version": {"version": "2"}, "billed_units": {"search_units": 1}}});
        let (out, usage) = full(answer(&cohere, &body, "p").unwrap());
        assert_eq!(
            out,
            json!({"id": "c1", "model": "m", "results": [
                {"index": 1, "relevance_score": 0.9, "document": {"text": "one"}},
                {"index": 0, "relevance_score": 0.1, "document": {"text": "zero"}}],
                "meta": {"billed_units": {"search_units": 1}}})
        );
        assert_eq!(usage.unwrap().searches, 1);
        // Jina: documents as objects, tokens in usage.
        let jina = json!({"model": "jina-reranker-v2", "usage": {"total_tokens": 15},
            "results": [{"index": 0, "relevance_score": 0.5, "document": {"text": "zero"}}]});
        let (out, usage) = full(answer(&jina, &body, "p").unwrap());
        assert_eq!(
            out["usage"],
            json!({"prompt_tokens": 15, "total_tokens": 15})
        );
        assert_eq!(out["model"], "jina-reranker-v2");
        assert_eq!(usage.unwrap().prompt_tokens, 15);
        // Voyage: `data`, documents as strings.
        let voyage = json!({"object": "list", "data": [
            {"index": 1, "relevance_score": 0.7, "document": "one"}], "usage": {"total_tokens": 9}});
        let (out, _) = full(answer(&voyage, &body, "p").unwrap());
        assert_eq!(out["results"][0]["document"], json!({"text": "one"}));
        // SiliconFlow: tokens under meta.
        let silicon = json!({"id": "s", "results": [{"index": 0, "relevance_score": 0.2}],
            "meta": {"billed_units": {"input_tokens": 7, "search_units": 0}, "tokens": {"input_tokens": 7}}});
        let (_, usage) = full(answer(&silicon, &body, "p").unwrap());
        assert_eq!(usage.unwrap().prompt_tokens, 7);
        // Without return_documents, no document, even one the provider sent.
        let plain = json!({"model": "m", "query": "q", "documents": ["zero"]});
        let (out, usage) = full(answer(&jina, &plain, "p").unwrap());
        assert_eq!(
            out["results"][0],
            json!({"index": 0, "relevance_score": 0.5})
        );
        assert!(usage.is_some());
        // No usage at all: billed by estimate.
        let bare = json!({"results": [{"index": 0, "relevance_score": 0.5}]});
        assert!(full(answer(&bare, &plain, "p").unwrap()).1.is_none());
    }

    #[test]
    fn a_voyage_caller_also_gets_voyages_fields() {
        let cohere = json!({"id": "c1", "results": [{"index": 1, "relevance_score": 0.9}],
            "meta": {"billed_units": {"search_units": 1}}});
        let voyage = json!({"model": "m", "query": "q", "documents": ["zero", "one"],
            "top_k": null, "truncation": true, "return_documents": true});
        let (out, _) = full(answer(&cohere, &voyage, "p").unwrap());
        assert_eq!(out["object"], "list");
        assert_eq!(
            out["data"],
            json!([{"index": 1, "relevance_score": 0.9, "document": "one"}])
        );
        assert_eq!(
            out["results"][0]["document"],
            json!({"text": "one"}),
            "the shared shape stays"
        );
        assert_eq!(out["usage"], json!({"total_tokens": 0}));
        let cohere_caller = json!({"model": "m", "query": "q", "documents": ["zero", "one"]});
        let (out, _) = full(answer(&cohere, &cohere_caller, "p").unwrap());
        assert!(out.get("data").is_none() && out.get("usage").is_none());
    }

    #[test]
    fn an_answer_naming_a_document_not_asked_is_unreadable() {
        let body = json!({"model": "m", "query": "q", "documents": ["zero"]});
        for bad in [
            json!({"results": [{"index": 1, "relevance_score": 0.5}]}),
            json!({"results": [{"index": -1, "relevance_score": 0.5}]}),
            json!({"results": [{"index": 0}]}),
            json!({"scores": []}),
        ] {
            let Err(e) = answer(&bad, &body, "p") else {
                panic!("{bad} was read");
            };
            assert_eq!(e.kind, upstream::UpstreamErrorKind::InvalidResponse);
        }
    }
}
