//! The overload run (`llmr-bench --overload`): a pool that serves 20 requests a second — one
//! worker with `[worker] max_in_flight = 4`, a mock upstream answering in 200 ms — offered 400
//! chat completions by 200 concurrent clients (each sends its next as soon as one is
//! answered or refused) with a 10 s client timeout, against `llmrouter all` in memory at the
//! default configuration, then the same with `server.max_queue_wait_ms = 0` (shedding by
//! waiting time off; the queue-length bound alone). Before each run the pool is warmed up
//! (a few requests, so its latency is known and the gateway has placed the model in it).
//! Reports answered, refused and timed-out counts, the longest wait of an answered request,
//! the slowest refusal, and p50/p99 of the answered.

use std::cell::RefCell;
use std::fmt::Write as _;
use std::path::Path;
use std::rc::Rc;
use std::time::{Duration, Instant};

use bytes::Bytes;
use hdrhistogram::Histogram;

use llmr_testkit::{ProcessCluster, TestConfig};

use crate::procs::Mock;

/// Requests offered, clients at once, the client's timeout.
const REQUESTS: usize = 400;
const CLIENTS: usize = 200;
const CLIENT_TIMEOUT: Duration = Duration::from_secs(10);

/// One run's figures (times in ms).
#[derive(Debug, Clone, Default)]
pub struct Run {
    /// `server.max_queue_wait_ms` as configured (None: the default).
    pub max_queue_wait_ms: Option<u64>,
    pub answered: u64,
    /// 503 `overloaded`.
    pub refused: u64,
    /// No answer within the client's timeout.
    pub timed_out: u64,
    /// Other statuses and errors.
    pub other: u64,
    pub longest_answered_ms: f64,
    pub slowest_refusal_ms: f64,
    pub p50_ms: f64,
    pub p99_ms: f64,
    pub elapsed_s: f64,
}

fn config(mock: &Mock, max_queue_wait_ms: Option<u64>) -> String {
    let server = max_queue_wait_ms.map_or(String::new(), |ms| format!("[server]\nmax_queue_wait_ms = {ms}\n"));
    format!(
        "{server}[worker]\nmax_in_flight = 4\n[[providers]]\nname = \"mock\"\ntype = \"openai\"\nbase_url = \"{}\"\nmodels = [\"bench\"]\n",
        mock.base_url()
    )
}

/// Both runs: the default bound, then the bound off.
pub fn run(bin_dir: &Path, log: &mut dyn FnMut(&str)) -> std::io::Result<Vec<Run>> {
    let mock = Mock::start(bin_dir, 200, 1)?;
    let mut out = Vec::new();
    for bound in [None, Some(0)] {
        let cfg = TestConfig::new(config(&mock, bound));
        let mut c = ProcessCluster::new(&bin_dir.join("llmrouter"), cfg, false);
        c.spawn("llmrouter all", &["all"]);
        if !c.listening(Duration::from_secs(30)) {
            return Err(std::io::Error::other("llmrouter all did not listen"));
        }
        let url = c.url("/v1/chat/completions");
        let r = actix_rt::System::new().block_on(one_run(url, bound))?;
        log(&format!(
            "overload (max_queue_wait_ms {}): {} answered, {} refused, {} timed out, longest answered {:.0} ms, slowest refusal {:.1} ms",
            bound.map_or("default".to_owned(), |b| b.to_string()),
            r.answered,
            r.refused,
            r.timed_out,
            r.longest_answered_ms,
            r.slowest_refusal_ms
        ));
        out.push(r);
    }
    Ok(out)
}

fn body(i: usize) -> Bytes {
    Bytes::from(format!(
        r#"{{"model":"bench","messages":[{{"role":"user","content":"overload {i}"}}]}}"#
    ))
}

/// What one request got: its status (None: timed out or failed) and time.
type Outcome = (Option<u16>, Duration);

async fn send(client: &awc::Client, url: &str, i: usize) -> Outcome {
    let t = Instant::now();
    let sent = client
        .post(url)
        .insert_header(("content-type", "application/json"))
        .send_body(body(i));
    let status = match sent.await {
        Ok(mut resp) => match resp.body().limit(1 << 20).await {
            Ok(_) => Some(resp.status().as_u16()),
            Err(_) => None,
        },
        Err(_) => None,
    };
    (status, t.elapsed())
}

