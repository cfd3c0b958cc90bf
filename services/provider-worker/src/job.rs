//! Running one job: the plan's attempts in order until one succeeds.
//!
//! For each attempt: a recovered circuit must be won as a probe (else the attempt is
//! skipped); a slot (`max_concurrency`) or the lock (`exclusive`) must be free — waiting up
//! to the plan's `wait_ms` (`first_available`) — else the attempt is skipped; otherwise a
//! plain lease counts the call as load. Taking it checks, in the same atomic step, that the
//! target's circuit is not open and neither the target nor the key is cooling down (a 429 or
//! failure recorded after the plan was made), else the attempt is skipped. Leases live
//! `worker.lease_ttl_ms` and are renewed while the call runs. The call is bounded by the request's deadline and
//! the provider's `timeout_ms`.
//!
//! Failover: a retryable failure moves to the next attempt as long as nothing reached the
//! client; after that the client gets an error frame (the gateway ends the stream with an
//! error event). Every failed attempt is logged with its reason, and feeds the shared
//! health: target failures the target's circuit, 401/403 the key's circuit, 429 a cooldown
//! of the key (of the target for a keyless provider) until the time the upstream named.
//!
//! Usage is recorded per key, model and day: the upstream's counts, or — when it reported
//! none — an estimate from the bytes (4 per token), recorded as estimated.

use std::cell::{Cell, RefCell};
use std::collections::HashMap;
use std::rc::Rc;
use std::time::{Duration, Instant};

use llmr_bus::{Bus, Delivery, Replier};
use llmr_config::Provider;
use llmr_protocol::{ApiError, Attempt, Envelope, now_ms};
use llmr_store::{Admit, Admitted, Breaker, Settle, Store, UsageDelta, key_id, key_name, target_id, utc_day};
use secrecy::ExposeSecret;
use tracing::Instrument;

use crate::adapters::{Adapter, AttemptError, AttemptResult, Call, Fault};
use crate::outbox::{CacheSink, Outbox};

/// How often a waiting attempt asks again for a slot or lock.
const SLOT_POLL: Duration = Duration::from_millis(25);

/// A provider as one worker uses it.
pub struct ProviderRt {
    pub provider: Provider,
    adapter: Box<dyn Adapter>,
    /// `server.address` and `server.port` of its attempts' spans, from `base_url` (once).
    server: Option<(String, i64)>,
    /// Round-robin position for plans that name no key.
    next_key: Cell<usize>,
}

impl ProviderRt {
    pub fn new(provider: Provider) -> ProviderRt {
        let server = provider.base().parse::<awc::http::Uri>().ok().and_then(|u| {
            let port = u
                .port_u16()
                .unwrap_or(if u.scheme_str() == Some("https") { 443 } else { 80 });
            Some((u.host()?.to_owned(), i64::from(port)))
        });
        ProviderRt {
            adapter: crate::adapters::for_provider(&provider),
            server,
            provider,
            next_key: Cell::new(0),
        }
    }

    /// The key the attempt names (or the next in turn) and its index.
    fn key(&self, chosen: Option<u32>) -> Option<(usize, &str)> {
        let keys = &self.provider.resolved_keys;
        if keys.is_empty() {
            return None;
        }
        let i = match chosen {
            Some(i) if (i as usize) < keys.len() => i as usize,
            _ => {
                let i = self.next_key.get() % keys.len();
                self.next_key.set(i + 1);
                i
            }
        };
        Some((i, keys[i].expose_secret()))
    }
}

/// What every job of one worker shares.
pub struct JobCtx {
    pub bus: Bus,
    pub store: Store,
    pub client: awc::Client,
    pub providers: HashMap<String, ProviderRt>,
    pub max_response_bytes: usize,
    pub breaker: Breaker,
    pub default_cooldown_ms: u64,
    /// The response cache's bounds (`[cache]`).
    pub cache: llmr_config::Cache,
    /// How long a lease or lock lives unless renewed (`worker.lease_ttl_ms`).
    pub lease_ttl_ms: u64,
    /// Live callers (None: jobs are not watched, as in tests that run jobs directly).
    pub callers: Option<crate::callers::Callers>,
    /// Whether usage can be written, and what to do when it cannot (`degraded.usage`).
    pub usage: UsageGuard,
    /// When a success must be written although it changes nothing but the latency average
    /// ([`LATENCY_SAMPLE_EVERY`] per target and process).
    pub latency_sample: llmr_bus::conns::EveryPerKey,
}

