//! Load shedding: a request that would wait too long for its pool is refused at once with
//! 503 `overloaded` and `Retry-After`, instead of waiting in a queue until its deadline.
//!
//! Two bounds, checked before any other admission step:
//! - **Waiting time** (`server.max_queue_wait_ms`, default 5 s; a key or its team may set a
//!   tighter `max_queue_wait_ms`): the request's pool is the one the router's plan for its
//!   model runs in (cached per model, re-read every second); the work ahead of it is the
//!   unread `requests` (routers' lag), the pool's unread jobs of its priority (batch waits
//!   behind interactive, so a batch request counts both) and what this gateway admitted for
//!   that pool since the last read. Over the pool's completion rate ([`estimate`]) that is
//!   the wait; above the bound the request is refused with `Retry-After` = the wait in
//!   seconds, rounded up. While no rate is known (a pool that has neither finished a call
//!   nor been seen busy), nothing is refused by waiting time.
//! - **Queue length** (`server.max_queued`, `server.max_queued_batch` for batch): the
//!   cluster's unread requests and jobs together.
//!
//! Each gateway reads the queues every 100 ms (one backlog read per stream, [`watch`]); the
//! admission check itself is a few atomic loads and one add. A request may say
//! `x-llmr-priority: batch` (the default is `interactive`).
//!
//! # Layout
//! - [`estimate`]: the estimator, as pure functions.
//! - [`watch`]: the reading loop that keeps the gauges.

pub mod estimate;
pub mod watch;

use std::collections::{HashMap, HashSet};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex, RwLock};

use actix_web::HttpRequest;
use llmr_config::Settings;
use llmr_protocol::{ApiError, Priority, streams};

pub use watch::{Watch, watch};

use crate::HttpError;
use crate::keys::Identity;

/// The request header naming a request's priority.
pub const PRIORITY_HEADER: &str = "x-llmr-priority";

/// Models whose pool is remembered at most (a client naming random models fills no memory).
const MAX_MODELS: usize = 256;

/// The pools the configuration names (`default` always among them), sorted.
pub fn pools(settings: &Settings) -> Vec<String> {
    let mut pools: Vec<String> = settings.providers().map(|p| p.pool.clone()).collect();
    pools.push("default".to_owned());
    pools.sort_unstable();
    pools.dedup();
    pools
}

/// The streams whose unread entries are queued work: `requests` (routers) and every pool's
/// `jobs:{pool}` (workers).
pub fn work_streams(settings: &Settings) -> Vec<(String, &'static str)> {
    let mut out = vec![(streams::REQUESTS.to_owned(), streams::groups::ROUTERS)];
    for p in pools(settings) {
        for priority in [Priority::Interactive, Priority::Batch] {
            out.push((streams::jobs_for(&p, priority), streams::groups::WORKERS));
        }
    }
    out
}

/// Every stream the cluster's services read, with their consumer group: the
/// [`work_streams`], `mcp` (mcp-tools) and `responses` (the responses service).
pub fn every_stream(settings: &Settings) -> Vec<(String, &'static str)> {
    let mut out = work_streams(settings);
    out.push((streams::MCP.to_owned(), streams::groups::MCP_TOOLS));
    out.push((streams::RESPONSES.to_owned(), streams::groups::RESPONSES));
    out
}

/// One pool as admission sees it: per priority (interactive, batch), the unread jobs and
/// what this gateway admitted since they were read; the pool's completion rate.
#[derive(Debug, Default)]
pub struct Gauge {
    lag: [AtomicU64; 2],
    admitted: [AtomicU64; 2],
    /// Thousandths of a job per second; 0 = unknown.
    rate_milli: AtomicU64,
}

fn slot(p: Priority) -> usize {
    match p {
        Priority::Interactive => 0,
        Priority::Batch => 1,
    }
}

impl Gauge {
    /// Jobs ahead of a new request of `priority` in this pool (without the routers' lag).
    fn ahead(&self, priority: Priority) -> u64 {
        let of = |i: usize| self.lag[i].load(Ordering::Relaxed) + self.admitted[i].load(Ordering::Relaxed);
        match priority {
            Priority::Interactive => of(0),
            Priority::Batch => of(0) + of(1),
        }
    }
}

/// The shared state of shedding: the gauges the watch keeps and admission reads.
#[derive(Debug)]
pub struct Shed {
    /// Unread requests and jobs in the cluster (the queue-length bound).
    queued: AtomicU64,
    /// Unread requests (routers' lag): ahead of every request, whatever its pool.
    requests_lag: AtomicU64,
    pools: HashMap<String, Arc<Gauge>>,
    /// The pool of each model seen, as the router plans it now.
    models: RwLock<HashMap<String, Arc<Gauge>>>,
    /// Models seen whose pool is not known yet: the watch asks the router's plan.
    wanted: Mutex<HashSet<String>>,
}

