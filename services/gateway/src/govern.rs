//! Admission and settlement of one request at the gateway, where every front door's request
//! passes and ends.
//!
//! [`admit`] checks the caller's model allowlist, then reserves the request's worst case
//! against the key's and its team's limits in one atomic store step (see
//! `llmr_store::governance`): estimated input tokens — the body's length in bytes, an upper
//! bound for byte-level BPE tokenizers — plus the output cap (`max_completion_tokens`,
//! `max_tokens`, else [`DEFAULT_OUTPUT_CAP`]), priced at the dearest target the model may be
//! routed to. The [`Ticket`] it returns is settled when the request ends — with the real
//! usage and cost the worker's end frame reports, or nothing when it failed or the client
//! went away — in one more store step that also writes the spend row and the request log.

use std::time::Instant;

use actix_web::HttpResponse;
use actix_web::http::header::{HeaderName, HeaderValue};
use llmr_config::{ProviderType, Settings};
use llmr_protocol::{ApiError, Outcome, now_ms};
use llmr_store::Store;
use llmr_store::governance::{
    Admission, Charge, Limit, LogBounds, Period, RequestRecord, Reservation, Settlement, Standing, micros, usd,
};
use uuid::Uuid;

use crate::error::Wire;
use crate::keys::Identity;

/// The output cap reserved when a request names none.
pub const DEFAULT_OUTPUT_CAP: u64 = 4096;

/// The answer header with the request's cost in US dollars.
pub const COST_HEADER: &str = "x-llmr-cost-usd";

/// OpenAI's rate-limit headers: limit, remaining, reset — of requests, then of tokens.
const OPENAI_HEADERS: [[&str; 3]; 2] = [
    [
        "x-ratelimit-limit-requests",
        "x-ratelimit-remaining-requests",
        "x-ratelimit-reset-requests",
    ],
    [
        "x-ratelimit-limit-tokens",
        "x-ratelimit-remaining-tokens",
        "x-ratelimit-reset-tokens",
    ],
];

/// Anthropic's, in the same order.
const ANTHROPIC_HEADERS: [[&str; 3]; 2] = [
    [
        "anthropic-ratelimit-requests-limit",
        "anthropic-ratelimit-requests-remaining",
        "anthropic-ratelimit-requests-reset",
    ],
    [
        "anthropic-ratelimit-tokens-limit",
        "anthropic-ratelimit-tokens-remaining",
        "anthropic-ratelimit-tokens-reset",
    ],
];

/// Prices (input, output per million tokens) of the dearest target `model` may reach; `None`
/// when a provider that may serve it names no price (echo and chaos are free).
pub fn worst_prices(settings: &Settings, model: &str) -> Option<(f64, f64)> {
    let providers: Vec<(&llmr_config::Provider, &str)> = match settings.models.iter().find(|g| g.name == model) {
        Some(g) => g
            .targets
            .iter()
            .filter_map(|t| {
                settings
                    .providers()
                    .find(|p| p.name == t.provider)
                    .map(|p| (p, t.model.as_str()))
            })
            .collect(),
        None => settings
            .providers()
            .filter(|p| p.exposes(model) && (p.models.is_empty() || p.models.iter().any(|m| m == model)))
            .map(|p| (p, model))
            .collect(),
    };
    let mut worst = (0.0f64, 0.0f64);
    for (p, m) in providers {
        let (i, o) = p.cost_of(m);
        let free = matches!(p.kind, ProviderType::Echo | ProviderType::Chaos);
        if i == 0.0 && o == 0.0 && !free {
            return None;
        }
        worst = (worst.0.max(i), worst.1.max(o));
    }
    Some(worst)
}

/// One request's governance: what it reserved, and what its settlement writes.
pub struct Ticket {
    store: Store,
    log: Option<LogBounds>,
    pub id: Uuid,
    identity: Identity,
    /// `(subject, budget period)` charged or spent against.
    subjects: Vec<(String, Period)>,
    /// The key's standing after admission (the rate-limit headers), else its team's.
    standing: Option<Standing>,
    record: RequestRecord,
    started: Instant,
    settled: bool,
    cost_micros: u64,
    /// The output cap the request must be sent with (it named none, and its tokens count).
    cap_to_send: Option<u64>,
}

