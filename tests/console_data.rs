//! The operator console's JSON beside keys, spend and the request log, end to end on both
//! backends (`llmrouter all` in process, real HTTP): `/admin/providers`, `/admin/plan`,
//! `/admin/cluster`, `/admin/tools` and `/admin/config` — their shape, the admin token they
//! need, that no secret (provider key, `server.token`, the admin token, Redis's password, a
//! remote server's token) ever shows, and the plan of a group whose first target cools down.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic, clippy::print_stderr)]

#[macro_use]
mod common;

use std::path::PathBuf;
use std::time::Duration;

use common::*;
use llmr_testkit::{Behavior, MockUpstream, RedisServer, unique_prefix};
use serde_json::{Value, json};

const ADMIN: &str = "console-admin-secret-0001";
const TOKEN: &str = "console-main-token-0002";
/// Provider keys: long enough to be masked with their last four characters.
const KEY_A: &str = "sk-console-provider-a-key-0003";
const KEY_B: &str = "sk-console-provider-b-key-0004";
const REMOTE_TOKEN: &str = "remote-server-token-0005";
const REDIS_PASSWORD: &str = "redis-pass-0006";
const ENDPOINTS: [&str; 5] = [
    "/admin/providers",
    "/admin/plan?model=g",
    "/admin/cluster",
    "/admin/tools",
    "/admin/config",
];

/// A tool that loads, and one that does not.
const HELLO: &str = r#"export const description = "Says hello.";
export default function ({ name }) { return "hello " + name; }"#;
const BROKEN: &str = "export const description = ;";

struct Fixture {
    app: InProcess,
    a: MockUpstream,
    _b: MockUpstream,
    tools: PathBuf,
}

/// Two mock upstreams `a` and `b` (one key each) serving `m`, the group `g` over them in
/// that order (`first_available`), a tools directory with [`HELLO`] and [`BROKEN`], and an
/// unreachable remote MCP server with a token; `redis_password`: over a redis-server whose
/// only user needs one.
fn start(redis: bool, redis_password: bool) -> Fixture {
    let (a, b) = (MockUpstream::start(&[]), MockUpstream::start(&[]));
    let tools = std::env::temp_dir().join(format!(
        "llmr-console-tools-{}-{}",
        std::process::id(),
        llmr_testkit::free_port()
    ));
    std::fs::create_dir_all(&tools).unwrap();
    std::fs::write(tools.join("hello.js"), HELLO).unwrap();
    std::fs::write(tools.join("broken.js"), BROKEN).unwrap();
    let toml = format!(
        "{}{}[[models]]\nname = \"g\"\nstrategy = \"first_available\"\ntargets = [{{provider = \"a\", model = \"m\"}}, {{provider = \"b\", model = \"m\"}}]\n\
         [[mcp.remote_servers]]\nnamespace = \"far\"\nurl = \"http://127.0.0.1:1/mcp?token={REMOTE_TOKEN}\"\ntoken = \"{REMOTE_TOKEN}\"\nallow_internal = true\n",
        provider_entry("a", &a.base_url(), &["m"], &[KEY_A]),
        provider_entry("b", &b.base_url(), &["m"], &[KEY_B]),
    );
    let cfg = TestConfig::new(toml)
        .env("LLMR__SERVER__TOKEN", TOKEN)
        .env("LLMR__SERVER__ADMIN_TOKEN", ADMIN)
        .env("LLMR__SCRIPTING__TOOLS_PATH", tools.display())
        .env(
            "LLMR__SCRIPTING__HOST_COMMAND",
            format!("{} script-host", env!("CARGO_BIN_EXE_llmrouter")),
        );
    let app = if redis && redis_password {
        let server = RedisServer::start_with_user("llmr", REDIS_PASSWORD);
        let cfg = cfg
            .env("LLMR__SERVER__PORT", 0)
            .env(
                "LLMR__REDIS__URL",
                format!("redis://llmr:{REDIS_PASSWORD}@127.0.0.1:{}/", server.port),
            )
            .env("LLMR__REDIS__PREFIX", unique_prefix("console"));
        let app = llmrouter::spawn(llmrouter::Role::All, cfg.settings()).expect("llmrouter all starts");
        InProcess {
            app,
            redis: Some(server),
        }
    } else {
        InProcess::start(redis, cfg)
    };
    Fixture { app, a, _b: b, tools }
}

