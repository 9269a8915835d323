//! The OpenAI chat request, typed, as the native adapters read it: the
//! messages, sampling limits, tools, structured output and reasoning. Each
//! adapter writes its own wire body from a [`ChatRequest`]; fields no
//! adapter interprets are not read here.
//!
//! Invariants:
//! - See the parent module: reading never fails, a wrong-typed field reads
//!   as absent.
//! - A message's role is one of four ([`Role`]); `developer` is `system`,
//!   and an unknown role is `user` (what OpenAI does with the content).
//! - A tool call's `arguments` read as a JSON object: a string is parsed,
//!   an object taken as it is, anything else (or invalid JSON) is `{}`.
//! - [`Effort`]'s budgets round-trip through the ingress translations:
//!   `thinking.budget_tokens` and `thinkingBudget` of the budget read back
//!   as the same effort (low, medium, high).

use serde::Deserialize;
use serde_json::{Value, json};

use super::{Content, items, lenient, object};

/// A chat request's interpreted fields.
#[derive(Debug, Default, Deserialize)]
pub struct ChatRequest {
    #[serde(default, deserialize_with = "items")]
    pub messages: Vec<Message>,
    #[serde(default, deserialize_with = "lenient")]
    stop: Option<Stop>,
    #[serde(default, deserialize_with = "lenient")]
    max_completion_tokens: Option<u64>,
    #[serde(default, deserialize_with = "lenient")]
    max_tokens: Option<u64>,
    #[serde(default, deserialize_with = "items")]
    tools: Vec<Tool>,
    #[serde(default, deserialize_with = "lenient")]
    tool_choice: Option<ToolChoiceWire>,
    #[serde(default, deserialize_with = "lenient")]
    response_format: Option<ResponseFormat>,
    #[serde(default, deserialize_with = "lenient")]
    reasoning_effort: Option<String>,
}

#[derive(Debug, Deserialize)]
#[serde(untagged)]
enum Stop {
    One(String),
    Many(Vec<Value>),
}

#[derive(Debug, Default, Deserialize)]
struct Tool {
    #[serde(default, deserialize_with = "lenient")]
    function: Option<FunctionDef>,
}

#[derive(Debug, Default, Deserialize)]
struct FunctionDef {
    #[serde(default, deserialize_with = "lenient")]
    name: Option<String>,
    #[serde(default, deserialize_with = "lenient")]
    description: Option<String>,
    #[serde(default)]
    parameters: Option<Value>,
}

#[derive(Debug, Deserialize)]
#[serde(untagged)]
enum ToolChoiceWire {
    Mode(String),
    Named {
        #[serde(default, deserialize_with = "object")]
        function: Named,
    },
}

#[derive(Debug, Default, Deserialize)]
struct Named {
    #[serde(default, deserialize_with = "lenient")]
    name: Option<String>,
}

#[derive(Debug, Deserialize)]
#[serde(tag = "type", rename_all = "snake_case")]
enum ResponseFormat {
    Text,
    JsonObject,
    JsonSchema {
        #[serde(default, deserialize_with = "object")]
        json_schema: JsonSchemaSpec,
    },
}

#[derive(Debug, Default, Deserialize)]
struct JsonSchemaSpec {
    #[serde(default, deserialize_with = "lenient")]
    name: Option<String>,
    #[serde(default)]
    schema: Option<Value>,
}

/// A function tool the caller offers.
#[derive(Debug, Clone, PartialEq)]
pub struct FunctionTool {
    pub name: String,
    pub description: Option<String>,
    /// The JSON schema of its arguments (an empty object schema if none).
    pub parameters: Value,
}

/// What `tool_choice` asks for.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum ToolChoice {
    Auto,
    None,
    Required,
    Function(String),
}

/// Output constrained to JSON: `response_format` `json_object` (any
/// object) or `json_schema` (this schema).
#[derive(Debug, Clone, PartialEq)]
pub struct JsonOutput {
    /// The schema's name, if it has one.
    pub name: Option<String>,
    pub schema: Value,
}

/// `reasoning_effort`, as far as a thinking budget can express it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Effort {
    /// `none`: no reasoning.
    Off,
    Minimal,
    Low,
    Medium,
    High,
    /// `xhigh` and `max`.
    Highest,
}

impl Effort {
    /// The effort a `reasoning_effort` names; `None` for a value OpenAI
    /// does not define.
    pub fn parse(s: &str) -> Option<Self> {
        Some(match s {
            "none" => Self::Off,
            "minimal" => Self::Minimal,
            "low" => Self::Low,
            "medium" => Self::Medium,
            "high" => Self::High,
            "xhigh" | "max" => Self::Highest,
            _ => return None,
        })
    }

