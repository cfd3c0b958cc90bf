//! Virtual keys, teams, limits and budgets end to end, on both backends: `llmrouter all` in
//! process over a programmable mock upstream, keys made with the admin API, real HTTP.
//! Rate limits and budgets are checked for exactness under concurrency; spend against the
//! cost headers; the request log against the requests made.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic, clippy::print_stderr)]

#[macro_use]
mod common;

use std::time::Duration;

use common::*;
use futures_util::StreamExt;
use llmr_testkit::{Behavior, MockUpstream};
use serde_json::{Value, json};

const ADMIN: &str = "admin-secret";

/// The mock upstream priced at $0.005 per output token: a request with `max_tokens` 4
/// reserves $0.02, and the mock's two-word answer (`mock: hi`) costs $0.01.
struct Fixture {
    app: InProcess,
    mock: MockUpstream,
}

impl Fixture {
    fn start(redis: bool, extra: &str) -> Fixture {
        let mock = MockUpstream::start(&["priced"]);
        let toml = format!(
            "{ECHO}[[providers]]\nname = \"up\"\ntype = \"openai\"\nbase_url = \"{}\"\nmodels = [\"priced\", \"other\"]\ncost_output_per_mtok = 5000.0\n{extra}",
            mock.base_url()
        );
        let cfg = TestConfig::new(toml)
            .env("LLMR__SERVER__TOKEN", "main-token")
            .env("LLMR__SERVER__ADMIN_TOKEN", ADMIN);
        Fixture {
            app: InProcess::start(redis, cfg),
            mock,
        }
    }

    fn url(&self, path: &str) -> String {
        self.app.url(path)
    }

    async fn admin_post(&self, path: &str, body: Value) -> Value {
        let auth = format!("Bearer {ADMIN}");
        let (status, b) = post_with(&self.url(path), &body, &[("authorization", &auth)]).await;
        assert!(status < 300, "{path}: {status} {}", String::from_utf8_lossy(&b));
        json(&b)
    }

    /// A key's or team's figures once nothing of it is in flight (settlement lands after the
    /// answer, in the background).
    async fn settled(&self, path: &str) -> Value {
        assert!(
            eventually(Duration::from_secs(5), || async {
                let v = self.admin_get(path).await;
                v["in_flight"] == 0 && v["reserved_usd"] == 0.0
            })
            .await,
            "{path} never settled: {}",
            self.admin_get(path).await
        );
        self.admin_get(path).await
    }

    async fn admin_get(&self, path: &str) -> Value {
        let auth = format!("Bearer {ADMIN}");
        let (status, v) = get(&self.url(path), &[("authorization", &auth)]).await;
        assert_eq!(status, 200, "{path}: {v}");
        v
    }

    /// A new key: its id and secret.
    async fn key(&self, body: Value) -> (String, String) {
        let v = self.admin_post("/admin/keys", body).await;
        (
            v["id"].as_str().unwrap().to_owned(),
            v["key"].as_str().unwrap().to_owned(),
        )
    }

    /// One chat with `secret`: status, headers and body.
    async fn chat(&self, secret: &str, model: &str) -> (u16, awc::http::header::HeaderMap, Value) {
        let mut body = chat_body(model, "hi", false);
        body["max_tokens"] = json!(4);
        let mut resp = client()
            .post(self.url("/v1/chat/completions"))
            .insert_header(("authorization", format!("Bearer {secret}")))
            .send_json(&body)
            .await
            .unwrap();
        let b = resp.body().await.unwrap();
        (
            resp.status().as_u16(),
            resp.headers().clone(),
            serde_json::from_slice(&b).unwrap_or_default(),
        )
    }

    /// `n` chats at concurrency `c`, each answer's status, headers and body.
    async fn burst(&self, secret: &str, n: usize, c: usize) -> Vec<(u16, awc::http::header::HeaderMap, Value)> {
        futures_util::stream::iter(0..n)
            .map(|_| self.chat(secret, "priced"))
            .buffer_unordered(c)
            .collect()
            .await
    }
}

fn header<'a>(h: &'a awc::http::header::HeaderMap, name: &str) -> Option<&'a str> {
    h.get(name).and_then(|v| v.to_str().ok())
}

async fn rpm_is_exact_under_concurrency(redis: bool) {
    let f = Fixture::start(redis, "");
    let (_, secret) = f.key(json!({"name": "ci", "rpm": 50})).await;
    let answers = f.burst(&secret, 200, 32).await;
    let ok = answers.iter().filter(|a| a.0 == 200).count();
    let limited: Vec<_> = answers.iter().filter(|a| a.0 == 429).collect();
    assert_eq!((ok, limited.len()), (50, 150), "exactly the rpm is answered");
    for (_, h, v) in &limited {
        assert_eq!(v["error"]["code"], "rate_limit_exceeded", "{v}");
        assert!(header(h, "retry-after").is_some_and(|s| s.parse::<u64>().unwrap() >= 1));
    }
    let ok_headers = &answers.iter().find(|a| a.0 == 200).unwrap().1;
    assert_eq!(header(ok_headers, "x-ratelimit-limit-requests"), Some("50"));
    assert!(header(ok_headers, "x-ratelimit-remaining-requests").is_some());
    assert_eq!(f.mock.requests().len(), 50, "refused requests reach no upstream");
}
both!(rpm_is_exact_under_concurrency);

