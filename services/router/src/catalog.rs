//! Which provider serves which model.
//!
//! Providers with a static `models` list are known at once. The others are asked
//! `GET {base_url}/models` at start and every `router.models_refresh_ms`; a provider that
//! cannot be asked keeps its last known list and is shown with state `error`. Allow- and
//! denylists apply to both. Every change is published to the store, where the gateway
//! (`/v1/models`) and `/health` read it.

use std::collections::BTreeMap;
use std::sync::{Arc, RwLock, RwLockReadGuard};
use std::time::Duration;

use actix::{Actor, AsyncContext, Context, Handler, Message, WrapFuture};
use llmr_config::{ModelGroup, Provider, ProviderType, Settings, Strategy};
use llmr_protocol::now_ms;
use llmr_store::{ProviderStatus, Store};
use secrecy::ExposeSecret;
use serde::Deserialize;

/// One provider as the router sees it.
#[derive(Debug, Clone)]
pub struct Entry {
    pub provider: Provider,
    pub models: Vec<String>,
    pub state: String,
    pub error: Option<String>,
}

/// One target of a route: a provider and the model name it knows, with what strategies weigh.
#[derive(Debug, Clone, PartialEq)]
pub struct TargetSpec {
    pub provider: String,
    pub model: String,
    pub pool: String,
    pub weight: u32,
    pub priority: u32,
    pub cost_input_per_mtok: f64,
    pub cost_output_per_mtok: f64,
    pub context_window: Option<u64>,
    /// How many keys the provider has (0 = keyless).
    pub keys: usize,
    /// Calls hold a slot or lock.
    pub limited: bool,
    /// The model has no native tools: its attempts carry `xml_tools`.
    pub xml_tools: bool,
}

impl TargetSpec {
    /// The lease (load) name: `provider/model`.
    pub fn lease(&self) -> String {
        format!("{}/{}", self.provider, self.model)
    }
}

/// How one requested model name is served.
#[derive(Debug, Clone)]
pub struct Route {
    pub name: String,
    pub strategy: Strategy,
    pub targets: Vec<TargetSpec>,
    pub fallbacks: Vec<String>,
    /// Server-side tools offered on every request (a group's tool set).
    pub tools: Vec<String>,
    /// The group's response-cache switch (None: `cache.enabled` decides).
    pub cache: Option<bool>,
}

/// The model name that routes over every target (by `[routing] script`, else least load)
/// when no group or model has that name.
pub const AUTO: &str = "auto";

/// The catalog of one router process: provider name → entry, and the model groups. The
/// routers beside the HTTP workers of `llmrouter all` share their process router's.
#[derive(Debug, Default)]
pub struct Catalog {
    entries: RwLock<BTreeMap<String, Entry>>,
    groups: BTreeMap<String, ModelGroup>,
    default_strategy: Option<Strategy>,
}

impl Catalog {
    pub fn from_settings(settings: &Settings) -> Catalog {
        let entries = settings
            .providers()
            .map(|p| {
                let models = p.filter_models(&p.models);
                (
                    p.name.clone(),
                    Entry {
                        provider: p.clone(),
                        models,
                        state: "ok".into(),
                        error: None,
                    },
                )
            })
            .collect();
        let groups = settings.models.iter().map(|g| (g.name.clone(), g.clone())).collect();
        Catalog {
            entries: RwLock::new(entries),
            groups,
            default_strategy: Some(settings.router.strategy),
        }
    }

