//! Request messages queued by an older ingress must stay readable by a newer
//! dispatcher (and the other way round for the fields both know): a message
//! sits in JetStream across an upgrade.

// Test code: a failed unwrap is a failed test.
#![allow(clippy::unwrap_used)]

use aigw_events::wire::{BodyObject, DispatchRequest, Endpoint};
use serde_json::Value;

fn fixtures() -> Value {
    serde_json::from_str(include_str!("fixtures/dispatch-requests.json")).unwrap()
}

#[test]
fn a_message_from_before_body_objects_reads_with_its_body() {
    let v = fixtures()["before_body_objects"].clone();
    let r: DispatchRequest = serde_json::from_value(v.clone()).unwrap();
    assert_eq!(r.body, v["body"]);
    assert_eq!(r.endpoint, Endpoint::Chat);
    assert_eq!(r.body_object, None);
    // Written back, it has the same shape (no new field appears).
    assert_eq!(serde_json::to_value(&r).unwrap(), v);
}

#[test]
fn a_message_with_a_body_object_names_it() {
    let v = fixtures()["with_body_object"].clone();
    let r: DispatchRequest = serde_json::from_value(v.clone()).unwrap();
    assert_eq!(r.body, Value::Null);
    assert_eq!(
        r.body_object,
        Some(BodyObject {
            name: "0199a1b2-c3d4-7e5f-8a9b-0c1d2e3f4a5c".into(),
            bytes: 9_000_000,
            raw: false,
        })
    );
    assert_eq!(serde_json::to_value(&r).unwrap(), v);
}
