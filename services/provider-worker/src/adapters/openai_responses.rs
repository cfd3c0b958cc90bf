//! OpenAI's Responses API as an upstream (`responses = true` on an `openai` provider): the
//! responses service's native body (`meta.native`) goes to `POST {base_url}/responses`,
//! streamed, and the upstream's events are relayed as they come — the responses service
//! renumbers them and puts its own ids in. The first relayed event is
//! `{"type": "llmr.native", "provider": NAME}`, so the responses service can map its id to the
//! upstream's and continue a chain at the same provider.
//!
//! A chain whose previous response lives at another provider cannot continue natively here:
//! [`body`] says so, and the attempt uses chat completions (the chat body carries the whole
//! history). Faults follow the `openai` adapter's status rules.

use bytes::Bytes;
use futures_util::StreamExt;
use llmr_protocol::Usage;
use serde_json::{Value, json};

use super::openai::{broken, send};
use super::{AttemptError, AttemptResult, Call, Outcome};
use crate::sse::{Event, Splitter};

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

/// Sends the native request and relays its events until a terminal one.
pub async fn call(c: Call<'_>, body: Bytes) -> AttemptResult {
    let mut resp = send(&c, "/responses", body).await?;
    let out = c.out;
    let mut announce = Some(Bytes::from(
        json!({"type": "llmr.native", "provider": c.attempt.provider}).to_string(),
    ));
    let mut splitter = Splitter::default();
    let mut relayed_bytes = 0u64;
    while let Some(chunk) = resp.next().await {
        let chunk = chunk.map_err(|e| broken(out, format!("the upstream stream broke: {e}")))?;
        let mut payloads: Vec<Bytes> = Vec::new();
        let mut end: Option<Value> = None;
        for ev in splitter.push(&chunk) {
            let Event::Data(d) = ev else { continue };
            let Ok(event) = serde_json::from_slice::<Value>(&d) else {
                return Err(broken(out, "the upstream sent a malformed stream event".into()));
            };
            if event["type"].as_str().is_some_and(|t| TERMINAL.contains(&t)) {
                end = Some(event);
            }
            relayed_bytes += d.len() as u64;
            payloads.push(d);
        }
        if !payloads.is_empty() {
            // The first frame says which provider answers natively.
            if let Some(a) = announce.take() {
                payloads.insert(0, a);
            }
            out.events(&payloads)
                .await
                .map_err(|e| AttemptError::local(e.into(), "could not reply"))?;
        }
        if let Some(end) = end {
            let o = outcome(&end["response"], relayed_bytes);
            out.set_usage(o.usage);
            out.end()
                .await
                .map_err(|e| AttemptError::local(e.into(), "could not reply"))?;
            return Ok(o);
        }
    }
    Err(broken(out, "the upstream stream ended before its final event".into()))
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
