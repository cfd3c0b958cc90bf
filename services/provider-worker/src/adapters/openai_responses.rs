//! OpenAI's Responses API as an upstream (`responses = true` on an `openai` provider), as
//! conversions: the responses service's native body (`Meta::native_body`) goes to `POST
//! {base_url}/responses`, streamed, and the upstream's events are relayed as they come — the
//! responses service renumbers them and puts its own ids in. The answer's head says it is
//! native (`Head::native`), so the responses service reads Responses events, not chat
//! chunks, and keeps which provider holds the chain (the end frame's outcome names it).
//!
//! A chain whose previous response lives at another provider cannot continue natively here:
//! [`body`] says so, and the attempt uses chat completions (the chat body carries the whole
//! history). URL, credentials and refusals are the `openai` dialect's.

use bytes::Bytes;
use llmr_protocol::{NativeApi, NativeBody, Usage};
use serde_json::{Value, json};

use super::attempt::Outcome;
use super::dialect::{Ask, Event, Events, Reading, StreamError, UpstreamRequest};

/// The native body of this attempt, when it goes natively: a `responses = true` provider, a
/// Responses body, and a chain (if any) that lives at this provider.
pub fn native_body(ask: &Ask<'_>) -> Option<Bytes> {
    match ask.env.meta.native.clone()? {
        NativeBody::Responses(native) if ask.provider.responses => {
            body(&native, &ask.attempt.provider, &ask.attempt.model)
        }
        _ => None,
    }
}

/// The streamed request of `body` to `url` (the `/responses` endpoint) with `headers`.
pub fn request(body: Bytes, (url, headers): (String, Vec<(&'static str, String)>)) -> UpstreamRequest {
    UpstreamRequest {
        url,
        headers,
        body,
        reading: Reading::Sse,
        native: Some(NativeApi::Responses),
    }
}

/// The body for this attempt's provider and model; None when the chain lives elsewhere.
pub fn body(native: &[u8], provider: &str, model: &str) -> Option<Bytes> {
    let mut v: Value = serde_json::from_slice(native).ok()?;
    let obj = v.as_object_mut()?;
    if let Some(prev) = obj.remove("llmr_previous") {
        if prev["provider"] != provider {
            return None;
        }
        obj.insert("previous_response_id".into(), prev["id"].clone());
    }
    obj.insert("model".into(), json!(model));
    obj.insert("stream".into(), json!(true));
    Some(Bytes::from(v.to_string()))
}

/// The terminal events of a Responses stream.
const TERMINAL: [&str; 3] = ["response.completed", "response.failed", "response.incomplete"];

/// A Responses stream relayed event by event until a terminal one.
#[derive(Default)]
pub struct ResponsesEvents {
    /// The terminal event, once seen.
    end: Option<Value>,
}

impl Events for ResponsesEvents {
    fn event(&mut self, event: Event, out: &mut Vec<Bytes>) -> Result<bool, StreamError> {
        let Event::Data(d) = event else { return Ok(false) };
        let Ok(event) = serde_json::from_slice::<Value>(&d) else {
            return Err(StreamError::MalformedEvent);
        };
        let terminal = event["type"].as_str().is_some_and(|t| TERMINAL.contains(&t));
        if terminal {
            self.end = Some(event);
        }
        out.push(d);
        Ok(terminal)
    }

    fn end(&mut self, _: &mut Vec<Bytes>) -> Outcome {
        outcome(&self.end.take().unwrap_or_default()["response"], 0)
    }

    fn unfinished(&self) -> &'static str {
        "the upstream stream ended before its final event"
    }
}

/// Usage and identity from the final response object.
fn outcome(response: &Value, relayed_bytes: u64) -> Outcome {
    let u = &response["usage"];
    let usage = u.is_object().then(|| {
        let (input, output) = (
            u["input_tokens"].as_u64().unwrap_or(0),
            u["output_tokens"].as_u64().unwrap_or(0),
        );
        Usage {
            prompt_tokens: input,
            completion_tokens: output,
            total_tokens: u["total_tokens"].as_u64().unwrap_or(input + output),
        }
    });
    Outcome {
        usage,
        relayed_bytes,
        response_id: response["id"].as_str().map(str::to_owned),
        response_model: response["model"].as_str().map(str::to_owned),
        finish_reasons: response["status"].as_str().map(str::to_owned).into_iter().collect(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_chain_continues_natively_only_at_its_provider() {
        let native = json!({"input": [], "llmr_previous": {"provider": "a", "id": "resp_up_1"}}).to_string();
        let at_a: Value = serde_json::from_slice(&body(native.as_bytes(), "a", "gpt-x").unwrap()).unwrap();
        assert_eq!(at_a["previous_response_id"], "resp_up_1");
        assert_eq!(
            (at_a["model"].as_str(), at_a["stream"].as_bool()),
            (Some("gpt-x"), Some(true))
        );
        assert!(at_a.get("llmr_previous").is_none());
        assert!(body(native.as_bytes(), "b", "gpt-x").is_none());
        let fresh = json!({"input": "hi"}).to_string();
        assert!(body(fresh.as_bytes(), "b", "m").is_some());
    }
}
