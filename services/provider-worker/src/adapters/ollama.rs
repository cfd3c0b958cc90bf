//! The `ollama` dialect: chat completions to Ollama's native `/api/chat` (NDJSON streaming)
//! and embeddings to `/api/embed`, translated by `llmr_protocol::ollama`; the client's
//! `options` and `keep_alive` pass through. Text completions are refused as the client's.
//!
//! Refusals follow the shared mapping; a 404 (the model is not pulled on that host), 5xx,
//! connect errors, timeouts and malformed lines → the target.

use bytes::Bytes;
use llmr_protocol::openai::ChatChunk;
use llmr_protocol::{ApiError, Endpoint, Usage, ollama};
use serde_json::{Value, json};

use super::attempt::{AttemptError, Outcome};
use super::dialect::{
    Answer, Ask, Dialect, Event, Events, Reading, StreamError, UpstreamRequest, bearer, invalid_body, malformed,
    outcome_of,
};
use super::echo_endpoints::to_base64;

/// The `ollama` dialect.
pub struct Ollama;

impl Dialect for Ollama {
    fn request(&self, ask: &Ask<'_>) -> Result<UpstreamRequest, AttemptError> {
        let meta = &ask.env.meta;
        let req: Value = serde_json::from_slice(&ask.env.body).map_err(invalid_body)?;
        let model = ask.attempt.model.as_str();
        let (path, body, reading) = match meta.endpoint {
            Endpoint::Chat if meta.stream => ("/api/chat", ollama::chat_request(&req, model, true), Reading::Ndjson),
            Endpoint::Chat => ("/api/chat", ollama::chat_request(&req, model, false), Reading::Whole),
            Endpoint::Embeddings => ("/api/embed", ollama::embed_request(&req, model), Reading::Whole),
            Endpoint::Completions => {
                let e = ApiError::invalid(
                    format!(
                        "`{}` serves chat completions and embeddings only.",
                        ask.attempt.provider
                    ),
                    Some("model"),
                );
                return Err(AttemptError::client(e, "not served"));
            }
        };
        Ok(UpstreamRequest {
            url: format!("{}{path}", ask.provider.base()),
            headers: bearer(ask.key),
            body: Bytes::from(body.to_string()),
            reading,
            native: None,
        })
    }

    fn answer(&self, ask: &Ask<'_>, body: Bytes) -> Result<Answer, AttemptError> {
        let meta = &ask.env.meta;
        let v: Value = serde_json::from_slice(&body).map_err(malformed)?;
        let id = ask.completion_id();
        let answer = if meta.endpoint == Endpoint::Embeddings {
            let mut answer = ollama::embeddings(&v, &meta.model);
            let req: Value = serde_json::from_slice(&ask.env.body).unwrap_or_default();
            if req["encoding_format"] == "base64" {
                encode_base64(&mut answer);
            }
            answer
        } else {
            ollama::completion(&v, &id, &meta.model, ask.created)
        };
        Ok(Answer {
            body: Bytes::from(answer.to_string()),
            outcome: outcome_of(&answer, Some(id), v["model"].as_str().map(str::to_owned)),
        })
    }

    fn events(&self, ask: &Ask<'_>, _: &UpstreamRequest) -> Box<dyn Events> {
        Box::new(ChatLines {
            id: ask.completion_id(),
            model: ask.env.meta.model.clone(),
            created: ask.created,
            include_usage: ask.env.meta.include_usage,
            first: true,
            last: None,
        })
    }
}

/// Embeddings as OpenAI's `encoding_format: "base64"` sends them.
fn encode_base64(answer: &mut Value) {
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

/// Ollama's NDJSON chat lines turned into OpenAI chunks, until the `done` line.
pub struct ChatLines {
    id: String,
    model: String,
    created: u64,
    include_usage: bool,
    /// No line seen yet (the first one is preceded by the role chunk).
    first: bool,
    /// The `done` line, once seen.
    last: Option<Value>,
}

impl Events for ChatLines {
    fn event(&mut self, event: Event, out: &mut Vec<Bytes>) -> Result<bool, StreamError> {
        let Event::Data(line) = event else { return Ok(false) };
        let v: Value = serde_json::from_slice(&line).map_err(|_| StreamError::MalformedLine)?;
        if let Some(e) = v["error"].as_str() {
            return Err(StreamError::Failed(e.to_owned()));
        }
        let (id, model, created) = (self.id.as_str(), self.model.as_str(), self.created);
        if self.first {
            self.first = false;
            out.push(ChatChunk::text(id, model, created, true, "").to_bytes());
        }
        out.extend(
            ollama::stream_line(&v, id, model, created, self.include_usage)
                .into_iter()
                .map(|c| Bytes::from(c.to_string())),
        );
        let done = v["done"] == json!(true);
        if done {
            self.last = Some(v);
        }
        Ok(done)
    }

    fn end(&mut self, _: &mut Vec<Bytes>) -> Outcome {
        let v = self.last.take().unwrap_or_default();
        let (p, n) = (
            v["prompt_eval_count"].as_u64().unwrap_or(0),
            v["eval_count"].as_u64().unwrap_or(0),
        );
        Outcome {
            usage: Some(Usage {
                prompt_tokens: p,
                completion_tokens: n,
                total_tokens: p + n,
            }),
            relayed_bytes: 0,
            response_id: Some(self.id.clone()),
            response_model: v["model"].as_str().map(str::to_owned),
            finish_reasons: v["done_reason"].as_str().map(str::to_owned).into_iter().collect(),
        }
    }

    fn unfinished(&self) -> &'static str {
        "the upstream stream ended before its done line"
    }
}
