//! The one driver of every HTTP provider type: it runs an attempt over a dialect's
//! conversions (`adapters::dialect`). It sends the converted request (the attempt's timeout,
//! trace context, the provider's extra headers, one resend when the connection pool lost its
//! connector), maps a refusal through the dialect, reads a whole answer within
//! `worker.max_response_bytes`, or splits a stream (SSE or NDJSON) and relays it in batches —
//! every read that has already arrived goes in one frame — and tells a broken stream
//! (retryable while nothing reached the client) from a finished one. What the answer
//! becomes on its way out (rewrites, the cache's copy) is the `outbox`'s.

use bytes::Bytes;
use futures_util::future::LocalBoxFuture;
use futures_util::{FutureExt, StreamExt};
use llmr_protocol::now_ms;

use crate::adapters::attempt::{Adapter, AttemptError, AttemptResult, Call};
use crate::adapters::dialect::{Answer, Ask, Dialect, Event, Events, Reading, UpstreamRequest};
use crate::adapters::faults::{self, Refusal};
use crate::outbox::Outbox;
use crate::ratelimit;
use crate::sse::{Lines, Splitter};

/// The adapter of a provider type spoken over HTTP: its dialect, driven by [`relay`].
pub struct Upstream(pub &'static dyn Dialect);

impl Adapter for Upstream {
    fn call<'a>(&'a self, c: Call<'a>) -> LocalBoxFuture<'a, AttemptResult> {
        Box::pin(relay(self.0, c))
    }
}

/// Runs one attempt in `dialect`: convert, send, read and convert the answer, relay it.
pub async fn relay(dialect: &dyn Dialect, c: Call<'_>) -> AttemptResult {
    let ask = Ask::of(&c, now_ms() / 1000);
    let req = dialect.request(&ask)?;
    c.out.set_native(req.native);
    let mut resp = send(&c, &req, dialect).await?;
    let split = match req.reading {
        Reading::Whole => return whole(&mut resp, dialect, &ask, c.out, c.max_response_bytes).await,
        Reading::Sse => Split::Sse(Splitter::default()),
        Reading::Ndjson => Split::Lines(Lines::default()),
    };
    stream(&mut resp, split, dialect.events(&ask, &req), c.out).await
}

/// An upstream's body, as awc reads it.
trait Body: futures_util::Stream<Item = Result<Bytes, awc::error::PayloadError>> + Unpin {}
impl<S: futures_util::Stream<Item = Result<Bytes, awc::error::PayloadError>> + Unpin> Body for S {}

/// POSTs the request; a non-2xx answer is the fault the dialect says.
async fn send(
    c: &Call<'_>,
    r: &UpstreamRequest,
    dialect: &dyn Dialect,
) -> Result<awc::ClientResponse<impl Body + use<>>, AttemptError> {
    let mut req = c
        .client
        .post(&r.url)
        .timeout(c.timeout)
        .insert_header(("content-type", "application/json"));
    for (name, value) in &r.headers {
        req = req.insert_header((*name, value.as_str()));
    }
    for (name, value) in c.trace.headers() {
        req = req.insert_header((name, value));
    }
    for (k, v) in &c.provider.extra_headers {
        req = req.insert_header((k.as_str(), v.as_str()));
    }
    let failed = |e: &dyn std::fmt::Display| AttemptError::retryable(format!("request failed: {e}"));
    let req = req.freeze().map_err(|e| failed(&e))?;
    let mut resp = match req.send_body(r.body.clone()).await {
        // The client's connection pool lost its connector under us (nothing was sent):
        // once more, on a new connection, before this counts against the target.
        Err(awc::error::SendRequestError::Connect(awc::error::ConnectError::Disconnected)) => {
            tracing::debug!("the connection pool was disconnected; sending again");
            req.send_body(r.body.clone()).await
        }
        other => other,
    }
    .map_err(|e| match exhausted_here(&e) {
        true => AttemptError::exhausted(format!("request failed: {e}")),
        false => failed(&e),
    })?;
    if !resp.status().is_success() {
        return Err(dialect.fault(&refusal(&mut resp, c.key).await));
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

/// A non-2xx answer as the dialects see it: status, rate-limit reset, body (key cut out).
async fn refusal(resp: &mut awc::ClientResponse<impl Body>, key: Option<&str>) -> Refusal {
    let header = |h: &str| resp.headers().get(h).and_then(|v| v.to_str().ok()).map(str::to_owned);
    let until_ms = ratelimit::reset_at(header, now_ms());
    let status = resp.status().as_u16();
    let body = resp
        .body()
        .limit(64 << 10)
        .await
        .map(|b| faults::redact(&String::from_utf8_lossy(&b), key))
        .unwrap_or_default();
    Refusal { status, until_ms, body }
}

fn reply_err(e: llmr_bus::BusError) -> AttemptError {
    AttemptError::local(e.into(), "could not reply")
}

/// A broken stream: retryable while nothing reached the client.
fn broken(out: &Outbox, reason: String) -> AttemptError {
    if out.started() {
        AttemptError::broken_after_start(reason)
    } else {
        AttemptError::retryable(reason)
    }
}

/// Reads a whole answer (within `limit` bytes), converts it and sends it.
async fn whole(
    resp: &mut awc::ClientResponse<impl Body>,
    dialect: &dyn Dialect,
    ask: &Ask<'_>,
    out: &mut Outbox,
    limit: usize,
) -> AttemptResult {
    let body = resp
        .body()
        .limit(limit)
        .await
        .map_err(|e| AttemptError::retryable(format!("reading the answer failed: {e}")))?;
    let Answer { body, mut outcome } = dialect.answer(ask, body)?;
    outcome.relayed_bytes = body.len() as u64;
    out.set_usage(outcome.usage);
    out.complete(200, body).await.map_err(reply_err)?;
    Ok(outcome)
}

/// How a stream's bytes become events.
enum Split {
    Sse(Splitter),
    Lines(Lines),
}

impl Split {
    fn push(&mut self, chunk: &[u8]) -> Vec<Event> {
        match self {
            Split::Sse(s) => s.push(chunk),
            Split::Lines(l) => l.push(chunk),
        }
    }
}

/// The next reads of a stream: the one awaited and every one that has already arrived
/// (one frame, one round trip, for a burst of events).
async fn reads(resp: &mut awc::ClientResponse<impl Body>) -> Option<Vec<Result<Bytes, awc::error::PayloadError>>> {
    let mut got = vec![resp.next().await?];
    while let Some(Some(more)) = resp.next().now_or_never() {
        got.push(more);
    }
    Some(got)
}

/// Relays a stream through its conversion until its last event; ends the answer.
async fn stream(
    resp: &mut awc::ClientResponse<impl Body>,
    mut split: Split,
    mut events: Box<dyn Events>,
    out: &mut Outbox,
) -> AttemptResult {
    let mut relayed_bytes = 0u64;
    while let Some(batch) = reads(resp).await {
        let mut payloads = Vec::new();
        let mut ended = false;
        for chunk in batch {
            let chunk = chunk.map_err(|e| broken(out, format!("the upstream stream broke: {e}")))?;
            for event in split.push(&chunk) {
                ended |= events
                    .event(event, &mut payloads)
                    .map_err(|e| broken(out, e.to_string()))?;
            }
        }
        let outcome = ended.then(|| events.end(&mut payloads));
        relayed_bytes += payloads.iter().map(|p| p.len() as u64).sum::<u64>();
        if !payloads.is_empty() {
            out.events(&payloads).await.map_err(reply_err)?;
        }
        if let Some(mut outcome) = outcome {
            outcome.relayed_bytes = relayed_bytes;
            out.set_usage(outcome.usage);
            out.end().await.map_err(reply_err)?;
            return Ok(outcome);
        }
    }
    Err(broken(out, events.unfinished().into()))
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
            (crate::adapters::attempt::Fault::Local, true, 503)
        );
    }
}