/// A success on a clean health record (closed, no failures, no probe) is written at most
/// this often per target and process, for its latency: the record would not change otherwise.
pub const LATENCY_SAMPLE_EVERY: Duration = Duration::from_millis(250);

/// `degraded.usage = "closed"`: once an attempt's count could not be written, no new attempt
/// starts until the store shows the usage counters again (one read before each attempt while
/// they fail); `open` never stops an attempt.
#[derive(Debug)]
pub struct UsageGuard {
    policy: llmr_config::FailPolicy,
    failing: Cell<bool>,
}

impl UsageGuard {
    pub fn new(policy: llmr_config::FailPolicy) -> UsageGuard {
        UsageGuard {
            policy,
            failing: Cell::new(false),
        }
    }

    /// Notes whether the last count was written.
    fn written(&self, ok: bool) {
        self.failing.set(!ok && !self.policy.is_open());
    }

    /// Refuses (503) while counts cannot be written, under the closed policy.
    async fn check(&self, store: &Store, a: &Attempt) -> Result<(), ApiError> {
        if !self.failing.get() {
            return Ok(());
        }
        let name = a
            .key
            .map_or_else(|| a.provider.clone(), |k| key_name(&a.provider, k as usize));
        match store.usage(&name, &a.model, &utc_day(now_ms())).await {
            Ok(_) => {
                self.failing.set(false);
                Ok(())
            }
            Err(e) => Err(ApiError::Unavailable {
                message: format!("Usage cannot be recorded, so no request is sent (degraded.usage = closed): {e}"),
            }),
        }
    }
}

/// What an attempt holds while it runs, released when it ends (or the job is cancelled).
#[derive(Default)]
pub struct Held {
    lease: Option<String>,
    lock: Option<String>,
    /// Every gate's health record was clean when the attempt was admitted.
    clean: bool,
}

/// Runs a delivered job until it succeeds, fails for good, or `cancel` fires; whether a
/// first-frame marker may be left to forget (an answer sent whole leaves none).
pub async fn run(ctx: Rc<JobCtx>, d: Delivery, cancel: tokio::sync::oneshot::Receiver<()>) -> bool {
    let env = &d.envelope;
    let span = tracing::info_span!("job", request_id = %env.id, model = %env.meta.model, provider = tracing::field::Empty, reclaimed = d.reclaimed);
    llmr_telemetry::carry_for_logs(&span, &env.trace);
    let held: RefCell<Held> = RefCell::default();
    // Boxed: the attempts' state is kilobytes, and inline it made this future twice that
    // (the select keeps its own copy), all of it copied when the job is spawned.
    let work = Box::pin(execute(&ctx, &d, &held, &span).instrument(span.clone()));
    let member = env.id.to_string();
    let marked = tokio::select! {
        biased;
        Ok(()) = cancel => {
            tracing::info!(parent: &span, "client went away; upstream call cancelled");
            true
        }
        marked = work => marked,
        () = keep_renewed(&ctx, &held, &member) => true,
        () = caller_gone(&ctx, &env.reply_to) => {
            tracing::info!(parent: &span, caller = %env.reply_to, "the caller stopped heartbeating; upstream call cancelled");
            true
        }
    };
    release(&ctx, &held, &env.id.to_string()).await;
    marked
}

/// Resolves when the job's caller has died (never without a watch).
async fn caller_gone(ctx: &JobCtx, reply_to: &str) {
    match &ctx.callers {
        Some(c) => c.until_gone(reply_to).await,
        None => std::future::pending().await,
    }
}

