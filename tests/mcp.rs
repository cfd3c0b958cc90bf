//! MCP tools, in process, on both backends: the Streamable HTTP endpoint and its errors,
//! JavaScript tools with hot reload, visibility and discovery, host modules (`kv`, `http`,
//! `ai`, `mcp`), the sandbox seen through `/mcp`, automatic tool calling through the router,
//! and scripted routing. (The official `mcp` Python package and a `fastmcp` remote server
//! are exercised in tests/python.)
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic, clippy::print_stderr)]

#[macro_use]
mod common;

use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use common::*;
use futures_util::StreamExt;
use llmr_testkit::{Behavior, MockUpstream};
use serde_json::{Value, json};

const TOKEN: &str = "mcp-test-token";

struct App {
    app: InProcess,
    tools: PathBuf,
}

fn tmpdir(tag: &str) -> PathBuf {
    let d = std::env::temp_dir().join(format!(
        "llmr-{tag}-{}-{}",
        std::process::id(),
        llmr_testkit::free_port()
    ));
    std::fs::create_dir_all(&d).unwrap();
    d
}

fn repo(path: &str) -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("../..").join(path)
}

impl App {
    /// `llmrouter all` with a fresh tools directory (holding `tools`), the example libraries,
    /// and `toml` over the default.
    fn start(redis: bool, toml: &str, tools: &[(&str, &str)]) -> App {
        let dir = tmpdir("tools");
        for (name, src) in tools {
            std::fs::write(dir.join(name), src).unwrap();
        }
        let env: Vec<(&str, String)> = vec![
            ("LLMR__SERVER__TOKEN", TOKEN.into()),
            ("LLMR__SCRIPTING__TOOLS_PATH", dir.display().to_string()),
            (
                "LLMR__SCRIPTING__LIBRARIES_PATH",
                repo("config/libraries").display().to_string(),
            ),
            (
                "LLMR__SCRIPTING__HOST_COMMAND",
                format!("{} script-host", env!("CARGO_BIN_EXE_llmrouter")),
            ),
        ];
        App {
            app: InProcess::start(redis, TestConfig::new(toml).envs(&env)),
            tools: dir,
        }
    }

    fn url(&self, path: &str) -> String {
        self.app.url(path)
    }

    async fn session(&self) -> Mcp {
        let mut m = Mcp {
            url: self.url("/mcp"),
            session: None,
            mode: None,
            id: 0,
        };
        let (s, v, h) = m.raw(&json!({"jsonrpc": "2.0", "id": 0, "method": "initialize", "params": {"protocolVersion": "2025-06-18", "capabilities": {}, "clientInfo": {"name": "t", "version": "1"}}})).await;
        assert_eq!(s, 200, "{v}");
        assert_eq!(v["result"]["protocolVersion"], json!("2025-06-18"), "{v}");
        m.session = Some(h.expect("Mcp-Session-Id"));
        let (s, _, _) = m
            .raw(&json!({"jsonrpc": "2.0", "method": "notifications/initialized"}))
            .await;
        assert_eq!(s, 202);
        m
    }

    async fn chat(&self, body: &Value) -> (u16, bytes::Bytes) {
        post_with(
            &self.url("/v1/chat/completions"),
            body,
            &[("authorization", &format!("Bearer {TOKEN}"))],
        )
        .await
    }
}

impl Drop for App {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.tools);
    }
}

struct Mcp {
    url: String,
    session: Option<String>,
    mode: Option<&'static str>,
    id: u64,
}

impl Mcp {
    async fn raw(&self, msg: &Value) -> (u16, Value, Option<String>) {
        let mut req = client()
            .post(&self.url)
            .insert_header(("authorization", format!("Bearer {TOKEN}")))
            .insert_header(("accept", "application/json, text/event-stream"));
        if let Some(s) = &self.session {
            req = req.insert_header(("mcp-session-id", s.as_str()));
        }
        if let Some(m) = self.mode {
            req = req.insert_header(("x-mcp-tool-mode", m));
        }
        let mut resp = req.send_json(msg).await.unwrap();
        let sid = resp
            .headers()
            .get("mcp-session-id")
            .and_then(|v| v.to_str().ok())
            .map(str::to_owned);
        let status = resp.status().as_u16();
        let sse = resp
            .headers()
            .get("content-type")
            .is_some_and(|c| c.as_bytes().starts_with(b"text/event-stream"));
        let body = resp.body().limit(16 << 20).await.unwrap();
        let v = if sse {
            // A slow answer: keep-alive comments, then the response as a `message` event.
            let events = sse_events(&body);
            assert_eq!(events.len(), 1, "one message event: {}", String::from_utf8_lossy(&body));
            serde_json::from_str(&events[0]).unwrap_or(Value::Null)
        } else {
            serde_json::from_slice(&body).unwrap_or(Value::Null)
        };
        (status, v, sid)
    }

