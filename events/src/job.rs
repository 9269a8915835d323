//! The job aggregate: a chat completion submitted to run in the background.
//!
//! A job is submitted by the ingress, started (once per JetStream delivery)
//! and finished by a dispatcher, possibly cancelled by its caller, and its
//! webhook deliveries are recorded one attempt at a time. The request it runs
//! is an ordinary request aggregate with the job's id, so billing and stats
//! see it like any other call. A run that ends after its job was cancelled
//! leaves the job cancelled but records what it cost (`JobRunBilled`), so
//! the job shows the cost its request was billed.

use std::collections::BTreeMap;

use chrono::{DateTime, Utc};
use cqrs_es::event_sink::EventSink;
use cqrs_es::{Aggregate, DomainEvent};
use serde::{Deserialize, Serialize};
use uuid::Uuid;

use crate::Usage;

/// Where a job is in its life.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum JobStatus {
    #[default]
    Queued,
    Running,
    Succeeded,
    Failed,
    Cancelled,
}

impl JobStatus {
    pub fn as_str(self) -> &'static str {
        match self {
            JobStatus::Queued => "queued",
            JobStatus::Running => "running",
            JobStatus::Succeeded => "succeeded",
            JobStatus::Failed => "failed",
            JobStatus::Cancelled => "cancelled",
        }
    }

    pub fn parse(s: &str) -> Option<Self> {
        Some(match s {
            "queued" => JobStatus::Queued,
            "running" => JobStatus::Running,
            "succeeded" => JobStatus::Succeeded,
            "failed" => JobStatus::Failed,
            "cancelled" => JobStatus::Cancelled,
            _ => return None,
        })
    }

    /// Succeeded, failed or cancelled: nothing will run any more.
    pub fn is_final(self) -> bool {
        matches!(
            self,
            JobStatus::Succeeded | JobStatus::Failed | JobStatus::Cancelled
        )
    }
}

/// What the caller submitted, besides the chat body (which travels in the
/// queue message, not in the event history).
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct JobSpec {
    pub key_id: Uuid,
    pub model: String,
    #[serde(default)]
    pub webhook_url: Option<String>,
    #[serde(default)]
    pub metadata: BTreeMap<String, String>,
    #[serde(default)]
    pub idempotency_key: Option<String>,
}

/// How a job's run ended.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(tag = "status", rename_all = "snake_case")]
pub enum JobResult {
    Succeeded {
        /// The chat completion, as the caller would have received it.
        response: serde_json::Value,
        provider: Option<String>,
        usage: Usage,
        cost_micros: Option<i64>,
    },
    Failed {
        /// The HTTP status a synchronous call would have got.
        http_status: u16,
        /// OpenAI's error JSON.
        error: serde_json::Value,
        usage: Usage,
        cost_micros: Option<i64>,
    },
}

/// What a run that ended after its job was cancelled used and cost (its
/// request is billed like any other: the provider did the work).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub struct RunCost {
    pub usage: Usage,
    /// Micro-dollars; `None`: the model has no price.
    pub cost_micros: Option<i64>,
}

impl JobResult {
    /// The run's usage and cost.
    pub fn cost(&self) -> RunCost {
        match self {
            JobResult::Succeeded {
                usage, cost_micros, ..
            }
            | JobResult::Failed {
                usage, cost_micros, ..
            } => RunCost {
                usage: *usage,
                cost_micros: *cost_micros,
            },
        }
    }
}