/// What a request asks, for admission.
pub struct Ask<'a> {
    pub route: &'static str,
    pub model: &'a str,
    pub stream: bool,
    pub body_len: usize,
    pub max_tokens: Option<u64>,
}

/// Admits a request of `identity`: its allowlist, then its reservation (one store step when
/// the key or its team has limits). A refusal is recorded in the log before it is returned.
pub async fn admit(settings: &Settings, store: &Store, identity: &Identity, ask: &Ask<'_>) -> Result<Ticket, ApiError> {
    let mut t = Ticket::new(settings, store, identity, ask);
    match reserve(settings, &mut t, ask).await {
        Ok(()) => Ok(t),
        Err(e) => {
            t.settle_failed(&e);
            Err(e)
        }
    }
}

/// A ticket that reserves nothing, for a request the log records but no limit counts (an MCP
/// tool call: `model` names the tool).
pub fn record_only(settings: &Settings, store: &Store, identity: &Identity, ask: &Ask<'_>) -> Ticket {
    Ticket::new(settings, store, identity, ask)
}

async fn reserve(settings: &Settings, t: &mut Ticket, ask: &Ask<'_>) -> Result<(), ApiError> {
    let Some(c) = t.identity.caller() else {
        return Ok(());
    };
    if !t.identity.allows_model(ask.model) {
        return Err(ApiError::Forbidden {
            message: format!("The key `{}` may not use the model `{}`.", c.key.name, ask.model),
        });
    }
    let charges = charges_of(c);
    if charges.is_empty() {
        return Ok(());
    }
    let budgeted = charges.iter().any(|(c, _)| c.limits.budget_usd.is_some());
    let prices = prices_for(settings, ask.model, budgeted)?;
    let input = ask.body_len as u64;
    let cap = c
        .key
        .limits
        .max_tokens
        .or(c.team.as_ref().and_then(|t| t.limits.max_tokens))
        .unwrap_or(DEFAULT_OUTPUT_CAP);
    let output = ask.max_tokens.unwrap_or(cap);
    // A request that names no cap is sent with the one reserved: its tokens are then bounded.
    if ask.max_tokens.is_none()
        && charges
            .iter()
            .any(|(c, _)| c.limits.budget_usd.is_some() || c.limits.tpm.is_some())
    {
        t.cap_to_send = Some(cap);
    }
    let now = now_ms();
    let id = t.id.to_string();
    let only: Vec<Charge<'_>> = charges.iter().map(|(c, _)| *c).collect();
    let r = Reservation {
        request: &id,
        now_ms: now,
        expires_ms: now + settings.server.request_timeout_ms + 5_000,
        tokens: input + output,
        cost_micros: (input as f64 * prices.0 + output as f64 * prices.1).ceil() as u64,
        charges: &only,
    };
    match t.store.gov_admit(&r).await.map_err(ApiError::from)? {
        Admission::Admitted(standings) => {
            t.standing = standings.first().copied();
            Ok(())
        }
        Admission::Refused {
            charge,
            limit,
            retry_after_ms,
        } => {
            let (c, name) = charges[charge];
            let what = if c.subject.starts_with("team/") { "team" } else { "key" };
            Err(refusal(what, name, c.limits, limit, retry_after_ms))
        }
    }
}

/// What a caller's request is charged to: its key and its team, each that has a limit, with
/// the name a refusal gives.
fn charges_of(c: &crate::keys::Caller) -> Vec<(Charge<'_>, &str)> {
    let mut charges = Vec::with_capacity(2);
    if c.key.limits.any() {
        charges.push((
            Charge {
                subject: &c.key_subject,
                limits: &c.key.limits,
            },
            c.key.name.as_str(),
        ));
    }
    if let (Some(team), Some(subject)) = (&c.team, &c.team_subject)
        && team.limits.any()
    {
        charges.push((
            Charge {
                subject,
                limits: &team.limits,
            },
            team.name.as_str(),
        ));
    }
    charges
}

/// The prices a reservation uses: the dearest target's; a model without one is refused when a
/// budget counts the cost, and free otherwise.
fn prices_for(settings: &Settings, model: &str, budgeted: bool) -> Result<(f64, f64), ApiError> {
    match worst_prices(settings, model) {
        Some(p) => Ok(p),
        None if budgeted => Err(ApiError::invalid(
            format!(
                "The model `{model}` has no price (cost_input_per_mtok / cost_output_per_mtok, or the catalog), so a key with a budget cannot use it."
            ),
            Some("model"),
        )),
        None => Ok((0.0, 0.0)),
    }
}

