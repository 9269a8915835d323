//! Per-key concurrency: how many synchronous requests of one key are in
//! flight at once, across every ingress replica.
//!
//! A key with `max_concurrency` has one entry in the limits bucket
//! (`concurrency.<key>`) holding the ids of its requests in flight, each with
//! the time its slot lapses. Taking a slot is a compare-and-set like every
//! other change to the limits (with the same group commit), and never leaves
//! more slots taken than the limit. The [`Slot`] guard renews its slot while
//! the request runs and frees it when dropped, however the request ends
//! (answered, failed, or its caller gone). A replica that dies stops
//! renewing, so its slots lapse within [`SLOT_TTL`].

use std::collections::BTreeMap;
use std::time::Duration;

use serde::{Deserialize, Serialize};
use uuid::Uuid;

use super::{Ledger, Limiter};
use crate::{Result, RuntimeError};

/// How long a slot lasts unless renewed: a dead replica's slots lapse
/// within this.
pub const SLOT_TTL: Duration = Duration::from_secs(30);
/// How often a live request renews its slot.
const RENEW_EVERY: Duration = Duration::from_secs(10);

/// The requests of one key in flight, by id, with when each slot lapses
/// (ms since the epoch).
#[derive(Debug, Clone, Default, Serialize, Deserialize, PartialEq, Eq)]
pub struct InFlight {
    pub requests: BTreeMap<Uuid, i64>,
}

impl InFlight {
    /// Takes a slot for `request` if fewer than `max` unexpired ones are
    /// taken (a request that already holds one keeps it, renewed).
    pub fn acquire(&mut self, request: Uuid, max: u32, expires_ms: i64, now_ms: i64) -> bool {
        self.requests.retain(|_, lapses| *lapses > now_ms);
        if let Some(lapses) = self.requests.get_mut(&request) {
            *lapses = (*lapses).max(expires_ms);
            return true;
        }
        if self.requests.len() >= max as usize {
            return false;
        }
        self.requests.insert(request, expires_ms);
        true
    }

    /// Pushes back when `request`'s slot lapses; false if it has none any
    /// more (it lapsed and was taken away: the request then runs without
    /// one rather than pushing the key over its limit).
    pub fn renew(&mut self, request: Uuid, expires_ms: i64) -> bool {
        match self.requests.get_mut(&request) {
            Some(lapses) => {
                *lapses = (*lapses).max(expires_ms);
                true
            }
            None => false,
        }
    }
}

/// A change to a key's concurrency entry.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum SlotChange {
    Acquire {
        request: Uuid,
        max: u32,
        expires_ms: i64,
        now_ms: i64,
    },
    Renew {
        request: Uuid,
        expires_ms: i64,
    },
    Release {
        request: Uuid,
    },
}

/// What a [`SlotChange`] did.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum SlotOutcome {
    Acquired(bool),
    Renewed(bool),
    Released,
}

impl Ledger for InFlight {
    type Change = SlotChange;
    type Outcome = SlotOutcome;

    fn apply(&mut self, change: &SlotChange) -> SlotOutcome {
        match *change {
            SlotChange::Acquire {
                request,
                max,
                expires_ms,
                now_ms,
            } => SlotOutcome::Acquired(self.acquire(request, max, expires_ms, now_ms)),
            SlotChange::Renew {
                request,
                expires_ms,
            } => SlotOutcome::Renewed(self.renew(request, expires_ms)),
            SlotChange::Release { request } => {
                self.requests.remove(&request);
                SlotOutcome::Released
            }
        }
    }
}

pub(super) fn concurrency_key(key_id: Uuid) -> String {
    format!("concurrency.{key_id}")
}

fn lapses_at() -> i64 {
    let ttl = chrono::Duration::from_std(SLOT_TTL).unwrap_or_default();
    (chrono::Utc::now() + ttl).timestamp_millis()
}

/// One request's concurrency slot: renewed while held, freed on drop.
pub struct Slot {
    limiter: Limiter,
    key_id: Uuid,
    request: Uuid,
    renewal: tokio::task::JoinHandle<()>,
}

impl std::fmt::Debug for Slot {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Slot")
            .field("key_id", &self.key_id)
            .field("request", &self.request)
            .finish()
    }
}

