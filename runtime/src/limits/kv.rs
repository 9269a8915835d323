//! The limits bucket: every key's rate, budget and concurrency entries in a
//! NATS KV bucket, changed with compare-and-set and group commit (see
//! `Limiter`), and the API admission and settlement use.

use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use aigw_events::Names;
use aigw_events::wire::LeaseRef;
use async_nats::jetstream::{self, kv};
use tokio::sync::oneshot;
use uuid::Uuid;

use super::*;
use crate::{Result, RuntimeError};

const MAX_CAS_RETRIES: usize = 200;

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
    pub(super) kv: kv::Store,
    pub(super) rates: Entries<RateState>,
    pub(super) budgets: Entries<BudgetState>,
    /// Per-key concurrency entries (see `concurrency`).
    pub(super) slots: Entries<InFlight>,
    /// This replica's admission leases (`None`: every admission is a
    /// compare-and-set on the shared entry).
    pub(super) leases: Option<Arc<leases::Local>>,
    /// How long a commit waits for more changes to join its batch.
    pub(super) linger: Duration,
    /// Where a missing budget entry's spend so far is read from.
    pub(super) spend_log: Option<SpendLog>,
}

pub(super) type Entries<T> = Arc<Mutex<HashMap<String, Arc<Mutex<Entry<T>>>>>>;
pub(super) type Waiter<T> = oneshot::Sender<Result<<T as Ledger>::Outcome, Failure>>;

/// Why a commit failed, told to every waiter of its batch.
#[derive(Debug, Clone)]
pub(super) enum Failure {
    Nats(String),
    Corrupt(String),
    Database(String),
}

impl From<Failure> for RuntimeError {
    fn from(f: Failure) -> Self {
        match f {
            Failure::Nats(e) => RuntimeError::Nats(e),
            Failure::Corrupt(e) => RuntimeError::Corrupt(e),
            Failure::Database(e) => RuntimeError::DatabaseRead(e),
        }
    }
}

/// One entry's queue of changes waiting for the next commit.
pub(super) struct Entry<T: Ledger> {
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

pub(super) fn lock<T>(m: &Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    m.lock().unwrap_or_else(|e| e.into_inner())
}

pub(super) fn rate_key(owner: Owner) -> String {
    format!("rate.{owner}")
}

pub(super) fn budget_key(owner: Owner, period: &str) -> String {
    format!("budget.{owner}.{period}")
}

/// Compare-and-sets that lost to another writer, by `entry` (rate or
/// budget).
const CAS_CONFLICTS: &str = "aigw_limits_cas_conflicts_total";

/// The metric label of an entry: `rate`, `concurrency` or `budget`.
pub(super) fn entry_kind(key: &str) -> &'static str {
    if key.starts_with("rate.") {
        "rate"
    } else if key.starts_with("concurrency.") {
        "concurrency"
    } else {
        "budget"
    }
}

impl Limiter {
    /// Opens (creating if needed, with `replicas` replicas) the namespace's
    /// limits bucket.
    pub async fn open(js: &jetstream::Context, names: &Names, replicas: usize) -> Result<Self> {
        let bucket = format!("{}_limits", names.namespace());
        let kv = crate::nats::ensure_kv(js, &bucket, replicas).await?;
        // At 0 from the start, so the first conflict is an increase.
        for kind in ["rate", "budget"] {
            metrics::counter!(CAS_CONFLICTS, "entry" => kind).increment(0);
        }
        Ok(Self {
            kv,
            rates: Arc::default(),
            budgets: Arc::default(),
            slots: Arc::default(),
            leases: None,
            linger: Duration::ZERO,
            spend_log: None,
        })
    }

    /// Starts missing budget entries from the request log (see `SpendLog`).
    pub fn with_spend_log(mut self, log: SpendLog) -> Self {
        self.spend_log = Some(log);
        self
    }

    /// Lets each commit wait `linger` for more changes to join its batch:
    /// fewer writes to the limits bucket for changes nobody waits on
    /// urgently (the dispatcher's settlements, which only delay its acks).
    pub fn with_linger(mut self, linger: Duration) -> Self {
        self.linger = linger;
        self
    }

    /// Lets this replica admit from leases: slices of a key's limits it
    /// takes from the shared entries in the background and admits from in
    /// memory, without a NATS round trip (see `leases`). Call it on the
    /// replicas that admit requests (the ingress), once.
    pub fn with_leases(mut self) -> Self {
        if self.leases.is_none() {
            let local = Arc::new(leases::Local::default());
            leases::sweep(self.clone(), Arc::downgrade(&local));
            self.leases = Some(local);
        }
        self
    }

    /// How many rate and budget checks this replica decided from its leases.
    pub fn lease_admissions(&self) -> u64 {
        self.leases
            .as_ref()
            .map_or(0, |l| l.admitted.load(std::sync::atomic::Ordering::Relaxed))
    }

