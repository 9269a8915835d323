//! Admission leases: a replica admits from a slice of a key's limits held in
//! memory, so admitting a request needs no NATS round trip.
//!
//! A lease is taken from the shared entry with a compare-and-set like any
//! other change, so the sum of what every replica admits never exceeds a
//! limit. It is sized from this replica's recent demand (two seconds' worth,
//! at least 16 requests' worth), and the shared entry grants at most an
//! eighth of what is left and nothing below four requests' worth (see
//! `RateState::lease`, `BudgetState::lease`): near a limit every admission
//! is decided on the shared entry, request by request, as without leases.
//! A replica uses a lease for at most `ISSUE_WINDOW`, asks for the next one
//! once half of it is gone, and gives back what it did not use.
//!
//! Budget holds taken from a lease never reach the shared entry one by one:
//! the dispatcher settles each by its lease and number (see `BudgetLease`),
//! so a leased request costs the limits bucket no write at admission.

use std::collections::HashMap;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Mutex, Weak};
use std::time::{Duration, Instant};

use aigw_events::wire::LeaseRef;
use chrono::Utc;
use uuid::Uuid;

use super::Owner;
use super::kv::{budget_key, lock, rate_key};
use super::{
    Budget, BudgetChange, BudgetOutcome, Hold, LEASE_MIN_UNITS, Limiter, RateChange, RateDecision,
    RateOutcome, RateState,
};

/// How long a replica admits from one lease.
const ISSUE_WINDOW: Duration = Duration::from_secs(1);
/// How long to wait before asking again after the shared entry granted no
/// lease (the limit is close, or the entry unreachable).
const ASK_AGAIN: Duration = Duration::from_millis(500);
/// A lease covers at least this many requests of the current size.
const MIN_ASK: u64 = 16;
/// Requests a replica must have seen for a key within two seconds before it
/// asks for a lease: a key called now and then is admitted on the shared
/// entry, which costs it less.
const MIN_DEMAND: u64 = 2;
/// Slots unused for this long are forgotten.
const IDLE: Duration = Duration::from_secs(60);
/// How often expired leases are given back.
const SWEEP_EVERY: Duration = Duration::from_millis(200);

/// This replica's leases.
#[derive(Default)]
pub(crate) struct Local {
    rates: Mutex<HashMap<Owner, RateSlot>>,
    /// By budget entry key (key and period).
    budgets: Mutex<HashMap<String, BudgetSlot>>,
    /// Rate and budget checks decided from a lease.
    pub(super) admitted: AtomicU64,
}

/// What a replica admitted in a second.
#[derive(Debug, Default, Clone, Copy)]
struct Tally {
    requests: u64,
    tokens: u64,
    micros: i64,
}

/// A replica's recent demand on one entry, by the second.
struct Demand {
    since: Instant,
    current: Tally,
    previous: Tally,
}

impl Demand {
    fn new(now: Instant) -> Self {
        Self {
            since: now,
            current: Tally::default(),
            previous: Tally::default(),
        }
    }

    fn add(&mut self, t: Tally, now: Instant) {
        let elapsed = now.duration_since(self.since);
        if elapsed >= Duration::from_secs(1) {
            self.previous = if elapsed >= Duration::from_secs(2) {
                Tally::default()
            } else {
                self.current
            };
            self.current = Tally::default();
            self.since = now;
        }
        // Demand is a sizing heuristic: saturating, never a panic.
        self.current.requests = self.current.requests.saturating_add(t.requests);
        self.current.tokens = self.current.tokens.saturating_add(t.tokens);
        self.current.micros = self.current.micros.saturating_add(t.micros);
    }

    /// Busy enough to be worth a lease.
    fn busy(&self) -> bool {
        self.current.requests.saturating_add(self.previous.requests) >= MIN_DEMAND
    }

