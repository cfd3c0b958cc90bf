//! The store conformance suite: every behaviour runs against memory and a real redis-server.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

use llmr_protocol::now_ms;
use llmr_store::{
    Admit, Admitted, Alive, Availability, Breaker, Circuit, ProviderStatus, Store, UsageDelta, UsageRecord, UsageRow,
};
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
                let conns = std::sync::Arc::new(llmr_bus::RedisConns::new(
                    llmr_bus::redis_pool(&server.url(), 4).unwrap(),
                ));
                super::$name(Store::redis(conns, &unique_prefix(stringify!($name)))).await;
            }
        }
    };
}

async fn leases_count_as_load_until_released(s: Store) {
    let t = vec!["p/a".to_string(), "p/b".to_string()];
    assert_eq!(s.loads(&t).await.unwrap(), vec![0, 0]);
    assert!(s.acquire_lease("p/a", "job1", 60_000, 0).await.unwrap());
    assert!(s.acquire_lease("p/a", "job2", 60_000, 0).await.unwrap());
    assert!(s.acquire_lease("p/b", "job3", 60_000, 0).await.unwrap());
    assert_eq!(s.loads(&t).await.unwrap(), vec![2, 1]);
    s.release_lease("p/a", "job1").await.unwrap();
    assert_eq!(s.loads(&t).await.unwrap(), vec![1, 1]);
    s.release_lease("p/a", "never-taken").await.unwrap();
    assert_eq!(s.loads(&t).await.unwrap(), vec![1, 1]);
}
both!(leases_count_as_load_until_released);

