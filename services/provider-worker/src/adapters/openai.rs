//! The `openai` adapter: any OpenAI-compatible `/chat/completions`, `/embeddings` and
//! `/completions` (the request's endpoint).
//!
//! The client's body is sent through as bytes; it is rewritten only when the upstream knows
//! the model by another name, or to ask a stream for its usage (`stream_options.include_usage`)
//! when the client did not — that extra usage chunk is then not relayed. Stream events are
//! passed through as the upstream sent them.
//!
//! Statuses are mapped by the shared `http` module; malformed answers → the target.

use std::collections::BTreeMap;
use std::sync::LazyLock;

use bytes::Bytes;
use futures_util::future::LocalBoxFuture;
use futures_util::{FutureExt, StreamExt};
use llmr_bus::Replier;
use llmr_config::ProviderType;
use llmr_protocol::{ApiError, Usage};
use serde::Deserialize;
use serde_json::value::RawValue;

use super::{Adapter, AttemptError, AttemptResult, Call, Outcome, http};

/// The searches run on every stream event, built once (building one is dearer than a search).
static FINISH_REASON: LazyLock<memchr::memmem::Finder<'static>> =
    LazyLock::new(|| memchr::memmem::Finder::new(b"\"finish_reason\":\""));
static USAGE: LazyLock<memchr::memmem::Finder<'static>> = LazyLock::new(|| memchr::memmem::Finder::new(b"\"usage\":{"));
use crate::sse::{Event, Splitter};

/// The `openai` adapter.
pub struct OpenAi;

impl Adapter for OpenAi {
    fn call<'a>(&'a self, c: Call<'a>) -> LocalBoxFuture<'a, AttemptResult> {
        Box::pin(call(c))
    }
}

#[derive(Deserialize)]
struct UsageOnly {
    #[serde(default)]
    id: Option<String>,
    #[serde(default)]
    model: Option<String>,
    #[serde(default)]
    usage: Option<Usage>,
    #[serde(default)]
    choices: Option<Vec<ChoiceEnd>>,
}

/// What a choice says of its end (the rest of it is not parsed).
#[derive(Deserialize)]
struct ChoiceEnd {
    #[serde(default)]
    finish_reason: Option<String>,
}

/// POSTs `body` to the endpoint `path`: `{base_url}{path}`, or for Azure
/// `{base_url}/openai/deployments/{deployment}{path}?api-version=…` with the key in `api-key`;
/// Gemini gets it in `x-goog-api-key` too; the others as a bearer token.
pub(super) async fn send(
    c: &Call<'_>,
    path: &str,
    body: Bytes,
) -> Result<
    awc::ClientResponse<impl futures_util::Stream<Item = Result<Bytes, awc::error::PayloadError>> + Unpin + use<>>,
    AttemptError,
> {
    let p = c.provider;
    let url = match p.kind {
        ProviderType::Azure => format!(
            "{}/openai/deployments/{}{path}?api-version={}",
            p.base(),
            p.deployment(&c.attempt.model),
            p.api_version
        ),
        _ => format!("{}{path}", p.base()),
    };
    let req = http::post(c, &url, |req| match (c.key, p.kind) {
        (None, _) => req,
        (Some(k), ProviderType::Azure) => req.insert_header(("api-key", k)),
        (Some(k), ProviderType::Gemini) => req.bearer_auth(k).insert_header(("x-goog-api-key", k)),
        (Some(k), _) => req.bearer_auth(k),
    });
    http::send(req, body, c.key).await
}

async fn call(c: Call<'_>) -> AttemptResult {
    if c.provider.responses
        && c.env.meta.native_api == llmr_protocol::NativeApi::Responses
        && !c.env.meta.native.is_empty()
        && let Some(body) = super::openai_responses::body(&c.env.meta.native, &c.attempt.provider, &c.attempt.model)
    {
        return super::openai_responses::call(c, body).await;
    }
    let (env, upstream_model) = (c.env, c.attempt.model.as_str());
    let (stream, client_wants_usage) = (env.meta.stream, env.meta.include_usage);
    let force_usage = stream && !client_wants_usage;
    let renamed = env.meta.model != upstream_model;
    let body = if !renamed && !force_usage {
        env.body.clone()
    } else {
        rewrite(&env.body, renamed.then_some(upstream_model), force_usage)?
    };
    let mut resp = send(&c, env.meta.endpoint.path(), body).await?;
    let out = c.out;
    if !stream {
        let body = resp
            .body()
            .limit(c.max_response_bytes)
            .await
            .map_err(|e| AttemptError::retryable(format!("reading the answer failed: {e}")))?;
        let parsed: UsageOnly =
            serde_json::from_slice(&body).map_err(|e| AttemptError::retryable(format!("malformed answer: {e}")))?;
        let relayed_bytes = body.len() as u64;
        out.set_usage(parsed.usage);
        out.complete(200, body)
            .await
            .map_err(|e| AttemptError::local(e.into(), "could not reply"))?;
        return Ok(Outcome {
            usage: parsed.usage,
            relayed_bytes,
            response_id: parsed.id,
            response_model: parsed.model,
            finish_reasons: parsed
                .choices
                .unwrap_or_default()
                .into_iter()
                .filter_map(|c| c.finish_reason)
                .collect(),
        });
    }
    relay_stream(&mut resp, out, client_wants_usage).await
}

