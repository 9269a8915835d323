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
use std::time::{Duration, Instant};

use aigw_events::Names;
use async_nats::jetstream::{self, kv};
use serde::de::DeserializeOwned;
use serde::{Deserialize, Serialize};
use tokio::sync::oneshot;
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

/// An entry's state, and the changes requests make to it.
///
/// A change is data, not a closure, so a batch of them can be applied again
/// to a fresher state when a compare-and-set loses to another replica.
pub trait Ledger: Serialize + DeserializeOwned + Default + Send + 'static {
    type Change: Send + Sync + 'static;
    type Outcome: Send + 'static;
    /// Applies one change (admitting or refusing it) and says what happened.
    fn apply(&mut self, change: &Self::Change) -> Self::Outcome;
}

/// Applies `changes` to `state` one after the other, in order: each one is
/// decided against the state the ones before it left.
pub fn apply_batch<T: Ledger>(state: &mut T, changes: &[T::Change]) -> Vec<T::Outcome> {
    changes.iter().map(|c| state.apply(c)).collect()
}

/// A change to a key's rate entry.
#[derive(Debug, Clone, PartialEq)]
pub enum RateChange {
    /// Take one request and `tokens` tokens if both are available.
    Admit {
        rpm: Option<u32>,
        tpm: Option<u64>,
        tokens: u64,
        now_ms: i64,
    },
    /// Give back (or take, when negative) tokens once actual usage is known.
    Correct { tokens: f64 },
}

impl Ledger for RateState {
    type Change = RateChange;
    /// The decision of an `Admit`, nothing for a `Correct`.
    type Outcome = Option<RateDecision>;

    fn apply(&mut self, change: &RateChange) -> Option<RateDecision> {
        match *change {
            RateChange::Admit {
                rpm,
                tpm,
                tokens,
                now_ms,
            } => Some(self.admit(rpm, tpm, tokens, now_ms)),
            RateChange::Correct { tokens } => {
                self.tokens += tokens;
                None
            }
        }
    }
}

/// A change to a key's budget entry in one period.
#[derive(Debug, Clone, PartialEq)]
pub enum BudgetChange {
    Reserve {
        request: Uuid,
        hold: Hold,
        budget_micros: Option<i64>,
        budget_tokens: Option<i64>,
        now_ms: i64,
    },
    Settle {
        request: Uuid,
        micros: i64,
        tokens: i64,
        now_ms: i64,
    },
    Release {
        request: Uuid,
    },
}

/// What a `BudgetChange` did.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum BudgetOutcome {
    Reserved(Result<(), BudgetRefusal>),
    /// Whether the request had a hold to settle (false: settled before).
    Settled(bool),
    Released,
}

impl Ledger for BudgetState {
    type Change = BudgetChange;
    type Outcome = BudgetOutcome;

    fn apply(&mut self, change: &BudgetChange) -> BudgetOutcome {
        match *change {
            BudgetChange::Reserve {
                request,
                hold,
                budget_micros,
                budget_tokens,
                now_ms,
            } => BudgetOutcome::Reserved(self.reserve(
                request,
                hold,
                budget_micros,
                budget_tokens,
                now_ms,
            )),
            BudgetChange::Settle {
                request,
                micros,
                tokens,
                now_ms,
            } => BudgetOutcome::Settled(self.settle(request, micros, tokens, now_ms)),
            BudgetChange::Release { request } => {
                self.release(request);
                BudgetOutcome::Released
            }
        }
    }
}

/// Shared limit state of every key.
///
/// Group commit: changes to one entry from this process queue up while a
/// compare-and-set on that entry is in flight, and the next compare-and-set
/// applies all of them at once (each decided in order, see `apply_batch`)
/// and answers every waiter. One round trip thus serves every request that
/// arrived during the previous one, and every change is still a
/// compare-and-set on the shared entry, so limits hold exactly across
/// replicas. Each entry also remembers its last written revision and value,
/// so a commit is one round trip with no read; only another replica's write
/// makes it stale (the compare-and-set then fails, and the batch is applied
/// again to a fresh read).
#[derive(Clone)]
pub struct Limiter {
    kv: kv::Store,
    rates: Entries<RateState>,
    budgets: Entries<BudgetState>,
}

type Entries<T> = Arc<Mutex<HashMap<String, Arc<Mutex<Entry<T>>>>>>;
type Waiter<T> = oneshot::Sender<Result<<T as Ledger>::Outcome, Failure>>;

/// Why a commit failed, told to every waiter of its batch.
#[derive(Debug, Clone)]
enum Failure {
    Nats(String),
    Corrupt(String),
}

