use super::*;
use crate::chat::answer::arbitrary::any_json;
use proptest::prelude::*;

/// The events of a rendered stream: each event line must name its
/// data's type, and sequence numbers count from 0 without gaps.
fn events(sse: &[u8]) -> Vec<Value> {
    let all: Vec<Value> = String::from_utf8_lossy(sse)
        .split("\n\n")
        .filter(|e| !e.is_empty())
        .map(|e| {
            let mut lines = e.lines();
            let name = lines.next().unwrap().strip_prefix("event: ").unwrap();
            let data: Value =
                serde_json::from_str(lines.next().unwrap().strip_prefix("data: ").unwrap())
                    .unwrap();
            assert_eq!(data["type"], name, "the event line names the data's type");
            data
        })
        .collect();
    for (n, e) in all.iter().enumerate() {
        assert_eq!(e["sequence_number"], json!(n), "{e}");
    }
    all
}

fn names(events: &[Value]) -> Vec<&str> {
    events.iter().map(|e| e["type"].as_str().unwrap()).collect()
}

fn chunk(delta: Value, finish: Option<&str>) -> Chunk {
    Chunk::read(&json!({"choices": [{"index": 0, "delta": delta, "finish_reason": finish}]}))
}

fn echo(request: Value) -> Echo {
    Echo::new("alias", Some(&request))
}

#[test]
fn usage_has_the_responses_fields() {
    let u = Usage {
        prompt_tokens: 100,
        completion_tokens: 7,
        cached_tokens: 60,
        reasoning_tokens: 3,
        ..Default::default()
    };
    assert_eq!(
        usage_json(&u),
        json!({"input_tokens": 100, "input_tokens_details": {"cached_tokens": 60},
            "output_tokens": 7, "output_tokens_details": {"reasoning_tokens": 3},
            "total_tokens": 107})
    );
}

#[test]
fn a_completion_becomes_a_response() {
    let c = json!({"choices": [{"message": {"role": "assistant", "content": "Hi",
        "reasoning_content": "think",
        "tool_calls": [{"id": "call_1", "type": "function", "function": {"name": "f", "arguments": "{\"a\":1}"}},
            {"id": "call_2", "type": "function", "function": {"name": "apply_patch", "arguments": "{\"input\":\"P\"}"}}]},
        "finish_reason": "tool_calls"}]});
    let e =
        echo(json!({"instructions": "be", "tools": [{"type": "custom", "name": "apply_patch"}]}));
    let r = response(&Completion::read(&c), "resp_1", &e, &Usage::default());
    assert_eq!(r["object"], "response");
    assert_eq!(r["id"], "resp_1");
    assert_eq!(r["model"], "alias");
    assert_eq!(r["status"], "completed");
    assert_eq!(r["instructions"], "be");
    assert_eq!(
        r["output"][0],
        json!({"type": "reasoning", "id": "rs_1", "summary": [{"type": "summary_text", "text": "think"}]})
    );
    assert_eq!(r["output"][1]["type"], "message");
    assert_eq!(r["output"][1]["content"][0]["text"], "Hi");
    assert_eq!(
        r["output"][2],
        json!({"type": "function_call", "id": "fc_1_0", "status": "completed", "call_id": "call_1",
            "name": "f", "arguments": "{\"a\":1}"})
    );
    assert_eq!(r["output"][3]["type"], "custom_tool_call");
    assert_eq!(r["output"][3]["input"], "P");
    let cut = json!({"choices": [{"message": {"content": "x"}, "finish_reason": "length"}]});
    let r = response(&Completion::read(&cut), "resp_2", &e, &Usage::default());
    assert_eq!(r["status"], "incomplete");
    assert_eq!(r["incomplete_details"]["reason"], "max_output_tokens");
}

