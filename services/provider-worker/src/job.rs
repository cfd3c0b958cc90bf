//! Running one job: the plan's attempts in order, each under a lease, until one succeeds.
//!
//! Failover: a retryable failure (connect error, timeout, 5xx, 429, broken or malformed
//! answer) moves to the next attempt as long as nothing reached the client; after that, the
//! client gets an error frame (the gateway ends the stream with an error event). Every
//! failed attempt is logged with its reason. A lease on `provider/model` is held for the
//! duration of each attempt (it expires by itself if this worker dies), and usage is
//! recorded per key, model and day.

use std::cell::{Cell, RefCell};
use std::collections::HashMap;
use std::rc::Rc;
use std::time::Duration;

use llmr_bus::{Bus, Delivery};
use llmr_config::{Provider, ProviderType};
use llmr_protocol::{ApiError, Attempt, now_ms};
use llmr_store::Store;
use secrecy::ExposeSecret;
use tracing::Instrument;

use crate::adapters::{AttemptError, AttemptResult, Outcome, echo, openai};
use crate::replier::Replier;

/// A provider as one worker uses it.
pub struct ProviderRt {
    pub provider: Provider,
    /// Round-robin position over the provider's keys.
    next_key: Cell<usize>,
}

impl ProviderRt {
    pub fn new(provider: Provider) -> ProviderRt {
        ProviderRt {
            provider,
            next_key: Cell::new(0),
        }
    }

    /// The next key and its id for usage (`provider#index`; the key itself is never stored).
    fn key(&self) -> (Option<&str>, String) {
        let keys = &self.provider.api_keys;
        if keys.is_empty() {
            return (None, self.provider.name.clone());
        }
        let i = self.next_key.get() % keys.len();
        self.next_key.set(i + 1);
        (Some(keys[i].expose_secret()), format!("{}#{}", self.provider.name, i))
    }
}

/// What every job of one worker shares.
pub struct JobCtx {
    pub bus: Bus,
    pub store: Store,
    pub client: awc::Client,
    pub providers: HashMap<String, ProviderRt>,
    pub max_response_bytes: usize,
}

/// Runs a delivered job until it succeeds, fails for good, or `cancel` fires.
pub async fn run(ctx: Rc<JobCtx>, d: Delivery, cancel: tokio::sync::oneshot::Receiver<()>) {
    let env = &d.envelope;
    let span = tracing::info_span!("job", request_id = %env.id, model = %env.meta.model, provider = tracing::field::Empty, reclaimed = d.reclaimed);
    llmr_telemetry::set_parent(&span, &env.traceparent);
    let lease: RefCell<Option<String>> = RefCell::new(None);
    let work = execute(&ctx, &d, &lease, &span).instrument(span.clone());
    tokio::select! {
        biased;
        Ok(()) = cancel => {
            tracing::info!(parent: &span, "client went away; upstream call cancelled");
        }
        () = work => {}
    }
    let held = lease.borrow_mut().take();
    if let Some(target) = held
        && let Err(e) = ctx.store.release_lease(&target, &env.id.to_string()).await
    {
        tracing::warn!(error = %e, "could not release a lease (it will expire)");
    }
}

async fn execute(ctx: &JobCtx, d: &Delivery, lease: &RefCell<Option<String>>, span: &tracing::Span) {
    let env = &d.envelope;
    let mut out = Replier::new(ctx.bus.clone(), env.reply_to.clone(), env.id, env.meta.stream);
    if let Err(err) = attempts(ctx, d, lease, span, &mut out).await
        && let Err(e) = out.error(&err).await
    {
        tracing::warn!(error = %e, "could not send an error frame");
    }
}

