//! The Responses API (`/v1/responses…`): each request becomes one [`Op`] on the `responses`
//! stream, answered by a responses instance — JSON, or Responses events relayed as SSE.
//! Bodies are checked to be JSON objects here; everything else is validated by the service
//! (before anything reaches an upstream).

use actix_web::{HttpRequest, HttpResponse, web};
use bytes::Bytes;
use llmr_protocol::responses::{ListQuery, Op};
use llmr_protocol::{ApiError, CallerId, Envelope, Kind, Meta, now_ms, streams};
use serde::Deserialize;
use serde_json::Value;

use super::sse::{Dialect, relay};
use crate::observe::client_trace;
use crate::{AppState, HttpError};

/// A JSON object body, or a 400 naming the problem.
async fn json_body(req: &HttpRequest, payload: web::Payload, state: &AppState) -> Result<Value, HttpError> {
    let body = super::read_body(req, payload, state.settings.server.max_body_bytes).await?;
    match serde_json::from_slice::<Value>(&body) {
        Ok(v @ Value::Object(_)) => Ok(v),
        Ok(_) => Err(HttpError(ApiError::invalid("The body must be a JSON object.", None))),
        Err(e) => Err(HttpError(ApiError::invalid(
            format!("We could not parse the JSON body of your request: {e}"),
            None,
        ))),
    }
}

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
    let mut call = state.caller.send(streams::RESPONSES, &env).await?;
    let head = call.head().await?;
    if head.stream {
        return Ok(relay(call, Dialect::Responses, head.cache));
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
    let body = json_body(&req, payload, &state).await?;
    let stream = body.get("stream") == Some(&Value::Bool(true));
    let model = body.get("model").and_then(Value::as_str).unwrap_or_default().to_owned();
    forward(&req, &state, Op::Create { body }, model, stream).await
}

#[derive(Deserialize)]
pub struct RetrieveQuery {
    #[serde(default)]
    stream: Option<String>,
    #[serde(default)]
    starting_after: Option<u64>,
}

/// `GET /v1/responses/{id}`.
pub async fn retrieve(
    req: HttpRequest,
    id: web::Path<String>,
    q: web::Query<RetrieveQuery>,
    state: web::Data<AppState>,
) -> Result<HttpResponse, HttpError> {
    let stream = q.stream.as_deref() == Some("true");
    let op = Op::Retrieve {
        id: id.into_inner(),
        stream,
        starting_after: q.starting_after,
    };
    forward(&req, &state, op, String::new(), stream).await
}

/// `DELETE /v1/responses/{id}`.
pub async fn delete(
    req: HttpRequest,
    id: web::Path<String>,
    state: web::Data<AppState>,
) -> Result<HttpResponse, HttpError> {
    forward(&req, &state, Op::Delete { id: id.into_inner() }, String::new(), false).await
}

/// `POST /v1/responses/{id}/cancel`.
pub async fn cancel(
    req: HttpRequest,
    id: web::Path<String>,
    state: web::Data<AppState>,
) -> Result<HttpResponse, HttpError> {
    forward(&req, &state, Op::Cancel { id: id.into_inner() }, String::new(), false).await
}

/// `GET /v1/responses/{id}/input_items`.
pub async fn input_items(
    req: HttpRequest,
    id: web::Path<String>,
    q: web::Query<ListQuery>,
    state: web::Data<AppState>,
) -> Result<HttpResponse, HttpError> {
    let op = Op::InputItems {
        id: id.into_inner(),
        query: q.into_inner(),
    };
    forward(&req, &state, op, String::new(), false).await
}

/// `POST /v1/responses/input_tokens`.
pub async fn input_tokens(
    req: HttpRequest,
    payload: web::Payload,
    state: web::Data<AppState>,
) -> Result<HttpResponse, HttpError> {
    let body = json_body(&req, payload, &state).await?;
    forward(&req, &state, Op::InputTokens { body }, String::new(), false).await
}

/// `POST /v1/responses/compact`.
pub async fn compact(
    req: HttpRequest,
    payload: web::Payload,
    state: web::Data<AppState>,
) -> Result<HttpResponse, HttpError> {
    let body = json_body(&req, payload, &state).await?;
    let model = body.get("model").and_then(Value::as_str).unwrap_or_default().to_owned();
    forward(&req, &state, Op::Compact { body }, model, false).await
}

/// `POST /v1/conversations`.
pub async fn conversation_create(
    req: HttpRequest,
    payload: web::Payload,
    state: web::Data<AppState>,
) -> Result<HttpResponse, HttpError> {
    let body = json_body(&req, payload, &state).await?;
    forward(&req, &state, Op::ConversationCreate { body }, String::new(), false).await
}

/// `GET /v1/conversations/{id}`.
pub async fn conversation_retrieve(
    req: HttpRequest,
    id: web::Path<String>,
    state: web::Data<AppState>,
) -> Result<HttpResponse, HttpError> {
    forward(
        &req,
        &state,
        Op::ConversationRetrieve { id: id.into_inner() },
        String::new(),
        false,
    )
    .await
}

/// `POST /v1/conversations/{id}`.
pub async fn conversation_update(
    req: HttpRequest,
    id: web::Path<String>,
    payload: web::Payload,
    state: web::Data<AppState>,
) -> Result<HttpResponse, HttpError> {
    let body = json_body(&req, payload, &state).await?;
    let op = Op::ConversationUpdate {
        id: id.into_inner(),
        body,
    };
    forward(&req, &state, op, String::new(), false).await
}

/// `DELETE /v1/conversations/{id}`.
pub async fn conversation_delete(
    req: HttpRequest,
    id: web::Path<String>,
    state: web::Data<AppState>,
) -> Result<HttpResponse, HttpError> {
    forward(
        &req,
        &state,
        Op::ConversationDelete { id: id.into_inner() },
        String::new(),
        false,
    )
    .await
}

/// `POST /v1/conversations/{id}/items`.
pub async fn items_create(
    req: HttpRequest,
    id: web::Path<String>,
    payload: web::Payload,
    state: web::Data<AppState>,
) -> Result<HttpResponse, HttpError> {
    let body = json_body(&req, payload, &state).await?;
    let op = Op::ItemsCreate {
        id: id.into_inner(),
        body,
    };
    forward(&req, &state, op, String::new(), false).await
}

/// `GET /v1/conversations/{id}/items`.
pub async fn items_list(
    req: HttpRequest,
    id: web::Path<String>,
    q: web::Query<ListQuery>,
    state: web::Data<AppState>,
) -> Result<HttpResponse, HttpError> {
    let op = Op::ItemsList {
        id: id.into_inner(),
        query: q.into_inner(),
    };
    forward(&req, &state, op, String::new(), false).await
}

/// `GET /v1/conversations/{id}/items/{item_id}`.
pub async fn item_retrieve(
    req: HttpRequest,
    path: web::Path<(String, String)>,
    state: web::Data<AppState>,
) -> Result<HttpResponse, HttpError> {
    let (id, item_id) = path.into_inner();
    forward(&req, &state, Op::ItemRetrieve { id, item_id }, String::new(), false).await
}

/// `DELETE /v1/conversations/{id}/items/{item_id}`.
pub async fn item_delete(
    req: HttpRequest,
    path: web::Path<(String, String)>,
    state: web::Data<AppState>,
) -> Result<HttpResponse, HttpError> {
    let (id, item_id) = path.into_inner();
    forward(&req, &state, Op::ItemDelete { id, item_id }, String::new(), false).await
}
