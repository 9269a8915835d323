//! Generators shared by the properties: OpenAI chat requests as a typed
//! model (so a property knows what the JSON it sends means), arbitrary JSON,
//! token counts, and ways to cut a byte stream into chunks.

use proptest::prelude::*;
use serde_json::{Map, Value, json};

/// Short text: plain, any Unicode (newlines, quotes, emoji, NUL, a
/// byte-order mark), or empty.
pub fn text() -> impl Strategy<Value = String> {
    prop_oneof![
        3 => "[a-zA-Z0-9 .,!?]{1,12}",
        3 => "(?s).{0,12}",
        1 => Just(String::new()),
        1 => prop::sample::select(vec![
            "\u{feff}x", "\"quoted\"", "line\nbreak", "\r\n", "{\"json\": 1}",
            "🦀 naïve ü", "\0", "__thought__", "[DONE]", "data: x\n\n",
        ])
        .prop_map(String::from),
    ]
}

/// Non-empty text, for names and ids.
pub fn name() -> impl Strategy<Value = String> {
    prop_oneof![
        3 => "[a-zA-Z_][a-zA-Z0-9_-]{0,10}",
        1 => "(?s).{1,8}",
    ]
}

fn key() -> impl Strategy<Value = String> {
    prop_oneof![
        3 => "[a-z_]{1,8}",
        2 => prop::sample::select(vec![
            "type", "text", "role", "content", "id", "name", "input", "args",
            "index", "delta", "usage", "message", "tool_calls", "function",
            "arguments", "candidates", "parts", "output", "stopReason",
        ])
        .prop_map(String::from),
        1 => "(?s).{0,6}",
    ]
}

/// Any JSON value, nested a few levels.
pub fn json_value() -> impl Strategy<Value = Value> {
    let leaf = prop_oneof![
        Just(Value::Null),
        any::<bool>().prop_map(Value::Bool),
        any::<i64>().prop_map(Value::from),
        any::<u64>().prop_map(Value::from),
        (-1e9f64..1e9).prop_map(|f| json!(f)),
        text().prop_map(Value::String),
    ];
    leaf.prop_recursive(3, 32, 4, |inner| {
        prop_oneof![
            prop::collection::vec(inner.clone(), 0..4).prop_map(Value::Array),
            prop::collection::btree_map(key(), inner, 0..4)
                .prop_map(|m| Value::Object(m.into_iter().collect())),
        ]
    })
}

/// A JSON object (tool arguments, schemas).
pub fn json_object() -> impl Strategy<Value = Value> {
    prop::collection::btree_map(key(), json_value(), 0..4)
        .prop_map(|m| Value::Object(m.into_iter().collect()))
}

/// A token count: usually plausible, sometimes near `u64::MAX`.
pub fn count() -> impl Strategy<Value = u64> {
    prop_oneof![4 => 0..100_000u64, 1 => any::<u64>()]
}

/// Cuts `bytes` into chunks at random places (empty chunks included).
pub fn chunked(bytes: Vec<u8>) -> impl Strategy<Value = (Vec<u8>, Vec<Vec<u8>>)> {
    prop::collection::vec(any::<prop::sample::Index>(), 0..12).prop_map(move |cuts| {
        let mut at: Vec<usize> = cuts.iter().map(|i| i.index(bytes.len() + 1)).collect();
        at.sort_unstable();
        let mut chunks = Vec::new();
        let mut from = 0;
        for cut in at {
            chunks.push(bytes[from..cut].to_vec());
            from = cut;
        }
        chunks.push(bytes[from..].to_vec());
        (bytes.clone(), chunks)
    })
}

/// Bytes that look a little like a stream: SSE syntax, JSON and garbage.
pub fn noise() -> impl Strategy<Value = Vec<u8>> {
    let piece = prop_oneof![
        3 => prop::sample::select(vec![
            "data: ", "event: ", "\n", "\r", "\r\n", "\n\n", ": ping\n", "{", "}",
            "[DONE]", "\u{feff}", "\"type\":", "message_stop", "message-end",
            "{\"type\":\"message_stop\"}", "{\"candidates\":[{\"finishReason\":\"STOP\"}]}",
            "{\"type\":\"message-end\",\"delta\":{}}", "data: {\"choices\":[]}\n\n",
        ])
        .prop_map(|s| s.as_bytes().to_vec()),
        1 => prop::collection::vec(any::<u8>(), 0..16),
        1 => json_value().prop_map(|v| v.to_string().into_bytes()),
    ];
    prop::collection::vec(piece, 0..24).prop_map(|p| p.concat())
}

