//! A caller's JSON body carried byte for byte ([`RawBody`]), so that a
//! same-dialect upstream gets exactly what the caller sent.
//!
//! Invariants:
//! - The text is valid JSON, checked when made; it travels inside the
//!   dispatch message as itself (not as an escaped string), and comes out
//!   of the message identical, key order, whitespace and number spelling
//!   included.
//! - [`RawBody::with_model`] changes only the bytes of the top-level
//!   `model` value (the last one, as a JSON parser reads duplicates);
//!   every other byte stays where it was.

use std::borrow::Cow;
use std::fmt;

use serde::de::{self, IgnoredAny, MapAccess, Visitor};
use serde::{Deserialize, Deserializer, Serialize};
use serde_json::value::RawValue;

/// JSON text carried verbatim.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(transparent)]
pub struct RawBody(Box<RawValue>);

impl PartialEq for RawBody {
    fn eq(&self, other: &Self) -> bool {
        self.0.get() == other.0.get()
    }
}

impl RawBody {
    /// The body, if `bytes` are one JSON value (surrounding whitespace is
    /// dropped).
    pub fn from_bytes(bytes: &[u8]) -> Result<Self, serde_json::Error> {
        serde_json::from_slice(bytes).map(RawBody)
    }

    /// The JSON text.
    pub fn get(&self) -> &str {
        self.0.get()
    }

    /// The body parsed.
    pub fn to_value(&self) -> Result<serde_json::Value, serde_json::Error> {
        serde_json::from_str(self.0.get())
    }

    /// The text with the top-level `model` set to `model`: the same bytes
    /// when it is already that, else only that value's bytes replaced.
    /// `None` when the body is not an object with a `model`.
    pub fn with_model(&self, model: &str) -> Option<Cow<'_, str>> {
        let raw = self.0.get();
        let found = ModelValue::find(raw)?;
        let wanted = serde_json::to_string(model).ok()?;
        if found.get() == wanted {
            return Some(Cow::Borrowed(raw));
        }
        let start = found.get().as_ptr() as usize - raw.as_ptr() as usize;
        let end = start + found.get().len();
        Some(Cow::Owned(format!(
            "{}{wanted}{}",
            &raw[..start],
            &raw[end..]
        )))
    }
}

/// The top-level `model` value of an object, borrowed from its text.
struct ModelValue<'a>(Option<&'a RawValue>);

impl<'a> ModelValue<'a> {
    fn find(raw: &'a str) -> Option<&'a RawValue> {
        serde_json::from_str::<ModelValue<'a>>(raw).ok()?.0
    }
}

impl<'de> Deserialize<'de> for ModelValue<'de> {
    fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        struct Entries;
        impl<'de> Visitor<'de> for Entries {
            type Value = ModelValue<'de>;

            fn expecting(&self, f: &mut fmt::Formatter) -> fmt::Result {
                f.write_str("a JSON object")
            }

            fn visit_map<M: MapAccess<'de>>(self, mut map: M) -> Result<Self::Value, M::Error> {
                let mut model = None;
                while let Some(key) = map.next_key::<Cow<'de, str>>()? {
                    if key == "model" {
                        model = Some(map.next_value::<&'de RawValue>()?);
                    } else {
                        map.next_value::<IgnoredAny>()?;
                    }
                }
                Ok(ModelValue(model))
            }
        }
        deserializer
            .deserialize_map(Entries)
            .map_err(|e: D::Error| de::Error::custom(e))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn body(text: &str) -> RawBody {
        RawBody::from_bytes(text.as_bytes()).unwrap()
    }

    #[test]
    fn only_the_models_bytes_change() {
        let text =
            "{ \"max_tokens\" :1.0e2,\n \"model\": \"claude\",\"x\":\"\\u00e9\", \"messages\":[] }";
        let renamed = body(text)
            .with_model("claude-sonnet-4-5")
            .unwrap()
            .into_owned();
        assert_eq!(
            renamed,
            "{ \"max_tokens\" :1.0e2,\n \"model\": \"claude-sonnet-4-5\",\"x\":\"\\u00e9\", \"messages\":[] }"
        );
        // Already the model: the same text, not a copy.
        let same = body(text);
        assert!(matches!(same.with_model("claude"), Some(Cow::Borrowed(_))));
        // A model that needs escaping is written as JSON.
        assert_eq!(
            body(r#"{"model":"a"}"#).with_model("b\"c").unwrap(),
            r#"{"model":"b\"c"}"#
        );
    }

    #[test]
    fn the_last_top_level_model_is_the_one_replaced() {
        let text = r#"{"model":"a","nested":{"model":"n"},"model":"b"}"#;
        assert_eq!(
            body(text).with_model("c").unwrap(),
            r#"{"model":"a","nested":{"model":"n"},"model":"c"}"#
        );
        assert_eq!(body(r#"{"nested":{"model":"n"}}"#).with_model("c"), None);
        assert_eq!(body("[1]").with_model("c"), None);
    }

    #[test]
    fn it_travels_inside_a_message_unchanged() {
        #[derive(Serialize, Deserialize)]
        struct Message {
            raw: RawBody,
        }
        let text = "{\"b\":1,\"a\":[1.50, \"\\u00e9\"]}";
        let bytes = serde_json::to_vec(&Message { raw: body(text) }).unwrap();
        let back: Message = serde_json::from_slice(&bytes).unwrap();
        assert_eq!(back.raw.get(), text);
        assert!(RawBody::from_bytes(b"{\"a\":").is_err());
        assert_eq!(body("  {\"a\":1}\n").get(), "{\"a\":1}");
    }
}
