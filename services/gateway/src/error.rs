//! The one place errors become HTTP responses: status, OpenAI error JSON, `Retry-After`.

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
        StatusCode::from_u16(self.0.status()).unwrap_or(StatusCode::INTERNAL_SERVER_ERROR)
    }

    fn error_response(&self) -> HttpResponse {
        let mut r = HttpResponse::build(self.status_code());
        r.content_type("application/json");
        if let Some(s) = self.0.retry_after_s() {
            r.insert_header(("retry-after", s.to_string()));
        }
        if matches!(self.0, ApiError::Unauthorized { .. }) {
            r.insert_header(("www-authenticate", "Bearer"));
        }
        r.body(self.0.to_json())
    }
}
