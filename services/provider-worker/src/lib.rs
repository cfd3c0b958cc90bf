//! The provider-worker service: runs the plans of its pool (`jobs:{pool}`) against the
//! upstreams, and sends the answers to the caller's reply stream as frames.
//!
//! Decisions written down here:
//! - The worker reads at most `worker.max_in_flight` jobs at a time; the rest wait in the
//!   stream, whose pending count is the autoscaling signal.
//! - A job is acked when it is finished. While it runs, its entry is refreshed every third
//!   of `redis.claim_idle_ms`; a worker that dies leaves its entries idle, and a live peer
//!   reclaims them after `claim_idle_ms`: it reruns a job if no frame of it reached the
//!   caller, and otherwise answers it with a clean error frame.
//! - A job whose caller stops heartbeating (a gateway killed with streams open) aborts its
//!   upstream call within 2.5 s of the death: its beats lapse after 1.5 s, and two reads of
//!   the live set 500 ms apart miss it ([`callers`] has the arithmetic and what a Redis
//!   restart changes).
//! - awc's defaults (5 s, 2 MiB) are replaced: each call is bounded by the request's
//!   deadline and `worker.max_response_bytes`; connecting by `worker.connect_timeout_ms`.
//!
//! # Layout
//! - [`work`]: the jobs stream's work under the shared consumer loop (`llmr_bus::consume`).
//! - [`job`]: running a plan (leases, failover, usage).
//! - [`callers`]: whether a job's caller is still alive (its heartbeats).
//! - [`adapters`]: the provider boundary: each HTTP provider type's conversions (a
//!   `Dialect`: `openai`, `openai_responses`, `anthropic`, `ollama`), the local `echo` and
//!   `chaos`, and the contract of one attempt (`Call`, `Outcome`, `AttemptError`).
//! - [`relay`]: the one driver of the dialects: send, limits, split, batch, broken streams.
//! - [`outbox`]: an answer on its way out: XML tool-call rewrite, SSE text, the cache's copy.
//! - [`ratelimit`]: reading an upstream's 429 reset time.
//! - [`sse`]: splitting an upstream stream (SSE events, NDJSON lines).

pub mod adapters;
pub mod callers;
pub mod job;
pub mod outbox;
pub mod ratelimit;
pub mod relay;
pub mod sse;
pub mod work;

use std::rc::Rc;
use std::sync::Arc;
use std::time::Duration;

use actix::Addr;
use llmr_bus::{Bus, ConsumerActor, Drain, LoopConfig, Room};
use llmr_config::Settings;
use llmr_protocol::{Priority, streams};
use llmr_store::{Store, TaskGuard};

/// Selects the TLS crypto provider (ring) for upstream calls, once per process.
/// Call before any HTTPS request is made.
pub fn install_tls_provider() {
    // Err means a provider is already installed, which is just as good.
    let _ = rustls::crypto::ring::default_provider().install_default();
}

/// The TLS configuration of upstream calls: webpki's roots, the system's (or `SSL_CERT_FILE`),
/// and the PEM certificates in `ca_file` when set; HTTP/2 or HTTP/1.1 by ALPN.
pub fn client_tls(ca_file: &str) -> Result<rustls::ClientConfig, InitError> {
    use rustls::pki_types::CertificateDer;
    use rustls::pki_types::pem::PemObject;
    let mut roots = rustls::RootCertStore {
        roots: webpki_roots::TLS_SERVER_ROOTS.to_vec(),
    };
    // The system store may be missing or partly unreadable: what loads is added.
    let native = rustls_native_certs::load_native_certs();
    roots.add_parsable_certificates(native.certs);
    if !ca_file.is_empty() {
        let certs = CertificateDer::pem_file_iter(ca_file)
            .and_then(Iterator::collect::<Result<Vec<_>, _>>)
            .map_err(|e| InitError::Tls(format!("{ca_file}: {e}")))?;
        if certs.is_empty() {
            return Err(InitError::Tls(format!("{ca_file} holds no certificate")));
        }
        for c in certs {
            roots.add(c).map_err(|e| InitError::Tls(format!("{ca_file}: {e}")))?;
        }
    }
    let mut cfg = rustls::ClientConfig::builder()
        .with_root_certificates(roots)
        .with_no_client_auth();
    cfg.alpn_protocols = vec![b"h2".to_vec(), b"http/1.1".to_vec()];
    Ok(cfg)
}

