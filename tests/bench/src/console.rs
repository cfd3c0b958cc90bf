//! What the operator console costs an idle gateway (`llmr-bench --console`, `just bench
//! --console`; issue 31: "the console's polling by one open page adds < 1% CPU to an idle
//! gateway; with no page open it costs nothing").
//!
//! The deployment is the default configuration (`llmrouter all`, in memory; the log level, the
//! request log, `max_queued`, `max_in_flight` and the request timeout as
//! `config/default.toml` has them) with `server.admin_token` set and the mock upstream as its
//! provider; then the same as gateway, router and worker processes over Redis. For each:
//!
//! 1. the request log is filled to its default cap (10,000 records) with chat completions
//!    (the worst case for `/admin/overview`, whose first answer reads every record of its
//!    15-minute window), then nothing for 2 s;
//! 2. idle: the CPU time of llmrouter's processes (and of Redis) over a window (30 s) in
//!    which nothing calls;
//! 3. one open overview page: the same window while a poller, signed in with `POST
//!    /ui/login` and presenting the session cookie as the page does, asks `GET /ui/session`
//!    once and `GET /admin/overview` every 5 s (the page's refresh);
//! 4. the same with the providers page (`GET /admin/providers` every 5 s).
//!
//! Each window reports the CPU time, its share of one core over the window's wall time and
//! what it adds to idle, the polled endpoint's status and mean and max latency, and the
//! resident memory of llmrouter's processes before and after.
//!
//! The processes are started with the testkit's process-cluster fixture (as
//! [`crate::procs::Deployment`] does) because the default log level is set through the
//! environment (`LLMR__TELEMETRY__LOG_LEVEL`), which `Deployment` does not pass; they are
//! stopped by PID when dropped. Bounded: two deployments × (fill + 2 s + three windows),
//! a little over three minutes at `--factor 1` (the windows scale with it; the fill does not).

use std::fmt::Write as _;
use std::path::Path;
use std::time::{Duration, Instant};

use llmr_testkit::{ProcessCluster, TestConfig};

use crate::body;
use crate::load::{self, Shape};
use crate::procs::{Extra, Mock, Mode, config_toml, cpu_ms, rss_mb};

/// `server.admin_token` of the deployment.
pub const ADMIN_TOKEN: &str = "bench-console-admin-token";
const ADMIN_TOML: &str = "admin_token = \"bench-console-admin-token\"\n";
/// The request log's default cap (`[log] max_records`).
pub const LOG_CAP: u64 = 10_000;
/// How often an open page polls.
pub const POLL: Duration = Duration::from_secs(5);
/// The measured window at `--factor 1`.
pub const WINDOW: Duration = Duration::from_secs(30);
/// The console's session cookie.
const COOKIE: &str = "llmr_console";
/// Defaults of `config/default.toml` that [`config_toml`] takes or sets otherwise.
const MAX_QUEUED: usize = 1000;
const MAX_IN_FLIGHT: usize = 256;
const DEFAULTS_ENV: [(&str, &str); 2] = [
    ("LLMR__TELEMETRY__LOG_LEVEL", "info"),
    ("LLMR__SERVER__REQUEST_TIMEOUT_MS", "300000"),
];

/// The pages measured: (what, the endpoint its open page polls; None = no page open).
pub const PAGES: [(&str, Option<&str>); 3] = [
    ("idle (no page open)", None),
    ("overview page open", Some("/admin/overview")),
    ("providers page open", Some("/admin/providers")),
];

/// One answer to a poll.
#[derive(Debug, Clone, Copy)]
pub struct Poll {
    pub status: u16,
    pub ms: f64,
}