async fn expired_leases_are_no_load(s: Store) {
    assert!(s.acquire_lease("p/x", "dead-worker-job", 30, 0).await.unwrap());
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

async fn peers_wait_briefly_for_a_missing_service(s: Store) {
    use std::time::{Duration, Instant};
    let peers = llmr_store::Peers::watch(&s, Duration::from_secs(60));
    s.heartbeat("router", "r1", 60_000).await.unwrap();
    // Not in the first read, found by the lookup a miss makes.
    assert!(peers.present("router", Duration::ZERO).await.unwrap());
    let t = Instant::now();
    assert!(!peers.present("worker", Duration::from_millis(450)).await.unwrap());
    assert!(t.elapsed() >= Duration::from_millis(400), "{:?}", t.elapsed());
    let refused = peers.require("worker", Duration::ZERO).await.unwrap_err();
    assert_eq!(refused.status(), 503);
    assert!(
        refused.message().contains("No worker instance"),
        "{}",
        refused.message()
    );
    // One that appears while a request waits is found.
    let late = s.clone();
    tokio::spawn(async move {
        tokio::time::sleep(Duration::from_millis(300)).await;
        late.heartbeat("worker", "default:w1", 60_000).await.unwrap();
    });
    assert!(peers.present("worker", Duration::from_secs(2)).await.unwrap());
}
both!(peers_wait_briefly_for_a_missing_service);

async fn a_document_is_claimed_once(s: Store) {
    assert_eq!(s.doc_claim("once:1", "running", 60_000).await.unwrap(), None);
    assert_eq!(
        s.doc_claim("once:1", "other", 60_000).await.unwrap().as_deref(),
        Some("running")
    );
    s.doc_put("once:1", "done", 60_000).await.unwrap();
    assert_eq!(
        s.doc_claim("once:1", "again", 60_000).await.unwrap().as_deref(),
        Some("done")
    );
    // An expired claim can be taken again.
    assert_eq!(s.doc_claim("once:2", "a", 20).await.unwrap(), None);
    tokio::time::sleep(std::time::Duration::from_millis(60)).await;
    assert_eq!(s.doc_claim("once:2", "b", 60_000).await.unwrap(), None);
    assert_eq!(s.doc_get("once:2").await.unwrap().as_deref(), Some("b"));
}
both!(a_document_is_claimed_once);

async fn usage_adds_up_per_key_model_and_day(s: Store) {
    let day = llmr_store::utc_day(now_ms());
    let real = |p, c| UsageDelta {
        prompt: p,
        completion: c,
        estimated: false,
    };
    s.record_usage("k0", "m", &day, real(10, 5)).await.unwrap();
    s.record_usage(
        "k0",
        "m",
        &day,
        UsageDelta {
            prompt: 3,
            completion: 2,
            estimated: true,
        },
    )
    .await
    .unwrap();
    s.record_usage("k1", "m", &day, real(100, 100)).await.unwrap();
    let k0 = UsageRecord {
        requests: 2,
        prompt_tokens: 10,
        completion_tokens: 5,
        estimated: 1,
        est_prompt_tokens: 3,
        est_completion_tokens: 2,
    };
    assert_eq!(
        s.usage("k0", "m", &day).await.unwrap(),
        k0,
        "estimates never mix with reported counts"
    );
    assert_eq!(s.usage("k0", "other", &day).await.unwrap(), UsageRecord::default());
    let rows = s.usage_day(&day).await.unwrap();
    assert_eq!(rows.len(), 2);
    assert_eq!(
        rows[0],
        UsageRow {
            key: "k0".into(),
            model: "m".into(),
            usage: k0
        }
    );
    assert!(s.usage_day("1999-01-01").await.unwrap().is_empty());
    let pairs = vec![
        ("k0".to_string(), "m".to_string()),
        ("k1".to_string(), "m".to_string()),
        ("k9".to_string(), "m".to_string()),
    ];
    assert_eq!(s.requests_on(&pairs, &day).await.unwrap(), vec![2, 1, 0]);
}
both!(usage_adds_up_per_key_model_and_day);

/// Redis only: a request's counters are one command (BITFIELD, not an HINCRBY each), and what
/// an earlier release counted in the day's hash still reads.
#[tokio::test]
async fn a_requests_usage_is_one_command_and_the_old_hash_still_counts() {
    let server = RedisServer::start();
    let conns = std::sync::Arc::new(llmr_bus::RedisConns::new(
        llmr_bus::redis_pool(&server.url(), 2).unwrap(),
    ));
    let prefix = unique_prefix("usage-packed");
    let s = Store::redis(conns, &prefix);
    let day = llmr_store::utc_day(now_ms());
    let client = redis::Client::open(server.url()).unwrap();
    let mut c = client.get_multiplexed_async_connection().await.unwrap();
    redis::cmd("HSET")
        .arg(format!("{prefix}usage:k0:m:{day}"))
        .arg(&[
            "requests",
            "5",
            "prompt_tokens",
            "50",
            "completion_tokens",
            "20",
            "estimated",
            "1",
        ])
        .query_async::<()>(&mut c)
        .await
        .unwrap();
    redis::cmd("SADD")
        .arg(format!("{prefix}usage_index:{day}"))
        .arg("k0|m")
        .query_async::<()>(&mut c)
        .await
        .unwrap();
    let delta = |prompt, completion, estimated| UsageDelta {
        prompt,
        completion,
        estimated,
    };
    // The first count of a counter from this process also writes its index and expiry.
    s.record_usage("k0", "m", &day, delta(1, 1, false)).await.unwrap();
    let before = server.calls();
    s.record_usage("k0", "m", &day, delta(10, 4, false)).await.unwrap();
    s.record_usage("k0", "m", &day, delta(7, 3, true)).await.unwrap();
    let after = server.calls();
    let sent: Vec<(&String, u64)> = after
        .iter()
        .map(|(name, n)| (name, n - before.get(name).copied().unwrap_or(0)))
        .filter(|(_, n)| *n > 0)
        .collect();
    assert_eq!(sent, vec![(&"bitfield".to_string(), 2)], "BITFIELD only");
    let want = UsageRecord {
        requests: 5 + 3,
        prompt_tokens: 50 + 11,
        completion_tokens: 20 + 5,
        estimated: 1 + 1,
        est_prompt_tokens: 7,
        est_completion_tokens: 3,
    };
    assert_eq!(s.usage("k0", "m", &day).await.unwrap(), want);
    let rows = s.usage_day(&day).await.unwrap();
    assert_eq!(rows.len(), 1);
    assert_eq!(rows[0].usage, want);
    // A routing decision reads the packed counter only.
    let pairs = vec![("k0".to_string(), "m".to_string())];
    assert_eq!(s.requests_on(&pairs, &day).await.unwrap(), vec![3]);
}

async fn slots_limit_concurrency(s: Store) {
    assert!(s.acquire_lease("p/slot", "a", 60_000, 2).await.unwrap());
    assert!(s.acquire_lease("p/slot", "b", 60_000, 2).await.unwrap());
    assert!(!s.acquire_lease("p/slot", "c", 60_000, 2).await.unwrap(), "full");
    s.release_lease("p/slot", "a").await.unwrap();
    assert!(s.acquire_lease("p/slot", "c", 60_000, 2).await.unwrap());
}
both!(slots_limit_concurrency);

async fn locks_are_exclusive_and_token_checked(s: Store) {
    assert!(s.acquire_lock("p/x", "t1", 60_000).await.unwrap());
    assert!(!s.acquire_lock("p/x", "t2", 60_000).await.unwrap());
    s.release_lock("p/x", "t2").await.unwrap();
    assert!(
        !s.acquire_lock("p/x", "t2", 60_000).await.unwrap(),
        "only the holder releases"
    );
    s.release_lock("p/x", "t1").await.unwrap();
    assert!(s.acquire_lock("p/x", "t2", 60_000).await.unwrap());
    assert!(s.acquire_lock("p/short", "a", 20).await.unwrap());
    tokio::time::sleep(std::time::Duration::from_millis(40)).await;
    assert!(
        s.acquire_lock("p/short", "b", 60_000).await.unwrap(),
        "a dead holder's lock expires"
    );
}
both!(locks_are_exclusive_and_token_checked);

async fn circuits_open_probe_and_close(s: Store) {
    let b = Breaker {
        failure_threshold: 3,
        failure_window_ms: 60_000,
        recovery_ms: 80,
        probe_ttl_ms: 60_000,
    };
    let id = "t:p/m".to_string();
    assert_eq!(
        s.health(std::slice::from_ref(&id)).await.unwrap()[0].circuit,
        Circuit::Closed
    );
    for _ in 0..2 {
        s.record_failure(&id, &b).await.unwrap();
    }
    assert_eq!(
        s.health(std::slice::from_ref(&id)).await.unwrap()[0].availability(now_ms()),
        Availability::Available
    );
    s.record_failure(&id, &b).await.unwrap();
    let h = s.health(std::slice::from_ref(&id)).await.unwrap()[0];
    assert_eq!(h.circuit, Circuit::Open);
    assert!(matches!(h.availability(now_ms()), Availability::OpenUntil(_)));
    assert!(!s.try_probe(&id, 60_000).await.unwrap(), "no probe before recovery");
    tokio::time::sleep(std::time::Duration::from_millis(100)).await;
    assert!(s.try_probe(&id, 60_000).await.unwrap(), "one probe after recovery");
    assert!(!s.try_probe(&id, 60_000).await.unwrap(), "exactly one");
    s.record_success(&id, Some(40.0)).await.unwrap();
    s.record_success(&id, Some(80.0)).await.unwrap();
    let h = s.health(std::slice::from_ref(&id)).await.unwrap()[0];
    assert_eq!(h.circuit, Circuit::Closed);
    assert!((h.latency_ms.unwrap() - 52.0).abs() < 1e-6, "{:?}", h.latency_ms);
    assert!(s.try_probe(&id, 60_000).await.unwrap(), "closed circuits always allow");
}
both!(circuits_open_probe_and_close);

async fn cooldowns_hold_until_their_time_and_never_shorten(s: Store) {
    let id = "k:p#0".to_string();
    let until = now_ms() + 60_000;
    s.cooldown(&id, until).await.unwrap();
    s.cooldown(&id, until - 30_000).await.unwrap();
    let h = s.health(std::slice::from_ref(&id)).await.unwrap()[0];
    assert_eq!(h.availability(now_ms()), Availability::CoolingUntil(until));
    assert_eq!(h.availability(until), Availability::Available);
}
both!(cooldowns_hold_until_their_time_and_never_shorten);

fn admit<'a>(target: &'a str, member: &'a str, exclusive: bool, gates: &'a [(&'a str, bool)]) -> Admit<'a> {
    Admit {
        target,
        member,
        ttl_ms: 60_000,
        max: 0,
        exclusive,
        gates,
    }
}

async fn admission_checks_cooldowns_and_circuits_in_the_same_step(s: Store) {
    let (target, key) = ("t:p/m", "k:p#0");
    let gates = [(target, false), (key, false)];
    assert_eq!(
        s.admit(&admit("p/m", "r1", false, &gates)).await.unwrap(),
        Admitted::Yes
    );
    // A 429 recorded after the plan: the next attempt on that key is refused, takes nothing.
    s.cooldown(key, now_ms() + 60_000).await.unwrap();
    assert_eq!(
        s.admit(&admit("p/m", "r2", false, &gates)).await.unwrap(),
        Admitted::Cooling
    );
    assert_eq!(
        s.admit(&admit("p/m", "r2", true, &gates)).await.unwrap(),
        Admitted::Cooling,
        "locks too"
    );
    assert_eq!(
        s.loads(&["p/m".to_string()]).await.unwrap(),
        vec![1],
        "the refused attempt holds no lease"
    );
    // Another key of the same target still goes.
    assert_eq!(
        s.admit(&admit("p/m", "r3", false, &[(target, false), ("k:p#1", false)]))
            .await
            .unwrap(),
        Admitted::Yes
    );
    // A circuit that opened after the plan: refused, unless this attempt won its probe.
    let b = Breaker {
        failure_threshold: 1,
        failure_window_ms: 60_000,
        recovery_ms: 50,
        probe_ttl_ms: 60_000,
    };
    s.record_failure(target, &b).await.unwrap();
    assert_eq!(
        s.admit(&admit("p/m", "r4", false, &[(target, false)])).await.unwrap(),
        Admitted::Open
    );
    tokio::time::sleep(std::time::Duration::from_millis(80)).await;
    assert_eq!(
        s.admit(&admit("p/m", "r4", false, &[(target, false)])).await.unwrap(),
        Admitted::Open,
        "recovered: only a probe"
    );
    assert!(s.try_probe(target, 60_000).await.unwrap());
    assert_eq!(
        s.admit(&admit("p/m", "r4", false, &[(target, true)])).await.unwrap(),
        Admitted::Yes,
        "the probe's own"
    );
    assert_eq!(
        s.admit(&admit("p/m", "r5", false, &[(target, false)])).await.unwrap(),
        Admitted::Open,
        "while probing"
    );
}
both!(admission_checks_cooldowns_and_circuits_in_the_same_step);

async fn admission_says_whether_the_gates_records_are_clean(s: Store) {
    // Clean (no record, or closed with no failures and no probe): a success would change
    // nothing but the latency, so the worker may leave it unwritten.
    let b = Breaker {
        failure_threshold: 3,
        failure_window_ms: 60_000,
        recovery_ms: 50,
        probe_ttl_ms: 60_000,
    };
    let (target, key) = ("t:c/m", "k:c#0");
    let seen = |member: &'static str, gates: &'static [(&'static str, bool)]| {
        let s = s.clone();
        async move { s.admit_seen(&admit("c/m", member, false, gates)).await.unwrap() }
    };
    const BOTH: &[(&str, bool)] = &[("t:c/m", false), ("k:c#0", false)];
    assert_eq!(seen("r1", BOTH).await, (Admitted::Yes, true), "no records yet");
    s.record_success(target, Some(12.0)).await.unwrap();
    assert_eq!(
        seen("r2", BOTH).await,
        (Admitted::Yes, true),
        "a closed record with a latency"
    );
    s.record_failure(key, &b).await.unwrap();
    assert_eq!(
        seen("r3", BOTH).await,
        (Admitted::Yes, false),
        "a failure in the key's window"
    );
    s.record_success(key, None).await.unwrap();
    assert_eq!(seen("r4", BOTH).await, (Admitted::Yes, true), "the success reset it");
    for _ in 0..3 {
        s.record_failure(target, &b).await.unwrap();
    }
    tokio::time::sleep(std::time::Duration::from_millis(80)).await;
    assert!(s.try_probe(target, 60_000).await.unwrap());
    const PROBE: &[(&str, bool)] = &[("t:c/m", true)];
    assert_eq!(
        seen("r5", PROBE).await,
        (Admitted::Yes, false),
        "a half-open circuit's probe"
    );
    s.record_success(target, None).await.unwrap();
    assert_eq!(seen("r6", BOTH).await, (Admitted::Yes, true));
    assert_eq!(
        s.admit_seen(&admit("c/x", "r7", true, BOTH)).await.unwrap(),
        (Admitted::Yes, true),
        "locks too"
    );
}
both!(admission_says_whether_the_gates_records_are_clean);

async fn renewed_leases_and_locks_outlive_their_first_ttl(s: Store) {
    let short = |member, exclusive| Admit {
        ttl_ms: 150,
        ..admit("p/r", member, exclusive, &[])
    };
    assert_eq!(s.admit(&short("a", false)).await.unwrap(), Admitted::Yes);
    assert_eq!(s.admit(&short("dead", false)).await.unwrap(), Admitted::Yes);
    assert_eq!(
        s.admit(&Admit {
            target: "p/l",
            ..short("a", true)
        })
        .await
        .unwrap(),
        Admitted::Yes
    );
    for _ in 0..4 {
        tokio::time::sleep(std::time::Duration::from_millis(60)).await;
        assert!(s.renew("p/r", "a", false, 150).await.unwrap());
        assert!(s.renew("p/l", "a", true, 150).await.unwrap());
    }
    // 240 ms on: the renewed lease still counts, the one nobody renewed (a dead worker's) is gone.
    assert_eq!(s.loads(&["p/r".to_string()]).await.unwrap(), vec![1]);
    assert!(
        !s.renew("p/r", "dead", false, 150).await.unwrap(),
        "an expired lease is not revived"
    );
    assert!(
        !s.acquire_lock("p/l", "b", 60_000).await.unwrap(),
        "the renewed lock is still held"
    );
    assert!(
        !s.renew("p/l", "b", true, 150).await.unwrap(),
        "only its holder renews a lock"
    );
    s.release_lease("p/r", "a").await.unwrap();
    assert!(!s.renew("p/r", "a", false, 150).await.unwrap());
}
both!(renewed_leases_and_locks_outlive_their_first_ttl);

async fn settle_writes_everything_an_attempt_left(s: Store) {
    let b = Breaker {
        failure_threshold: 1,
        failure_window_ms: 60_000,
        recovery_ms: 60_000,
        probe_ttl_ms: 1000,
    };
    let day = llmr_store::utc_day(now_ms());
    assert!(s.acquire_lease("p/m", "req1", 60_000, 0).await.unwrap());
    assert!(s.acquire_lock("p/x", "req1", 60_000).await.unwrap());
    let settle = llmr_store::Settle {
        lease: Some(("p/m", "req1")),
        lock: Some(("p/x", "req1")),
        success: vec![("t:p/m", Some(12.0))],
        failure: Some("t:p/bad"),
        cooldown: Some(("k:p#1", now_ms() + 60_000)),
        usage: Some((
            "p#0",
            "m",
            &day,
            UsageDelta {
                prompt: 3,
                completion: 4,
                estimated: false,
            },
        )),
    };
    s.settle(&settle, &b).await.unwrap();
    assert_eq!(s.loads(&["p/m".to_string()]).await.unwrap(), vec![0], "lease released");
    assert!(s.acquire_lock("p/x", "req2", 60_000).await.unwrap(), "lock released");
    let ids = vec!["t:p/m".to_string(), "t:p/bad".to_string(), "k:p#1".to_string()];
    let h = s.health(&ids).await.unwrap();
    assert_eq!(h[0].latency_ms, Some(12.0));
    assert_eq!(h[1].circuit, Circuit::Open);
    assert!(matches!(h[2].availability(now_ms()), Availability::CoolingUntil(_)));
    assert_eq!(s.usage("p#0", "m", &day).await.unwrap().completion_tokens, 4);
    let st = s
        .routing_state(
            &["p/m".to_string()],
            &ids,
            &[("p#0".to_string(), "m".to_string())],
            &day,
        )
        .await
        .unwrap();
    assert_eq!(st.loads, vec![0]);
    assert_eq!(st.health, h);
    assert_eq!(st.requests_today, vec![1]);
}
both!(settle_writes_everything_an_attempt_left);

#[tokio::test]
async fn settle_survives_redis_forgetting_its_scripts() {
    let server = RedisServer::start();
    let conns = std::sync::Arc::new(llmr_bus::RedisConns::new(
        llmr_bus::redis_pool(&server.url(), 2).unwrap(),
    ));
    let s = Store::redis(conns, &unique_prefix("noscript"));
    let b = Breaker {
        failure_threshold: 1,
        failure_window_ms: 60_000,
        recovery_ms: 60_000,
        probe_ttl_ms: 1000,
    };
    let client = redis::Client::open(server.url()).unwrap();
    let mut c = client.get_multiplexed_async_connection().await.unwrap();
    redis::cmd("SCRIPT")
        .arg("FLUSH")
        .query_async::<()>(&mut c)
        .await
        .unwrap();
    let settle = llmr_store::Settle {
        success: vec![("t:p/m", Some(5.0))],
        ..Default::default()
    };
    s.settle(&settle, &b).await.unwrap();
    assert_eq!(s.health(&["t:p/m".to_string()]).await.unwrap()[0].latency_ms, Some(5.0));
}

async fn kv_spaces_are_separate_and_expire(s: Store) {
    assert_eq!(s.kv_get("tool-a", "k").await.unwrap(), None);
    s.kv_set("tool-a", "k", "1", None).await.unwrap();
    s.kv_set("tool-a", "j", "\"x\"", None).await.unwrap();
    s.kv_set("tool-b", "k", "2", Some(60)).await.unwrap();
    assert_eq!(s.kv_get("tool-a", "k").await.unwrap().as_deref(), Some("1"));
    assert_eq!(s.kv_get("tool-b", "k").await.unwrap().as_deref(), Some("2"));
    assert_eq!(s.kv_keys("tool-a").await.unwrap(), vec!["j", "k"]);
    assert!(s.kv_delete("tool-a", "j").await.unwrap());
    assert!(!s.kv_delete("tool-a", "j").await.unwrap());
    assert_eq!(s.kv_keys("tool-a").await.unwrap(), vec!["k"]);
    tokio::time::sleep(std::time::Duration::from_millis(120)).await;
    assert_eq!(s.kv_get("tool-b", "k").await.unwrap(), None);
    assert!(s.kv_keys("tool-b").await.unwrap().is_empty());
}
both!(kv_spaces_are_separate_and_expire);

async fn kv_get_touch_renews_the_expiry(s: Store) {
    s.kv_set("sessions", "a", "v1", Some(150)).await.unwrap();
    tokio::time::sleep(std::time::Duration::from_millis(100)).await;
    assert_eq!(
        s.kv_get_touch("sessions", "a", 150).await.unwrap().as_deref(),
        Some("v1")
    );
    tokio::time::sleep(std::time::Duration::from_millis(100)).await;
    assert_eq!(
        s.kv_get("sessions", "a").await.unwrap().as_deref(),
        Some("v1"),
        "renewed"
    );
    tokio::time::sleep(std::time::Duration::from_millis(120)).await;
    assert_eq!(s.kv_get("sessions", "a").await.unwrap(), None);
    assert_eq!(s.kv_get_touch("sessions", "missing", 100).await.unwrap(), None);
}
both!(kv_get_touch_renews_the_expiry);

async fn documents_and_logs_are_stored_read_and_expire(s: Store) {
    assert_eq!(s.doc_get("resp:a").await.unwrap(), None);
    s.doc_put("resp:a", r#"{"id":"a"}"#, 60_000).await.unwrap();
    s.doc_put("resp:b", "short", 80).await.unwrap();
    assert_eq!(s.doc_get("resp:a").await.unwrap().as_deref(), Some(r#"{"id":"a"}"#));
    assert_eq!(s.log_range("resp:a:events", 0).await.unwrap(), Vec::<String>::new());
    let e = |v: &[&str]| v.iter().map(|x| x.to_string()).collect::<Vec<_>>();
    assert_eq!(
        s.log_append("resp:a:events", &e(&["e0", "e1"]), 60_000).await.unwrap(),
        2
    );
    assert_eq!(s.log_append("resp:a:events", &e(&["e2"]), 60_000).await.unwrap(), 3);
    assert_eq!(s.log_range("resp:a:events", 0).await.unwrap(), e(&["e0", "e1", "e2"]));
    assert_eq!(s.log_range("resp:a:events", 2).await.unwrap(), e(&["e2"]));
    assert_eq!(s.log_range("resp:a:events", 5).await.unwrap(), Vec::<String>::new());
    let both = [
        "resp:a".to_string(),
        "resp:a:events".to_string(),
        "resp:none".to_string(),
    ];
    assert_eq!(s.doc_delete(&both).await.unwrap(), 2);
    assert_eq!(s.doc_get("resp:a").await.unwrap(), None);
    tokio::time::sleep(std::time::Duration::from_millis(120)).await;
    assert_eq!(s.doc_get("resp:b").await.unwrap(), None, "expired");
}
both!(documents_and_logs_are_stored_read_and_expire);
