//! Routing and resilience, in process, on both backends: model groups and strategies,
//! fallbacks, shared circuit breakers and 429 cooldowns, slots and locks, honest usage, the
//! chaos provider.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

#[macro_use]
mod common;

use std::time::{Duration, Instant};

use common::*;
use llmr_testkit::{Behavior, MockUpstream};
use serde_json::Value;

/// `llmrouter all` with `toml` (over the default), on memory or a fresh redis-server (the
/// testkit's in-process fixture).
struct App {
    app: InProcess,
}

impl App {
    fn start(redis: bool, toml: &str, env: &[(&str, String)]) -> App {
        App {
            app: InProcess::start(redis, TestConfig::new(toml).envs(env)),
        }
    }

    fn url(&self, path: &str) -> String {
        self.app.url(path)
    }

    async fn chat(&self, model: &str, text: &str) -> (u16, Value) {
        let (s, b) = post(&self.url("/v1/chat/completions"), &chat_body(model, text, false)).await;
        (s, serde_json::from_slice(&b).unwrap_or(Value::Null))
    }
}

/// A provider for `mock` serving model `m`, with one key `sk-{name}`, and `extra` TOML.
fn provider(name: &str, mock: &MockUpstream, extra: &str) -> String {
    let key = format!("sk-{name}");
    format!("{}{extra}\n", provider_entry(name, &mock.base_url(), &["m"], &[&key]))
}

async fn weighted_groups_split_by_weight_and_are_listed(redis: bool) {
    let (a, b) = (MockUpstream::start(&[]), MockUpstream::start(&[]));
    let toml = format!(
        "{}{}[[models]]\nname = \"smart\"\nstrategy = \"weighted\"\ntargets = [{{provider = \"a\", model = \"m\", weight = 3}}, {{provider = \"b\", model = \"m\"}}]\n",
        provider("a", &a, ""),
        provider("b", &b, "")
    );
    let app = App::start(redis, &toml, &[]);
    for i in 0..40 {
        let (s, v) = app.chat("smart", &format!("q{i}")).await;
        assert_eq!(s, 200, "{v}");
    }
    assert_eq!((a.request_count(), b.request_count()), (30, 10), "smooth weighted 3:1");
    let (_, models) = get(&app.url("/v1/models"), &[]).await;
    let ids: Vec<&str> = models["data"]
        .as_array()
        .unwrap()
        .iter()
        .map(|m| m["id"].as_str().unwrap())
        .collect();
    assert!(ids.contains(&"smart") && ids.contains(&"m"), "{ids:?}");
    let (s, v) = app.chat("smart-ish", "x").await;
    assert_eq!(
        (s, v["error"]["code"].as_str()),
        (404, Some("model_not_found")),
        "never a silent substitute"
    );
}
both!(weighted_groups_split_by_weight_and_are_listed);

async fn fallback_groups_take_over_when_a_group_fails(redis: bool) {
    let (a, b) = (MockUpstream::start(&[]), MockUpstream::start(&[]));
    a.set_default(Behavior::status(503));
    let toml = format!(
        "{}{}[[models]]\nname = \"main\"\ntargets = [{{provider = \"a\", model = \"m\"}}]\nfallbacks = [\"backup\"]\n[[models]]\nname = \"backup\"\ntargets = [{{provider = \"b\", model = \"m\"}}]\n",
        provider("a", &a, ""),
        provider("b", &b, "")
    );
    let app = App::start(redis, &toml, &[]);
    for i in 0..3 {
        let (s, v) = app.chat("main", &format!("q{i}")).await;
        assert_eq!(s, 200, "{v}");
        assert_eq!(v["choices"][0]["message"]["content"], format!("mock: q{i}"));
    }
    assert_eq!(b.request_count(), 3);
}
both!(fallback_groups_take_over_when_a_group_fails);

