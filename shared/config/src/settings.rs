//! Configuration sections. Every section rejects unknown fields.

use std::collections::BTreeMap;
use std::fmt::Write;

use secrecy::{ExposeSecret, SecretString};
use serde::{Deserialize, Serialize};

use crate::error::ConfigError;
use crate::redact;

#[derive(Debug, Clone, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
pub struct Settings {
    pub server: Server,
    pub redis: Redis,
    pub telemetry: Telemetry,
    pub router: Router,
    pub worker: Worker,
    pub health: Health,
    #[serde(default)]
    pub providers: Vec<Provider>,
    /// Model groups: names clients ask for, served by a set of targets.
    #[serde(default)]
    pub models: Vec<ModelGroup>,
    pub scripting: Scripting,
    pub mcp: Mcp,
    pub routing: Routing,
    pub responses: Responses,
    pub cache: Cache,
    pub degraded: Degraded,
    pub templates: Templates,
    /// Named text endpoints (`POST /v1/text/{name}`) that fill a template and route like chat.
    #[serde(default)]
    pub text_endpoints: Vec<TextEndpoint>,
    /// Virtual keys declared in the file (GitOps), beside those made with the admin API.
    #[serde(default)]
    pub keys: Vec<KeyDecl>,
    /// Teams declared in the file.
    #[serde(default)]
    pub teams: Vec<TeamDecl>,
    /// The per-request log.
    pub log: RequestLog,
    /// The operator console (`/ui/`).
    pub ui: Ui,
}

/// A virtual key in the config file (`[[keys]]`): the secret as `key` (a `${VAR}`, hashed at
/// load and never kept) or its SHA-256 as `hash`.
#[derive(Debug, Clone, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
pub struct KeyDecl {
    /// Its id (default: the name).
    #[serde(default)]
    pub id: String,
    pub name: String,
    #[serde(default, serialize_with = "redact::secret")]
    pub key: SecretString,
    /// SHA-256 of the secret, hex.
    #[serde(default, serialize_with = "redact::text")]
    pub hash: String,
    #[serde(default)]
    pub team: Option<String>,
    /// Models and groups it may use (globs); empty = all.
    #[serde(default)]
    pub models: Vec<String>,
    /// MCP tools it may list and call (globs); empty = all.
    #[serde(default)]
    pub tools: Vec<String>,
    #[serde(flatten)]
    pub limits: llmr_protocol::limits::Limits,
    /// RFC 3339 time after which it is refused.
    #[serde(default)]
    pub expires_at: Option<String>,
    #[serde(default)]
    pub metadata: BTreeMap<String, String>,
}

impl KeyDecl {
    /// Its id: `id`, else the name.
    pub fn key_id(&self) -> &str {
        if self.id.is_empty() { &self.name } else { &self.id }
    }
}

/// A team in the config file (`[[teams]]`).
#[derive(Debug, Clone, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
pub struct TeamDecl {
    /// Its id (default: the name).
    #[serde(default)]
    pub id: String,
    pub name: String,
    #[serde(default)]
    pub models: Vec<String>,
    #[serde(default)]
    pub tools: Vec<String>,
    #[serde(flatten)]
    pub limits: llmr_protocol::limits::Limits,
}

impl TeamDecl {
    pub fn team_id(&self) -> &str {
        if self.id.is_empty() { &self.name } else { &self.id }
    }
}

/// The per-request log (`[log]`): one record per request, no prompt or answer text.
#[derive(Debug, Clone, Copy, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
pub struct RequestLog {
    pub enabled: bool,
    /// Records kept at most (the oldest go first).
    pub max_records: u64,
    /// Records older than this go.
    pub max_age_ms: u64,
}

/// The operator console (`[ui]`): `/ui/` on every gateway, signed in with `server.admin_token`.
#[derive(Debug, Clone, Copy, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
pub struct Ui {
    pub enabled: bool,
    /// How long a console session lasts after sign-in.
    pub session_ttl_ms: u64,
}