/// One measured window.
pub struct Window {
    pub what: &'static str,
    pub endpoint: Option<&'static str>,
    pub wall: Duration,
    /// CPU time of llmrouter's processes (ms).
    pub cpu_ms: f64,
    /// The same per process, by name.
    pub by_process: Vec<(String, f64)>,
    /// CPU time of the deployment's Redis (ms; None in memory).
    pub redis_cpu_ms: Option<f64>,
    /// The polled endpoint's answers, in order.
    pub polls: Vec<Poll>,
    /// `GET /ui/session`'s status (pages only).
    pub session_status: Option<u16>,
    /// RSS of llmrouter's processes (MB), before and after.
    pub rss_before: f64,
    pub rss_after: f64,
}

impl Window {
    /// CPU time as a share of one core over the window's wall time, in %.
    pub fn cpu_pct(&self) -> f64 {
        self.cpu_ms / self.wall.as_secs_f64().max(1e-9) / 10.0
    }

    fn redis_pct(&self) -> Option<f64> {
        self.redis_cpu_ms
            .map(|ms| ms / self.wall.as_secs_f64().max(1e-9) / 10.0)
    }

    fn latency(&self) -> Option<(f64, f64)> {
        let n = self.polls.len();
        (n > 0).then(|| {
            let sum: f64 = self.polls.iter().map(|p| p.ms).sum();
            let max = self.polls.iter().map(|p| p.ms).fold(0.0, f64::max);
            (sum / n as f64, max)
        })
    }

    fn statuses(&self) -> String {
        let mut s: Vec<u16> = self.polls.iter().map(|p| p.status).collect();
        s.dedup();
        s.iter().map(u16::to_string).collect::<Vec<_>>().join(", ")
    }
}

/// One deployment's windows.
pub struct Measured {
    pub mode: Mode,
    /// Chat completions answered while filling the log, errors, and how long it took.
    pub filled: u64,
    pub fill_errors: u64,
    pub fill_time: Duration,
    /// Records the first overview counted in its window (from its requests/s series).
    pub overview_records: Option<f64>,
    pub processes: Vec<String>,
    pub windows: Vec<Window>,
}

#[derive(Default)]
pub struct ConsoleReport {
    pub runs: Vec<Measured>,
    pub notes: Vec<String>,
    pub total: Duration,
}

/// llmrouter's processes for one mode (with their Redis in the cluster), stopped by PID on drop.
struct Gateway {
    mode: Mode,
    c: ProcessCluster,
}

impl Gateway {
    fn start(mode: Mode, bin_dir: &Path, mock: &Mock) -> std::io::Result<Gateway> {
        let extra = Extra {
            server: ADMIN_TOML,
            ..Extra::default()
        };
        let mut cfg = TestConfig::new(config_toml(&mock.base_url(), MAX_IN_FLIGHT, MAX_QUEUED, extra));
        for (k, v) in DEFAULTS_ENV {
            cfg = cfg.env(k, v);
        }
        let mut c = ProcessCluster::new(&bin_dir.join("llmrouter"), cfg, mode == Mode::Cluster);
        if mode == Mode::Cluster {
            c.spawn("router", &["router"]);
            c.spawn("worker", &["worker"]);
            c.spawn("gateway", &["gateway"]);
        } else {
            c.spawn("llmrouter all", &["all"]);
        }
        if !c.listening(Duration::from_secs(30)) {
            return Err(std::io::Error::other(format!("{} did not listen", mode.name())));
        }
        let g = Gateway { mode, c };
        let until = Instant::now() + Duration::from_secs(30);
        while load::run(&g.chat_url(), body(false, 0), Shape::Serial { n: 1 }, 1).ok == 0 {
            if Instant::now() > until {
                return Err(std::io::Error::other(format!("{} never answered", mode.name())));
            }
            std::thread::sleep(Duration::from_millis(100));
        }
        Ok(g)
    }

    fn chat_url(&self) -> String {
        self.c.url("/v1/chat/completions")
    }

    /// CPU time (ms) of each process so far.
    fn cpu_ms(&self) -> Vec<f64> {
        self.c.procs.iter().map(|p| cpu_ms(p.pid())).collect()
    }

    fn redis_cpu_ms(&self) -> Option<f64> {
        self.c.redis.as_ref().and_then(|r| r.pid()).map(cpu_ms)
    }

