//! The built-in `echo` provider: answers with the last user message, streamed word by word
//! when asked, with usage counted in words. It needs no upstream, so the default config
//! works out of the box.

use bytes::Bytes;
use llmr_protocol::{ApiError, Usage, now_ms};
use serde_json::{Value, json};

use super::{AttemptError, AttemptResult, Outcome};
use crate::replier::Replier;

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

pub async fn call(
    body: &Bytes,
    model: &str,
    id: &str,
    stream: bool,
    include_usage: bool,
    out: &mut Replier,
) -> AttemptResult {
    let req: Value = serde_json::from_slice(body)
        .map_err(|e| AttemptError::local(ApiError::invalid(format!("invalid body: {e}"), None), "invalid body"))?;
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
    let created = now_ms() / 1000;
    let reply_err = |e: llmr_bus::BusError| AttemptError::local(e.into(), "could not reply");

    if !stream {
        let answer = json!({
            "id": id, "object": "chat.completion", "created": created, "model": model,
            "choices": [{"index": 0, "message": {"role": "assistant", "content": text}, "logprobs": null, "finish_reason": "stop"}],
            "usage": usage,
        });
        out.complete(200, Bytes::from(answer.to_string()))
            .await
            .map_err(reply_err)?;
        return Ok(Outcome {
            usage: Some(usage),
            relayed_bytes: 0,
        });
    }

    let chunk = |delta: Value, finish: Value| {
        Bytes::from(
            json!({"id": id, "object": "chat.completion.chunk", "created": created, "model": model,
                   "choices": [{"index": 0, "delta": delta, "logprobs": null, "finish_reason": finish}]})
            .to_string(),
        )
    };
    out.events(vec![chunk(json!({"role": "assistant", "content": ""}), Value::Null)])
        .await
        .map_err(reply_err)?;
    for word in text.split_inclusive(' ') {
        out.events(vec![chunk(json!({"content": word}), Value::Null)])
            .await
            .map_err(reply_err)?;
    }
    let mut tail = vec![chunk(json!({}), json!("stop"))];
    if include_usage {
        tail.push(Bytes::from(json!({"id": id, "object": "chat.completion.chunk", "created": created, "model": model, "choices": [], "usage": usage}).to_string()));
    }
    out.events(tail).await.map_err(reply_err)?;
    out.end().await.map_err(reply_err)?;
    Ok(Outcome {
        usage: Some(usage),
        relayed_bytes: 0,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn finds_the_last_user_message() {
        let v = json!({"messages": [{"role":"user","content":"first"},{"role":"assistant","content":"x"},{"role":"user","content":[{"type":"text","text":"a"},{"type":"text","text":"b"}]}]});
        assert_eq!(last_user_text(&v), "a b");
        assert_eq!(
            last_user_text(&json!({"messages": [{"role":"system","content":"s"}]})),
            ""
        );
    }
}
