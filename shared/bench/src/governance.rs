//! The governance comparison (`llmr-bench --governance`, `just bench --governance`): the same
//! chat completion (model `bench`, not streamed) presented with `server.token` — no virtual
//! key, so no admission, though the request is still settled: the request log is on by
//! default — and with a virtual key whose rpm, tpm and budget are far above what the run can
//! use (an admission step before publishing, a settlement step at the end). Both go to the
//! same deployment, whose configuration has the token, the key and a price on the mock's
//! provider, so the only difference is the `Authorization` header; the two are alternated in
//! rounds (token, key, key, token, …) so that the machine's drift falls on both alike.
//!
//! - `all` in memory (the bench's usual configuration, `log_level = "warn"`): serial p50 and
//!   p99, c=64 req/s, then serial again once the key's 60-second rate window holds what the
//!   c=64 rounds admitted (its size is read from `x-ratelimit-remaining-requests`).
//! - gateway, router and worker processes over Redis: serial latency and Redis commands per
//!   request (`INFO commandstats` around each run — commands scripts run included — less what
//!   the idle cluster sends in as long), with the commands that changed.
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
        server: "token = \"bench-server-token\"\n",
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

/// One measure of both arms, pooled over their rounds.
pub struct Pair {
    pub token: Stats,
    pub key: Stats,
}

impl Pair {
    fn new() -> Pair {
        Pair {
            token: Stats::default(),
            key: Stats::default(),
        }
    }

    fn add(&mut self, arm: Arm, s: &Stats) {
        let pooled = match arm {
            Arm::Token => &mut self.token,
            Arm::Key => &mut self.key,
        };
        pooled.merge(s);
        pooled.elapsed += s.elapsed;
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
            let s = load::run_as(&d.url, body(false, 0), Shape::Serial { n }, 1, Some(arm.secret()));
            log(&line(d.mode, what, arm, &s));
            pair.add(arm, &s);
        }
    }
    pair
}

