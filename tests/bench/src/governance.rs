//! The governance comparison (`llmr-bench --governance`, `just bench --governance`): the same
//! chat completion (model `bench`, not streamed) presented with `server.token` — no virtual
//! key, so no admission, though the request is still settled: the request log is on by
//! default — and with a virtual key whose rpm, tpm and budget are far above what the run can
//! use (an admission step before publishing, a settlement step at the end). Both go to the
//! same deployment, whose configuration has the token, the key and a price on the mock's
//! provider, so the only difference is the `Authorization` header; the two are alternated in
//! rounds (token, key, key, token, …) so that the machine's drift falls on both alike.
//!
//! - `all` in memory (the bench's usual configuration: the built-in default): serial p50 and
//!   p99, c=64 req/s, then serial again once the key's 60-second rate window holds what the
//!   c=64 rounds admitted (its size is read from `x-ratelimit-remaining-requests`).
//! - gateway, router and worker processes over Redis: serial latency and Redis commands per
//!   request (`INFO commandstats` around each run — commands scripts run included — less what
//!   the idle cluster sends in as long), with the commands that changed.
//!
//! Each measure also reports llmrouter's CPU time per request (and Redis's, in the cluster).
//!
//! Every run is bounded (counts and seconds, × `--factor`); every process is stopped by PID.

use std::collections::BTreeMap;
use std::fmt::Write as _;
use std::path::Path;
use std::time::Duration;

use crate::load::{self, Shape, Stats};
use crate::procs::{Deployment, Extra, Mock, Mode};
use crate::{C64, SERIAL, body, commands};

/// `server.token` of the deployment.
pub const TOKEN: &str = "bench-server-token";
const TOKEN_TOML: &str = "token = \"bench-server-token\"\n";
/// The virtual key's secret (declared in the config file as `[[keys]]`).
pub const KEY: &str = "sk-llmr-bench-governance-0000000000000000000000000000";
/// The key's limits: never reached in a bounded run (the key's 60-second window holds a few
/// hundred thousand requests at most; a request reserves ~4,200 tokens and ~$0.008 and
/// costs $0.00002).
pub const RPM: u64 = 1_000_000_000;
const TPM: u64 = 1_000_000_000_000;
const BUDGET_USD: f64 = 1_000_000.0;

/// Prices of the mock's provider (per million tokens), in both arms: a budgeted key needs one.
const PRICES: &str = "cost_input_per_mtok = 1.0\ncost_output_per_mtok = 2.0\n";

fn extra(tail: &str) -> Extra<'_> {
    Extra {
        server: TOKEN_TOML,
        provider: PRICES,
        tail,
    }
}

fn key_toml() -> String {
    format!(
        "[[keys]]\nname = \"bench\"\nkey = \"{KEY}\"\nrpm = {RPM}\ntpm = {TPM}\nbudget_usd = {BUDGET_USD:.1}\nbudget_period = \"month\"\n"
    )
}

/// The two arms: who presents what.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Arm {
    Token,
    Key,
}

impl Arm {
    pub fn secret(self) -> &'static str {
        match self {
            Arm::Token => TOKEN,
            Arm::Key => KEY,
        }
    }

    pub fn name(self) -> &'static str {
        match self {
            Arm::Token => "server.token",
            Arm::Key => "virtual key",
        }
    }

    /// Round `i`'s order: token first in even rounds, key first in odd ones.
    fn order(i: usize) -> [Arm; 2] {
        if i.is_multiple_of(2) {
            [Arm::Token, Arm::Key]
        } else {
            [Arm::Key, Arm::Token]
        }
    }
}

/// One measure of both arms, pooled over their rounds, with the CPU time the deployment's
/// processes and its Redis used meanwhile.
pub struct Pair {
    pub token: Stats,
    pub key: Stats,
    /// llmrouter's CPU ms (token, key).
    pub cpu_ms: [f64; 2],
    /// Redis's CPU ms (token, key); 0 in memory.
    pub redis_cpu_ms: [f64; 2],
}

impl Pair {
    fn new() -> Pair {
        Pair {
            token: Stats::default(),
            key: Stats::default(),
            cpu_ms: [0.0; 2],
            redis_cpu_ms: [0.0; 2],
        }
    }

