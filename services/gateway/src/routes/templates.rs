//! Prompt templates (`[templates] path`, `##PLACEHOLDER##`s filled from variables):
//! put first as a system message in a chat request — the model group's `template`, or the
//! one the request names in `template` — with values from the request's `template_vars`
//! (both fields are removed before the request goes on); and the named text endpoints of
//! `[[text_endpoints]]`, `POST /v1/text/{name}`, which fill their template and route like
//! chat: `{"text", "model"?, "variables"?, "stream"?}` → `{"object": "text.completion",
//! "text", "model", "usage"}` (streams are chat chunks).

use std::collections::BTreeMap;

use actix_web::{HttpRequest, HttpResponse, web};
use bytes::Bytes;
use llmr_protocol::{ApiError, Endpoint, chat};
use serde_json::{Map, Value, json};

use crate::{AppState, HttpError};

fn invalid(message: impl Into<String>, param: &str) -> HttpError {
    HttpError(ApiError::invalid(message, Some(param)))
}

/// Placeholder values from a JSON object (strings as they are, other values as JSON).
fn vars(v: &Value, param: &str) -> Result<BTreeMap<String, String>, HttpError> {
    match v {
        Value::Null => Ok(BTreeMap::new()),
        Value::Object(m) => Ok(m
            .iter()
            .map(|(k, v)| (k.clone(), v.as_str().map_or_else(|| v.to_string(), str::to_owned)))
            .collect()),
        _ => Err(invalid(
            format!("`{param}` must be an object of placeholder values."),
            param,
        )),
    }
}

/// The chat body with its template applied, when one applies (else None: send it as is).
pub fn apply(state: &AppState, body: &[u8], model: &str) -> Result<Option<Bytes>, HttpError> {
    let t = &state.settings.templates;
    let group = state
        .settings
        .models
        .iter()
        .find(|g| g.name == model)
        .and_then(|g| g.template.as_deref());
    let named = memchr::memmem::find(body, b"\"template").is_some();
    if group.is_none() && !named {
        return Ok(None);
    }
    let mut req: Map<String, Value> = match serde_json::from_slice(body) {
        Ok(Value::Object(m)) => m,
        _ => return Ok(None),
    };
    let asked = req.remove("template");
    let values = vars(&req.remove("template_vars").unwrap_or_default(), "template_vars")?;
    let name = match &asked {
        Some(Value::String(n)) => n.as_str(),
        Some(Value::Null) | None => match group {
            Some(g) => g,
            None => return Ok(Some(Bytes::from(Value::Object(req).to_string()))),
        },
        Some(_) => return Err(invalid("`template` must be a template's name.", "template")),
    };
    let system = t.fill(name, &values).map_err(|m| invalid(m, "template"))?;
    if let Some(Value::Array(messages)) = req.get_mut("messages") {
        messages.insert(0, json!({"role": "system", "content": system}));
    }
    Ok(Some(Bytes::from(Value::Object(req).to_string())))
}

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
        .map_err(|m| invalid(m, "variables"))?;
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
