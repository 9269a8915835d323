//! The admin's "test connection" of a provider, asked of any dispatcher:
//! the ingress sends a [`ProviderTestRequest`] as a core-NATS request on
//! [`crate::Names::provider_test_subject`] (one dispatcher of the queue
//! group answers) and relays the [`ProviderTestReply`].
//!
//! Invariants: the request names the provider by id only, never a secret
//! (the dispatcher opens the sealed credentials itself, as for a real
//! call); a reply carries what the admin API answers, nothing more (an
//! upstream refusal is the gateway's own classified error, never the
//! provider's words).

use serde::{Deserialize, Serialize};
use uuid::Uuid;

/// Longest a dispatcher spends on one check (the provider's answer
/// included); the ingress waits [`PROVIDER_TEST_WAIT_SECS`].
pub const PROVIDER_TEST_TIMEOUT_SECS: u64 = 30;

/// How long the ingress waits for a dispatcher's reply: the check's own
/// limit and a margin, so a slow provider is reported as such by the
/// dispatcher rather than as a missing dispatcher.
pub const PROVIDER_TEST_WAIT_SECS: u64 = PROVIDER_TEST_TIMEOUT_SECS + 5;

/// Test this provider's endpoint and credential.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ProviderTestRequest {
    pub provider_id: Uuid,
    /// The admin API request's id, for the dispatcher's logs and spans.
    pub request_id: Uuid,
}

/// What the check found.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(tag = "outcome", rename_all = "snake_case")]
pub enum ProviderTestReply {
    /// The provider answered.
    Passed {
        provider: String,
        model: String,
        /// What was checked: `chat`, or the account read of a media-only
        /// provider (`account`, `user`, ...).
        check: String,
        latency_ms: u64,
    },
    /// The check failed: the status and OpenAI error JSON the admin gets.
    Failed {
        status: u16,
        body: serde_json::Value,
        #[serde(default, skip_serializing_if = "Option::is_none")]
        retry_after: Option<String>,
    },
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn replies_round_trip_as_tagged_json() {
        let passed = ProviderTestReply::Passed {
            provider: "p".into(),
            model: "m".into(),
            check: "chat".into(),
            latency_ms: 7,
        };
        let json = serde_json::to_value(&passed).unwrap();
        assert_eq!(json["outcome"], "passed");
        assert_eq!(
            serde_json::from_value::<ProviderTestReply>(json).unwrap(),
            passed
        );
        let failed = ProviderTestReply::Failed {
            status: 502,
            body: crate::wire::error_body("no", "upstream_error", None),
            retry_after: None,
        };
        let json = serde_json::to_value(&failed).unwrap();
        assert!(json.get("retry_after").is_none());
        assert_eq!(
            serde_json::from_value::<ProviderTestReply>(json).unwrap(),
            failed
        );
    }
}
