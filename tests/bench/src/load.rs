//! The load generator: closed loops (c concurrent clients, back to back), a fixed rate
//! (latency measured from the scheduled send time, so a slow server cannot hide its queue),
//! and streaming (time to first byte and total). Client threads each run their own actix
//! System and awc client; histograms are merged at the end.

use std::cell::RefCell;
use std::fmt;
use std::rc::Rc;
use std::time::{Duration, Instant};

use bytes::Bytes;
use futures_util::StreamExt;
use hdrhistogram::Histogram;

/// How the load is offered.
#[derive(Debug, Clone, Copy)]
pub enum Shape {
    /// One request at a time, `n` requests.
    Serial { n: usize },
    /// `concurrency` clients back to back for `secs`.
    Closed { concurrency: usize, secs: u64 },
    /// `rps` requests per second for `secs`, whatever the answers do.
    Rate { rps: u64, secs: u64 },
    /// `n` requests sent at once, each once: `n` open at the same time.
    Burst { n: usize },
}

/// What one run measured (latencies in microseconds).
pub struct Stats {
    pub latency: Histogram<u64>,
    /// Time to the first body byte (streams).
    pub ttfb: Histogram<u64>,
    pub ok: u64,
    pub errors: u64,
    /// Errors by what went wrong.
    pub error_kinds: std::collections::BTreeMap<String, u64>,
    pub elapsed: Duration,
}

impl Default for Stats {
    fn default() -> Stats {
        Stats::new()
    }
}

impl Stats {
    fn new() -> Stats {
        Stats {
            latency: hist(),
            ttfb: hist(),
            ok: 0,
            errors: 0,
            error_kinds: std::collections::BTreeMap::new(),
            elapsed: Duration::ZERO,
        }
    }

    /// Records one request that succeeded.
    pub fn record(&mut self, ttfb: Duration, total: Duration) {
        self.ok += 1;
        let _ = self.ttfb.record(ttfb.as_micros().max(1) as u64);
        let _ = self.latency.record(total.as_micros().max(1) as u64);
    }

    /// Adds `o`'s requests (not its elapsed time) to these.
    pub fn merge(&mut self, o: &Stats) {
        let _ = self.latency.add(&o.latency);
        let _ = self.ttfb.add(&o.ttfb);
        self.ok += o.ok;
        self.errors += o.errors;
        for (k, n) in &o.error_kinds {
            *self.error_kinds.entry(k.clone()).or_default() += n;
        }
    }

    pub fn rps(&self) -> f64 {
        self.ok as f64 / self.elapsed.as_secs_f64().max(1e-9)
    }

    /// A latency quantile in milliseconds.
    pub fn ms(&self, q: f64) -> f64 {
        self.latency.value_at_quantile(q) as f64 / 1000.0
    }

    pub fn ttfb_ms(&self, q: f64) -> f64 {
        self.ttfb.value_at_quantile(q) as f64 / 1000.0
    }
}

fn hist() -> Histogram<u64> {
    // 1 µs .. 120 s, 3 significant digits; the bounds are constants, so this cannot fail.
    Histogram::new_with_bounds(1, 120_000_000, 3)
        .unwrap_or_else(|_| Histogram::new(3).unwrap_or_else(|_| unreachable!()))
}

/// Why one request did not count as ok. Its text is the kind it is counted under in
/// [`Stats::error_kinds`].
#[derive(Debug)]
enum Failure {
    /// The request could not be sent (or no answer came).
    Send(awc::error::SendRequestError),
    /// The answer's body broke off.
    Body(awc::error::PayloadError),
    /// Another status than 200, and what its error body says went wrong.
    Refused { status: u16, reason: String },
}

impl fmt::Display for Failure {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Failure::Send(e) => write!(f, "send: {e}"),
            Failure::Body(e) => write!(f, "body: {e}"),
            Failure::Refused { status, reason } => write!(f, "status {status} {reason}"),
        }
    }
}

