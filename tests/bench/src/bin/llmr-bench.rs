//! `llmr-bench`: runs the benchmark (see the `llmr_bench` crate) with release binaries found
//! beside it, prints the Markdown report, and saves it under `--out`.

use std::io::Write;
use std::path::PathBuf;

use clap::Parser;
use llmr_bench::{self as bench, procs::Mode};

/// llmrouter's benchmark: overhead against the direct baseline, throughput, streaming,
/// memory, horizontal scaling.
#[derive(Parser)]
struct Args {
    /// Where the report goes.
    #[arg(long, default_value = "target/bench")]
    out: PathBuf,
    /// Directory of the `llmrouter` and `mock-upstream` binaries (default: beside this one).
    #[arg(long)]
    bin_dir: Option<PathBuf>,
    /// Multiply every duration and count (e.g. 0.2 for a quick look).
    #[arg(long, default_value_t = 1.0)]
    factor: f64,
    /// Run only the many-open-streams benchmark (`--streams` at once, in `all` and the cluster).
    #[arg(long)]
    scale: bool,
    /// With --scale: streams open at once.
    #[arg(long, default_value_t = 10_000)]
    streams: usize,
    /// Load generator threads.
    #[arg(long, default_value_t = 1)]
    threads: usize,
    /// Skip the horizontal scaling run.
    #[arg(long)]
    no_scaling: bool,
    /// Also measure LiteLLM's proxy (PyPI, pinned; installed in a virtualenv under the
    /// binaries' directory on first use) on the same mock.
    #[arg(long)]
    peers: bool,
    /// Only run the MCP benchmark (a trivial tool call through /mcp).
    #[arg(long)]
    mcp_only: bool,
    /// Only run the Responses and cache benchmark.
    #[arg(long)]
    responses_only: bool,
    /// Only compare a virtual key with limits against `server.token` (governance on and off):
    /// `all` in memory (serial latency, c=64 req/s) and the cluster over Redis (commands per
    /// request). A couple of minutes.
    #[arg(long)]
    governance: bool,
    /// Only measure what the operator console costs an idle gateway: the CPU of `all` in
    /// memory and of the cluster over Redis, with a full request log, idle and with one open
    /// overview or providers page polling every 5 s. A little over three minutes.
    #[arg(long)]
    console: bool,
    /// Only measure how long upstream calls run on after their caller dies: the cluster, a
    /// gateway SIGKILLed with 10 streams open, five times. Under a minute.
    #[arg(long)]
    dead_callers: bool,
    /// Only offer a closed-loop load to this chat completions URL (e.g. while profiling).
    #[arg(long)]
    load_url: Option<String>,
    /// With --load-url: concurrent clients.
    #[arg(long, default_value_t = 64)]
    concurrency: usize,
    /// With --load-url: seconds.
    #[arg(long, default_value_t = 10)]
    secs: u64,
    /// With --load-url: stream the answers.
    #[arg(long)]
    stream: bool,
    /// With --load-url: present this token (`Authorization: Bearer …`), e.g. a virtual key.
    #[arg(long)]
    token: Option<String>,
    /// With --load-url: send requests one at a time, this many (instead of --concurrency and
    /// --secs).
    #[arg(long)]
    serial: Option<usize>,
    /// Run every deployment at this `telemetry.log_level` instead of the built-in default
    /// (`info`, what `just run` and the image use).
    #[arg(long)]
    log_level: Option<String>,
    /// Only run the overload scenario: a pool of 20 requests a second offered 400 requests by
    /// 200 clients, with shedding by waiting time at its default and off. About a minute.
    #[arg(long)]
    overload: bool,
    /// Soak the cluster for this many minutes instead (`just soak`; not in CI).
    #[arg(long)]
    soak: Option<u64>,
}

