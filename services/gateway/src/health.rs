//! The cluster's health as one typed report: the services seen alive; each provider's state
//! and load; each target's and key's circuit, cooldown and latency; which features can serve
//! now. `GET /health` serves it as JSON, `/metrics` turns it into gauges, the console shows it.

use llmr_config::{Degraded, FailPolicy};
use llmr_protocol::now_ms;
use llmr_store::{Alive, Availability, HealthRecord, ProviderStatus, key_id, key_name, target_id};
use serde::{Serialize, Serializer};

use crate::AppState;

/// One target's or key's health, as `/health` shows it.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub(crate) struct HealthView {
    /// Shown as `available`, `probe`, `cooling` or `open`.
    #[serde(serialize_with = "availability_label")]
    pub available: Availability,
    /// `closed`, `open` or `half_open`, as the store says.
    pub circuit: &'static str,
    pub failures: u32,
    pub open_until_ms: Option<u64>,
    pub cooldown_until_ms: Option<u64>,
    pub latency_ms: Option<f64>,
}

impl HealthView {
    fn of(h: &HealthRecord, now: u64) -> HealthView {
        HealthView {
            available: h.availability(now),
            circuit: h.circuit.as_str(),
            failures: h.failures,
            open_until_ms: (h.open_until_ms > now).then_some(h.open_until_ms),
            cooldown_until_ms: (h.cooldown_until_ms > now).then_some(h.cooldown_until_ms),
            latency_ms: h.latency_ms.map(|l| (l * 10.0).round() / 10.0),
        }
    }

    /// Open or cooling: it takes no call now.
    pub fn unusable(&self) -> bool {
        matches!(
            self.available,
            Availability::OpenUntil(_) | Availability::CoolingUntil(_)
        )
    }
}

fn availability_label<S: Serializer>(a: &Availability, s: S) -> Result<S::Ok, S::Error> {
    s.serialize_str(a.label())
}

/// What a feature can do now; shown as `ok`, `degraded: why` or `unavailable: why`.
#[derive(Debug, Clone, PartialEq)]
pub(crate) enum FeatureState {
    Ok,
    /// It serves, with something missing or failing open.
    Degraded(String),
    /// It answers 503.
    Unavailable(String),
}

impl FeatureState {
    /// It serves (fully or degraded).
    pub fn is_up(&self) -> bool {
        !matches!(self, FeatureState::Unavailable(_))
    }
}

impl Serialize for FeatureState {
    fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        match self {
            FeatureState::Ok => s.serialize_str("ok"),
            FeatureState::Degraded(why) => s.serialize_str(&format!("degraded: {why}")),
            FeatureState::Unavailable(why) => s.serialize_str(&format!("unavailable: {why}")),
        }
    }
}

/// A target (`provider/model`): its health and live leases.
#[derive(Debug, Clone, Serialize)]
pub(crate) struct TargetView {
    pub target: String,
    /// The provider of `target`.
    #[serde(skip)]
    pub provider: String,
    #[serde(flatten)]
    pub health: HealthView,
    pub load: u64,
}

/// One key of a provider, by its name (`provider#index`), never the key.
#[derive(Debug, Clone, Serialize)]
pub(crate) struct KeyView {
    pub key: String,
    /// Its index in the provider's resolved keys.
    #[serde(skip)]
    pub index: usize,
    #[serde(flatten)]
    pub health: HealthView,
}

/// A provider as the routers published it, with its targets' load and its keys' health.
#[derive(Debug, Clone, Serialize)]
pub(crate) struct ProviderView {
    pub name: String,
    pub state: String,
    pub error: Option<String>,
    pub models: Vec<String>,
    pub load: u64,
    pub keys: Vec<KeyView>,
}

/// What the store says of the cluster now: the live instances, providers, targets and keys.
pub(crate) struct Snapshot {
    pub alive: Vec<Alive>,
    pub providers: Vec<ProviderView>,
    pub targets: Vec<TargetView>,
}

