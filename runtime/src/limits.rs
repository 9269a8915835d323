//! Rate limits and budgets shared by every replica, in a NATS KV bucket.
//!
//! Each key has one rate entry (two token buckets: requests and tokens per
//! minute) and one budget entry per budget period (spent so far, plus the
//! open reservations of requests still running); a key with
//! `max_concurrency` also has a concurrency entry (see `concurrency`). Every
//! change is a compare-and-set on the entry's revision, retried on conflict,
//! so limits hold exactly across any number of ingress and dispatcher
//! replicas.
//!
//! Admission reserves a request's worst-case cost; the dispatcher settles the
//! reservation to the actual cost once the request's events are stored.
//! Settling is idempotent (by request id), so a redelivered request cannot
//! bill twice. A reservation whose request never reached a dispatcher
//! expires on its own.

use std::collections::{BTreeMap, BTreeSet, HashMap};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use aigw_events::Names;
use aigw_events::wire::LeaseRef;
use async_nats::jetstream::{self, kv};
use serde::de::DeserializeOwned;
use serde::{Deserialize, Serialize};
use tokio::sync::oneshot;
use uuid::Uuid;

use crate::{Result, RuntimeError};

mod concurrency;
mod leases;

pub use concurrency::{InFlight, SLOT_TTL, Slot, SlotChange, SlotOutcome};

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
    /// Refills both buckets for the time since `at_ms`.
    fn refill(&mut self, rpm: Option<u32>, tpm: Option<u64>, now_ms: i64) {
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
        self.at_ms = self.at_ms.max(now_ms);
    }

    /// Refills both buckets for the time since `at_ms`, then takes one
    /// request and `tokens` tokens if both are available.
    pub fn admit(
        &mut self,
        rpm: Option<u32>,
        tpm: Option<u64>,
        tokens: u64,
        now_ms: i64,
    ) -> RateDecision {
        self.refill(rpm, tpm, now_ms);
        let tpm_cap = tpm.map(|t| t as f64).unwrap_or(0.0);
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
        self.decision(allowed, want_tokens, rpm, tpm, 0.0, 0.0)
    }

    /// What the headers show (and how long to wait when `allowed` is false),
    /// counting `extra_requests` and `extra_tokens` (a replica's unused lease)
    /// as available too.
    pub fn decision(
        &self,
        allowed: bool,
        want_tokens: f64,
        rpm: Option<u32>,
        tpm: Option<u64>,
        extra_requests: f64,
        extra_tokens: f64,
    ) -> RateDecision {
        let rpm_cap = rpm.map(f64::from).unwrap_or(0.0);
        let tpm_cap = tpm.map(|t| t as f64).unwrap_or(0.0);
        let requests = self.requests + extra_requests;
        let tokens = self.tokens + extra_tokens;
        let ms_until = |have: f64, need: f64, cap: f64| -> u64 {
            if cap <= 0.0 || have >= need {
                0
            } else {
                ((need - have) / cap * 60_000.0).ceil() as u64
            }
        };
        let wait_ms = ms_until(requests, 1.0, rpm_cap).max(ms_until(tokens, want_tokens, tpm_cap));
        RateDecision {
            allowed,
            retry_after_secs: if allowed {
                0
            } else {
                wait_ms.div_ceil(1000).max(1)
            },
            limit_requests: rpm,
            remaining_requests: requests.max(0.0).floor() as u64,
            reset_requests_ms: ms_until(requests, rpm_cap, rpm_cap),
            limit_tokens: tpm,
            remaining_tokens: tokens.max(0.0).floor() as u64,
            reset_tokens_ms: ms_until(tokens, tpm_cap, tpm_cap),
        }
    }

    /// Grants a replica a lease of up to `ask_requests` requests and
    /// `ask_tokens` tokens, taken out of the buckets now. A lease is at most
    /// a `LEASE_SHARE`th of what is available, and at least
    /// `LEASE_MIN_UNITS` requests (and `min_tokens` tokens): near a limit
    /// there is no lease, and every admission is decided here, exactly.
    pub fn lease(
        &mut self,
        rpm: Option<u32>,
        tpm: Option<u64>,
        ask_requests: u64,
        ask_tokens: u64,
        min_tokens: u64,
        now_ms: i64,
    ) -> Option<RateGrant> {
        if rpm.is_none() && tpm.is_none() {
            return None;
        }
        self.refill(rpm, tpm, now_ms);
        let share = |available: f64, ask: u64, min: u64| -> Option<u64> {
            let n = ask.min((available.max(0.0) / LEASE_SHARE as f64).floor() as u64);
            (n >= min.max(1)).then_some(n)
        };
        let requests = match rpm {
            Some(_) => share(self.requests, ask_requests, LEASE_MIN_UNITS)?,
            None => 0,
        };
        let tokens = match tpm {
            Some(_) => share(self.tokens, ask_tokens, min_tokens)?,
            None => 0,
        };
        self.requests -= requests as f64;
        self.tokens -= tokens as f64;
        Some(RateGrant {
            requests,
            tokens,
            after: self.clone(),
        })
    }
}

