//! The gateway service: the OpenAI-compatible HTTP front (actix-web).
//!
//! It authenticates, validates and bounds every request, so bad input gets a 4xx and never
//! reaches the bus; it publishes valid chat completions on `requests`, and answers from the
//! frames that arrive on its own reply stream: one JSON body, or SSE events flushed as they
//! come and ended by `data: [DONE]`. Every route that asks the cluster — chat completions
//! and `/mcp` — goes through the one `llmr_bus::Caller` of this instance: a client that goes
//! away drops its call, which cancels the request.
//!
//! Routes: `POST /v1/chat/completions`, `/v1/embeddings`, `/v1/completions`, the Responses and
//! Conversations APIs (`/v1/responses…`, `/v1/conversations…`, on the `responses` stream),
//! the Anthropic front door (`POST /v1/messages`, `/v1/messages/count_tokens`), the Ollama
//! front door (`/api/chat`, `/api/generate`, `/api/embed`, `/api/show`, `/api/tags`,
//! `/api/ps`, `/api/version`) and LM Studio's `GET /api/v0/models`,
//! `GET /v1/models`, `GET /v1/models/{id}`, `GET /v1/usage`, `POST|DELETE /mcp` (MCP
//! Streamable HTTP), and without auth `GET /health`, `/healthz`, `/readyz`, `/metrics`. With
//! `server.token` set, the others need `Authorization: Bearer <token>` (compared in constant
//! time). CORS preflight is answered before auth; answers are compressed by `Accept-Encoding`.
//!
//! # Layout
//! - [`error`]: the one mapping of errors to HTTP responses.
//! - [`auth`]: authentication middleware (virtual keys, `server.token`, the admin token).
//! - [`console`]: the operator console at `/ui/` and its sessions.
//! - [`keys`]: the keyring of virtual keys and teams, and the caller's identity.
//! - [`govern`]: admission by reservation and settlement of each request.
//! - [`routes`]: the HTTP handlers.
//! - [`cors`]: CORS from `[server] cors_*`.
//! - [`observe`]: request metrics, `/metrics`, `/healthz`, `/readyz`.
//! - [`shed`]: load shedding by the expected wait for a pool and the cluster's queued work
//!   (`x-llmr-priority`).

pub mod auth;
pub mod console;
pub mod cors;
pub mod error;
pub mod files;
pub mod govern;
pub mod health;
pub mod keys;
pub mod observe;
pub mod routes;
pub mod shed;
pub mod trace;

use std::net::TcpListener;
use std::sync::Arc;
use std::sync::atomic::AtomicBool;
use std::time::Duration;

use actix_web::dev::{Server, ServerHandle};
use actix_web::{App, HttpServer, middleware, web};
use llmr_bus::Bus;
use llmr_config::Settings;
use llmr_store::{Store, TaskGuard};

pub use error::HttpError;

#[derive(Debug, thiserror::Error)]
pub enum InitError {
    #[error("cannot listen on {addr}: {source}")]
    Bind { addr: String, source: std::io::Error },
    #[error("server.tls_cert / server.tls_key: {0}")]
    Tls(String),
}

/// The listener's TLS configuration from `server.tls_cert` and `server.tls_key` (PEM), when
/// both are set.
fn tls_config(s: &llmr_config::Server) -> Result<Option<rustls::ServerConfig>, InitError> {
    match (s.tls_cert.is_empty(), s.tls_key.is_empty()) {
        (true, true) => Ok(None),
        (false, false) => server_tls(s.tls_cert.as_ref(), s.tls_key.as_ref()).map(Some),
        _ => Err(InitError::Tls("set both, or neither".into())),
    }
}

/// A TLS server configuration from a PEM certificate chain and its private key (also used by
/// the test kit's HTTPS mock upstream).
pub fn server_tls(cert: &std::path::Path, key: &std::path::Path) -> Result<rustls::ServerConfig, InitError> {
    use rustls::pki_types::pem::PemObject;
    use rustls::pki_types::{CertificateDer, PrivateKeyDer};
    let certs = CertificateDer::pem_file_iter(cert)
        .and_then(Iterator::collect::<Result<Vec<_>, _>>)
        .map_err(|e| InitError::Tls(format!("{}: {e}", cert.display())))?;
    let key = PrivateKeyDer::from_pem_file(key).map_err(|e| InitError::Tls(format!("{}: {e}", key.display())))?;
    rustls::ServerConfig::builder()
        .with_no_client_auth()
        .with_single_cert(certs, key)
        .map_err(|e| InitError::Tls(e.to_string()))
}

/// Binds `server.host:server.port` (port 0 = any free port): the listener, its address and
/// the port it got.
fn bind(s: &llmr_config::Server) -> Result<(TcpListener, String, u16), InitError> {
    let addr = format!("{}:{}", s.host, s.port);
    let bind_error = |source| InitError::Bind {
        addr: addr.clone(),
        source,
    };
    let listener = TcpListener::bind(&addr).map_err(bind_error)?;
    let port = listener.local_addr().map_err(bind_error)?.port();
    Ok((listener, addr, port))
}

/// What every handler shares.
pub struct AppState {
    pub settings: Settings,
    pub bus: Bus,
    pub store: Store,
    /// Every request to the cluster, answered on this instance's reply stream.
    pub caller: llmr_bus::Caller,
    /// This instance's id: its reply stream is `replies:{instance}`.
    pub instance: String,
    /// Set when the process stops: `/readyz` answers 503 from then on.
    pub draining: Arc<AtomicBool>,
    /// Queued work per pool and its completion rate, read every 100 ms (load shedding).
    pub shed: Arc<shed::Shed>,
    /// The services seen alive, read every second.
    pub peers: llmr_store::Peers,
    /// Virtual keys and teams, reloaded when they change.
    pub keyring: Arc<keys::Keyring>,
    /// The console's overview: the window's records seen so far and the last answer.
    pub overview: tokio::sync::Mutex<routes::overview::Cache>,
}

