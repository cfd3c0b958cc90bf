//! `/mcp`: the MCP Streamable HTTP transport. `POST` carries one JSON-RPC message; the
//! answer is JSON (`application/json`), a notification or response gets `202 Accepted`.
//! An answer that takes longer than 0.5 s goes out as an SSE stream instead when the client
//! accepts `text/event-stream` (as the spec allows): keep-alive comments every 0.5 s, then
//! one `message` event. HTTP/1 gives a handler no other way to learn that its client left;
//! a failed write drops the call, which cancels the work in mcp-tools (and what it started).
//! `initialize` opens a session (`Mcp-Session-Id`, kept in the store so any gateway knows
//! it); every other message must name a live session (400 without one, 404 for an unknown
//! or expired one). `DELETE` ends a session; `GET` (a server-initiated stream) is not
//! offered (405). The methods themselves are served by mcp-tools over the `mcp` stream.
//!
//! Transport failures answer with a JSON-RPC error body; bearer auth is the same as for
//! every other route.

use std::future::Future;
use std::pin::Pin;
use std::time::Duration;

use actix_web::http::StatusCode;
use actix_web::{HttpRequest, HttpResponse, web};
use bytes::Bytes;
use llmr_bus::Answer;
use llmr_protocol::mcp::{self, INTERNAL_ERROR, INVALID_REQUEST, SESSION_NOT_FOUND};
use llmr_protocol::{ApiError, CallerId, Envelope, Kind, Meta, ToolMode, now_ms, streams};
use serde_json::{Value, json};
use uuid::Uuid;

use crate::AppState;
use crate::trace::client_trace;

/// Where sessions live in the store.
pub(crate) const SESSIONS: &str = "mcp-session";

fn rpc_error(status: StatusCode, id: Value, code: i64, message: &str) -> HttpResponse {
    HttpResponse::build(status)
        .content_type("application/json")
        .body(mcp::error(id, code, message).to_string())
}

fn header<'a>(req: &'a HttpRequest, name: &str) -> Option<&'a str> {
    req.headers().get(name).and_then(|v| v.to_str().ok())
}

/// A message refused by the transport, answered as a JSON-RPC error body.
struct Refusal {
    status: StatusCode,
    id: Value,
    code: i64,
    message: String,
}

fn refuse(status: StatusCode, id: Value, code: i64, message: &str) -> Refusal {
    Refusal {
        status,
        id,
        code,
        message: message.to_owned(),
    }
}

impl Refusal {
    fn response(self) -> HttpResponse {
        rpc_error(self.status, self.id, self.code, &self.message)
    }
}

/// The transport's checks of one message (`llmr_protocol::mcp::check`), refused as 400.
fn check(req: &HttpRequest, body: &[u8]) -> Result<mcp::Checked, Refusal> {
    mcp::check(body, header(req, "mcp-protocol-version"))
        .map_err(|r| refuse(StatusCode::BAD_REQUEST, r.id, r.code, &r.message))
}

/// The live session a message names (read and renewed in one round trip); the answer to
/// send instead when it names none or an unknown one.
async fn session(req: &HttpRequest, state: &AppState, id: &Value) -> Result<String, Refusal> {
    let Some(sid) = header(req, "mcp-session-id") else {
        return Err(refuse(
            StatusCode::BAD_REQUEST,
            id.clone(),
            INVALID_REQUEST,
            "Bad Request: Mcp-Session-Id header is required (send initialize first)",
        ));
    };
    match state
        .store
        .kv_get_touch(SESSIONS, sid, state.settings.mcp.session_ttl_ms)
        .await
    {
        Ok(Some(_)) => Ok(sid.to_owned()),
        Ok(None) => Err(refuse(
            StatusCode::NOT_FOUND,
            id.clone(),
            SESSION_NOT_FOUND,
            "Session not found",
        )),
        Err(e) if state.settings.degraded.mcp_sessions.is_open() => {
            tracing::warn!(error = %e, "MCP session cannot be checked; served (degraded.mcp_sessions = open)");
            Ok(sid.to_owned())
        }
        Err(e) => Err(refuse(
            StatusCode::SERVICE_UNAVAILABLE,
            id.clone(),
            INTERNAL_ERROR,
            &format!("The MCP session cannot be checked: {e}"),
        )),
    }
}

