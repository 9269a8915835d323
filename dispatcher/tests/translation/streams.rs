//! Stream decoders: the OpenAI SSE reader (`openai::sse_items`), and the
//! Anthropic, Gemini and Cohere SSE translators and the Bedrock event-stream
//! decoder behind `convert::translate`, each fed through a real
//! `reqwest::Response` body.
//!
//! Properties: a valid stream yields the answer it encodes (text, reasoning,
//! tool calls, finish reason, usage) and the same items however its bytes are
//! cut into chunks; a stream cut short ends in an error; arbitrary bytes never
//! panic, give the same items however they are chunked, and (translators) end
//! in exactly one `Done` or error.

use aigw_dispatcher::adapter::StreamItem;
use aigw_dispatcher::convert;
use aigw_dispatcher::providers::{anthropic, bedrock, cohere, gemini, openai};
use futures::StreamExt;
use futures::stream::BoxStream;
use proptest::prelude::*;
use serde_json::{Value, json};

use crate::scripts::{Assembled, Script, frame, script, usage_json};
use crate::strategies::{chunked, noise};

#[derive(Debug, Clone, Copy, PartialEq)]
enum Decoder {
    OpenAi,
    Anthropic,
    Gemini,
    Cohere,
    Bedrock,
}

/// A stream item with what varies between runs (ids, `created`) left out.
#[derive(Debug, Clone, PartialEq)]
enum Seen {
    Data(Value),
    Raw(String),
    Done,
    Error(String),
}

fn seen(item: StreamItem) -> Seen {
    match item {
        StreamItem::Data(d) => match serde_json::from_str::<Value>(&d) {
            Ok(Value::Object(mut o)) => {
                o.remove("id");
                o.remove("created");
                Seen::Data(Value::Object(o))
            }
            _ => Seen::Raw(d),
        },
        StreamItem::Done => Seen::Done,
        StreamItem::Error(e) => Seen::Error(e.message),
    }
}

/// Runs `decoder` over a body arriving in `chunks`.
fn run(decoder: Decoder, chunks: Vec<Vec<u8>>) -> Vec<Seen> {
    let runtime = tokio::runtime::Builder::new_current_thread()
        .build()
        .unwrap();
    runtime.block_on(async move {
        let body = futures::stream::iter(
            chunks
                .into_iter()
                .map(|c| Ok::<_, std::io::Error>(bytes::Bytes::from(c))),
        );
        let response =
            reqwest::Response::from(http::Response::new(reqwest::Body::wrap_stream(body)));
        let p = || "p".to_string();
        let items: BoxStream<'static, StreamItem> = match decoder {
            Decoder::OpenAi => openai::sse_items(response, p()),
            Decoder::Anthropic => convert::translate(
                aigw_dispatcher::upstream::sse::provider_events(response, p()),
                anthropic::StreamState::new("p", "m"),
            ),
            Decoder::Gemini => convert::translate(
                aigw_dispatcher::upstream::sse::provider_events(response, p()),
                gemini::StreamState::new("p", "id", "m"),
            ),
            Decoder::Cohere => convert::translate(
                aigw_dispatcher::upstream::sse::provider_events(response, p()),
                cohere::StreamState::new("p", "m"),
            ),
            Decoder::Bedrock => convert::translate(
                bedrock::event_frames(response, p()),
                bedrock::StreamState::new("p", "m"),
            ),
        };
        items.map(seen).collect().await
    })
}

