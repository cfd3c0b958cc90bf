//! Turning a route into a plan: which targets are available now, which key each uses, and
//! the order the strategy gives them.
//!
//! Availability (from the shared store): a target or key in cooldown (429) or with an open
//! circuit is skipped; one whose circuit is open but recovered is put first, marked as a
//! probe — the worker must win the single probe before calling it, and a failed probe costs
//! the client nothing because the next attempt follows. Inside a provider, the key is the
//! available one with the fewest requests today (ties at random).
//!
//! Strategies order the available targets:
//! - `least_load`: fewest live leases; ties at random.
//! - `weighted`: smooth weighted round robin (per router) for the first; the rest by weight.
//! - `round_robin`: rotates through the targets (per router).
//! - `priority`: lowest tier first, least load inside a tier.
//! - `cost`: cheapest for the estimated tokens among targets whose context window fits.
//! - `latency`: power of two choices on the latency EWMA (unmeasured targets count as 0, so
//!   they get measured); the rest by latency.
//! - `first_available`: configured order; the worker waits up to `first_available_wait_ms`
//!   for a free slot or lock, then moves on.

use foldhash::HashMap;

use llmr_config::Strategy;
use llmr_protocol::{ApiError, Attempt, Plan};
use llmr_store::{Availability, HealthRecord};
use rand::Rng;
use rand::seq::SliceRandom;

use crate::catalog::{Route, TargetSpec};

/// A target with what the store says about it and its keys.
#[derive(Debug, Clone)]
pub struct Cand<'a> {
    pub spec: &'a TargetSpec,
    pub load: u64,
    pub health: HealthRecord,
    /// Per key: health and requests today.
    pub keys: Vec<(HealthRecord, u64)>,
}

/// Why a target cannot be used now.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Blocked {
    pub until_ms: u64,
    /// Rate-limited (429) rather than failing.
    pub cooling: bool,
}

/// What the request needs for cost and context checks.
#[derive(Debug, Clone, Copy, Default)]
pub struct Estimate {
    pub prompt_tokens: u64,
    pub completion_tokens: u64,
}

/// One route's ordered attempts (with their pools) and what blocked the rest.
pub type Ordered = (Vec<(Attempt, String)>, Vec<Blocked>);

/// Per-router rotation state of `weighted` and `round_robin`.
#[derive(Debug, Default)]
pub struct Rotation {
    counters: HashMap<String, usize>,
    current: HashMap<String, Vec<i64>>,
}

fn blocked_by(a: Availability) -> Option<Blocked> {
    match a {
        Availability::CoolingUntil(t) => Some(Blocked {
            until_ms: t,
            cooling: true,
        }),
        Availability::OpenUntil(t) => Some(Blocked {
            until_ms: t,
            cooling: false,
        }),
        Availability::Available | Availability::Probe => None,
    }
}

/// The attempt for a candidate (target and key availability), or why it is blocked.
pub fn pick(c: &Cand<'_>, now: u64, rng: &mut impl Rng) -> Result<Attempt, Blocked> {
    let t = c.health.availability(now);
    if let Some(b) = blocked_by(t) {
        return Err(b);
    }
    let mut attempt = Attempt {
        probe: t == Availability::Probe,
        xml_tools: c.spec.xml_tools,
        ..Attempt::new(&c.spec.provider, &c.spec.model)
    };
    if c.keys.is_empty() {
        return Ok(attempt);
    }
    let avail: Vec<(usize, Availability, u64)> = c
        .keys
        .iter()
        .enumerate()
        .map(|(i, (h, used))| (i, h.availability(now), *used))
        .collect();
    let best = |want: Availability, rng: &mut dyn rand::RngCore| {
        let mut ks: Vec<&(usize, Availability, u64)> = avail.iter().filter(|(_, a, _)| *a == want).collect();
        ks.shuffle(rng);
        ks.into_iter().min_by_key(|(_, _, used)| *used).map(|(i, _, _)| *i)
    };
    if let Some(i) = best(Availability::Available, rng) {
        attempt.key = Some(i as u32);
    } else if let Some(i) = best(Availability::Probe, rng) {
        attempt.key = Some(i as u32);
        attempt.probe_key = true;
    } else {
        let blocks: Vec<Blocked> = avail.iter().filter_map(|(_, a, _)| blocked_by(*a)).collect();
        let until_ms = blocks.iter().map(|b| b.until_ms).min().unwrap_or(now);
        return Err(Blocked {
            until_ms,
            cooling: blocks.iter().all(|b| b.cooling),
        });
    }
    Ok(attempt)
}