/// Prompt templates: files with `##PLACEHOLDER##`s, by name (the file stem).
#[derive(Debug, Clone, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
pub struct Templates {
    /// A directory of `NAME.txt` (or `.md`) files; empty: no templates.
    pub path: String,
    /// The templates read at load time: name → text.
    #[serde(skip)]
    pub loaded: BTreeMap<String, String>,
}

impl Templates {
    /// `name` with its placeholders filled from `vars`; Err names what is missing.
    pub fn fill(&self, name: &str, vars: &BTreeMap<String, String>) -> Result<String, ConfigError> {
        let text = self
            .loaded
            .get(name)
            .ok_or_else(|| ConfigError::NoTemplate { name: name.into() })?;
        let mut out = String::with_capacity(text.len());
        let mut rest = text.as_str();
        let mut missing = Vec::new();
        while let Some(start) = rest.find("##") {
            let after = &rest[start + 2..];
            let Some(end) = after.find("##").filter(|&e| e > 0 && is_placeholder(&after[..e])) else {
                out.push_str(&rest[..start + 2]);
                rest = after;
                continue;
            };
            out.push_str(&rest[..start]);
            let key = &after[..end];
            match vars.get(key) {
                Some(v) => out.push_str(v),
                None => missing.push(key.to_owned()),
            }
            rest = &after[end + 2..];
        }
        out.push_str(rest);
        if missing.is_empty() {
            Ok(out)
        } else {
            Err(ConfigError::MissingValues {
                name: name.into(),
                missing,
            })
        }
    }
}

/// A placeholder name: letters, digits and `_`.
fn is_placeholder(s: &str) -> bool {
    s.chars().all(|c| c.is_ascii_alphanumeric() || c == '_')
}

/// `POST /v1/text/{name}`: the template becomes the system prompt, the client's text the
/// user's message, and the answer's text comes back.
#[derive(Debug, Clone, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
pub struct TextEndpoint {
    pub name: String,
    pub template: String,
    /// The model (group) asked unless the request names one.
    pub model: String,
    /// Placeholder values used when the request gives none.
    #[serde(default)]
    pub defaults: BTreeMap<String, String>,
}

/// The exact response cache of chat completions (and so of responses).
#[derive(Debug, Clone, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
pub struct Cache {
    pub enabled: bool,
    /// How long an answer is kept (a request's `x-llmr-cache: ttl=SECONDS` overrides it).
    pub ttl_ms: u64,
    /// Larger answers are not stored.
    pub max_entry_bytes: usize,
    /// Store answers that contain tool calls too.
    pub tool_calls: bool,
    /// Who shares entries: `team` (a key's team, else the key), `key`, or `global`.
    pub scope: CacheScope,
}

/// Who may be answered from an entry of the response cache.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Deserialize, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum CacheScope {
    /// The key's team (the key itself when it has none).
    #[default]
    Team,
    Key,
    Global,
}

/// What a feature does when its part of the store fails (an error or a timeout while the
/// bus still works): `closed` refuses the request (503) rather than go on without it, `open`
/// goes on without it (logged, and `/health` says the feature is degraded).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum FailPolicy {
    Closed,
    Open,
}

impl FailPolicy {
    pub fn is_open(self) -> bool {
        self == FailPolicy::Open
    }
}