async fn a_budget_is_never_overspent(redis: bool) {
    let f = Fixture::start(redis, "");
    let (id, secret) = f
        .key(json!({"name": "b", "budget_usd": 0.5, "budget_period": "month"}))
        .await;
    let answers = f.burst(&secret, 300, 32).await;
    let ok: Vec<_> = answers.iter().filter(|a| a.0 == 200).collect();
    let costs: f64 = ok
        .iter()
        .map(|a| header(&a.1, "x-llmr-cost-usd").unwrap().parse::<f64>().unwrap())
        .sum();
    assert!(
        answers
            .iter()
            .all(|a| a.0 == 200 || a.2["error"]["code"] == "insufficient_quota")
    );
    let v = f.settled(&format!("/admin/keys/{id}")).await;
    let spend = v["spend_usd"].as_f64().unwrap();
    assert!(
        (spend - costs).abs() < 1e-9,
        "spend {spend} = the cost headers' sum {costs}"
    );
    assert!(
        (0.48 - 1e-9..=0.5 + 1e-9).contains(&spend),
        "spend {spend} within [0.48, 0.50]"
    );
    assert_eq!(v["reserved_usd"], 0.0, "nothing stays reserved");
    // Spent: refused with insufficient_quota, and nothing more reaches the upstream.
    let before = f.mock.requests().len();
    let (status, last_headers, body) = f.chat(&secret, "priced").await;
    // A burst may end at $0.48 (the last reservations in flight refused the rest): then one
    // more request fits, and its cost joins the sum.
    let last_cost = match status {
        200 => header(&last_headers, "x-llmr-cost-usd")
            .unwrap()
            .parse::<f64>()
            .unwrap(),
        _ => 0.0,
    };
    if spend > 0.48 + 1e-9 {
        assert_eq!(
            (status, body["error"]["code"].as_str()),
            (429, Some("insufficient_quota"))
        );
        assert_eq!(f.mock.requests().len(), before);
    }
    // The spend endpoint agrees with the key's figure.
    let rows = f.admin_get("/admin/spend?group_by=key").await;
    let row = rows["data"]
        .as_array()
        .unwrap()
        .iter()
        .find(|r| r["key"] == id.as_str())
        .unwrap()
        .clone();
    assert!(
        (row["spend_usd"].as_f64().unwrap() - costs - last_cost).abs() < 1e-9,
        "{row}"
    );
    assert_eq!(row["requests"], ok.len() + usize::from(status == 200));
}
both!(a_budget_is_never_overspent);

async fn a_team_budget_caps_its_keys_together(redis: bool) {
    let f = Fixture::start(redis, "");
    let team = f
        .admin_post("/admin/teams", json!({"name": "t", "budget_usd": 0.1}))
        .await;
    let tid = team["id"].as_str().unwrap();
    let (_, a) = f.key(json!({"name": "a", "team": tid})).await;
    let (_, b) = f.key(json!({"name": "b", "team": tid})).await;
    let (ra, rb) = futures_util::join!(f.burst(&a, 20, 8), f.burst(&b, 20, 8));
    let mut ok = ra.iter().chain(&rb).filter(|x| x.0 == 200).count();
    // Then one at a time, alternating keys, until the team's budget refuses.
    f.settled(&format!("/admin/teams/{tid}")).await;
    for secret in [&a, &b].into_iter().cycle().take(20) {
        match f.chat(secret, "priced").await {
            (200, ..) => {
                ok += 1;
                // Settlement lands after the answer: the next one is admitted against it.
                f.settled(&format!("/admin/teams/{tid}")).await;
            }
            (status, _, v) => {
                assert_eq!(
                    (status, v["error"]["code"].as_str()),
                    (429, Some("insufficient_quota")),
                    "{v}"
                );
                break;
            }
        }
    }
    let v = f.settled(&format!("/admin/teams/{tid}")).await;
    let spend = v["spend_usd"].as_f64().unwrap();
    assert!((spend - ok as f64 * 0.01).abs() < 1e-9, "{ok} answers cost {spend}");
    assert!(
        (0.09 - 1e-9..=0.1 + 1e-9).contains(&spend),
        "two keys together stay within their team's $0.10: {v}"
    );
}
both!(a_team_budget_caps_its_keys_together);

