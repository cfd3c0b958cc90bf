//! The store conformance suite: every behaviour runs against memory and a real redis-server.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

use llmr_protocol::now_ms;
use llmr_store::{
    Admit, Admitted, Alive, Availability, Breaker, Circuit, Instance, InstanceInfo, ProviderStatus, Store, UsageDelta,
    UsageRecord, UsageRow,
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

async fn heartbeats_keep_one_epoch_while_the_store_keeps_them(s: Store) {
    s.heartbeat("gateway", "g1", 60_000).await.unwrap();
    let first = s.live().await.unwrap();
    assert_eq!(first.alive.len(), 1);
    s.heartbeat("gateway", "g2", 60_000).await.unwrap();
    s.depart("gateway", "g1").await.unwrap();
    let second = s.live().await.unwrap();
    assert_eq!(second.epoch, first.epoch, "beats and departures are no restart");
    assert_eq!(second.alive[0].instance, "g2");
}
both!(heartbeats_keep_one_epoch_while_the_store_keeps_them);

/// A Redis restarted without its data has lost every heartbeat, and its epoch with them:
/// the next read sees a new one (what the workers' dead-caller watch relies on).
#[tokio::test]
async fn a_redis_restarted_empty_has_a_new_heartbeat_epoch() {
    let mut server = RedisServer::start();
    let conns = std::sync::Arc::new(llmr_bus::RedisConns::new(
        llmr_bus::redis_pool(&server.url(), 4).unwrap(),
    ));
    let s = Store::redis(conns, &unique_prefix("epoch"));
    s.heartbeat("gateway", "g1", 60_000).await.unwrap();
    let before = s.live().await.unwrap();
    server.restart();
    let mut after = None;
    for _ in 0..50 {
        if let Ok(l) = s.live().await {
            after = Some(l);
            break;
        }
        tokio::time::sleep(std::time::Duration::from_millis(100)).await;
    }
    let after = after.expect("the store reads again after the restart");
    assert!(after.alive.is_empty(), "the heartbeats were lost");
    assert_ne!(after.epoch, before.epoch);
    assert_eq!(s.live().await.unwrap().epoch, after.epoch, "and the new one stays");
}

async fn instances_say_their_version_and_start(s: Store) {
    let info = InstanceInfo {
        version: "9.9.9".into(),
        started_ms: 1_700_000_000_000,
    };
    s.heartbeat_as("gateway", "g1", 60_000, &info).await.unwrap();
    s.heartbeat("router", "r1", 60_000).await.unwrap();
    s.heartbeat_as("worker", "default:w1", 30, &info).await.unwrap();
    let instances = s.instances().await.unwrap();
    assert_eq!(
        instances,
        vec![
            Instance {
                service: "gateway".into(),
                instance: "g1".into(),
                version: Some("9.9.9".into()),
                started_ms: Some(1_700_000_000_000),
            },
            Instance {
                service: "router".into(),
                instance: "r1".into(),
                version: None,
                started_ms: None,
            },
            Instance {
                service: "worker".into(),
                instance: "default:w1".into(),
                version: Some("9.9.9".into()),
                started_ms: Some(1_700_000_000_000),
            },
        ]
    );
    // What an instance said lives as long as its beat; a departed one is forgotten at once.
    tokio::time::sleep(std::time::Duration::from_millis(50)).await;
    assert_eq!(s.instances().await.unwrap().len(), 2);
    s.depart("gateway", "g1").await.unwrap();
    s.heartbeat("gateway", "g1", 60_000).await.unwrap();
    let g = s.instances().await.unwrap().remove(0);
    assert_eq!((g.instance.as_str(), g.version), ("g1", None));
    // keep_alive says this release's version.
    let _guard = s.keep_alive("mcp-tools", "m1", std::time::Duration::from_secs(1));
    let mine = InstanceInfo::now();
    let mut seen = None;
    for _ in 0..100 {
        seen = s
            .instances()
            .await
            .unwrap()
            .into_iter()
            .find(|i| i.service == "mcp-tools");
        if seen.is_some() {
            break;
        }
        tokio::time::sleep(std::time::Duration::from_millis(10)).await;
    }
    let seen = seen.unwrap();
    assert_eq!(seen.version.as_deref(), Some(mine.version.as_str()));
    assert!(seen.started_ms.unwrap() <= mine.started_ms);
}
both!(instances_say_their_version_and_start);

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
    // Every wait only proves more the longer it takes (a busy machine cannot fail it): the
    // touch comes at once, the check after the original expiry, the renewal lasts seconds.
    s.kv_set("sessions", "a", "v1", Some(300)).await.unwrap();
    assert_eq!(
        s.kv_get_touch("sessions", "a", 5_000).await.unwrap().as_deref(),
        Some("v1")
    );
    tokio::time::sleep(std::time::Duration::from_millis(500)).await;
    assert_eq!(
        s.kv_get("sessions", "a").await.unwrap().as_deref(),
        Some("v1"),
        "renewed past its first expiry"
    );
    // A touch with a short time makes it expire then.
    assert!(s.kv_get_touch("sessions", "a", 50).await.unwrap().is_some());
    tokio::time::sleep(std::time::Duration::from_millis(200)).await;
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

// --- Governance: keys and teams, admission by reservation, settlement, spend and the log ---

use llmr_store::governance::{
    Admission, Charge, Limit, Limits, LogBounds, Period, RequestRecord, Reservation, Settlement, SpendRow, Standing,
    Standings, Team, VirtualKey, Window,
};

/// A reservation of `tokens` and `cost` micros at `now`, lapsing ten minutes later.
fn reservation<'a>(request: &'a str, now: u64, tokens: u64, cost: u64, charges: &'a [Charge<'a>]) -> Reservation<'a> {
    Reservation {
        request,
        now_ms: now,
        expires_ms: now + 600_000,
        tokens,
        cost_micros: cost,
        charges,
    }
}