/// The policy of each feature when the store fails (docs/architecture.md, "When Redis or a service fails").
#[derive(Debug, Clone, Copy, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
pub struct Degraded {
    /// Loads, circuits, cooldowns and requests-today read before routing: open routes as if
    /// idle and healthy (admission still checks circuits and cooldowns).
    pub routing_state: FailPolicy,
    /// Usage counters: closed refuses new attempts while a count cannot be written; open
    /// answers and loses the count.
    pub usage: FailPolicy,
    /// The response cache: closed answers 503 when a lookup fails; open treats it as a miss.
    pub cache: FailPolicy,
    /// MCP sessions: open serves a message whose session cannot be checked, and hands out a
    /// session that could not be stored.
    pub mcp_sessions: FailPolicy,
    /// Stored responses: open answers a (foreground) response that could not be stored with
    /// `store: false`; background responses and reads always fail closed.
    pub stored_responses: FailPolicy,
    /// The once-per-message-id claim of a tool call: closed answers the call as an error,
    /// open runs it unclaimed (a redelivered copy may run it again).
    pub tool_calls: FailPolicy,
}

/// The Responses API: how long stored responses live and how large they may be.
#[derive(Debug, Clone, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
pub struct Responses {
    /// Stored responses, their input items and stream events expire after this long.
    pub ttl_ms: u64,
    /// A response whose stored form (response, input items, context) would be larger is
    /// answered but not stored (its `store` is reported false).
    pub max_stored_bytes: usize,
    /// Responses one responses instance runs at once.
    pub max_in_flight: usize,
}

/// JavaScript tools and the sandbox they run in.
#[derive(Debug, Clone, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
pub struct Scripting {
    /// Directory of tool modules (`*.js`, one tool per file, named by the file); empty = none.
    pub tools_path: String,
    /// Directory of libraries tools may import by name; empty = none.
    pub libraries_path: String,
    /// Offer the `execute_code` built-in tool.
    pub execute_code: bool,
    /// Wall-clock limit of one call (time spent in host modules not counted).
    pub wall_ms: u64,
    pub memory_mb: u64,
    pub loop_iterations: u64,
    pub recursion: usize,
    pub max_result_bytes: usize,
    /// Script host processes per service.
    pub hosts: usize,
    /// Hosts (`api.example.com`, `*.example.com`, `127.0.0.1:9000`) the `http` module may fetch.
    pub http_allowlist: Vec<String>,
    /// Let allowlisted names resolve to internal addresses (loopback, private, link-local,
    /// metadata); off by default, so a listed name cannot be pointed inside the network.
    pub http_allow_internal: bool,
    pub http_timeout_ms: u64,
    /// Largest `http` response body a script gets.
    pub http_max_bytes: usize,
    /// Program started as the script host; empty = this executable with `script-host`.
    pub host_command: String,
}

/// Who may see and call a tool.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Deserialize, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum Visibility {
    /// Listed and callable by name; not in `tool_search`.
    #[default]
    Visible,
    /// Not listed nor searchable; callable by its exact name.
    Hidden,
    /// Not listed; found by `tool_search`; callable through `execute_tool`.
    Ondemand,
}

/// The MCP server: sessions, paging, remote servers, automatic tool calling.
#[derive(Debug, Clone, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
pub struct Mcp {
    /// Tools per `tools/list` page.
    pub page_size: usize,
    /// An idle session is forgotten after this long.
    pub session_ttl_ms: u64,
    /// Rounds of server-side tool calls per chat completion before the answer is forced.
    pub max_tool_rounds: u32,
    /// Deadline of one call to a remote server.
    pub remote_timeout_ms: u64,
    /// How long a remote server's tool list is reused.
    pub remote_refresh_ms: u64,
    #[serde(default)]
    pub remote_servers: Vec<RemoteServer>,
}

/// A remote MCP server whose tools are served under `namespace`.
#[derive(Debug, Clone, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
pub struct RemoteServer {
    pub namespace: String,
    /// Its Streamable HTTP endpoint (`http://host:port/mcp`).
    #[serde(serialize_with = "redact::url")]
    pub url: String,
    #[serde(default, serialize_with = "redact::secret")]
    pub token: SecretString,
    #[serde(default)]
    pub tool_visibility: Visibility,
    /// May its host name resolve to an internal address (loopback, private, link-local,
    /// metadata)? Off by default; an address written as such in `url` is explicit and allowed.
    #[serde(default)]
    pub allow_internal: bool,
}

