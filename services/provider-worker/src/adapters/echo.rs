//! The built-in `echo` provider: answers with the last user message, streamed word by word
//! when asked, with usage counted in words. It needs no upstream, so the default config
//! works out of the box.

use bytes::Bytes;
use futures_util::future::LocalBoxFuture;
use llmr_protocol::openai::{ChatChunk, ChatCompletion, Delta};
use llmr_protocol::{ApiError, Usage, now_ms};
use serde_json::Value;

use super::attempt::{Adapter, AttemptError, AttemptResult, Call, Outcome};

/// The text of the last user message (text parts joined by spaces).
pub fn last_user_text(body: &Value) -> String {
    llmr_protocol::chat::last_user_text(body, " ")
}

fn words_in(v: &Value) -> u64 {
    match v {
        Value::String(s) => s.split_whitespace().count() as u64,
        Value::Array(parts) => parts
            .iter()
            .filter_map(|p| p["text"].as_str())
            .map(|t| t.split_whitespace().count() as u64)
            .sum(),
        _ => 0,
    }
}

/// The `echo` adapter.
pub struct Echo;

impl Adapter for Echo {
    fn call<'a>(&'a self, c: Call<'a>) -> LocalBoxFuture<'a, AttemptResult> {
        Box::pin(answer(c))
    }
}

/// Echoes the last user message of `c`'s body (embeddings and text completions: see
/// [`super::echo_endpoints`]).
pub async fn answer(c: Call<'_>) -> AttemptResult {
    let env = c.env;
    let req: Value = serde_json::from_slice(&env.body)
        .map_err(|e| AttemptError::local(ApiError::invalid(format!("invalid body: {e}"), None), "invalid body"))?;
    match env.meta.endpoint {
        llmr_protocol::Endpoint::Embeddings => return super::echo_endpoints::embeddings(c, &req).await,
        llmr_protocol::Endpoint::Completions => return super::echo_endpoints::completions(c, &req).await,
        llmr_protocol::Endpoint::Chat => {}
    }
    let text = last_user_text(&req);
    let prompt_tokens: u64 = req["messages"]
        .as_array()
        .map_or(0, |ms| ms.iter().map(|m| words_in(&m["content"])).sum());
    let completion_tokens = text.split_whitespace().count() as u64;
    let usage = Usage {
        prompt_tokens,
        completion_tokens,
        total_tokens: prompt_tokens + completion_tokens,
    };
    let (id, model, created) = (c.completion_id(), env.meta.model.as_str(), now_ms() / 1000);
    let reply_err = |e: llmr_bus::BusError| AttemptError::local(e.into(), "could not reply");
    let out = c.out;
    if !env.meta.stream {
        let answer = ChatCompletion::text(&id, model, created, text, Some(usage));
        out.set_usage(Some(usage));
        out.complete(200, answer.to_bytes()).await.map_err(reply_err)?;
        return Ok(Outcome {
            usage: Some(usage),
            relayed_bytes: 0,
            response_id: Some(id),
            response_model: Some(model.to_owned()),
            finish_reasons: vec!["stop".into()],
        });
    }
    for event in stream_events(&id, model, created, &text, env.meta.include_usage.then_some(usage)) {
        out.events(&event).await.map_err(reply_err)?;
    }
    out.set_usage(Some(usage));
    out.end().await.map_err(reply_err)?;
    Ok(Outcome {
        usage: Some(usage),
        relayed_bytes: 0,
        response_id: Some(id),
        response_model: Some(model.to_owned()),
        finish_reasons: vec!["stop".into()],
    })
}

/// The events of an echoed stream, grouped as they are sent (one frame each): the role,
/// one word each, then the finish (with the usage chunk when asked).
pub fn stream_events(id: &str, model: &str, created: u64, text: &str, usage: Option<Usage>) -> Vec<Vec<Bytes>> {
    let mut out = vec![vec![ChatChunk::text(id, model, created, true, "").to_bytes()]];
    for word in text.split_inclusive(' ') {
        out.push(vec![ChatChunk::text(id, model, created, false, word).to_bytes()]);
    }
    let mut tail = vec![ChatChunk::delta(id, model, created, Delta::default(), Some("stop".into())).to_bytes()];
    if let Some(u) = usage {
        tail.push(ChatChunk::usage(id, model, created, u).to_bytes());
    }
    out.push(tail);
    out
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn finds_the_last_user_message() {
        let v = json!({"messages": [{"role":"user","content":"first"},{"role":"assistant","content":"x"},{"role":"user","content":[{"type":"text","text":"a"},{"type":"text","text":"b"}]}]});
        assert_eq!(last_user_text(&v), "a b");
        assert_eq!(
            last_user_text(&json!({"messages": [{"role":"system","content":"s"}]})),
            ""
        );
    }

    #[test]
    fn golden_echo_answers_plain_and_streamed() {
        let usage = Usage {
            prompt_tokens: 2,
            completion_tokens: 2,
            total_tokens: 4,
        };
        let pretty = |b: &[u8]| {
            let v: Value = serde_json::from_slice(b).unwrap();
            serde_json::to_string(&v).unwrap()
        };
        let plain = ChatCompletion::text("chatcmpl-1", "echo", 1_700_000_000, "hello world", Some(usage));
        let frames = stream_events("chatcmpl-1", "echo", 1_700_000_000, "hello world", Some(usage));
        let sse: Vec<String> = frames
            .iter()
            .map(|f| String::from_utf8(llmr_protocol::openai::sse(f)).unwrap())
            .collect();
        insta::assert_snapshot!(format!(
            "{}\n\n--- stream, one frame per block ---\n{}",
            pretty(&plain.to_bytes()),
            sse.join("---\n")
        ));
    }
}
