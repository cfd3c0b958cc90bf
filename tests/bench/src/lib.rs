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
//! - [`mcp`]: a trivial tool call through `/mcp`.
//! - [`responses`]: a trivial response through `/v1/responses`, and cache hits.
//! - [`governance`]: a virtual key with limits against `server.token` (`--governance`).
//! - [`console`]: what one open operator console page costs an idle gateway (`--console`).

pub mod commands;
pub mod console;
pub mod floor;
pub mod governance;
pub mod load;
pub mod mcp;
pub mod peers;
pub mod procs;
pub mod responses;
pub mod soak;
pub mod streams;

use std::fmt::Write;
use std::path::Path;

use bytes::Bytes;
use load::{Shape, Stats};
use procs::{Deployment, Mock, Mode};

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
            Some(url) => {
                Some(commands::idle_rate(&url, std::time::Duration::from_secs(2)).map_err(std::io::Error::other)?)
            }
            None => None,
        };
        let mut after = idle.clone();
        for sc in scenarios(scale) {
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
            if let (Some(url), Some(before), Some(idle)) = (&counted, &before, &idle_commands) {
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
            if sc.name == C64 {
                after = d.rss_mb();
            }
            report.rows.push(Row {
                scenario: sc.name,
                mode,
                stats,
                cpu_ms_per_req,
            });
        }
        for ((process, idle_mb), (_, after_mb)) in idle.into_iter().zip(after) {
            report.memory.push(Memory {
                mode,
                process,
                idle_mb,
                after_mb,
            });
        }
    }
    drop(mock);
    let redis = llmr_testkit::RedisServer::start();
    let n = ((2000.0 * scale).ceil() as usize).max(10);
    let floor = floor::redis_three_hops(&redis.url(), n).map_err(std::io::Error::other)?;
    log(&format!(
        "three Redis stream hops (floor)          p50 {:>7.3} ms  p99 {:>7.3} ms",
        floor.ms(0.5),
        floor.ms(0.99)
    ));
    report.redis_floor = Some(floor);
    Ok(report)
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

fn find<'a>(r: &'a Report, scenario: &str, mode: Mode) -> Option<&'a Row> {
    r.rows.iter().find(|x| x.scenario == scenario && x.mode == mode)
}

/// The report as Markdown.
pub fn markdown(r: &Report, machine: &str) -> String {
    let mut s = String::new();
    let _ = writeln!(s, "## llmrouter benchmark\n\nMachine: {machine}\n");
    let _ = writeln!(
        s,
        "| scenario | mode | req/s | p50 ms | p90 ms | p99 ms | Δp50 ms | Δp99 ms | first byte p50 ms | Δ first byte ms | CPU ms/req | errors |"
    );
    let _ = writeln!(
        s,
        "| --- | --- | ---: | ---: | ---: | ---: | ---: | ---: | ---: | ---: | ---: | ---: |"
    );
    for row in &r.rows {
        let base = find(r, row.scenario, Mode::Direct);
        let d = |f: &dyn Fn(&Stats) -> f64| {
            base.filter(|_| row.mode != Mode::Direct)
                .map_or("—".to_string(), |b| format!("{:+.3}", f(&row.stats) - f(&b.stats)))
        };
        let stream = scenarios(1.0).iter().any(|x| x.name == row.scenario && x.stream);
        let _ = writeln!(
            s,
            "| {} | {} | {:.0} | {:.3} | {:.3} | {:.3} | {} | {} | {} | {} | {} | {} |",
            row.scenario,
            row.mode.name(),
            row.stats.rps(),
            row.stats.ms(0.5),
            row.stats.ms(0.9),
            row.stats.ms(0.99),
            d(&|x| x.ms(0.5)),
            d(&|x| x.ms(0.99)),
            if stream {
                format!("{:.3}", row.stats.ttfb_ms(0.5))
            } else {
                "—".into()
            },
            if stream { d(&|x| x.ttfb_ms(0.5)) } else { "—".into() },
            row.cpu_ms_per_req.map_or("—".into(), |c| format!("{c:.3}")),
            row.stats.errors
        );
    }
    let _ = writeln!(
        s,
        "\n| mode | process | RSS idle MB | RSS after c=64 MB |\n| --- | --- | ---: | ---: |"
    );
    for m in &r.memory {
        let _ = writeln!(
            s,
            "| {} | {} | {:.1} | {:.1} |",
            m.mode.name(),
            m.process,
            m.idle_mb,
            m.after_mb
        );
    }
    if !r.scaling.is_empty() {
        let one = r.scaling.first().map_or(1.0, |x| x.rps.max(1e-9));
        let _ = writeln!(
            s,
            "\n| workers | req/s (upstream 50 ms) | × one worker | errors |\n| ---: | ---: | ---: | ---: |"
        );
        for x in &r.scaling {
            let _ = writeln!(
                s,
                "| {} | {:.0} | {:.2} | {} |",
                x.workers,
                x.rps,
                x.rps / one,
                x.errors
            );
        }
    }
    floors(&mut s, r);
    for (mode, ms) in &r.redis_cpu {
        let _ = writeln!(
            s,
            "\n{}: Redis used {ms:.4} ms of CPU per request at c=64 — about {:.0} requests/s per Redis core.",
            mode.name(),
            1000.0 / ms.max(1e-9)
        );
    }
    if !r.commands.is_empty() {
        let _ = writeln!(
            s,
            "\n| mode | scenario | Redis commands per request | by command (0.01 or more) |\n| --- | --- | ---: | --- |"
        );
        for c in &r.commands {
            let top: Vec<String> = c
                .by_command
                .iter()
                .filter(|(_, v)| *v >= 0.01)
                .map(|(k, v)| format!("{k} {v:.2}"))
                .collect();
            let _ = writeln!(
                s,
                "| {} | {} | {:.1} | {} |",
                c.mode.name(),
                c.scenario,
                c.per_request,
                top.join(", ")
            );
        }
    }
    let _ = writeln!(s, "\n{}", targets(r));
    for n in &r.notes {
        let _ = writeln!(s, "- {n}");
    }
    s
}