/// The error a refused admission is answered with.
fn refusal(
    what: &str,
    name: &str,
    l: &llmr_store::governance::Limits,
    limit: Limit,
    retry_after_ms: Option<u64>,
) -> ApiError {
    let retry_after_s = retry_after_ms.map(|ms| ms.div_ceil(1000).max(1));
    let when = retry_after_s.map_or_else(String::new, |s| format!(" Retry after {s} s."));
    let message = match limit {
        Limit::Requests => format!(
            "Rate limit reached for {what} `{name}`: {} requests per minute.{when}",
            l.rpm.unwrap_or(0)
        ),
        Limit::Tokens => format!(
            "Rate limit reached for {what} `{name}`: {} tokens per minute (this request reserves its input and its output cap).{when}",
            l.tpm.unwrap_or(0)
        ),
        Limit::Parallel => format!(
            "Rate limit reached for {what} `{name}`: {} requests in flight at once.{when}",
            l.max_parallel.unwrap_or(0)
        ),
        Limit::Budget => {
            return ApiError::QuotaExceeded {
                message: format!(
                    "The budget of {what} `{name}` (${} per {}) is spent, counting requests in flight.{when}",
                    l.budget_usd.unwrap_or(0.0),
                    l.budget_period.as_str()
                ),
                retry_after_s,
            };
        }
    };
    ApiError::RateLimited { message, retry_after_s }
}

impl Ticket {
    fn new(settings: &Settings, store: &Store, identity: &Identity, ask: &Ask<'_>) -> Ticket {
        let mut subjects = Vec::new();
        if let Some(c) = identity.caller() {
            subjects.push((c.key_subject.clone(), c.key.limits.budget_period));
            if let (Some(t), Some(ts)) = (&c.team, &c.team_subject) {
                subjects.push((ts.clone(), t.limits.budget_period));
            }
        }
        let id = Uuid::now_v7();
        let group = settings.models.iter().any(|g| g.name == ask.model);
        Ticket {
            store: store.clone(),
            log: settings.log.enabled.then_some(LogBounds {
                max_records: settings.log.max_records,
                max_age_ms: settings.log.max_age_ms,
            }),
            id,
            identity: identity.clone(),
            subjects,
            standing: None,
            record: RequestRecord {
                id: id.to_string(),
                time_ms: now_ms(),
                key: identity.key_id().to_owned(),
                team: identity.team_id().map(str::to_owned),
                route: ask.route.to_owned(),
                model: ask.model.to_owned(),
                group: group.then(|| ask.model.to_owned()),
                stream: ask.stream,
                status: 499,
                ..RequestRecord::default()
            },
            started: Instant::now(),
            settled: false,
            cost_micros: 0,
            cap_to_send: None,
        }
    }

    /// The output cap the request must carry upstream (`max_tokens`, `max_output_tokens` on
    /// Responses): it named none and a budget or tpm counts its tokens.
    pub fn cap_to_send(&self) -> Option<u64> {
        self.cap_to_send
    }

    /// The answer's head arrived (for a stream: its first byte).
    pub fn first_token(&mut self) {
        self.record.ttft_ms = Some(self.started.elapsed().as_millis() as u64);
    }

    /// The request was answered with `status`; `outcome` is what the end frame reported.
    pub fn answered(&mut self, status: u16, outcome: Option<&Outcome>, cache_hit: bool) {
        let r = &mut self.record;
        r.status = status;
        r.cache_hit = cache_hit;
        if let Some(o) = outcome {
            r.provider = Some(o.provider.clone());
            r.target_model = Some(o.model.clone());
            r.input_tokens = o.usage.prompt_tokens;
            r.output_tokens = o.usage.completion_tokens;
            r.attempts = o.attempts;
            self.cost_micros = micros(o.cost_usd);
            r.cost_usd = usd(self.cost_micros);
        }
    }

    /// The request failed with `e` (nothing is spent).
    pub fn failed(&mut self, e: &ApiError) {
        self.record.status = e.status();
        self.record.error_type = Some(e.code().unwrap_or(e.error_type()).to_owned());
    }

