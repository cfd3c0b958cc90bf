//! Routing: from a requested model to a plan. Resolves the route and its fallback groups,
//! reads what the store knows of their targets and keys (in one round trip per batch, into
//! named per-target state), asks the routing script where one applies, and orders the
//! candidates into a plan with the pure code of [`plan`](crate::plan).

use foldhash::HashMap;
use std::cell::RefCell;

use llmr_config::{FailPolicy, Settings, Strategy};
use llmr_protocol::{ApiError, Envelope, Plan};
use llmr_store::{Availability, HealthRecord, Store, key_id, key_name, target_id, utc_day};
use rand::SeedableRng;
use rand::rngs::StdRng;
use serde_json::{Value, json};

use crate::catalog::{Catalog, Route, TargetSpec};
use crate::plan::{self, Cand, Estimate, Rotation};
use crate::script::{Choice, RoutingScript};

/// What routing shares across requests: the catalog, the store, the rotation state.
pub struct Routing {
    store: Store,
    /// The services seen alive (workers for jobs, mcp-tools for tool loops).
    peers: llmr_store::Peers,
    pub(crate) catalog: std::sync::Arc<Catalog>,
    pub(crate) rng: RefCell<StdRng>,
    rotation: RefCell<Rotation>,
    pub(crate) max_attempts: usize,
    first_available_wait_ms: u64,
    script: Option<RoutingScript>,
    /// What routing does when the routing state cannot be read.
    state_policy: FailPolicy,
}

/// A request resolved to its routes (the route first, then its fallback groups).
pub struct Resolved {
    pub routes: Vec<Route>,
}

impl Routing {
    /// Routing over `catalog`, with the routing state in `store`; `peers` tells which
    /// services are alive (see [`Routing::require`]).
    pub fn new(
        settings: &Settings,
        store: Store,
        peers: llmr_store::Peers,
        catalog: std::sync::Arc<Catalog>,
        script: Option<RoutingScript>,
    ) -> Routing {
        Routing {
            peers,
            store,
            catalog,
            rng: RefCell::new(StdRng::from_os_rng()),
            rotation: RefCell::new(Rotation::default()),
            max_attempts: settings.router.max_attempts,
            first_available_wait_ms: settings.router.first_available_wait_ms,
            script,
            state_policy: settings.degraded.routing_state,
        }
    }

    /// The routes of `model`, its fallback groups after it (each once); None when the
    /// model is unknown.
    pub fn resolve(&self, model: &str) -> Option<Resolved> {
        let mut routes = vec![self.catalog.route(model)?];
        let mut i = 0;
        while i < routes.len() {
            for fb in routes[i].fallbacks.clone() {
                if !routes.iter().any(|r| r.name == fb)
                    && let Some(r) = self.catalog.route(&fb)
                {
                    routes.push(r);
                }
            }
            i += 1;
        }
        Some(Resolved { routes })
    }

    /// Plans for a batch: one store read for every target the batch may use; routing
    /// scripts of the batch run concurrently.
    pub async fn plan_batch(&self, batch: &[(&Envelope, &[Route])], now: u64) -> Vec<Result<Plan, ApiError>> {
        let state = match self.state(batch.iter().flat_map(|(_, r)| r.iter()), now).await {
            Ok(state) => state,
            Err(e) => return batch.iter().map(|_| Err(e.clone())).collect(),
        };
        let choices =
            futures_util::future::join_all(batch.iter().map(|(env, r)| self.scripted(&state, env, r, now))).await;
        batch
            .iter()
            .zip(choices)
            .map(|((env, r), choice)| {
                let (routes, prefer) = match choice {
                    Some(Choice::Target { provider, model }) => (r.to_vec(), Some((provider, model))),
                    Some(Choice::Route(name)) => match self.resolve(&name) {
                        Some(other) => (other.routes, None),
                        None => (r.to_vec(), None),
                    },
                    None => (r.to_vec(), None),
                };
                self.order(&state, &routes, prefer, env.body.len(), now)
            })
            .collect()
    }

    /// Refused (503) when no instance of `service` is alive within two seconds (one may be
    /// starting), instead of leaving the work unread until its deadline.
    pub async fn require(&self, service: &str) -> Result<(), ApiError> {
        self.peers.require(service, std::time::Duration::from_secs(2)).await
    }

    pub async fn plan_one(&self, routes: &[Route], body_len: usize, now: u64) -> Result<Plan, ApiError> {
        let state = self.state(routes, now).await?;
        self.order(&state, routes, None, body_len, now)
    }

