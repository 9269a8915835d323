//! Limits at several levels at once: a key's own, its project's and its
//! team's, each on its own shared entry (`Owner`).
//!
//! A request's budget hold is taken at every level that has a budget, all
//! or nothing: the holds are asked for at once, and if any level refuses
//! (or cannot be reached) the holds the others took are released before
//! the request is refused (`join_holds` decides, free of I/O). Settling
//! and releasing go to every level the hold was taken at, each deduped on
//! its own entry exactly as a key's is (by request id, or by lease and
//! number), so a request is billed once per level however often it is
//! settled. Since each level's entry never holds more than its budget, the
//! sum of a team's keys can never exceed the team's budget, on any number
//! of replicas.

use std::fmt;

use aigw_events::wire::{LeaseRef, Level, Reservation};
use futures::future::join_all;
use uuid::Uuid;

use super::{Budget, BudgetRefusal, Hold, LeasedHold, Limiter};
use crate::Result;

/// Whose limits an entry of the limits bucket holds.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Owner {
    Key(Uuid),
    Level(Level),
}

impl From<Uuid> for Owner {
    fn from(id: Uuid) -> Self {
        Owner::Key(id)
    }
}

impl From<Level> for Owner {
    fn from(level: Level) -> Self {
        Owner::Level(level)
    }
}

/// How the owner appears in entry names: a key by its id (as before
/// levels existed), a level as `project-<id>` or `team-<id>`.
impl fmt::Display for Owner {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Owner::Key(id) => write!(f, "{id}"),
            Owner::Level(level) => write!(f, "{}-{}", level.kind(), level.id()),
        }
    }
}

impl Owner {
    /// Reads an owner back from its entry-name form (see `Display`).
    pub fn parse(text: &str) -> Option<Self> {
        if let Some(id) = text.strip_prefix("project-") {
            return id.parse().ok().map(|id| Owner::Level(Level::Project(id)));
        }
        if let Some(id) = text.strip_prefix("team-") {
            return id.parse().ok().map(|id| Owner::Level(Level::Team(id)));
        }
        text.parse().ok().map(Owner::Key)
    }

    /// `key`, `project` or `team`: for messages and `limited_by`.
    pub fn kind(self) -> &'static str {
        match self {
            Owner::Key(_) => "key",
            Owner::Level(level) => level.kind(),
        }
    }
}

/// What became of a request's holds at its levels.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Joint<T> {
    /// Every level took its hold.
    Taken(Vec<T>),
    /// Level `at` (the nearest refusing one) refused; the holds the other
    /// levels took must be released.
    Refused {
        at: usize,
        why: BudgetRefusal,
        release: Vec<(usize, T)>,
    },
}

/// Decides, from every level's answer (in level order), whether a request
/// holds at all of them or at none: all or nothing.
pub fn join_holds<T: Copy>(answers: &[Result<T, BudgetRefusal>]) -> Joint<T> {
    let refused = answers
        .iter()
        .enumerate()
        .find_map(|(i, a)| a.as_ref().err().map(|why| (i, *why)));
    match refused {
        None => Joint::Taken(answers.iter().filter_map(|a| a.ok()).collect()),
        Some((at, why)) => Joint::Refused {
            at,
            why,
            release: answers
                .iter()
                .enumerate()
                .filter_map(|(i, a)| a.ok().map(|t| (i, t)))
                .collect(),
        },
    }
}

/// One hold of a request as settling sees it: where, in which period, and
/// from which lease.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PlacedHold {
    pub owner: Owner,
    pub period: String,
    pub leased: Option<LeasedHold>,
}

/// Every hold `reservation` stands for: the key's own (unless it held only
/// above the key) and one per level.
pub fn holds_of(key_id: Uuid, r: &Reservation) -> Vec<PlacedHold> {
    let mut out = Vec::with_capacity(1 + r.levels.len());
    if r.on_key {
        out.push(PlacedHold {
            owner: Owner::Key(key_id),
            period: r.period.clone(),
            leased: LeasedHold::of(r),
        });
    }
    for l in &r.levels {
        out.push(PlacedHold {
            owner: Owner::Level(l.level),
            period: l.period.clone(),
            leased: l.lease.map(|from| LeasedHold {
                from,
                micros: r.micros,
                tokens: r.tokens,
            }),
        });
    }
    out
}