// ------------------------------------------------------------ OpenAI requests

/// A tool call of an assistant message.
#[derive(Debug, Clone)]
pub struct Call {
    pub id: String,
    pub name: String,
    /// A JSON object.
    pub args: Value,
    /// Sent as a JSON string (OpenAI's form) rather than an object.
    pub args_as_string: bool,
}

/// A part of an array `content`.
#[derive(Debug, Clone)]
pub enum Part {
    Text(String),
    /// An `image_url` part; `nested` puts the URL in `{"url": ...}`.
    Image {
        url: String,
        nested: bool,
    },
    /// A part no translator reads (audio, a refusal, junk).
    Other(Value),
}

#[derive(Debug, Clone)]
pub enum Content {
    Absent,
    Null,
    Str(String),
    Parts(Vec<Part>),
}

#[derive(Debug, Clone)]
pub enum Message {
    /// `system` or `developer`.
    System {
        role: String,
        content: Content,
    },
    /// `user`, or a role no translator knows (read as a user's).
    User {
        role: Option<String>,
        content: Content,
    },
    Assistant {
        content: Content,
        calls: Vec<Call>,
    },
    Tool {
        call_id: String,
        content: Content,
    },
}

#[derive(Debug, Clone)]
pub struct Tool {
    pub name: String,
    pub description: Option<String>,
    pub parameters: Option<Value>,
}

/// An OpenAI chat request.
#[derive(Debug, Clone)]
pub struct Request {
    pub model: String,
    pub messages: Vec<Message>,
    pub max_tokens: Option<Value>,
    pub max_completion_tokens: Option<Value>,
    pub stop: Option<Value>,
    pub tools: Vec<Tool>,
    pub tool_choice: Option<Value>,
    pub response_format: Option<Value>,
    pub temperature: Option<Value>,
    pub extra: Vec<(String, Value)>,
    pub stream: bool,
}

fn image_url() -> impl Strategy<Value = String> {
    let media = prop::sample::select(vec![
        "image/png",
        "image/jpeg",
        "image/jpg",
        "image/gif",
        "image/webp",
        "image/svg+xml",
        "",
        "application/pdf",
    ]);
    prop_oneof![
        3 => (media, "[A-Za-z0-9+/]{0,16}={0,2}")
            .prop_map(|(m, d)| format!("data:{m};base64,{d}")),
        2 => ("[a-z0-9/]{1,10}", prop::sample::select(vec!["png", "JPG", "webp", "gif", "jpeg", "bin"]))
            .prop_map(|(p, ext)| format!("https://example.com/{p}.{ext}?q=1")),
        1 => Just("data:text/plain,hello".to_string()),
        1 => text(),
    ]
}

fn part() -> impl Strategy<Value = Part> {
    prop_oneof![
        4 => text().prop_map(Part::Text),
        2 => (image_url(), any::<bool>()).prop_map(|(url, nested)| Part::Image { url, nested }),
        1 => prop_oneof![
            Just(json!({"type": "input_audio", "input_audio": {"data": "AAAA", "format": "wav"}})),
            text().prop_map(|t| json!({"type": "refusal", "text": t})),
            Just(json!({"type": "text"})),
            json_value(),
        ]
        .prop_map(Part::Other),
    ]
}

fn content() -> impl Strategy<Value = Content> {
    prop_oneof![
        1 => Just(Content::Absent),
        1 => Just(Content::Null),
        4 => text().prop_map(Content::Str),
        3 => prop::collection::vec(part(), 0..4).prop_map(Content::Parts),
    ]
}

fn call_id() -> impl Strategy<Value = String> {
    prop_oneof![
        4 => "call_[a-zA-Z0-9]{1,8}",
        1 => ("call_[a-z0-9]{1,6}", "[A-Za-z0-9+/=]{0,12}")
            .prop_map(|(id, sig)| format!("{id}__thought__{sig}")),
        1 => text(),
    ]
}

fn call() -> impl Strategy<Value = Call> {
    (call_id(), name(), json_object(), any::<bool>()).prop_map(
        |(id, name, args, args_as_string)| Call {
            id,
            name,
            args,
            args_as_string,
        },
    )
}