/// Each mode beside its floor: the nginx hop for `all` (both as added to the direct
/// baseline), three bare Redis stream hops for the cluster.
fn floors(s: &mut String, r: &Report) {
    let _ = writeln!(
        s,
        "\n| mode | floor | serial Δp50 ms | floor p50 ms | × floor | serial Δp99 ms | floor p99 ms | × floor | c=64 req/s | floor c=64 req/s | share of floor |\n| --- | --- | ---: | ---: | ---: | ---: | ---: | ---: | ---: | ---: | ---: |"
    );
    let direct = find(r, SERIAL, Mode::Direct);
    let delta = |m: Mode, q: f64| Some(find(r, SERIAL, m)?.stats.ms(q) - direct?.stats.ms(q));
    for mode in [Mode::AllMemory, Mode::AllRedis, Mode::Cluster] {
        let Some(row) = find(r, SERIAL, mode) else { continue };
        let (name, f50, f99, frps) = if mode == Mode::Cluster {
            let f = r.redis_floor.as_ref();
            ("3 Redis stream hops", f.map(|f| f.ms(0.5)), f.map(|f| f.ms(0.99)), None)
        } else {
            let rps = find(r, C64, Mode::Nginx).map(|x| x.stats.rps());
            ("nginx hop", delta(Mode::Nginx, 0.5), delta(Mode::Nginx, 0.99), rps)
        };
        let ms = |v: Option<f64>| v.map_or("—".to_owned(), |v| format!("{v:.3}"));
        let ratio = |a: Option<f64>, b: Option<f64>| match (a, b) {
            (Some(a), Some(b)) if b > 0.0 => format!("{:.1}", a / b),
            _ => "—".to_owned(),
        };
        let (d50, d99) = (delta(mode, 0.5), delta(mode, 0.99));
        let rps = find(r, C64, mode).map(|x| x.stats.rps());
        let share = match (rps, frps) {
            (Some(a), Some(b)) if b > 0.0 => format!("{:.0}%", 100.0 * a / b),
            _ => "—".to_owned(),
        };
        let _ = writeln!(
            s,
            "| {} | {name} | {} | {} | {} | {} | {} | {} | {} | {} | {share} |",
            row.mode.name(),
            ms(d50),
            ms(f50),
            ratio(d50, f50),
            ms(d99),
            ms(f99),
            ratio(d99, f99),
            rps.map_or("—".into(), |v| format!("{v:.0}")),
            frps.map_or("—".into(), |v| format!("{v:.0}")),
        );
    }
}

/// A target's bound.
#[derive(Debug, Clone, Copy)]
enum Bound {
    AtMost(f64),
    AtLeast(f64),
}

/// One target: what it says, the measured value (None: not measured), its unit and bound.
type Target = (&'static str, Option<f64>, &'static str, Bound);