/// One webhook delivery attempt.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Delivery {
    pub attempt: u32,
    /// The receiver's HTTP status, if it answered.
    pub http_status: Option<u16>,
    pub error: Option<String>,
    pub delivered: bool,
    pub at: DateTime<Utc>,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub enum JobCommand {
    Submit {
        spec: JobSpec,
        at: DateTime<Utc>,
    },
    /// A dispatcher begins a run (one per delivery of the job's message).
    Start {
        delivery: u64,
        at: DateTime<Utc>,
    },
    Finish {
        result: JobResult,
        at: DateTime<Utc>,
    },
    Cancel {
        actor: String,
        at: DateTime<Utc>,
    },
    /// Record a webhook attempt; `last` gives up after a failed one.
    RecordDelivery {
        delivery: Delivery,
        last: bool,
    },
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub enum JobEvent {
    JobSubmitted {
        spec: JobSpec,
        at: DateTime<Utc>,
    },
    JobStarted {
        delivery: u64,
        at: DateTime<Utc>,
    },
    JobFinished {
        result: JobResult,
        at: DateTime<Utc>,
    },
    JobCancelled {
        actor: String,
        at: DateTime<Utc>,
    },
    /// A run of a cancelled job ended: the job stays cancelled, with the
    /// cost of that run.
    JobRunBilled {
        cost: RunCost,
        at: DateTime<Utc>,
    },
    WebhookAttempted(Delivery),
    WebhookAbandoned {
        attempts: u32,
        at: DateTime<Utc>,
    },
}

impl DomainEvent for JobEvent {
    fn event_type(&self) -> String {
        match self {
            JobEvent::JobSubmitted { .. } => "JobSubmitted",
            JobEvent::JobStarted { .. } => "JobStarted",
            JobEvent::JobFinished { .. } => "JobFinished",
            JobEvent::JobCancelled { .. } => "JobCancelled",
            JobEvent::JobRunBilled { .. } => "JobRunBilled",
            JobEvent::WebhookAttempted(_) => "WebhookAttempted",
            JobEvent::WebhookAbandoned { .. } => "WebhookAbandoned",
        }
        .to_string()
    }

    fn event_version(&self) -> String {
        crate::EVENT_VERSION.to_string()
    }
}

#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum JobError {
    #[error("the job already exists")]
    AlreadySubmitted,
    #[error("no such job")]
    NotSubmitted,
    #[error("the job has already {0}")]
    AlreadyFinal(&'static str),
    #[error("the job has no webhook to deliver")]
    NoWebhook,
}

/// Where a job's webhook stands.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum WebhookStatus {
    #[default]
    Pending,
    Delivered,
    Failed,
}

#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct WebhookState {
    pub status: WebhookStatus,
    pub attempts: u32,
    pub last: Option<Delivery>,
}

/// A job folded from its events; also what the `jobs` table keeps.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct JobAggregate {
    pub spec: Option<JobSpec>,
    pub status: JobStatus,
    pub created_at: Option<DateTime<Utc>>,
    pub started_at: Option<DateTime<Utc>>,
    pub finished_at: Option<DateTime<Utc>>,
    /// Runs begun (deliveries of the job's message to a dispatcher).
    pub runs: u64,
    pub result: Option<JobResult>,
    pub cancelled_by: Option<String>,
    /// The cost of the run that ended after the job was cancelled, if one did.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub cancelled_run: Option<RunCost>,
    /// Present when the job has a webhook.
    pub webhook: Option<WebhookState>,
}

impl JobAggregate {
    /// Whether a finished job still owes its webhook a delivery.
    pub fn webhook_due(&self) -> bool {
        self.status.is_final()
            && self
                .webhook
                .as_ref()
                .is_some_and(|w| w.status == WebhookStatus::Pending)
    }
}

impl Aggregate for JobAggregate {
    const TYPE: &'static str = "job";
    type Command = JobCommand;
    type Event = JobEvent;
    type Error = JobError;
    type Services = ();

    async fn handle(
        &mut self,
        command: Self::Command,
        _: &(),
        sink: &EventSink<Self>,
    ) -> Result<(), Self::Error> {
        if let JobCommand::Submit { spec, at } = command {
            if self.spec.is_some() {
                return Err(JobError::AlreadySubmitted);
            }
            sink.write(JobEvent::JobSubmitted { spec, at }, self).await;
            return Ok(());
        }
        if self.spec.is_none() {
            return Err(JobError::NotSubmitted);
        }
        match command {
            JobCommand::Submit { .. } => {}
            JobCommand::Start { delivery, at } => {
                if self.status.is_final() {
                    return Err(JobError::AlreadyFinal(self.status.as_str()));
                }
                sink.write(JobEvent::JobStarted { delivery, at }, self)
                    .await;
            }
            JobCommand::Finish { result, at } => match self.status {
                JobStatus::Queued | JobStatus::Running => {
                    sink.write(JobEvent::JobFinished { result, at }, self).await;
                }
                // Cancelled while it ran: the run's request is still billed,
                // and the job stays cancelled, showing that cost (once).
                JobStatus::Cancelled => {
                    if self.cancelled_run.is_none() {
                        let cost = result.cost();
                        sink.write(JobEvent::JobRunBilled { cost, at }, self).await;
                    }
                }
                done => return Err(JobError::AlreadyFinal(done.as_str())),
            },
            JobCommand::Cancel { actor, at } => match self.status {
                JobStatus::Queued | JobStatus::Running => {
                    sink.write(JobEvent::JobCancelled { actor, at }, self).await;
                }
                JobStatus::Cancelled => {}
                done => return Err(JobError::AlreadyFinal(done.as_str())),
            },
            JobCommand::RecordDelivery { delivery, last } => {
                if !self.webhook_due() {
                    return Err(JobError::NoWebhook);
                }
                let at = delivery.at;
                let delivered = delivery.delivered;
                sink.write(JobEvent::WebhookAttempted(delivery), self).await;
                if last && !delivered {
                    let attempts = self.webhook.as_ref().map_or(0, |w| w.attempts);
                    sink.write(JobEvent::WebhookAbandoned { attempts, at }, self)
                        .await;
                }
            }
        }
        Ok(())
    }