impl Shed {
    pub fn new(settings: &Settings) -> Shed {
        Shed {
            queued: AtomicU64::new(0),
            requests_lag: AtomicU64::new(0),
            pools: pools(settings).into_iter().map(|p| (p, Arc::default())).collect(),
            models: RwLock::default(),
            wanted: Mutex::default(),
        }
    }

    /// Queued work in the cluster (unread requests and jobs), as last read.
    pub fn queued(&self) -> u64 {
        self.queued.load(Ordering::Relaxed)
    }

    /// The gauge of `model`'s pool: the planned one once known, until then the only pool
    /// when there is one (else none, and the model is asked for).
    fn gauge(&self, model: &str) -> Option<Arc<Gauge>> {
        if let Ok(m) = self.models.read()
            && let Some(g) = m.get(model)
        {
            return Some(g.clone());
        }
        if let Ok(mut w) = self.wanted.lock()
            && w.len() < MAX_MODELS
        {
            w.insert(model.to_owned());
        }
        match self.pools.len() {
            1 => self.pools.values().next().cloned(),
            _ => None,
        }
    }
}

impl Shed {
    /// The estimated wait (ms) of a new request in each pool, interactive and batch; none
    /// while a pool's rate is unknown. Read at scrape time for `/metrics`.
    pub fn waits(&self) -> Vec<(&str, Priority, u64)> {
        let ahead = self.requests_lag.load(Ordering::Relaxed);
        let mut out = Vec::new();
        for (pool, g) in &self.pools {
            let rate = g.rate_milli.load(Ordering::Relaxed);
            for p in [Priority::Interactive, Priority::Batch] {
                if let Some(w) = estimate::wait_ms(ahead + g.ahead(p), rate) {
                    out.push((pool.as_str(), p, w));
                }
            }
        }
        out
    }
}

/// The request's priority from `x-llmr-priority` (interactive when absent).
fn priority(req: &HttpRequest) -> Result<Priority, HttpError> {
    match req
        .headers()
        .get(PRIORITY_HEADER)
        .map(|v| v.to_str().unwrap_or_default())
    {
        None => Ok(Priority::Interactive),
        Some(v) => Priority::parse(v).ok_or_else(|| {
            HttpError(ApiError::invalid(
                format!("`{PRIORITY_HEADER}` must be `interactive` or `batch`, not `{v}`."),
                None,
            ))
        }),
    }
}

/// Whether a request for `model` of its priority may be queued now; its priority when it
/// may (and it is then counted against its pool until the next read).
pub fn admit(
    req: &HttpRequest,
    settings: &Settings,
    shed: &Shed,
    model: &str,
    who: &Identity,
) -> Result<Priority, HttpError> {
    let priority = priority(req)?;
    let batch = priority == Priority::Batch;
    let s = &settings.server;
    let bound = if batch { s.max_queued_batch } else { s.max_queued };
    let now = shed.queued();
    if bound > 0 && now >= bound {
        llmr_telemetry::metrics::metrics()
            .shed
            .with_label_values(&["queue_length"])
            .inc();
        return Err(HttpError(ApiError::Overloaded {
            message: format!(
                "The cluster is overloaded: {now} requests are queued and {} work is admitted below {bound}; retry later.",
                if batch { "batch" } else { "interactive" }
            ),
            retry_after_s: 1,
        }));
    }
    let limits = who
        .caller()
        .map(|c| (&c.key.limits, c.team.as_ref().map(|t| &t.limits)));
    let max_wait = estimate::bound_ms(
        s.max_queue_wait_ms,
        limits.and_then(|(k, _)| k.max_queue_wait_ms),
        limits.and_then(|(_, t)| t.and_then(|t| t.max_queue_wait_ms)),
    );
    let Some(gauge) = shed.gauge(model) else {
        return Ok(priority);
    };
    if max_wait > 0 {
        let ahead = shed.requests_lag.load(Ordering::Relaxed) + gauge.ahead(priority);
        if let Some(wait) = estimate::wait_ms(ahead, gauge.rate_milli.load(Ordering::Relaxed))
            && wait > max_wait
        {
            llmr_telemetry::metrics::metrics()
                .shed
                .with_label_values(&["queue_wait"])
                .inc();
            return Err(HttpError(ApiError::Overloaded {
                message: format!(
                    "The cluster is overloaded: this request would wait about {:.1} s for its pool ({ahead} ahead of it), longer than the bound of {:.1} s; retry later.",
                    wait as f64 / 1000.0,
                    max_wait as f64 / 1000.0
                ),
                retry_after_s: estimate::retry_after_s(wait),
            }));
        }
    }
    gauge.admitted[slot(priority)].fetch_add(1, Ordering::Relaxed);
    Ok(priority)
}