    /// A thinking budget in tokens; `None` for no reasoning.
    pub fn budget_tokens(self) -> Option<u64> {
        match self {
            Self::Off => None,
            Self::Minimal => Some(1_024),
            Self::Low => Some(2_048),
            Self::Medium => Some(8_192),
            Self::High => Some(24_576),
            Self::Highest => Some(32_768),
        }
    }
}

/// A message's role.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Role {
    System,
    User,
    Assistant,
    Tool,
}

/// One message of `messages`.
#[derive(Debug, Default, Deserialize)]
pub struct Message {
    #[serde(default, deserialize_with = "lenient")]
    role: Option<String>,
    #[serde(default, deserialize_with = "lenient")]
    content: Option<Content>,
    #[serde(default, deserialize_with = "items")]
    tool_calls: Vec<ToolCallWire>,
    #[serde(default, deserialize_with = "lenient")]
    tool_call_id: Option<String>,
}

#[derive(Debug, Default, Deserialize)]
struct ToolCallWire {
    #[serde(default, deserialize_with = "lenient")]
    id: Option<String>,
    #[serde(default, deserialize_with = "lenient")]
    function: Option<CallFunction>,
}

#[derive(Debug, Default, Deserialize)]
struct CallFunction {
    #[serde(default, deserialize_with = "lenient")]
    name: Option<String>,
    #[serde(default)]
    arguments: Option<Value>,
}

/// A tool call of an assistant message.
#[derive(Debug, Clone, PartialEq)]
pub struct ToolCall {
    /// As the caller sent it (maybe empty).
    pub id: String,
    pub name: String,
    /// The arguments as a JSON object (see the module's invariants).
    pub arguments: Value,
}

/// A part of a user message.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Part {
    Text(String),
    /// A `data:` URL: media type and base64 data.
    InlineImage {
        media_type: String,
        data: String,
    },
    /// An image by URL.
    ImageUrl(String),
}

impl ChatRequest {
    /// Reads a chat body (see the module's invariants).
    pub fn read(body: &Value) -> Self {
        super::read(body)
    }

    /// `stop` as a list (OpenAI allows a string or an array); `None` when
    /// there is none.
    pub fn stop(&self) -> Option<Vec<String>> {
        let list: Vec<String> = match self.stop.as_ref()? {
            Stop::One(s) => vec![s.clone()],
            Stop::Many(items) => items
                .iter()
                .filter_map(|v| v.as_str().map(str::to_string))
                .collect(),
        };
        (!list.is_empty()).then_some(list)
    }

    /// `max_completion_tokens`, else `max_tokens`.
    pub fn max_tokens(&self) -> Option<u64> {
        self.max_completion_tokens.or(self.max_tokens)
    }

    /// The function tools, in order; a tool without a function name is
    /// left out.
    pub fn function_tools(&self) -> Vec<FunctionTool> {
        self.tools
            .iter()
            .filter_map(|t| {
                let f = t.function.as_ref()?;
                Some(FunctionTool {
                    name: f.name.clone()?,
                    description: f.description.clone(),
                    parameters: f
                        .parameters
                        .clone()
                        .filter(|p| !p.is_null())
                        .unwrap_or_else(|| json!({"type": "object", "properties": {}})),
                })
            })
            .collect()
    }

    pub fn tool_choice(&self) -> Option<ToolChoice> {
        match self.tool_choice.as_ref()? {
            ToolChoiceWire::Mode(mode) => Some(match mode.as_str() {
                "none" => ToolChoice::None,
                "required" | "any" => ToolChoice::Required,
                _ => ToolChoice::Auto,
            }),
            ToolChoiceWire::Named { function } => function.name.clone().map(ToolChoice::Function),
        }
    }

    /// The JSON output asked for, if any.
    pub fn json_output(&self) -> Option<JsonOutput> {
        match self.response_format.as_ref()? {
            ResponseFormat::Text => None,
            ResponseFormat::JsonObject => Some(JsonOutput {
                name: None,
                schema: json!({"type": "object"}),
            }),
            ResponseFormat::JsonSchema { json_schema } => Some(JsonOutput {
                name: json_schema.name.clone(),
                schema: json_schema
                    .schema
                    .clone()
                    .filter(Value::is_object)
                    .unwrap_or_else(|| json!({"type": "object"})),
            }),
        }
    }

    /// The reasoning effort asked for, if any.
    pub fn effort(&self) -> Option<Effort> {
        Effort::parse(self.reasoning_effort.as_deref()?)
    }

