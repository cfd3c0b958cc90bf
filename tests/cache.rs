//! The exact response cache on both backends: hit / miss / bypass, streamed replays identical
//! to the original, non-deterministic requests and tool-call answers never cached, the
//! request directives (`no-store`, `no-cache`, `ttl=SECONDS`), expiry, per-group switches,
//! usage of hits, and the Responses API on top of it.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

#[macro_use]
mod common;

use std::time::Duration;

use common::*;
use llmr_testkit::{Behavior, MockUpstream};
use serde_json::{Value, json};

struct Fixture {
    app: InProcess,
    mock: MockUpstream,
}

impl Fixture {
    fn start(redis: bool) -> Fixture {
        Fixture::start_with(redis, &[])
    }

    fn start_with(redis: bool, env: &[(&str, String)]) -> Fixture {
        let mock = MockUpstream::start(&["m"]);
        let toml = format!(
            "{}[[models]]\nname = \"uncached\"\ncache = false\ntargets = [{{provider = \"up\", model = \"m\"}}]\n",
            mock_provider("up", &mock.base_url(), &["m"])
        );
        let cfg = TestConfig::new(toml).env("LLMR__CACHE__ENABLED", true).envs(env);
        Fixture {
            app: InProcess::start(redis, cfg),
            mock,
        }
    }

    /// POSTs a chat; (status, x-llmr-cache, body).
    async fn chat(&self, body: &Value, headers: &[(&str, &str)]) -> (u16, String, bytes::Bytes) {
        let mut req = client().post(self.app.url("/v1/chat/completions"));
        for (k, v) in headers {
            req = req.insert_header((*k, *v));
        }
        let mut resp = req.send_json(body).await.unwrap();
        let cache = resp
            .headers()
            .get("x-llmr-cache")
            .map(|v| v.to_str().unwrap().to_owned())
            .unwrap_or_default();
        (resp.status().as_u16(), cache, resp.body().limit(1 << 20).await.unwrap())
    }
}

fn body(text: &str, temperature: f64, stream: bool) -> Value {
    let mut b = chat_body("m", text, stream);
    b["temperature"] = json!(temperature);
    b
}

async fn deterministic_requests_are_answered_once_then_from_the_cache(redis: bool) {
    let f = Fixture::start(redis);
    let b = body("what is cached", 0.0, false);
    let (s1, c1, first) = f.chat(&b, &[]).await;
    let (s2, c2, second) = f.chat(&b, &[]).await;
    assert_eq!((s1, c1.as_str(), s2, c2.as_str()), (200, "miss", 200, "hit"));
    assert_eq!(first, second, "the stored answer, byte for byte");
    assert_eq!(f.mock.request_count(), 1, "the hit reached no upstream");
    // A field that does not change the answer does not change the key; one that does, does.
    let mut with_user = b.clone();
    with_user["user"] = json!("someone");
    assert_eq!(f.chat(&with_user, &[]).await.1, "hit");
    let mut longer = b.clone();
    longer["max_tokens"] = json!(7);
    assert_eq!(f.chat(&longer, &[]).await.1, "miss");
    // Hits count in usage under `cache`, with no provider tokens (written just after each
    // answer: wait for both, bounded).
    let usage_url = f.app.url("/v1/usage");
    let hits = || async {
        let (_, usage) = get(&usage_url, &[]).await;
        let n = usage["data"].as_array().and_then(|rows| {
            rows.iter()
                .find(|r| r["key"] == "cache")
                .and_then(|r| r["requests"].as_u64())
        });
        n == Some(2)
    };
    eventually(Duration::from_secs(5), hits).await;
    let (_, usage) = get(&f.app.url("/v1/usage"), &[]).await;
    let row = usage["data"]
        .as_array()
        .unwrap()
        .iter()
        .find(|r| r["key"] == "cache")
        .cloned()
        .unwrap();
    assert_eq!(
        (row["requests"].as_u64(), row["prompt_tokens"].as_u64()),
        (Some(2), Some(0))
    );
}
both!(deterministic_requests_are_answered_once_then_from_the_cache);

async fn a_streamed_hit_replays_the_same_chunks(redis: bool) {
    let f = Fixture::start(redis);
    f.mock.set_default(Behavior {
        chunks: 5,
        ..Behavior::default()
    });
    let mut b = body("one two three four five six", 0.0, true);
    b["stream_options"] = json!({"include_usage": true});
    let (_, c1, first) = f.chat(&b, &[]).await;
    let (_, c2, second) = f.chat(&b, &[]).await;
    assert_eq!((c1.as_str(), c2.as_str()), ("miss", "hit"));
    let events = sse_events(&first);
    assert!(
        events.len() >= 7,
        "several chunks, a usage chunk and [DONE]: {events:?}"
    );
    assert_eq!(events, sse_events(&second), "the same sequence of chunks");
    assert!(events.iter().any(|e| e.contains("\"usage\"")), "usage kept");
    // A plain request is kept apart from the streamed one.
    assert_eq!(
        f.chat(&body("one two three four five six", 0.0, false), &[]).await.1,
        "miss"
    );
    assert_eq!(f.mock.request_count(), 2);
}
both!(a_streamed_hit_replays_the_same_chunks);

