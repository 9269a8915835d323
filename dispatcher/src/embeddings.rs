//! Native embeddings: OpenAI's `/v1/embeddings` to and from Gemini
//! (`:batchEmbedContents`) and Cohere v2 (`/v2/embed`). Answers are OpenAI
//! lists of float vectors, or base64 of little-endian f32 when the caller
//! asks `encoding_format: "base64"` (the OpenAI SDKs' default).

use aigw_events::Usage;
use base64::Engine;
use bytes::Bytes;
use serde_json::{Value, json};

use crate::answer::Answer;
use crate::upstream::UpstreamError;
use crate::upstream::{self, invalid};

/// The texts of an OpenAI `input`: a string or an array of strings.
pub fn texts(body: &Value) -> Result<Vec<String>, UpstreamError> {
    let refuse = || {
        invalid(
            "this provider embeds text only: 'input' must be a string or an array of strings"
                .into(),
            "invalid_input",
        )
    };
    match body.get("input") {
        Some(Value::String(s)) => Ok(vec![s.clone()]),
        Some(Value::Array(items)) => items
            .iter()
            .map(|i| i.as_str().map(str::to_string).ok_or_else(refuse))
            .collect(),
        _ => Err(refuse()),
    }
}

/// Gemini's batch request for an OpenAI embeddings body.
pub fn to_gemini(body: &Value, model: &str) -> Result<Value, UpstreamError> {
    let dimensions = body.get("dimensions").and_then(Value::as_u64);
    let requests: Vec<Value> = texts(body)?
        .into_iter()
        .map(|text| {
            let mut r =
                json!({"model": format!("models/{model}"), "content": {"parts": [{"text": text}]}});
            if let Some(d) = dimensions {
                r["outputDimensionality"] = json!(d);
            }
            r
        })
        .collect();
    Ok(json!({"requests": requests}))
}

/// Cohere's v2 embed request for an OpenAI embeddings body (`input_type`
/// defaults to `search_document`; a caller may set it).
pub fn to_cohere(body: &Value) -> Result<Value, UpstreamError> {
    let mut out = json!({
        "model": body.get("model").and_then(Value::as_str).unwrap_or(""),
        "texts": texts(body)?,
        "input_type": body.get("input_type").and_then(Value::as_str).unwrap_or("search_document"),
        "embedding_types": ["float"],
    });
    if let Some(d) = body.get("dimensions").and_then(Value::as_u64) {
        out["output_dimension"] = json!(d);
    }
    Ok(out)
}

/// The vectors of a Gemini or Cohere answer.
pub fn vectors(answer: &Value) -> Option<Vec<Vec<f64>>> {
    let list = answer.get("embeddings").and_then(|e| {
        e.as_array()
            .or_else(|| e.get("float").and_then(Value::as_array))
    })?;
    list.iter()
        .map(|e| {
            e.get("values")
                .unwrap_or(e)
                .as_array()?
                .iter()
                .map(Value::as_f64)
                .collect()
        })
        .collect()
}

/// An OpenAI embeddings list.
pub fn to_openai(vectors: Vec<Vec<f64>>, model: &str, base64: bool, prompt_tokens: u64) -> Value {
    let data: Vec<Value> = vectors
        .into_iter()
        .enumerate()
        .map(|(index, v)| {
            let embedding = if base64 {
                let bytes: Vec<u8> = v.iter().flat_map(|x| (*x as f32).to_le_bytes()).collect();
                json!(base64::engine::general_purpose::STANDARD.encode(bytes))
            } else {
                json!(v)
            };
            json!({"object": "embedding", "index": index, "embedding": embedding})
        })
        .collect();
    json!({
        "object": "list",
        "data": data,
        "model": model,
        "usage": {"prompt_tokens": prompt_tokens, "total_tokens": prompt_tokens},
    })
}

/// An OpenAI embeddings answer from a provider's vectors.
pub fn answer(
    parsed: &Value,
    body: &Value,
    model: &str,
    usage: Option<Usage>,
    provider: &str,
) -> Result<Answer, UpstreamError> {
    let vectors = vectors(parsed).ok_or_else(|| upstream::not_json(provider))?;
    let base64 = body.get("encoding_format").and_then(Value::as_str) == Some("base64");
    let out = to_openai(vectors, model, base64, usage.map_or(0, |u| u.prompt_tokens));
    Ok(Answer::Full {
        body: Bytes::from(serde_json::to_vec(&out).unwrap_or_default()),
        usage,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn requests_in_each_format() {
        let body = json!({"model": "m", "input": ["a", "b"], "dimensions": 256});
        assert_eq!(
            to_gemini(&body, "gemini-embedding-001").unwrap(),
            json!({"requests": [
                {"model": "models/gemini-embedding-001", "content": {"parts": [{"text": "a"}]}, "outputDimensionality": 256},
                {"model": "models/gemini-embedding-001", "content": {"parts": [{"text": "b"}]}, "outputDimensionality": 256},
            ]})
        );
        assert_eq!(
            to_cohere(&json!({"model": "embed-v4.0", "input": "a", "input_type": "search_query"}))
                .unwrap(),
            json!({"model": "embed-v4.0", "texts": ["a"], "input_type": "search_query",
                "embedding_types": ["float"]})
        );
        assert_eq!(
            texts(&json!({"input": [[1, 2, 3]]})).unwrap_err().status(),
            400
        );
    }

    #[test]
    fn answers_become_openai_lists() {
        let gemini = json!({"embeddings": [{"values": [0.5, -1.0]}, {"values": [0.25, 0.0]}]});
        let cohere = json!({"id": "e", "embeddings": {"float": [[0.5, -1.0], [0.25, 0.0]]},
            "meta": {"billed_units": {"input_tokens": 3}}});
        assert_eq!(vectors(&gemini), vectors(&cohere));
        let out = to_openai(vectors(&gemini).unwrap(), "m", false, 3);
        assert_eq!(
            out["data"][1],
            json!({"object": "embedding", "index": 1, "embedding": [0.25, 0.0]})
        );
        assert_eq!(out["usage"], json!({"prompt_tokens": 3, "total_tokens": 3}));
        let out = to_openai(vec![vec![1.0]], "m", true, 0);
        // 1.0f32 little-endian is 00 00 80 3f.
        assert_eq!(out["data"][0]["embedding"], "AACAPw==");
    }
}