/// A message; a tool message's id is resolved against earlier calls later.
fn message() -> impl Strategy<Value = (Message, Option<prop::sample::Index>)> {
    prop_oneof![
        1 => (prop::sample::select(vec!["system", "developer"]), content())
            .prop_map(|(role, content)| (Message::System { role: role.into(), content }, None)),
        4 => (
            prop_oneof![
                4 => Just(Some("user".to_string())),
                1 => Just(None),
                1 => prop::sample::select(vec!["function", "", "USER", "model"])
                    .prop_map(|r| Some(r.to_string())),
            ],
            content(),
        )
            .prop_map(|(role, content)| (Message::User { role, content }, None)),
        3 => (content(), prop::collection::vec(call(), 0..3))
            .prop_map(|(content, calls)| (Message::Assistant { content, calls }, None)),
        2 => (call_id(), content(), prop::option::weighted(0.8, any::<prop::sample::Index>()))
            .prop_map(|(call_id, content, refer)| (Message::Tool { call_id, content }, refer)),
    ]
}

/// A conversation; most tool messages answer a call made earlier.
fn messages() -> impl Strategy<Value = Vec<Message>> {
    prop::collection::vec(message(), 0..8).prop_map(|drafts| {
        let mut ids: Vec<String> = Vec::new();
        let mut out = Vec::new();
        for (mut m, refer) in drafts {
            match &mut m {
                Message::Assistant { calls, .. } => ids.extend(calls.iter().map(|c| c.id.clone())),
                Message::Tool { call_id, .. } => {
                    if let Some(i) = refer.filter(|_| !ids.is_empty()) {
                        *call_id = ids[i.index(ids.len())].clone();
                    }
                }
                _ => {}
            }
            out.push(m);
        }
        out
    })
}

fn tool() -> impl Strategy<Value = Tool> {
    let schema = prop_oneof![
        3 => Just(json!({"type": "object", "properties": {"city": {"type": "string"}}, "required": ["city"], "additionalProperties": false, "$schema": "http://json-schema.org/draft-07/schema#"})),
        1 => json_object(),
    ];
    (name(), prop::option::of(text()), prop::option::of(schema)).prop_map(
        |(name, description, parameters)| Tool {
            name,
            description,
            parameters,
        },
    )
}

fn some_number() -> impl Strategy<Value = Value> {
    prop_oneof![
        4 => (1..100_000u64).prop_map(Value::from),
        1 => any::<u64>().prop_map(Value::from),
        1 => any::<i64>().prop_map(Value::from),
        1 => (0.0f64..2.0).prop_map(|f| json!(f)),
        1 => json_value(),
    ]
}

pub fn request() -> impl Strategy<Value = Request> {
    let stop = prop_oneof![
        2 => text().prop_map(Value::String),
        2 => prop::collection::vec(text(), 0..5).prop_map(|v| json!(v)),
        1 => json_value(),
    ];
    let tool_choice = prop_oneof![
        prop::sample::select(vec!["auto", "none", "required", "any", "other"])
            .prop_map(|s| json!(s)),
        name().prop_map(|n| json!({"type": "function", "function": {"name": n}})),
        json_value(),
    ];
    let response_format = prop_oneof![
        Just(json!({"type": "json_object"})),
        Just(json!({"type": "text"})),
        json_value(),
    ];
    let extra = prop::collection::vec(
        (
            prop::sample::select(vec!["user", "seed", "top_p", "n", "logprobs", "x_odd"]),
            json_value(),
        ),
        0..3,
    );
    (
        (name(), messages(), any::<bool>()),
        (
            prop::option::of(some_number()),
            prop::option::of(some_number()),
            prop::option::of(stop),
        ),
        (
            prop::collection::vec(tool(), 0..3),
            prop::option::of(tool_choice),
            prop::option::of(response_format),
            prop::option::of(some_number()),
            extra,
        ),
    )
        .prop_map(
            |(
                (model, messages, stream),
                (max_tokens, max_completion_tokens, stop),
                (tools, tool_choice, response_format, temperature, extra),
            )| Request {
                model,
                messages,
                max_tokens,
                max_completion_tokens,
                stop,
                tools,
                tool_choice,
                response_format,
                temperature,
                extra: extra.into_iter().map(|(k, v)| (k.to_string(), v)).collect(),
                stream,
            },
        )
}