fn assemble(items: &[Seen]) -> Assembled {
    let mut a = Assembled::default();
    for (i, item) in items.iter().enumerate() {
        let c = match item {
            Seen::Data(c) => c,
            Seen::Raw(r) => panic!("a chunk that is not JSON: {r}"),
            Seen::Done | Seen::Error(_) => {
                assert_eq!(i + 1, items.len(), "items after the end");
                a.end = Some(match item {
                    Seen::Error(e) => Err(e.clone()),
                    _ => Ok(()),
                });
                continue;
            }
        };
        assert_eq!(c["object"], "chat.completion.chunk");
        if let Some(u) = c.get("usage").filter(|u| !u.is_null()) {
            a.usage = Some(u.clone());
        }
        let Some(choice) = c["choices"].get(0) else {
            continue;
        };
        let delta = &choice["delta"];
        a.text.push_str(delta["content"].as_str().unwrap_or(""));
        a.reasoning
            .push_str(delta["reasoning_content"].as_str().unwrap_or(""));
        for tc in delta["tool_calls"].as_array().into_iter().flatten() {
            let i = tc["index"].as_u64().unwrap() as usize;
            if a.calls.len() <= i {
                assert_eq!(a.calls.len(), i, "tool-call indexes skip");
                a.calls.push((
                    tc["id"].as_str().unwrap_or("").into(),
                    tc["function"]["name"].as_str().unwrap_or("").into(),
                    String::new(),
                ));
            }
            a.calls[i]
                .2
                .push_str(tc["function"]["arguments"].as_str().unwrap_or(""));
        }
        if let Some(f) = choice["finish_reason"].as_str() {
            a.finish = Some(f.to_string());
        }
    }
    a
}

/// A script and its bytes in `decoder`'s format, with a chunking of them.
fn encoded(decoder: Decoder) -> impl Strategy<Value = (Script, Vec<u8>, Vec<Vec<u8>>)> {
    script().prop_flat_map(move |s| {
        let bytes = match decoder {
            Decoder::OpenAi => s.openai().0,
            Decoder::Anthropic => s.anthropic(),
            Decoder::Gemini => s.gemini(),
            Decoder::Cohere => s.cohere(),
            Decoder::Bedrock => s.bedrock().0,
        };
        chunked(bytes).prop_map(move |(bytes, chunks)| (s.clone(), bytes, chunks))
    })
}

fn answer(decoder: Decoder, s: &Script) -> Assembled {
    match decoder {
        Decoder::OpenAi => unreachable!("checked item by item"),
        Decoder::Anthropic => s.anthropic_answer(),
        Decoder::Gemini => s.gemini_answer(),
        Decoder::Cohere => s.cohere_answer(),
        Decoder::Bedrock => s.bedrock_answer(),
    }
}

/// A valid stream gives its answer, the same for any chunking.
fn valid_stream(
    decoder: Decoder,
    (s, bytes, chunks): (Script, Vec<u8>, Vec<Vec<u8>>),
) -> Result<(), TestCaseError> {
    let whole = run(decoder, vec![bytes]);
    if decoder == Decoder::OpenAi {
        let mut want: Vec<Seen> = s
            .openai()
            .1
            .iter()
            .map(|p| seen(StreamItem::Data(p.clone())))
            .collect();
        want.push(Seen::Done);
        prop_assert_eq!(&whole, &want);
    } else {
        prop_assert_eq!(assemble(&whole), answer(decoder, &s));
    }
    prop_assert_eq!(run(decoder, chunks), whole);
    Ok(())
}

/// How many bytes at the end of an SSE stream are all tried as cut points:
/// its last event, where an answer's end is decided.
const SSE_TAIL: usize = 64;