    /// What the store says about every distinct target (and its keys) of `routes`; when it
    /// cannot be read, 503 (`degraded.routing_state = "closed"`) or idle and healthy (`open`).
    /// A target's load is read only where it can order something (see [`Read`]).
    async fn state<'a>(&self, routes: impl IntoIterator<Item = &'a Route>, now: u64) -> Result<State, ApiError> {
        self.state_of(routes, now, false).await
    }

    /// [`Routing::state`], reading every target's load when `every_load` (to show it).
    pub(crate) async fn state_of<'a>(
        &self,
        routes: impl IntoIterator<Item = &'a Route>,
        now: u64,
        every_load: bool,
    ) -> Result<State, ApiError> {
        let mut targets: Vec<Read> = Vec::new();
        for r in routes {
            // Load orders the targets of a route whose strategy sorts by it, when there are
            // two or more; a routing script sees every candidate's load, even one alone.
            let ordered = every_load
                || r.strategy == Strategy::Script
                || (r.targets.len() > 1
                    && matches!(r.strategy, Strategy::LeastLoad | Strategy::Priority | Strategy::Cost));
            for t in &r.targets {
                match targets
                    .iter_mut()
                    .find(|x| x.spec.provider == t.provider && x.spec.model == t.model)
                {
                    Some(x) => x.load |= ordered,
                    None => targets.push(Read {
                        spec: t.clone(),
                        load: ordered,
                    }),
                }
            }
        }
        State::fetch(&self.store, targets, now, self.state_policy).await
    }

    /// Orders `routes` into a plan from `state`; `prefer` goes first when it is ready.
    pub(crate) fn order(
        &self,
        state: &State,
        routes: &[Route],
        prefer: Option<(String, String)>,
        body_len: usize,
        now: u64,
    ) -> Result<Plan, ApiError> {
        let est = Estimate {
            prompt_tokens: body_len as u64 / 4,
            completion_tokens: 0,
        };
        let mut ordered = Vec::with_capacity(routes.len());
        let mut wait_ms = 0;
        let mut rng = self.rng.borrow_mut();
        let mut rot = self.rotation.borrow_mut();
        for (i, r) in routes.iter().enumerate() {
            if r.strategy == Strategy::FirstAvailable {
                wait_ms = self.first_available_wait_ms;
            }
            let cands: Vec<Cand<'_>> = r.targets.iter().map(|t| state.cand(t)).collect();
            let mut o = plan::order(r, &cands, est, now, &mut *rng, &mut rot);
            if i == 0
                && let Some((p, m)) = &prefer
                && let Some(pos) = o.0.iter().position(|(a, _)| &a.provider == p && &a.model == m)
            {
                let chosen = o.0.remove(pos);
                o.0.insert(0, chosen);
            }
            ordered.push(o);
        }
        plan::assemble(ordered, self.max_attempts, wait_ms, now)
    }

    /// Asks the routing script, for routes with `strategy = "script"` (and `auto`); None when
    /// there is no script or it failed (the default strategy applies, with a warning).
    async fn scripted(&self, state: &State, env: &Envelope, routes: &[Route], now: u64) -> Option<Choice> {
        let route = &routes[0];
        if route.strategy != Strategy::Script {
            return None;
        }
        let script = self.script.as_ref()?;
        let candidates: Vec<Value> = route.targets.iter().map(|t| state.describe(t, now)).collect();
        let args = json!({
            "request": crate::script::summary(&env.meta.model, &env.body, env.meta.stream),
            "candidates": candidates,
            "groups": self.catalog.group_names(),
        });
        match script.choose(args).await {
            Ok(Choice::Target { provider, model })
                if route.targets.iter().any(|t| t.provider == provider && t.model == model) =>
            {
                Some(Choice::Target { provider, model })
            }
            Ok(Choice::Route(name)) if name != route.name && self.catalog.route(&name).is_some() => {
                Some(Choice::Route(name))
            }
            Ok(other) => {
                tracing::warn!(request_id = %env.id, choice = ?other, "the routing script chose something this route cannot use; routing by least load");
                None
            }
            Err(e) => {
                tracing::warn!(request_id = %env.id, error = %e, "routing script failed; routing by least load");
                None
            }
        }
    }
}

