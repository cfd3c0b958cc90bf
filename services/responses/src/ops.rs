//! The operations on stored responses: retrieve (and resume a background stream), delete,
//! cancel, list input items, count input tokens.

use std::time::Duration;

use bytes::Bytes;
use llmr_bus::Replier;
use llmr_protocol::responses::{ListQuery, sse};
use llmr_protocol::{ApiError, Envelope, Outcome, now_ms};
use serde_json::{Value, json};

use crate::convert;
use crate::run::{Ctx, chat_text};
use crate::stored::{Stored, document, is_terminal, not_found};

/// A whole JSON answer.
pub async fn answer(out: &mut Replier, result: Result<Value, ApiError>) {
    let sent = match result {
        Ok(v) => out.complete(200, Bytes::from(v.to_string())).await,
        Err(e) => out.error(&e).await,
    };
    if let Err(e) = sent {
        tracing::warn!(error = %e, "could not answer a responses request");
    }
}

/// `DELETE /v1/responses/{id}`.
pub async fn delete(stored: &Stored, id: &str) -> Result<Value, ApiError> {
    if stored.delete(id).await? {
        Ok(json!({"id": id, "object": "response.deleted", "deleted": true}))
    } else {
        Err(not_found(id))
    }
}

/// `POST /v1/responses/{id}/cancel`: background responses only; idempotent; a response
/// that already ended is returned as it is.
pub async fn cancel(stored: &Stored, id: &str) -> Result<Value, ApiError> {
    let doc = stored.doc(id).await?.ok_or_else(|| not_found(id))?;
    let response = &doc["response"];
    if response["background"] != json!(true) {
        return Err(ApiError::invalid("Only background responses can be cancelled.", None));
    }
    if is_terminal(response) {
        return Ok(response.clone());
    }
    // The flag first: a run finishing now sees it and keeps the cancel.
    stored.request_cancel(id).await?;
    let mut cancelled = response.clone();
    cancelled["status"] = json!("cancelled");
    let context = doc["context"].as_array().cloned().unwrap_or_default();
    stored.put(id, &document(&cancelled, &context, None)).await?;
    Ok(cancelled)
}

/// `GET /v1/responses/{id}/input_items` (see [`crate::list`] for paging).
pub async fn input_items(stored: &Stored, id: &str, q: &ListQuery) -> Result<Value, ApiError> {
    stored.response(id).await?;
    crate::list::page(stored.input(id).await?, q)
}

/// `POST /v1/responses/input_tokens`: an estimate (a quarter of the input's JSON bytes, the
/// router's rule), not a tokenizer's count.
pub fn input_tokens(body: &Value) -> Result<Value, ApiError> {
    let mut probe = body.clone();
    if probe.get("model").is_none() {
        probe["model"] = json!("-");
    }
    let req = convert::parse(&probe)?;
    let mut bytes = Value::from(convert::messages(&req.input)).to_string().len();
    bytes += req.instructions.as_deref().map_or(0, str::len);
    bytes += req.chat.get("tools").map_or(0, |t| t.to_string().len());
    Ok(
        json!({"object": "response.input_tokens", "input_tokens": llmr_protocol::chat::estimate_tokens(bytes), "estimated": true}),
    )
}

/// `GET /v1/responses/{id}`: the stored response; with `stream=true` (background responses)
/// its events after `starting_after`, then new ones as they come, until it ends.
pub async fn retrieve(stored: &Stored, env: &Envelope, id: &str, stream: bool, after: Option<u64>, out: &mut Replier) {
    let response = match stored.response(id).await {
        Ok(r) => r,
        Err(e) => return answer(out, Err(e)).await,
    };
    if !stream {
        return answer(out, Ok(response)).await;
    }
    if response["background"] != json!(true) {
        let e = ApiError::invalid("Only background responses can be streamed again.", Some("stream"));
        return answer(out, Err(e)).await;
    }
    let mut next = after.map_or(0, |n| n as usize + 1);
    loop {
        let events = match stored.events(id, next).await {
            Ok(e) => e,
            Err(e) => return answer(out, Err(e)).await,
        };
        next += events.len();
        let ended = events.iter().any(|e| FINAL_EVENTS.iter().any(|f| e.contains(f)));
        if !events.is_empty() && out.raw(sse(&events)).await.is_err() {
            return;
        }
        let mut done = ended || env.expired(now_ms());
        if !done && events.is_empty() {
            // Nothing new: stop once the response has ended (cancelled, or deleted).
            done = stored.response(id).await.map_or(true, |r| is_terminal(&r));
        }
        if done {
            if !out.started() {
                let _ = out.raw(Bytes::new()).await;
            }
            let _ = out.end().await;
            return;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

/// The events after which a response's stream has nothing more to say.
const FINAL_EVENTS: [&str; 3] = [
    "\"type\":\"response.completed\"",
    "\"type\":\"response.failed\"",
    "\"type\":\"response.incomplete\"",
];

/// The instruction behind `compact`.
const COMPACT_PROMPT: &str = "Summarize the conversation above so that it can replace it: keep every fact, \
name, number, decision, result of a tool call and open question; drop pleasantries. Write it as a brief \
note to yourself.";

/// `POST /v1/responses/compact`: a conversation's items (`input`, or a stored chain via
/// `previous_response_id`, or a `conversation`) compacted into a shorter input — a summary
/// written by `model`, followed by the last user message — to send as the next `input`.
/// The compaction, and what its chat cost (for the end frame).
pub async fn compact(ctx: &Ctx, env: &Envelope, body: &Value) -> Result<(Value, Option<Outcome>), ApiError> {
    let mut probe = body.clone();
    if probe.get("input").is_none() {
        probe["input"] = json!([]);
    }
    let req = convert::parse(&probe)?;
    let mut messages = Vec::new();
    if let Some(conv) = &req.conversation {
        messages.extend(convert::messages(
            &crate::conversations::items(&ctx.stored, conv).await?,
        ));
    }
    if let Some(prev) = &req.previous_response_id {
        let doc = ctx.stored.doc(prev).await?.ok_or_else(|| not_found(prev))?;
        messages.extend(doc["context"].as_array().cloned().unwrap_or_default());
    }
    messages.extend(convert::messages(&req.input));
    messages.retain(|m| m["role"] != "system");
    if messages.is_empty() {
        return Err(ApiError::invalid(
            "Nothing to compact: give `input`, `previous_response_id` or `conversation`.",
            Some("input"),
        ));
    }
    let last_user = req
        .input
        .iter()
        .rev()
        .find(|i| i["type"] == "message" && i["role"] == "user")
        .cloned();
    let mut prompt = messages;
    prompt.push(json!({"role": "user", "content": COMPACT_PROMPT}));
    let (summary, usage, outcome) = chat_text(ctx, env, &req.model, prompt).await?;
    let mut output = vec![json!({
        "id": convert::new_id("msg"),
        "type": "message",
        "role": "developer",
        "status": "completed",
        "content": [{"type": "input_text", "text": format!("Summary of the conversation so far:\n{summary}")}],
    })];
    output.extend(last_user);
    let compaction = json!({
        "id": convert::new_id("cmp"),
        "object": "response.compaction",
        "created_at": now_ms() / 1000,
        "model": req.model,
        "output": output,
        "usage": usage,
    });
    Ok((compaction, outcome))
}
