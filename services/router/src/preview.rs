//! The plan a model would get now, for operators (the gateway's `GET /admin/plan`): the
//! attempts in the order a worker would try them, then every other target of the route and
//! its fallback groups with why it was left out (cooling down, circuit open, every key
//! down, another pool, beyond `router.max_attempts`).
//!
//! It runs the router's own code — [`Routing::resolve`], the store's routing state,
//! [`plan::order`](crate::plan::order) and [`plan::assemble`](crate::plan::assemble) —
//! for a request of no tokens. Two things differ from a real request, by design: a routing
//! script is not asked (its choice depends on the request; the order shown is its fallback,
//! least load), and `weighted` / `round_robin` rotate from the start, as on a router that
//! just started — the first target shown is one a router could choose, not the one the next
//! request will get.

use llmr_config::Strategy;
use llmr_protocol::{ApiError, Plan};
use llmr_store::Availability;

use crate::catalog::{Route, TargetSpec};
use crate::plan::{self, Cand};
use crate::routing::{Routing, State};

/// The plan a model would get now.
#[derive(Debug, Clone)]
pub struct Preview {
    pub model: String,
    /// The group of that name, when it is one (else a model providers serve, or `auto`).
    pub group: Option<String>,
    /// The strategy of its route.
    pub strategy: Strategy,
    /// The pool the plan runs in (none when nothing can be tried now).
    pub pool: Option<String>,
    /// Its targets: the attempts in order, then those left out.
    pub targets: Vec<Step>,
}

/// One target of a preview.
#[derive(Debug, Clone)]
pub struct Step {
    /// `provider/model`.
    pub target: String,
    /// The route (group or model) it belongs to: the model's, or a fallback group's.
    pub route: String,
    pub pool: String,
    /// Whether it takes a call now: its own record's availability, or what blocks every
    /// key of its provider when that is what left it out.
    pub availability: Availability,
    pub load: u64,
    pub latency_ms: Option<f64>,
    /// The key index the attempt would use.
    pub key: Option<u32>,
    /// The attempt must win the probe of a recovered circuit first.
    pub probe: bool,
    /// Why it is not tried; None for the plan's attempts.
    pub skipped: Option<String>,
}

impl Routing {
    /// What routing would do with `model` now: 404 when no route serves it, 503 when the
    /// routing state cannot be read (and `degraded.routing_state` is closed).
    pub async fn preview(&self, model: &str, now: u64) -> Result<Preview, ApiError> {
        let routes = self
            .resolve(model)
            .ok_or_else(|| ApiError::ModelNotFound {
                model: model.to_owned(),
            })?
            .routes;
        let state = self.state_of(&routes, now, true).await?;
        let planned = self.order(&state, &routes, None, 0, now);
        let plan = planned.as_ref().ok();
        let mut targets: Vec<Step> = plan
            .map(|p| {
                p.attempts
                    .iter()
                    .filter_map(|a| attempt_step(&state, &routes, a, now))
                    .collect()
            })
            .unwrap_or_default();
        for r in &routes {
            for t in &r.targets {
                if targets.iter().any(|s| s.target == t.lease()) {
                    continue;
                }
                let cand = state.cand(t);
                let (reason, blocked) = self.left_out(&cand, plan, now);
                let mut s = step(&cand, &r.name, now, Some(reason));
                // Its keys may block it where its own record does not.
                s.availability = blocked.unwrap_or(s.availability);
                targets.push(s);
            }
        }
        Ok(Preview {
            model: model.to_owned(),
            group: self.catalog.is_group(model).then(|| model.to_owned()),
            strategy: routes[0].strategy,
            pool: plan.map(|p| p.pool.clone()),
            targets,
        })
    }

    /// Why a target the plan does not hold was left out, and what blocks it (itself or
    /// every key of its provider) when something does.
    fn left_out(&self, c: &Cand<'_>, plan: Option<&Plan>, now: u64) -> (String, Option<Availability>) {
        let picked = plan::pick(c, now, &mut *self.rng.borrow_mut());
        let why = match (picked, plan) {
            (Err(b), _) => {
                let whose = match c.health.availability(now) {
                    Availability::Available | Availability::Probe => "every key of its provider is",
                    Availability::CoolingUntil(_) | Availability::OpenUntil(_) => "it is",
                };
                let what = if b.cooling {
                    "cooling down (rate-limited)"
                } else {
                    "behind an open circuit"
                };
                let blocked = if b.cooling {
                    Availability::CoolingUntil(b.until_ms)
                } else {
                    Availability::OpenUntil(b.until_ms)
                };
                return (format!("{whose} {what} until {}", b.until_ms), Some(blocked));
            }
            (Ok(_), Some(p)) if p.pool != c.spec.pool => {
                format!("it runs in pool `{}`; this plan runs in pool `{}`", c.spec.pool, p.pool)
            }
            (Ok(_), _) => format!("beyond router.max_attempts ({})", self.max_attempts),
        };
        (why, None)
    }
}

