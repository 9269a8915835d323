//! Rate limits and budgets shared by every replica, in a NATS KV bucket.
//!
//! Each key has one rate entry (two token buckets: requests and tokens per
//! minute) and one budget entry per budget period (spent so far, plus the
//! open reservations of requests still running). Every change is a
//! compare-and-set on the entry's revision, retried on conflict, so limits
//! hold exactly across any number of ingress and dispatcher replicas.
//!
//! Admission reserves a request's worst-case cost; the dispatcher settles the
//! reservation to the actual cost once the request's events are stored.
//! Settling is idempotent (by request id), so a redelivered request cannot
//! bill twice. A reservation whose request never reached a dispatcher
//! expires on its own.

use std::collections::{BTreeMap, HashMap};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use aigw_events::Names;
use async_nats::jetstream::{self, kv};
use serde::de::DeserializeOwned;
use serde::{Deserialize, Serialize};
use uuid::Uuid;

use crate::{Result, RuntimeError};

const MAX_CAS_RETRIES: usize = 200;

/// Token-bucket state of one key.
#[derive(Debug, Clone, Default, Serialize, Deserialize, PartialEq)]
pub struct RateState {
    /// Requests available now (capacity: the RPM limit).
    pub requests: f64,
    /// Tokens available now (capacity: the TPM limit); may go negative when
    /// actual usage exceeds the admission estimate.
    pub tokens: f64,
    /// When the buckets were last refilled (ms since the epoch).
    pub at_ms: i64,
}

/// The outcome of a rate check, with what the `x-ratelimit-*` headers show.
#[derive(Debug, Clone, PartialEq)]
pub struct RateDecision {
    pub allowed: bool,
    /// Seconds until the request would be allowed (when denied).
    pub retry_after_secs: u64,
    pub limit_requests: Option<u32>,
    pub remaining_requests: u64,
    pub reset_requests_ms: u64,
    pub limit_tokens: Option<u64>,
    pub remaining_tokens: u64,
    pub reset_tokens_ms: u64,
}

impl RateState {
    /// Refills both buckets for the time since `at_ms`, then takes one
    /// request and `tokens` tokens if both are available.
    pub fn admit(
        &mut self,
        rpm: Option<u32>,
        tpm: Option<u64>,
        tokens: u64,
        now_ms: i64,
    ) -> RateDecision {
        let rpm_cap = rpm.map(f64::from).unwrap_or(0.0);
        let tpm_cap = tpm.map(|t| t as f64).unwrap_or(0.0);
        if self.at_ms == 0 {
            self.requests = rpm_cap;
            self.tokens = tpm_cap;
        } else {
            let elapsed_min = ((now_ms - self.at_ms).max(0) as f64) / 60_000.0;
            self.requests = (self.requests + elapsed_min * rpm_cap).min(rpm_cap);
            self.tokens = (self.tokens + elapsed_min * tpm_cap).min(tpm_cap);
        }
        self.at_ms = now_ms;
        let want_tokens = (tokens as f64).min(tpm_cap);
        let requests_ok = rpm.is_none() || self.requests >= 1.0;
        let tokens_ok = tpm.is_none() || self.tokens >= want_tokens;
        let allowed = requests_ok && tokens_ok;
        if allowed {
            if rpm.is_some() {
                self.requests -= 1.0;
            }
            if tpm.is_some() {
                self.tokens -= tokens as f64;
            }
        }
        let ms_until = |have: f64, need: f64, cap: f64| -> u64 {
            if cap <= 0.0 || have >= need {
                0
            } else {
                ((need - have) / cap * 60_000.0).ceil() as u64
            }
        };
        let wait_ms =
            ms_until(self.requests, 1.0, rpm_cap).max(ms_until(self.tokens, want_tokens, tpm_cap));
        RateDecision {
            allowed,
            retry_after_secs: if allowed {
                0
            } else {
                wait_ms.div_ceil(1000).max(1)
            },
            limit_requests: rpm,
            remaining_requests: self.requests.max(0.0).floor() as u64,
            reset_requests_ms: ms_until(self.requests, rpm_cap, rpm_cap),
            limit_tokens: tpm,
            remaining_tokens: self.tokens.max(0.0).floor() as u64,
            reset_tokens_ms: ms_until(self.tokens, tpm_cap, tpm_cap),
        }
    }
}

/// A request's hold on a budget until it settles.
#[derive(Debug, Clone, Copy, Serialize, Deserialize, PartialEq, Eq)]
pub struct Hold {
    pub micros: i64,
    pub tokens: i64,
    pub expires_ms: i64,
}