    /// What a lease should cover: two seconds of the busier of the last two
    /// seconds, and at least `MIN_ASK` requests like `this` one.
    fn ask(&self, this: Tally) -> Tally {
        let (a, b) = (self.current, self.previous);
        Tally {
            requests: a.requests.max(b.requests).saturating_mul(2).max(MIN_ASK),
            tokens: a
                .tokens
                .max(b.tokens)
                .saturating_mul(2)
                .max(MIN_ASK.saturating_mul(this.tokens)),
            micros: a
                .micros
                .max(b.micros)
                .saturating_mul(2)
                .max((MIN_ASK as i64).saturating_mul(this.micros)),
        }
    }
}

/// When a slot may ask for a lease.
#[derive(Default)]
struct Asking {
    /// An ask is in flight.
    pending: bool,
    /// Not before this (after a refusal).
    not_before: Option<Instant>,
}

impl Asking {
    fn may(&self, now: Instant) -> bool {
        !self.pending && self.not_before.is_none_or(|t| now >= t)
    }

    fn done(&mut self, granted: bool) {
        self.pending = false;
        self.not_before = (!granted).then(|| Instant::now() + ASK_AGAIN);
    }
}

struct RateSlot {
    lease: Option<RateLease>,
    asking: Asking,
    demand: Demand,
    used: Instant,
}

impl RateSlot {
    fn new(now: Instant) -> Self {
        Self {
            lease: None,
            asking: Asking::default(),
            demand: Demand::new(now),
            used: now,
        }
    }
}

struct RateLease {
    rpm: Option<u32>,
    tpm: Option<u64>,
    requests: u64,
    tokens: u64,
    granted: (u64, u64),
    until: Instant,
    /// The shared buckets right after the lease was taken.
    shared: RateState,
}

impl RateLease {
    /// Worth asking for the next one: half of it used, or half its time gone.
    fn low(&self, now: Instant) -> bool {
        (self.rpm.is_some() && self.requests.saturating_mul(2) < self.granted.0)
            || (self.tpm.is_some() && self.tokens.saturating_mul(2) < self.granted.1)
            || now + ISSUE_WINDOW / 2 >= self.until
    }
}

struct BudgetSlot {
    /// The lease holds are taken from.
    lease: Option<BudgetLeaseLocal>,
    asking: Asking,
    demand: Demand,
    used: Instant,
}

struct BudgetLeaseLocal {
    id: Uuid,
    /// The budgets it was granted under; a changed budget retires it.
    budget: (Option<i64>, Option<i64>),
    /// What was granted (micro-dollars, tokens), and what its holds took.
    granted: (i64, i64),
    taken: (i64, i64),
    /// When it lapses in the shared entry.
    expires_ms: i64,
    /// Number of the last hold taken.
    seq: u64,
    until: Instant,
}

impl BudgetLeaseLocal {
    /// Room for `hold`, which expires before the lease does (a hold that
    /// would outlive it, like a queued job's, is taken on the shared entry).
    fn fits(&self, hold: &Hold) -> bool {
        let (micros, tokens) = self.left();
        (self.budget.0.is_none() || micros >= hold.micros)
            && (self.budget.1.is_none() || tokens >= hold.tokens)
            && hold.expires_ms <= self.expires_ms
    }

    /// Worth asking for the next one: half of it used, or half its time gone.
    fn low(&self, now: Instant) -> bool {
        let (micros, tokens) = self.left();
        (self.budget.0.is_some() && micros.saturating_mul(2) < self.granted.0)
            || (self.budget.1.is_some() && tokens.saturating_mul(2) < self.granted.1)
            || now + ISSUE_WINDOW / 2 >= self.until
    }

    fn left(&self) -> (i64, i64) {
        (
            self.granted.0.saturating_sub(self.taken.0),
            self.granted.1.saturating_sub(self.taken.1),
        )
    }

    fn closing(self) -> Closing {
        (self.id, self.seq, self.taken)
    }
}

/// A lease to close: its id, how many holds it gave and what they took.
type Closing = (Uuid, u64, (i64, i64));

impl BudgetSlot {
    fn new(now: Instant) -> Self {
        Self {
            lease: None,
            asking: Asking::default(),
            demand: Demand::new(now),
            used: now,
        }
    }

    /// Stops taking holds from the lease, for it to be closed.
    fn retire(&mut self) -> Option<Closing> {
        self.lease.take().map(BudgetLeaseLocal::closing)
    }
}

