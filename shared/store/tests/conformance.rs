//! The store conformance suite: every behaviour runs against memory and a real redis-server.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

use llmr_protocol::now_ms;
use llmr_store::{Alive, ProviderStatus, Store, UsageRecord};
use llmr_testkit::{RedisServer, unique_prefix};

macro_rules! both {
    ($name:ident) => {
        mod $name {
            use super::*;
            #[tokio::test]
            async fn memory() {
                super::$name(Store::memory()).await;
            }
            #[tokio::test]
            async fn redis() {
                let server = RedisServer::start();
                let pool = llmr_bus::redis_pool(&server.url(), 4).unwrap();
                super::$name(Store::redis(pool, &unique_prefix(stringify!($name)))).await;
            }
        }
    };
}

async fn leases_count_as_load_until_released(s: Store) {
    let t = vec!["p/a".to_string(), "p/b".to_string()];
    assert_eq!(s.loads(&t).await.unwrap(), vec![0, 0]);
    s.acquire_lease("p/a", "job1", 60_000).await.unwrap();
    s.acquire_lease("p/a", "job2", 60_000).await.unwrap();
    s.acquire_lease("p/b", "job3", 60_000).await.unwrap();
    assert_eq!(s.loads(&t).await.unwrap(), vec![2, 1]);
    s.release_lease("p/a", "job1").await.unwrap();
    assert_eq!(s.loads(&t).await.unwrap(), vec![1, 1]);
    s.release_lease("p/a", "never-taken").await.unwrap();
    assert_eq!(s.loads(&t).await.unwrap(), vec![1, 1]);
}
both!(leases_count_as_load_until_released);

async fn expired_leases_are_no_load(s: Store) {
    s.acquire_lease("p/x", "dead-worker-job", 30).await.unwrap();
    assert_eq!(s.loads(&["p/x".to_string()]).await.unwrap(), vec![1]);
    tokio::time::sleep(std::time::Duration::from_millis(50)).await;
    assert_eq!(s.loads(&["p/x".to_string()]).await.unwrap(), vec![0]);
}
both!(expired_leases_are_no_load);

async fn provider_status_is_shared(s: Store) {
    let a = ProviderStatus {
        name: "b-prov".into(),
        models: vec!["m1".into()],
        state: "ok".into(),
        error: None,
        updated_ms: 1,
    };
    let b = ProviderStatus {
        name: "a-prov".into(),
        models: vec![],
        state: "error".into(),
        error: Some("refused".into()),
        updated_ms: 2,
    };
    s.set_provider(&a).await.unwrap();
    s.set_provider(&b).await.unwrap();
    assert_eq!(s.providers().await.unwrap(), vec![b.clone(), a.clone()]);
    let a2 = ProviderStatus {
        models: vec!["m1".into(), "m2".into()],
        ..a
    };
    s.set_provider(&a2).await.unwrap();
    assert_eq!(s.providers().await.unwrap(), vec![b, a2]);
}
both!(provider_status_is_shared);

async fn heartbeats_show_who_is_alive(s: Store) {
    s.heartbeat("router", "r1", 60_000).await.unwrap();
    s.heartbeat("worker", "w1", 60_000).await.unwrap();
    s.heartbeat("worker", "w2", 30).await.unwrap();
    tokio::time::sleep(std::time::Duration::from_millis(50)).await;
    let alive = s.alive().await.unwrap();
    assert_eq!(
        alive,
        vec![
            Alive {
                service: "router".into(),
                instance: "r1".into()
            },
            Alive {
                service: "worker".into(),
                instance: "w1".into()
            }
        ]
    );
    s.depart("router", "r1").await.unwrap();
    assert_eq!(s.alive().await.unwrap().len(), 1);
}
both!(heartbeats_show_who_is_alive);

async fn usage_adds_up_per_key_model_and_day(s: Store) {
    let day = llmr_store::utc_day(now_ms());
    s.record_usage("k0", "m", &day, 10, 5, false).await.unwrap();
    s.record_usage("k0", "m", &day, 3, 2, true).await.unwrap();
    s.record_usage("k1", "m", &day, 100, 100, false)
        .await
        .unwrap();
    assert_eq!(
        s.usage("k0", "m", &day).await.unwrap(),
        UsageRecord {
            requests: 2,
            prompt_tokens: 13,
            completion_tokens: 7,
            estimated: 1
        }
    );
    assert_eq!(
        s.usage("k0", "other", &day).await.unwrap(),
        UsageRecord::default()
    );
}
both!(usage_adds_up_per_key_model_and_day);