    fn entries(&self) -> RwLockReadGuard<'_, BTreeMap<String, Entry>> {
        // A writer that panicked left whole entries: read them.
        self.entries.read().unwrap_or_else(|e| e.into_inner())
    }

    fn spec(p: &Provider, model: &str, weight: Option<u32>) -> TargetSpec {
        TargetSpec {
            provider: p.name.clone(),
            model: model.to_owned(),
            pool: p.pool.clone(),
            weight: weight.unwrap_or(p.weight),
            priority: p.priority,
            cost_input_per_mtok: p.cost_of(model).0,
            cost_output_per_mtok: p.cost_of(model).1,
            context_window: p.context_window_of(model),
            keys: p.resolved_keys.len(),
            limited: p.limited(),
            xml_tools: false,
        }
    }

    /// How `model` is served: a group by that name, else every enabled provider that lists
    /// the model (with the default strategy). None: nothing serves it.
    pub fn route(&self, model: &str) -> Option<Route> {
        let entries = self.entries();
        let strategy = self.default_strategy.unwrap_or(Strategy::LeastLoad);
        if let Some(g) = self.groups.get(model) {
            let targets = g
                .targets
                .iter()
                .filter_map(|t| {
                    entries.get(&t.provider).map(|e| TargetSpec {
                        xml_tools: !t.supports_tools,
                        ..Self::spec(&e.provider, &t.model, t.weight)
                    })
                })
                .collect();
            return Some(Route {
                name: g.name.clone(),
                strategy: g.strategy.unwrap_or(strategy),
                targets,
                fallbacks: g.fallbacks.clone(),
                tools: g.tools.clone(),
                cache: g.cache,
            });
        }
        let targets: Vec<TargetSpec> = entries
            .values()
            .filter(|e| e.models.iter().any(|m| m == model))
            .map(|e| Self::spec(&e.provider, model, None))
            .collect();
        (!targets.is_empty())
            .then(|| Route {
                name: model.to_owned(),
                strategy,
                targets,
                fallbacks: Vec::new(),
                tools: Vec::new(),
                cache: None,
            })
            .or_else(|| (model == AUTO).then(|| self.auto(&entries)))
    }

    /// `auto`: every target of every group and provider model, chosen by the routing script.
    fn auto(&self, entries: &BTreeMap<String, Entry>) -> Route {
        let mut targets: Vec<TargetSpec> = Vec::new();
        let mut add = |t: TargetSpec| {
            if !targets.iter().any(|x| x.provider == t.provider && x.model == t.model) {
                targets.push(t);
            }
        };
        for g in self.groups.values() {
            for t in &g.targets {
                if let Some(e) = entries.get(&t.provider) {
                    add(Self::spec(&e.provider, &t.model, t.weight));
                }
            }
        }
        for e in entries.values() {
            for m in &e.models {
                add(Self::spec(&e.provider, m, None));
            }
        }
        Route {
            name: AUTO.into(),
            strategy: Strategy::Script,
            targets,
            fallbacks: Vec::new(),
            tools: Vec::new(),
            cache: None,
        }
    }

    /// Names of the model groups.
    pub fn group_names(&self) -> Vec<String> {
        self.groups.keys().cloned().collect()
    }

    /// Whether `name` is a model group.
    pub fn is_group(&self, name: &str) -> bool {
        self.groups.contains_key(name)
    }

    /// Takes what the routers published of each provider (the model lists they fetched, and
    /// their state): a catalog built from the settings elsewhere (the gateway's) then routes
    /// as theirs does. Providers this configuration does not have are ignored.
    pub fn apply(&self, published: &[ProviderStatus]) {
        let mut entries = self.entries.write().unwrap_or_else(|e| e.into_inner());
        for s in published {
            if let Some(e) = entries.get_mut(&s.name) {
                e.models = e.provider.filter_models(&s.models);
                e.state.clone_from(&s.state);
                e.error.clone_from(&s.error);
            }
        }
    }

    /// `(provider, pool)` of every enabled provider serving `model`, in name order.
    pub fn providers_for(&self, model: &str) -> Vec<(String, String)> {
        self.entries()
            .values()
            .filter(|e| e.models.iter().any(|m| m == model))
            .map(|e| (e.provider.name.clone(), e.provider.pool.clone()))
            .collect()
    }

    fn set_models(&self, name: &str, models: Result<Vec<String>, ListError>) {
        let mut entries = self.entries.write().unwrap_or_else(|e| e.into_inner());
        let Some(e) = entries.get_mut(name) else {
            return;
        };
        match models {
            Ok(m) => {
                e.models = e.provider.filter_models(&m);
                e.state = "ok".into();
                e.error = None;
            }
            Err(err) => {
                e.state = "error".into();
                e.error = Some(err.to_string());
            }
        }
    }

    fn statuses(&self) -> Vec<ProviderStatus> {
        let now = now_ms();
        self.entries()
            .values()
            .map(|e| ProviderStatus {
                name: e.provider.name.clone(),
                models: e.models.clone(),
                state: e.state.clone(),
                error: e.error.clone(),
                updated_ms: now,
            })
            .collect()
    }

    /// Providers whose model list must be asked from the upstream.
    fn dynamic(&self) -> Vec<Provider> {
        self.entries()
            .values()
            .filter(|e| e.provider.kind.is_upstream() && e.provider.models.is_empty())
            .map(|e| e.provider.clone())
            .collect()
    }
}

