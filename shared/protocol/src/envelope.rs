//! The bus envelope: one stream entry of work, encoded as flat stream fields.
//!
//! `body` travels as the raw JSON bytes the client sent (never JSON wrapped in JSON); the
//! plan, when present, is its own field.

use bytes::Bytes;
use uuid::Uuid;

use crate::plan::Plan;
use crate::trace::TraceContext;

/// What an envelope asks for.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Kind {
    /// A chat completion from a client, for the router.
    Chat,
    /// A routed chat completion with a plan, for a provider worker.
    Job,
    /// An MCP JSON-RPC message from a client, for mcp-tools (`meta.caller` is the session,
    /// `meta.mode` the tool mode).
    Mcp,
    /// A tool call from inside the cluster (the router's tool loop), for mcp-tools: the body
    /// is `{"name": …, "arguments": {…}}`, the answer an MCP `CallToolResult`.
    Tool,
    /// A Responses / Conversations API operation, for the responses service: the body is a
    /// [`crate::responses::Op`].
    Responses,
    /// The tool catalog as operators see it (the gateway's `GET /admin/tools`), for
    /// mcp-tools: the body is empty, the answer a [`crate::tools::Inventory`]. Only the admin
    /// API sends it: `/mcp` clients speak MCP (`Mcp`), and see no file paths nor servers.
    ToolInventory,
}

impl Kind {
    pub fn as_str(self) -> &'static str {
        match self {
            Kind::Chat => "chat",
            Kind::Job => "job",
            Kind::Mcp => "mcp",
            Kind::Tool => "tool",
            Kind::Responses => "responses",
            Kind::ToolInventory => "tool_inventory",
        }
    }

    fn parse(s: &[u8]) -> Option<Kind> {
        match s {
            b"chat" => Some(Kind::Chat),
            b"job" => Some(Kind::Job),
            b"mcp" => Some(Kind::Mcp),
            b"tool" => Some(Kind::Tool),
            b"responses" => Some(Kind::Responses),
            b"tool_inventory" => Some(Kind::ToolInventory),
            _ => None,
        }
    }
}

/// Who sent a piece of work: the identity it acts for.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub enum CallerId {
    /// Nobody named (internal work).
    #[default]
    None,
    /// A client of the gateway instance with this id.
    Gateway(String),
    /// An MCP client, by its session id.
    Session(String),
    /// The router's tool loop, on behalf of this request.
    Router(Uuid),
    /// A running tool (its host modules), by the tool's name.
    Tool(String),
}

impl CallerId {
    /// The stream field: `kind:value`, empty for none.
    pub fn encode(&self) -> String {
        match self {
            CallerId::None => String::new(),
            CallerId::Gateway(g) => format!("gateway:{g}"),
            CallerId::Session(s) => format!("session:{s}"),
            CallerId::Router(id) => format!("router:{id}"),
            CallerId::Tool(t) => format!("tool:{t}"),
        }
    }

    fn decode(s: &str) -> Option<CallerId> {
        if s.is_empty() {
            return Some(CallerId::None);
        }
        let (kind, value) = s.split_once(':')?;
        Some(match kind {
            "gateway" => CallerId::Gateway(value.to_owned()),
            "session" => CallerId::Session(value.to_owned()),
            "router" => CallerId::Router(Uuid::parse_str(value).ok()?),
            "tool" => CallerId::Tool(value.to_owned()),
            _ => return None,
        })
    }
}

/// How mcp-tools lists tools for an MCP client (`X-MCP-Tool-Mode`).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub enum ToolMode {
    /// Every visible tool is listed.
    #[default]
    Standard,
    /// Only the built-ins are listed; the rest are found with `tool_search`.
    Discovery,
}

impl ToolMode {
    /// Reads the header value (case-insensitive); anything but `discovery` is standard.
    pub fn from_header(v: &str) -> ToolMode {
        if v.trim().eq_ignore_ascii_case("discovery") {
            ToolMode::Discovery
        } else {
            ToolMode::Standard
        }
    }

    fn as_str(self) -> &'static str {
        match self {
            ToolMode::Standard => "",
            ToolMode::Discovery => "discovery",
        }
    }
}