/// A settlement of `tokens` and `cost` micros at `now`, with no row and no record.
fn settlement<'a>(
    request: &'a str,
    now: u64,
    subjects: &'a [(&'a str, Period)],
    tokens: u64,
    cost: u64,
) -> Settlement<'a> {
    Settlement {
        request,
        now_ms: now,
        subjects,
        tokens,
        cost_micros: cost,
        row: None,
        input_tokens: 0,
        output_tokens: 0,
        record: None,
    }
}

fn refused(charge: usize, limit: Limit, retry_after_ms: Option<u64>) -> Admission {
    Admission::Refused {
        charge,
        limit,
        retry_after_ms,
    }
}

fn standing_of(a: &Admission) -> Standing {
    match a {
        Admission::Admitted(s) => s[0],
        other => panic!("refused: {other:?}"),
    }
}

fn virtual_key(id: &str, team: Option<&str>) -> VirtualKey {
    VirtualKey {
        id: id.into(),
        name: format!("key {id}"),
        hash: format!("{id:0>64}"),
        hint: "sk-llmr-ab…yz".into(),
        team: team.map(str::to_owned),
        models: vec!["gpt-*".into()],
        tools: vec![],
        limits: Limits {
            rpm: Some(10),
            budget_usd: Some(1.5),
            budget_period: Period::Month,
            ..Limits::default()
        },
        expires_at_ms: None,
        metadata: serde_json::json!({"owner": "ops"}),
        created_ms: 1,
        revoked_ms: None,
        from_config: false,
    }
}

fn team(id: &str) -> Team {
    Team {
        id: id.into(),
        name: format!("team {id}"),
        models: vec![],
        tools: vec!["search_*".into()],
        limits: Limits {
            tpm: Some(1000),
            ..Limits::default()
        },
        metadata: serde_json::Value::Null,
        created_ms: 2,
        from_config: true,
    }
}