impl std::error::Error for Failure {}

/// One request (with `auth` as its `Authorization` header, when given): status 200 and a
/// complete body count as ok; returns (ttfb, total), or what went wrong.
async fn one(
    client: &awc::Client,
    url: &str,
    body: &Bytes,
    auth: Option<&str>,
    sent: Instant,
) -> Result<(Duration, Duration), Failure> {
    let mut req = client.post(url).insert_header(("content-type", "application/json"));
    if let Some(auth) = auth {
        req = req.insert_header(("authorization", auth));
    }
    let mut resp = req.send_body(body.clone()).await.map_err(Failure::Send)?;
    let status = resp.status().as_u16();
    let mut first = None;
    let mut refusal = Vec::new();
    while let Some(chunk) = resp.next().await {
        let chunk = chunk.map_err(Failure::Body)?;
        first.get_or_insert_with(|| sent.elapsed());
        if status != 200 && refusal.len() < 4096 {
            refusal.extend_from_slice(&chunk);
        }
    }
    let total = sent.elapsed();
    if status != 200 {
        return Err(Failure::Refused {
            status,
            reason: refused_for(&refusal),
        });
    }
    Ok((first.unwrap_or(total), total))
}

/// What an error answer says went wrong (OpenAI's error shape): its type and its message with
/// each number masked as `#`, so that refusals for one reason count as one kind.
fn refused_for(body: &[u8]) -> String {
    let v: serde_json::Value = serde_json::from_slice(body).unwrap_or_default();
    let kind = v["error"]["type"].as_str().unwrap_or("(no error body)");
    let mut message = String::new();
    for c in v["error"]["message"].as_str().unwrap_or_default().chars().take(100) {
        match c.is_ascii_digit() {
            true if message.ends_with('#') => {}
            true => message.push('#'),
            false => message.push(c),
        }
    }
    format!("{kind}: {message}")
}

/// Runs `shape` against `url` with `body` on `threads` client threads.
pub fn run(url: &str, body: Bytes, shape: Shape, threads: usize) -> Stats {
    run_as(url, body, shape, threads, None)
}

/// [`run`] presenting `token` (`Authorization: Bearer {token}`) with every request.
pub fn run_as(url: &str, body: Bytes, shape: Shape, threads: usize, token: Option<&str>) -> Stats {
    let auth = token.map(|t| format!("Bearer {t}"));
    // awc's connector builds a TLS config: pick the crypto provider (once per process).
    let _ = rustls::crypto::ring::default_provider().install_default();
    let threads = match shape {
        Shape::Serial { .. } => 1,
        _ => threads.max(1),
    };
    let start = Instant::now();
    let handles: Vec<_> = (0..threads)
        .map(|t| {
            let (url, body, auth) = (url.to_owned(), body.clone(), auth.clone());
            std::thread::spawn(move || {
                actix_rt::System::new().block_on(thread_load(url, body, auth, shape, t, threads))
            })
        })
        .collect();
    let mut total = Stats::new();
    for h in handles {
        if let Ok(s) = h.join() {
            total.merge(&s);
        }
    }
    total.elapsed = start.elapsed();
    total
}

/// `n` clients, each sending a request and then another while `again` says so; what they
/// get goes into `stats`.
async fn clients(
    n: usize,
    client: &awc::Client,
    url: &str,
    body: &Bytes,
    auth: &Option<Rc<str>>,
    stats: &Rc<RefCell<Stats>>,
    again: impl Fn() -> bool + Clone + 'static,
) {
    let tasks: Vec<_> = (0..n)
        .map(|_| {
            let (client, url, body, auth, stats, again) = (
                client.clone(),
                url.to_owned(),
                body.clone(),
                auth.clone(),
                stats.clone(),
                again.clone(),
            );
            actix_rt::spawn(async move {
                loop {
                    let sent = Instant::now();
                    let r = one(&client, &url, &body, auth.as_deref(), sent).await;
                    record(&stats, r);
                    if !again() {
                        break;
                    }
                }
            })
        })
        .collect();
    for task in tasks {
        let _ = task.await;
    }
}