/// Which OpenAI endpoint a routed request is for (the body is that endpoint's).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub enum Endpoint {
    /// `POST /v1/chat/completions`.
    #[default]
    Chat,
    /// `POST /v1/embeddings`.
    Embeddings,
    /// `POST /v1/completions` (legacy text completions).
    Completions,
}

impl Endpoint {
    pub fn as_str(self) -> &'static str {
        match self {
            Endpoint::Chat => "chat",
            Endpoint::Embeddings => "embeddings",
            Endpoint::Completions => "completions",
        }
    }

    /// The upstream path under an OpenAI-compatible base URL.
    pub fn path(self) -> &'static str {
        match self {
            Endpoint::Chat => "/chat/completions",
            Endpoint::Embeddings => "/embeddings",
            Endpoint::Completions => "/completions",
        }
    }

    fn parse(s: &[u8]) -> Option<Endpoint> {
        match s {
            b"" | b"chat" => Some(Endpoint::Chat),
            b"embeddings" => Some(Endpoint::Embeddings),
            b"completions" => Some(Endpoint::Completions),
            _ => None,
        }
    }
}

/// Facts about the request that travel beside the body so no consumer re-parses it.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Meta {
    /// The model the client asked for.
    pub model: String,
    /// Whether the client asked for a stream.
    pub stream: bool,
    /// Whether the client asked for a usage chunk at the end of a stream.
    pub include_usage: bool,
    /// Who is calling.
    pub caller: CallerId,
    /// How many times this work was delivered before (reclaims).
    pub attempt: u32,
    /// The routing plan, set by the router on jobs.
    pub plan: Option<Plan>,
    /// How tools are listed (MCP messages only).
    pub mode: ToolMode,
    /// The client's `x-llmr-cache` request header (`no-store`, `no-cache`, `ttl=SECONDS`).
    pub cache: String,
    /// The endpoint the body is for (chat unless said).
    pub endpoint: Endpoint,
    /// The client's own body in another API, beside the chat body, for adapters that speak
    /// that API natively.
    pub native: Option<NativeBody>,
    /// The client's `x-llmr-priority`: batch jobs wait on their pool's batch stream, which
    /// workers give only part of their room.
    pub priority: Priority,
    /// Who may share response-cache entries with this request (`cache.scope`): `team/{id}`,
    /// `key/{id}`, or empty for everyone.
    pub scope: String,
    /// The MCP tools the caller's key (and its team) may list and call: every list must allow
    /// a tool (globs, see [`allowed`]); none = every tool.
    pub tools: Vec<Vec<String>>,
}

/// Whether `name` matches a glob (`*`, `?`) of each of `lists` (an empty list allows all).
pub fn allowed<'a, L: AsRef<[String]> + 'a>(lists: impl IntoIterator<Item = &'a L>, name: &str) -> bool {
    lists.into_iter().all(|l| {
        let l = l.as_ref();
        l.is_empty() || l.iter().any(|g| wildmatch::WildMatch::new(g).matches(name))
    })
}

/// How urgent a request is (`x-llmr-priority`).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub enum Priority {
    /// A person is waiting (the default).
    #[default]
    Interactive,
    /// Throughput work that may wait behind interactive work.
    Batch,
}

impl Priority {
    pub fn as_str(self) -> &'static str {
        match self {
            Priority::Interactive => "interactive",
            Priority::Batch => "batch",
        }
    }

    /// The header's value; `None` for anything else.
    pub fn parse(s: &str) -> Option<Priority> {
        match s {
            "interactive" => Some(Priority::Interactive),
            "batch" => Some(Priority::Batch),
            _ => None,
        }
    }
}

/// The API of a request's native body, and of an answer sent in it (a head frame's
/// [`Head::native`](crate::Head::native)).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum NativeApi {
    /// A Responses API body (set by the responses service), for `responses = true` providers.
    #[default]
    Responses,
    /// An Anthropic Messages body (set by the gateway's `/v1/messages`), for `anthropic`
    /// providers: they send it as the client wrote it (thinking, cache_control, top_k…).
    Anthropic,
}

/// The client's own body in another API, beside the chat body ([`Meta::native`]).
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum NativeBody {
    /// A Responses API body (the responses service's), for `responses = true` providers.
    Responses(Bytes),
    /// An Anthropic Messages body (the gateway's `/v1/messages`), for `anthropic` providers.
    Anthropic(Bytes),
}