fn now_ms() -> i64 {
    Utc::now().timestamp_millis()
}

impl Limiter {
    /// Admits from this replica's rate lease, if it has room; asks for a
    /// lease (in the background) when it has none or it runs low.
    pub(super) fn rate_from_lease(
        &self,
        local: &Local,
        key_id: Owner,
        rpm: Option<u32>,
        tpm: Option<u64>,
        tokens: u64,
    ) -> Option<RateDecision> {
        let now = Instant::now();
        let (decision, ask, give_back) = {
            let mut slots = lock(&local.rates);
            let slot = slots.entry(key_id).or_insert_with(|| RateSlot::new(now));
            let this = Tally {
                requests: 1,
                tokens,
                micros: 0,
            };
            slot.demand.add(this, now);
            slot.used = now;
            let stale = slot
                .lease
                .as_ref()
                .is_some_and(|l| l.rpm != rpm || l.tpm != tpm || now >= l.until);
            let give_back = if stale { slot.lease.take() } else { None };
            let decision = match &mut slot.lease {
                Some(l)
                    if (rpm.is_none() || l.requests >= 1)
                        && (tpm.is_none() || l.tokens >= tokens) =>
                {
                    if rpm.is_some() {
                        l.requests -= 1;
                    }
                    if tpm.is_some() {
                        l.tokens -= tokens;
                    }
                    Some(
                        l.shared
                            .decision(true, 0.0, rpm, tpm, l.requests as f64, l.tokens as f64),
                    )
                }
                _ => None,
            };
            let wanted = slot.demand.busy() && slot.lease.as_ref().is_none_or(|l| l.low(now));
            let ask = (wanted && slot.asking.may(now)).then(|| {
                slot.asking.pending = true;
                slot.demand.ask(this)
            });
            (decision, ask, give_back)
        };
        if let Some(lease) = give_back {
            self.return_rate(key_id, &lease);
        }
        if let Some(ask) = ask {
            self.ask_rate_lease(key_id, rpm, tpm, tokens, ask);
        }
        if decision.is_some() {
            local.admitted.fetch_add(1, Ordering::Relaxed);
            metrics::counter!("aigw_limits_admissions_total", "entry" => "rate", "from" => "lease")
                .increment(1);
        }
        decision
    }

    fn ask_rate_lease(
        &self,
        key_id: Owner,
        rpm: Option<u32>,
        tpm: Option<u64>,
        tokens: u64,
        ask: Tally,
    ) {
        let this = self.clone();
        tokio::spawn(async move {
            let change = RateChange::Lease {
                rpm,
                tpm,
                requests: ask.requests,
                tokens: ask.tokens,
                min_tokens: LEASE_MIN_UNITS.saturating_mul(tokens.max(1)),
                now_ms: now_ms(),
            };
            let outcome = this.submit(&this.rates, &rate_key(key_id), change).await;
            let Some(local) = &this.leases else {
                return;
            };
            let grant = match outcome {
                Ok(RateOutcome::Leased(grant)) => grant,
                Ok(other) => {
                    tracing::warn!(?other, "a rate lease answered something else");
                    None
                }
                Err(e) => {
                    tracing::warn!(%key_id, error = %e, "asking for a rate lease failed");
                    None
                }
            };
            metrics::counter!("aigw_limits_leases_total", "entry" => "rate", "granted" => if grant.is_some() { "yes" } else { "no" })
                .increment(1);
            let old = {
                let mut slots = lock(&local.rates);
                let Some(slot) = slots.get_mut(&key_id) else {
                    // Forgotten meanwhile: give the whole grant back.
                    drop(slots);
                    if let Some(g) = grant {
                        this.give_back_rate(key_id, g.requests, g.tokens);
                    }
                    return;
                };
                slot.asking.done(grant.is_some());
                match grant {
                    Some(g) => slot.lease.replace(RateLease {
                        rpm,
                        tpm,
                        requests: g.requests,
                        tokens: g.tokens,
                        granted: (g.requests, g.tokens),
                        until: Instant::now() + ISSUE_WINDOW,
                        shared: g.after,
                    }),
                    None => None,
                }
            };
            if let Some(old) = old {
                this.return_rate(key_id, &old);
            }
        });
    }