/// Renews what the job holds every third of the lease's life, for as long as it runs; a
/// worker that dies stops renewing, and its load is gone within `lease_ttl_ms`.
async fn keep_renewed(ctx: &JobCtx, held: &RefCell<Held>, member: &str) {
    let every = Duration::from_millis(ctx.lease_ttl_ms / 3);
    loop {
        tokio::time::sleep(every).await;
        let (lease, lock) = {
            let h = held.borrow();
            (h.lease.clone(), h.lock.clone())
        };
        for (target, exclusive) in lease.map(|t| (t, false)).into_iter().chain(lock.map(|t| (t, true))) {
            match ctx.store.renew(&target, member, exclusive, ctx.lease_ttl_ms).await {
                Ok(true) => {}
                Ok(false) => tracing::warn!(target = %target, "a lease expired before it was renewed"),
                Err(e) => tracing::warn!(error = %e, "could not renew a lease"),
            }
        }
    }
}

async fn release(ctx: &JobCtx, held: &RefCell<Held>, member: &str) {
    let h = std::mem::take(&mut *held.borrow_mut());
    if let Some(t) = h.lease
        && let Err(e) = ctx.store.release_lease(&t, member).await
    {
        tracing::warn!(error = %e, "could not release a lease (it will expire)");
    }
    if let Some(t) = h.lock
        && let Err(e) = ctx.store.release_lock(&t, member).await
    {
        tracing::warn!(error = %e, "could not release a lock (it will expire)");
    }
}

async fn execute(ctx: &JobCtx, d: &Delivery, held: &RefCell<Held>, span: &tracing::Span) -> bool {
    let env = &d.envelope;
    let mut out = Outbox::from(Replier::to(ctx.bus.clone(), env));
    let cache = env.meta.plan.as_ref().and_then(|p| p.cache.as_ref());
    out.set_cache(cache.map(|c| c.status));
    if let Some(c) = cache.filter(|c| c.store) {
        // Stored (`llmr_store::cache`) before the end frame: a whole chat answer within the
        // size bound, without tool calls unless `cache.tool_calls` allows them.
        let sink = CacheSink {
            store: ctx.store.clone(),
            digest: c.key.clone(),
            ttl_ms: c.ttl_ms,
            stream: env.meta.stream,
            tool_calls: ctx.cache.tool_calls,
        };
        out.record_to(ctx.cache.max_entry_bytes, sink);
    }
    if let Err(err) = attempts(ctx, d, held, span, &mut out).await
        && let Err(e) = out.error(&err).await
    {
        tracing::warn!(error = %e, "could not send an error frame");
    }
    out.marked()
}

/// Runs the plan; an `Err` is what the client is told.
async fn attempts(
    ctx: &JobCtx,
    d: &Delivery,
    held: &RefCell<Held>,
    span: &tracing::Span,
    out: &mut Outbox,
) -> Result<(), ApiError> {
    let env = &d.envelope;
    let plan = runnable(ctx, d).await?;
    let member = env.id.to_string();
    let mut last: Option<AttemptError> = None;
    let mut skipped: Vec<&'static str> = Vec::new();
    let mut cooling_until = 0u64;
    let wait_until = Instant::now() + Duration::from_millis(plan.wait_ms.min(env.remaining_ms(now_ms())));
    let mut pending: Vec<&Attempt> = plan.attempts.iter().collect();
    // Attempts run so far, and why the last one failed over.
    let (mut number, mut failed_over): (u32, Option<&'static str>) = (0, None);
    // Every attempt in order; targets whose slot or lock is taken are passed over, and only
    // when all that is left is busy does the request wait (up to the plan's wait_ms).
    'plan: loop {
        let mut busy = Vec::new();
        for attempt in pending {
            if env.remaining_ms(now_ms()) == 0 {
                return Err(ApiError::DeadlineExceeded);
            }
            let Some(p) = ctx.providers.get(&attempt.provider) else {
                tracing::warn!(provider = %attempt.provider, "the plan names a provider this worker does not know; skipping");
                continue;
            };
            span.record("provider", attempt.provider.as_str());
            match admit(ctx, p, attempt, env, held).await? {
                Admission::Go => {}
                Admission::Skip(why) => {
                    tracing::info!(provider = %attempt.provider, model = %attempt.model, reason = why, "attempt skipped");
                    skipped.push(why);
                    continue;
                }
                Admission::Busy(why) => {
                    skipped.push(why);
                    busy.push(attempt);
                    continue;
                }
                Admission::Cooling(until) => {
                    tracing::info!(provider = %attempt.provider, model = %attempt.model, "attempt skipped: rate-limited since the plan was made");
                    skipped.push(COOLING);
                    cooling_until = cooling_until.max(until);
                    continue;
                }
            }
            number += 1;
            let result = run_attempt(ctx, p, attempt, env, span, out, (number, failed_over)).await;
            settle(ctx, held, &member, env, &result).await;
            observe(env, &result);
            match result.result {
                Ok(_) => return Ok(()),
                Err(e) => {
                    tracing::warn!(provider = %attempt.provider, model = %attempt.model, reason = %e.reason, retryable = e.retryable, "attempt failed");
                    let stop = !e.retryable || out.started();
                    failed_over = Some(fault_label(e.fault));
                    if !stop {
                        llmr_telemetry::metrics::metrics()
                            .failovers
                            .with_label_values(&[fault_label(e.fault)])
                            .inc();
                    }
                    last = Some(e);
                    if stop {
                        break 'plan;
                    }
                }
            }
        }
        if busy.is_empty() || Instant::now() >= wait_until {
            break;
        }
        tokio::time::sleep(SLOT_POLL).await;
        pending = busy;
    }
    Err(exhausted(last, skipped, cooling_until))
}

