//! The one mapping of an upstream's refusal (a non-2xx answer) to its fault, shared by every
//! dialect: 429 and 529 (overloaded) → rate-limited until the reset the headers name;
//! 401/403 → the key; 400/413/422 → the client's, passed on (Azure's `content_filter` as a
//! clear 400); anything else → the target. The key is cut out of any error body that quotes
//! it before the body goes anywhere ([`redact`]).

use llmr_protocol::ApiError;

use super::attempt::AttemptError;

/// A non-2xx answer, as read by the driver.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Refusal {
    pub status: u16,
    /// When the rate limit resets (ms), as its headers say.
    pub until_ms: Option<u64>,
    /// Its body (the first 64 KiB), the key cut out.
    pub body: String,
}

/// The fault of a refusal.
pub fn of(r: &Refusal) -> AttemptError {
    let status = r.status;
    if status == 400 && r.body.contains("\"content_filter\"") {
        // Azure's content filter: the client's prompt, not the target; a clear 400.
        return AttemptError::client(
            ApiError::invalid(
                "The upstream's content filter blocked this request (Azure OpenAI `content_filter`).",
                Some("messages"),
            ),
            "blocked by the upstream's content filter",
        );
    }
    match status {
        429 | 529 => AttemptError::rate_limited(r.until_ms, format!("upstream answered {status}")),
        401 | 403 => AttemptError::key_rejected(format!("upstream refused the key with {status}")),
        400 | 413 | 422 => AttemptError::client(
            ApiError::UpstreamRejected {
                status,
                body: r.body.clone(),
            },
            format!("upstream rejected the request with {status}"),
        ),
        s => AttemptError::retryable(format!("upstream answered {s}")),
    }
}

/// An upstream's error body with the key it was sent cut out: some upstreams quote the
/// credentials they refused, and the body goes on to the client.
pub fn redact(body: &str, key: Option<&str>) -> String {
    match key {
        Some(k) if !k.is_empty() => body.replace(k, "[redacted]"),
        _ => body.to_owned(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::adapters::attempt::Fault;

    #[test]
    fn error_bodies_lose_the_key_they_quote() {
        let body = r#"{"error":{"message":"bad key sk-live-123 sent"}}"#;
        assert_eq!(
            redact(body, Some("sk-live-123")),
            r#"{"error":{"message":"bad key [redacted] sent"}}"#
        );
        assert_eq!(redact(body, None), body);
    }

    #[test]
    fn statuses_map_to_their_faults() {
        let r = |status, body: &str| Refusal {
            status,
            until_ms: None,
            body: body.into(),
        };
        assert_eq!(of(&r(529, "")).fault, Fault::RateLimited { until_ms: None });
        assert_eq!(of(&r(403, "")).fault, Fault::Key);
        assert_eq!(of(&r(422, "")).fault, Fault::Client);
        assert_eq!(of(&r(404, "")).fault, Fault::Target);
        let filtered = of(&r(400, r#"{"error":{"code":"content_filter"}}"#));
        assert_eq!((filtered.fault, filtered.error.status()), (Fault::Client, 400));
    }
}