/// Counts one request's outcome.
fn record(stats: &Rc<RefCell<Stats>>, r: Result<(Duration, Duration), Failure>) {
    let mut s = stats.borrow_mut();
    match r {
        Ok((ttfb, total)) => s.record(ttfb, total),
        Err(e) => {
            s.errors += 1;
            *s.error_kinds.entry(e.to_string()).or_default() += 1;
        }
    }
}

async fn thread_load(url: String, body: Bytes, auth: Option<String>, shape: Shape, t: usize, threads: usize) -> Stats {
    let auth: Option<Rc<str>> = auth.map(Rc::from);
    let conns = match shape {
        Shape::Serial { .. } => 1,
        Shape::Closed { concurrency, .. } => concurrency.div_ceil(threads),
        Shape::Rate { .. } => 512,
        Shape::Burst { n } => n.div_ceil(threads),
    };
    let connector = awc::Connector::new()
        .limit(conns.max(1))
        .timeout(Duration::from_secs(5));
    let client = awc::Client::builder()
        .connector(connector)
        .timeout(Duration::from_secs(120))
        .finish();
    let stats = Rc::new(RefCell::new(Stats::new()));
    match shape {
        Shape::Serial { n } => {
            for _ in 0..n {
                let sent = Instant::now();
                let r = one(&client, &url, &body, auth.as_deref(), sent).await;
                record(&stats, r);
            }
        }
        Shape::Closed { concurrency, secs } => {
            let until = Instant::now() + Duration::from_secs(secs);
            let mine = concurrency / threads + usize::from(t < concurrency % threads);
            clients(mine, &client, &url, &body, &auth, &stats, move || {
                Instant::now() < until
            })
            .await;
        }
        Shape::Burst { n } => {
            let mine = n / threads + usize::from(t < n % threads);
            clients(mine, &client, &url, &body, &auth, &stats, || false).await;
        }
        Shape::Rate { rps, secs } => {
            let per_thread = (rps as f64 / threads as f64).max(1.0);
            let interval = Duration::from_secs_f64(1.0 / per_thread);
            let start = Instant::now() + interval.mul_f64(t as f64 / threads as f64);
            let n = (per_thread * secs as f64) as u64;
            let mut tasks = Vec::with_capacity(n as usize);
            for i in 0..n {
                let due = start + interval.mul_f64(i as f64);
                tokio::time::sleep_until(due.into()).await;
                let (client, url, body, auth, stats) =
                    (client.clone(), url.clone(), body.clone(), auth.clone(), stats.clone());
                tasks.push(actix_rt::spawn(async move {
                    // Latency counts from when the request was due, not when it went out.
                    let r = one(&client, &url, &body, auth.as_deref(), due).await;
                    record(&stats, r);
                }));
            }
            for task in tasks {
                let _ = tokio::time::timeout(Duration::from_secs(30), task).await;
            }
        }
    }
    Rc::try_unwrap(stats).map(RefCell::into_inner).unwrap_or_else(|rc| {
        let mut s = Stats::new();
        s.merge(&rc.borrow());
        s
    })
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]
    use super::refused_for;

    #[test]
    fn refusals_for_one_reason_count_as_one_kind() {
        let a = br#"{"error":{"type":"overloaded","message":"The cluster is overloaded: 10012 requests are queued"}}"#;
        let b = br#"{"error":{"type":"overloaded","message":"The cluster is overloaded: 9999 requests are queued"}}"#;
        assert_eq!(
            refused_for(a),
            "overloaded: The cluster is overloaded: # requests are queued"
        );
        assert_eq!(refused_for(a), refused_for(b));
        assert_eq!(refused_for(b"<html>bad gateway</html>"), "(no error body): ");
    }
}
