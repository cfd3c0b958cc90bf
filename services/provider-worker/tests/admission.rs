//! Admission that cannot race, on both store backends: a job whose plan was made before a
//! 429 or an open circuit was recorded never reaches that key or target (the check is part
//! of taking the lease), and moves on to the next attempt; leases are renewed while a call
//! runs and a dead holder's lease is gone within `lease_ttl_ms`; a success on a clean health
//! record is written only for a sampled latency.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

mod common;

use std::rc::Rc;
use std::time::Duration;

use common::outcome;
use llmr_protocol::{Attempt, Frame, FrameKind, now_ms};
use llmr_store::{Store, key_id, target_id};
use llmr_testkit::{Behavior, MockUpstream, RedisServer};
use llmr_worker::job::JobCtx;

fn ctx(mock: &MockUpstream, store: Store, lease_ttl_ms: u64) -> Rc<JobCtx> {
    let toml = llmr_testkit::provider_entry("up", &mock.base_url(), &["m"], &["key-a", "key-b"]);
    common::ctx(
        &toml,
        store,
        lease_ttl_ms,
        awc::Client::builder().timeout(Duration::from_secs(10)).finish(),
    )
}

async fn run(ctx: &Rc<JobCtx>, attempts: Vec<Attempt>) -> Vec<Frame> {
    common::run(ctx, attempts, false).await.0
}

fn on_key(k: u32) -> Attempt {
    Attempt {
        key: Some(k),
        ..Attempt::new("up", "m")
    }
}

async fn a_stale_plan_never_reaches_a_key_or_target_that_failed_since(redis: bool) {
    let server = redis.then(RedisServer::start);
    let mock = MockUpstream::start(&["m"]);
    let ctx = ctx(&mock, common::store(server.as_ref(), "admission"), 10_000);
    // Key a answered 429 (recorded) after the router planned a, then b.
    ctx.store.cooldown(&key_id("up", 0), now_ms() + 30_000).await.unwrap();
    let frames = run(&ctx, vec![on_key(0), on_key(1)]).await;
    assert_eq!(outcome(&frames), (FrameKind::End, 200));
    let seen: Vec<Option<String>> = mock.requests().into_iter().map(|r| r.authorization).collect();
    assert_eq!(
        seen,
        vec![Some("Bearer key-b".to_string())],
        "only the key that is not cooling"
    );
    // Both keys cooling: nothing is sent, the client gets 429 with the time left.
    ctx.store.cooldown(&key_id("up", 1), now_ms() + 30_000).await.unwrap();
    let frames = run(&ctx, vec![on_key(0), on_key(1)]).await;
    assert_eq!(outcome(&frames), (FrameKind::Error, 429));
    assert!(
        frames
            .last()
            .unwrap()
            .as_error()
            .retry_after_s()
            .is_some_and(|s| (25..=30).contains(&s)),
        "{:?}",
        frames.last().unwrap().as_error()
    );
    assert_eq!(mock.request_count(), 1, "nothing more reached the upstream");
    // The target's circuit opened after planning: a non-probe attempt does not go.
    ctx.store
        .record_failure(&target_id("up", "m"), &ctx.breaker)
        .await
        .unwrap();
    let frames = run(&ctx, vec![Attempt::new("up", "m")]).await;
    assert_eq!(outcome(&frames), (FrameKind::Error, 503));
    assert_eq!(mock.request_count(), 1);
    assert_eq!(
        ctx.store.loads(&["up/m".to_string()]).await.unwrap(),
        vec![0],
        "no lease left behind"
    );
}

async fn leases_are_renewed_while_a_call_runs(redis: bool) {
    let server = redis.then(RedisServer::start);
    let mock = MockUpstream::start(&["m"]);
    mock.set_default(Behavior::latency(1200));
    let ctx = ctx(&mock, common::store(server.as_ref(), "admission"), 300);
    let probe = {
        let store = ctx.store.clone();
        async move {
            // Well past the 300 ms a lease lives without renewal.
            tokio::time::sleep(Duration::from_millis(900)).await;
            store.loads(&["up/m".to_string()]).await.unwrap()
        }
    };
    let (frames, load) = tokio::join!(run(&ctx, vec![on_key(0)]), probe);
    assert_eq!(outcome(&frames), (FrameKind::End, 200));
    assert_eq!(load, vec![1], "the running call's lease was renewed");
    assert_eq!(
        ctx.store.loads(&["up/m".to_string()]).await.unwrap(),
        vec![0],
        "released at the end"
    );
    // A holder that stops renewing (a dead worker): its load is gone within the lease's life.
    assert!(
        ctx.store
            .acquire_lease("up/m", "dead-worker-job", 300, 0)
            .await
            .unwrap()
    );
    tokio::time::sleep(Duration::from_millis(350)).await;
    assert_eq!(ctx.store.loads(&["up/m".to_string()]).await.unwrap(), vec![0]);
}

macro_rules! both {
    ($name:ident) => {
        mod $name {
            #[actix_rt::test]
            async fn memory() {
                tokio::task::LocalSet::new().run_until(super::$name(false)).await;
            }
            #[actix_rt::test]
            async fn redis() {
                tokio::task::LocalSet::new().run_until(super::$name(true)).await;
            }
        }
    };
}

both!(a_stale_plan_never_reaches_a_key_or_target_that_failed_since);
both!(leases_are_renewed_while_a_call_runs);

async fn a_success_on_a_clean_record_is_written_only_for_a_sampled_latency(redis: bool) {
    // Admission reports the target's record clean (closed, no failures, no probe): a success
    // would change nothing in it but the latency average, which is written at most every
    // `LATENCY_SAMPLE_EVERY` per target and process.
    let server = redis.then(RedisServer::start);
    let mock = MockUpstream::start(&["m"]);
    let ctx = ctx(&mock, common::store(server.as_ref(), "admission"), 10_000);
    let latency = async || {
        let h = ctx.store.health(&[target_id("up", "m")]).await.unwrap();
        h[0].latency_ms
    };
    assert_eq!(outcome(&run(&ctx, vec![on_key(0)]).await), (FrameKind::End, 200));
    let first = latency().await;
    assert!(first.is_some(), "the first success of a target is written");
    for _ in 0..3 {
        assert_eq!(outcome(&run(&ctx, vec![on_key(0)]).await), (FrameKind::End, 200));
    }
    assert_eq!(
        latency().await,
        first,
        "successes within the interval leave the record as it was"
    );
    tokio::time::sleep(llmr_worker::job::LATENCY_SAMPLE_EVERY + Duration::from_millis(50)).await;
    assert_eq!(outcome(&run(&ctx, vec![on_key(0)]).await), (FrameKind::End, 200));
    let sampled = latency().await;
    assert!(
        sampled.is_some() && sampled != first,
        "the next sample averaged in: {first:?} → {sampled:?}"
    );
    assert_eq!(mock.request_count(), 5);
}
both!(a_success_on_a_clean_record_is_written_only_for_a_sampled_latency);
