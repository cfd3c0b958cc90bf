//! Redis dropping every client connection (`CLIENT KILL`, as a restart does): the next
//! operations on the process's cached connections still succeed — a command whose connection
//! was already dead was never sent, and is sent again on a fresh one.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

use llmr_bus::{RedisConns, redis_pool};
use llmr_testkit::RedisServer;

/// Sets `k0`..`k7` to 0..7, through (and so connecting) every cached slot.
async fn fill_every_slot(conns: &RedisConns) {
    for i in 0..8 {
        let mut c = conns.get().await.unwrap();
        redis::cmd("SET")
            .arg(format!("k{i}"))
            .arg(i)
            .query_async::<()>(&mut c)
            .await
            .unwrap();
    }
}

/// Redis drops every client connection but `admin`'s (as a restart does).
async fn drop_every_connection(admin: &mut redis::aio::MultiplexedConnection) {
    let _: i64 = redis::cmd("CLIENT")
        .arg("KILL")
        .arg("TYPE")
        .arg("normal")
        .arg("SKIPME")
        .arg("yes")
        .query_async(admin)
        .await
        .unwrap();
}

#[tokio::test]
async fn operations_survive_redis_dropping_every_connection() {
    let server = RedisServer::start();
    let conns = RedisConns::new(redis_pool(&server.url(), 4).unwrap());
    fill_every_slot(&conns).await;
    for round in 0..3 {
        let mut admin = redis::Client::open(server.url())
            .unwrap()
            .get_multiplexed_async_connection()
            .await
            .unwrap();
        drop_every_connection(&mut admin).await;
        // Let every connection's driver see its socket close.
        tokio::time::sleep(std::time::Duration::from_millis(100)).await;
        for i in 0..8 {
            let mut c = conns.get().await.unwrap();
            let v: i64 = redis::cmd("GET")
                .arg(format!("k{i}"))
                .query_async(&mut c)
                .await
                .unwrap_or_else(|e| panic!("round {round}, operation {i}: {e}"));
            assert_eq!(v, i);
        }
    }
}

/// Connections Redis has accepted since it started.
async fn connections_received(admin: &mut redis::aio::MultiplexedConnection) -> u64 {
    let info: String = redis::cmd("INFO").arg("stats").query_async(admin).await.unwrap();
    info.lines()
        .find_map(|l| l.strip_prefix("total_connections_received:"))
        .unwrap()
        .trim()
        .parse()
        .unwrap()
}

/// After a drop, many operations at once find their connections dead together: one of them
/// reconnects each slot and the others wait for it, instead of each making (and the pool
/// queueing) a connection of its own — under load that herd ran the pool out and its waits
/// into 503s.
#[tokio::test]
async fn operations_at_once_after_a_drop_make_one_connection_per_slot() {
    let mut server = RedisServer::start();
    let conns = RedisConns::new(redis_pool(&server.url(), 16).unwrap());
    fill_every_slot(&conns).await;
    let mut admin = redis::Client::open(server.url())
        .unwrap()
        .get_multiplexed_async_connection()
        .await
        .unwrap();
    for round in 0..3 {
        drop_every_connection(&mut admin).await;
        tokio::time::sleep(std::time::Duration::from_millis(100)).await;
        let before = connections_received(&mut admin).await;
        let ops = (0..200).map(|i| {
            let conns = &conns;
            async move {
                let mut c = conns.get().await.map_err(|e| e.to_string())?;
                redis::cmd("GET")
                    .arg(format!("k{}", i % 8))
                    .query_async::<i64>(&mut c)
                    .await
                    .map_err(|e| e.to_string())
            }
        });
        let got = futures_util::future::join_all(ops).await;
        let failed: Vec<String> = got.into_iter().filter_map(Result::err).collect();
        assert!(
            failed.is_empty(),
            "round {round}: {} of 200 failed: {:?}",
            failed.len(),
            &failed[..failed.len().min(3)]
        );
        let made = connections_received(&mut admin).await - before;
        assert!(made <= 4, "round {round}: {made} connections made for 4 slots");
    }
    // Redis gone: the operations waiting for a slot's reconnection fail with it, at once,
    // not one connect timeout after another.
    server.kill();
    let started = std::time::Instant::now();
    let ops = (0..200).map(|_| async {
        let mut c = conns.get().await.map_err(|e| e.to_string())?;
        redis::cmd("GET")
            .arg("k0")
            .query_async::<i64>(&mut c)
            .await
            .map_err(|e| e.to_string())
    });
    let got = futures_util::future::join_all(ops).await;
    let took = started.elapsed();
    assert!(got.iter().all(Result::is_err), "Redis is gone");
    assert!(
        took < std::time::Duration::from_secs(2),
        "all 200 failed within {took:?}"
    );
}
