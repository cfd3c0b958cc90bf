//! `llmr-bench --dead-callers`: how long upstream calls run on after their caller dies. The
//! cluster over Redis (separate gateway, router and worker processes) in front of a mock
//! that streams an event every 200 ms for 20 s; ten streams opened through the gateway, which
//! is then SIGKILLed; the figure is the time from the kill until the mock saw the last of the
//! ten upstream connections closed (the first one too). Several runs, a fresh gateway each.
//! Only the cluster: in `llmrouter all` the caller lives in the worker's own process.

use std::fmt::Write as _;
use std::io::{Read, Write};
use std::net::TcpStream;
use std::path::Path;
use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::{Duration, Instant};

use llmr_testkit::{Behavior, ECHO, MockUpstream, ProcessCluster, TestConfig, mock_provider};

/// Streams open when the gateway is killed.
pub const STREAMS: usize = 10;

/// One kill: seconds from the SIGKILL to the first and to the last upstream call closed
/// (None when they still ran after 15 s).
#[derive(Debug, Clone, Copy)]
pub struct Kill {
    pub first_s: Option<f64>,
    pub last_s: Option<f64>,
}

/// What the run measured.
pub struct DeadCallers {
    pub kills: Vec<Kill>,
    /// Redis commands per second of the idle cluster (gateway, router, worker), all of
    /// them, and those that were scripts (heartbeats and the workers' reads of the live set
    /// among them).
    pub idle_per_s: f64,
    pub idle_scripts_per_s: f64,
}

/// `runs` kills of a gateway with [`STREAMS`] streams open.
pub fn run(bin_dir: &Path, runs: usize, log: &mut dyn FnMut(&str)) -> std::io::Result<DeadCallers> {
    let mock = MockUpstream::start(&["mock-a"]);
    mock.set_default(Behavior {
        chunk_delay: Duration::from_millis(200),
        ..Behavior::ok()
    });
    let toml = format!("{ECHO}{}", mock_provider("up", &mock.base_url(), &["mock-a"]));
    let cfg = TestConfig::new(toml)
        .env("LLMR__SERVER__REQUEST_TIMEOUT_MS", 60_000)
        .env("LLMR__WORKER__MAX_IN_FLIGHT", 4 * STREAMS);
    let mut c = ProcessCluster::new(&bin_dir.join("llmrouter"), cfg, true);
    c.spawn("router", &["router"]);
    c.spawn("worker", &["worker"]);
    let mut out = Vec::with_capacity(runs);
    let (mut idle_per_s, mut idle_scripts_per_s) = (0.0, 0.0);
    for i in 0..runs {
        c.spawn("gateway", &["gateway"]);
        if !c.listening(Duration::from_secs(30)) {
            return Err(std::io::Error::other("the gateway did not listen"));
        }
        if i == 0 {
            (idle_per_s, idle_scripts_per_s) = idle(&c);
            log(&format!(
                "dead callers: the idle cluster sends Redis {idle_per_s:.1} commands/s ({idle_scripts_per_s:.1} scripts)"
            ));
        }
        let port = c.port;
        let before = mock.disconnects();
        let started = Arc::new(AtomicUsize::new(0));
        let _streams: Vec<_> = (0..STREAMS).map(|j| open(port, j, started.clone())).collect();
        let until = Instant::now() + Duration::from_secs(30);
        while started.load(Ordering::SeqCst) < STREAMS && Instant::now() < until {
            std::thread::sleep(Duration::from_millis(10));
        }
        if started.load(Ordering::SeqCst) < STREAMS {
            return Err(std::io::Error::other("the streams did not start"));
        }
        let killed = Instant::now();
        if let Some(g) = c.nth("gateway", i) {
            g.kill();
        }
        let (mut first_s, mut last_s) = (None, None);
        while killed.elapsed() < Duration::from_secs(15) && last_s.is_none() {
            let closed = mock.disconnects() - before;
            if closed >= 1 && first_s.is_none() {
                first_s = Some(killed.elapsed().as_secs_f64());
            }
            if closed >= STREAMS {
                last_s = Some(killed.elapsed().as_secs_f64());
            }
            std::thread::sleep(Duration::from_millis(5));
        }
        let k = Kill { first_s, last_s };
        log(&format!("dead callers, run {}: {k:?}", i + 1));
        out.push(k);
    }
    Ok(DeadCallers {
        kills: out,
        idle_per_s,
        idle_scripts_per_s,
    })
}