/// Why an attempt was skipped when its key or target cooled down after planning.
const COOLING: &str = "rate-limited since the plan was made";

/// What the client is told when the plan ran out: the last attempt's error, a 429 when every
/// attempt was cooling down, or why no attempt could start.
fn exhausted(last: Option<AttemptError>, mut skipped: Vec<&'static str>, cooling_until: u64) -> ApiError {
    match last {
        Some(e) => e.error,
        // Every attempt was passed over for a cooldown: the client may retry after it.
        None if !skipped.is_empty() && skipped.iter().all(|s| *s == COOLING) => ApiError::RateLimited {
            message: "Every upstream of the plan is rate-limited.".into(),
            retry_after_s: Some(cooling_until.saturating_sub(now_ms()).div_ceil(1000).max(1)),
        },
        None => {
            skipped.dedup();
            let why = if skipped.is_empty() {
                "none known".to_string()
            } else {
                skipped.join("; ")
            };
            ApiError::Unavailable {
                message: format!("No upstream of the plan could take the request ({why})."),
            }
        }
    }
}

/// Runs one admitted attempt through its provider's adapter, within the deadline and the
/// provider's timeout, as a CLIENT span `chat {model}` with the OpenTelemetry gen_ai
/// attributes, its number in the plan and the reason the previous attempt failed over.
async fn run_attempt<'a>(
    ctx: &JobCtx,
    p: &ProviderRt,
    attempt: &'a Attempt,
    env: &Envelope,
    job_span: &tracing::Span,
    out: &mut Outbox,
    (number, failed_over): (u32, Option<&'static str>),
) -> Tried<'a> {
    let span = attempt_span(job_span, p, attempt, env, number, failed_over);
    let key = p.key(attempt.key);
    let remaining = env.remaining_ms(now_ms());
    let limit = if p.provider.timeout_ms > 0 {
        remaining.min(p.provider.timeout_ms)
    } else {
        remaining
    };
    let timeout = Duration::from_millis(limit.max(1));
    let trace = llmr_telemetry::context(&span, &env.trace);
    let started = Instant::now();
    let xml = attempt.xml_tools.then(|| xml_tools(env)).flatten();
    let env = match &xml {
        Some(e) => {
            let parser = llmr_protocol::xmltools::Parser::new(&env.id.simple().to_string()[20..]);
            out.set_rewrite(Some(Box::new(parser)));
            e
        }
        None => env,
    };
    // The end frame says who answered and what it cost (the gateway settles from it).
    out.set_attempt(
        &attempt.provider,
        &attempt.model,
        number,
        env.body.len() as u64 / 4,
        p.provider.cost_of(&attempt.model),
    );
    let call = Call {
        env,
        attempt,
        provider: &p.provider,
        key: key.map(|k| k.1),
        trace: &trace,
        timeout,
        client: &ctx.client,
        max_response_bytes: ctx.max_response_bytes,
        out: &mut *out,
    };
    let slow = || format!("no answer within {} ms", p.provider.timeout_ms);
    let result = match tokio::time::timeout(timeout, p.adapter.call(call).instrument(span.clone())).await {
        Ok(r) => r,
        Err(_) if limit < remaining && !out.started() => Err(AttemptError::retryable(slow())),
        Err(_) if limit < remaining => Err(AttemptError::broken_after_start(slow())),
        Err(_) => Err(AttemptError::local(ApiError::DeadlineExceeded, "deadline passed")),
    };
    out.set_rewrite(None);
    if result.is_err() {
        out.set_native(None);
    }
    record_outcome(&span, &result);
    Tried {
        attempt,
        key: key.map(|k| k.0),
        result,
        took: started.elapsed(),
    }
}

