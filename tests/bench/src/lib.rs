//! `just bench`: the same load against the mock directly (the baseline) and against each
//! deployment of llmrouter, reported as added latency, throughput, CPU per request and
//! memory, plus a horizontal-scaling run. Every run is bounded in time and every process it
//! starts is stopped by PID. Deployments are started with the testkit's process-cluster
//! fixture, the same one the end-to-end suites use.
//!
//! Binaries: `llmr-bench` (the benchmark) and `mock-upstream` (a fast canned upstream).
//!
//! # Layout
//! - [`load`]: the load generator.
//! - [`procs`]: deployments as processes; CPU and RSS from `/proc`.
//! - `report`: the run's report as Markdown, and the targets met or missed.
//! - [`mcp`]: a trivial tool call through `/mcp`.
//! - [`responses`]: a trivial response through `/v1/responses`, and cache hits.
//! - [`governance`]: a virtual key with limits against `server.token` (`--governance`).
//! - [`console`]: what one open operator console page costs an idle gateway (`--console`).
//! - [`wrk`]: Debian's wrk on the same targets, serial and c=64, beside the load generator.
//! - [`dead_callers`]: how long upstream calls run on after a gateway is SIGKILLed
//!   (`--dead-callers`).

pub mod commands;
pub mod console;
pub mod dead_callers;
pub mod floor;
pub mod governance;
pub mod load;
pub mod mcp;
pub mod overload;
pub mod peers;
pub mod procs;
mod report;
pub mod responses;
pub mod soak;
pub mod streams;
pub mod wrk;

use std::collections::BTreeMap;
use std::path::Path;

use bytes::Bytes;
use load::{Shape, Stats};
use procs::{Deployment, Mock, Mode};
pub use report::{markdown, targets};

/// One load scenario.
#[derive(Debug, Clone)]
pub struct Scenario {
    pub name: &'static str,
    pub shape: Shape,
    pub stream: bool,
    pub prompt_bytes: usize,
    /// `bench`, or `bench-gap`: a stream whose first event comes at once and the rest 5 ms apart.
    pub model: &'static str,
}

/// The scenario names the targets read.
pub const SERIAL: &str = "serial";
pub const C64: &str = "c=64";
pub const RATE: &str = "3000 req/s";
pub const STREAM: &str = "stream 20 chunks, c=16";
pub const FIRST_BYTE_SERIAL: &str = "first byte, serial (events 5 ms apart)";
pub const FIRST_BYTE_C16: &str = "first byte, c=16 (events 5 ms apart)";

/// The scenarios of the issue; `scale` < 1 shortens them (a smoke run).
pub fn scenarios(scale: f64) -> Vec<Scenario> {
    let secs = |s: u64| ((s as f64 * scale).ceil() as u64).max(1);
    let n = |n: usize| ((n as f64 * scale).ceil() as usize).max(10);
    let closed = |concurrency, s| Shape::Closed {
        concurrency,
        secs: secs(s),
    };
    let sc = |name, shape, stream, prompt_bytes, model| Scenario {
        name,
        shape,
        stream,
        prompt_bytes,
        model,
    };
    vec![
        sc(SERIAL, Shape::Serial { n: n(2000) }, false, 0, "bench"),
        sc("c=16", closed(16, 10), false, 0, "bench"),
        sc(C64, closed(64, 10), false, 0, "bench"),
        sc(
            RATE,
            Shape::Rate {
                rps: 3000,
                secs: secs(10),
            },
            false,
            0,
            "bench",
        ),
        sc(STREAM, closed(16, 5), true, 0, "bench"),
        sc(FIRST_BYTE_SERIAL, Shape::Serial { n: n(300) }, true, 0, "bench-gap"),
        sc(FIRST_BYTE_C16, closed(16, 5), true, 0, "bench-gap"),
        sc("4 KiB prompt, c=16", closed(16, 5), false, 4096, "bench"),
    ]
}

pub fn body(stream: bool, prompt_bytes: usize) -> Bytes {
    body_for("bench", stream, prompt_bytes)
}

pub fn body_for(model: &str, stream: bool, prompt_bytes: usize) -> Bytes {
    let content = if prompt_bytes == 0 {
        "Say hello.".to_string()
    } else {
        "lorem ipsum ".repeat(prompt_bytes / 12 + 1)[..prompt_bytes].to_string()
    };
    let v = serde_json::json!({"model": model, "messages": [{"role": "user", "content": content}], "stream": stream});
    Bytes::from(v.to_string())
}

/// One measured row.
pub struct Row {
    pub scenario: &'static str,
    pub mode: Mode,
    pub stats: Stats,
    pub cpu_ms_per_req: Option<f64>,
}

/// Memory of one process.
pub struct Memory {
    pub mode: Mode,
    pub process: String,
    pub idle_mb: f64,
    pub after_mb: f64,
}