async fn governance_keys_and_teams_round_trip_and_bump_the_version(s: Store) {
    let v0 = s.gov_version().await.unwrap();
    assert!(s.gov_keys().await.unwrap().is_empty());
    let (k1, k2) = (virtual_key("k1", Some("t1")), virtual_key("k2", None));
    s.gov_put_key(&k2).await.unwrap();
    let v1 = s.gov_version().await.unwrap();
    assert!(v1 > v0, "{v0} -> {v1}");
    s.gov_put_key(&k1).await.unwrap();
    let v2 = s.gov_version().await.unwrap();
    assert!(v2 > v1);
    assert_eq!(s.gov_keys().await.unwrap(), vec![k1.clone(), k2.clone()], "by id");
    let revoked = VirtualKey {
        revoked_ms: Some(5),
        ..k1
    };
    s.gov_put_key(&revoked).await.unwrap();
    let v3 = s.gov_version().await.unwrap();
    assert!(v3 > v2);
    assert_eq!(s.gov_keys().await.unwrap(), vec![revoked, k2]);

    s.gov_put_team(&team("t2")).await.unwrap();
    s.gov_put_team(&team("t1")).await.unwrap();
    let v4 = s.gov_version().await.unwrap();
    assert!(v4 > v3);
    assert_eq!(s.gov_teams().await.unwrap(), vec![team("t1"), team("t2")]);
    assert!(s.gov_delete_team("t1").await.unwrap());
    let v5 = s.gov_version().await.unwrap();
    assert!(v5 > v4);
    assert!(!s.gov_delete_team("t1").await.unwrap(), "already gone");
    assert_eq!(s.gov_teams().await.unwrap(), vec![team("t2")]);
}
both!(governance_keys_and_teams_round_trip_and_bump_the_version);

async fn governance_rpm_is_a_sliding_window(s: Store) {
    let l = Limits {
        rpm: Some(3),
        ..Limits::default()
    };
    let ch = [Charge {
        subject: "key/r",
        limits: &l,
    }];
    let t0 = now_ms();
    for i in 0..3u64 {
        let id = format!("r{i}");
        let a = s.gov_admit(&reservation(&id, t0 + i * 1000, 10, 0, &ch)).await.unwrap();
        let want = Window {
            limit: 3,
            remaining: 2 - i,
            reset_ms: 60_000 - i * 1000,
        };
        assert_eq!(
            a,
            Admission::Admitted(vec![Standing {
                requests: Some(want),
                tokens: None
            }])
        );
    }
    let a = s.gov_admit(&reservation("r3", t0 + 3000, 10, 0, &ch)).await.unwrap();
    assert_eq!(
        a,
        refused(0, Limit::Requests, Some(57_000)),
        "until r0 leaves the window"
    );
    // Once r0 (admitted at t0) is over a minute old, there is room for one more.
    let later = t0 + 60_001;
    let a = s.gov_admit(&reservation("r4", later, 10, 0, &ch)).await.unwrap();
    let w = standing_of(&a).requests.unwrap();
    assert_eq!((w.remaining, w.reset_ms), (0, 999), "r1 (t0 + 1 s) is now the oldest");
    let a = s.gov_admit(&reservation("r5", later, 10, 0, &ch)).await.unwrap();
    assert_eq!(a, refused(0, Limit::Requests, Some(999)));
}
both!(governance_rpm_is_a_sliding_window);

async fn governance_parallel_slots_free_on_settlement_and_lapse(s: Store) {
    let l = Limits {
        max_parallel: Some(2),
        ..Limits::default()
    };
    let ch = [Charge {
        subject: "key/p",
        limits: &l,
    }];
    let subjects = [("key/p", Period::Total)];
    let t0 = now_ms();
    for id in ["a", "b"] {
        let a = s.gov_admit(&reservation(id, t0, 10, 0, &ch)).await.unwrap();
        assert_eq!(a, Admission::Admitted(vec![Standing::default()]));
    }
    let a = s.gov_admit(&reservation("c", t0, 10, 0, &ch)).await.unwrap();
    assert_eq!(a, refused(0, Limit::Parallel, Some(1000)));
    assert_eq!(s.gov_standings("key/p", Period::Total, t0).await.unwrap().in_flight, 2);
    s.gov_settle(&settlement("a", t0 + 10, &subjects, 5, 0)).await.unwrap();
    assert!(matches!(
        s.gov_admit(&reservation("c", t0 + 20, 10, 0, &ch)).await.unwrap(),
        Admission::Admitted(_)
    ));
    assert_eq!(
        s.gov_admit(&reservation("d", t0 + 20, 10, 0, &ch)).await.unwrap(),
        refused(0, Limit::Parallel, Some(1000))
    );

    // A reservation whose deadline passed (its gateway died) holds nothing any more.
    let one = Limits {
        max_parallel: Some(1),
        ..Limits::default()
    };
    let ch = [Charge {
        subject: "key/p1",
        limits: &one,
    }];
    let short = Reservation {
        expires_ms: t0 + 100,
        ..reservation("x", t0, 10, 0, &ch)
    };
    assert!(matches!(s.gov_admit(&short).await.unwrap(), Admission::Admitted(_)));
    assert_eq!(
        s.gov_admit(&reservation("y", t0 + 50, 10, 0, &ch)).await.unwrap(),
        refused(0, Limit::Parallel, Some(1000))
    );
    assert_eq!(
        s.gov_standings("key/p1", Period::Total, t0 + 50)
            .await
            .unwrap()
            .in_flight,
        1
    );
    assert_eq!(
        s.gov_standings("key/p1", Period::Total, t0 + 100)
            .await
            .unwrap()
            .in_flight,
        0,
        "lapsed"
    );
    assert!(matches!(
        s.gov_admit(&reservation("y", t0 + 100, 10, 0, &ch)).await.unwrap(),
        Admission::Admitted(_)
    ));
}
both!(governance_parallel_slots_free_on_settlement_and_lapse);

