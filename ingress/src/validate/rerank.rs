//! `POST /v1/rerank` bodies: Cohere's, Jina's, SiliconFlow's and Voyage's
//! shared shape (`model`, `query`, `documents`, and `top_n`, or Voyage's
//! `top_k`).
//!
//! Invariants: `query` is a non-empty string of at most
//! [`MAX_RERANK_QUERY`] characters; `documents` holds 1 to
//! [`MAX_RERANK_DOCUMENTS`] strings or `{"text": ...}` objects, none empty;
//! `top_n`/`top_k` and `max_tokens_per_doc`/`max_chunks_per_doc` are
//! bounded integers; `return_documents` is a boolean. Every other field
//! passes through to the provider untouched.

use aigw_events::wire::Endpoint;
use serde_json::Value;

use super::{ChatRequest, check_range, check_type, invalid, object_with_model, take_provider};
use crate::error::ApiError;

/// Longest rerank query, in characters.
pub const MAX_RERANK_QUERY: usize = 32_768;
/// Most documents one rerank may score (Cohere's and Jina's limit is
/// lower; SiliconFlow's higher for small documents).
pub const MAX_RERANK_DOCUMENTS: usize = 10_000;
/// Largest per-document token or chunk limit a caller may set.
pub const MAX_RERANK_DOC_TOKENS: u64 = 1_000_000;

/// Checks a rerank body (see the module doc).
pub fn validate_rerank(bytes: &[u8]) -> Result<ChatRequest, ApiError> {
    let (mut obj, model) = object_with_model(bytes)?;
    match obj.get("query") {
        Some(Value::String(q)) if !q.is_empty() && q.chars().count() <= MAX_RERANK_QUERY => {}
        None | Some(Value::Null) => {
            return Err(invalid("Missing required parameter: 'query'.", "query"));
        }
        Some(_) => {
            return Err(invalid(
                format!("'query' must be a string of 1 to {MAX_RERANK_QUERY} characters."),
                "query",
            ));
        }
    }
    match obj.get("documents") {
        Some(Value::Array(docs)) if (1..=MAX_RERANK_DOCUMENTS).contains(&docs.len()) => {
            if !docs.iter().all(document) {
                return Err(invalid(
                    "Each of 'documents' must be a non-empty string or an object with a non-empty string 'text'.",
                    "documents",
                ));
            }
        }
        None | Some(Value::Null) => {
            return Err(invalid(
                "Missing required parameter: 'documents'.",
                "documents",
            ));
        }
        Some(_) => {
            return Err(invalid(
                format!("'documents' must be an array of 1 to {MAX_RERANK_DOCUMENTS} documents."),
                "documents",
            ));
        }
    }
    if obj.contains_key("top_n") && obj.contains_key("top_k") {
        return Err(invalid(
            "Give 'top_n' or its Voyage name 'top_k', not both.",
            "top_k",
        ));
    }
    let most = MAX_RERANK_DOCUMENTS as u64;
    check_range(&obj, "top_n", 1..=most)?;
    check_range(&obj, "top_k", 1..=most)?;
    check_range(&obj, "max_tokens_per_doc", 1..=MAX_RERANK_DOC_TOKENS)?;
    check_range(&obj, "max_chunks_per_doc", 1..=MAX_RERANK_DOC_TOKENS)?;
    check_type(&obj, "return_documents", "a boolean", Value::is_boolean)?;
    let provider = take_provider(&mut obj)?;
    Ok(ChatRequest::unstreamed(
        obj,
        model,
        provider,
        Endpoint::Rerank,
    ))
}

/// A document: a non-empty string, or an object whose `text` is one.
fn document(doc: &Value) -> bool {
    match doc {
        Value::String(s) => !s.is_empty(),
        Value::Object(o) => o
            .get("text")
            .and_then(Value::as_str)
            .is_some_and(|t| !t.is_empty()),
        _ => false,
    }
}
