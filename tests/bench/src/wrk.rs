//! Debian's `wrk` on the same targets as the bench's own load generator — serial (one
//! connection) and c=64, each request the bench's POST (a Lua script sets method, header and
//! body) — so the bench's tables can be checked against an outside tool in the same run.

use std::path::{Path, PathBuf};
use std::process::Command;

/// One wrk run: throughput, latency quantiles and failed requests.
#[derive(Debug, Clone, Copy, Default)]
pub struct Run {
    pub rps: f64,
    pub p50_ms: f64,
    pub p99_ms: f64,
    /// Non-2xx answers and socket errors.
    pub errors: u64,
}

/// wrk's figures for one deployment.
#[derive(Debug, Clone, Copy)]
pub struct Pair {
    pub serial: Run,
    pub c64: Run,
}

/// The wrk binary on `PATH` (or Debian's place), if installed.
pub fn binary() -> Option<PathBuf> {
    let found = std::env::var_os("PATH")
        .map(|p| std::env::split_paths(&p).map(|d| d.join("wrk")).find(|f| f.is_file()))
        .unwrap_or_default();
    found.or_else(|| Some(PathBuf::from("/usr/bin/wrk")).filter(|p| p.is_file()))
}

/// Serial for `secs`, then c=64 for `secs` (`threads` wrk threads), against `url`.
pub fn pair(wrk: &Path, url: &str, body: &[u8], threads: usize, secs: u64) -> std::io::Result<Pair> {
    Ok(Pair {
        serial: run(wrk, url, body, 1, 1, secs)?,
        c64: run(wrk, url, body, 64, threads.max(1), secs)?,
    })
}

/// One wrk run with `connections` over `threads` for `secs`, POSTing `body` as JSON.
pub fn run(wrk: &Path, url: &str, body: &[u8], connections: usize, threads: usize, secs: u64) -> std::io::Result<Run> {
    let script = std::env::temp_dir().join(format!("llmr-bench-wrk-{}.lua", std::process::id()));
    let body = String::from_utf8_lossy(body);
    std::fs::write(
        &script,
        format!(
            "wrk.method = \"POST\"\nwrk.headers[\"Content-Type\"] = \"application/json\"\nwrk.body = [==[{body}]==]\n"
        ),
    )?;
    let out = Command::new(wrk)
        .args(["--latency", "-t", &threads.to_string(), "-c", &connections.to_string()])
        .args(["-d", &format!("{secs}s"), "-s"])
        .arg(&script)
        .arg(url)
        .output();
    let _ = std::fs::remove_file(&script);
    let out = out?;
    let text = String::from_utf8_lossy(&out.stdout);
    parse(&text)
        .ok_or_else(|| std::io::Error::other(format!("wrk said: {text}{}", String::from_utf8_lossy(&out.stderr))))
}

/// A duration as wrk prints it (`812.00us`, `1.23ms`, `2.00s`), in ms.
fn ms(v: &str) -> Option<f64> {
    let (n, scale) = if let Some(n) = v.strip_suffix("us") {
        (n, 0.001)
    } else if let Some(n) = v.strip_suffix("ms") {
        (n, 1.0)
    } else if let Some(n) = v.strip_suffix('m') {
        (n, 60_000.0)
    } else {
        (v.strip_suffix('s')?, 1000.0)
    };
    Some(n.parse::<f64>().ok()? * scale)
}

/// wrk's report (with `--latency`).
fn parse(text: &str) -> Option<Run> {
    let mut run = Run::default();
    let mut rps = None;
    for line in text.lines().map(str::trim) {
        let words: Vec<&str> = line.split_whitespace().collect();
        match words.as_slice() {
            ["50%", v] => run.p50_ms = ms(v)?,
            ["99%", v] => run.p99_ms = ms(v)?,
            ["Requests/sec:", v] => rps = v.parse().ok(),
            ["Non-2xx", "or", "3xx", "responses:", n] => run.errors += n.parse::<u64>().ok()?,
            ["Socket", "errors:", rest @ ..] => {
                run.errors += rest
                    .iter()
                    .filter_map(|w| w.trim_end_matches(',').parse::<u64>().ok())
                    .sum::<u64>();
            }
            _ => {}
        }
    }
    run.rps = rps?;
    Some(run)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn reads_a_wrk_report() {
        let text = "Running 2s test @ http://127.0.0.1:1/v1/chat/completions\n  1 threads and 64 connections\n  Thread Stats   Avg      Stdev     Max   +/- Stdev\n    Latency     1.10ms  300.00us   5.00ms   90.00%\n  Latency Distribution\n     50%  812.00us\n     75%    1.00ms\n     90%    1.50ms\n     99%    2.31ms\n  50000 requests in 2.00s, 10.00MB read\n  Socket errors: connect 0, read 2, write 0, timeout 1\n  Non-2xx or 3xx responses: 4\nRequests/sec:  25000.50\nTransfer/sec:      5.00MB\n";
        let r = parse(text).unwrap();
        assert!((r.p50_ms - 0.812).abs() < 1e-9);
        assert!((r.p99_ms - 2.31).abs() < 1e-9);
        assert!((r.rps - 25000.5).abs() < 1e-9);
        assert_eq!(r.errors, 7);
        assert_eq!(ms("2.00s"), Some(2000.0));
        assert!(parse("nothing").is_none());
    }
}
