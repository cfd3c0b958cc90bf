//! `GET /health` (no auth): the services seen alive; each provider's state and load; each
//! target's and key's circuit, cooldown and latency; which features can serve now. 200 when
//! the bus and store answer, 503 otherwise (every feature then unavailable).

use actix_web::{HttpResponse, web};
use llmr_config::{Degraded, FailPolicy};
use llmr_protocol::now_ms;
use llmr_store::{Availability, HealthRecord, key_id, key_name, target_id};
use serde_json::{Value, json};

use crate::AppState;

fn availability(h: &HealthRecord, now: u64) -> &'static str {
    match h.availability(now) {
        Availability::Available => "available",
        Availability::Probe => "probe",
        Availability::CoolingUntil(_) => "cooling",
        Availability::OpenUntil(_) => "open",
    }
}

fn describe(h: &HealthRecord, now: u64) -> Value {
    json!({
        "available": availability(h, now),
        "circuit": h.circuit.as_str(),
        "failures": h.failures,
        "open_until_ms": (h.open_until_ms > now).then_some(h.open_until_ms),
        "cooldown_until_ms": (h.cooldown_until_ms > now).then_some(h.cooldown_until_ms),
        "latency_ms": h.latency_ms.map(|l| (l * 10.0).round() / 10.0),
    })
}