/// One key's budget use in one period.
#[derive(Debug, Clone, Default, Serialize, Deserialize, PartialEq, Eq)]
pub struct BudgetState {
    pub spent_micros: i64,
    pub spent_tokens: i64,
    pub holds: BTreeMap<Uuid, Hold>,
    /// Holds that expired before their request settled (request -> when),
    /// kept for a day so a late settlement still counts, once.
    #[serde(default)]
    pub lapsed: BTreeMap<Uuid, i64>,
}

/// A key's budgets in one period.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Budget {
    /// Period id (see `BudgetPeriod::period_id`).
    pub period: String,
    pub micros: Option<i64>,
    pub tokens: Option<i64>,
}

/// Why a reservation was refused.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum BudgetRefusal {
    Spend,
    Tokens,
}

/// How long a lapsed hold can still be settled.
const LAPSED_MEMORY_MS: i64 = 24 * 3600 * 1000;

impl BudgetState {
    pub fn held(&self) -> (i64, i64) {
        self.holds
            .values()
            .fold((0, 0), |(m, t), h| (m + h.micros, t + h.tokens))
    }

    fn drop_expired(&mut self, now_ms: i64) {
        let expired: Vec<Uuid> = self
            .holds
            .iter()
            .filter(|(_, h)| h.expires_ms <= now_ms)
            .map(|(id, _)| *id)
            .collect();
        for id in expired {
            self.holds.remove(&id);
            self.lapsed.insert(id, now_ms);
        }
        self.lapsed.retain(|_, at| now_ms - *at < LAPSED_MEMORY_MS);
    }

    /// Holds `hold` for `request` if it fits the budgets.
    pub fn reserve(
        &mut self,
        request: Uuid,
        hold: Hold,
        budget_micros: Option<i64>,
        budget_tokens: Option<i64>,
        now_ms: i64,
    ) -> Result<(), BudgetRefusal> {
        self.drop_expired(now_ms);
        let (held_micros, held_tokens) = self.held();
        if let Some(budget) = budget_micros {
            let used = self.spent_micros + held_micros;
            if used >= budget || used + hold.micros > budget {
                return Err(BudgetRefusal::Spend);
            }
        }
        if let Some(budget) = budget_tokens {
            let used = self.spent_tokens + held_tokens;
            if used >= budget || used + hold.tokens > budget {
                return Err(BudgetRefusal::Tokens);
            }
        }
        self.holds.insert(request, hold);
        Ok(())
    }

    /// Replaces `request`'s hold by its actual cost. Only a request with an
    /// open (or lapsed) hold settles, and settling removes it, so a second
    /// settle of the same request changes nothing; the entry stays as small
    /// as the number of requests in flight.
    pub fn settle(&mut self, request: Uuid, micros: i64, tokens: i64, now_ms: i64) -> bool {
        self.drop_expired(now_ms);
        let held = self.holds.remove(&request).is_some() || self.lapsed.remove(&request).is_some();
        if held {
            self.spent_micros += micros;
            self.spent_tokens += tokens;
        }
        held
    }

    /// Frees `request`'s hold without spending anything.
    pub fn release(&mut self, request: Uuid) {
        self.holds.remove(&request);
    }
}

/// Shared limit state of every key.
#[derive(Clone)]
pub struct Limiter {
    kv: kv::Store,
    /// One slot per entry: updates from this process to the same entry take
    /// turns (so they never race each other), and the slot remembers the
    /// entry's last known revision and value, so an update is usually one
    /// compare-and-set round trip with no read. Only other replicas' writes
    /// can make it stale; the compare-and-set then fails and we re-read.
    slots: Arc<Mutex<HashMap<String, Slot>>>,
}

type Slot = Arc<tokio::sync::Mutex<Option<(u64, Vec<u8>)>>>;

fn rate_key(key_id: Uuid) -> String {
    format!("rate.{key_id}")
}

fn budget_key(key_id: Uuid, period: &str) -> String {
    format!("budget.{key_id}.{period}")
}

/// The metric label of an entry: `rate` or `budget`.
fn entry_kind(key: &str) -> &'static str {
    if key.starts_with("rate.") {
        "rate"
    } else {
        "budget"
    }
}

impl Limiter {
    /// Opens (creating if needed) the namespace's limits bucket.
    pub async fn open(js: &jetstream::Context, names: &Names) -> Result<Self> {
        let bucket = format!("{}_limits", names.namespace());
        let kv = crate::nats::ensure_kv(js, &bucket).await?;
        Ok(Self {
            kv,
            slots: Arc::default(),
        })
    }

    fn slot(&self, key: &str) -> Slot {
        self.slots
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .entry(key.to_string())
            .or_default()
            .clone()
    }