impl Fixture {
    /// GETs an admin path with the admin token: its JSON and raw text.
    async fn admin(&self, path: &str) -> (Value, String) {
        let (status, text) = get_as(&self.app.url(path), Some(ADMIN)).await;
        assert_eq!(status, 200, "{path}: {text}");
        (serde_json::from_str(&text).unwrap(), text)
    }

    /// GETs an admin path until `ok` holds of its answer (state the services publish).
    async fn admin_until(&self, path: &str, ok: impl Fn(&Value) -> bool) -> Value {
        let mut last = Value::Null;
        for _ in 0..200 {
            last = self.admin(path).await.0;
            if ok(&last) {
                return last;
            }
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
        panic!("{path} never got there: {last:#}");
    }

    async fn chat(&self, model: &str) -> u16 {
        let auth = format!("Bearer {TOKEN}");
        let (status, body) = post_with(
            &self.app.url("/v1/chat/completions"),
            &chat_body(model, "hi", false),
            &[("authorization", &auth)],
        )
        .await;
        if status != 200 {
            eprintln!("{model}: {status} {}", String::from_utf8_lossy(&body));
        }
        status
    }
}

impl Drop for Fixture {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.tools);
    }
}

/// GET with an optional Bearer token: status and body text.
async fn get_as(url: &str, token: Option<&str>) -> (u16, String) {
    let mut req = client().get(url);
    if let Some(t) = token {
        req = req.insert_header(("authorization", format!("Bearer {t}")));
    }
    let mut resp = req.send().await.unwrap_or_else(|e| panic!("GET {url}: {e}"));
    let body = resp.body().limit(16 << 20).await.unwrap();
    (resp.status().as_u16(), String::from_utf8_lossy(&body).into_owned())
}

/// The one whose `field` is `value` in the list `v`.
fn find<'a>(v: &'a Value, field: &str, value: &str) -> &'a Value {
    v.as_array()
        .unwrap_or_else(|| panic!("not a list: {v}"))
        .iter()
        .find(|x| x[field] == value)
        .unwrap_or_else(|| panic!("no {field} = {value} in {v:#}"))
}

fn show(what: &str, v: &Value) {
    eprintln!("{what}:\n{}", serde_json::to_string_pretty(v).unwrap());
}

async fn every_endpoint_needs_the_admin_token(redis: bool) {
    let f = start(redis, false);
    for path in ENDPOINTS {
        for token in [None, Some(TOKEN), Some("wrong")] {
            let (status, text) = get_as(&f.app.url(path), token).await;
            assert_eq!(status, 401, "{path} with {token:?}: {text}");
            let v: Value = serde_json::from_str(&text).unwrap();
            assert_eq!(v["error"]["type"], "authentication_error", "{v}");
        }
    }
    // Bad queries are the client's, in OpenAI's error shape.
    for path in ["/admin/plan", "/admin/plan?model=g&bogus=1"] {
        let (status, text) = get_as(&f.app.url(path), Some(ADMIN)).await;
        let v: Value = serde_json::from_str(&text).unwrap();
        assert_eq!(
            (status, v["error"]["type"].as_str()),
            (400, Some("invalid_request_error")),
            "{path}: {v}"
        );
    }
    let (status, text) = get_as(&f.app.url("/admin/plan?model=nope"), Some(ADMIN)).await;
    let v: Value = serde_json::from_str(&text).unwrap();
    assert_eq!(
        (status, v["error"]["code"].as_str()),
        (404, Some("model_not_found")),
        "{v}"
    );
}
both!(every_endpoint_needs_the_admin_token);

