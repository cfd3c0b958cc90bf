//! `/mcp`: the MCP Streamable HTTP transport. `POST` carries one JSON-RPC message; the
//! answer is JSON (`application/json`), a notification or response gets `202 Accepted`.
//! `initialize` opens a session (`Mcp-Session-Id`, kept in the store so any gateway knows
//! it); every other message must name a live session (400 without one, 404 for an unknown
//! or expired one). `DELETE` ends a session; `GET` (a server-initiated stream) is not
//! offered (405). The methods themselves are served by mcp-tools over the `mcp` stream.
//!
//! Transport failures answer with a JSON-RPC error body; bearer auth is the same as for
//! every other route.

use actix_web::http::StatusCode;
use actix_web::{HttpRequest, HttpResponse, web};
use llmr_protocol::mcp::{self, INTERNAL_ERROR, INVALID_REQUEST, PARSE_ERROR, SESSION_NOT_FOUND};
use llmr_protocol::{CallerId, Envelope, Kind, Meta, ToolMode, now_ms, streams};
use serde_json::{Value, json};
use uuid::Uuid;

use crate::AppState;

/// Where sessions live in the store.
const SESSIONS: &str = "mcp-session";

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

/// A JSON-RPC message that passed the transport's checks.
struct Checked {
    /// The message's id (null for notifications).
    id: Value,
    method: Option<String>,
    /// A notification or response: nothing to answer.
    notification: bool,
}

/// The transport's checks of one message: JSON, one JSON-RPC 2.0 object, a served
/// protocol revision; the answer to send instead when a check fails.
fn check(req: &HttpRequest, body: &[u8]) -> Result<Checked, Refusal> {
    let msg: Value = serde_json::from_slice(body).map_err(|e| {
        refuse(
            StatusCode::BAD_REQUEST,
            Value::Null,
            PARSE_ERROR,
            &format!("Parse error: {e}"),
        )
    })?;
    let Some(obj) = msg.as_object() else {
        let why = if msg.is_array() {
            "Invalid Request: JSON-RPC batches are not supported; send one message per request"
        } else {
            "Invalid Request: expected a JSON-RPC object"
        };
        return Err(refuse(StatusCode::BAD_REQUEST, Value::Null, INVALID_REQUEST, why));
    };
    let id = obj.get("id").cloned().unwrap_or(Value::Null);
    if obj.get("jsonrpc").and_then(Value::as_str) != Some("2.0") {
        return Err(refuse(
            StatusCode::BAD_REQUEST,
            id,
            INVALID_REQUEST,
            "Invalid Request: jsonrpc must be \"2.0\"",
        ));
    }
    let method = obj.get("method").and_then(Value::as_str).map(str::to_owned);
    let initialize = method.as_deref() == Some("initialize");
    if let Some(v) = header(req, "mcp-protocol-version")
        && !initialize
        && !mcp::PROTOCOL_VERSIONS.contains(&v)
    {
        return Err(refuse(
            StatusCode::BAD_REQUEST,
            id,
            INVALID_REQUEST,
            &format!("Unsupported MCP-Protocol-Version `{v}`"),
        ));
    }
    let notification = method.is_none() || (obj.get("id").is_none() && !initialize);
    Ok(Checked {
        id,
        method,
        notification,
    })
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
        Err(e) => Err(refuse(
            StatusCode::SERVICE_UNAVAILABLE,
            id.clone(),
            INTERNAL_ERROR,
            &e.to_string(),
        )),
    }
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
    let meta = Meta {
        caller: session.map_or(CallerId::None, CallerId::Session),
        mode: ToolMode::from_header(header(req, "x-mcp-tool-mode").unwrap_or_default()),
        ..Meta::default()
    };
    let deadline = now_ms() + state.settings.server.request_timeout_ms;
    let traceparent = header(req, "traceparent").unwrap_or_default();
    let env = Envelope::new(Kind::Mcp, &state.instance, deadline, traceparent, body, meta);
    // A client that leaves drops this future, and with it the call: its work is cancelled.
    let answer = state.caller.call(streams::MCP, &env).await.map_err(|e| {
        let status = StatusCode::from_u16(e.status()).unwrap_or(StatusCode::BAD_GATEWAY);
        refuse(status, m.id.clone(), INTERNAL_ERROR, &e.to_string())
    })?;
    if answer.status == 202 {
        return Ok(HttpResponse::Accepted().finish());
    }
    let mut resp = HttpResponse::Ok();
    resp.content_type("application/json");
    if initialize {
        let parsed: Value = serde_json::from_slice(&answer.body).unwrap_or(Value::Null);
        if let Some(version) = parsed.pointer("/result/protocolVersion").and_then(Value::as_str) {
            let sid = Uuid::new_v4().simple().to_string();
            let ttl = state.settings.mcp.session_ttl_ms;
            state
                .store
                .kv_set(SESSIONS, &sid, version, Some(ttl))
                .await
                .map_err(|e| {
                    refuse(
                        StatusCode::SERVICE_UNAVAILABLE,
                        m.id.clone(),
                        INTERNAL_ERROR,
                        &e.to_string(),
                    )
                })?;
            resp.insert_header(("mcp-session-id", sid));
        }
    }
    Ok(resp.body(answer.body))
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