impl RemoteServer {
    pub fn token(&self) -> Option<&str> {
        Some(self.token.expose_secret()).filter(|t| !t.is_empty())
    }
}

/// Scripted routing.
#[derive(Debug, Clone, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
pub struct Routing {
    /// A module whose default export picks the target for model `auto` and for groups with
    /// `strategy = "script"`; empty = none.
    pub script: String,
    /// Wall-clock limit of one routing decision.
    pub wall_ms: u64,
}

#[derive(Debug, Clone, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
pub struct Server {
    pub host: String,
    pub port: u16,
    /// Bearer token every route but `/health` requires; empty = no auth.
    #[serde(serialize_with = "redact::secret")]
    pub token: SecretString,
    /// Bearer token of the admin API (`/admin/…`) and nothing else; empty = no admin API.
    #[serde(default, serialize_with = "redact::secret")]
    pub admin_token: SecretString,
    pub max_body_bytes: usize,
    /// Serve HTTPS with this certificate chain (PEM); empty = plain HTTP.
    #[serde(default)]
    pub tls_cert: String,
    /// The certificate's private key (PEM); set with `tls_cert`.
    #[serde(default)]
    pub tls_key: String,
    /// Messages in one request; more is a 400.
    pub max_messages: usize,
    /// Tools offered in one request; more is a 400.
    pub max_tools: usize,
    /// All request headers together (names and values); more is a 431.
    pub max_header_bytes: usize,
    /// Queued work in the cluster (requests no router read, jobs no worker took) at which new
    /// requests are refused with 503 `overloaded`; 0 = never.
    pub max_queued: u64,
    /// The same bound for `x-llmr-priority: batch` requests (lower, so interactive work keeps
    /// the room left).
    pub max_queued_batch: u64,
    /// The longest a new request may be expected to wait for its pool (its queue over the
    /// pool's recent completion rate) before it is refused with 503 `overloaded`; 0 = never.
    /// A key or team may set a tighter one (`max_queue_wait_ms`).
    pub max_queue_wait_ms: u64,
    pub request_timeout_ms: u64,
    /// On stop (SIGTERM): how long work in flight may take to finish before it is dropped
    /// (its entries stay pending for a peer) and the process exits.
    pub shutdown_grace_ms: u64,
    /// Compress answers (gzip, brotli, zstd) as `Accept-Encoding` allows; SSE streams only
    /// when the request also says `x-llmr-compress-stream: true`.
    pub compression: bool,
    /// CORS: allowed origins (`*` = any); empty = no CORS headers at all.
    pub cors_origins: Vec<String>,
    pub cors_methods: Vec<String>,
    /// Request headers a browser may send (empty = any).
    pub cors_headers: Vec<String>,
    pub cors_credentials: bool,
    /// How long a browser may cache a preflight answer.
    pub cors_max_age_s: usize,
    /// Client connections one gateway process keeps open before it answers new requests 503
    /// `overloaded` (and closes the connection); 0 = derived from the open-file limit.
    pub max_connections: usize,
}

impl Server {
    /// The token, when auth is on.
    pub fn token(&self) -> Option<&str> {
        Some(self.token.expose_secret()).filter(|t| !t.is_empty())
    }

    /// The admin token, when the admin API is on.
    pub fn admin_token(&self) -> Option<&str> {
        Some(self.admin_token.expose_secret()).filter(|t| !t.is_empty())
    }
}

#[derive(Debug, Clone, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
pub struct Redis {
    /// Empty = the in-memory bus and store (only `llmrouter all`).
    #[serde(serialize_with = "redact::secret_url")]
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

#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum LogFormat {
    Console,
    Json,
}