async fn what_is_not_deterministic_or_calls_tools_is_not_cached(redis: bool) {
    let f = Fixture::start(redis);
    let warm = body("creative", 0.9, false);
    assert_eq!(f.chat(&warm, &[]).await.1, "bypass");
    assert_eq!(f.chat(&warm, &[]).await.1, "bypass");
    assert_eq!(f.mock.request_count(), 2);
    // Opting in with a TTL caches it anyway.
    assert_eq!(f.chat(&warm, &[("x-llmr-cache", "ttl=60")]).await.1, "miss");
    assert_eq!(f.chat(&warm, &[("x-llmr-cache", "ttl=60")]).await.1, "hit");
    // Answers with tool calls are not stored.
    f.mock.set_default(Behavior {
        tool_calls: Some(json!([{"id": "c1", "type": "function", "function": {"name": "f", "arguments": "{}"}}])),
        ..Behavior::default()
    });
    let mut tools = body("call a tool", 0.0, false);
    tools["tools"] = json!([{"type": "function", "function": {"name": "f", "parameters": {}}}]);
    assert_eq!(f.chat(&tools, &[]).await.1, "miss");
    assert_eq!(f.chat(&tools, &[]).await.1, "miss", "tool calls were not stored");
    // A group with the cache off answers without a verdict.
    let mut group = body("group", 0.0, false);
    group["model"] = json!("uncached");
    assert_eq!(f.chat(&group, &[]).await.1, "");
}
both!(what_is_not_deterministic_or_calls_tools_is_not_cached);

async fn directives_and_expiry(redis: bool) {
    let f = Fixture::start(redis);
    let b = body("directed", 0.0, false);
    assert_eq!(f.chat(&b, &[("x-llmr-cache", "no-store")]).await.1, "miss");
    assert_eq!(f.chat(&b, &[]).await.1, "miss", "no-store kept it out");
    assert_eq!(
        f.chat(&b, &[("x-llmr-cache", "no-cache")]).await.1,
        "bypass",
        "no-cache: no lookup"
    );
    assert_eq!(f.chat(&b, &[]).await.1, "hit");
    let short = body("short-lived", 0.0, false);
    assert_eq!(f.chat(&short, &[("x-llmr-cache", "ttl=1")]).await.1, "miss");
    assert_eq!(f.chat(&short, &[]).await.1, "hit");
    tokio::time::sleep(Duration::from_millis(1100)).await;
    assert_eq!(f.chat(&short, &[]).await.1, "miss", "expired");
}
both!(directives_and_expiry);

async fn responses_reuse_the_cache_of_their_chat(redis: bool) {
    let f = Fixture::start(redis);
    let req = json!({"model": "m", "input": "cached response", "temperature": 0});
    let send = || async {
        let mut resp = client().post(f.app.url("/v1/responses")).send_json(&req).await.unwrap();
        let cache = resp
            .headers()
            .get("x-llmr-cache")
            .map(|v| v.to_str().unwrap().to_owned());
        let body: Value = resp.json().await.unwrap();
        (cache, body)
    };
    let (c1, r1) = send().await;
    let (c2, r2) = send().await;
    assert_eq!((c1.as_deref(), c2.as_deref()), (Some("miss"), Some("hit")));
    assert_eq!(
        r1["output"][0]["content"][0]["text"],
        r2["output"][0]["content"][0]["text"]
    );
    assert_ne!(r1["id"], r2["id"], "each response is its own, stored under its own id");
    assert_eq!(f.mock.request_count(), 1);
}
both!(responses_reuse_the_cache_of_their_chat);

async fn answers_over_the_size_bound_are_not_stored(redis: bool) {
    let f = Fixture::start_with(redis, &[("LLMR__CACHE__MAX_ENTRY_BYTES", "800".to_string())]);
    let small = body("ok", 0.0, false);
    let large = body(&"many words here ".repeat(60), 0.0, false);
    assert_eq!(f.chat(&large, &[]).await.1, "miss");
    assert_eq!(f.chat(&large, &[]).await.1, "miss", "too large to keep");
    assert_eq!(f.chat(&small, &[]).await.1, "miss");
    assert_eq!(f.chat(&small, &[]).await.1, "hit", "a small answer fits");
    assert_eq!(f.mock.request_count(), 3);
}
both!(answers_over_the_size_bound_are_not_stored);
