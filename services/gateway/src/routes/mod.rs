//! HTTP handlers.

pub mod anthropic;
pub mod chat;
pub mod health;
pub mod mcp;
pub mod models;
pub mod ollama;
pub mod responses;
pub mod sse;
pub mod templates;
pub mod usage;

use actix_web::{HttpRequest, web};
use bytes::{Bytes, BytesMut};
use futures_util::StreamExt;
use llmr_protocol::ApiError;

use crate::HttpError;

pub fn configure(cfg: &mut web::ServiceConfig) {
    cfg.route("/v1/chat/completions", web::post().to(chat::completions))
        .route("/v1/embeddings", web::post().to(chat::embeddings))
        .route("/v1/completions", web::post().to(chat::text_completions))
        .route("/v1/models", web::get().to(models::list))
        .route("/v1/models/{id:.+}", web::get().to(models::retrieve))
        .route("/v1/usage", web::get().to(usage::usage))
        .route("/v1/responses", web::post().to(responses::create))
        .route("/v1/responses/input_tokens", web::post().to(responses::body_op))
        .route("/v1/responses/compact", web::post().to(responses::body_op))
        .route("/v1/responses/{id}", web::get().to(responses::response))
        .route("/v1/responses/{id}", web::delete().to(responses::response))
        .route("/v1/responses/{id}/cancel", web::post().to(responses::cancel))
        .route("/v1/responses/{id}/input_items", web::get().to(responses::list))
        .route("/v1/conversations", web::post().to(responses::body_op))
        .route("/v1/conversations/{id}", web::get().to(responses::conversation))
        .route("/v1/conversations/{id}", web::post().to(responses::conversation))
        .route("/v1/conversations/{id}", web::delete().to(responses::conversation))
        .route("/v1/conversations/{id}/items", web::post().to(responses::conversation))
        .route("/v1/conversations/{id}/items", web::get().to(responses::list))
        .route("/v1/conversations/{id}/items/{item_id}", web::get().to(responses::item))
        .route(
            "/v1/conversations/{id}/items/{item_id}",
            web::delete().to(responses::item),
        )
        .route("/v1/text/{name}", web::post().to(templates::text))
        .route("/v1/messages", web::post().to(anthropic::messages))
        .route("/v1/messages/count_tokens", web::post().to(anthropic::count_tokens))
        .route("/api/chat", web::post().to(ollama::chat))
        .route("/api/generate", web::post().to(ollama::generate))
        .route("/api/embed", web::post().to(ollama::embed))
        .route("/api/show", web::post().to(ollama::show))
        .route("/api/tags", web::get().to(ollama::tags))
        .route("/api/ps", web::get().to(ollama::ps))
        .route("/api/version", web::get().to(ollama::version))
        .route("/api/v0/models", web::get().to(ollama::lmstudio_models))
        .route("/", web::get().to(ollama::root))
        .route("/", web::head().to(ollama::root))
        .route("/health", web::get().to(health::health))
        .route("/healthz", web::get().to(crate::observe::healthz))
        .route("/readyz", web::get().to(crate::observe::readyz))
        .route("/metrics", web::get().to(crate::observe::scrape))
        .route("/mcp", web::post().to(mcp::post))
        .route("/mcp", web::delete().to(mcp::delete))
        .route("/mcp", web::get().to(mcp::get));
}

/// Unknown routes, in the error shape of the API their path belongs to.
pub async fn not_found(req: HttpRequest) -> Result<actix_web::HttpResponse, crate::error::WireError> {
    Err(crate::error::WireError {
        wire: crate::error::Wire::of_path(req.path()),
        error: ApiError::RouteNotFound {
            method: req.method().to_string(),
            path: req.path().to_owned(),
        },
    })
}

/// Reads a JSON object body (the bytes too), or a 400 naming the problem (413 when too large).
pub async fn read_json(
    req: &HttpRequest,
    payload: web::Payload,
    state: &crate::AppState,
) -> Result<(Bytes, serde_json::Value), HttpError> {
    let body = read_body(req, payload, state.settings.server.max_body_bytes).await?;
    match serde_json::from_slice::<serde_json::Value>(&body) {
        Ok(v @ serde_json::Value::Object(_)) => Ok((body, v)),
        Ok(_) => Err(HttpError(ApiError::invalid("The body must be a JSON object.", None))),
        Err(e) => Err(HttpError(ApiError::invalid(
            format!("We could not parse the JSON body of your request: {e}"),
            None,
        ))),
    }
}

/// Reads a request body, refusing it with 413 as soon as it passes `limit` bytes.
pub async fn read_body(req: &HttpRequest, mut payload: web::Payload, limit: usize) -> Result<Bytes, HttpError> {
    let too_large = || HttpError(ApiError::PayloadTooLarge { limit });
    let declared = req
        .headers()
        .get("content-length")
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.parse::<usize>().ok());
    if declared.is_some_and(|n| n > limit) {
        return Err(too_large());
    }
    let mut body = BytesMut::with_capacity(declared.unwrap_or(1024).min(limit));
    while let Some(chunk) = payload.next().await {
        let chunk =
            chunk.map_err(|e| HttpError(ApiError::invalid(format!("could not read the request body: {e}"), None)))?;
        if body.len() + chunk.len() > limit {
            return Err(too_large());
        }
        body.extend_from_slice(&chunk);
    }
    Ok(body.freeze())
}
