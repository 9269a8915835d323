//! Routing: the order in which a request's targets are tried, and the
//! per-provider state that feeds it (latency estimates, credential turns,
//! concurrency caps).

use std::collections::HashMap;
use std::sync::{Arc, Mutex};

use aigw_events::{Strategy, Usage};
use aigw_runtime::Target;
use rand::rngs::StdRng;
use rand::{Rng, SeedableRng};
use tokio::sync::{OwnedSemaphorePermit, Semaphore};
use uuid::Uuid;

/// Weight of the newest call in the moving latency average.
const LATENCY_ALPHA: f64 = 0.3;

/// A provider's concurrency slot for one call.
#[derive(Debug)]
pub enum Slot {
    /// The provider has no cap.
    Uncapped,
    /// A slot, released when dropped.
    Held(OwnedSemaphorePermit),
    /// Every slot is taken.
    Full,
}

/// A routing decision.
#[derive(Debug, Clone)]
pub struct Plan {
    pub order: Vec<Target>,
    pub strategy: Strategy,
    pub reason: String,
}

/// Per-process routing state shared by every request of a dispatcher.
pub struct Router {
    latency: Mutex<HashMap<(Uuid, String), f64>>,
    rng: Mutex<StdRng>,
    turns: Mutex<HashMap<Uuid, usize>>,
    caps: Mutex<HashMap<Uuid, (u32, Arc<Semaphore>)>>,
}

fn lock<T>(m: &Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    m.lock().unwrap_or_else(|e| e.into_inner())
}

impl Router {
    /// `seed` makes weighted choices reproducible (tests, benchmarks).
    pub fn new(seed: Option<u64>) -> Self {
        let rng = match seed {
            Some(s) => StdRng::seed_from_u64(s),
            None => StdRng::from_os_rng(),
        };
        Self {
            latency: Mutex::default(),
            rng: Mutex::new(rng),
            turns: Mutex::default(),
            caps: Mutex::default(),
        }
    }

    pub fn plan(&self, targets: Vec<Target>, strategy: Strategy, estimate: Usage) -> Plan {
        let latency = lock(&self.latency).clone();
        let mut rng = lock(&self.rng);
        plan(
            targets,
            strategy,
            estimate,
            |t| latency.get(&(t.provider.id, t.model.clone())).copied(),
            &mut *rng,
        )
    }

    /// Feeds a successful call's latency into the moving average.
    pub fn observe_latency(&self, target: &Target, ms: f64) {
        let mut map = lock(&self.latency);
        let entry = map
            .entry((target.provider.id, target.model.clone()))
            .or_insert(ms);
        *entry = LATENCY_ALPHA * ms + (1.0 - LATENCY_ALPHA) * *entry;
    }

    /// The index of the credential to use next for `provider` (round robin).
    pub fn next_credential(&self, provider: Uuid, count: usize) -> usize {
        if count <= 1 {
            return 0;
        }
        let mut turns = lock(&self.turns);
        let turn = turns.entry(provider).or_insert(0);
        let index = *turn % count;
        *turn = turn.wrapping_add(1);
        index
    }

    /// The provider's concurrency cap semaphore (`None`: no cap).
    pub fn cap(&self, provider: Uuid, max: Option<u32>) -> Option<Arc<Semaphore>> {
        let max = max?;
        let mut caps = lock(&self.caps);
        let entry = caps
            .entry(provider)
            .or_insert_with(|| (max, Arc::new(Semaphore::new(max as usize))));
        if entry.0 != max {
            *entry = (max, Arc::new(Semaphore::new(max as usize)));
        }
        Some(entry.1.clone())
    }

    /// A free slot at the provider right now, if its cap allows.
    pub fn try_slot(&self, provider: Uuid, max: Option<u32>) -> Slot {
        match self.cap(provider, max) {
            None => Slot::Uncapped,
            Some(sem) => match sem.try_acquire_owned() {
                Ok(permit) => Slot::Held(permit),
                Err(_) => Slot::Full,
            },
        }
    }
}