impl NativeBody {
    /// Which API it is in.
    pub fn api(&self) -> NativeApi {
        match self {
            NativeBody::Responses(_) => NativeApi::Responses,
            NativeBody::Anthropic(_) => NativeApi::Anthropic,
        }
    }

    /// The body itself.
    pub fn bytes(&self) -> &Bytes {
        match self {
            NativeBody::Responses(b) | NativeBody::Anthropic(b) => b,
        }
    }
}

/// The native body of a stream entry's `native` and `native_api` fields (an API without a
/// body, as older gateways wrote it, is no body).
fn native_body(body: Option<&[u8]>, api: Option<&[u8]>) -> Result<Option<NativeBody>, DecodeError> {
    let api = match api {
        None | Some(b"responses") => NativeApi::Responses,
        Some(b"anthropic") => NativeApi::Anthropic,
        Some(_) => return Err(DecodeError::Invalid("native_api")),
    };
    Ok(body.map(|b| {
        let b = Bytes::copy_from_slice(b);
        match api {
            NativeApi::Responses => NativeBody::Responses(b),
            NativeApi::Anthropic => NativeBody::Anthropic(b),
        }
    }))
}

/// One unit of work on a stream.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Envelope {
    /// The request id (UUID v7); reply frames carry it.
    pub id: Uuid,
    pub kind: Kind,
    /// The caller instance whose reply stream gets the frames.
    pub reply_to: String,
    /// Unix milliseconds after which the work is dropped and answered with an error.
    pub deadline_ms: u64,
    /// W3C trace context of the caller.
    pub trace: TraceContext,
    /// The raw JSON request body.
    pub body: Bytes,
    pub meta: Meta,
}