/// A tool call's record in the request log (the tool as its model).
fn tool_ticket(state: &AppState, identity: &crate::keys::Identity, body: &[u8]) -> crate::govern::Ticket {
    let tool = serde_json::from_slice::<Value>(body)
        .ok()
        .and_then(|v| v.pointer("/params/name").and_then(Value::as_str).map(str::to_owned))
        .unwrap_or_default();
    let ask = crate::govern::Ask {
        route: "mcp",
        model: &tool,
        stream: false,
        body_len: body.len(),
        max_tokens: None,
    };
    crate::govern::record_only(&state.settings, &state.store, identity, &ask)
}

pub async fn post(req: HttpRequest, payload: web::Payload, state: web::Data<AppState>) -> HttpResponse {
    serve(&req, payload, &state).await.unwrap_or_else(Refusal::response)
}

async fn serve(req: &HttpRequest, payload: web::Payload, state: &AppState) -> Result<HttpResponse, Refusal> {
    let body = super::read_body(req, payload, state.settings.server.max_body_bytes)
        .await
        .map_err(|e| {
            refuse(
                StatusCode::PAYLOAD_TOO_LARGE,
                Value::Null,
                INVALID_REQUEST,
                &e.0.to_string(),
            )
        })?;
    let m = check(req, &body)?;
    let initialize = m.method.as_deref() == Some("initialize");
    let session = if initialize {
        None
    } else {
        Some(session(req, state, &m.id).await?)
    };
    if m.notification {
        return Ok(HttpResponse::Accepted().finish());
    }
    let identity = super::models::identity(req);
    let mut ticket = (m.method.as_deref() == Some("tools/call")).then(|| tool_ticket(state, &identity, &body));
    let meta = Meta {
        caller: session.map_or(CallerId::None, CallerId::Session),
        mode: ToolMode::from_header(header(req, "x-mcp-tool-mode").unwrap_or_default()),
        tools: identity.tool_lists(),
        ..Meta::default()
    };
    let deadline = now_ms() + state.settings.server.request_timeout_ms;
    let trace = llmr_telemetry::context(&tracing::Span::current(), &client_trace(req.headers()));
    let env = Envelope::new(Kind::Mcp, &state.instance, deadline, trace, body, meta);
    let failed = |e: ApiError| {
        let status = StatusCode::from_u16(e.status()).unwrap_or(StatusCode::BAD_GATEWAY);
        refuse(status, m.id.clone(), INTERNAL_ERROR, &e.to_string())
    };
    let mut answer: PendingAnswer = Box::pin(state.send(streams::MCP, &env).await.map_err(|e| failed(e.0))?.answer());
    // A slow answer goes out as SSE when the client takes it: the keep-alives written while
    // it runs are how a client that left is noticed (its call is dropped, its work cancelled).
    let answer = if !initialize && accepts_sse(req) {
        match tokio::time::timeout(SSE_AFTER, &mut answer).await {
            Ok(a) => a,
            Err(_) => {
                if let Some(t) = &mut ticket {
                    t.answered(200, None, false);
                }
                return Ok(sse_answer(answer, m.id.clone()));
            }
        }
    } else {
        answer.await
    };
    if let Some(t) = &mut ticket {
        match &answer {
            Ok(a) => t.answered(a.status, None, false),
            Err(e) => t.failed(e),
        }
    }
    let answer = answer.map_err(failed)?;
    if answer.status == 202 {
        return Ok(HttpResponse::Accepted().finish());
    }
    let mut resp = HttpResponse::Ok();
    resp.content_type("application/json");
    if initialize && let Some(sid) = open_session(state, &answer.body, &m.id).await? {
        resp.insert_header(("mcp-session-id", sid));
    }
    Ok(resp.body(answer.body))
}