async fn providers_show_health_type_load_and_masked_keys(redis: bool) {
    let f = start(redis, false);
    assert_eq!(f.chat("g").await, 200);
    let v = f
        .admin_until("/admin/providers", |v| {
            v["targets"].as_array().is_some_and(|t| t.len() == 2)
                && find(&v["targets"], "target", "a/m")["latency_ms"].is_number()
        })
        .await;
    show("GET /admin/providers", &v);
    assert!(v["now_ms"].as_u64().unwrap() > 1_700_000_000_000);
    let a = find(&v["providers"], "name", "a");
    assert_eq!(
        (a["type"].as_str(), a["state"].as_str()),
        (Some("openai"), Some("ok")),
        "{a}"
    );
    assert_eq!(
        (a["error"].clone(), a["models"].clone(), a["load"].clone()),
        (Value::Null, json!(["m"]), json!(0))
    );
    assert!(a["latency_ms"].is_number(), "{a}");
    let key = &a["keys"][0];
    assert_eq!(key["key"], "a#0");
    assert_eq!(key["masked"], format!("sk-…{}", &KEY_A[KEY_A.len() - 4..]));
    assert_eq!(
        (key["available"].as_str(), key["circuit"].as_str()),
        (Some("available"), Some("closed"))
    );
    assert_eq!(key["failures"], 0);
    let t = find(&v["targets"], "target", "b/m");
    for field in [
        "available",
        "circuit",
        "failures",
        "cooldown_until_ms",
        "open_until_ms",
        "latency_ms",
        "load",
    ] {
        assert!(t.get(field).is_some(), "{field} in {t}");
    }
}
both!(providers_show_health_type_load_and_masked_keys);

async fn the_plan_puts_a_cooling_target_last(redis: bool) {
    let f = start(redis, false);
    let (plan, _) = f.admin("/admin/plan?model=g").await;
    assert_eq!(
        (
            plan["model"].as_str(),
            plan["group"].as_str(),
            plan["strategy"].as_str()
        ),
        (Some("g"), Some("g"), Some("first_available"))
    );
    let order: Vec<(&str, &Value)> = plan["targets"]
        .as_array()
        .unwrap()
        .iter()
        .map(|t| (t["target"].as_str().unwrap(), &t["skipped"]))
        .collect();
    assert_eq!(order, vec![("a/m", &Value::Null), ("b/m", &Value::Null)], "{plan}");
    // `a` answers 429 for a minute: the request fails over to `b`, and `a` cools down.
    f.a.set_default(Behavior {
        status: 429,
        retry_after: Some("60".into()),
        ..Behavior::ok()
    });
    assert_eq!(f.chat("g").await, 200);
    let plan = f
        .admin_until("/admin/plan?model=g", |p| p["targets"][0]["target"] == "b/m")
        .await;
    show("GET /admin/plan?model=g (a cooling)", &plan);
    assert_eq!(plan["pool"], "default");
    let (first, last) = (&plan["targets"][0], &plan["targets"][1]);
    assert_eq!(
        (first["skipped"].clone(), first["available"].as_str()),
        (Value::Null, Some("available"))
    );
    assert_eq!(first["key"], "b#0");
    assert_eq!(
        (last["target"].as_str(), last["available"].as_str()),
        (Some("a/m"), Some("cooling"))
    );
    let why = last["skipped"].as_str().unwrap();
    assert!(why.contains("cooling down"), "{why}");
    // The key took the 429: the plan and /admin/providers agree.
    let (providers, _) = f.admin("/admin/providers").await;
    let key = &find(&providers["providers"], "name", "a")["keys"][0];
    assert_eq!(key["available"], "cooling", "{key}");
    assert!(why.contains(&key["cooldown_until_ms"].to_string()), "{why} vs {key}");
}
both!(the_plan_puts_a_cooling_target_last);

