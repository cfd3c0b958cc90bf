//! The main run's report as Markdown (latency, memory, scaling, floors, Redis) and the
//! issue's targets, met or missed.

use std::fmt::Write;

use crate::load::Stats;
use crate::procs::Mode;
use crate::{C64, FIRST_BYTE_SERIAL, Report, Row, SERIAL, scenarios};
use Bound::{AtLeast, AtMost};

fn find<'a>(r: &'a Report, scenario: &str, mode: Mode) -> Option<&'a Row> {
    r.rows.iter().find(|x| x.scenario == scenario && x.mode == mode)
}

/// The report as Markdown.
pub fn markdown(r: &Report, machine: &str) -> String {
    let mut s = String::new();
    let _ = writeln!(s, "## llmrouter benchmark\n\nMachine: {machine}\n");
    latencies(&mut s, r);
    memory(&mut s, r);
    scaling(&mut s, r);
    floors(&mut s, r);
    outside(&mut s, r);
    for (mode, ms) in &r.redis_cpu {
        let _ = writeln!(
            s,
            "\n{}: Redis used {ms:.4} ms of CPU per request at c=64 — about {:.0} requests/s per Redis core.",
            mode.name(),
            1000.0 / ms.max(1e-9)
        );
    }
    commands(&mut s, r);
    let _ = writeln!(s, "\n{}", targets(r));
    for n in &r.notes {
        let _ = writeln!(s, "- {n}");
    }
    s
}

/// One row per scenario and mode: throughput, latency and first byte, each beside the direct
/// baseline.
fn latencies(s: &mut String, r: &Report) {
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
}

/// Each process's memory, idle and after c=64.
fn memory(s: &mut String, r: &Report) {
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
}