    /// Queues `change` for `key`'s next commit (starting a committer if none
    /// runs) and waits for its outcome. The committer is a task of its own,
    /// so a caller that gives up waiting never stalls the others.
    pub(super) async fn submit<T: Ledger>(
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
            tokio::spawn(drain(
                self.kv.clone(),
                key.to_string(),
                entry,
                self.linger,
                self.spend_log.clone(),
            ));
        }
        rx.await
            .map_err(|_| RuntimeError::Nats(format!("{key}: committer stopped")))?
            .map_err(RuntimeError::from)
    }

    /// An entry as stored; a missing budget entry as it would start (see
    /// `SpendLog`).
    pub(super) async fn read<T: Ledger>(&self, key: &str) -> Result<T> {
        match self
            .kv
            .entry(key)
            .await
            .map_err(|e| RuntimeError::Nats(format!("reading {key}: {e}")))?
        {
            Some(e) if e.operation == kv::Operation::Put => serde_json::from_slice(&e.value)
                .map_err(|e| RuntimeError::Corrupt(format!("{key}: {e}"))),
            _ => {
                let mut state = T::default();
                if let Some(log) = self
                    .spend_log
                    .as_ref()
                    .filter(|_| entry_kind(key) == "budget")
                {
                    state.floor(log.spent(key).await.map_err(RuntimeError::DatabaseRead)?);
                }
                Ok(state)
            }
        }
    }

    pub async fn admit_rate(
        &self,
        key_id: impl Into<Owner>,
        rpm: Option<u32>,
        tpm: Option<u64>,
        tokens: u64,
        now_ms: i64,
    ) -> Result<RateDecision> {
        let key_id: Owner = key_id.into();
        if let Some(local) = &self.leases
            && let Some(decision) = self.rate_from_lease(local, key_id, rpm, tpm, tokens)
        {
            return Ok(decision);
        }
        let change = RateChange::Admit {
            rpm,
            tpm,
            tokens,
            now_ms,
        };
        metrics::counter!("aigw_limits_admissions_total", "entry" => "rate", "from" => "shared")
            .increment(1);
        match self.submit(&self.rates, &rate_key(key_id), change).await? {
            RateOutcome::Decided(decision) => Ok(decision),
            other => Err(RuntimeError::Corrupt(format!(
                "an admission answered {other:?}"
            ))),
        }
    }

    /// Corrects the token bucket once actual usage is known.
    pub async fn correct_tokens(
        &self,
        key_id: impl Into<Owner>,
        estimated: u64,
        actual: u64,
    ) -> Result<()> {
        let key_id: Owner = key_id.into();
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

    /// Holds `hold` on the key's budgets for `request`. The hold comes from
    /// this replica's lease when it has room (the answer then names the
    /// lease, which settling needs), else from the shared entry.
    pub async fn reserve(
        &self,
        key_id: impl Into<Owner>,
        budget: &Budget,
        request: Uuid,
        hold: Hold,
        now_ms: i64,
    ) -> Result<Result<Option<LeaseRef>, BudgetRefusal>> {
        let key_id: Owner = key_id.into();
        if let Some(local) = &self.leases
            && let Some(from) = self.budget_from_lease(local, key_id, budget, hold)
        {
            return Ok(Ok(Some(from)));
        }
        metrics::counter!("aigw_limits_admissions_total", "entry" => "budget", "from" => "shared")
            .increment(1);
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
            BudgetOutcome::Reserved(r) => Ok(r.map(|()| None)),
            other => Err(RuntimeError::Corrupt(format!(
                "a reservation answered {other:?}"
            ))),
        }
    }

    /// Settles `request`'s hold to its actual cost, once (see
    /// `BudgetState::settle`); answers whether this call settled it.
    #[allow(clippy::too_many_arguments)]
    pub async fn settle(
        &self,
        key_id: impl Into<Owner>,
        period: &str,
        request: Uuid,
        leased: Option<LeasedHold>,
        micros: i64,
        tokens: i64,
        now_ms: i64,
    ) -> Result<bool> {
        let key_id: Owner = key_id.into();
        let change = BudgetChange::Settle {
            request,
            leased,
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

    pub async fn release(
        &self,
        key_id: impl Into<Owner>,
        period: &str,
        request: Uuid,
        leased: Option<LeasedHold>,
    ) -> Result<()> {
        let key_id: Owner = key_id.into();
        self.submit(
            &self.budgets,
            &budget_key(key_id, period),
            BudgetChange::Release { request, leased },
        )
        .await
        .map(|_| ())
    }

    pub async fn budget(&self, key_id: impl Into<Owner>, period: &str) -> Result<BudgetState> {
        let key_id: Owner = key_id.into();
        self.read(&budget_key(key_id, period)).await
    }

    pub async fn rate(&self, key_id: impl Into<Owner>) -> Result<RateState> {
        let key_id: Owner = key_id.into();
        self.read(&rate_key(key_id)).await
    }
}

/// Commits `entry`'s waiting changes, batch after batch, until none wait.
async fn drain<T: Ledger>(
    kv: kv::Store,
    key: String,
    entry: Arc<Mutex<Entry<T>>>,
    linger: Duration,
    spend_log: Option<SpendLog>,
) {
    let kind = entry_kind(&key);
    loop {
        if !linger.is_zero() {
            tokio::time::sleep(linger).await;
        }
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
        let (known, outcome) = commit(&kv, &key, known, &changes, spend_log.as_ref()).await;
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
    spend_log: Option<&SpendLog>,
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
                    _ => {
                        // Missing: a first use in this period, or a lost
                        // bucket; either way, what the request log says.
                        let mut state = T::default();
                        if let Some(log) = spend_log.filter(|_| kind == "budget") {
                            match log.spent(key).await {
                                Ok(spent) => state.floor(spent),
                                Err(e) => return (None, Err(Failure::Database(e))),
                            }
                        }
                        (state, entry.as_ref().map(|e| e.revision))
                    }
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
                metrics::counter!(CAS_CONFLICTS, "entry" => kind).increment(1);
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