    async fn rpc(&mut self, method: &str, params: Value) -> Value {
        self.id += 1;
        let (s, v, _) = self
            .raw(&json!({"jsonrpc": "2.0", "id": self.id, "method": method, "params": params}))
            .await;
        assert_eq!(s, 200, "{v}");
        assert_eq!(v["id"], json!(self.id));
        v
    }

    async fn call(&mut self, name: &str, args: Value) -> Value {
        let v = self.rpc("tools/call", json!({"name": name, "arguments": args})).await;
        assert!(v.get("result").is_some(), "{name}: {v}");
        v["result"].clone()
    }

    async fn names(&mut self) -> Vec<String> {
        let mut names = Vec::new();
        let mut cursor = Value::Null;
        loop {
            let params = if cursor.is_null() {
                json!({})
            } else {
                json!({"cursor": cursor})
            };
            let v = self.rpc("tools/list", params).await;
            names.extend(
                v["result"]["tools"]
                    .as_array()
                    .unwrap()
                    .iter()
                    .map(|t| t["name"].as_str().unwrap().to_owned()),
            );
            cursor = v["result"]["nextCursor"].clone();
            if cursor.is_null() {
                return names;
            }
        }
    }
}

fn text(result: &Value) -> String {
    result["content"][0]["text"].as_str().unwrap_or_default().to_owned()
}

const GREET: &str = r#"export const description = "Greets someone.";
export const parameters = { type: "object", properties: { name: { type: "string" } }, required: ["name"] };
export default function ({ name }) { return "hello " + name; }"#;

const FAIL: &str = r#"export const description = "Always fails.";
export default function () { throw new Error("this tool always fails"); }"#;

const SECRET: &str = r#"export const description = "A hidden tool.";
export const visibility = "hidden";
export default function () { return "hidden value"; }"#;

const WEATHER: &str = r#"export const description = "Weather forecast for a city.";
export const keywords = ["forecast", "temperature"];
export const visibility = "ondemand";
export default function ({ city }) { return { city, celsius: 21 }; }"#;

