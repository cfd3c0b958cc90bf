//! `llmrouter import-litellm`: a LiteLLM proxy config (`model_list`, `router_settings`,
//! `litellm_settings`, `general_settings`) turned into this configuration's providers and
//! model groups, as TOML, with a list of what could not be mapped.
//!
//! Each `model_list` entry is one deployment: `litellm_params.model` is `provider/model`
//! (openai, azure, anthropic, gemini, ollama, and OpenAI-compatible hosts such as groq,
//! mistral, deepseek, together_ai, openrouter, fireworks_ai, xai, hosted_vllm), `api_base`
//! the base URL, `api_key` a literal or `os.environ/NAME`. Deployments with the same type,
//! base URL, key and API version share one provider; entries with the same `model_name`
//! become one group whose targets they are. `rpm` (else `tpm`) or `weight` become target
//! weights, `router_settings.routing_strategy` the groups' strategy, `fallbacks` the groups'
//! fallbacks, `num_retries` the retry budget, `timeout` the request timeout, and
//! `general_settings.master_key` the gateway token.

use std::collections::BTreeMap;
use std::path::Path;

use serde_json::{Map, Value, json};

/// The outcome of an import.
#[derive(Debug, Default)]
pub struct Imported {
    /// The configuration, as TOML.
    pub toml: String,
    /// What was not mapped, one line each.
    pub unmapped: Vec<String>,
}

/// Why an import could not run at all.
#[derive(Debug, thiserror::Error)]
pub enum ImportError {
    #[error("cannot read {path}: {message}")]
    Read { path: String, message: String },
    #[error("{0}")]
    Invalid(String),
}

/// Reads a LiteLLM YAML (or JSON) config file and imports it.
pub fn litellm_file(path: &Path) -> Result<Imported, ImportError> {
    let read = |message: String| ImportError::Read {
        path: path.display().to_string(),
        message,
    };
    let text = std::fs::read_to_string(path).map_err(|e| read(e.to_string()))?;
    let format = match path.extension().and_then(|e| e.to_str()) {
        Some("json") => config::FileFormat::Json,
        _ => config::FileFormat::Yaml,
    };
    let v: Value = config::Config::builder()
        .add_source(config::File::from_str(&text, format))
        .build()
        .and_then(|c| c.try_deserialize())
        .map_err(|e| read(e.to_string()))?;
    litellm(&v)
}

/// A provider type and its default base URL for a LiteLLM provider prefix.
fn provider_type(prefix: &str) -> Option<(&'static str, &'static str)> {
    Some(match prefix {
        "openai" | "text-completion-openai" => ("openai", "https://api.openai.com/v1"),
        "azure" => ("azure", ""),
        "anthropic" => ("anthropic", "https://api.anthropic.com/v1"),
        "gemini" => ("gemini", "https://generativelanguage.googleapis.com/v1beta/openai"),
        "ollama" | "ollama_chat" => ("ollama", "http://localhost:11434"),
        "groq" => ("openai", "https://api.groq.com/openai/v1"),
        "mistral" => ("openai", "https://api.mistral.ai/v1"),
        "deepseek" => ("openai", "https://api.deepseek.com/v1"),
        "together_ai" => ("openai", "https://api.together.xyz/v1"),
        "openrouter" => ("openai", "https://openrouter.ai/api/v1"),
        "fireworks_ai" => ("openai", "https://api.fireworks.ai/inference/v1"),
        "xai" => ("openai", "https://api.x.ai/v1"),
        "perplexity" => ("openai", "https://api.perplexity.ai"),
        "hosted_vllm" | "vllm" | "lm_studio" | "custom_openai" => ("openai", ""),
        _ => return None,
    })
}

/// `os.environ/NAME` → `("api_key_env", NAME)`; a literal → `("api_keys", [key])`.
fn key_field(key: &str) -> (&'static str, Value) {
    match key.strip_prefix("os.environ/") {
        Some(var) => ("api_key_env", json!(var)),
        None => ("api_keys", json!([key])),
    }
}