#[test]
fn a_stream_renders_the_responses_event_sequence() {
    let mut r = StreamRenderer::new("resp_1", echo(json!({})));
    let mut out = Vec::new();
    r.chunk(
        &chunk(json!({"role": "assistant", "content": ""}), None),
        &mut out,
    );
    r.chunk(&chunk(json!({"reasoning_content": "hm"}), None), &mut out);
    r.chunk(&chunk(json!({"content": "Hel"}), None), &mut out);
    r.chunk(&chunk(json!({"content": "lo"}), None), &mut out);
    r.chunk(&chunk(json!({"tool_calls": [{"index": 0, "id": "c1", "function": {"name": "f", "arguments": "{\"a\""}}]}), None), &mut out);
    r.chunk(
        &chunk(
            json!({"tool_calls": [{"index": 0, "function": {"arguments": ":1}"}}]}),
            None,
        ),
        &mut out,
    );
    r.chunk(&chunk(json!({}), Some("tool_calls")), &mut out);
    let usage = Usage {
        prompt_tokens: 3,
        completion_tokens: 2,
        ..Default::default()
    };
    r.finish(&usage, &mut out);
    let events = events(&out);
    assert_eq!(
        names(&events),
        [
            "response.created",
            "response.in_progress",
            "response.output_item.added",
            "response.reasoning_summary_part.added",
            "response.reasoning_summary_text.delta",
            "response.reasoning_summary_text.done",
            "response.reasoning_summary_part.done",
            "response.output_item.done",
            "response.output_item.added",
            "response.content_part.added",
            "response.output_text.delta",
            "response.output_text.delta",
            "response.output_text.done",
            "response.content_part.done",
            "response.output_item.done",
            "response.output_item.added",
            "response.function_call_arguments.delta",
            "response.function_call_arguments.delta",
            "response.function_call_arguments.done",
            "response.output_item.done",
            "response.completed",
        ]
    );
    let done = events.last().unwrap();
    assert_eq!(done["response"]["status"], "completed");
    assert_eq!(done["response"]["usage"]["output_tokens"], 2);
    let output = done["response"]["output"].as_array().unwrap();
    assert_eq!(output.len(), 3);
    assert_eq!(output[1]["content"][0]["text"], "Hello");
    assert_eq!(output[2]["arguments"], "{\"a\":1}");
    assert_eq!(output[2]["call_id"], "c1");
}

#[test]
fn a_capped_stream_ends_incomplete() {
    let mut r = StreamRenderer::new("resp_1", echo(json!({})));
    let mut out = Vec::new();
    r.chunk(&chunk(json!({"content": "a"}), Some("length")), &mut out);
    r.finish(&Usage::default(), &mut out);
    let events = events(&out);
    let last = events.last().unwrap();
    assert_eq!(last["type"], "response.incomplete");
    assert_eq!(
        last["response"]["incomplete_details"]["reason"],
        "max_output_tokens"
    );
}

#[test]
fn custom_tool_calls_stream_as_custom_items() {
    let e = echo(json!({"tools": [{"type": "custom", "name": "apply_patch"}]}));
    let mut r = StreamRenderer::new("resp_1", e);
    let mut out = Vec::new();
    r.chunk(&chunk(json!({"tool_calls": [{"index": 0, "id": "c1", "function": {"name": "apply_patch", "arguments": "{\"input\":"}}]}), None), &mut out);
    r.chunk(
        &chunk(
            json!({"tool_calls": [{"index": 0, "function": {"arguments": "\"P\"}"}}]}),
            Some("tool_calls"),
        ),
        &mut out,
    );
    r.finish(&Usage::default(), &mut out);
    let events = events(&out);
    let item = &events.last().unwrap()["response"]["output"][0];
    assert_eq!(item["type"], "custom_tool_call");
    assert_eq!(item["input"], "P");
    assert!(
        !names(&events).contains(&"response.function_call_arguments.delta"),
        "{events:?}"
    );
}

proptest! {
    #[test]
    fn any_chunks_render_a_well_formed_sequence(chunks in prop::collection::vec(any_json(), 0..6)) {
        let mut r = StreamRenderer::new("resp_x", echo(json!({})));
        let mut out = Vec::new();
        for c in &chunks {
            r.chunk(&Chunk::read(&json!({"choices": [c]})), &mut out);
            r.chunk(&Chunk::read(c), &mut out);
        }
        r.finish(&Usage::default(), &mut out);
        let events = events(&out);
        let names = names(&events);
        prop_assert_eq!(&names[..2], ["response.created", "response.in_progress"]);
        let last = names[names.len() - 1];
        prop_assert!(last == "response.completed" || last == "response.incomplete");
        let added = names.iter().filter(|n| **n == "response.output_item.added").count();
        let done = names.iter().filter(|n| **n == "response.output_item.done").count();
        prop_assert_eq!(added, done);
    }

    #[test]
    fn any_completion_renders_a_response(c in any_json()) {
        let r = response(&Completion::read(&c), "resp_x", &echo(json!({})), &Usage::default());
        prop_assert!(r["output"].is_array());
        prop_assert!(r["status"].is_string());
    }
}