/// Keeps the catalog fresh and published.
pub struct Refresher {
    catalog: Arc<Catalog>,
    store: Store,
    every: Duration,
    timeout: Duration,
}

impl Refresher {
    pub fn new(catalog: Arc<Catalog>, store: Store, settings: &Settings) -> Refresher {
        Refresher {
            catalog,
            store,
            every: Duration::from_millis(settings.router.models_refresh_ms),
            timeout: Duration::from_millis(settings.worker.connect_timeout_ms.max(1000) * 2),
        }
    }
}

/// Refresh now.
#[derive(Message)]
#[rtype(result = "()")]
pub struct Refresh;

impl Actor for Refresher {
    type Context = Context<Self>;

    fn started(&mut self, ctx: &mut Context<Self>) {
        ctx.notify(Refresh);
        ctx.run_interval(self.every, |_, ctx| ctx.notify(Refresh));
        // Re-publish the statuses now and then, so a restarted Redis (or a new gateway) sees
        // them without waiting a full refresh period.
        ctx.run_interval(Duration::from_secs(5), |act, ctx| {
            let (store, statuses) = (act.store.clone(), act.catalog.statuses());
            ctx.spawn(async move { publish(&store, &statuses).await }.into_actor(act));
        });
    }
}

impl Handler<Refresh> for Refresher {
    type Result = ();

    fn handle(&mut self, _: Refresh, ctx: &mut Context<Self>) {
        let (catalog, store, timeout) = (self.catalog.clone(), self.store.clone(), self.timeout);
        ctx.spawn(
            async move {
                let client = awc::Client::builder().timeout(timeout).finish();
                for p in catalog.dynamic() {
                    let r = fetch_models(&client, &p).await;
                    if let Err(e) = &r {
                        tracing::warn!(provider = %p.name, error = %e, "could not list the provider's models");
                    }
                    catalog.set_models(&p.name, r);
                }
                publish(&store, &catalog.statuses()).await;
            }
            .into_actor(self),
        );
    }
}

async fn publish(store: &Store, statuses: &[ProviderStatus]) {
    for s in statuses {
        if let Err(e) = store.set_provider(s).await {
            tracing::warn!(error = %e, "could not publish provider status");
            return;
        }
    }
}

#[derive(Deserialize)]
struct ModelList {
    data: Vec<ModelId>,
}

#[derive(Deserialize)]
struct ModelId {
    id: String,
}

/// The `anthropic-version` header llmrouter speaks.
pub const ANTHROPIC_VERSION: &str = llmr_protocol::anthropic::VERSION;

#[derive(Deserialize)]
struct OllamaTags {
    models: Vec<OllamaModel>,
}

#[derive(Deserialize)]
struct OllamaModel {
    name: String,
}