async fn a_failing_target_opens_its_circuit_and_a_probe_closes_it(redis: bool) {
    let (a, b) = (MockUpstream::start(&[]), MockUpstream::start(&[]));
    a.set_default(Behavior::status(500));
    let toml = format!(
        "[health]\nfailure_threshold = 2\nrecovery_ms = 400\n{}{}[[models]]\nname = \"g\"\nstrategy = \"priority\"\ntargets = [{{provider = \"a\", model = \"m\"}}, {{provider = \"b\", model = \"m\"}}]\n",
        provider("a", &a, "priority = 0"),
        provider("b", &b, "priority = 1")
    );
    let app = App::start(redis, &toml, &[]);
    for i in 0..8 {
        let (s, _) = app.chat("g", &format!("q{i}")).await;
        assert_eq!(s, 200);
    }
    assert_eq!(a.request_count(), 2, "the circuit opened after two failures");
    assert_eq!(b.request_count(), 8);
    let (_, h) = get(&app.url("/health"), &[]).await;
    let ta = h["targets"]
        .as_array()
        .unwrap()
        .iter()
        .find(|t| t["target"] == "a/m")
        .unwrap()
        .clone();
    assert_eq!(ta["circuit"], "open", "{ta}");
    a.set_default(Behavior::ok());
    // Wait for the recovery time to pass: /health says the circuit takes a probe.
    let health = app.url("/health");
    assert!(
        eventually(Duration::from_secs(5), || async {
            let (_, h) = get(&health, &[]).await;
            h["targets"]
                .as_array()
                .is_some_and(|ts| ts.iter().any(|t| t["target"] == "a/m" && t["available"] == "probe"))
        })
        .await,
        "the circuit never reached its probe"
    );
    let (s, _) = app.chat("g", "probe").await;
    assert_eq!(s, 200);
    assert_eq!(a.request_count(), 3, "one probe after recovery");
    for i in 0..3 {
        app.chat("g", &format!("after {i}")).await;
    }
    assert_eq!(a.request_count(), 6, "closed again: the first tier serves");
}
both!(a_failing_target_opens_its_circuit_and_a_probe_closes_it);

