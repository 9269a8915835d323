//! OpenAI chat answers rendered as Responses API answers: a
//! `chat.completion` as a `response` object, and `chat.completion.chunk`s
//! as the Responses SSE event sequence.
//!
//! Invariants:
//! - Every streamed event has its `event:` line (its `type`) and a
//!   `sequence_number` counting from 0 without gaps; a stream is always
//!   `response.created`, `response.in_progress`, the output items, then
//!   `response.completed` (or `response.incomplete` when the answer hit
//!   its token cap) carrying the whole response with the usage aigw billed.
//! - An output item is `output_item.added`, its parts and deltas, then
//!   `output_item.done` with the whole item. Reasoning and text stream as
//!   they come (a switch closes the open item); function calls stream
//!   their argument deltas as they come, each call its own item (OpenAI
//!   may interleave parallel calls), and close at the end.
//! - Calls of the request's `custom` tools (translated to function tools
//!   taking `{"input": ...}`) come back as `custom_tool_call` items.
//! - No input makes these functions panic.

use aigw_events::Usage;
use serde_json::{Value, json};

use crate::chat::answer::{Chunk, Completion, ToolCall, Turn};

/// Usage in the Responses API's shape, from aigw's token classes.
pub fn usage_json(u: &Usage) -> Value {
    json!({
        "input_tokens": u.prompt_tokens,
        "input_tokens_details": {"cached_tokens": u.cached_tokens},
        "output_tokens": u.completion_tokens,
        "output_tokens_details": {"reasoning_tokens": u.reasoning_tokens},
        "total_tokens": u.prompt_tokens.saturating_add(u.completion_tokens),
    })
}

/// What the caller asked for that the `response` object echoes.
#[derive(Debug, Clone, Default)]
pub struct Echo {
    pub model: String,
    pub request: Value,
    /// Names of the request's `custom` tools.
    pub custom_tools: Vec<String>,
}

impl Echo {
    pub fn new(model: &str, request: Option<&Value>) -> Self {
        let request = request.cloned().unwrap_or(Value::Null);
        Self {
            model: model.to_string(),
            custom_tools: aigw_runtime::dialect::responses_in::custom_tools(&request),
            request,
        }
    }

    fn get(&self, key: &str, default: Value) -> Value {
        self.request
            .get(key)
            .filter(|v| !v.is_null())
            .cloned()
            .unwrap_or(default)
    }

    /// The `response` object around `output`.
    fn response(&self, id: &str, status: &str, output: Vec<Value>, usage: Option<&Usage>) -> Value {
        let incomplete = (status == "incomplete").then(|| json!({"reason": "max_output_tokens"}));
        json!({
            "id": id,
            "object": "response",
            "created_at": now(),
            "status": status,
            "error": null,
            "incomplete_details": incomplete,
            "instructions": self.get("instructions", Value::Null),
            "max_output_tokens": self.get("max_output_tokens", Value::Null),
            "model": self.model,
            "output": output,
            "parallel_tool_calls": self.get("parallel_tool_calls", Value::Bool(true)),
            "previous_response_id": self.get("previous_response_id", Value::Null),
            "reasoning": self.get("reasoning", json!({"effort": null, "summary": null})),
            "store": self.get("store", Value::Bool(true)),
            "temperature": self.get("temperature", json!(1.0)),
            "text": self.get("text", json!({"format": {"type": "text"}})),
            "tool_choice": self.get("tool_choice", json!("auto")),
            "tools": self.get("tools", json!([])),
            "top_p": self.get("top_p", json!(1.0)),
            "truncation": self.get("truncation", json!("disabled")),
            "usage": usage.map(usage_json),
            "metadata": self.get("metadata", json!({})),
            "user": self.get("user", Value::Null),
        })
    }

    /// A finished call as its output item.
    fn call_item(&self, id: &str, call_id: &str, name: &str, arguments: &str) -> Value {
        if self.custom_tools.iter().any(|c| c == name) {
            let input = serde_json::from_str::<Value>(arguments)
                .ok()
                .and_then(|v| v.get("input").and_then(Value::as_str).map(str::to_string))
                .unwrap_or_else(|| arguments.to_string());
            return json!({"type": "custom_tool_call", "id": id, "status": "completed",
                "call_id": call_id, "name": name, "input": input});
        }
        json!({"type": "function_call", "id": id, "status": "completed",
            "call_id": call_id, "name": name, "arguments": arguments})
    }
}