    /// Runs `shape` presenting `arm`'s secret and pools what it measured; returns this round's.
    fn run(&mut self, d: &Deployment, arm: Arm, shape: Shape, threads: usize) -> Stats {
        let (cpu, redis) = (d.cpu_ms(), d.redis_cpu_ms());
        let s = load::run_as(&d.url, body(false, 0), shape, threads, Some(arm.secret()));
        let i = arm as usize;
        self.cpu_ms[i] += d.cpu_ms() - cpu;
        self.redis_cpu_ms[i] += d.redis_cpu_ms() - redis;
        let pooled = match arm {
            Arm::Token => &mut self.token,
            Arm::Key => &mut self.key,
        };
        pooled.merge(&s);
        pooled.elapsed += s.elapsed;
        s
    }

    fn stats(&self, arm: Arm) -> &Stats {
        match arm {
            Arm::Token => &self.token,
            Arm::Key => &self.key,
        }
    }

    /// CPU ms per answered request of `arm` (llmrouter's, or Redis's).
    fn per_request(&self, cpu: &[f64; 2], arm: Arm) -> f64 {
        cpu[arm as usize] / self.stats(arm).ok.max(1) as f64
    }

    fn errors(&self) -> String {
        format!("{} / {}", self.token.errors, self.key.errors)
    }
}

/// `all` in memory.
pub struct InMemory {
    pub serial: Pair,
    /// Requests in the key's window when the serial rounds ended.
    pub serial_window: Option<u64>,
    pub c64: Pair,
    /// Each c=64 round: (arm, req/s).
    pub c64_rounds: Vec<(Arm, f64)>,
    pub after: Pair,
    /// Requests in the key's window when the serial rounds after c=64 began.
    pub after_window: Option<u64>,
}

/// Redis commands per request of one arm: total and per command.
#[derive(Default)]
pub struct Count {
    pub per_request: f64,
    pub by_command: BTreeMap<String, f64>,
}

/// The cluster over Redis.
pub struct Cluster {
    pub serial: Pair,
    pub token: Count,
    pub key: Count,
}

#[derive(Default)]
pub struct GovReport {
    pub memory: Option<InMemory>,
    pub cluster: Option<Cluster>,
    pub notes: Vec<String>,
}

/// What one request presenting `secret` was answered: status, requests left in the rate
/// window (`x-ratelimit-remaining-requests`), and the cost header.
#[derive(Debug, Default)]
pub struct Probe {
    pub status: u16,
    pub remaining: Option<u64>,
    pub cost: Option<String>,
}

impl Probe {
    /// Requests in the key's window, this one included.
    pub fn window(&self) -> Option<u64> {
        self.remaining.map(|r| RPM - r)
    }
}

pub fn probe(url: &str, secret: &str) -> Probe {
    let _ = rustls::crypto::ring::default_provider().install_default();
    actix_rt::System::new().block_on(async {
        let client = awc::Client::builder().timeout(Duration::from_secs(30)).finish();
        let Ok(mut resp) = client
            .post(url)
            .insert_header(("content-type", "application/json"))
            .insert_header(("authorization", format!("Bearer {secret}")))
            .send_body(body(false, 0))
            .await
        else {
            return Probe::default();
        };
        let _ = resp.body().await;
        let header = |n: &str| resp.headers().get(n).and_then(|v| v.to_str().ok()).map(str::to_owned);
        Probe {
            status: resp.status().as_u16(),
            remaining: header("x-ratelimit-remaining-requests").and_then(|v| v.parse().ok()),
            cost: header("x-llmr-cost-usd"),
        }
    })
}

/// Starts `mode` with the token, the key and the price, and checks that each arm is what it
/// should be: the token answered without governance headers, the key with them.
fn start(mode: Mode, bin_dir: &Path, mock: &Mock, log: &mut dyn FnMut(&str)) -> std::io::Result<Deployment> {
    let tail = key_toml();
    let d = Deployment::start_with(mode, bin_dir, mock, 1, 4096, 4096, extra(&tail))?;
    let b = body(false, 0);
    for arm in [Arm::Token, Arm::Key] {
        if !d.wait_ready_as(&b, Some(arm.secret())) {
            return Err(std::io::Error::other(format!(
                "{}: {} never answered",
                mode.name(),
                arm.name()
            )));
        }
    }
    let (t, k) = (probe(&d.url, TOKEN), probe(&d.url, KEY));
    log(&format!(
        "governance {}: server.token answered {} (cost header {:?}), the key {} (cost header {:?}, {:?} requests in its window)",
        mode.name(),
        t.status,
        t.cost,
        k.status,
        k.cost,
        k.window()
    ));
    if t.status != 200 || k.status != 200 || t.remaining.is_some() || k.remaining.is_none() || k.cost.is_none() {
        return Err(std::io::Error::other(format!(
            "{}: the arms are not what they should be (token {t:?}, key {k:?})",
            mode.name()
        )));
    }
    Ok(d)
}