/// A lease is at most this share (1/n) of what a limit has left...
pub const LEASE_SHARE: i64 = 8;
/// ...and at least this many requests (or times a request's tokens or
/// worst-case cost), so a limit with fewer than `LEASE_SHARE *
/// LEASE_MIN_UNITS` of them left is decided request by request.
pub const LEASE_MIN_UNITS: u64 = 4;

/// A rate lease: what a replica may admit on its own, and the shared
/// buckets right after it was taken (for the headers).
#[derive(Debug, Clone, PartialEq)]
pub struct RateGrant {
    pub requests: u64,
    pub tokens: u64,
    pub after: RateState,
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
    /// Admission leases of ingress replicas (see `BudgetLease`).
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub leases: BTreeMap<Uuid, BudgetLease>,
    /// Leases that expired before their replica closed them (it died), kept
    /// for a day so the late settlement of a hold taken from one counts, once.
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub lapsed_leases: BTreeMap<Uuid, BudgetLease>,
}

/// A slice of a budget an ingress replica admits from on its own.
///
/// The replica numbers the holds it takes from the lease (1, 2, ...); they
/// never appear one by one in this entry. The dispatcher settles (or
/// releases) a hold by its lease and number, handing back what it held: the
/// lease remembers which numbers are settled (every one up to `settled`,
/// plus `settled_above`), so each hold settles exactly once. When the
/// replica stops using the lease it closes it, telling what its holds took
/// in all; the lease then holds what its unsettled holds took, and goes
/// away once every one of them has settled.
#[derive(Debug, Clone, Default, Serialize, Deserialize, PartialEq, Eq)]
pub struct BudgetLease {
    /// What it may hold: what was granted, or once closed, what its holds
    /// took in all.
    pub micros: i64,
    pub tokens: i64,
    /// What its settled (or released) holds had held.
    #[serde(default)]
    pub settled_micros: i64,
    #[serde(default)]
    pub settled_tokens: i64,
    /// Every hold numbered up to this one is settled...
    #[serde(default)]
    pub settled: u64,
    /// ...and so are these, above it.
    #[serde(default, skip_serializing_if = "BTreeSet::is_empty")]
    pub settled_above: BTreeSet<u64>,
    /// Once closed: how many holds were taken from it.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub closed_at: Option<u64>,
    /// When it stops counting, settled or not: the latest expiry of a hold
    /// taken from it (as an ordinary hold would lapse).
    pub expires_ms: i64,
    /// When it lapsed (for `lapsed_leases`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub lapsed_at: Option<i64>,
}

impl BudgetLease {
    /// What it holds now.
    fn holding(&self) -> (i64, i64) {
        (
            self.micros.saturating_sub(self.settled_micros).max(0),
            self.tokens.saturating_sub(self.settled_tokens).max(0),
        )
    }

    fn is_settled(&self, seq: u64) -> bool {
        seq <= self.settled || self.settled_above.contains(&seq)
    }

    /// Settles hold `seq`, which held `hold`; false if it settled before.
    fn settle(&mut self, seq: u64, hold: (i64, i64)) -> bool {
        if seq == 0 || self.is_settled(seq) {
            return false;
        }
        self.settled_above.insert(seq);
        while self.settled_above.remove(&(self.settled + 1)) {
            self.settled += 1;
        }
        self.settled_micros = self.settled_micros.saturating_add(hold.0);
        self.settled_tokens = self.settled_tokens.saturating_add(hold.1);
        true
    }

    /// Closed, and every hold taken from it settled.
    fn done(&self) -> bool {
        self.closed_at.is_some_and(|n| self.settled >= n)
    }
}

/// A hold taken from a lease, as the dispatcher settles it: where it was
/// taken and what it held.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct LeasedHold {
    pub from: LeaseRef,
    pub micros: i64,
    pub tokens: i64,
}

impl LeasedHold {
    /// The leased hold of a request's reservation, if it came from a lease.
    pub fn of(r: &aigw_events::wire::Reservation) -> Option<Self> {
        r.lease.map(|from| Self {
            from,
            micros: r.micros,
            tokens: r.tokens,
        })
    }
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
    /// What running requests and replicas' leases hold.
    pub fn held(&self) -> (i64, i64) {
        let holds = self.holds.values().fold((0i64, 0i64), |(m, t), h| {
            (m.saturating_add(h.micros), t.saturating_add(h.tokens))
        });
        self.leases.values().fold(holds, |(m, t), l| {
            let (lm, lt) = l.holding();
            (m.saturating_add(lm), t.saturating_add(lt))
        })
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
        let expired: Vec<Uuid> = self
            .leases
            .iter()
            .filter(|(_, l)| l.expires_ms <= now_ms)
            .map(|(id, _)| *id)
            .collect();
        for id in expired {
            if let Some(mut lease) = self.leases.remove(&id) {
                lease.lapsed_at = Some(now_ms);
                self.lapsed_leases.insert(id, lease);
            }
        }
        self.lapsed_leases
            .retain(|_, l| now_ms - l.lapsed_at.unwrap_or(now_ms) < LAPSED_MEMORY_MS);
    }