/// Why a provider's model list could not be fetched; its text is the provider's `error`.
#[derive(Debug, thiserror::Error)]
enum ListError {
    /// No answer came.
    #[error("{0}")]
    Send(#[from] awc::error::SendRequestError),
    /// The provider answered, but not with a success.
    #[error("GET {path} answered {status}")]
    Status {
        path: &'static str,
        status: awc::http::StatusCode,
    },
    /// The answer was not a model list.
    #[error("{0}")]
    Body(#[from] awc::error::JsonPayloadError),
}

async fn fetch_models(client: &awc::Client, p: &Provider) -> Result<Vec<String>, ListError> {
    if p.kind == ProviderType::Ollama {
        // Ollama lists its local models at /api/tags.
        let mut resp = client.get(format!("{}/api/tags", p.base())).send().await?;
        if !resp.status().is_success() {
            return Err(ListError::Status {
                path: "/api/tags",
                status: resp.status(),
            });
        }
        let tags: OllamaTags = resp.json().limit(8 << 20).await?;
        return Ok(tags.models.into_iter().map(|m| m.name).collect());
    }
    let mut req = client.get(format!("{}/models", p.base()));
    if let Some(k) = p.resolved_keys.first() {
        req = req.bearer_auth(k.expose_secret());
        if p.kind == ProviderType::Gemini {
            req = req.insert_header(("x-goog-api-key", k.expose_secret()));
        }
        if p.kind == ProviderType::Anthropic {
            req = req
                .insert_header(("x-api-key", k.expose_secret()))
                .insert_header(("anthropic-version", ANTHROPIC_VERSION));
        }
    }
    let mut resp = req.send().await?;
    if !resp.status().is_success() {
        return Err(ListError::Status {
            path: "/models",
            status: resp.status(),
        });
    }
    let list: ModelList = resp.json().limit(8 << 20).await?;
    // Gemini names its models `models/{id}`; clients ask for `{id}`.
    Ok(list
        .data
        .into_iter()
        .map(|m| m.id.strip_prefix("models/").map_or(m.id.clone(), str::to_owned))
        .collect())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn settings(toml: &str) -> Settings {
        let path = std::env::temp_dir().join(format!("llmr-catalog-{}-{}.toml", std::process::id(), toml.len()));
        std::fs::write(&path, toml).unwrap();
        let s = llmr_config::load_from(Some(&path), Default::default()).unwrap();
        let _ = std::fs::remove_file(path);
        s
    }

    #[test]
    fn resolves_models_to_enabled_providers() {
        let s = settings(
            "[[providers]]\nname='a'\ntype='echo'\nmodels=['m','x']\n[[providers]]\nname='b'\ntype='echo'\nmodels=['m']\npool='gpu'\n[[providers]]\nname='c'\ntype='echo'\nmodels=['m']\nenabled=false\n[[providers]]\nname='d'\ntype='echo'\nmodels=['m','x']\ndenylist=['m']\n",
        );
        let c = Catalog::from_settings(&s);
        assert_eq!(
            c.providers_for("m"),
            vec![
                ("a".to_string(), "default".to_string()),
                ("b".to_string(), "gpu".to_string())
            ]
        );
        assert_eq!(c.providers_for("x").len(), 2);
        assert!(c.providers_for("nope").is_empty());
        let r = c.route("m").unwrap();
        assert_eq!(
            r.targets.iter().map(|t| t.provider.as_str()).collect::<Vec<_>>(),
            vec!["a", "b"]
        );
        assert!(c.route("nope").is_none());
    }

    #[test]
    fn groups_route_to_their_targets_before_plain_models() {
        let s = settings(
            "[router]\nstrategy='priority'\n[[providers]]\nname='a'\ntype='echo'\nmodels=['m']\nweight=4\npriority=2\ncontext_window={'*'=1000}\n[[models]]\nname='m'\nstrategy='weighted'\ntargets=[{provider='a',model='real',weight=7},{provider='a',model='other'}]\nfallbacks=['g2']\n[[models]]\nname='g2'\ntargets=[{provider='a',model='m'}]\n",
        );
        let c = Catalog::from_settings(&s);
        let r = c.route("m").unwrap();
        assert_eq!(r.strategy, Strategy::Weighted);
        assert_eq!(r.targets[0].model, "real");
        assert_eq!(r.targets[0].weight, 7);
        assert_eq!(r.targets[1].weight, 4, "the provider's weight by default");
        assert_eq!(r.targets[0].context_window, Some(1000));
        assert_eq!(r.fallbacks, vec!["g2"]);
        assert_eq!(
            c.route("g2").unwrap().strategy,
            Strategy::Priority,
            "router.strategy by default"
        );
    }

    #[test]
    fn a_failed_refresh_keeps_the_last_list() {
        let s = settings(
            "[[providers]]\nname='up'\ntype='openai'\nbase_url='http://127.0.0.1:1/v1'\nallowlist=['a','b']\n",
        );
        let c = Catalog::from_settings(&s);
        assert!(c.providers_for("a").is_empty());
        c.set_models("up", Ok(vec!["a".into(), "b".into(), "c".into()]));
        assert_eq!(c.providers_for("a").len(), 1);
        assert!(c.providers_for("c").is_empty(), "allowlist applies to fetched lists");
        let refused = ListError::Status {
            path: "/models",
            status: awc::http::StatusCode::SERVICE_UNAVAILABLE,
        };
        c.set_models("up", Err(refused));
        assert_eq!(c.providers_for("a").len(), 1);
        assert_eq!(c.statuses()[0].state, "error");
        assert_eq!(
            c.statuses()[0].error.as_deref(),
            Some("GET /models answered 503 Service Unavailable")
        );
    }
}