    fn rss_mb(&self) -> f64 {
        self.c.procs.iter().map(|p| rss_mb(p.pid())).sum()
    }
}

/// Chat completions at c=32, a second at a time, until the log holds its cap (bounded: two
/// minutes at most). Returns (answered, errors, time).
fn fill(g: &Gateway, threads: usize) -> (u64, u64, Duration) {
    let start = Instant::now();
    let (mut ok, mut errors) = (0, 0);
    while ok < LOG_CAP && start.elapsed() < Duration::from_secs(120) {
        let shape = Shape::Closed {
            concurrency: 32,
            secs: 1,
        };
        let s = load::run(&g.chat_url(), body(false, 0), shape, threads);
        ok += s.ok;
        errors += s.errors;
    }
    (ok, errors, start.elapsed())
}

/// Signs in as the page does (`POST /ui/login` with the admin token) and returns the session
/// cookie (`name=value`).
async fn sign_in(client: &awc::Client, base: &str) -> std::io::Result<String> {
    let body = serde_json::json!({ "token": ADMIN_TOKEN }).to_string();
    let mut resp = client
        .post(format!("{base}/ui/login"))
        .insert_header(("content-type", "application/json"))
        .send_body(body)
        .await
        .map_err(|e| std::io::Error::other(format!("POST /ui/login: {e}")))?;
    let _ = resp.body().await;
    if resp.status().as_u16() != 200 {
        return Err(std::io::Error::other(format!(
            "POST /ui/login answered {}",
            resp.status()
        )));
    }
    resp.headers()
        .get_all("set-cookie")
        .filter_map(|v| v.to_str().ok())
        .filter_map(|v| v.split(';').next())
        .find(|v| v.starts_with(&format!("{COOKIE}=")))
        .map(str::to_owned)
        .ok_or_else(|| std::io::Error::other("POST /ui/login set no session cookie"))
}

/// `GET base+path` with the cookie: its status, latency to the end of the body, and the body.
async fn get(client: &awc::Client, base: &str, path: &str, cookie: &str) -> (Poll, Vec<u8>) {
    let sent = Instant::now();
    let resp = client
        .get(format!("{base}{path}"))
        .insert_header(("cookie", cookie))
        .send()
        .await;
    let (status, bytes) = match resp {
        Ok(mut r) => {
            let b = r.body().limit(64 << 20).await.map(|b| b.to_vec()).unwrap_or_default();
            (r.status().as_u16(), b)
        }
        Err(_) => (0, Vec::new()),
    };
    let ms = sent.elapsed().as_secs_f64() * 1000.0;
    (Poll { status, ms }, bytes)
}

/// An open page for `window`: `GET /ui/session` once, then `path` every [`POLL`] from the
/// start. Returns the session's status, the polls, and the first answer's body.
async fn page(
    client: &awc::Client,
    base: &str,
    cookie: &str,
    path: &str,
    window: Duration,
) -> (u16, Vec<Poll>, Vec<u8>) {
    let start = Instant::now();
    let (session, _) = get(client, base, "/ui/session", cookie).await;
    let mut polls = Vec::new();
    let mut first = Vec::new();
    let mut due = start;
    while due < start + window {
        tokio::time::sleep_until(due.into()).await;
        let (p, b) = get(client, base, path, cookie).await;
        if polls.is_empty() {
            first = b;
        }
        polls.push(p);
        due += POLL;
    }
    tokio::time::sleep_until((start + window).into()).await;
    (session.status, polls, first)
}

