//! The soak run (`just soak [MINUTES]`, not in CI): the cluster over Redis — gateway, router,
//! two workers, mcp-tools — at a fixed rate for MINUTES: chats (a third of them streamed) to a
//! group whose first target is the `chaos` provider (one call in six fails before its first
//! byte: 500s, refused connections, 429s) and whose second is the mock upstream, so failover
//! has to hide every fault; and calculator tool calls through `/mcp` from four sessions. Every
//! 30 s window records its p99s, errors, and each process's RSS and open file descriptors;
//! the report says whether memory and descriptors stayed flat and whether anything was lost.

use std::cell::RefCell;
use std::fmt::Write as _;
use std::path::Path;
use std::rc::Rc;
use std::time::{Duration, Instant};

use bytes::Bytes;
use hdrhistogram::Histogram;
use serde_json::json;

use llmr_testkit::{ProcessCluster, TestConfig};

use crate::load::{self, Shape};
use crate::procs::{Mock, rss_mb};

/// Seconds per window.
const WINDOW_S: u64 = 30;
/// Offered load per second.
const CHATS: u64 = 40;
const STREAMS: u64 = 20;
const TOOLS: u64 = 20;

/// One window's figures.
#[derive(Debug, Clone, Default)]
pub struct Window {
    pub at_s: u64,
    pub sent: u64,
    pub lost: u64,
    pub chat_p99_ms: f64,
    pub stream_p99_ms: f64,
    pub tool_p99_ms: f64,
    /// (process, RSS MB, open descriptors) at the window's end.
    pub procs: Vec<(String, f64, usize)>,
}

/// Open file descriptors of a process.
pub fn open_fds(pid: u32) -> usize {
    std::fs::read_dir(format!("/proc/{pid}/fd")).map_or(0, Iterator::count)
}

fn config(mock: &Mock) -> String {
    format!(
        r#"[server]
request_timeout_ms = 30000
max_queued = 100000
[telemetry]
log_level = "warn"
[[providers]]
name = "flaky"
type = "chaos"
models = ["m"]
[providers.chaos]
error_rate = 0.1
refuse_rate = 0.04
rate_limit_rate = 0.02
retry_after_s = 1
[[providers]]
name = "mock"
type = "openai"
base_url = "{}"
models = ["bench"]
[[models]]
name = "soak"
targets = [{{provider = "flaky", model = "m"}}, {{provider = "mock", model = "bench"}}]
"#,
        mock.base_url()
    )
}

fn chat(stream: bool) -> Bytes {
    Bytes::from(
        json!({"model": "soak", "messages": [{"role": "user", "content": "Say hello."}], "stream": stream}).to_string(),
    )
}

/// `TOOLS` calculator calls per second for `secs` from four sessions: (latency, errors).
async fn tool_load(url: String, secs: u64) -> (Histogram<u64>, u64) {
    let client = awc::Client::builder().timeout(Duration::from_secs(30)).finish();
    let hist = Rc::new(RefCell::new(
        Histogram::<u64>::new_with_bounds(1, 120_000_000, 3).unwrap_or_else(|_| unreachable!()),
    ));
    let errors = Rc::new(RefCell::new(0u64));
    let msg = json!({"jsonrpc": "2.0", "id": 1, "method": "tools/call", "params": {"name": "calculator", "arguments": {"expression": "6*7"}}});
    let sessions = 4;
    let every = Duration::from_secs_f64(sessions as f64 / TOOLS as f64);
    let tasks = (0..sessions).map(|_| {
        let (client, url, msg, hist, errors) = (client.clone(), url.clone(), msg.clone(), hist.clone(), errors.clone());
        async move {
            let Some(sid) = crate::mcp::session(&client, &url).await else {
                *errors.borrow_mut() += secs * TOOLS / sessions;
                return;
            };
            let start = Instant::now();
            for i in 0..secs * TOOLS / sessions {
                let due = start + every.mul_f64(i as f64);
                tokio::time::sleep_until(due.into()).await;
                if crate::mcp::call(&client, &url, &sid, &msg).await {
                    let _ = hist.borrow_mut().record(due.elapsed().as_micros().max(1) as u64);
                } else {
                    *errors.borrow_mut() += 1;
                }
            }
        }
    });
    futures_util::future::join_all(tasks).await;
    let h = hist.borrow().clone();
    let e = *errors.borrow();
    (h, e)
}

/// Runs the soak for `minutes` with the binaries in `bin_dir`.
pub fn run(bin_dir: &Path, minutes: u64, log: &mut dyn FnMut(&str)) -> std::io::Result<Vec<Window>> {
    let mock = Mock::start(bin_dir, 20, 20)?;
    let c = cluster(bin_dir, &mock)?;
    let (chat_url, mcp_url) = (c.url("/v1/chat/completions"), c.url("/mcp"));
    let windows = (minutes * 60).div_ceil(WINDOW_S).max(1);
    let mut out = Vec::new();
    let start = Instant::now();
    for w in 0..windows {
        let window = one_window(&c, &chat_url, &mcp_url, start)?;
        log(&format!(
            "soak window {}/{windows} at {} s: sent {} lost {} p99 chat {:.1} ms stream {:.1} ms tool {:.1} ms; {}",
            w + 1,
            window.at_s,
            window.sent,
            window.lost,
            window.chat_p99_ms,
            window.stream_p99_ms,
            window.tool_p99_ms,
            window
                .procs
                .iter()
                .map(|(n, rss, fds)| format!("{n} {rss:.1} MB {fds} fds"))
                .collect::<Vec<_>>()
                .join(", ")
        ));
        out.push(window);
    }
    Ok(out)
}