/// Redis commands one request costs (commands run by scripts included), from `INFO
/// commandstats` before and after a scenario, less what the idle cluster sends in as long.
pub struct Commands {
    pub mode: Mode,
    pub scenario: &'static str,
    pub per_request: f64,
    /// Per command, most first.
    pub by_command: Vec<(String, f64)>,
}

#[derive(Default)]
pub struct Report {
    pub rows: Vec<Row>,
    pub memory: Vec<Memory>,
    /// (workers, req/s)
    pub scaling: Vec<Scaled>,
    pub commands: Vec<Commands>,
    /// Serial round trips through three bare Redis stream hops.
    pub redis_floor: Option<Stats>,
    /// Redis's CPU time per request at c=64 (ms), per mode with a Redis.
    pub redis_cpu: Vec<(Mode, f64)>,
    /// wrk's serial and c=64 runs, per mode (none when wrk is not installed).
    pub wrk: Vec<(Mode, wrk::Pair)>,
    pub notes: Vec<String>,
}

/// Runs every scenario against every mode, counting Redis commands where there is a Redis;
/// then the three-hop Redis floor.
pub fn run(
    bin_dir: &Path,
    modes: &[Mode],
    scale: f64,
    threads: usize,
    log: &mut dyn FnMut(&str),
) -> std::io::Result<Report> {
    let mut report = Report::default();
    let mock = Mock::start(bin_dir, 0, 20)?;
    for &mode in modes {
        let d = match Deployment::start(mode, bin_dir, &mock, 1, 4096, 4096) {
            Ok(d) => d,
            Err(e) if matches!(mode, Mode::Nginx | Mode::LiteLlm) => {
                report.notes.push(format!("{} not measured: {e}", mode.name()));
                continue;
            }
            Err(e) => return Err(e),
        };
        measure(&mut report, mode, &d, scale, threads, log)?;
    }
    drop(mock);
    report.redis_floor = Some(redis_floor(scale, log)?);
    Ok(report)
}

/// Every scenario against one deployment, once it answers and is warm: a row each, Redis
/// commands and CPU where it has a Redis, and its memory idle and after c=64.
fn measure(
    report: &mut Report,
    mode: Mode,
    d: &Deployment,
    scale: f64,
    threads: usize,
    log: &mut dyn FnMut(&str),
) -> std::io::Result<()> {
    if !d.wait_ready(&body(false, 0)) {
        return Err(std::io::Error::other(format!("{} never answered", mode.name())));
    }
    // Warm up connections, caches and allocators.
    let warm = Shape::Closed {
        concurrency: 16,
        secs: 1,
    };
    load::run(&d.url, body(false, 0), warm, threads);
    let idle = d.rss_mb();
    let idle_commands = match d.redis_url() {
        Some(url) => Some(commands::idle_rate(&url, std::time::Duration::from_secs(2)).map_err(std::io::Error::other)?),
        None => None,
    };
    let mut after = idle.clone();
    for sc in scenarios(scale) {
        let row = scenario(report, mode, d, &sc, idle_commands.as_ref(), threads, log)?;
        if sc.name == C64 {
            after = d.rss_mb();
        }
        report.rows.push(row);
    }
    outside_view(report, mode, d, scale, threads, log)?;
    for ((process, idle_mb), (_, after_mb)) in idle.into_iter().zip(after) {
        report.memory.push(Memory {
            mode,
            process,
            idle_mb,
            after_mb,
        });
    }
    Ok(())
}

/// wrk's serial and c=64 runs against `d` (5 s each at scale 1), or a note that wrk is
/// missing.
fn outside_view(
    report: &mut Report,
    mode: Mode,
    d: &Deployment,
    scale: f64,
    threads: usize,
    log: &mut dyn FnMut(&str),
) -> std::io::Result<()> {
    let Some(binary) = wrk::binary() else {
        let note = "wrk not installed (Debian's package `wrk`): no outside figures".to_owned();
        if !report.notes.contains(&note) {
            report.notes.push(note);
        }
        return Ok(());
    };
    let secs = ((5.0 * scale).ceil() as u64).max(1);
    let p = wrk::pair(&binary, &d.url, &body(false, 0), threads, secs)?;
    log(&format!(
        "{:<18} wrk serial p50 {:.3} ms p99 {:.3} ms; c=64 {:.0} req/s p99 {:.3} ms; errors {}",
        mode.name(),
        p.serial.p50_ms,
        p.serial.p99_ms,
        p.c64.rps,
        p.c64.p99_ms,
        p.serial.errors + p.c64.errors
    ));
    report.wrk.push((mode, p));
    Ok(())
}