    /// The cost so far, as the answer header says it.
    pub fn cost_usd(&self) -> f64 {
        usd(self.cost_micros)
    }

    /// Adds the rate-limit headers of a limited key (OpenAI's, or Anthropic's on
    /// `/v1/messages`) and the cost header of an answered request.
    pub fn decorate(&self, wire: Wire, resp: &mut HttpResponse) {
        let h = resp.headers_mut();
        if self.record.status < 400 && self.identity.caller().is_some() {
            let m = self.cost_micros;
            if let Ok(v) = HeaderValue::try_from(format!("{}.{:06}", m / 1_000_000, m % 1_000_000)) {
                h.insert(HeaderName::from_static(COST_HEADER), v);
            }
        }
        let Some(s) = self.standing else { return };
        let names = if wire == Wire::Anthropic {
            &ANTHROPIC_HEADERS
        } else {
            &OPENAI_HEADERS
        };
        for (w, [limit, remaining, reset]) in [s.requests, s.tokens].into_iter().zip(names) {
            let Some(w) = w else { continue };
            h.insert(HeaderName::from_static(limit), HeaderValue::from(w.limit));
            h.insert(HeaderName::from_static(remaining), HeaderValue::from(w.remaining));
            let reset_value = if wire == Wire::Anthropic {
                httpdate::fmt_http_date(std::time::SystemTime::now() + std::time::Duration::from_millis(w.reset_ms))
            } else {
                format!("{}.{:03}s", w.reset_ms / 1000, w.reset_ms % 1000)
            };
            if let Ok(v) = HeaderValue::try_from(reset_value) {
                h.insert(HeaderName::from_static(reset), v);
            }
        }
    }

    /// Records that the request failed with `e` and settles it (nothing is spent).
    pub fn settle_failed(&mut self, e: &ApiError) {
        self.failed(e);
        self.spawn_settle();
    }

    /// Settles the reservation with what the request really cost and writes its record, in
    /// one store step, after the answer (in the background). The next request of the same key
    /// may be admitted before it lands: the reservation still counts then, so limits hold.
    pub fn settle(mut self) {
        self.spawn_settle();
    }

    /// Hands what the settlement writes to a background task, once.
    fn spawn_settle(&mut self) {
        if self.settled {
            return;
        }
        self.settled = true;
        let mut record = std::mem::take(&mut self.record);
        record.latency_ms = self.started.elapsed().as_millis() as u64;
        let pending = Pending {
            store: self.store.clone(),
            log: self.log,
            subjects: std::mem::take(&mut self.subjects),
            record,
            cost_micros: self.cost_micros,
        };
        match tokio::runtime::Handle::try_current() {
            Ok(rt) => drop(rt.spawn(pending.write())),
            Err(_) => {
                tracing::warn!(request_id = %self.id, "no runtime to settle a request on (its reservation lapses at its deadline)")
            }
        }
    }
}

/// A settlement on its way to the store.
struct Pending {
    store: Store,
    log: Option<LogBounds>,
    subjects: Vec<(String, Period)>,
    record: RequestRecord,
    cost_micros: u64,
}

impl Pending {
    async fn write(self) {
        let r = &self.record;
        let subjects: Vec<(&str, Period)> = self.subjects.iter().map(|(s, p)| (s.as_str(), *p)).collect();
        let team = r.team.as_deref().unwrap_or_default();
        let st = Settlement {
            request: &r.id,
            now_ms: now_ms(),
            subjects: &subjects,
            tokens: r.input_tokens + r.output_tokens,
            cost_micros: self.cost_micros,
            row: (r.status < 400).then_some((r.key.as_str(), team, r.model.as_str())),
            input_tokens: r.input_tokens,
            output_tokens: r.output_tokens,
            record: self.log.map(|b| (r, b)),
        };
        if st.subjects.is_empty() && st.record.is_none() && st.row.is_none() {
            return;
        }
        if let Err(e) = self.store.gov_settle(&st).await {
            tracing::warn!(error = %e, request_id = %r.id, "could not settle a request (its reservation lapses at its deadline)");
        }
    }
}

impl Drop for Ticket {
    /// A ticket dropped unsettled — the client went away, or a path returned early — is
    /// settled with what it has.
    fn drop(&mut self) {
        self.spawn_settle();
    }
}
