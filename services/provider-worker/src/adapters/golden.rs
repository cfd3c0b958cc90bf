//! Golden tests of the dialects' conversions (insta snapshots under `snapshots/`): for each
//! of `anthropic`, `ollama`, `openai_responses` (and `openai`), the request as sent
//! upstream, a whole answer as the client gets it, and a stream's events as the client
//! gets them with the outcome. Every conversion is a pure function, so no upstream runs.
#![cfg(test)]
#![allow(clippy::unwrap_used, clippy::expect_used)]

use bytes::Bytes;
use llmr_config::Provider;
use llmr_protocol::{Attempt, Endpoint, Envelope, Kind, Meta, NativeBody};
use serde_json::{Value, json};

use super::anthropic::Anthropic;
use super::dialect::{Ask, Dialect, Event, UpstreamRequest};
use super::ollama::Ollama;
use super::openai::OpenAi;
use crate::sse::{Lines, Splitter};

/// A created time that does not move.
const CREATED: u64 = 1_700_000_000;

fn provider(v: Value) -> Provider {
    serde_json::from_value(v).unwrap()
}

/// A job for `model` (the client's name) with a fixed id.
fn env(body: Value, meta: Meta) -> Envelope {
    let mut e = Envelope::new(
        Kind::Job,
        "r",
        u64::MAX,
        Default::default(),
        Bytes::from(body.to_string()),
        meta,
    );
    e.id = uuid::Uuid::from_u128(0x0193_0000_0000_7000_8000_0000_0000_0001);
    e
}

fn meta(stream: bool, include_usage: bool) -> Meta {
    Meta {
        model: "alias".into(),
        stream,
        include_usage,
        ..Meta::default()
    }
}

fn chat() -> Value {
    json!({"model": "alias", "messages": [
        {"role": "system", "content": "Be brief."},
        {"role": "user", "content": "Hi"}
    ], "max_tokens": 50, "temperature": 0})
}

fn ask<'a>(env: &'a Envelope, attempt: &'a Attempt, p: &'a Provider) -> Ask<'a> {
    Ask {
        env,
        attempt,
        provider: p,
        key: Some("sk-test"),
        created: CREATED,
    }
}

/// A request as text: method line, headers, body (pretty when JSON).
fn show_request(r: &UpstreamRequest) -> String {
    let mut s = format!("POST {}\nreading: {:?}, native: {:?}\n", r.url, r.reading, r.native);
    for (k, v) in &r.headers {
        s.push_str(&format!("{k}: {v}\n"));
    }
    s.push('\n');
    s.push_str(&pretty(&r.body));
    s
}

fn pretty(b: &[u8]) -> String {
    match serde_json::from_slice::<Value>(b) {
        Ok(v) => serde_json::to_string_pretty(&v).unwrap(),
        Err(_) => String::from_utf8_lossy(b).into_owned(),
    }
}

/// Runs `events` (their SSE or NDJSON text) through the dialect's stream conversion: every
/// event out, one per line, then the outcome.
fn show_stream(d: &dyn Dialect, ask: &Ask<'_>, raw: &str) -> String {
    let req = d.request(ask).unwrap();
    let mut conv = d.events(ask, &req);
    let events: Vec<Event> = match req.reading {
        super::dialect::Reading::Ndjson => Lines::default().push(raw.as_bytes()),
        _ => Splitter::default().push(raw.as_bytes()),
    };
    let (mut out, mut ended) = (Vec::new(), false);
    for e in events {
        ended |= conv.event(e, &mut out).unwrap();
    }
    assert!(ended, "the stream did not end");
    let outcome = conv.end(&mut out);
    let mut s: String = out
        .iter()
        .map(|b| format!("{}\n", String::from_utf8_lossy(b)))
        .collect();
    s.push_str(&format!("--- outcome ---\n{outcome:?}"));
    s
}

fn show_answer(d: &dyn Dialect, ask: &Ask<'_>, upstream: Value) -> String {
    let a = d.answer(ask, Bytes::from(upstream.to_string())).unwrap();
    format!("{}\n--- outcome ---\n{:?}", pretty(&a.body), a.outcome)
}

fn anthropic() -> Provider {
    provider(json!({"name": "claude", "type": "anthropic", "base_url": "https://api.anthropic.test/v1"}))
}

#[test]
fn anthropic_request_from_chat_and_from_its_own_body() {
    let p = anthropic();
    let a = Attempt::new("claude", "claude-x");
    let e = env(chat(), meta(true, false));
    let translated = show_request(&Anthropic.request(&ask(&e, &a, &p)).unwrap());
    let mut m = meta(false, false);
    m.native = Some(NativeBody::Anthropic(Bytes::from(
        json!({"model": "alias", "max_tokens": 10, "thinking": {"type": "enabled", "budget_tokens": 5},
               "messages": [{"role": "user", "content": "Hi"}]})
        .to_string(),
    )));
    let e = env(chat(), m);
    let native = show_request(&Anthropic.request(&ask(&e, &a, &p)).unwrap());
    insta::assert_snapshot!(format!("{translated}\n\n=== its own body ===\n{native}"));
}

