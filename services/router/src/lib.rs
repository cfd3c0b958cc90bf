//! The router service: reads client requests from the `requests` stream, resolves the model
//! to the providers that serve it, orders them into a plan, and hands the plan to a worker
//! pool on `jobs:{pool}`.
//!
//! Decisions written down here (DESIGN.md is silent on them):
//! - A plan holds every provider that serves the model, best first (least live leases
//!   cluster-wide, ties broken at random), all from the first one's pool. Later attempts
//!   are the failover alternates.
//! - Publishing the job and acking the request is one atomic step (`Consumer::forward`), so
//!   a router that dies mid-way neither loses nor duplicates a request; reclaimed requests
//!   are simply routed again.
//! - An unknown model, an expired deadline, or a request that cannot be routed is answered
//!   right here with an error frame; it never reaches a worker.
//!
//! # Layout
//! - [`catalog`]: which provider serves which model (static lists, `GET /models`), shared
//!   with the gateway and `/health` through the store.
//! - [`plan`]: ordering candidates into a plan.
//! - [`script`]: scripted routing (`[routing] script`, model `auto`, strategy `script`).
//! - [`routing`]: from a model to a plan: routes and fallbacks, the store's routing state
//!   as named per-target state, scripted routing, plan ordering.
//! - [`preview`]: the plan a model would get now, and why each target left out is, for
//!   operators (the gateway's `GET /admin/plan`).
//! - [`toolloop`]: automatic tool calling through mcp-tools, on typed completions.
//! - [`work`]: the `requests` stream's work under the shared consumer loop.

pub mod cache;
pub mod catalog;
pub mod plan;
pub mod preview;
pub mod routing;
pub mod script;
pub mod toolloop;
pub mod work;

use std::rc::Rc;
use std::sync::Arc;
use std::time::Duration;

use actix::{Actor, Addr};
use llmr_bus::{Bus, ConsumerActor, Drain, LoopConfig};
use llmr_config::Settings;
use llmr_protocol::streams;
use llmr_store::{Store, TaskGuard};

pub use catalog::Catalog;

#[derive(Debug, thiserror::Error)]
pub enum InitError {
    #[error(transparent)]
    Bus(#[from] llmr_bus::BusError),
}

/// A running router: its consumer actor, its catalog (kept fresh by its refresher) and its
/// heartbeat — or, beside an HTTP worker, its process router's catalog and no heartbeat.
pub struct RouterService {
    addr: Addr<ConsumerActor<work::Requests>>,
    catalog: Arc<Catalog>,
    _refresher: Option<Addr<catalog::Refresher>>,
    _heartbeat: Option<TaskGuard>,
}

impl RouterService {
    /// Starts the router's actors on the current arbiter (inside an actix System). Given the
    /// catalog of its process's router (`beside`), it is a router beside an HTTP worker of
    /// `llmrouter all`: it reads only the requests published on its own thread
    /// ([`LoopConfig::local`]), and leaves the catalog's refresh and the heartbeat to that
    /// router.
    pub async fn build(
        settings: &Settings,
        bus: Bus,
        store: Store,
        instance: &str,
        script_host: &llmr_script::ScriptHost,
        beside: Option<Arc<Catalog>>,
    ) -> Result<RouterService, InitError> {
        let local = beside.is_some();
        let (catalog, refresher) = match beside {
            Some(c) => (c, None),
            None => {
                let c = Arc::new(Catalog::from_settings(settings));
                let refresher = catalog::Refresher::new(c.clone(), store.clone(), settings).start();
                (c, Some(refresher))
            }
        };
        let caller = llmr_bus::Caller::new(bus.clone(), &format!("{instance}-loop"));
        let script = (!settings.routing.script.is_empty()).then(|| {
            script::RoutingScript::new(
                std::path::PathBuf::from(&settings.routing.script),
                script_host.pool(settings, settings.routing.wall_ms),
            )
        });
        let peers = llmr_store::Peers::watch(&store, Duration::from_secs(1));
        let routing = Rc::new(routing::Routing::new(
            settings,
            store.clone(),
            peers,
            catalog.clone(),
            script,
        ));
        let tools = Rc::new(toolloop::ToolLoop::new(settings, routing.clone(), caller));
        // A batch is one task; tool loops are one task each and count towards the same bound.
        let cfg = LoopConfig {
            cancels: true,
            local,
            max_batch: settings.router.batch,
            ..LoopConfig::new(
                &bus,
                settings.router.batch * 4,
                Duration::from_millis(settings.redis.claim_idle_ms),
            )
        };
        let cache = Rc::new(cache::Cache {
            settings: settings.cache.clone(),
            store: store.clone(),
            policy: settings.degraded.cache,
        });
        let work = work::Requests {
            bus: bus.clone(),
            routing,
            tools,
            cache,
        };
        let addr = ConsumerActor::start(&bus, streams::REQUESTS, streams::groups::ROUTERS, instance, cfg, work).await?;
        let heartbeat = (!local).then(|| store.keep_alive("router", instance, llmr_store::HEARTBEAT_EVERY));
        Ok(RouterService {
            addr,
            catalog,
            _refresher: refresher,
            _heartbeat: heartbeat,
        })
    }

    /// The catalog this router routes by.
    pub fn catalog(&self) -> Arc<Catalog> {
        self.catalog.clone()
    }

    /// Stops reading new requests; requests already read are routed (and tool loops run)
    /// first, for up to `grace`.
    pub async fn drain(&self, grace: Duration) {
        let _ = self.addr.send(Drain { grace }).await;
    }
}