async fn the_cluster_shows_instances_streams_and_pools(redis: bool) {
    let f = start(redis, false);
    let v = f
        .admin_until("/admin/cluster", |v| {
            ["gateway", "router", "worker", "mcp-tools"]
                .iter()
                .all(|s| v["instances"].as_array().unwrap().iter().any(|i| i["service"] == *s))
        })
        .await;
    show("GET /admin/cluster", &v);
    assert_eq!(v["backend"], if redis { "redis" } else { "memory" });
    assert_eq!(
        (v["status"].as_str(), v["reasons"].clone()),
        (Some("ok"), json!([])),
        "{v}"
    );
    assert_eq!(v["features"]["chat"], "ok");
    for i in v["instances"].as_array().unwrap() {
        assert_eq!(i["version"], env!("CARGO_PKG_VERSION"), "{i}");
        let started = i["started_ms"].as_u64().unwrap();
        assert!(started > 1_700_000_000_000 && started <= llmr_protocol::now_ms(), "{i}");
    }
    for (stream, group) in [
        ("requests", "routers"),
        ("jobs:default", "workers"),
        ("jobs:default:batch", "workers"),
        ("mcp", "mcp-tools"),
        ("responses", "responses"),
    ] {
        let s = find(&v["streams"], "stream", stream);
        assert_eq!(s["group"], group);
        assert!(s["length"].is_u64() && s["pending"].is_u64(), "{s}");
        assert!(s["lag"].is_u64() || s["lag"].is_null(), "{s}");
    }
    let pool = find(&v["pools"], "pool", "default");
    assert!(pool["workers"].as_u64().unwrap() >= 1, "{pool}");
}
both!(the_cluster_shows_instances_streams_and_pools);

async fn tools_show_their_source_and_remote_servers_their_state(redis: bool) {
    let f = start(redis, false);
    let v = f
        .admin_until("/admin/tools", |v| v["remote_servers"][0]["state"] == "error")
        .await;
    show("GET /admin/tools", &v);
    let builtin = find(&v["tools"], "name", "tool_search");
    assert_eq!(
        (builtin["source"].as_str(), builtin["origin"].clone()),
        (Some("builtin"), Value::Null)
    );
    let hello = find(&v["tools"], "name", "hello");
    assert_eq!(
        (hello["source"].as_str(), hello["error"].clone()),
        (Some("file"), Value::Null)
    );
    assert_eq!(hello["description"], "Says hello.");
    assert!(hello["origin"].as_str().unwrap().ends_with("hello.js"), "{hello}");
    let broken = find(&v["tools"], "name", "broken");
    assert!(
        broken["error"].is_string(),
        "a file that did not load says why: {broken}"
    );
    let far = &v["remote_servers"][0];
    assert_eq!(
        (far["namespace"].as_str(), far["tools"].as_u64()),
        (Some("far"), Some(0))
    );
    assert_eq!(far["url"], "http://127.0.0.1:1/mcp?token=[redacted]");
    assert!(far["error"].as_str().unwrap().contains("unreachable"), "{far}");
}
both!(tools_show_their_source_and_remote_servers_their_state);

/// Every secret of the fixture, none of which an answer may hold.
fn secrets() -> [&'static str; 6] {
    [ADMIN, TOKEN, KEY_A, KEY_B, REMOTE_TOKEN, REDIS_PASSWORD]
}

async fn no_secret_ever_shows(redis: bool) {
    let f = start(redis, true);
    assert_eq!(f.chat("g").await, 200);
    let (config, text) = f.admin("/admin/config").await;
    let (_, providers) = f.admin("/admin/providers").await;
    let (_, tools) = f.admin("/admin/tools").await;
    for secret in secrets() {
        for (what, body) in [("config", &text), ("providers", &providers), ("tools", &tools)] {
            assert!(!body.contains(secret), "{secret} shows in /admin/{what}: {body}");
        }
    }
    show("GET /admin/config", &config);
    let c = &config["config"];
    assert_eq!(
        (c["server"]["token"].as_str(), c["server"]["admin_token"].as_str()),
        (Some("[redacted]"), Some("[redacted]"))
    );
    assert_eq!(c["providers"][0]["api_keys"], json!(["[redacted]"]));
    assert_eq!(c["mcp"]["remote_servers"][0]["token"], "[redacted]");
    let url = c["redis"]["url"].as_str().unwrap();
    if redis {
        assert!(url.starts_with("redis://[redacted]@127.0.0.1:"), "{url}");
    } else {
        assert_eq!(url, "");
    }
    assert_eq!(c["providers"][1]["name"], "b");
    assert_eq!(c["models"][0]["strategy"], "first_available");
    assert_eq!(c["ui"]["enabled"], true);
}
both!(no_secret_ever_shows);
