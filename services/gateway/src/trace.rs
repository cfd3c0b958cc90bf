//! The W3C trace context a client sent, read from its request's headers (every front door
//! and the request span start from it).

use actix_web::http::header::HeaderMap;
use llmr_protocol::TraceContext;

/// The W3C trace context a client sent (`traceparent`, `tracestate`; empty when absent).
pub fn client_trace(headers: &HeaderMap) -> TraceContext {
    let get = |name: &str| headers.get(name).and_then(|v| v.to_str().ok());
    TraceContext::from_headers(get("traceparent"), get("tracestate"))
}

/// The trace a request's `span` continues from the client's headers, for the next hop; the
/// span keeps it for its log lines too (where spans are not exported).
pub fn continue_client(span: &tracing::Span, headers: &HeaderMap) -> TraceContext {
    let client = client_trace(headers);
    llmr_telemetry::carry_for_logs(span, &client);
    llmr_telemetry::context(span, &client)
}