    fn return_rate(&self, key_id: Owner, lease: &RateLease) {
        let requests = if lease.rpm.is_some() {
            lease.requests
        } else {
            0
        };
        let tokens = if lease.tpm.is_some() { lease.tokens } else { 0 };
        self.give_back_rate(key_id, requests, tokens);
    }

    /// Gives unused requests and tokens back to the shared buckets. One that
    /// fails only leaves the limit lower until the buckets refill.
    fn give_back_rate(&self, key_id: Owner, requests: u64, tokens: u64) {
        if requests == 0 && tokens == 0 {
            return;
        }
        let this = self.clone();
        tokio::spawn(async move {
            let change = RateChange::Return { requests, tokens };
            if let Err(e) = this.submit(&this.rates, &rate_key(key_id), change).await {
                tracing::warn!(%key_id, error = %e, "giving back a rate lease failed (the buckets refill on their own)");
            }
        });
    }

    /// Takes `hold` from this replica's budget lease, if it has room; asks
    /// for a lease when it has none or it runs low.
    pub(super) fn budget_from_lease(
        &self,
        local: &Local,
        key_id: Owner,
        budget: &Budget,
        hold: Hold,
    ) -> Option<LeaseRef> {
        let now = Instant::now();
        let entry = budget_key(key_id, &budget.period);
        let limits = (budget.micros, budget.tokens);
        let (taken, ask, close) = {
            let mut slots = lock(&local.budgets);
            let slot = slots
                .entry(entry.clone())
                .or_insert_with(|| BudgetSlot::new(now));
            let this = Tally {
                requests: 1,
                tokens: hold.tokens.max(0) as u64,
                micros: hold.micros,
            };
            slot.demand.add(this, now);
            slot.used = now;
            let stale = slot
                .lease
                .as_ref()
                .is_some_and(|l| l.budget != limits || now >= l.until);
            let close = if stale { slot.retire() } else { None };
            let taken = slot.lease.as_mut().filter(|l| l.fits(&hold)).map(|l| {
                // `fits` checked there is room: no overflow.
                l.taken.0 = l.taken.0.saturating_add(hold.micros);
                l.taken.1 = l.taken.1.saturating_add(hold.tokens);
                l.seq += 1;
                LeaseRef {
                    id: l.id,
                    seq: l.seq,
                }
            });
            let wanted = slot.demand.busy() && slot.lease.as_ref().is_none_or(|l| l.low(now));
            let ask = (wanted && slot.asking.may(now)).then(|| {
                slot.asking.pending = true;
                slot.demand.ask(this)
            });
            (taken, ask, close)
        };
        if let Some(closing) = close {
            self.close_budget_lease(entry.clone(), closing);
        }
        if let Some(ask) = ask {
            self.ask_budget_lease(entry, limits, hold, ask);
        }
        let from = taken?;
        local.admitted.fetch_add(1, Ordering::Relaxed);
        metrics::counter!("aigw_limits_admissions_total", "entry" => "budget", "from" => "lease")
            .increment(1);
        Some(from)
    }