/// A group strategy for LiteLLM's routing strategy.
fn strategy(s: &str, weighted: bool, unmapped: &mut Vec<String>) -> Option<&'static str> {
    Some(match s {
        "simple-shuffle" | "" if weighted => "weighted",
        "simple-shuffle" | "" => "least_load",
        "least-busy" => "least_load",
        "latency-based-routing" => "latency",
        "cost-based-routing" => "cost",
        "usage-based-routing" | "usage-based-routing-v2" => {
            unmapped.push(format!(
                "routing_strategy `{s}`: mapped to least_load (no rpm/tpm accounting; upstream 429s set cooldowns)"
            ));
            "least_load"
        }
        other => {
            unmapped.push(format!("routing_strategy `{other}`: unknown, groups keep the default"));
            return None;
        }
    })
}

/// One deployment: its provider (shared with equal ones) and the target it adds.
struct Deployment {
    group: String,
    provider_key: String,
    provider: Map<String, Value>,
    model: String,
    weight: Option<u64>,
}

fn deployment(i: usize, entry: &Value, unmapped: &mut Vec<String>) -> Option<Deployment> {
    let group = entry["model_name"].as_str()?.to_owned();
    let p = &entry["litellm_params"];
    let Some(full) = p["model"].as_str() else {
        unmapped.push(format!("model_list[{i}] ({group}): no litellm_params.model"));
        return None;
    };
    let (prefix, model) = full.split_once('/').unwrap_or(("openai", full));
    let Some((kind, default_base)) = provider_type(prefix) else {
        unmapped.push(format!(
            "model_list[{i}] ({group}): provider `{prefix}` is not supported"
        ));
        return None;
    };
    if model.contains('*') || group.contains('*') {
        unmapped.push(format!("model_list[{i}] ({group}): wildcard routes are not supported"));
        return None;
    }
    let base = p["api_base"].as_str().unwrap_or(default_base);
    if base.is_empty() {
        unmapped.push(format!("model_list[{i}] ({group}): `{prefix}` needs an api_base"));
        return None;
    }
    let mut provider = Map::new();
    provider.insert("type".into(), json!(kind));
    provider.insert("base_url".into(), json!(base.trim_end_matches('/')));
    if let Some(k) = p["api_key"].as_str() {
        let (field, value) = key_field(k);
        if field == "api_keys" {
            unmapped.push(format!(
                "model_list[{i}] ({group}): a literal api_key was copied; prefer os.environ/NAME"
            ));
        }
        provider.insert(field.into(), value);
    }
    if let Some(v) = p["api_version"].as_str() {
        provider.insert("api_version".into(), json!(v));
    }
    if let Some(n) = p["max_parallel_requests"].as_u64() {
        provider.insert("max_concurrency".into(), json!(n));
    }
    let provider_key = Value::Object(provider.clone()).to_string();
    let info = &entry["model_info"];
    for (k, target) in [
        ("max_input_tokens", "context_window"),
        ("input_cost_per_token", "cost_input_per_mtok"),
        ("output_cost_per_token", "cost_output_per_mtok"),
    ] {
        if let Some(x) = p[k].as_f64().or(info[k].as_f64()) {
            let value = if target == "context_window" {
                json!(x as u64)
            } else {
                json!(x * 1_000_000.0)
            };
            provider.insert(
                target.into(),
                if target == "context_window" {
                    json!({ model: value })
                } else {
                    value
                },
            );
        }
    }
    if p["tpm"].is_number() && p["rpm"].is_number() {
        unmapped.push(format!(
            "model_list[{i}] ({group}): tpm is not enforced (rpm became the target's weight)"
        ));
    }
    let weight = p["weight"].as_u64().or(p["rpm"].as_u64()).or(p["tpm"].as_u64());
    Some(Deployment {
        group,
        provider_key,
        provider,
        model: model.to_owned(),
        weight,
    })
}

/// Imports a parsed LiteLLM config.
pub fn litellm(v: &Value) -> Result<Imported, ImportError> {
    let list = v["model_list"]
        .as_array()
        .ok_or_else(|| ImportError::Invalid("the file has no `model_list`".into()))?;
    let mut unmapped = Vec::new();
    let mut found = Gathered::default();
    for (i, entry) in list.iter().enumerate() {
        if let Some(d) = deployment(i, entry, &mut unmapped) {
            found.add(d);
        }
    }
    let mut out = Map::new();
    settings(v, &mut out, &mut unmapped);
    let models = found.models(v, &mut unmapped);
    out.insert(
        "providers".into(),
        Value::from(
            found
                .providers
                .into_iter()
                .map(|(_, p)| Value::Object(p))
                .collect::<Vec<_>>(),
        ),
    );
    out.insert("models".into(), Value::from(models));
    let toml = toml::to_string(&Value::Object(out)).map_err(|e| ImportError::Invalid(e.to_string()))?;
    Ok(Imported { toml, unmapped })
}