#[derive(Debug, thiserror::Error)]
pub enum InitError {
    #[error(transparent)]
    Bus(#[from] llmr_bus::BusError),
    #[error("worker.ca_file: {0}")]
    Tls(String),
}

/// A running worker of one pool.
pub struct WorkerService {
    /// The pool's interactive jobs, then its batch jobs (a smaller room).
    addrs: Vec<Addr<ConsumerActor<work::Jobs>>>,
    /// The rooms of its interactive and batch loops, shared with the workers beside the
    /// HTTP workers of `llmrouter all` in memory.
    rooms: Vec<Arc<Room>>,
    _heartbeat: Option<TaskGuard>,
    _callers: callers::Watching,
}

/// The heartbeat of a worker of `pool` (what its callers' watch checks its reads against).
fn own_heartbeat(pool: &str, instance: &str) -> llmr_store::Alive {
    llmr_store::Alive {
        service: "worker".to_owned(),
        instance: format!("{pool}:{instance}"),
    }
}

impl WorkerService {
    /// Starts a worker for `pool` on the current arbiter (inside an actix System). Given the
    /// rooms of its process's worker of the pool (`beside`), it is a worker beside an HTTP
    /// worker of `llmrouter all` in memory: it runs only the jobs published on its own
    /// thread ([`LoopConfig::local`]), in places taken from those rooms (so the process
    /// still runs at most `worker.max_in_flight` jobs), and sends no heartbeat.
    pub async fn build(
        settings: &Settings,
        bus: Bus,
        store: Store,
        instance: &str,
        pool: &str,
        beside: Option<Vec<Arc<Room>>>,
    ) -> Result<WorkerService, InitError> {
        let local = beside.is_some();
        let w = &settings.worker;
        let connector = awc::Connector::new()
            .rustls_0_23(std::sync::Arc::new(client_tls(&w.ca_file)?))
            .timeout(Duration::from_millis(w.connect_timeout_ms))
            .limit(w.max_in_flight.max(1));
        // Per-call timeouts are set from each request's deadline; this is only the ceiling.
        let client = awc::Client::builder()
            .connector(connector)
            .timeout(Duration::from_millis(settings.server.request_timeout_ms))
            .disable_redirects()
            .finish();
        let providers = settings
            .providers()
            .filter(|p| p.pool == pool)
            .map(|p| (p.name.clone(), job::ProviderRt::new(p.clone())))
            .collect();
        let h = &settings.health;
        let me = (!local).then(|| own_heartbeat(pool, instance));
        let (callers, watching) = callers::Callers::watch(store.clone(), me.clone());
        let ctx = Rc::new(job::JobCtx {
            bus: bus.clone(),
            store: store.clone(),
            client,
            providers,
            max_response_bytes: w.max_response_bytes,
            breaker: llmr_store::Breaker {
                failure_threshold: h.failure_threshold,
                failure_window_ms: h.failure_window_ms,
                recovery_ms: h.recovery_ms,
                probe_ttl_ms: h.recovery_ms.max(1000),
            },
            default_cooldown_ms: h.default_cooldown_ms,
            cache: settings.cache.clone(),
            lease_ttl_ms: w.lease_ttl_ms.max(300),
            callers: Some(callers),
            usage: job::UsageGuard::new(settings.degraded.usage),
            latency_sample: llmr_bus::conns::EveryPerKey::new(job::LATENCY_SAMPLE_EVERY),
        });
        // Interactive jobs get the whole room; batch jobs, read from their own stream, at most
        // `batch_room` of it, so a backlog of batch work never keeps interactive work waiting
        // for a free place.
        let places = [
            (Priority::Interactive, w.max_in_flight),
            (Priority::Batch, w.batch_room()),
        ];
        let rooms = match beside {
            Some(r) => r,
            None if bus.is_memory() => places.iter().map(|(_, room)| Room::new(*room)).collect(),
            None => Vec::new(),
        };
        let mut addrs = Vec::with_capacity(2);
        for (i, (priority, room)) in places.into_iter().enumerate() {
            let cfg = LoopConfig {
                cancels: true,
                local,
                room: rooms.get(i).cloned(),
                ..LoopConfig::new(&bus, room, Duration::from_millis(settings.redis.claim_idle_ms))
            };
            let stream = streams::jobs_for(pool, priority);
            let jobs = work::Jobs { ctx: ctx.clone() };
            addrs.push(ConsumerActor::start(&bus, &stream, streams::groups::WORKERS, instance, cfg, jobs).await?);
        }
        let heartbeat = me.map(|me| store.keep_alive(&me.service, &me.instance, llmr_store::HEARTBEAT_EVERY));
        Ok(WorkerService {
            addrs,
            rooms,
            _heartbeat: heartbeat,
            _callers: callers::Watching(watching),
        })
    }

    /// The rooms its loops share (in memory), for the workers beside the HTTP workers.
    pub fn rooms(&self) -> Vec<Arc<Room>> {
        self.rooms.clone()
    }

    /// Stops reading jobs and waits up to `grace` for the running ones to finish.
    pub async fn drain(&self, grace: Duration) {
        let drains = self.addrs.iter().map(|a| a.send(Drain { grace }));
        let _ = futures_util::future::join_all(drains).await;
    }
}