impl Drop for Slot {
    fn drop(&mut self) {
        self.renewal.abort();
        // Outside a runtime nothing can be sent: the slot lapses on its own.
        let Ok(rt) = tokio::runtime::Handle::try_current() else {
            return;
        };
        let (limiter, key_id, request) = (self.limiter.clone(), self.key_id, self.request);
        rt.spawn(async move {
            let change = SlotChange::Release { request };
            let key = concurrency_key(key_id);
            if let Err(e) = limiter.submit(&limiter.slots, &key, change).await {
                tracing::warn!(%request, error = %e, "freeing a concurrency slot failed (it lapses on its own)");
            }
        });
    }
}

impl Limiter {
    /// Takes one of `key_id`'s `max` concurrency slots for `request`;
    /// `None` when all are taken.
    pub async fn acquire_slot(
        &self,
        key_id: Uuid,
        request: Uuid,
        max: u32,
    ) -> Result<Option<Slot>> {
        let key = concurrency_key(key_id);
        let change = SlotChange::Acquire {
            request,
            max,
            expires_ms: lapses_at(),
            now_ms: chrono::Utc::now().timestamp_millis(),
        };
        match self.submit(&self.slots, &key, change).await? {
            SlotOutcome::Acquired(true) => {}
            SlotOutcome::Acquired(false) => return Ok(None),
            other => {
                return Err(RuntimeError::Corrupt(format!(
                    "taking a slot answered {other:?}"
                )));
            }
        }
        let renewer = self.clone();
        let renewal = tokio::spawn(async move {
            loop {
                tokio::time::sleep(RENEW_EVERY).await;
                let change = SlotChange::Renew {
                    request,
                    expires_ms: lapses_at(),
                };
                match renewer.submit(&renewer.slots, &key, change).await {
                    Ok(SlotOutcome::Renewed(true)) => {}
                    Ok(_) => {
                        tracing::warn!(%request, "concurrency slot lapsed before its request ended");
                        return;
                    }
                    Err(e) => tracing::warn!(%request, error = %e, "renewing a concurrency slot"),
                }
            }
        });
        Ok(Some(Slot {
            limiter: self.clone(),
            key_id,
            request,
            renewal,
        }))
    }

    /// The key's requests in flight, as the limits bucket holds them.
    pub async fn in_flight(&self, key_id: Uuid) -> Result<InFlight> {
        self.read(&concurrency_key(key_id)).await
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::limits::apply_batch;

    fn id(n: u128) -> Uuid {
        Uuid::from_u128(n)
    }

    fn acquire(n: u128, now_ms: i64) -> SlotChange {
        SlotChange::Acquire {
            request: id(n),
            max: 2,
            expires_ms: now_ms + 30_000,
            now_ms,
        }
    }

    #[test]
    fn never_more_slots_than_the_limit() {
        let mut state = InFlight::default();
        let outcomes = apply_batch(&mut state, &[acquire(1, 0), acquire(2, 0), acquire(3, 0)]);
        assert_eq!(
            outcomes,
            [true, true, false].map(SlotOutcome::Acquired).to_vec()
        );
        // Asking again for a slot already held keeps it and takes no other.
        assert_eq!(state.apply(&acquire(1, 0)), SlotOutcome::Acquired(true));
        assert_eq!(state.requests.len(), 2);
        state.apply(&SlotChange::Release { request: id(1) });
        assert_eq!(state.apply(&acquire(3, 0)), SlotOutcome::Acquired(true));
        assert_eq!(state.apply(&acquire(4, 0)), SlotOutcome::Acquired(false));
    }

    #[test]
    fn slots_of_a_dead_replica_lapse_and_renewed_ones_do_not() {
        let mut state = InFlight::default();
        apply_batch(&mut state, &[acquire(1, 0), acquire(2, 0)]);
        // Request 2 keeps renewing; request 1's replica died.
        assert_eq!(
            state.apply(&SlotChange::Renew {
                request: id(2),
                expires_ms: 50_000
            }),
            SlotOutcome::Renewed(true)
        );
        assert_eq!(
            state.apply(&acquire(3, 29_999)),
            SlotOutcome::Acquired(false)
        );
        assert_eq!(
            state.apply(&acquire(3, 30_000)),
            SlotOutcome::Acquired(true)
        );
        assert!(!state.requests.contains_key(&id(1)));
        // A lapsed slot is not brought back by a late renewal.
        assert_eq!(
            state.apply(&SlotChange::Renew {
                request: id(1),
                expires_ms: 90_000
            }),
            SlotOutcome::Renewed(false)
        );
        assert_eq!(state.requests.len(), 2);
    }
}
