//! The stored response aggregate (OpenAI's Responses API, `store: true`):
//! one answered `POST /v1/responses`, under its response id (`resp_` and
//! the request id's 32 hex digits, the answer's `id`), readable and
//! continuable by the key that created it only.
//!
//! Invariants:
//! - A response is stored at most once (`StoreResponse` on a stored or
//!   deleted response is refused; the dispatcher writes it in the same
//!   transaction as the request's outcome, at version 0).
//! - `input` is the whole conversation the answer saw: a continuation's
//!   input holds its previous response's input and output items before its
//!   own, so a chain is read by loading one aggregate.
//! - A deleted response stays deleted: it is never read, listed or
//!   continued again.
//! - A stored response's payload is at most [`MAX_STORED_BYTES`]; a larger
//!   one is not stored (checked by [`fits`] before the command).

use chrono::{DateTime, Utc};
use cqrs_es::event_sink::EventSink;
use cqrs_es::{Aggregate, DomainEvent};
use serde::{Deserialize, Serialize};
use serde_json::Value;
use uuid::Uuid;

/// The largest stored response (its input items and response object, as
/// JSON): 8 MiB.
pub const MAX_STORED_BYTES: usize = 8 * 1024 * 1024;

/// The aggregate id of the response answering request `request_id`.
pub fn response_id(request_id: Uuid) -> String {
    format!("resp_{}", request_id.simple())
}

/// Whether `input` and `response` together fit in [`MAX_STORED_BYTES`].
pub fn fits(input: &[Value], response: &Value) -> bool {
    let len = |v: serde_json::Result<Vec<u8>>| v.map_or(usize::MAX, |v| v.len());
    len(serde_json::to_vec(input)).saturating_add(len(serde_json::to_vec(response)))
        <= MAX_STORED_BYTES
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub enum ResponseCommand {
    StoreResponse {
        key_id: Uuid,
        /// The conversation's input items, the previous chain's first.
        input: Vec<Value>,
        /// The response object as the caller got it (output, model, usage,
        /// status, created_at, previous_response_id).
        response: Value,
        at: DateTime<Utc>,
    },
    DeleteResponse {
        actor: String,
        at: DateTime<Utc>,
    },
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub enum ResponseEvent {
    ResponseStored {
        key_id: Uuid,
        input: Vec<Value>,
        response: Value,
        at: DateTime<Utc>,
    },
    ResponseDeleted {
        actor: String,
        at: DateTime<Utc>,
    },
}

impl DomainEvent for ResponseEvent {
    fn event_type(&self) -> String {
        match self {
            ResponseEvent::ResponseStored { .. } => "ResponseStored",
            ResponseEvent::ResponseDeleted { .. } => "ResponseDeleted",
        }
        .to_string()
    }

    fn event_version(&self) -> String {
        crate::EVENT_VERSION.to_string()
    }
}

#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum ResponseError {
    #[error("the response is stored already")]
    AlreadyStored,
    #[error("no such response")]
    NotFound,
}

/// One stored response.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct ResponseAggregate {
    pub key_id: Option<Uuid>,
    pub input: Vec<Value>,
    pub response: Value,
    pub deleted: bool,
}

impl ResponseAggregate {
    /// Stored and not deleted.
    pub fn live(&self) -> bool {
        self.key_id.is_some() && !self.deleted
    }

    /// The live response, when `key_id` created it (for any other key it
    /// does not exist).
    pub fn owned_by(&self, key_id: Uuid) -> bool {
        self.live() && self.key_id == Some(key_id)
    }

    /// The response's output items.
    pub fn output(&self) -> &[Value] {
        self.response
            .get("output")
            .and_then(Value::as_array)
            .map_or(&[], Vec::as_slice)
    }
}

impl Aggregate for ResponseAggregate {
    const TYPE: &'static str = "response";
    type Command = ResponseCommand;
    type Event = ResponseEvent;
    type Error = ResponseError;
    type Services = ();

    async fn handle(
        &mut self,
        command: Self::Command,
        _: &(),
        sink: &EventSink<Self>,
    ) -> Result<(), Self::Error> {
        let event = match command {
            ResponseCommand::StoreResponse {
                key_id,
                input,
                response,
                at,
            } => {
                if self.key_id.is_some() {
                    return Err(ResponseError::AlreadyStored);
                }
                ResponseEvent::ResponseStored {
                    key_id,
                    input,
                    response,
                    at,
                }
            }
            ResponseCommand::DeleteResponse { actor, at } => {
                if !self.live() {
                    return Err(ResponseError::NotFound);
                }
                ResponseEvent::ResponseDeleted { actor, at }
            }
        };
        sink.write(event, self).await;
        Ok(())
    }

    fn apply(&mut self, event: Self::Event) {
        match event {
            ResponseEvent::ResponseStored {
                key_id,
                input,
                response,
                ..
            } => {
                self.key_id = Some(key_id);
                self.input = input;
                self.response = response;
            }
            ResponseEvent::ResponseDeleted { .. } => {
                self.deleted = true;
                // The conversation is gone with it.
                self.input = Vec::new();
                self.response = Value::Null;
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use cqrs_es::test::TestFramework;
    use serde_json::json;

    fn stored(key_id: Uuid, at: DateTime<Utc>) -> ResponseEvent {
        ResponseEvent::ResponseStored {
            key_id,
            input: vec![json!({"role": "user", "content": "hi"})],
            response: json!({"id": "resp_1", "output": []}),
            at,
        }
    }

    #[test]
    fn a_response_is_stored_once_and_deleted_once() {
        let (key, at) = (Uuid::new_v4(), Utc::now());
        let ResponseEvent::ResponseStored {
            input, response, ..
        } = stored(key, at)
        else {
            unreachable!()
        };
        TestFramework::<ResponseAggregate>::with(())
            .given(vec![stored(key, at)])
            .when(ResponseCommand::StoreResponse {
                key_id: key,
                input,
                response,
                at,
            })
            .then_expect_error(ResponseError::AlreadyStored);
        TestFramework::<ResponseAggregate>::with(())
            .given(vec![
                stored(key, at),
                ResponseEvent::ResponseDeleted {
                    actor: "k".into(),
                    at,
                },
            ])
            .when(ResponseCommand::DeleteResponse {
                actor: "k".into(),
                at,
            })
            .then_expect_error(ResponseError::NotFound);
    }

    #[test]
    fn only_the_creating_key_owns_a_live_response() {
        let (key, at) = (Uuid::new_v4(), Utc::now());
        let mut r = ResponseAggregate::default();
        r.apply(stored(key, at));
        assert!(r.owned_by(key));
        assert!(!r.owned_by(Uuid::new_v4()));
        r.apply(ResponseEvent::ResponseDeleted {
            actor: "k".into(),
            at,
        });
        assert!(!r.owned_by(key));
        assert!(r.input.is_empty());
    }

    #[test]
    fn an_oversized_response_does_not_fit() {
        let big = Value::String("x".repeat(MAX_STORED_BYTES));
        assert!(!fits(&[], &big));
        assert!(fits(&[json!("a")], &json!({"output": []})));
    }
}
