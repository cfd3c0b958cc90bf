//! The `ollama` adapter: chat completions to Ollama's native `/api/chat` (NDJSON streaming)
//! and embeddings to `/api/embed`, translated by `llmr_protocol::ollama`; the client's
//! `options` and `keep_alive` pass through. Text completions are refused as the client's.
//!
//! Faults as the shared `http` mapping says; a 404 (the model is not pulled on that host),
//! 5xx, connect errors, timeouts and malformed lines → the target.

use bytes::{Bytes, BytesMut};
use futures_util::StreamExt;
use futures_util::future::LocalBoxFuture;
use llmr_protocol::{ApiError, Endpoint, Usage, now_ms, ollama};
use serde_json::{Value, json};

use super::echo_endpoints::to_base64;
use super::openai::broken;
use super::{Adapter, AttemptError, AttemptResult, Call, Outcome, http};

/// The `ollama` adapter.
pub struct Ollama;

impl Adapter for Ollama {
    fn call<'a>(&'a self, c: Call<'a>) -> LocalBoxFuture<'a, AttemptResult> {
        Box::pin(call(c))
    }
}

fn reply_err(e: llmr_bus::BusError) -> AttemptError {
    AttemptError::local(e.into(), "could not reply")
}

fn usage_of(v: &Value) -> Option<Usage> {
    serde_json::from_value(v.clone()).ok()
}

async fn call(c: Call<'_>) -> AttemptResult {
    let env = c.env;
    let req: Value = serde_json::from_slice(&env.body)
        .map_err(|e| AttemptError::local(ApiError::invalid(format!("invalid body: {e}"), None), "invalid body"))?;
    let (path, body) = match env.meta.endpoint {
        Endpoint::Chat => (
            "/api/chat",
            ollama::chat_request(&req, &c.attempt.model, env.meta.stream),
        ),
        Endpoint::Embeddings => ("/api/embed", ollama::embed_request(&req, &c.attempt.model)),
        Endpoint::Completions => {
            let e = ApiError::invalid(
                format!("`{}` serves chat completions and embeddings only.", c.attempt.provider),
                Some("model"),
            );
            return Err(AttemptError::client(e, "not served"));
        }
    };
    let mut resp = send(&c, path, body).await?;
    let (id, created) = (format!("chatcmpl-{}", env.id.simple()), now_ms() / 1000);
    if env.meta.endpoint == Endpoint::Chat && env.meta.stream {
        return relay(&mut resp, &id, created, c).await;
    }
    let raw = resp
        .body()
        .limit(c.max_response_bytes)
        .await
        .map_err(|e| AttemptError::retryable(format!("reading the answer failed: {e}")))?;
    let v: Value =
        serde_json::from_slice(&raw).map_err(|e| AttemptError::retryable(format!("malformed answer: {e}")))?;
    let mut answer = if env.meta.endpoint == Endpoint::Embeddings {
        ollama::embeddings(&v, &env.meta.model)
    } else {
        ollama::completion(&v, &id, &env.meta.model, created)
    };
    if req["encoding_format"] == "base64" {
        for d in answer["data"].as_array_mut().into_iter().flatten() {
            let floats: Vec<f32> = d["embedding"]
                .as_array()
                .into_iter()
                .flatten()
                .filter_map(|x| x.as_f64())
                .map(|x| x as f32)
                .collect();
            d["embedding"] = json!(to_base64(&floats));
        }
    }
    let bytes = Bytes::from(answer.to_string());
    let relayed_bytes = bytes.len() as u64;
    let usage = usage_of(&answer["usage"]);
    c.out.set_usage(usage);
    c.out.complete(200, bytes).await.map_err(reply_err)?;
    Ok(Outcome {
        usage,
        relayed_bytes,
        response_id: Some(id),
        response_model: v["model"].as_str().map(str::to_owned),
        finish_reasons: answer["choices"][0]["finish_reason"]
            .as_str()
            .map(str::to_owned)
            .into_iter()
            .collect(),
    })
}

/// POSTs to the host (a bearer token when the provider has keys); faults as `http` maps them.
async fn send(
    c: &Call<'_>,
    path: &str,
    body: Value,
) -> Result<
    awc::ClientResponse<impl futures_util::Stream<Item = Result<Bytes, awc::error::PayloadError>> + Unpin + use<>>,
    AttemptError,
> {
    let url = format!("{}{path}", c.provider.base());
    let req = http::post(c, &url, |req| match c.key {
        Some(k) => req.bearer_auth(k),
        None => req,
    });
    http::send(req, Bytes::from(body.to_string()), c.key).await
}

/// Turns NDJSON lines into OpenAI chunks as they arrive, until the `done` line.
async fn relay<S>(resp: &mut awc::ClientResponse<S>, id: &str, created: u64, c: Call<'_>) -> AttemptResult
where
    S: futures_util::Stream<Item = Result<Bytes, awc::error::PayloadError>> + Unpin,
{
    let (model, include_usage) = (c.env.meta.model.as_str(), c.env.meta.include_usage);
    let out = c.out;
    let mut buf = BytesMut::new();
    let mut relayed_bytes = 0u64;
    let mut first = true;
    while let Some(chunk) = resp.next().await {
        buf.extend_from_slice(&chunk.map_err(|e| broken(out, format!("the upstream stream broke: {e}")))?);
        let mut payloads = Vec::new();
        let mut end: Option<Value> = None;
        while let Some(nl) = memchr::memchr(b'\n', &buf) {
            let line = buf.split_to(nl + 1);
            if line.iter().all(u8::is_ascii_whitespace) {
                continue;
            }
            let v: Value =
                serde_json::from_slice(&line).map_err(|_| broken(out, "the upstream sent a malformed line".into()))?;
            if let Some(e) = v["error"].as_str() {
                return Err(broken(out, format!("the upstream stream failed: {e}")));
            }
            if first {
                first = false;
                payloads.push(Bytes::from(
                    json!({"id": id, "object": "chat.completion.chunk", "created": created, "model": model,
                           "choices": [{"index": 0, "delta": {"role": "assistant", "content": ""}, "finish_reason": null}]})
                    .to_string(),
                ));
            }
            payloads.extend(
                ollama::stream_line(&v, id, model, created, include_usage)
                    .into_iter()
                    .map(|c| Bytes::from(c.to_string())),
            );
            if v["done"] == json!(true) {
                end = Some(v);
            }
        }
        relayed_bytes += payloads.iter().map(|p| p.len() as u64).sum::<u64>();
        if !payloads.is_empty() {
            out.events(&payloads).await.map_err(reply_err)?;
        }
        if let Some(v) = end {
            let (p, n) = (
                v["prompt_eval_count"].as_u64().unwrap_or(0),
                v["eval_count"].as_u64().unwrap_or(0),
            );
            let usage = Some(Usage {
                prompt_tokens: p,
                completion_tokens: n,
                total_tokens: p + n,
            });
            out.set_usage(usage);
            out.end().await.map_err(reply_err)?;
            return Ok(Outcome {
                usage,
                relayed_bytes,
                response_id: Some(id.to_owned()),
                response_model: v["model"].as_str().map(str::to_owned),
                finish_reasons: v["done_reason"].as_str().map(str::to_owned).into_iter().collect(),
            });
        }
    }
    Err(broken(out, "the upstream stream ended before its done line".into()))
}