    /// Whether the conversation ends inside a tool loop: its last message
    /// that is not a tool result is an assistant's with tool calls.
    pub fn in_tool_loop(&self) -> bool {
        self.messages
            .iter()
            .rev()
            .find(|m| m.role() != Role::Tool)
            .is_some_and(|m| m.role() == Role::Assistant && !m.tool_calls.is_empty())
    }
}

impl Message {
    pub fn role(&self) -> Role {
        match self.role.as_deref() {
            Some("system" | "developer") => Role::System,
            Some("assistant") => Role::Assistant,
            Some("tool") => Role::Tool,
            _ => Role::User,
        }
    }

    /// The text of the content (a string, or the parts' texts joined).
    pub fn text(&self) -> String {
        self.content.as_ref().map(Content::text).unwrap_or_default()
    }

    /// The parts of the content, images included. Empty text parts are
    /// left out: they carry nothing, and Anthropic, Bedrock and Gemini
    /// refuse empty text blocks where OpenAI takes `"content": ""`.
    pub fn parts(&self) -> Vec<Part> {
        match &self.content {
            Some(Content::Text(s)) if s.is_empty() => Vec::new(),
            Some(Content::Text(s)) => vec![Part::Text(s.clone())],
            Some(Content::Parts(parts)) => parts
                .iter()
                .filter_map(|p| match p.kind.as_deref() {
                    Some("text") => p
                        .text
                        .as_deref()
                        .filter(|t| !t.is_empty())
                        .map(|t| Part::Text(t.to_string())),
                    Some("image_url") => p.image_url.as_ref().and_then(|i| i.url()).map(image_part),
                    _ => None,
                })
                .collect(),
            None => Vec::new(),
        }
    }

    /// The tool calls of an assistant message; a call without a function
    /// name is left out.
    pub fn tool_calls(&self) -> Vec<ToolCall> {
        self.tool_calls
            .iter()
            .filter_map(|c| {
                let f = c.function.as_ref()?;
                let arguments = match &f.arguments {
                    Some(Value::String(s)) => serde_json::from_str::<Value>(s)
                        .ok()
                        .filter(Value::is_object)
                        .unwrap_or_else(|| json!({})),
                    Some(v @ Value::Object(_)) => v.clone(),
                    _ => json!({}),
                };
                Some(ToolCall {
                    id: c.id.clone().unwrap_or_default(),
                    name: f.name.clone()?,
                    arguments,
                })
            })
            .collect()
    }

    /// The id a tool result answers (empty if none).
    pub fn tool_call_id(&self) -> &str {
        self.tool_call_id.as_deref().unwrap_or("")
    }
}

fn image_part(url: &str) -> Part {
    if let Some(rest) = url.strip_prefix("data:")
        && let Some((meta, data)) = rest.split_once(',')
        && let Some(media_type) = meta.strip_suffix(";base64")
    {
        return Part::InlineImage {
            media_type: media_type.to_string(),
            data: data.to_string(),
        };
    }
    Part::ImageUrl(url.to_string())
}

#[cfg(test)]
mod tests {
    use super::*;
    use aigw_runtime::dialect::anthropic_in;

    #[test]
    fn messages_read_their_roles_parts_and_calls() {
        let r = ChatRequest::read(&json!({"messages": [
            {"role": "developer", "content": [{"type": "text", "text": "be brief"}]},
            {"role": "user", "content": [{"type": "text", "text": ""}, {"type": "text", "text": "hi"},
                {"type": "image_url", "image_url": {"url": "data:image/png;base64,QUJD"}},
                {"type": "image_url", "image_url": "https://x/y.png"}, 5]},
            {"role": "assistant", "content": null, "tool_calls": [
                {"id": "c1", "function": {"name": "f", "arguments": "{\"a\":1}"}},
                {"id": "c2", "function": {"name": "g", "arguments": {"b": 2}}},
                {"id": "c3", "function": {"name": "h", "arguments": "not json"}},
                {"id": "c4", "function": {"arguments": "{}"}}]},
            {"role": "tool", "tool_call_id": "c1", "content": "ok"},
            {"role": "wizard", "content": "?"}, "junk"]}));
        let roles: Vec<Role> = r.messages.iter().map(Message::role).collect();
        use Role::*;
        assert_eq!(roles, [System, User, Assistant, Tool, User, User]);
        assert_eq!(r.messages[0].text(), "be brief");
        assert_eq!(
            r.messages[1].parts(),
            [
                Part::Text("hi".into()),
                Part::InlineImage {
                    media_type: "image/png".into(),
                    data: "QUJD".into()
                },
                Part::ImageUrl("https://x/y.png".into()),
            ]
        );
        let calls = r.messages[2].tool_calls();
        assert_eq!(calls.len(), 3, "a call without a name is left out");
        assert_eq!(calls[0].arguments, json!({"a": 1}));
        assert_eq!(calls[1].arguments, json!({"b": 2}));
        assert_eq!(calls[2].arguments, json!({}));
        assert_eq!(r.messages[3].tool_call_id(), "c1");
        assert!(!r.in_tool_loop());
    }

