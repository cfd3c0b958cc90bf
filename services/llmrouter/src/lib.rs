//! Assembles llmrouter services into one process: `llmrouter all` (every service, in memory
//! or over Redis) or one service per process (`gateway`, `router`, `worker --pool P`,
//! `mcp-tools`). [`cli`] holds the client verbs (`tool`, `script`), [`admin_cli`] those of
//! the gateway's admin API (`keys`, `spend`).
//!
//! The separate services need Redis and refuse to start without `redis.url`; with a URL,
//! they wait (with backoff) for Redis to answer before starting, so a cluster can come up in
//! any order. A stop drains: the gateway stops accepting and finishes open responses, the
//! router stops reading, workers finish their jobs (up to a grace period).
//!
//! [`spawn`] runs the same thing in a background thread with its own actix System: the
//! in-process tests use it.

pub mod admin;
pub mod admin_cli;
pub mod cli;

use std::time::Duration;

use llmr_bus::Bus;
use llmr_config::Settings;
use llmr_gateway::Gateway;
use llmr_mcp_tools::McpToolsService;
use llmr_router::RouterService;
use llmr_store::Store;
use llmr_worker::WorkerService;

/// Which services a process runs.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Role {
    All,
    Gateway,
    Router,
    Worker { pool: String },
    McpTools,
    Responses,
}

impl Role {
    pub fn name(&self) -> &'static str {
        match self {
            Role::All => "all",
            Role::Gateway => "gateway",
            Role::Router => "router",
            Role::Worker { .. } => "worker",
            Role::McpTools => "mcp-tools",
            Role::Responses => "responses",
        }
    }
}