async fn governance_budgets_reserve_the_worst_case_and_settle_the_real_cost(s: Store) {
    let l = Limits {
        budget_usd: Some(0.05),
        ..Limits::default()
    };
    let ch = [Charge {
        subject: "key/b",
        limits: &l,
    }];
    let subjects = [("key/b", Period::Total)];
    let t0 = now_ms();
    let mut admitted = 0;
    let refusal = loop {
        let id = format!("b{admitted}");
        let now = t0 + admitted;
        match s.gov_admit(&reservation(&id, now, 10, 20_000, &ch)).await.unwrap() {
            Admission::Admitted(_) => {}
            other => break other,
        }
        let held = s.gov_standings("key/b", Period::Total, now).await.unwrap();
        assert_eq!((held.reserved_micros, held.in_flight), (20_000, 1));
        assert!(held.spend_micros + held.reserved_micros <= 50_000);
        s.gov_settle(&settlement(&id, now, &subjects, 10, 10_000))
            .await
            .unwrap();
        admitted += 1;
        assert!(admitted < 10, "the budget never refused");
    };
    // 0+20k, 10k+20k, 20k+20k, 30k+20k fit in 50k; 40k+20k does not.
    assert_eq!(admitted, 4);
    assert_eq!(refusal, refused(0, Limit::Budget, None), "a total budget never renews");
    assert_eq!(
        s.gov_standings("key/b", Period::Total, t0 + 10).await.unwrap(),
        Standings {
            spend_micros: 40_000,
            reserved_micros: 0,
            in_flight: 0,
            period_start_ms: 0,
        }
    );

    // A daily budget is retried at the day's end.
    let daily = Limits {
        budget_usd: Some(0.01),
        budget_period: Period::Day,
        ..Limits::default()
    };
    let ch = [Charge {
        subject: "key/d",
        limits: &daily,
    }];
    let (_, start, end) = Period::Day.window(t0);
    assert_eq!(
        s.gov_admit(&reservation("d0", t0, 10, 20_000, &ch)).await.unwrap(),
        refused(0, Limit::Budget, end.map(|e| e - t0))
    );
    assert_eq!(
        s.gov_standings("key/d", Period::Day, t0).await.unwrap().period_start_ms,
        start
    );
}
both!(governance_budgets_reserve_the_worst_case_and_settle_the_real_cost);