#[test]
fn anthropic_refuses_other_endpoints_as_the_clients() {
    let (p, a) = (anthropic(), Attempt::new("claude", "claude-x"));
    let mut m = meta(false, false);
    m.endpoint = Endpoint::Embeddings;
    let e = env(json!({"model": "alias", "input": "x"}), m);
    let err = Anthropic.request(&ask(&e, &a, &p)).unwrap_err();
    assert_eq!((err.fault, err.retryable), (super::Fault::Client, false));
}

#[test]
fn anthropic_answer() {
    let (p, a) = (anthropic(), Attempt::new("claude", "claude-x"));
    let e = env(chat(), meta(false, false));
    let upstream = json!({"id": "msg_1", "type": "message", "role": "assistant", "model": "claude-x",
        "content": [{"type": "text", "text": "Hello!"},
                    {"type": "tool_use", "id": "tu_1", "name": "get", "input": {"q": 1}}],
        "stop_reason": "tool_use", "usage": {"input_tokens": 12, "output_tokens": 5}});
    insta::assert_snapshot!(show_answer(&Anthropic, &ask(&e, &a, &p), upstream));
}

#[test]
fn anthropic_stream_events() {
    let (p, a) = (anthropic(), Attempt::new("claude", "claude-x"));
    let e = env(chat(), meta(true, true));
    let raw = [
        json!({"type": "message_start", "message": {"id": "msg_1", "model": "claude-x", "usage": {"input_tokens": 12, "output_tokens": 1}}}),
        json!({"type": "content_block_start", "index": 0, "content_block": {"type": "text", "text": ""}}),
        json!({"type": "ping"}),
        json!({"type": "content_block_delta", "index": 0, "delta": {"type": "text_delta", "text": "Hel"}}),
        json!({"type": "content_block_delta", "index": 0, "delta": {"type": "text_delta", "text": "lo"}}),
        json!({"type": "content_block_stop", "index": 0}),
        json!({"type": "message_delta", "delta": {"stop_reason": "end_turn"}, "usage": {"output_tokens": 4}}),
        json!({"type": "message_stop"}),
    ]
    .iter()
    .map(|v| format!("event: {}\ndata: {v}\n\n", v["type"].as_str().unwrap()))
    .collect::<String>();
    insta::assert_snapshot!(show_stream(&Anthropic, &ask(&e, &a, &p), &raw));
}

#[test]
fn anthropic_stream_error_event_breaks_the_stream() {
    let (p, a) = (anthropic(), Attempt::new("claude", "claude-x"));
    let e = env(chat(), meta(true, false));
    let req = Anthropic.request(&ask(&e, &a, &p)).unwrap();
    let mut conv = Anthropic.events(&ask(&e, &a, &p), &req);
    let ev = |v: Value| Event::Data(Bytes::from(v.to_string()));
    let err = conv
        .event(
            ev(json!({"type": "error", "error": {"type": "overloaded_error", "message": "Overloaded"}})),
            &mut Vec::new(),
        )
        .unwrap_err();
    assert!(err.to_string().starts_with("the upstream stream failed"), "{err}");
    let bad = conv.event(Event::Data(Bytes::from_static(b"{nope")), &mut Vec::new());
    assert_eq!(bad, Err(super::dialect::StreamError::MalformedEvent));
}

fn ollama() -> Provider {
    provider(json!({"name": "local", "type": "ollama", "base_url": "http://ollama.test:11434"}))
}

#[test]
fn ollama_requests_chat_and_embeddings() {
    let (p, a) = (ollama(), Attempt::new("local", "llama3"));
    let mut body = chat();
    body["options"] = json!({"num_ctx": 4096});
    let e = env(body, meta(true, false));
    let chat = show_request(&Ollama.request(&ask(&e, &a, &p)).unwrap());
    let mut m = meta(false, false);
    m.endpoint = Endpoint::Embeddings;
    let e = env(json!({"model": "alias", "input": ["a", "b"]}), m);
    let embed = show_request(&Ollama.request(&ask(&e, &a, &p)).unwrap());
    insta::assert_snapshot!(format!("{chat}\n\n=== embeddings ===\n{embed}"));
}

#[test]
fn ollama_answers_chat_and_base64_embeddings() {
    let (p, a) = (ollama(), Attempt::new("local", "llama3"));
    let e = env(chat(), meta(false, false));
    let chat = show_answer(
        &Ollama,
        &ask(&e, &a, &p),
        json!({"model": "llama3", "created_at": "2024-01-01T00:00:00Z",
               "message": {"role": "assistant", "content": "Hello!"}, "done": true, "done_reason": "stop",
               "prompt_eval_count": 9, "eval_count": 3}),
    );
    let mut m = meta(false, false);
    m.endpoint = Endpoint::Embeddings;
    let e = env(json!({"model": "alias", "input": "a", "encoding_format": "base64"}), m);
    let embed = show_answer(
        &Ollama,
        &ask(&e, &a, &p),
        json!({"model": "llama3", "embeddings": [[0.5, -1.0]], "prompt_eval_count": 1}),
    );
    insta::assert_snapshot!(format!("{chat}\n\n=== embeddings, base64 ===\n{embed}"));
}

