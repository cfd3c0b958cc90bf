//! The named text endpoints of `[[text_endpoints]]`, `POST /v1/text/{name}`: each fills its
//! template (`routes::templates`) and routes like chat: `{"text", "model"?, "variables"?,
//! "stream"?}` → `{"object": "text.completion", "text", "model", "usage"}` (streams are chat
//! chunks).

use actix_web::{HttpRequest, HttpResponse, web};
use bytes::Bytes;
use llmr_protocol::{ApiError, Endpoint, chat};
use serde_json::json;

use super::templates::{invalid, vars};
use crate::{AppState, HttpError};

/// `POST /v1/text/{name}`.
pub async fn text(
    req: HttpRequest,
    path: web::Path<String>,
    payload: web::Payload,
    state: web::Data<AppState>,
) -> Result<HttpResponse, HttpError> {
    let name = path.into_inner();
    let endpoint = state
        .settings
        .text_endpoints
        .iter()
        .find(|e| e.name == name)
        .ok_or_else(|| {
            HttpError(ApiError::NotFound {
                message: format!("There is no text endpoint `{name}`."),
            })
        })?;
    let (_, input) = super::read_json(&req, payload, &state).await?;
    let text = input["text"]
        .as_str()
        .ok_or_else(|| invalid("`text` is required and must be a string.", "text"))?;
    let mut values = endpoint.defaults.clone();
    values.extend(vars(&input["variables"], "variables")?);
    let system = state
        .settings
        .templates
        .fill(&endpoint.template, &values)
        .map_err(|e| invalid(e.to_string(), "variables"))?;
    let model = input["model"].as_str().unwrap_or(&endpoint.model);
    let stream = input["stream"] == true;
    let mut chat_body = json!({"model": model, "stream": stream,
        "messages": [{"role": "system", "content": system}, {"role": "user", "content": text}]});
    if stream {
        chat_body["stream_options"] = json!({"include_usage": true});
    }
    let body = Bytes::from(chat_body.to_string());
    let parsed = chat::parse(&body)?.into_owned();
    let mut p = super::chat::publish(&req, &state, body, parsed, Endpoint::Chat, None).await?;
    if p.streams() {
        return Ok(p.relay(super::sse::Dialect::Chat, false, crate::error::Wire::OpenAi));
    }
    let c = p.json().await?;
    Ok(HttpResponse::Ok().json(json!({
        "object": "text.completion",
        "endpoint": name,
        "model": c["model"],
        "text": c["choices"][0]["message"]["content"],
        "finish_reason": c["choices"][0]["finish_reason"],
        "usage": c["usage"],
    })))
}