/// The providers and model groups of `model_list`, in the order first seen.
#[derive(Default)]
struct Gathered {
    /// Each distinct provider (by its key) and its table so far.
    providers: Vec<(String, Map<String, Value>)>,
    /// Each group's targets.
    groups: BTreeMap<String, Vec<Value>>,
    /// The group names, as first seen.
    order: Vec<String>,
}

impl Gathered {
    /// Adds one deployment: its provider (new, or merged into the one sharing its key) and a
    /// target in its group.
    fn add(&mut self, d: Deployment) {
        let (at, name) = self.provider_of(&d);
        merge(&mut self.providers[at].1, &d);
        let mut target = json!({"provider": name, "model": d.model});
        if let Some(w) = d.weight {
            target["weight"] = json!(w);
        }
        if !self.groups.contains_key(&d.group) {
            self.order.push(d.group.clone());
        }
        self.groups.entry(d.group).or_default().push(target);
    }

    /// Where `d`'s provider is and its name; a new one is named `TYPE-N` and has no models yet.
    fn provider_of(&mut self, d: &Deployment) -> (usize, String) {
        if let Some(at) = self.providers.iter().position(|(k, _)| *k == d.provider_key) {
            let name = self.providers[at].1["name"].as_str().unwrap_or_default().to_owned();
            return (at, name);
        }
        let kind = d.provider["type"].as_str().unwrap_or("openai");
        let name = format!("{kind}-{}", self.providers.len() + 1);
        let mut p = Map::new();
        p.insert("name".into(), json!(name));
        p.extend(d.provider.clone());
        p.insert("models".into(), json!([]));
        self.providers.push((d.provider_key.clone(), p));
        (self.providers.len() - 1, name)
    }

    /// The model groups, with the strategy and fallbacks of the router settings.
    fn models(&self, v: &Value, unmapped: &mut Vec<String>) -> Vec<Value> {
        let rs = &v["router_settings"];
        let fallbacks = fallbacks(v, unmapped);
        let weighted = self.groups.values().flatten().any(|t| t.get("weight").is_some());
        let strat = strategy(rs["routing_strategy"].as_str().unwrap_or(""), weighted, unmapped);
        let models = self
            .order
            .iter()
            .map(|g| {
                let mut m = json!({"name": g, "targets": self.groups[g]});
                if let Some(s) = strat {
                    m["strategy"] = json!(s);
                }
                if let Some(f) = fallbacks.get(g) {
                    m["fallbacks"] = json!(f);
                }
                m
            })
            .collect();
        for g in fallbacks.keys().filter(|g| !self.groups.contains_key(*g)) {
            unmapped.push(format!("fallbacks of `{g}`: no such model_name"));
        }
        models
    }
}

/// Merges a deployment into its provider's table: context windows add up, other fields keep
/// their first value, and its model joins the provider's models.
fn merge(p: &mut Map<String, Value>, d: &Deployment) {
    for (k, x) in &d.provider {
        if k == "context_window" {
            let cw = p.entry("context_window").or_insert_with(|| json!({}));
            if let (Some(cw), Some(x)) = (cw.as_object_mut(), x.as_object()) {
                cw.extend(x.clone());
            }
        } else {
            p.entry(k.clone()).or_insert_with(|| x.clone());
        }
    }
    if let Some(models) = p.get_mut("models").and_then(|m| m.as_array_mut())
        && !models.contains(&json!(d.model))
    {
        models.push(json!(d.model));
    }
}

/// `fallbacks` (router_settings or litellm_settings): `[{"group": ["other", …]}, …]`.
fn fallbacks(v: &Value, unmapped: &mut Vec<String>) -> BTreeMap<String, Vec<String>> {
    let mut out = BTreeMap::new();
    for section in ["router_settings", "litellm_settings"] {
        for f in v[section]["fallbacks"].as_array().into_iter().flatten() {
            for (group, to) in f.as_object().into_iter().flatten() {
                let to: Vec<String> = to
                    .as_array()
                    .into_iter()
                    .flatten()
                    .filter_map(|t| t.as_str().map(str::to_owned))
                    .collect();
                out.entry(group.clone()).or_insert(to);
            }
        }
        for other in [
            "context_window_fallbacks",
            "content_policy_fallbacks",
            "default_fallbacks",
        ] {
            if !v[section][other].is_null() {
                unmapped.push(format!("{section}.{other}: only plain fallbacks are mapped"));
            }
        }
    }
    out
}