async fn governance_a_refusal_writes_nothing(s: Store) {
    let key_limits = Limits {
        rpm: Some(100),
        tpm: Some(10_000),
        ..Limits::default()
    };
    let poor = Limits {
        budget_usd: Some(0.01),
        ..Limits::default()
    };
    let rich = Limits {
        budget_usd: Some(1.0),
        ..Limits::default()
    };
    let t0 = now_ms();
    let ch = [
        Charge {
            subject: "key/kt",
            limits: &key_limits,
        },
        Charge {
            subject: "team/tt",
            limits: &poor,
        },
    ];
    for i in 0..3 {
        let id = format!("x{i}");
        let a = s.gov_admit(&reservation(&id, t0 + i, 100, 20_000, &ch)).await.unwrap();
        assert_eq!(a, refused(1, Limit::Budget, None), "the team refuses");
    }
    for subject in ["key/kt", "team/tt"] {
        assert_eq!(
            s.gov_standings(subject, Period::Total, t0 + 5).await.unwrap(),
            Standings::default()
        );
    }
    let ch = [ch[0], Charge { limits: &rich, ..ch[1] }];
    let a = s.gov_admit(&reservation("ok", t0 + 5, 100, 20_000, &ch)).await.unwrap();
    let Admission::Admitted(st) = a else {
        panic!("refused: {a:?}")
    };
    assert_eq!(st.len(), 2);
    assert_eq!(
        st[0].requests.map(|w| w.remaining),
        Some(99),
        "the refusals left no rpm entry"
    );
    assert_eq!(st[0].tokens.map(|w| w.remaining), Some(9_900), "nor tpm");
    assert_eq!(st[1], Standing::default(), "the team has no rate limits");
    for subject in ["key/kt", "team/tt"] {
        let held = s.gov_standings(subject, Period::Total, t0 + 5).await.unwrap();
        assert_eq!((held.reserved_micros, held.in_flight), (20_000, 1), "{subject}");
    }
}
both!(governance_a_refusal_writes_nothing);

async fn governance_tpm_counts_reserved_then_real_tokens(s: Store) {
    let l = Limits {
        tpm: Some(100),
        ..Limits::default()
    };
    let ch = [Charge {
        subject: "key/t",
        limits: &l,
    }];
    let subjects = [("key/t", Period::Total)];
    let t0 = now_ms();
    let a = s.gov_admit(&reservation("t1", t0, 60, 0, &ch)).await.unwrap();
    assert_eq!(
        standing_of(&a).tokens,
        Some(Window {
            limit: 100,
            remaining: 40,
            reset_ms: 60_000
        })
    );
    let a = s.gov_admit(&reservation("t2", t0 + 1000, 60, 0, &ch)).await.unwrap();
    assert_eq!(
        a,
        refused(0, Limit::Tokens, Some(59_000)),
        "until t1's tokens leave the window"
    );
    s.gov_settle(&settlement("t1", t0 + 2000, &subjects, 10, 0))
        .await
        .unwrap();
    let a = s.gov_admit(&reservation("t2", t0 + 3000, 60, 0, &ch)).await.unwrap();
    assert_eq!(
        standing_of(&a).tokens.map(|w| w.remaining),
        Some(30),
        "t1 counts its 10 real tokens"
    );
    // 70 used + 40 > 100: t1's 10 tokens leaving (at t0 + 60 s) make room.
    let a = s.gov_admit(&reservation("t3", t0 + 4000, 40, 0, &ch)).await.unwrap();
    assert_eq!(a, refused(0, Limit::Tokens, Some(56_000)));
    // More than the limit on its own: never admitted.
    let a = s.gov_admit(&reservation("huge", t0 + 4000, 150, 0, &ch)).await.unwrap();
    assert_eq!(a, refused(0, Limit::Tokens, None));
    // Past the window, t1 and t2 are gone.
    let a = s.gov_admit(&reservation("t4", t0 + 63_001, 100, 0, &ch)).await.unwrap();
    assert_eq!(standing_of(&a).tokens.map(|w| w.remaining), Some(0));
}
both!(governance_tpm_counts_reserved_then_real_tokens);

fn record(id: &str, time_ms: u64) -> RequestRecord {
    RequestRecord {
        id: id.into(),
        time_ms,
        key: "k1".into(),
        team: Some("t1".into()),
        route: "chat".into(),
        model: "gpt-4o".into(),
        provider: Some("openai".into()),
        target_model: Some("gpt-4o-2024-08-06".into()),
        status: 200,
        latency_ms: 120,
        ttft_ms: Some(40),
        input_tokens: 7,
        output_tokens: 3,
        cost_usd: 0.001,
        attempts: 1,
        stream: true,
        ..RequestRecord::default()
    }
}