/// The soaked cluster over Redis (router, two workers, mcp-tools, gateway) with the
/// repository's tools and libraries, listening and settled.
fn cluster(bin_dir: &Path, mock: &Mock) -> std::io::Result<ProcessCluster> {
    let repo = Path::new(env!("CARGO_MANIFEST_DIR")).join("../..");
    let cfg = TestConfig::new(config(mock))
        .env("LLMR__SCRIPTING__TOOLS_PATH", repo.join("config/tools").display())
        .env(
            "LLMR__SCRIPTING__LIBRARIES_PATH",
            repo.join("config/libraries").display(),
        )
        .env(
            "LLMR__SCRIPTING__HOST_COMMAND",
            format!("{} script-host", bin_dir.join("llmrouter").display()),
        );
    let mut c = ProcessCluster::new(&bin_dir.join("llmrouter"), cfg, true);
    for role in ["router", "worker", "worker", "mcp-tools", "gateway"] {
        c.spawn(role, &[role]);
    }
    if !c.listening(Duration::from_secs(30)) {
        return Err(std::io::Error::other("the cluster did not listen"));
    }
    std::thread::sleep(Duration::from_secs(3));
    Ok(c)
}

/// One window: chats, streamed chats and tool calls at their rates, side by side; then each
/// process's memory and descriptors.
fn one_window(c: &ProcessCluster, chat_url: &str, mcp_url: &str, start: Instant) -> std::io::Result<Window> {
    let at_rate = |url: String, stream: bool, rps: u64| {
        std::thread::spawn(move || load::run(&url, chat(stream), Shape::Rate { rps, secs: WINDOW_S }, 1))
    };
    let plain = at_rate(chat_url.to_owned(), false, CHATS);
    let streams = at_rate(chat_url.to_owned(), true, STREAMS);
    let mcp_url = mcp_url.to_owned();
    let tools = std::thread::spawn(move || actix_rt::System::new().block_on(tool_load(mcp_url, WINDOW_S)));
    let (plain, streams) = (
        plain.join().map_err(|_| std::io::Error::other("load thread"))?,
        streams.join().map_err(|_| std::io::Error::other("load thread"))?,
    );
    let (tool_hist, tool_errors) = tools.join().map_err(|_| std::io::Error::other("tool thread"))?;
    Ok(Window {
        at_s: start.elapsed().as_secs(),
        sent: plain.ok + plain.errors + streams.ok + streams.errors + tool_hist.len() + tool_errors,
        lost: plain.errors + streams.errors + tool_errors,
        chat_p99_ms: plain.ms(0.99),
        stream_p99_ms: streams.ms(0.99),
        tool_p99_ms: tool_hist.value_at_quantile(0.99) as f64 / 1000.0,
        procs: c
            .procs
            .iter()
            .map(|p| (p.name.clone(), rss_mb(p.pid()), open_fds(p.pid())))
            .collect(),
    })
}

/// The report as Markdown: every window, then first against last.
pub fn markdown(windows: &[Window], minutes: u64) -> String {
    let mut md = String::new();
    let sent: u64 = windows.iter().map(|w| w.sent).sum();
    let lost: u64 = windows.iter().map(|w| w.lost).sum();
    let _ = writeln!(
        md,
        "## Soak: {minutes} min, cluster over Redis (gateway, router, 2 workers, mcp-tools)\n\n\
         Offered per second: {CHATS} chats, {STREAMS} streamed chats, {TOOLS} tool calls; chats go to a group \
         of a chaos target (16% of calls fail before their first byte) and the mock upstream.\n\n\
         Sent {sent}, lost {lost}.\n"
    );
    let names: Vec<String> = windows
        .first()
        .map(|w| w.procs.iter().map(|p| p.0.clone()).collect())
        .unwrap_or_default();
    let _ = write!(
        md,
        "| at (s) | sent | lost | p99 chat (ms) | p99 stream (ms) | p99 tool (ms) |"
    );
    for n in &names {
        let _ = write!(md, " {n} RSS MB / fds |");
    }
    let _ = writeln!(md);
    let _ = writeln!(md, "|{}", " --- |".repeat(6 + names.len()));
    for w in windows {
        let _ = write!(
            md,
            "| {} | {} | {} | {:.1} | {:.1} | {:.1} |",
            w.at_s, w.sent, w.lost, w.chat_p99_ms, w.stream_p99_ms, w.tool_p99_ms
        );
        for (_, rss, fds) in &w.procs {
            let _ = write!(md, " {rss:.1} / {fds} |");
        }
        let _ = writeln!(md);
    }
    md
}
