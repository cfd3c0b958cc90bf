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

use super::sse::Dialect;
use crate::trace::client_trace;
use crate::{AppState, HttpError};

/// Admits an operation that calls a model (create, compact) for the caller's key: its model
/// allowlist and its reservation (`max_output_tokens` as the output cap). A background
/// response of a key with a budget is refused: its cost lands after the answer, where the
/// reservation could not hold it.
async fn admit(
    req: &HttpRequest,
    state: &AppState,
    body: &Value,
    body_len: usize,
) -> Result<crate::govern::Ticket, HttpError> {
    let identity = super::models::identity(req);
    let budgeted = identity.caller().is_some_and(|c| {
        c.key.limits.budget_usd.is_some() || c.team.as_ref().is_some_and(|t| t.limits.budget_usd.is_some())
    });
    if budgeted && body.get("background") == Some(&Value::Bool(true)) {
        return Err(HttpError(ApiError::invalid(
            "Background responses are not available to a key with a budget (their cost would land after the answer).",
            Some("background"),
        )));
    }
    let ask = crate::govern::Ask {
        route: "responses",
        model: body.get("model").and_then(Value::as_str).unwrap_or_default(),
        stream: body.get("stream") == Some(&Value::Bool(true)),
        body_len,
        max_tokens: body.get("max_output_tokens").and_then(Value::as_u64),
    };
    Ok(crate::govern::admit(&state.settings, &state.store, &identity, &ask).await?)
}

/// Hands `op` to the responses service and relays its answer; `ticket` (an admitted create
/// or compact) is settled with what the answer cost.
async fn forward(
    req: &HttpRequest,
    state: &AppState,
    op: Op,
    model: String,
    stream: bool,
    ticket: Option<crate::govern::Ticket>,
) -> Result<HttpResponse, HttpError> {
    let identity = super::models::identity(req);
    let meta = Meta {
        model,
        stream,
        caller: CallerId::Gateway(state.instance.clone()),
        cache: super::sse::cache_directives(req),
        scope: identity.cache_scope(state.settings.cache.scope),
        tools: identity.tool_lists(),
        ..Meta::default()
    };
    let deadline = now_ms() + state.settings.server.request_timeout_ms;
    let trace = llmr_telemetry::context(&tracing::Span::current(), &client_trace(req.headers()));
    let body =
        Bytes::from(serde_json::to_vec(&op).map_err(|e| HttpError(ApiError::Internal { message: e.to_string() }))?);
    let mut env = Envelope::new(Kind::Responses, &state.instance, deadline, trace, body, meta);
    let mut ticket = ticket;
    if let Some(t) = &ticket {
        env.id = t.id;
    }
    let answered = async {
        let mut call = state.send(streams::RESPONSES, &env).await?;
        let head = call.head().await?;
        Ok::<_, HttpError>((call, head))
    }
    .await;
    let (mut call, head) = match answered {
        Ok(a) => a,
        Err(e) => {
            if let Some(t) = &mut ticket {
                t.settle_failed(&e.0);
            }
            return Err(e);
        }
    };
    if head.stream {
        if let Some(t) = &mut ticket {
            t.first_token();
        }
        return Ok(super::sse::relay_settled(
            call,
            Dialect::Responses,
            head.cache,
            super::sse::compress_stream(req),
            ticket,
            crate::error::Wire::OpenAi,
        ));
    }
    let body = call.body().await;
    if let Some(t) = &mut ticket {
        match &body {
            Ok(_) => t.answered(
                head.status,
                call.outcome(),
                head.cache == Some(llmr_protocol::CacheStatus::Hit),
            ),
            Err(e) => t.failed(e),
        }
    }
    let body = body?;
    let status = actix_web::http::StatusCode::from_u16(head.status).unwrap_or(actix_web::http::StatusCode::OK);
    let mut r = HttpResponse::build(status);
    if let Some(c) = head.cache {
        r.insert_header((super::sse::CACHE_HEADER, c.as_str()));
    }
    let mut r = r.content_type("application/json").body(body);
    if let Some(t) = ticket {
        t.decorate(crate::error::Wire::OpenAi, &mut r);
        t.settle();
    }
    Ok(r)
}

/// `POST /v1/responses`.
pub async fn create(
    req: HttpRequest,
    payload: web::Payload,
    state: web::Data<AppState>,
) -> Result<HttpResponse, HttpError> {
    let (raw, body) = super::read_json(&req, payload, &state).await?;
    let stream = body.get("stream") == Some(&Value::Bool(true));
    let model = body.get("model").and_then(Value::as_str).unwrap_or_default().to_owned();
    let ticket = admit(&req, &state, &body, raw.len()).await?;
    let mut body = body;
    if let (Some(cap), Some(o)) = (ticket.cap_to_send(), body.as_object_mut()) {
        o.insert("max_output_tokens".into(), Value::from(cap));
    }
    forward(&req, &state, Op::Create { body }, model, stream, Some(ticket)).await
}

/// `POST /v1/responses/input_tokens`, `POST /v1/responses/compact` and `POST /v1/conversations`:
/// a body and no id.
pub async fn body_op(
    req: HttpRequest,
    payload: web::Payload,
    state: web::Data<AppState>,
) -> Result<HttpResponse, HttpError> {
    let (raw, body) = super::read_json(&req, payload, &state).await?;
    let model = body.get("model").and_then(Value::as_str).unwrap_or_default().to_owned();
    let (op, ticket) = match req.path().rsplit('/').next() {
        Some("input_tokens") => (Op::InputTokens { body }, None),
        Some("compact") => {
            let ticket = admit(&req, &state, &body, raw.len()).await?;
            (Op::Compact { body }, Some(ticket))
        }
        _ => (Op::ConversationCreate { body }, None),
    };
    forward(&req, &state, op, model, false, ticket).await
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
    forward(&req, &state, op, String::new(), stream, None).await
}

/// `POST /v1/responses/{id}/cancel`.
pub async fn cancel(
    req: HttpRequest,
    id: web::Path<String>,
    state: web::Data<AppState>,
) -> Result<HttpResponse, HttpError> {
    forward(
        &req,
        &state,
        Op::Cancel { id: id.into_inner() },
        String::new(),
        false,
        None,
    )
    .await
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
    forward(&req, &state, op, String::new(), false, None).await
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
    forward(&req, &state, op, String::new(), false, None).await
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
    forward(&req, &state, op, String::new(), false, None).await
}