/// Redis commands per second of `c` left idle for 10 s (after 2 s to settle): all, scripts.
fn idle(c: &ProcessCluster) -> (f64, f64) {
    let Some(redis) = c.redis.as_ref() else {
        return (0.0, 0.0);
    };
    std::thread::sleep(Duration::from_secs(2));
    let (before, t) = (redis.calls(), Instant::now());
    std::thread::sleep(Duration::from_secs(10));
    let after = redis.calls();
    let secs = t.elapsed().as_secs_f64();
    let delta = |name: Option<&str>| {
        after
            .iter()
            .filter(|(k, _)| name.is_none_or(|n| k.as_str() == n))
            .map(|(k, v)| v - before.get(k).copied().unwrap_or(0))
            .sum::<u64>() as f64
            / secs
    };
    (delta(None), delta(Some("evalsha")) + delta(Some("eval")))
}

/// Sends a streamed chat to the gateway on `port` and reads it until the connection ends,
/// counting it in `started` at its first body bytes.
fn open(port: u16, j: usize, started: Arc<AtomicUsize>) -> std::thread::JoinHandle<()> {
    std::thread::spawn(move || {
        let Ok(mut s) = TcpStream::connect(("127.0.0.1", port)) else {
            return;
        };
        let body = format!(
            r#"{{"model":"mock-a","stream":true,"messages":[{{"role":"user","content":"{j} {}"}}]}}"#,
            "word ".repeat(100)
        );
        let req = format!(
            "POST /v1/chat/completions HTTP/1.1\r\nHost: 127.0.0.1\r\nContent-Type: application/json\r\nContent-Length: {}\r\nConnection: close\r\n\r\n{body}",
            body.len()
        );
        if s.write_all(req.as_bytes()).is_err() {
            return;
        }
        let (mut seen, mut buf, mut counted) = (Vec::new(), [0u8; 4096], false);
        while let Ok(n) = s.read(&mut buf) {
            if n == 0 {
                break;
            }
            seen.extend_from_slice(&buf[..n]);
            if !counted && seen.windows(5).any(|w| w == b"data:") {
                counted = true;
                started.fetch_add(1, Ordering::SeqCst);
            }
        }
    })
}

pub fn markdown(r: &DeadCallers) -> String {
    let kills = &r.kills;
    let mut s = format!(
        "\n## Dead callers (`--dead-callers`)\n\nThe cluster over Redis; {STREAMS} streams open through a gateway that is then SIGKILLed (a mock upstream sends an event every 200 ms for 20 s): seconds from the kill until the mock saw the first and the last of the {STREAMS} upstream calls closed.\n\n| run | first closed s | last closed s |\n| ---: | ---: | ---: |\n"
    );
    let f = |v: Option<f64>| v.map_or("still running after 15 s".to_owned(), |v| format!("{v:.2}"));
    for (i, k) in kills.iter().enumerate() {
        let _ = writeln!(s, "| {} | {} | {} |", i + 1, f(k.first_s), f(k.last_s));
    }
    let _ = writeln!(
        s,
        "\nThe idle cluster (gateway, router, worker) runs {:.1} Redis commands/s (those inside scripts counted), from {:.1} script calls/s (heartbeats, the workers' reads of the live set).",
        r.idle_per_s, r.idle_scripts_per_s
    );
    s
}
