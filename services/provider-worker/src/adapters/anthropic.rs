//! The `anthropic` dialect: chat completions to Anthropic's Messages API (`POST
//! {base_url}/messages`, `x-api-key`, `anthropic-version`), translated both ways by
//! `llmr_protocol::anthropic` — plain answers and streams (events turned into OpenAI chunks,
//! usage from message_start + message_delta, sent as a usage chunk when the client asked).
//! A client that spoke Anthropic's API has its own body sent (thinking, cache_control and
//! the rest intact).
//!
//! Refusals follow the shared mapping (429 and 529 → rate-limited, with the reset of
//! `retry-after` or `anthropic-ratelimit-*-reset`; 401/403 → the key; 400/413/422 → the
//! client's); malformed answers and `error` stream events → the target. Only chat
//! completions: embeddings and text completions are refused as the client's.

use bytes::Bytes;
use llmr_protocol::anthropic::{self, Stream, StreamEvent};
use llmr_protocol::openai::ChatChunk;
use llmr_protocol::{ApiError, Endpoint, NativeBody, Usage};
use serde_json::Value;

use super::attempt::{AttemptError, Outcome};
use super::dialect::{
    Answer, Ask, Dialect, Event, Events, Reading, StreamError, UpstreamRequest, invalid_body, malformed, outcome_of,
};

/// The `anthropic` dialect.
pub struct Anthropic;

impl Dialect for Anthropic {
    fn request(&self, ask: &Ask<'_>) -> Result<UpstreamRequest, AttemptError> {
        let meta = &ask.env.meta;
        if meta.endpoint != Endpoint::Chat {
            let e = ApiError::invalid(
                format!("`{}` serves chat completions only.", ask.attempt.provider),
                Some("model"),
            );
            return Err(AttemptError::client(e, "not a chat completion"));
        }
        let mut body = messages_body(ask)?;
        body["stream"] = Value::Bool(meta.stream);
        let mut headers = vec![("anthropic-version", anthropic::VERSION.to_owned())];
        headers.extend(ask.key.map(|k| ("x-api-key", k.to_owned())));
        Ok(UpstreamRequest {
            url: format!("{}/messages", ask.provider.base()),
            headers,
            body: Bytes::from(body.to_string()),
            reading: if meta.stream { Reading::Sse } else { Reading::Whole },
            native: None,
        })
    }

    fn answer(&self, ask: &Ask<'_>, body: Bytes) -> Result<Answer, AttemptError> {
        let msg: Value = serde_json::from_slice(&body).map_err(malformed)?;
        let answer = anthropic::completion(&msg, &ask.env.meta.model, ask.created);
        Ok(Answer {
            body: Bytes::from(answer.to_string()),
            outcome: outcome_of(
                &answer,
                msg["id"].as_str().map(str::to_owned),
                msg["model"].as_str().map(str::to_owned),
            ),
        })
    }

    fn events(&self, ask: &Ask<'_>, _: &UpstreamRequest) -> Box<dyn Events> {
        Box::new(MessagesEvents {
            stream: Stream::new(&ask.env.meta.model, ask.created),
            include_usage: ask.env.meta.include_usage,
        })
    }
}

/// The Messages request: the client's own when it spoke Anthropic's API, else the chat body
/// translated.
fn messages_body(ask: &Ask<'_>) -> Result<Value, AttemptError> {
    if let Some(NativeBody::Anthropic(native)) = &ask.env.meta.native {
        let mut body: Value = serde_json::from_slice(native).map_err(invalid_body)?;
        body["model"] = Value::from(ask.attempt.model.as_str());
        return Ok(body);
    }
    let chat: Value = serde_json::from_slice(&ask.env.body).map_err(invalid_body)?;
    anthropic::request(&chat, &ask.attempt.model).map_err(|e| AttemptError::client(e, "untranslatable"))
}

/// An Anthropic event stream turned into OpenAI chunks, until message_stop.
pub struct MessagesEvents {
    stream: Stream,
    include_usage: bool,
}

impl Events for MessagesEvents {
    fn event(&mut self, event: Event, out: &mut Vec<Bytes>) -> Result<bool, StreamError> {
        let Event::Data(d) = event else { return Ok(false) };
        // Read once, straight into the typed event: a known type whose fields do not parse is
        // skipped, as unknown ones are; only text that is not JSON breaks the stream.
        let event = match serde_json::from_slice::<StreamEvent>(&d) {
            Ok(e) => e,
            Err(e) if e.classify() == serde_json::error::Category::Data => return Ok(self.stream.done),
            Err(_) => return Err(StreamError::MalformedEvent),
        };
        let chunks = self
            .stream
            .on_event(&event)
            .map_err(|e| StreamError::Failed(e.to_string()))?;
        out.extend(chunks.iter().map(ChatChunk::to_bytes));
        Ok(self.stream.done)
    }

    fn end(&mut self, out: &mut Vec<Bytes>) -> Outcome {
        if self.include_usage {
            out.push(Bytes::from(self.stream.usage_chunk().to_string()));
        }
        let (input, output) = self.stream.usage();
        Outcome {
            usage: Some(Usage {
                prompt_tokens: input,
                completion_tokens: output,
                total_tokens: input + output,
            }),
            relayed_bytes: 0,
            response_id: None,
            response_model: None,
            finish_reasons: self.stream.finish.clone().into_iter().collect(),
        }
    }

    fn unfinished(&self) -> &'static str {
        "the upstream stream ended before message_stop"
    }
}