/// The job as a model without native tools gets it (`xmltools`): None when it offers no
/// tools. Its native body is dropped: the rewritten chat body is what must be sent.
fn xml_tools(env: &Envelope) -> Option<Envelope> {
    if env.meta.endpoint != llmr_protocol::Endpoint::Chat {
        return None;
    }
    let chat: serde_json::Value = serde_json::from_slice(&env.body).ok()?;
    let body = llmr_protocol::xmltools::request(&chat)?;
    let mut e = env.clone();
    e.body = bytes::Bytes::from(body.to_string());
    e.meta.native = None;
    Some(e)
}

/// The CLIENT span of one attempt.
fn attempt_span(
    job: &tracing::Span,
    p: &ProviderRt,
    a: &Attempt,
    env: &Envelope,
    number: u32,
    failed_over: Option<&'static str>,
) -> tracing::Span {
    // The GenAI operation names: chat, embeddings, text_completion.
    let operation = match env.meta.endpoint {
        llmr_protocol::Endpoint::Chat => "chat",
        llmr_protocol::Endpoint::Embeddings => "embeddings",
        llmr_protocol::Endpoint::Completions => "text_completion",
    };
    if !llmr_telemetry::exported() {
        return tracing::Span::none();
    }
    let span = tracing::info_span!(
        parent: job,
        "chat",
        otel.name = %format!("{operation} {}", a.model),
        otel.kind = "client",
        otel.status_code = tracing::field::Empty,
        gen_ai.operation.name = operation,
        gen_ai.provider.name = %a.provider,
        gen_ai.request.model = %env.meta.model,
        gen_ai.request.stream = env.meta.stream,
        gen_ai.response.model = tracing::field::Empty,
        gen_ai.response.id = tracing::field::Empty,
        gen_ai.response.finish_reasons = tracing::field::Empty,
        gen_ai.usage.input_tokens = tracing::field::Empty,
        gen_ai.usage.output_tokens = tracing::field::Empty,
        server.address = tracing::field::Empty,
        server.port = tracing::field::Empty,
        error.type = tracing::field::Empty,
        llmr.attempt = i64::from(number),
        llmr.failover_reason = tracing::field::Empty,
    );
    if let Some((host, port)) = &p.server {
        span.record("server.address", host.as_str());
        span.record("server.port", *port);
    }
    if let Some(reason) = failed_over {
        span.record("llmr.failover_reason", reason);
    }
    span
}

/// What the attempt's span says of its end.
fn record_outcome(span: &tracing::Span, r: &AttemptResult) {
    match r {
        Ok(o) => {
            if let Some(m) = &o.response_model {
                span.record("gen_ai.response.model", m.as_str());
            }
            if let Some(id) = &o.response_id {
                span.record("gen_ai.response.id", id.as_str());
            }
            if !o.finish_reasons.is_empty() {
                span.record("gen_ai.response.finish_reasons", o.finish_reasons.join(",").as_str());
            }
            if let Some(u) = o.usage {
                // Integers as OpenTelemetry ints (tracing passes u64 on as text).
                span.record("gen_ai.usage.input_tokens", u.prompt_tokens as i64);
                span.record("gen_ai.usage.output_tokens", u.completion_tokens as i64);
            }
        }
        Err(e) => {
            span.record("otel.status_code", "error");
            span.record("error.type", fault_label(e.fault));
        }
    }
}

/// The job's plan, when the job may run: its deadline has not passed, it has a plan, and
/// — when reclaimed from a stopped worker — nothing of it reached the caller yet.
async fn runnable<'a>(ctx: &JobCtx, d: &'a Delivery) -> Result<&'a llmr_protocol::Plan, ApiError> {
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
    env.meta.plan.as_ref().ok_or_else(|| ApiError::Internal {
        message: "a job arrived without a plan".into(),
    })
}

