//! Budgets as a state machine, free of I/O: one key's spend in one period,
//! the holds of requests still running and the slices leased to replicas,
//! and the changes admission and settlement make to them. A hold is taken
//! only if it fits what is left; settling replaces it by the actual cost,
//! once per request (or per numbered hold of a lease).

use std::collections::{BTreeMap, BTreeSet};

use aigw_events::wire::LeaseRef;
use serde::{Deserialize, Serialize};
use uuid::Uuid;

use super::{LEASE_SHARE, Ledger};

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

#[cfg(test)]
mod tests {
    use super::*;
    use crate::limits::*;
    use uuid::Uuid;

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
}
