//! The W3C trace context a client sent, read from its request's headers (every front door
//! and the request span start from it).

use actix_web::http::header::HeaderMap;
use llmr_protocol::TraceContext;

/// The W3C trace context a client sent (`traceparent`, `tracestate`; empty when absent).
pub fn client_trace(headers: &HeaderMap) -> TraceContext {
    let get = |name: &str| headers.get(name).and_then(|v| v.to_str().ok());
    TraceContext::from_headers(get("traceparent"), get("tracestate"))
}