async fn failures_release_their_reservation(redis: bool) {
    let f = Fixture::start(redis, "");
    let (id, secret) = f
        .key(json!({"name": "r", "budget_usd": 1.0, "max_parallel": 4, "max_queue_wait_ms": 30000}))
        .await;
    // A key's own bound on its requests' expected wait is kept with its limits.
    assert_eq!(
        f.admin_get(&format!("/admin/keys/{id}")).await["max_queue_wait_ms"],
        30000
    );
    f.mock.set_default(Behavior::status(500));
    for _ in 0..3 {
        let (status, _, _) = f.chat(&secret, "priced").await;
        assert!(status >= 500, "{status}");
    }
    f.mock.set_default(Behavior::ok());
    let (status, h, _) = f.chat(&secret, "priced").await;
    assert_eq!(status, 200);
    assert_eq!(header(&h, "x-llmr-cost-usd"), Some("0.010000"));
    // A stream the client abandons releases its reservation too.
    f.mock.set_default(Behavior {
        chunks: 50,
        chunk_delay: Duration::from_millis(50),
        ..Behavior::ok()
    });
    let mut body = chat_body("priced", "hi", true);
    body["max_tokens"] = json!(4);
    let mut resp = client()
        .post(f.url("/v1/chat/completions"))
        .insert_header(("authorization", format!("Bearer {secret}")))
        .send_json(&body)
        .await
        .unwrap();
    let _ = resp.next().await;
    drop(resp);
    let url = format!("/admin/keys/{id}");
    assert!(
        eventually(Duration::from_secs(5), || async {
            let v = f.admin_get(&url).await;
            v["reserved_usd"] == 0.0 && v["in_flight"] == 0
        })
        .await,
        "reservations are released"
    );
    let v = f.admin_get(&url).await;
    assert_eq!(v["spend_usd"], 0.01, "only the answered request is spent: {v}");
}
both!(failures_release_their_reservation);

async fn revoked_rotated_and_expired_keys_are_refused(redis: bool) {
    let f = Fixture::start(redis, "");
    let (id, secret) = f.key(json!({"name": "k"})).await;
    assert_eq!(f.chat(&secret, "priced").await.0, 200);
    let rotated = f.admin_post(&format!("/admin/keys/{id}/rotate"), json!({})).await;
    let new = rotated["key"].as_str().unwrap();
    assert_eq!(f.chat(&secret, "priced").await.0, 401, "the old secret is refused");
    assert_eq!(f.chat(new, "priced").await.0, 200);
    let auth = format!("Bearer {ADMIN}");
    let resp = client()
        .delete(f.url(&format!("/admin/keys/{id}")))
        .insert_header(("authorization", auth.as_str()))
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status().as_u16(), 200);
    let (status, _, v) = f.chat(new, "priced").await;
    assert_eq!(
        (status, v["error"]["code"].as_str()),
        (401, Some("invalid_api_key")),
        "{v}"
    );
    let soon = llmr_protocol::now_ms() / 1000 + 1;
    let (_, expiring) = f.key(json!({"name": "e", "expires_at": soon})).await;
    assert!(
        eventually(Duration::from_secs(5), || async {
            f.chat(&expiring, "priced").await.0 == 401
        })
        .await,
        "an expired key is refused at its time"
    );
    // A virtual key is no admin token, and the admin token is no virtual key.
    let (status, _) = get(&f.url("/admin/keys"), &[("authorization", &format!("Bearer {new}"))]).await;
    assert_eq!(status, 401);
    assert_eq!(f.chat(ADMIN, "priced").await.0, 401);
}
both!(revoked_rotated_and_expired_keys_are_refused);

async fn a_key_sees_and_reaches_only_its_models(redis: bool) {
    let f = Fixture::start(redis, "");
    let (_, secret) = f.key(json!({"name": "m", "models": ["pri*"]})).await;
    let auth = format!("Bearer {secret}");
    let (_, models) = get(&f.url("/v1/models"), &[("authorization", &auth)]).await;
    let ids: Vec<&str> = models["data"]
        .as_array()
        .unwrap()
        .iter()
        .map(|m| m["id"].as_str().unwrap())
        .collect();
    assert_eq!(ids, ["priced"], "{models}");
    let before = f.mock.requests().len();
    let (status, _, v) = f.chat(&secret, "other").await;
    assert_eq!(
        (status, v["error"]["code"].as_str()),
        (403, Some("permission_denied")),
        "{v}"
    );
    assert_eq!(f.mock.requests().len(), before, "refused before any upstream");
    assert_eq!(f.chat(&secret, "priced").await.0, 200);
}
both!(a_key_sees_and_reaches_only_its_models);

