//! Ollama's API as a front door — `POST /api/chat`, `/api/generate` (NDJSON streaming,
//! Ollama's default, or one object), `/api/embed`, `/api/show`, `GET /api/tags`, `/api/ps`,
//! `/api/version` — and LM Studio's `GET /api/v0/models`. Bodies are translated by
//! `llmr_protocol::ollama::front` and routed like chat completions and embeddings (groups,
//! failover, usage); errors are Ollama's `{"error": "…"}`.

use actix_web::{HttpRequest, HttpResponse, web};
use bytes::Bytes;
use llmr_protocol::ollama::front::{self, Api, Lines};
use llmr_protocol::ollama::wire::{LmStudioList, ModelEntry, ModelList, Version};
use llmr_protocol::{ApiError, Endpoint, chat, endpoints};
use serde_json::Value;

use super::sse::Dialect;
use crate::error::{Wire, WireError};
use crate::{AppState, HttpError};

/// `POST /api/chat`.
pub async fn chat(
    req: HttpRequest,
    payload: web::Payload,
    state: web::Data<AppState>,
) -> Result<HttpResponse, WireError> {
    generate_or_chat(&req, payload, &state, Api::Chat)
        .await
        .map_err(WireError::to(Wire::Ollama))
}

/// `POST /api/generate`.
pub async fn generate(
    req: HttpRequest,
    payload: web::Payload,
    state: web::Data<AppState>,
) -> Result<HttpResponse, WireError> {
    generate_or_chat(&req, payload, &state, Api::Generate)
        .await
        .map_err(WireError::to(Wire::Ollama))
}

async fn generate_or_chat(
    req: &HttpRequest,
    payload: web::Payload,
    state: &AppState,
    api: Api,
) -> Result<HttpResponse, HttpError> {
    let (_, native) = super::read_json(req, payload, state).await?;
    let translated = match api {
        Api::Chat => front::chat_request(&native)?,
        Api::Generate => front::generate_request(&native)?,
    };
    let body = Bytes::from(translated.to_string());
    let parsed = chat::parse(&body)?.into_owned();
    let mut p = super::chat::publish(req, state, body, parsed, Endpoint::Chat, None).await?;
    let model = native["model"].as_str().unwrap_or_default().to_owned();
    if p.streams() {
        let lines = Box::new(Lines::new(api, &model));
        return Ok(p.relay(Dialect::Ollama(lines), false, Wire::Ollama));
    }
    let completion = p.json().await?;
    let answer = front::answer(api, &completion, &model, p.started.elapsed().as_nanos() as u64);
    let resp = if p.stream {
        // Asked for a stream, answered whole (a cached answer): one final line.
        let mut line = Vec::new();
        front::ndjson(&[answer], &mut line);
        HttpResponse::Ok().content_type("application/x-ndjson").body(line)
    } else {
        HttpResponse::Ok().json(answer)
    };
    Ok(p.finish(Wire::Ollama, resp))
}

/// `POST /api/embed`.
pub async fn embed(
    req: HttpRequest,
    payload: web::Payload,
    state: web::Data<AppState>,
) -> Result<HttpResponse, WireError> {
    let serve = async {
        let (_, native) = super::read_json(&req, payload, &state).await?;
        let body = Bytes::from(front::embed_request(&native)?.to_string());
        let parsed = endpoints::embeddings(&body)?;
        let mut p = super::chat::publish(&req, &state, body, parsed, Endpoint::Embeddings, None).await?;
        let v = p.json().await?;
        let model = native["model"].as_str().unwrap_or_default();
        Ok::<_, HttpError>(HttpResponse::Ok().json(front::embed_answer(
            &v,
            model,
            p.started.elapsed().as_nanos() as u64,
        )))
    };
    serve.await.map_err(WireError::to(Wire::Ollama))
}

/// The model names clients may ask for, and each one's context window when known.
async fn models(state: &AppState) -> Result<Vec<(String, Option<u64>)>, HttpError> {
    let catalog = super::models::catalog(state).await?;
    Ok(catalog
        .into_iter()
        .map(|(name, owner)| {
            let window = context_window(state, &name, &owner);
            (name, window)
        })
        .collect())
}

/// A model's context window: its provider's, or for a group its first target's.
fn context_window(state: &AppState, name: &str, owner: &str) -> Option<u64> {
    let s = &state.settings;
    let (provider, model) = match s.models.iter().find(|g| g.name == name) {
        Some(g) => {
            let t = g.targets.first()?;
            (t.provider.as_str(), t.model.as_str())
        }
        None => (owner, name),
    };
    s.providers().find(|p| p.name == provider)?.context_window_of(model)
}

/// `GET /api/tags`.
pub async fn tags(req: HttpRequest, state: web::Data<AppState>) -> Result<HttpResponse, WireError> {
    let list = models(&state).await.map_err(WireError::to(Wire::Ollama))?;
    let who = super::models::identity(&req);
    let models = list
        .iter()
        .filter(|(m, _)| who.allows_model(m))
        .map(|(m, _)| front::model_entry(m))
        .collect();
    Ok(HttpResponse::Ok().json(ModelList { models }))
}

/// `GET /api/ps`: the model groups, which are always ready.
pub async fn ps(state: web::Data<AppState>) -> HttpResponse {
    let models = state
        .settings
        .models
        .iter()
        .map(|g| ModelEntry {
            expires_at: Some("2999-01-01T00:00:00Z".into()),
            size_vram: Some(0),
            ..front::model_entry(&g.name)
        })
        .collect();
    HttpResponse::Ok().json(ModelList { models })
}

/// `GET /api/version`.
pub async fn version() -> HttpResponse {
    HttpResponse::Ok().json(Version {
        version: front::VERSION.into(),
    })
}

/// `POST /api/show`.
pub async fn show(
    req: HttpRequest,
    payload: web::Payload,
    state: web::Data<AppState>,
) -> Result<HttpResponse, WireError> {
    let serve = async {
        let (_, body) = super::read_json(&req, payload, &state).await?;
        let name = ["model", "name"]
            .iter()
            .find_map(|k| body.get(*k).and_then(Value::as_str))
            .ok_or_else(|| HttpError(ApiError::invalid("`model` is required.", Some("model"))))?;
        let list = models(&state).await?;
        match list.iter().find(|(m, _)| m == name) {
            Some((m, window)) => Ok(HttpResponse::Ok().json(front::show(m, *window))),
            None => Err(HttpError(ApiError::NotFound {
                message: format!("model '{name}' not found"),
            })),
        }
    };
    serve.await.map_err(WireError::to(Wire::Ollama))
}

/// LM Studio's `GET /api/v0/models`.
pub async fn lmstudio_models(state: web::Data<AppState>) -> Result<HttpResponse, WireError> {
    let list = models(&state).await.map_err(WireError::to(Wire::Ollama))?;
    let data = list.iter().map(|(m, w)| front::lmstudio_entry(m, *w)).collect();
    Ok(HttpResponse::Ok().json(LmStudioList {
        object: "list".into(),
        data,
    }))
}

/// `GET /` and `HEAD /`, as Ollama answers them (clients probe it).
pub async fn root() -> HttpResponse {
    HttpResponse::Ok().content_type("text/plain").body("Ollama is running")
}
