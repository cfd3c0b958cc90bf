//! The Responses, front-door and cache benchmark: a trivial response through `/v1/responses`,
//! and the same question through the Anthropic (`/v1/messages`) and Ollama (`/api/chat`)
//! front doors, against the same trivial chat through `/v1/chat/completions`, and a cache hit against the chat that
//! fills it and against the mock straight — on `llmrouter all` (memory) and on gateway, router,
//! worker and responses processes over Redis, with the cache on. Serial (latency) and 16
//! concurrent clients (throughput); every run bounded.

use std::fmt::Write as _;
use std::path::Path;
use std::time::Duration;

use bytes::Bytes;
use llmr_testkit::{ProcessCluster, TestConfig};
use serde_json::json;

use crate::load::{Shape, Stats, run};
use crate::procs::Mock;

/// One measured request kind on one deployment.
pub struct Row {
    pub deployment: &'static str,
    pub call: &'static str,
    pub serial: (f64, f64),
    pub rps: f64,
    pub errors: u64,
}

fn chat(deterministic: bool) -> Bytes {
    let mut v = json!({"model": "bench", "messages": [{"role": "user", "content": "Say hello."}]});
    if deterministic {
        v["temperature"] = json!(0);
    }
    Bytes::from(v.to_string())
}

/// The same question through the Anthropic and Ollama front doors (not streamed).
fn messages() -> Bytes {
    Bytes::from(
        json!({"model": "bench", "max_tokens": 64, "messages": [{"role": "user", "content": "Say hello."}]})
            .to_string(),
    )
}

fn ollama_chat() -> Bytes {
    Bytes::from(
        json!({"model": "bench", "stream": false, "messages": [{"role": "user", "content": "Say hello."}]}).to_string(),
    )
}

fn response() -> Bytes {
    Bytes::from(json!({"model": "bench", "input": "Say hello.", "store": false}).to_string())
}

fn start(bin_dir: &Path, mock: &Mock, cluster: bool) -> std::io::Result<ProcessCluster> {
    let cfg = TestConfig::new(format!(
        "{}[cache]\nenabled = true\n[[providers]]\nname = \"mock\"\ntype = \"openai\"\nbase_url = \"{}\"\nmodels = [\"bench\"]\n",
        crate::procs::telemetry_toml(),
        mock.base_url()
    ));
    let mut c = ProcessCluster::new(&bin_dir.join("llmrouter"), cfg, cluster);
    if cluster {
        for role in ["router", "worker", "responses", "gateway"] {
            c.spawn(role, &[role]);
        }
    } else {
        c.spawn("llmrouter all", &["all"]);
    }
    if !c.listening(Duration::from_secs(30)) {
        return Err(std::io::Error::other("llmrouter did not listen"));
    }
    Ok(c)
}

fn measure(url: &str, body: &Bytes, serial_n: usize, secs: u64, threads: usize) -> (Stats, Stats) {
    // Warm-up (and, for the cache, the miss that fills it).
    let _ = run(url, body.clone(), Shape::Serial { n: 20 }, 1);
    let serial = run(url, body.clone(), Shape::Serial { n: serial_n }, 1);
    let closed = run(url, body.clone(), Shape::Closed { concurrency: 16, secs }, threads);
    (serial, closed)
}

fn row(deployment: &'static str, call: &'static str, (serial, closed): (Stats, Stats)) -> Row {
    Row {
        deployment,
        call,
        serial: (serial.ms(0.5), serial.ms(0.99)),
        rps: closed.rps(),
        errors: serial.errors + closed.errors,
    }
}

/// Runs the benchmark; `scale` shortens it.
pub fn bench(bin_dir: &Path, scale: f64, threads: usize, log: &mut dyn FnMut(&str)) -> std::io::Result<Vec<Row>> {
    let serial_n = ((1000.0 * scale) as usize).max(50);
    let secs = ((5.0 * scale).ceil() as u64).max(1);
    let mock = Mock::start(bin_dir, 0, 4)?;
    let mut rows = vec![row(
        "direct (baseline)",
        "chat",
        measure(
            &format!("{}/chat/completions", mock.base_url()),
            &chat(false),
            serial_n,
            secs,
            threads,
        ),
    )];
    for (name, cluster) in [("all, in-memory", false), ("cluster over Redis", true)] {
        log(&format!("responses bench: {name}"));
        let c = start(bin_dir, &mock, cluster)?;
        let (chat_url, resp_url) = (c.url("/v1/chat/completions"), c.url("/v1/responses"));
        rows.push(row(
            name,
            "chat",
            measure(&chat_url, &chat(false), serial_n, secs, threads),
        ));
        rows.push(row(
            name,
            "responses",
            measure(&resp_url, &response(), serial_n, secs, threads),
        ));
        for (call, path, body) in [
            ("anthropic /v1/messages", "/v1/messages", messages()),
            ("ollama /api/chat", "/api/chat", ollama_chat()),
        ] {
            rows.push(row(name, call, measure(&c.url(path), &body, serial_n, secs, threads)));
        }
        rows.push(row(
            name,
            "chat, cache hit",
            measure(&chat_url, &chat(true), serial_n, secs, threads),
        ));
    }
    Ok(rows)
}

/// The report section.
pub fn markdown(rows: &[Row]) -> String {
    let mut md = String::from(
        "\n## Responses, front doors and cache\n\nA trivial response through `/v1/responses` (emulated over a streamed chat), and the same question\nthrough `/v1/messages` and `/api/chat`, against the same chat through `/v1/chat/completions`; a cache hit against the chat and the mock straight.\nSerial latency (ms) and throughput at 16 concurrent clients.\n\n| deployment | call | p50 | p99 | req/s (c=16) | ratio p50 to chat | errors |\n| --- | --- | ---: | ---: | ---: | ---: | ---: |\n",
    );
    for r in rows {
        let chat = rows
            .iter()
            .find(|c| c.deployment == r.deployment && c.call == "chat")
            .map_or(r.serial.0, |c| c.serial.0);
        let _ = writeln!(
            md,
            "| {} | {} | {:.3} | {:.3} | {:.0} | {:.2} | {} |",
            r.deployment,
            r.call,
            r.serial.0,
            r.serial.1,
            r.rps,
            r.serial.0 / chat.max(1e-9),
            r.errors
        );
    }
    md
}
