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

//!
//! The state machines are free of I/O (`rate`, `budget`, `concurrency`);
//! `kv` holds the bucket and its group commit, `leases` the replicas'
//! admission leases, `spend` the request log's spend for a missing entry,
//! `hierarchy` the levels above a key (project, team), each with entries
//! of its own, and the all-or-nothing holds across them.

use serde::Serialize;
use serde::de::DeserializeOwned;

mod budget;
mod concurrency;
mod hierarchy;
mod kv;
mod leases;
mod rate;
mod spend;

pub use budget::{
    Budget, BudgetChange, BudgetLease, BudgetOutcome, BudgetRefusal, BudgetState, Hold, LeasedHold,
};
pub use concurrency::{InFlight, SLOT_TTL, Slot, SlotChange, SlotOutcome};
pub use hierarchy::{Joint, Owner, PlacedHold, holds_of, join_holds};
pub use kv::Limiter;
pub use rate::{RateChange, RateDecision, RateGrant, RateOutcome, RateState};
pub use spend::{SpendLog, owner_spend};

/// A lease is at most this share (1/n) of what a limit has left...
pub const LEASE_SHARE: i64 = 8;
/// ...and at least this many requests (or times a request's tokens or
/// worst-case cost), so a limit with fewer than `LEASE_SHARE *
/// LEASE_MIN_UNITS` of them left is decided request by request.
pub const LEASE_MIN_UNITS: u64 = 4;

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