    /// Reads, changes and writes one entry with compare-and-set, retrying
    /// when another replica changed it in between.
    async fn update<T, R>(&self, key: &str, mut change: impl FnMut(&mut T) -> R) -> Result<R>
    where
        T: Serialize + DeserializeOwned + Default,
    {
        let kind = entry_kind(key);
        let queued = std::time::Instant::now();
        let slot = self.slot(key);
        let mut known = slot.lock().await;
        metrics::histogram!("aigw_limits_queue_seconds", "entry" => kind)
            .record(queued.elapsed().as_secs_f64());
        for attempt in 0..MAX_CAS_RETRIES {
            let (mut state, revision) = match known.take() {
                Some((revision, bytes)) => (
                    serde_json::from_slice::<T>(&bytes)
                        .map_err(|e| RuntimeError::Corrupt(format!("{key}: {e}")))?,
                    Some(revision),
                ),
                None => {
                    let read = std::time::Instant::now();
                    let entry = self
                        .kv
                        .entry(key)
                        .await
                        .map_err(|e| RuntimeError::Nats(format!("reading {key}: {e}")))?;
                    metrics::histogram!("aigw_limits_read_seconds", "entry" => kind)
                        .record(read.elapsed().as_secs_f64());
                    match &entry {
                        Some(e) if e.operation == kv::Operation::Put => (
                            serde_json::from_slice::<T>(&e.value)
                                .map_err(|e| RuntimeError::Corrupt(format!("{key}: {e}")))?,
                            Some(e.revision),
                        ),
                        _ => (T::default(), entry.as_ref().map(|e| e.revision)),
                    }
                }
            };
            let result = change(&mut state);
            let bytes =
                serde_json::to_vec(&state).map_err(|e| RuntimeError::Corrupt(e.to_string()))?;
            let write = std::time::Instant::now();
            let written = match revision {
                Some(rev) => self
                    .kv
                    .update(key, bytes.clone().into(), rev)
                    .await
                    .map_err(|e| {
                        matches!(e.kind(), kv::UpdateErrorKind::WrongLastRevision)
                            .then_some(())
                            .ok_or_else(|| e.to_string())
                    }),
                None => self
                    .kv
                    .create(key, bytes.clone().into())
                    .await
                    .map_err(|e| {
                        matches!(e.kind(), kv::CreateErrorKind::AlreadyExists)
                            .then_some(())
                            .ok_or_else(|| e.to_string())
                    }),
            };
            metrics::histogram!("aigw_limits_write_seconds", "entry" => kind)
                .record(write.elapsed().as_secs_f64());
            match written {
                Ok(revision) => {
                    *known = Some((revision, bytes));
                    return Ok(result);
                }
                Err(Ok(())) => {
                    metrics::counter!("aigw_limits_cas_conflicts_total", "entry" => kind)
                        .increment(1);
                    // Another replica wrote first: re-read and retry, backing
                    // off (with jitter) only if it keeps happening.
                    if attempt > 0 {
                        let jitter = rand::random::<u64>() % 1_000;
                        tokio::time::sleep(Duration::from_micros(100 + jitter)).await;
                    }
                }
                Err(Err(e)) => return Err(RuntimeError::Nats(format!("writing {key}: {e}"))),
            }
        }
        Err(RuntimeError::Nats(format!("{key}: too much contention")))
    }

    async fn read<T: DeserializeOwned + Default>(&self, key: &str) -> Result<T> {
        match self
            .kv
            .entry(key)
            .await
            .map_err(|e| RuntimeError::Nats(format!("reading {key}: {e}")))?
        {
            Some(e) if e.operation == kv::Operation::Put => serde_json::from_slice(&e.value)
                .map_err(|e| RuntimeError::Corrupt(format!("{key}: {e}"))),
            _ => Ok(T::default()),
        }
    }

    pub async fn admit_rate(
        &self,
        key_id: Uuid,
        rpm: Option<u32>,
        tpm: Option<u64>,
        tokens: u64,
        now_ms: i64,
    ) -> Result<RateDecision> {
        self.update(&rate_key(key_id), |s: &mut RateState| {
            s.admit(rpm, tpm, tokens, now_ms)
        })
        .await
    }

    /// Corrects the token bucket once actual usage is known.
    pub async fn correct_tokens(&self, key_id: Uuid, estimated: u64, actual: u64) -> Result<()> {
        if estimated == actual {
            return Ok(());
        }
        let delta = estimated as f64 - actual as f64;
        self.update(&rate_key(key_id), |s: &mut RateState| s.tokens += delta)
            .await
    }