/// The scaling run, each step beside one worker (none when it did not run).
fn scaling(s: &mut String, r: &Report) {
    if r.scaling.is_empty() {
        return;
    }
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

/// Redis commands per request, by command (none when no Redis was counted).
fn commands(s: &mut String, r: &Report) {
    if r.commands.is_empty() {
        return;
    }
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

/// Each mode beside its floor: the nginx hop for `all` (both as added to the direct
/// baseline), three bare Redis stream hops for the cluster.
fn floors(s: &mut String, r: &Report) {
    let _ = writeln!(
        s,
        "\n| mode | floor | serial Δp50 ms | floor p50 ms | × floor | serial Δp99 ms | floor p99 ms | × floor | c=64 req/s | floor c=64 req/s | share of floor |\n| --- | --- | ---: | ---: | ---: | ---: | ---: | ---: | ---: | ---: | ---: |"
    );
    let serial = |m: Mode, q: f64| delta(r, SERIAL, m, q);
    for mode in [Mode::AllMemory, Mode::AllMemoryWarn, Mode::AllRedis, Mode::Cluster] {
        let Some(row) = find(r, SERIAL, mode) else { continue };
        let (name, f50, f99, frps) = if mode == Mode::Cluster {
            let f = r.redis_floor.as_ref();
            ("3 Redis stream hops", f.map(|f| f.ms(0.5)), f.map(|f| f.ms(0.99)), None)
        } else {
            (
                "nginx hop",
                serial(Mode::Nginx, 0.5),
                serial(Mode::Nginx, 0.99),
                rps(r, Mode::Nginx),
            )
        };
        let ms = |v: Option<f64>| v.map_or("—".to_owned(), |v| format!("{v:.3}"));
        let ratio = |a: Option<f64>, b: Option<f64>| match (a, b) {
            (Some(a), Some(b)) if b > 0.0 => format!("{:.1}", a / b),
            _ => "—".to_owned(),
        };
        let (d50, d99) = (serial(mode, 0.5), serial(mode, 0.99));
        let measured = rps(r, mode);
        let share = match (measured, frps) {
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
            measured.map_or("—".into(), |v| format!("{v:.0}")),
            frps.map_or("—".into(), |v| format!("{v:.0}")),
        );
    }
}

/// wrk's figures beside the load generator's, each with its Δ against wrk's direct run.
fn outside(s: &mut String, r: &Report) {
    if r.wrk.is_empty() {
        return;
    }
    let _ = writeln!(
        s,
        "\n| mode (wrk) | serial p50 ms | Δp50 ms | serial p99 ms | Δp99 ms | c=64 req/s | c=64 p99 ms | errors |\n| --- | ---: | ---: | ---: | ---: | ---: | ---: | ---: |"
    );
    let direct = r.wrk.iter().find(|(m, _)| *m == Mode::Direct).map(|(_, p)| *p);
    for (mode, p) in &r.wrk {
        let d = |f: fn(&crate::wrk::Pair) -> f64| {
            direct
                .filter(|_| *mode != Mode::Direct)
                .map_or("—".to_owned(), |b| format!("{:+.3}", f(p) - f(&b)))
        };
        let _ = writeln!(
            s,
            "| {} | {:.3} | {} | {:.3} | {} | {:.0} | {:.3} | {} |",
            mode.name(),
            p.serial.p50_ms,
            d(|x| x.serial.p50_ms),
            p.serial.p99_ms,
            d(|x| x.serial.p99_ms),
            p.c64.rps,
            p.c64.p99_ms,
            p.serial.errors + p.c64.errors
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
    let mut all = in_memory_targets(r);
    all.extend(cluster_targets(r));
    all.extend(footprint_targets(r));
    all
}

/// Milliseconds `m` adds to the direct baseline's quantile `q` in scenario `sc`.
fn delta(r: &Report, sc: &str, m: Mode, q: f64) -> Option<f64> {
    Some(find(r, sc, m)?.stats.ms(q) - find(r, sc, Mode::Direct)?.stats.ms(q))
}

/// Milliseconds `m` adds to the direct baseline's median first byte in scenario `sc`.
fn ttfb(r: &Report, sc: &str, m: Mode) -> Option<f64> {
    Some(find(r, sc, m)?.stats.ttfb_ms(0.5) - find(r, sc, Mode::Direct)?.stats.ttfb_ms(0.5))
}

/// Requests per second of `m` at c=64.
fn rps(r: &Report, m: Mode) -> Option<f64> {
    find(r, C64, m).map(|x| x.stats.rps())
}

/// The targets of `all` with the in-memory bus and store (issue 36), at the configuration the
/// run used (the built-in default unless `--log-level` said otherwise).
fn in_memory_targets(r: &Report) -> Vec<Target> {
    let m = Mode::AllMemory;
    let share = |of: Mode| rps(r, m).zip(rps(r, of)).map(|(a, n)| 100.0 * a / n.max(1e-9));
    vec![
        (
            "all, in-memory: c=64 ≥ 90% of the same at log_level = warn",
            share(Mode::AllMemoryWarn),
            "%",
            AtLeast(90.0),
        ),
        (
            "all, in-memory: serial Δp50 ≤ 0.08 ms",
            delta(r, SERIAL, m, 0.5),
            "ms",
            AtMost(0.08),
        ),
        (
            "all, in-memory: c=64 ≥ 50% of the nginx hop's req/s",
            share(Mode::Nginx),
            "%",
            AtLeast(50.0),
        ),
        (
            "all, in-memory: serial stream Δ first byte ≤ 0.1 ms",
            ttfb(r, FIRST_BYTE_SERIAL, m),
            "ms",
            AtMost(0.1),
        ),
    ]
}

/// The targets of the cluster (every role its own process, over Redis; issue 36).
fn cluster_targets(r: &Report) -> Vec<Target> {
    let c = Mode::Cluster;
    let commands = r
        .commands
        .iter()
        .find(|x| x.mode == c && x.scenario == SERIAL)
        .map(|x| x.per_request);
    let floor = r.redis_floor.as_ref().map(|f| f.ms(0.5));
    let times_floor = delta(r, SERIAL, c, 0.5).zip(floor).map(|(d, f)| d / f.max(1e-9));
    vec![
        (
            "cluster: serial Δp50 ≤ 2 × the three-hop Redis floor",
            times_floor,
            "× floor",
            AtMost(2.0),
        ),
        (
            "cluster: serial Δp99 ≤ 1.2 ms",
            delta(r, SERIAL, c, 0.99),
            "ms",
            AtMost(1.2),
        ),
        ("cluster: c=64 ≥ 10,000 req/s", rps(r, c), "req/s", AtLeast(10_000.0)),
        (
            "cluster: serial stream Δ first byte ≤ 0.6 ms",
            ttfb(r, FIRST_BYTE_SERIAL, c),
            "ms",
            AtMost(0.6),
        ),
        ("cluster: Redis commands per request ≤ 16", commands, "", AtMost(16.0)),
    ]
}

/// The memory and scaling targets.
fn footprint_targets(r: &Report) -> Vec<Target> {
    // llmrouter's own processes (not the nginx floor, not LiteLLM).
    let idle = r
        .memory
        .iter()
        .filter(|m| {
            matches!(
                m.mode,
                Mode::AllMemory | Mode::AllMemoryWarn | Mode::AllRedis | Mode::Cluster
            )
        })
        .map(|m| m.idle_mb)
        .fold(None, |a: Option<f64>, v| Some(a.map_or(v, |a| a.max(v))));
    // A step with error answers measured something else than the workers' throughput.
    let clean = |n: usize| {
        r.scaling
            .iter()
            .find(|x| x.workers == n && x.errors == 0)
            .map(|x| x.rps)
    };
    let scale = |n: usize| Some(clean(n)? / clean(1)?.max(1e-9));
    vec![
        ("every process ≤ 15 MB RSS idle", idle, "MB", AtMost(15.0)),
        ("2 workers ≥ 1.9 × one", scale(2), "×", AtLeast(1.9)),
        ("4 workers ≥ 3.6 × one", scale(4), "×", AtLeast(3.6)),
    ]
}
