//! In-process integration tests of the chat path: `llmrouter all` started in a background
//! thread, real HTTP over loopback, a programmable mock upstream, on both backends
//! (in-memory, and a throw-away redis-server).
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

#[macro_use]
mod common;

use std::time::{Duration, Instant};

use common::*;
use futures_util::StreamExt;
use llmr_testkit::{Behavior, MockUpstream};
use llmrouter::Role;

/// A cluster in one process (the testkit's in-process fixture), with its mock upstream.
struct Fixture {
    app: InProcess,
    mock: MockUpstream,
}

impl Fixture {
    fn start(redis: bool, extra_toml: &str, env: &[(&str, String)]) -> Fixture {
        let mock = MockUpstream::start(&["mock-a", "mock-b"]);
        let toml = format!("{ECHO}{}{extra_toml}", mock_provider("up", &mock.base_url(), &[]));
        let cfg = TestConfig::new(toml).env("LLMR__REDIS__CLAIM_IDLE_MS", 1000).envs(env);
        Fixture {
            app: InProcess::start(redis, cfg),
            mock,
        }
    }

    fn url(&self, path: &str) -> String {
        self.app.url(path)
    }

    /// Waits until the router has listed the mock's models.
    async fn ready(&self) {
        let url = self.url("/v1/models");
        assert!(
            eventually(Duration::from_secs(10), || async {
                let (_, v) = get(&url, &[]).await;
                v["data"]
                    .as_array()
                    .is_some_and(|d| d.iter().any(|m| m["id"] == "mock-a"))
            })
            .await,
            "the mock's models never appeared"
        );
    }
}

async fn echo_answers_plain_and_streaming(redis: bool) {
    let f = Fixture::start(redis, "", &[]);
    let (status, body) = post(
        &f.url("/v1/chat/completions"),
        &chat_body("echo", "hello there world", false),
    )
    .await;
    assert_eq!(status, 200, "{}", String::from_utf8_lossy(&body));
    let v = json(&body);
    assert_eq!(v["choices"][0]["message"]["content"], "hello there world");
    assert_eq!(v["object"], "chat.completion");
    assert_eq!(v["usage"]["completion_tokens"], 3);

    let (status, body) = post(
        &f.url("/v1/chat/completions"),
        &chat_body("echo", "one two three", true),
    )
    .await;
    assert_eq!(status, 200);
    let events = sse_events(&body);
    assert_eq!(events.last().map(String::as_str), Some("[DONE]"));
    assert_eq!(streamed_text(&events), "one two three");
    assert!(events.len() >= 5, "word by word: {events:?}");
}
both!(echo_answers_plain_and_streaming);

async fn upstream_answers_pass_through(redis: bool) {
    let f = Fixture::start(redis, "", &[]);
    f.ready().await;
    for i in 0..4 {
        let (status, body) = post(
            &f.url("/v1/chat/completions"),
            &chat_body("mock-a", &format!("question {i}"), false),
        )
        .await;
        assert_eq!(status, 200, "{}", String::from_utf8_lossy(&body));
        let v = json(&body);
        assert_eq!(v["choices"][0]["message"]["content"], format!("mock: question {i}"));
        assert_eq!(v["id"], "chatcmpl-mock", "the upstream body is passed through");
    }
    let reqs = f.mock.requests();
    assert_eq!(reqs.len(), 4);
    let keys: std::collections::HashSet<_> = reqs.iter().map(|r| r.authorization.clone().unwrap()).collect();
    assert_eq!(
        keys,
        ["Bearer sk-up-1", "Bearer sk-up-2"]
            .iter()
            .map(|s| s.to_string())
            .collect(),
        "requests spread over the keys"
    );
    assert_eq!(reqs[0].body["model"], "mock-a");
}
both!(upstream_answers_pass_through);

async fn upstream_streams_are_relayed_chunk_by_chunk(redis: bool) {
    let f = Fixture::start(redis, "", &[]);
    f.ready().await;
    f.mock.set_default(Behavior {
        chunks: 3,
        ..Behavior::ok()
    });
    let mut body = chat_body("mock-b", "alpha beta gamma delta epsilon", true);
    body["stream_options"] = serde_json::json!({"include_usage": true});
    let (status, raw) = post(&f.url("/v1/chat/completions"), &body).await;
    assert_eq!(status, 200);
    let events = sse_events(&raw);
    assert_eq!(streamed_text(&events), "mock: alpha beta gamma delta epsilon");
    assert_eq!(events.last().map(String::as_str), Some("[DONE]"));
    let usage: Vec<_> = events
        .iter()
        .filter_map(|e| serde_json::from_str::<serde_json::Value>(e).ok())
        .filter(|v| v["usage"].is_object())
        .collect();
    assert_eq!(usage.len(), 1, "the usage chunk the client asked for");
    // role chunk + 3 content chunks + finish chunk + usage chunk + [DONE]
    assert_eq!(events.len(), 7, "{events:?}");
}
both!(upstream_streams_are_relayed_chunk_by_chunk);