impl From<Failure> for RuntimeError {
    fn from(f: Failure) -> Self {
        match f {
            Failure::Nats(e) => RuntimeError::Nats(e),
            Failure::Corrupt(e) => RuntimeError::Corrupt(e),
        }
    }
}

/// One entry's queue of changes waiting for the next commit.
struct Entry<T: Ledger> {
    waiting: Vec<(T::Change, Waiter<T>)>,
    /// A committer task is draining `waiting`.
    committing: bool,
    /// Last revision written (or read) by this process, with its value.
    known: Option<(u64, T)>,
}

impl<T: Ledger> Default for Entry<T> {
    fn default() -> Self {
        Self {
            waiting: Vec::new(),
            committing: false,
            known: None,
        }
    }
}

fn lock<T>(m: &Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    m.lock().unwrap_or_else(|e| e.into_inner())
}

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
            rates: Arc::default(),
            budgets: Arc::default(),
        })
    }

    /// Queues `change` for `key`'s next commit (starting a committer if none
    /// runs) and waits for its outcome. The committer is a task of its own,
    /// so a caller that gives up waiting never stalls the others.
    async fn submit<T: Ledger>(
        &self,
        entries: &Entries<T>,
        key: &str,
        change: T::Change,
    ) -> Result<T::Outcome> {
        let entry = lock(entries).entry(key.to_string()).or_default().clone();
        let (tx, rx) = oneshot::channel();
        let start = {
            let mut e = lock(&entry);
            e.waiting.push((change, tx));
            !std::mem::replace(&mut e.committing, true)
        };
        if start {
            tokio::spawn(drain(self.kv.clone(), key.to_string(), entry));
        }
        rx.await
            .map_err(|_| RuntimeError::Nats(format!("{key}: committer stopped")))?
            .map_err(RuntimeError::from)
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
        let change = RateChange::Admit {
            rpm,
            tpm,
            tokens,
            now_ms,
        };
        self.submit(&self.rates, &rate_key(key_id), change)
            .await?
            .ok_or_else(|| RuntimeError::Corrupt("an admission without a decision".into()))
    }

    /// Corrects the token bucket once actual usage is known.
    pub async fn correct_tokens(&self, key_id: Uuid, estimated: u64, actual: u64) -> Result<()> {
        if estimated == actual {
            return Ok(());
        }
        let tokens = estimated as f64 - actual as f64;
        self.submit(
            &self.rates,
            &rate_key(key_id),
            RateChange::Correct { tokens },
        )
        .await
        .map(|_| ())
    }

    pub async fn reserve(
        &self,
        key_id: Uuid,
        budget: &Budget,
        request: Uuid,
        hold: Hold,
        now_ms: i64,
    ) -> Result<Result<(), BudgetRefusal>> {
        let change = BudgetChange::Reserve {
            request,
            hold,
            budget_micros: budget.micros,
            budget_tokens: budget.tokens,
            now_ms,
        };
        match self
            .submit(&self.budgets, &budget_key(key_id, &budget.period), change)
            .await?
        {
            BudgetOutcome::Reserved(r) => Ok(r),
            other => Err(RuntimeError::Corrupt(format!(
                "a reservation answered {other:?}"
            ))),
        }
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
        let change = BudgetChange::Settle {
            request,
            micros,
            tokens,
            now_ms,
        };
        match self
            .submit(&self.budgets, &budget_key(key_id, period), change)
            .await?
        {
            BudgetOutcome::Settled(held) => Ok(held),
            other => Err(RuntimeError::Corrupt(format!(
                "a settlement answered {other:?}"
            ))),
        }
    }

    pub async fn release(&self, key_id: Uuid, period: &str, request: Uuid) -> Result<()> {
        self.submit(
            &self.budgets,
            &budget_key(key_id, period),
            BudgetChange::Release { request },
        )
        .await
        .map(|_| ())
    }

    pub async fn budget(&self, key_id: Uuid, period: &str) -> Result<BudgetState> {
        self.read(&budget_key(key_id, period)).await
    }

    pub async fn rate(&self, key_id: Uuid) -> Result<RateState> {
        self.read(&rate_key(key_id)).await
    }
}

/// Commits `entry`'s waiting changes, batch after batch, until none wait.
async fn drain<T: Ledger>(kv: kv::Store, key: String, entry: Arc<Mutex<Entry<T>>>) {
    let kind = entry_kind(&key);
    loop {
        let (batch, known) = {
            let mut e = lock(&entry);
            if e.waiting.is_empty() {
                e.committing = false;
                return;
            }
            (std::mem::take(&mut e.waiting), e.known.take())
        };
        metrics::histogram!("aigw_limits_batch_size", "entry" => kind).record(batch.len() as f64);
        let (changes, waiters): (Vec<_>, Vec<_>) = batch.into_iter().unzip();
        let (known, outcome) = commit(&kv, &key, known, &changes).await;
        lock(&entry).known = known;
        match outcome {
            Ok(outcomes) => {
                for (waiter, outcome) in waiters.into_iter().zip(outcomes) {
                    let _ = waiter.send(Ok(outcome));
                }
            }
            Err(e) => {
                for waiter in waiters {
                    let _ = waiter.send(Err(e.clone()));
                }
            }
        }
    }
}