#[derive(Debug, Clone, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
pub struct Telemetry {
    pub log_level: String,
    pub log_format: LogFormat,
    /// OTLP endpoint; empty = `OTEL_EXPORTER_OTLP_(TRACES_)ENDPOINT`, else no export (trace
    /// context still flows).
    #[serde(serialize_with = "redact::url")]
    pub otlp_endpoint: String,
    /// `grpc` or `http/protobuf`; empty = `OTEL_EXPORTER_OTLP_PROTOCOL`, else `grpc`.
    pub otlp_protocol: String,
    /// Headers sent with every export (`key=value,…`); empty = `OTEL_EXPORTER_OTLP_HEADERS`.
    #[serde(serialize_with = "redact::secret")]
    pub otlp_headers: SecretString,
    /// Share of new traces sampled (parent-based: a client's sampled trace is always kept).
    pub sampling_ratio: f64,
    pub service_name: String,
    /// Address of the admin listener (`/healthz`, `/readyz`, `/metrics`) of roles without
    /// the gateway (router, worker, mcp-tools).
    pub admin_host: String,
    /// Its port; 0 = no admin listener.
    pub admin_port: u16,
    /// Log each chat request's last user message and a non-streamed answer's text (info).
    pub log_content: bool,
    /// With `log_content`: e-mail addresses, card numbers, IP addresses and phone numbers
    /// are replaced before logging.
    pub scrub_content: bool,
    /// One line per HTTP request the gateway serves (info): method, route, status, duration.
    pub access_log: bool,
}

#[derive(Debug, Clone, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
pub struct Router {
    pub batch: usize,
    pub models_refresh_ms: u64,
    /// The strategy of groups that name none, and of models served without a group.
    pub strategy: Strategy,
    /// At most this many attempts per request (the retry budget), fallbacks included.
    pub max_attempts: usize,
    /// `first_available`: how long a request waits for a free slot before failing over.
    pub first_available_wait_ms: u64,
    /// A JSON model catalog whose context windows and per-token costs fill what providers
    /// leave unset (for the `cost` strategy); empty: none.
    pub catalog: String,
}

/// How a group orders its targets.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum Strategy {
    /// Fewest live leases, ties at random.
    LeastLoad,
    /// Smooth weighted selection.
    Weighted,
    RoundRobin,
    /// Lowest `priority` tier with a healthy target; least load inside it.
    Priority,
    /// Cheapest healthy target whose context window fits the prompt.
    Cost,
    /// Power of two choices on the latency EWMA.
    Latency,
    /// The first target (in order) whose lock or slot is free.
    FirstAvailable,
    /// `[routing] script` picks the target; least load when it fails.
    Script,
}

impl Strategy {
    pub fn as_str(self) -> &'static str {
        match self {
            Strategy::LeastLoad => "least_load",
            Strategy::Weighted => "weighted",
            Strategy::RoundRobin => "round_robin",
            Strategy::Priority => "priority",
            Strategy::Cost => "cost",
            Strategy::Latency => "latency",
            Strategy::FirstAvailable => "first_available",
            Strategy::Script => "script",
        }
    }
}

/// Circuit breakers and rate-limit cooldowns, shared through the store.
#[derive(Debug, Clone, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
pub struct Health {
    /// Failures inside `failure_window_ms` that open a target's or key's circuit.
    pub failure_threshold: u32,
    pub failure_window_ms: u64,
    /// An open circuit lets one probe request through after this long.
    pub recovery_ms: u64,
    /// Cooldown after a 429 that names no reset time.
    pub default_cooldown_ms: u64,
}

/// One model group: `name` is what clients ask for.
#[derive(Debug, Clone, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
pub struct ModelGroup {
    pub name: String,
    /// Defaults to `router.strategy`.
    #[serde(default)]
    pub strategy: Option<Strategy>,
    pub targets: Vec<GroupTarget>,
    /// Groups tried, in order, when every target of this one failed.
    #[serde(default)]
    pub fallbacks: Vec<String>,
    /// Server-side tools offered to the model on every request to this group (executed
    /// by the router's tool loop).
    #[serde(default)]
    pub tools: Vec<String>,
    /// The response cache for this group: on or off regardless of `cache.enabled`.
    #[serde(default)]
    pub cache: Option<bool>,
    /// A prompt template put first, as a system message, in every request to this group
    /// (placeholders from the request's `template_vars`).
    #[serde(default)]
    pub template: Option<String>,
}