async fn governance_settlement_writes_spend_rows_and_a_capped_log(s: Store) {
    let t = now_ms();
    let day = llmr_store::utc_day(t);
    let subjects = [("key/k1", Period::Day), ("team/t1", Period::Day)];
    let bounds = LogBounds {
        max_records: 3,
        max_age_ms: 60_000,
    };
    let records: Vec<RequestRecord> = (0..5).map(|i| record(&format!("q{i}"), t + i)).collect();
    for (i, r) in records.iter().enumerate() {
        let model = if i % 2 == 0 { "gpt-4o" } else { "org|m" };
        let team = if i % 2 == 0 { "t1" } else { "" };
        let st = Settlement {
            row: Some(("k1", team, model)),
            input_tokens: 7,
            output_tokens: 3,
            record: Some((r, bounds)),
            ..settlement(&r.id, t + i as u64, &subjects, 10, 1_000)
        };
        s.gov_settle(&st).await.unwrap();
    }
    let row = |team: &str, model: &str, n: u64| SpendRow {
        day: day.clone(),
        key: "k1".into(),
        team: team.into(),
        model: model.into(),
        requests: n,
        input_tokens: 7 * n,
        output_tokens: 3 * n,
        spend_micros: 1_000 * n,
    };
    assert_eq!(
        s.gov_spend(&day, &day).await.unwrap(),
        vec![row("", "org|m", 2), row("t1", "gpt-4o", 3)]
    );
    assert!(s.gov_spend("2001-01-01", "2001-01-31").await.unwrap().is_empty());
    for (subject, _) in subjects {
        assert_eq!(
            s.gov_standings(subject, Period::Day, t + 5).await.unwrap().spend_micros,
            5_000
        );
    }

    // Newest first, at most three kept.
    let all = s.gov_requests(None, 10).await.unwrap();
    let ids: Vec<&str> = all.iter().map(|r| r.id.as_str()).collect();
    assert_eq!(ids, ["q4", "q3", "q2"]);
    assert!(all.iter().all(|r| !r.cursor.is_empty()));
    assert_eq!(
        RequestRecord {
            cursor: String::new(),
            ..all[0].clone()
        },
        records[4],
        "a record reads back as written"
    );
    let page = s.gov_requests(None, 2).await.unwrap();
    assert_eq!(page.len(), 2);
    let next = s.gov_requests(Some(&page[1].cursor), 2).await.unwrap();
    assert_eq!(next.iter().map(|r| r.id.as_str()).collect::<Vec<_>>(), ["q2"]);
    assert!(s.gov_requests(Some(&next[0].cursor), 2).await.unwrap().is_empty());
    assert!(s.gov_requests(None, 0).await.unwrap().is_empty());

    // A record logged a minute later ages out those older than a minute (q2, at t + 2).
    let late = record("q5", t + 60_003);
    let st = Settlement {
        record: Some((&late, bounds)),
        ..settlement("q5", t + 60_003, &[], 0, 0)
    };
    s.gov_settle(&st).await.unwrap();
    let ids: Vec<String> = s
        .gov_requests(None, 10)
        .await
        .unwrap()
        .into_iter()
        .map(|r| r.id)
        .collect();
    assert_eq!(ids, ["q5", "q4", "q3"]);
    let tight = LogBounds {
        max_records: 1,
        max_age_ms: 3_600_000,
    };
    let last = record("q6", t + 60_004);
    let st = Settlement {
        record: Some((&last, tight)),
        ..settlement("q6", t + 60_004, &[], 0, 0)
    };
    s.gov_settle(&st).await.unwrap();
    let ids: Vec<String> = s
        .gov_requests(None, 10)
        .await
        .unwrap()
        .into_iter()
        .map(|r| r.id)
        .collect();
    assert_eq!(ids, ["q6"]);
}
both!(governance_settlement_writes_spend_rows_and_a_capped_log);

async fn governance_concurrent_admissions_never_overshoot(s: Store) {
    let t0 = now_ms();
    let mut tasks = tokio::task::JoinSet::new();
    for i in 0..64 {
        let s = s.clone();
        tasks.spawn(async move {
            let l = Limits {
                rpm: Some(10),
                ..Limits::default()
            };
            let ch = [Charge {
                subject: "key/c",
                limits: &l,
            }];
            let id = format!("c{i}");
            s.gov_admit(&reservation(&id, t0, 10, 0, &ch)).await.unwrap()
        });
    }
    let answers = tasks.join_all().await;
    let admitted = answers.iter().filter(|a| matches!(a, Admission::Admitted(_))).count();
    assert_eq!(admitted, 10);
    assert!(
        answers
            .iter()
            .all(|a| matches!(a, Admission::Admitted(_)) || *a == refused(0, Limit::Requests, Some(60_000)))
    );
    assert_eq!(s.gov_standings("key/c", Period::Total, t0).await.unwrap().in_flight, 10);
}
both!(governance_concurrent_admissions_never_overshoot);

