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

use crate::catalog::Catalog;
use crate::plan;

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

/// Routes a batch: one store round trip for all loads, then one atomic forward per request.
async fn route_batch(shared: &Shared, consumer: &Consumer, deliveries: Vec<Delivery>) {
    let now = now_ms();
    let mut routable = Vec::with_capacity(deliveries.len());
    let mut all_targets = Vec::new();
    for d in deliveries {
        if d.envelope.expired(now) {
            answer(shared, consumer, &d, ApiError::DeadlineExceeded).await;
            continue;
        }
        let candidates = shared.catalog.providers_for(&d.envelope.meta.model);
        if candidates.is_empty() {
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
        }
        let targets = plan::targets(&d.envelope.meta.model, &candidates);
        let start = all_targets.len();
        all_targets.extend(targets);
        routable.push((d, candidates, start));
    }
    if routable.is_empty() {
        return;
    }
    let loads = shared.store.loads(&all_targets).await.unwrap_or_else(|e| {
        tracing::warn!(error = %e, "loads unavailable; routing without them");
        vec![0; all_targets.len()]
    });
    for (d, candidates, start) in routable {
        let env = &d.envelope;
        let span = tracing::info_span!("route", request_id = %env.id, model = %env.meta.model, provider = tracing::field::Empty);
        llmr_telemetry::set_parent(&span, &env.traceparent);
        let _enter = span.enter();
        let Some(plan) = plan::least_load(
            &env.meta.model,
            &candidates,
            &loads[start..start + candidates.len()],
            &mut *shared.rng.borrow_mut(),
        ) else {
            continue;
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
        if let Err(e) = consumer.forward(&d.entry, &stream, &job).await {
            // Left pending: it is routed again when reclaimed.
            tracing::warn!(error = %e, request_id = %env.id, "could not hand the job to a worker pool");
        }
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
