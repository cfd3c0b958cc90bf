//! Bearer-token authentication for every route but the probes (`/health`, `/healthz`,
//! `/readyz`), `/metrics` and `/openapi.json`. The token is read from `Authorization: Bearer …`
//! or, as Anthropic's clients send it, `x-api-key`, and compared as SHA-256 digests in
//! constant time (no timing hint of the token or its length); a refusal is in the route's
//! API's shape. Headers larger than `server.max_header_bytes` together are refused first (431).

use actix_web::body::MessageBody;
use actix_web::dev::{ServiceRequest, ServiceResponse};
use actix_web::middleware::Next;
use actix_web::web;
use llmr_protocol::ApiError;
use sha2::{Digest, Sha256};
use subtle::ConstantTimeEq;

use crate::AppState;
use crate::error::{Wire, WireError};

pub async fn require_token(
    req: ServiceRequest,
    next: Next<impl MessageBody>,
) -> Result<ServiceResponse<impl MessageBody>, actix_web::Error> {
    let state = req.app_data::<web::Data<AppState>>().cloned();
    // Oversized headers are refused before anything reads them.
    if let Some(limit) = state.as_ref().map(|s| s.settings.server.max_header_bytes) {
        let size: usize = req.headers().iter().map(|(k, v)| k.as_str().len() + v.len() + 4).sum();
        if size > limit {
            let error = ApiError::HeadersTooLarge { limit };
            return Err(WireError {
                wire: Wire::of_path(req.path()),
                error,
            }
            .into());
        }
    }
    if let Some(expected) = state.as_ref().and_then(|s| s.settings.server.token())
        && !crate::observe::OPEN_PATHS.contains(&req.path())
    {
        let headers = req.headers();
        let given = headers
            .get("authorization")
            .and_then(|v| v.to_str().ok())
            .and_then(|v| v.strip_prefix("Bearer ").or_else(|| v.strip_prefix("bearer ")))
            .or_else(|| headers.get("x-api-key").and_then(|v| v.to_str().ok()));
        // Digests of equal length are compared, so neither the token nor its length shows
        // in the time a refusal takes.
        let digest = |t: &[u8]| Sha256::digest(t);
        let ok = given.is_some_and(|g| bool::from(digest(g.trim().as_bytes()).ct_eq(&digest(expected.as_bytes()))));
        if !ok {
            let message = if given.is_some() {
                "Incorrect API key provided."
            } else {
                "You didn't provide an API key. Provide it as a Bearer token in the Authorization header."
            };
            let error = ApiError::Unauthorized {
                message: message.into(),
            };
            return Err(WireError {
                wire: Wire::of_path(req.path()),
                error,
            }
            .into());
        }
    }
    next.call(req).await
}