/// Runs the plan; an `Err` is what the client is told.
async fn attempts(
    ctx: &JobCtx,
    d: &Delivery,
    lease: &RefCell<Option<String>>,
    span: &tracing::Span,
    out: &mut Replier,
) -> Result<(), ApiError> {
    let env = &d.envelope;
    if env.expired(now_ms()) {
        return Err(ApiError::DeadlineExceeded);
    }
    if d.reclaimed {
        if ctx.bus.first_frame_sent(env.id).await? {
            return Err(ApiError::Upstream {
                message: "The worker serving this request stopped after the response had started.".into(),
            });
        }
        tracing::info!("running a job reclaimed from a stopped worker");
    }
    let Some(plan) = &env.meta.plan else {
        return Err(ApiError::Internal {
            message: "a job arrived without a plan".into(),
        });
    };
    let member = env.id.to_string();
    let mut last: Option<AttemptError> = None;
    for attempt in &plan.attempts {
        let remaining = env.remaining_ms(now_ms());
        if remaining == 0 {
            return Err(ApiError::DeadlineExceeded);
        }
        let Some(p) = ctx.providers.get(&attempt.provider) else {
            tracing::warn!(provider = %attempt.provider, "the plan names a provider this worker does not know; skipping");
            continue;
        };
        span.record("provider", attempt.provider.as_str());
        let target = attempt.target();
        match ctx.store.acquire_lease(&target, &member, remaining + 1000).await {
            Ok(()) => *lease.borrow_mut() = Some(target),
            Err(e) => tracing::warn!(error = %e, "could not take a lease; calling without one"),
        }
        let (key, key_id) = p.key();
        let timeout = Duration::from_millis(remaining);
        let tp = llmr_telemetry::traceparent(span, &env.traceparent);
        let result =
            match tokio::time::timeout(timeout, attempt_once(ctx, p, attempt, key, &tp, timeout, out, env)).await {
                Ok(r) => r,
                Err(_) => Err(AttemptError::fatal(ApiError::DeadlineExceeded, "deadline passed")),
            };
        let held = lease.borrow_mut().take();
        if let Some(t) = held
            && let Err(e) = ctx.store.release_lease(&t, &member).await
        {
            tracing::warn!(error = %e, "could not release a lease (it will expire)");
        }
        match result {
            Ok(Outcome { usage }) => {
                let (prompt, completion, estimated) =
                    usage.map_or((0, 0, true), |u| (u.prompt_tokens, u.completion_tokens, false));
                if let Err(e) = ctx
                    .store
                    .record_usage(
                        &key_id,
                        &attempt.model,
                        &llmr_store::utc_day(now_ms()),
                        prompt,
                        completion,
                        estimated,
                    )
                    .await
                {
                    tracing::warn!(error = %e, "could not record usage");
                }
                return Ok(());
            }
            Err(e) => {
                tracing::warn!(provider = %attempt.provider, reason = %e.reason, retryable = e.retryable, "attempt failed");
                let stop = !e.retryable || out.started();
                last = Some(e);
                if stop {
                    break;
                }
            }
        }
    }
    Err(last.map_or(
        ApiError::Upstream {
            message: "No provider of the plan is available to this worker.".into(),
        },
        |e| e.error,
    ))
}

#[allow(clippy::too_many_arguments)]
async fn attempt_once(
    ctx: &JobCtx,
    p: &ProviderRt,
    attempt: &Attempt,
    key: Option<&str>,
    traceparent: &str,
    timeout: Duration,
    out: &mut Replier,
    env: &llmr_protocol::Envelope,
) -> AttemptResult {
    match p.provider.kind {
        ProviderType::Echo => {
            echo::call(
                &env.body,
                &env.meta.model,
                &format!("chatcmpl-{}", env.id.simple()),
                env.meta.stream,
                env.meta.include_usage,
                out,
            )
            .await
        }
        ProviderType::Openai => {
            let call = openai::Call {
                url: format!("{}/chat/completions", p.provider.base()),
                body: &env.body,
                requested_model: &env.meta.model,
                upstream_model: &attempt.model,
                key,
                traceparent,
                stream: env.meta.stream,
                timeout,
                max_response_bytes: ctx.max_response_bytes,
            };
            openai::call(&ctx.client, &call, out).await
        }
    }
}