/// Why the report could not be made.
#[derive(Debug, thiserror::Error)]
pub(crate) enum Unhealthy {
    #[error(transparent)]
    Bus(#[from] llmr_bus::BusError),
    #[error(transparent)]
    Store(#[from] llmr_store::StoreError),
}

/// The cluster as `/health` shows it (also read by `/metrics`).
pub(crate) async fn report(state: &AppState) -> Result<Value, Unhealthy> {
    state.bus.ping().await?;
    let alive = state.store.alive().await?;
    let providers = state.store.providers().await?;
    let now = now_ms();
    // Targets: what each provider serves, and what the groups name.
    let mut targets: Vec<(String, String)> = Vec::new();
    for p in &providers {
        for m in &p.models {
            targets.push((p.name.clone(), m.clone()));
        }
    }
    for g in &state.settings.models {
        for t in &g.targets {
            if !targets.iter().any(|(p, m)| *p == t.provider && *m == t.model) {
                targets.push((t.provider.clone(), t.model.clone()));
            }
        }
    }
    let keys: Vec<(String, usize)> = state
        .settings
        .providers()
        .flat_map(|p| (0..p.resolved_keys.len()).map(move |i| (p.name.clone(), i)))
        .collect();
    let leases: Vec<String> = targets.iter().map(|(p, m)| format!("{p}/{m}")).collect();
    let mut ids: Vec<String> = targets.iter().map(|(p, m)| target_id(p, m)).collect();
    ids.extend(keys.iter().map(|(p, i)| key_id(p, *i)));
    let (loads, health) = futures_util::join!(state.store.loads(&leases), state.store.health(&ids));
    let loads = loads?;
    let health = health?;
    let target_json: Vec<Value> = targets
        .iter()
        .enumerate()
        .map(|(i, (p, m))| {
            let mut v = describe(&health[i], now);
            v["target"] = json!(format!("{p}/{m}"));
            v["load"] = json!(loads[i]);
            v
        })
        .collect();
    let provider_json: Vec<Value> = providers
        .iter()
        .map(|p| {
            let load: u64 = targets.iter().zip(&loads).filter(|((tp, _), _)| *tp == p.name).map(|(_, l)| *l).sum();
            let key_json: Vec<Value> = keys
                .iter()
                .enumerate()
                .filter(|(_, (kp, _))| *kp == p.name)
                .map(|(j, (kp, i))| {
                    let mut v = describe(&health[targets.len() + j], now);
                    v["key"] = json!(key_name(kp, *i));
                    v
                })
                .collect();
            json!({"name": p.name, "state": p.state, "error": p.error, "models": p.models, "load": load, "keys": key_json})
        })
        .collect();
    let reasons = degraded(state, &alive, &target_json, &provider_json);
    let parts = StoreParts::read(&state.store, now).await;
    Ok(json!({
        "status": if reasons.is_empty() { "ok" } else { "degraded" },
        "reasons": reasons,
        "features": features(&alive, &reasons, &parts, &state.settings.degraded),
        "backend": if state.bus.is_memory() { "memory" } else { "redis" },
        "instance": state.instance,
        "in_flight": state.caller.in_flight(),
        "services": alive,
        "providers": provider_json,
        "targets": target_json,
    }))
}

/// The features a client may use, each `ok`, `degraded: why` (chat when some of its models
/// or pools cannot serve; a feature whose store part fails under an `open` policy) or
/// `unavailable: why` (no live instance of a service it needs — it answers 503 within 2 s —
/// or its store part fails under a `closed` policy).
fn features(alive: &[llmr_store::Alive], reasons: &[String], parts: &StoreParts, policy: &Degraded) -> Value {
    let has = |s: &str| alive.iter().any(|a| a.service == s);
    let needs = |services: &[&str]| {
        services
            .iter()
            .find(|s| !has(s))
            .map(|s| format!("no {s} instance is alive"))
    };
    // A failing store part: unavailable when its policy is closed, degraded when open.
    let part = |err: &Option<String>, p: FailPolicy| {
        err.as_ref().map(|e| {
            (
                format!("{}store: {e}", if p.is_open() { "fail open: " } else { "" }),
                p.is_open(),
            )
        })
    };
    let rate = |missing: Option<String>, fails: &[(Option<String>, FailPolicy)]| -> String {
        if let Some(m) = missing {
            return format!("unavailable: {m}");
        }
        let fails: Vec<(String, bool)> = fails.iter().filter_map(|(e, p)| part(e, *p)).collect();
        match fails.iter().find(|(_, open)| !open) {
            Some((why, _)) => format!("unavailable: {why}"),
            None => fails
                .first()
                .map_or_else(|| "ok".to_owned(), |(why, _)| format!("degraded: {why}")),
        }
    };
    let routing = (parts.routing_state.clone(), policy.routing_state);
    let usage = (parts.usage.clone(), policy.usage);
    let mut chat = rate(needs(&["router", "worker"]), &[routing.clone(), usage.clone()]);
    if chat == "ok" && !reasons.is_empty() {
        chat = format!("degraded: {}", reasons.join("; "));
    }
    let sessions = (parts.mcp_sessions.clone(), policy.mcp_sessions);
    let stored = (parts.stored_responses.clone(), policy.stored_responses);
    let claims = (parts.tool_calls.clone(), policy.tool_calls);
    json!({
        "chat": chat,
        "responses": rate(needs(&["responses", "router", "worker"]), &[stored, routing.clone(), usage.clone()]),
        "mcp": rate(needs(&["mcp-tools"]), std::slice::from_ref(&sessions)),
        "server_side_tools": rate(needs(&["mcp-tools", "router", "worker"]), &[claims]),
        "routing_state": rate(None, &[routing]),
        "usage": rate(None, &[usage]),
        "cache": rate(None, &[(parts.cache.clone(), policy.cache)]),
    })
}

/// Whether each feature's part of the store answers: one read of each (of a key nobody
/// writes), all at once. A store that refuses some keys (an ACL, a failing script) shows
/// here while the bus and the rest of the store work.
#[derive(Debug, Default)]
struct StoreParts {
    routing_state: Option<String>,
    usage: Option<String>,
    cache: Option<String>,
    mcp_sessions: Option<String>,
    stored_responses: Option<String>,
    tool_calls: Option<String>,
}

impl StoreParts {
    async fn read(store: &llmr_store::Store, now: u64) -> StoreParts {
        const PROBE: &str = "health-probe";
        let day = llmr_store::utc_day(now);
        let probe = [PROBE.to_owned()];
        let pairs = [(PROBE.to_owned(), PROBE.to_owned())];
        // The keys a cached answer, a stored response and a tool call's claim live under.
        let keys = ["cache:", "resp:", "toolcall:"].map(|k| format!("{k}{PROBE}"));
        let err = |r: Result<(), llmr_store::StoreError>| r.err().map(|e| e.to_string());
        let (routing, usage, cache, sessions, stored, claims) = futures_util::join!(
            store.routing_state(&probe, &probe, &pairs, &day),
            store.usage(PROBE, PROBE, &day),
            store.doc_get(&keys[0]),
            store.kv_get(super::mcp::SESSIONS, PROBE),
            store.doc_get(&keys[1]),
            store.doc_get(&keys[2]),
        );
        StoreParts {
            routing_state: err(routing.map(|_| ())),
            usage: err(usage.map(|_| ())),
            cache: err(cache.map(|_| ())),
            mcp_sessions: err(sessions.map(|_| ())),
            stored_responses: err(stored.map(|_| ())),
            tool_calls: err(claims.map(|_| ())),
        }
    }
}

/// Every feature unavailable: the bus or store does not answer.
pub(crate) fn all_unavailable(why: &str) -> Value {
    let why = format!("unavailable: {why}");
    let names = FEATURES.iter().map(|f| ((*f).to_owned(), json!(why)));
    Value::Object(names.collect())
}

/// The features `/health` reports, as `llmr_feature_available` labels them.
pub(crate) const FEATURES: [&str; 7] = [
    "chat",
    "responses",
    "mcp",
    "server_side_tools",
    "routing_state",
    "usage",
    "cache",
];

/// Why the cluster cannot serve everything it is configured for: no live router, a pool
/// without a live worker, a model whose every target is open or cooling.
fn degraded(state: &AppState, alive: &[llmr_store::Alive], targets: &[Value], providers: &[Value]) -> Vec<String> {
    let mut reasons = Vec::new();
    if !alive.iter().any(|a| a.service == "router") {
        reasons.push("no router is alive".to_owned());
    }
    let mut pools: Vec<&str> = state.settings.providers().map(|p| p.pool.as_str()).collect();
    pools.sort_unstable();
    pools.dedup();
    for pool in pools {
        let prefix = format!("{pool}:");
        if !alive
            .iter()
            .any(|a| a.service == "worker" && a.instance.starts_with(&prefix))
        {
            reasons.push(format!("pool `{pool}` has no live worker"));
        }
    }
    // Models: each group's targets, and each provider-served model's.
    let mut models: Vec<(String, Vec<String>)> = state
        .settings
        .models
        .iter()
        .map(|g| {
            (
                g.name.clone(),
                g.targets
                    .iter()
                    .map(|t| format!("{}/{}", t.provider, t.model))
                    .collect(),
            )
        })
        .collect();
    for t in targets {
        let name = t["target"].as_str().unwrap_or_default();
        let model = name.split_once('/').map_or(name, |(_, m)| m);
        match models.iter_mut().find(|(m, _)| m == model) {
            Some((_, ts)) if !ts.iter().any(|x| x == name) => ts.push(name.to_owned()),
            Some(_) => {}
            None => models.push((model.to_owned(), vec![name.to_owned()])),
        }
    }
    let unusable = |v: &Value| matches!(v["available"].as_str(), Some("open" | "cooling"));
    // A target is down when its circuit is, or when every key of its provider is.
    let down = |name: &str| {
        let provider = name.split_once('/').map_or(name, |(p, _)| p);
        let keys: Vec<&Value> = providers
            .iter()
            .filter(|p| p["name"] == provider)
            .flat_map(|p| p["keys"].as_array().into_iter().flatten())
            .collect();
        targets.iter().find(|t| t["target"] == name).is_some_and(unusable)
            || (!keys.is_empty() && keys.iter().all(|k| unusable(k)))
    };
    for (model, ts) in models {
        if !ts.is_empty() && ts.iter().all(|t| down(t)) {
            reasons.push(format!("every target of `{model}` is down or cooling"));
        }
    }
    reasons
}

pub async fn health(state: web::Data<AppState>) -> HttpResponse {
    let backend = if state.bus.is_memory() { "memory" } else { "redis" };
    match tokio::time::timeout(std::time::Duration::from_millis(900), report(&state)).await {
        Ok(Ok(v)) => HttpResponse::Ok().json(v),
        Ok(Err(e)) => HttpResponse::ServiceUnavailable().json(
            json!({"status": "unavailable", "backend": backend, "error": e.to_string(), "features": all_unavailable(&e.to_string())}),
        ),
        Err(_) => {
            let error = "the store did not answer in time";
            HttpResponse::ServiceUnavailable().json(
                json!({"status": "unavailable", "backend": backend, "error": error, "features": all_unavailable(error)}),
            )
        }
    }
}
