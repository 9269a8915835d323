//! Tests of request validation: examples of every refusal, and properties
//! over arbitrary bodies (never a panic; a refusal always names its field).

use super::*;

fn status(r: Result<ChatRequest, ApiError>) -> Option<&'static str> {
    match r {
        Err(ApiError::BadRequest { param, .. }) => param.or(Some("-")),
        Err(_) => Some("other"),
        Ok(_) => None,
    }
}

#[test]
fn validation() {
    let ok = br#"{"model":"m","messages":[{"role":"user","content":"hi"}],"seed":1,"tools":[],"provider":"p"}"#;
    let parsed = validate(ok).unwrap();
    assert_eq!(parsed.model, "m");
    assert_eq!(parsed.provider.as_deref(), Some("p"));
    assert!(parsed.body.get("provider").is_none());
    assert_eq!(parsed.body["seed"], 1);
    assert_eq!(status(validate(b"{nope")), Some("-"));
    assert_eq!(status(validate(b"[]")), Some("-"));
    assert_eq!(
        status(validate(br#"{"messages":[{"role":"user"}]}"#)),
        Some("model")
    );
    assert_eq!(
        status(validate(br#"{"model":5,"messages":[{"role":"user"}]}"#)),
        Some("model")
    );
    assert_eq!(status(validate(br#"{"model":"m"}"#)), Some("messages"));
    assert_eq!(
        status(validate(br#"{"model":"m","messages":"hi"}"#)),
        Some("messages")
    );
    assert_eq!(
        status(validate(br#"{"model":"m","messages":[]}"#)),
        Some("messages")
    );
    assert_eq!(
        status(validate(br#"{"model":"m","messages":[1]}"#)),
        Some("messages")
    );
    assert_eq!(
        status(validate(
            br#"{"model":"m","messages":[{"role":"user"}],"stream":"yes"}"#
        )),
        Some("stream")
    );
    assert_eq!(
        status(validate(
            br#"{"model":"m","messages":[{"role":"user"}],"max_tokens":-1}"#
        )),
        Some("max_tokens")
    );
    assert_eq!(
        status(validate(
            br#"{"model":"m","messages":[{"role":"user"}],"temperature":"hot"}"#
        )),
        Some("temperature")
    );
    let s = validate(br#"{"model":"m","messages":[{"role":"user"}],"stream":true,"stream_options":{"include_usage":true}}"#).unwrap();
    assert!(s.stream && s.include_usage);
}

#[test]
fn media_validation() {
    let ok = validate_images(
        br#"{"model":"m","prompt":"a fox","n":2,"size":"1792x1024","response_format":"url","provider":"p"}"#,
    )
    .unwrap();
    assert_eq!(ok.endpoint, Endpoint::Images);
    assert_eq!(ok.provider.as_deref(), Some("p"));
    assert_eq!(ok.body["n"], 2);
    for (body, param) in [
        (&br#"{"prompt":"x"}"#[..], "model"),
        (br#"{"model":"m","prompt":" "}"#, "prompt"),
        (br#"{"model":"m","prompt":"x","n":11}"#, "n"),
        (br#"{"model":"m","prompt":"x","size":"0x5"}"#, "size"),
        (
            br#"{"model":"m","prompt":"x","response_format":1}"#,
            "response_format",
        ),
    ] {
        assert_eq!(status(validate_images(body)), Some(param));
    }
    assert!(validate_images(br#"{"model":"m","prompt":"x","size":"auto"}"#).is_ok());

    let ok = validate_speech(br#"{"model":"m","input":"hi","voice":"alloy","speed":1.2}"#).unwrap();
    assert_eq!(ok.endpoint, Endpoint::Speech);
    let long = format!(
        r#"{{"model":"m","input":"{}","voice":"v"}}"#,
        "a".repeat(4097)
    );
    for (body, param) in [
        (long.as_bytes(), "input"),
        (br#"{"model":"m","voice":"v"}"#, "input"),
        (br#"{"model":"m","input":"x"}"#, "voice"),
        (
            br#"{"model":"m","input":"x","voice":"v","response_format":"ogg"}"#,
            "response_format",
        ),
        (
            br#"{"model":"m","input":"x","voice":"v","speed":"fast"}"#,
            "speed",
        ),
    ] {
        assert_eq!(status(validate_speech(body)), Some(param));
    }
}

fn chat_with(extra: &str) -> Vec<u8> {
    format!(r#"{{"model":"m","messages":[{{"role":"user","content":"hi"}}]{extra}}}"#).into_bytes()
}

#[test]
fn names_have_a_length_and_a_character_set() {
    let long = "x".repeat(5_000);
    let body = format!(r#"{{"model":"{long}","messages":[{{"role":"user"}}]}}"#);
    assert_eq!(status(validate(body.as_bytes())), Some("model"));
    for bad in ["a b", "a\\nb", "é", "a\\u0000b", "a\\r\\nX-Injected: 1"] {
        let body = format!(r#"{{"model":"{bad}","messages":[{{"role":"user"}}]}}"#);
        assert_eq!(status(validate(body.as_bytes())), Some("model"), "{bad}");
    }
    let ok = "global.anthropic.claude-sonnet-5-v1:0";
    assert!(model_name(ok).is_ok());
    assert!(model_name("@cf/meta/llama-3.3-70b-instruct-fp8-fast").is_ok());
    assert!(model_name(&"m".repeat(MAX_MODEL_LEN)).is_ok());
    assert!(model_name(&"m".repeat(MAX_MODEL_LEN + 1)).is_err());

    for bad in [
        r#","provider":"a\r\nb""#,
        r#","provider":"a/b""#,
        r#","provider":"a b""#,
    ] {
        assert_eq!(status(validate(&chat_with(bad))), Some("provider"), "{bad}");
    }
    let pin = validate(&chat_with(
        r#","provider":"0193aa6e-5d2c-7c3e-8000-000000000001""#,
    ));
    assert!(pin.is_ok());
    assert!(provider_name("upstream-a.eu_1").is_ok());
    assert!(provider_name("0193aa6e-5d2c-7c3e-8000-000000000001").is_err());
    assert!(provider_name(&"p".repeat(MAX_PROVIDER_NAME_LEN + 1)).is_err());

    let user = format!(r#","user":"{}""#, "u".repeat(MAX_USER_LEN + 1));
    assert_eq!(status(validate(&chat_with(&user))), Some("user"));
    assert_eq!(
        status(validate(&chat_with(r#","user":"a\nb""#))),
        Some("user")
    );
    assert_eq!(status(validate(&chat_with(r#","user":5"#))), Some("user"));
    assert!(validate(&chat_with(r#","user":"user-42""#)).is_ok());
}

#[test]
fn numbers_are_bounded() {
    for (extra, param) in [
        (r#","max_tokens":9223372036854775800"#, "max_tokens"),
        (r#","max_tokens":0"#, "max_tokens"),
        (
            r#","max_completion_tokens":18446744073709551615"#,
            "max_completion_tokens",
        ),
        (r#","n":0"#, "n"),
        (r#","n":129"#, "n"),
        (r#","n":1.5"#, "n"),
    ] {
        assert_eq!(status(validate(&chat_with(extra))), Some(param), "{extra}");
    }
    assert!(validate(&chat_with(r#","n":128,"max_tokens":10000000"#)).is_ok());
    assert_eq!(parse_size("16385x16"), None);
    assert_eq!(parse_size("16384x16"), Some((16_384, 16)));
    let big = format!(
        r#"{{"model":"m","prompt":"{}"}}"#,
        "p".repeat(MAX_IMAGE_PROMPT + 1)
    );
    assert_eq!(status(validate_images(big.as_bytes())), Some("prompt"));
}

#[test]
fn metadata_is_bounded_like_openai() {
    let many: Vec<String> = (0..=MAX_METADATA_KEYS)
        .map(|i| format!(r#""k{i}":"v""#))
        .collect();
    let extra = format!(r#","metadata":{{{}}}"#, many.join(","));
    assert_eq!(status(validate(&chat_with(&extra))), Some("metadata"));
    for bad in [
        r#","metadata":{"k":1}"#,
        r#","metadata":{"":"v"}"#,
        r#","metadata":{"k":"a\u0007"}"#,
        r#","metadata":[]"#,
    ] {
        assert_eq!(status(validate(&chat_with(bad))), Some("metadata"), "{bad}");
    }
    assert!(validate(&chat_with(r#","metadata":{"team":"search"}"#)).is_ok());
}

#[test]
fn uploaded_file_names_and_types_cannot_inject_headers() {
    assert!(file_name("voice memo (1).mp3").is_ok());
    assert!(file_name("a\"; name=\"x").is_err());
    assert!(file_name("a\r\nContent-Type: text/html").is_err());
    assert!(file_name("").is_err());
    assert_eq!(media_type(Some("audio/mpeg; x=1")), "audio/mpeg");
    assert_eq!(
        media_type(Some("audio/wav\r\nX: y")),
        "application/octet-stream"
    );
    assert_eq!(media_type(None), "application/octet-stream");
}

mod properties {
    use super::*;
    use proptest::prelude::*;

    /// Arbitrary JSON, up to a few levels deep.
    fn json() -> impl Strategy<Value = Value> {
        let leaf = prop_oneof![
            Just(Value::Null),
            any::<bool>().prop_map(Value::Bool),
            any::<i64>().prop_map(Value::from),
            any::<u64>().prop_map(Value::from),
            any::<f64>()
                .prop_filter("finite", |f| f.is_finite())
                .prop_map(Value::from),
            ".{0,12}".prop_map(Value::String),
        ];
        leaf.prop_recursive(3, 24, 6, |inner| {
            prop_oneof![
                prop::collection::vec(inner.clone(), 0..6).prop_map(Value::Array),
                prop::collection::btree_map(".{0,8}", inner, 0..6)
                    .prop_map(|m| Value::Object(m.into_iter().collect())),
            ]
        })
    }

    /// The fields validation looks at (and a few it passes through).
    const FIELDS: &[&str] = &[
        "model",
        "messages",
        "n",
        "max_tokens",
        "max_completion_tokens",
        "provider",
        "user",
        "metadata",
        "stream",
        "stream_options",
        "input",
        "prompt",
        "size",
        "voice",
        "response_format",
        "temperature",
        "tools",
    ];

    /// A body with some of those fields, each arbitrary.
    fn body() -> impl Strategy<Value = Value> {
        prop::collection::btree_map(prop::sample::select(FIELDS), json(), 0..FIELDS.len())
            .prop_map(|m| Value::Object(m.into_iter().map(|(k, v)| (k.to_string(), v)).collect()))
    }

    /// Every body here is a JSON object, so a refusal must name its field.
    fn refusal_names_a_field_or_the_body(r: &Result<ChatRequest, ApiError>) -> bool {
        match r {
            Ok(_) => true,
            Err(ApiError::BadRequest { param, .. }) => param.is_some(),
            Err(_) => false,
        }
    }

    proptest! {
        #![proptest_config(ProptestConfig::with_cases(256))]

        #[test]
        fn any_body_is_accepted_or_refused_with_a_400(body in body()) {
            let bytes = serde_json::to_vec(&body).unwrap();
            for r in [
                validate(&bytes),
                validate_embeddings(&bytes),
                validate_images(&bytes),
                validate_speech(&bytes),
            ] {
                prop_assert!(refusal_names_a_field_or_the_body(&r));
                if let Ok(ok) = r {
                    // What passes is within the limits.
                    prop_assert!(model_name(&ok.model).is_ok());
                    if let Some(p) = &ok.provider {
                        prop_assert!(provider_ref(p).is_ok());
                    }
                    prop_assert!(ok.body.get("provider").is_none());
                    for f in ["max_tokens", "max_completion_tokens"] {
                        if let Some(n) = ok.body.get(f).filter(|v| !v.is_null()) {
                            prop_assert!(n.as_u64().is_some_and(|n| (1..=MAX_OUTPUT_TOKENS_ANY).contains(&n)));
                        }
                    }
                }
            }
        }

        #[test]
        fn arbitrary_bytes_never_panic(bytes in prop::collection::vec(any::<u8>(), 0..256)) {
            let _ = validate(&bytes);
            let _ = validate_transcription("multipart/form-data; boundary=x", &Bytes::from(bytes));
        }
    }
}
