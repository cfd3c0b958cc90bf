//! The router's consumer actor: read a batch of requests, route each, repeat.

use std::cell::RefCell;
use std::rc::Rc;
use std::time::Duration;

use actix::{Actor, ActorFutureExt, AsyncContext, Context, Handler, Message, ResponseActFuture, WrapFuture};
use llmr_bus::{Bus, Caller, Consumer, Delivery};
use llmr_config::Settings;
use llmr_protocol::{ApiError, Envelope, Frame, Kind, Plan, now_ms};
use llmr_store::Store;
use rand::SeedableRng;
use rand::rngs::StdRng;

use crate::catalog::{Catalog, Route, TargetSpec};
use crate::plan::{self, Cand, Estimate, Rotation};
use crate::script::{Choice, RoutingScript};
use llmr_config::Strategy;
use llmr_store::{HealthRecord, key_id, key_name, target_id, utc_day};

/// Read and route the next batch.
#[derive(Message)]
#[rtype(result = "()")]
pub struct Poll;

/// Take over requests a dead router held.
#[derive(Message)]
#[rtype(result = "()")]
pub struct Reclaim;

/// Stop reading new requests.
#[derive(Message)]
#[rtype(result = "()")]
pub struct Drain;

const BLOCK: Duration = Duration::from_millis(1000);
const ERROR_BACKOFF: Duration = Duration::from_millis(500);

pub struct Shared {
    pub(crate) bus: Bus,
    store: Store,
    catalog: Rc<Catalog>,
    rng: RefCell<StdRng>,
    rotation: RefCell<Rotation>,
    max_attempts: usize,
    first_available_wait_ms: u64,
    /// Calls to workers and mcp-tools made by the tool loop.
    pub(crate) caller: Caller,
    pub(crate) max_tool_rounds: u32,
    /// Namespaces of remote MCP servers (their tools are `{namespace}_{name}`).
    pub(crate) namespaces: Vec<String>,
    script: Option<RoutingScript>,
}

pub struct RouterActor {
    shared: Rc<Shared>,
    consumer: Option<Consumer>,
    batch: usize,
    claim_idle: Duration,
    /// Set by the reclaim timer, served by the next poll (which holds the consumer).
    reclaim_due: bool,
    draining: bool,
}

impl RouterActor {
    pub fn new(
        settings: &Settings,
        bus: Bus,
        store: Store,
        catalog: Rc<Catalog>,
        consumer: Consumer,
        caller: Caller,
        script: Option<RoutingScript>,
    ) -> RouterActor {
        RouterActor {
            shared: Rc::new(Shared {
                bus,
                store,
                catalog,
                rng: RefCell::new(StdRng::from_os_rng()),
                rotation: RefCell::new(Rotation::default()),
                max_attempts: settings.router.max_attempts,
                first_available_wait_ms: settings.router.first_available_wait_ms,
                caller,
                max_tool_rounds: settings.mcp.max_tool_rounds,
                namespaces: settings
                    .mcp
                    .remote_servers
                    .iter()
                    .map(|r| r.namespace.clone())
                    .collect(),
                script,
            }),
            consumer: Some(consumer),
            batch: settings.router.batch,
            claim_idle: Duration::from_millis(settings.redis.claim_idle_ms),
            reclaim_due: false,
            draining: false,
        }
    }
}

impl Actor for RouterActor {
    type Context = Context<Self>;

    fn started(&mut self, ctx: &mut Context<Self>) {
        ctx.notify(Poll);
        if !self.shared.bus.is_memory() {
            ctx.run_interval(self.claim_idle / 2, |_, ctx| ctx.notify(Reclaim));
        }
    }
}

impl Handler<Poll> for RouterActor {
    type Result = ResponseActFuture<Self, ()>;