fn line(mode: Mode, what: &str, arm: Arm, s: &Stats) -> String {
    format!(
        "governance {:<16} {what:<24} {:<13} {:>8.0} req/s  p50 {:>7.3} ms  p99 {:>7.3} ms  errors {}{}",
        mode.name(),
        arm.name(),
        s.rps(),
        s.ms(0.5),
        s.ms(0.99),
        s.errors,
        if s.error_kinds.is_empty() {
            String::new()
        } else {
            format!(" {:?}", s.error_kinds)
        }
    )
}

/// `rounds` serial rounds of `n` requests per arm, alternated.
fn serial_rounds(d: &Deployment, rounds: usize, n: usize, what: &str, log: &mut dyn FnMut(&str)) -> Pair {
    let mut pair = Pair::new();
    for i in 0..rounds {
        for arm in Arm::order(i) {
            let s = pair.run(d, arm, Shape::Serial { n }, 1);
            log(&line(d.mode, what, arm, &s));
        }
    }
    pair
}

/// Runs both comparisons; `scale` < 1 shortens them.
pub fn run(bin_dir: &Path, scale: f64, threads: usize, log: &mut dyn FnMut(&str)) -> std::io::Result<GovReport> {
    let n = |n: usize| ((n as f64 * scale).ceil() as usize).max(10);
    let secs = ((5.0 * scale).ceil() as u64).max(1);
    let mut report = GovReport::default();
    // Figures of two runs differ most when something else runs on the machine: say so.
    if let Ok(load) = std::fs::read_to_string("/proc/loadavg") {
        let load: Vec<&str> = load.split_whitespace().take(3).collect();
        report.notes.push(format!(
            "Load average (1, 5, 15 min) when the run began: {}.",
            load.join(", ")
        ));
    }
    let mock = Mock::start(bin_dir, 0, 20)?;

    report.memory = Some(in_memory(bin_dir, &mock, &n, secs, threads, log)?);
    report.cluster = Some(in_cluster(bin_dir, &mock, &n, threads, log)?);
    drop(mock);
    Ok(report)
}

/// Warms up connections, caches and allocators; the key lightly, so that the serial rounds
/// start with a small rate window.
fn warm_up(d: &Deployment, threads: usize) {
    let warm = Shape::Closed {
        concurrency: 16,
        secs: 1,
    };
    load::run_as(&d.url, body(false, 0), warm, threads, Some(TOKEN));
    load::run_as(&d.url, body(false, 0), Shape::Serial { n: 200 }, 1, Some(KEY));
}

/// `all` in memory: serial rounds, c=64 rounds, serial rounds again with a full window.
fn in_memory(
    bin_dir: &Path,
    mock: &Mock,
    n: &dyn Fn(usize) -> usize,
    secs: u64,
    threads: usize,
    log: &mut dyn FnMut(&str),
) -> std::io::Result<InMemory> {
    let d = start(Mode::AllMemory, bin_dir, mock, log)?;
    warm_up(&d, threads);
    let serial = serial_rounds(&d, 8, n(250), SERIAL, log);
    let serial_window = probe(&d.url, KEY).window();
    let mut c64 = Pair::new();
    let mut c64_rounds = Vec::new();
    for i in 0..2 {
        for arm in Arm::order(i) {
            let s = c64.run(&d, arm, Shape::Closed { concurrency: 64, secs }, threads);
            log(&line(d.mode, C64, arm, &s));
            c64_rounds.push((arm, s.rps()));
        }
    }
    let after_window = probe(&d.url, KEY).window();
    log(&format!(
        "governance: the key's window holds {after_window:?} requests after c=64"
    ));
    let after = serial_rounds(&d, 4, n(250), "serial after c=64", log);
    Ok(InMemory {
        serial,
        serial_window,
        c64,
        c64_rounds,
        after,
        after_window,
    })
}