/// What the store says about one target.
#[derive(Debug, Clone, Default)]
struct TargetState {
    /// Live leases cluster-wide.
    load: u64,
    health: HealthRecord,
    /// Per key: health and requests today.
    keys: Vec<(HealthRecord, u64)>,
}

/// A target whose state a batch reads, and whether its load can order anything. Its keys'
/// requests today are read only when it has two or more keys to choose from.
struct Read {
    spec: TargetSpec,
    load: bool,
}

impl Read {
    /// Whether its keys' requests today choose between them.
    fn usage(&self) -> bool {
        self.spec.keys > 1
    }
}

/// The routing state of a batch's targets, by lease name (`provider/model`).
pub(crate) struct State {
    targets: HashMap<String, TargetState>,
}

impl State {
    /// One pipelined store read; an unreachable store reads as idle and healthy when the
    /// policy is open, and refuses the request when it is closed.
    async fn fetch(store: &Store, targets: Vec<Read>, now: u64, policy: FailPolicy) -> Result<State, ApiError> {
        let leases: Vec<String> = targets.iter().filter(|t| t.load).map(|t| t.spec.lease()).collect();
        let mut ids: Vec<String> = targets
            .iter()
            .map(|t| target_id(&t.spec.provider, &t.spec.model))
            .collect();
        let mut pairs = Vec::new();
        for r in &targets {
            let t = &r.spec;
            for k in 0..t.keys {
                ids.push(key_id(&t.provider, k));
                if r.usage() {
                    pairs.push((key_name(&t.provider, k), t.model.clone()));
                }
            }
        }
        let read = match store.routing_state(&leases, &ids, &pairs, &utc_day(now)).await {
            Ok(read) => read,
            Err(e) if policy.is_open() => {
                tracing::warn!(error = %e, "routing state unavailable; routing as if idle and healthy");
                llmr_store::RoutingState::default()
            }
            Err(e) => {
                tracing::warn!(error = %e, "routing state unavailable; refusing (degraded.routing_state = closed)");
                return Err(ApiError::Unavailable {
                    message: format!("The routing state cannot be read: {e}"),
                });
            }
        };
        // Answers come in the order asked: the loads read; target health, then key health;
        // the key usage read. A short answer (store unavailable) reads as defaults, and what
        // was not read as 0.
        let mut loads = read.loads.into_iter();
        let mut health = read.health.into_iter();
        let mut used = read.requests_today.into_iter();
        let mut states: Vec<TargetState> = targets
            .iter()
            .map(|t| TargetState {
                load: if t.load { loads.next().unwrap_or(0) } else { 0 },
                health: health.next().unwrap_or_default(),
                keys: Vec::new(),
            })
            .collect();
        for (r, s) in targets.iter().zip(&mut states) {
            s.keys = (0..r.spec.keys)
                .map(|_| {
                    let h = health.next().unwrap_or_default();
                    (h, if r.usage() { used.next().unwrap_or(0) } else { 0 })
                })
                .collect();
        }
        Ok(State {
            targets: targets.into_iter().map(|t| t.spec.lease()).zip(states).collect(),
        })
    }

    fn get(&self, t: &TargetSpec) -> TargetState {
        self.targets.get(&t.lease()).cloned().unwrap_or_else(|| TargetState {
            keys: vec![(HealthRecord::default(), 0); t.keys],
            ..TargetState::default()
        })
    }

    pub(crate) fn cand<'a>(&self, t: &'a TargetSpec) -> Cand<'a> {
        let s = self.get(t);
        Cand {
            spec: t,
            load: s.load,
            health: s.health,
            keys: s.keys,
        }
    }

    /// A candidate as the routing script sees it.
    fn describe(&self, t: &TargetSpec, now: u64) -> Value {
        let s = self.get(t);
        let (available, until) = match s.health.availability(now) {
            Availability::Available | Availability::Probe => (true, 0),
            Availability::CoolingUntil(t) | Availability::OpenUntil(t) => (false, t),
        };
        json!({
            "target": t.lease(),
            "provider": t.provider,
            "model": t.model,
            "pool": t.pool,
            "load": s.load,
            "available": available,
            "unavailable_until_ms": until,
            "circuit": s.health.circuit.as_str(),
            "latency_ms": s.health.latency_ms,
            "cost_input_per_mtok": t.cost_input_per_mtok,
            "cost_output_per_mtok": t.cost_output_per_mtok,
            "context_window": t.context_window,
            "weight": t.weight,
            "priority": t.priority,
        })
    }
}