/// How long a request waits for an instance of the service it needs to appear (one may be
/// starting) before it is refused with 503.
pub const PEER_WAIT: Duration = Duration::from_secs(2);

impl AppState {
    /// Sends a request to the service that reads `stream` — refused at once (503) when no
    /// instance of it is alive, instead of waiting unread until the deadline.
    pub async fn send(&self, stream: &str, env: &llmr_protocol::Envelope) -> Result<llmr_bus::Call, HttpError> {
        if let Some(service) = llmr_protocol::streams::served_by(stream) {
            self.peers.require(service, PEER_WAIT).await?;
        }
        Ok(self.caller.send(stream, env).await?)
    }
}

/// Started on each HTTP worker thread as it starts (`llmrouter all` in memory runs a router
/// and workers there); what it returns is kept until the worker stops.
pub type Beside = Arc<dyn Fn() -> Box<dyn std::any::Any> + Send + Sync>;

/// What [`Beside`] started on one HTTP worker thread, kept in its app data.
struct Kept(#[allow(dead_code)] Box<dyn std::any::Any>);

/// A built (bound, not yet running) gateway.
pub struct Gateway {
    server: Server,
    port: u16,
    draining: Arc<AtomicBool>,
    _heartbeat: TaskGuard,
    _shed: shed::Watch,
    _keys: TaskGuard,
}

impl Gateway {
    /// Binds `server.host:server.port` (port 0 = any free port) and starts reading this
    /// instance's reply stream; `beside` runs on each HTTP worker thread as it starts. Call
    /// inside an actix System.
    pub async fn build(
        settings: &Settings,
        bus: Bus,
        store: Store,
        instance: &str,
        beside: Option<Beside>,
    ) -> Result<Gateway, InitError> {
        let tls = tls_config(&settings.server)?;
        let (listener, addr, port) = bind(&settings.server)?;
        let heartbeat = store.keep_alive("gateway", instance, llmr_store::HEARTBEAT_EVERY);
        let peers = llmr_store::Peers::watch(&store, Duration::from_secs(1));
        let draining = Arc::new(AtomicBool::new(false));
        let gauges = Arc::new(shed::Shed::new(settings));
        let shed = shed::watch(bus.clone(), store.clone(), peers.clone(), settings, gauges.clone());
        let keyring = Arc::new(keys::Keyring::new(settings));
        if let Err(e) = keyring.reload(&store, true).await {
            tracing::warn!(error = %e, "could not read virtual keys from the store yet (retried every 250 ms)");
        }
        let keys_watch = keyring.watch(store.clone());
        let state = web::Data::new(AppState {
            settings: settings.clone(),
            caller: llmr_bus::Caller::new(bus.clone(), instance),
            bus,
            store,
            instance: instance.to_owned(),
            draining: draining.clone(),
            shed: gauges,
            peers,
            keyring,
            overview: Default::default(),
        });
        // In `all` the worker runs beside the gateway.
        files::limit(settings.server.max_connections, beside.is_some());
        let (cors_settings, compression) = (settings.server.clone(), settings.server.compression);
        let console_on = settings.ui.enabled;
        let server = HttpServer::new(move || {
            let (query, path) = error::extractor_configs();
            App::new()
                .app_data(beside.as_ref().map(|start| Kept(start())))
                .app_data(state.clone())
                .app_data(query)
                .app_data(path)
                .wrap(middleware::from_fn(auth::require_token))
                // Preflight is answered before auth; answers are compressed on the way out.
                .wrap(middleware::Condition::new(
                    !cors_settings.cors_origins.is_empty(),
                    cors::cors(&cors_settings),
                ))
                .wrap(middleware::Condition::new(compression, middleware::Compress::default()))
                .wrap(middleware::from_fn(observe::record))
                .configure(routes::configure)
                .configure(|cfg| {
                    if console_on {
                        console::configure(cfg);
                    }
                })
                .default_service(web::to(routes::not_found))
        })
        .disable_signals()
        .on_connect(files::on_connect)
        // Stream events are small writes: without this, Nagle and delayed ACKs hold them ~40 ms.
        .tcp_nodelay(true)
        .shutdown_timeout(settings.server.shutdown_grace_ms.div_ceil(1000));
        let server = match tls {
            Some(tls) => server.listen_rustls_0_23(listener, tls),
            None => server.listen(listener),
        }
        .map_err(|source| InitError::Bind { addr, source })?
        .run();
        Ok(Gateway {
            server,
            port,
            draining,
            _heartbeat: heartbeat,
            _shed: shed,
            _keys: keys_watch,
        })
    }

    /// The bound port.
    pub fn port(&self) -> u16 {
        self.port
    }

    /// Set it when the process stops: `/readyz` turns 503.
    pub fn draining(&self) -> Arc<AtomicBool> {
        self.draining.clone()
    }

    /// A handle to stop the server (gracefully or not).
    pub fn handle(&self) -> ServerHandle {
        self.server.handle()
    }

    /// Serves until stopped through the handle.
    pub async fn run_until_stopped(self) -> std::io::Result<()> {
        let Gateway {
            server,
            _heartbeat,
            _shed,
            _keys,
            ..
        } = self;
        server.await
    }
}