/// Whether an attempt may go now.
enum Admission {
    Go,
    /// Not this time (another request holds the circuit's probe).
    Skip(&'static str),
    /// Its slot or lock is taken: may be tried again while the plan allows waiting.
    Busy(&'static str),
    /// Rate-limited since the plan was made: cooling down until this time (ms).
    Cooling(u64),
}

/// Probes won, then the slot or lock taken (or a plain lease counted).
async fn admit(
    ctx: &JobCtx,
    p: &ProviderRt,
    a: &Attempt,
    env: &Envelope,
    held: &RefCell<Held>,
) -> Result<Admission, ApiError> {
    ctx.usage.check(&ctx.store, a).await?;
    if a.probe
        && !ctx
            .store
            .try_probe(&target_id(&a.provider, &a.model), ctx.breaker.probe_ttl_ms)
            .await?
    {
        return Ok(Admission::Skip("another request is probing the target's circuit"));
    }
    if a.probe_key
        && let Some(k) = a.key
        && !ctx
            .store
            .try_probe(&key_id(&a.provider, k as usize), ctx.breaker.probe_ttl_ms)
            .await?
    {
        return Ok(Admission::Skip("another request is probing the key's circuit"));
    }
    let target = a.target();
    let member = env.id.to_string();
    // Short and renewed while the call runs (`keep_renewed`), never past the deadline.
    let ttl = (env.remaining_ms(now_ms()) + 1000).min(ctx.lease_ttl_ms);
    // The target's circuit and the key's cooldown are checked in the same atomic step as the
    // lease is taken: a 429 or an open circuit recorded after the plan was made stops it.
    let tid = target_id(&a.provider, &a.model);
    let kid = a.key.map(|k| key_id(&a.provider, k as usize));
    let mut gates = vec![(tid.as_str(), a.probe)];
    if let Some(k) = &kid {
        gates.push((k.as_str(), a.probe_key));
    }
    let exclusive = p.provider.exclusive;
    let ask = Admit {
        target: &target,
        member: &member,
        ttl_ms: ttl,
        max: p.provider.max_concurrency,
        exclusive,
        gates: &gates,
    };
    let (admitted, clean) = ctx.store.admit_seen(&ask).await?;
    match admitted {
        Admitted::Yes => {}
        Admitted::Busy if exclusive => return Ok(Admission::Busy("the target is locked by another request")),
        Admitted::Busy => return Ok(Admission::Busy("the target has no free slot")),
        Admitted::Cooling => {
            // Rare (the plan was made before the 429 was recorded): read until when.
            let ids: Vec<String> = gates.iter().map(|(id, _)| (*id).to_owned()).collect();
            let until = ctx.store.health(&ids).await?.iter().map(|h| h.cooldown_until_ms).max();
            return Ok(Admission::Cooling(until.unwrap_or_else(|| now_ms() + 1000)));
        }
        Admitted::Open => return Ok(Admission::Skip("its circuit opened since the plan was made")),
    }
    let mut h = held.borrow_mut();
    h.clean = clean;
    if exclusive {
        h.lock = Some(target);
    } else {
        h.lease = Some(target);
    }
    Ok(Admission::Go)
}

/// One attempt that ran: which target and key, how it ended, how long it took.
struct Tried<'a> {
    attempt: &'a Attempt,
    key: Option<usize>,
    result: AttemptResult,
    took: Duration,
}

/// The metric label of a failure's fault.
fn fault_label(f: Fault) -> &'static str {
    match f {
        Fault::Target => "failed",
        Fault::Key => "key_rejected",
        Fault::RateLimited { .. } => "rate_limited",
        Fault::Client => "rejected",
        Fault::Local => "local",
    }
}

