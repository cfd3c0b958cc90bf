//! What the operator console shows beside keys, spend and the request log, as JSON under
//! `/admin/` (admin token or console session): providers and targets, the routing plan of a
//! model, the cluster's instances and streams, the MCP tools, the effective configuration.
//!
//! Every answer is read from the cluster's shared state when asked, so any gateway shows the
//! same thing, and nothing is computed while nobody asks:
//! - `GET /admin/providers`: `/health`'s providers and targets ([`health::Snapshot`]) with
//!   each provider's type, latency average and masked keys (`sk-…abcd`, never the key).
//! - `GET /admin/plan?model=`: the plan the router would make now, by the router's own code
//!   ([`llmr_router::preview`]) over a catalog built from this configuration and the lists
//!   the routers published.
//! - `GET /admin/cluster`: `/health`'s status, reasons and features; every live instance with
//!   its version and start; each stream's length, pending and lag per consumer group; live
//!   workers per pool.
//! - `GET /admin/tools`: the catalog as the mcp-tools instance that answers knows it (a
//!   `tool_inventory` envelope on the `mcp` stream; 503 when no mcp-tools runs).
//! - `GET /admin/config`: the effective configuration, every secret redacted
//!   ([`llmr_config::redact`]).

use std::sync::Arc;

use actix_web::{HttpResponse, web};
use bytes::Bytes;
use llmr_config::ProviderType;
use llmr_protocol::tools::Inventory;
use llmr_protocol::{ApiError, Envelope, Kind, Meta, TraceContext, now_ms, streams};
use llmr_router::preview::Preview;
use llmr_store::Instance;
use secrecy::ExposeSecret;
use serde::{Deserialize, Serialize};

use crate::health::{self, Features, KeyView, ProviderView, Snapshot, TargetView};
use crate::{AppState, HttpError};

/// `GET /admin/providers`.
#[derive(Debug, Serialize)]
struct Providers {
    now_ms: u64,
    providers: Vec<ProviderRow>,
    targets: Vec<TargetView>,
}

/// A provider as `/health` shows it, with what the console adds.
#[derive(Debug, Serialize)]
struct ProviderRow {
    name: String,
    /// Its `type` in the configuration (none once it left the configuration).
    #[serde(rename = "type")]
    kind: Option<ProviderType>,
    state: String,
    error: Option<String>,
    models: Vec<String>,
    load: u64,
    /// The average of its targets' latency averages (those measured).
    latency_ms: Option<f64>,
    keys: Vec<KeyRow>,
}

/// A key's health with a masked hint of the key.
#[derive(Debug, Serialize)]
struct KeyRow {
    #[serde(flatten)]
    key: KeyView,
    masked: String,
}

/// `GET /admin/providers`.
pub async fn providers(state: web::Data<AppState>) -> Result<HttpResponse, HttpError> {
    let snap = Snapshot::read(&state).await?;
    let rows = snap
        .providers
        .into_iter()
        .map(|p| provider_row(&state.settings, &snap.targets, p))
        .collect();
    Ok(HttpResponse::Ok().json(Providers {
        now_ms: now_ms(),
        providers: rows,
        targets: snap.targets,
    }))
}

fn provider_row(settings: &llmr_config::Settings, targets: &[TargetView], p: ProviderView) -> ProviderRow {
    let configured = settings.providers().find(|c| c.name == p.name);
    let latencies: Vec<f64> = targets
        .iter()
        .filter(|t| t.provider == p.name)
        .filter_map(|t| t.health.latency_ms)
        .collect();
    let latency_ms =
        (!latencies.is_empty()).then(|| (latencies.iter().sum::<f64>() / latencies.len() as f64 * 10.0).round() / 10.0);
    let keys = p
        .keys
        .into_iter()
        .map(|k| KeyRow {
            masked: configured
                .and_then(|c| c.resolved_keys.get(k.index))
                .map(|s| llmr_config::mask_secret(s.expose_secret()))
                .unwrap_or_default(),
            key: k,
        })
        .collect();
    ProviderRow {
        kind: configured.map(|c| c.kind),
        name: p.name,
        state: p.state,
        error: p.error,
        models: p.models,
        load: p.load,
        latency_ms,
        keys,
    }
}

/// `GET /admin/plan?model=`.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct PlanQuery {
    model: String,
}

/// The plan a model would get now.
#[derive(Debug, Serialize)]
struct PlanView {
    model: String,
    group: Option<String>,
    strategy: &'static str,
    /// The worker pool the plan runs in; none when nothing can be tried now.
    pool: Option<String>,
    targets: Vec<PlanStep>,
}

/// One target of the plan: the attempts in order, then those left out (`skipped` says why).
#[derive(Debug, Serialize)]
struct PlanStep {
    target: String,
    /// The group or model it comes from (a fallback group's name for its targets).
    route: String,
    pool: String,
    available: &'static str,
    load: u64,
    latency_ms: Option<f64>,
    /// The key the attempt would use (`provider#index`).
    key: Option<String>,
    /// It must win the probe of a recovered circuit first.
    probe: bool,
    skipped: Option<String>,
}

impl PlanView {
    fn of(p: Preview) -> PlanView {
        let targets = p
            .targets
            .into_iter()
            .map(|s| PlanStep {
                key: s.key.map(|k| {
                    let provider = s.target.split_once('/').map_or(s.target.as_str(), |(p, _)| p);
                    llmr_store::key_name(provider, k as usize)
                }),
                target: s.target,
                route: s.route,
                pool: s.pool,
                available: s.availability.label(),
                load: s.load,
                latency_ms: s.latency_ms.map(|l| (l * 10.0).round() / 10.0),
                probe: s.probe,
                skipped: s.skipped,
            })
            .collect();
        PlanView {
            model: p.model,
            group: p.group,
            strategy: p.strategy.as_str(),
            pool: p.pool,
            targets,
        }
    }
}