#[derive(Debug, Clone, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
pub struct GroupTarget {
    pub provider: String,
    /// The model name the provider knows.
    pub model: String,
    /// For `weighted`; defaults to the provider's weight.
    #[serde(default)]
    pub weight: Option<u32>,
    /// `false` for a model without native tool calling: requests with tools get them
    /// described in the system prompt, and its XML tool-call blocks come back as tool calls.
    #[serde(default = "yes")]
    pub supports_tools: bool,
}

#[derive(Debug, Clone, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
pub struct Worker {
    /// More roots (PEM) trusted for HTTPS upstreams, beside the system's and webpki's: a
    /// private CA. Empty = none.
    #[serde(default)]
    pub ca_file: String,
    pub max_in_flight: usize,
    /// Of those, at most this many batch jobs (`x-llmr-priority: batch`); 0 = a quarter of
    /// `max_in_flight` (at least 1). The rest of the room is kept for interactive work.
    pub max_in_flight_batch: usize,
    pub connect_timeout_ms: u64,
    pub max_response_bytes: usize,
    /// How long a call's lease, slot or lock lives; renewed (every third of it) while the
    /// call runs, so a dead worker's load is gone within this time.
    pub lease_ttl_ms: u64,
}

impl Worker {
    /// [`Worker::max_in_flight_batch`] resolved.
    pub fn batch_room(&self) -> usize {
        match self.max_in_flight_batch {
            0 => (self.max_in_flight / 4).max(1),
            n => n.min(self.max_in_flight.max(1)),
        }
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum ProviderType {
    /// Any OpenAI-compatible API.
    Openai,
    /// Built in: answers with the last user message.
    Echo,
    /// Built in: like `echo`, with failures injected at the configured rates.
    Chaos,
    /// Google Gemini's OpenAI-compatible endpoint (`x-goog-api-key`, `models/` ids).
    Gemini,
    /// Azure OpenAI: deployment URLs, `api-version`, the `api-key` header.
    Azure,
    /// Anthropic's Messages API (requests and answers translated).
    Anthropic,
    /// Ollama's native API (`/api/chat`, `/api/embed`, `/api/tags`).
    Ollama,
}

impl ProviderType {
    /// Whether the provider speaks OpenAI's wire format over HTTP (an upstream, not built in).
    pub fn is_upstream(self) -> bool {
        matches!(
            self,
            ProviderType::Openai
                | ProviderType::Gemini
                | ProviderType::Azure
                | ProviderType::Anthropic
                | ProviderType::Ollama
        )
    }
}

/// A local Ollama, the default `base_url` of an `ollama` provider.
pub const OLLAMA_BASE_URL: &str = "http://localhost:11434";

/// Anthropic's API, the default `base_url` of an `anthropic` provider.
pub const ANTHROPIC_BASE_URL: &str = "https://api.anthropic.com/v1";

/// Gemini's OpenAI-compatible endpoint, the default `base_url` of a `gemini` provider.
pub const GEMINI_BASE_URL: &str = "https://generativelanguage.googleapis.com/v1beta/openai";

/// One API key of a provider, as an entry of its own.
#[derive(Debug, Clone, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
pub struct KeyEntry {
    /// The key itself (use `${VAR}`), or
    #[serde(default = "empty_secret", serialize_with = "redact::secret")]
    pub key: SecretString,
    /// the name of an environment variable holding it.
    #[serde(default)]
    pub key_env: String,
}

fn empty_secret() -> SecretString {
    SecretString::from(String::new())
}

/// Failure injection of a `chaos` provider: each rate is a probability per request.
#[derive(Debug, Clone, Default, Deserialize, Serialize)]
#[serde(deny_unknown_fields, default)]
pub struct Chaos {
    /// Extra latency before answering, in ms.
    pub latency_ms: u64,
    /// Answer 500.
    pub error_rate: f64,
    /// Answer 429 with `Retry-After: retry_after_s`.
    pub rate_limit_rate: f64,
    /// Answer 429 without any reset header.
    pub rate_limit_bare_rate: f64,
    pub retry_after_s: u64,
    /// Fail as if the connection was refused.
    pub refuse_rate: f64,
    /// Never answer (until the deadline).
    pub hang_rate: f64,
    /// Streams: break after the first chunks.
    pub drop_rate: f64,
    /// Send a malformed event.
    pub malformed_rate: f64,
}

#[derive(Debug, Clone, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
pub struct Provider {
    pub name: String,
    #[serde(rename = "type")]
    pub kind: ProviderType,
    #[serde(default, serialize_with = "redact::url")]
    pub base_url: String,
    #[serde(default, serialize_with = "redact::secrets")]
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
    /// An environment variable holding one more key.
    #[serde(default)]
    pub api_key_env: String,
    /// Keys as entries of their own.
    #[serde(default)]
    pub keys: Vec<KeyEntry>,
    /// For `weighted` selection.
    #[serde(default = "one")]
    pub weight: u32,
    /// For `priority`: lower tiers are tried first.
    #[serde(default)]
    pub priority: u32,
    /// Prices in any currency unit per million tokens, for `cost`.
    #[serde(default)]
    pub cost_input_per_mtok: f64,
    #[serde(default)]
    pub cost_output_per_mtok: f64,
    /// Context window per model, in tokens (`"*"` for every other model).
    #[serde(default)]
    pub context_window: BTreeMap<String, u64>,
    /// Concurrent calls per target (`provider/model`), held as expiring leases; 0 = no limit.
    #[serde(default)]
    pub max_concurrency: u32,
    /// One call at a time per target, held by an expiring lock (stateful local backends).
    #[serde(default)]
    pub exclusive: bool,
    /// Timeout of one call to this provider (ms); 0 = only the request's deadline.
    #[serde(default)]
    pub timeout_ms: u64,
    /// Headers added to every upstream call (their values may be credentials: redacted).
    #[serde(default, serialize_with = "redact::values")]
    pub extra_headers: BTreeMap<String, String>,
    /// Failure injection (`type = "chaos"` only).
    #[serde(default)]
    pub chaos: Option<Chaos>,
    /// Azure: the `api-version` query parameter of every call.
    #[serde(default)]
    pub api_version: String,
    /// Azure: model name → deployment name (a model without an entry is its own deployment).
    #[serde(default)]
    pub deployments: BTreeMap<String, String>,
    /// The upstream speaks OpenAI's Responses API (`POST {base_url}/responses`): responses are
    /// passed to it natively instead of being emulated over chat completions (`openai` only).
    #[serde(default)]
    pub responses: bool,
    /// Every key: `api_keys`, then `api_key_env`, then `keys`; resolved at load.
    #[serde(skip)]
    pub resolved_keys: Vec<SecretString>,
    /// Per-model prices (input, output per million tokens) from `router.catalog`, used
    /// where the provider names none.
    #[serde(skip)]
    pub catalog_costs: BTreeMap<String, (f64, f64)>,
}

fn one() -> u32 {
    1
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
        models.into_iter().filter(|m| self.exposes(m)).cloned().collect()
    }

    /// The context window of `model`, when known.
    /// Prices of `model` (input, output per million tokens): the provider's own, else the
    /// catalog's.
    pub fn cost_of(&self, model: &str) -> (f64, f64) {
        if self.cost_input_per_mtok > 0.0 || self.cost_output_per_mtok > 0.0 {
            return (self.cost_input_per_mtok, self.cost_output_per_mtok);
        }
        self.catalog_costs.get(model).copied().unwrap_or((0.0, 0.0))
    }

    pub fn context_window_of(&self, model: &str) -> Option<u64> {
        self.context_window
            .get(model)
            .or_else(|| self.context_window.get("*"))
            .copied()
    }

    /// Whether calls hold a slot or lock (and so may find none free).
    pub fn limited(&self) -> bool {
        self.exclusive || self.max_concurrency > 0
    }

    /// `base_url` without a trailing slash.
    pub fn base(&self) -> &str {
        if self.base_url.is_empty() {
            match self.kind {
                ProviderType::Gemini => return GEMINI_BASE_URL,
                ProviderType::Anthropic => return ANTHROPIC_BASE_URL,
                ProviderType::Ollama => return OLLAMA_BASE_URL,
                _ => {}
            }
        }
        self.base_url.trim_end_matches('/')
    }

    /// Azure: the deployment serving `model`.
    pub fn deployment<'a>(&'a self, model: &'a str) -> &'a str {
        self.deployments.get(model).map_or(model, String::as_str)
    }
}

impl Settings {
    /// Enabled providers only.
    pub fn providers(&self) -> impl Iterator<Item = &Provider> {
        self.providers.iter().filter(|p| p.enabled)
    }

