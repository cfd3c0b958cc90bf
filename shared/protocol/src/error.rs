//! The one error type every service answers with, and its mapping to OpenAI's error JSON
//! (`{"error":{"message","type","param","code"}}`) and HTTP status — in one place.
//!
//! Errors travel between services inside `error` frames (serialized with serde), so the
//! gateway answers exactly what the service that failed decided.

use serde::{Deserialize, Serialize};

/// Every way a request can fail, with the facts the client and failover need.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, thiserror::Error)]
#[serde(tag = "kind", rename_all = "snake_case")]
pub enum ApiError {
    /// The request is malformed; `param` names the offending field when known.
    #[error("{message}")]
    InvalidRequest { message: String, param: Option<String> },
    #[error("The model `{model}` does not exist or you do not have access to it.")]
    ModelNotFound { model: String },
    #[error("{message}")]
    Unauthorized { message: String },
    #[error("Request body is larger than the limit of {limit} bytes.")]
    PayloadTooLarge { limit: usize },
    #[error("Request headers are larger than the limit of {limit} bytes.")]
    HeadersTooLarge { limit: usize },
    /// A stored object (a response, a conversation) that does not exist or has expired.
    #[error("{message}")]
    NotFound { message: String },
    #[error("Unknown route: {method} {path}")]
    RouteNotFound { method: String, path: String },
    #[error("{message}")]
    RateLimited {
        message: String,
        retry_after_s: Option<u64>,
    },
    /// A virtual key's (or its team's) budget is spent for its period.
    #[error("{message}")]
    QuotaExceeded {
        message: String,
        retry_after_s: Option<u64>,
    },
    /// The caller's key may not use this model or tool.
    #[error("{message}")]
    Forbidden { message: String },
    /// An upstream refused the request as the client's fault (4xx); its body is passed on.
    #[error("upstream answered {status}")]
    UpstreamRejected { status: u16, body: String },
    /// Every attempt at an upstream failed (5xx, connect error, timeout, broken stream).
    #[error("{message}")]
    Upstream { message: String },
    #[error("The request did not complete within its deadline.")]
    DeadlineExceeded,
    /// A dependency of the gateway (Redis, the bus) cannot be reached.
    #[error("{message}")]
    Unavailable { message: String },
    /// The cluster has more work queued than it admits (load shedding): retry after a while.
    #[error("{message}")]
    Overloaded { message: String, retry_after_s: u64 },
    #[error("{message}")]
    Internal { message: String },
}

impl ApiError {
    pub fn invalid(message: impl Into<String>, param: Option<&str>) -> ApiError {
        ApiError::InvalidRequest {
            message: message.into(),
            param: param.map(str::to_owned),
        }
    }

    /// The HTTP status this error is answered with.
    pub fn status(&self) -> u16 {
        match self {
            ApiError::InvalidRequest { .. } => 400,
            ApiError::Unauthorized { .. } => 401,
            ApiError::Forbidden { .. } => 403,
            ApiError::ModelNotFound { .. } | ApiError::RouteNotFound { .. } | ApiError::NotFound { .. } => 404,
            ApiError::PayloadTooLarge { .. } => 413,
            ApiError::HeadersTooLarge { .. } => 431,
            ApiError::RateLimited { .. } | ApiError::QuotaExceeded { .. } => 429,
            ApiError::UpstreamRejected { status, .. } => *status,
            ApiError::Internal { .. } => 500,
            ApiError::Upstream { .. } => 502,
            ApiError::Unavailable { .. } | ApiError::Overloaded { .. } => 503,
            ApiError::DeadlineExceeded => 504,
        }
    }