async fn endpoint_speaks_mcp_and_reports_errors(redis: bool) {
    let app = App::start(
        redis,
        "[mcp]\npage_size = 2\n",
        &[("greet.js", GREET), ("fail.js", FAIL)],
    );
    let mut m = app.session().await;
    assert_eq!(m.rpc("ping", json!({})).await["result"], json!({}));

    // Paged list: built-ins and the two tools, two per page.
    let names = m.names().await;
    for want in ["tool_search", "execute_tool", "execute_code", "greet", "fail"] {
        assert!(names.contains(&want.to_owned()), "{want} in {names:?}");
    }
    assert_eq!(names.len(), 5);

    let r = m.call("greet", json!({"name": "Ada"})).await;
    assert_eq!(text(&r), "hello Ada");
    assert_eq!(r["isError"], json!(false));
    let r = m.call("fail", json!({})).await;
    assert_eq!(r["isError"], json!(true));
    assert!(text(&r).contains("this tool always fails"), "{r}");

    // Protocol errors are JSON-RPC errors with the standard codes.
    let v = m.rpc("tools/call", json!({"name": "nope", "arguments": {}})).await;
    assert_eq!(v["error"]["code"], json!(-32602), "{v}");
    let v = m.rpc("resources/list", json!({})).await;
    assert_eq!(v["error"]["code"], json!(-32601), "{v}");
    let v = m.rpc("tools/list", json!({"cursor": "garbage"})).await;
    assert_eq!(v["error"]["code"], json!(-32602), "{v}");

    // Transport errors.
    let resp = client()
        .post(app.url("/mcp"))
        .insert_header(("authorization", format!("Bearer {TOKEN}")))
        .insert_header(("mcp-session-id", m.session.clone().unwrap()))
        .insert_header(("content-type", "application/json"))
        .send_body("{not json")
        .await
        .unwrap();
    assert_eq!(resp.status().as_u16(), 400);
    let no_session = Mcp {
        url: app.url("/mcp"),
        session: None,
        mode: None,
        id: 0,
    };
    let (s, v, _) = no_session
        .raw(&json!({"jsonrpc": "2.0", "id": 1, "method": "tools/list"}))
        .await;
    assert_eq!(s, 400, "{v}");
    let unknown = Mcp {
        session: Some("not-a-session".into()),
        ..no_session
    };
    let (s, v, _) = unknown
        .raw(&json!({"jsonrpc": "2.0", "id": 1, "method": "tools/list"}))
        .await;
    assert_eq!((s, v["error"]["code"].clone()), (404, json!(-32001)), "{v}");
    let (s, _) = get(&app.url("/mcp"), &[("authorization", &format!("Bearer {TOKEN}"))]).await;
    assert_eq!(s, 405);
    let (s, _) = post(&app.url("/mcp"), &json!({"jsonrpc": "2.0", "id": 1, "method": "ping"})).await;
    assert_eq!(s, 401, "bearer auth as for every route");

    // Ending the session forgets it.
    let resp = client()
        .delete(app.url("/mcp"))
        .insert_header(("authorization", format!("Bearer {TOKEN}")))
        .insert_header(("mcp-session-id", m.session.clone().unwrap()))
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status().as_u16(), 200);
    let (s, _, _) = m.raw(&json!({"jsonrpc": "2.0", "id": 9, "method": "ping"})).await;
    assert_eq!(s, 404);
}
both!(endpoint_speaks_mcp_and_reports_errors);

async fn tools_reload_from_disk_without_restart(redis: bool) {
    let app = App::start(redis, "", &[]);
    let mut m = app.session().await;
    assert!(!m.names().await.contains(&"greet".to_owned()));
    std::fs::write(app.tools.join("greet.js"), GREET).unwrap();
    assert!(m.names().await.contains(&"greet".to_owned()), "added");
    assert_eq!(text(&m.call("greet", json!({"name": "x"})).await), "hello x");
    // Same size, new content: the modification time tells (set a second later, no waiting).
    let path = app.tools.join("greet.js");
    let before = std::fs::metadata(&path).unwrap().modified().unwrap();
    std::fs::write(&path, GREET.replace("hello ", "howdy ")).unwrap();
    std::fs::File::options()
        .write(true)
        .open(&path)
        .unwrap()
        .set_modified(before + Duration::from_secs(1))
        .unwrap();
    assert_eq!(text(&m.call("greet", json!({"name": "x"})).await), "howdy x", "edited");
    std::fs::remove_file(app.tools.join("greet.js")).unwrap();
    let v = m.rpc("tools/call", json!({"name": "greet", "arguments": {}})).await;
    assert_eq!(v["error"]["code"], json!(-32602), "deleted: {v}");
    assert!(!m.names().await.contains(&"greet".to_owned()));
}
both!(tools_reload_from_disk_without_restart);

async fn a_call_is_served_by_the_tool_the_catalog_lists(redis: bool) {
    // A call looks its tool up without building the whole catalog; it must still be the
    // tool `tools/list` shows under that name.
    let shadow = "export const description = 'not the built-in';\nexport default function () { return 'file'; }";
    let twin =
        |who: &str| format!("export const description = 'twin';\nexport default function () {{ return '{who}'; }}");
    let app = App::start(
        redis,
        "",
        &[
            ("tool_search.js", shadow),
            ("twin.js", "export default function ( {"),
            ("twin.mjs", &twin("mjs")),
        ],
    );
    let mut m = app.session().await;
    // A tool file cannot take a built-in's name.
    assert_ne!(text(&m.call("tool_search", json!({"query": "twin"})).await), "file");
    // `twin.js` does not load, so `twin.mjs` has the name, in the list and for calls.
    assert!(m.names().await.contains(&"twin".to_owned()));
    assert_eq!(text(&m.call("twin", json!({})).await), "mjs");
    // Once `twin.js` loads, it comes first.
    std::fs::write(app.tools.join("twin.js"), twin("js")).unwrap();
    assert_eq!(text(&m.call("twin", json!({})).await), "js");
    std::fs::remove_file(app.tools.join("twin.js")).unwrap();
    assert_eq!(text(&m.call("twin", json!({})).await), "mjs");
}
both!(a_call_is_served_by_the_tool_the_catalog_lists);

