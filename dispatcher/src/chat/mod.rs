//! The internal model, typed: OpenAI chat is the shape every request is
//! translated into and every adapter answers in. [`request`] is the body
//! as the native adapters (Anthropic, Gemini, Bedrock, Cohere) read it;
//! [`answer`] is the completion and its chunks as the dialect renderers
//! read them. Fields nobody interprets stay out of these types.
//!
//! Invariants:
//! - Reading never fails and never panics: a body or an upstream answer is
//!   outside input, so a field that is missing or of the wrong type reads
//!   as empty (`None`, `""`, no items) and the rest still reads; one bad
//!   item of a list reads as an empty item and never drops its siblings.
//! - A struct is read only from a JSON object (serde alone would also read
//!   one from an array).

pub mod answer;
pub mod request;

use serde::de::DeserializeOwned;
use serde::{Deserialize, Deserializer};
use serde_json::Value;

/// A message's `content`: a string, or parts.
#[derive(Debug, Clone, Deserialize)]
#[serde(untagged)]
pub enum Content {
    Text(String),
    Parts(#[serde(deserialize_with = "items")] Vec<ContentPart>),
}

/// One part of a `content` array.
#[derive(Debug, Clone, Default, Deserialize)]
pub struct ContentPart {
    #[serde(default, rename = "type", deserialize_with = "lenient")]
    pub kind: Option<String>,
    #[serde(default, deserialize_with = "lenient")]
    pub text: Option<String>,
    /// `{"url": ...}`, or the URL itself as some clients send it.
    #[serde(default, deserialize_with = "lenient")]
    pub image_url: Option<ImageUrl>,
}

#[derive(Debug, Clone, Deserialize)]
#[serde(untagged)]
pub enum ImageUrl {
    Url(String),
    Object {
        #[serde(default, deserialize_with = "lenient")]
        url: Option<String>,
    },
}

impl Content {
    /// The text: the string, or the parts' texts joined.
    pub fn text(&self) -> String {
        match self {
            Self::Text(s) => s.clone(),
            Self::Parts(parts) => parts.iter().filter_map(|p| p.text.as_deref()).collect(),
        }
    }
}

impl ImageUrl {
    pub fn url(&self) -> Option<&str> {
        match self {
            Self::Url(u) => Some(u),
            Self::Object { url } => url.as_deref(),
        }
    }
}

/// `T` if the value reads as one, else `T`'s default.
pub(crate) fn lenient<'de, D: Deserializer<'de>, T: DeserializeOwned + Default>(
    d: D,
) -> Result<T, D::Error> {
    Ok(T::deserialize(Value::deserialize(d)?).unwrap_or_default())
}

/// The struct `T` if the value is an object that reads as one, else
/// `T`'s default (serde would otherwise read a struct from an array).
pub(crate) fn object<'de, D: Deserializer<'de>, T: DeserializeOwned + Default>(
    d: D,
) -> Result<T, D::Error> {
    Ok(of_object(Value::deserialize(d)?))
}

pub(crate) fn of_object<T: DeserializeOwned + Default>(v: Value) -> T {
    if v.is_object() {
        T::deserialize(v).unwrap_or_default()
    } else {
        T::default()
    }
}

/// An array's items, each a struct read as by [`object`]; anything but an
/// array is none.
pub(crate) fn items<'de, D: Deserializer<'de>, T: DeserializeOwned + Default>(
    d: D,
) -> Result<Vec<T>, D::Error> {
    Ok(match Value::deserialize(d)? {
        Value::Array(items) => items.into_iter().map(of_object).collect(),
        _ => Vec::new(),
    })
}

/// The struct `T` if the value is an object (read as by [`object`]),
/// `None` otherwise: for an optional part whose absence means something.
pub(crate) fn object_opt<'de, D: Deserializer<'de>, T: DeserializeOwned + Default>(
    d: D,
) -> Result<Option<T>, D::Error> {
    let v = Value::deserialize(d)?;
    Ok(v.is_object().then(|| of_object(v)))
}

/// An array's items as by [`items`], `None` when it is not an array: for a
/// list whose absence makes the answer unreadable.
pub(crate) fn list_opt<'de, D: Deserializer<'de>, T: DeserializeOwned + Default>(
    d: D,
) -> Result<Option<Vec<T>>, D::Error> {
    match Value::deserialize(d)? {
        Value::Array(list) => Ok(Some(list.into_iter().map(of_object).collect())),
        _ => Ok(None),
    }
}

/// A top-level body read as `T` (see the module's invariants).
pub(crate) fn read<T: DeserializeOwned + Default>(v: &Value) -> T {
    if v.is_object() {
        T::deserialize(v).unwrap_or_default()
    } else {
        T::default()
    }
}