async fn warm_up(client: &awc::Client, url: &str) -> std::io::Result<()> {
    let until = Instant::now() + Duration::from_secs(30);
    while send(client, url, 0).await.0 != Some(200) {
        if Instant::now() > until {
            return Err(std::io::Error::other("llmrouter never answered"));
        }
        actix_rt::time::sleep(Duration::from_millis(100)).await;
    }
    for _ in 0..4 {
        let four = (0..4).map(|i| send(client, url, i));
        futures_util::future::join_all(four).await;
    }
    // The gateway places the models it saw in their pools once a second.
    actix_rt::time::sleep(Duration::from_millis(1500)).await;
    Ok(())
}

async fn one_run(url: String, bound: Option<u64>) -> std::io::Result<Run> {
    let connector = awc::Connector::new().limit(CLIENTS * 2).timeout(Duration::from_secs(5));
    let client = awc::Client::builder()
        .connector(connector)
        .timeout(CLIENT_TIMEOUT)
        .finish();
    warm_up(&client, &url).await?;
    let next = Rc::new(RefCell::new(0usize));
    let outcomes: Rc<RefCell<Vec<Outcome>>> = Rc::default();
    let t = Instant::now();
    let clients = (0..CLIENTS).map(|_| {
        let (client, url, next, outcomes) = (client.clone(), url.clone(), next.clone(), outcomes.clone());
        async move {
            loop {
                let i = {
                    let mut n = next.borrow_mut();
                    *n += 1;
                    *n
                };
                if i > REQUESTS {
                    break;
                }
                let o = send(&client, &url, i).await;
                outcomes.borrow_mut().push(o);
            }
        }
    });
    futures_util::future::join_all(clients).await;
    let elapsed = t.elapsed();
    let outcomes = outcomes.take();
    summarize(&outcomes, bound, elapsed)
}

fn summarize(outcomes: &[Outcome], bound: Option<u64>, elapsed: Duration) -> std::io::Result<Run> {
    let mut hist = Histogram::<u64>::new(3).map_err(|e| std::io::Error::other(format!("{e:?}")))?;
    let ms = |d: Duration| d.as_secs_f64() * 1000.0;
    let mut r = Run {
        max_queue_wait_ms: bound,
        elapsed_s: elapsed.as_secs_f64(),
        ..Run::default()
    };
    for (status, took) in outcomes {
        match status {
            Some(200) => {
                r.answered += 1;
                r.longest_answered_ms = r.longest_answered_ms.max(ms(*took));
                let _ = hist.record(took.as_micros() as u64);
            }
            Some(503) => {
                r.refused += 1;
                r.slowest_refusal_ms = r.slowest_refusal_ms.max(ms(*took));
            }
            None if *took >= CLIENT_TIMEOUT => r.timed_out += 1,
            _ => r.other += 1,
        }
    }
    r.p50_ms = hist.value_at_quantile(0.5) as f64 / 1000.0;
    r.p99_ms = hist.value_at_quantile(0.99) as f64 / 1000.0;
    Ok(r)
}

/// The report's section.
pub fn markdown(runs: &[Run], machine: &str) -> String {
    let mut s = String::from("\n## Overload: shedding by waiting time\n\n");
    let _ = writeln!(
        s,
        "Machine: {machine}\n\n`llmrouter all` in memory at the default configuration but `[worker] max_in_flight = 4`; a mock upstream answering in 200 ms (the pool serves 20 requests a second); after a warm-up, {REQUESTS} chat completions from {CLIENTS} concurrent clients (each sends its next as soon as one is answered or refused), client timeout {} s. Times in ms.\n",
        CLIENT_TIMEOUT.as_secs()
    );
    let _ = writeln!(
        s,
        "| `server.max_queue_wait_ms` | answered | refused (503) | timed out | other | longest answered | slowest refusal | answered p50 | answered p99 | run (s) |\n| --- | ---: | ---: | ---: | ---: | ---: | ---: | ---: | ---: | ---: |"
    );
    for r in runs {
        let _ = writeln!(
            s,
            "| {} | {} | {} | {} | {} | {:.0} | {:.1} | {:.0} | {:.0} | {:.1} |",
            r.max_queue_wait_ms
                .map_or("5000 (default)".to_owned(), |b| format!("{b} (off)")),
            r.answered,
            r.refused,
            r.timed_out,
            r.other,
            r.longest_answered_ms,
            r.slowest_refusal_ms,
            r.p50_ms,
            r.p99_ms,
            r.elapsed_s
        );
    }
    s
}
