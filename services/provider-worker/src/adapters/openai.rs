//! The `openai` adapter: any OpenAI-compatible `/chat/completions`.
//!
//! The client's body is sent through as bytes (only `model` is rewritten, and only when the
//! upstream knows the model by another name). Stream events are passed through as the
//! upstream sent them. Usage is read when the upstream reports it.

use std::collections::BTreeMap;

use bytes::Bytes;
use futures_util::StreamExt;
use llmr_protocol::{ApiError, Usage};
use serde::Deserialize;
use serde_json::value::RawValue;

use super::{AttemptError, AttemptResult, Outcome};
use crate::replier::Replier;
use crate::sse::{Event, Splitter};

/// One attempt's inputs.
pub struct Call<'a> {
    pub url: String,
    pub body: &'a Bytes,
    pub requested_model: &'a str,
    pub upstream_model: &'a str,
    pub key: Option<&'a str>,
    pub traceparent: &'a str,
    pub stream: bool,
    pub timeout: std::time::Duration,
    pub max_response_bytes: usize,
}

#[derive(Deserialize)]
struct UsageOnly {
    #[serde(default)]
    usage: Option<Usage>,
}

/// Statuses that say the request itself is wrong: passed to the client, never retried.
fn client_fault(status: u16) -> bool {
    matches!(status, 400 | 413 | 422)
}

pub async fn call(client: &awc::Client, c: &Call<'_>, out: &mut Replier) -> AttemptResult {
    let body = if c.requested_model == c.upstream_model {
        c.body.clone()
    } else {
        rewrite_model(c.body, c.upstream_model)?
    };
    let mut req = client
        .post(&c.url)
        .timeout(c.timeout)
        .insert_header(("content-type", "application/json"));
    if let Some(k) = c.key {
        req = req.bearer_auth(k);
    }
    if !c.traceparent.is_empty() {
        req = req.insert_header(("traceparent", c.traceparent));
    }
    let mut resp = req
        .send_body(body)
        .await
        .map_err(|e| AttemptError::retryable(format!("request failed: {e}")))?;
    let status = resp.status().as_u16();
    if !resp.status().is_success() {
        let text = resp
            .body()
            .limit(64 << 10)
            .await
            .map(|b| String::from_utf8_lossy(&b).into_owned())
            .unwrap_or_default();
        if client_fault(status) {
            return Err(AttemptError::fatal(
                ApiError::UpstreamRejected { status, body: text },
                format!("upstream rejected the request with {status}"),
            ));
        }
        return Err(AttemptError::retryable(format!("upstream answered {status}")));
    }
    if !c.stream {
        let body = resp
            .body()
            .limit(c.max_response_bytes)
            .await
            .map_err(|e| AttemptError::retryable(format!("reading the answer failed: {e}")))?;
        let parsed: UsageOnly =
            serde_json::from_slice(&body).map_err(|e| AttemptError::retryable(format!("malformed answer: {e}")))?;
        out.complete(200, body)
            .await
            .map_err(|e| AttemptError::fatal(e.into(), "could not reply"))?;
        return Ok(Outcome { usage: parsed.usage });
    }
    relay_stream(&mut resp, out).await
}

/// Passes SSE events through until `[DONE]`.
async fn relay_stream<S>(resp: &mut awc::ClientResponse<S>, out: &mut Replier) -> AttemptResult
where
    S: futures_util::Stream<Item = Result<Bytes, awc::error::PayloadError>> + Unpin,
{
    let mut splitter = Splitter::default();
    let mut usage = None;
    while let Some(chunk) = resp.next().await {
        let chunk = chunk.map_err(|e| broken(out, format!("the upstream stream broke: {e}")))?;
        let mut payloads = Vec::new();
        let mut done = false;
        for ev in splitter.push(&chunk) {
            match ev {
                Event::Done => done = true,
                Event::Data(d) => {
                    if d.first() != Some(&b'{') {
                        return Err(broken(out, "the upstream sent a malformed stream event".into()));
                    }
                    if memchr::memmem::find(&d, b"\"usage\":{").is_some()
                        && let Ok(u) = serde_json::from_slice::<UsageOnly>(&d)
                    {
                        usage = u.usage.or(usage);
                    }
                    payloads.push(d);
                }
            }
        }
        if !payloads.is_empty() {
            out.events(payloads)
                .await
                .map_err(|e| AttemptError::fatal(e.into(), "could not reply"))?;
        }
        if done {
            out.end()
                .await
                .map_err(|e| AttemptError::fatal(e.into(), "could not reply"))?;
            return Ok(Outcome { usage });
        }
    }
    Err(broken(out, "the upstream stream ended without [DONE]".into()))
}

/// A broken stream: retryable while nothing reached the client.
fn broken(out: &Replier, reason: String) -> AttemptError {
    if out.started() {
        AttemptError::fatal(
            ApiError::Upstream {
                message: format!("The upstream stream failed after it had started: {reason}"),
            },
            reason,
        )
    } else {
        AttemptError::retryable(reason)
    }
}

/// The body with `model` replaced; the other fields are copied as raw JSON text.
fn rewrite_model(body: &Bytes, model: &str) -> Result<Bytes, AttemptError> {
    let mut map: BTreeMap<&str, &RawValue> = serde_json::from_slice(body)
        .map_err(|e| AttemptError::fatal(ApiError::invalid(format!("invalid body: {e}"), None), "invalid body"))?;
    let name = serde_json::to_string(model).unwrap_or_default();
    let raw = RawValue::from_string(name)
        .map_err(|e| AttemptError::fatal(ApiError::Internal { message: e.to_string() }, "model name"))?;
    map.insert("model", &raw);
    serde_json::to_vec(&map)
        .map(Bytes::from)
        .map_err(|e| AttemptError::fatal(ApiError::Internal { message: e.to_string() }, "serialize"))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn rewrites_only_the_model() {
        let body =
            Bytes::from_static(br#"{"model":"alias","messages":[{"role":"user","content":"hi"}],"temperature":0.5}"#);
        let out = rewrite_model(&body, "real-model").unwrap();
        let v: serde_json::Value = serde_json::from_slice(&out).unwrap();
        assert_eq!(v["model"], "real-model");
        assert_eq!(v["messages"][0]["content"], "hi");
        assert_eq!(v["temperature"], 0.5);
    }

    #[test]
    fn classifies_client_faults() {
        assert!(client_fault(400) && client_fault(422));
        assert!(!client_fault(429) && !client_fault(500) && !client_fault(401));
    }
}
