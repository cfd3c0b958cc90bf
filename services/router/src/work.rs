//! The router's work on the `requests` stream, under the shared consumer loop: a batch is
//! routed with one store read, and each routed request is forwarded to its pool's jobs
//! stream atomically with its ack. Requests that need the tool loop run as their own tasks
//! and are acked once answered (a router that dies mid-loop leaves them pending, and a peer
//! runs them again). Unknown models and expired deadlines are answered here.

use std::rc::Rc;

use llmr_bus::{Bus, Delivery, Done, Replier, Settled, Tasks, Work};
use llmr_protocol::{ApiError, Envelope, TraceContext, now_ms, streams};

use crate::cache::{self, Cache, Decision};
use crate::routing::{Resolved, Routing};
use crate::toolloop::{self, ToolLoop};

/// Routes requests.
pub struct Requests {
    pub bus: Bus,
    pub routing: Rc<Routing>,
    pub tools: Rc<ToolLoop>,
    pub cache: Rc<Cache>,
}

impl Work for Requests {
    fn start(&self, batch: Vec<Delivery>, tasks: &mut Tasks) {
        let now = now_ms();
        let mut routable = Vec::with_capacity(batch.len());
        let mut refused = Vec::new();
        for d in batch {
            if d.envelope.expired(now) {
                refused.push((d, ApiError::DeadlineExceeded));
                continue;
            }
            let Some(resolved) = self.routing.resolve(&d.envelope.meta.model) else {
                let model = d.envelope.meta.model.clone();
                refused.push((d, ApiError::ModelNotFound { model }));
                continue;
            };
            if toolloop::needed(&resolved.routes[0], &d.envelope.body) {
                let tools = self.tools.clone();
                tasks.spawn_one(d, move |d, cancel| async move {
                    tokio::select! {
                        () = tools.run(&d.envelope, &resolved.routes) => {}
                        Ok(()) = cancel => tracing::info!(request_id = %d.envelope.id, "client went away; tool loop stopped"),
                    }
                    Done::Ack
                });
                continue;
            }
            routable.push((d, resolved));
        }
        if routable.is_empty() && refused.is_empty() {
            return;
        }
        let held = routable
            .iter()
            .map(|(d, _)| d)
            .chain(refused.iter().map(|(d, _)| d))
            .map(|d| (d.entry.clone(), d.envelope.id))
            .collect();
        let traces: Vec<TraceContext> = routable
            .iter()
            .map(|(d, _)| d)
            .chain(refused.iter().map(|(d, _)| d))
            .map(|d| d.envelope.trace.clone())
            .collect();
        let work = route(
            self.bus.clone(),
            self.routing.clone(),
            self.cache.clone(),
            routable,
            refused,
        );
        tasks.spawn_batch(held, &traces, work);
    }
}

/// Plans the batch and settles each request: forwarded as a job, or answered with an error.
async fn route(
    bus: Bus,
    routing: Rc<Routing>,
    cache: Rc<Cache>,
    routable: Vec<(Delivery, Resolved)>,
    refused: Vec<(Delivery, ApiError)>,
) -> Vec<Settled> {
    let mut settled = Vec::with_capacity(routable.len() + refused.len());
    for (d, err) in refused {
        settled.push(answer(&bus, d, err).await);
    }
    let (routable, decisions) = from_cache(&bus, &cache, routable, &mut settled).await;
    let items: Vec<(&Envelope, &[crate::catalog::Route])> = routable
        .iter()
        .map(|(d, r)| (&d.envelope, r.routes.as_slice()))
        .collect();
    let plans = routing.plan_batch(&items, now_ms()).await;
    // Jobs nobody would read are refused now rather than at their deadline.
    let workers = if items.is_empty() {
        Ok(())
    } else {
        routing.require("worker").await
    };
    for (((d, resolved), plan), decision) in routable.into_iter().zip(plans).zip(decisions) {
        let plan = plan.map(|p| llmr_protocol::Plan {
            cache: decision.plan(),
            ..p
        });
        let env = &d.envelope;
        let span = tracing::info_span!(
            "route",
            request_id = %env.id,
            model = %env.meta.model,
            llmr.strategy = resolved.routes[0].strategy.as_str(),
            provider = tracing::field::Empty,
            llmr.plan = tracing::field::Empty,
        );
        llmr_telemetry::set_parent(&span, &env.trace);
        match plan.and_then(|p| workers.clone().map(|()| p)) {
            Ok(plan) => {
                span.record("provider", plan.attempts[0].provider.as_str());
                let targets: Vec<String> = plan
                    .attempts
                    .iter()
                    .map(|a| format!("{}/{}", a.provider, a.model))
                    .collect();
                span.record("llmr.plan", targets.join(", ").as_str());
                let stream = streams::jobs_for(&plan.pool, env.meta.priority);
                let routed = env.routed(plan, llmr_telemetry::context(&span, &env.trace));
                // The forward is a publish too: a PRODUCER span under the routing decision.
                let publish = llmr_bus::caller::producer_span(&bus, &stream, &routed);
                let trace = llmr_telemetry::context(&publish, &routed.trace);
                let envelope = Box::new(Envelope { trace, ..routed });
                settled.push((d.entry, env.id, Done::Forward { stream, envelope }));
            }
            Err(e) => settled.push(answer(&bus, d, e).await),
        }
    }
    settled
}

/// Answers a request with an error frame; acked once the frame is out (else left pending).
async fn answer(bus: &Bus, d: Delivery, err: ApiError) -> Settled {
    let env = &d.envelope;
    tracing::info!(request_id = %env.id, model = %env.meta.model, error = %err, "request answered by the router");
    let done = match Replier::to(bus.clone(), env).error(&err).await {
        Ok(()) => Done::Ack,
        Err(e) => {
            tracing::warn!(error = %e, "could not answer a request");
            Done::Keep
        }
    };
    (d.entry, env.id, done)
}

/// Answers the requests the cache holds an answer for; returns the others with their cache
/// decisions (one store read per cacheable request, none when the cache is off).
async fn from_cache(
    bus: &Bus,
    cache: &Cache,
    routable: Vec<(Delivery, Resolved)>,
    settled: &mut Vec<Settled>,
) -> (Vec<(Delivery, Resolved)>, Vec<Decision>) {
    let mut rest = Vec::with_capacity(routable.len());
    let mut decisions = Vec::with_capacity(routable.len());
    for (d, resolved) in routable {
        let decision = cache::decide(&cache.settings, &resolved.routes[0], &d.envelope);
        if let Decision::Use { key, read: true, .. } = &decision {
            match cache::lookup(&cache.store, key).await {
                Ok(Some((stream, data))) if stream == d.envelope.meta.stream => {
                    cache::answer_hit(bus, &cache.store, &d.envelope, stream, data).await;
                    settled.push((d.entry, d.envelope.id, Done::Ack));
                    continue;
                }
                Err(e) if !cache.policy.is_open() => {
                    let err = ApiError::Unavailable {
                        message: format!("The response cache cannot be read: {e}"),
                    };
                    settled.push(answer(bus, d, err).await);
                    continue;
                }
                Err(e) => tracing::warn!(error = %e, "cache lookup failed; answered as a miss"),
                Ok(_) => {}
            }
        }
        rest.push((d, resolved));
        decisions.push(decision);
    }
    (rest, decisions)
}