    fn handle(&mut self, _: Poll, _: &mut Context<Self>) -> Self::Result {
        if self.draining {
            return Box::pin(actix::fut::ready(()));
        }
        let Some(mut consumer) = self.consumer.take() else {
            return Box::pin(actix::fut::ready(()));
        };
        let (shared, batch, idle) = (self.shared.clone(), self.batch, self.claim_idle);
        let reclaim = std::mem::take(&mut self.reclaim_due);
        Box::pin(
            async move {
                if reclaim {
                    match consumer.reclaim(idle, batch).await {
                        Ok(d) if !d.is_empty() => {
                            tracing::info!(count = d.len(), "routing requests reclaimed from a stopped router");
                            route_batch(&shared, &consumer, d).await;
                        }
                        Ok(_) => {}
                        Err(e) => tracing::warn!(error = %e, "router cannot reclaim requests"),
                    }
                }
                let ok = match consumer.read(batch, BLOCK).await {
                    Ok(deliveries) => {
                        route_batch(&shared, &consumer, deliveries).await;
                        true
                    }
                    Err(e) => {
                        tracing::warn!(error = %e, "router cannot read requests");
                        false
                    }
                };
                (consumer, ok)
            }
            .into_actor(self)
            .map(|(consumer, ok), act, ctx| {
                act.consumer = Some(consumer);
                if ok {
                    ctx.notify(Poll);
                } else {
                    ctx.notify_later(Poll, ERROR_BACKOFF);
                }
            }),
        )
    }
}

impl Handler<Reclaim> for RouterActor {
    type Result = ();

    fn handle(&mut self, _: Reclaim, _: &mut Context<Self>) {
        self.reclaim_due = true;
    }
}

impl Handler<Drain> for RouterActor {
    type Result = ();

    fn handle(&mut self, _: Drain, _: &mut Context<Self>) {
        self.draining = true;
    }
}

/// Routes a batch: one store round trip each for loads, health and key usage of every
/// target the batch may use, then one atomic forward of all jobs. Requests with server-side
/// tools go to the tool loop; routing scripts run for the batch concurrently.
async fn route_batch(shared: &Rc<Shared>, consumer: &Consumer, deliveries: Vec<Delivery>) {
    let now = now_ms();
    let mut routable = Vec::with_capacity(deliveries.len());
    let mut looped = Vec::new();
    for d in deliveries {
        if d.envelope.expired(now) {
            answer(shared, consumer, &d, ApiError::DeadlineExceeded).await;
            continue;
        }
        let Some(route) = shared.catalog.route(&d.envelope.meta.model) else {
            answer(
                shared,
                consumer,
                &d,
                ApiError::ModelNotFound {
                    model: d.envelope.meta.model.clone(),
                },
            )
            .await;
            continue;
        };
        let routes = with_fallbacks(shared, route);
        if crate::toolloop::needed(&routes[0], &d.envelope.body) {
            looped.push(d.entry.clone());
            actix::spawn(crate::toolloop::run(shared.clone(), d.envelope, routes));
            continue;
        }
        routable.push((d, routes));
    }
    if !looped.is_empty()
        && let Err(e) = consumer.ack(&looped).await
    {
        tracing::warn!(error = %e, "could not ack requests handed to the tool loop");
    }
    if routable.is_empty() {
        return;
    }
    // Every distinct target and key the batch may use.
    let mut targets: Vec<TargetSpec> = Vec::new();
    for (_, routes) in &routable {
        for t in routes.iter().flat_map(|r| &r.targets) {
            if !targets.iter().any(|x| x.provider == t.provider && x.model == t.model) {
                targets.push(t.clone());
            }
        }
    }
    let state = fetch_state(shared, &targets, now).await;
    let choices = futures_util::future::join_all(
        routable
            .iter()
            .map(|(d, routes)| scripted(shared, &state, &d.envelope, routes, now)),
    )
    .await;
    let mut jobs = Vec::with_capacity(routable.len());
    for ((d, mut routes), choice) in routable.into_iter().zip(choices) {
        let env = &d.envelope;
        let span = tracing::info_span!("route", request_id = %env.id, model = %env.meta.model, provider = tracing::field::Empty);
        llmr_telemetry::set_parent(&span, &env.traceparent);
        let _enter = span.enter();
        let prefer = match choice {
            Some(Choice::Target { provider, model }) => Some((provider, model)),
            Some(Choice::Route(name)) => {
                routes = with_fallbacks(shared, shared.catalog.route(&name).unwrap_or_else(|| routes[0].clone()));
                None
            }
            None => None,
        };
        let plan = match make_plan(shared, &state, &routes, prefer, env.body.len(), now) {
            Ok(p) => p,
            Err(e) => {
                drop(_enter);
                answer(shared, consumer, &d, e).await;
                continue;
            }
        };
        span.record("provider", plan.attempts[0].provider.as_str());
        let stream = format!("jobs:{}", plan.pool);
        let job = Envelope {
            kind: Kind::Job,
            traceparent: llmr_telemetry::traceparent(&span, &env.traceparent),
            meta: llmr_protocol::Meta {
                plan: Some(plan),
                ..env.meta.clone()
            },
            ..env.clone()
        };
        jobs.push((d.entry.clone(), stream, job));
    }
    if let Err(e) = consumer.forward_many(&jobs).await {
        // Left pending: they are routed again when reclaimed.
        tracing::warn!(error = %e, count = jobs.len(), "could not hand jobs to a worker pool");
    }
}