impl Limiter {
    /// Holds `hold` for `request` at every budget of `budgets` (in level
    /// order: key, project, team), all or nothing: on a refusal, the index
    /// of the (nearest) refusing level, with every hold taken released.
    pub async fn reserve_levels(
        &self,
        budgets: &[(Owner, Budget)],
        request: Uuid,
        hold: Hold,
        now_ms: i64,
    ) -> Result<Result<Vec<Option<LeaseRef>>, (usize, BudgetRefusal)>> {
        let answers = join_all(
            budgets
                .iter()
                .map(|(owner, budget)| self.reserve(*owner, budget, request, hold, now_ms)),
        )
        .await;
        let failed = answers.iter().position(|a| a.is_err());
        let decided: Vec<Result<Option<LeaseRef>, BudgetRefusal>> = answers
            .iter()
            .map(|a| match a {
                Ok(r) => *r,
                // Unreachable: treated as refused, for the release below.
                Err(_) => Err(BudgetRefusal::Spend),
            })
            .collect();
        match join_holds(&decided) {
            Joint::Taken(leases) => Ok(Ok(leases)),
            Joint::Refused { at, why, release } => {
                let releases = release.into_iter().map(|(i, lease)| {
                    let (owner, budget) = &budgets[i];
                    let leased = lease.map(|from| LeasedHold {
                        from,
                        micros: hold.micros,
                        tokens: hold.tokens,
                    });
                    self.release(*owner, &budget.period, request, leased)
                });
                for r in join_all(releases).await {
                    if let Err(e) = r {
                        tracing::warn!(%request, error = %e, "releasing a level's hold failed (it expires on its own)");
                    }
                }
                match failed {
                    Some(i) => Err(answers
                        .into_iter()
                        .nth(i)
                        .and_then(|a| a.err())
                        .unwrap_or_else(|| crate::RuntimeError::Nats("budget state".into()))),
                    None => Ok(Err((at, why))),
                }
            }
        }
    }