async fn the_request_log_has_one_record_per_request(redis: bool) {
    let f = Fixture::start(redis, "");
    let (id, secret) = f.key(json!({"name": "log", "rpm": 3})).await;
    let answers = f.burst(&secret, 5, 1).await;
    assert_eq!(answers.iter().filter(|a| a.0 == 200).count(), 3);
    f.settled(&format!("/admin/keys/{id}")).await;
    let v = f.admin_get(&format!("/admin/requests?key={id}")).await;
    let records = v["data"].as_array().unwrap();
    assert_eq!(records.len(), 5, "{v}");
    let ok: Vec<_> = records.iter().filter(|r| r["status"] == 200).collect();
    assert_eq!(ok.len(), 3);
    for r in &ok {
        assert_eq!(r["provider"], "up");
        assert_eq!(r["target_model"], "priced");
        assert_eq!(r["model"], "priced");
        assert_eq!(r["route"], "chat");
        assert_eq!(r["output_tokens"], 2);
        assert_eq!(r["cost_usd"], 0.01);
        assert_eq!(r["attempts"], 1);
    }
    let limited: Vec<_> = records.iter().filter(|r| r["status"] == 429).collect();
    assert_eq!(limited.len(), 2);
    assert_eq!(limited[0]["error_type"], "rate_limit_exceeded");
    // Newest first, and `before` pages on.
    let first = f.admin_get(&format!("/admin/requests?key={id}&limit=2")).await;
    let cursor = first["next_before"].as_str().unwrap();
    let rest = f.admin_get(&format!("/admin/requests?key={id}&before={cursor}")).await;
    assert_eq!(rest["data"].as_array().unwrap().len(), 3);
    assert!(first["data"][0]["time_ms"].as_u64() >= rest["data"][0]["time_ms"].as_u64());
    // Export as JSON lines.
    let (status, text) = get_text_auth(&f.url(&format!("/admin/requests?key={id}&format=jsonl")), ADMIN).await;
    assert_eq!((status, text.lines().count()), (200, 5));
}
both!(the_request_log_has_one_record_per_request);

async fn cache_entries_of_one_team_never_answer_another(redis: bool) {
    let f = Fixture::start(redis, "[cache]\nenabled = true\n");
    let t1 = f.admin_post("/admin/teams", json!({"name": "t1"})).await;
    let t2 = f.admin_post("/admin/teams", json!({"name": "t2"})).await;
    let (_, a) = f.key(json!({"name": "a", "team": t1["id"]})).await;
    let (_, a2) = f.key(json!({"name": "a2", "team": t1["id"]})).await;
    let (_, b) = f.key(json!({"name": "b", "team": t2["id"]})).await;
    assert_eq!(cached(&f, &a).await, "miss");
    assert!(
        eventually(Duration::from_secs(5), || async { cached(&f, &a2).await == "hit" }).await,
        "a key of the same team is answered from the team's entry"
    );
    assert_eq!(cached(&f, &b).await, "miss", "another team's entry never answers");
}
both!(cache_entries_of_one_team_never_answer_another);

/// The `x-llmr-cache` answer of a deterministic chat with `secret`.
async fn cached(f: &Fixture, secret: &str) -> String {
    let mut body = chat_body("priced", "same question", false);
    body["temperature"] = json!(0);
    let resp = client()
        .post(f.url("/v1/chat/completions"))
        .insert_header(("authorization", format!("Bearer {secret}")))
        .send_json(&body)
        .await
        .unwrap();
    header(resp.headers(), "x-llmr-cache").unwrap_or_default().to_owned()
}

/// The `max_tokens` the upstream was sent for a chat that named none, made with `secret`.
async fn sent(f: &Fixture, secret: &str) -> Value {
    let before = f.mock.requests().len();
    let auth = format!("Bearer {secret}");
    let (status, _) = post_with(
        &f.url("/v1/chat/completions"),
        &chat_body("priced", "hi", false),
        &[("authorization", &auth)],
    )
    .await;
    assert_eq!(status, 200);
    f.mock.requests()[before].body["max_tokens"].clone()
}

/// A DELETE with the admin token: its status.
async fn delete(f: &Fixture, path: &str) -> u16 {
    let resp = client()
        .delete(f.url(path))
        .insert_header(("authorization", format!("Bearer {ADMIN}")))
        .send()
        .await
        .unwrap();
    resp.status().as_u16()
}

async fn get_text_auth(url: &str, token: &str) -> (u16, String) {
    let mut resp = client()
        .get(url)
        .insert_header(("authorization", format!("Bearer {token}")))
        .send()
        .await
        .unwrap();
    let b = resp.body().await.unwrap();
    (resp.status().as_u16(), String::from_utf8_lossy(&b).into_owned())
}

/// One JSON-RPC exchange on `/mcp` with `secret` (and the session, once there is one).
async fn mcp(f: &Fixture, secret: &str, session: Option<&str>, msg: Value) -> (Value, Option<String>) {
    let mut req = client()
        .post(f.url("/mcp"))
        .insert_header(("authorization", format!("Bearer {secret}")))
        .insert_header(("accept", "application/json, text/event-stream"));
    if let Some(s) = session {
        req = req.insert_header(("mcp-session-id", s));
    }
    let mut resp = req.send_json(&msg).await.unwrap();
    let sid = header(resp.headers(), "mcp-session-id").map(str::to_owned);
    let body = resp.body().await.unwrap();
    (serde_json::from_slice(&body).unwrap_or_default(), sid)
}