fn main() -> std::io::Result<()> {
    let args = Args::parse();
    if let Some(level) = &args.log_level {
        let _ = bench::procs::LOG_LEVEL.set(level.clone());
    }
    let bin_dir = match args.bin_dir.clone() {
        Some(d) => d,
        None => std::env::current_exe()?.parent().map(PathBuf::from).unwrap_or_default(),
    };
    if let Some(url) = &args.load_url {
        let shape = match args.serial {
            Some(n) => bench::load::Shape::Serial { n },
            None => bench::load::Shape::Closed {
                concurrency: args.concurrency,
                secs: args.secs,
            },
        };
        let s = bench::load::run_as(
            url,
            bench::body(args.stream, 0),
            shape,
            args.threads,
            args.token.as_deref(),
        );
        let mut out = std::io::stdout();
        writeln!(
            out,
            "{:.0} req/s, p50 {:.3} ms, p99 {:.3} ms, first byte p50 {:.3} ms, errors {}",
            s.rps(),
            s.ms(0.5),
            s.ms(0.99),
            s.ttfb_ms(0.5),
            s.errors
        )?;
        return Ok(());
    }
    let mut err = std::io::stderr();
    let mut log = |line: &str| {
        let _ = writeln!(err, "{line}");
    };
    if let Some((file, md)) = single_mode(&args, &bin_dir, &mut log)? {
        return publish(&args.out, file, &md);
    }
    let mut modes = vec![
        Mode::Direct,
        Mode::Nginx,
        Mode::AllMemory,
        Mode::AllMemoryWarn,
        Mode::AllRedis,
        Mode::Cluster,
    ];
    if args.peers {
        modes.push(Mode::LiteLlm);
    }
    let mut report = bench::run(&bin_dir, &modes, args.factor, args.threads, &mut log)?;
    if !args.no_scaling {
        let secs = ((5.0 * args.factor).ceil() as u64).max(1);
        report.scaling = bench::scaling(&bin_dir, &[1, 2, 4], 16, secs, args.threads.max(2), &mut log)?;
    }
    let mut md = bench::markdown(&report, &machine(args.threads));
    md.push_str(&bench::mcp::markdown(&bench::mcp::run(
        &bin_dir,
        args.factor,
        &mut log,
    )?));
    let responses = bench::responses::bench(&bin_dir, args.factor, args.threads, &mut log)?;
    md.push_str(&bench::responses::markdown(&responses));
    publish(&args.out, "report.md", &md)
}

/// The report of a mode that runs alone (`--soak`, `--scale`, `--mcp-only`,
/// `--responses-only`, `--governance`, `--console`): its file name and markdown; none for the
/// whole run.
fn single_mode(
    args: &Args,
    bin_dir: &std::path::Path,
    log: &mut dyn FnMut(&str),
) -> std::io::Result<Option<(&'static str, String)>> {
    Ok(Some(if let Some(minutes) = args.soak {
        (
            "soak.md",
            bench::soak::markdown(&bench::soak::run(bin_dir, minutes, log)?, minutes),
        )
    } else if args.scale {
        let modes = [Mode::AllMemory, Mode::Cluster];
        let rows = bench::streams::run(bin_dir, &modes, args.streams, args.threads.max(2), log)?;
        ("streams.md", bench::streams::markdown(&rows))
    } else if args.mcp_only {
        (
            "mcp.md",
            bench::mcp::markdown(&bench::mcp::run(bin_dir, args.factor, log)?),
        )
    } else if args.responses_only {
        let r = bench::responses::bench(bin_dir, args.factor, args.threads, log)?;
        ("responses.md", bench::responses::markdown(&r))
    } else if args.governance {
        let r = bench::governance::run(bin_dir, args.factor, args.threads, log)?;
        ("governance.md", bench::governance::markdown(&r, &machine(args.threads)))
    } else if args.dead_callers {
        let r = bench::dead_callers::run(bin_dir, 5, log)?;
        ("dead_callers.md", bench::dead_callers::markdown(&r))
    } else if args.overload {
        let r = bench::overload::run(bin_dir, log)?;
        ("overload.md", bench::overload::markdown(&r, &machine(args.threads)))
    } else if args.console {
        let r = bench::console::run(bin_dir, args.factor, args.threads, log)?;
        ("console.md", bench::console::markdown(&r, &machine(args.threads)))
    } else {
        return Ok(None);
    }))
}

/// Writes a report into `out` as `file` and prints it.
fn publish(out: &std::path::Path, file: &str, md: &str) -> std::io::Result<()> {
    std::fs::create_dir_all(out)?;
    std::fs::write(out.join(file), md)?;
    writeln!(std::io::stdout(), "{md}")
}

/// The machine, as the reports name it.
fn machine(threads: usize) -> String {
    format!(
        "{} cores, {}; load generator ({threads} thread(s)), mock upstream (1 thread) and llmrouter share the machine",
        std::thread::available_parallelism().map_or(0, |n| n.get()),
        std::fs::read_to_string("/proc/cpuinfo")
            .ok()
            .and_then(|c| c.lines().find(|l| l.starts_with("model name")).map(|l| l
                .split(':')
                .nth(1)
                .unwrap_or("")
                .trim()
                .to_owned()))
            .unwrap_or_default(),
    )
}
