//! Stored events must stay readable forever: every fixture of every version
//! deserializes into today's types.

use aigw_events::{KeyEvent, ProviderEvent, RequestEvent};
use serde_json::Value;

#[test]
fn version_1_0_events_still_deserialize() {
    let text = include_str!("fixtures/v1.0.json");
    let all: Value = serde_json::from_str(text).unwrap();
    let read = |name: &str| all[name].as_array().unwrap().clone();
    for v in read("key") {
        serde_json::from_value::<KeyEvent>(v.clone()).unwrap_or_else(|e| panic!("{v}: {e}"));
    }
    for v in read("provider") {
        serde_json::from_value::<ProviderEvent>(v.clone()).unwrap_or_else(|e| panic!("{v}: {e}"));
    }
    let requests = read("request");
    assert_eq!(requests.len(), 6);
    for v in requests {
        serde_json::from_value::<RequestEvent>(v.clone()).unwrap_or_else(|e| panic!("{v}: {e}"));
    }
}