async fn a_key_lists_and_calls_only_its_tools(redis: bool) {
    let f = Fixture::start(redis, "");
    let (id, secret) = f.key(json!({"name": "tools", "tools": ["tool_*"]})).await;
    let init = json!({"jsonrpc": "2.0", "id": 0, "method": "initialize", "params": {"protocolVersion": "2025-06-18", "capabilities": {}, "clientInfo": {"name": "t", "version": "1"}}});
    let (_, sid) = mcp(&f, &secret, None, init).await;
    let sid = sid.expect("a session");
    let list = json!({"jsonrpc": "2.0", "id": 1, "method": "tools/list", "params": {}});
    let (v, _) = mcp(&f, &secret, Some(&sid), list.clone()).await;
    let names: Vec<&str> = v["result"]["tools"]
        .as_array()
        .unwrap()
        .iter()
        .map(|t| t["name"].as_str().unwrap())
        .collect();
    assert_eq!(names, ["tool_search"], "{v}");
    let call =
        json!({"jsonrpc": "2.0", "id": 2, "method": "tools/call", "params": {"name": "execute_tool", "arguments": {}}});
    let (v, _) = mcp(&f, &secret, Some(&sid), call).await;
    assert!(
        v["error"]["message"]
            .as_str()
            .unwrap_or_default()
            .contains("may not call"),
        "{v}"
    );
    // The tool call is in the request log, the tool as its model.
    let url = format!("/admin/requests?key={id}");
    assert!(
        eventually(Duration::from_secs(5), || async {
            let log = f.admin_get(&url).await;
            log["data"][0]["route"] == "mcp" && log["data"][0]["model"] == "execute_tool"
        })
        .await,
        "{}",
        f.admin_get(&url).await
    );
    // The unrestricted token sees every built-in.
    let (_, sid) = mcp(&f, "main-token", None, json!({"jsonrpc": "2.0", "id": 0, "method": "initialize", "params": {"protocolVersion": "2025-06-18", "capabilities": {}, "clientInfo": {"name": "t", "version": "1"}}})).await;
    let (v, _) = mcp(&f, "main-token", sid.as_deref(), list).await;
    assert!(v["result"]["tools"].as_array().unwrap().len() >= 2, "{v}");
}
both!(a_key_lists_and_calls_only_its_tools);

async fn usage_answers_a_key_with_its_own_figures(redis: bool) {
    let f = Fixture::start(redis, "");
    let (id, secret) = f.key(json!({"name": "u"})).await;
    assert_eq!(f.chat(&secret, "priced").await.0, 200);
    assert_eq!(f.chat("main-token", "priced").await.0, 200);
    // Settlement lands after the answer: wait for it.
    let usage = f.url("/v1/usage");
    let auth = format!("Bearer {secret}");
    assert!(
        eventually(Duration::from_secs(5), || async {
            get(&usage, &[("authorization", &auth)]).await.1["data"][0]["requests"] == 1
        })
        .await
    );
    let (status, v) = get(&usage, &[("authorization", &auth)]).await;
    assert_eq!(status, 200);
    assert_eq!(v["key"], id.as_str());
    assert_eq!(v["data"].as_array().unwrap().len(), 1, "{v}");
    assert_eq!(v["data"][0]["requests"], 1);
    assert_eq!(v["data"][0]["spend_usd"], 0.01);
    // server.token still reads every provider key's usage.
    let (_, all) = get(&f.url("/v1/usage"), &[("authorization", "Bearer main-token")]).await;
    assert!(
        all["data"].as_array().unwrap().iter().any(|r| r["requests"] == 2),
        "{all}"
    );
}
both!(usage_answers_a_key_with_its_own_figures);

/// Two gateways, a router and two workers as processes over one redis-server: limits and
/// budgets hold across every gateway and worker.
mod cluster {
    use super::*;
    use llmr_testkit::{ProcessCluster, free_port, wait_for_port};

    struct TwoGateways {
        procs: ProcessCluster,
        mock: MockUpstream,
        second: u16,
    }