    /// Grants a replica a lease of up to `ask` (micro-dollars, tokens): at
    /// most a `LEASE_SHARE`th of what each budget has left, and at least
    /// `min` of it, so near a budget's end there is no lease and every hold
    /// is decided here, exactly. A budget the key does not have is not
    /// leased (the lease holds 0 of it).
    #[allow(clippy::too_many_arguments)]
    pub fn lease(
        &mut self,
        id: Uuid,
        ask: (i64, i64),
        min: (i64, i64),
        budget_micros: Option<i64>,
        budget_tokens: Option<i64>,
        expires_ms: i64,
        now_ms: i64,
    ) -> Option<(i64, i64)> {
        self.drop_expired(now_ms);
        if self.leases.contains_key(&id) || self.lapsed_leases.contains_key(&id) {
            return None;
        }
        let (held_micros, held_tokens) = self.held();
        let share = |budget: Option<i64>, used: i64, ask: i64, min: i64| -> Option<i64> {
            let Some(budget) = budget else {
                return Some(0);
            };
            let free = budget.saturating_sub(used);
            let n = ask.min(free / LEASE_SHARE);
            (free > 0 && n >= min.max(0)).then_some(n)
        };
        let micros = share(
            budget_micros,
            self.spent_micros.saturating_add(held_micros),
            ask.0,
            min.0,
        )?;
        let tokens = share(
            budget_tokens,
            self.spent_tokens.saturating_add(held_tokens),
            ask.1,
            min.1,
        )?;
        self.leases.insert(
            id,
            BudgetLease {
                micros,
                tokens,
                expires_ms,
                ..BudgetLease::default()
            },
        );
        Some((micros, tokens))
    }