    #[test]
    fn limits_tools_and_choices_read_in_every_form() {
        let r = ChatRequest::read(&json!({"stop": "END", "max_tokens": 50,
            "max_completion_tokens": 70,
            "tools": [{"type": "function", "function": {"name": "f", "description": "d"}},
                {"type": "function"}, {"type": "web_search"}],
            "tool_choice": {"type": "function", "function": {"name": "f"}}}));
        assert_eq!(r.stop(), Some(vec!["END".to_string()]));
        assert_eq!(r.max_tokens(), Some(70));
        let tools = r.function_tools();
        assert_eq!(tools.len(), 1);
        assert_eq!(
            tools[0].parameters,
            json!({"type": "object", "properties": {}})
        );
        assert_eq!(r.tool_choice(), Some(ToolChoice::Function("f".into())));
        for (choice, want) in [
            (json!("none"), Some(ToolChoice::None)),
            (json!("required"), Some(ToolChoice::Required)),
            (json!("auto"), Some(ToolChoice::Auto)),
            (json!({"type": "function"}), None),
            (json!(7), None),
        ] {
            assert_eq!(
                ChatRequest::read(&json!({"tool_choice": choice})).tool_choice(),
                want
            );
        }
        assert_eq!(ChatRequest::read(&json!({"stop": []})).stop(), None);
        assert_eq!(
            ChatRequest::read(&json!({"max_tokens": 1.5})).max_tokens(),
            None
        );
        assert_eq!(ChatRequest::read(&json!([1, 2])).messages.len(), 0);
    }

    #[test]
    fn structured_output_and_effort_read_as_asked() {
        let schema = json!({"type": "object", "properties": {"a": {"type": "string"}}});
        let r = ChatRequest::read(&json!({"response_format": {"type": "json_schema",
            "json_schema": {"name": "thing", "schema": schema, "strict": true}},
            "reasoning_effort": "high"}));
        assert_eq!(
            r.json_output(),
            Some(JsonOutput {
                name: Some("thing".into()),
                schema
            })
        );
        assert_eq!(r.effort(), Some(Effort::High));
        let r = ChatRequest::read(&json!({"response_format": {"type": "json_object"}}));
        assert_eq!(r.json_output().unwrap().schema, json!({"type": "object"}));
        for format in [
            json!({"type": "text"}),
            json!({"type": "xml"}),
            json!("json"),
        ] {
            assert_eq!(
                ChatRequest::read(&json!({ "response_format": format })).json_output(),
                None
            );
        }
        assert_eq!(
            ChatRequest::read(&json!({"reasoning_effort": "huge"})).effort(),
            None
        );
    }

    #[test]
    fn budgets_read_back_as_the_same_effort() {
        for (effort, name) in [
            (Effort::Low, "low"),
            (Effort::Medium, "medium"),
            (Effort::High, "high"),
        ] {
            let budget = effort.budget_tokens().unwrap();
            assert_eq!(anthropic_in::effort(budget), name);
            assert!(budget >= 1_024, "Anthropic's smallest budget");
        }
        assert_eq!(Effort::Off.budget_tokens(), None);
    }

    #[test]
    fn a_conversation_inside_a_tool_loop_is_seen() {
        let r = ChatRequest::read(&json!({"messages": [
            {"role": "user", "content": "go"},
            {"role": "assistant", "tool_calls": [{"id": "c", "function": {"name": "f", "arguments": "{}"}}]},
            {"role": "tool", "tool_call_id": "c", "content": "done"}]}));
        assert!(r.in_tool_loop());
        let r = ChatRequest::read(&json!({"messages": [
            {"role": "assistant", "tool_calls": [{"id": "c", "function": {"name": "f", "arguments": "{}"}}]},
            {"role": "tool", "tool_call_id": "c", "content": "done"},
            {"role": "assistant", "content": "finished"},
            {"role": "user", "content": "again"}]}));
        assert!(!r.in_tool_loop());
    }
}