    /// OpenAI's `type` field.
    pub fn error_type(&self) -> &'static str {
        match self {
            ApiError::InvalidRequest { .. }
            | ApiError::ModelNotFound { .. }
            | ApiError::PayloadTooLarge { .. }
            | ApiError::HeadersTooLarge { .. }
            | ApiError::RouteNotFound { .. }
            | ApiError::NotFound { .. }
            | ApiError::UpstreamRejected { .. } => "invalid_request_error",
            ApiError::Unauthorized { .. } => "authentication_error",
            ApiError::Forbidden { .. } => "permission_error",
            ApiError::RateLimited { .. } => "rate_limit_error",
            ApiError::QuotaExceeded { .. } => "insufficient_quota",
            ApiError::Upstream { .. } | ApiError::DeadlineExceeded | ApiError::Internal { .. } => "api_error",
            ApiError::Unavailable { .. } | ApiError::Overloaded { .. } => "service_unavailable",
        }
    }

    /// OpenAI's `code` field.
    pub fn code(&self) -> Option<&'static str> {
        match self {
            ApiError::InvalidRequest { .. }
            | ApiError::UpstreamRejected { .. }
            | ApiError::Internal { .. }
            | ApiError::NotFound { .. } => None,
            ApiError::ModelNotFound { .. } => Some("model_not_found"),
            ApiError::Unauthorized { .. } => Some("invalid_api_key"),
            ApiError::PayloadTooLarge { .. } => Some("request_too_large"),
            ApiError::HeadersTooLarge { .. } => Some("request_header_fields_too_large"),
            ApiError::RouteNotFound { .. } => Some("unknown_url"),
            ApiError::RateLimited { .. } => Some("rate_limit_exceeded"),
            ApiError::QuotaExceeded { .. } => Some("insufficient_quota"),
            ApiError::Forbidden { .. } => Some("permission_denied"),
            ApiError::Upstream { .. } => Some("upstream_error"),
            ApiError::DeadlineExceeded => Some("timeout"),
            ApiError::Unavailable { .. } => Some("service_unavailable"),
            ApiError::Overloaded { .. } => Some("overloaded"),
        }
    }

    /// OpenAI's `param` field.
    pub fn param(&self) -> Option<&str> {
        match self {
            ApiError::InvalidRequest { param, .. } => param.as_deref(),
            ApiError::ModelNotFound { .. } => Some("model"),
            _ => None,
        }
    }

    /// Seconds a client should wait before retrying, when known.
    pub fn retry_after_s(&self) -> Option<u64> {
        match self {
            ApiError::RateLimited { retry_after_s, .. } | ApiError::QuotaExceeded { retry_after_s, .. } => {
                *retry_after_s
            }
            ApiError::Overloaded { retry_after_s, .. } => Some(*retry_after_s),
            _ => None,
        }
    }

    /// The human-readable message: an upstream's own error message when it sent one.
    pub fn message(&self) -> String {
        if let ApiError::UpstreamRejected { status, body } = self {
            let v: serde_json::Value = serde_json::from_str(body).unwrap_or_default();
            return match v.pointer("/error/message").and_then(|m| m.as_str()) {
                Some(m) => m.to_owned(),
                None if body.is_empty() => self.to_string(),
                None => format!("upstream answered {status}: {body}"),
            };
        }
        self.to_string()
    }

    /// The OpenAI error object as JSON bytes. An upstream's own OpenAI-shaped error body
    /// is passed through unchanged.
    pub fn to_json(&self) -> Vec<u8> {
        if let ApiError::UpstreamRejected { body, .. } = self
            && serde_json::from_str::<serde_json::Value>(body)
                .is_ok_and(|v| v.get("error").is_some_and(|e| e.is_object()))
        {
            return body.clone().into_bytes();
        }
        let message = match self {
            ApiError::UpstreamRejected { status, body } if !body.is_empty() => {
                format!("upstream answered {status}: {body}")
            }
            other => other.to_string(),
        };
        serde_json::json!({
            "error": {
                "message": message,
                "type": self.error_type(),
                "param": self.param(),
                "code": self.code(),
            }
        })
        .to_string()
        .into_bytes()
    }
}

/// A JSON body (already parsed) as a typed request: not an object, or a field of the wrong
/// type, is the client's error, naming the field (`messages.0.content`) in `param`.
pub(crate) fn decode_body<T: serde::de::DeserializeOwned>(body: &serde_json::Value) -> Result<T, ApiError> {
    use serde_path_to_error::Segment;
    if !body.is_object() {
        return Err(ApiError::invalid("The request body must be a JSON object.", None));
    }
    serde_path_to_error::deserialize(body).map_err(|e| {
        let parts: Vec<String> = e
            .path()
            .iter()
            .filter_map(|s| match s {
                Segment::Seq { index } => Some(index.to_string()),
                Segment::Map { key } => Some(key.clone()),
                Segment::Enum { .. } | Segment::Unknown => None,
            })
            .collect();
        if parts.is_empty() {
            return ApiError::invalid(format!("Invalid request body: {}", e.inner()), None);
        }
        let param = parts.join(".");
        ApiError::invalid(format!("Invalid `{param}`: {}", e.inner()), Some(&param))
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn json(e: &ApiError) -> serde_json::Value {
        serde_json::from_slice(&e.to_json()).unwrap()
    }

    #[test]
    fn maps_unknown_model_to_404_model_not_found() {
        let e = ApiError::ModelNotFound { model: "gpt-9".into() };
        assert_eq!(e.status(), 404);
        let v = json(&e);
        assert_eq!(v["error"]["code"], "model_not_found");
        assert_eq!(v["error"]["type"], "invalid_request_error");
        assert_eq!(v["error"]["param"], "model");
        assert!(v["error"]["message"].as_str().unwrap().contains("gpt-9"));
    }

    #[test]
    fn every_error_has_the_openai_shape() {
        let all = [
            ApiError::invalid("bad", Some("messages")),
            ApiError::Unauthorized { message: "no".into() },
            ApiError::PayloadTooLarge { limit: 10 },
            ApiError::RouteNotFound {
                method: "GET".into(),
                path: "/x".into(),
            },
            ApiError::RateLimited {
                message: "slow".into(),
                retry_after_s: Some(2),
            },
            ApiError::UpstreamRejected {
                status: 422,
                body: "nope".into(),
            },
            ApiError::Upstream { message: "down".into() },
            ApiError::DeadlineExceeded,
            ApiError::Unavailable {
                message: "redis".into(),
            },
            ApiError::Internal { message: "bug".into() },
        ];
        for e in all {
            let v = json(&e);
            let obj = v["error"].as_object().unwrap();
            for k in ["message", "type", "param", "code"] {
                assert!(obj.contains_key(k), "{e:?} lacks {k}");
            }
            assert!((400..600).contains(&e.status()));
        }
    }

    #[test]
    fn passes_an_upstream_openai_error_through() {
        let body = r#"{"error":{"message":"context too long","type":"invalid_request_error","param":null,"code":"context_length_exceeded"}}"#;
        let e = ApiError::UpstreamRejected {
            status: 400,
            body: body.into(),
        };
        assert_eq!(e.status(), 400);
        assert_eq!(e.to_json(), body.as_bytes());
    }

    #[test]
    fn round_trips_through_serde() {
        let e = ApiError::RateLimited {
            message: "x".into(),
            retry_after_s: Some(3),
        };
        let back: ApiError = serde_json::from_slice(&serde_json::to_vec(&e).unwrap()).unwrap();
        assert_eq!(back, e);
    }
}
