//! Stream, consumer and subject names, all under one namespace.
//!
//! `AIGW_NAMESPACE` prefixes everything aigw creates on NATS, so several
//! deployments or test runs can share one server without seeing each other.

/// The queue group of dispatchers answering "test connection" requests:
/// each request is answered once, by any replica.
pub const PROVIDER_TEST_QUEUE: &str = "dispatchers";

/// Every NATS name aigw uses, derived from one namespace.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Names {
    namespace: String,
}

/// Why a namespace was refused.
#[derive(Debug, thiserror::Error, PartialEq, Eq)]
#[error("namespace must be 1-32 characters of a-z, A-Z, 0-9, '_' or '-', got {0:?}")]
pub struct InvalidNamespace(pub String);

impl Names {
    /// A namespace is used in subjects and in stream names, so it is limited to
    /// characters valid in both.
    pub fn new(namespace: &str) -> Result<Self, InvalidNamespace> {
        let ok = !namespace.is_empty()
            && namespace.len() <= 32
            && namespace
                .chars()
                .all(|c| c.is_ascii_alphanumeric() || c == '_' || c == '-');
        if ok {
            Ok(Self {
                namespace: namespace.to_string(),
            })
        } else {
            Err(InvalidNamespace(namespace.to_string()))
        }
    }

    pub fn namespace(&self) -> &str {
        &self.namespace
    }

    /// The JetStream stream holding accepted requests until a dispatcher acks them.
    pub fn requests_stream(&self) -> String {
        format!("{}_requests", self.namespace)
    }

    /// Subject a synchronous chat request is published on.
    pub fn chat_subject(&self) -> String {
        format!("{}.requests.chat", self.namespace)
    }

    /// Wildcard covering every request subject.
    pub fn requests_subjects(&self) -> String {
        format!("{}.requests.>", self.namespace)
    }

    /// The object store holding uploaded audio until a dispatcher sent it on
    /// (request messages stay small; an upload may be 25 MB).
    pub fn media_bucket(&self) -> String {
        format!("{}_media", self.namespace)
    }

    /// The object store holding request bodies too large for one NATS
    /// message, from the ingress until the dispatcher recorded the request.
    pub fn bodies_bucket(&self) -> String {
        format!("{}_bodies", self.namespace)
    }

    /// The durable pull consumer shared by every dispatcher replica.
    pub fn dispatcher_consumer(&self) -> String {
        format!("{}_dispatcher", self.namespace)
    }

    /// The JetStream stream of queued jobs (background chat completions),
    /// consumed apart from synchronous requests so they never wait behind
    /// jobs.
    pub fn jobs_stream(&self) -> String {
        format!("{}_jobs", self.namespace)
    }

    /// Subject of one job's message (one message per job at a time).
    pub fn job_subject(&self, job_id: &str) -> String {
        format!("{}.jobs.{job_id}", self.namespace)
    }

    /// Wildcard covering every job subject.
    pub fn jobs_subjects(&self) -> String {
        format!("{}.jobs.*", self.namespace)
    }

    /// The durable pull consumer of jobs shared by every dispatcher replica.
    pub fn jobs_consumer(&self) -> String {
        format!("{}_job_runner", self.namespace)
    }

    /// A fresh subject the ingress listens on for one request's answer.
    pub fn reply_subject(&self, unique: &str) -> String {
        format!("{}.reply.{unique}", self.namespace)
    }

    /// Subject on which the ingress says a caller has gone away.
    pub fn cancel_subject(&self, request_id: &str) -> String {
        format!("{}.cancel.{request_id}", self.namespace)
    }

    /// Wildcard for every cancellation.
    pub fn cancel_wildcard(&self) -> String {
        format!("{}.cancel.*", self.namespace)
    }

    /// Subject announcing that a key or provider changed (payload: its id).
    pub fn registry_subject(&self, kind: &str) -> String {
        format!("{}.registry.{kind}", self.namespace)
    }

    /// Subject of the admin's "test connection" requests
    /// (`crate::provider_test`), answered by one dispatcher of
    /// [`PROVIDER_TEST_QUEUE`]. Outside `requests.>`: no stream keeps them.
    pub fn provider_test_subject(&self) -> String {
        format!("{}.providers.test", self.namespace)
    }

    /// Wildcard for every registry change.
    pub fn registry_wildcard(&self) -> String {
        format!("{}.registry.*", self.namespace)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names_are_prefixed() {
        let n = Names::new("t1").unwrap();
        assert_eq!(n.requests_stream(), "t1_requests");
        assert_eq!(n.chat_subject(), "t1.requests.chat");
        assert_eq!(n.cancel_subject("abc"), "t1.cancel.abc");
        assert_eq!(n.provider_test_subject(), "t1.providers.test");
    }

    #[test]
    fn rejects_bad_namespaces() {
        for bad in ["", "a.b", "a b", "a*", &"x".repeat(33)] {
            assert!(Names::new(bad).is_err(), "{bad:?} accepted");
        }
    }
}
