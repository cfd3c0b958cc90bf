//! A worker out of open files: the upstream's connection cannot be made, which is this
//! process's limit and not the upstream's fault. The client gets 503 `overloaded` with
//! `Retry-After`, nothing reaches the upstream, and the target's health record is left as it
//! was (with every circuit opening at the first failure here, a failure counted against it
//! would refuse the next request). Both backends, one after the other in one test: the open
//! files limit is the process's, so nothing else may run beside it.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

mod common;

use std::os::fd::AsRawFd;
use std::time::Duration;

use common::outcome;
use llmr_protocol::{Attempt, FrameKind};
use llmr_store::{Circuit, target_id};
use llmr_testkit::{MockUpstream, RedisServer};

/// Runs `f` with the open files limit at the lowest free descriptor: no new file or socket can
/// be opened by this process until it returns.
async fn without_new_files<T>(f: impl std::future::Future<Output = T>) -> T {
    let (soft, hard) = rlimit::Resource::NOFILE.get().unwrap();
    let lowest = std::fs::File::open("/dev/null").unwrap().as_raw_fd() as u64;
    rlimit::Resource::NOFILE.set(lowest, hard).unwrap();
    let out = f.await;
    rlimit::Resource::NOFILE.set(soft, hard).unwrap();
    out
}

async fn out_of_files(redis: bool) {
    let server = redis.then(RedisServer::start);
    let mock = MockUpstream::start(&["m"]);
    let warm = MockUpstream::start(&["m"]);
    let toml = format!(
        "{}{}",
        llmr_testkit::provider_entry("up", &mock.base_url(), &["m"], &[]),
        llmr_testkit::provider_entry("warm", &warm.base_url(), &["m"], &[])
    );
    let client = awc::Client::builder().timeout(Duration::from_secs(10)).finish();
    let ctx = common::ctx(&toml, common::store(server.as_ref(), "open-files"), 10_000, client);
    let target = target_id("up", "m");
    // A job on another upstream first: the store's connections are made, and both mocks
    // serve, before the limit; only the connection to `up` is new when the limit holds.
    let (frames, _) = common::run(&ctx, vec![Attempt::new("warm", "m")], false).await;
    assert_eq!(outcome(&frames), (FrameKind::End, 200));
    for _ in 0..8 {
        // The store's connections are made as its operations take turns over them: all of them.
        ctx.store.health(std::slice::from_ref(&target)).await.unwrap();
    }
    let up = awc::Client::default()
        .get(format!("{}/models", mock.base_url()))
        .send()
        .await;
    assert_eq!(up.map(|r| r.status().as_u16()).ok(), Some(200), "the mock serves");

    let (frames, _) = without_new_files(common::run(&ctx, vec![Attempt::new("up", "m")], false)).await;
    let backend = if redis { "redis" } else { "memory" };
    assert_eq!(outcome(&frames), (FrameKind::Error, 503), "{backend}");
    let error = frames.last().unwrap().as_error();
    assert_eq!(error.retry_after_s(), Some(1), "{backend}: {error:?}");
    assert!(format!("{error:?}").contains("open files"), "{backend}: {error:?}");
    assert_eq!(mock.request_count(), 0, "{backend}: nothing reached the upstream");
    let h = ctx.store.health(std::slice::from_ref(&target)).await.unwrap();
    assert_eq!(
        (h[0].circuit, h[0].failures),
        (Circuit::Closed, 0),
        "{backend}: {:?}",
        h[0]
    );

    // With files again, the same target serves at once: its circuit never opened.
    let (frames, _) = common::run(&ctx, vec![Attempt::new("up", "m")], false).await;
    assert_eq!(outcome(&frames), (FrameKind::End, 200), "{backend}");
    assert_eq!(mock.request_count(), 1, "{backend}");
}

#[actix_rt::test]
async fn a_worker_out_of_open_files_answers_503_and_leaves_the_circuit_closed() {
    out_of_files(false).await;
    out_of_files(true).await;
}
