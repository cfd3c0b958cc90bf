//! The router's consumer actor: read a batch of requests, route each, repeat.

use std::cell::RefCell;
use std::rc::Rc;
use std::time::Duration;

use actix::{Actor, ActorFutureExt, AsyncContext, Context, Handler, Message, ResponseActFuture, WrapFuture};
use llmr_bus::{Bus, Consumer, Delivery};
use llmr_config::Settings;
use llmr_protocol::{ApiError, Envelope, Frame, Kind, now_ms};
use llmr_store::Store;
use rand::SeedableRng;
use rand::rngs::StdRng;

use crate::catalog::{Catalog, TargetSpec};
use crate::plan::{self, Cand, Estimate, Rotation};
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

struct Shared {
    bus: Bus,
    store: Store,
    catalog: Rc<Catalog>,
    rng: RefCell<StdRng>,
    rotation: RefCell<Rotation>,
    max_attempts: usize,
    first_available_wait_ms: u64,
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
    pub fn new(settings: &Settings, bus: Bus, store: Store, catalog: Rc<Catalog>, consumer: Consumer) -> RouterActor {
        RouterActor {
            shared: Rc::new(Shared {
                bus,
                store,
                catalog,
                rng: RefCell::new(StdRng::from_os_rng()),
                rotation: RefCell::new(Rotation::default()),
                max_attempts: settings.router.max_attempts,
                first_available_wait_ms: settings.router.first_available_wait_ms,
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
/// target the batch may use, then one atomic forward per request.
async fn route_batch(shared: &Shared, consumer: &Consumer, deliveries: Vec<Delivery>) {
    let now = now_ms();
    let mut routable = Vec::with_capacity(deliveries.len());
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
        // The route, then its fallback groups (each once), in order.
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
        routable.push((d, routes));
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
    let max_attempts = shared.max_attempts;
    let mut jobs = Vec::with_capacity(routable.len());
    for (d, routes) in routable {
        let env = &d.envelope;
        let span = tracing::info_span!("route", request_id = %env.id, model = %env.meta.model, provider = tracing::field::Empty);
        llmr_telemetry::set_parent(&span, &env.traceparent);
        let _enter = span.enter();
        let est = Estimate {
            prompt_tokens: env.body.len() as u64 / 4,
            completion_tokens: 0,
        };
        let mut ordered = Vec::with_capacity(routes.len());
        let mut wait_ms = 0;
        {
            let mut rng = shared.rng.borrow_mut();
            let mut rot = shared.rotation.borrow_mut();
            for r in &routes {
                if r.strategy == Strategy::FirstAvailable {
                    wait_ms = shared.first_available_wait_ms;
                }
                let cands: Vec<Cand<'_>> = r.targets.iter().map(|t| state.cand(t)).collect();
                ordered.push(plan::order(r, &cands, est, now, &mut *rng, &mut rot));
            }
        }
        let plan = match plan::assemble(ordered, max_attempts, wait_ms, now) {
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
            .unwrap_or(0);
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
