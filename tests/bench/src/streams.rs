//! `just bench --scale`: many open streams. `n` streaming requests sent at once against a
//! slow mock (an event every 100 ms for 10 s), in `all` (memory) and in the cluster: how many
//! complete, the memory each open stream costs (peak RSS over idle RSS, all processes), and
//! the CPU they take. File-descriptor limits are raised to the hard limit first (this
//! process; llmrouter and the mock raise their own).

use std::fmt::Write;
use std::path::Path;
use std::time::{Duration, Instant};

use crate::load::{self, Shape, Stats};
use crate::procs::{Deployment, Mock, Mode};

/// One mode's run.
pub struct OpenStreams {
    pub mode: Mode,
    pub n: usize,
    pub stats: Stats,
    pub idle_mb: f64,
    pub peak_mb: f64,
    pub cpu_ms: f64,
}

impl OpenStreams {
    /// Resident memory per open stream, in KB.
    pub fn kb_per_stream(&self) -> f64 {
        (self.peak_mb - self.idle_mb).max(0.0) * 1024.0 / self.n.max(1) as f64
    }
}

/// Runs `n` open streams against each of `modes`.
pub fn run(
    bin_dir: &Path,
    modes: &[Mode],
    n: usize,
    threads: usize,
    log: &mut dyn FnMut(&str),
) -> std::io::Result<Vec<OpenStreams>> {
    let limit = rlimit::increase_nofile_limit(u64::MAX).unwrap_or(0);
    log(&format!("open files: this process may hold {limit}"));
    // 100 events, 100 ms apart: each stream stays open about 10 s.
    let mock = Mock::start_paced(bin_dir, 0, 98, 100)?;
    let body = crate::body_for("bench-gap", true, 0);
    let mut out = Vec::new();
    for &mode in modes {
        let d = Deployment::start(mode, bin_dir, &mock, 1, n.max(64), n.max(64))?;
        if !d.wait_ready(&crate::body(false, 0)) {
            return Err(std::io::Error::other(format!("{} never answered", mode.name())));
        }
        let total = |v: Vec<(String, f64)>| v.iter().map(|(_, mb)| mb).sum::<f64>();
        let idle_mb = total(d.rss_mb());
        let cpu0 = d.cpu_ms();
        let url = d.url.clone();
        let b = body.clone();
        let burst = std::thread::spawn(move || load::run(&url, b, Shape::Burst { n }, threads));
        let mut peak_mb = idle_mb;
        let until = Instant::now() + Duration::from_secs(120);
        while !burst.is_finished() && Instant::now() < until {
            std::thread::sleep(Duration::from_millis(250));
            peak_mb = peak_mb.max(total(d.rss_mb()));
        }
        let stats = burst
            .join()
            .map_err(|_| std::io::Error::other("the load thread panicked"))?;
        let cpu_ms = d.cpu_ms() - cpu0;
        let row = OpenStreams {
            mode,
            n,
            stats,
            idle_mb,
            peak_mb,
            cpu_ms,
        };
        log(&format!(
            "{:<18} {n} open streams: {} complete, {} errors, p50 {:.0} ms, first byte p99 {:.1} ms, {:.1} KB RSS per stream, {:.0} ms CPU",
            mode.name(),
            row.stats.ok,
            row.stats.errors,
            row.stats.ms(0.5),
            row.stats.ttfb_ms(0.99),
            row.kb_per_stream(),
            cpu_ms
        ));
        for (kind, count) in &row.stats.error_kinds {
            log(&format!("  {count} × {kind}"));
        }
        out.push(row);
    }
    Ok(out)
}

pub fn markdown(rows: &[OpenStreams]) -> String {
    let mut s = String::from(
        "\n## Open streams (`--scale`)\n\nEvery stream sent at once against a mock that sends an event every 100 ms for 10 s.\n\n| mode | open streams | complete | errors | p50 s | first byte p99 ms | RSS idle MB (all processes) | RSS peak MB | KB per open stream | CPU s |\n| --- | ---: | ---: | ---: | ---: | ---: | ---: | ---: | ---: | ---: |\n",
    );
    for r in rows {
        let _ = writeln!(
            s,
            "| {} | {} | {} | {} | {:.2} | {:.1} | {:.1} | {:.1} | {:.1} | {:.1} |",
            r.mode.name(),
            r.n,
            r.stats.ok,
            r.stats.errors,
            r.stats.ms(0.5) / 1000.0,
            r.stats.ttfb_ms(0.99),
            r.idle_mb,
            r.peak_mb,
            r.kb_per_stream(),
            r.cpu_ms / 1000.0
        );
    }
    s
}
