//! HTTP handlers.

pub mod admin;
pub mod anthropic;
pub mod chat;
pub mod console_data;
pub mod health;
pub mod mcp;
pub mod models;
pub mod ollama;
pub mod openapi;
pub mod overview;
pub mod responses;
pub mod sse;
pub mod templates;
pub mod text;
pub mod usage;

use actix_web::{HttpRequest, web};
use bytes::{Bytes, BytesMut};
use futures_util::StreamExt;
use llmr_protocol::ApiError;

use crate::HttpError;

/// The route table, once: `configure` registers it and `ROUTES` lists it (method, pattern)
/// so that the OpenAPI document can be checked against the real routes. actix tries routes
/// in order and matches a pattern with parameters by a regex: the busiest fixed paths come
/// first, every pattern with parameters last.
macro_rules! route_table {
    ($($method:ident $path:literal => $handler:path),* $(,)?) => {
        /// Every route the gateway serves, as (method, actix path pattern).
        pub const ROUTES: &[(&str, &str)] = &[$((stringify!($method), $path)),*];

        pub fn configure(cfg: &mut web::ServiceConfig) {
            $(cfg.route($path, web::$method().to($handler));)*
        }
    };
}

route_table! {
    post "/v1/chat/completions" => chat::completions,
    post "/v1/messages" => anthropic::messages,
    post "/api/chat" => ollama::chat,
    post "/mcp" => mcp::post,
    delete "/mcp" => mcp::delete,
    get "/mcp" => mcp::get,
    post "/v1/embeddings" => chat::embeddings,
    post "/v1/completions" => chat::text_completions,
    get "/v1/models" => models::list,
    get "/v1/usage" => usage::usage,
    post "/v1/responses" => responses::create,
    post "/v1/responses/input_tokens" => responses::body_op,
    post "/v1/responses/compact" => responses::body_op,
    post "/v1/conversations" => responses::body_op,
    post "/v1/messages/count_tokens" => anthropic::count_tokens,
    post "/api/generate" => ollama::generate,
    post "/api/embed" => ollama::embed,
    post "/api/show" => ollama::show,
    get "/api/tags" => ollama::tags,
    get "/api/ps" => ollama::ps,
    get "/api/version" => ollama::version,
    get "/api/v0/models" => ollama::lmstudio_models,
    get "/" => ollama::root,
    head "/" => ollama::root,
    get "/health" => health::health,
    get "/healthz" => crate::observe::healthz,
    get "/readyz" => crate::observe::readyz,
    get "/metrics" => crate::observe::scrape,
    get "/openapi.json" => openapi::document,
    post "/admin/keys" => admin::create_key,
    get "/admin/keys" => admin::list_keys,
    post "/admin/teams" => admin::create_team,
    get "/admin/teams" => admin::list_teams,
    get "/admin/spend" => admin::spend,
    get "/admin/requests" => admin::requests,
    get "/admin/overview" => overview::overview,
    get "/admin/providers" => console_data::providers,
    get "/admin/plan" => console_data::plan,
    get "/admin/cluster" => console_data::cluster,
    get "/admin/tools" => console_data::tools,
    get "/admin/config" => console_data::config,
    get "/v1/models/{id:.+}" => models::retrieve,
    get "/v1/responses/{id}" => responses::response,
    delete "/v1/responses/{id}" => responses::response,
    post "/v1/responses/{id}/cancel" => responses::cancel,
    get "/v1/responses/{id}/input_items" => responses::list,
    get "/v1/conversations/{id}" => responses::conversation,
    post "/v1/conversations/{id}" => responses::conversation,
    delete "/v1/conversations/{id}" => responses::conversation,
    post "/v1/conversations/{id}/items" => responses::conversation,
    get "/v1/conversations/{id}/items" => responses::list,
    get "/v1/conversations/{id}/items/{item_id}" => responses::item,
    delete "/v1/conversations/{id}/items/{item_id}" => responses::item,
    post "/v1/text/{name}" => text::text,
    get "/admin/keys/{id}" => admin::key,
    patch "/admin/keys/{id}" => admin::key,
    delete "/admin/keys/{id}" => admin::key,
    post "/admin/keys/{id}/rotate" => admin::rotate_key,
    get "/admin/teams/{id}" => admin::team,
    patch "/admin/teams/{id}" => admin::team,
    delete "/admin/teams/{id}" => admin::team,
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