/// A valid stream cut short ends in an error, tried at a random cut and at
/// every cut in the last event or frame. Two cuts complete an answer: a
/// Bedrock stream cut between frames after `messageStop`, and an SSE stream
/// cut between the CR and LF of its last CRLF (a lone CR ends a line).
fn cut_stream(
    decoder: Decoder,
    (s, bytes, cut): (Script, Vec<u8>, prop::sample::Index),
) -> Result<(), TestCaseError> {
    let len = bytes.len();
    // The frame after messageStop is the last (metadata).
    let stop_end = s.bedrock().1.iter().rev().nth(1).copied().unwrap_or(0);
    let tail = match decoder {
        Decoder::Bedrock => stop_end..len,
        _ => len.saturating_sub(SSE_TAIL)..len,
    };
    for cut in std::iter::once(cut.index(len)).chain(tail) {
        let items = run(decoder, vec![bytes[..cut].to_vec()]);
        let complete = match decoder {
            Decoder::Bedrock => cut == stop_end,
            _ => cut + 1 == len && bytes.ends_with(b"\r\n"),
        };
        let end = assemble(&items).end;
        if complete {
            prop_assert_eq!(end, Some(Ok(())));
        } else {
            prop_assert!(
                matches!(end, Some(Err(_))),
                "cut at {} of {} gave {:?}",
                cut,
                len,
                items
            );
        }
    }
    Ok(())
}

/// Arbitrary bytes: no panic, the same items for any chunking, and a
/// translator ends with exactly one `Done` or error.
fn noise_stream(
    decoder: Decoder,
    (bytes, chunks): (Vec<u8>, Vec<Vec<u8>>),
) -> Result<(), TestCaseError> {
    let whole = run(decoder, vec![bytes]);
    prop_assert_eq!(run(decoder, chunks), whole.clone());
    if decoder != Decoder::OpenAi {
        let ends = whole
            .iter()
            .filter(|i| matches!(i, Seen::Done | Seen::Error(_)))
            .count();
        prop_assert_eq!(ends, 1);
        prop_assert!(matches!(whole.last(), Some(Seen::Done | Seen::Error(_))));
    }
    Ok(())
}

fn cut_point(decoder: Decoder) -> impl Strategy<Value = (Script, Vec<u8>, prop::sample::Index)> {
    (encoded(decoder), any::<prop::sample::Index>())
        .prop_map(|((s, bytes, _), cut)| (s, bytes, cut))
}

fn bytes_noise(decoder: Decoder) -> impl Strategy<Value = (Vec<u8>, Vec<Vec<u8>>)> {
    let bytes = prop_oneof![
        2 => noise(),
        1 => prop::collection::vec(any::<u8>(), 0..256),
        // A valid stream with bytes flipped.
        1 => (encoded(decoder), prop::collection::vec((any::<prop::sample::Index>(), any::<u8>()), 1..4))
            .prop_map(|((_, mut bytes, _), flips)| {
                if !bytes.is_empty() {
                    for (at, b) in flips {
                        let n = bytes.len();
                        bytes[at.index(n)] = b;
                    }
                }
                bytes
            }),
    ];
    bytes.prop_flat_map(chunked)
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(64))]

    #[test]
    fn openai_sse_reads_the_same_for_any_chunking(case in encoded(Decoder::OpenAi)) {
        valid_stream(Decoder::OpenAi, case)?;
    }
    #[test]
    fn anthropic_stream_gives_its_answer_for_any_chunking(case in encoded(Decoder::Anthropic)) {
        valid_stream(Decoder::Anthropic, case)?;
    }
    #[test]
    fn gemini_stream_gives_its_answer_for_any_chunking(case in encoded(Decoder::Gemini)) {
        valid_stream(Decoder::Gemini, case)?;
    }
    #[test]
    fn cohere_stream_gives_its_answer_for_any_chunking(case in encoded(Decoder::Cohere)) {
        valid_stream(Decoder::Cohere, case)?;
    }
    #[test]
    fn bedrock_stream_gives_its_answer_for_any_chunking(case in encoded(Decoder::Bedrock)) {
        valid_stream(Decoder::Bedrock, case)?;
    }

}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(16))]

    #[test]
    fn anthropic_stream_cut_short_is_an_error(case in cut_point(Decoder::Anthropic)) {
        cut_stream(Decoder::Anthropic, case)?;
    }
    #[test]
    fn gemini_stream_cut_short_is_an_error(case in cut_point(Decoder::Gemini)) {
        cut_stream(Decoder::Gemini, case)?;
    }
    #[test]
    fn cohere_stream_cut_short_is_an_error(case in cut_point(Decoder::Cohere)) {
        cut_stream(Decoder::Cohere, case)?;
    }
    #[test]
    fn bedrock_stream_cut_short_is_an_error(case in cut_point(Decoder::Bedrock)) {
        cut_stream(Decoder::Bedrock, case)?;
    }

}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(64))]

    #[test]
    fn openai_sse_survives_any_bytes(case in bytes_noise(Decoder::OpenAi)) {
        noise_stream(Decoder::OpenAi, case)?;
    }
    #[test]
    fn anthropic_stream_survives_any_bytes(case in bytes_noise(Decoder::Anthropic)) {
        noise_stream(Decoder::Anthropic, case)?;
    }
    #[test]
    fn gemini_stream_survives_any_bytes(case in bytes_noise(Decoder::Gemini)) {
        noise_stream(Decoder::Gemini, case)?;
    }
    #[test]
    fn cohere_stream_survives_any_bytes(case in bytes_noise(Decoder::Cohere)) {
        noise_stream(Decoder::Cohere, case)?;
    }
    #[test]
    fn bedrock_stream_survives_any_bytes(case in bytes_noise(Decoder::Bedrock)) {
        noise_stream(Decoder::Bedrock, case)?;
    }
}