async fn bad_input_gets_4xx_and_never_reaches_upstream(redis: bool) {
    let f = Fixture::start(redis, "", &[("LLMR__SERVER__MAX_BODY_BYTES", "2048".into())]);
    f.ready().await;
    let url = f.url("/v1/chat/completions");
    let raw = |s: &'static str| {
        let url = url.clone();
        async move {
            let mut r = client()
                .post(&url)
                .insert_header(("content-type", "application/json"))
                .send_body(s)
                .await
                .unwrap();
            (r.status().as_u16(), json(&r.body().await.unwrap()))
        }
    };
    let (s, v) = raw("{not json").await;
    assert_eq!(s, 400);
    assert_eq!(v["error"]["type"], "invalid_request_error");
    let (s, v) = raw(r#"{"model":"mock-a"}"#).await;
    assert_eq!((s, v["error"]["param"].as_str()), (400, Some("messages")));
    let (s, v) = raw(r#"{"messages":[{"role":"user","content":"x"}]}"#).await;
    assert_eq!((s, v["error"]["param"].as_str()), (400, Some("model")));
    let (s, v) = raw(r#"{"model":"mock-a","messages":[{"role":"user","content":"x"}],"stream":"yes"}"#).await;
    assert_eq!((s, v["error"]["param"].as_str()), (400, Some("stream")));
    let (s, v) = raw(r#"{"model":"gpt-unknown","messages":[{"role":"user","content":"x"}]}"#).await;
    assert_eq!((s, v["error"]["code"].as_str()), (404, Some("model_not_found")));
    let big = serde_json::json!({"model": "mock-a", "messages": [{"role": "user", "content": "x".repeat(4096)}]});
    let (s, b) = post(&f.url("/v1/chat/completions"), &big).await;
    assert_eq!(s, 413);
    assert_eq!(json(&b)["error"]["code"], "request_too_large");
    let (s, v) = get(&f.url("/v1/nothing-here"), &[]).await;
    assert_eq!((s, v["error"]["code"].as_str()), (404, Some("unknown_url")));
    assert_eq!(f.mock.request_count(), 0, "no bad request reached the upstream");
}
both!(bad_input_gets_4xx_and_never_reaches_upstream);

async fn token_guards_every_route_but_health(redis: bool) {
    let f = Fixture::start(redis, "", &[("LLMR__SERVER__TOKEN", "s3cret".into())]);
    let url = f.url("/v1/chat/completions");
    let body = chat_body("echo", "hi", false);
    let (s, b) = post(&url, &body).await;
    assert_eq!(s, 401);
    assert_eq!(json(&b)["error"]["type"], "authentication_error");
    let (s, _) = post_with(&url, &body, &[("authorization", "Bearer wrong")]).await;
    assert_eq!(s, 401);
    let (s, _) = post_with(&url, &body, &[("authorization", "Bearer s3cret")]).await;
    assert_eq!(s, 200);
    assert_eq!(get(&f.url("/v1/models"), &[]).await.0, 401);
    assert_eq!(
        get(&f.url("/v1/models"), &[("authorization", "Bearer s3cret")]).await.0,
        200
    );
    let (s, v) = get(&f.url("/health"), &[]).await;
    assert_eq!(s, 200);
    assert_eq!(v["status"], "ok");
}
both!(token_guards_every_route_but_health);

async fn models_and_health_show_the_cluster(redis: bool) {
    let f = Fixture::start(redis, "", &[]);
    f.ready().await;
    let (s, v) = get(&f.url("/v1/models"), &[]).await;
    assert_eq!(s, 200);
    assert_eq!(v["object"], "list");
    let ids: Vec<&str> = v["data"]
        .as_array()
        .unwrap()
        .iter()
        .map(|m| m["id"].as_str().unwrap())
        .collect();
    assert_eq!(ids, vec!["echo", "mock-a", "mock-b"]);
    let (s, m) = get(&f.url("/v1/models/mock-b"), &[]).await;
    assert_eq!((s, m["owned_by"].as_str()), (200, Some("up")));
    assert_eq!(get(&f.url("/v1/models/nope"), &[]).await.0, 404);
    let (s, h) = get(&f.url("/health"), &[]).await;
    assert_eq!(s, 200);
    assert_eq!(h["backend"], if redis { "redis" } else { "memory" });
    for feature in [
        "chat",
        "responses",
        "mcp",
        "server_side_tools",
        "routing_state",
        "usage",
        "cache",
    ] {
        assert_eq!(h["features"][feature], "ok", "{feature}: {h}");
    }
    let services: Vec<&str> = h["services"]
        .as_array()
        .unwrap()
        .iter()
        .map(|s| s["service"].as_str().unwrap())
        .collect();
    assert!(
        ["gateway", "router", "worker"].iter().all(|s| services.contains(s)),
        "{services:?}"
    );
    let up = h["providers"]
        .as_array()
        .unwrap()
        .iter()
        .find(|p| p["name"] == "up")
        .unwrap();
    assert_eq!(up["state"], "ok");
}
both!(models_and_health_show_the_cluster);

async fn failing_upstream_fails_over_then_502(redis: bool) {
    let backup = MockUpstream::start(&["mock-a"]);
    let f = Fixture::start(redis, &mock_provider("backup", &backup.base_url(), &["mock-a"]), &[]);
    f.ready().await;
    f.mock.set_default(Behavior::status(500));
    for i in 0..4 {
        let (s, b) = post(
            &f.url("/v1/chat/completions"),
            &chat_body("mock-a", &format!("q{i}"), i % 2 == 0),
        )
        .await;
        assert_eq!(s, 200, "{}", String::from_utf8_lossy(&b));
    }
    assert_eq!(backup.request_count(), 4, "every request ended at the healthy upstream");
    backup.set_default(Behavior::status(503));
    let (s, b) = post(&f.url("/v1/chat/completions"), &chat_body("mock-a", "doomed", false)).await;
    assert_eq!(s, 502);
    assert_eq!(json(&b)["error"]["code"], "upstream_error");
    let (s, b) = post(
        &f.url("/v1/chat/completions"),
        &chat_body("mock-b", "client fault", false),
    )
    .await;
    assert_eq!(s, 502, "{}", String::from_utf8_lossy(&b));
    f.mock.set_default(Behavior::status(422));
    let (s, b) = post(
        &f.url("/v1/chat/completions"),
        &chat_body("mock-b", "client fault", false),
    )
    .await;
    assert_eq!(s, 422, "the upstream's verdict on a bad request is passed on");
    assert_eq!(json(&b)["error"]["message"], "mock error 422");
}
both!(failing_upstream_fails_over_then_502);

async fn a_stream_broken_after_its_start_ends_with_an_error_event(redis: bool) {
    let f = Fixture::start(redis, "", &[]);
    f.ready().await;
    f.mock.set_default(Behavior {
        drop_after: Some(2),
        chunk_delay: Duration::from_millis(20),
        ..Behavior::ok()
    });
    let (s, raw) = post(
        &f.url("/v1/chat/completions"),
        &chat_body("mock-a", "one two three four five six", true),
    )
    .await;
    assert_eq!(s, 200);
    let events = sse_events(&raw);
    assert_eq!(events.last().map(String::as_str), Some("[DONE]"), "{events:?}");
    let err: serde_json::Value = serde_json::from_str(&events[events.len() - 2]).unwrap();
    assert_eq!(err["error"]["code"], "upstream_error", "{events:?}");
    assert!(
        !streamed_text(&events).is_empty(),
        "what arrived before the break was relayed"
    );
}
both!(a_stream_broken_after_its_start_ends_with_an_error_event);

async fn the_deadline_ends_a_hung_request_with_504(redis: bool) {
    let f = Fixture::start(redis, "", &[("LLMR__SERVER__REQUEST_TIMEOUT_MS", "700".into())]);
    f.ready().await;
    f.mock.set_default(Behavior {
        hang: true,
        ..Behavior::ok()
    });
    let start = Instant::now();
    let (s, b) = post(&f.url("/v1/chat/completions"), &chat_body("mock-a", "hang", false)).await;
    assert_eq!(s, 504, "{}", String::from_utf8_lossy(&b));
    assert_eq!(json(&b)["error"]["code"], "timeout");
    assert!(
        start.elapsed() < Duration::from_millis(2500),
        "took {:?}",
        start.elapsed()
    );
    assert!(
        f.mock.wait_for_disconnects(1, Duration::from_secs(5)).await,
        "the upstream call was abandoned"
    );
}
both!(the_deadline_ends_a_hung_request_with_504);

async fn a_client_that_leaves_cancels_the_upstream_call(redis: bool) {
    let f = Fixture::start(redis, "", &[]);
    f.ready().await;
    f.mock.set_default(Behavior {
        chunk_delay: Duration::from_millis(300),
        ..Behavior::ok()
    });
    let text = "w ".repeat(40);
    {
        let c = client();
        let mut resp = c
            .post(f.url("/v1/chat/completions"))
            .send_json(&chat_body("mock-a", &text, true))
            .await
            .unwrap();
        assert_eq!(resp.status().as_u16(), 200);
        let first = resp.next().await.unwrap().unwrap();
        assert!(first.starts_with(b"data: "));
    } // the client goes away mid-stream
    assert!(
        f.mock.wait_for_disconnects(1, Duration::from_secs(5)).await,
        "the worker aborted the upstream call"
    );
}
both!(a_client_that_leaves_cancels_the_upstream_call);

async fn trace_context_reaches_the_upstream(redis: bool) {
    let f = Fixture::start(redis, "", &[]);
    f.ready().await;
    let tp = "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01";
    let (s, _) = post_with(
        &f.url("/v1/chat/completions"),
        &chat_body("mock-a", "traced", false),
        &[("traceparent", tp), ("tracestate", "vendor=opaque,other=1")],
    )
    .await;
    assert_eq!(s, 200);
    let seen = f.mock.requests()[0].clone();
    let tp_seen = seen.traceparent.unwrap();
    assert_eq!(
        &tp_seen[3..35],
        "4bf92f3577b34da6a3ce929d0e0e4736",
        "same trace: {tp_seen}"
    );
    assert_eq!(
        seen.tracestate.as_deref(),
        Some("vendor=opaque,other=1"),
        "tracestate carried"
    );
}
both!(trace_context_reaches_the_upstream);

/// No exporter is configured here: no span tree is built, yet a request without a
/// `traceparent` reaches the upstream with one of its own (a new trace, not sampled), and the
/// next request with another.
async fn without_an_exporter_each_request_still_carries_a_trace(redis: bool) {
    let f = Fixture::start(redis, "", &[]);
    f.ready().await;
    for _ in 0..2 {
        let (s, _) = post(&f.url("/v1/chat/completions"), &chat_body("mock-a", "untraced", false)).await;
        assert_eq!(s, 200);
    }
    let seen: Vec<String> = f
        .mock
        .requests()
        .iter()
        .map(|r| r.traceparent.clone().expect("a traceparent reached the upstream"))
        .collect();
    assert_eq!(seen.len(), 2);
    for tp in &seen {
        assert!(llmr_telemetry::valid_traceparent(tp), "{tp}");
        assert!(tp.ends_with("-00"), "a new trace is not sampled: {tp}");
    }
    assert_ne!(seen[0][3..35], seen[1][3..35], "one trace per request: {seen:?}");
}
both!(without_an_exporter_each_request_still_carries_a_trace);

/// `/metrics` as text.
async fn metrics_text(url: &str) -> String {
    let mut resp = client().get(url).send().await.unwrap();
    String::from_utf8_lossy(&resp.body().limit(8 << 20).await.unwrap()).into_owned()
}

/// One raw HTTP/1.1 request on `stream`; the answer's head and body as text.
fn raw_request(stream: &mut std::net::TcpStream, path: &str) -> String {
    use std::io::{Read, Write};
    let body = r#"{"model":"echo","messages":[{"role":"user","content":"hi"}]}"#;
    write!(
        stream,
        "POST {path} HTTP/1.1\r\nhost: x\r\ncontent-type: application/json\r\ncontent-length: {}\r\n\r\n{body}",
        body.len()
    )
    .unwrap();
    stream.set_read_timeout(Some(Duration::from_secs(10))).unwrap();
    let mut buf = vec![0; 8192];
    let n = stream.read(&mut buf).unwrap();
    String::from_utf8_lossy(&buf[..n]).into_owned()
}

/// Past `server.max_connections` open client connections, a new request is refused at once
/// with 503 `overloaded`, `Retry-After` and its connection closed (instead of the process
/// failing at its open-file limit); probes are still answered; once connections close, new
/// requests are served again.
async fn past_the_connection_bound_requests_are_refused_clearly(redis: bool) {
    let f = Fixture::start(redis, "[server]\nmax_connections = 4\n", &[]);
    let addr = f.url("").trim_start_matches("http://").trim_end_matches('/').to_owned();
    let connect = || std::net::TcpStream::connect(&addr).unwrap();
    let mut held: Vec<_> = (0..4).map(|_| connect()).collect();
    // One request on each: every connection has been taken up by the server (and counted).
    for c in &mut held {
        let answer = raw_request(c, "/v1/chat/completions");
        assert!(answer.starts_with("HTTP/1.1 200"), "within the bound: {answer}");
    }
    let mut fifth = connect();
    let started = Instant::now();
    let answer = raw_request(&mut fifth, "/v1/chat/completions").to_ascii_lowercase();
    assert!(answer.starts_with("http/1.1 503"), "{answer}");
    assert!(answer.contains("retry-after: 1"), "{answer}");
    assert!(answer.contains("connection: close"), "{answer}");
    assert!(
        answer.contains("\"overloaded\"") && answer.contains("max_connections"),
        "{answer}"
    );
    assert!(started.elapsed() < Duration::from_secs(2), "refused at once");
    let probe = raw_request(&mut connect(), "/healthz");
    assert!(!probe.starts_with("HTTP/1.1 503"), "probes are answered: {probe}");
    held.clear();
    drop(fifth);
    let served = eventually(Duration::from_secs(5), || async {
        let mut c = connect();
        raw_request(&mut c, "/v1/chat/completions").starts_with("HTTP/1.1 200")
    })
    .await;
    assert!(served, "served again once the connections closed");
    let text = metrics_text(&f.url("/metrics")).await;
    assert!(text.contains("llmr_shed_total{reason=\"connections\"} 1"), "{text}");
}
both!(past_the_connection_bound_requests_are_refused_clearly);

async fn metrics_and_probes_tell_what_happened(redis: bool) {
    let f = Fixture::start(redis, "", &[("LLMR__SERVER__TOKEN", "secret-token".into())]);
    // Metrics are per process: compare with a scrape before (other tests may share it).
    let (_, before) = get_text(&f.url("/metrics")).await;
    let auth = [("authorization", "Bearer secret-token")];
    let url = f.url("/v1/chat/completions");
    let (s, _) = post_with(&url, &chat_body("echo", "one two", false), &auth).await;
    assert_eq!(s, 200);
    let (s, _) = post_with(&url, &chat_body("echo", "three four", true), &auth).await;
    assert_eq!(s, 200);
    let (s, _) = post_with(&url, &chat_body("nope", "x", false), &auth).await;
    assert_eq!(s, 404);
    // Probes and metrics need no token.
    assert_eq!(get(&f.url("/healthz"), &[]).await.0, 200);
    let (s, v) = get(&f.url("/readyz"), &[]).await;
    assert_eq!((s, v["status"].as_str()), (200, Some("ready")));
    let (s, text) = get_text(&f.url("/metrics")).await;
    assert_eq!(s, 200);
    promtool_check(&text);
    let delta = |series: &str| metric(&text, series) - metric(&before, series);
    for (series, expected) in [
        (
            r#"llmr_http_requests_total{method="POST",route="/v1/chat/completions",status="200"}"#,
            2.0,
        ),
        (
            r#"llmr_http_requests_total{method="POST",route="/v1/chat/completions",status="404"}"#,
            1.0,
        ),
        (
            r#"llmr_upstream_attempts_total{model="echo",outcome="ok",provider="echo"}"#,
            2.0,
        ),
        (
            r#"gen_ai_client_token_usage_sum{gen_ai_provider_name="echo",gen_ai_request_model="echo",gen_ai_token_type="input"}"#,
            4.0,
        ),
        (
            r#"gen_ai_client_token_usage_sum{gen_ai_provider_name="echo",gen_ai_request_model="echo",gen_ai_token_type="output"}"#,
            4.0,
        ),
        (
            r#"gen_ai_server_time_to_first_token_seconds_count{gen_ai_request_model="echo"}"#,
            1.0,
        ),
    ] {
        assert_eq!(delta(series), expected, "{series} in:\n{text}");
    }
    for series in [
        r#"llmr_target_load{target="echo/echo"}"#,
        r#"llmr_circuit_state{kind="target",target="echo/echo"}"#,
        r#"llmr_stream_pending{group="routers",stream="requests"}"#,
        r#"llmr_consumer_in_flight{stream="requests"}"#,
    ] {
        assert_eq!(metric(&text, series), 0.0, "{series} idle in:\n{text}");
    }
}
both!(metrics_and_probes_tell_what_happened);

#[actix_rt::test]
async fn redis_unreachable_is_a_prompt_503() {
    let mut f = Fixture::start(true, "", &[]);
    let (s, _) = post(&f.url("/v1/chat/completions"), &chat_body("echo", "before", false)).await;
    assert_eq!(s, 200);
    f.app.redis.as_mut().unwrap().kill();
    let start = Instant::now();
    let (s, b) = post(&f.url("/v1/chat/completions"), &chat_body("echo", "during", false)).await;
    let took = start.elapsed();
    assert_eq!(s, 503, "{}", String::from_utf8_lossy(&b));
    assert_eq!(json(&b)["error"]["code"], "service_unavailable");
    assert!(took < Duration::from_secs(1), "took {took:?}");
    let (s, h) = get(&f.url("/health"), &[]).await;
    assert_eq!(s, 503);
    assert!(
        h["features"]["chat"].as_str().unwrap().starts_with("unavailable: "),
        "{h}"
    );
    assert!(
        h["features"]["usage"].as_str().unwrap().starts_with("unavailable: "),
        "{h}"
    );
    let (_, metrics) = get_text(&f.url("/metrics")).await;
    assert!(
        metrics.contains("llmr_feature_available{feature=\"chat\"} 0"),
        "{metrics}"
    );
    assert_eq!(f.mock.request_count(), 0);
}

#[actix_rt::test]
async fn separate_services_refuse_to_start_without_redis() {
    let s = TestConfig::new(ECHO).env("LLMR__SERVER__PORT", 0).settings();
    for role in [Role::Gateway, Role::Router, Role::Worker { pool: "default".into() }] {
        let e = llmrouter::spawn(role.clone(), s.clone()).err().expect("must refuse");
        assert!(e.to_string().contains("needs Redis"), "{e}");
    }
}

async fn embeddings_and_text_completions_are_routed_with_failover_and_usage(redis: bool) {
    let down = MockUpstream::start(&["m"]);
    down.set_default(Behavior::status(500));
    let extra = format!(
        "{}[[models]]\nname = \"g\"\ntargets = [{{provider = \"down\", model = \"m\"}}]\nfallbacks = [\"g2\"]\n[[models]]\nname = \"g2\"\ntargets = [{{provider = \"up\", model = \"mock-a\"}}]\n",
        mock_provider("down", &down.base_url(), &["m"])
    );
    let f = Fixture::start(redis, &extra, &[]);
    f.ready().await;
    let models = f.url("/v1/models");
    let listed = eventually(Duration::from_secs(10), || async {
        let (_, v) = get(&models, &[]).await;
        v["data"].as_array().is_some_and(|d| d.iter().any(|m| m["id"] == "m"))
    });
    assert!(listed.await, "the broken provider is known before the first request");
    let (s, b) = post(
        &f.url("/v1/embeddings"),
        &serde_json::json!({"model": "g", "input": ["a", "b"]}),
    )
    .await;
    assert_eq!(s, 200, "{}", String::from_utf8_lossy(&b));
    let v = json(&b);
    assert_eq!(v["data"].as_array().map(Vec::len), Some(2));
    assert_eq!(
        v["data"][1]["embedding"],
        serde_json::json!([0.25, -0.5]),
        "the upstream's answer"
    );
    let (s, b) = post(
        &f.url("/v1/completions"),
        &serde_json::json!({"model": "g", "prompt": "finish this"}),
    )
    .await;
    assert_eq!(s, 200, "{}", String::from_utf8_lossy(&b));
    assert_eq!(json(&b)["choices"][0]["text"], "mock: finish this");
    // Both failed over from the broken target, which was asked at its own paths.
    let down_paths: Vec<String> = down.requests().iter().map(|r| r.path.clone()).collect();
    assert_eq!(down_paths, ["/v1/embeddings", "/v1/completions"]);
    let up_paths: Vec<String> = f.mock.requests().iter().map(|r| r.path.clone()).collect();
    assert_eq!(up_paths, ["/v1/embeddings", "/v1/completions"]);
    assert_eq!(f.mock.requests()[0].body["model"], "mock-a", "renamed for the upstream");
    // Usage as the upstream reported it; written just after each answer: wait for it (bounded).
    let usage_url = f.url("/v1/usage");
    let prompt = || async {
        let (_, usage) = get(&usage_url, &[]).await;
        let sum: u64 = usage["data"]
            .as_array()
            .unwrap()
            .iter()
            .filter(|r| r["model"] == "mock-a")
            .map(|r| r["prompt_tokens"].as_u64().unwrap())
            .sum();
        (sum, usage)
    };
    eventually(Duration::from_secs(5), || async { prompt().await.0 >= 6 }).await;
    let (sum, usage) = prompt().await;
    assert_eq!(sum, 6, "{usage}");
    // Bad input is a 400 naming the field and reaches no upstream.
    for (path, body, param) in [
        (
            "/v1/embeddings",
            serde_json::json!({"model": "g", "input": []}),
            "input",
        ),
        (
            "/v1/embeddings",
            serde_json::json!({"model": "g", "input": "x", "encoding_format": "hex"}),
            "encoding_format",
        ),
        ("/v1/completions", serde_json::json!({"model": "g"}), "prompt"),
    ] {
        let (s, b) = post(&f.url(path), &body).await;
        assert_eq!((s, json(&b)["error"]["param"].as_str()), (400, Some(param)));
    }
    assert_eq!(f.mock.request_count() + down.request_count(), 4);
}
both!(embeddings_and_text_completions_are_routed_with_failover_and_usage);

async fn azure_and_gemini_providers_speak_their_dialects(redis: bool) {
    let azure = MockUpstream::start(&[]);
    let gemini = MockUpstream::start(&["models/gemini-x"]);
    let root = azure.base_url().trim_end_matches("/v1").to_owned();
    let extra = format!(
        "[[providers]]\nname = \"az\"\ntype = \"azure\"\nbase_url = \"{root}\"\napi_version = \"2024-10-21\"\napi_keys = [\"az-key\"]\nmodels = [\"gpt-4o\"]\ndeployments = {{ \"gpt-4o\" = \"dep-1\" }}\n\
         [[providers]]\nname = \"gm\"\ntype = \"gemini\"\nbase_url = \"{}\"\napi_keys = [\"gm-key\"]\n",
        gemini.base_url()
    );
    let f = Fixture::start(redis, &extra, &[]);
    f.ready().await;
    // Azure: the deployment URL with api-version, the key in `api-key`.
    let (s, b) = post(
        &f.url("/v1/chat/completions"),
        &chat_body("gpt-4o", "hello azure", false),
    )
    .await;
    assert_eq!(s, 200, "{}", String::from_utf8_lossy(&b));
    assert_eq!(json(&b)["choices"][0]["message"]["content"], "mock: hello azure");
    let r = azure.requests().last().unwrap().clone();
    assert_eq!(
        (r.path.as_str(), r.query.as_str()),
        ("/openai/deployments/dep-1/chat/completions", "api-version=2024-10-21")
    );
    assert!(r.headers.iter().any(|(k, v)| k == "api-key" && v == "az-key"));
    assert_eq!(r.authorization, None, "no bearer for Azure");
    // Its content filter is a clear 400 and is not failed over or counted against the target.
    azure.push(Behavior {
        status: 400,
        error_code: Some("content_filter".into()),
        ..Behavior::default()
    });
    let (s, b) = post(
        &f.url("/v1/chat/completions"),
        &chat_body("gpt-4o", "something filtered", false),
    )
    .await;
    assert_eq!(s, 400);
    assert!(
        json(&b)["error"]["message"]
            .as_str()
            .unwrap()
            .contains("content filter"),
        "{}",
        json(&b)
    );
    // Gemini: its `models/` ids listed without the prefix; the key in both headers.
    let models = f.url("/v1/models");
    let listed = eventually(Duration::from_secs(10), || async {
        let (_, v) = get(&models, &[]).await;
        v["data"]
            .as_array()
            .is_some_and(|d| d.iter().any(|m| m["id"] == "gemini-x"))
    });
    assert!(listed.await, "gemini's models listed without `models/`");
    let (s, b) = post(
        &f.url("/v1/chat/completions"),
        &chat_body("gemini-x", "hello gemini", true),
    )
    .await;
    assert_eq!(s, 200, "{}", String::from_utf8_lossy(&b));
    assert_eq!(streamed_text(&sse_events(&b)), "mock: hello gemini");
    let r = gemini.requests().last().unwrap().clone();
    assert_eq!(r.path, "/v1/chat/completions");
    assert!(r.headers.iter().any(|(k, v)| k == "x-goog-api-key" && v == "gm-key"));
}
both!(azure_and_gemini_providers_speak_their_dialects);

async fn anthropic_upstreams_are_translated_and_fail_over_to_other_types(redis: bool) {
    let claude = MockUpstream::start(&[]);
    let extra = format!(
        "[[providers]]\nname = \"claude\"\ntype = \"anthropic\"\nbase_url = \"{}\"\napi_keys = [\"ak-1\"]\nmodels = [\"claude-x\"]\n\
         [[models]]\nname = \"g\"\ntargets = [{{provider = \"claude\", model = \"claude-x\"}}]\nfallbacks = [\"g2\"]\n\
         [[models]]\nname = \"g2\"\ntargets = [{{provider = \"up\", model = \"mock-a\"}}]\n",
        claude.base_url()
    );
    let f = Fixture::start(redis, &extra, &[]);
    f.ready().await;
    // Plain: translated both ways, with Anthropic's headers.
    let mut body = chat_body("claude-x", "hello claude", false);
    body["messages"] =
        serde_json::json!([{"role": "system", "content": "be brief"}, {"role": "user", "content": "hello claude"}]);
    let (s, b) = post(&f.url("/v1/chat/completions"), &body).await;
    assert_eq!(s, 200, "{}", String::from_utf8_lossy(&b));
    let v = json(&b);
    assert_eq!(v["choices"][0]["message"]["content"], "mock: hello claude");
    assert_eq!(v["choices"][0]["finish_reason"], "stop");
    assert_eq!(v["usage"]["prompt_tokens"], 2);
    let sent = claude.requests().last().unwrap().clone();
    assert_eq!(sent.path, "/v1/messages");
    assert_eq!(sent.body["system"], "be brief");
    assert_eq!(sent.body["max_tokens"], 4096);
    assert!(sent.headers.iter().any(|(k, v)| k == "x-api-key" && v == "ak-1"));
    assert!(
        sent.headers
            .iter()
            .any(|(k, v)| k == "anthropic-version" && v == "2023-06-01")
    );
    // Streamed: OpenAI chunks, a finish and the usage chunk the client asked for.
    let mut streamed = chat_body("claude-x", "stream it please", true);
    streamed["stream_options"] = serde_json::json!({"include_usage": true});
    let (s, b) = post(&f.url("/v1/chat/completions"), &streamed).await;
    assert_eq!(s, 200);
    let events = sse_events(&b);
    assert_eq!(streamed_text(&events), "mock: stream it please");
    assert!(events.iter().any(|e| e.contains("\"finish_reason\":\"stop\"")));
    assert!(events.iter().any(|e| e.contains("\"prompt_tokens\":3")), "{events:?}");
    // Overloaded (529) before the first byte: the plan moves on to an OpenAI-type target.
    claude.push(Behavior {
        status: 529,
        retry_after: Some("1".into()),
        ..Behavior::default()
    });
    let (s, b) = post(&f.url("/v1/chat/completions"), &chat_body("g", "fail over", false)).await;
    assert_eq!(s, 200, "{}", String::from_utf8_lossy(&b));
    assert_eq!(
        json(&b)["choices"][0]["message"]["content"],
        "mock: fail over",
        "answered by the openai-type target"
    );
    assert_eq!(f.mock.requests().last().unwrap().body["model"], "mock-a");
}
both!(anthropic_upstreams_are_translated_and_fail_over_to_other_types);

async fn ollama_hosts_are_discovered_and_spoken_to_natively(redis: bool) {
    let host = MockUpstream::start(&["llama3.1:8b"]);
    let root = host.base_url().trim_end_matches("/v1").to_owned();
    let extra = format!("[[providers]]\nname = \"local\"\ntype = \"ollama\"\nbase_url = \"{root}\"\n");
    let f = Fixture::start(redis, &extra, &[]);
    f.ready().await;
    let models = f.url("/v1/models");
    let listed = eventually(Duration::from_secs(10), || async {
        let (_, v) = get(&models, &[]).await;
        v["data"]
            .as_array()
            .is_some_and(|d| d.iter().any(|m| m["id"] == "llama3.1:8b"))
    });
    assert!(listed.await, "discovered through /api/tags");
    let mut body = chat_body("llama3.1:8b", "hello ollama", false);
    body["keep_alive"] = serde_json::json!("10m");
    body["options"] = serde_json::json!({"num_ctx": 8192});
    body["max_tokens"] = serde_json::json!(20);
    let (s, b) = post(&f.url("/v1/chat/completions"), &body).await;
    assert_eq!(s, 200, "{}", String::from_utf8_lossy(&b));
    let v = json(&b);
    assert_eq!(v["choices"][0]["message"]["content"], "mock: hello ollama");
    assert_eq!(v["usage"]["prompt_tokens"], 2);
    let sent = host.requests().last().unwrap().clone();
    assert_eq!(sent.path, "/api/chat");
    assert_eq!(sent.body["keep_alive"], "10m");
    assert_eq!(
        sent.body["options"],
        serde_json::json!({"num_ctx": 8192, "num_predict": 20})
    );
    // NDJSON streamed back as OpenAI chunks, with usage when asked.
    let mut streamed = chat_body("llama3.1:8b", "one two three", true);
    streamed["stream_options"] = serde_json::json!({"include_usage": true});
    let (s, b) = post(&f.url("/v1/chat/completions"), &streamed).await;
    assert_eq!(s, 200);
    let events = sse_events(&b);
    assert_eq!(streamed_text(&events), "mock: one two three");
    assert!(events.iter().any(|e| e.contains("\"finish_reason\":\"stop\"")));
    assert!(
        events.iter().any(|e| e.contains("\"completion_tokens\":4")),
        "{events:?}"
    );
    // Embeddings through /api/embed, floats and base64.
    let (s, b) = post(
        &f.url("/v1/embeddings"),
        &serde_json::json!({"model": "llama3.1:8b", "input": ["a", "b"]}),
    )
    .await;
    assert_eq!(s, 200, "{}", String::from_utf8_lossy(&b));
    assert_eq!(json(&b)["data"][1]["embedding"], serde_json::json!([0.5, -0.25]));
    let (_, b) = post(
        &f.url("/v1/embeddings"),
        &serde_json::json!({"model": "llama3.1:8b", "input": "a", "encoding_format": "base64"}),
    )
    .await;
    assert_eq!(
        json(&b)["data"][0]["embedding"],
        "AAAAPwAAgL4=",
        "little-endian f32 0.5, -0.25"
    );
    assert_eq!(host.requests().last().unwrap().path, "/api/embed");
}
both!(ollama_hosts_are_discovered_and_spoken_to_natively);

/// Sends `n` chats at once with `priority`; returns (status, retry-after, elapsed) of each.
fn burst(
    url: &str,
    n: usize,
    priority: &'static str,
) -> Vec<actix_rt::task::JoinHandle<(u16, Option<String>, Duration)>> {
    (0..n)
        .map(|i| {
            let url = url.to_owned();
            actix_rt::spawn(async move {
                let t = Instant::now();
                let mut resp = client()
                    .post(&url)
                    .insert_header(("x-llmr-priority", priority))
                    .send_json(&chat_body("mock-a", &format!("{priority} {i}"), false))
                    .await
                    .unwrap();
                let _ = resp.body().await;
                let retry = resp
                    .headers()
                    .get("retry-after")
                    .map(|v| v.to_str().unwrap().to_owned());
                (resp.status().as_u16(), retry, t.elapsed())
            })
        })
        .collect()
}

async fn overload_is_refused_at_once_batch_first(redis: bool) {
    // Two calls at a time, 1.5 s each (none ends while the test fills the queue): everything
    // else queues in jobs:default.
    let env = [
        ("LLMR__WORKER__MAX_IN_FLIGHT", "2".to_string()),
        ("LLMR__SERVER__MAX_QUEUED", "6".to_string()),
        ("LLMR__SERVER__MAX_QUEUED_BATCH", "3".to_string()),
        // The bound by queue length alone: with no bound on the waiting time (0), the
        // behaviour before it.
        ("LLMR__SERVER__MAX_QUEUE_WAIT_MS", "0".to_string()),
    ];
    let f = Fixture::start(redis, "", &env);
    f.ready().await;
    f.mock.set_default(Behavior::latency(1500));
    let url = f.url("/v1/chat/completions");
    let settle = || tokio::time::sleep(Duration::from_millis(350));
    // 2 running, 3 queued.
    let mut admitted = burst(&url, 5, "interactive");
    settle().await;
    let batch = burst(&url, 1, "batch").pop().unwrap().await.unwrap();
    assert_eq!(batch.0, 503, "batch work is refused from 3 queued");
    assert_eq!(batch.1.as_deref(), Some("1"));
    assert!(batch.2 < Duration::from_millis(300), "refused at once: {:?}", batch.2);
    // Interactive work still has room (below 6): 4 more queue.
    admitted.extend(burst(&url, 4, "interactive"));
    settle().await;
    let refused: Vec<_> = futures_util::future::join_all(burst(&url, 5, "interactive")).await;
    for r in &refused {
        let (status, retry, took) = r.as_ref().unwrap();
        assert_eq!((*status, retry.as_deref()), (503, Some("1")), "over 6 queued: refused");
        assert!(*took < Duration::from_millis(300), "refused at once: {took:?}");
    }
    let (s, b) = post_with(&url, &chat_body("mock-a", "x", false), &[("x-llmr-priority", "urgent")]).await;
    assert_eq!(s, 400, "{}", String::from_utf8_lossy(&b));
    // Everything admitted is answered, none hangs; what was refused reached no upstream.
    for t in admitted {
        let (status, _, took) = t.await.unwrap();
        assert_eq!(status, 200);
        assert!(took < Duration::from_secs(20), "{took:?}");
    }
    assert_eq!(f.mock.request_count(), 9);
    let slowest = refused.iter().map(|r| r.as_ref().unwrap().2).max().unwrap_or_default();
    eprintln!("overload: 9 admitted and answered, 6 refused, the slowest refusal in {slowest:?}");
}
both!(overload_is_refused_at_once_batch_first);

async fn interactive_work_is_served_before_a_batch_backlog(redis: bool) {
    // Four calls at a time, a quarter of them (one) for batch work; 300 ms each.
    let env = [("LLMR__WORKER__MAX_IN_FLIGHT", "4".to_string())];
    let f = Fixture::start(redis, "", &env);
    f.ready().await;
    f.mock.set_default(Behavior::latency(300));
    let url = f.url("/v1/chat/completions");
    let t = Instant::now();
    let batch = burst(&url, 12, "batch");
    tokio::time::sleep(Duration::from_millis(150)).await;
    let interactive: Vec<_> = futures_util::future::join_all(burst(&url, 3, "interactive")).await;
    let slowest = interactive.iter().map(|r| r.as_ref().unwrap().2).max().unwrap();
    for r in &interactive {
        assert_eq!(r.as_ref().unwrap().0, 200);
    }
    // Served at once, not behind the batch backlog (which needs 12 × 300 ms on its one place).
    assert!(
        slowest < Duration::from_millis(900),
        "interactive answered in {slowest:?}"
    );
    let batch: Vec<_> = futures_util::future::join_all(batch).await;
    let batch_done = t.elapsed();
    for r in &batch {
        assert_eq!(r.as_ref().unwrap().0, 200, "batch work is answered too");
    }
    eprintln!(
        "priority: 3 interactive answered in at most {slowest:?} behind 12 queued batch requests (all answered, after {batch_done:?})"
    );
}
both!(interactive_work_is_served_before_a_batch_backlog);

/// One answer of [`chats`]: status, `Retry-After`, time taken, body.
type Answer = (u16, Option<String>, Duration, bytes::Bytes);

/// Sends `n` chats to `mock-a` at once, with `Authorization: Bearer {key}` when given.
fn chats(url: &str, n: usize, key: Option<&'static str>) -> Vec<actix_rt::task::JoinHandle<Answer>> {
    (0..n)
        .map(|i| {
            let url = url.to_owned();
            actix_rt::spawn(async move {
                let t = Instant::now();
                let mut req = client().post(&url);
                if let Some(k) = key {
                    req = req.insert_header(("authorization", format!("Bearer {k}")));
                }
                let mut resp = req
                    .send_json(&chat_body("mock-a", &format!("shed {i}"), false))
                    .await
                    .unwrap();
                let body = resp.body().await.unwrap();
                let retry = resp
                    .headers()
                    .get("retry-after")
                    .map(|v| v.to_str().unwrap().to_owned());
                (resp.status().as_u16(), retry, t.elapsed(), body)
            })
        })
        .collect()
}

/// A pool of one worker with 4 places and an upstream answering in 200 ms (20 a second),
/// warmed up: its latency is recorded and the gateway has placed `mock-a` in its pool.
async fn slow_pool(redis: bool, extra_toml: &str, max_wait_ms: u64) -> Fixture {
    let env = [
        ("LLMR__WORKER__MAX_IN_FLIGHT", "4".to_string()),
        ("LLMR__SERVER__MAX_QUEUE_WAIT_MS", max_wait_ms.to_string()),
    ];
    let f = Fixture::start(redis, extra_toml, &env);
    f.ready().await;
    f.mock.set_default(Behavior::latency(200));
    let url = f.url("/v1/chat/completions");
    for _ in 0..2 {
        for r in futures_util::future::join_all(chats(&url, 4, None)).await {
            assert_eq!(r.unwrap().0, 200);
        }
    }
    // The gateway asks the router's plan for the models it saw once a second.
    tokio::time::sleep(Duration::from_millis(1300)).await;
    f
}

async fn a_slow_pool_refuses_what_would_wait_too_long(redis: bool) {
    let f = slow_pool(redis, "", 1000).await;
    let before = f.mock.request_count();
    let url = f.url("/v1/chat/completions");
    // 60 at once: about 20 fit in one second of the pool's 20 a second.
    let answers: Vec<Answer> = futures_util::future::join_all(chats(&url, 60, None))
        .await
        .into_iter()
        .map(Result::unwrap)
        .collect();
    let (admitted, refused): (Vec<&Answer>, Vec<&Answer>) = answers.iter().partition(|a| a.0 == 200);
    for (status, retry, took, body) in &refused {
        assert_eq!(*status, 503, "{}", String::from_utf8_lossy(body));
        let v = json(body);
        assert_eq!(v["error"]["code"], "overloaded");
        let msg = v["error"]["message"].as_str().unwrap();
        assert!(msg.contains("wait") && msg.contains("1.0 s"), "{msg}");
        let retry: u64 = retry.as_deref().unwrap().parse().unwrap();
        assert!((1..=3).contains(&retry), "Retry-After {retry}");
        assert!(*took < Duration::from_secs(1), "refused at once: {took:?}");
    }
    let longest = admitted.iter().map(|a| a.2).max().unwrap();
    assert!(
        longest < Duration::from_millis(2500),
        "none admitted waits much past the bound: {longest:?}"
    );
    let counted = format!("llmr_shed_total{{reason=\"queue_wait\"}} {}", refused.len());
    let text = metrics_text(&f.url("/metrics")).await;
    assert!(text.contains(&counted), "{counted} in /metrics:\n{text}");
    assert!(
        (8..=40).contains(&admitted.len()),
        "{} admitted, {} refused",
        admitted.len(),
        refused.len()
    );
    assert_eq!(
        f.mock.request_count() - before,
        admitted.len(),
        "refusals reach no upstream"
    );
    let slowest = refused.iter().map(|a| a.2).max().unwrap();
    eprintln!(
        "shed by waiting time: {} admitted (the longest in {longest:?}), {} refused (the slowest in {slowest:?})",
        admitted.len(),
        refused.len()
    );
}
both!(a_slow_pool_refuses_what_would_wait_too_long);

async fn a_key_with_a_tighter_wait_bound_is_refused_first(redis: bool) {
    let keys = "[[keys]]\nname = \"tight\"\nkey = \"sk-llmr-tight-wait\"\nmax_queue_wait_ms = 200\n";
    let f = slow_pool(redis, keys, 2000).await;
    let url = f.url("/v1/chat/completions");
    // 20 ahead: a second's wait, within the server's 2 s.
    let queued = chats(&url, 20, None);
    tokio::time::sleep(Duration::from_millis(100)).await;
    let (status, retry, took, body) = chats(&url, 1, Some("sk-llmr-tight-wait")).pop().unwrap().await.unwrap();
    assert_eq!(status, 503, "{}", String::from_utf8_lossy(&body));
    let msg = json(&body)["error"]["message"].as_str().unwrap().to_owned();
    assert!(msg.contains("0.2 s"), "the key's bound: {msg}");
    assert!(retry.is_some());
    assert!(took < Duration::from_secs(1), "{took:?}");
    let open = chats(&url, 1, None).pop().unwrap().await.unwrap();
    assert_eq!(open.0, 200, "the server's bound still admits it");
    for r in futures_util::future::join_all(queued).await {
        assert_eq!(r.unwrap().0, 200);
    }
}
both!(a_key_with_a_tighter_wait_bound_is_refused_first);