/// Records the overview counted in its window, from its requests/s series.
fn overview_records(body: &[u8]) -> Option<f64> {
    let v: serde_json::Value = serde_json::from_slice(body).ok()?;
    let step = v["step_ms"].as_f64()? / 1000.0;
    let series = v["series"]["requests_per_s"].as_array()?;
    let n = series.len();
    let now = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .ok()?
        .as_millis() as f64;
    // The last step is still running: its rate is over the part that passed (1 s at least).
    let last = ((now - v["from_ms"].as_f64()?) / 1000.0 - step * (n as f64 - 1.0)).clamp(1.0, step);
    let sum = series.iter().enumerate().map(|(i, r)| {
        let secs = if i + 1 == n { last } else { step };
        r.as_f64().unwrap_or(0.0) * secs
    });
    Some(sum.sum::<f64>().round())
}

/// What is read at each end of a window.
struct Snapshot {
    at: Instant,
    cpu_ms: Vec<f64>,
    redis_cpu_ms: Option<f64>,
    rss_mb: f64,
}

impl Snapshot {
    fn take(g: &Gateway) -> Snapshot {
        Snapshot {
            at: Instant::now(),
            cpu_ms: g.cpu_ms(),
            redis_cpu_ms: g.redis_cpu_ms(),
            rss_mb: g.rss_mb(),
        }
    }

    /// The window from this snapshot to now.
    fn until_now(self, g: &Gateway, what: &'static str, endpoint: Option<&'static str>) -> Window {
        let end = Snapshot::take(g);
        let by_process: Vec<(String, f64)> =
            g.c.procs
                .iter()
                .zip(end.cpu_ms.iter().zip(&self.cpu_ms))
                .map(|(p, (b, a))| (p.name.clone(), b - a))
                .collect();
        Window {
            what,
            endpoint,
            wall: end.at - self.at,
            cpu_ms: by_process.iter().map(|(_, ms)| ms).sum(),
            by_process,
            redis_cpu_ms: end.redis_cpu_ms.zip(self.redis_cpu_ms).map(|(a, b)| a - b),
            polls: Vec::new(),
            session_status: None,
            rss_before: self.rss_mb,
            rss_after: end.rss_mb,
        }
    }
}

/// One window: nothing calls (`endpoint` None), or one open page polls `endpoint` (signed
/// in before the window starts). Returns it with the first poll's body.
fn measure(
    g: &Gateway,
    what: &'static str,
    endpoint: Option<&'static str>,
    window: Duration,
) -> std::io::Result<(Window, Vec<u8>)> {
    let Some(path) = endpoint else {
        let before = Snapshot::take(g);
        std::thread::sleep(window);
        return Ok((before.until_now(g, what, None), Vec::new()));
    };
    let _ = rustls::crypto::ring::default_provider().install_default();
    let base = g.c.url("");
    actix_rt::System::new().block_on(async {
        let client = awc::Client::builder().timeout(Duration::from_secs(30)).finish();
        let cookie = sign_in(&client, &base).await?;
        let before = Snapshot::take(g);
        let (session, polls, first) = page(&client, &base, &cookie, path, window).await;
        let mut w = before.until_now(g, what, endpoint);
        w.polls = polls;
        w.session_status = Some(session);
        Ok((w, first))
    })
}

/// One deployment: fill the log, wait 2 s, then idle and each page's window.
fn deployment(
    mode: Mode,
    bin_dir: &Path,
    mock: &Mock,
    window: Duration,
    threads: usize,
    log: &mut dyn FnMut(&str),
) -> std::io::Result<Measured> {
    let g = Gateway::start(mode, bin_dir, mock)?;
    let (filled, fill_errors, fill_time) = fill(&g, threads);
    log(&format!(
        "console {}: {filled} chat completions ({fill_errors} errors) in {:.1} s to fill the request log",
        mode.name(),
        fill_time.as_secs_f64()
    ));
    std::thread::sleep(Duration::from_secs(2));
    let mut m = Measured {
        mode,
        filled,
        fill_errors,
        fill_time,
        overview_records: None,
        processes: g.c.procs.iter().map(|p| p.name.clone()).collect(),
        windows: Vec::new(),
    };
    for (what, endpoint) in PAGES {
        let (w, first) = measure(&g, what, endpoint, window)?;
        if endpoint == Some("/admin/overview") {
            m.overview_records = overview_records(&first);
        }
        let lat = w.latency().map_or("—".to_owned(), |(mean, max)| {
            format!(
                "{} polls (status {}), mean {mean:.2} ms, max {max:.2} ms",
                w.polls.len(),
                w.statuses()
            )
        });
        log(&format!(
            "console {} {what:<20} CPU {:.0} ms ({:.3}% of a core) over {:.1} s; {lat}",
            g.mode.name(),
            w.cpu_ms,
            w.cpu_pct(),
            w.wall.as_secs_f64()
        ));
        m.windows.push(w);
    }
    Ok(m)
}