async fn visibility_and_discovery(redis: bool) {
    let app = App::start(
        redis,
        "",
        &[("greet.js", GREET), ("secret.js", SECRET), ("weather.js", WEATHER)],
    );
    let mut m = app.session().await;
    let names = m.names().await;
    assert!(names.contains(&"greet".to_owned()));
    assert!(!names.contains(&"secret".to_owned()), "hidden is not listed");
    assert!(!names.contains(&"weather".to_owned()), "ondemand is not listed");

    // hidden: callable by exact name, never found.
    assert_eq!(text(&m.call("secret", json!({})).await), "hidden value");
    let found = m.call("tool_search", json!({"query": "hidden tool secret"})).await;
    assert_eq!(found["structuredContent"]["tools"], json!([]), "{found}");

    // ondemand: found by search (keywords too), callable only through execute_tool.
    let found = m.call("tool_search", json!({"query": "temperature"})).await;
    assert_eq!(
        found["structuredContent"]["tools"][0]["name"],
        json!("weather"),
        "{found}"
    );
    let v = m
        .rpc("tools/call", json!({"name": "weather", "arguments": {"city": "Oslo"}}))
        .await;
    assert_eq!(v["error"]["code"], json!(-32602), "{v}");
    let r = m
        .call(
            "execute_tool",
            json!({"name": "weather", "arguments": {"city": "Oslo"}}),
        )
        .await;
    assert_eq!(r["structuredContent"], json!({"city": "Oslo", "celsius": 21}), "{r}");

    // visible tools are not in search outside discovery mode.
    let found = m.call("tool_search", json!({"query": "greets"})).await;
    assert_eq!(found["structuredContent"]["tools"], json!([]));

    // Discovery mode: only the built-ins are listed; search finds visible tools too.
    m.mode = Some("discovery");
    let mut names = m.names().await;
    names.sort();
    assert_eq!(names, vec!["execute_code", "execute_tool", "tool_search"]);
    let found = m.call("tool_search", json!({"query": "greets"})).await;
    assert_eq!(
        found["structuredContent"]["tools"][0]["name"],
        json!("greet"),
        "{found}"
    );
}
both!(visibility_and_discovery);

async fn a_client_that_leaves_mcp_cancels_its_work(redis: bool) {
    // A tool waiting on `ai.chat` against an upstream that never answers; the MCP client
    // gives up. Its call is cancelled, the tool's chat with it, and the worker drops the
    // upstream call: the upstream sees the disconnect.
    let upstream = MockUpstream::start(&["m"]);
    upstream.set_default(Behavior {
        hang: true,
        ..Behavior::ok()
    });
    let toml = mock_provider("up", &upstream.base_url(), &["m"]);
    let ask = r#"import ai from "ai";
export const description = "Asks a model.";
export default function ({ q }) { return ai.chat(q, { model: "m" }); }"#;
    let app = App::start(redis, &toml, &[("ask.js", ask)]);
    let m = app.session().await;
    {
        let mut resp = client()
            .post(&m.url)
            .insert_header(("authorization", format!("Bearer {TOKEN}")))
            .insert_header(("accept", "application/json, text/event-stream"))
            .insert_header(("mcp-session-id", m.session.clone().unwrap()))
            .send_json(&json!({"jsonrpc": "2.0", "id": 9, "method": "tools/call", "params": {"name": "ask", "arguments": {"q": "hello?"}}}))
            .await
            .unwrap();
        // A slow call turns into an SSE stream of keep-alives.
        assert_eq!(resp.status().as_u16(), 200);
        let ct = resp.headers().get("content-type").unwrap().to_str().unwrap().to_owned();
        assert!(ct.starts_with("text/event-stream"), "{ct}");
        let first = resp.next().await.unwrap().unwrap();
        assert!(first.starts_with(b": keep-alive"), "{first:?}");
    } // the client leaves
    assert!(
        upstream.wait_for_disconnects(1, Duration::from_secs(10)).await,
        "the client's departure reached the upstream call"
    );
    // The service keeps serving.
    let mut m = m;
    assert!(m.names().await.contains(&"ask".to_owned()));
}
both!(a_client_that_leaves_mcp_cancels_its_work);

