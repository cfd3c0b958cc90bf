//! The `anthropic` adapter: chat completions to Anthropic's Messages API (`POST
//! {base_url}/messages`, `x-api-key`, `anthropic-version`), translated both ways by
//! `llmr_protocol::anthropic` — plain answers and streams (events turned into OpenAI chunks,
//! usage from message_start + message_delta, sent as a usage chunk when the client asked).
//!
//! Faults as the shared `http` mapping says (429 and 529 → rate-limited, with the reset of
//! `retry-after` or `anthropic-ratelimit-*-reset`; 401/403 → the key; 400/413/422 → the
//! client's); malformed answers and `error` stream events → the target. Only chat completions: embeddings and text completions are refused as the client's.

use bytes::Bytes;
use futures_util::StreamExt;
use futures_util::future::LocalBoxFuture;
use llmr_protocol::anthropic::{self, Stream};
use llmr_protocol::{ApiError, Endpoint, NativeApi, Usage, now_ms};
use serde_json::Value;

use super::openai::broken;
use super::{Adapter, AttemptError, AttemptResult, Call, Outcome, http};
use crate::sse::{Event, Splitter};

/// The `anthropic` adapter.
pub struct Anthropic;

impl Adapter for Anthropic {
    fn call<'a>(&'a self, c: Call<'a>) -> LocalBoxFuture<'a, AttemptResult> {
        Box::pin(call(c))
    }
}

fn reply_err(e: llmr_bus::BusError) -> AttemptError {
    AttemptError::local(e.into(), "could not reply")
}

async fn call(c: Call<'_>) -> AttemptResult {
    let env = c.env;
    if env.meta.endpoint != Endpoint::Chat {
        let e = ApiError::invalid(
            format!("`{}` serves chat completions only.", c.attempt.provider),
            Some("model"),
        );
        return Err(AttemptError::client(e, "not a chat completion"));
    }
    let mut body = request_body(&c)?;
    body["stream"] = Value::Bool(env.meta.stream);
    let mut resp = send(&c, body).await?;
    let created = now_ms() / 1000;
    if !env.meta.stream {
        let raw = resp
            .body()
            .limit(c.max_response_bytes)
            .await
            .map_err(|e| AttemptError::retryable(format!("reading the answer failed: {e}")))?;
        let msg: Value =
            serde_json::from_slice(&raw).map_err(|e| AttemptError::retryable(format!("malformed answer: {e}")))?;
        let answer = anthropic::completion(&msg, &env.meta.model, created);
        let usage: Option<Usage> = serde_json::from_value(answer["usage"].clone()).ok();
        let bytes = Bytes::from(answer.to_string());
        let relayed_bytes = bytes.len() as u64;
        c.out.set_usage(usage);
        c.out.complete(200, bytes).await.map_err(reply_err)?;
        return Ok(Outcome {
            usage,
            relayed_bytes,
            response_id: msg["id"].as_str().map(str::to_owned),
            response_model: msg["model"].as_str().map(str::to_owned),
            finish_reasons: answer["choices"][0]["finish_reason"]
                .as_str()
                .map(str::to_owned)
                .into_iter()
                .collect(),
        });
    }
    relay(
        &mut resp,
        Stream::new(&env.meta.model, created),
        env.meta.include_usage,
        c.out,
    )
    .await
}

/// The Messages request: the client's own when it spoke Anthropic's API (thinking,
/// cache_control and the rest intact), else the chat body translated.
fn request_body(c: &Call<'_>) -> Result<Value, AttemptError> {
    let invalid = |e: serde_json::Error| {
        AttemptError::local(ApiError::invalid(format!("invalid body: {e}"), None), "invalid body")
    };
    let meta = &c.env.meta;
    if meta.native_api == NativeApi::Anthropic && !meta.native.is_empty() {
        let mut body: Value = serde_json::from_slice(&meta.native).map_err(invalid)?;
        body["model"] = Value::from(c.attempt.model.as_str());
        return Ok(body);
    }
    let chat: Value = serde_json::from_slice(&c.env.body).map_err(invalid)?;
    anthropic::request(&chat, &c.attempt.model).map_err(|e| AttemptError::client(e, "untranslatable"))
}

/// POSTs the Messages request (`x-api-key`, `anthropic-version`); faults as `http` maps them.
async fn send(
    c: &Call<'_>,
    body: Value,
) -> Result<
    awc::ClientResponse<impl futures_util::Stream<Item = Result<Bytes, awc::error::PayloadError>> + Unpin + use<>>,
    AttemptError,
> {
    let url = format!("{}/messages", c.provider.base());
    let req = http::post(c, &url, |req| {
        let req = req.insert_header(("anthropic-version", anthropic::VERSION));
        match c.key {
            Some(k) => req.insert_header(("x-api-key", k)),
            None => req,
        }
    });
    http::send(req, Bytes::from(body.to_string()), c.key).await
}

/// Turns the Anthropic event stream into OpenAI chunks as it arrives, until message_stop.
async fn relay<S>(
    resp: &mut awc::ClientResponse<S>,
    mut s: Stream,
    include_usage: bool,
    out: &mut llmr_bus::Replier,
) -> AttemptResult
where
    S: futures_util::Stream<Item = Result<Bytes, awc::error::PayloadError>> + Unpin,
{
    let mut splitter = Splitter::default();
    let mut relayed_bytes = 0u64;
    while let Some(chunk) = resp.next().await {
        let chunk = chunk.map_err(|e| broken(out, format!("the upstream stream broke: {e}")))?;
        let mut payloads = Vec::new();
        for ev in splitter.push(&chunk) {
            let Event::Data(d) = ev else { continue };
            let event: Value = serde_json::from_slice(&d)
                .map_err(|_| broken(out, "the upstream sent a malformed stream event".into()))?;
            let chunks = s
                .event(&event)
                .map_err(|m| broken(out, format!("the upstream stream failed: {m}")))?;
            payloads.extend(chunks.into_iter().map(|v| Bytes::from(v.to_string())));
        }
        if s.done && include_usage {
            payloads.push(Bytes::from(s.usage_chunk().to_string()));
        }
        relayed_bytes += payloads.iter().map(|p| p.len() as u64).sum::<u64>();
        if !payloads.is_empty() {
            out.events(&payloads).await.map_err(reply_err)?;
        }
        if s.done {
            let (input, output) = s.usage();
            let usage = Some(Usage {
                prompt_tokens: input,
                completion_tokens: output,
                total_tokens: input + output,
            });
            out.set_usage(usage);
            out.end().await.map_err(reply_err)?;
            return Ok(Outcome {
                usage,
                relayed_bytes,
                response_id: None,
                response_model: None,
                finish_reasons: s.finish.clone().into_iter().collect(),
            });
        }
    }
    Err(broken(out, "the upstream stream ended before message_stop".into()))
}
