//! Bearer-token authentication for every route but the probes (`/health`, `/healthz`,
//! `/readyz`) and `/metrics`.

use actix_web::body::MessageBody;
use actix_web::dev::{ServiceRequest, ServiceResponse};
use actix_web::middleware::Next;
use actix_web::web;
use llmr_protocol::ApiError;
use subtle::ConstantTimeEq;

use crate::{AppState, HttpError};

pub async fn require_token(
    req: ServiceRequest,
    next: Next<impl MessageBody>,
) -> Result<ServiceResponse<impl MessageBody>, actix_web::Error> {
    let state = req.app_data::<web::Data<AppState>>().cloned();
    if let Some(expected) = state.as_ref().and_then(|s| s.settings.server.token())
        && !crate::observe::OPEN_PATHS.contains(&req.path())
    {
        let given = req
            .headers()
            .get("authorization")
            .and_then(|v| v.to_str().ok())
            .and_then(|v| v.strip_prefix("Bearer ").or_else(|| v.strip_prefix("bearer ")));
        let ok = given.is_some_and(|g| bool::from(g.trim().as_bytes().ct_eq(expected.as_bytes())));
        if !ok {
            let message = if given.is_some() {
                "Incorrect API key provided."
            } else {
                "You didn't provide an API key. Provide it as a Bearer token in the Authorization header."
            };
            return Err(HttpError(ApiError::Unauthorized {
                message: message.into(),
            })
            .into());
        }
    }
    next.call(req).await
}
