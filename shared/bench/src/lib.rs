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

pub mod load;
pub mod mcp;
pub mod procs;
pub mod responses;
pub mod soak;

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
}

/// The scenarios of the issue; `scale` < 1 shortens them (a smoke run).
pub fn scenarios(scale: f64) -> Vec<Scenario> {
    let secs = |s: u64| ((s as f64 * scale).ceil() as u64).max(1);
    let n = |n: usize| ((n as f64 * scale).ceil() as usize).max(10);
    vec![
        Scenario {
            name: "serial",
            shape: Shape::Serial { n: n(2000) },
            stream: false,
            prompt_bytes: 0,
        },
        Scenario {
            name: "c=16",
            shape: Shape::Closed {
                concurrency: 16,
                secs: secs(10),
            },
            stream: false,
            prompt_bytes: 0,
        },
        Scenario {
            name: "c=64",
            shape: Shape::Closed {
                concurrency: 64,
                secs: secs(10),
            },
            stream: false,
            prompt_bytes: 0,
        },
        Scenario {
            name: "1000 req/s",
            shape: Shape::Rate {
                rps: 1000,
                secs: secs(10),
            },
            stream: false,
            prompt_bytes: 0,
        },
        Scenario {
            name: "stream 20 chunks, c=16",
            shape: Shape::Closed {
                concurrency: 16,
                secs: secs(5),
            },
            stream: true,
            prompt_bytes: 0,
        },
        Scenario {
            name: "4 KiB prompt, c=16",
            shape: Shape::Closed {
                concurrency: 16,
                secs: secs(5),
            },
            stream: false,
            prompt_bytes: 4096,
        },
    ]
}