/// The attempts of one route in the strategy's order (probes first), and what blocked the
/// targets left out.
pub fn order(
    route: &Route,
    cands: &[Cand<'_>],
    est: Estimate,
    now: u64,
    rng: &mut impl Rng,
    rot: &mut Rotation,
) -> Ordered {
    let (ready, blocked) = available(route, cands, est, now, rng);
    let (probes, healthy): (Vec<_>, Vec<_>) = ready.into_iter().partition(|(_, a)| a.probe || a.probe_key);
    let mut idx: Vec<usize> = healthy.iter().map(|(i, _)| *i).collect();
    let tie: HashMap<usize, u32> = idx.iter().map(|i| (*i, rng.random::<u32>())).collect();
    let c = |i: &usize| &cands[*i];
    match route.strategy {
        // A script chose the target before ordering; the rest follow by load.
        Strategy::LeastLoad | Strategy::Script => idx.sort_by_key(|i| (c(i).load, tie[i])),
        Strategy::Priority => idx.sort_by_key(|i| (c(i).spec.priority, c(i).load, tie[i])),
        Strategy::FirstAvailable => {}
        Strategy::Cost => by_cost(&mut idx, cands, est, &tie),
        Strategy::Latency => by_latency(&mut idx, cands, &tie, rng),
        Strategy::RoundRobin => round_robin(&mut idx, &route.name, rot),
        Strategy::Weighted => weighted(&mut idx, cands, &tie, &route.name, rot),
    }
    let attempts_by_idx: HashMap<usize, Attempt> = healthy.into_iter().collect();
    let mut out: Vec<(Attempt, String)> = probes
        .into_iter()
        .map(|(i, a)| (a, cands[i].spec.pool.clone()))
        .collect();
    for i in idx {
        if let Some(a) = attempts_by_idx.get(&i) {
            out.push((a.clone(), cands[i].spec.pool.clone()));
        }
    }
    (out, blocked)
}

/// The candidates that can be used now, by index, with their attempts; and what blocks the
/// others. `cost` leaves out the targets whose context window the request does not fit.
fn available(
    route: &Route,
    cands: &[Cand<'_>],
    est: Estimate,
    now: u64,
    rng: &mut impl Rng,
) -> (Vec<(usize, Attempt)>, Vec<Blocked>) {
    let mut ready = Vec::new();
    let mut blocked = Vec::new();
    for (i, c) in cands.iter().enumerate() {
        if route.strategy == Strategy::Cost
            && c.spec
                .context_window
                .is_some_and(|w| w < est.prompt_tokens + est.completion_tokens)
        {
            continue;
        }
        match pick(c, now, rng) {
            Ok(a) => ready.push((i, a)),
            Err(b) => blocked.push(b),
        }
    }
    (ready, blocked)
}

/// `cost`: cheapest for the estimated tokens first; then least load.
fn by_cost(idx: &mut [usize], cands: &[Cand<'_>], est: Estimate, tie: &HashMap<usize, u32>) {
    let c = |i: &usize| &cands[*i];
    let price = |i: &usize| {
        let s = c(i).spec;
        s.cost_input_per_mtok * est.prompt_tokens as f64 + s.cost_output_per_mtok * est.completion_tokens as f64
    };
    idx.sort_by(|a, b| {
        price(a)
            .total_cmp(&price(b))
            .then(c(a).load.cmp(&c(b).load))
            .then(tie[a].cmp(&tie[b]))
    });
}

/// `latency`: by latency EWMA, with the better of two random ones first.
fn by_latency(idx: &mut Vec<usize>, cands: &[Cand<'_>], tie: &HashMap<usize, u32>, rng: &mut impl Rng) {
    let lat = |i: &usize| cands[*i].health.latency_ms.unwrap_or(0.0);
    idx.sort_by(|a, b| lat(a).total_cmp(&lat(b)).then(tie[a].cmp(&tie[b])));
    if idx.len() >= 2 {
        // Power of two choices: the better of two random ones goes first.
        let x = rng.random_range(0..idx.len());
        let mut y = rng.random_range(0..idx.len() - 1);
        if y >= x {
            y += 1;
        }
        let first = if lat(&idx[x]) <= lat(&idx[y]) { x } else { y };
        let chosen = idx.remove(first);
        idx.insert(0, chosen);
    }
}

/// `round_robin`: the targets rotated by this router's count of the route's plans.
fn round_robin(idx: &mut [usize], route: &str, rot: &mut Rotation) {
    if !idx.is_empty() {
        let n = rot.counters.entry(route.to_owned()).or_insert(0);
        let k = *n % idx.len();
        *n = n.wrapping_add(1);
        idx.rotate_left(k);
    }
}

/// `weighted`: smooth weighted round robin over every target of the route; the chosen one
/// must be available, the rest follow by weight.
fn weighted(idx: &mut Vec<usize>, cands: &[Cand<'_>], tie: &HashMap<usize, u32>, route: &str, rot: &mut Rotation) {
    if idx.is_empty() {
        return;
    }
    let weight = |i: &usize| cands[*i].spec.weight;
    let cur = rot
        .current
        .entry(route.to_owned())
        .or_insert_with(|| vec![0; cands.len()]);
    if cur.len() != cands.len() {
        *cur = vec![0; cands.len()];
    }
    let total: i64 = idx.iter().map(|i| i64::from(weight(i))).sum();
    for i in idx.iter() {
        cur[*i] += i64::from(weight(i));
    }
    let best = idx
        .iter()
        .copied()
        .max_by_key(|i| (cur[*i], std::cmp::Reverse(*i)))
        .unwrap_or(idx[0]);
    cur[best] -= total;
    idx.sort_by_key(|i| (std::cmp::Reverse(weight(i)), tie[i]));
    idx.retain(|i| *i != best);
    idx.insert(0, best);
}

/// Assembles the plan: the route's attempts, then its fallbacks', without repeats, within
/// the retry budget, in the pool of the first. An empty plan is an error for the client:
/// 429 (with the soonest recovery) when everything is cooling, 503 otherwise.
pub fn assemble(routes: Vec<Ordered>, max_attempts: usize, wait_ms: u64, now: u64) -> Result<Plan, ApiError> {
    let mut attempts: Vec<Attempt> = Vec::new();
    let mut pool: Option<String> = None;
    let mut blocked = Vec::new();
    for (route_attempts, b) in routes {
        blocked.extend(b);
        for (a, p) in route_attempts {
            let pool = pool.get_or_insert_with(|| p.clone());
            if *pool != p || attempts.iter().any(|x| x.provider == a.provider && x.model == a.model) {
                continue;
            }
            attempts.push(a);
        }
    }
    attempts.truncate(max_attempts);
    match pool {
        Some(pool) if !attempts.is_empty() => Ok(Plan {
            pool,
            attempts,
            wait_ms,
            cache: None,
        }),
        _ => {
            let soonest = blocked.iter().map(|b| b.until_ms).min().unwrap_or(now);
            let retry_after_s = soonest.saturating_sub(now).div_ceil(1000).max(1);
            if !blocked.is_empty() && blocked.iter().all(|b| b.cooling) {
                Err(ApiError::RateLimited {
                    message: format!("Every upstream for this model is rate-limited; retry in {retry_after_s} s."),
                    retry_after_s: Some(retry_after_s),
                })
            } else {
                Err(ApiError::Unavailable {
                    message: format!("No upstream for this model is healthy right now; retry in {retry_after_s} s."),
                })
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use llmr_store::Circuit;
    use rand::SeedableRng;
    use rand::rngs::StdRng;

    fn spec(name: &str) -> TargetSpec {
        TargetSpec {
            provider: name.into(),
            model: "m".into(),
            pool: "default".into(),
            weight: 1,
            priority: 0,
            cost_input_per_mtok: 0.0,
            cost_output_per_mtok: 0.0,
            context_window: None,
            keys: 0,
            limited: false,
            xml_tools: false,
        }
    }

    fn route(strategy: Strategy, specs: Vec<TargetSpec>) -> Route {
        Route {
            tools: Vec::new(),
            name: "g".into(),
            strategy,
            targets: specs,
            fallbacks: vec![],
            cache: None,
        }
    }

    fn cands(r: &Route) -> Vec<Cand<'_>> {
        r.targets
            .iter()
            .map(|s| Cand {
                spec: s,
                load: 0,
                health: HealthRecord::default(),
                keys: vec![],
            })
            .collect()
    }

    fn names(v: &[(Attempt, String)]) -> Vec<&str> {
        v.iter().map(|(a, _)| a.provider.as_str()).collect()
    }

    fn run(r: &Route, cs: &[Cand<'_>], seed: u64) -> Vec<String> {
        let mut rng = StdRng::seed_from_u64(seed);
        let (o, _) = order(r, cs, Estimate::default(), 1000, &mut rng, &mut Rotation::default());
        names(&o).into_iter().map(str::to_owned).collect()
    }

    #[test]
    fn least_load_first_and_ties_at_random() {
        let r = route(Strategy::LeastLoad, vec![spec("a"), spec("b"), spec("c")]);
        let mut cs = cands(&r);
        cs[0].load = 5;
        cs[1].load = 1;
        cs[2].load = 3;
        assert_eq!(run(&r, &cs, 1), vec!["b", "c", "a"]);
        for c in cs.iter_mut() {
            c.load = 0;
        }
        let firsts: std::collections::HashSet<String> = (0..40).map(|s| run(&r, &cs, s)[0].clone()).collect();
        assert_eq!(firsts.len(), 3);
    }

    #[test]
    fn weighted_follows_the_weights_smoothly() {
        let mut specs = vec![spec("a"), spec("b"), spec("c")];
        specs[0].weight = 5;
        specs[1].weight = 1;
        specs[2].weight = 1;
        let r = route(Strategy::Weighted, specs);
        let cs = cands(&r);
        let mut rng = StdRng::seed_from_u64(3);
        let mut rot = Rotation::default();
        let firsts: Vec<String> = (0..7)
            .map(|_| names(&order(&r, &cs, Estimate::default(), 0, &mut rng, &mut rot).0)[0].to_owned())
            .collect();
        assert_eq!(firsts.iter().filter(|f| *f == "a").count(), 5);
        assert_eq!(
            firsts,
            vec!["a", "a", "b", "a", "c", "a", "a"],
            "smooth: never five in a row"
        );
    }

    #[test]
    fn round_robin_rotates() {
        let r = route(Strategy::RoundRobin, vec![spec("a"), spec("b"), spec("c")]);
        let cs = cands(&r);
        let mut rng = StdRng::seed_from_u64(3);
        let mut rot = Rotation::default();
        let firsts: Vec<String> = (0..4)
            .map(|_| names(&order(&r, &cs, Estimate::default(), 0, &mut rng, &mut rot).0)[0].to_owned())
            .collect();
        assert_eq!(firsts, vec!["a", "b", "c", "a"]);
    }

    #[test]
    fn priority_takes_the_lowest_healthy_tier() {
        let mut specs = vec![spec("hi1"), spec("lo"), spec("hi2")];
        specs[0].priority = 0;
        specs[1].priority = 1;
        specs[2].priority = 0;
        let r = route(Strategy::Priority, specs);
        let mut cs = cands(&r);
        cs[0].load = 3;
        assert_eq!(run(&r, &cs, 1), vec!["hi2", "hi1", "lo"]);
        cs[0].health.cooldown_until_ms = 99_999;
        cs[2].health = HealthRecord {
            circuit: Circuit::Open,
            open_until_ms: 99_999,
            ..HealthRecord::default()
        };
        assert_eq!(
            run(&r, &cs, 1),
            vec!["lo"],
            "the next tier when the first has no healthy target"
        );
    }

    #[test]
    fn cost_picks_the_cheapest_that_fits() {
        let mut specs = vec![spec("pricey"), spec("cheap-small"), spec("cheap")];
        specs[0].cost_input_per_mtok = 10.0;
        specs[1].cost_input_per_mtok = 0.1;
        specs[1].context_window = Some(100);
        specs[2].cost_input_per_mtok = 1.0;
        let r = route(Strategy::Cost, specs);
        let cs = cands(&r);
        let mut rng = StdRng::seed_from_u64(1);
        let small = Estimate {
            prompt_tokens: 50,
            completion_tokens: 10,
        };
        assert_eq!(
            names(&order(&r, &cs, small, 0, &mut rng, &mut Rotation::default()).0),
            vec!["cheap-small", "cheap", "pricey"]
        );
        let big = Estimate {
            prompt_tokens: 5000,
            completion_tokens: 10,
        };
        assert_eq!(
            names(&order(&r, &cs, big, 0, &mut rng, &mut Rotation::default()).0),
            vec!["cheap", "pricey"]
        );
    }

    #[test]
    fn latency_prefers_the_faster_of_two() {
        let r = route(Strategy::Latency, vec![spec("slow"), spec("fast")]);
        let mut cs = cands(&r);
        cs[0].health.latency_ms = Some(900.0);
        cs[1].health.latency_ms = Some(50.0);
        for seed in 0..10 {
            assert_eq!(run(&r, &cs, seed), vec!["fast", "slow"]);
        }
    }

    #[test]
    fn first_available_keeps_the_configured_order() {
        let r = route(Strategy::FirstAvailable, vec![spec("x"), spec("y"), spec("z")]);
        let mut cs = cands(&r);
        cs[2].load = 0;
        cs[0].load = 9;
        assert_eq!(run(&r, &cs, 5), vec!["x", "y", "z"]);
    }

    #[test]
    fn recovered_circuits_are_probed_first() {
        let r = route(Strategy::LeastLoad, vec![spec("ok"), spec("recovered")]);
        let mut cs = cands(&r);
        cs[1].health = HealthRecord {
            circuit: Circuit::Open,
            open_until_ms: 500,
            ..HealthRecord::default()
        };
        let mut rng = StdRng::seed_from_u64(1);
        let (o, _) = order(&r, &cs, Estimate::default(), 1000, &mut rng, &mut Rotation::default());
        assert_eq!(names(&o), vec!["recovered", "ok"]);
        assert!(o[0].0.probe && !o[1].0.probe);
    }

    #[test]
    fn keys_least_used_among_healthy_and_cooling_keys_skipped() {
        let mut s = spec("p");
        s.keys = 3;
        let r = route(Strategy::LeastLoad, vec![s]);
        let mut cs = cands(&r);
        let cool = HealthRecord {
            cooldown_until_ms: 5000,
            ..HealthRecord::default()
        };
        cs[0].keys = vec![(HealthRecord::default(), 10), (cool, 0), (HealthRecord::default(), 4)];
        let mut rng = StdRng::seed_from_u64(1);
        assert_eq!(pick(&cs[0], 1000, &mut rng).unwrap().key, Some(2));
        cs[0].keys = vec![
            (cool, 0),
            (
                HealthRecord {
                    cooldown_until_ms: 3000,
                    ..HealthRecord::default()
                },
                0,
            ),
        ];
        assert_eq!(
            pick(&cs[0], 1000, &mut rng).unwrap_err(),
            Blocked {
                until_ms: 3000,
                cooling: true
            }
        );
    }

    #[test]
    fn assembles_fallbacks_within_the_budget_and_reports_why_nothing_is_left() {
        let a = |p: &str| (Attempt::new(p, "m"), "default".to_string());
        let plan = assemble(
            vec![(vec![a("x"), a("y")], vec![]), (vec![a("y"), a("z"), a("w")], vec![])],
            3,
            0,
            0,
        )
        .unwrap();
        assert_eq!(
            plan.attempts.iter().map(|a| a.provider.as_str()).collect::<Vec<_>>(),
            vec!["x", "y", "z"]
        );
        let cooling = vec![
            Blocked {
                until_ms: 4500,
                cooling: true,
            },
            Blocked {
                until_ms: 2200,
                cooling: true,
            },
        ];
        match assemble(vec![(vec![], cooling)], 3, 0, 1000) {
            Err(ApiError::RateLimited { retry_after_s, .. }) => assert_eq!(retry_after_s, Some(2)),
            other => panic!("{other:?}"),
        }
        let mixed = vec![
            Blocked {
                until_ms: 4500,
                cooling: false,
            },
            Blocked {
                until_ms: 2200,
                cooling: true,
            },
        ];
        assert_eq!(assemble(vec![(vec![], mixed)], 3, 0, 1000).unwrap_err().status(), 503);
    }
}
