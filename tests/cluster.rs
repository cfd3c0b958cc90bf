//! End-to-end tests with real processes: `llmrouter gateway`, `llmrouter router` and two
//! `llmrouter worker` processes over a throw-away redis-server and the mock upstream.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic, clippy::print_stderr)]

mod common;

use std::cell::RefCell;
use std::path::PathBuf;
use std::rc::Rc;
use std::time::{Duration, Instant};

use common::*;
use llmr_testkit::{Behavior, MockUpstream, Proc, free_port, wait_for_port};
use serde_json::json;

/// The testkit's process cluster with this suite's mock upstream.
struct Cluster {
    procs: ProcessCluster,
    mock: MockUpstream,
}

fn bin() -> PathBuf {
    PathBuf::from(env!("CARGO_BIN_EXE_llmrouter"))
}

impl Cluster {
    fn start(workers: usize, extra_env: &[(&'static str, String)]) -> Cluster {
        let mock = MockUpstream::start(&["mock-a"]);
        let toml = format!(
            "{ECHO}{}[worker]\nmax_in_flight = 8\nconnect_timeout_ms = 2000\nmax_response_bytes = 1048576\n",
            mock_provider("up", &mock.base_url(), &["mock-a"])
        );
        Cluster::start_with(mock, &toml, 1, workers, extra_env)
    }

    /// A cluster with `routers` routers and `workers` workers over `toml`.
    fn start_with(
        mock: MockUpstream,
        toml: &str,
        routers: usize,
        workers: usize,
        extra_env: &[(&'static str, String)],
    ) -> Cluster {
        let cfg = TestConfig::new(toml).env("RUST_LOG", "info").envs(extra_env);
        let mut c = Cluster {
            procs: ProcessCluster::new(&bin(), cfg, true),
            mock,
        };
        for _ in 0..routers {
            c.add("router", &["router"]);
        }
        for _ in 0..workers {
            c.add("worker", &["worker", "--pool", "default"]);
        }
        c.add("gateway", &["gateway"]);
        assert!(
            c.procs.listening(Duration::from_secs(20)),
            "gateway did not listen:\n{}",
            c.gateway().tail(30)
        );
        c
    }

    /// Router, worker, mcp-tools and gateway over `cfg` (the upstream is the caller's), ready.
    async fn with_tools(cfg: TestConfig) -> Cluster {
        let mut c = Cluster {
            procs: ProcessCluster::new(&bin(), cfg, true),
            mock: MockUpstream::start(&[]),
        };
        for role in ["router", "worker", "mcp-tools", "gateway"] {
            c.add(role, &[role]);
        }
        assert!(c.procs.listening(Duration::from_secs(20)));
        c.ready(1).await;
        c
    }

    /// Starts one more process of `kind`.
    fn add(&mut self, kind: &str, args: &[&str]) {
        self.procs.spawn(kind, args);
    }

    fn gateway(&self) -> &Proc {
        self.procs.named("gateway").next().unwrap()
    }

    /// The `i`-th router started.
    fn router(&mut self, i: usize) -> &mut Proc {
        self.procs.nth("router", i).unwrap()
    }

    /// The `i`-th worker started.
    fn worker(&mut self, i: usize) -> &mut Proc {
        self.procs.nth("worker", i).unwrap()
    }

    fn url(&self, path: &str) -> String {
        self.procs.url(path)
    }

    /// Waits until /health lists a router and `workers` workers.
    async fn ready(&self, workers: usize) {
        let url = self.url("/health");
        let ok = eventually(Duration::from_secs(20), || async {
            let (s, h) = get(&url, &[]).await;
            let services: Vec<String> = h["services"]
                .as_array()
                .map(|a| {
                    a.iter()
                        .map(|s| s["service"].as_str().unwrap_or("").to_owned())
                        .collect()
                })
                .unwrap_or_default();
            s == 200
                && services.iter().filter(|s| *s == "worker").count() >= workers
                && services.iter().any(|s| s == "router")
        })
        .await;
        assert!(
            ok,
            "cluster not ready:\n{}\n{}",
            self.procs
                .named("router")
                .next()
                .map(|p| p.tail(20))
                .unwrap_or_default(),
            self.gateway().tail(20)
        );
    }
}

#[actix_rt::test]
async fn separate_processes_serve_plain_and_streaming_completions() {
    let c = Cluster::start(2, &[]);
    c.ready(2).await;
    let (s, b) = post(
        &c.url("/v1/chat/completions"),
        &chat_body("mock-a", "over redis", false),
    )
    .await;
    assert_eq!(s, 200, "{}\n{}", String::from_utf8_lossy(&b), c.gateway().tail(20));
    assert_eq!(json(&b)["choices"][0]["message"]["content"], "mock: over redis");
    let (s, b) = post(
        &c.url("/v1/chat/completions"),
        &chat_body("mock-a", "streamed over redis", true),
    )
    .await;
    assert_eq!(s, 200);
    let events = sse_events(&b);
    assert_eq!(streamed_text(&events), "mock: streamed over redis");
    assert_eq!(events.last().map(String::as_str), Some("[DONE]"));
    let (s, b) = post(&c.url("/v1/chat/completions"), &chat_body("echo", "echo echo", false)).await;
    assert_eq!(
        (
            s,
            json(&b)["choices"][0]["message"]["content"].as_str().map(str::to_owned)
        ),
        (200, Some("echo echo".to_owned()))
    );
    let (s, v) = get(&c.url("/v1/models"), &[]).await;
    assert_eq!(s, 200);
    assert_eq!(v["data"].as_array().unwrap().len(), 2);
    let (s, b) = post(&c.url("/v1/chat/completions"), &chat_body("nope", "x", false)).await;
    assert_eq!(
        (s, json(&b)["error"]["code"].as_str().map(str::to_owned)),
        (404, Some("model_not_found".to_owned()))
    );
    // The trace continues through every process to the upstream.
    let tp = "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01";
    let (s, _) = post_with(
        &c.url("/v1/chat/completions"),
        &chat_body("mock-a", "traced", false),
        &[("traceparent", tp), ("tracestate", "vendor=opaque")],
    )
    .await;
    assert_eq!(s, 200);
    let last = c.mock.requests().last().unwrap().clone();
    let seen = last.traceparent.unwrap();
    assert_eq!(&seen[3..35], "4bf92f3577b34da6a3ce929d0e0e4736");
    // No exporter here: no span of ours is in between, so the upstream's parent is the
    // client's own span (with an exporter each hop is its own span: the OTLP tests).
    assert_eq!(&seen[36..52], "00f067aa0ba902b7", "the client's context as it came");
    assert_eq!(
        last.tracestate.as_deref(),
        Some("vendor=opaque"),
        "tracestate carried over Redis"
    );
}

/// Outcome counts of a bounded load.
#[derive(Default, Debug, Clone, Copy)]
struct Counts {
    ok: usize,
    wrong: usize,
    clean_errors: usize,
    late: usize,
    /// The longest any one request took.
    slowest: Duration,
}

/// The assistant text of a chat answer (streamed or whole), and whether it carries an error
/// in OpenAI's shape (an error body, or an error event in a stream).
fn answer_text(streamed: bool, status: u16, body: &[u8]) -> (String, bool) {
    if streamed && status == 200 {
        let events = sse_events(body);
        let error = events
            .iter()
            .any(|e| serde_json::from_str::<serde_json::Value>(e).is_ok_and(|v| v["error"].is_object()));
        (streamed_text(&events), error)
    } else {
        let v: serde_json::Value = serde_json::from_slice(body).unwrap_or_default();
        let error = v["error"]["message"].is_string() && v["error"]["type"].is_string();
        let text = v["choices"][0]["message"]["content"].as_str().unwrap_or_default();
        (text.to_owned(), error)
    }
}

/// Sends `total` requests with `concurrency` clients, the i-th asking `model` for
/// `"{prefix} {i}"` (streamed when `stream(i)`), and classifies every answer: the mock's
/// `mock: {prefix} {i}` is ok; an OpenAI error (status, or an error event in a stream) is a
/// clean error; anything else is wrong; an answer later than the deadline is late.
fn drive(
    url: String,
    model: &'static str,
    prefix: &'static str,
    total: usize,
    concurrency: usize,
    deadline_ms: u64,
    stream: fn(usize) -> bool,
) -> (Vec<actix_rt::task::JoinHandle<()>>, Rc<RefCell<Counts>>) {
    let next = Rc::new(RefCell::new(0usize));
    let counts = Rc::new(RefCell::new(Counts::default()));
    let tasks = (0..concurrency)
        .map(|_| {
            let (next, counts, url) = (next.clone(), counts.clone(), url.clone());
            actix_rt::spawn(async move {
                loop {
                    let i = {
                        let mut n = next.borrow_mut();
                        if *n >= total {
                            return;
                        }
                        *n += 1;
                        *n
                    };
                    let streamed = stream(i);
                    let t = Instant::now();
                    let (s, b) = post(&url, &chat_body(model, &format!("{prefix} {i}"), streamed)).await;
                    let mut k = counts.borrow_mut();
                    k.slowest = k.slowest.max(t.elapsed());
                    if t.elapsed() > Duration::from_millis(deadline_ms + 1000) {
                        k.late += 1;
                    }
                    let (text, error) = answer_text(streamed, s, &b);
                    if s == 200 && !error && text == format!("mock: {prefix} {i}") {
                        k.ok += 1;
                    } else if error {
                        k.clean_errors += 1;
                    } else {
                        k.wrong += 1;
                    }
                }
            })
        })
        .collect();
    (tasks, counts)
}

#[actix_rt::test]
async fn a_worker_killed_under_load_loses_no_request() {
    const TOTAL: usize = 200;
    const CONCURRENCY: usize = 16;
    const DEADLINE_MS: u64 = 20_000;
    let mut c = Cluster::start(2, &[("LLMR__SERVER__REQUEST_TIMEOUT_MS", DEADLINE_MS.to_string())]);
    c.ready(2).await;
    c.mock.set_default(Behavior::latency(60));
    let started = Instant::now();
    let (tasks, counts) = drive(
        c.url("/v1/chat/completions"),
        "mock-a",
        "request",
        TOTAL,
        CONCURRENCY,
        DEADLINE_MS,
        |_| false,
    );
    // Kill one worker once the load is well under way.
    let until = Instant::now() + Duration::from_secs(30);
    while c.mock.request_count() < 40 && Instant::now() < until {
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    let killed_at = c.mock.request_count();
    c.worker(0).kill();
    for t in tasks {
        t.await.unwrap();
    }
    let k = counts.borrow();
    let upstream_calls = c.mock.request_count();
    eprintln!(
        "kill test: {TOTAL} requests at c={CONCURRENCY} in {:?}; worker killed after {killed_at} upstream calls; ok={} clean_errors={} wrong={} late={} upstream_calls={upstream_calls} (re-run after the kill: {})",
        started.elapsed(),
        k.ok,
        k.clean_errors,
        k.wrong,
        k.late,
        upstream_calls.saturating_sub(TOTAL)
    );
    assert_eq!(k.ok + k.clean_errors, TOTAL, "every request ended: {k:?}");
    assert_eq!(k.wrong, 0, "no wrong answer: {k:?}");
    assert_eq!(k.late, 0, "none outlived its deadline: {k:?}");
    // Non-streamed answers send no frame before they complete, so every job the dead worker
    // held was rerun by the live one: every request succeeded.
    assert_eq!(k.ok, TOTAL, "{k:?}\n{}", c.worker(1).tail(20));
    assert!(c.worker(1).alive());
    assert!(
        std::fs::read_to_string(&c.worker(1).log)
            .unwrap()
            .lines()
            .any(|l| l.contains("took over work of a stopped peer") && l.contains("jobs:")),
        "the live worker reclaimed the dead one's jobs"
    );
}

/// What one streaming client saw: status, SSE events, how long it took.
type StreamSeen = (u16, Vec<String>, Duration);

/// Opens `n` streamed chats of `words` words each (the mock answers word by word); returns
/// their tasks and how many have delivered their first bytes to their client.
fn open_streams(
    url: &str,
    n: usize,
    words: usize,
) -> (Vec<actix_rt::task::JoinHandle<StreamSeen>>, Rc<std::cell::Cell<usize>>) {
    let text = "word ".repeat(words);
    let started = Rc::new(std::cell::Cell::new(0));
    let tasks = (0..n)
        .map(|i| {
            let (url, text, started) = (url.to_owned(), text.clone(), started.clone());
            actix_rt::spawn(async move {
                use futures_util::StreamExt;
                let t = Instant::now();
                let Ok(mut resp) = client()
                    .post(&url)
                    .send_json(&chat_body("mock-a", &format!("{i} {text}"), true))
                    .await
                else {
                    return (0, Vec::new(), t.elapsed());
                };
                let mut body = Vec::new();
                while let Some(Ok(chunk)) = resp.next().await {
                    if body.is_empty() {
                        started.set(started.get() + 1);
                    }
                    body.extend_from_slice(&chunk);
                }
                (resp.status().as_u16(), sse_events(&body), t.elapsed())
            })
        })
        .collect();
    (tasks, started)
}

/// Waits (10 s at most) until `n` streams have started.
async fn all_started(started: &Rc<std::cell::Cell<usize>>, n: usize) -> bool {
    eventually(Duration::from_secs(10), || {
        let started = started.clone();
        async move { started.get() == n }
    })
    .await
}

#[actix_rt::test]
async fn a_worker_killed_mid_stream_ends_the_stream_with_an_error() {
    // Three jobs per worker at most: the six streams are spread over both workers.
    let mut c = Cluster::start(
        2,
        &[
            ("LLMR__SERVER__REQUEST_TIMEOUT_MS", "20000".to_string()),
            ("LLMR__WORKER__MAX_IN_FLIGHT", "3".to_string()),
        ],
    );
    c.ready(2).await;
    c.mock.set_default(Behavior {
        chunk_delay: Duration::from_millis(100),
        ..Behavior::ok()
    });
    let (tasks, started) = open_streams(&c.url("/v1/chat/completions"), 6, 60);
    // Kill one worker once every stream is under way (its first bytes reached its client).
    assert!(all_started(&started, 6).await, "six streams under way");
    c.worker(0).kill();
    let (mut complete, mut errored) = (0, 0);
    for t in tasks {
        let (s, events, took) = t.await.unwrap();
        assert_eq!(s, 200);
        assert!(took < Duration::from_secs(21), "ended within its deadline: {took:?}");
        assert_eq!(
            events.last().map(String::as_str),
            Some("[DONE]"),
            "never a silent truncation"
        );
        let last = serde_json::from_str::<serde_json::Value>(&events[events.len() - 2]).unwrap();
        if last["error"].is_object() {
            errored += 1;
        } else {
            complete += 1;
        }
    }
    eprintln!("mid-stream kill: {complete} streams completed, {errored} ended with an error event");
    assert!(errored >= 1, "the killed worker was streaming something");
}

/// Ten streams through a gateway that is then SIGKILLed: how long the upstream calls ran on
/// after the kill (until the mock saw the last of them closed), asserted below 4.5 s (the
/// worst case is 2.5 s: `services/provider-worker/src/callers.rs`). Only the cluster: in
/// `llmrouter all` the caller is in the worker's own process.
#[actix_rt::test]
async fn a_gateway_killed_with_streams_open_has_their_upstream_calls_aborted() {
    const STREAMS: usize = 10;
    let mut c = Cluster::start(
        1,
        &[
            ("LLMR__SERVER__REQUEST_TIMEOUT_MS", "60000".to_string()),
            ("LLMR__WORKER__MAX_IN_FLIGHT", "16".to_string()),
        ],
    );
    c.ready(1).await;
    // Each stream would run for about 20 s.
    c.mock.set_default(Behavior {
        chunk_delay: Duration::from_millis(200),
        ..Behavior::ok()
    });
    let (tasks, started) = open_streams(&c.url("/v1/chat/completions"), STREAMS, 100);
    assert!(all_started(&started, STREAMS).await, "ten streams under way");
    let killed = Instant::now();
    c.procs.nth("gateway", 0).unwrap().kill();
    // Nobody can cancel them: the worker notices that the gateway stopped heartbeating.
    let aborted = c.mock.wait_for_disconnects(STREAMS, Duration::from_secs(15)).await;
    let ran_on = killed.elapsed();
    eprintln!(
        "gateway SIGKILLed with {STREAMS} streams open: {} upstream calls aborted, the last {:.2} s after the kill",
        c.mock.disconnects(),
        ran_on.as_secs_f64()
    );
    assert!(
        aborted,
        "the upstream calls still ran: {} aborted",
        c.mock.disconnects()
    );
    assert!(
        ran_on < Duration::from_millis(4500),
        "aborted {ran_on:?} after the kill"
    );
    for t in tasks {
        t.abort();
    }
}

/// A Redis restarted empty (no persistence) loses every heartbeat at once: the workers see
/// a new heartbeat epoch and declare nobody dead until the callers could beat again, so the
/// streams of a live gateway run to their end.
#[actix_rt::test]
async fn a_redis_restarted_empty_aborts_no_live_callers_stream() {
    const STREAMS: usize = 3;
    let mut c = Cluster::start(1, &[("LLMR__SERVER__REQUEST_TIMEOUT_MS", "60000".to_string())]);
    c.ready(1).await;
    // Each stream runs for about 8 s, most of it after the restart.
    c.mock.set_default(Behavior {
        chunk_delay: Duration::from_millis(100),
        ..Behavior::ok()
    });
    let (tasks, started) = open_streams(&c.url("/v1/chat/completions"), STREAMS, 80);
    assert!(all_started(&started, STREAMS).await, "three streams under way");
    c.procs.redis.as_mut().unwrap().restart();
    let restarted = Instant::now();
    for t in tasks {
        let (s, events, took) = t.await.unwrap();
        assert_eq!(s, 200);
        let last = events
            .len()
            .checked_sub(2)
            .and_then(|i| serde_json::from_str::<serde_json::Value>(&events[i]).ok());
        assert!(
            last.is_some_and(|l| l["error"].is_null()) && events.last().map(String::as_str) == Some("[DONE]"),
            "the stream ran to its end: {:?}",
            events.iter().rev().take(3).collect::<Vec<_>>()
        );
        assert!(took > Duration::from_secs(7), "a whole stream: {took:?}");
    }
    eprintln!(
        "Redis restarted empty with {STREAMS} streams open: all completed, the last {:.1} s after the restart, {} aborted",
        restarted.elapsed().as_secs_f64(),
        c.mock.disconnects()
    );
    assert_eq!(c.mock.disconnects(), 0, "no upstream call was aborted");
}

#[actix_rt::test]
async fn server_side_tools_without_mcp_tools_are_refused_within_seconds() {
    let mock = MockUpstream::start(&["mock-a"]);
    let toml = format!(
        "{ECHO}{}[[models]]\nname = \"with-tools\"\ntargets = [{{provider = \"up\", model = \"mock-a\"}}]\ntools = [\"calculator\"]\n",
        mock_provider("up", &mock.base_url(), &["mock-a"])
    );
    // Router, worker and gateway, and no mcp-tools.
    let c = Cluster::start_with(mock, &toml, 1, 1, &[]);
    c.ready(1).await;
    let t = Instant::now();
    let (status, body) = post(&c.url("/v1/chat/completions"), &chat_body("with-tools", "6*7?", false)).await;
    assert_eq!(status, 503, "{}", String::from_utf8_lossy(&body));
    assert!(json(&body)["error"]["message"].as_str().unwrap().contains("mcp-tools"));
    assert!(
        t.elapsed() < Duration::from_secs(3),
        "at once, not at the deadline: {:?}",
        t.elapsed()
    );
    assert_eq!(c.mock.request_count(), 0);
}

#[actix_rt::test]
async fn a_worker_stopped_with_sigterm_under_load_finishes_its_work() {
    const TOTAL: usize = 120;
    let mut c = Cluster::start(1, &[("LLMR__SERVER__REQUEST_TIMEOUT_MS", "20000".to_string())]);
    let admin = free_port();
    c.procs.spawn_with(
        "worker",
        &["worker", "--pool", "default"],
        &[("LLMR__TELEMETRY__ADMIN_PORT", admin.to_string())],
    );
    c.ready(2).await;
    assert!(wait_for_port(admin, Duration::from_secs(10)));
    c.mock.set_default(Behavior::latency(100));
    let (tasks, counts) = drive(
        c.url("/v1/chat/completions"),
        "mock-a",
        "term",
        TOTAL,
        8,
        20_000,
        |_| false,
    );
    let until = Instant::now() + Duration::from_secs(20);
    while c.mock.request_count() < 30 && Instant::now() < until {
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    let stopping = Instant::now();
    c.worker(1).terminate();
    // Readiness turns false at once, while the worker finishes what it holds.
    let ready = format!("http://127.0.0.1:{admin}/readyz");
    assert!(
        eventually(Duration::from_secs(2), || async { get(&ready, &[]).await.0 == 503 }).await,
        "readiness went false"
    );
    let mut status = None;
    while status.is_none() && stopping.elapsed() < Duration::from_secs(15) {
        status = c.worker(1).exited();
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    let exited = stopping.elapsed();
    for t in tasks {
        t.await.unwrap();
    }
    let k = counts.borrow();
    eprintln!("sigterm test: {TOTAL} requests; worker exited after {exited:?}; {k:?}");
    assert!(
        status.is_some_and(|s| s.success()),
        "the worker exited cleanly within the grace:\n{}",
        c.worker(1).tail(30)
    );
    assert_eq!(k.ok, TOTAL, "nothing lost: {k:?}");
    assert_eq!(k.late, 0, "{k:?}");
}

/// `llmrouter all` as one process with `cfg`, listening.
fn all_process(cfg: TestConfig) -> ProcessCluster {
    let mut c = ProcessCluster::new(&bin(), cfg, false);
    c.spawn("all", &["all"]);
    assert!(c.listening(Duration::from_secs(20)));
    c
}

/// Group `g` over model `m` of `down` (tried first) and `up`.
fn failover_group(down: &MockUpstream, up: &MockUpstream) -> String {
    let entry = |name: &str, mock: &MockUpstream, priority: u32| {
        provider_entry(name, &mock.base_url(), &["m"], &[&format!("sk-{name}")])
            .replace("[[providers]]\n", &format!("[[providers]]\npriority = {priority}\n"))
    };
    format!(
        "{}{}[[models]]\nname = \"g\"\nstrategy = \"priority\"\ntargets = [{{provider = \"down\", model = \"m\"}}, {{provider = \"up\", model = \"m\"}}]\n",
        entry("down", down, 0),
        entry("up", up, 1)
    )
}

/// Opens an MCP session on `url` (`initialize`); its `Mcp-Session-Id`.
async fn mcp_session(url: &str, headers: &[(&str, &str)]) -> String {
    let init = json!({"jsonrpc": "2.0", "id": 1, "method": "initialize", "params": {"protocolVersion": "2025-06-18", "capabilities": {}, "clientInfo": {"name": "t", "version": "1"}}});
    let mut req = client().post(url);
    for (k, v) in headers {
        req = req.insert_header((*k, *v));
    }
    let mut resp = req.send_json(&init).await.unwrap();
    let sid = resp
        .headers()
        .get("mcp-session-id")
        .unwrap()
        .to_str()
        .unwrap()
        .to_owned();
    let _ = resp.body().await;
    sid
}

/// Collects exported spans until `done` says the trace is complete (at most 15 s).
async fn collect_spans(
    collector: &mut fake_opentelemetry_collector::FakeCollectorServer,
    done: impl Fn(&[fake_opentelemetry_collector::ExportedSpan]) -> bool,
) -> Vec<fake_opentelemetry_collector::ExportedSpan> {
    let mut spans = Vec::new();
    let until = Instant::now() + Duration::from_secs(15);
    while Instant::now() < until && !done(&spans) {
        spans.extend(collector.exported_spans(1, Duration::from_millis(500)).await);
    }
    spans
}

/// An exported span's attribute as plain text (the collector keeps OTLP's `AnyValue` debug
/// form: `Some(AnyValue { value: Some(StringValue("x")) })`).
fn otel_attr(s: &fake_opentelemetry_collector::ExportedSpan, key: &str) -> String {
    let raw = s.attributes.get(key).map(String::as_str).unwrap_or_default();
    let inner = raw
        .split_once("Value(")
        .and_then(|(_, r)| r.split_once(')'))
        .map_or("", |(v, _)| v);
    inner.trim_matches('"').to_owned()
}

#[actix_rt::test]
async fn one_trace_covers_gateway_router_and_worker_with_gen_ai_attempt_spans() {
    use fake_opentelemetry_collector::FakeCollectorServer;
    let mut collector = FakeCollectorServer::start().await.unwrap();
    // A group whose first target fails (500): two attempt spans, the second after a failover.
    let (down, up) = (MockUpstream::start(&[]), MockUpstream::start(&[]));
    down.set_default(Behavior::status(500));
    let toml = failover_group(&down, &up);
    // The standard OpenTelemetry variables turn export on; batches leave every 100 ms.
    let cfg = TestConfig::new(toml)
        .env("OTEL_EXPORTER_OTLP_ENDPOINT", collector.endpoint())
        .env("OTEL_BSP_SCHEDULE_DELAY", 100);
    let mut c = Cluster {
        procs: ProcessCluster::new(&bin(), cfg, true),
        mock: MockUpstream::start(&[]),
    };
    c.add("router", &["router"]);
    // Two workers: whichever takes the job, its spans join the same trace.
    c.add("worker", &["worker", "--pool", "default"]);
    c.add("worker", &["worker", "--pool", "default"]);
    c.add("gateway", &["gateway"]);
    assert!(c.procs.listening(Duration::from_secs(20)));
    c.ready(2).await;
    let trace = "4bf92f3577b34da6a3ce929d0e0e4736";
    let tp = format!("00-{trace}-00f067aa0ba902b7-01");
    let (s, b) = post_with(
        &c.url("/v1/chat/completions"),
        &chat_body("g", "traced", false),
        &[("traceparent", tp.as_str()), ("tracestate", "vendor=failover")],
    )
    .await;
    assert_eq!(s, 200, "{}", String::from_utf8_lossy(&b));
    // Every process exports on its own schedule: wait for the last span of each.
    let complete = |spans: &[fake_opentelemetry_collector::ExportedSpan]| {
        spans
            .iter()
            .any(|s| s.name == "chat m" && otel_attr(s, "llmr.attempt") == "2")
            && spans.iter().any(|s| s.name == "route")
            && spans.iter().any(|s| s.name == "POST /v1/chat/completions")
    };
    let spans = collect_spans(&mut collector, complete).await;
    let ours: Vec<_> = spans.iter().filter(|s| s.trace_id == trace).collect();
    let names: Vec<&str> = ours.iter().map(|s| s.name.as_str()).collect();
    eprintln!("trace {trace}: {names:?}");
    // gateway: the SERVER span of the request, continuing the client's span.
    let server = ours
        .iter()
        .find(|s| s.name == "POST /v1/chat/completions")
        .unwrap_or_else(|| panic!("{names:?}"));
    assert_eq!(server.kind, "SPAN_KIND_SERVER");
    assert_eq!(server.parent_span_id, "00f067aa0ba902b7");
    // router: the routing decision, its strategy and plan.
    let route = ours
        .iter()
        .find(|s| s.name == "route")
        .unwrap_or_else(|| panic!("{names:?}"));
    assert_eq!(otel_attr(route, "llmr.strategy"), "priority");
    assert_eq!(otel_attr(route, "llmr.plan"), "down/m, up/m");
    // worker: one CLIENT span per attempt, with the gen_ai attributes.
    let attempts: Vec<_> = ours.iter().filter(|s| s.name == "chat m").collect();
    assert_eq!(attempts.len(), 2, "{names:?}");
    let attr = otel_attr;
    let first = attempts.iter().find(|s| attr(s, "llmr.attempt") == "1").unwrap();
    let second = attempts.iter().find(|s| attr(s, "llmr.attempt") == "2").unwrap();
    for a in [first, second] {
        assert_eq!(a.kind, "SPAN_KIND_CLIENT");
        assert_eq!(attr(a, "gen_ai.operation.name"), "chat");
        assert_eq!(attr(a, "gen_ai.request.model"), "g");
        assert_eq!(attr(a, "server.address"), "127.0.0.1");
    }
    assert_eq!(attr(first, "gen_ai.provider.name"), "down");
    assert_eq!(attr(first, "error.type"), "failed");
    assert_eq!(attr(second, "gen_ai.provider.name"), "up");
    assert_eq!(attr(second, "llmr.failover_reason"), "failed");
    assert_eq!(attr(second, "gen_ai.response.model"), "m");
    assert_eq!(attr(second, "gen_ai.response.finish_reasons"), "stop");
    // The router's forward is a publish under the routing decision.
    let forward = ours
        .iter()
        .find(|s| s.name == "publish jobs:default")
        .unwrap_or_else(|| panic!("{names:?}"));
    assert_eq!(forward.kind, "SPAN_KIND_PRODUCER");
    assert_eq!(forward.parent_span_id, route.span_id);
    assert!(
        !attr(second, "gen_ai.usage.input_tokens").is_empty(),
        "{:?}",
        second.attributes
    );
    // The upstream got the attempt span's context, in the same trace.
    let sent = up.requests().last().unwrap().clone();
    assert_eq!(sent.tracestate.as_deref(), Some("vendor=failover"));
    let sent = sent.traceparent.unwrap();
    assert!(
        sent.contains(&format!("-{}-", second.span_id)),
        "{sent} vs {}",
        second.span_id
    );
}

#[actix_rt::test]
async fn llmrouter_all_traces_a_streamed_chat_end_to_end() {
    use fake_opentelemetry_collector::{ExportedSpan, FakeCollectorServer};
    let mut collector = FakeCollectorServer::start().await.unwrap();
    let up = MockUpstream::start(&["m"]);
    let cfg = TestConfig::new(mock_provider("up", &up.base_url(), &["m"]))
        .env("OTEL_EXPORTER_OTLP_ENDPOINT", collector.endpoint())
        .env("OTEL_BSP_SCHEDULE_DELAY", 100);
    let c = all_process(cfg);
    let trace = "7bf92f3577b34da6a3ce929d0e0e4739";
    let tp = format!("00-{trace}-00f067aa0ba902b7-01");
    let (s, b) = post_with(
        &c.url("/v1/chat/completions"),
        &chat_body("m", "streamed", true),
        &[("traceparent", tp.as_str())],
    )
    .await;
    assert_eq!(s, 200);
    assert_eq!(streamed_text(&sse_events(&b)), "mock: streamed");
    let wanted = [
        "POST /v1/chat/completions",
        "publish requests",
        "route",
        "process jobs:default",
        "chat m",
    ];
    let have = |spans: &[ExportedSpan], n: &str| spans.iter().any(|s| s.trace_id == trace && s.name == n);
    let spans = collect_spans(&mut collector, |spans| wanted.iter().all(|n| have(spans, n))).await;
    let names: Vec<&str> = spans
        .iter()
        .filter(|s| s.trace_id == trace)
        .map(|s| s.name.as_str())
        .collect();
    for n in wanted {
        assert!(names.contains(&n), "no `{n}` in {names:?}");
    }
    let attempt = spans
        .iter()
        .find(|s| s.trace_id == trace && s.name == "chat m")
        .unwrap();
    assert_eq!(otel_attr(attempt, "gen_ai.request.stream"), "true");
    assert_eq!(
        otel_attr(attempt, "gen_ai.usage.output_tokens"),
        "2",
        "usage of the stream"
    );
}

#[actix_rt::test]
async fn remote_mcp_servers_get_the_callers_trace() {
    // The "remote server" is the mock, which records any request (and answers 404).
    let remote = MockUpstream::start(&[]);
    let toml = format!(
        "{ECHO}[[mcp.remote_servers]]\nnamespace = \"far\"\nurl = \"{}/mcp\"\n",
        remote.base_url().trim_end_matches("/v1")
    );
    let mut c = ProcessCluster::new(&bin(), TestConfig::new(toml), false);
    c.spawn("all", &["all"]);
    assert!(c.listening(Duration::from_secs(20)));
    let mcp = c.url("/mcp");
    let sid = mcp_session(&mcp, &[]).await;
    let trace = "8bf92f3577b34da6a3ce929d0e0e4740";
    let tp = format!("00-{trace}-00f067aa0ba902b7-01");
    let list = json!({"jsonrpc": "2.0", "id": 2, "method": "tools/list", "params": {}});
    let (s, _) = post_with(
        &mcp,
        &list,
        &[
            ("mcp-session-id", sid.as_str()),
            ("traceparent", tp.as_str()),
            ("tracestate", "vendor=mcp"),
        ],
    )
    .await;
    assert_eq!(s, 200);
    let sent = remote.requests();
    let hit = sent
        .iter()
        .find(|r| r.path == "/mcp")
        .expect("the remote server was asked");
    let got = hit.traceparent.clone().unwrap_or_default();
    assert!(got.contains(trace), "the remote server got `{got}`");
    assert_eq!(hit.tracestate.as_deref(), Some("vendor=mcp"));
}

#[actix_rt::test]
async fn the_tool_loop_shows_each_round_in_the_trace() {
    use fake_opentelemetry_collector::{ExportedSpan, FakeCollectorServer};
    let mut collector = FakeCollectorServer::start().await.unwrap();
    let up = MockUpstream::start(&["m"]);
    let tools = calculator_tools("loop");
    let cfg = TestConfig::new(mock_provider("up", &up.base_url(), &["m"]))
        .env("OTEL_EXPORTER_OTLP_ENDPOINT", collector.endpoint())
        .env("OTEL_BSP_SCHEDULE_DELAY", 100)
        .env("LLMR__SCRIPTING__TOOLS_PATH", tools.display())
        .env(
            "LLMR__SCRIPTING__LIBRARIES_PATH",
            concat!(env!("CARGO_MANIFEST_DIR"), "/../../config/libraries"),
        )
        .env(
            "LLMR__SCRIPTING__HOST_COMMAND",
            format!("{} script-host", bin().display()),
        );
    let c = all_process(cfg);
    // The model calls the calculator, then answers.
    up.push(Behavior {
        tool_calls: Some(json!([{"id": "call_1", "type": "function", "function": {"name": "calculator", "arguments": "{\"expression\":\"6*7\"}"}}])),
        ..Behavior::ok()
    });
    let trace = "9bf92f3577b34da6a3ce929d0e0e4741";
    let tp = format!("00-{trace}-00f067aa0ba902b7-01");
    let body = json!({"model": "m", "messages": [{"role": "user", "content": "6*7?"}],
        "tools": [{"type": "mcp", "server_label": "llmrouter", "allowed_tools": ["calculator"]}]});
    let (s, b) = post_with(&c.url("/v1/chat/completions"), &body, &[("traceparent", tp.as_str())]).await;
    assert_eq!(s, 200, "{}", String::from_utf8_lossy(&b));
    let wanted = ["tool_loop round 0", "tool_loop round 1", "execute_tool calculator"];
    let have = |spans: &[ExportedSpan], n: &str| spans.iter().any(|s| s.trace_id == trace && s.name == n);
    let attempts = |spans: &[ExportedSpan]| {
        spans
            .iter()
            .filter(|s| s.trace_id == trace && s.name == "chat m")
            .count()
    };
    let spans = collect_spans(&mut collector, |spans| {
        wanted.iter().all(|n| have(spans, n)) && attempts(spans) == 2
    })
    .await;
    let ours: Vec<&ExportedSpan> = spans.iter().filter(|s| s.trace_id == trace).collect();
    let names: Vec<&str> = ours.iter().map(|s| s.name.as_str()).collect();
    let span = |n: &str| {
        *ours
            .iter()
            .find(|s| s.name == n)
            .unwrap_or_else(|| panic!("no `{n}` in {names:?}"))
    };
    let (r0, r1) = (span("tool_loop round 0"), span("tool_loop round 1"));
    assert_eq!(
        r0.parent_span_id, r1.parent_span_id,
        "rounds are siblings under the loop"
    );
    // Each round's completion is one upstream attempt; the tool ran in round 0.
    assert_eq!(names.iter().filter(|n| **n == "chat m").count(), 2, "{names:?}");
    let publish_mcp = ours
        .iter()
        .find(|s| s.name == "publish mcp" && s.parent_span_id == r0.span_id)
        .unwrap_or_else(|| panic!("the tool call is published inside round 0: {names:?}"));
    assert_eq!(publish_mcp.kind, "SPAN_KIND_PRODUCER");
    let _ = std::fs::remove_dir_all(&tools);
}

/// A fresh tools folder holding `ask`, a tool whose script asks model `m` (`ai.chat`).
#[actix_rt::test]
async fn a_router_killed_mid_tool_loop_has_the_loop_rerun_by_a_peer() {
    let up = MockUpstream::start(&["m"]);
    let tools = calculator_tools("rerun");
    let cfg = TestConfig::new(mock_provider("up", &up.base_url(), &["m"]))
        .env("LLMR__SERVER__REQUEST_TIMEOUT_MS", 30_000)
        .env("LLMR__SCRIPTING__TOOLS_PATH", tools.display())
        .env(
            "LLMR__SCRIPTING__LIBRARIES_PATH",
            concat!(env!("CARGO_MANIFEST_DIR"), "/../../config/libraries"),
        )
        .env(
            "LLMR__SCRIPTING__HOST_COMMAND",
            format!("{} script-host", bin().display()),
        );
    let mut c = Cluster::with_tools(cfg).await;
    let call = json!([{"id": "call_1", "type": "function", "function": {"name": "calculator", "arguments": "{\"expression\":\"6*7\"}"}}]);
    // Round 0 of the first run is slow: the router is killed while it waits for it.
    up.push(Behavior {
        tool_calls: Some(call.clone()),
        latency: Duration::from_millis(2500),
        ..Behavior::ok()
    });
    up.push(Behavior {
        tool_calls: Some(call),
        ..Behavior::ok()
    });
    let body = json!({"model": "m", "messages": [{"role": "user", "content": "6*7?"}],
        "tools": [{"type": "mcp", "server_label": "llmrouter", "allowed_tools": ["calculator"]}]});
    let url = c.url("/v1/chat/completions");
    let started = Instant::now();
    let request = actix_rt::spawn(async move { post(&url, &body).await });
    assert!(eventually(Duration::from_secs(10), || async { up.request_count() >= 1 }).await);
    c.router(0).kill();
    c.add("router", &["router"]);
    let (status, answer) = request.await.unwrap();
    assert_eq!(status, 200, "{}", String::from_utf8_lossy(&answer));
    let answer = json(&answer);
    assert_eq!(answer["choices"][0]["finish_reason"], "stop", "{answer}");
    // The peer ran the loop again from its start: round 0 twice, then the final round, whose
    // request carries the calculator's result.
    let seen = up.requests();
    assert_eq!(seen.len(), 3, "{seen:?}");
    assert!(seen[2].body.to_string().contains("42"), "{}", seen[2].body);
    assert!(started.elapsed() < Duration::from_secs(20), "{:?}", started.elapsed());
}

fn ask_tool(purpose: &str) -> PathBuf {
    let tools = std::env::temp_dir().join(format!("llmr-{purpose}-tools-{}-{}", std::process::id(), free_port()));
    std::fs::create_dir_all(&tools).unwrap();
    std::fs::write(
        tools.join("ask.js"),
        "import ai from \"ai\";\nexport const description = \"Asks a model.\";\nexport default function ({ q }) { return ai.chat(q, { model: \"m\" }); }\n",
    )
    .unwrap();
    tools
}

#[actix_rt::test]
async fn an_mcp_tool_calling_ai_chat_stays_in_the_callers_trace() {
    use fake_opentelemetry_collector::{ExportedSpan, FakeCollectorServer};
    let mut collector = FakeCollectorServer::start().await.unwrap();
    let up = MockUpstream::start(&["m"]);
    let tools = ask_tool("trace");
    let cfg = TestConfig::new(mock_provider("up", &up.base_url(), &["m"]))
        .env("OTEL_EXPORTER_OTLP_ENDPOINT", collector.endpoint())
        .env("OTEL_BSP_SCHEDULE_DELAY", 100)
        .env("LLMR__SCRIPTING__TOOLS_PATH", tools.display())
        .env(
            "LLMR__SCRIPTING__HOST_COMMAND",
            format!("{} script-host", bin().display()),
        );
    let c = Cluster::with_tools(cfg).await;
    let mcp = c.url("/mcp");
    let sid = mcp_session(&mcp, &[]).await;
    let trace = "5bf92f3577b34da6a3ce929d0e0e4737";
    let tp = format!("00-{trace}-00f067aa0ba902b7-01");
    let call = json!({"jsonrpc": "2.0", "id": 2, "method": "tools/call", "params": {"name": "ask", "arguments": {"q": "hello"}}});
    let (s, b) = post_with(
        &mcp,
        &call,
        &[
            ("mcp-session-id", sid.as_str()),
            ("traceparent", tp.as_str()),
            ("tracestate", "vendor=tool"),
        ],
    )
    .await;
    assert_eq!(s, 200, "{}", String::from_utf8_lossy(&b));
    assert_eq!(
        json(&b)["result"]["content"][0]["text"],
        "mock: hello",
        "{}",
        String::from_utf8_lossy(&b)
    );
    // The script's chat reached the upstream with the client's tracestate, over four hops.
    let asked = up.requests().last().unwrap().clone();
    assert_eq!(asked.tracestate.as_deref(), Some("vendor=tool"));
    let wanted = [
        "POST /mcp",
        "publish mcp",
        "process mcp",
        "execute_tool ask",
        "publish requests",
        "route",
        "process jobs:default",
        "chat m",
    ];
    let have = |spans: &[ExportedSpan], n: &str| spans.iter().any(|s| s.trace_id == trace && s.name == n);
    let spans = collect_spans(&mut collector, |spans| wanted.iter().all(|n| have(spans, n))).await;
    let ours: Vec<&ExportedSpan> = spans.iter().filter(|s| s.trace_id == trace).collect();
    let names: Vec<&str> = ours.iter().map(|s| s.name.as_str()).collect();
    eprintln!("trace {trace}: {names:?}");
    for s in spans
        .iter()
        .filter(|s| s.trace_id == trace || s.links.iter().any(|l| l.trace_id == trace))
    {
        let links: Vec<String> = s
            .links
            .iter()
            .map(|l| format!("{}…/{}", &l.trace_id[..8], l.span_id))
            .collect();
        eprintln!(
            "  {:<22} {:<19} trace {}… span {} parent {:<16} links {links:?}",
            s.name,
            s.kind,
            &s.trace_id[..8],
            s.span_id,
            s.parent_span_id
        );
    }
    let span = |n: &str| {
        *ours
            .iter()
            .find(|s| s.name == n)
            .unwrap_or_else(|| panic!("no `{n}` in {names:?}"))
    };
    // One message: the consumer's span is the producer's child.
    assert_eq!(span("publish mcp").kind, "SPAN_KIND_PRODUCER");
    assert_eq!(span("process mcp").kind, "SPAN_KIND_CONSUMER");
    assert_eq!(span("process mcp").parent_span_id, span("publish mcp").span_id);
    // The tool's ai.chat continues the tool call's trace.
    assert_eq!(
        span("publish requests").parent_span_id,
        span("execute_tool ask").span_id
    );
    assert_eq!(span("route").parent_span_id, span("publish requests").span_id);
    assert_eq!(span("chat m").kind, "SPAN_KIND_CLIENT");
    // The router's batch span links the messages it routed (it is in its own trace).
    let batch = spans
        .iter()
        .find(|s| s.name == "process requests" && s.links.iter().any(|l| l.trace_id == trace))
        .unwrap_or_else(|| panic!("no batch span linking {trace}"));
    assert_eq!(batch.kind, "SPAN_KIND_CONSUMER");
    let _ = std::fs::remove_dir_all(&tools);
}

#[actix_rt::test]
async fn json_logs_parse_and_carry_the_trace_and_the_request() {
    let (down, up) = (MockUpstream::start(&[]), MockUpstream::start(&[]));
    down.set_default(Behavior::status(500));
    let toml = failover_group(&down, &up);
    let cfg = TestConfig::new(toml).env("LLMR__TELEMETRY__LOG_FORMAT", "json");
    let c = all_process(cfg);
    let trace = "6bf92f3577b34da6a3ce929d0e0e4738";
    let tp = format!("00-{trace}-00f067aa0ba902b7-01");
    let (s, _) = post_with(
        &c.url("/v1/chat/completions"),
        &chat_body("g", "logged", false),
        &[("traceparent", tp.as_str())],
    )
    .await;
    assert_eq!(s, 200);
    let log_path = c.named("all").next().unwrap().log.clone();
    let mut line = None;
    let until = Instant::now() + Duration::from_secs(5);
    while line.is_none() && Instant::now() < until {
        let text = std::fs::read_to_string(&log_path).unwrap();
        let parsed: Vec<serde_json::Value> = text
            .lines()
            .map(|l| serde_json::from_str(l).unwrap_or_else(|e| panic!("not JSON ({e}): {l}")))
            .collect();
        line = parsed.into_iter().find(|v| v["message"] == "attempt failed");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    let line = line.expect("the failed attempt was logged");
    assert_eq!(line["trace_id"], trace, "{line}");
    // No exporter: no OpenTelemetry span is built, so there is no span id to give.
    assert!(line.get("span_id").is_none(), "{line}");
    assert!(line["request_id"].as_str().is_some_and(|r| r.len() == 36), "{line}");
    assert_eq!(line["level"], "WARN");
    assert_eq!(line["provider"], "down", "{line}");
    // The spans a request passes on its way (the bus's publish and process, the upstream
    // attempt) are in traces, not in log lines.
    for field in [
        "messaging.destination.name",
        "messaging.message.id",
        "gen_ai.operation.name",
    ] {
        assert!(line.get(field).is_none(), "{field} in {line}");
    }
    // One access line per request: method, route, status, and the time as a number.
    let text = std::fs::read_to_string(&log_path).unwrap();
    let access = text
        .lines()
        .filter_map(|l| serde_json::from_str::<serde_json::Value>(l).ok())
        .find(|v| v["target"] == "llmrouter::access")
        .expect("an access line");
    assert_eq!(access["message"], "POST /v1/chat/completions 200", "{access}");
    assert_eq!(access["level"], "INFO");
    assert!(access["ms"].as_f64().is_some_and(|ms| ms > 0.0), "{access}");
}

#[actix_rt::test]
async fn router_worker_and_gateway_stop_cleanly_under_load() {
    const TOTAL: usize = 120;
    let mock = MockUpstream::start(&["mock-a"]);
    let toml = format!("{ECHO}{}", mock_provider("up", &mock.base_url(), &["mock-a"]));
    let mut c = Cluster::start_with(
        mock,
        &toml,
        2,
        2,
        &[("LLMR__SERVER__REQUEST_TIMEOUT_MS", "20000".to_string())],
    );
    c.ready(2).await;
    c.mock.set_default(Behavior::latency(100));
    let (tasks, counts) = drive(c.url("/v1/chat/completions"), "mock-a", "stop", TOTAL, 8, 20_000, |i| {
        i % 3 == 0
    });
    let until = Instant::now() + Duration::from_secs(20);
    while c.mock.request_count() < 30 && Instant::now() < until {
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    c.router(0).terminate();
    c.worker(0).terminate();
    for t in tasks {
        t.await.unwrap();
    }
    let k = *counts.borrow();
    eprintln!("stop test: {TOTAL} requests while a router and a worker stopped: {k:?}");
    assert_eq!(k.ok, TOTAL, "every request answered: {k:?}");
    for role in ["router", "worker"] {
        let p = c.procs.nth(role, 0).unwrap();
        let until = Instant::now() + Duration::from_secs(15);
        let mut status = p.exited();
        while status.is_none() && Instant::now() < until {
            tokio::time::sleep(Duration::from_millis(20)).await;
            status = p.exited();
        }
        assert!(
            status.is_some_and(|s| s.success()),
            "{role} exited cleanly:\n{}",
            p.tail(20)
        );
    }
    // The gateway: a request in flight when it is told to stop is still answered.
    c.mock.set_default(Behavior::latency(600));
    let before = c.mock.request_count();
    let url = c.url("/v1/chat/completions");
    let slow = actix_rt::spawn(async move {
        let mut resp = client()
            .post(&url)
            .send_json(&chat_body("mock-a", "last one", false))
            .await
            .map_err(|e| e.to_string())?;
        let status = resp.status().as_u16();
        let body = resp.body().await.map_err(|e| e.to_string())?;
        Ok::<_, String>((status, body))
    });
    let until = Instant::now() + Duration::from_secs(10);
    while c.mock.request_count() == before && Instant::now() < until {
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    c.procs.named("gateway").next().unwrap().terminate();
    let answered = slow.await.unwrap();
    let (s, b) = answered.unwrap_or_else(|e| panic!("{e}\n{}", c.gateway().tail(30)));
    assert_eq!(
        (s, json(&b)["choices"][0]["message"]["content"].as_str()),
        (200, Some("mock: last one"))
    );
    let g = c.procs.nth("gateway", 0).unwrap();
    let until = Instant::now() + Duration::from_secs(15);
    let mut status = g.exited();
    while status.is_none() && Instant::now() < until {
        tokio::time::sleep(Duration::from_millis(20)).await;
        status = g.exited();
    }
    assert!(
        status.is_some_and(|s| s.success()),
        "gateway exited cleanly (no panic):\n{}",
        g.tail(20)
    );
    // A panic in a task (a drop guard spawning after the runtime is gone) would not change
    // the exit code: the log must not show one either.
    assert!(
        !g.tail(500).contains("panicked"),
        "no task panicked on the way out:\n{}",
        g.tail(40)
    );
}

#[actix_rt::test]
async fn mcp_tools_stopped_with_sigterm_under_load_finishes_its_tool_calls() {
    const CALLERS: usize = 8;
    const EACH: usize = 8;
    let up = MockUpstream::start(&["m"]);
    up.set_default(Behavior::latency(150));
    let tools = ask_tool("term");
    let cfg = TestConfig::new(mock_provider("up", &up.base_url(), &["m"]))
        .env("LLMR__SERVER__REQUEST_TIMEOUT_MS", 20_000)
        .env("LLMR__SCRIPTING__TOOLS_PATH", tools.display())
        .env(
            "LLMR__SCRIPTING__HOST_COMMAND",
            format!("{} script-host", bin().display()),
        );
    let mut c = Cluster {
        procs: ProcessCluster::new(&bin(), cfg, true),
        mock: MockUpstream::start(&[]),
    };
    let admin = free_port();
    for role in ["router", "worker", "mcp-tools", "gateway"] {
        c.add(role, &[role]);
    }
    c.procs.spawn_with(
        "mcp-tools",
        &["mcp-tools"],
        &[("LLMR__TELEMETRY__ADMIN_PORT", admin.to_string())],
    );
    assert!(c.procs.listening(Duration::from_secs(20)));
    c.ready(1).await;
    assert!(wait_for_port(admin, Duration::from_secs(10)));
    let mcp = c.url("/mcp");
    let sid = mcp_session(&mcp, &[]).await;
    let answered = Rc::new(RefCell::new(Vec::new()));
    let tasks: Vec<_> = (0..CALLERS)
        .map(|caller| {
            let (mcp, sid, answered) = (mcp.clone(), sid.clone(), answered.clone());
            actix_rt::spawn(async move {
                for i in 0..EACH {
                    let q = format!("q{caller}-{i}");
                    let call = json!({"jsonrpc": "2.0", "id": i, "method": "tools/call",
                                      "params": {"name": "ask", "arguments": {"q": q}}});
                    let (s, b) = post_with(&mcp, &call, &[("mcp-session-id", sid.as_str())]).await;
                    let text = json(&b)["result"]["content"][0]["text"].as_str().map(str::to_owned);
                    answered.borrow_mut().push((s, text == Some(format!("mock: {q}"))));
                }
            })
        })
        .collect();
    let until = Instant::now() + Duration::from_secs(20);
    while up.request_count() < 12 && Instant::now() < until {
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    let stopping = Instant::now();
    let term = c.procs.nth("mcp-tools", 1).unwrap();
    term.terminate();
    let ready = format!("http://127.0.0.1:{admin}/readyz");
    assert!(
        eventually(Duration::from_secs(2), || async { get(&ready, &[]).await.0 == 503 }).await,
        "readiness went false"
    );
    let mut status = None;
    while status.is_none() && stopping.elapsed() < Duration::from_secs(15) {
        status = c.procs.nth("mcp-tools", 1).unwrap().exited();
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    let exited = stopping.elapsed();
    for t in tasks {
        t.await.unwrap();
    }
    let answered = answered.borrow();
    let good = answered.iter().filter(|(s, ok)| *s == 200 && *ok).count();
    eprintln!(
        "mcp-tools sigterm: {} tool calls, {good} answered right; it exited after {exited:?}",
        CALLERS * EACH
    );
    assert!(
        status.is_some_and(|s| s.success()),
        "mcp-tools exited cleanly within the grace:\n{}",
        c.procs.nth("mcp-tools", 1).unwrap().tail(30)
    );
    assert_eq!(good, CALLERS * EACH, "every tool call answered: {answered:?}");
    let _ = std::fs::remove_dir_all(&tools);
}

#[actix_rt::test]
async fn logged_content_is_scrubbed_of_personal_data() {
    let said = "mail jane.doe@example.com or call +1 555 123 4567 from 10.1.2.3, card 4111 1111 1111 1111";
    for scrub in [true, false] {
        let cfg = TestConfig::new(ECHO)
            .env("LLMR__TELEMETRY__LOG_CONTENT", true)
            .env("LLMR__TELEMETRY__SCRUB_CONTENT", scrub);
        let c = all_process(cfg);
        let (s, _) = post(&c.url("/v1/chat/completions"), &chat_body("echo", said, false)).await;
        assert_eq!(s, 200);
        let log_path = c.named("all").next().unwrap().log.clone();
        let mut log = String::new();
        let until = Instant::now() + Duration::from_secs(5);
        while !log.contains("response content") && Instant::now() < until {
            tokio::time::sleep(Duration::from_millis(20)).await;
            log = std::fs::read_to_string(&log_path).unwrap();
        }
        assert!(
            log.contains("request content") && log.contains("response content"),
            "{log}"
        );
        let leaked = [
            "jane.doe@example.com",
            "555 123 4567",
            "10.1.2.3",
            "4111 1111 1111 1111",
        ];
        if scrub {
            for pii in leaked {
                assert!(!log.contains(pii), "`{pii}` was logged:\n{log}");
            }
            for mark in ["[email]", "[phone]", "[ip]", "[card]"] {
                assert!(log.contains(mark), "no {mark} in:\n{log}");
            }
        } else {
            assert!(
                log.contains("jane.doe@example.com"),
                "without scrubbing the content is as sent"
            );
        }
    }
}

#[actix_rt::test]
async fn an_unreachable_collector_fails_no_request() {
    // Export goes to a port nothing listens on: requests are answered all the same.
    let cfg = TestConfig::new(ECHO)
        .env(
            "OTEL_EXPORTER_OTLP_ENDPOINT",
            format!("http://127.0.0.1:{}", free_port()),
        )
        .env("OTEL_BSP_SCHEDULE_DELAY", 50);
    let c = all_process(cfg);
    let tp = "00-abf92f3577b34da6a3ce929d0e0e4742-00f067aa0ba902b7-01";
    for i in 0..20 {
        let (s, b) = post_with(
            &c.url("/v1/chat/completions"),
            &chat_body("echo", &format!("still {i}"), i % 2 == 0),
            &[("traceparent", tp)],
        )
        .await;
        assert_eq!(s, 200, "{}", String::from_utf8_lossy(&b));
    }
}

#[actix_rt::test]
async fn no_secret_reaches_the_log_or_the_client() {
    const KEYS: [&str; 2] = ["sk-SECRET-key-one", "sk-SECRET-key-two"];
    const TOKEN: &str = "gw-SECRET-token";
    const MCP_TOKEN: &str = "mcp-SECRET-token";
    let (refusing, rejecting) = (MockUpstream::start(&[]), MockUpstream::start(&[]));
    let echo = |status| Behavior {
        status,
        echo_auth: true,
        ..Behavior::ok()
    };
    refusing.set_default(echo(401));
    rejecting.set_default(echo(400));
    let toml = format!(
        "{}{}[[mcp.remote_servers]]\nnamespace = \"far\"\nurl = \"http://127.0.0.1:{}/mcp\"\ntoken = \"{MCP_TOKEN}\"\n",
        provider_entry("refusing", &refusing.base_url(), &["m1"], &KEYS),
        provider_entry("rejecting", &rejecting.base_url(), &["m2"], &KEYS),
        free_port()
    );
    let cfg = TestConfig::new(toml)
        .env("RUST_LOG", "debug")
        .env("LLMR__SERVER__TOKEN", TOKEN);
    let c = all_process(cfg);
    let auth = format!("Bearer {TOKEN}");
    let headers = [("authorization", auth.as_str())];
    let url = c.url("/v1/chat/completions");
    // Both keys refused (the upstream quotes each), then a request the upstream rejects.
    let (s, _) = post_with(&url, &chat_body("m1", "hello", false), &headers).await;
    assert_eq!(s, 502);
    let (s, body) = post_with(&url, &chat_body("m2", "hello", false), &headers).await;
    assert_eq!(s, 400);
    let body = String::from_utf8_lossy(&body).into_owned();
    assert!(
        body.contains("[redacted]") && !KEYS.iter().any(|k| body.contains(k)),
        "{body}"
    );
    // A wrong token, and an MCP session whose remote server is down.
    let (s, _) = post_with(&url, &chat_body("m1", "x", false), &[("authorization", "Bearer wrong")]).await;
    assert_eq!(s, 401);
    let mcp = c.url("/mcp");
    let sid = mcp_session(&mcp, &[("authorization", auth.as_str())]).await;
    let list = json!({"jsonrpc": "2.0", "id": 2, "method": "tools/list", "params": {}});
    let (s, _) = post_with(
        &mcp,
        &list,
        &[("authorization", auth.as_str()), ("mcp-session-id", sid.as_str())],
    )
    .await;
    assert_eq!(s, 200);
    let log = std::fs::read_to_string(&c.named("all").next().unwrap().log).unwrap();
    assert!(log.contains("attempt failed"), "the failures were logged:\n{log}");
    assert!(
        !log.contains('\u{1b}'),
        "no terminal colour codes in a log file:\n{log}"
    );
    assert!(log.contains("remote MCP server unavailable"), "{log}");
    for secret in KEYS.iter().chain(&[TOKEN, MCP_TOKEN]) {
        assert!(!log.contains(secret), "`{secret}` leaked into the log");
    }
}

#[actix_rt::test]
async fn health_says_degraded_when_a_pool_has_no_worker() {
    let mut c = Cluster::start(0, &[]);
    c.ready(0).await;
    let (s, h) = get(&c.url("/health"), &[]).await;
    assert_eq!((s, h["status"].as_str()), (200, Some("degraded")), "{h}");
    assert_eq!(
        h["reasons"],
        serde_json::json!(["pool `default` has no live worker"]),
        "{h}"
    );
    let f = &h["features"];
    assert_eq!(f["chat"], "unavailable: no worker instance is alive", "{h}");
    assert_eq!(f["responses"], "unavailable: no responses instance is alive", "{h}");
    assert_eq!(f["mcp"], "unavailable: no mcp-tools instance is alive", "{h}");
    assert_eq!(
        (f["routing_state"].as_str(), f["cache"].as_str()),
        (Some("ok"), Some("ok"))
    );
    c.add("worker", &["worker", "--pool", "default"]);
    c.ready(1).await;
    let (_, h) = get(&c.url("/health"), &[]).await;
    assert_eq!(h["status"], "ok", "{h}");
    assert_eq!(h["features"]["chat"], "ok", "{h}");
}

#[actix_rt::test]
async fn requests_for_a_service_nobody_runs_are_refused_within_seconds() {
    // Gateway and router only: no worker, no responses service.
    let mut c = Cluster::start(0, &[]);
    c.ready(0).await;
    let cases = [
        ("/v1/chat/completions", chat_body("echo", "hi", false), "worker"),
        ("/v1/chat/completions", chat_body("echo", "hi", true), "worker"),
        (
            "/v1/responses",
            serde_json::json!({"model": "echo", "input": "hi"}),
            "responses",
        ),
    ];
    for (path, body, service) in &cases {
        let t = Instant::now();
        let (status, answer) = post(&c.url(path), body).await;
        let elapsed = t.elapsed();
        assert_eq!(status, 503, "{path}: {}", String::from_utf8_lossy(&answer));
        let message = json(&answer)["error"]["message"].as_str().unwrap().to_owned();
        assert!(message.contains(&format!("No {service} instance")), "{message}");
        assert!(
            elapsed < Duration::from_secs(4),
            "{path}: refused at once, not at the deadline: {elapsed:?}"
        );
    }
    // A worker that comes up serves the next request.
    c.add("worker", &["worker", "--pool", "default"]);
    c.ready(1).await;
    let (status, answer) = post(&c.url("/v1/chat/completions"), &chat_body("echo", "hi", false)).await;
    assert_eq!(status, 200, "{}", String::from_utf8_lossy(&answer));
}

#[actix_rt::test]
async fn every_role_serves_probes_and_metrics() {
    let mock = MockUpstream::start(&["mock-a"]);
    let toml = format!("{ECHO}{}", mock_provider("up", &mock.base_url(), &["mock-a"]));
    let mut c = Cluster {
        procs: ProcessCluster::new(&bin(), TestConfig::new(toml), true),
        mock,
    };
    let admin = |port: u16| [("LLMR__TELEMETRY__ADMIN_PORT", port.to_string())];
    let ports = [
        ("router", free_port()),
        ("worker", free_port()),
        ("mcp-tools", free_port()),
    ];
    for (role, port) in ports {
        c.procs.spawn_with(role, &[role], &admin(port));
    }
    c.add("gateway", &["gateway"]);
    assert!(c.procs.listening(Duration::from_secs(20)), "{}", c.gateway().tail(20));
    c.ready(1).await;
    let (s, _) = post(&c.url("/v1/chat/completions"), &chat_body("mock-a", "measured", false)).await;
    assert_eq!(s, 200);
    for (role, port) in ports {
        assert!(wait_for_port(port, Duration::from_secs(10)), "{role} admin listener");
        let base = format!("http://127.0.0.1:{port}");
        assert_eq!(get(&format!("{base}/healthz"), &[]).await.0, 200, "{role} /healthz");
        let (s, v) = get(&format!("{base}/readyz"), &[]).await;
        assert_eq!((s, v["status"].as_str()), (200, Some("ready")), "{role} /readyz");
        let (s, text) = get_text(&format!("{base}/metrics")).await;
        assert_eq!(s, 200, "{role} /metrics");
        promtool_check(&text);
        if role == "worker" {
            let ok = r#"llmr_upstream_attempts_total{model="mock-a",outcome="ok",provider="up"}"#;
            assert_eq!(metric(&text, ok), 1.0, "{text}");
        }
    }
    let (s, text) = get_text(&c.url("/metrics")).await;
    assert_eq!(s, 200);
    promtool_check(&text);
    let served = r#"llmr_http_requests_total{method="POST",route="/v1/chat/completions",status="200"}"#;
    assert_eq!(metric(&text, served), 1.0, "{text}");
    assert_eq!(metric(&text, r#"llmr_target_load{target="up/mock-a"}"#), 0.0);
}

#[test]
fn check_config_reports_what_it_found_and_names_bad_fields() {
    let ok = std::process::Command::new(bin())
        .arg("check-config")
        .env("LLMR__SERVER__TOKEN", "hidden-token")
        .output()
        .unwrap();
    assert!(ok.status.success());
    let out = String::from_utf8_lossy(&ok.stdout);
    assert!(out.contains("configuration is valid") && out.contains("echo"), "{out}");
    assert!(!out.contains("hidden-token"), "secrets are redacted: {out}");

    let bad = std::process::Command::new(bin())
        .arg("check-config")
        .env("LLMR__SERVER__PORT", "not-a-port")
        .output()
        .unwrap();
    assert!(!bad.status.success());
    assert!(String::from_utf8_lossy(&bad.stderr).contains("server.port"));

    let path = std::env::temp_dir().join(format!("llmr-bad-{}.toml", std::process::id()));
    std::fs::write(
        &path,
        "[[providers]]\nname = \"x\"\ntype = \"openai\"\nbase_urll = \"http://x\"\n",
    )
    .unwrap();
    let bad = std::process::Command::new(bin())
        .args(["--config", path.to_str().unwrap(), "check-config"])
        .output()
        .unwrap();
    let _ = std::fs::remove_file(&path);
    assert!(!bad.status.success());
    let err = String::from_utf8_lossy(&bad.stderr);
    assert!(err.contains("base_urll") && err.contains("providers[0]"), "{err}");
}

#[test]
fn help_documents_every_command() {
    let out = std::process::Command::new(bin()).arg("--help").output().unwrap();
    let text = String::from_utf8_lossy(&out.stdout);
    for word in ["all", "gateway", "router", "worker", "check-config", "--config"] {
        assert!(text.contains(word), "--help lacks {word}:\n{text}");
    }
    let out = std::process::Command::new(bin())
        .args(["worker", "--help"])
        .output()
        .unwrap();
    assert!(String::from_utf8_lossy(&out.stdout).contains("--pool"));
}

fn routed_provider(name: &str, mock: &MockUpstream, priority: u32) -> String {
    format!(
        "[[providers]]\nname = \"{name}\"\ntype = \"openai\"\nbase_url = \"{}\"\napi_keys = [\"sk-{name}\"]\nmodels = [\"m\"]\npriority = {priority}\n",
        mock.base_url()
    )
}

/// A circuit opened and a cooldown set through one router and worker are honoured by a new
/// router and worker that never saw them happen: the state lives in Redis.
#[actix_rt::test]
async fn circuit_and_cooldown_state_is_shared_through_redis() {
    let (a, b, c) = (
        MockUpstream::start(&[]),
        MockUpstream::start(&[]),
        MockUpstream::start(&[]),
    );
    a.set_default(Behavior::status(500));
    b.set_default(Behavior {
        status: 429,
        retry_after: Some("30".into()),
        ..Behavior::ok()
    });
    let toml = format!(
        "[health]\nfailure_threshold = 3\nrecovery_ms = 60000\n{}{}{}[[models]]\nname = \"g\"\nstrategy = \"priority\"\ntargets = [{{provider = \"a\", model = \"m\"}}, {{provider = \"b\", model = \"m\"}}, {{provider = \"c\", model = \"m\"}}]\n",
        routed_provider("a", &a, 0),
        routed_provider("b", &b, 1),
        routed_provider("c", &c, 2)
    );
    let mut cl = Cluster::start_with(MockUpstream::start(&[]), &toml, 1, 1, &[]);
    cl.ready(1).await;
    let url = cl.url("/v1/chat/completions");
    for i in 0..5 {
        let (s, b) = post(&url, &chat_body("g", &format!("first {i}"), false)).await;
        assert_eq!(s, 200, "{}", String::from_utf8_lossy(&b));
    }
    assert_eq!(a.request_count(), 3, "a's circuit opened after three failures");
    assert_eq!(b.request_count(), 1, "b's key cools for 30 s after its 429");
    // Replace the router and the worker with new processes.
    cl.router(0).kill();
    cl.worker(0).kill();
    cl.add("router", &["router"]);
    cl.add("worker", &["worker", "--pool", "default"]);
    let before = c.request_count();
    for i in 0..5 {
        let (s, _) = post(&url, &chat_body("g", &format!("second {i}"), false)).await;
        assert_eq!(s, 200);
    }
    assert_eq!(
        (a.request_count(), b.request_count()),
        (3, 1),
        "the new router and worker honoured the shared state"
    );
    assert_eq!(c.request_count(), before + 5);
    let (_, h) = get(&cl.url("/health"), &[]).await;
    let t = |name: &str| {
        h["targets"]
            .as_array()
            .unwrap()
            .iter()
            .find(|t| t["target"] == name)
            .unwrap()
            .clone()
    };
    assert_eq!(t("a/m")["circuit"], "open");
    let bkey = &h["providers"]
        .as_array()
        .unwrap()
        .iter()
        .find(|p| p["name"] == "b")
        .unwrap()["keys"][0];
    assert_eq!(bkey["available"], "cooling", "{bkey}");
}

/// The bounded chaos run: a group of three targets, one failing 30% of requests, one
/// answering 20% with 429 and `Retry-After: 2`, over two routers and two workers.
#[actix_rt::test]
async fn chaos_run_loses_nothing_and_counts_honestly() {
    const TOTAL: usize = 1000;
    const CONCURRENCY: usize = 16;
    const DEADLINE_MS: u64 = 20_000;
    let (m1, m2, m3) = (
        MockUpstream::start(&[]),
        MockUpstream::start(&[]),
        MockUpstream::start(&[]),
    );
    m1.set_default(Behavior {
        status: 500,
        fail_rate: 0.3,
        latency: Duration::from_millis(5),
        ..Behavior::ok()
    });
    m2.set_default(Behavior {
        status: 429,
        fail_rate: 0.2,
        retry_after: Some("2".into()),
        latency: Duration::from_millis(5),
        ..Behavior::ok()
    });
    m3.set_default(Behavior::latency(5));
    let toml = format!(
        "{}{}{}[[models]]\nname = \"g\"\nstrategy = \"least_load\"\ntargets = [{{provider = \"m1\", model = \"m\"}}, {{provider = \"m2\", model = \"m\"}}, {{provider = \"m3\", model = \"m\"}}]\n",
        routed_provider("m1", &m1, 0),
        routed_provider("m2", &m2, 0),
        routed_provider("m3", &m3, 0)
    );
    let cl = Cluster::start_with(
        MockUpstream::start(&[]),
        &toml,
        2,
        2,
        &[
            ("LLMR__SERVER__REQUEST_TIMEOUT_MS", DEADLINE_MS.to_string()),
            ("LLMR__HEALTH__RECOVERY_MS", "1000".to_string()),
        ],
    );
    cl.ready(2).await;
    let started = Instant::now();
    let (tasks, counts) = drive(
        cl.url("/v1/chat/completions"),
        "g",
        "chaos",
        TOTAL,
        CONCURRENCY,
        DEADLINE_MS,
        |i| i % 4 == 0,
    );
    for t in tasks {
        t.await.unwrap();
    }
    let took = started.elapsed();
    let k = std::mem::take(&mut *counts.borrow_mut());
    // No call reached m2 while its key was cooling: after each 429, nothing for 2 s (calls
    // planned before the 429 was known may still land within 200 ms).
    let calls = m2.requests();
    let mut early = 0;
    for (i, r) in calls.iter().enumerate().filter(|(_, r)| r.status == 429) {
        early += calls[i + 1..]
            .iter()
            .filter(|n| n.at > r.at + Duration::from_millis(200) && n.at < r.at + Duration::from_millis(1950))
            .count();
    }
    let rejected = calls.iter().filter(|r| r.status == 429).count();
    let failed = m1.requests().iter().filter(|r| r.status == 500).count();
    // Usage: what we recorded per key equals what the upstreams reported. It is written just
    // after each answer's last frame: wait (bounded) for the last ones to land.
    let answered: u64 = [&m1, &m2, &m3]
        .iter()
        .map(|m| m.reported().values().map(|r| r.requests).sum::<u64>())
        .sum();
    let usage_url = cl.url("/v1/usage");
    eventually(Duration::from_secs(5), || async {
        let (_, u) = get(&usage_url, &[]).await;
        u["data"]
            .as_array()
            .is_some_and(|r| r.iter().map(|x| x["requests"].as_u64().unwrap_or(0)).sum::<u64>() >= answered)
    })
    .await;
    let (_, usage) = get(&cl.url("/v1/usage"), &[]).await;
    let rows = usage["data"].as_array().unwrap();
    let mut mismatches = Vec::new();
    for (name, mock) in [("m1", &m1), ("m2", &m2), ("m3", &m3)] {
        let reported = mock
            .reported()
            .get(&format!("Bearer sk-{name}"))
            .copied()
            .unwrap_or_default();
        let row = rows
            .iter()
            .find(|r| r["key"] == format!("{name}#0"))
            .cloned()
            .unwrap_or_default();
        let ours = (
            row["requests"].as_u64().unwrap_or(0),
            row["prompt_tokens"].as_u64().unwrap_or(0),
            row["completion_tokens"].as_u64().unwrap_or(0),
        );
        if ours != (reported.requests, reported.prompt_tokens, reported.completion_tokens)
            || row["estimated"].as_u64().unwrap_or(0) != 0
        {
            mismatches.push(format!("{name}: ours {ours:?} vs reported {reported:?}"));
        }
    }
    eprintln!(
        "chaos run: {TOTAL} requests (1 in 4 streamed) at c={CONCURRENCY} over 2 routers + 2 workers in {took:?}: ok={} clean_errors={} wrong={} late={}; m1 calls={} (500s: {failed}), m2 calls={} (429s: {rejected}, calls inside a cooldown: {early}), m3 calls={}; usage mismatches: {mismatches:?}",
        k.ok,
        k.clean_errors,
        k.wrong,
        k.late,
        m1.request_count(),
        m2.request_count(),
        m3.request_count()
    );
    assert!(k.ok * 1000 >= TOTAL * 999, "at least 99.9% succeed: {k:?}");
    assert_eq!(k.wrong, 0, "{k:?}");
    assert_eq!(k.late, 0, "{k:?}");
    assert!(failed > 0 && rejected > 0, "the chaos happened");
    assert_eq!(early, 0, "no call to a cooling key before its time");
    assert!(mismatches.is_empty(), "{mismatches:?}");
}

/// Waits for a bounded load's tasks and returns its counts, checking what must hold whatever
/// the fault: every request ended, none wrongly, none after its deadline.
async fn settle(tasks: Vec<actix_rt::task::JoinHandle<()>>, counts: &Rc<RefCell<Counts>>, total: usize) -> Counts {
    for t in tasks {
        t.await.unwrap();
    }
    let k = *counts.borrow();
    assert_eq!(k.ok + k.clean_errors, total, "every request ended: {k:?}");
    assert_eq!(k.wrong, 0, "no wrong answer: {k:?}");
    assert_eq!(k.late, 0, "none outlived its deadline: {k:?}");
    k
}

/// The load the Redis fault tests run under: requests, concurrency, deadline.
const FAULT_LOAD: (usize, usize, u64) = (300, 16, 15_000);

/// `FAULT_LOAD` (a quarter streamed) on a cluster of two workers over Redis; `fault` (which
/// says what it did) runs once 60 requests have reached the upstream. Every request ends,
/// none near its deadline.
async fn redis_fault_under_load(
    tag: &'static str,
    fault: impl AsyncFnOnce(&llmr_testkit::RedisServer) -> String,
) -> (Cluster, Counts) {
    let (total, concurrency, deadline_ms) = FAULT_LOAD;
    let c = Cluster::start(2, &[("LLMR__SERVER__REQUEST_TIMEOUT_MS", deadline_ms.to_string())]);
    c.ready(2).await;
    c.mock.set_default(Behavior::latency(20));
    let started = Instant::now();
    let (tasks, counts) = drive(
        c.url("/v1/chat/completions"),
        "mock-a",
        tag,
        total,
        concurrency,
        deadline_ms,
        |i| i % 4 == 0,
    );
    assert!(eventually(Duration::from_secs(20), || async { c.mock.request_count() >= 60 }).await);
    let what = fault(c.procs.redis.as_ref().unwrap()).await;
    let k = settle(tasks, &counts, total).await;
    eprintln!(
        "{what} under load: {total} requests (a quarter streamed) at c={concurrency} in {:?}: ok={} clean_errors={} slowest={:?}",
        started.elapsed(),
        k.ok,
        k.clean_errors,
        k.slowest
    );
    // Each request, not the run: how long 300 take depends on the machine's load.
    assert!(
        k.slowest < Duration::from_millis(deadline_ms / 2),
        "no request waited for its deadline: the slowest took {:?}",
        k.slowest
    );
    (c, k)
}

#[actix_rt::test]
async fn redis_connections_killed_under_load_end_every_request_promptly() {
    // Every client connection of every process (commands, blocking reads, pub/sub) cut, three
    // times, 200 ms apart, while requests are in flight.
    let (c, k) = redis_fault_under_load("killed", async |redis| {
        let mut killed = Vec::new();
        for _ in 0..3 {
            killed.push(redis.command(&["CLIENT", "KILL", "TYPE", "normal"]));
            killed.push(redis.command(&["CLIENT", "KILL", "TYPE", "pubsub"]));
            actix_rt::time::sleep(Duration::from_millis(200)).await;
        }
        assert!(killed.iter().any(|r| r.starts_with(':') && r != ":0"), "{killed:?}");
        format!("CLIENT KILL ×3 (killed: {killed:?})")
    })
    .await;
    // A command in flight on a cut connection fails (a publish: 503 at once); one sent on a
    // connection already cut is sent again on a fresh one; reply frames are sent again.
    assert!(k.ok >= FAULT_LOAD.0 * 3 / 4, "{k:?}");
    // And the cluster serves on.
    let (s, _) = post(&c.url("/v1/chat/completions"), &chat_body("mock-a", "after", false)).await;
    assert_eq!(s, 200);
}

#[actix_rt::test]
async fn redis_paused_under_load_ends_every_request_promptly() {
    // Every client of Redis (commands and blocking reads) waits 1.5 s: a slow Redis.
    let (_c, k) = redis_fault_under_load("paused", async |redis| {
        assert_eq!(redis.command(&["CLIENT", "PAUSE", "1500", "ALL"]), "+OK");
        "CLIENT PAUSE 1500 ALL".to_owned()
    })
    .await;
    // A request published while Redis is paused past the gateway's publish timeout (0.9 s)
    // gets 503 at once (the policy for an unreachable Redis); the rest are answered — their
    // reply frames are sent again until Redis answers — and none waits for its deadline
    // (`settle`: every error clean, none wrong or late). How many get the 503 depends on the
    // machine's load, not on the request count (2–20 of 300 alone, 33 once beside the whole
    // suite), so the bound is the CLIENT KILL run's: three in four answered.
    assert!(k.ok >= FAULT_LOAD.0 * 3 / 4, "{k:?}");
}

#[actix_rt::test]
async fn redis_restarted_under_load_with_its_aof_keeps_what_was_stored() {
    const TOTAL: usize = 300;
    const CONCURRENCY: usize = 16;
    const DEADLINE_MS: u64 = 15_000;
    let mock = MockUpstream::start(&["mock-a"]);
    let toml = format!("{ECHO}{}", mock_provider("up", &mock.base_url(), &["mock-a"]));
    let cfg = TestConfig::new(toml)
        .env("RUST_LOG", "info")
        .env("LLMR__SERVER__REQUEST_TIMEOUT_MS", DEADLINE_MS);
    let redis = llmr_testkit::RedisServer::start_with_aof();
    let mut c = Cluster {
        procs: ProcessCluster::with_redis(&bin(), cfg, Some(redis)),
        mock,
    };
    for role in ["router", "worker", "worker", "responses", "gateway"] {
        c.add(role, &[role]);
    }
    assert!(c.procs.listening(Duration::from_secs(20)));
    c.ready(2).await;
    let (s, b) = post(
        &c.url("/v1/responses"),
        &json!({"model": "mock-a", "input": "keep me", "store": true}),
    )
    .await;
    assert_eq!(s, 200, "{}", String::from_utf8_lossy(&b));
    let stored = json(&b)["id"].as_str().unwrap().to_owned();
    c.mock.set_default(Behavior::latency(20));
    let started = Instant::now();
    let (tasks, counts) = drive(
        c.url("/v1/chat/completions"),
        "mock-a",
        "restart",
        TOTAL,
        CONCURRENCY,
        DEADLINE_MS,
        |i| i % 4 == 0,
    );
    assert!(eventually(Duration::from_secs(20), || async { c.mock.request_count() >= 60 }).await);
    // SIGKILL, then the same server again on its append-only file.
    c.procs.redis.as_mut().unwrap().restart();
    let back = Instant::now();
    let url = c.url("/v1/chat/completions");
    let served = eventually(Duration::from_secs(10), || async {
        post(&url, &chat_body("mock-a", "after", false)).await.0 == 200
    })
    .await;
    let recovered = back.elapsed();
    assert!(served, "serving again after the restart");
    let k = settle(tasks, &counts, TOTAL).await;
    eprintln!(
        "Redis SIGKILLed and restarted (AOF) under load: {TOTAL} requests (a quarter streamed) at c={CONCURRENCY} in {:?}: ok={} clean_errors={}; serving again {recovered:?} after Redis was back",
        started.elapsed(),
        k.ok,
        k.clean_errors
    );
    assert!(
        recovered < Duration::from_secs(3),
        "serving again within 2 s (+ the probe's own request): {recovered:?}"
    );
    // What was stored before the outage is still there.
    let (s, r) = get(&c.url(&format!("/v1/responses/{stored}")), &[]).await;
    assert_eq!(s, 200, "{r}");
    assert_eq!(r["output"][0]["content"][0]["text"], "mock: keep me", "{r}");
}

/// What the rolling-restart load saw.
#[derive(Default, Debug, Clone, Copy)]
struct Rolling {
    sent: usize,
    ok: usize,
    failed: usize,
    /// Sends that got no HTTP answer (a gateway stopping or not yet listening) and were sent
    /// again to the other gateway, as a client or load balancer would.
    resent: usize,
}

/// Chats (every fourth streamed) with `concurrency` clients over the gateways at `urls` in
/// turn until `stop` (or 20,000 requests); a send that gets no HTTP answer goes to the next
/// gateway (at most 5 times); every answer is checked.
fn drive_rolling(
    urls: Vec<String>,
    concurrency: usize,
    stop: Rc<std::cell::Cell<bool>>,
) -> (Vec<actix_rt::task::JoinHandle<()>>, Rc<RefCell<Rolling>>) {
    let seen = Rc::new(RefCell::new(Rolling::default()));
    let tasks = (0..concurrency)
        .map(|worker| {
            let (urls, stop, seen) = (urls.clone(), stop.clone(), seen.clone());
            actix_rt::spawn(async move {
                let mut i = worker;
                while !stop.get() && seen.borrow().sent < 20_000 {
                    i += concurrency;
                    seen.borrow_mut().sent += 1;
                    let streamed = i % 4 == 0;
                    let body = chat_body("mock-a", &format!("roll {i}"), streamed);
                    let mut outcome = None;
                    for attempt in 0..6 {
                        let url = &urls[(i + attempt) % urls.len()];
                        match client().post(url).send_json(&body).await {
                            Ok(mut resp) => {
                                let b = resp.body().limit(1 << 20).await.unwrap_or_default();
                                outcome = Some((resp.status().as_u16(), b));
                                break;
                            }
                            Err(_) => {
                                seen.borrow_mut().resent += 1;
                                tokio::time::sleep(Duration::from_millis(20)).await;
                            }
                        }
                    }
                    let good = outcome.is_some_and(|(s, b)| {
                        let (text, error) = answer_text(streamed, s, &b);
                        s == 200 && !error && text == format!("mock: roll {i}")
                    });
                    let mut k = seen.borrow_mut();
                    if good {
                        k.ok += 1;
                    } else {
                        k.failed += 1;
                    }
                }
            })
        })
        .collect();
    (tasks, seen)
}

#[actix_rt::test]
async fn a_rolling_restart_of_every_role_under_load_fails_no_request() {
    let mock = MockUpstream::start(&["mock-a"]);
    mock.set_default(Behavior::latency(20));
    let toml = format!("{ECHO}{}", mock_provider("up", &mock.base_url(), &["mock-a"]));
    let cfg = TestConfig::new(toml)
        .env("RUST_LOG", "info")
        .env("LLMR__SERVER__SHUTDOWN_GRACE_MS", 5_000)
        .env("LLMR__SERVER__REQUEST_TIMEOUT_MS", 20_000);
    let mut c = Cluster {
        procs: ProcessCluster::new(&bin(), cfg, true),
        mock,
    };
    let second_port = free_port();
    let gateway_env = |i: usize, first: u16| -> Vec<(&'static str, String)> {
        vec![(
            "LLMR__SERVER__PORT",
            if i == 0 { first } else { second_port }.to_string(),
        )]
    };
    let first_port = c.procs.port;
    for role in ["router", "router", "worker", "worker", "mcp-tools", "responses"] {
        c.add(role, &[role]);
    }
    for i in 0..2 {
        let env = gateway_env(i, first_port);
        let env: Vec<(&str, String)> = env.iter().map(|(k, v)| (*k, v.clone())).collect();
        c.procs.spawn_with("gateway", &["gateway"], &env);
    }
    assert!(wait_for_port(first_port, Duration::from_secs(20)) && wait_for_port(second_port, Duration::from_secs(20)));
    c.ready(2).await;
    let urls = vec![
        format!("http://127.0.0.1:{first_port}/v1/chat/completions"),
        format!("http://127.0.0.1:{second_port}/v1/chat/completions"),
    ];
    let stop = Rc::new(std::cell::Cell::new(false));
    let started = Instant::now();
    let (tasks, seen) = drive_rolling(urls, 8, stop.clone());
    assert!(eventually(Duration::from_secs(20), || async { c.mock.request_count() >= 50 }).await);
    // Each process in turn: SIGTERM, wait for it to exit, start its replacement, wait until
    // the cluster sees it.
    let health = format!("http://127.0.0.1:{second_port}/health");
    let mut restarted = Vec::new();
    for (role, i) in [
        ("router", 0),
        ("router", 1),
        ("worker", 0),
        ("worker", 1),
        ("mcp-tools", 0),
        ("responses", 0),
        ("gateway", 0),
        ("gateway", 1),
    ] {
        let t = Instant::now();
        let p = c.procs.nth(role, i).unwrap();
        p.terminate();
        let exited = eventually(Duration::from_secs(15), || {
            let done = p.exited().is_some();
            async move { done }
        })
        .await;
        assert!(exited, "{role} {i} exited after SIGTERM:\n{}", p.tail(20));
        let status = p.exited().unwrap();
        assert!(
            status.success(),
            "{role} {i} exited cleanly: {status:?}\n{}",
            p.tail(20)
        );
        let before = c.procs.named(role).count();
        let env = if role == "gateway" {
            gateway_env(i, first_port)
        } else {
            Vec::new()
        };
        let env: Vec<(&str, String)> = env.iter().map(|(k, v)| (*k, v.clone())).collect();
        c.procs.spawn_with(role, &[role], &env);
        assert_eq!(c.procs.named(role).count(), before + 1);
        if role == "gateway" {
            let port = if i == 0 { first_port } else { second_port };
            assert!(wait_for_port(port, Duration::from_secs(20)), "the new gateway listens");
        } else {
            let back = eventually(Duration::from_secs(20), || async {
                let (_, h) = get(&health, &[]).await;
                h["services"].as_array().is_some_and(|a| {
                    a.iter().filter(|s| s["service"] == role).count()
                        >= if matches!(role, "router" | "worker") { 2 } else { 1 }
                })
            })
            .await;
            assert!(back, "{role} {i} replaced");
        }
        restarted.push(format!("{role} {i} in {:?}", t.elapsed()));
    }
    stop.set(true);
    for t in tasks {
        t.await.unwrap();
    }
    let k = *seen.borrow();
    eprintln!(
        "rolling restart of 8 processes under load (c=8, a quarter streamed) in {:?}: {k:?}; {}",
        started.elapsed(),
        restarted.join(", ")
    );
    assert_eq!(k.failed, 0, "no request failed: {k:?}");
    assert_eq!(k.ok, k.sent, "{k:?}");
    // Every replacement is still running, and served its share.
    for role in ["router", "worker", "mcp-tools", "responses", "gateway"] {
        let n = c.procs.named(role).count();
        let p = c.procs.nth(role, n - 1).unwrap();
        assert!(p.alive(), "the new {role} runs:\n{}", p.tail(20));
    }
}

#[actix_rt::test]
async fn a_redis_with_an_acl_user_is_reached_with_the_credentials_in_the_url() {
    let redis = llmr_testkit::RedisServer::start_with_user("llmr", "s3cret-pass");
    assert!(
        redis.command(&["PING"]).starts_with("-NOAUTH"),
        "the server refuses clients without credentials"
    );
    let url = format!("redis://llmr:s3cret-pass@127.0.0.1:{}/", redis.port);
    let mock = MockUpstream::start(&["mock-a"]);
    let toml = format!("{ECHO}{}", mock_provider("up", &mock.base_url(), &["mock-a"]));
    let cfg = TestConfig::new(toml).env("LLMR__REDIS__URL", url);
    let mut c = Cluster {
        procs: ProcessCluster::with_redis(&bin(), cfg, Some(redis)),
        mock,
    };
    for role in ["router", "worker", "gateway"] {
        c.add(role, &[role]);
    }
    assert!(c.procs.listening(Duration::from_secs(20)));
    c.ready(1).await;
    let (s, b) = post(
        &c.url("/v1/chat/completions"),
        &chat_body("mock-a", "authenticated", false),
    )
    .await;
    assert_eq!(s, 200, "{}", String::from_utf8_lossy(&b));
    assert_eq!(json(&b)["choices"][0]["message"]["content"], "mock: authenticated");
    let (s, b) = post(&c.url("/v1/chat/completions"), &chat_body("mock-a", "streamed", true)).await;
    assert_eq!(s, 200);
    assert_eq!(streamed_text(&sse_events(&b)), "mock: streamed");
    // Wrong credentials: the process waits for Redis and says why, serving nothing.
    let bad = format!("redis://llmr:wrong@127.0.0.1:{}/", c.procs.redis.as_ref().unwrap().port);
    c.procs.spawn_with("router", &["router"], &[("LLMR__REDIS__URL", bad)]);
    let n = c.procs.named("router").count();
    let refused = eventually(Duration::from_secs(10), || {
        let log = c.procs.nth("router", n - 1).unwrap().tail(20);
        async move { log.contains("waiting for Redis") && log.to_ascii_lowercase().contains("authentication failed") }
    })
    .await;
    assert!(refused, "{}", c.procs.nth("router", n - 1).unwrap().tail(20));
}

/// A CA and a server certificate for `localhost` (openssl), in `dir`: (ca, cert, key).
fn test_certificates(dir: &std::path::Path) -> (PathBuf, PathBuf, PathBuf) {
    let run = |args: &[&str]| {
        let out = std::process::Command::new("openssl")
            .args(args)
            .current_dir(dir)
            .output()
            .expect("openssl (Debian package openssl) is installed");
        assert!(
            out.status.success(),
            "openssl {args:?}: {}",
            String::from_utf8_lossy(&out.stderr)
        );
    };
    run(&[
        "req",
        "-x509",
        "-newkey",
        "rsa:2048",
        "-nodes",
        "-keyout",
        "ca.key",
        "-out",
        "ca.crt",
        "-days",
        "2",
        "-subj",
        "/CN=llmr-test-ca",
    ]);
    run(&[
        "req",
        "-newkey",
        "rsa:2048",
        "-nodes",
        "-keyout",
        "server.key",
        "-out",
        "server.csr",
        "-subj",
        "/CN=localhost",
    ]);
    std::fs::write(dir.join("san.ext"), "subjectAltName=DNS:localhost,IP:127.0.0.1\n").unwrap();
    run(&[
        "x509",
        "-req",
        "-in",
        "server.csr",
        "-CA",
        "ca.crt",
        "-CAkey",
        "ca.key",
        "-CAcreateserial",
        "-out",
        "server.crt",
        "-days",
        "2",
        "-extfile",
        "san.ext",
    ]);
    (dir.join("ca.crt"), dir.join("server.crt"), dir.join("server.key"))
}

#[actix_rt::test]
async fn a_redis_over_tls_is_reached_with_rediss() {
    let dir = std::env::temp_dir().join(format!("llmr-tls-{}-{}", std::process::id(), free_port()));
    std::fs::create_dir_all(&dir).unwrap();
    let (ca, cert, key) = test_certificates(&dir);
    let port = free_port();
    let child = std::process::Command::new("redis-server")
        .args([
            "--port",
            "0",
            "--tls-port",
            &port.to_string(),
            "--bind",
            "127.0.0.1",
            "--save",
            "",
            "--appendonly",
            "no",
        ])
        .args(["--tls-auth-clients", "no", "--tls-cert-file"])
        .arg(&cert)
        .arg("--tls-key-file")
        .arg(&key)
        .arg("--tls-ca-cert-file")
        .arg(&ca)
        .stdout(std::process::Stdio::null())
        .spawn()
        .unwrap();
    let _redis = Proc::adopt("redis-tls", child);
    assert!(
        wait_for_port(port, Duration::from_secs(5)),
        "redis-server listens with TLS"
    );
    let mock = MockUpstream::start(&["mock-a"]);
    let toml = format!("{ECHO}{}", mock_provider("up", &mock.base_url(), &["mock-a"]));
    // The server's certificate is verified: the test's CA is given as the trusted roots
    // (SSL_CERT_FILE replaces the system's, as for a private CA in a deployment).
    let cfg = TestConfig::new(toml)
        .env("LLMR__REDIS__URL", format!("rediss://localhost:{port}/"))
        .env("SSL_CERT_FILE", ca.display())
        .env("LLMR__REDIS__PREFIX", llmr_testkit::unique_prefix("tls"));
    let mut c = Cluster {
        procs: ProcessCluster::with_redis(&bin(), cfg, None),
        mock,
    };
    for role in ["router", "worker", "gateway"] {
        c.add(role, &[role]);
    }
    assert!(c.procs.listening(Duration::from_secs(20)), "{}", c.gateway().tail(20));
    c.ready(1).await;
    let (s, b) = post(&c.url("/v1/chat/completions"), &chat_body("mock-a", "over tls", false)).await;
    assert_eq!(s, 200, "{}", String::from_utf8_lossy(&b));
    assert_eq!(json(&b)["choices"][0]["message"]["content"], "mock: over tls");
    let (s, b) = post(&c.url("/v1/chat/completions"), &chat_body("mock-a", "streamed", true)).await;
    assert_eq!(s, 200);
    assert_eq!(streamed_text(&sse_events(&b)), "mock: streamed");
    // Without the CA the certificate is refused: the process waits for Redis and says why.
    c.procs
        .spawn_with("router", &["router"], &[("SSL_CERT_FILE", "/dev/null".to_owned())]);
    let n = c.procs.named("router").count();
    let refused = eventually(Duration::from_secs(10), || {
        let log = c.procs.nth("router", n - 1).unwrap().tail(20);
        async move { log.contains("waiting for Redis") }
    })
    .await;
    assert!(refused, "{}", c.procs.nth("router", n - 1).unwrap().tail(20));
    let _ = std::fs::remove_dir_all(&dir);
}

/// An HTTPS client that trusts only the CA in `ca` (PEM).
fn tls_client(ca: &std::path::Path) -> awc::Client {
    use rustls::pki_types::CertificateDer;
    use rustls::pki_types::pem::PemObject;
    let _ = rustls::crypto::ring::default_provider().install_default();
    let mut roots = rustls::RootCertStore::empty();
    for cert in CertificateDer::pem_file_iter(ca).unwrap() {
        roots.add(cert.unwrap()).unwrap();
    }
    let cfg = rustls::ClientConfig::builder()
        .with_root_certificates(roots)
        .with_no_client_auth();
    awc::Client::builder()
        .connector(awc::Connector::new().rustls_0_23(std::sync::Arc::new(cfg)))
        .timeout(Duration::from_secs(30))
        .finish()
}

#[actix_rt::test]
async fn the_gateway_serves_https_with_a_configured_certificate() {
    let dir = std::env::temp_dir().join(format!("llmr-https-{}-{}", std::process::id(), free_port()));
    std::fs::create_dir_all(&dir).unwrap();
    let (ca, cert, key) = test_certificates(&dir);
    let mock = MockUpstream::start(&["mock-a"]);
    let cfg = TestConfig::new(format!("{ECHO}{}", mock_provider("up", &mock.base_url(), &["mock-a"])))
        .env("LLMR__SERVER__TLS_CERT", cert.display())
        .env("LLMR__SERVER__TLS_KEY", key.display());
    let c = all_process(cfg);
    let https = tls_client(&ca);
    let url = format!("https://localhost:{}/v1/chat/completions", c.port);
    let body = chat_body("mock-a", "over https", false);
    let answered = eventually(Duration::from_secs(10), || async {
        https.post(&url).send_json(&body).await.is_ok_and(|r| r.status() == 200)
    })
    .await;
    assert!(answered, "{}", c.named("all").next().unwrap().tail(20));
    let mut resp = https.post(&url).send_json(&body).await.unwrap();
    let b = resp.body().await.unwrap();
    assert_eq!(json(&b)["choices"][0]["message"]["content"], "mock: over https");
    let mut resp = https
        .post(&url)
        .send_json(&chat_body("mock-a", "streamed", true))
        .await
        .unwrap();
    let b = resp.body().await.unwrap();
    assert_eq!(streamed_text(&sse_events(&b)), "mock: streamed");
    // Plain HTTP to the TLS port gets no HTTP answer; a client that does not trust the CA is refused.
    let plain = client()
        .post(format!("http://127.0.0.1:{}/v1/chat/completions", c.port))
        .send_json(&body)
        .await;
    assert!(
        plain.as_ref().map_or(true, |r| r.status() != 200),
        "{:?}",
        plain.map(|r| r.status())
    );
    let untrusted = client().post(&url).send_json(&body).await;
    assert!(untrusted.is_err(), "a certificate from an unknown CA is refused");
    let _ = std::fs::remove_dir_all(&dir);
}

#[test]
fn a_half_configured_tls_listener_is_refused_at_start() {
    let out = std::process::Command::new(bin())
        .args(["all"])
        .env("LLMR__SERVER__PORT", "0")
        .env("LLMR__SERVER__TLS_CERT", "/nonexistent/cert.pem")
        .output()
        .unwrap();
    assert!(!out.status.success());
    let err = String::from_utf8_lossy(&out.stderr).to_string() + &String::from_utf8_lossy(&out.stdout);
    assert!(err.contains("tls_cert") && err.contains("neither"), "{err}");
}

#[actix_rt::test]
async fn upstreams_over_https_are_verified_against_the_configured_ca() {
    let dir = std::env::temp_dir().join(format!("llmr-upstream-tls-{}-{}", std::process::id(), free_port()));
    std::fs::create_dir_all(&dir).unwrap();
    let (ca, cert, key) = test_certificates(&dir);
    let mock = MockUpstream::start_tls(&["mock-a"], &cert, &key);
    assert!(mock.base_url().starts_with("https://localhost:"));
    let toml = format!("{ECHO}{}", mock_provider("up", &mock.base_url(), &["mock-a"]));
    // With the private CA among the roots: served.
    let trusting = all_process(TestConfig::new(toml.clone()).env("LLMR__WORKER__CA_FILE", ca.display()));
    let url = trusting.url("/v1/chat/completions");
    let (s, b) = post(&url, &chat_body("mock-a", "verified", false)).await;
    assert_eq!(s, 200, "{}", String::from_utf8_lossy(&b));
    assert_eq!(json(&b)["choices"][0]["message"]["content"], "mock: verified");
    let (s, b) = post(&url, &chat_body("mock-a", "streamed", true)).await;
    assert_eq!(s, 200);
    assert_eq!(streamed_text(&sse_events(&b)), "mock: streamed");
    assert_eq!(mock.request_count(), 2);
    // Without it the certificate is not trusted: the attempt fails, nothing reaches the mock.
    let strict = all_process(TestConfig::new(toml));
    let (s, b) = post(
        &strict.url("/v1/chat/completions"),
        &chat_body("mock-a", "unverified", false),
    )
    .await;
    assert_eq!(s, 502, "{}", String::from_utf8_lossy(&b));
    assert_eq!(mock.request_count(), 2);
    let _ = std::fs::remove_dir_all(&dir);
}

#[actix_rt::test]
async fn a_remote_mcp_server_named_inside_the_network_needs_allow_internal() {
    // The "remote server" is the mock, which records any request; its URL names `localhost`.
    let remote = MockUpstream::start(&[]);
    let url = format!("http://localhost:{}/mcp", remote.port);
    for allow in [false, true] {
        let toml =
            format!("{ECHO}[[mcp.remote_servers]]\nnamespace = \"near\"\nurl = \"{url}\"\nallow_internal = {allow}\n");
        let c = all_process(TestConfig::new(toml));
        let mcp = c.url("/mcp");
        let sid = mcp_session(&mcp, &[]).await;
        let list = json!({"jsonrpc": "2.0", "id": 2, "method": "tools/list", "params": {}});
        let (s, _) = post_with(&mcp, &list, &[("mcp-session-id", sid.as_str())]).await;
        assert_eq!(s, 200);
        let asked = remote.requests().iter().any(|r| r.path == "/mcp");
        let log = std::fs::read_to_string(&c.named("all").next().unwrap().log).unwrap();
        if allow {
            assert!(asked, "allowed explicitly, the server is asked");
        } else {
            assert!(!asked, "refused before connecting");
            assert!(log.contains("an internal address"), "{log}");
        }
    }
}

/// A tools directory holding the example calculator.
fn calculator_tools(purpose: &str) -> PathBuf {
    let tools = std::env::temp_dir().join(format!("llmr-{purpose}-tools-{}-{}", std::process::id(), free_port()));
    std::fs::create_dir_all(&tools).unwrap();
    let calculator =
        std::fs::read_to_string(concat!(env!("CARGO_MANIFEST_DIR"), "/../../config/tools/calculator.js")).unwrap();
    std::fs::write(tools.join("calculator.js"), calculator).unwrap();
    tools
}

/// Every role over one Redis, with the calculator tool and the cache on, the `degraded`
/// policies all `open` or all at their default (`closed`).
async fn degraded_cluster(open: bool) -> Cluster {
    let mock = MockUpstream::start(&["mock-a"]);
    let mut cfg = TestConfig::new(format!("{ECHO}{}", mock_provider("up", &mock.base_url(), &["mock-a"])))
        .env("LLMR__CACHE__ENABLED", "true")
        .env(
            "LLMR__SCRIPTING__LIBRARIES_PATH",
            concat!(env!("CARGO_MANIFEST_DIR"), "/../../config/libraries"),
        )
        .env("LLMR__SCRIPTING__TOOLS_PATH", calculator_tools("degraded").display())
        .env(
            "LLMR__SCRIPTING__HOST_COMMAND",
            format!("{} script-host", bin().display()),
        );
    if open {
        for f in [
            "ROUTING_STATE",
            "USAGE",
            "CACHE",
            "MCP_SESSIONS",
            "STORED_RESPONSES",
            "TOOL_CALLS",
        ] {
            cfg = cfg.env(&format!("LLMR__DEGRADED__{f}"), "open");
        }
    }
    let mut c = Cluster {
        procs: ProcessCluster::new(&bin(), cfg, true),
        mock,
    };
    for role in ["router", "worker", "mcp-tools", "responses", "gateway"] {
        c.add(role, &[role]);
    }
    assert!(c.procs.listening(Duration::from_secs(20)));
    c.ready(1).await;
    c
}

impl Cluster {
    /// Refuses the cluster's keys under `part` (e.g. `usage`, which covers `usage_counts:` and `usage_index:`): see `RedisServer::deny_keys`.
    fn deny(&self, part: &str) {
        let prefix = self.procs.prefix().unwrap();
        self.procs.redis.as_ref().unwrap().deny_keys(&format!("{prefix}{part}"));
    }

    fn allow_all(&self) {
        self.procs.redis.as_ref().unwrap().allow_all_keys();
    }

    /// `/health`'s state of `feature`.
    async fn feature(&self, feature: &str) -> String {
        let (_, h) = get(&self.url("/health"), &[]).await;
        h["features"][feature].as_str().unwrap_or_default().to_owned()
    }
}

/// One chat (a fresh question each time, so the cache never answers it): status and body.
async fn chat_once(c: &Cluster, n: usize) -> (u16, serde_json::Value) {
    let (s, b) = post(
        &c.url("/v1/chat/completions"),
        &chat_body("mock-a", &format!("question {n}"), false),
    )
    .await;
    (s, json(&b))
}

#[actix_rt::test]
async fn closed_policies_refuse_while_a_features_store_part_fails_and_recover() {
    let c = degraded_cluster(false).await;
    assert_eq!(chat_once(&c, 0).await.0, 200);
    // Usage keys refused (an ACL on the live Redis): the routing state, which reads the keys'
    // requests of today, cannot be read — 503 before any upstream is asked.
    c.deny("usage");
    let before = c.mock.request_count();
    let (s, b) = chat_once(&c, 1).await;
    assert_eq!(s, 503, "{b}");
    assert!(b["error"]["message"].as_str().unwrap().contains("routing state"), "{b}");
    assert_eq!(c.mock.request_count(), before, "reached no upstream");
    for f in ["routing_state", "usage", "chat"] {
        let state = c.feature(f).await;
        assert!(
            state.starts_with("unavailable: store: ") && state.contains("NoPerm"),
            "{f}: {state}"
        );
    }
    assert_eq!(c.feature("cache").await, "ok");
    c.allow_all();
    assert_eq!(chat_once(&c, 2).await.0, 200, "serves again");
    assert_eq!(c.feature("usage").await, "ok");

    // The cache: a lookup that fails refuses the request.
    c.deny("cache:");
    let cached = json!({"model": "mock-a", "messages": [{"role": "user", "content": "same"}], "temperature": 0});
    let (s, b) = post(&c.url("/v1/chat/completions"), &cached).await;
    assert_eq!(s, 503, "{}", String::from_utf8_lossy(&b));
    assert!(json(&b)["error"]["message"].as_str().unwrap().contains("cache"));
    assert!(c.feature("cache").await.starts_with("unavailable: store: "));
    c.allow_all();

    // MCP sessions: a message whose session cannot be checked is refused.
    let mcp = c.url("/mcp");
    let sid = mcp_session(&mcp, &[]).await;
    let list = json!({"jsonrpc": "2.0", "id": 2, "method": "tools/list"});
    c.deny("kv:mcp-session:");
    let (s, b) = post_with(&mcp, &list, &[("mcp-session-id", sid.as_str())]).await;
    assert_eq!(s, 503, "{}", String::from_utf8_lossy(&b));
    assert!(c.feature("mcp").await.starts_with("unavailable: store: "));
    c.allow_all();

    // Tool calls: a call whose once-claim cannot be stored is not run.
    c.deny("toolcall:");
    let call = json!({"jsonrpc": "2.0", "id": 3, "method": "tools/call", "params": {"name": "calculator", "arguments": {"expression": "6*7"}}});
    let (s, b) = post_with(&mcp, &call, &[("mcp-session-id", sid.as_str())]).await;
    assert_eq!(s, 200, "{}", String::from_utf8_lossy(&b));
    let r = json(&b);
    assert_eq!(r["result"]["isError"], true, "{}", String::from_utf8_lossy(&b));
    assert!(
        r["result"]["content"][0]["text"].as_str().unwrap().contains("not run"),
        "{r}"
    );
    c.allow_all();
    let (_, b) = post_with(&mcp, &call, &[("mcp-session-id", sid.as_str())]).await;
    assert!(
        json(&b)["result"]["content"][0]["text"]
            .as_str()
            .unwrap()
            .contains("\"value\":42")
    );

    // Stored responses: a response that cannot be stored is refused, not answered as stored.
    c.deny("resp:");
    let (s, b) = post(&c.url("/v1/responses"), &json!({"model": "mock-a", "input": "keep me"})).await;
    assert_eq!(s, 503, "{}", String::from_utf8_lossy(&b));
    assert!(c.feature("responses").await.starts_with("unavailable: store: "));
    c.allow_all();
    assert_eq!(c.feature("responses").await, "ok");
}

#[actix_rt::test]
async fn open_policies_serve_without_the_failing_store_part_and_say_so() {
    let c = degraded_cluster(true).await;
    // Usage (and so the routing state) refused: answered, routed as if idle, counts lost.
    c.deny("usage");
    for n in 0..3 {
        let (s, b) = chat_once(&c, n).await;
        assert_eq!(s, 200, "{b}");
    }
    for f in ["routing_state", "usage", "chat"] {
        let state = c.feature(f).await;
        assert!(state.starts_with("degraded: fail open: store: "), "{f}: {state}");
    }
    c.allow_all();

    // The cache: a failed lookup is a miss; the answer comes from the upstream.
    c.deny("cache:");
    let before = c.mock.request_count();
    let cached = json!({"model": "mock-a", "messages": [{"role": "user", "content": "same"}], "temperature": 0});
    for _ in 0..2 {
        let (s, b) = post(&c.url("/v1/chat/completions"), &cached).await;
        assert_eq!(s, 200, "{}", String::from_utf8_lossy(&b));
    }
    assert_eq!(c.mock.request_count(), before + 2, "both missed");
    assert!(c.feature("cache").await.starts_with("degraded: "));
    c.allow_all();

    // MCP: sessions handed out and served unchecked; tool calls run unclaimed.
    let mcp = c.url("/mcp");
    c.deny("kv:mcp-session:");
    let sid = mcp_session(&mcp, &[]).await;
    let list = json!({"jsonrpc": "2.0", "id": 2, "method": "tools/list"});
    let (s, b) = post_with(&mcp, &list, &[("mcp-session-id", sid.as_str())]).await;
    assert_eq!(s, 200, "{}", String::from_utf8_lossy(&b));
    assert!(c.feature("mcp").await.starts_with("degraded: "));
    c.allow_all();
    let sid = mcp_session(&mcp, &[]).await;
    c.deny("toolcall:");
    let call = json!({"jsonrpc": "2.0", "id": 3, "method": "tools/call", "params": {"name": "calculator", "arguments": {"expression": "6*7"}}});
    let (s, b) = post_with(&mcp, &call, &[("mcp-session-id", sid.as_str())]).await;
    assert_eq!(s, 200, "{}", String::from_utf8_lossy(&b));
    assert!(
        json(&b)["result"]["content"][0]["text"]
            .as_str()
            .unwrap()
            .contains("\"value\":42")
    );
    c.allow_all();

    // Stored responses: answered, and said not stored; a background one is still refused.
    c.deny("resp:");
    let (s, b) = post(&c.url("/v1/responses"), &json!({"model": "mock-a", "input": "keep me"})).await;
    assert_eq!(s, 200, "{}", String::from_utf8_lossy(&b));
    let r = json(&b);
    assert_eq!(r["store"], false, "{r}");
    assert_eq!(r["status"], "completed", "{r}");
    let (s, _) = post(
        &c.url("/v1/responses"),
        &json!({"model": "mock-a", "input": "later", "background": true}),
    )
    .await;
    assert_eq!(s, 503);
    c.allow_all();
    let (s, _) = get(&c.url(&format!("/v1/responses/{}", r["id"].as_str().unwrap())), &[]).await;
    assert_eq!(s, 404, "it was not stored");
}

#[actix_rt::test]
async fn a_closed_usage_policy_stops_new_attempts_until_counts_can_be_written() {
    let mock = MockUpstream::start(&["mock-a"]);
    let toml = format!("{ECHO}{}", mock_provider("up", &mock.base_url(), &["mock-a"]));
    let c = Cluster::start_with(mock, &toml, 1, 1, &[("LLMR__DEGRADED__ROUTING_STATE", "open".into())]);
    c.ready(1).await;
    c.deny("usage");
    // The first answer goes out (its count, written just after it, is lost); from then on no
    // new attempt starts while counts fail.
    assert_eq!(chat_once(&c, 0).await.0, 200);
    let mut refused = None;
    for n in 1..40 {
        let before = c.mock.request_count();
        let (s, b) = chat_once(&c, n).await;
        if s == 503 {
            refused = Some((b, before));
            break;
        }
        actix_rt::time::sleep(Duration::from_millis(50)).await;
    }
    let (b, before) = refused.expect("refused once a count failed");
    assert!(
        b["error"]["message"]
            .as_str()
            .unwrap()
            .contains("Usage cannot be recorded"),
        "{b}"
    );
    assert_eq!(c.mock.request_count(), before, "reached no upstream");
    assert_eq!(chat_once(&c, 50).await.0, 503, "still refused");
    c.allow_all();
    assert_eq!(chat_once(&c, 2).await.0, 200, "counts again");
}