/// Runs both comparisons; `scale` < 1 shortens them.
pub fn run(bin_dir: &Path, scale: f64, threads: usize, log: &mut dyn FnMut(&str)) -> std::io::Result<GovReport> {
    let n = |n: usize| ((n as f64 * scale).ceil() as usize).max(10);
    let secs = ((5.0 * scale).ceil() as u64).max(1);
    let mut report = GovReport::default();
    let mock = Mock::start(bin_dir, 0, 20)?;

    // `all`, in memory.
    let d = start(Mode::AllMemory, bin_dir, &mock, log)?;
    // Warm up connections, caches and allocators; the key lightly, so that the serial rounds
    // start with a small rate window.
    let warm = Shape::Closed {
        concurrency: 16,
        secs: 1,
    };
    load::run_as(&d.url, body(false, 0), warm, threads, Some(TOKEN));
    load::run_as(&d.url, body(false, 0), Shape::Serial { n: 200 }, 1, Some(KEY));
    let serial = serial_rounds(&d, 4, n(500), SERIAL, log);
    let serial_window = probe(&d.url, KEY).window();
    let mut c64 = Pair::new();
    let mut c64_rounds = Vec::new();
    for i in 0..2 {
        for arm in Arm::order(i) {
            let shape = Shape::Closed { concurrency: 64, secs };
            let s = load::run_as(&d.url, body(false, 0), shape, threads, Some(arm.secret()));
            log(&line(d.mode, C64, arm, &s));
            c64_rounds.push((arm, s.rps()));
            c64.add(arm, &s);
        }
    }
    let after_window = probe(&d.url, KEY).window();
    log(&format!(
        "governance: the key's window holds {after_window:?} requests after c=64"
    ));
    let after = serial_rounds(&d, 2, n(500), "serial after c=64", log);
    report.memory = Some(InMemory {
        serial,
        serial_window,
        c64,
        c64_rounds,
        after,
        after_window,
    });
    drop(d);

    // The cluster over Redis: gateway, router, one worker.
    let d = start(Mode::Cluster, bin_dir, &mock, log)?;
    load::run_as(&d.url, body(false, 0), warm, threads, Some(TOKEN));
    load::run_as(&d.url, body(false, 0), Shape::Serial { n: 200 }, 1, Some(KEY));
    let url = d
        .redis_url()
        .ok_or_else(|| std::io::Error::other("the cluster has no Redis"))?;
    let idle = commands::idle_rate(&url, Duration::from_secs(2)).map_err(std::io::Error::other)?;
    let mut serial = Pair::new();
    let mut raw: BTreeMap<&str, (BTreeMap<String, f64>, u64)> = BTreeMap::new();
    for i in 0..2 {
        for arm in Arm::order(i) {
            let before = commands::snapshot(&url).map_err(std::io::Error::other)?;
            let s = load::run_as(
                &d.url,
                body(false, 0),
                Shape::Serial { n: n(1000) },
                1,
                Some(arm.secret()),
            );
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
            serial.add(arm, &s);
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
    report.cluster = Some(Cluster { serial, token, key });
    drop(d);
    drop(mock);
    Ok(report)
}

fn met(ok: bool) -> &'static str {
    if ok { "yes" } else { "no" }
}

/// The report section.
pub fn markdown(r: &GovReport, machine: &str) -> String {
    let mut s = String::from("\n## Governance: a virtual key with limits against `server.token`\n\n");
    let _ = writeln!(
        s,
        "Machine: {machine}\n\nThe same chat completion (model `bench`, not streamed) presented with `server.token` (no virtual key: no admission, but the request is still settled, since the request log is on by default) and with a virtual key with rpm, tpm and a budget far above what the run spends (an admission step before publishing, a settlement step at the end), to the same deployment, alternated in rounds (token, key, key, token, …); the mock's provider has a price in both. Errors are token / key.\n"
    );
    let _ = writeln!(
        s,
        "| deployment | measure | server.token | virtual key | key − token | target | met | errors |\n| --- | --- | ---: | ---: | ---: | --- | :---: | ---: |"
    );
    let window = |w: Option<u64>| w.map_or("?".to_owned(), |w| w.to_string());
    let latency = |s: &mut String, name: &str, what: &str, p: &Pair, target: Option<f64>| {
        for (q, label) in [(0.5, "p50"), (0.99, "p99")] {
            let (a, b) = (p.token.ms(q), p.key.ms(q));
            let (t, m) = match target.filter(|_| q == 0.5) {
                Some(t) => (format!("≤ +{t} ms"), met(b - a <= t)),
                None => ("—".to_owned(), "—"),
            };
            let _ = writeln!(
                s,
                "| {name} | {what} {label} ms | {a:.3} | {b:.3} | {:+.3} | {t} | {m} | {} |",
                b - a,
                p.errors()
            );
        }
    };
    if let Some(m) = &r.memory {
        let name = Mode::AllMemory.name();
        latency(
            &mut s,
            name,
            &format!("serial (key's window: {} requests)", window(m.serial_window)),
            &m.serial,
            Some(0.02),
        );
        let (a, b) = (m.c64.token.rps(), m.c64.key.rps());
        let _ = writeln!(
            s,
            "| {name} | c=64 req/s | {a:.0} | {b:.0} | × {:.2} | — | — | {} |",
            b / a.max(1e-9),
            m.c64.errors()
        );
        latency(
            &mut s,
            name,
            &format!("serial after c=64 (key's window: {} requests)", window(m.after_window)),
            &m.after,
            None,
        );
    }
    if let Some(c) = &r.cluster {
        let name = Mode::Cluster.name();
        latency(&mut s, name, "serial", &c.serial, None);
        let (a, b) = (c.token.per_request, c.key.per_request);
        let _ = writeln!(
            s,
            "| {name} | Redis commands per request (scripts' included) | {a:.1} | {b:.1} | {:+.1} | ≤ +2 | {} | {} |",
            b - a,
            met(b - a <= 2.0),
            c.serial.errors()
        );
        let evalsha = |x: &Count| x.by_command.get("evalsha").copied().unwrap_or(0.0);
        let (a, b) = (evalsha(&c.token), evalsha(&c.key));
        let _ = writeln!(
            s,
            "| {name} | of which EVALSHA (a script, one round trip) | {a:.2} | {b:.2} | {:+.2} | — | — | — |",
            b - a
        );
        let _ = writeln!(
            s,
            "\nRedis commands that changed (per request, serial, the cluster; 0.01 or more either way):\n\n| command | server.token | virtual key | change |\n| --- | ---: | ---: | ---: |"
        );
        let mut names: Vec<&String> = c.token.by_command.keys().chain(c.key.by_command.keys()).collect();
        names.sort();
        names.dedup();
        let mut rows: Vec<(&String, f64, f64)> = names
            .into_iter()
            .map(|k| {
                let get = |x: &Count| x.by_command.get(k).copied().unwrap_or(0.0);
                (k, get(&c.token), get(&c.key))
            })
            .filter(|(_, a, b)| (b - a).abs() >= 0.01)
            .collect();
        rows.sort_by(|x, y| (y.2 - y.1).total_cmp(&(x.2 - x.1)));
        for (k, a, b) in rows {
            let _ = writeln!(s, "| {k} | {a:.2} | {b:.2} | {:+.2} |", b - a);
        }
    }
    if let Some(m) = &r.memory {
        let rounds: Vec<String> = m
            .c64_rounds
            .iter()
            .map(|(arm, rps)| format!("{} {rps:.0}", arm.name()))
            .collect();
        let _ = writeln!(s, "\nc=64 rounds in order (req/s): {}.", rounds.join(", "));
    }
    for n in &r.notes {
        let _ = writeln!(s, "- {n}");
    }
    s
}