/// The step of one attempt of the plan.
fn attempt_step(state: &State, routes: &[Route], a: &llmr_protocol::Attempt, now: u64) -> Option<Step> {
    let (route, spec) = routes.iter().find_map(|r| {
        r.targets
            .iter()
            .find(|t| t.provider == a.provider && t.model == a.model)
            .map(|t| (r, t))
    })?;
    let mut s = step(&state.cand(spec), &route.name, now, None);
    s.key = a.key;
    s.probe = a.probe || a.probe_key;
    Some(s)
}

fn step(c: &Cand<'_>, route: &str, now: u64, skipped: Option<String>) -> Step {
    let spec: &TargetSpec = c.spec;
    Step {
        target: spec.lease(),
        route: route.to_owned(),
        pool: spec.pool.clone(),
        availability: c.health.availability(now),
        load: c.load,
        latency_ms: c.health.latency_ms,
        key: None,
        probe: false,
        skipped,
    }
}

#[cfg(test)]
#[allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]
mod tests {
    use std::sync::Arc;
    use std::time::Duration;

    use llmr_protocol::now_ms;
    use llmr_store::Store;

    use super::*;
    use crate::Catalog;

    const TOML: &str = r#"
[router]
max_attempts = 2
[[providers]]
name = "a"
type = "echo"
models = ["m"]
[[providers]]
name = "b"
type = "echo"
models = ["m"]
api_keys = ["k0", "k1"]
[[providers]]
name = "c"
type = "echo"
models = ["m"]
pool = "gpu"
[[models]]
name = "g"
strategy = "first_available"
targets = [{ provider = "a", model = "m" }, { provider = "b", model = "m" }]
fallbacks = ["h"]
[[models]]
name = "h"
targets = [{ provider = "c", model = "m" }]
"#;

    fn routing(store: &Store) -> Routing {
        let settings = llmr_config::load_toml(TOML, Default::default()).unwrap();
        let catalog = Arc::new(Catalog::from_settings(&settings));
        let peers = llmr_store::Peers::watch(store, Duration::from_secs(60));
        Routing::new(&settings, store.clone(), peers, catalog, None)
    }

    fn shown(p: &Preview) -> Vec<(&str, Option<&str>)> {
        p.targets
            .iter()
            .map(|s| (s.target.as_str(), s.skipped.as_deref()))
            .collect()
    }

    #[tokio::test]
    async fn shows_the_attempts_in_order_then_what_was_left_out() {
        let store = Store::memory();
        let p = routing(&store).preview("g", now_ms()).await.unwrap();
        assert_eq!((p.group.as_deref(), p.strategy), (Some("g"), Strategy::FirstAvailable));
        assert_eq!(p.pool.as_deref(), Some("default"));
        assert_eq!(
            shown(&p),
            vec![
                ("a/m", None),
                ("b/m", None),
                ("c/m", Some("it runs in pool `gpu`; this plan runs in pool `default`")),
            ]
        );
        assert_eq!((p.targets[0].route.as_str(), p.targets[2].route.as_str()), ("g", "h"));
        assert!(p.targets[1].key.is_some(), "a provider with keys names the key");
    }

    #[tokio::test]
    async fn a_cooling_target_goes_last_and_says_until_when() {
        let store = Store::memory();
        let until = now_ms() + 60_000;
        store.cooldown("t:a/m", until).await.unwrap();
        let p = routing(&store).preview("g", now_ms()).await.unwrap();
        let cooling = format!("it is cooling down (rate-limited) until {until}");
        assert_eq!(shown(&p)[0], ("b/m", None));
        assert_eq!(shown(&p)[1], ("a/m", Some(cooling.as_str())));
        assert_eq!(p.targets[1].availability, Availability::CoolingUntil(until));
        // Every key of `b` down too: nothing to try now, each says why.
        store.cooldown("k:b#0", until).await.unwrap();
        store.cooldown("k:b#1", until).await.unwrap();
        let p = routing(&store).preview("g", now_ms()).await.unwrap();
        assert_eq!(p.pool.as_deref(), Some("gpu"), "the fallback group's pool");
        assert_eq!(
            shown(&p)[2],
            (
                "b/m",
                Some(format!("every key of its provider is cooling down (rate-limited) until {until}").as_str())
            )
        );
        assert_eq!(p.targets[2].availability, Availability::CoolingUntil(until));
    }

    #[tokio::test]
    async fn plain_models_and_unknown_ones() {
        let store = Store::memory();
        let r = routing(&store);
        let p = r.preview("m", now_ms()).await.unwrap();
        assert_eq!((p.group, p.strategy), (None, Strategy::LeastLoad));
        // Ties at random: the first target's pool is the plan's; the others say why not.
        let pool = p.pool.clone().unwrap();
        assert_eq!(p.targets.len(), 3);
        for s in &p.targets {
            match &s.skipped {
                None => assert_eq!(s.pool, pool),
                Some(why) => assert!(s.pool != pool && why.contains("pool"), "{why}"),
            }
        }
        let e = r.preview("nope", now_ms()).await.unwrap_err();
        assert_eq!(e.status(), 404);
    }
}