    fn ask_budget_lease(
        &self,
        entry: String,
        limits: (Option<i64>, Option<i64>),
        hold: Hold,
        ask: Tally,
    ) {
        let this = self.clone();
        tokio::spawn(async move {
            let id = Uuid::now_v7();
            let until = Instant::now() + ISSUE_WINDOW;
            // Holds taken from it expire like their own would.
            let expires_ms = hold
                .expires_ms
                .saturating_add(ISSUE_WINDOW.as_millis() as i64);
            let change = BudgetChange::Lease {
                id,
                ask: (ask.micros, i64::try_from(ask.tokens).unwrap_or(i64::MAX)),
                min: (
                    (LEASE_MIN_UNITS as i64).saturating_mul(hold.micros),
                    (LEASE_MIN_UNITS as i64).saturating_mul(hold.tokens),
                ),
                budget_micros: limits.0,
                budget_tokens: limits.1,
                expires_ms,
                now_ms: now_ms(),
            };
            let outcome = this.submit(&this.budgets, &entry, change).await;
            let Some(local) = &this.leases else {
                return;
            };
            let grant = match outcome {
                Ok(BudgetOutcome::Leased(grant)) => grant,
                Ok(other) => {
                    tracing::warn!(?other, "a budget lease answered something else");
                    None
                }
                Err(e) => {
                    // The lease may have been written all the same.
                    tracing::warn!(entry, error = %e, "asking for a budget lease failed");
                    this.close_budget_lease(entry.clone(), (id, 0, (0, 0)));
                    None
                }
            };
            metrics::counter!("aigw_limits_leases_total", "entry" => "budget", "granted" => if grant.is_some() { "yes" } else { "no" })
                .increment(1);
            let close = {
                let mut slots = lock(&local.budgets);
                let Some(slot) = slots.get_mut(&entry) else {
                    drop(slots);
                    if grant.is_some() {
                        this.close_budget_lease(entry.clone(), (id, 0, (0, 0)));
                    }
                    return;
                };
                slot.asking.done(grant.is_some());
                let Some(granted) = grant else {
                    return;
                };
                slot.lease
                    .replace(BudgetLeaseLocal {
                        id,
                        budget: limits,
                        granted,
                        taken: (0, 0),
                        expires_ms,
                        seq: 0,
                        until,
                    })
                    .map(BudgetLeaseLocal::closing)
            };
            if let Some(old) = close {
                this.close_budget_lease(entry, old);
            }
        });
    }

    /// Closes a lease: what its holds did not take goes back to the budget.
    /// One that fails leaves the whole lease held until it expires.
    fn close_budget_lease(&self, entry: String, (id, seq, taken): Closing) {
        let this = self.clone();
        tokio::spawn(async move {
            let mut delay = Duration::from_millis(20);
            for _ in 0..5 {
                let change = BudgetChange::Close { id, seq, taken };
                match this.submit(&this.budgets, &entry, change).await {
                    Ok(_) => return,
                    Err(e) => {
                        tracing::warn!(entry, error = %e, "closing a budget lease failed; retrying");
                        tokio::time::sleep(delay).await;
                        delay *= 2;
                    }
                }
            }
        });
    }

    /// Retires leases whose window is over and forgets idle slots.
    fn sweep_once(&self, local: &Local) {
        let now = Instant::now();
        let returns: Vec<(Owner, RateLease)> = {
            let mut slots = lock(&local.rates);
            let mut returns = Vec::new();
            for (key_id, slot) in slots.iter_mut() {
                if slot.lease.as_ref().is_some_and(|l| now >= l.until)
                    && let Some(lease) = slot.lease.take()
                {
                    returns.push((*key_id, lease));
                }
            }
            slots.retain(|_, s| {
                s.lease.is_some() || s.asking.pending || now.duration_since(s.used) < IDLE
            });
            returns
        };
        for (key_id, lease) in returns {
            self.return_rate(key_id, &lease);
        }
        let closes: Vec<(String, Closing)> = {
            let mut slots = lock(&local.budgets);
            let mut closes = Vec::new();
            for (entry, slot) in slots.iter_mut() {
                if slot.lease.as_ref().is_some_and(|l| now >= l.until)
                    && let Some(closing) = slot.retire()
                {
                    closes.push((entry.clone(), closing));
                }
            }
            slots.retain(|_, s| {
                s.lease.is_some() || s.asking.pending || now.duration_since(s.used) < IDLE
            });
            closes
        };
        for (entry, closing) in closes {
            self.close_budget_lease(entry, closing);
        }
    }
}

/// Runs `sweep_once` until the replica's leases are dropped.
pub(super) fn sweep(limiter: Limiter, local: Weak<Local>) {
    tokio::spawn(async move {
        let mut tick = tokio::time::interval(SWEEP_EVERY);
        tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        loop {
            tick.tick().await;
            let Some(local) = local.upgrade() else {
                return;
            };
            limiter.sweep_once(&local);
        }
    });
}