/// The cluster over Redis (gateway, router, one worker): serial rounds and the Redis commands
/// each arm's requests cost.
fn in_cluster(
    bin_dir: &Path,
    mock: &Mock,
    n: &dyn Fn(usize) -> usize,
    threads: usize,
    log: &mut dyn FnMut(&str),
) -> std::io::Result<Cluster> {
    let d = start(Mode::Cluster, bin_dir, mock, log)?;
    warm_up(&d, threads);
    let url = d
        .redis_url()
        .ok_or_else(|| std::io::Error::other("the cluster has no Redis"))?;
    let idle = commands::idle_rate(&url, Duration::from_secs(2)).map_err(std::io::Error::other)?;
    let mut serial = Pair::new();
    let mut raw: BTreeMap<&str, (BTreeMap<String, f64>, u64)> = BTreeMap::new();
    for i in 0..2 {
        for arm in Arm::order(i) {
            let before = commands::snapshot(&url).map_err(std::io::Error::other)?;
            let s = serial.run(&d, arm, Shape::Serial { n: n(1000) }, 1);
            let after = commands::snapshot(&url).map_err(std::io::Error::other)?;
            let (per_request, by) = commands::per_request(&before, &after, &idle, s.elapsed, s.ok);
            log(&format!(
                "{}  {per_request:.1} Redis commands per request",
                line(d.mode, SERIAL, arm, &s)
            ));
            // Summed as counts, divided by every request of the arm at the end.
            let e = raw.entry(arm.name()).or_default();
            for (k, v) in by {
                *e.0.entry(k).or_default() += v * s.ok as f64;
            }
            e.1 += s.ok;
        }
    }
    let mut count = |arm: Arm| {
        let (by, n) = raw.remove(arm.name()).unwrap_or_default();
        let by: BTreeMap<String, f64> = by.into_iter().map(|(k, v)| (k, v / n.max(1) as f64)).collect();
        Count {
            per_request: by.values().sum(),
            by_command: by,
        }
    };
    let (token, key) = (count(Arm::Token), count(Arm::Key));
    Ok(Cluster { serial, token, key })
}

fn met(ok: bool) -> &'static str {
    if ok { "yes" } else { "no" }
}

/// Table rows of one pooled measure: serial p50 and p99 (`target` on p50), or req/s; then
/// llmrouter's CPU per request, and Redis's when there is one.
fn rows(s: &mut String, name: &str, what: &str, p: &Pair, serial: bool, target: Option<f64>) {
    let errors = p.errors();
    if serial {
        for (q, label) in [(0.5, "p50"), (0.99, "p99")] {
            let (a, b) = (p.token.ms(q), p.key.ms(q));
            let (t, m) = match target.filter(|_| q == 0.5) {
                Some(t) => (format!("≤ +{t} ms"), met(b - a <= t)),
                None => ("—".to_owned(), "—"),
            };
            let _ = writeln!(
                s,
                "| {name} | {what}: {label} ms | {a:.3} | {b:.3} | {:+.3} | {t} | {m} | {errors} |",
                b - a
            );
        }
    } else {
        let (a, b) = (p.token.rps(), p.key.rps());
        let _ = writeln!(
            s,
            "| {name} | {what}: req/s | {a:.0} | {b:.0} | × {:.2} | — | — | {errors} |",
            b / a.max(1e-9)
        );
    }
    let mut cpu = |who: &str, cpu: &[f64; 2]| {
        let (a, b) = (p.per_request(cpu, Arm::Token), p.per_request(cpu, Arm::Key));
        let _ = writeln!(
            s,
            "| {name} | {what}: {who} CPU ms per request | {a:.3} | {b:.3} | {:+.3} | — | — | — |",
            b - a
        );
    };
    cpu("llmrouter", &p.cpu_ms);
    if p.redis_cpu_ms.iter().any(|&v| v > 0.0) {
        cpu("Redis", &p.redis_cpu_ms);
    }
}

/// The report section.
/// The table of Redis commands whose count per request changed between the arms.
fn changed_commands(s: &mut String, c: &Cluster) {
    let _ = writeln!(
        s,
        "\nRedis commands that changed (per request, serial, the cluster; 0.01 or more either way):\n\n| command | server.token | virtual key | change |\n| --- | ---: | ---: | ---: |"
    );
    let mut names: Vec<&String> = c.token.by_command.keys().chain(c.key.by_command.keys()).collect();
    names.sort();
    names.dedup();
    let mut changed: Vec<(&String, f64, f64)> = names
        .into_iter()
        .map(|k| {
            let get = |x: &Count| x.by_command.get(k).copied().unwrap_or(0.0);
            (k, get(&c.token), get(&c.key))
        })
        .filter(|(_, a, b)| (b - a).abs() >= 0.01)
        .collect();
    changed.sort_by(|x, y| (y.2 - y.1).total_cmp(&(x.2 - x.1)).then(x.0.cmp(y.0)));
    for (k, a, b) in changed {
        let _ = writeln!(s, "| {k} | {a:.2} | {b:.2} | {:+.2} |", b - a);
    }
}