/// Both deployments; `scale` < 1 shortens the windows (not the fill: the cap is the point).
pub fn run(bin_dir: &Path, scale: f64, threads: usize, log: &mut dyn FnMut(&str)) -> std::io::Result<ConsoleReport> {
    let start = Instant::now();
    let window = WINDOW.mul_f64(scale).max(POLL);
    let mut report = ConsoleReport::default();
    let began = load_average();
    let mock = Mock::start(bin_dir, 0, 20)?;
    for mode in [Mode::AllMemory, Mode::Cluster] {
        let m = deployment(mode, bin_dir, &mock, window, threads, log)?;
        for w in &m.windows {
            if w.polls.iter().any(|p| p.status == 501) {
                report.notes.push(format!(
                    "{}: `GET {}` answered 501 (not implemented yet): its row measures a gateway that does no work for it.",
                    mode.name(),
                    w.endpoint.unwrap_or_default()
                ));
            }
        }
        report.runs.push(m);
    }
    // Latencies (not CPU times) move with what else runs on the machine: say what did.
    if let (Some(a), Some(b)) = (began, load_average()) {
        report.notes.push(format!(
            "Load average (1, 5, 15 min) when the run began: {a}; when it ended: {b}."
        ));
    }
    report.total = start.elapsed();
    Ok(report)
}

fn load_average() -> Option<String> {
    let load = std::fs::read_to_string("/proc/loadavg").ok()?;
    Some(load.split_whitespace().take(3).collect::<Vec<_>>().join(", "))
}

/// One table row.
fn row(s: &mut String, m: &Measured, w: &Window, idle: Option<&Window>) {
    let (added, per_poll) = match (w.endpoint, idle) {
        (Some(_), Some(i)) if !w.polls.is_empty() => (
            format!("{:+.3}", w.cpu_pct() - i.cpu_pct()),
            format!("{:+.1}", (w.cpu_ms - i.cpu_ms) / w.polls.len() as f64),
        ),
        _ => ("—".to_owned(), "—".to_owned()),
    };
    let by_process = match w.by_process.as_slice() {
        [_] => "—".to_owned(),
        all => all
            .iter()
            .map(|(n, ms)| format!("{n} {ms:.0}"))
            .collect::<Vec<_>>()
            .join(", "),
    };
    let redis = match (w.redis_pct(), w.redis_cpu_ms) {
        (Some(pct), Some(ms)) => format!("{ms:.0} ({pct:.3}%)"),
        _ => "—".to_owned(),
    };
    let (endpoint, status, mean, max) = match (w.endpoint, w.latency()) {
        (Some(e), Some((mean, max))) => (
            format!("`GET {e}` × {}", w.polls.len()),
            w.statuses(),
            format!("{mean:.2}"),
            format!("{max:.2}"),
        ),
        _ => ("—".to_owned(), "—".to_owned(), "—".to_owned(), "—".to_owned()),
    };
    let _ = writeln!(
        s,
        "| {} | {} | {:.1} | {:.0} | {by_process} | {:.3} | {added} | {per_poll} | {redis} | {endpoint} | {status} | {mean} | {max} | {:.1} → {:.1} |",
        m.mode.name(),
        w.what,
        w.wall.as_secs_f64(),
        w.cpu_ms,
        w.cpu_pct(),
        w.rss_before,
        w.rss_after
    );
}