/// The targets, met or missed.
pub fn targets(r: &Report) -> String {
    let mut s = String::from("| target | measured | met |\n| --- | ---: | :---: |\n");
    for (name, value, unit, bound) in target_values(r) {
        let (v, met) = match value {
            Some(v) => {
                let ok = match bound {
                    Bound::AtMost(x) => v <= x,
                    Bound::AtLeast(x) => v >= x,
                };
                (format!("{v:.3} {unit}"), if ok { "yes" } else { "no" })
            }
            None => ("—".to_string(), "—"),
        };
        let _ = writeln!(s, "| {name} | {v} | {met} |");
    }
    s
}

/// The measured value of every target.
fn target_values(r: &Report) -> Vec<Target> {
    use Bound::{AtLeast, AtMost};
    let delta = |sc: &str, m: Mode, q: f64| Some(find(r, sc, m)?.stats.ms(q) - find(r, sc, Mode::Direct)?.stats.ms(q));
    let ttfb =
        |sc: &str, m: Mode| Some(find(r, sc, m)?.stats.ttfb_ms(0.5) - find(r, sc, Mode::Direct)?.stats.ttfb_ms(0.5));
    let rps = |m: Mode| find(r, C64, m).map(|x| x.stats.rps());
    let share = rps(Mode::AllMemory)
        .zip(rps(Mode::Nginx))
        .map(|(a, n)| 100.0 * a / n.max(1e-9));
    // llmrouter's own processes (not the nginx floor, not LiteLLM).
    let idle = r
        .memory
        .iter()
        .filter(|m| matches!(m.mode, Mode::AllMemory | Mode::AllRedis | Mode::Cluster))
        .map(|m| m.idle_mb)
        .fold(None, |a: Option<f64>, v| Some(a.map_or(v, |a| a.max(v))));
    let commands = r
        .commands
        .iter()
        .find(|c| c.mode == Mode::Cluster && c.scenario == SERIAL)
        .map(|c| c.per_request);
    // A step with error answers measured something else than the workers' throughput.
    let clean = |n: usize| {
        r.scaling
            .iter()
            .find(|x| x.workers == n && x.errors == 0)
            .map(|x| x.rps)
    };
    let scale = |n: usize| Some(clean(n)? / clean(1)?.max(1e-9));
    let m = Mode::AllMemory;
    let c = Mode::Cluster;
    vec![
        (
            "all, in-memory: serial Δp50 ≤ 0.08 ms",
            delta(SERIAL, m, 0.5),
            "ms",
            AtMost(0.08),
        ),
        (
            "all, in-memory: serial Δp99 ≤ 0.25 ms",
            delta(SERIAL, m, 0.99),
            "ms",
            AtMost(0.25),
        ),
        (
            "all, in-memory: c=64 ≥ 50% of the nginx hop's req/s",
            share,
            "%",
            AtLeast(50.0),
        ),
        (
            "all, in-memory: 3,000 req/s Δp99 ≤ 0.3 ms",
            delta(RATE, m, 0.99),
            "ms",
            AtMost(0.3),
        ),
        (
            "all, in-memory: Δ first byte serial ≤ 0.1 ms",
            ttfb(FIRST_BYTE_SERIAL, m),
            "ms",
            AtMost(0.1),
        ),
        (
            "all, in-memory: Δ first byte c=16 ≤ 0.3 ms",
            ttfb(FIRST_BYTE_C16, m),
            "ms",
            AtMost(0.3),
        ),
        (
            "cluster: serial Δp50 ≤ 0.5 ms",
            delta(SERIAL, c, 0.5),
            "ms",
            AtMost(0.5),
        ),
        (
            "cluster: serial Δp99 ≤ 1.2 ms",
            delta(SERIAL, c, 0.99),
            "ms",
            AtMost(1.2),
        ),
        ("cluster: c=64 ≥ 10,000 req/s", rps(c), "req/s", AtLeast(10_000.0)),
        (
            "cluster: Δ first byte serial ≤ 0.6 ms",
            ttfb(FIRST_BYTE_SERIAL, c),
            "ms",
            AtMost(0.6),
        ),
        (
            "cluster: Δ first byte c=16 ≤ 1.5 ms",
            ttfb(FIRST_BYTE_C16, c),
            "ms",
            AtMost(1.5),
        ),
        ("cluster: Redis commands per request ≤ 16", commands, "", AtMost(16.0)),
        ("every process ≤ 15 MB RSS idle", idle, "MB", AtMost(15.0)),
        ("2 workers ≥ 1.9 × one", scale(2), "×", AtLeast(1.9)),
        ("4 workers ≥ 3.6 × one", scale(4), "×", AtLeast(3.6)),
    ]
}
