//! Authentication for every route but the probes (`/health`, `/healthz`, `/readyz`),
//! `/metrics` and `/openapi.json`. The secret is read from `Authorization: Bearer …` or, as
//! Anthropic's clients send it, `x-api-key`: a virtual key (found by its SHA-256; revoked and
//! expired keys refused), else `server.token` (compared as SHA-256 digests in constant time),
//! else, with neither configured, the request is open (but an `sk-llmr-` key that matches no
//! key is refused). The caller's [`Identity`] goes into the request's extensions. `/admin/…`
//! takes `server.admin_token` or a console session (see [`crate::console`]); the console's
//! own `/ui/` routes are open. A refusal is in the route's API's shape. Headers larger
//! than `server.max_header_bytes` together are refused first (431).

use actix_web::body::MessageBody;
use actix_web::dev::{ServiceRequest, ServiceResponse};
use actix_web::middleware::Next;
use actix_web::web;
use llmr_protocol::ApiError;
use sha2::{Digest, Sha256};
use subtle::ConstantTimeEq;

use actix_web::HttpMessage;

use crate::AppState;
use crate::error::{Wire, WireError};
use crate::keys::Identity;

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
    let Some(state) = state else {
        return next.call(req).await;
    };
    if crate::observe::OPEN_PATHS.contains(&req.path()) {
        return next.call(req).await;
    }
    let headers = req.headers();
    let given = headers
        .get("authorization")
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.strip_prefix("Bearer ").or_else(|| v.strip_prefix("bearer ")))
        .or_else(|| headers.get("x-api-key").and_then(|v| v.to_str().ok()))
        .map(str::trim);
    let refuse = |message: &str| -> actix_web::Error {
        WireError {
            wire: Wire::of_path(req.path()),
            error: ApiError::Unauthorized {
                message: message.into(),
            },
        }
        .into()
    };
    if req.path().starts_with("/admin/") {
        // The admin API takes the admin token, or a console session, and nothing else.
        return match state.settings.server.admin_token() {
            None => Err(refuse("The admin API is off: set server.admin_token to use it.")),
            Some(expected) if given.is_some_and(|g| same(g, expected)) => next.call(req).await,
            Some(_) => match crate::console::session_of(req.request(), &state) {
                Some(s) if is_read(req.method()) || crate::console::may_change(req.request(), &state, &s) => {
                    next.call(req).await
                }
                Some(_) => Err(WireError {
                    wire: Wire::OpenAi,
                    error: crate::console::csrf_refusal(),
                }
                .into()),
                None => Err(refuse("The admin API needs server.admin_token as a Bearer token.")),
            },
        };
    }
    if state.settings.ui.enabled && (req.path() == "/ui" || req.path().starts_with("/ui/")) {
        // The console's page and sign-in are open; what it shows comes from /admin/.
        return next.call(req).await;
    }
    let identity = match identify(&state, given) {
        Ok(i) => i,
        // A virtual key made a moment ago on another gateway: read the store's version once
        // (one GET; the keys only when it moved) before refusing it.
        Err(_) if given.is_some_and(|g| g.starts_with(crate::keys::SECRET_PREFIX)) => {
            if let Err(e) = state.keyring.reload(&state.store, false).await {
                tracing::debug!(error = %e, "could not reload virtual keys");
            }
            identify(&state, given).map_err(|why| refuse(&why.to_string()))?
        }
        Err(why) => return Err(refuse(&why.to_string())),
    };
    req.extensions_mut().insert(identity);
    next.call(req).await
}

/// A method that changes nothing.
fn is_read(m: &actix_web::http::Method) -> bool {
    matches!(*m, actix_web::http::Method::GET | actix_web::http::Method::HEAD)
}

/// Digests of equal length are compared, so neither the token nor its length shows in the
/// time a refusal takes.
fn same(given: &str, expected: &str) -> bool {
    let digest = |t: &[u8]| Sha256::digest(t);
    bool::from(digest(given.as_bytes()).ct_eq(&digest(expected.as_bytes())))
}

/// Who presented `given`: a live virtual key, `server.token`, or nobody when no auth is
/// configured; else why the request is refused.
fn identify(state: &AppState, given: Option<&str>) -> Result<Identity, Refused> {
    if let Some(g) = given {
        if let Some(c) = state.keyring.find(&crate::keys::hash_secret(g)) {
            if c.key.revoked_ms.is_some() {
                return Err(Refused::Revoked);
            }
            if !c.key.live(llmr_protocol::now_ms()) {
                return Err(Refused::Expired);
            }
            return Ok(Identity::Key(c));
        }
        if let Some(expected) = state.settings.server.token()
            && same(g, expected)
        {
            return Ok(Identity::Default);
        }
    }
    match (state.settings.server.token(), given) {
        (None, Some(g)) if g.starts_with(crate::keys::SECRET_PREFIX) => Err(Refused::Incorrect),
        (None, _) => Ok(Identity::Open),
        (Some(_), Some(_)) => Err(Refused::Incorrect),
        (Some(_), None) => Err(Refused::Missing),
    }
}

/// Why a caller's credential is refused (401), in OpenAI's words.
#[derive(Debug, Clone, Copy, thiserror::Error)]
enum Refused {
    #[error("This API key was revoked.")]
    Revoked,
    #[error("This API key has expired.")]
    Expired,
    #[error("Incorrect API key provided.")]
    Incorrect,
    #[error("You didn't provide an API key. Provide it as a Bearer token in the Authorization header.")]
    Missing,
}