    /// Ends a lease: `seq` holds were taken from it, holding `taken` in all;
    /// the rest goes back to the budget.
    pub fn close(&mut self, id: Uuid, seq: u64, taken: (i64, i64)) {
        if let Some(lease) = self.leases.get_mut(&id) {
            lease.closed_at = Some(seq);
            (lease.micros, lease.tokens) = taken;
            if lease.done() {
                self.leases.remove(&id);
            }
        }
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
            let used = self.spent_micros.saturating_add(held_micros);
            if used >= budget || used.checked_add(hold.micros).is_none_or(|u| u > budget) {
                return Err(BudgetRefusal::Spend);
            }
        }
        if let Some(budget) = budget_tokens {
            let used = self.spent_tokens.saturating_add(held_tokens);
            if used >= budget || used.checked_add(hold.tokens).is_none_or(|u| u > budget) {
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
    ///
    /// A hold taken from a lease settles by its number in the lease, once
    /// (see `BudgetLease`).
    pub fn settle(
        &mut self,
        request: Uuid,
        leased: Option<LeasedHold>,
        micros: i64,
        tokens: i64,
        now_ms: i64,
    ) -> bool {
        self.drop_expired(now_ms);
        let held = match leased {
            Some(leased) => self.settle_leased(leased),
            None => self.holds.remove(&request).is_some() || self.lapsed.remove(&request).is_some(),
        };
        if held {
            // Bounded by the hold (see `worst_case`); saturation is never
            // reached, but a stored entry is never made to panic either.
            self.spent_micros = self.spent_micros.saturating_add(micros);
            self.spent_tokens = self.spent_tokens.saturating_add(tokens);
        }
        held
    }

    /// Frees `request`'s hold without spending anything.
    pub fn release(&mut self, request: Uuid, leased: Option<LeasedHold>) {
        match leased {
            Some(leased) => {
                self.settle_leased(leased);
            }
            None => {
                self.holds.remove(&request);
            }
        }
    }

    /// Settles a hold taken from a lease (open or lapsed); false when it
    /// settled before (or its lease is long forgotten).
    fn settle_leased(&mut self, leased: LeasedHold) -> bool {
        let id = leased.from.id;
        let (lease, open) = match self.leases.get_mut(&id) {
            Some(lease) => (lease, true),
            None => match self.lapsed_leases.get_mut(&id) {
                Some(lease) => (lease, false),
                None => return false,
            },
        };
        if !lease.settle(leased.from.seq, (leased.micros, leased.tokens)) {
            return false;
        }
        if open && lease.done() {
            self.leases.remove(&id);
        }
        true
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

    /// Starts a missing entry from what the request log says was spent
    /// (micro-dollars, tokens); nothing for entries that keep no spend.
    fn floor(&mut self, _spent: (i64, i64)) {}
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
    /// Lease a replica some requests and tokens (see `RateState::lease`).
    Lease {
        rpm: Option<u32>,
        tpm: Option<u64>,
        requests: u64,
        tokens: u64,
        min_tokens: u64,
        now_ms: i64,
    },
    /// Give back what a lease did not use.
    Return { requests: u64, tokens: u64 },
}

/// What a `RateChange` did.
#[derive(Debug, Clone, PartialEq)]
pub enum RateOutcome {
    Decided(RateDecision),
    Corrected,
    Leased(Option<RateGrant>),
    Returned,
}

impl Ledger for RateState {
    type Change = RateChange;
    type Outcome = RateOutcome;

    fn apply(&mut self, change: &RateChange) -> RateOutcome {
        match *change {
            RateChange::Admit {
                rpm,
                tpm,
                tokens,
                now_ms,
            } => RateOutcome::Decided(self.admit(rpm, tpm, tokens, now_ms)),
            RateChange::Correct { tokens } => {
                self.tokens += tokens;
                RateOutcome::Corrected
            }
            RateChange::Lease {
                rpm,
                tpm,
                requests,
                tokens,
                min_tokens,
                now_ms,
            } => RateOutcome::Leased(self.lease(rpm, tpm, requests, tokens, min_tokens, now_ms)),
            RateChange::Return { requests, tokens } => {
                // Refilling caps the buckets again, so a return never lifts
                // them above the limits for long.
                self.requests += requests as f64;
                self.tokens += tokens as f64;
                RateOutcome::Returned
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
        leased: Option<LeasedHold>,
        micros: i64,
        tokens: i64,
        now_ms: i64,
    },
    Release {
        request: Uuid,
        leased: Option<LeasedHold>,
    },
    /// Lease a replica a slice of the budgets (see `BudgetState::lease`).
    Lease {
        id: Uuid,
        ask: (i64, i64),
        min: (i64, i64),
        budget_micros: Option<i64>,
        budget_tokens: Option<i64>,
        expires_ms: i64,
        now_ms: i64,
    },
    /// End a lease (see `BudgetState::close`).
    Close {
        id: Uuid,
        seq: u64,
        taken: (i64, i64),
    },
}

/// What a `BudgetChange` did.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum BudgetOutcome {
    Reserved(Result<(), BudgetRefusal>),
    /// Whether the request had a hold to settle (false: settled before).
    Settled(bool),
    Released,
    /// The lease granted (micro-dollars, tokens), if any.
    Leased(Option<(i64, i64)>),
    Closed,
}

impl Ledger for BudgetState {
    type Change = BudgetChange;
    type Outcome = BudgetOutcome;

    fn floor(&mut self, (micros, tokens): (i64, i64)) {
        self.spent_micros = self.spent_micros.max(micros);
        self.spent_tokens = self.spent_tokens.max(tokens);
    }

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
                leased,
                micros,
                tokens,
                now_ms,
            } => BudgetOutcome::Settled(self.settle(request, leased, micros, tokens, now_ms)),
            BudgetChange::Release { request, leased } => {
                self.release(request, leased);
                BudgetOutcome::Released
            }
            BudgetChange::Lease {
                id,
                ask,
                min,
                budget_micros,
                budget_tokens,
                expires_ms,
                now_ms,
            } => BudgetOutcome::Leased(self.lease(
                id,
                ask,
                min,
                budget_micros,
                budget_tokens,
                expires_ms,
                now_ms,
            )),
            BudgetChange::Close { id, seq, taken } => {
                self.close(id, seq, taken);
                BudgetOutcome::Closed
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
    /// Per-key concurrency entries (see `concurrency`).
    slots: Entries<InFlight>,
    /// This replica's admission leases (`None`: every admission is a
    /// compare-and-set on the shared entry).
    leases: Option<Arc<leases::Local>>,
    /// How long a commit waits for more changes to join its batch.
    linger: Duration,
    /// Where a missing budget entry's spend so far is read from.
    spend_log: Option<SpendLog>,
}

/// The spend so far of a budget entry that is missing from the limits
/// bucket, from the request log (the projector's `request_log` view of the
/// request events): a key's first request in a period finds nothing there,
/// but after a lost or purged limits bucket the spend is not reset to zero.
/// Requests still running, or finished in the last instant before the loss
/// and not yet projected, are the only ones it can miss.
#[derive(Clone)]
pub struct SpendLog {
    pool: sqlx::PgPool,
}

impl SpendLog {
    pub fn new(pool: sqlx::PgPool) -> Self {
        Self { pool }
    }

    /// What the key of budget entry `entry` (`budget.<key>.<period>`) spent
    /// in its period: micro-dollars and tokens.
    pub async fn spent(&self, entry: &str) -> std::result::Result<(i64, i64), String> {
        let mut parts = entry.splitn(3, '.');
        let (Some("budget"), Some(key), Some(period)) = (parts.next(), parts.next(), parts.next())
        else {
            return Err(format!("{entry}: not a budget entry"));
        };
        let key: Uuid = key.parse().map_err(|e| format!("{entry}: {e}"))?;
        let (from, to) = period_bounds(period).ok_or_else(|| format!("{entry}: unknown period"))?;
        sqlx::query_as::<_, (i64, i64)>(
            "SELECT coalesce(sum(cost_micros), 0)::int8,
                    coalesce(sum(coalesce(prompt_tokens, 0) + coalesce(completion_tokens, 0)), 0)::int8
             FROM request_log
             WHERE key_id = $1
               AND ($2::timestamptz IS NULL OR coalesce(at, finished_at) >= $2)
               AND ($3::timestamptz IS NULL OR coalesce(at, finished_at) < $3)",
        )
        .bind(key)
        .bind(from)
        .bind(to)
        .fetch_one(&self.pool)
        .await
        .map_err(|e| format!("reading the spend of {entry} from the request log: {e}"))
    }
}

type Bound = Option<chrono::DateTime<chrono::Utc>>;

/// The time span of a budget period id (see `BudgetPeriod::period_id`):
/// `total` (everything), `YYYY-MM` or `YYYY-MM-DD` (UTC).
fn period_bounds(period: &str) -> Option<(Bound, Bound)> {
    use chrono::{Datelike, NaiveDate, TimeZone, Utc};
    let at = |d: NaiveDate| Some(Utc.from_utc_datetime(&d.and_hms_opt(0, 0, 0)?));
    if period == "total" {
        return Some((None, None));
    }
    if let Ok(day) = NaiveDate::parse_from_str(period, "%Y-%m-%d") {
        return Some((at(day), at(day.succ_opt()?)));
    }
    let first = NaiveDate::parse_from_str(&format!("{period}-01"), "%Y-%m-%d").ok()?;
    let next = if first.month() == 12 {
        NaiveDate::from_ymd_opt(first.year() + 1, 1, 1)?
    } else {
        NaiveDate::from_ymd_opt(first.year(), first.month() + 1, 1)?
    };
    Some((at(first), at(next)))
}

type Entries<T> = Arc<Mutex<HashMap<String, Arc<Mutex<Entry<T>>>>>>;
type Waiter<T> = oneshot::Sender<Result<<T as Ledger>::Outcome, Failure>>;

/// Why a commit failed, told to every waiter of its batch.
#[derive(Debug, Clone)]
enum Failure {
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

/// Compare-and-sets that lost to another writer, by `entry` (rate or
/// budget).
const CAS_CONFLICTS: &str = "aigw_limits_cas_conflicts_total";

/// The metric label of an entry: `rate`, `concurrency` or `budget`.
fn entry_kind(key: &str) -> &'static str {
    if key.starts_with("rate.") {
        "rate"
    } else if key.starts_with("concurrency.") {
        "concurrency"
    } else {
        "budget"
    }
}

impl Limiter {
    /// Opens (creating if needed) the namespace's limits bucket.
    pub async fn open(js: &jetstream::Context, names: &Names) -> Result<Self> {
        let bucket = format!("{}_limits", names.namespace());
        let kv = crate::nats::ensure_kv(js, &bucket).await?;
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
    async fn read<T: Ledger>(&self, key: &str) -> Result<T> {
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
        key_id: Uuid,
        rpm: Option<u32>,
        tpm: Option<u64>,
        tokens: u64,
        now_ms: i64,
    ) -> Result<RateDecision> {
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

    /// Holds `hold` on the key's budgets for `request`. The hold comes from
    /// this replica's lease when it has room (the answer then names the
    /// lease, which settling needs), else from the shared entry.
    pub async fn reserve(
        &self,
        key_id: Uuid,
        budget: &Budget,
        request: Uuid,
        hold: Hold,
        now_ms: i64,
    ) -> Result<Result<Option<LeaseRef>, BudgetRefusal>> {
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
        key_id: Uuid,
        period: &str,
        request: Uuid,
        leased: Option<LeasedHold>,
        micros: i64,
        tokens: i64,
        now_ms: i64,
    ) -> Result<bool> {
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

    /// Frees the hold `reservation` took for `request`, spending nothing.
    pub async fn release_reservation(
        &self,
        key_id: Uuid,
        request: Uuid,
        reservation: &aigw_events::wire::Reservation,
    ) -> Result<()> {
        let leased = LeasedHold::of(reservation);
        self.release(key_id, &reservation.period, request, leased)
            .await
    }

    pub async fn release(
        &self,
        key_id: Uuid,
        period: &str,
        request: Uuid,
        leased: Option<LeasedHold>,
    ) -> Result<()> {
        self.submit(
            &self.budgets,
            &budget_key(key_id, period),
            BudgetChange::Release { request, leased },
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
        assert!(b.settle(ids[0], None, 100, 10, 0));
        assert!(!b.settle(ids[0], None, 100, 10, 0), "settled twice");
        assert_eq!(b.spent_micros, 100);
        assert!(b.reserve(ids[3], hold, Some(1_000), None, 0).is_ok());
        assert_eq!(
            b.reserve(ids[4], hold, Some(1_000), None, 0),
            Err(BudgetRefusal::Spend)
        );
        // Expired holds stop counting...
        assert!(b.reserve(ids[4], hold, Some(1_000), None, 20_000).is_ok());
        // ...but a late settlement of one still counts, once.
        assert!(b.settle(ids[1], None, 50, 5, 20_001));
        assert!(!b.settle(ids[1], None, 50, 5, 20_002));
        assert_eq!(b.spent_micros, 150);
        // A request that never held anything does not settle.
        assert!(!b.settle(Uuid::now_v7(), None, 999, 9, 20_003));
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
            .map(|o| match o {
                RateOutcome::Decided(d) => Some(d.allowed),
                _ => None,
            })
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
        let RateOutcome::Decided(second) = &outcomes[1] else {
            panic!("{:?}", outcomes[1]);
        };
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
            leased: None,
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
            BudgetChange::Release {
                request: ids[1],
                leased: None,
            },
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
                    leased: None,
                    micros: (next() % 500) as i64,
                    tokens: 1,
                    now_ms,
                },
                1 => BudgetChange::Release {
                    request,
                    leased: None,
                },
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
        assert!(
            expected
                .iter()
                .any(|o| matches!(o, RateOutcome::Decided(d) if !d.allowed))
        );

        let (mut one_by_one, mut batched) = (BudgetState::default(), BudgetState::default());
        let expected: Vec<_> = budget_changes.iter().map(|c| one_by_one.apply(c)).collect();
        let got = apply_batch(&mut batched, &budget_changes);
        assert_eq!(got, expected);
        assert_eq!(batched, one_by_one);
        assert!(expected.contains(&BudgetOutcome::Reserved(Err(BudgetRefusal::Spend))));
        assert!(expected.contains(&BudgetOutcome::Settled(true)));
    }

    #[test]
    fn rate_leases_take_at_most_an_eighth_and_none_near_the_limit() {
        let mut s = RateState::default();
        // rpm 1,000: asking for 500 gets 125 (an eighth of what is left).
        let g = s.lease(Some(1_000), None, 500, 0, 0, 1_000).unwrap();
        assert_eq!((g.requests, g.tokens), (125, 0));
        assert_eq!(s.requests, 875.0);
        assert_eq!(g.after, s);
        // A small ask is granted as asked.
        let g = s.lease(Some(1_000), None, 16, 0, 0, 1_000).unwrap();
        assert_eq!(g.requests, 16);
        // Below 32 requests left, nothing is leased: admissions are exact.
        let mut near = RateState::default();
        assert!(near.lease(Some(31), None, 16, 0, 0, 1_000).is_none());
        assert_eq!(near.requests, 31.0, "a refused lease takes nothing");
        let mut enough = RateState::default();
        assert_eq!(
            enough
                .lease(Some(32), None, 16, 0, 0, 1_000)
                .map(|g| g.requests),
            Some(4)
        );
        // Tokens: at most an eighth, and at least the asked minimum.
        let mut t = RateState::default();
        assert!(t.lease(None, Some(8_000), 0, 5_000, 1_001, 1).is_none());
        let g = t.lease(None, Some(8_000), 0, 5_000, 1_000, 1).unwrap();
        assert_eq!((g.requests, g.tokens), (0, 1_000));
        assert_eq!(t.tokens, 7_000.0);
        // Both limits must have room.
        let mut both = RateState::default();
        assert!(both.lease(Some(1_000), Some(100), 16, 50, 40, 1).is_none());
        assert_eq!(both.requests, 1_000.0);
        // What a lease does not use goes back, capped by the next refill.
        let mut r = RateState::default();
        r.lease(Some(100), None, 10, 0, 0, 1).unwrap();
        r.apply(&RateChange::Return {
            requests: 10,
            tokens: 0,
        });
        r.admit(Some(100), None, 0, 60_001);
        assert_eq!(r.requests, 99.0);
    }

    fn lease_of(b: &mut BudgetState, micros: i64, budget: i64) -> Uuid {
        let id = Uuid::now_v7();
        let granted = b
            .lease(id, (micros, 0), (1, 0), Some(budget), None, 100_000, 0)
            .expect("a lease");
        assert_eq!(granted, (micros, 0));
        id
    }

    fn hold(micros: i64) -> Hold {
        Hold {
            micros,
            tokens: 1,
            expires_ms: 50_000,
        }
    }

    #[test]
    fn budget_leases_are_sized_like_rate_leases() {
        let mut b = BudgetState::default();
        // An eighth of the free budget at most...
        let id = Uuid::now_v7();
        assert_eq!(
            b.lease(id, (5_000, 99), (100, 0), Some(8_000), None, 1, 0),
            Some((1_000, 0))
        );
        assert_eq!(b.held(), (1_000, 0), "a lease holds what it was granted");
        assert_eq!(
            b.lease(id, (5_000, 0), (100, 0), Some(8_000), None, 1, 0),
            None,
            "one id, one lease"
        );
        // ...and nothing when less than the minimum fits in an eighth.
        assert_eq!(
            b.lease(
                Uuid::now_v7(),
                (5_000, 0),
                (876, 0),
                Some(8_000),
                None,
                1,
                0
            ),
            None
        );
        // A token budget is leased the same way.
        let mut t = BudgetState::default();
        assert_eq!(
            t.lease(Uuid::now_v7(), (0, 500), (0, 10), None, Some(800), 1, 0),
            Some((0, 100))
        );
        // Closing gives back what the lease still holds.
        b.close(id, 0, (0, 0));
        assert_eq!(b.held(), (0, 0));
    }

    fn leased(id: Uuid, seq: u64, micros: i64) -> Option<LeasedHold> {
        Some(LeasedHold {
            from: LeaseRef { id, seq },
            micros,
            tokens: 1,
        })
    }

    #[test]
    fn a_leased_hold_settles_once_by_its_number() {
        let mut b = BudgetState::default();
        let lease = lease_of(&mut b, 1_000, 100_000);
        let (r1, r2, r3) = (Uuid::now_v7(), Uuid::now_v7(), Uuid::now_v7());
        // The replica took holds 1-3 (300 each) and 4 (50) from the lease.
        assert!(b.settle(r2, leased(lease, 2, 300), 120, 9, 1));
        assert!(
            !b.settle(r2, leased(lease, 2, 300), 120, 9, 2),
            "settled twice"
        );
        assert_eq!(b.held(), (700, 0), "the settled hold left the lease");
        b.release(r3, leased(lease, 3, 300));
        assert!(
            !b.settle(r3, leased(lease, 3, 300), 999, 9, 3),
            "released, then settled"
        );
        assert_eq!(b.held(), (400, 0));
        // Closed: the holds took 950 in all, so 1 and 4 (350) are still held.
        b.close(lease, 4, (950, 4));
        assert_eq!(b.held(), (350, 2));
        assert!(b.settle(r1, leased(lease, 1, 300), 200, 9, 4));
        assert_eq!(b.leases[&lease].settled, 3);
        assert!(b.settle(Uuid::now_v7(), leased(lease, 4, 50), 40, 9, 5));
        // Every hold settled: the lease is gone, and a late repeat is ignored.
        assert!(b.leases.is_empty());
        assert!(!b.settle(r1, leased(lease, 1, 300), 200, 9, 6));
        assert_eq!((b.spent_micros, b.spent_tokens), (360, 27));
        assert_eq!(b.held(), (0, 0));
        // A lease closed with nothing taken goes at once.
        let empty = lease_of(&mut b, 1_000, 100_000);
        b.close(empty, 0, (0, 0));
        assert!(b.leases.is_empty());
    }

    #[test]
    fn a_lease_whose_replica_died_lapses_and_late_settlements_count_once() {
        let mut b = BudgetState::default();
        let lease = lease_of(&mut b, 1_000, 100_000);
        let r = Uuid::now_v7();
        // Out of order settlements are remembered above the watermark.
        assert!(b.settle(Uuid::now_v7(), leased(lease, 2, 10), 5, 1, 1));
        assert_eq!(b.leases[&lease].settled_above.len(), 1);
        assert_eq!(b.held(), (990, 0));
        // The replica dies: the lease expires (at 100,000) and stops holding.
        b.drop_expired(100_000);
        assert!(b.leases.is_empty());
        assert!(b.lapsed_leases.contains_key(&lease));
        assert_eq!(b.held(), (0, 0));
        // A hold taken from it before it died settles, once.
        assert!(b.settle(r, leased(lease, 7, 300), 400, 4, 100_001));
        assert!(!b.settle(r, leased(lease, 7, 300), 400, 4, 100_002));
        assert!(!b.settle(r, leased(lease, 2, 10), 5, 1, 100_003));
        assert_eq!(b.spent_micros, 405);
        // And is forgotten after a day.
        b.drop_expired(100_000 + LAPSED_MEMORY_MS);
        assert!(b.lapsed_leases.is_empty());
    }

    #[test]
    fn leases_and_exact_holds_never_exceed_a_budget_in_any_order() {
        // Replicas lease, take holds from their leases and close them, while
        // others reserve exactly, and holds settle (some twice) or are
        // released, in a pseudo-random order: the budget is never exceeded,
        // each request is billed exactly once, and nothing stays held.
        let mut rng = 0x9e37_79b9_7f4a_7c15_u64;
        let mut next = move |n: u64| {
            rng ^= rng << 13;
            rng ^= rng >> 7;
            rng ^= rng << 17;
            rng % n
        };
        const BUDGET: i64 = 200_000;
        struct Replica {
            id: Uuid,
            left: i64,
            seq: u64,
            taken: i64,
        }
        let mut b = BudgetState::default();
        let mut open: Vec<Replica> = Vec::new();
        // Holds running: (request, how it was taken, what it held).
        let mut running: Vec<(Uuid, Option<LeasedHold>, i64)> = Vec::new();
        let mut finished: Vec<(Uuid, Option<LeasedHold>)> = Vec::new();
        let mut billed = std::collections::HashMap::new();
        let mut leases_taken = 0;
        for step in 0..20_000i64 {
            let now = step;
            match next(6) {
                0 => {
                    let id = Uuid::now_v7();
                    let ask = 500 + next(5_000) as i64;
                    if let Some((m, _)) =
                        b.lease(id, (ask, 0), (400, 0), Some(BUDGET), None, i64::MAX, now)
                    {
                        open.push(Replica {
                            id,
                            left: m,
                            seq: 0,
                            taken: 0,
                        });
                        leases_taken += 1;
                    }
                }
                1 if !open.is_empty() => {
                    let i = next(open.len() as u64) as usize;
                    let h = 1 + next(300) as i64;
                    let r = &mut open[i];
                    if r.left >= h {
                        r.left -= h;
                        r.taken += h;
                        r.seq += 1;
                        let from = LeaseRef {
                            id: r.id,
                            seq: r.seq,
                        };
                        running.push((Uuid::now_v7(), leased(from.id, from.seq, h), h));
                    }
                }
                2 if !open.is_empty() && next(20) == 0 => {
                    let r = open.swap_remove(next(open.len() as u64) as usize);
                    b.close(r.id, r.seq, (r.taken, r.seq as i64));
                }
                3 if !running.is_empty() => {
                    let (request, how, h) =
                        running.swap_remove(next(running.len() as u64) as usize);
                    let cost = next(h as u64 + 1) as i64;
                    if next(4) == 0 {
                        b.release(request, how);
                        billed.insert(request, 0);
                    } else {
                        assert!(b.settle(request, how, cost, 0, now));
                        billed.insert(request, cost);
                    }
                    finished.push((request, how));
                }
                4 => {
                    let request = Uuid::now_v7();
                    let h = 1 + next(300) as i64;
                    let mut hold = hold(h);
                    hold.expires_ms = i64::MAX;
                    if b.reserve(request, hold, Some(BUDGET), None, now).is_ok() {
                        running.push((request, None, h));
                    }
                }
                5 if !finished.is_empty() => {
                    // A redelivery settles a finished request again.
                    let (request, how) = finished[next(finished.len() as u64) as usize];
                    assert!(!b.settle(request, how, 77, 0, now), "billed twice");
                }
                _ => {}
            }
            let (held, _) = b.held();
            assert!(b.spent_micros + held <= BUDGET, "step {step}: over budget");
        }
        for r in open.drain(..) {
            b.close(r.id, r.seq, (r.taken, r.seq as i64));
        }
        for (request, how, h) in running.drain(..) {
            assert!(b.settle(request, how, h / 2, 0, 30_000));
            billed.insert(request, h / 2);
        }
        assert!(b.holds.is_empty() && b.leases.is_empty(), "{b:?}");
        assert_eq!(b.held(), (0, 0));
        assert_eq!(b.spent_micros, billed.values().sum::<i64>());
        assert!(
            leases_taken > 100 && billed.len() > 3_000,
            "{leases_taken} {}",
            billed.len()
        );
    }

    #[test]
    fn budget_periods_span_their_day_month_or_everything() {
        let at = |s: &str| Some(s.parse::<chrono::DateTime<chrono::Utc>>().unwrap());
        assert_eq!(period_bounds("total"), Some((None, None)));
        assert_eq!(
            period_bounds("2026-11-26"),
            Some((at("2026-11-26T00:00:00Z"), at("2026-11-27T00:00:00Z")))
        );
        assert_eq!(
            period_bounds("2026-12"),
            Some((at("2026-12-01T00:00:00Z"), at("2027-01-01T00:00:00Z")))
        );
        assert_eq!(
            period_bounds("2024-02-28"),
            Some((at("2024-02-28T00:00:00Z"), at("2024-02-29T00:00:00Z")))
        );
        assert_eq!(period_bounds("weekly"), None);
        assert_eq!(period_bounds("2026-13"), None);
        // The period ids the keys use.
        let now = chrono::Utc::now();
        for p in [
            aigw_events::key::BudgetPeriod::Daily,
            aigw_events::key::BudgetPeriod::Monthly,
            aigw_events::key::BudgetPeriod::Total,
        ] {
            let (from, to) = period_bounds(&p.period_id(now)).unwrap();
            assert!(
                from.is_none_or(|f| f <= now) && to.is_none_or(|t| now < t),
                "{p:?}"
            );
        }
    }
}
