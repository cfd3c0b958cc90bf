//! The MCP benchmark: a trivial JavaScript tool (`echo`, returns its argument) called through
//! `/mcp`, serially and from concurrent sessions, on `llmrouter all` in memory and on the
//! gateway, router, worker and mcp-tools processes over Redis. `ping` through the same
//! endpoint is the baseline: its round trip is the transport, session check and bus; the
//! difference is what running a tool in the sandbox adds. The direct baseline is the same
//! tool run straight in a script host process, without gateway or bus.

use std::cell::RefCell;
use std::fmt::Write as _;
use std::path::Path;

use std::rc::Rc;
use std::time::{Duration, Instant};

use hdrhistogram::Histogram;
use serde_json::{Value, json};

use llmr_testkit::{ProcessCluster, TestConfig};

use crate::procs::rss_mb;

/// One measured call kind on one deployment.
#[derive(Debug, Clone)]
pub struct Row {
    pub deployment: String,
    pub call: &'static str,
    pub concurrency: usize,
    pub count: u64,
    pub errors: u64,
    pub rps: f64,
    pub p50_ms: f64,
    pub p99_ms: f64,
}

/// The MCP report: rows and the RSS of each process after the load.
#[derive(Debug, Clone, Default)]
pub struct McpReport {
    /// The baseline: the same tool run straight in a script host (no HTTP, no bus), p50 and
    /// p99 in ms.
    pub direct: (f64, f64),
    pub rows: Vec<Row>,
    pub rss: Vec<(String, f64)>,
}

/// The baseline: `count` calls of the tool straight into a script host process; p50 and p99
/// in ms, and how many calls ran in a context an earlier call had left as it was made.
fn direct(bin_dir: &Path, count: u64) -> (f64, f64, u64) {
    let pool = llmr_script::ScriptPool::new(
        bin_dir.join("llmrouter"),
        vec!["script-host".into()],
        llmr_script::Limits::default(),
        1,
    );
    let call = llmr_script::Call::module(ECHO, "default", json!({"text": "hi"})).with_host();
    let mut h = Histogram::<u64>::new_with_bounds(1, 60_000_000, 3).unwrap_or_else(|_| unreachable!());
    actix_rt::System::new().block_on(async {
        for i in 0..count + 10 {
            let t = Instant::now();
            if pool.run(&call).await.is_ok() && i >= 10 {
                let _ = h.record(t.elapsed().as_micros() as u64);
            }
        }
    });
    (
        h.value_at_quantile(0.5) as f64 / 1000.0,
        h.value_at_quantile(0.99) as f64 / 1000.0,
        pool.calls_in_reused_contexts(),
    )
}

const ECHO: &str =
    "export const description = \"Returns its text.\";\nexport default function ({ text }) { return text; }\n";

pub(crate) async fn session(client: &awc::Client, url: &str) -> Option<String> {
    let init = json!({"jsonrpc": "2.0", "id": 0, "method": "initialize", "params": {"protocolVersion": "2025-11-25", "capabilities": {}, "clientInfo": {"name": "bench", "version": "1"}}});
    let resp = client.post(url).send_json(&init).await.ok()?;
    resp.headers().get("mcp-session-id")?.to_str().ok().map(str::to_owned)
}

pub(crate) async fn call(client: &awc::Client, url: &str, sid: &str, msg: &Value) -> bool {
    let Ok(mut resp) = client
        .post(url)
        .insert_header(("mcp-session-id", sid))
        .insert_header(("accept", "application/json, text/event-stream"))
        .send_json(msg)
        .await
    else {
        return false;
    };
    let ok = resp.status().is_success();
    match resp.body().await {
        Ok(b) => {
            ok && serde_json::from_slice::<Value>(&b)
                .is_ok_and(|v| v.get("result").is_some_and(|r| r.get("isError") != Some(&json!(true))))
        }
        Err(_) => false,
    }
}

/// `count` calls from each of `concurrency` sessions.
async fn measure(url: &str, msg: &Value, concurrency: usize, count: u64) -> (Histogram<u64>, u64, Duration) {
    let client = awc::Client::builder()
        .connector(awc::Connector::new().limit(concurrency.max(1)))
        .timeout(Duration::from_secs(30))
        .finish();
    let hist = Rc::new(RefCell::new(
        Histogram::<u64>::new_with_bounds(1, 60_000_000, 3).unwrap_or_else(|_| unreachable!()),
    ));
    let errors = Rc::new(RefCell::new(0u64));
    let start = Instant::now();
    let tasks = (0..concurrency).map(|_| {
        let (client, hist, errors) = (client.clone(), hist.clone(), errors.clone());
        async move {
            let Some(sid) = session(&client, url).await else {
                *errors.borrow_mut() += count;
                return;
            };
            for _ in 0..count {
                let t = Instant::now();
                if call(&client, url, &sid, msg).await {
                    let _ = hist.borrow_mut().record(t.elapsed().as_micros() as u64);
                } else {
                    *errors.borrow_mut() += 1;
                }
            }
        }
    });
    futures_util::future::join_all(tasks).await;
    let elapsed = start.elapsed();
    let h = hist.borrow().clone();
    let e = *errors.borrow();
    (h, e, elapsed)
}