/// Passes SSE events through until `[DONE]`; keeps the usage chunk to itself unless the
/// client asked for it.
async fn relay_stream<S>(
    resp: &mut awc::ClientResponse<S>,
    out: &mut Replier,
    client_wants_usage: bool,
) -> AttemptResult
where
    S: futures_util::Stream<Item = Result<Bytes, awc::error::PayloadError>> + Unpin,
{
    let mut splitter = Splitter::default();
    let mut usage = None;
    let (mut response_id, mut response_model) = (None, None);
    let mut finish_reasons = Vec::new();
    let mut relayed_bytes = 0u64;
    while let Some(chunk) = resp.next().await {
        // Take every chunk that has already arrived too: one frame (one round trip) for a
        // burst of events, instead of one per HTTP chunk.
        let mut chunks = vec![chunk];
        while let Some(Some(more)) = resp.next().now_or_never() {
            chunks.push(more);
        }
        let mut events = Vec::new();
        for chunk in chunks {
            let chunk = chunk.map_err(|e| broken(out, format!("the upstream stream broke: {e}")))?;
            events.extend(splitter.push(&chunk));
        }
        let mut payloads = Vec::new();
        let mut done = false;
        for ev in events {
            match ev {
                Event::Done => done = true,
                Event::Data(d) => {
                    // Checked whole (a cheap scan, nothing kept): no malformed event reaches the client.
                    if d.first() != Some(&b'{') || serde_json::from_slice::<serde::de::IgnoredAny>(&d).is_err() {
                        return Err(broken(out, "the upstream sent a malformed stream event".into()));
                    }
                    if FINISH_REASON.find(&d).is_some()
                        && let Ok(u) = serde_json::from_slice::<UsageOnly>(&d)
                    {
                        finish_reasons.extend(
                            u.choices
                                .unwrap_or_default()
                                .into_iter()
                                .filter_map(|c| c.finish_reason),
                        );
                    }
                    if USAGE.find(&d).is_some()
                        && let Ok(u) = serde_json::from_slice::<UsageOnly>(&d)
                    {
                        usage = u.usage.or(usage);
                        response_id = u.id.or(response_id);
                        response_model = u.model.or(response_model);
                        if !client_wants_usage && u.choices.is_some_and(|c| c.is_empty()) {
                            continue; // the usage chunk we asked for, not the client
                        }
                    }
                    relayed_bytes += d.len() as u64;
                    payloads.push(d);
                }
            }
        }
        if !payloads.is_empty() {
            out.events(&payloads)
                .await
                .map_err(|e| AttemptError::local(e.into(), "could not reply"))?;
        }
        if done {
            out.set_usage(usage);
            out.end()
                .await
                .map_err(|e| AttemptError::local(e.into(), "could not reply"))?;
            return Ok(Outcome {
                usage,
                relayed_bytes,
                response_id,
                response_model,
                finish_reasons,
            });
        }
    }
    Err(broken(out, "the upstream stream ended without [DONE]".into()))
}

/// A broken stream: retryable while nothing reached the client.
pub(super) fn broken(out: &Replier, reason: String) -> AttemptError {
    if out.started() {
        AttemptError::broken_after_start(reason)
    } else {
        AttemptError::retryable(reason)
    }
}

/// The body with `model` replaced and/or `stream_options.include_usage` set; the other
/// fields are copied as raw JSON text.
fn rewrite(body: &Bytes, model: Option<&str>, include_usage: bool) -> Result<Bytes, AttemptError> {
    let internal =
        |e: serde_json::Error| AttemptError::local(ApiError::Internal { message: e.to_string() }, "rewriting the body");
    let mut map: BTreeMap<&str, Box<RawValue>> = serde_json::from_slice(body)
        .map_err(|e| AttemptError::local(ApiError::invalid(format!("invalid body: {e}"), None), "invalid body"))?;
    if let Some(m) = model {
        map.insert(
            "model",
            RawValue::from_string(serde_json::to_string(m).map_err(internal)?).map_err(internal)?,
        );
    }
    if include_usage {
        let mut opts: serde_json::Map<String, serde_json::Value> = map
            .get("stream_options")
            .and_then(|v| serde_json::from_str(v.get()).ok())
            .unwrap_or_default();
        opts.insert("include_usage".into(), serde_json::Value::Bool(true));
        map.insert(
            "stream_options",
            RawValue::from_string(serde_json::to_string(&opts).map_err(internal)?).map_err(internal)?,
        );
    }
    serde_json::to_vec(&map).map(Bytes::from).map_err(internal)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn rewrites_only_what_it_must() {
        let body = Bytes::from_static(
            br#"{"model":"alias","messages":[{"role":"user","content":"hi"}],"temperature":0.5,"stream":true}"#,
        );
        let out = rewrite(&body, Some("real-model"), false).unwrap();
        let v: serde_json::Value = serde_json::from_slice(&out).unwrap();
        assert_eq!(v["model"], "real-model");
        assert_eq!(v["messages"][0]["content"], "hi");
        assert_eq!(v["temperature"], 0.5);
        assert!(v.get("stream_options").is_none());
        let out = rewrite(&body, None, true).unwrap();
        let v: serde_json::Value = serde_json::from_slice(&out).unwrap();
        assert_eq!(v["model"], "alias");
        assert_eq!(v["stream_options"]["include_usage"], true);
    }
}
