//! The HTTP side every upstream adapter shares: a POST with the attempt's timeout, trace
//! context and the provider's extra headers (after the adapter's own auth headers, so they can
//! override them), and the one mapping of a non-2xx answer to its fault:
//! 429 and 529 (overloaded) → rate-limited until the reset the headers name; 401/403 → the
//! key; 400/413/422 → the client's, passed on (Azure's `content_filter` as a clear 400);
//! anything else → the target; this process out of open files or local ports while
//! connecting → ours (503 `overloaded`, no circuit fed). The key is cut out of any error body
//! that quotes it.

use bytes::Bytes;
use llmr_protocol::{ApiError, now_ms};

use super::{AttemptError, Call};
use crate::ratelimit;

/// A POST to `url` for this attempt; `auth` adds the adapter's credentials.
pub fn post(
    c: &Call<'_>,
    url: &str,
    auth: impl FnOnce(awc::ClientRequest) -> awc::ClientRequest,
) -> awc::ClientRequest {
    let mut req = auth(
        c.client
            .post(url)
            .timeout(c.timeout)
            .insert_header(("content-type", "application/json")),
    );
    for (name, value) in c.trace.headers() {
        req = req.insert_header((name, value));
    }
    for (k, v) in &c.provider.extra_headers {
        req = req.insert_header((k.as_str(), v.as_str()));
    }
    req
}

/// Sends `req` with `body`; a non-2xx answer is the fault its status says.
pub async fn send(
    req: awc::ClientRequest,
    body: Bytes,
    key: Option<&str>,
) -> Result<
    awc::ClientResponse<impl futures_util::Stream<Item = Result<Bytes, awc::error::PayloadError>> + Unpin + use<>>,
    AttemptError,
> {
    let failed = |e: &dyn std::fmt::Display| AttemptError::retryable(format!("request failed: {e}"));
    let req = req.freeze().map_err(|e| failed(&e))?;
    let mut resp = match req.send_body(body.clone()).await {
        // The client's connection pool lost its connector under us (nothing was sent):
        // once more, on a new connection, before this counts against the target.
        Err(awc::error::SendRequestError::Connect(awc::error::ConnectError::Disconnected)) => {
            tracing::debug!("the connection pool was disconnected; sending again");
            req.send_body(body).await
        }
        r => r,
    }
    .map_err(|e| match exhausted_here(&e) {
        true => AttemptError::exhausted(format!("request failed: {e}")),
        false => failed(&e),
    })?;
    if !resp.status().is_success() {
        return Err(refused(&mut resp, key).await);
    }
    Ok(resp)
}

/// Whether a send failed because this process ran out of open files, local ports or memory
/// while connecting (EMFILE, ENFILE, EADDRNOTAVAIL, ENOMEM): nothing reached the upstream.
fn exhausted_here(e: &awc::error::SendRequestError) -> bool {
    use awc::error::{ConnectError, SendRequestError};
    match e {
        SendRequestError::Connect(ConnectError::Io(io)) => {
            use std::io::ErrorKind;
            matches!(io.kind(), ErrorKind::AddrNotAvailable | ErrorKind::OutOfMemory)
                // EMFILE and ENFILE (the same numbers on Linux and the BSDs).
                || matches!(io.raw_os_error(), Some(23 | 24))
        }
        _ => false,
    }
}

/// The fault of a non-2xx answer.
async fn refused<S>(resp: &mut awc::ClientResponse<S>, key: Option<&str>) -> AttemptError
where
    S: futures_util::Stream<Item = Result<Bytes, awc::error::PayloadError>> + Unpin,
{
    let status = resp.status().as_u16();
    let header = |h: &str| resp.headers().get(h).and_then(|v| v.to_str().ok()).map(str::to_owned);
    let until = ratelimit::reset_at(header, now_ms());
    let text = resp
        .body()
        .limit(64 << 10)
        .await
        .map(|b| redact(&String::from_utf8_lossy(&b), key))
        .unwrap_or_default();
    if status == 400 && text.contains("\"content_filter\"") {
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
        429 | 529 => AttemptError::rate_limited(until, format!("upstream answered {status}")),
        401 | 403 => AttemptError::key_rejected(format!("upstream refused the key with {status}")),
        400 | 413 | 422 => AttemptError::client(
            ApiError::UpstreamRejected { status, body: text },
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
    use awc::error::{ConnectError, SendRequestError};

    #[test]
    fn running_out_of_files_or_ports_is_ours_not_the_upstreams() {
        let connect = |e: std::io::Error| SendRequestError::Connect(ConnectError::Io(e));
        for ours in [
            std::io::Error::from_raw_os_error(24),
            std::io::Error::from_raw_os_error(23),
            std::io::Error::from(std::io::ErrorKind::AddrNotAvailable),
        ] {
            assert!(exhausted_here(&connect(ours)));
        }
        assert!(!exhausted_here(&connect(std::io::Error::from(
            std::io::ErrorKind::ConnectionRefused
        ))));
        assert!(!exhausted_here(&SendRequestError::Connect(ConnectError::Timeout)));
        let e = AttemptError::exhausted("request failed: Too many open files");
        assert_eq!(
            (e.fault, e.retryable, e.error.status()),
            (super::super::Fault::Local, true, 503)
        );
    }

    #[test]
    fn error_bodies_lose_the_key_they_quote() {
        let body = r#"{"error":{"message":"bad key sk-live-123 sent"}}"#;
        assert_eq!(
            redact(body, Some("sk-live-123")),
            r#"{"error":{"message":"bad key [redacted] sent"}}"#
        );
        assert_eq!(redact(body, None), body);
    }
}
