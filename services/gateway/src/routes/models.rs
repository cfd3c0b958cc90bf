//! `GET /v1/models` and `GET /v1/models/{id}`: the model groups and the union of every
//! enabled provider's models.

use std::collections::BTreeMap;

use actix_web::{HttpResponse, web};
use llmr_protocol::ApiError;
use serde_json::json;

use crate::{AppState, HttpError};

/// model id → the first provider (by name) that serves it.
pub(crate) async fn catalog(state: &AppState) -> Result<BTreeMap<String, String>, HttpError> {
    let published = state.store.providers().await?;
    let mut out = BTreeMap::new();
    // Model groups first: a group shadows a provider model of the same name.
    for g in &state.settings.models {
        out.insert(g.name.clone(), "llmrouter".to_string());
    }
    for p in state.settings.providers() {
        // The routers publish fetched lists; static lists are known from the config at once.
        let models = published
            .iter()
            .find(|s| s.name == p.name)
            .map_or_else(|| p.filter_models(&p.models), |s| s.models.clone());
        for m in models {
            out.entry(m).or_insert_with(|| p.name.clone());
        }
    }
    Ok(out)
}

fn model_json(id: &str, owner: &str) -> serde_json::Value {
    json!({"id": id, "object": "model", "created": 0, "owned_by": owner})
}

/// The caller of a request (open when no auth ran).
pub(crate) fn identity(req: &actix_web::HttpRequest) -> crate::keys::Identity {
    use actix_web::HttpMessage;
    req.extensions()
        .get::<crate::keys::Identity>()
        .cloned()
        .unwrap_or(crate::keys::Identity::Open)
}

pub async fn list(req: actix_web::HttpRequest, state: web::Data<AppState>) -> Result<HttpResponse, HttpError> {
    let who = identity(&req);
    let data: Vec<_> = catalog(&state)
        .await?
        .iter()
        .filter(|(m, _)| who.allows_model(m))
        .map(|(m, p)| model_json(m, p))
        .collect();
    Ok(HttpResponse::Ok().json(json!({"object": "list", "data": data})))
}

pub async fn retrieve(
    req: actix_web::HttpRequest,
    path: web::Path<String>,
    state: web::Data<AppState>,
) -> Result<HttpResponse, HttpError> {
    let id = path.into_inner();
    match catalog(&state)
        .await?
        .get(&id)
        .filter(|_| identity(&req).allows_model(&id))
    {
        Some(owner) => Ok(HttpResponse::Ok().json(model_json(&id, owner))),
        None => Err(HttpError(ApiError::ModelNotFound { model: id })),
    }
}