async fn a_rate_limited_key_cools_down_for_retry_after(redis: bool) {
    let (a, b) = (MockUpstream::start(&[]), MockUpstream::start(&[]));
    a.set_default(Behavior {
        status: 429,
        retry_after: Some("1".into()),
        ..Behavior::ok()
    });
    let toml = format!(
        "{}{}[[models]]\nname = \"g\"\nstrategy = \"priority\"\ntargets = [{{provider = \"a\", model = \"m\"}}, {{provider = \"b\", model = \"m\"}}]\n",
        provider("a", &a, "priority = 0"),
        provider("b", &b, "priority = 1")
    );
    let app = App::start(redis, &toml, &[]);
    let until = Instant::now() + Duration::from_millis(2300);
    let mut n = 0;
    while Instant::now() < until {
        let (s, _) = app.chat("g", &format!("q{n}")).await;
        assert_eq!(s, 200, "the client never notices");
        n += 1;
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    let times: Vec<Instant> = a.requests().iter().map(|r| r.at).collect();
    assert!(
        (2..=3).contains(&times.len()),
        "{} calls to the cooling key over 2.3 s",
        times.len()
    );
    for w in times.windows(2) {
        assert!(
            w[1] - w[0] >= Duration::from_millis(950),
            "a call came {:?} after a 429 with Retry-After: 1",
            w[1] - w[0]
        );
    }
    let (_, h) = get(&app.url("/health"), &[]).await;
    let key = &h["providers"]
        .as_array()
        .unwrap()
        .iter()
        .find(|p| p["name"] == "a")
        .unwrap()["keys"][0];
    assert_eq!(key["key"], "a#0");
    assert!(
        key["available"] == "cooling" || key["available"] == "available",
        "{key}"
    );
    assert!(n > 20);
}
both!(a_rate_limited_key_cools_down_for_retry_after);

async fn when_every_target_cools_the_client_gets_429_with_retry_after(redis: bool) {
    let a = MockUpstream::start(&[]);
    a.set_default(Behavior {
        status: 429,
        retry_after: Some("30".into()),
        ..Behavior::ok()
    });
    let app = App::start(redis, &provider("a", &a, ""), &[]);
    let (s, v) = app.chat("m", "first").await;
    assert_eq!((s, v["error"]["type"].as_str()), (429, Some("rate_limit_error")), "{v}");
    let mut resp = client()
        .post(app.url("/v1/chat/completions"))
        .send_json(&chat_body("m", "second", false))
        .await
        .unwrap();
    assert_eq!(resp.status().as_u16(), 429);
    let ra: u64 = resp
        .headers()
        .get("retry-after")
        .unwrap()
        .to_str()
        .unwrap()
        .parse()
        .unwrap();
    assert!((25..=30).contains(&ra), "Retry-After {ra}");
    let _ = resp.body().await;
    assert_eq!(a.request_count(), 1, "the cooling key was not called again");
    // /health says why the model cannot be served now.
    let (s, h) = get(&app.url("/health"), &[]).await;
    assert_eq!((s, h["status"].as_str()), (200, Some("degraded")), "{h}");
    assert_eq!(
        h["reasons"],
        serde_json::json!(["every target of `m` is down or cooling"]),
        "{h}"
    );
}
both!(when_every_target_cools_the_client_gets_429_with_retry_after);

async fn keys_are_spread_by_least_usage(redis: bool) {
    let a = MockUpstream::start(&[]);
    let toml = format!(
        "[[providers]]\nname = \"a\"\ntype = \"openai\"\nbase_url = \"{}\"\nmodels = [\"m\"]\napi_keys = [\"k1\"]\napi_key_env = \"TEST_KEY_2\"\n[[providers.keys]]\nkey = \"k3\"\n",
        a.base_url()
    );
    let app = App::start(redis, &toml, &[("TEST_KEY_2", "k2".into())]);
    for i in 0..9 {
        assert_eq!(app.chat("m", &format!("q{i}")).await.0, 200);
    }
    let mut by_key = std::collections::HashMap::new();
    for r in a.requests() {
        *by_key.entry(r.authorization.unwrap()).or_insert(0) += 1;
    }
    assert_eq!(by_key.len(), 3);
    assert!(by_key.values().all(|n| *n == 3), "{by_key:?}");
}
both!(keys_are_spread_by_least_usage);

/// Redis only (memory reads cost nothing): the router reads what can change its choice and no
/// more — a target's load where it orders a route (two targets or more under `least_load`,
/// `priority` or `cost`, or a routing script), its keys' requests today where it has two keys
/// or more.
#[actix_rt::test]
async fn the_router_reads_only_the_state_that_can_change_its_choice() {
    let (a, b) = (MockUpstream::start(&[]), MockUpstream::start(&[]));
    let both = "targets = [{provider = \"a\", model = \"m\"}, {provider = \"b\", model = \"n\"}]";
    let toml = format!(
        "{}{}[[models]]\nname = \"pair\"\n{both}\n[[models]]\nname = \"turns\"\nstrategy = \"round_robin\"\n{both}\n",
        provider_entry("a", &a.base_url(), &["m"], &["sk-a"]),
        provider_entry("b", &b.base_url(), &["n"], &["sk-b1", "sk-b2"]),
    );
    let app = App::start(true, &toml, &[]);
    let redis = app.app.redis.as_ref().unwrap();
    // Reads per request of `model`: (loads, key usage). Health records are read for every
    // target and key (HGETALL, which the catalog's refresh also sends now and then).
    let reads = async |model: &str| {
        let before = redis.calls();
        for i in 0..4 {
            let (s, v) = app.chat(model, &format!("q{i}")).await;
            assert_eq!(s, 200, "{v}");
        }
        let after = redis.calls();
        let n = |c: &str| (after.get(c).unwrap_or(&0) - before.get(c).unwrap_or(&0)) as f64 / 4.0;
        (n("zcount"), n("getrange"))
    };
    // One target, one key: nothing to choose.
    assert_eq!(reads("m").await, (0.0, 0.0));
    // One target, two keys: their requests today choose between them.
    assert_eq!(reads("n").await, (0.0, 2.0));
    // Two targets by least load: both loads.
    assert_eq!(reads("pair").await, (2.0, 2.0));
    // Two targets in turn: no load.
    assert_eq!(reads("turns").await, (0.0, 2.0));
    assert_eq!(a.request_count() + b.request_count(), 16);
}

async fn exclusive_targets_take_one_request_at_a_time(redis: bool) {
    let (a, b, solo) = (
        MockUpstream::start(&[]),
        MockUpstream::start(&[]),
        MockUpstream::start(&[]),
    );
    a.set_default(Behavior::latency(400));
    solo.set_default(Behavior::latency(300));
    let toml = format!(
        "[router]\nfirst_available_wait_ms = 3000\n{}{}{}[[models]]\nname = \"g\"\nstrategy = \"first_available\"\ntargets = [{{provider = \"a\", model = \"m\"}}, {{provider = \"b\", model = \"m\"}}]\n[[models]]\nname = \"only\"\nstrategy = \"first_available\"\ntargets = [{{provider = \"solo\", model = \"m\"}}]\n",
        provider("a", &a, "exclusive = true"),
        provider("b", &b, ""),
        provider("solo", &solo, "exclusive = true")
    );
    let app = App::start(redis, &toml, &[]);
    let url = app.url("/v1/chat/completions");
    let (one, two) = (chat_body("g", "one", false), chat_body("g", "two", false));
    let t = Instant::now();
    let (r1, r2) = futures_util::join!(post(&url, &one), async {
        // The second request once the first holds its target.
        eventually(Duration::from_secs(5), || async {
            a.request_count() + b.request_count() == 1
        })
        .await;
        post(&url, &two).await
    });
    assert_eq!((r1.0, r2.0), (200, 200));
    assert_eq!(
        (a.request_count(), b.request_count()),
        (1, 1),
        "the lock was taken: the next free target served at once"
    );
    assert!(
        t.elapsed() < Duration::from_millis(1000),
        "no waiting while another target was free: {:?}",
        t.elapsed()
    );
    assert_eq!(app.chat("g", "three").await.0, 200);
    assert_eq!(a.request_count(), 2, "the lock was released");
    // A single exclusive target: the second request waits for the lock, then is served.
    let (x, y) = (chat_body("only", "x", false), chat_body("only", "y", false));
    let t = Instant::now();
    let (r1, r2) = futures_util::join!(post(&url, &x), post(&url, &y));
    assert_eq!((r1.0, r2.0), (200, 200));
    assert_eq!(solo.request_count(), 2);
    assert!(
        t.elapsed() >= Duration::from_millis(590),
        "one after the other: {:?}",
        t.elapsed()
    );
}
both!(exclusive_targets_take_one_request_at_a_time);

async fn max_concurrency_bounds_a_target(redis: bool) {
    let (a, b) = (MockUpstream::start(&[]), MockUpstream::start(&[]));
    a.set_default(Behavior::latency(300));
    let toml = format!(
        "{}{}[[models]]\nname = \"g\"\nstrategy = \"priority\"\ntargets = [{{provider = \"a\", model = \"m\"}}, {{provider = \"b\", model = \"m\"}}]\n",
        provider("a", &a, "max_concurrency = 2\npriority = 0"),
        provider("b", &b, "priority = 1")
    );
    let app = App::start(redis, &toml, &[]);
    let url = app.url("/v1/chat/completions");
    let bodies: Vec<_> = (0..5).map(|i| chat_body("g", &format!("q{i}"), false)).collect();
    let reqs: Vec<_> = bodies.iter().map(|b| post(&url, b)).collect();
    let results = futures_util::future::join_all(reqs).await;
    assert!(results.iter().all(|(s, _)| *s == 200));
    assert_eq!(a.request_count(), 2, "two slots");
    assert_eq!(b.request_count(), 3);
}
both!(max_concurrency_bounds_a_target);

async fn usage_is_honest(redis: bool) {
    let (a, quiet) = (MockUpstream::start(&[]), MockUpstream::start(&[]));
    quiet.set_default(Behavior {
        no_usage: true,
        ..Behavior::ok()
    });
    let toml = format!(
        "{}{}",
        provider("a", &a, ""),
        provider_entry("quiet", &quiet.base_url(), &["q"], &["sk-quiet"])
    );
    let app = App::start(redis, &toml, &[]);
    // Streamed without asking for usage: we ask the upstream, and keep the chunk to ourselves.
    let (s, raw) = post(&app.url("/v1/chat/completions"), &chat_body("m", "one two three", true)).await;
    assert_eq!(s, 200);
    let events = sse_events(&raw);
    assert!(events.iter().all(|e| !e.contains("\"usage\"")), "{events:?}");
    assert_eq!(a.requests()[0].body["stream_options"]["include_usage"], true);
    let (s, _) = app.chat("m", "four five").await;
    assert_eq!(s, 200);
    let (s, _) = app.chat("q", "nothing reported").await;
    assert_eq!(s, 200);
    // Usage is written just after the answer's last frame: wait for it (bounded).
    let usage_url = app.url("/v1/usage");
    assert!(
        eventually(Duration::from_secs(5), || async {
            let (_, u) = get(&usage_url, &[]).await;
            u["data"].as_array().is_some_and(|r| {
                r.len() == 2 && r.iter().map(|x| x["requests"].as_u64().unwrap_or(0)).sum::<u64>() == 3
            })
        })
        .await
    );
    let (s, u) = get(&app.url("/v1/usage"), &[]).await;
    assert_eq!(s, 200);
    let rows = u["data"].as_array().unwrap();
    let row = |k: &str| {
        rows.iter()
            .find(|r| r["key"] == k)
            .unwrap_or_else(|| panic!("{k} in {u}"))
            .clone()
    };
    let reported = a.reported()["Bearer sk-a"];
    let ra = row("a#0");
    assert_eq!(ra["requests"], 2);
    assert_eq!(ra["prompt_tokens"], reported.prompt_tokens);
    assert_eq!(ra["completion_tokens"], reported.completion_tokens);
    assert_eq!(ra["estimated"], 0);
    let rq = row("quiet#0");
    assert_eq!(
        (
            rq["requests"].as_u64(),
            rq["estimated"].as_u64(),
            rq["prompt_tokens"].as_u64()
        ),
        (Some(1), Some(1), Some(0))
    );
    assert!(
        rq["est_prompt_tokens"].as_u64().unwrap() > 0,
        "estimates are kept apart: {rq}"
    );
    assert_eq!(get(&app.url("/v1/usage?day=yesterday"), &[]).await.0, 400);
}
both!(usage_is_honest);

async fn provider_options_reach_the_upstream(redis: bool) {
    let (slow, b) = (MockUpstream::start(&[]), MockUpstream::start(&[]));
    slow.set_default(Behavior::latency(2000));
    let toml = format!(
        "{}{}[[models]]\nname = \"g\"\nstrategy = \"priority\"\ntargets = [{{provider = \"slow\", model = \"m\"}}, {{provider = \"b\", model = \"upstream-name\"}}]\n",
        provider("slow", &slow, "timeout_ms = 200\npriority = 0"),
        provider("b", &b, "priority = 1\nextra_headers = { \"x-org\" = \"acme\" }")
    );
    let app = App::start(redis, &toml, &[]);
    let t = Instant::now();
    let (s, v) = app.chat("g", "hello").await;
    assert_eq!(s, 200, "{v}");
    assert!(
        t.elapsed() < Duration::from_millis(1500),
        "timeout_ms moved on: {:?}",
        t.elapsed()
    );
    let r = &b.requests()[0];
    assert!(r.headers.iter().any(|(k, v)| k == "x-org" && v == "acme"));
    assert_eq!(
        r.body["model"], "upstream-name",
        "the group's target model is what the upstream gets"
    );
}
both!(provider_options_reach_the_upstream);

async fn the_chaos_provider_injects_failures_that_fail_over(redis: bool) {
    let toml = "[[providers]]\nname = \"flaky\"\ntype = \"chaos\"\nmodels = [\"m\"]\n[providers.chaos]\nerror_rate = 0.5\nrate_limit_rate = 0.2\nretry_after_s = 1\nmalformed_rate = 0.1\nrefuse_rate = 0.1\n[[providers]]\nname = \"solid\"\ntype = \"echo\"\nmodels = [\"m\"]\n[[models]]\nname = \"g\"\nstrategy = \"round_robin\"\ntargets = [{provider = \"flaky\", model = \"m\"}, {provider = \"solid\", model = \"m\"}]\n";
    let app = App::start(redis, toml, &[]);
    for i in 0..30 {
        let (s, v) = app.chat("g", &format!("q {i}")).await;
        assert_eq!(s, 200, "{v}");
        assert_eq!(v["choices"][0]["message"]["content"], format!("q {i}"));
    }
    let (_, h) = get(&app.url("/health"), &[]).await;
    let flaky = h["targets"]
        .as_array()
        .unwrap()
        .iter()
        .find(|t| t["target"] == "flaky/m")
        .unwrap()
        .clone();
    assert!(
        flaky["failures"].as_u64().unwrap() > 0 || flaky["circuit"] != "closed" || flaky["available"] == "cooling",
        "{flaky}"
    );
}
both!(the_chaos_provider_injects_failures_that_fail_over);