impl Content {
    fn insert(&self, m: &mut Map<String, Value>) {
        let v = match self {
            Content::Absent => return,
            Content::Null => Value::Null,
            Content::Str(s) => json!(s),
            Content::Parts(parts) => Value::Array(parts.iter().map(Part::json).collect()),
        };
        m.insert("content".into(), v);
    }
}

impl Part {
    pub fn json(&self) -> Value {
        match self {
            Part::Text(t) => json!({"type": "text", "text": t}),
            Part::Image { url, nested: true } => {
                json!({"type": "image_url", "image_url": {"url": url}})
            }
            Part::Image { url, nested: false } => json!({"type": "image_url", "image_url": url}),
            Part::Other(v) => v.clone(),
        }
    }
}

impl Message {
    pub fn json(&self) -> Value {
        let mut m = Map::new();
        match self {
            Message::System { role, content } => {
                m.insert("role".into(), json!(role));
                content.insert(&mut m);
            }
            Message::User { role, content } => {
                if let Some(r) = role {
                    m.insert("role".into(), json!(r));
                }
                content.insert(&mut m);
            }
            Message::Assistant { content, calls } => {
                m.insert("role".into(), json!("assistant"));
                content.insert(&mut m);
                if !calls.is_empty() {
                    let calls: Vec<Value> = calls
                        .iter()
                        .map(|c| {
                            let args = if c.args_as_string {
                                json!(c.args.to_string())
                            } else {
                                c.args.clone()
                            };
                            json!({"id": c.id, "type": "function",
                                   "function": {"name": c.name, "arguments": args}})
                        })
                        .collect();
                    m.insert("tool_calls".into(), Value::Array(calls));
                }
            }
            Message::Tool { call_id, content } => {
                m.insert("role".into(), json!("tool"));
                m.insert("tool_call_id".into(), json!(call_id));
                content.insert(&mut m);
            }
        }
        Value::Object(m)
    }
}

impl Request {
    pub fn json(&self) -> Value {
        let mut b = Map::new();
        // Odd extra fields first, so the known ones below win.
        for (k, v) in &self.extra {
            b.insert(k.clone(), v.clone());
        }
        b.insert("model".into(), json!(self.model));
        b.insert(
            "messages".into(),
            Value::Array(self.messages.iter().map(Message::json).collect()),
        );
        let optional = [
            ("max_tokens", &self.max_tokens),
            ("max_completion_tokens", &self.max_completion_tokens),
            ("stop", &self.stop),
            ("tool_choice", &self.tool_choice),
            ("response_format", &self.response_format),
            ("temperature", &self.temperature),
        ];
        for (k, v) in optional {
            if let Some(v) = v {
                b.insert(k.into(), v.clone());
            }
        }
        if !self.tools.is_empty() {
            let tools: Vec<Value> = self
                .tools
                .iter()
                .map(|t| {
                    let mut f = json!({"name": t.name});
                    if let Some(d) = &t.description {
                        f["description"] = json!(d);
                    }
                    if let Some(p) = &t.parameters {
                        f["parameters"] = p.clone();
                    }
                    json!({"type": "function", "function": f})
                })
                .collect();
            b.insert("tools".into(), Value::Array(tools));
        }
        if self.stream {
            b.insert("stream".into(), json!(true));
        }
        Value::Object(b)
    }
}

/// `body` with the value at a random place replaced by random JSON (a field
/// of the wrong type, a message that is not an object, ...).
pub fn corrupted(body: Value) -> impl Strategy<Value = Value> {
    (
        prop::collection::vec(any::<prop::sample::Index>(), 1..5),
        json_value(),
    )
        .prop_map(move |(path, replacement)| {
            let mut body = body.clone();
            // Walk down as far as the path goes, as a JSON pointer.
            let mut pointer = String::new();
            let mut at = &body;
            for i in &path {
                let step = match at {
                    Value::Object(o) if !o.is_empty() => {
                        let k = o.keys().nth(i.index(o.len())).cloned().unwrap_or_default();
                        let next = &o[&k];
                        Some((k.replace('~', "~0").replace('/', "~1"), next))
                    }
                    Value::Array(a) if !a.is_empty() => {
                        let n = i.index(a.len());
                        Some((n.to_string(), &a[n]))
                    }
                    _ => None,
                };
                let Some((token, next)) = step else { break };
                pointer.push('/');
                pointer.push_str(&token);
                at = next;
            }
            if let Some(target) = body.pointer_mut(&pointer) {
                *target = replacement;
            }
            body
        })
}