    /// Frees every hold of `reservation`, spending nothing.
    pub async fn release_reservation(
        &self,
        key_id: Uuid,
        request: Uuid,
        reservation: &Reservation,
    ) -> Result<()> {
        let holds = holds_of(key_id, reservation);
        let releases = holds
            .iter()
            .map(|h| self.release(h.owner, &h.period, request, h.leased));
        join_all(releases).await.into_iter().collect()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::limits::{BudgetState, Hold};

    #[test]
    fn owners_name_their_entries_and_read_back() {
        let id = Uuid::now_v7();
        for owner in [
            Owner::Key(id),
            Owner::Level(Level::Project(id)),
            Owner::Level(Level::Team(id)),
        ] {
            assert_eq!(Owner::parse(&owner.to_string()), Some(owner));
        }
        // A key's entries keep the names they had before levels existed.
        assert_eq!(Owner::Key(id).to_string(), id.to_string());
        assert_eq!(Owner::parse("team-x"), None);
    }

    #[test]
    fn holds_join_all_or_nothing() {
        use BudgetRefusal::*;
        assert_eq!(join_holds::<u8>(&[Ok(1), Ok(2)]), Joint::Taken(vec![1, 2]));
        assert_eq!(
            join_holds(&[Ok(1), Err(Tokens), Ok(3), Err(Spend)]),
            Joint::Refused {
                at: 1,
                why: Tokens,
                release: vec![(0, 1), (2, 3)]
            }
        );
        assert_eq!(
            join_holds::<u8>(&[Err(Spend)]),
            Joint::Refused {
                at: 0,
                why: Spend,
                release: vec![]
            }
        );
    }

    /// Three keys of one team, each with its own budget, reserve (all or
    /// nothing over key and team), settle (some twice) and release in a
    /// pseudo-random order: the team's entry never holds or spends more than
    /// its budget, no key's does, each level bills every request once, and
    /// the team's spend is the sum of its keys'.
    #[test]
    fn a_team_budget_bounds_its_keys_and_each_level_bills_once() {
        const TEAM: i64 = 10_000;
        const KEY: i64 = 6_000;
        let mut rng = 0x2545_f491_4f6c_dd1d_u64;
        let mut next = move |n: u64| {
            rng ^= rng << 13;
            rng ^= rng >> 7;
            rng ^= rng << 17;
            rng % n
        };
        let mut keys = vec![BudgetState::default(); 3];
        let mut team = BudgetState::default();
        let mut running: Vec<(Uuid, usize, i64)> = Vec::new();
        let mut done: Vec<(Uuid, usize)> = Vec::new();
        let mut billed = 0i64;
        for step in 0..5_000 {
            match next(3) {
                0 => {
                    let (request, k) = (Uuid::now_v7(), next(3) as usize);
                    let hold = Hold {
                        micros: 1 + next(400) as i64,
                        tokens: 0,
                        expires_ms: i64::MAX,
                    };
                    // The levels answer in any order; the joint decision
                    // releases what was taken when one refuses.
                    let key_first = next(2) == 0;
                    let (a, b) = if key_first {
                        let a = keys[k].reserve(request, hold, Some(KEY), None, 0);
                        (a, team.reserve(request, hold, Some(TEAM), None, 0))
                    } else {
                        let b = team.reserve(request, hold, Some(TEAM), None, 0);
                        (keys[k].reserve(request, hold, Some(KEY), None, 0), b)
                    };
                    match join_holds(&[a, b]) {
                        Joint::Taken(_) => running.push((request, k, hold.micros)),
                        Joint::Refused { release, .. } => {
                            for (level, ()) in release {
                                match level {
                                    0 => keys[k].release(request, None),
                                    _ => team.release(request, None),
                                }
                            }
                        }
                    }
                }
                1 if !running.is_empty() => {
                    let (request, k, held) =
                        running.swap_remove(next(running.len() as u64) as usize);
                    if next(5) == 0 {
                        keys[k].release(request, None);
                        team.release(request, None);
                    } else {
                        let cost = next(held as u64 + 1) as i64;
                        assert!(keys[k].settle(request, None, cost, 0, 0));
                        assert!(team.settle(request, None, cost, 0, 0));
                        billed += cost;
                    }
                    done.push((request, k));
                }
                2 if !done.is_empty() => {
                    let (request, k) = done[next(done.len() as u64) as usize];
                    assert!(!keys[k].settle(request, None, 99, 0, 0), "key billed twice");
                    assert!(!team.settle(request, None, 99, 0, 0), "team billed twice");
                }
                _ => {}
            }
            assert!(team.spent_micros + team.held().0 <= TEAM, "step {step}");
            for key in &keys {
                assert!(key.spent_micros + key.held().0 <= KEY, "step {step}");
            }
            // Nothing is held at one level and not the other.
            let held_keys: i64 = keys.iter().map(|k| k.held().0).sum();
            assert_eq!(held_keys, team.held().0, "step {step}");
        }
        let key_spend: i64 = keys.iter().map(|k| k.spent_micros).sum();
        assert_eq!(team.spent_micros, key_spend);
        assert_eq!(team.spent_micros, billed);
        assert!(billed > TEAM / 2, "the team budget was used: {billed}");
    }

    #[test]
    fn a_reservation_names_every_hold() {
        use aigw_events::wire::LevelHold;
        let (key, project, team) = (Uuid::now_v7(), Uuid::now_v7(), Uuid::now_v7());
        let lease = LeaseRef {
            id: Uuid::now_v7(),
            seq: 3,
        };
        let r = Reservation {
            period: "total".into(),
            micros: 50,
            tokens: 7,
            lease: None,
            on_key: false,
            levels: vec![
                LevelHold {
                    level: Level::Project(project),
                    period: "2026-12".into(),
                    lease: None,
                },
                LevelHold {
                    level: Level::Team(team),
                    period: "2026-12-04".into(),
                    lease: Some(lease),
                },
            ],
        };
        let holds = holds_of(key, &r);
        assert_eq!(holds.len(), 2, "no hold on the key's own budget");
        assert_eq!(holds[0].owner, Owner::Level(Level::Project(project)));
        assert_eq!(
            holds[1].leased,
            Some(LeasedHold {
                from: lease,
                micros: 50,
                tokens: 7
            })
        );
        let with_key = Reservation {
            on_key: true,
            ..r.clone()
        };
        assert_eq!(holds_of(key, &with_key)[0].owner, Owner::Key(key));
        // Older messages (no `on_key`) held on the key.
        let old: Reservation =
            serde_json::from_str(r#"{"period":"total","micros":1,"tokens":1}"#).unwrap();
        assert!(old.on_key && old.levels.is_empty());
    }
}