/// Stores the session an `initialize` answer opened (the protocol version it agreed on);
/// its id, or None when the answer agreed on none.
async fn open_session(state: &AppState, answer: &[u8], id: &Value) -> Result<Option<String>, Refusal> {
    let parsed: Value = serde_json::from_slice(answer).unwrap_or(Value::Null);
    let Some(version) = parsed.pointer("/result/protocolVersion").and_then(Value::as_str) else {
        return Ok(None);
    };
    let sid = Uuid::new_v4().simple().to_string();
    let ttl = state.settings.mcp.session_ttl_ms;
    match state.store.kv_set(SESSIONS, &sid, version, Some(ttl)).await {
        Ok(()) => {}
        Err(e) if state.settings.degraded.mcp_sessions.is_open() => {
            tracing::warn!(error = %e, "MCP session not stored; handed out (degraded.mcp_sessions = open)");
        }
        Err(e) => {
            return Err(refuse(
                StatusCode::SERVICE_UNAVAILABLE,
                id.clone(),
                INTERNAL_ERROR,
                &format!("The MCP session cannot be stored: {e}"),
            ));
        }
    }
    Ok(Some(sid))
}

/// A call's whole answer, on its way; dropping it cancels the call.
type PendingAnswer = Pin<Box<dyn Future<Output = Result<Answer, ApiError>>>>;

/// How long a call is answered as plain JSON before it turns into an SSE stream.
const SSE_AFTER: Duration = Duration::from_millis(500);
/// How often an SSE answer writes a keep-alive comment while it waits.
const SSE_KEEPALIVE: Duration = Duration::from_millis(500);

fn accepts_sse(req: &HttpRequest) -> bool {
    header(req, "accept").is_some_and(|a| a.contains("text/event-stream"))
}

/// The answer as an SSE stream: keep-alive comments until it arrives, then one `message`
/// event with the JSON-RPC response. A client that left makes a write fail; the stream and
/// the call in it are dropped, which cancels the call.
fn sse_answer(answer: PendingAnswer, id: Value) -> HttpResponse {
    let ticks = tokio::time::interval_at(tokio::time::Instant::now() + SSE_KEEPALIVE, SSE_KEEPALIVE);
    let events = futures_util::stream::unfold(Some((answer, ticks)), move |state| {
        let id = id.clone();
        async move {
            let (mut answer, mut ticks) = state?;
            tokio::select! {
                r = &mut answer => {
                    let body = match r {
                        Ok(a) if a.status == 202 => return Some((Ok::<_, actix_web::Error>(Bytes::new()), None)),
                        Ok(a) => a.body,
                        Err(e) => Bytes::from(mcp::error(id, INTERNAL_ERROR, e.to_string()).to_string()),
                    };
                    let mut out = b"event: message\ndata: ".to_vec();
                    out.extend_from_slice(&body);
                    out.extend_from_slice(b"\n\n");
                    Some((Ok(Bytes::from(out)), None))
                }
                _ = ticks.tick() => Some((Ok(Bytes::from_static(b": keep-alive\n\n")), Some((answer, ticks)))),
            }
        }
    });
    HttpResponse::Ok()
        .content_type("text/event-stream")
        .insert_header(("cache-control", "no-cache"))
        // Keep-alives must reach the client as written: never compressed.
        .insert_header(("content-encoding", "identity"))
        .streaming(events)
}

/// Ends a session.
pub async fn delete(req: HttpRequest, state: web::Data<AppState>) -> HttpResponse {
    let Some(sid) = header(&req, "mcp-session-id") else {
        return rpc_error(
            StatusCode::BAD_REQUEST,
            Value::Null,
            INVALID_REQUEST,
            "Mcp-Session-Id header is required",
        );
    };
    match state.store.kv_delete(SESSIONS, sid).await {
        Ok(true) => HttpResponse::Ok().finish(),
        Ok(false) => rpc_error(
            StatusCode::NOT_FOUND,
            Value::Null,
            SESSION_NOT_FOUND,
            "Session not found",
        ),
        Err(e) => rpc_error(
            StatusCode::SERVICE_UNAVAILABLE,
            Value::Null,
            INTERNAL_ERROR,
            &e.to_string(),
        ),
    }
}

/// No server-initiated stream is offered.
pub async fn get() -> HttpResponse {
    HttpResponse::MethodNotAllowed()
        .insert_header(("allow", "POST, DELETE"))
        .content_type("application/json")
        .body(json!({"jsonrpc": "2.0", "id": null, "error": {"code": INVALID_REQUEST, "message": "Method Not Allowed: this server offers no GET stream"}}).to_string())
}