/// The route, then its fallback groups (each once), in order.
fn with_fallbacks(shared: &Shared, route: Route) -> Vec<Route> {
    let mut routes = vec![route];
    let mut i = 0;
    while i < routes.len() {
        for fb in routes[i].fallbacks.clone() {
            if !routes.iter().any(|r| r.name == fb)
                && let Some(r) = shared.catalog.route(&fb)
            {
                routes.push(r);
            }
        }
        i += 1;
    }
    routes
}

/// Asks the routing script, for routes with `strategy = "script"` (and `auto`); None when
/// there is no script or it failed (the default strategy applies, with a warning).
async fn scripted(shared: &Shared, state: &State, env: &Envelope, routes: &[Route], now: u64) -> Option<Choice> {
    let route = &routes[0];
    if route.strategy != Strategy::Script {
        return None;
    }
    let script = shared.script.as_ref()?;
    let candidates: Vec<serde_json::Value> = route
        .targets
        .iter()
        .map(|t| {
            let c = state.cand(t);
            let (available, until) = match c.health.availability(now) {
                llmr_store::Availability::Available | llmr_store::Availability::Probe => (true, 0),
                llmr_store::Availability::CoolingUntil(t) | llmr_store::Availability::OpenUntil(t) => (false, t),
            };
            serde_json::json!({
                "target": t.lease(),
                "provider": t.provider,
                "model": t.model,
                "pool": t.pool,
                "load": c.load,
                "available": available,
                "unavailable_until_ms": until,
                "circuit": c.health.circuit.as_str(),
                "latency_ms": c.health.latency_ms,
                "cost_input_per_mtok": t.cost_input_per_mtok,
                "cost_output_per_mtok": t.cost_output_per_mtok,
                "context_window": t.context_window,
                "weight": t.weight,
                "priority": t.priority,
            })
        })
        .collect();
    let args = serde_json::json!({
        "request": crate::script::summary(&env.meta.model, &env.body, env.meta.stream),
        "candidates": candidates,
        "groups": shared.catalog.group_names(),
    });
    match script.choose(args).await {
        Ok(Choice::Target { provider, model })
            if route.targets.iter().any(|t| t.provider == provider && t.model == model) =>
        {
            Some(Choice::Target { provider, model })
        }
        Ok(Choice::Route(name)) if name != route.name && shared.catalog.route(&name).is_some() => {
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

/// Orders `routes` into a plan from `state`; `prefer` goes first when it is ready.
fn make_plan(
    shared: &Shared,
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
    {
        let mut rng = shared.rng.borrow_mut();
        let mut rot = shared.rotation.borrow_mut();
        for (i, r) in routes.iter().enumerate() {
            if r.strategy == Strategy::FirstAvailable {
                wait_ms = shared.first_available_wait_ms;
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
    }
    plan::assemble(ordered, shared.max_attempts, wait_ms, now)
}

/// A plan for one request outside a batch (the tool loop's rounds).
pub(crate) async fn plan_for(shared: &Shared, routes: &[Route], body_len: usize, now: u64) -> Result<Plan, ApiError> {
    let mut targets: Vec<TargetSpec> = Vec::new();
    for t in routes.iter().flat_map(|r| &r.targets) {
        if !targets.iter().any(|x| x.provider == t.provider && x.model == t.model) {
            targets.push(t.clone());
        }
    }
    let state = fetch_state(shared, &targets, now).await;
    make_plan(shared, &state, routes, None, body_len, now)
}

/// What the store says about the targets (and their keys) of a batch.
struct State {
    targets: Vec<TargetSpec>,
    loads: Vec<u64>,
    health: Vec<HealthRecord>,
    /// Per target: (health, requests today) of each key.
    keys: Vec<Vec<(HealthRecord, u64)>>,
}

impl State {
    fn cand<'a>(&self, t: &'a TargetSpec) -> Cand<'a> {
        let i = self
            .targets
            .iter()
            .position(|x| x.provider == t.provider && x.model == t.model)
            .unwrap_or(usize::MAX);
        Cand {
            spec: t,
            load: self.loads.get(i).copied().unwrap_or(0),
            health: self.health.get(i).copied().unwrap_or_default(),
            keys: self
                .keys
                .get(i)
                .cloned()
                .unwrap_or_else(|| vec![(HealthRecord::default(), 0); t.keys]),
        }
    }
}

async fn fetch_state(shared: &Shared, targets: &[TargetSpec], now: u64) -> State {
    let leases: Vec<String> = targets.iter().map(TargetSpec::lease).collect();
    let mut ids: Vec<String> = targets.iter().map(|t| target_id(&t.provider, &t.model)).collect();
    let mut pairs = Vec::new();
    for t in targets {
        for k in 0..t.keys {
            ids.push(key_id(&t.provider, k));
            pairs.push((key_name(&t.provider, k), t.model.clone()));
        }
    }
    let day = utc_day(now);
    let state = shared
        .store
        .routing_state(&leases, &ids, &pairs, &day)
        .await
        .unwrap_or_else(|e| {
            tracing::warn!(error = %e, "routing state unavailable; routing as if idle and healthy");
            llmr_store::RoutingState::default()
        });
    let loads = if state.loads.len() == targets.len() {
        state.loads
    } else {
        vec![0; targets.len()]
    };
    let health = if state.health.len() == ids.len() {
        state.health
    } else {
        vec![HealthRecord::default(); ids.len()]
    };
    let used = if state.requests_today.len() == pairs.len() {
        state.requests_today
    } else {
        vec![0; pairs.len()]
    };
    let mut keys = Vec::with_capacity(targets.len());
    let (mut h, mut u) = (targets.len(), 0);
    for t in targets {
        let mut ks = Vec::with_capacity(t.keys);
        for _ in 0..t.keys {
            ks.push((
                health.get(h).copied().unwrap_or_default(),
                used.get(u).copied().unwrap_or(0),
            ));
            h += 1;
            u += 1;
        }
        keys.push(ks);
    }
    State {
        targets: targets.to_vec(),
        loads,
        health: health[..targets.len().min(health.len())].to_vec(),
        keys,
    }
}

/// Answers a request with an error frame and acks it.
async fn answer(shared: &Shared, consumer: &Consumer, d: &Delivery, err: ApiError) {
    tracing::info!(request_id = %d.envelope.id, model = %d.envelope.meta.model, error = %err, "request answered by the router");
    if let Err(e) = shared
        .bus
        .reply(&d.envelope.reply_to, &[Frame::error(d.envelope.id, 0, &err)])
        .await
    {
        tracing::warn!(error = %e, "could not answer a request");
        return;
    }
    if let Err(e) = consumer.ack(std::slice::from_ref(&d.entry)).await {
        tracing::warn!(error = %e, "could not ack an answered request");
    }
}