pub fn body(stream: bool, prompt_bytes: usize) -> Bytes {
    let content = if prompt_bytes == 0 {
        "Say hello.".to_string()
    } else {
        "lorem ipsum ".repeat(prompt_bytes / 12 + 1)[..prompt_bytes].to_string()
    };
    let v = serde_json::json!({"model": "bench", "messages": [{"role": "user", "content": content}], "stream": stream});
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

#[derive(Default)]
pub struct Report {
    pub rows: Vec<Row>,
    pub memory: Vec<Memory>,
    /// (workers, req/s)
    pub scaling: Vec<(usize, f64)>,
    pub notes: Vec<String>,
}

/// Runs every scenario against every mode.
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
        let d = Deployment::start(mode, bin_dir, &mock, 1, 4096)?;
        if !d.wait_ready(&body(false, 0)) {
            return Err(std::io::Error::other(format!("{} never answered", mode.name())));
        }
        // Warm up connections, caches and allocators.
        load::run(
            &d.url,
            body(false, 0),
            Shape::Closed {
                concurrency: 16,
                secs: 1,
            },
            threads,
        );
        let idle = d.rss_mb();
        let mut after = idle.clone();
        for sc in scenarios(scale) {
            let cpu0 = d.cpu_ms();
            let stats = load::run(&d.url, body(sc.stream, sc.prompt_bytes), sc.shape, threads);
            let cpu = d.cpu_ms() - cpu0;
            log(&format!(
                "{:<18} {:<24} {:>8.0} req/s  p50 {:>7.3} ms  p99 {:>7.3} ms  errors {}",
                mode.name(),
                sc.name,
                stats.rps(),
                stats.ms(0.5),
                stats.ms(0.99),
                stats.errors
            ));
            let cpu_ms_per_req = (mode != Mode::Direct && stats.ok > 0).then(|| cpu / stats.ok as f64);
            if sc.name == "c=64" {
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
    Ok(report)
}

/// The scaling run: a 50 ms upstream, workers with `max_in_flight` each, at a concurrency
/// that saturates one worker several times over.
pub fn scaling(
    bin_dir: &Path,
    counts: &[usize],
    max_in_flight: usize,
    secs: u64,
    threads: usize,
    log: &mut dyn FnMut(&str),
) -> std::io::Result<Vec<(usize, f64)>> {
    let mock = Mock::start(bin_dir, 50, 20)?;
    let mut out = Vec::new();
    for &n in counts {
        let d = Deployment::start(Mode::Cluster, bin_dir, &mock, n, max_in_flight)?;
        if !d.wait_ready(&body(false, 0)) {
            return Err(std::io::Error::other("the scaling cluster never answered"));
        }
        let concurrency = max_in_flight * 8;
        let s = load::run(&d.url, body(false, 0), Shape::Closed { concurrency, secs }, threads);
        log(&format!(
            "scaling: {n} worker(s), max_in_flight {max_in_flight}, c={concurrency}: {:.0} req/s",
            s.rps()
        ));
        out.push((n, s.rps()));
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
        let one = r.scaling.first().map_or(1.0, |x| x.1.max(1e-9));
        let _ = writeln!(
            s,
            "\n| workers | req/s (upstream 50 ms) | × one worker |\n| ---: | ---: | ---: |"
        );
        for (n, rps) in &r.scaling {
            let _ = writeln!(s, "| {n} | {rps:.0} | {:.2} |", rps / one);
        }
    }
    let _ = writeln!(s, "\n{}", targets(r));
    for n in &r.notes {
        let _ = writeln!(s, "- {n}");
    }
    s
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
    const STREAM: &str = "stream 20 chunks, c=16";
    let delta = |sc: &str, m: Mode, q: f64| Some(find(r, sc, m)?.stats.ms(q) - find(r, sc, Mode::Direct)?.stats.ms(q));
    let ttfb =
        |m: Mode| Some(find(r, STREAM, m)?.stats.ttfb_ms(0.5) - find(r, STREAM, Mode::Direct)?.stats.ttfb_ms(0.5));
    let rps = |m: Mode| find(r, "c=64", m).map(|x| x.stats.rps());
    let max = |f: fn(&Memory) -> f64| {
        r.memory
            .iter()
            .map(f)
            .fold(None, |a: Option<f64>, v| Some(a.map_or(v, |a| a.max(v))))
    };
    let per_chunk = ttfb(Mode::AllMemory)
        .zip(find(r, STREAM, Mode::AllMemory).zip(find(r, STREAM, Mode::Direct)))
        .map(|(t, (m, d))| {
            // Added total latency beyond the first byte, spread over the 22 relayed events.
            ((m.stats.ms(0.5) - d.stats.ms(0.5)) - t).max(0.0) * 1000.0 / 22.0
        });
    let scale = |n: usize| {
        let one = r.scaling.iter().find(|x| x.0 == 1)?.1;
        Some(r.scaling.iter().find(|x| x.0 == n)?.1 / one.max(1e-9))
    };
    vec![
        (
            "all, in-memory: serial Δp50 ≤ 0.15 ms",
            delta("serial", Mode::AllMemory, 0.5),
            "ms",
            AtMost(0.15),
        ),
        (
            "all, in-memory: serial Δp99 ≤ 0.5 ms",
            delta("serial", Mode::AllMemory, 0.99),
            "ms",
            AtMost(0.5),
        ),
        (
            "all, in-memory: c=64 ≥ 15,000 req/s",
            rps(Mode::AllMemory),
            "req/s",
            AtLeast(15_000.0),
        ),
        (
            "all, in-memory: stream Δ first byte ≤ 0.3 ms",
            ttfb(Mode::AllMemory),
            "ms",
            AtMost(0.3),
        ),
        (
            "cluster: serial Δp50 ≤ 1.0 ms",
            delta("serial", Mode::Cluster, 0.5),
            "ms",
            AtMost(1.0),
        ),
        (
            "cluster: serial Δp99 ≤ 2.5 ms",
            delta("serial", Mode::Cluster, 0.99),
            "ms",
            AtMost(2.5),
        ),
        (
            "cluster: c=64 ≥ 4,000 req/s",
            rps(Mode::Cluster),
            "req/s",
            AtLeast(4_000.0),
        ),
        (
            "cluster: stream Δ first byte ≤ 1.5 ms",
            ttfb(Mode::Cluster),
            "ms",
            AtMost(1.5),
        ),
        ("every process ≤ 40 MB RSS idle", max(|m| m.idle_mb), "MB", AtMost(40.0)),
        (
            "every process ≤ 120 MB RSS after c=64",
            max(|m| m.after_mb),
            "MB",
            AtMost(120.0),
        ),
        (
            "relaying a stream chunk adds ≤ 50 µs (all, in-memory)",
            per_chunk,
            "µs",
            AtMost(50.0),
        ),
        ("2 workers ≥ 1.8 × one", scale(2), "×", AtLeast(1.8)),
        ("4 workers ≥ 3.2 × one", scale(4), "×", AtLeast(3.2)),
    ]
}
