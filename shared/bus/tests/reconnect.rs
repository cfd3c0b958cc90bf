//! Redis dropping every client connection (`CLIENT KILL`, as a restart does): the next
//! operations on the process's cached connections still succeed — a command whose connection
//! was already dead was never sent, and is sent again on a fresh one.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

use llmr_bus::{RedisConns, redis_pool};
use llmr_testkit::RedisServer;

#[tokio::test]
async fn operations_survive_redis_dropping_every_connection() {
    let server = RedisServer::start();
    let conns = RedisConns::new(redis_pool(&server.url(), 4).unwrap());
    // Fill every cached slot.
    for i in 0..8 {
        let mut c = conns.get().await.unwrap();
        redis::cmd("SET")
            .arg(format!("k{i}"))
            .arg(i)
            .query_async::<()>(&mut c)
            .await
            .unwrap();
    }
    for round in 0..3 {
        let mut admin = redis::Client::open(server.url())
            .unwrap()
            .get_multiplexed_async_connection()
            .await
            .unwrap();
        let _: i64 = redis::cmd("CLIENT")
            .arg("KILL")
            .arg("TYPE")
            .arg("normal")
            .arg("SKIPME")
            .arg("yes")
            .query_async(&mut admin)
            .await
            .unwrap();
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