async fn host_modules_reach_only_what_they_may(redis: bool) {
    let upstream = MockUpstream::start(&["m"]);
    let allowed = format!("127.0.0.1:{}", upstream.port);
    let toml = format!(
        "{}[scripting]\nhttp_allowlist = [\"{allowed}\", \"localhost\"]\n",
        mock_provider("up", &upstream.base_url(), &["m"])
    );
    let counter = r#"import kv from "kv";
export const description = "Counts calls in the tool's kv space.";
export default function () { const n = (kv.get("n") || 0) + 1; kv.set("n", n); return { n, keys: kv.keys() }; }"#;
    let fetch = r#"import http from "http";
export const description = "Fetches a URL.";
export default function ({ url }) { const r = http.fetch(url); return { status: r.status, body: JSON.parse(r.body) }; }"#;
    let ask = r#"import ai from "ai";
export const description = "Asks a model.";
export default function ({ q }) { return ai.chat(q, { model: "m" }); }"#;
    let chain = r#"import mcp from "mcp";
export const description = "Calls the calculator through mcp.call.";
export default function () { return { twice: mcp.call("calc", { expression: "6*7" }).value * 2 }; }"#;
    let app = App::start(
        redis,
        &toml,
        &[
            ("counter.js", counter),
            ("fetch.js", fetch),
            ("ask.js", ask),
            ("chain.js", chain),
            (
                "calc.js",
                &std::fs::read_to_string(repo("config/tools/calculator.js")).unwrap(),
            ),
        ],
    );
    let mut m = app.session().await;
    assert_eq!(m.call("counter", json!({})).await["structuredContent"]["n"], json!(1));
    let r = m.call("counter", json!({})).await;
    assert_eq!(r["structuredContent"], json!({"n": 2, "keys": ["n"]}), "{r}");

    let r = m
        .call("fetch", json!({"url": format!("{}/models", upstream.base_url())}))
        .await;
    assert_eq!(r["structuredContent"]["status"], json!(200), "{r}");
    assert_eq!(r["structuredContent"]["body"]["data"][0]["id"], json!("m"));
    let started = Instant::now();
    let r = m
        .call("fetch", json!({"url": "http://169.254.169.254/latest/meta-data"}))
        .await;
    assert_eq!(r["isError"], json!(true));
    assert!(text(&r).contains("http_allowlist"), "{r}");
    eprintln!(
        "sandbox via /mcp: forbidden host: stopped after {:?}",
        started.elapsed()
    );
    let r = m.call("fetch", json!({"url": "file:///etc/passwd"})).await;
    assert_eq!(r["isError"], json!(true), "{r}");
    // A listed name that resolves inside the network is refused (the mock is reachable by its
    // address, listed explicitly, not through a name).
    let r = m
        .call(
            "fetch",
            json!({"url": format!("http://localhost:{}/v1/models", upstream.port)}),
        )
        .await;
    assert_eq!(r["isError"], json!(true), "{r}");
    assert!(text(&r).contains("internal address"), "{r}");

    let r = m.call("ask", json!({"q": "what is up"})).await;
    assert_eq!(text(&r), "mock: what is up", "{r}");
    assert_eq!(
        upstream.request_count(),
        1,
        "ai.chat went through the router to the provider"
    );

    let r = m.call("chain", json!({})).await;
    assert_eq!(r["structuredContent"], json!({"twice": 84}), "{r}");
    let r = m
        .call(
            "execute_code",
            json!({"code": "args.x + mcp.call('calc', {expression: '1+1'}).value", "args": {"x": 40}}),
        )
        .await;
    assert_eq!(text(&r), "42", "{r}");
}
both!(host_modules_reach_only_what_they_may);