    impl TwoGateways {
        async fn start() -> TwoGateways {
            let mock = MockUpstream::start(&["priced"]);
            let toml = format!(
                "{ECHO}[[providers]]\nname = \"up\"\ntype = \"openai\"\nbase_url = \"{}\"\nmodels = [\"priced\"]\ncost_output_per_mtok = 5000.0\n",
                mock.base_url()
            );
            let cfg = TestConfig::new(toml)
                .env("LLMR__SERVER__TOKEN", "main-token")
                .env("LLMR__SERVER__ADMIN_TOKEN", ADMIN);
            let bin = std::path::PathBuf::from(env!("CARGO_BIN_EXE_llmrouter"));
            let mut procs = ProcessCluster::new(&bin, cfg, true);
            procs.spawn("router", &["router"]);
            procs.spawn("worker", &["worker", "--pool", "default"]);
            procs.spawn("worker", &["worker", "--pool", "default"]);
            procs.spawn("gateway", &["gateway"]);
            let second = free_port();
            procs.spawn_with("gateway", &["gateway"], &[("LLMR__SERVER__PORT", second.to_string())]);
            assert!(procs.listening(Duration::from_secs(20)) && wait_for_port(second, Duration::from_secs(20)));
            let c = TwoGateways { procs, mock, second };
            for port in [c.procs.port, second] {
                let url = format!("http://127.0.0.1:{port}/v1/chat/completions");
                assert!(
                    eventually(Duration::from_secs(20), || async {
                        let mut b = chat_body("priced", "hi", false);
                        b["max_tokens"] = json!(4);
                        post_with(&url, &b, &[("authorization", "Bearer main-token")]).await.0 == 200
                    })
                    .await,
                    "the cluster never answered"
                );
            }
            c
        }

        fn url(&self, i: usize, path: &str) -> String {
            let port = if i.is_multiple_of(2) {
                self.procs.port
            } else {
                self.second
            };
            format!("http://127.0.0.1:{port}{path}")
        }

        async fn key(&self, body: Value) -> (String, String) {
            let auth = format!("Bearer {ADMIN}");
            let (status, b) = post_with(&self.url(0, "/admin/keys"), &body, &[("authorization", &auth)]).await;
            assert_eq!(status, 201, "{}", String::from_utf8_lossy(&b));
            let v = json(&b);
            (
                v["id"].as_str().unwrap().to_owned(),
                v["key"].as_str().unwrap().to_owned(),
            )
        }

        async fn chat(&self, i: usize, secret: &str) -> (u16, Option<f64>, Value) {
            let mut body = chat_body("priced", "hi", false);
            body["max_tokens"] = json!(4);
            let mut resp = client()
                .post(self.url(i, "/v1/chat/completions"))
                .insert_header(("authorization", format!("Bearer {secret}")))
                .send_json(&body)
                .await
                .unwrap();
            let b = resp.body().await.unwrap();
            let cost = header(resp.headers(), "x-llmr-cost-usd").map(|c| c.parse().unwrap());
            (
                resp.status().as_u16(),
                cost,
                serde_json::from_slice(&b).unwrap_or_default(),
            )
        }

        /// `n` chats at concurrency `c`, alternating gateways.
        async fn burst(&self, secret: &str, n: usize, c: usize) -> Vec<(u16, Option<f64>, Value)> {
            futures_util::stream::iter(0..n)
                .map(|i| self.chat(i, secret))
                .buffer_unordered(c)
                .collect()
                .await
        }

        /// A key's figures through the second gateway, once nothing of it is in flight.
        async fn settled(&self, id: &str) -> Value {
            assert!(
                eventually(Duration::from_secs(5), || async {
                    let v = self.show(id).await;
                    v["in_flight"] == 0 && v["reserved_usd"] == 0.0
                })
                .await
            );
            self.show(id).await
        }

        /// A key's figures, through the second gateway.
        async fn show(&self, id: &str) -> Value {
            let (status, v) = get(
                &self.url(1, &format!("/admin/keys/{id}")),
                &[("authorization", &format!("Bearer {ADMIN}"))],
            )
            .await;
            assert_eq!(status, 200, "{v}");
            v
        }

        /// Waits until the second gateway knows the key (it polls the store every 250 ms).
        async fn known_everywhere(&self, secret: &str) {
            assert!(
                eventually(Duration::from_secs(2), || async { self.chat(1, secret).await.0 != 401 }).await,
                "the second gateway never learned the key"
            );
        }
    }

    #[actix_rt::test]
    async fn a_key_made_on_one_gateway_works_at_once_on_the_other() {
        let c = TwoGateways::start().await;
        let (_, secret) = c.key(json!({"name": "now"})).await;
        // No wait for the other gateway's poll: an unknown key makes it read the store once.
        assert_eq!(c.chat(1, &secret).await.0, 200);
        assert_eq!(c.chat(1, "sk-llmr-not-a-key").await.0, 401);
    }

    #[actix_rt::test]
    async fn rpm_is_exact_across_two_gateways() {
        let c = TwoGateways::start().await;
        let (_, secret) = c.key(json!({"name": "ci", "rpm": 50})).await;
        c.known_everywhere(&secret).await;
        let upstream_before = c.mock.requests().len();
        let answers = c.burst(&secret, 199, 32).await;
        let ok = answers.iter().filter(|a| a.0 == 200).count();
        let limited = answers
            .iter()
            .filter(|a| a.0 == 429 && a.2["error"]["code"] == "rate_limit_exceeded")
            .count();
        // The one request `known_everywhere` spent counts toward the 50.
        assert_eq!((ok, limited), (49, 150), "exactly 50 in the window over both gateways");
        eprintln!(
            "rpm 50 over two gateways: {} answered, {limited} refused of 200",
            ok + 1
        );
        assert_eq!(
            c.mock.requests().len() - upstream_before,
            49,
            "refused requests reach no upstream"
        );
    }

