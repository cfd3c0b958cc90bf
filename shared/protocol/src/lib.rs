//! Wire and bus types shared by every llmrouter service, and their encoding.
//!
//! Nothing here talks to a network. Bodies travel as raw JSON bytes; only the fields a
//! routing decision needs are parsed ([`chat::ChatRequest`]).
//!
//! # Layout
//! - [`envelope`]: one unit of work on a stream (`requests`, `jobs:{pool}`), flat fields.
//! - [`frame`]: one reply frame on a caller's reply stream (head, chunk, end, error).
//! - [`plan`]: the ordered attempts the router hands to a provider worker.
//! - [`anthropic`]: OpenAI chat ↔ Anthropic Messages translation (request, answer, stream),
//!   both as an upstream and as a front door (`anthropic::front`), over the typed wire format
//!   (`anthropic::wire`: request, message, stream events, error body).
//! - [`chat`]: the partial parse and validation of a chat completion request.
//! - [`endpoints`]: the validation of embeddings and legacy completions bodies.
//! - [`error`]: the one error type that maps every failure to OpenAI's error JSON.
//! - [`mcp`]: MCP protocol revisions and JSON-RPC error codes.
//! - [`ollama`]: OpenAI chat and embeddings ↔ Ollama's native API, as an upstream and as a
//!   front door (`ollama::front`), over the typed wire format (`ollama::wire`: chat, generate
//!   and embed bodies, answers and NDJSON lines, errors, model listings).
//! - [`openai`]: the OpenAI completion and chunk bodies llmrouter writes itself, the chat and
//!   embeddings requests the front doors write (`openai::request`) and the embeddings answer
//!   (`openai::embeddings`).
//! - [`limits`]: a virtual key's or team's limits and budget period, and the UTC calendar.
//! - [`responses`]: Responses API operations (gateway → responses service), event framing and
//!   the stream's error event.
//! - [`streams`]: stream and consumer-group names.
//! - [`tools`]: built-in tool names and the `{namespace}_{name}` function-name rule.
//! - [`trace`]: the W3C trace context (`traceparent`, `tracestate`) every hop carries.
//! - [`xmltools`]: tool calls as XML blocks for models without native tools.

pub mod anthropic;
pub mod chat;
pub mod endpoints;
pub mod envelope;
pub mod error;
pub mod frame;
pub mod limits;
pub mod mcp;
pub mod ollama;
pub mod openai;
pub mod plan;
pub mod responses;
pub mod streams;
pub mod tools;
pub mod trace;
pub mod xmltools;

pub use envelope::{
    CallerId, DecodeError, Endpoint, Envelope, Kind, Meta, NativeApi, NativeBody, Priority, ToolMode, allowed,
};
pub use error::ApiError;
pub use frame::{CacheStatus, Frame, FrameKind, Head, Outcome, Usage};
pub use plan::{Attempt, CachePlan, Plan};
pub use trace::TraceContext;

/// Milliseconds since the Unix epoch: the one clock deadlines and expiries are written in.
pub fn now_ms() -> u64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_millis() as u64)
        .unwrap_or(0)
}