/// Redis only: a subject's keys expire once idle; spend of a period outlives the period by a
/// while, total spend, spend rows and the log do not expire.
#[tokio::test]
async fn governance_keys_expire_when_idle() {
    let server = RedisServer::start();
    let conns = std::sync::Arc::new(llmr_bus::RedisConns::new(
        llmr_bus::redis_pool(&server.url(), 2).unwrap(),
    ));
    let prefix = unique_prefix("gov-ttl");
    let s = Store::redis(conns, &prefix);
    let l = Limits {
        rpm: Some(10),
        tpm: Some(1000),
        budget_usd: Some(1.0),
        budget_period: Period::Day,
        ..Limits::default()
    };
    let ch = [Charge {
        subject: "key/e",
        limits: &l,
    }];
    let t = now_ms();
    assert!(matches!(
        s.gov_admit(&reservation("e1", t, 10, 100, &ch)).await.unwrap(),
        Admission::Admitted(_)
    ));
    let client = redis::Client::open(server.url()).unwrap();
    let mut c = client.get_multiplexed_async_connection().await.unwrap();
    let conn = c.clone();
    let pttl = |k: String| {
        let (mut c, key) = (conn.clone(), format!("{prefix}gov:{k}"));
        async move { redis::cmd("PTTL").arg(key).query_async::<i64>(&mut c).await.unwrap() }
    };
    // A window past the deadline, and a window more: the expiry moves once a window at most.
    for k in ["sub", "win"] {
        let ttl = pttl(format!("{k}:key/e")).await;
        assert!(ttl > 710_000 && ttl <= 720_000, "{k}: {ttl}");
    }
    let r = record("e1", t);
    let bounds = LogBounds {
        max_records: 10,
        max_age_ms: 60_000,
    };
    let subjects = [("key/e", Period::Day), ("team/e", Period::Total)];
    let st = Settlement {
        row: Some(("e", "", "m")),
        record: Some((&r, bounds)),
        ..settlement("e1", t, &subjects, 5, 50)
    };
    s.gov_settle(&st).await.unwrap();
    for k in ["sub", "win"] {
        let ttl = pttl(format!("{k}:key/e")).await;
        assert!(ttl > 710_000 && ttl <= 720_000, "{k}: {ttl}");
    }
    let (label, _, end) = Period::Day.window(t);
    let ttl = pttl(format!("spend:key/e:{label}")).await;
    let want = (end.unwrap() - t + 7 * 86_400_000) as i64;
    assert!(ttl > want - 10_000 && ttl <= want, "spend: {ttl} vs {want}");
    assert_eq!(pttl("spend:team/e:total".into()).await, -1);
    let day = llmr_store::utc_day(t);
    assert_eq!(pttl(format!("rowidx:{day}")).await, -1);
    assert_eq!(pttl(format!("row:{day}:e||m")).await, -1);
    assert_eq!(pttl("log".into()).await, -1);
    let held = s.gov_standings("key/e", Period::Day, t).await.unwrap();
    assert_eq!(
        (held.in_flight, held.reserved_micros),
        (0, 0),
        "its last reservation settled"
    );
    // Idle past the deadline and two windows, a subject leaves nothing behind.
    assert!(matches!(
        s.gov_admit(&reservation(
            "e0",
            t,
            10,
            100,
            &[Charge {
                subject: "key/f",
                limits: &Limits::default()
            }]
        ))
        .await
        .unwrap(),
        Admission::Admitted(_)
    ));
    assert_eq!(pttl("win:key/f".into()).await, -2, "no window without rpm or tpm");
    redis::cmd("SCRIPT")
        .arg("FLUSH")
        .query_async::<()>(&mut c)
        .await
        .unwrap();
    assert!(
        matches!(
            s.gov_admit(&reservation("e2", t + 1, 10, 100, &ch)).await.unwrap(),
            Admission::Admitted(_)
        ),
        "a flushed script is loaded again"
    );
}