/// Why the report could not be made.
#[derive(Debug, thiserror::Error)]
pub(crate) enum Unhealthy {
    #[error(transparent)]
    Bus(#[from] llmr_bus::BusError),
    #[error(transparent)]
    Store(#[from] llmr_store::StoreError),
}

impl From<Unhealthy> for crate::HttpError {
    fn from(e: Unhealthy) -> crate::HttpError {
        match e {
            Unhealthy::Bus(e) => e.into(),
            Unhealthy::Store(e) => e.into(),
        }
    }
}

/// The targets `/health` shows: what each provider serves, then what the groups name.
fn target_names(settings: &llmr_config::Settings, providers: &[ProviderStatus]) -> Vec<(String, String)> {
    let mut targets: Vec<(String, String)> = Vec::new();
    for p in providers {
        for m in &p.models {
            targets.push((p.name.clone(), m.clone()));
        }
    }
    for g in &settings.models {
        for t in &g.targets {
            if !targets.iter().any(|(p, m)| *p == t.provider && *m == t.model) {
                targets.push((t.provider.clone(), t.model.clone()));
            }
        }
    }
    targets
}

impl Snapshot {
    /// Reads it: the bus is pinged, then the store asked (loads and health in one go).
    pub(crate) async fn read(state: &AppState) -> Result<Snapshot, Unhealthy> {
        state.bus.ping().await?;
        let alive = state.store.alive().await?;
        let published = state.store.providers().await?;
        let now = now_ms();
        let names = target_names(&state.settings, &published);
        let keys: Vec<(String, usize)> = state
            .settings
            .providers()
            .flat_map(|p| (0..p.resolved_keys.len()).map(move |i| (p.name.clone(), i)))
            .collect();
        let leases: Vec<String> = names.iter().map(|(p, m)| format!("{p}/{m}")).collect();
        let mut ids: Vec<String> = names.iter().map(|(p, m)| target_id(p, m)).collect();
        ids.extend(keys.iter().map(|(p, i)| key_id(p, *i)));
        let (loads, health) = futures_util::join!(state.store.loads(&leases), state.store.health(&ids));
        let (loads, health) = (loads?, health?);
        let view = |i: usize| HealthView::of(health.get(i).unwrap_or(&HealthRecord::default()), now);
        let targets: Vec<TargetView> = leases
            .into_iter()
            .zip(&names)
            .enumerate()
            .map(|(i, (target, (provider, _)))| TargetView {
                target,
                provider: provider.clone(),
                health: view(i),
                load: loads.get(i).copied().unwrap_or(0),
            })
            .collect();
        let providers = published
            .into_iter()
            .map(|p| {
                let load = targets.iter().filter(|t| t.provider == p.name).map(|t| t.load).sum();
                let keys = keys
                    .iter()
                    .enumerate()
                    .filter(|(_, (kp, _))| *kp == p.name)
                    .map(|(j, (kp, i))| KeyView {
                        key: key_name(kp, *i),
                        index: *i,
                        health: view(names.len() + j),
                    })
                    .collect();
                ProviderView {
                    name: p.name,
                    state: p.state,
                    error: p.error,
                    models: p.models,
                    load,
                    keys,
                }
            })
            .collect();
        Ok(Snapshot {
            alive,
            providers,
            targets,
        })
    }
}

/// The cluster as `/health` shows it (also read by `/metrics` and the console).
#[derive(Debug, Serialize)]
pub(crate) struct Report {
    /// `ok` or `degraded`.
    pub status: &'static str,
    pub reasons: Vec<String>,
    /// Each feature of [`FEATURES`] and what it can do now.
    pub features: Features,
    /// `memory` or `redis`.
    pub backend: &'static str,
    pub instance: String,
    pub in_flight: usize,
    pub services: Vec<Alive>,
    pub providers: Vec<ProviderView>,
    pub targets: Vec<TargetView>,
}

/// The backend's name.
pub(crate) fn backend(state: &AppState) -> &'static str {
    if state.bus.is_memory() { "memory" } else { "redis" }
}

/// The cluster as `/health` shows it.
pub(crate) async fn report(state: &AppState) -> Result<Report, Unhealthy> {
    let snap = Snapshot::read(state).await?;
    let reasons = degraded(state, &snap);
    let parts = StoreParts::read(&state.store, now_ms()).await;
    Ok(Report {
        status: if reasons.is_empty() { "ok" } else { "degraded" },
        features: features(&snap.alive, &reasons, &parts, &state.settings.degraded),
        reasons,
        backend: backend(state),
        instance: state.instance.clone(),
        in_flight: state.caller.in_flight(),
        services: snap.alive,
        providers: snap.providers,
        targets: snap.targets,
    })
}

/// The features a client may use, each `ok`, `degraded: why` (chat when some of its models
/// or pools cannot serve; a feature whose store part fails under an `open` policy) or
/// `unavailable: why` (no live instance of a service it needs — it answers 503 within 2 s —
/// or its store part fails under a `closed` policy).
fn features(alive: &[Alive], reasons: &[String], parts: &StoreParts, policy: &Degraded) -> Features {
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
    let rate = |missing: Option<String>, fails: &[(Option<String>, FailPolicy)]| -> FeatureState {
        if let Some(m) = missing {
            return FeatureState::Unavailable(m);
        }
        let fails: Vec<(String, bool)> = fails.iter().filter_map(|(e, p)| part(e, *p)).collect();
        match fails.iter().find(|(_, open)| !open) {
            Some((why, _)) => FeatureState::Unavailable(why.clone()),
            None => fails
                .first()
                .map_or(FeatureState::Ok, |(why, _)| FeatureState::Degraded(why.clone())),
        }
    };
    let routing = (parts.routing_state.clone(), policy.routing_state);
    let usage = (parts.usage.clone(), policy.usage);
    let mut chat = rate(needs(&["router", "worker"]), &[routing.clone(), usage.clone()]);
    if chat == FeatureState::Ok && !reasons.is_empty() {
        chat = FeatureState::Degraded(reasons.join("; "));
    }
    let sessions = (parts.mcp_sessions.clone(), policy.mcp_sessions);
    let stored = (parts.stored_responses.clone(), policy.stored_responses);
    let claims = (parts.tool_calls.clone(), policy.tool_calls);
    Features::from([
        ("chat", chat),
        (
            "responses",
            rate(
                needs(&["responses", "router", "worker"]),
                &[stored, routing.clone(), usage.clone()],
            ),
        ),
        ("mcp", rate(needs(&["mcp-tools"]), std::slice::from_ref(&sessions))),
        (
            "server_side_tools",
            rate(needs(&["mcp-tools", "router", "worker"]), &[claims]),
        ),
        ("routing_state", rate(None, &[routing])),
        ("usage", rate(None, &[usage])),
        ("cache", rate(None, &[(parts.cache.clone(), policy.cache)])),
    ])
}

/// Each feature (the names of [`FEATURES`]) and what it can do now.
pub(crate) type Features = std::collections::BTreeMap<&'static str, FeatureState>;

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
        let keys = [
            llmr_store::cache::cache_key(PROBE),
            format!("resp:{PROBE}"),
            format!("toolcall:{PROBE}"),
        ];
        let err = |r: Result<(), llmr_store::StoreError>| r.err().map(|e| e.to_string());
        let (routing, usage, cache, sessions, stored, claims) = futures_util::join!(
            store.routing_state(&probe, &probe, &pairs, &day),
            store.usage(PROBE, PROBE, &day),
            store.doc_get(&keys[0]),
            store.kv_get(crate::routes::mcp::SESSIONS, PROBE),
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
pub(crate) fn all_unavailable(why: &str) -> Features {
    FEATURES
        .iter()
        .map(|f| (*f, FeatureState::Unavailable(why.to_owned())))
        .collect()
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
fn degraded(state: &AppState, snap: &Snapshot) -> Vec<String> {
    let alive = &snap.alive;
    let mut reasons = Vec::new();
    if !alive.iter().any(|a| a.service == "router") {
        reasons.push("no router is alive".to_owned());
    }
    let mut pools: Vec<&str> = state.settings.providers().map(|p| p.pool.as_str()).collect();
    pools.sort_unstable();
    pools.dedup();
    for pool in pools {
        if workers_in(alive, pool) == 0 {
            reasons.push(format!("pool `{pool}` has no live worker"));
        }
    }
    // Models: each group's targets, and each provider-served model's.
    let mut models: Vec<(String, Vec<String>)> = state
        .settings
        .models
        .iter()
        .map(|g| {
            let targets = g.targets.iter().map(|t| format!("{}/{}", t.provider, t.model));
            (g.name.clone(), targets.collect())
        })
        .collect();
    for t in &snap.targets {
        let name = t.target.as_str();
        let model = name.split_once('/').map_or(name, |(_, m)| m);
        match models.iter_mut().find(|(m, _)| m == model) {
            Some((_, ts)) if !ts.iter().any(|x| x == name) => ts.push(name.to_owned()),
            Some(_) => {}
            None => models.push((model.to_owned(), vec![name.to_owned()])),
        }
    }
    // A target is down when its circuit is, or when every key of its provider is.
    let down = |name: &str| {
        let provider = name.split_once('/').map_or(name, |(p, _)| p);
        let keys: Vec<&KeyView> = snap
            .providers
            .iter()
            .filter(|p| p.name == provider)
            .flat_map(|p| &p.keys)
            .collect();
        snap.targets
            .iter()
            .find(|t| t.target == name)
            .is_some_and(|t| t.health.unusable())
            || (!keys.is_empty() && keys.iter().all(|k| k.health.unusable()))
    };
    for (model, ts) in models {
        if !ts.is_empty() && ts.iter().all(|t| down(t)) {
            reasons.push(format!("every target of `{model}` is down or cooling"));
        }
    }
    reasons
}

/// Live workers of `pool` (a worker's instance is `{pool}:{id}`).
pub(crate) fn workers_in(alive: &[Alive], pool: &str) -> usize {
    alive
        .iter()
        .filter(|a| a.service == "worker" && a.instance.strip_prefix(pool).is_some_and(|r| r.starts_with(':')))
        .count()
}