#[derive(Debug, thiserror::Error)]
pub enum AppError {
    #[error(
        "`llmrouter {0}` needs Redis: set redis.url (LLMR__REDIS__URL). Only `llmrouter all` runs with the in-memory bus and store."
    )]
    NeedsRedis(&'static str),
    #[error(transparent)]
    Bus(#[from] llmr_bus::BusError),
    #[error(transparent)]
    Gateway(#[from] llmr_gateway::InitError),
    #[error(transparent)]
    Router(#[from] llmr_router::InitError),
    #[error(transparent)]
    Worker(#[from] llmr_worker::InitError),
    #[error(transparent)]
    McpTools(#[from] llmr_mcp_tools::InitError),
    #[error(transparent)]
    Responses(#[from] llmr_responses::InitError),
    #[error("cannot start the admin listener (telemetry.admin_host/admin_port): {0}")]
    Admin(std::io::Error),
}

/// The running services of this process.
pub struct App {
    gateway: Option<Gateway>,
    gateway_handle: Option<actix_web::dev::ServerHandle>,
    port: Option<u16>,
    router: Option<RouterService>,
    workers: Vec<WorkerService>,
    mcp_tools: Option<McpToolsService>,
    responses: Option<llmr_responses::ResponsesService>,
    /// The admin listener (roles without the gateway, when configured).
    admin: Option<admin::Admin>,
    /// Set when the process starts to stop: readiness turns false.
    draining: std::sync::Arc<std::sync::atomic::AtomicBool>,
    /// How long work in flight may take to finish on stop (`server.shutdown_grace_ms`).
    grace: Duration,
}

/// Starts the services of `role` on the current actix System.
pub async fn start(role: &Role, settings: &Settings) -> Result<App, AppError> {
    llmr_worker::install_tls_provider();
    match raise_open_files() {
        Ok(n) => tracing::info!(
            open_files = n,
            "open-file limit raised as far as this process may (soft to hard)"
        ),
        Err(e) => tracing::warn!(error = %e, "could not raise the open-file limit"),
    }
    let instance = format!("{}-{}", role.name(), &uuid::Uuid::now_v7().simple().to_string()[20..]);
    let (bus, store) = connect(role, settings).await?;
    let mut app = App::new(settings);
    let script_host = llmr_script::ScriptHost::from_settings(settings);
    if matches!(role, Role::All | Role::Router) {
        app.router =
            Some(RouterService::build(settings, bus.clone(), store.clone(), &instance, &script_host, None).await?);
    }
    if matches!(role, Role::All | Role::McpTools) {
        app.mcp_tools =
            Some(McpToolsService::build(settings, bus.clone(), store.clone(), &instance, &script_host).await?);
    }
    if matches!(role, Role::All | Role::Responses) {
        app.responses =
            Some(llmr_responses::ResponsesService::build(settings, bus.clone(), store.clone(), &instance).await?);
    }
    let pools = pools_of(role, settings);
    for pool in &pools {
        app.workers
            .push(WorkerService::build(settings, bus.clone(), store.clone(), &instance, pool, None).await?);
    }
    if matches!(role, Role::All | Role::Gateway) {
        let beside = match &app.router {
            Some(router) if *role == Role::All && bus.is_memory() => {
                let shared = Shared {
                    bus: bus.clone(),
                    store: store.clone(),
                    script_host: script_host.clone(),
                    catalog: router.catalog(),
                    pools: pools
                        .iter()
                        .cloned()
                        .zip(app.workers.iter().map(WorkerService::rooms))
                        .collect(),
                };
                Some(beside_http_workers(settings, shared, &instance))
            }
            _ => None,
        };
        let g = Gateway::build(settings, bus, store.clone(), &instance, beside).await?;
        app.draining = g.draining();
        app.port = Some(g.port());
        app.gateway_handle = Some(g.handle());
        app.gateway = Some(g);
    }
    if app.gateway.is_none() {
        app.admin = admin::start(settings, store.clone(), app.draining.clone()).map_err(AppError::Admin)?;
    }
    tracing::info!(
        role = role.name(),
        instance,
        port = app.port,
        admin_port = app.admin.as_ref().map(|a| a.port),
        "llmrouter started"
    );
    Ok(app)
}

/// The bus and store: over Redis when `redis.url` is set (waiting for it to answer, except
/// for the gateway), in memory for `all` without one; the other roles need Redis.
async fn connect(role: &Role, settings: &Settings) -> Result<(Bus, Store), AppError> {
    match settings.redis.url() {
        Some(url) => {
            let conns = std::sync::Arc::new(llmr_bus::RedisConns::new(llmr_bus::redis_pool(
                url,
                settings.redis.pool_size,
            )?));
            let bus = Bus::redis_with(url, &settings.redis.prefix, conns.clone())?;
            let store = Store::redis(conns, &settings.redis.prefix);
            if *role != Role::Gateway {
                wait_for_redis(&bus).await;
            }
            Ok((bus, store))
        }
        None if *role == Role::All => Ok((Bus::memory(), Store::memory())),
        None => Err(AppError::NeedsRedis(role.name())),
    }
}

/// The worker pools `role` serves: for `all`, every enabled provider's and `default`.
fn pools_of(role: &Role, settings: &Settings) -> Vec<String> {
    match role {
        Role::All => {
            let mut p: Vec<String> = settings.providers().map(|p| p.pool.clone()).collect();
            p.push("default".into());
            p.sort();
            p.dedup();
            p
        }
        Role::Worker { pool } => vec![pool.clone()],
        _ => Vec::new(),
    }
}

/// What the services beside the HTTP workers share with the process's own.
#[derive(Clone)]
struct Shared {
    bus: Bus,
    store: Store,
    script_host: llmr_script::ScriptHost,
    catalog: std::sync::Arc<llmr_router::Catalog>,
    /// Each pool and the rooms of the process's worker of it.
    pools: Vec<(String, Vec<std::sync::Arc<llmr_bus::Room>>)>,
}

/// `llmrouter all` in memory: a router and the workers of every pool beside each HTTP
/// worker thread, reading only what that thread publishes, so a chat completion is routed
/// and run on the thread it arrived on, with no hand-off to another. The process-wide
/// router and workers serve the rest: the Responses API, tool loops' calls, and what a
/// thread publishes before its own services have started.
fn beside_http_workers(settings: &Settings, shared: Shared, instance: &str) -> llmr_gateway::Beside {
    let (settings, instance) = (settings.clone(), instance.to_owned());
    let threads = std::sync::atomic::AtomicUsize::new(0);
    std::sync::Arc::new(move || {
        let n = threads.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
        let kept: std::rc::Rc<std::cell::RefCell<Vec<Box<dyn std::any::Any>>>> = Default::default();
        let (settings, shared) = (settings.clone(), shared.clone());
        let (instance, keep) = (format!("{instance}-t{n}"), kept.clone());
        actix_rt::spawn(async move {
            let Shared { bus, store, .. } = &shared;
            for (pool, rooms) in &shared.pools {
                let rooms = Some(rooms.clone());
                match WorkerService::build(&settings, bus.clone(), store.clone(), &instance, pool, rooms).await {
                    Ok(w) => keep.borrow_mut().push(Box::new(w)),
                    Err(e) => tracing::warn!(error = %e, pool, "no worker beside this HTTP worker"),
                }
            }
            let (host, catalog) = (&shared.script_host, Some(shared.catalog.clone()));
            match RouterService::build(&settings, bus.clone(), store.clone(), &instance, host, catalog).await {
                Ok(r) => keep.borrow_mut().push(Box::new(r)),
                Err(e) => tracing::warn!(error = %e, "no router beside this HTTP worker"),
            }
        });
        Box::new(kept)
    })
}

/// Most open files a process may be allowed on Linux (`fs.nr_open`'s default).
const MAX_OPEN_FILES: u64 = 1 << 20;

/// Every open stream holds a client socket (and, in a worker, an upstream one): raises the
/// open-file limit as far as the process may — the hard limit too where it is allowed to
/// (root with CAP_SYS_RESOURCE, up to `fs.nr_open`), else the soft limit to the hard one.
/// Returns the limit now in force.
pub fn raise_open_files() -> std::io::Result<u64> {
    let most = std::fs::read_to_string("/proc/sys/fs/nr_open")
        .ok()
        .and_then(|s| s.trim().parse().ok())
        .unwrap_or(MAX_OPEN_FILES)
        .min(MAX_OPEN_FILES);
    let (_, hard) = rlimit::Resource::NOFILE.get()?;
    if hard < most && rlimit::Resource::NOFILE.set(most, most).is_ok() {
        return Ok(most);
    }
    rlimit::increase_nofile_limit(u64::MAX)
}

async fn wait_for_redis(bus: &Bus) {
    let mut backoff = Duration::from_millis(200);
    while let Err(e) = bus.ping().await {
        tracing::warn!(error = %e, "waiting for Redis");
        tokio::time::sleep(backoff).await;
        backoff = (backoff * 2).min(Duration::from_secs(5));
    }
}

impl App {
    /// No services yet; work in flight gets `server.shutdown_grace_ms` on stop.
    fn new(settings: &Settings) -> App {
        App {
            gateway: None,
            gateway_handle: None,
            port: None,
            router: None,
            workers: Vec::new(),
            mcp_tools: None,
            responses: None,
            admin: None,
            draining: Default::default(),
            grace: Duration::from_millis(settings.server.shutdown_grace_ms),
        }
    }

    /// The gateway's bound port, when this process runs one.
    pub fn port(&self) -> Option<u16> {
        self.port
    }

    /// Serves until SIGINT/SIGTERM (or the gateway stops), then drains.
    pub async fn run_until_stopped(self) {
        self.serve_until(async {
            shutdown_signal().await;
            tracing::info!("stop signal received; draining");
        })
        .await;
    }

    /// Serves until `stop` resolves (or the HTTP server ends), then stops gracefully. The
    /// HTTP server keeps being driven while it drains: dropping it would close the
    /// connections of requests still in flight.
    pub async fn serve_until(mut self, stop: impl std::future::Future<Output = ()>) {
        let Some(gateway) = self.gateway.take() else {
            stop.await;
            self.stop().await;
            return;
        };
        let mut serve = Box::pin(async move {
            if let Err(e) = gateway.run_until_stopped().await {
                tracing::error!(error = %e, "the HTTP server failed");
            }
        });
        tokio::select! {
            () = &mut serve => self.stop().await,
            () = stop => {
                // `stop()` asks the server to finish its requests; it ends once they are done.
                tokio::join!(self.stop(), serve);
            }
        }
    }

    /// Stops accepting work and drains what is in flight.
    pub async fn stop(self) {
        // Readiness goes false first, so a load balancer stops sending work.
        self.draining.store(true, std::sync::atomic::Ordering::Relaxed);
        let grace = self.grace;
        if let Some(r) = &self.router {
            r.drain(grace).await;
        }
        let workers = self.workers.iter().map(|w| w.drain(grace));
        let gateway = async {
            if let Some(h) = &self.gateway_handle {
                h.stop(true).await;
            }
        };
        let tools = async {
            if let Some(m) = &self.mcp_tools {
                m.drain(grace).await;
            }
        };
        let responses = async {
            if let Some(r) = &self.responses {
                r.drain(grace).await;
            }
        };
        tokio::join!(futures_util::future::join_all(workers), gateway, tools, responses);
        if let Some(a) = &self.admin {
            a.handle.stop(true).await;
        }
    }
}

async fn shutdown_signal() {
    #[cfg(unix)]
    {
        let term = async {
            match tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate()) {
                Ok(mut s) => {
                    s.recv().await;
                }
                Err(_) => std::future::pending::<()>().await,
            }
        };
        tokio::select! {
            _ = tokio::signal::ctrl_c() => {}
            () = term => {}
        }
    }
    #[cfg(not(unix))]
    {
        let _ = tokio::signal::ctrl_c().await;
    }
}

/// A process's services running in a background thread (its own actix System).
/// Dropping it stops them and waits for the thread.
pub struct Running {
    port: Option<u16>,
    stop: Option<tokio::sync::oneshot::Sender<()>>,
    thread: Option<std::thread::JoinHandle<()>>,
}

impl Running {
    pub fn port(&self) -> Option<u16> {
        self.port
    }

    /// `http://127.0.0.1:PORT` of the gateway.
    pub fn url(&self) -> String {
        format!("http://127.0.0.1:{}", self.port.unwrap_or(0))
    }
}

impl Drop for Running {
    fn drop(&mut self) {
        if let Some(s) = self.stop.take() {
            let _ = s.send(());
        }
        if let Some(t) = self.thread.take() {
            let _ = t.join();
        }
    }
}

/// Starts `role` in a background thread and returns once it serves.
pub fn spawn(role: Role, settings: Settings) -> Result<Running, AppError> {
    let (ready_tx, ready_rx) = std::sync::mpsc::channel();
    let (stop_tx, stop_rx) = tokio::sync::oneshot::channel::<()>();
    let thread = std::thread::spawn(move || {
        actix_rt::System::new().block_on(async move {
            let app = match start(&role, &settings).await {
                Ok(app) => {
                    let _ = ready_tx.send(Ok(app.port()));
                    app
                }
                Err(e) => {
                    let _ = ready_tx.send(Err(e));
                    return;
                }
            };
            app.serve_until(async {
                let _ = stop_rx.await;
            })
            .await;
        });
    });
    match ready_rx.recv() {
        Ok(Ok(port)) => Ok(Running {
            port,
            stop: Some(stop_tx),
            thread: Some(thread),
        }),
        Ok(Err(e)) => {
            let _ = thread.join();
            Err(e)
        }
        Err(_) => {
            let _ = thread.join();
            Err(AppError::Bus(llmr_bus::BusError::Unavailable(
                "the service thread stopped during start".into(),
            )))
        }
    }
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    #[test]
    fn the_open_file_limit_is_raised_as_far_as_the_process_may() {
        let (_, hard_before) = rlimit::Resource::NOFILE.get().unwrap();
        let n = super::raise_open_files().unwrap();
        let (soft, hard) = rlimit::Resource::NOFILE.get().unwrap();
        assert_eq!(soft, n, "what it says is in force");
        assert_eq!(soft, hard, "as far as the hard limit");
        assert!(hard >= hard_before, "never lowered: {hard} < {hard_before}");
        // With CAP_SYS_RESOURCE (bit 24 of the effective set) the hard limit goes up too.
        let caps = std::fs::read_to_string("/proc/self/status").unwrap_or_default();
        let may_raise = caps
            .lines()
            .find_map(|l| l.strip_prefix("CapEff:"))
            .and_then(|v| u64::from_str_radix(v.trim(), 16).ok())
            .is_some_and(|c| c & (1 << 24) != 0);
        if may_raise && hard_before < super::MAX_OPEN_FILES {
            assert!(hard > hard_before, "the hard limit was raised: {hard}");
        }
    }
}