/// Applies `changes` to the entry with one compare-and-set, re-reading and
/// applying them again when another replica wrote first. Returns what this
/// process now knows of the entry (nothing after an error).
async fn commit<T: Ledger>(
    kv: &kv::Store,
    key: &str,
    mut known: Option<(u64, T)>,
    changes: &[T::Change],
) -> (Option<(u64, T)>, Result<Vec<T::Outcome>, Failure>) {
    let kind = entry_kind(key);
    for attempt in 0..MAX_CAS_RETRIES {
        let (mut state, revision) = match known.take() {
            Some((revision, state)) => (state, Some(revision)),
            None => {
                let read = Instant::now();
                let entry = match kv.entry(key).await {
                    Ok(entry) => entry,
                    Err(e) => return (None, Err(Failure::Nats(format!("reading {key}: {e}")))),
                };
                metrics::histogram!("aigw_limits_read_seconds", "entry" => kind)
                    .record(read.elapsed().as_secs_f64());
                match &entry {
                    Some(e) if e.operation == kv::Operation::Put => {
                        match serde_json::from_slice::<T>(&e.value) {
                            Ok(state) => (state, Some(e.revision)),
                            Err(e) => return (None, Err(Failure::Corrupt(format!("{key}: {e}")))),
                        }
                    }
                    _ => (T::default(), entry.as_ref().map(|e| e.revision)),
                }
            }
        };
        let outcomes = apply_batch(&mut state, changes);
        let bytes = match serde_json::to_vec(&state) {
            Ok(bytes) => bytes,
            Err(e) => return (None, Err(Failure::Corrupt(format!("{key}: {e}")))),
        };
        let write = Instant::now();
        let written = match revision {
            Some(rev) => kv.update(key, bytes.into(), rev).await.map_err(|e| {
                matches!(e.kind(), kv::UpdateErrorKind::WrongLastRevision)
                    .then_some(())
                    .ok_or_else(|| e.to_string())
            }),
            None => kv.create(key, bytes.into()).await.map_err(|e| {
                matches!(e.kind(), kv::CreateErrorKind::AlreadyExists)
                    .then_some(())
                    .ok_or_else(|| e.to_string())
            }),
        };
        metrics::histogram!("aigw_limits_write_seconds", "entry" => kind)
            .record(write.elapsed().as_secs_f64());
        match written {
            Ok(revision) => return (Some((revision, state)), Ok(outcomes)),
            Err(Ok(())) => {
                metrics::counter!("aigw_limits_cas_conflicts_total", "entry" => kind).increment(1);
                // Another replica wrote first: re-read and retry, backing
                // off (with jitter) only if it keeps happening.
                if attempt > 0 {
                    let jitter = rand::random::<u64>() % 1_000;
                    tokio::time::sleep(Duration::from_micros(100 + jitter)).await;
                }
            }
            Err(Err(e)) => return (None, Err(Failure::Nats(format!("writing {key}: {e}")))),
        }
    }
    (
        None,
        Err(Failure::Nats(format!("{key}: too much contention"))),
    )
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
    #[test]
    fn a_rate_batch_is_decided_in_order_exactly() {
        let admit = |now_ms| RateChange::Admit {
            rpm: Some(3),
            tpm: Some(100),
            tokens: 30,
            now_ms,
        };
        let mut state = RateState::default();
        let batch = vec![
            admit(1_000),
            admit(1_000),
            admit(1_000),
            admit(1_000), // no request left
            RateChange::Correct { tokens: 30.0 },
            admit(1_000),  // still no request left
            admit(21_000), // 20 s later: one request refilled
            admit(21_000),
        ];
        let outcomes = apply_batch(&mut state, &batch);
        let allowed: Vec<Option<bool>> = outcomes
            .iter()
            .map(|o| o.as_ref().map(|d| d.allowed))
            .collect();
        assert_eq!(
            allowed,
            [
                Some(true),
                Some(true),
                Some(true),
                Some(false),
                None,
                Some(false),
                Some(true),
                Some(false)
            ]
        );
        let second = outcomes[1].as_ref().unwrap();
        assert_eq!(second.remaining_requests, 1);
        // Tokens: 100 - 3 x 30, + 30 (the correction), + 20 s of refill
        // (a third of 100), - 30 (the last admitted request).
        assert!((state.tokens - (40.0 + 100.0 / 3.0 - 30.0)).abs() < 1e-9);
        assert_eq!(state.at_ms, 21_000);
    }

    #[test]
    fn a_budget_batch_is_decided_in_order_exactly() {
        let hold = Hold {
            micros: 300,
            tokens: 10,
            expires_ms: 10_000,
        };
        let ids: Vec<Uuid> = (0..6).map(|_| Uuid::now_v7()).collect();
        let reserve = |request| BudgetChange::Reserve {
            request,
            hold,
            budget_micros: Some(1_000),
            budget_tokens: None,
            now_ms: 0,
        };
        let settle = |request, micros| BudgetChange::Settle {
            request,
            micros,
            tokens: 5,
            now_ms: 0,
        };
        let batch = vec![
            reserve(ids[0]),
            reserve(ids[1]),
            reserve(ids[2]),
            reserve(ids[3]), // 900 held: no room for 300 more
            settle(ids[0], 100),
            reserve(ids[3]),     // 100 spent + 600 held: room again
            settle(ids[0], 100), // settled before: no effect
            reserve(ids[4]),     // 100 + 900 held: full
            BudgetChange::Release { request: ids[1] },
            reserve(ids[5]),
        ];
        let mut state = BudgetState::default();
        let outcomes = apply_batch(&mut state, &batch);
        use BudgetOutcome::*;
        assert_eq!(
            outcomes,
            [
                Reserved(Ok(())),
                Reserved(Ok(())),
                Reserved(Ok(())),
                Reserved(Err(BudgetRefusal::Spend)),
                Settled(true),
                Reserved(Ok(())),
                Settled(false),
                Reserved(Err(BudgetRefusal::Spend)),
                Released,
                Reserved(Ok(())),
            ]
        );
        assert_eq!(state.spent_micros, 100);
        assert_eq!(state.held(), (900, 30));
        let mut held: Vec<Uuid> = state.holds.keys().copied().collect();
        held.sort();
        let mut expected = vec![ids[2], ids[3], ids[5]];
        expected.sort();
        assert_eq!(held, expected);
    }

    #[test]
    fn a_batch_decides_like_the_same_changes_one_at_a_time() {
        // Changes as they might queue up: admissions, corrections, and
        // reservations with settlements, in a pseudo-random mix.
        let mut rng = 0x2545_f491_4f6c_dd1d_u64;
        let mut next = move || {
            rng ^= rng << 13;
            rng ^= rng >> 7;
            rng ^= rng << 17;
            rng
        };
        let ids: Vec<Uuid> = (0..40).map(|_| Uuid::now_v7()).collect();
        let mut rate_changes = Vec::new();
        let mut budget_changes = Vec::new();
        for i in 0..400 {
            let now_ms = 1_000 + i * 37;
            rate_changes.push(match next() % 4 {
                0 => RateChange::Correct {
                    tokens: (next() % 200) as f64 - 100.0,
                },
                _ => RateChange::Admit {
                    rpm: Some(20),
                    tpm: Some(2_000),
                    tokens: next() % 300,
                    now_ms,
                },
            });
            let request = ids[(next() % 40) as usize];
            budget_changes.push(match next() % 3 {
                0 => BudgetChange::Settle {
                    request,
                    micros: (next() % 500) as i64,
                    tokens: 1,
                    now_ms,
                },
                1 => BudgetChange::Release { request },
                _ => BudgetChange::Reserve {
                    request,
                    hold: Hold {
                        micros: (next() % 700) as i64,
                        tokens: 1,
                        expires_ms: now_ms + 3_000,
                    },
                    budget_micros: Some(5_000),
                    budget_tokens: Some(300),
                    now_ms,
                },
            });
        }
        let (mut one_by_one, mut batched) = (RateState::default(), RateState::default());
        let expected: Vec<_> = rate_changes.iter().map(|c| one_by_one.apply(c)).collect();
        let mut got = Vec::new();
        for chunk in rate_changes.chunks(7) {
            got.extend(apply_batch(&mut batched, chunk));
        }
        assert_eq!(got, expected);
        assert_eq!(batched, one_by_one);
        assert!(expected.iter().flatten().any(|d| !d.allowed));

        let (mut one_by_one, mut batched) = (BudgetState::default(), BudgetState::default());
        let expected: Vec<_> = budget_changes.iter().map(|c| one_by_one.apply(c)).collect();
        let got = apply_batch(&mut batched, &budget_changes);
        assert_eq!(got, expected);
        assert_eq!(batched, one_by_one);
        assert!(expected.contains(&BudgetOutcome::Reserved(Err(BudgetRefusal::Spend))));
        assert!(expected.contains(&BudgetOutcome::Settled(true)));
    }
}