// ------------------------------------------------------- regression tests

/// Found by the properties: eventsource-stream 0.2.3 panicked on an SSE body
/// starting with a UTF-8 byte-order mark (it sliced the 3-byte character as
/// if it were one byte), taking the dispatcher's task down with it.
#[test]
fn sse_bodies_starting_with_a_byte_order_mark_are_read() {
    let body = "\u{feff}data: {\"choices\":[]}\n\ndata: [DONE]\n\n".as_bytes();
    for cut in [0, 1, 2, 3, body.len()] {
        let chunks = vec![body[..cut].to_vec(), body[cut..].to_vec()];
        assert_eq!(
            run(Decoder::OpenAi, chunks),
            vec![Seen::Data(json!({"choices": []})), Seen::Done]
        );
    }
    let anthropic = "\u{feff}event: message_start\ndata: {\"type\":\"message_start\",\"message\":{\"id\":\"m\",\"usage\":{\"input_tokens\":1}}}\n\nevent: message_stop\ndata: {\"type\":\"message_stop\"}\n\n";
    let items = run(Decoder::Anthropic, vec![anthropic.as_bytes().to_vec()]);
    assert_eq!(assemble(&items).end, Some(Ok(())));
}

/// Found by the properties: a Bedrock stream cut right after the 12-byte
/// prelude of its last frame ended as if complete (the decoder had taken the
/// prelude out of its buffer, so nothing seemed left over).
#[test]
fn bedrock_stream_cut_after_a_prelude_is_an_error() {
    let mut body = frame("messageStart", json!({"role": "assistant"}));
    body.extend(frame(
        "contentBlockDelta",
        json!({"contentBlockIndex": 0, "delta": {"text": "hi"}}),
    ));
    body.extend(frame("messageStop", json!({"stopReason": "end_turn"})));
    let metadata = frame(
        "metadata",
        json!({"usage": {"inputTokens": 3, "outputTokens": 1}}),
    );
    let mut cut = body.clone();
    cut.extend(&metadata[..12]);
    let items = run(Decoder::Bedrock, vec![cut]);
    assert_eq!(
        items.last(),
        Some(&Seen::Error(
            "provider p: the stream ended mid-frame".into()
        ))
    );
    // Whole, the same stream is a complete answer with its usage.
    body.extend(metadata);
    let a = assemble(&run(Decoder::Bedrock, vec![body]));
    assert_eq!((a.text.as_str(), a.end), ("hi", Some(Ok(()))));
    assert_eq!(a.usage, Some(usage_json(3, 1)));
}
