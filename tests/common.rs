//! Helpers shared by the end-to-end suites: an HTTP client, SSE parsing, waiting on a
//! condition, and running a test on both backends. The fixtures themselves (config,
//! in-process app, process cluster) live in `llmr_testkit::fixture`.
#![allow(dead_code)]

use std::time::Duration;

/// Runs `$body(redis: bool)` on both backends.
#[allow(unused_macros)]
macro_rules! both {
    ($name:ident) => {
        mod $name {
            #[actix_rt::test]
            async fn memory() {
                super::$name(false).await;
            }
            #[actix_rt::test]
            async fn redis() {
                super::$name(true).await;
            }
        }
    };
}

#[allow(unused_imports)]
pub use llmr_testkit::{ECHO, InProcess, ProcessCluster, TestConfig, mock_provider, provider_entry};
use serde_json::Value;

pub fn client() -> awc::Client {
    awc::Client::builder().timeout(Duration::from_secs(60)).finish()
}

pub fn chat_body(model: &str, text: &str, stream: bool) -> Value {
    let mut v = serde_json::json!({"model": model, "messages": [{"role": "user", "content": text}]});
    if stream {
        v["stream"] = Value::Bool(true);
    }
    v
}

/// POSTs JSON; returns status and body.
pub async fn post(url: &str, body: &Value) -> (u16, bytes::Bytes) {
    post_with(url, body, &[]).await
}

pub async fn post_with(url: &str, body: &Value, headers: &[(&str, &str)]) -> (u16, bytes::Bytes) {
    let mut req = client().post(url);
    for (k, v) in headers {
        req = req.insert_header((*k, *v));
    }
    let mut resp = req.send_json(body).await.unwrap_or_else(|e| panic!("POST {url}: {e}"));
    let status = resp.status().as_u16();
    let body = resp.body().limit(16 << 20).await.unwrap();
    (status, body)
}

pub async fn get(url: &str, headers: &[(&str, &str)]) -> (u16, Value) {
    let mut req = client().get(url);
    for (k, v) in headers {
        req = req.insert_header((*k, *v));
    }
    let mut resp = req.send().await.unwrap_or_else(|e| panic!("GET {url}: {e}"));
    let status = resp.status().as_u16();
    let body = resp.body().limit(16 << 20).await.unwrap();
    (status, serde_json::from_slice(&body).unwrap_or(Value::Null))
}

pub fn json(b: &[u8]) -> Value {
    serde_json::from_slice(b).unwrap_or_else(|e| panic!("not JSON ({e}): {}", String::from_utf8_lossy(b)))
}

/// The `data:` payloads of an SSE body, in order (`[DONE]` included as a string).
pub fn sse_events(body: &[u8]) -> Vec<String> {
    String::from_utf8_lossy(body)
        .split("\n\n")
        .filter_map(|ev| ev.lines().find_map(|l| l.strip_prefix("data: ")).map(str::to_owned))
        .collect()
}

/// The assistant text of a streamed answer.
pub fn streamed_text(events: &[String]) -> String {
    events
        .iter()
        .filter(|e| e.as_str() != "[DONE]")
        .filter_map(|e| serde_json::from_str::<Value>(e).ok())
        .filter_map(|v| v["choices"][0]["delta"]["content"].as_str().map(str::to_owned))
        .collect()
}

/// Polls `f` until it is true or `timeout` passes (for state other processes publish).
pub async fn eventually<F, Fut>(timeout: Duration, mut f: F) -> bool
where
    F: FnMut() -> Fut,
    Fut: std::future::Future<Output = bool>,
{
    let until = std::time::Instant::now() + timeout;
    while std::time::Instant::now() < until {
        if f().await {
            return true;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    false
}

/// Checks a Prometheus exposition with `promtool check metrics` (Debian: the `prometheus`
/// package; `.ci/run` installs promtool alone). Returns what promtool said.
pub fn promtool_check(text: &str) -> String {
    use std::io::Write;
    let mut child = std::process::Command::new("promtool")
        .args(["check", "metrics"])
        .stdin(std::process::Stdio::piped())
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::piped())
        .spawn()
        .unwrap_or_else(|e| panic!("promtool is needed (Debian package prometheus; .ci/run installs it): {e}"));
    child.stdin.take().unwrap().write_all(text.as_bytes()).unwrap();
    let out = child.wait_with_output().unwrap();
    let said = format!(
        "{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(out.status.success(), "promtool check metrics failed:\n{said}\n{text}");
    said
}

/// GETs a text body.
pub async fn get_text(url: &str) -> (u16, String) {
    let mut resp = client()
        .get(url)
        .send()
        .await
        .unwrap_or_else(|e| panic!("GET {url}: {e}"));
    let status = resp.status().as_u16();
    let body = resp.body().limit(16 << 20).await.unwrap();
    (status, String::from_utf8_lossy(&body).into_owned())
}

/// The value of one series (`name{labels}` exactly as exposed) in a Prometheus text; 0 when
/// absent.
pub fn metric(text: &str, series: &str) -> f64 {
    text.lines()
        .find_map(|l| l.strip_prefix(series)?.strip_prefix(' ')?.parse().ok())
        .unwrap_or(0.0)
}