    /// A human-readable summary with every secret redacted (for `check-config`).
    pub fn summary(&self) -> String {
        let mut s = String::new();
        self.summarize_services(&mut s);
        self.summarize_tuning(&mut s);
        self.summarize_providers(&mut s);
        self.summarize_groups(&mut s);
        s
    }

    /// The server, Redis and telemetry lines.
    fn summarize_services(&self, s: &mut String) {
        let _ = writeln!(
            s,
            "server: {}:{} token={} max_body_bytes={} request_timeout_ms={}",
            self.server.host,
            self.server.port,
            redacted(&self.server.token),
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
    }

    /// The router, worker and health lines.
    fn summarize_tuning(&self, s: &mut String) {
        let _ = writeln!(
            s,
            "router: batch={} models_refresh_ms={}",
            self.router.batch, self.router.models_refresh_ms
        );
        let _ = writeln!(
            s,
            "worker: max_in_flight={} connect_timeout_ms={} max_response_bytes={}",
            self.worker.max_in_flight, self.worker.connect_timeout_ms, self.worker.max_response_bytes
        );
        let _ = writeln!(
            s,
            "health: failure_threshold={} failure_window_ms={} recovery_ms={} default_cooldown_ms={}",
            self.health.failure_threshold,
            self.health.failure_window_ms,
            self.health.recovery_ms,
            self.health.default_cooldown_ms
        );
    }

    /// One line per provider, after their count.
    fn summarize_providers(&self, s: &mut String) {
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
                if p.base_url.is_empty() { "-" } else { &p.base_url },
                p.resolved_keys.len(),
                models
            );
        }
    }

    /// One line per model group, after their count.
    fn summarize_groups(&self, s: &mut String) {
        let _ = writeln!(s, "model groups: {}", self.models.len());
        for g in &self.models {
            let targets: Vec<String> = g
                .targets
                .iter()
                .map(|t| format!("{}/{}", t.provider, t.model))
                .collect();
            let _ = writeln!(
                s,
                "  - {} strategy={} targets=[{}] fallbacks=[{}]",
                g.name,
                g.strategy.unwrap_or(self.router.strategy).as_str(),
                targets.join(", "),
                g.fallbacks.join(", ")
            );
        }
    }
}

/// How a secret shows in the summary: whether it is set, never its value.
fn redacted(x: &SecretString) -> &'static str {
    if x.expose_secret().is_empty() {
        "(none)"
    } else {
        "(set, redacted)"
    }
}
