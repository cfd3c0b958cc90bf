//! The `openai` dialect: any OpenAI-compatible `/chat/completions`, `/embeddings` and
//! `/completions` (the request's endpoint), also for `gemini` and `azure` providers.
//!
//! The client's body is sent through as bytes; it is rewritten only when the upstream knows
//! the model by another name, or to ask a stream for its usage (`stream_options.include_usage`)
//! when the client did not — that extra usage chunk is then not relayed. Answers and stream
//! events are passed through as the upstream sent them (events are checked to be JSON, and
//! only those that carry a finish reason or usage are parsed, for those fields alone).
//!
//! A `responses = true` provider given a native Responses body speaks OpenAI's Responses API
//! instead ([`super::openai_responses`]). Refusals follow the shared mapping.

use std::collections::BTreeMap;
use std::sync::LazyLock;

use bytes::Bytes;
use llmr_config::ProviderType;
use llmr_protocol::{ApiError, Usage};
use serde::Deserialize;
use serde_json::value::RawValue;

use super::attempt::{AttemptError, Outcome};
use super::dialect::{Answer, Ask, Dialect, Event, Events, Reading, StreamError, UpstreamRequest, malformed};
use super::openai_responses;

/// The searches run on every stream event, built once (building one is dearer than a search).
static FINISH_REASON: LazyLock<memchr::memmem::Finder<'static>> =
    LazyLock::new(|| memchr::memmem::Finder::new(b"\"finish_reason\":\""));
static USAGE: LazyLock<memchr::memmem::Finder<'static>> = LazyLock::new(|| memchr::memmem::Finder::new(b"\"usage\":{"));

/// The `openai` dialect.
pub struct OpenAi;

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

impl UsageOnly {
    fn finish_reasons(choices: Option<Vec<ChoiceEnd>>) -> impl Iterator<Item = String> {
        choices.unwrap_or_default().into_iter().filter_map(|c| c.finish_reason)
    }
}

impl Dialect for OpenAi {
    fn request(&self, ask: &Ask<'_>) -> Result<UpstreamRequest, AttemptError> {
        if let Some(body) = openai_responses::native_body(ask) {
            return Ok(openai_responses::request(body, post(ask, "/responses")));
        }
        let (meta, upstream_model) = (&ask.env.meta, ask.attempt.model.as_str());
        let force_usage = meta.stream && !meta.include_usage;
        let renamed = meta.model != upstream_model;
        let body = if !renamed && !force_usage {
            ask.env.body.clone()
        } else {
            rewrite(&ask.env.body, renamed.then_some(upstream_model), force_usage)?
        };
        let (url, headers) = post(ask, meta.endpoint.path());
        Ok(UpstreamRequest {
            url,
            headers,
            body,
            reading: if meta.stream { Reading::Sse } else { Reading::Whole },
            native: None,
        })
    }

    fn answer(&self, _: &Ask<'_>, body: Bytes) -> Result<Answer, AttemptError> {
        let parsed: UsageOnly = serde_json::from_slice(&body).map_err(malformed)?;
        Ok(Answer {
            body,
            outcome: Outcome {
                usage: parsed.usage,
                relayed_bytes: 0,
                response_id: parsed.id,
                response_model: parsed.model,
                finish_reasons: UsageOnly::finish_reasons(parsed.choices).collect(),
            },
        })
    }

    fn events(&self, ask: &Ask<'_>, req: &UpstreamRequest) -> Box<dyn Events> {
        if req.native.is_some() {
            return Box::new(openai_responses::ResponsesEvents::default());
        }
        Box::new(ChatEvents {
            client_wants_usage: ask.env.meta.include_usage,
            ..ChatEvents::default()
        })
    }
}

/// The URL and credentials of a POST to the endpoint `path`: `{base_url}{path}`, or for
/// Azure `{base_url}/openai/deployments/{deployment}{path}?api-version=…` with the key in
/// `api-key`; Gemini gets it in `x-goog-api-key` too; the others as a bearer token.
fn post(ask: &Ask<'_>, path: &str) -> (String, Vec<(&'static str, String)>) {
    let p = ask.provider;
    let url = match p.kind {
        ProviderType::Azure => format!(
            "{}/openai/deployments/{}{path}?api-version={}",
            p.base(),
            p.deployment(&ask.attempt.model),
            p.api_version
        ),
        _ => format!("{}{path}", p.base()),
    };
    let headers = match (ask.key, p.kind) {
        (None, _) => Vec::new(),
        (Some(k), ProviderType::Azure) => vec![("api-key", k.to_owned())],
        (Some(k), ProviderType::Gemini) => vec![
            ("authorization", format!("Bearer {k}")),
            ("x-goog-api-key", k.to_owned()),
        ],
        (Some(k), _) => vec![("authorization", format!("Bearer {k}"))],
    };
    (url, headers)
}

/// A chat stream passed through until `[DONE]`, keeping the usage chunk to itself unless
/// the client asked for it.
#[derive(Default)]
pub struct ChatEvents {
    client_wants_usage: bool,
    usage: Option<Usage>,
    response_id: Option<String>,
    response_model: Option<String>,
    finish_reasons: Vec<String>,
}

impl Events for ChatEvents {
    fn event(&mut self, event: Event, out: &mut Vec<Bytes>) -> Result<bool, StreamError> {
        let d = match event {
            Event::Done => return Ok(true),
            Event::Data(d) => d,
        };
        // Checked whole (a cheap scan, nothing kept): no malformed event reaches the client.
        if d.first() != Some(&b'{') || serde_json::from_slice::<serde::de::IgnoredAny>(&d).is_err() {
            return Err(StreamError::MalformedEvent);
        }
        if FINISH_REASON.find(&d).is_some()
            && let Ok(u) = serde_json::from_slice::<UsageOnly>(&d)
        {
            self.finish_reasons.extend(UsageOnly::finish_reasons(u.choices));
        }
        if USAGE.find(&d).is_some()
            && let Ok(u) = serde_json::from_slice::<UsageOnly>(&d)
        {
            self.usage = u.usage.or(self.usage);
            self.response_id = u.id.or(self.response_id.take());
            self.response_model = u.model.or(self.response_model.take());
            if !self.client_wants_usage && u.choices.is_some_and(|c| c.is_empty()) {
                return Ok(false); // the usage chunk we asked for, not the client
            }
        }
        out.push(d);
        Ok(false)
    }

    fn end(&mut self, _: &mut Vec<Bytes>) -> Outcome {
        Outcome {
            usage: self.usage,
            relayed_bytes: 0,
            response_id: self.response_id.take(),
            response_model: self.response_model.take(),
            finish_reasons: std::mem::take(&mut self.finish_reasons),
        }
    }

    fn unfinished(&self) -> &'static str {
        "the upstream stream ended without [DONE]"
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
