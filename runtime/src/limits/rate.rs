//! Rate limits as a state machine, free of I/O: two token buckets per key
//! (requests and tokens per minute), refilled with time, and the changes
//! admission, corrections and replicas' leases make to them.

use serde::{Deserialize, Serialize};

use super::{LEASE_MIN_UNITS, LEASE_SHARE, Ledger};

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

/// A rate lease: what a replica may admit on its own, and the shared
/// buckets right after it was taken (for the headers).
#[derive(Debug, Clone, PartialEq)]
pub struct RateGrant {
    pub requests: u64,
    pub tokens: u64,
    pub after: RateState,
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

#[cfg(test)]
mod tests {
    use super::*;
    use crate::limits::*;
    use uuid::Uuid;

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
}