fn cost_of(t: &Target, estimate: &Usage) -> Option<i64> {
    t.provider
        .spec
        .price(&t.model)
        .and_then(|p| p.cost_micros(estimate))
}

/// Orders `targets` by `strategy`; pure, for testing.
pub fn plan(
    targets: Vec<Target>,
    strategy: Strategy,
    estimate: Usage,
    latency_of: impl Fn(&Target) -> Option<f64>,
    rng: &mut impl Rng,
) -> Plan {
    let mut order = targets;
    let reason = match strategy {
        Strategy::Priority => "in the configured order".to_string(),
        Strategy::Weighted => {
            let total: u64 = order.iter().map(|t| u64::from(t.weight)).sum();
            let mut rest = std::mem::take(&mut order);
            while !rest.is_empty() {
                let sum: u64 = rest.iter().map(|t| u64::from(t.weight.max(1))).sum();
                let mut pick = rng.random_range(0..sum);
                let index = rest
                    .iter()
                    .position(|t| {
                        let w = u64::from(t.weight.max(1));
                        if pick < w {
                            true
                        } else {
                            pick -= w;
                            false
                        }
                    })
                    .unwrap_or(0);
                order.push(rest.remove(index));
            }
            match order.first() {
                Some(first) => format!(
                    "weighted pick: {} (weight {} of {total})",
                    first.label(),
                    first.weight
                ),
                None => "no targets".to_string(),
            }
        }
        Strategy::Cost => {
            order.sort_by_key(|t| cost_of(t, &estimate).unwrap_or(i64::MAX));
            match order.first() {
                Some(first) => match cost_of(first, &estimate) {
                    Some(c) => format!(
                        "cheapest for ~{} tokens: {} at {c} micro-dollars",
                        estimate.total(),
                        first.label()
                    ),
                    None => "no target has a price; configured order".to_string(),
                },
                None => "no targets".to_string(),
            }
        }
        Strategy::Latency => {
            // Targets never measured go first, so they get measured.
            order.sort_by(|a, b| {
                let (la, lb) = (latency_of(a).unwrap_or(0.0), latency_of(b).unwrap_or(0.0));
                la.total_cmp(&lb)
            });
            match order.first() {
                Some(first) => match latency_of(first) {
                    Some(ms) => format!("fastest: {} (~{ms:.0} ms)", first.label()),
                    None => format!("not measured yet: {}", first.label()),
                },
                None => "no targets".to_string(),
            }
        }
        Strategy::Auto => {
            let max_cost = order
                .iter()
                .filter_map(|t| cost_of(t, &estimate))
                .max()
                .unwrap_or(0)
                .max(1) as f64;
            let max_latency = order
                .iter()
                .filter_map(&latency_of)
                .fold(0.0f64, f64::max)
                .max(1.0);
            let score = |t: &Target| {
                let cost = cost_of(t, &estimate)
                    .map(|c| c as f64 / max_cost)
                    .unwrap_or(1.0);
                let latency = latency_of(t).map(|l| l / max_latency).unwrap_or(0.0);
                0.5 * cost + 0.5 * latency
            };
            order.sort_by(|a, b| score(a).total_cmp(&score(b)));
            match order.first() {
                Some(first) => format!(
                    "best cost and latency balance: {} (score {:.2})",
                    first.label(),
                    score(first)
                ),
                None => "no targets".to_string(),
            }
        }
    };
    Plan {
        order,
        strategy,
        reason,
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use aigw_events::provider::{Price, ProviderSpec};
    use aigw_runtime::ProviderEntry;
    use chrono::Utc;

    fn target(name: &str, weight: u32, price: Option<i64>) -> Target {
        let mut spec = ProviderSpec {
            name: name.into(),
            models: vec!["m".into()],
            ..ProviderSpec::default()
        };
        if let Some(p) = price {
            spec.prices.insert("m".into(), Price::tokens(p, p));
        }
        Target {
            provider: Arc::new(ProviderEntry {
                id: Uuid::now_v7(),
                spec,
                created_at: Utc::now(),
                updated_at: Utc::now(),
            }),
            model: "m".into(),
            weight,
        }
    }

    fn names(plan: &Plan) -> Vec<String> {
        plan.order
            .iter()
            .map(|t| t.provider.spec.name.clone())
            .collect()
    }

    const EST: Usage = Usage {
        prompt_tokens: 1000,
        completion_tokens: 1000,
        images: 0,
        characters: 0,
        audio_seconds: 0,
        searches: 0,
        cached_tokens: 0,
        cache_write_5m_tokens: 0,
        cache_write_1h_tokens: 0,
        reasoning_tokens: 0,
    };

    #[test]
    fn cost_puts_the_cheapest_first_and_unpriced_last() {
        let mut rng = StdRng::seed_from_u64(1);
        let targets = vec![
            target("dear", 1, Some(5_000_000)),
            target("free", 1, None),
            target("cheap", 1, Some(100_000)),
        ];
        let plan = plan(targets, Strategy::Cost, EST, |_| None, &mut rng);
        assert_eq!(names(&plan), ["cheap", "dear", "free"]);
        assert!(plan.reason.contains("cheap"), "{}", plan.reason);
    }

    #[test]
    fn latency_puts_the_fastest_first() {
        let mut rng = StdRng::seed_from_u64(1);
        let targets = vec![target("slow", 1, None), target("fast", 1, None)];
        let plan = plan(
            targets,
            Strategy::Latency,
            EST,
            |t| {
                Some(if t.provider.spec.name == "slow" {
                    900.0
                } else {
                    40.0
                })
            },
            &mut rng,
        );
        assert_eq!(names(&plan), ["fast", "slow"]);
    }

    #[test]
    fn weighted_choice_follows_the_weights_and_is_reproducible() {
        let targets = vec![target("a", 1, None), target("b", 3, None)];
        let mut rng = StdRng::seed_from_u64(42);
        let mut firsts = HashMap::new();
        for _ in 0..10_000 {
            let plan = plan(targets.clone(), Strategy::Weighted, EST, |_| None, &mut rng);
            assert_eq!(plan.order.len(), 2);
            *firsts.entry(names(&plan)[0].clone()).or_insert(0) += 1;
        }
        let b = f64::from(firsts["b"]) / 10_000.0;
        assert!((0.72..0.78).contains(&b), "b first {b}");
        // The same seed gives the same sequence.
        let first_of = |seed| {
            let mut rng = StdRng::seed_from_u64(seed);
            (0..20)
                .map(|_| {
                    names(&plan(
                        targets.clone(),
                        Strategy::Weighted,
                        EST,
                        |_| None,
                        &mut rng,
                    ))[0]
                        .clone()
                })
                .collect::<Vec<_>>()
        };
        assert_eq!(first_of(7), first_of(7));
    }

    #[test]
    fn auto_balances_cost_and_latency() {
        let mut rng = StdRng::seed_from_u64(1);
        // Slightly dearer but ten times faster wins.
        let targets = vec![
            target("cheap-slow", 1, Some(1_000_000)),
            target("fair-fast", 1, Some(1_200_000)),
        ];
        let plan = plan(
            targets,
            Strategy::Auto,
            EST,
            |t| {
                Some(if t.provider.spec.name == "cheap-slow" {
                    2000.0
                } else {
                    200.0
                })
            },
            &mut rng,
        );
        assert_eq!(names(&plan)[0], "fair-fast");
    }

    #[test]
    fn credentials_take_turns() {
        let router = Router::new(Some(1));
        let id = Uuid::now_v7();
        let turns: Vec<usize> = (0..5).map(|_| router.next_credential(id, 2)).collect();
        assert_eq!(turns, [0, 1, 0, 1, 0]);
        assert_eq!(router.next_credential(id, 1), 0);
    }
}
