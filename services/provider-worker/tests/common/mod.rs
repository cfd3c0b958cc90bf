//! The fixture of the worker's job tests: a `JobCtx` over the providers of a TOML snippet,
//! and one job run with a given plan, its reply frames collected.
#![allow(dead_code, clippy::unwrap_used, clippy::expect_used)]

use std::rc::Rc;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use bytes::Bytes;
use llmr_bus::{Bus, Delivery};
use llmr_protocol::{Attempt, Envelope, Frame, FrameKind, Kind, Meta, Plan, now_ms};
use llmr_store::{Breaker, Store};
use llmr_worker::job::{self, JobCtx, ProviderRt};

/// The store of a test: in memory, or on `redis` under a fresh prefix named after `what`.
pub fn store(redis: Option<&llmr_testkit::RedisServer>, what: &str) -> Store {
    match redis {
        None => Store::memory(),
        Some(r) => {
            let conns = Arc::new(llmr_bus::RedisConns::new(llmr_bus::redis_pool(&r.url(), 4).unwrap()));
            Store::redis(conns, &llmr_testkit::unique_prefix(what))
        }
    }
}

/// Jobs run against the providers of `toml` with `store`; every circuit opens at the first
/// failure and stays open a minute.
pub fn ctx(toml: &str, store: Store, lease_ttl_ms: u64, client: awc::Client) -> Rc<JobCtx> {
    let path = std::env::temp_dir().join(format!(
        "llmr-jobs-{}-{}.toml",
        std::process::id(),
        uuid::Uuid::now_v7()
    ));
    std::fs::write(&path, toml).unwrap();
    let s = llmr_config::load_from(Some(&path), Default::default()).unwrap();
    let _ = std::fs::remove_file(path);
    let providers = s
        .providers
        .iter()
        .map(|p| (p.name.clone(), ProviderRt::new(p.clone())))
        .collect();
    Rc::new(JobCtx {
        bus: Bus::memory(),
        store,
        client,
        providers,
        max_response_bytes: 1 << 20,
        breaker: Breaker {
            failure_threshold: 1,
            failure_window_ms: 60_000,
            recovery_ms: 60_000,
            probe_ttl_ms: 60_000,
        },
        default_cooldown_ms: 1000,
        cache: s.cache.clone(),
        lease_ttl_ms,
        callers: None,
        usage: job::UsageGuard::new(s.degraded.usage),
        latency_sample: llmr_bus::conns::EveryPerKey::new(job::LATENCY_SAMPLE_EVERY),
    })
}

/// Runs one job of `attempts` (as a router planned them); its frames and how long it took.
pub async fn run(ctx: &Rc<JobCtx>, attempts: Vec<Attempt>, stream: bool) -> (Vec<Frame>, Duration) {
    let got = Arc::new(Mutex::new(Vec::new()));
    let sink = got.clone();
    let _sub = ctx
        .bus
        .subscribe_replies("r", Arc::new(move |f: Frame| sink.lock().unwrap().push(f)));
    let body = format!(r#"{{"model":"m","stream":{stream},"messages":[{{"role":"user","content":"hello there"}}]}}"#);
    let meta = Meta {
        model: "m".into(),
        stream,
        plan: Some(Plan {
            pool: "default".into(),
            attempts,
            wait_ms: 0,
            cache: None,
        }),
        ..Meta::default()
    };
    let env = Envelope::new(
        Kind::Job,
        "r",
        now_ms() + 10_000,
        Default::default(),
        Bytes::from(body),
        meta,
    );
    let d = Delivery {
        entry: "0-1".into(),
        envelope: env,
        reclaimed: false,
    };
    let (_keep, cancel) = tokio::sync::oneshot::channel();
    let t = Instant::now();
    job::run(ctx.clone(), d, cancel).await;
    let took = t.elapsed();
    tokio::time::sleep(Duration::from_millis(20)).await;
    let frames = got.lock().unwrap().clone();
    (frames, took)
}

/// How a job ended: its last frame's kind and the status (200 unless an error).
pub fn outcome(frames: &[Frame]) -> (FrameKind, u16) {
    let last = frames.last().expect("the job answered");
    match last.kind {
        FrameKind::Error => (FrameKind::Error, last.as_error().status()),
        k => (k, 200),
    }
}
