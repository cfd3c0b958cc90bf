//! Golden snapshots (insta) of the upstream translations: for Anthropic and Ollama, the
//! request a rich chat completion becomes, a plain answer as the OpenAI completion it becomes,
//! and a whole stream as the sequence of OpenAI chunks it becomes.
#![allow(clippy::unwrap_used, clippy::expect_used)]

use llmr_protocol::{anthropic, ollama};
use serde_json::{Value, json};

/// A chat request with every kind of thing the translations handle.
fn rich_chat() -> Value {
    json!({
        "model": "g", "max_tokens": 64, "temperature": 0.3, "top_p": 0.9, "stop": ["END"], "user": "u-1",
        "tool_choice": "auto", "keep_alive": "5m", "options": {"num_ctx": 8192},
        "response_format": {"type": "json_object"},
        "messages": [
            {"role": "system", "content": "Be brief."},
            {"role": "user", "content": [
                {"type": "text", "text": "What is in the picture, and what is the weather there?"},
                {"type": "image_url", "image_url": {"url": "data:image/png;base64,iVBORw0KGgo="}},
                {"type": "image_url", "image_url": {"url": "https://example.com/cat.png"}}]},
            {"role": "assistant", "content": "Let me check.", "tool_calls": [{"id": "call_1", "type": "function",
                "function": {"name": "weather", "arguments": "{\"city\":\"Oslo\"}"}}]},
            {"role": "tool", "tool_call_id": "call_1", "content": "Sunny, 21°C"},
            {"role": "user", "content": "Thanks!"}
        ],
        "tools": [{"type": "function", "function": {"name": "weather", "description": "The weather of a city",
            "parameters": {"type": "object", "properties": {"city": {"type": "string"}}, "required": ["city"]}}}]
    })
}

fn pretty(v: &Value) -> String {
    serde_json::to_string_pretty(v).unwrap()
}

#[test]
fn anthropic_request_answer_and_stream() {
    let request = anthropic::request(&rich_chat(), "claude-sonnet").unwrap();
    let answer = anthropic::completion(
        &json!({"id": "msg_01", "type": "message", "role": "assistant", "model": "claude-sonnet",
                "stop_reason": "tool_use", "usage": {"input_tokens": 42, "output_tokens": 17},
                "content": [{"type": "thinking", "thinking": "The user wants the weather."},
                            {"type": "text", "text": "Checking Oslo."},
                            {"type": "tool_use", "id": "toolu_1", "name": "weather", "input": {"city": "Oslo"}}]}),
        "g",
        1_700_000_000,
    );
    let events = [
        json!({"type": "message_start", "message": {"id": "msg_02", "model": "claude-sonnet", "usage": {"input_tokens": 42, "output_tokens": 1}}}),
        json!({"type": "content_block_start", "index": 0, "content_block": {"type": "thinking", "thinking": ""}}),
        json!({"type": "content_block_delta", "index": 0, "delta": {"type": "thinking_delta", "thinking": "Hmm."}}),
        json!({"type": "content_block_stop", "index": 0}),
        json!({"type": "content_block_start", "index": 1, "content_block": {"type": "text", "text": ""}}),
        json!({"type": "ping"}),
        json!({"type": "content_block_delta", "index": 1, "delta": {"type": "text_delta", "text": "Checking "}}),
        json!({"type": "content_block_delta", "index": 1, "delta": {"type": "text_delta", "text": "Oslo."}}),
        json!({"type": "content_block_stop", "index": 1}),
        json!({"type": "content_block_start", "index": 2, "content_block": {"type": "tool_use", "id": "toolu_2", "name": "weather", "input": {}}}),
        json!({"type": "content_block_delta", "index": 2, "delta": {"type": "input_json_delta", "partial_json": "{\"city\":"}}),
        json!({"type": "content_block_delta", "index": 2, "delta": {"type": "input_json_delta", "partial_json": "\"Oslo\"}"}}),
        json!({"type": "content_block_stop", "index": 2}),
        json!({"type": "message_delta", "delta": {"stop_reason": "tool_use"}, "usage": {"output_tokens": 17}}),
        json!({"type": "message_stop"}),
    ];
    let mut s = anthropic::Stream::new("g", 1_700_000_000);
    let mut chunks: Vec<Value> = events.iter().flat_map(|e| s.event(e).unwrap()).collect();
    chunks.push(s.usage_chunk());
    insta::assert_snapshot!(format!(
        "--- request ---\n{}\n--- plain answer ---\n{}\n--- stream chunks ---\n{}",
        pretty(&request),
        pretty(&answer),
        chunks.iter().map(Value::to_string).collect::<Vec<_>>().join("\n")
    ));
}

#[test]
fn ollama_request_answer_stream_and_embeddings() {
    let request = ollama::chat_request(&rich_chat(), "llama3.1:8b", true);
    let answer = ollama::completion(
        &json!({"model": "llama3.1:8b", "message": {"role": "assistant", "content": "",
                "tool_calls": [{"function": {"name": "weather", "arguments": {"city": "Oslo"}}}]},
                "done": true, "done_reason": "stop", "prompt_eval_count": 30, "eval_count": 9}),
        "chatcmpl-1",
        "g",
        1_700_000_000,
    );
    let lines = [
        json!({"model": "llama3.1:8b", "message": {"role": "assistant", "content": "Sunny "}, "done": false}),
        json!({"model": "llama3.1:8b", "message": {"role": "assistant", "content": "in Oslo."}, "done": false}),
        json!({"model": "llama3.1:8b", "message": {"role": "assistant", "content": ""}, "done": true,
               "done_reason": "length", "prompt_eval_count": 30, "eval_count": 4}),
    ];
    let chunks: Vec<Value> = lines
        .iter()
        .flat_map(|l| ollama::stream_line(l, "chatcmpl-2", "g", 1_700_000_000, true))
        .collect();
    let embed = ollama::embed_request(
        &json!({"input": ["a", "b"], "dimensions": 2, "keep_alive": -1}),
        "nomic-embed",
    );
    let embeddings = ollama::embeddings(
        &json!({"embeddings": [[0.5, -0.25], [0.0, 1.0]], "prompt_eval_count": 2}),
        "e",
    );
    insta::assert_snapshot!(format!(
        "--- request ---\n{}\n--- plain answer ---\n{}\n--- stream chunks ---\n{}\n--- embed request ---\n{}\n--- embeddings ---\n{}",
        pretty(&request),
        pretty(&answer),
        chunks.iter().map(Value::to_string).collect::<Vec<_>>().join("\n"),
        pretty(&embed),
        pretty(&embeddings)
    ));
}