/// One scenario against one deployment: its row; at c=64 Redis's CPU, and when serial the
/// Redis commands per request (less the idle rate), into the report.
fn scenario(
    report: &mut Report,
    mode: Mode,
    d: &Deployment,
    sc: &Scenario,
    idle_commands: Option<&BTreeMap<String, f64>>,
    threads: usize,
    log: &mut dyn FnMut(&str),
) -> std::io::Result<Row> {
    let (cpu0, redis0) = (d.cpu_ms(), d.redis_cpu_ms());
    let counted = d.redis_url().filter(|_| matches!(sc.shape, Shape::Serial { .. }));
    let before = counted
        .as_deref()
        .map(commands::snapshot)
        .transpose()
        .map_err(std::io::Error::other)?;
    let stats = load::run(
        &d.url,
        body_for(sc.model, sc.stream, sc.prompt_bytes),
        sc.shape,
        threads,
    );
    let cpu = d.cpu_ms() - cpu0;
    if sc.name == C64 && d.redis_url().is_some() && stats.ok > 0 {
        let ms = (d.redis_cpu_ms() - redis0) / stats.ok as f64;
        report.redis_cpu.push((mode, ms));
        log(&format!("{:<18} {C64}: Redis CPU {ms:.4} ms per request", mode.name()));
    }
    if let (Some(url), Some(before), Some(idle)) = (&counted, &before, idle_commands) {
        let after = commands::snapshot(url).map_err(std::io::Error::other)?;
        let (per_request, by_command) = commands::per_request(before, &after, idle, stats.elapsed, stats.ok);
        log(&format!(
            "{:<18} {:<40} {per_request:.1} Redis commands per request",
            mode.name(),
            sc.name
        ));
        report.commands.push(Commands {
            mode,
            scenario: sc.name,
            per_request,
            by_command,
        });
    }
    log(&format!(
        "{:<18} {:<40} {:>8.0} req/s  p50 {:>7.3} ms  p99 {:>7.3} ms  first byte p50 {:>7.3} ms  errors {}",
        mode.name(),
        sc.name,
        stats.rps(),
        stats.ms(0.5),
        stats.ms(0.99),
        stats.ttfb_ms(0.5),
        stats.errors
    ));
    let cpu_ms_per_req = (mode != Mode::Direct && stats.ok > 0).then(|| cpu / stats.ok as f64);
    Ok(Row {
        scenario: sc.name,
        mode,
        stats,
        cpu_ms_per_req,
    })
}

/// Serial round trips through three bare Redis stream hops, on a Redis of its own.
fn redis_floor(scale: f64, log: &mut dyn FnMut(&str)) -> std::io::Result<Stats> {
    let redis = llmr_testkit::RedisServer::start();
    let n = ((2000.0 * scale).ceil() as usize).max(10);
    let floor = floor::redis_three_hops(&redis.url(), n).map_err(std::io::Error::other)?;
    log(&format!(
        "three Redis stream hops (floor)          p50 {:>7.3} ms  p99 {:>7.3} ms",
        floor.ms(0.5),
        floor.ms(0.99)
    ));
    Ok(floor)
}

/// One step of the scaling run.
#[derive(Debug, Clone, Copy)]
pub struct Scaled {
    pub workers: usize,
    /// Answers per second.
    pub rps: f64,
    /// Error answers (a step with any measured something else than the workers).
    pub errors: u64,
}

/// The scaling run: a 50 ms upstream, workers with `max_in_flight` each, at a concurrency
/// that saturates one worker several times over. The gateway has room to queue every
/// client's request, so what is measured is the workers' throughput and not the gateway
/// shedding the excess (with `max_queued` at one worker's `max_in_flight`, four workers
/// answered 937 req/s beside 55,125 503s in 4 s; with room, 1,155 and none).
pub fn scaling(
    bin_dir: &Path,
    counts: &[usize],
    max_in_flight: usize,
    secs: u64,
    threads: usize,
    log: &mut dyn FnMut(&str),
) -> std::io::Result<Vec<Scaled>> {
    let mock = Mock::start(bin_dir, 50, 20)?;
    let concurrency = max_in_flight * 8;
    let mut out = Vec::new();
    for &n in counts {
        let d = Deployment::start(Mode::Cluster, bin_dir, &mock, n, max_in_flight, concurrency)?;
        if !d.wait_ready(&body(false, 0)) {
            return Err(std::io::Error::other("the scaling cluster never answered"));
        }
        let s = load::run(&d.url, body(false, 0), Shape::Closed { concurrency, secs }, threads);
        log(&format!(
            "scaling: {n} worker(s), max_in_flight {max_in_flight}, c={concurrency}: {:.0} req/s, {} errors",
            s.rps(),
            s.errors
        ));
        out.push(Scaled {
            workers: n,
            rps: s.rps(),
            errors: s.errors,
        });
    }
    Ok(out)
}