async fn sandbox_escapes_are_contained_and_the_service_keeps_serving(redis: bool) {
    let cases: [(&str, &str); 5] = [
        ("loop", "export default function () { for (;;) {} }"),
        ("recurse", "export default function f() { return f() + 1; }"),
        (
            "regex",
            "export default function () { return /^(a+)+$/.test('a'.repeat(40) + 'b'); }",
        ),
        (
            "alloc",
            "export default function () { const a = []; for (;;) { a.push(new Array(1 << 20).fill(a.length)); } }",
        ),
        (
            "escape",
            "import fs from \"fs\"; export default function () { return fs; }",
        ),
    ];
    let tools: Vec<(String, String)> = cases
        .iter()
        .map(|(n, body)| {
            (
                format!("{n}.js"),
                format!("export const description = \"{n}\";\n{body}"),
            )
        })
        .chain([("greet.js".to_owned(), GREET.to_owned())])
        .collect();
    let refs: Vec<(&str, &str)> = tools.iter().map(|(a, b)| (a.as_str(), b.as_str())).collect();
    let app = App::start(redis, "[scripting]\nwall_ms = 3000\nmemory_mb = 256\n", &refs);
    let mut m = app.session().await;
    for (name, _) in cases {
        let started = Instant::now();
        let r = m.call(name, json!({})).await;
        let took = started.elapsed();
        eprintln!("sandbox via /mcp: {name}: stopped after {took:?}: {}", text(&r));
        assert_eq!(r["isError"], json!(true), "{name}: {r}");
        assert!(took < Duration::from_secs(5), "{name} took {took:?}");
        assert_eq!(text(&m.call("greet", json!({"name": "still"})).await), "hello still");
    }
}
both!(sandbox_escapes_are_contained_and_the_service_keeps_serving);

fn calc_call(expr: &str) -> Value {
    json!([{"id": "call_1", "type": "function", "function": {"name": "calculator", "arguments": json!({"expression": expr}).to_string()}}])
}