#[test]
fn ollama_stream_lines() {
    let (p, a) = (ollama(), Attempt::new("local", "llama3"));
    let e = env(chat(), meta(true, true));
    let raw = [
        json!({"model": "llama3", "message": {"role": "assistant", "content": "Hel"}, "done": false}),
        json!({"model": "llama3", "message": {"role": "assistant", "content": "lo"}, "done": false}),
        json!({"model": "llama3", "message": {"role": "assistant", "content": ""}, "done": true,
               "done_reason": "stop", "prompt_eval_count": 9, "eval_count": 2}),
    ]
    .iter()
    .map(|v| format!("{v}\n"))
    .collect::<String>();
    insta::assert_snapshot!(show_stream(&Ollama, &ask(&e, &a, &p), &raw));
}

fn responses_provider() -> Provider {
    provider(json!({"name": "oai", "type": "openai", "base_url": "https://api.openai.test/v1", "responses": true}))
}

fn native_responses(body: Value) -> Meta {
    let mut m = meta(true, true);
    m.native = Some(NativeBody::Responses(Bytes::from(body.to_string())));
    m
}

#[test]
fn openai_responses_request_goes_native_only_where_the_chain_lives() {
    let (p, a) = (responses_provider(), Attempt::new("oai", "gpt-x"));
    let native = json!({"model": "alias", "input": [{"role": "user", "content": "Hi"}], "store": true,
                        "llmr_previous": {"provider": "oai", "id": "resp_up_1"}});
    let e = env(chat(), native_responses(native.clone()));
    let here = show_request(&OpenAi.request(&ask(&e, &a, &p)).unwrap());
    let mut elsewhere = native;
    elsewhere["llmr_previous"]["provider"] = json!("other");
    let e = env(chat(), native_responses(elsewhere));
    let fallback = OpenAi.request(&ask(&e, &a, &p)).unwrap();
    assert_eq!(
        (fallback.native, fallback.url.as_str()),
        (None, "https://api.openai.test/v1/chat/completions")
    );
    insta::assert_snapshot!(here);
}

#[test]
fn openai_responses_stream_events() {
    let (p, a) = (responses_provider(), Attempt::new("oai", "gpt-x"));
    let e = env(chat(), native_responses(json!({"input": "Hi"})));
    let raw = [
        json!({"type": "response.created", "sequence_number": 0, "response": {"id": "resp_up_2", "status": "in_progress"}}),
        json!({"type": "response.output_text.delta", "sequence_number": 1, "item_id": "msg_1", "output_index": 0, "content_index": 0, "delta": "Hello"}),
        json!({"type": "response.completed", "sequence_number": 2, "response": {"id": "resp_up_2", "model": "gpt-x", "status": "completed",
               "usage": {"input_tokens": 7, "output_tokens": 1, "total_tokens": 8}}}),
    ]
    .iter()
    .map(|v| format!("event: {}\ndata: {v}\n\n", v["type"].as_str().unwrap()))
    .collect::<String>();
    insta::assert_snapshot!(show_stream(&OpenAi, &ask(&e, &a, &p), &raw));
}

#[test]
fn openai_request_is_the_clients_bytes_unless_renamed_or_usage_is_forced() {
    let p = provider(json!({"name": "oai", "type": "openai", "base_url": "https://api.openai.test/v1"}));
    let same = Attempt::new("oai", "alias");
    let e = env(chat(), meta(false, false));
    let r = OpenAi.request(&ask(&e, &same, &p)).unwrap();
    assert_eq!(r.body, e.body, "passed through as bytes");
    let azure =
        provider(json!({"name": "az", "type": "azure", "base_url": "https://az.test", "api_version": "2024-10-21"}));
    let renamed = Attempt::new("az", "gpt-4o");
    let e = env(chat(), meta(true, false));
    insta::assert_snapshot!(show_request(&OpenAi.request(&ask(&e, &renamed, &azure)).unwrap()));
}

#[test]
fn openai_stream_keeps_the_usage_chunk_it_asked_for() {
    let p = provider(json!({"name": "oai", "type": "openai", "base_url": "https://api.openai.test/v1"}));
    let a = Attempt::new("oai", "alias");
    let e = env(chat(), meta(true, false));
    let raw = concat!(
        "data: {\"id\":\"c1\",\"model\":\"m\",\"choices\":[{\"index\":0,\"delta\":{\"content\":\"Hi\"},\"finish_reason\":null}]}\n\n",
        "data: {\"id\":\"c1\",\"model\":\"m\",\"choices\":[{\"index\":0,\"delta\":{},\"finish_reason\":\"stop\"}]}\n\n",
        "data: {\"id\":\"c1\",\"model\":\"m\",\"choices\":[],\"usage\":{\"prompt_tokens\":3,\"completion_tokens\":1,\"total_tokens\":4}}\n\n",
        "data: [DONE]\n\n",
    );
    insta::assert_snapshot!(show_stream(&OpenAi, &ask(&e, &a, &p), raw));
}