pub fn markdown(r: &GovReport, machine: &str) -> String {
    let mut s = String::from("\n## Governance: a virtual key with limits against `server.token`\n\n");
    let _ = writeln!(
        s,
        "Machine: {machine}\n\nThe same chat completion (model `bench`, not streamed) presented with `server.token` (no virtual key: no admission, but the request is still settled, since the request log is on by default) and with a virtual key with rpm, tpm and a budget far above what the run spends (an admission step before publishing, a settlement step at the end), to the same deployment, alternated in rounds (token, key, key, token, …); the mock's provider has a price in both. The key's window is the number of requests it was admitted in the last 60 s when the rows' rounds ended (serial) or began (after c=64). Errors are token / key.\n"
    );
    let _ = writeln!(
        s,
        "| deployment | measure | server.token | virtual key | key − token | target | met | errors |\n| --- | --- | ---: | ---: | ---: | --- | :---: | ---: |"
    );
    let window = |w: Option<u64>| w.map_or("?".to_owned(), |w| w.to_string());
    if let Some(m) = &r.memory {
        let name = Mode::AllMemory.name();
        let what = format!("serial (key's window {})", window(m.serial_window));
        rows(&mut s, name, &what, &m.serial, true, Some(0.02));
        rows(&mut s, name, C64, &m.c64, false, None);
        let what = format!("serial after c=64 (key's window {})", window(m.after_window));
        rows(&mut s, name, &what, &m.after, true, None);
    }
    if let Some(c) = &r.cluster {
        let name = Mode::Cluster.name();
        rows(&mut s, name, SERIAL, &c.serial, true, None);
        let (a, b) = (c.token.per_request, c.key.per_request);
        let _ = writeln!(
            s,
            "| {name} | Redis commands per request (scripts' own included) | {a:.1} | {b:.1} | {:+.1} | ≤ +2 | {} | {} |",
            b - a,
            met(b - a <= 2.0),
            c.serial.errors()
        );
        let evalsha = |x: &Count| x.by_command.get("evalsha").copied().unwrap_or(0.0);
        let (a, b) = (evalsha(&c.token), evalsha(&c.key));
        let _ = writeln!(
            s,
            "| {name} | of which EVALSHA (one script, one round trip) | {a:.2} | {b:.2} | {:+.2} | — | — | — |",
            b - a
        );
    }
    if let Some(m) = &r.memory {
        let delta = |p: &Pair| p.key.ms(0.5) - p.token.ms(0.5);
        if let (Some(w0), Some(w1)) = (m.serial_window, m.after_window)
            && w1 > w0
        {
            let slope = (delta(&m.after) - delta(&m.serial)) / (w1 - w0) as f64 * 1000.0;
            let _ = writeln!(
                s,
                "\nIn memory the key's serial Δp50 grew by {slope:.3} ms per 1,000 requests in its 60-second window (from {w0} to {w1})."
            );
        }
        let rounds: Vec<String> = m
            .c64_rounds
            .iter()
            .map(|(arm, rps)| format!("{} {rps:.0}", arm.name()))
            .collect();
        let _ = writeln!(s, "\nc=64 rounds in order (req/s): {}.", rounds.join(", "));
    }
    if let Some(c) = &r.cluster {
        changed_commands(&mut s, c);
    }
    if !r.notes.is_empty() {
        s.push('\n');
    }
    for n in &r.notes {
        let _ = writeln!(s, "- {n}");
    }
    s
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_configuration_has_the_token_the_key_and_a_price() {
        let tail = key_toml();
        let toml = crate::procs::config_toml("http://127.0.0.1:9/v1", 64, 64, extra(&tail));
        let settings = llmr_testkit::TestConfig::new(toml).settings();
        assert_eq!(settings.server.token(), Some(TOKEN));
        assert_eq!(settings.keys.len(), 1);
        let key = &settings.keys[0];
        assert_eq!(
            (key.limits.rpm, key.limits.tpm, key.limits.budget_usd),
            (Some(RPM), Some(TPM), Some(BUDGET_USD))
        );
        let mock = settings
            .providers()
            .find(|p| p.name == "mock")
            .map(|p| p.cost_of("bench"));
        assert_eq!(mock, Some((1.0, 2.0)));
    }
}