    pub async fn reserve(
        &self,
        key_id: Uuid,
        budget: &Budget,
        request: Uuid,
        hold: Hold,
        now_ms: i64,
    ) -> Result<Result<(), BudgetRefusal>> {
        self.update(
            &budget_key(key_id, &budget.period),
            |s: &mut BudgetState| s.reserve(request, hold, budget.micros, budget.tokens, now_ms),
        )
        .await
    }

    pub async fn settle(
        &self,
        key_id: Uuid,
        period: &str,
        request: Uuid,
        micros: i64,
        tokens: i64,
        now_ms: i64,
    ) -> Result<bool> {
        self.update(&budget_key(key_id, period), |s: &mut BudgetState| {
            s.settle(request, micros, tokens, now_ms)
        })
        .await
    }

    pub async fn release(&self, key_id: Uuid, period: &str, request: Uuid) -> Result<()> {
        self.update(&budget_key(key_id, period), |s: &mut BudgetState| {
            s.release(request)
        })
        .await
    }

    pub async fn budget(&self, key_id: Uuid, period: &str) -> Result<BudgetState> {
        self.read(&budget_key(key_id, period)).await
    }

    pub async fn rate(&self, key_id: Uuid) -> Result<RateState> {
        self.read(&rate_key(key_id)).await
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn rpm_bucket_allows_a_burst_then_refills() {
        let mut s = RateState::default();
        for i in 0..30 {
            assert!(s.admit(Some(30), None, 0, 1_000).allowed, "request {i}");
        }
        let denied = s.admit(Some(30), None, 0, 1_000);
        assert!(!denied.allowed);
        assert_eq!(denied.retry_after_secs, 2);
        assert_eq!(denied.remaining_requests, 0);
        // 2 s later one request has refilled.
        assert!(s.admit(Some(30), None, 0, 3_000).allowed);
        assert!(!s.admit(Some(30), None, 0, 3_000).allowed);
    }

    #[test]
    fn tpm_bucket_takes_estimates_and_caps_big_requests() {
        let mut s = RateState::default();
        assert!(s.admit(None, Some(1000), 600, 1).allowed);
        assert!(!s.admit(None, Some(1000), 600, 1).allowed);
        assert!(s.admit(None, Some(1000), 400, 1).allowed);
        // A request larger than the whole limit is allowed on a full bucket only.
        let mut fresh = RateState::default();
        assert!(fresh.admit(None, Some(100), 5000, 1).allowed);
        assert!(!fresh.admit(None, Some(100), 1, 1).allowed);
    }

    #[test]
    fn budget_holds_never_exceed_the_budget() {
        let mut b = BudgetState::default();
        let hold = Hold {
            micros: 300,
            tokens: 0,
            expires_ms: 10_000,
        };
        let ids: Vec<Uuid> = (0..5).map(|_| Uuid::now_v7()).collect();
        let ok = ids
            .iter()
            .filter(|id| b.reserve(**id, hold, Some(1_000), None, 0).is_ok())
            .count();
        assert_eq!(ok, 3);
        // Settling for less frees room for another.
        assert!(b.settle(ids[0], 100, 10, 0));
        assert!(!b.settle(ids[0], 100, 10, 0), "settled twice");
        assert_eq!(b.spent_micros, 100);
        assert!(b.reserve(ids[3], hold, Some(1_000), None, 0).is_ok());
        assert_eq!(
            b.reserve(ids[4], hold, Some(1_000), None, 0),
            Err(BudgetRefusal::Spend)
        );
        // Expired holds stop counting...
        assert!(b.reserve(ids[4], hold, Some(1_000), None, 20_000).is_ok());
        // ...but a late settlement of one still counts, once.
        assert!(b.settle(ids[1], 50, 5, 20_001));
        assert!(!b.settle(ids[1], 50, 5, 20_002));
        assert_eq!(b.spent_micros, 150);
        // A request that never held anything does not settle.
        assert!(!b.settle(Uuid::now_v7(), 999, 9, 20_003));
        assert_eq!(b.spent_micros, 150);
    }

    #[test]
    fn an_exhausted_budget_refuses_even_free_requests() {
        let mut b = BudgetState {
            spent_micros: 1_000,
            ..BudgetState::default()
        };
        let free = Hold {
            micros: 0,
            tokens: 0,
            expires_ms: 1,
        };
        assert_eq!(
            b.reserve(Uuid::nil(), free, Some(1_000), None, 0),
            Err(BudgetRefusal::Spend)
        );
        assert_eq!(
            b.reserve(Uuid::nil(), free, None, Some(0), 0),
            Err(BudgetRefusal::Tokens)
        );
    }
}
