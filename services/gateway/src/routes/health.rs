//! `GET /health` (no auth): the cluster's health report ([`crate::health::Report`]). 200 when
//! the bus and store answer, 503 otherwise (every feature then unavailable).

use actix_web::{HttpResponse, web};
use serde_json::json;

use crate::AppState;
use crate::health::{all_unavailable, backend, report};

pub async fn health(state: web::Data<AppState>) -> HttpResponse {
    let unavailable = |error: &str| {
        HttpResponse::ServiceUnavailable().json(json!({"status": "unavailable", "backend": backend(&state),
            "error": error, "features": all_unavailable(error)}))
    };
    match tokio::time::timeout(std::time::Duration::from_millis(900), report(&state)).await {
        Ok(Ok(r)) => HttpResponse::Ok().json(r),
        Ok(Err(e)) => unavailable(&e.to_string()),
        Err(_) => unavailable("the store did not answer in time"),
    }
}