fn now() -> u64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| d.as_secs())
}

fn status_of(finish_reason: Option<&str>) -> &'static str {
    if finish_reason == Some("length") {
        "incomplete"
    } else {
        "completed"
    }
}

fn message_item(id: &str, status: &str, text: &str) -> Value {
    json!({"type": "message", "id": id, "status": status, "role": "assistant",
        "content": [{"type": "output_text", "text": text, "annotations": [], "logprobs": []}]})
}

fn reasoning_item(id: &str, text: &str) -> Value {
    json!({"type": "reasoning", "id": id,
        "summary": [{"type": "summary_text", "text": text}]})
}

/// A `chat.completion` as a `response` with id `id`, with the `usage` aigw
/// billed.
pub fn response(completion: &Completion, id: &str, echo: &Echo, usage: &Usage) -> Value {
    let choice = completion.choices.first();
    let msg = choice.map(|c| &c.message);
    let suffix = id.strip_prefix("resp_").unwrap_or(id);
    let mut output = Vec::new();
    if let Some(reasoning) = msg.and_then(Turn::reasoning) {
        output.push(reasoning_item(&format!("rs_{suffix}"), reasoning));
    }
    let text = msg.map(Turn::text).unwrap_or_default();
    let status = status_of(choice.and_then(|c| c.finish_reason.as_deref()));
    if !text.is_empty() {
        output.push(message_item(&format!("msg_{suffix}"), status, &text));
    }
    let calls = msg.map(|m| m.tool_calls.as_slice()).unwrap_or_default();
    for (n, call) in calls.iter().enumerate() {
        let call_id = call
            .id()
            .map_or_else(|| format!("call_{suffix}_{n}"), str::to_string);
        output.push(echo.call_item(
            &format!("fc_{suffix}_{n}"),
            &call_id,
            call.name(),
            call.arguments(),
        ));
    }
    echo.response(id, status, output, Some(usage))
}

