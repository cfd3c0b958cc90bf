//! Configuration sections. Every section rejects unknown fields.

use secrecy::{ExposeSecret, SecretString};
use serde::Deserialize;

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Settings {
    pub server: Server,
    pub redis: Redis,
    pub telemetry: Telemetry,
    pub router: Router,
    pub worker: Worker,
    #[serde(default)]
    pub providers: Vec<Provider>,
}

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Server {
    pub host: String,
    pub port: u16,
    /// Bearer token every route but `/health` requires; empty = no auth.
    pub token: SecretString,
    pub max_body_bytes: usize,
    pub request_timeout_ms: u64,
}

impl Server {
    /// The token, when auth is on.
    pub fn token(&self) -> Option<&str> {
        Some(self.token.expose_secret()).filter(|t| !t.is_empty())
    }
}

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Redis {
    /// Empty = the in-memory bus and store (only `llmrouter all`).
    pub url: SecretString,
    pub prefix: String,
    pub claim_idle_ms: u64,
    pub pool_size: usize,
}

impl Redis {
    pub fn url(&self) -> Option<&str> {
        Some(self.url.expose_secret()).filter(|u| !u.is_empty())
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum LogFormat {
    Console,
    Json,
}

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Telemetry {
    pub log_level: String,
    pub log_format: LogFormat,
    /// OTLP gRPC endpoint; empty = no export (trace context still flows).
    pub otlp_endpoint: String,
    pub service_name: String,
}

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Router {
    pub batch: usize,
    pub models_refresh_ms: u64,
}

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Worker {
    pub max_in_flight: usize,
    pub connect_timeout_ms: u64,
    pub max_response_bytes: usize,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum ProviderType {
    /// Any OpenAI-compatible API.
    Openai,
    /// Built in: answers with the last user message.
    Echo,
}

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Provider {
    pub name: String,
    #[serde(rename = "type")]
    pub kind: ProviderType,
    #[serde(default)]
    pub base_url: String,
    #[serde(default)]
    pub api_keys: Vec<SecretString>,
    /// Static model list; when empty, `GET {base_url}/models` is asked.
    #[serde(default)]
    pub models: Vec<String>,
    #[serde(default)]
    pub allowlist: Vec<String>,
    #[serde(default)]
    pub denylist: Vec<String>,
    #[serde(default = "yes")]
    pub enabled: bool,
    /// The worker pool (`jobs:{pool}`) that runs this provider's calls.
    #[serde(default = "default_pool")]
    pub pool: String,
}

fn yes() -> bool {
    true
}

fn default_pool() -> String {
    "default".into()
}

impl Provider {
    /// Whether the provider exposes `model`: the denylist applies first, then the allowlist.
    pub fn exposes(&self, model: &str) -> bool {
        !self.denylist.iter().any(|m| m == model)
            && (self.allowlist.is_empty() || self.allowlist.iter().any(|m| m == model))
    }

    /// The filtered view of a model list.
    pub fn filter_models<'a>(&self, models: impl IntoIterator<Item = &'a String>) -> Vec<String> {
        models
            .into_iter()
            .filter(|m| self.exposes(m))
            .cloned()
            .collect()
    }

    /// `base_url` without a trailing slash.
    pub fn base(&self) -> &str {
        self.base_url.trim_end_matches('/')
    }
}

impl Settings {
    /// Enabled providers only.
    pub fn providers(&self) -> impl Iterator<Item = &Provider> {
        self.providers.iter().filter(|p| p.enabled)
    }

    /// A human-readable summary with every secret redacted (for `check-config`).
    pub fn summary(&self) -> String {
        use std::fmt::Write;
        let mut s = String::new();
        let red = |x: &SecretString| {
            if x.expose_secret().is_empty() {
                "(none)"
            } else {
                "(set, redacted)"
            }
        };
        let _ = writeln!(
            s,
            "server: {}:{} token={} max_body_bytes={} request_timeout_ms={}",
            self.server.host,
            self.server.port,
            red(&self.server.token),
            self.server.max_body_bytes,
            self.server.request_timeout_ms
        );
        let _ = writeln!(
            s,
            "redis: {} prefix={:?} claim_idle_ms={} pool_size={}",
            if self.redis.url().is_some() {
                "configured (url redacted)"
            } else {
                "none (in-memory bus and store)"
            },
            self.redis.prefix,
            self.redis.claim_idle_ms,
            self.redis.pool_size
        );
        let _ = writeln!(
            s,
            "telemetry: level={} format={:?} otlp={}",
            self.telemetry.log_level,
            self.telemetry.log_format,
            if self.telemetry.otlp_endpoint.is_empty() {
                "off"
            } else {
                &self.telemetry.otlp_endpoint
            }
        );
        let _ = writeln!(
            s,
            "router: batch={} models_refresh_ms={}",
            self.router.batch, self.router.models_refresh_ms
        );
        let _ = writeln!(
            s,
            "worker: max_in_flight={} connect_timeout_ms={} max_response_bytes={}",
            self.worker.max_in_flight,
            self.worker.connect_timeout_ms,
            self.worker.max_response_bytes
        );
        let _ = writeln!(s, "providers: {}", self.providers.len());
        for p in &self.providers {
            let models = if p.models.is_empty() {
                "(fetched from upstream)".to_string()
            } else {
                p.models.join(", ")
            };
            let _ = writeln!(
                s,
                "  - {} type={:?} enabled={} pool={} base_url={} keys={} models={}",
                p.name,
                p.kind,
                p.enabled,
                p.pool,
                if p.base_url.is_empty() {
                    "-"
                } else {
                    &p.base_url
                },
                p.api_keys.len(),
                models
            );
        }
        s
    }
}