/// Runs the MCP benchmark with the `llmrouter` binary in `bin_dir`.
pub fn run(bin_dir: &Path, scale: f64, log: &mut dyn FnMut(&str)) -> std::io::Result<McpReport> {
    let tools = std::env::temp_dir().join(format!("llmr-bench-tools-{}", std::process::id()));
    std::fs::create_dir_all(&tools)?;
    std::fs::write(tools.join("echo.js"), ECHO)?;
    let mut report = McpReport::default();
    let count = ((500.0 * scale) as u64).max(20);
    let (p50, p99, reused) = direct(bin_dir, count);
    report.direct = (p50, p99);
    log(&format!(
        "mcp direct (script host, no gateway): p50 {p50:.3} ms p99 {p99:.3} ms; {reused} of {} calls in a reused context",
        count + 10
    ));
    for cluster in [false, true] {
        let cfg = TestConfig::new(crate::procs::telemetry_toml()).env("LLMR__SCRIPTING__TOOLS_PATH", tools.display());
        let mut c = ProcessCluster::new(&bin_dir.join("llmrouter"), cfg, cluster);
        let roles: &[&str] = if cluster {
            &["router", "worker", "mcp-tools", "gateway"]
        } else {
            &["all"]
        };
        for role in roles {
            c.spawn(role, &[role]);
        }
        let name = if cluster {
            "cluster, Redis (mcp-tools process)"
        } else {
            "all, in-memory"
        };
        if !c.listening(Duration::from_secs(30)) {
            return Err(std::io::Error::other(format!("{name} did not listen")));
        }
        let url = c.url("/mcp");
        let tool = json!({"jsonrpc": "2.0", "id": 1, "method": "tools/call", "params": {"name": "echo", "arguments": {"text": "hi"}}});
        let ping = json!({"jsonrpc": "2.0", "id": 1, "method": "ping", "params": {}});
        let system = actix_rt::System::new();
        // Warm up: sessions, script hosts, the tool's description.
        system.block_on(measure(&url, &tool, 2, 10));
        for (call_name, msg) in [("ping", &ping), ("tools/call echo", &tool)] {
            for concurrency in [1usize, 8] {
                let n = if concurrency == 1 { count } else { count / 4 };
                let (h, errors, elapsed) = system.block_on(measure(&url, msg, concurrency, n));
                let row = Row {
                    deployment: name.into(),
                    call: call_name,
                    concurrency,
                    count: h.len(),
                    errors,
                    rps: h.len() as f64 / elapsed.as_secs_f64(),
                    p50_ms: h.value_at_quantile(0.5) as f64 / 1000.0,
                    p99_ms: h.value_at_quantile(0.99) as f64 / 1000.0,
                };
                log(&format!(
                    "mcp {name} {call_name} c={concurrency}: p50 {:.3} ms p99 {:.3} ms {:.0}/s errors {errors}",
                    row.p50_ms, row.p99_ms, row.rps
                ));
                report.rows.push(row);
            }
        }
        for p in &c.procs {
            report.rss.push((format!("{name}: {}", p.name), rss_mb(p.pid())));
        }
    }
    let _ = std::fs::remove_dir_all(&tools);
    Ok(report)
}

/// The report as Markdown.
pub fn markdown(r: &McpReport) -> String {
    let mut md = String::from(
        "\n## MCP: a trivial tool call through /mcp\n\nThe baseline (direct) is the same tool run straight in a script host process, serially; `ping` is the endpoint's own round trip (transport, session, bus); `tools/call echo` is both. Ratios are p50 against the direct p50.\n\n| deployment | call | concurrency | calls | errors | calls/s | p50 ms | p99 ms | p50 ÷ direct |\n|---|---|---:|---:|---:|---:|---:|---:|---:|\n",
    );
    let _ = writeln!(
        md,
        "| direct (script host) | echo | 1 | — | — | — | {:.3} | {:.3} | 1.00 |",
        r.direct.0, r.direct.1
    );
    for row in &r.rows {
        let _ = writeln!(
            md,
            "| {} | {} | {} | {} | {} | {:.0} | {:.3} | {:.3} | {:.2} |",
            row.deployment,
            row.call,
            row.concurrency,
            row.count,
            row.errors,
            row.rps,
            row.p50_ms,
            row.p99_ms,
            row.p50_ms / r.direct.0.max(0.001)
        );
    }
    md.push_str("\nRSS after the load (MB): ");
    md.push_str(
        &r.rss
            .iter()
            .map(|(n, m)| format!("{n} {m:.1}"))
            .collect::<Vec<_>>()
            .join(", "),
    );
    md.push('\n');
    md
}
