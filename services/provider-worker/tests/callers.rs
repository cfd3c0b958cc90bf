//! The dead-caller watch against real heartbeats: a caller that stops beating is gone within
//! the worst case (2.5 s, `src/callers.rs`) on both stores; a Redis restarted empty, while a
//! caller is slow to beat again, declares nobody dead.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::print_stderr)]

use std::sync::Arc;
use std::time::{Duration, Instant};

use llmr_store::{Alive, HEARTBEAT_EVERY, Store};
use llmr_testkit::RedisServer;
use llmr_worker::callers::{Callers, Watching};

/// A store on `redis` under `prefix`, with connections of its own (as another process has).
fn redis_store(redis: &RedisServer, prefix: &str) -> Store {
    let conns = Arc::new(llmr_bus::RedisConns::new(
        llmr_bus::redis_pool(&redis.url(), 4).unwrap(),
    ));
    Store::redis(conns, prefix)
}

/// A worker's watch over `store`, beating as `worker/default:w1` itself.
fn worker(store: &Store) -> (Callers, Watching, llmr_store::TaskGuard) {
    let me = Alive {
        service: "worker".into(),
        instance: "default:w1".into(),
    };
    let beat = store.keep_alive(&me.service, &me.instance, HEARTBEAT_EVERY);
    let (callers, task) = Callers::watch(store.clone(), Some(me));
    (callers, Watching(task), beat)
}

/// Waits up to `within` for the watch to say whether `gw-1` is gone as `want`.
async fn until(callers: &Callers, want: bool, within: Duration) -> Option<Duration> {
    let t = Instant::now();
    while t.elapsed() < within {
        if callers.gone("gw-1") == want {
            return Some(t.elapsed());
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    None
}

/// A gateway beats, is seen, then dies (its beats stop); `until_gone` resolves within 2.5 s
/// and a bit.
async fn a_caller_that_stops_beating_is_gone_within_the_worst_case(worker_store: Store, gateway_store: Store) {
    let (callers, _watching, _beat) = worker(&worker_store);
    let gateway = gateway_store.keep_alive("gateway", "gw-1", HEARTBEAT_EVERY);
    // Seen alive: give the watch a few reads.
    tokio::time::sleep(Duration::from_millis(1200)).await;
    assert!(!callers.gone("gw-1"));
    assert!(!callers.gone("gw-1-loop"));
    drop(gateway);
    let died = Instant::now();
    tokio::time::timeout(Duration::from_secs(4), callers.until_gone("gw-1-loop"))
        .await
        .expect("gone within 4 s");
    let took = died.elapsed();
    eprintln!("a caller that stopped beating was gone {took:?} later");
    assert!(took < Duration::from_millis(3000), "{took:?}");
}

#[actix_rt::test]
async fn a_caller_that_stops_beating_is_gone_within_the_worst_case_memory() {
    let store = Store::memory();
    a_caller_that_stops_beating_is_gone_within_the_worst_case(store.clone(), store).await;
}

#[actix_rt::test]
async fn a_caller_that_stops_beating_is_gone_within_the_worst_case_redis() {
    let redis = RedisServer::start();
    let prefix = llmr_testkit::unique_prefix("gone");
    a_caller_that_stops_beating_is_gone_within_the_worst_case(
        redis_store(&redis, &prefix),
        redis_store(&redis, &prefix),
    )
    .await;
}

/// Redis restarts empty while the gateway is slow to beat again (its beats resume 3 s
/// later): a new heartbeat epoch, so nobody is declared dead meanwhile.
#[actix_rt::test]
async fn a_redis_restarted_empty_declares_a_slow_caller_alive() {
    let mut redis = RedisServer::start();
    let prefix = llmr_testkit::unique_prefix("restart");
    let (worker_store, gateway_store) = (redis_store(&redis, &prefix), redis_store(&redis, &prefix));
    let (callers, _watching, _beat) = worker(&worker_store);
    let gateway = gateway_store.keep_alive("gateway", "gw-1", HEARTBEAT_EVERY);
    tokio::time::sleep(Duration::from_millis(1200)).await;
    drop(gateway);
    redis.restart();
    // The worker beats and reads again at once; the gateway stays away for 3 s.
    assert_eq!(
        until(&callers, true, Duration::from_secs(3)).await,
        None,
        "declared dead while Redis had lost its beat"
    );
    let _gateway = gateway_store.keep_alive("gateway", "gw-1", HEARTBEAT_EVERY);
    assert_eq!(until(&callers, true, Duration::from_secs(2)).await, None);
}