    #[actix_rt::test]
    async fn a_budget_holds_across_two_gateways_and_two_workers() {
        let c = TwoGateways::start().await;
        let (id, secret) = c.key(json!({"name": "b", "budget_usd": 0.5})).await;
        c.known_everywhere(&secret).await;
        let answers = c.burst(&secret, 299, 32).await;
        let costs: f64 = answers.iter().filter_map(|a| a.1).sum::<f64>() + 0.01;
        assert!(
            answers
                .iter()
                .all(|a| a.0 == 200 || a.2["error"]["code"] == "insufficient_quota")
        );
        let v = c.settled(&id).await;
        let spend = v["spend_usd"].as_f64().unwrap();
        assert!(
            (spend - costs).abs() < 1e-9,
            "spend {spend} = the cost headers' sum {costs}"
        );
        assert!(
            (0.48 - 1e-9..=0.5 + 1e-9).contains(&spend),
            "spend {spend} within [0.48, 0.50]"
        );
        assert_eq!(v["reserved_usd"], 0.0);
        let ok = answers.iter().filter(|a| a.0 == 200).count() + 1;
        eprintln!("budget $0.50 over two gateways: {ok} answered of 300, spend ${spend:.6}, reserved $0");
    }

    #[actix_rt::test]
    async fn a_revoked_key_is_refused_by_every_gateway_within_a_second() {
        let c = TwoGateways::start().await;
        let (id, secret) = c.key(json!({"name": "r"})).await;
        c.known_everywhere(&secret).await;
        let auth = format!("Bearer {ADMIN}");
        let resp = client()
            .delete(c.url(0, &format!("/admin/keys/{id}")))
            .insert_header(("authorization", auth.as_str()))
            .send()
            .await
            .unwrap();
        assert_eq!(resp.status().as_u16(), 200);
        let revoked = std::time::Instant::now();
        assert_eq!(
            c.chat(0, &secret).await.0,
            401,
            "the gateway that revoked it refuses at once"
        );
        assert!(
            eventually(Duration::from_secs(1), || async { c.chat(1, &secret).await.0 == 401 }).await,
            "the other gateway refuses within 1 s"
        );
        assert!(revoked.elapsed() < Duration::from_secs(1));
    }
}

async fn responses_are_admitted_and_settled_like_chats(redis: bool) {
    let f = Fixture::start(redis, "");
    let (id, secret) = f
        .key(json!({"name": "resp", "models": ["priced"], "budget_usd": 1.0}))
        .await;
    let post_resp = |body: Value| {
        let (url, secret) = (f.url("/v1/responses"), secret.clone());
        async move {
            let mut resp = client()
                .post(url)
                .insert_header(("authorization", format!("Bearer {secret}")))
                .send_json(&body)
                .await
                .unwrap();
            let b = resp.body().await.unwrap();
            let cost = header(resp.headers(), "x-llmr-cost-usd").map(str::to_owned);
            (
                resp.status().as_u16(),
                cost,
                serde_json::from_slice::<Value>(&b).unwrap_or_default(),
            )
        }
    };
    let (status, cost, v) = post_resp(json!({"model": "priced", "input": "hi", "max_output_tokens": 4})).await;
    assert_eq!(status, 200, "{v}");
    assert_eq!(cost.as_deref(), Some("0.010000"), "{v}");
    let (status, _, v) = post_resp(json!({"model": "echo", "input": "hi"})).await;
    assert_eq!(
        (status, v["error"]["code"].as_str()),
        (403, Some("permission_denied")),
        "{v}"
    );
    let (status, _, v) = post_resp(json!({"model": "priced", "input": "hi", "background": true})).await;
    assert_eq!((status, v["error"]["param"].as_str()), (400, Some("background")), "{v}");
    let k = f.settled(&format!("/admin/keys/{id}")).await;
    assert_eq!(k["spend_usd"], 0.01, "{k}");
    let log = f.admin_get(&format!("/admin/requests?key={id}")).await;
    let routes: Vec<&str> = log["data"]
        .as_array()
        .unwrap()
        .iter()
        .map(|r| r["route"].as_str().unwrap())
        .collect();
    assert_eq!(
        routes,
        ["responses", "responses"],
        "the 400 for background is refused before admission: {log}"
    );
}
both!(responses_are_admitted_and_settled_like_chats);