/// Why stream fields could not be read as an envelope or frame.
#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum DecodeError {
    #[error("stream entry lacks field `{0}`")]
    Missing(&'static str),
    #[error("stream entry has an invalid `{0}`")]
    Invalid(&'static str),
}

impl Envelope {
    /// New work with a fresh id (UUID v7).
    pub fn new(kind: Kind, reply_to: &str, deadline_ms: u64, trace: TraceContext, body: Bytes, meta: Meta) -> Envelope {
        Envelope {
            id: Uuid::now_v7(),
            kind,
            reply_to: reply_to.to_owned(),
            deadline_ms,
            trace,
            body,
            meta,
        }
    }

    /// This request routed: the same id, caller and deadline, as a job carrying `plan`,
    /// continuing the trace at `trace`.
    pub fn routed(&self, plan: Plan, trace: TraceContext) -> Envelope {
        let mut job = self.clone();
        job.kind = Kind::Job;
        job.trace = trace;
        job.meta.plan = Some(plan);
        job
    }

    /// Work done on behalf of this request (a tool call, a tool loop's round): a fresh id,
    /// the same deadline and trace, answered on `reply_to`.
    pub fn on_behalf(&self, kind: Kind, reply_to: &str, body: Bytes, meta: Meta) -> Envelope {
        Envelope::new(kind, reply_to, self.deadline_ms, self.trace.clone(), body, meta)
    }

    /// Whether the deadline has passed at `now_ms`.
    pub fn expired(&self, now_ms: u64) -> bool {
        now_ms >= self.deadline_ms
    }

    /// Milliseconds left before the deadline (0 when passed).
    pub fn remaining_ms(&self, now_ms: u64) -> u64 {
        self.deadline_ms.saturating_sub(now_ms)
    }

    /// The flat stream fields of this envelope.
    pub fn to_fields(&self) -> Vec<(&'static str, Bytes)> {
        let m = &self.meta;
        let mut f = vec![
            ("id", Bytes::from(self.id.to_string())),
            ("kind", Bytes::from_static(self.kind.as_str().as_bytes())),
            ("reply_to", Bytes::from(self.reply_to.clone())),
            ("deadline_ms", Bytes::from(self.deadline_ms.to_string())),
            ("traceparent", Bytes::from(self.trace.traceparent.clone())),
            ("model", Bytes::from(m.model.clone())),
            ("stream", Bytes::from_static(flag(m.stream))),
            ("include_usage", Bytes::from_static(flag(m.include_usage))),
            ("caller", Bytes::from(m.caller.encode())),
            ("attempt", Bytes::from(m.attempt.to_string())),
            ("body", self.body.clone()),
        ];
        if !m.cache.is_empty() {
            f.push(("cache", Bytes::from(m.cache.clone())));
        }
        if m.endpoint != Endpoint::Chat {
            f.push(("endpoint", Bytes::from_static(m.endpoint.as_str().as_bytes())));
        }
        // Written whenever there is a native body, even an empty one (the envelope fuzz
        // target found an empty one lost on re-encoding); its API only when not the default.
        if let Some(n) = &m.native {
            f.push(("native", n.bytes().clone()));
            if n.api() == NativeApi::Anthropic {
                f.push(("native_api", Bytes::from_static(b"anthropic")));
            }
        }
        if m.priority == Priority::Batch {
            f.push(("priority", Bytes::from_static(b"batch")));
        }
        if !m.scope.is_empty() {
            f.push(("scope", Bytes::from(m.scope.clone())));
        }
        if !m.tools.is_empty() {
            f.push(("tools", Bytes::from(serde_json::to_vec(&m.tools).unwrap_or_default())));
        }
        if !self.trace.tracestate.is_empty() {
            f.push(("tracestate", Bytes::from(self.trace.tracestate.clone())));
        }
        if m.mode != ToolMode::Standard {
            f.push(("mode", Bytes::from_static(m.mode.as_str().as_bytes())));
        }
        if let Some(plan) = &m.plan {
            // A plan is a handful of short strings; serializing it cannot fail.
            f.push(("plan", Bytes::from(serde_json::to_vec(plan).unwrap_or_default())));
        }
        f
    }

    /// Reads an envelope back from stream fields; `get` looks a field up by name.
    pub fn from_fields<'a>(get: impl Fn(&str) -> Option<&'a [u8]>) -> Result<Envelope, DecodeError> {
        let req = |name: &'static str| get(name).ok_or(DecodeError::Missing(name));
        let text = |name: &'static str| -> Result<&'a str, DecodeError> {
            std::str::from_utf8(req(name)?).map_err(|_| DecodeError::Invalid(name))
        };
        let num = |name: &'static str| -> Result<u64, DecodeError> {
            text(name)?.parse().map_err(|_| DecodeError::Invalid(name))
        };
        let plan = match get("plan") {
            Some(raw) => Some(serde_json::from_slice(raw).map_err(|_| DecodeError::Invalid("plan"))?),
            None => None,
        };
        Ok(Envelope {
            id: Uuid::parse_str(text("id")?).map_err(|_| DecodeError::Invalid("id"))?,
            kind: Kind::parse(req("kind")?).ok_or(DecodeError::Invalid("kind"))?,
            reply_to: text("reply_to")?.to_owned(),
            deadline_ms: num("deadline_ms")?,
            trace: TraceContext {
                traceparent: text("traceparent")?.to_owned(),
                tracestate: match get("tracestate") {
                    Some(raw) => std::str::from_utf8(raw)
                        .map_err(|_| DecodeError::Invalid("tracestate"))?
                        .to_owned(),
                    None => String::new(),
                },
            },
            body: Bytes::copy_from_slice(req("body")?),
            meta: Meta {
                model: text("model")?.to_owned(),
                stream: req("stream")? == b"1",
                include_usage: req("include_usage")? == b"1",
                caller: CallerId::decode(text("caller")?).ok_or(DecodeError::Invalid("caller"))?,
                attempt: num("attempt")? as u32,
                plan,
                native: native_body(get("native"), get("native_api"))?,
                endpoint: Endpoint::parse(get("endpoint").unwrap_or_default())
                    .ok_or(DecodeError::Invalid("endpoint"))?,
                tools: match get("tools") {
                    Some(raw) => serde_json::from_slice(raw).map_err(|_| DecodeError::Invalid("tools"))?,
                    None => Vec::new(),
                },
                scope: match get("scope") {
                    Some(raw) => std::str::from_utf8(raw)
                        .map_err(|_| DecodeError::Invalid("scope"))?
                        .to_owned(),
                    None => String::new(),
                },
                cache: match get("cache") {
                    Some(raw) => std::str::from_utf8(raw)
                        .map_err(|_| DecodeError::Invalid("cache"))?
                        .to_owned(),
                    None => String::new(),
                },
                mode: match get("mode") {
                    None | Some(b"") => ToolMode::Standard,
                    Some(b"discovery") => ToolMode::Discovery,
                    Some(_) => return Err(DecodeError::Invalid("mode")),
                },
                priority: match get("priority") {
                    None | Some(b"interactive") => Priority::Interactive,
                    Some(b"batch") => Priority::Batch,
                    Some(_) => return Err(DecodeError::Invalid("priority")),
                },
            },
        })
    }
}