async fn the_router_runs_the_tool_loop(redis: bool) {
    let upstream = MockUpstream::start(&["m"]);
    let toml = format!(
        "{}[[models]]\nname = \"with-tools\"\ntargets = [{{provider = \"up\", model = \"m\"}}]\ntools = [\"calculator\"]\n",
        mock_provider("up", &upstream.base_url(), &["m"])
    );
    let calc = std::fs::read_to_string(repo("config/tools/calculator.js")).unwrap();
    let app = App::start(redis, &toml, &[("calculator.js", &calc)]);

    // An mcp entry in `tools`: the model calls the calculator, then answers.
    upstream.push(Behavior {
        tool_calls: Some(calc_call("6*7")),
        ..Behavior::ok()
    });
    let body = json!({"model": "m", "messages": [{"role": "user", "content": "what is 6*7?"}],
        "tools": [{"type": "mcp", "server_label": "llmrouter", "allowed_tools": ["calculator"]}]});
    let (s, b) = app.chat(&body).await;
    let v = json(&b);
    assert_eq!(s, 200, "{v}");
    assert_eq!(
        v["choices"][0]["message"]["content"],
        json!(r#"mock: tool said {"expression":"6*7","value":42}"#),
        "{v}"
    );
    let reqs = upstream.requests();
    assert_eq!(reqs.len(), 2);
    assert_eq!(reqs[0].body["tools"][0]["function"]["name"], json!("calculator"));
    assert_eq!(reqs[0].body["tools"][0]["type"], json!("function"));
    let msgs = reqs[1].body["messages"].as_array().unwrap();
    assert_eq!(msgs[1]["tool_calls"][0]["id"], json!("call_1"));
    assert_eq!(msgs[2]["role"], json!("tool"));
    assert_eq!(msgs[2]["tool_call_id"], json!("call_1"));
    assert!(
        v["usage"]["total_tokens"].as_u64().unwrap() > 0,
        "usage adds up over rounds"
    );

    // Streamed, through a group's tool set.
    upstream.push(Behavior {
        tool_calls: Some(calc_call("2^10")),
        ..Behavior::ok()
    });
    let body = json!({"model": "with-tools", "stream": true, "stream_options": {"include_usage": true},
        "messages": [{"role": "user", "content": "2^10?"}]});
    let (s, b) = app.chat(&body).await;
    assert_eq!(s, 200);
    let events = sse_events(&b);
    assert_eq!(events.last().map(String::as_str), Some("[DONE]"));
    assert_eq!(
        streamed_text(&events),
        r#"mock: tool said {"expression":"2^10","value":1024}"#
    );
    assert!(events.iter().any(|e| e.contains("\"usage\"")), "{events:?}");

    // Calls to the client's own functions come back to the client.
    let own = json!([{"id": "c9", "type": "function", "function": {"name": "lookup", "arguments": "{}"}}]);
    upstream.push(Behavior {
        tool_calls: Some(own.clone()),
        ..Behavior::ok()
    });
    let body = json!({"model": "with-tools", "messages": [{"role": "user", "content": "x"}],
        "tools": [{"type": "function", "function": {"name": "lookup", "parameters": {"type": "object"}}}]});
    let (s, b) = app.chat(&body).await;
    let v = json(&b);
    assert_eq!(s, 200, "{v}");
    assert_eq!(v["choices"][0]["message"]["tool_calls"], own);

    // A model that keeps calling tools is stopped after max_tool_rounds and made to answer.
    upstream.set_default(Behavior {
        tool_calls: Some(calc_call("1+1")),
        ..Behavior::ok()
    });
    let before = upstream.request_count();
    let (s, b) = app
        .chat(&json!({"model": "with-tools", "messages": [{"role": "user", "content": "loop"}]}))
        .await;
    assert_eq!(s, 200, "{}", String::from_utf8_lossy(&b));
    let reqs = upstream.requests();
    assert_eq!(reqs.len() - before, 6, "5 rounds and a final answer");
    assert_eq!(reqs.last().unwrap().body["tool_choice"], json!("none"));
}
both!(the_router_runs_the_tool_loop);

const ROUTE_BY_LOAD: &str = r#"export default function ({ request, candidates }) {
  if (request.last_user_message === "throw") throw new Error("broken script");
  const ok = candidates.filter((c) => c.available);
  ok.sort((a, b) => a.load - b.load || a.provider.localeCompare(b.provider));
  return ok[0].target;
}"#;

async fn scripted_routing_chooses_by_load(redis: bool) {
    let (a, b) = (MockUpstream::start(&["m"]), MockUpstream::start(&["m"]));
    let script = tmpdir("route").join("route.js");
    std::fs::write(&script, ROUTE_BY_LOAD).unwrap();
    let toml = format!(
        "{}{}[routing]\nscript = \"{}\"\n[[models]]\nname = \"pair\"\nstrategy = \"script\"\ntargets = [{{provider = \"a\", model = \"m\"}}, {{provider = \"b\", model = \"m\"}}]\n",
        mock_provider("a", &a.base_url(), &["m"]),
        mock_provider("b", &b.base_url(), &["m"]),
        script.display()
    );
    let app = App::start(redis, &toml, &[]);
    // Idle: the script picks `a` (ties by name).
    let (s, _) = app.chat(&chat_body("auto", "one", false)).await;
    assert_eq!(s, 200);
    assert_eq!((a.request_count(), b.request_count()), (1, 0));
    // `a` busy with a slow call: the script sees its load and picks `b`.
    a.push(Behavior::latency(1500));
    let slow_body = chat_body("pair", "slow", false);
    let slow = app.chat(&slow_body);
    let quick = async {
        // Once the slow call holds `a`.
        eventually(Duration::from_secs(5), || async { a.request_count() == 2 }).await;
        app.chat(&chat_body("pair", "quick", false)).await
    };
    let ((s1, _), (s2, _)) = tokio::join!(slow, quick);
    assert_eq!((s1, s2), (200, 200));
    assert_eq!(
        (a.request_count(), b.request_count()),
        (2, 1),
        "the quick one went to b"
    );
    // A failing script falls back to the default strategy: still answered.
    let (s, _) = app.chat(&chat_body("auto", "throw", false)).await;
    assert_eq!(s, 200);
    // Edited on disk: the new script applies at once.
    std::fs::write(&script, "export default function () { return \"b/m\"; }").unwrap();
    let before = b.request_count();
    let (s, _) = app.chat(&chat_body("auto", "edited", false)).await;
    assert_eq!(s, 200);
    assert_eq!(b.request_count(), before + 1);
    let _ = std::fs::remove_dir_all(script.parent().unwrap());
}
both!(scripted_routing_chooses_by_load);