/// Server and router settings: master key, retries, timeout.
fn settings(v: &Value, out: &mut Map<String, Value>, unmapped: &mut Vec<String>) {
    let gs = &v["general_settings"];
    if let Some(k) = gs["master_key"].as_str() {
        let token = match k.strip_prefix("os.environ/") {
            Some(var) => format!("${{{var}}}"),
            None => {
                unmapped.push("general_settings.master_key: a literal key was copied; prefer os.environ/NAME".into());
                k.to_owned()
            }
        };
        out.insert("server".into(), json!({"token": token}));
    }
    if !gs["database_url"].is_null() {
        unmapped.push("general_settings.database_url: virtual keys and spend tracking are not imported".into());
    }
    let rs = &v["router_settings"];
    let retries = rs["num_retries"]
        .as_u64()
        .or(v["litellm_settings"]["num_retries"].as_u64());
    if let Some(n) = retries {
        out.insert("router".into(), json!({"max_attempts": n + 1}));
    }
    let timeout = rs["timeout"]
        .as_f64()
        .or(v["litellm_settings"]["request_timeout"].as_f64());
    if let Some(t) = timeout {
        let server = out.entry("server").or_insert_with(|| json!({}));
        server["request_timeout_ms"] = json!((t * 1000.0) as u64);
    }
    for k in ["redis_host", "redis_url", "cache", "callbacks", "success_callback"] {
        if !rs[k].is_null() || !v["litellm_settings"][k].is_null() {
            unmapped.push(format!("{k}: not imported (set redis.url and [telemetry] here)"));
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn deployments_share_providers_and_form_groups() {
        let v = json!({"model_list": [
            {"model_name": "gpt", "litellm_params": {"model": "openai/gpt-4o", "api_key": "os.environ/OPENAI_API_KEY", "rpm": 60}},
            {"model_name": "gpt", "litellm_params": {"model": "azure/gpt-4o-eu", "api_base": "https://eu.openai.azure.com",
                "api_key": "os.environ/AZURE_KEY", "api_version": "2024-06-01", "rpm": 30}},
            {"model_name": "mini", "litellm_params": {"model": "openai/gpt-4o-mini", "api_key": "os.environ/OPENAI_API_KEY"}},
            {"model_name": "claude", "litellm_params": {"model": "anthropic/claude-sonnet-4", "api_key": "os.environ/ANTHROPIC_API_KEY"},
                "model_info": {"max_input_tokens": 200000}},
            {"model_name": "br", "litellm_params": {"model": "bedrock/anthropic.claude"}}],
            "router_settings": {"routing_strategy": "simple-shuffle", "num_retries": 2, "fallbacks": [{"gpt": ["claude"]}]}});
        let out = litellm(&v).unwrap();
        let t: toml::Table = toml::from_str(&out.toml).unwrap();
        let providers = t["providers"].as_array().unwrap();
        assert_eq!(providers.len(), 3, "{}", out.toml);
        assert_eq!(providers[0]["models"].as_array().unwrap().len(), 2);
        assert_eq!(providers[0]["api_key_env"].as_str(), Some("OPENAI_API_KEY"));
        assert_eq!(providers[1]["api_version"].as_str(), Some("2024-06-01"));
        assert_eq!(
            providers[2]["context_window"]["claude-sonnet-4"].as_integer(),
            Some(200000)
        );
        let gpt = &t["models"].as_array().unwrap()[0];
        assert_eq!(gpt["strategy"].as_str(), Some("weighted"));
        assert_eq!(gpt["targets"].as_array().unwrap()[1]["weight"].as_integer(), Some(30));
        assert_eq!(gpt["fallbacks"].as_array().unwrap()[0].as_str(), Some("claude"));
        assert_eq!(t["router"]["max_attempts"].as_integer(), Some(3));
        assert!(out.unmapped.iter().any(|u| u.contains("bedrock")), "{:?}", out.unmapped);
    }
}