/// The report section.
pub fn markdown(r: &ConsoleReport, machine: &str) -> String {
    let mut s = String::from("\n## The operator console's cost to an idle gateway\n\n");
    let _ = writeln!(
        s,
        "Machine: {machine}\n\nThe default configuration (`llmrouter all`, in memory, log level `info`) with `server.admin_token` and the mock upstream, then gateway, router and worker processes over Redis. The request log was first filled to its default cap ({LOG_CAP} records) with chat completions, the worst case for `/admin/overview`, whose first answer reads every record of its 15-minute window (later ones read only what was logged since). Then, per row, a window in which nothing calls (idle), or one open page: signed in with `POST /ui/login` (outside the window), `GET /ui/session` once, then the page's endpoint every {} s with the session cookie. CPU is llmrouter's processes' (utime + stime from `/proc`, 10 ms ticks) as a share of one core over the window; target: one open page adds < 1%. \"Added\" is against the idle window just before; the idle window itself moves by a few tenths of a percent between runs (timers, the 10 ms tick), so differences that small are noise.\n",
        POLL.as_secs()
    );
    let _ = writeln!(
        s,
        "| deployment | window | wall s | CPU ms | CPU ms by process | CPU % of a core | added % vs idle | added CPU ms per poll | Redis CPU ms (%) | polled | status | mean ms | max ms | RSS MB before → after |\n| --- | --- | ---: | ---: | --- | ---: | ---: | ---: | ---: | --- | --- | ---: | ---: | ---: |"
    );
    for m in &r.runs {
        let idle = m.windows.iter().find(|w| w.endpoint.is_none());
        for w in &m.windows {
            row(&mut s, m, w, idle);
        }
    }
    s.push('\n');
    for m in &r.runs {
        let records = m.overview_records.map_or("?".to_owned(), |n| format!("{n:.0}"));
        let _ = writeln!(
            s,
            "- {} ({}): the log was filled with {} chat completions ({} errors) in {:.1} s; the first overview counted ≈ {records} records in its window.",
            m.mode.name(),
            m.processes.join(", "),
            m.filled,
            m.fill_errors,
            m.fill_time.as_secs_f64()
        );
        let pages: Vec<String> = m
            .windows
            .iter()
            .filter_map(|w| Some(format!("{}: {}", w.what, w.session_status?)))
            .collect();
        let _ = writeln!(s, "  `GET /ui/session` answered {}.", pages.join(", "));
    }
    for n in &r.notes {
        let _ = writeln!(s, "- {n}");
    }
    let _ = writeln!(s, "- The whole run took {:.0} s.", r.total.as_secs_f64());
    s
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_configuration_is_the_default_one_with_an_admin_token() {
        let extra = Extra {
            server: ADMIN_TOML,
            ..Extra::default()
        };
        let mut cfg = TestConfig::new(config_toml("http://127.0.0.1:9/v1", MAX_IN_FLIGHT, MAX_QUEUED, extra));
        for (k, v) in DEFAULTS_ENV {
            cfg = cfg.env(k, v);
        }
        let s = cfg.settings();
        assert_eq!(s.server.admin_token(), Some(ADMIN_TOKEN));
        assert!(s.log.enabled);
        assert_eq!(s.log.max_records, LOG_CAP);
        assert!(s.ui.enabled);
    }

    #[test]
    fn the_overview_counts_its_records_from_the_series() {
        let now = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map_or(0, |d| d.as_millis() as u64);
        // The last step began 10 s ago: 30 steps, every full one at 1 req/s, the last at 2.
        let from = now - 10_000 - 29 * 30_000;
        let mut series = vec![serde_json::json!(1.0); 29];
        series.push(serde_json::json!(2.0));
        let v = serde_json::json!({"step_ms": 30_000, "from_ms": from, "series": {"requests_per_s": series}});
        let n = overview_records(v.to_string().as_bytes());
        assert_eq!(n, Some(29.0 * 30.0 + 20.0));
    }
}