/// Appends one SSE event, with its `event:` line.
fn write_event(out: &mut Vec<u8>, data: &Value) {
    let name = data.get("type").and_then(Value::as_str).unwrap_or("error");
    out.extend_from_slice(b"event: ");
    out.extend_from_slice(name.as_bytes());
    out.extend_from_slice(b"\ndata: ");
    out.extend_from_slice(data.to_string().as_bytes());
    out.extend_from_slice(b"\n\n");
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Open {
    Reasoning,
    Text,
}

#[derive(Debug, Default)]
struct Call {
    output_index: u64,
    item_id: String,
    call_id: String,
    name: String,
    arguments: String,
}

/// Renders one answer's OpenAI chunks as the Responses event sequence.
#[derive(Debug)]
pub struct StreamRenderer {
    id: String,
    echo: Echo,
    sequence: u64,
    started: bool,
    /// The open reasoning or text item: its kind, output index, text.
    open: Option<(Open, u64, String)>,
    /// Finished output items by output index.
    done: Vec<(u64, Value)>,
    /// The next item's output index.
    next_index: u64,
    /// Tool calls by OpenAI index.
    calls: Vec<(u64, Call)>,
    finish_reason: Option<String>,
    /// The `response` object of `response.completed`, once finished.
    pub final_response: Option<Value>,
}

impl StreamRenderer {
    pub fn new(id: impl Into<String>, echo: Echo) -> Self {
        Self {
            id: id.into(),
            echo,
            sequence: 0,
            started: false,
            open: None,
            done: Vec::new(),
            next_index: 0,
            calls: Vec::new(),
            finish_reason: None,
            final_response: None,
        }
    }

    fn suffix(&self) -> String {
        self.id
            .strip_prefix("resp_")
            .unwrap_or(&self.id)
            .to_string()
    }

    fn event(&mut self, out: &mut Vec<u8>, mut data: Value) {
        data["sequence_number"] = json!(self.sequence);
        self.sequence += 1;
        write_event(out, &data);
    }

    fn start(&mut self, out: &mut Vec<u8>) {
        if self.started {
            return;
        }
        self.started = true;
        let response = self
            .echo
            .response(&self.id, "in_progress", Vec::new(), None);
        self.event(
            out,
            json!({"type": "response.created", "response": response.clone()}),
        );
        self.event(
            out,
            json!({"type": "response.in_progress", "response": response}),
        );
    }

    fn item_id(&self, kind: Open, index: u64) -> String {
        let prefix = match kind {
            Open::Reasoning => "rs",
            Open::Text => "msg",
        };
        format!("{prefix}_{}_{index}", self.suffix())
    }

    fn close(&mut self, out: &mut Vec<u8>) {
        let Some((kind, index, text)) = self.open.take() else {
            return;
        };
        let item_id = self.item_id(kind, index);
        let item = match kind {
            Open::Reasoning => {
                let part = json!({"type": "summary_text", "text": text});
                self.event(
                    out,
                    json!({"type": "response.reasoning_summary_text.done", "item_id": item_id,
                        "output_index": index, "summary_index": 0, "text": text}),
                );
                self.event(
                    out,
                    json!({"type": "response.reasoning_summary_part.done", "item_id": item_id,
                        "output_index": index, "summary_index": 0, "part": part}),
                );
                reasoning_item(&item_id, &text)
            }
            Open::Text => {
                let part =
                    json!({"type": "output_text", "text": text, "annotations": [], "logprobs": []});
                self.event(
                    out,
                    json!({"type": "response.output_text.done", "item_id": item_id,
                        "output_index": index, "content_index": 0, "text": text, "logprobs": []}),
                );
                self.event(
                    out,
                    json!({"type": "response.content_part.done", "item_id": item_id,
                        "output_index": index, "content_index": 0, "part": part}),
                );
                message_item(&item_id, "completed", &text)
            }
        };
        self.event(
            out,
            json!({"type": "response.output_item.done", "output_index": index, "item": item.clone()}),
        );
        self.done.push((index, item));
    }

    fn delta(&mut self, kind: Open, text: &str, out: &mut Vec<u8>) {
        if self.open.as_ref().map(|o| o.0) != Some(kind) {
            self.close(out);
            let index = self.next_index;
            self.next_index += 1;
            let item_id = self.item_id(kind, index);
            match kind {
                Open::Reasoning => {
                    self.event(
                        out,
                        json!({"type": "response.output_item.added", "output_index": index,
                            "item": {"type": "reasoning", "id": item_id, "summary": []}}),
                    );
                    self.event(
                        out,
                        json!({"type": "response.reasoning_summary_part.added", "item_id": item_id,
                            "output_index": index, "summary_index": 0,
                            "part": {"type": "summary_text", "text": ""}}),
                    );
                }
                Open::Text => {
                    self.event(
                        out,
                        json!({"type": "response.output_item.added", "output_index": index,
                            "item": {"type": "message", "id": item_id, "status": "in_progress",
                                "role": "assistant", "content": []}}),
                    );
                    self.event(
                        out,
                        json!({"type": "response.content_part.added", "item_id": item_id,
                            "output_index": index, "content_index": 0,
                            "part": {"type": "output_text", "text": "", "annotations": [], "logprobs": []}}),
                    );
                }
            }
            self.open = Some((kind, index, String::new()));
        }
        let Some((_, index, acc)) = self.open.as_mut() else {
            return;
        };
        acc.push_str(text);
        let index = *index;
        let item_id = self.item_id(kind, index);
        let event = match kind {
            Open::Reasoning => json!({"type": "response.reasoning_summary_text.delta",
                "item_id": item_id, "output_index": index, "summary_index": 0, "delta": text}),
            Open::Text => json!({"type": "response.output_text.delta", "item_id": item_id,
                "output_index": index, "content_index": 0, "delta": text, "logprobs": []}),
        };
        self.event(out, event);
    }

    /// Renders one `chat.completion.chunk` (usage chunks render nothing:
    /// the billed usage comes with [`finish`](Self::finish)).
    pub fn chunk(&mut self, chunk: &Chunk, out: &mut Vec<u8>) {
        self.start(out);
        let Some(choice) = chunk.choices.first() else {
            return;
        };
        let delta = &choice.delta;
        if let Some(reasoning) = delta.reasoning() {
            self.delta(Open::Reasoning, reasoning, out);
        }
        let text = delta.text();
        if !text.is_empty() {
            self.delta(Open::Text, &text, out);
        }
        for call in &delta.tool_calls {
            self.call_delta(call, out);
        }
        if let Some(reason) = &choice.finish_reason {
            self.finish_reason = Some(reason.clone());
        }
    }

    fn call_delta(&mut self, call: &ToolCall, out: &mut Vec<u8>) {
        let index = call.index.unwrap_or(0);
        let at = match self.calls.iter().position(|(i, _)| *i == index) {
            Some(at) => at,
            None => {
                self.close(out);
                let output_index = self.next_index;
                self.next_index += 1;
                let n = self.calls.len();
                let call_id = call
                    .id()
                    .map_or_else(|| format!("call_{}_{n}", self.suffix()), str::to_string);
                let entry = Call {
                    output_index,
                    item_id: format!("fc_{}_{output_index}", self.suffix()),
                    call_id,
                    name: call.name().to_string(),
                    arguments: String::new(),
                };
                let custom = self.echo.custom_tools.contains(&entry.name);
                let item = if custom {
                    json!({"type": "custom_tool_call", "id": entry.item_id, "status": "in_progress",
                        "call_id": entry.call_id, "name": entry.name, "input": ""})
                } else {
                    json!({"type": "function_call", "id": entry.item_id, "status": "in_progress",
                        "call_id": entry.call_id, "name": entry.name, "arguments": ""})
                };
                self.event(
                    out,
                    json!({"type": "response.output_item.added", "output_index": output_index, "item": item}),
                );
                self.calls.push((index, entry));
                self.calls.len() - 1
            }
        };
        let args = call.arguments();
        if args.is_empty() {
            return;
        }
        let entry = &mut self.calls[at].1;
        entry.arguments.push_str(args);
        let (item_id, output_index) = (entry.item_id.clone(), entry.output_index);
        if self.echo.custom_tools.contains(&entry.name) {
            // A custom tool's input is only known once its JSON is whole.
            return;
        }
        self.event(
            out,
            json!({"type": "response.function_call_arguments.delta", "item_id": item_id,
                "output_index": output_index, "delta": args}),
        );
    }

    /// Ends the answer: the open item, the calls, then `response.completed`
    /// (`response.incomplete` on the token cap) with the billed `usage`.
    pub fn finish(&mut self, usage: &Usage, out: &mut Vec<u8>) {
        self.start(out);
        self.close(out);
        for (_, call) in std::mem::take(&mut self.calls) {
            let item =
                self.echo
                    .call_item(&call.item_id, &call.call_id, &call.name, &call.arguments);
            if item["type"] == "function_call" {
                self.event(
                    out,
                    json!({"type": "response.function_call_arguments.done", "item_id": call.item_id,
                        "output_index": call.output_index, "name": call.name, "arguments": call.arguments}),
                );
            } else {
                self.event(
                    out,
                    json!({"type": "response.custom_tool_call_input.done", "item_id": call.item_id,
                        "output_index": call.output_index, "input": item["input"]}),
                );
            }
            self.event(
                out,
                json!({"type": "response.output_item.done", "output_index": call.output_index, "item": item.clone()}),
            );
            self.done.push((call.output_index, item));
        }
        self.done.sort_by_key(|(i, _)| *i);
        let output = self.done.iter().map(|(_, item)| item.clone()).collect();
        let status = status_of(self.finish_reason.as_deref());
        let response = self.echo.response(&self.id, status, output, Some(usage));
        let kind = if status == "incomplete" {
            "response.incomplete"
        } else {
            "response.completed"
        };
        self.event(out, json!({"type": kind, "response": response.clone()}));
        self.final_response = Some(response);
    }
}

#[cfg(test)]
mod tests;