fn flag(b: bool) -> &'static [u8] {
    if b { b"1" } else { b"0" }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_list_must_allow_a_name() {
        let key = vec!["gpt-4o*".to_string(), "fast".to_string()];
        assert!(allowed([&key], "gpt-4o-mini"));
        assert!(allowed([&key], "fast"));
        assert!(!allowed([&key], "claude"));
        assert!(allowed([&Vec::<String>::new()], "anything"));
        let team = vec!["*mini".to_string()];
        assert!(allowed([&key, &team], "gpt-4o-mini"));
        assert!(!allowed([&key, &team], "gpt-4o"));
    }
    use crate::plan::Attempt;
    use std::collections::HashMap;

    fn sample() -> Envelope {
        Envelope {
            id: Uuid::now_v7(),
            kind: Kind::Job,
            reply_to: "gw-1".into(),
            deadline_ms: 42,
            trace: TraceContext {
                traceparent: "00-0af7651916cd43dd8448eb211c80319c-b7ad6b7169203331-01".into(),
                tracestate: "vendor=opaque".into(),
            },
            body: Bytes::from_static(br#"{"model":"m","messages":[]}"#),
            meta: Meta {
                model: "m".into(),
                stream: true,
                include_usage: false,
                caller: CallerId::Gateway("gw-1".into()),
                attempt: 2,
                cache: "no-store".into(),
                native: Some(NativeBody::Anthropic(Bytes::from_static(br#"{"input":"hi"}"#))),
                endpoint: Endpoint::Embeddings,
                priority: Priority::Batch,
                scope: "team/t1".into(),
                tools: vec![vec!["echo*".into()], vec!["echo".into(), "time".into()]],
                plan: Some(Plan {
                    pool: "default".into(),
                    attempts: vec![Attempt {
                        key: Some(1),
                        probe: true,
                        ..Attempt::new("p", "u")
                    }],
                    wait_ms: 5,
                    cache: Some(crate::plan::CachePlan {
                        status: crate::CacheStatus::Miss,
                        key: "abc".into(),
                        store: true,
                        ttl_ms: 1000,
                    }),
                }),
                mode: ToolMode::Discovery,
            },
        }
    }

    #[test]
    fn round_trips_through_flat_fields() {
        let env = sample();
        let fields: HashMap<&str, Bytes> = env.to_fields().into_iter().collect();
        let back = Envelope::from_fields(|k| fields.get(k).map(|b| b.as_ref())).unwrap();
        assert_eq!(back, env);
    }

    #[test]
    fn body_is_raw_bytes_not_wrapped_json() {
        let env = sample();
        let fields: HashMap<&str, Bytes> = env.to_fields().into_iter().collect();
        assert_eq!(fields["body"].as_ref(), env.body.as_ref());
    }

    #[test]
    fn rejects_missing_and_invalid_fields() {
        let env = sample();
        let mut fields: HashMap<&str, Bytes> = env.to_fields().into_iter().collect();
        fields.remove("reply_to");
        assert_eq!(
            Envelope::from_fields(|k| fields.get(k).map(|b| b.as_ref())),
            Err(DecodeError::Missing("reply_to"))
        );
        fields.insert("reply_to", Bytes::from_static(b"x"));
        fields.insert("deadline_ms", Bytes::from_static(b"soon"));
        assert_eq!(
            Envelope::from_fields(|k| fields.get(k).map(|b| b.as_ref())),
            Err(DecodeError::Invalid("deadline_ms"))
        );
    }

    #[test]
    fn expiry_follows_the_deadline() {
        let env = sample();
        assert!(!env.expired(41));
        assert!(env.expired(42));
        assert_eq!(env.remaining_ms(40), 2);
        assert_eq!(env.remaining_ms(50), 0);
    }
}
