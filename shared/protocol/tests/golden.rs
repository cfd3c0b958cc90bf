//! Golden snapshots (insta) of the bodies llmrouter writes itself: every error body, and a
//! completion replayed as stream chunks (the tool loop's SSE). A change to any of them shows
//! up as a snapshot diff to review.
#![allow(clippy::unwrap_used, clippy::expect_used)]

use llmr_protocol::openai::{ChatCompletion, FunctionCall, ToolCall};
use llmr_protocol::{ApiError, Usage};

fn pretty(bytes: &[u8]) -> String {
    let v: serde_json::Value = serde_json::from_slice(bytes).unwrap();
    serde_json::to_string_pretty(&v).unwrap()
}

#[test]
fn error_bodies() {
    let errors = [
        ApiError::invalid("Missing required parameter: 'model'.", Some("model")),
        ApiError::ModelNotFound { model: "gpt-x".into() },
        ApiError::Unauthorized {
            message: "Incorrect API key provided.".into(),
        },
        ApiError::PayloadTooLarge { limit: 1024 },
        ApiError::RouteNotFound {
            method: "GET".into(),
            path: "/v2/x".into(),
        },
        ApiError::NotFound {
            message: "Response with id 'resp_x' not found.".into(),
        },
        ApiError::RateLimited {
            message: "Every upstream is rate-limited".into(),
            retry_after_s: Some(3),
        },
        ApiError::UpstreamRejected {
            status: 422,
            body: r#"{"error":{"message":"bad"}}"#.into(),
        },
        ApiError::Upstream {
            message: "Every upstream attempt failed; last: upstream answered 500".into(),
        },
        ApiError::DeadlineExceeded,
        ApiError::Unavailable {
            message: "The message bus (Redis) is unreachable".into(),
        },
        ApiError::Internal {
            message: "unreadable head frame".into(),
        },
    ];
    let out: Vec<String> = errors
        .iter()
        .map(|e| format!("{} {}\n{}", e.status(), e.error_type(), pretty(&e.to_json())))
        .collect();
    insta::assert_snapshot!(out.join("\n\n"));
}

fn completion() -> ChatCompletion {
    let usage = Usage {
        prompt_tokens: 12,
        completion_tokens: 3,
        total_tokens: 15,
    };
    let mut c = ChatCompletion::text("chatcmpl-1", "m", 1_700_000_000, "The answer is 4.", Some(usage));
    c.choices[0].message.tool_calls = Some(vec![ToolCall {
        index: None,
        id: "call_1".into(),
        kind: "function".into(),
        function: FunctionCall {
            name: "calculator".into(),
            arguments: r#"{"expression":"2+2"}"#.into(),
        },
    }]);
    c.choices[0].finish_reason = Some("tool_calls".into());
    c
}

#[test]
fn a_completion_and_its_stream_replay() {
    let c = completion();
    let chunks: Vec<String> = c.to_chunks(true).iter().map(|ch| pretty(&ch.to_bytes())).collect();
    insta::assert_snapshot!(format!(
        "{}\n\n--- as a stream ---\n{}",
        pretty(&c.to_bytes()),
        chunks.join("\n")
    ));
}