/// Two mcp-tools instances built here on a bus and store of the test's own (memory, or a
/// fresh redis-server), with `tools` in their tools directory.
async fn mcp_tools_alone(
    redis: bool,
    tools: &[(&str, &str)],
) -> (
    llmr_bus::Bus,
    Vec<llmr_mcp_tools::McpToolsService>,
    Option<llmr_testkit::RedisServer>,
) {
    let dir = tmpdir("once");
    for (name, src) in tools {
        std::fs::write(dir.join(name), src).unwrap();
    }
    let settings = TestConfig::new("")
        .env("LLMR__SCRIPTING__TOOLS_PATH", dir.display())
        .env(
            "LLMR__SCRIPTING__HOST_COMMAND",
            format!("{} script-host", env!("CARGO_BIN_EXE_llmrouter")),
        )
        .settings();
    let server = redis.then(llmr_testkit::RedisServer::start);
    let (bus, store) = match &server {
        Some(r) => {
            let conns = std::sync::Arc::new(llmr_bus::RedisConns::new(llmr_bus::redis_pool(&r.url(), 4).unwrap()));
            let prefix = llmr_testkit::unique_prefix("once");
            (
                llmr_bus::Bus::redis_with(&r.url(), &prefix, conns.clone()).unwrap(),
                llmr_store::Store::redis(conns, &prefix),
            )
        }
        None => (llmr_bus::Bus::memory(), llmr_store::Store::memory()),
    };
    let host = llmr_script::ScriptHost::from_settings(&settings);
    let mut services = Vec::new();
    for instance in ["once-1", "once-2"] {
        services.push(
            llmr_mcp_tools::McpToolsService::build(&settings, bus.clone(), store.clone(), instance, &host)
                .await
                .unwrap(),
        );
    }
    (bus, services, server)
}

async fn a_tool_call_delivered_twice_runs_once(redis: bool) {
    use llmr_protocol::{Envelope, Kind, Meta, TraceContext, now_ms, streams};
    let slow_counter = r#"import kv from "kv";
export const description = "Counts its runs, slowly.";
export default function () { const n = (kv.get("n") || 0) + 1; kv.set("n", n); const t = Date.now(); while (Date.now() - t < 300) {} return { n }; }"#;
    let (bus, _services, _redis) = mcp_tools_alone(redis, &[("counter.js", slow_counter)]).await;
    let caller = llmr_bus::Caller::new(bus.clone(), "caller-a");
    let call = || {
        Envelope::new(
            Kind::Tool,
            "caller-a",
            now_ms() + 20_000,
            TraceContext::default(),
            bytes::Bytes::from_static(br#"{"name":"counter","arguments":{}}"#),
            Meta::default(),
        )
    };
    let n = |b: &[u8]| json(b)["structuredContent"]["n"].clone();
    // The same message published twice at once (a producer's retry): whichever instances get
    // the two copies, the tool runs once.
    let first = call();
    let (answer, dup) = futures_util::join!(caller.call(streams::MCP, &first), async {
        tokio::time::sleep(Duration::from_millis(20)).await;
        bus.publish(streams::MCP, first.clone()).await
    });
    dup.unwrap();
    let answer = answer.unwrap();
    assert_eq!(n(&answer.body), json!(1));
    // Delivered again after it finished: answered with the kept result, not run.
    let again = caller.call(streams::MCP, &first).await.unwrap();
    assert_eq!(json(&again.body), json(&answer.body));
    // A new message runs, and finds the counter moved once: the copies did not run.
    tokio::time::sleep(Duration::from_millis(400)).await;
    let fresh = caller.call(streams::MCP, &call()).await.unwrap();
    assert_eq!(n(&fresh.body), json!(2), "{}", String::from_utf8_lossy(&fresh.body));
}
both!(a_tool_call_delivered_twice_runs_once);