async fn governance_log_keeps_append_order_whatever_the_records_times(s: Store) {
    let t = now_ms();
    let bounds = LogBounds {
        max_records: 10,
        max_age_ms: 60_000,
    };
    let log = |r: &RequestRecord, now: u64| {
        let (s, r) = (s.clone(), r.clone());
        async move {
            let st = Settlement {
                record: Some((&r, bounds)),
                ..settlement(&r.id, now, &[], 0, 0)
            };
            s.gov_settle(&st).await.unwrap();
        }
    };
    // Logged two minutes after it arrived: already too old to keep.
    log(&record("stale", t), t + 120_000).await;
    assert!(s.gov_requests(None, 10).await.unwrap().is_empty());
    // Arrived before the last one logged, and before each other: kept in the order logged.
    log(&record("a", t - 1000), t).await;
    log(&record("b", t - 2000), t + 1).await;
    let got = s.gov_requests(None, 10).await.unwrap();
    assert_eq!(got.iter().map(|r| r.id.as_str()).collect::<Vec<_>>(), ["b", "a"]);
    let older = s.gov_requests(Some(&got[0].cursor), 10).await.unwrap();
    assert_eq!(older.iter().map(|r| r.id.as_str()).collect::<Vec<_>>(), ["a"]);
}
both!(governance_log_keeps_append_order_whatever_the_records_times);

/// Redis only: the commands governance runs per request (scripts' inner commands included),
/// so that they stay few: a settlement without subjects (spend row and log), and a key with
/// rpm, tpm and a budget admitted and settled (its expiries already set by an earlier one).
#[tokio::test]
async fn governance_commands_per_request_stay_few() {
    let server = RedisServer::start();
    let conns = std::sync::Arc::new(llmr_bus::RedisConns::new(
        llmr_bus::redis_pool(&server.url(), 2).unwrap(),
    ));
    let prefix = unique_prefix("gov-calls");
    let s = Store::redis(conns, &prefix);
    let l = Limits {
        rpm: Some(100),
        tpm: Some(100_000),
        budget_usd: Some(10.0),
        budget_period: Period::Day,
        ..Limits::default()
    };
    let ch = [Charge {
        subject: "key/c",
        limits: &l,
    }];
    let subjects = [("key/c", Period::Day)];
    let bounds = LogBounds {
        max_records: 2,
        max_age_ms: 60_000,
    };
    let t = now_ms();
    let records: Vec<RequestRecord> = (0..4).map(|i| record(&format!("c{i}"), t + i)).collect();
    // `with_key`: admitted and settled against the key; otherwise a request without one.
    let request = |i: usize, with_key: bool| {
        let (s, r) = (s.clone(), records[i].clone());
        let now = t + i as u64;
        async move {
            let none: &[(&str, Period)] = &[];
            if with_key {
                let a = s.gov_admit(&reservation(&r.id, now, 500, 1_000, &ch)).await.unwrap();
                assert!(matches!(a, Admission::Admitted(_)), "{a:?}");
            }
            let st = Settlement {
                row: Some(("c", "", "m")),
                input_tokens: 7,
                output_tokens: 3,
                record: Some((&r, bounds)),
                ..settlement(&r.id, now, if with_key { &subjects } else { none }, 10, 500)
            };
            s.gov_settle(&st).await.unwrap();
        }
    };
    // Scripts loaded, the log and the row made, the key's expiries and spend set.
    request(0, true).await;
    let count = |before: &std::collections::BTreeMap<String, u64>| {
        let script = ["evalsha", "eval", "script", "info"];
        let sent: std::collections::BTreeMap<String, u64> = server
            .calls()
            .into_iter()
            .filter(|(name, _)| !script.contains(&name.as_str()))
            .map(|(name, n)| (name.clone(), n - before.get(&name).copied().unwrap_or(0)))
            .filter(|(_, n)| *n > 0)
            .collect();
        (sent.values().sum::<u64>(), sent)
    };
    let before = server.calls();
    request(1, false).await;
    let (plain, sent) = count(&before);
    assert_eq!(plain, 3, "settlement without a key: {sent:?}");
    let before = server.calls();
    request(2, true).await;
    let (keyed, sent) = count(&before);
    assert_eq!(keyed, plain + 7, "admission and settlement of a key: {sent:?}");
}
