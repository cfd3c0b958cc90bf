//! The one place errors become HTTP responses: status, the error JSON of the API the route
//! speaks (OpenAI's, or Anthropic's and Ollama's on their front doors), `Retry-After`.

use actix_web::http::StatusCode;
use actix_web::{HttpResponse, ResponseError};
use llmr_protocol::ApiError;

/// An [`ApiError`] as an actix-web error.
#[derive(Debug, thiserror::Error)]
#[error(transparent)]
pub struct HttpError(#[from] pub ApiError);

impl From<llmr_bus::BusError> for HttpError {
    fn from(e: llmr_bus::BusError) -> HttpError {
        HttpError(e.into())
    }
}

impl From<llmr_store::StoreError> for HttpError {
    fn from(e: llmr_store::StoreError) -> HttpError {
        HttpError(e.into())
    }
}

impl ResponseError for HttpError {
    fn status_code(&self) -> StatusCode {
        status_of(&self.0)
    }

    fn error_response(&self) -> HttpResponse {
        render(Wire::OpenAi, &self.0)
    }
}

/// Which API's error shape a route answers in.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Wire {
    OpenAi,
    /// `{"type": "error", "error": {"type", "message"}}` (`/v1/messages…`).
    Anthropic,
    /// `{"error": "message"}` (`/api/…`).
    Ollama,
}

impl Wire {
    /// The API a path belongs to.
    pub fn of_path(path: &str) -> Wire {
        if path.starts_with("/v1/messages") {
            Wire::Anthropic
        } else if path.starts_with("/api/") {
            Wire::Ollama
        } else {
            Wire::OpenAi
        }
    }
}

/// An error of a front door that speaks another API than OpenAI's.
#[derive(Debug, thiserror::Error)]
#[error("{error}")]
pub struct WireError {
    pub wire: Wire,
    pub error: ApiError,
}

impl WireError {
    /// A mapper for `map_err`.
    pub fn to(wire: Wire) -> impl Fn(HttpError) -> WireError {
        move |e| WireError { wire, error: e.0 }
    }
}

impl ResponseError for WireError {
    fn status_code(&self) -> StatusCode {
        status_of(&self.error)
    }

    fn error_response(&self) -> HttpResponse {
        render(self.wire, &self.error)
    }
}

fn status_of(e: &ApiError) -> StatusCode {
    StatusCode::from_u16(e.status()).unwrap_or(StatusCode::INTERNAL_SERVER_ERROR)
}

/// The one rendering of an error: status, headers and the body in `wire`'s shape.
pub fn render(wire: Wire, e: &ApiError) -> HttpResponse {
    let mut r = HttpResponse::build(status_of(e));
    r.content_type("application/json");
    if let Some(s) = e.retry_after_s() {
        r.insert_header(("retry-after", s.to_string()));
    }
    if matches!(e, ApiError::Unauthorized { .. }) {
        r.insert_header(("www-authenticate", "Bearer"));
    }
    match wire {
        Wire::OpenAi => r.body(e.to_json()),
        Wire::Anthropic => r.body(llmr_protocol::anthropic::front::error_body(e).to_json()),
        Wire::Ollama => {
            r.body(serde_json::to_string(&llmr_protocol::ollama::ErrorBody { error: e.message() }).unwrap_or_default())
        }
    }
}

/// Malformed query strings and path segments (`?limit=abc`), refused in the route's error
/// shape instead of actix-web's plain-text default.
pub fn extractor_configs() -> (actix_web::web::QueryConfig, actix_web::web::PathConfig) {
    fn refuse(what: &str, e: impl std::fmt::Display, req: &actix_web::HttpRequest) -> actix_web::Error {
        let error = ApiError::invalid(format!("Invalid {what}: {e}"), None);
        WireError {
            wire: Wire::of_path(req.path()),
            error,
        }
        .into()
    }
    (
        actix_web::web::QueryConfig::default().error_handler(|e, req| refuse("query string", e, req)),
        actix_web::web::PathConfig::default().error_handler(|e, req| refuse("path", e, req)),
    )
}
