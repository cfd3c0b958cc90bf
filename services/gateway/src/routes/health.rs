//! `GET /health` (no auth): the services seen alive and each provider's state and load.
//! 200 when the bus and store answer, 503 otherwise.

use actix_web::{HttpResponse, web};
use serde_json::json;

use crate::AppState;

pub async fn health(state: web::Data<AppState>) -> HttpResponse {
    let backend = if state.bus.is_memory() { "memory" } else { "redis" };
    let checked = async {
        state.bus.ping().await.map_err(|e| e.to_string())?;
        let alive = state.store.alive().await.map_err(|e| e.to_string())?;
        let providers = state.store.providers().await.map_err(|e| e.to_string())?;
        let targets: Vec<Vec<String>> = providers
            .iter()
            .map(|p| p.models.iter().map(|m| format!("{}/{m}", p.name)).collect())
            .collect();
        let flat: Vec<String> = targets.iter().flatten().cloned().collect();
        let loads = state.store.loads(&flat).await.map_err(|e| e.to_string())?;
        let mut i = 0;
        let providers: Vec<_> = providers
            .iter()
            .zip(&targets)
            .map(|(p, t)| {
                let load: u64 = loads[i..i + t.len()].iter().sum();
                i += t.len();
                json!({"name": p.name, "state": p.state, "error": p.error, "models": p.models, "load": load})
            })
            .collect();
        Ok::<_, String>((alive, providers))
    };
    match tokio::time::timeout(std::time::Duration::from_millis(900), checked).await {
        Ok(Ok((alive, providers))) => HttpResponse::Ok().json(json!({
            "status": "ok",
            "backend": backend,
            "instance": state.instance,
            "in_flight": state.hub.in_flight(),
            "services": alive,
            "providers": providers,
        })),
        Ok(Err(e)) => {
            HttpResponse::ServiceUnavailable().json(json!({"status": "unavailable", "backend": backend, "error": e}))
        }
        Err(_) => HttpResponse::ServiceUnavailable()
            .json(json!({"status": "unavailable", "backend": backend, "error": "the store did not answer in time"})),
    }
}
