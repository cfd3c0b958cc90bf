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
//! - [`toolloop`]: automatic tool calling through mcp-tools.
//! - [`actor`]: the consumer actor and its messages.

pub mod actor;
pub mod catalog;
pub mod plan;
pub mod script;
pub mod toolloop;

use std::rc::Rc;
use std::time::Duration;

use actix::{Actor, Addr};
use llmr_bus::Bus;
use llmr_config::Settings;
use llmr_store::{Store, TaskGuard};

pub use catalog::Catalog;

/// The stream the router reads, and its consumer group.
pub const REQUESTS: &str = "requests";
pub const GROUP: &str = "routers";

#[derive(Debug, thiserror::Error)]
pub enum InitError {
    #[error(transparent)]
    Bus(#[from] llmr_bus::BusError),
}

/// A running router: its consumer actor, catalog refresher and heartbeat.
pub struct RouterService {
    addr: Addr<actor::RouterActor>,
    _refresher: Addr<catalog::Refresher>,
    _heartbeat: TaskGuard,
}

impl RouterService {
    /// Starts the router's actors on the current arbiter (inside an actix System).
    pub async fn build(
        settings: &Settings,
        bus: Bus,
        store: Store,
        instance: &str,
        script_host: &llmr_script::ScriptHost,
    ) -> Result<RouterService, InitError> {
        let consumer = bus.consumer(REQUESTS, GROUP, instance).await?;
        let catalog = Rc::new(Catalog::from_settings(settings));
        let refresher = catalog::Refresher::new(catalog.clone(), store.clone(), settings).start();
        let caller = llmr_bus::Caller::new(bus.clone(), &format!("{instance}-loop"));
        let script = (!settings.routing.script.is_empty()).then(|| {
            script::RoutingScript::new(
                std::path::PathBuf::from(&settings.routing.script),
                script_host.pool(settings, settings.routing.wall_ms),
            )
        });
        let addr = actor::RouterActor::new(settings, bus, store.clone(), catalog, consumer, caller, script).start();
        let heartbeat = store.keep_alive("router", instance, Duration::from_secs(2));
        Ok(RouterService {
            addr,
            _refresher: refresher,
            _heartbeat: heartbeat,
        })
    }

    /// Stops reading new requests; requests already read are routed first.
    pub async fn drain(&self) {
        let _ = self.addr.send(actor::Drain).await;
    }
}
