//! The Responses API (`/v1/responses…`): each request becomes one [`Op`] on the `responses`
//! stream, answered by a responses instance — JSON, or Responses events relayed as SSE.
//! Bodies are checked to be JSON objects here; everything else is validated by the service
//! (before anything reaches an upstream).

use actix_web::http::Method;
use actix_web::{HttpRequest, HttpResponse, web};
use bytes::Bytes;
use llmr_protocol::responses::{ListQuery, Op};
use llmr_protocol::{ApiError, CallerId, Envelope, Kind, Meta, now_ms, streams};
use serde::Deserialize;
use serde_json::Value;

use super::sse::{Dialect, relay};
use crate::observe::client_trace;
use crate::{AppState, HttpError};

/// Hands `op` to the responses service and relays its answer.
async fn forward(
    req: &HttpRequest,
    state: &AppState,
    op: Op,
    model: String,
    stream: bool,
) -> Result<HttpResponse, HttpError> {
    let meta = Meta {
        model,
        stream,
        caller: CallerId::Gateway(state.instance.clone()),
        cache: super::sse::cache_directives(req),
        ..Meta::default()
    };
    let deadline = now_ms() + state.settings.server.request_timeout_ms;
    let trace = llmr_telemetry::context(&tracing::Span::current(), &client_trace(req.headers()));
    let body =
        Bytes::from(serde_json::to_vec(&op).map_err(|e| HttpError(ApiError::Internal { message: e.to_string() }))?);
    let env = Envelope::new(Kind::Responses, &state.instance, deadline, trace, body, meta);
    let mut call = state.send(streams::RESPONSES, &env).await?;
    let head = call.head().await?;
    if head.stream {
        return Ok(relay(
            call,
            Dialect::Responses,
            head.cache,
            super::sse::compress_stream(req),
            None,
        ));
    }
    let body = call.body().await?;
    let status = actix_web::http::StatusCode::from_u16(head.status).unwrap_or(actix_web::http::StatusCode::OK);
    let mut r = HttpResponse::build(status);
    if let Some(c) = head.cache {
        r.insert_header((super::sse::CACHE_HEADER, c.as_str()));
    }
    Ok(r.content_type("application/json").body(body))
}

/// `POST /v1/responses`.
pub async fn create(
    req: HttpRequest,
    payload: web::Payload,
    state: web::Data<AppState>,
) -> Result<HttpResponse, HttpError> {
    let body = super::read_json(&req, payload, &state).await?.1;
    let stream = body.get("stream") == Some(&Value::Bool(true));
    let model = body.get("model").and_then(Value::as_str).unwrap_or_default().to_owned();
    forward(&req, &state, Op::Create { body }, model, stream).await
}

/// `POST /v1/responses/input_tokens`, `POST /v1/responses/compact` and `POST /v1/conversations`:
/// a body and no id.
pub async fn body_op(
    req: HttpRequest,
    payload: web::Payload,
    state: web::Data<AppState>,
) -> Result<HttpResponse, HttpError> {
    let body = super::read_json(&req, payload, &state).await?.1;
    let model = body.get("model").and_then(Value::as_str).unwrap_or_default().to_owned();
    let op = match req.path().rsplit('/').next() {
        Some("input_tokens") => Op::InputTokens { body },
        Some("compact") => Op::Compact { body },
        _ => Op::ConversationCreate { body },
    };
    forward(&req, &state, op, model, false).await
}

#[derive(Deserialize)]
pub struct RetrieveQuery {
    #[serde(default)]
    stream: Option<String>,
    #[serde(default)]
    starting_after: Option<u64>,
}

/// `GET` (with `stream=true&starting_after=N`: resume) and `DELETE /v1/responses/{id}`.
pub async fn response(
    req: HttpRequest,
    id: web::Path<String>,
    q: web::Query<RetrieveQuery>,
    state: web::Data<AppState>,
) -> Result<HttpResponse, HttpError> {
    let id = id.into_inner();
    let stream = q.stream.as_deref() == Some("true");
    let op = if req.method() == Method::DELETE {
        Op::Delete { id }
    } else {
        Op::Retrieve {
            id,
            stream,
            starting_after: q.starting_after,
        }
    };
    forward(&req, &state, op, String::new(), stream).await
}

/// `POST /v1/responses/{id}/cancel`.
pub async fn cancel(
    req: HttpRequest,
    id: web::Path<String>,
    state: web::Data<AppState>,
) -> Result<HttpResponse, HttpError> {
    forward(&req, &state, Op::Cancel { id: id.into_inner() }, String::new(), false).await
}

/// `GET /v1/responses/{id}/input_items` and `GET /v1/conversations/{id}/items`.
pub async fn list(
    req: HttpRequest,
    id: web::Path<String>,
    q: web::Query<ListQuery>,
    state: web::Data<AppState>,
) -> Result<HttpResponse, HttpError> {
    let (id, query) = (id.into_inner(), q.into_inner());
    let op = if req.path().ends_with("/input_items") {
        Op::InputItems { id, query }
    } else {
        Op::ItemsList { id, query }
    };
    forward(&req, &state, op, String::new(), false).await
}

/// `GET`, `POST` (metadata) and `DELETE /v1/conversations/{id}`, and
/// `POST /v1/conversations/{id}/items`.
pub async fn conversation(
    req: HttpRequest,
    id: web::Path<String>,
    payload: web::Payload,
    state: web::Data<AppState>,
) -> Result<HttpResponse, HttpError> {
    let id = id.into_inner();
    let op = match *req.method() {
        Method::GET => Op::ConversationRetrieve { id },
        Method::DELETE => Op::ConversationDelete { id },
        _ => {
            let body = super::read_json(&req, payload, &state).await?.1;
            if req.path().ends_with("/items") {
                Op::ItemsCreate { id, body }
            } else {
                Op::ConversationUpdate { id, body }
            }
        }
    };
    forward(&req, &state, op, String::new(), false).await
}

/// `GET` and `DELETE /v1/conversations/{id}/items/{item_id}`.
pub async fn item(
    req: HttpRequest,
    path: web::Path<(String, String)>,
    state: web::Data<AppState>,
) -> Result<HttpResponse, HttpError> {
    let (id, item_id) = path.into_inner();
    let op = if req.method() == Method::DELETE {
        Op::ItemDelete { id, item_id }
    } else {
        Op::ItemRetrieve { id, item_id }
    };
    forward(&req, &state, op, String::new(), false).await
}