/// Records an attempt in the metrics: its outcome and duration, and the tokens it used.
fn observe(env: &Envelope, t: &Tried<'_>) {
    let m = llmr_telemetry::metrics::metrics();
    let a = t.attempt;
    let outcome = match &t.result {
        Ok(_) => "ok",
        Err(e) => fault_label(e.fault),
    };
    m.attempts.with_label_values(&[&a.provider, &a.model, outcome]).inc();
    m.attempt_duration
        .with_label_values(&[&a.provider, &a.model, outcome])
        .observe(t.took.as_secs_f64());
    if let Ok(o) = &t.result
        && let Some(u) = o.usage
    {
        let model = env.meta.model.as_str();
        m.token_usage
            .with_label_values(&["input", &a.provider, model])
            .observe(u.prompt_tokens as f64);
        m.token_usage
            .with_label_values(&["output", &a.provider, model])
            .observe(u.completion_tokens as f64);
    }
}

/// Writes what the attempt left behind in one round trip: releases its lease or lock, feeds
/// the shared circuit breakers, cooldowns and latency, and records usage.
async fn settle(ctx: &JobCtx, held: &RefCell<Held>, member: &str, env: &Envelope, t: &Tried<'_>) {
    let (a, key, r, took) = (t.attempt, t.key, &t.result, t.took);
    let h = std::mem::take(&mut *held.borrow_mut());
    let t = target_id(&a.provider, &a.model);
    let k = key.map(|k| key_id(&a.provider, k));
    let key_or_target = k.as_deref().unwrap_or(&t);
    let name = key.map_or_else(|| a.provider.clone(), |k| key_name(&a.provider, k));
    let day = utc_day(now_ms());
    let mut s = Settle {
        lease: h.lease.as_deref().map(|x| (x, member)),
        lock: h.lock.as_deref().map(|x| (x, member)),
        ..Settle::default()
    };
    match r {
        Ok(o) => {
            // A clean record would not change but for the latency, which is sampled.
            if !h.clean || ctx.latency_sample.due(&t) {
                s.success.push((&t, Some(took.as_secs_f64() * 1000.0)));
                if let Some(k) = &k {
                    s.success.push((k, None));
                }
            }
            let delta = match o.usage {
                Some(u) => UsageDelta {
                    prompt: u.prompt_tokens,
                    completion: u.completion_tokens,
                    estimated: false,
                },
                None => UsageDelta {
                    prompt: env.body.len() as u64 / 4,
                    completion: o.relayed_bytes / 4,
                    estimated: true,
                },
            };
            s.usage = Some((&name, &a.model, &day, delta));
        }
        Err(e) => match e.fault {
            Fault::Target => s.failure = Some(&t),
            Fault::Key => s.failure = Some(key_or_target),
            Fault::RateLimited { until_ms } => {
                let until = until_ms.unwrap_or_else(|| now_ms() + ctx.default_cooldown_ms);
                tracing::info!(provider = %a.provider, key = ?key, cooldown_ms = until.saturating_sub(now_ms()), "rate-limited; cooling down");
                s.cooldown = Some((key_or_target, until));
            }
            Fault::Client | Fault::Local => {}
        },
    }
    let counted = s.usage.is_some();
    let result = ctx.store.settle(&s, &ctx.breaker).await;
    if let Err(e) = &result {
        tracing::warn!(error = %e, "could not record the attempt (leases expire by themselves)");
    }
    if counted {
        ctx.usage.written(result.is_ok());
    }
}

#[cfg(test)]
mod future_sizes {
    use std::mem::size_of;

    fn of2<A, B, R>(_: fn(A, B) -> R) -> usize {
        size_of::<R>()
    }
    fn of3<A, B, C, R>(_: fn(A, B, C) -> R) -> usize {
        size_of::<R>()
    }
    fn of4<A, B, C, D, R>(_: fn(A, B, C, D) -> R) -> usize {
        size_of::<R>()
    }

    /// A job's future is moved when it is spawned and boxed, and its parts when they start:
    /// it stays small (it was 17 KB while the store's and bus's Redis futures were inline
    /// in every call, on the in-memory backends too).
    #[test]
    fn a_jobs_futures_stay_small() {
        let sizes = [
            ("run", of3(super::run)),
            ("execute", of4(super::execute)),
            ("keep_renewed", of3(super::keep_renewed)),
            ("release", of3(super::release)),
            ("caller_gone", of2(super::caller_gone)),
        ];
        for (name, size) in sizes {
            assert!(size <= 2048, "{name}'s future is {size} bytes");
        }
    }
}