/// `GET /admin/plan?model=`: 404 `model_not_found` for a model nothing serves.
pub async fn plan(q: web::Query<PlanQuery>, state: web::Data<AppState>) -> Result<HttpResponse, HttpError> {
    let published = state.store.providers().await?;
    let catalog = Arc::new(llmr_router::Catalog::from_settings(&state.settings));
    catalog.apply(&published);
    let routing =
        llmr_router::routing::Routing::new(&state.settings, state.store.clone(), state.peers.clone(), catalog, None);
    let preview = routing.preview(&q.model, now_ms()).await?;
    Ok(HttpResponse::Ok().json(PlanView::of(preview)))
}

/// `GET /admin/cluster`.
#[derive(Debug, Serialize)]
struct Cluster {
    backend: &'static str,
    status: &'static str,
    reasons: Vec<String>,
    features: Features,
    instances: Vec<Instance>,
    streams: Vec<StreamRow>,
    pools: Vec<PoolRow>,
}

/// One stream and the consumer group that reads it.
#[derive(Debug, Serialize)]
struct StreamRow {
    stream: String,
    group: &'static str,
    /// Entries in the stream: waiting or in flight.
    length: u64,
    /// Delivered to the group and not acked (in flight).
    pending: u64,
    /// Not yet delivered to the group (none: this Redis does not say).
    lag: Option<u64>,
}

#[derive(Debug, Serialize)]
struct PoolRow {
    pool: String,
    /// Live workers reading its jobs.
    workers: usize,
}

/// `GET /admin/cluster`.
pub async fn cluster(state: web::Data<AppState>) -> Result<HttpResponse, HttpError> {
    let report = health::report(&state).await?;
    let instances = state.store.instances().await?;
    let every = crate::shed::every_stream(&state.settings);
    let backlogs =
        futures_util::future::join_all(every.iter().map(|(stream, group)| state.bus.backlog(stream, group))).await;
    let mut streams = Vec::with_capacity(every.len());
    for ((stream, group), b) in every.into_iter().zip(backlogs) {
        let b = b?;
        streams.push(StreamRow {
            stream,
            group,
            length: b.length,
            pending: b.pending,
            lag: b.lag,
        });
    }
    Ok(HttpResponse::Ok().json(Cluster {
        pools: pools(&state.settings, &report.services),
        backend: report.backend,
        status: report.status,
        reasons: report.reasons,
        features: report.features,
        instances,
        streams,
    }))
}

/// Every pool — configured (and `default`), or read by a live worker — with its live workers.
fn pools(settings: &llmr_config::Settings, alive: &[llmr_store::Alive]) -> Vec<PoolRow> {
    let mut names: Vec<&str> = settings.providers().map(|p| p.pool.as_str()).collect();
    names.push("default");
    names.extend(
        alive
            .iter()
            .filter(|a| a.service == "worker")
            .filter_map(|a| a.instance.split_once(':').map(|(p, _)| p)),
    );
    names.sort_unstable();
    names.dedup();
    names
        .into_iter()
        .map(|pool| PoolRow {
            pool: pool.to_owned(),
            workers: health::workers_in(alive, pool),
        })
        .collect()
}

/// How long mcp-tools may take to list its catalog (remote servers are asked within it).
const INVENTORY_WAIT_MS: u64 = 10_000;

/// `GET /admin/tools`: 503 when no mcp-tools instance runs.
pub async fn tools(state: web::Data<AppState>) -> Result<HttpResponse, HttpError> {
    let deadline = now_ms() + INVENTORY_WAIT_MS.min(state.settings.server.request_timeout_ms);
    let trace = llmr_telemetry::context(&tracing::Span::current(), &TraceContext::default());
    let env = Envelope::new(
        Kind::ToolInventory,
        &state.instance,
        deadline,
        trace,
        Bytes::new(),
        Meta::default(),
    );
    let answer = state.send(streams::MCP, &env).await?.answer().await?;
    let inventory: Inventory = serde_json::from_slice(&answer.body).map_err(|e| {
        HttpError(ApiError::Internal {
            message: format!("mcp-tools answered an unreadable tool inventory: {e}"),
        })
    })?;
    Ok(HttpResponse::Ok().json(inventory))
}

/// `GET /admin/config`.
#[derive(Debug, Serialize)]
struct Config {
    config: serde_json::Value,
}

/// `GET /admin/config`: the effective configuration, every secret `[redacted]`.
pub async fn config(state: web::Data<AppState>) -> Result<HttpResponse, HttpError> {
    Ok(HttpResponse::Ok().json(Config {
        config: state.settings.redacted(),
    }))
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;

    fn alive(service: &str, instance: &str) -> llmr_store::Alive {
        llmr_store::Alive {
            service: service.into(),
            instance: instance.into(),
        }
    }

    #[test]
    fn pools_count_their_live_workers_configured_or_not() {
        let toml = "[[providers]]\nname = \"g\"\ntype = \"echo\"\nmodels = [\"m\"]\npool = \"gpu\"\n";
        let settings = llmr_config::load_toml(toml, Default::default()).unwrap();
        let live = [
            alive("worker", "gpu:w1"),
            alive("worker", "gpu:w2"),
            alive("worker", "gpu2:w3"),
            alive("router", "gpu:r1"),
        ];
        let shown: Vec<(String, usize)> = pools(&settings, &live)
            .into_iter()
            .map(|p| (p.pool, p.workers))
            .collect();
        assert_eq!(
            shown,
            vec![("default".into(), 0), ("gpu".into(), 2), ("gpu2".into(), 1)],
            "`gpu2`'s worker is not `gpu`'s"
        );
    }
}