    fn apply(&mut self, event: Self::Event) {
        match event {
            JobEvent::JobSubmitted { spec, at } => {
                if spec.webhook_url.is_some() {
                    self.webhook = Some(WebhookState::default());
                }
                self.spec = Some(spec);
                self.created_at = Some(at);
                self.status = JobStatus::Queued;
            }
            JobEvent::JobStarted { at, .. } => {
                self.runs += 1;
                self.started_at.get_or_insert(at);
                self.status = JobStatus::Running;
            }
            JobEvent::JobFinished { result, at } => {
                self.status = match result {
                    JobResult::Succeeded { .. } => JobStatus::Succeeded,
                    JobResult::Failed { .. } => JobStatus::Failed,
                };
                self.result = Some(result);
                self.finished_at = Some(at);
            }
            JobEvent::JobCancelled { actor, at } => {
                self.status = JobStatus::Cancelled;
                self.cancelled_by = Some(actor);
                self.finished_at = Some(at);
            }
            JobEvent::JobRunBilled { cost, .. } => {
                self.cancelled_run = Some(cost);
            }
            JobEvent::WebhookAttempted(delivery) => {
                if let Some(w) = &mut self.webhook {
                    w.attempts += 1;
                    if delivery.delivered {
                        w.status = WebhookStatus::Delivered;
                    }
                    w.last = Some(delivery);
                }
            }
            JobEvent::WebhookAbandoned { .. } => {
                if let Some(w) = &mut self.webhook {
                    w.status = WebhookStatus::Failed;
                }
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use cqrs_es::test::TestFramework;
    use serde_json::json;

    type Jobs = TestFramework<JobAggregate>;

    fn now() -> DateTime<Utc> {
        DateTime::from_timestamp(1_700_000_000, 0).unwrap_or_default()
    }

    fn submitted(webhook: bool) -> JobEvent {
        JobEvent::JobSubmitted {
            spec: JobSpec {
                key_id: Uuid::nil(),
                model: "m".into(),
                webhook_url: webhook.then(|| "http://hook".into()),
                ..Default::default()
            },
            at: now(),
        }
    }

    fn succeeded() -> JobResult {
        JobResult::Succeeded {
            response: json!({"id": "x"}),
            provider: Some("p".into()),
            usage: Usage::default(),
            cost_micros: Some(0),
        }
    }

    fn cancel() -> JobCommand {
        JobCommand::Cancel {
            actor: "key".into(),
            at: now(),
        }
    }

    #[test]
    fn runs_then_finishes_once() {
        Jobs::with(())
            .given(vec![
                submitted(false),
                JobEvent::JobStarted {
                    delivery: 1,
                    at: now(),
                },
            ])
            .when(JobCommand::Finish {
                result: succeeded(),
                at: now(),
            })
            .then_expect_events(vec![JobEvent::JobFinished {
                result: succeeded(),
                at: now(),
            }]);
        Jobs::with(())
            .given(vec![
                submitted(false),
                JobEvent::JobFinished {
                    result: succeeded(),
                    at: now(),
                },
            ])
            .when(JobCommand::Finish {
                result: succeeded(),
                at: now(),
            })
            .then_expect_error(JobError::AlreadyFinal("succeeded"));
        Jobs::with(())
            .given(vec![
                submitted(false),
                JobEvent::JobFinished {
                    result: succeeded(),
                    at: now(),
                },
            ])
            .when(JobCommand::Start {
                delivery: 2,
                at: now(),
            })
            .then_expect_error(JobError::AlreadyFinal("succeeded"));
    }

    #[test]
    fn cancellation() {
        Jobs::with(())
            .given(vec![submitted(false)])
            .when(cancel())
            .then_expect_events(vec![JobEvent::JobCancelled {
                actor: "key".into(),
                at: now(),
            }]);
        // Twice is harmless; after success it is refused.
        Jobs::with(())
            .given(vec![
                submitted(false),
                JobEvent::JobCancelled {
                    actor: "key".into(),
                    at: now(),
                },
            ])
            .when(cancel())
            .then_expect_events(vec![]);
        Jobs::with(())
            .given(vec![
                submitted(false),
                JobEvent::JobFinished {
                    result: succeeded(),
                    at: now(),
                },
            ])
            .when(cancel())
            .then_expect_error(JobError::AlreadyFinal("succeeded"));
        // A run that ends after the cancellation leaves the job cancelled,
        // with what the run cost, recorded once.
        let cancelled = JobEvent::JobCancelled {
            actor: "key".into(),
            at: now(),
        };
        let ran = JobResult::Failed {
            http_status: 499,
            error: json!({"error": {"message": "the caller went away"}}),
            usage: Usage {
                prompt_tokens: 10,
                completion_tokens: 20,
                ..Default::default()
            },
            cost_micros: Some(50),
        };
        let billed = JobEvent::JobRunBilled {
            cost: ran.cost(),
            at: now(),
        };
        Jobs::with(())
            .given(vec![submitted(false), cancelled.clone()])
            .when(JobCommand::Finish {
                result: ran.clone(),
                at: now(),
            })
            .then_expect_events(vec![billed.clone()]);
        Jobs::with(())
            .given(vec![submitted(false), cancelled.clone(), billed.clone()])
            .when(JobCommand::Finish {
                result: ran,
                at: now(),
            })
            .then_expect_events(vec![]);
        let mut job = JobAggregate::default();
        for e in [submitted(false), cancelled, billed] {
            job.apply(e);
        }
        assert_eq!(job.status, JobStatus::Cancelled);
        assert_eq!(
            job.cancelled_run.map(|c| (c.usage.total(), c.cost_micros)),
            Some((30, Some(50)))
        );
    }

    #[test]
    fn webhook_attempts_until_delivered_or_abandoned() {
        let attempt = |n: u32, delivered: bool| Delivery {
            attempt: n,
            http_status: Some(if delivered { 200 } else { 500 }),
            error: None,
            delivered,
            at: now(),
        };
        let finished = JobEvent::JobFinished {
            result: succeeded(),
            at: now(),
        };
        Jobs::with(())
            .given(vec![submitted(false), finished.clone()])
            .when(JobCommand::RecordDelivery {
                delivery: attempt(1, true),
                last: false,
            })
            .then_expect_error(JobError::NoWebhook);
        Jobs::with(())
            .given(vec![
                submitted(true),
                finished.clone(),
                JobEvent::WebhookAttempted(attempt(1, false)),
            ])
            .when(JobCommand::RecordDelivery {
                delivery: attempt(2, false),
                last: true,
            })
            .then_expect_events(vec![
                JobEvent::WebhookAttempted(attempt(2, false)),
                JobEvent::WebhookAbandoned {
                    attempts: 2,
                    at: now(),
                },
            ]);
        Jobs::with(())
            .given(vec![
                submitted(true),
                finished,
                JobEvent::WebhookAttempted(attempt(1, true)),
            ])
            .when(JobCommand::RecordDelivery {
                delivery: attempt(2, true),
                last: false,
            })
            .then_expect_error(JobError::NoWebhook);
    }

    #[test]
    fn folds_into_the_view() {
        let mut job = JobAggregate::default();
        job.apply(submitted(true));
        assert_eq!(job.status, JobStatus::Queued);
        job.apply(JobEvent::JobStarted {
            delivery: 1,
            at: now(),
        });
        job.apply(JobEvent::JobStarted {
            delivery: 2,
            at: now(),
        });
        assert_eq!((job.status, job.runs), (JobStatus::Running, 2));
        job.apply(JobEvent::JobFinished {
            result: succeeded(),
            at: now(),
        });
        assert_eq!(job.status, JobStatus::Succeeded);
        assert!(job.webhook_due());
    }
}