async fn keys_and_teams_declared_in_the_config_file_work(redis: bool) {
    let hashed = "sk-llmr-hashed-secret";
    let digest = llmr_gateway::keys::hash_secret(hashed);
    let extra = format!(
        "[[teams]]\nname = \"ops\"\nrpm = 2\n\n[[keys]]\nname = \"from-env\"\nkey = \"${{LLMR_TEST_KEY}}\"\nteam = \"ops\"\nmodels = [\"priced\"]\n\n[[keys]]\nname = \"from-hash\"\nhash = \"{digest}\"\nbudget_usd = 0.025\n"
    );
    let f = {
        let mock = MockUpstream::start(&["priced"]);
        let toml = format!(
            "{ECHO}[[providers]]\nname = \"up\"\ntype = \"openai\"\nbase_url = \"{}\"\nmodels = [\"priced\", \"other\"]\ncost_output_per_mtok = 5000.0\n{extra}",
            mock.base_url()
        );
        let cfg = TestConfig::new(toml)
            .env("LLMR__SERVER__ADMIN_TOKEN", ADMIN)
            .env("LLMR_TEST_KEY", "sk-llmr-from-the-environment");
        Fixture {
            app: InProcess::start(redis, cfg),
            mock,
        }
    };
    let env_key = "sk-llmr-from-the-environment";
    assert_eq!(f.chat(env_key, "priced").await.0, 200);
    assert_eq!(f.chat(env_key, "other").await.0, 403, "the file's model list holds");
    assert_eq!(f.chat(env_key, "priced").await.0, 200);
    let (status, _, v) = f.chat(env_key, "priced").await;
    assert_eq!(
        (status, v["error"]["code"].as_str()),
        (429, Some("rate_limit_exceeded")),
        "the team's rpm: {v}"
    );
    assert_eq!(f.chat(hashed, "priced").await.0, 200);
    let (status, _, v) = f.chat(hashed, "priced").await;
    assert_eq!(
        (status, v["error"]["code"].as_str()),
        (429, Some("insufficient_quota")),
        "{v}"
    );
    let keys = f.admin_get("/admin/keys").await;
    let names: Vec<&str> = keys["data"]
        .as_array()
        .unwrap()
        .iter()
        .map(|k| k["name"].as_str().unwrap())
        .collect();
    assert_eq!(names, ["from-env", "from-hash"]);
    assert!(
        keys["data"]
            .as_array()
            .unwrap()
            .iter()
            .all(|k| k["from_config"] == true && k.get("hash").is_none())
    );
}
both!(keys_and_teams_declared_in_the_config_file_work);

async fn the_admin_api_refuses_what_it_cannot_honour(redis: bool) {
    let f = Fixture::start(redis, "");
    let auth = format!("Bearer {ADMIN}");
    let h = [("authorization", auth.as_str())];
    for q in [
        "group_by=AAA",
        "from=2024-13-45",
        "from=0000-00-00",
        "from=2020-01-01&to=2999-12-31",
    ] {
        let (status, v) = get(&f.url(&format!("/admin/spend?{q}")), &h).await;
        assert_eq!(status, 400, "{q}: {v}");
    }
    let (status, b) = post_with(
        &f.url("/admin/keys"),
        &json!({"name": "x", "expires_at": u64::MAX / 10}),
        &h,
    )
    .await;
    assert_eq!(status, 400, "{}", String::from_utf8_lossy(&b));
    let (status, _) = post_with(&f.url("/admin/keys"), &json!({"name": "x", "bogus": 1}), &h).await;
    assert_eq!(status, 400, "unknown fields are refused");
    // A team with live keys is not deleted from under them.
    let team = f.admin_post("/admin/teams", json!({"name": "t"})).await;
    let tid = team["id"].as_str().unwrap();
    let (kid, _) = f.key(json!({"name": "in-team", "team": tid})).await;
    assert_eq!(delete(&f, &format!("/admin/teams/{tid}")).await, 400);
    assert_eq!(delete(&f, &format!("/admin/keys/{kid}")).await, 200);
    assert_eq!(delete(&f, &format!("/admin/teams/{tid}")).await, 200);
    assert_eq!(delete(&f, &format!("/admin/teams/{tid}")).await, 404);
}
both!(the_admin_api_refuses_what_it_cannot_honour);

async fn a_request_without_a_cap_is_sent_with_the_one_it_reserved(redis: bool) {
    let f = Fixture::start(redis, "");
    let (_, budgeted) = f.key(json!({"name": "b", "budget_usd": 100.0})).await;
    let (_, capped) = f.key(json!({"name": "c", "tpm": 100_000, "max_tokens": 7})).await;
    let (_, free) = f.key(json!({"name": "f", "rpm": 100})).await;
    assert_eq!(
        sent(&f, &budgeted).await,
        json!(4096),
        "the default cap, reserved and sent"
    );
    assert_eq!(sent(&f, &capped).await, json!(7), "the key's own cap");
    assert_eq!(
        sent(&f, &free).await,
        Value::Null,
        "nothing counts its tokens: the body goes as it came"
    );
}
both!(a_request_without_a_cap_is_sent_with_the_one_it_reserved);
