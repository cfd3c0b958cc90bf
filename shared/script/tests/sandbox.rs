//! The sandbox contains every escape the MCP issue names — endless loops, endless recursion,
//! catastrophic regexes, unbounded allocation, reaching for the host, huge results — each
//! with a clear error within its limit, and keeps serving other calls. Each case prints how
//! long it took to be stopped. Also: built-ins tampered with (prototypes, JSON, Math, Date)
//! are back to themselves in the next call on the same host, a 100 MB string, proxies and
//! getters in results, and results nested too deeply.
#![allow(clippy::unwrap_used, clippy::print_stderr)]

use std::path::PathBuf;
use std::time::{Duration, Instant};

use llmr_script::{Call, Limits, ScriptError, ScriptPool};
use serde_json::json;

fn pool(limits: Limits) -> ScriptPool {
    ScriptPool::new(
        PathBuf::from(env!("CARGO_BIN_EXE_llmr-script-host")),
        Vec::new(),
        limits,
        1,
    )
}

fn call(source: &str, function: &str, args: serde_json::Value) -> Call {
    Call::script(source, function, args)
}

const ADD: &str = "var tool = { run: function (a) { return { sum: a.x + a.y }; } };";

async fn still_serves(p: &ScriptPool) {
    assert_eq!(
        p.run(&call(ADD, "tool.run", json!({"x": 2, "y": 3}))).await.unwrap(),
        json!({"sum": 5})
    );
}

async fn stopped(p: &ScriptPool, name: &str, source: &str) -> ScriptError {
    let t = Instant::now();
    let e = p.run(&call(source, "f", json!({}))).await.unwrap_err();
    eprintln!("sandbox: {name}: stopped after {:?}: {e}", t.elapsed());
    still_serves(p).await;
    e
}

#[tokio::test]
async fn runs_functions_with_json_in_and_out() {
    let p = pool(Limits::default());
    still_serves(&p).await;
    let src = "function f(a) { return a.items.map(function (x) { return x * 2; }); }";
    assert_eq!(
        p.run(&call(src, "f", json!({"items": [1, 2, 3]}))).await.unwrap(),
        json!([2, 4, 6])
    );
    let e = p
        .run(&call("function f() { throw new Error('nope'); }", "f", json!({})))
        .await
        .unwrap_err();
    assert!(
        matches!(&e, ScriptError::Exception { message } if message.contains("nope")),
        "{e}"
    );
    let e = p.run(&call("var x = 1;", "missing", json!({}))).await.unwrap_err();
    assert_eq!(e, ScriptError::NoFunction { name: "missing".into() });
    let e = p.run(&call("function f( {", "f", json!({}))).await.unwrap_err();
    assert!(
        matches!(e, ScriptError::Exception { .. }),
        "a syntax error is the script's error"
    );
}

#[tokio::test]
async fn an_endless_loop_hits_the_loop_limit() {
    let p = pool(Limits {
        loop_iterations: 1_000_000,
        ..Limits::default()
    });
    let e = stopped(&p, "endless loop", "function f() { while (true) {} }").await;
    assert!(matches!(e, ScriptError::Limit { .. }), "{e}");
}

#[tokio::test]
async fn endless_recursion_hits_the_recursion_limit() {
    let p = pool(Limits::default());
    let e = stopped(&p, "endless recursion", "function f() { return f() + 1; }").await;
    assert!(matches!(e, ScriptError::Limit { .. }), "{e}");
}

#[tokio::test]
async fn loops_spread_over_calls_are_stopped_by_the_wall_clock() {
    // The loop limit counts per call frame: many short loops pass it; the clock does not.
    let p = pool(Limits {
        wall_ms: 500,
        loop_iterations: 1_000,
        ..Limits::default()
    });
    let src = "function g() { var s = 0; for (var i = 0; i < 900; i++) { s += i; } return s; } function f() { var t = 0; while (true) { t += g(); } }";
    let t = Instant::now();
    let e = p.run(&call(src, "f", json!({}))).await;
    // The outer `while` counts too, so this may end by the loop limit instead; either way it
    // ends, within the wall-clock limit.
    assert!(e.is_err());
    assert!(t.elapsed() < Duration::from_millis(1500), "{:?}", t.elapsed());
    still_serves(&p).await;
}

#[tokio::test]
async fn a_catastrophic_regex_is_stopped_by_the_wall_clock() {
    let p = pool(Limits {
        wall_ms: 500,
        ..Limits::default()
    });
    let e = stopped(
        &p,
        "catastrophic regex",
        "function f() { return /^(a+)+$/.test('aaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaa!'); }",
    )
    .await;
    assert_eq!(e, ScriptError::Timeout { wall_ms: 500 });
}

#[tokio::test]
async fn unbounded_allocation_is_stopped_by_the_memory_limit() {
    let p = pool(Limits {
        memory_mb: 256,
        // Far above the ~5 s it takes to reach 256 MB, so a loaded machine does not turn it
        // into a wall-clock stop.
        wall_ms: 60_000,
        loop_iterations: u64::MAX,
        ..Limits::default()
    });
    let e = stopped(
        &p,
        "unbounded allocation",
        "function f() { var a = []; while (true) { a.push('x'.repeat(1 << 20)); } }",
    )
    .await;
    assert!(
        matches!(
            e,
            ScriptError::Crashed { memory_mb: 256 } | ScriptError::Exception { .. }
        ),
        "{e}"
    );
}

#[tokio::test]
async fn the_host_is_out_of_reach() {
    let p = pool(Limits::default());
    for (name, src) in [
        ("require", "function f() { return require('fs'); }"),
        ("process", "function f() { return process.env; }"),
        ("fetch", "function f() { return fetch('http://127.0.0.1/'); }"),
        ("Deno/Bun", "function f() { return Deno.readFile('/etc/passwd'); }"),
    ] {
        let e = stopped(&p, &format!("host access ({name})"), src).await;
        assert!(
            matches!(&e, ScriptError::Exception { message } if message.contains("ReferenceError")),
            "{name}: {e}"
        );
    }
}

#[tokio::test]
async fn results_are_bounded() {
    let p = pool(Limits {
        result_bytes: 1000,
        ..Limits::default()
    });
    let e = stopped(&p, "huge result", "function f() { return 'x'.repeat(5000); }").await;
    assert!(matches!(e, ScriptError::ResultTooLarge { limit: 1000, .. }), "{e}");
}

const TOOL: &str = r#"
export const description = "Adds two numbers.";
export const parameters = { type: "object", properties: { a: { type: "number" }, b: { type: "number" } }, required: ["a", "b"] };
export const keywords = ["math", "sum"];
export const visibility = "visible";
function check(x) { if (typeof x !== "number") { throw new Error("a and b must be numbers"); } return x; }
export default function (args) { return { sum: check(args.a) + check(args.b) }; }
"#;

#[tokio::test]
async fn module_tools_describe_themselves_and_run() {
    let p = pool(Limits::default());
    let meta = p.run(&Call::describe(TOOL)).await.unwrap();
    assert_eq!(meta["description"], "Adds two numbers.");
    assert_eq!(meta["parameters"]["required"], json!(["a", "b"]));
    assert_eq!(meta["keywords"], json!(["math", "sum"]));
    assert_eq!(meta["visibility"], "visible");
    assert!(meta.get("default").is_none(), "functions are not metadata");
    assert_eq!(
        p.run(&Call::module(TOOL, "default", json!({"a": 2, "b": 40})))
            .await
            .unwrap(),
        json!({"sum": 42})
    );
    let e = p
        .run(&Call::module(TOOL, "default", json!({"a": "x", "b": 1})))
        .await
        .unwrap_err();
    assert!(
        matches!(&e, ScriptError::Exception { message } if message.contains("must be numbers")),
        "{e}"
    );
    let e = p.run(&Call::module(TOOL, "run", json!({}))).await.unwrap_err();
    assert_eq!(e, ScriptError::NoFunction { name: "run".into() });
    let e = p.run(&Call::describe("export const x = ;")).await.unwrap_err();
    assert!(matches!(e, ScriptError::Exception { .. }), "{e}");
    let e = p
        .run(&Call::module(
            "export default function () { while (true) {} }",
            "default",
            json!({}),
        ))
        .await
        .unwrap_err();
    assert!(
        matches!(e, ScriptError::Limit { .. }),
        "modules get the same limits: {e}"
    );
}

struct EchoHost;

impl llmr_script::Host for EchoHost {
    fn call<'a>(&'a self, module: &'a str, function: &'a str, args: serde_json::Value) -> llmr_script::HostFuture<'a> {
        Box::pin(async move {
            if module == "http" {
                return Err("host not allowed".into());
            }
            Ok(json!({"module": module, "function": function, "args": args}))
        })
    }
}

#[tokio::test]
async fn modules_import_host_modules_and_libraries_and_nothing_else() {
    let p = pool(Limits::default());
    let lib = "export function twice(x) { return 2 * x; }";
    let tool = r#"import { twice } from "mathlib"; import kv from "kv"; import { text } from "mcp";
export const description = "d";
export default function (a) { return { n: twice(a.n), kv: kv.get("k"), t: text("hi") }; }"#;
    let libs = [("mathlib.js".to_owned(), lib.to_owned())].into_iter().collect();
    let out = p
        .run_with(
            &Call::module(tool, "default", json!({"n": 4}))
                .with_host()
                .with_libraries(libs),
            Some(&EchoHost),
        )
        .await
        .unwrap();
    assert_eq!(out["n"], json!(8));
    assert_eq!(out["kv"]["function"], json!("get"));
    assert_eq!(out["kv"]["args"], json!(["k"]));
    assert_eq!(out["t"]["content"][0]["text"], json!("hi"));
    assert_eq!(llmr_script::imports(tool), vec!["mathlib", "kv", "mcp"]);

    // A host error is an exception the script sees (and may catch).
    let tool = r#"import http from "http"; export default function () { return http.get("http://x/"); }"#;
    let e = p
        .run_with(&Call::module(tool, "default", json!({})).with_host(), Some(&EchoHost))
        .await
        .unwrap_err();
    assert!(
        matches!(&e, ScriptError::Exception { message } if message.contains("host not allowed")),
        "{e}"
    );

    // No file system, no process, no environment: such modules do not exist.
    for spec in ["fs", "node:child_process", "/etc/passwd", "../secret.js"] {
        let tool = format!(r#"import x from "{spec}"; export default function () {{ return 1; }}"#);
        let e = p
            .run_with(&Call::module(&tool, "default", json!({})).with_host(), Some(&EchoHost))
            .await
            .unwrap_err();
        assert!(
            matches!(&e, ScriptError::Exception { message } if message.contains("not available")),
            "{spec}: {e}"
        );
    }
    // Without host access the host modules are not there either.
    let tool = r#"import kv from "kv"; export default function () { return 1; }"#;
    assert!(p.run(&Call::module(tool, "default", json!({}))).await.is_err());
    still_serves(&p).await;
}

#[tokio::test]
async fn eval_returns_the_completion_value_with_args_and_globals() {
    let p = pool(Limits::default());
    let out = p
        .run_with(
            &Call::eval("const x = args.a * 3; x + 1", json!({"a": 2})).with_host(),
            Some(&EchoHost),
        )
        .await
        .unwrap();
    assert_eq!(out, json!(7));
    let out = p
        .run_with(
            &Call::eval("mcp.call('calc', {a: 1})", json!(null)).with_host(),
            Some(&EchoHost),
        )
        .await
        .unwrap();
    assert_eq!(out["args"], json!(["calc", {"a": 1}]));
}

#[tokio::test]
async fn host_call_time_does_not_count_against_the_wall_clock() {
    struct Slow;
    impl llmr_script::Host for Slow {
        fn call<'a>(&'a self, _: &'a str, _: &'a str, _: serde_json::Value) -> llmr_script::HostFuture<'a> {
            Box::pin(async {
                tokio::time::sleep(Duration::from_millis(400)).await;
                Ok(json!("late"))
            })
        }
    }
    let p = pool(Limits {
        wall_ms: 300,
        ..Limits::default()
    });
    let out = p
        .run_with(&Call::eval("ai.chat('x')", json!(null)).with_host(), Some(&Slow))
        .await
        .unwrap();
    assert_eq!(out, json!("late"));
}

/// A call of a module's export with the host modules (answered by [`EchoHost`]).
async fn host_call(
    p: &ScriptPool,
    source: &str,
    export: &str,
    args: serde_json::Value,
) -> Result<serde_json::Value, ScriptError> {
    p.run_with(&Call::module(source, export, args).with_host(), Some(&EchoHost))
        .await
}

#[tokio::test]
async fn many_module_calls_stay_within_the_memory_limit_in_one_host() {
    // boa 0.22 keeps a module whose namespace object was made (~0.3 MB each, its realm
    // included); a call reads its export without one, so one host serves them all: 1,000
    // calls under a 96 MiB cap would need ~300 MiB if each kept its realm. And 1,100 calls
    // get past the 1,024th, where a context reused without bound would have run out of VM
    // stack (boa leaves slots on it per module evaluated).
    let p = pool(Limits {
        memory_mb: 96,
        ..Limits::default()
    });
    let tool =
        "import { text } from 'mcp';\nexport const description = 'x';\nexport default function (a) { return a.n + 1; }";
    for n in 0..1100 {
        assert_eq!(
            host_call(&p, tool, "default", json!({"n": n})).await,
            Ok(json!(n + 1)),
            "call {n}"
        );
    }
    assert_eq!(p.hosts_started(), 1, "no host was replaced");
    assert!(p.calls_in_reused_contexts() > 1000, "{}", p.calls_in_reused_contexts());
}

#[tokio::test]
async fn hosts_are_replaced_in_the_background_without_failing_a_call() {
    // Each host serves 8 calls; its successor starts before its last, so the calls go on
    // across every hand-over. A host whose successor is not ready yet goes on serving, up
    // to four times its share (32 calls): at least two hand-overs in 60 calls, at most one
    // every 8.
    let p = pool(Limits::default()).with_calls_per_host(8);
    let tool = "export default function (a) { return a.n * 2; }";
    for n in 0..60 {
        assert_eq!(
            host_call(&p, tool, "default", json!({"n": n})).await,
            Ok(json!(n * 2)),
            "call {n}"
        );
    }
    let started = p.hosts_started();
    assert!((3..=9).contains(&started), "60 calls at 8 per host: {started} hosts");
}

#[tokio::test]
async fn module_state_and_globals_of_a_call_are_gone_in_the_next() {
    // Host calls run in a context made before they arrive (or left as it was made by the
    // call before): module state and globals of one call are gone in the next, on the same
    // host.
    let p = pool(Limits::default());
    let counter = "import { text } from 'mcp';\nlet n = 0;\nexport default function () { n += 1; globalThis.seen = (globalThis.seen || 0) + 1; return [n, globalThis.seen, typeof text]; }";
    for round in 0..5 {
        assert_eq!(
            host_call(&p, counter, "default", json!({})).await,
            Ok(json!([1, 1, "function"])),
            "round {round}"
        );
    }
    for missing in ["nothing", "a-b"] {
        assert_eq!(
            host_call(&p, counter, missing, json!({})).await,
            Err(ScriptError::NoFunction { name: missing.into() })
        );
    }
}

#[tokio::test]
async fn a_context_serves_the_next_call_only_as_it_was_made() {
    // A tool call that leaves its context as it was made leaves it to the next call: one
    // host, twenty calls, every one after the first in the same context.
    let p = pool(Limits::default());
    let echo = "import { text } from 'mcp';\nexport default function (a) { const o = { t: a.t, n: [1, 2].map((x) => x * 2) }; globalThis.__scratch = 1; delete globalThis.__scratch; return o; }";
    // The process-wide metric (other tests add to it too, hence at least).
    let metric = || {
        llmr_telemetry::metrics::metrics()
            .sandbox_calls
            .with_label_values(&["reused"])
            .get()
    };
    let before = metric();
    for n in 0..20 {
        assert_eq!(
            host_call(&p, echo, "default", json!({"t": n})).await,
            Ok(json!({"t": n, "n": [2, 4]}))
        );
    }
    assert_eq!(
        p.calls_in_reused_contexts(),
        19,
        "every call after the first reused the context"
    );
    assert!(
        metric() >= before + 19,
        "llmr_sandbox_calls_total{{context=\"reused\"}} counts them"
    );

    // Each trace a call can leave: the call that leaves it still answers, the next call
    // (on the same host) sees none of it, and ran in a fresh context.
    let libs: std::collections::BTreeMap<String, String> = [(
        "counter.js".to_owned(),
        "let n = 0;\nexport function next() { n += 1; return n; }".to_owned(),
    )]
    .into_iter()
    .collect();
    let traces = [
        ("a built-in's property", "Math.leak = 1;", "Math.leak === undefined"),
        (
            "a hidden intrinsic (the array iterator prototype)",
            "Object.getPrototypeOf([][Symbol.iterator]()).leak = 1;",
            "[][Symbol.iterator]().leak === undefined",
        ),
        (
            "the generator prototype",
            "Object.getPrototypeOf(function* () {}).prototype.leak = 1;",
            "(function* () {})().leak === undefined",
        ),
        (
            "%TypedArray%",
            "Object.getPrototypeOf(Uint8Array).prototype.leak = 1;",
            "new Uint8Array(1).leak === undefined",
        ),
        (
            "an index on Array.prototype",
            "Array.prototype[0] = 'x';",
            "[, 1][0] === undefined",
        ),
        (
            "a global var (indirect eval)",
            "(0, eval)('var leakedVar = 1;');",
            "(0, eval)('typeof leakedVar') === 'undefined'",
        ),
        (
            "a global function (indirect eval)",
            "(0, eval)('function leakedFn() {}');",
            "typeof globalThis.leakedFn === 'undefined'",
        ),
        (
            "a queued promise reaction",
            "Promise.resolve().then(() => { globalThis.late = 1; });",
            "globalThis.late === undefined",
        ),
        ("a host module's function", "text.leak = 1;", "text.leak === undefined"),
        (
            "a non-extensible built-in",
            "Object.preventExtensions(Math);",
            "Object.isExtensible(Math)",
        ),
        (
            "a swapped prototype",
            "Object.setPrototypeOf(JSON, null);",
            "Object.getPrototypeOf(JSON) === Object.prototype",
        ),
        (
            "a redefined global",
            "Object.defineProperty(globalThis, 'JSON', { enumerable: true });",
            "!Object.getOwnPropertyDescriptor(globalThis, 'JSON').enumerable",
        ),
    ];
    for (what, trace, probe) in traces {
        let head = "import { text } from 'mcp';\nimport { next } from 'counter';\n";
        let tracer = format!("{head}export default function () {{ {trace} return 'left'; }}");
        let checker = format!("{head}export default function () {{ return {probe}; }}");
        let p = &p;
        let run = |source: String| {
            let call = Call::module(&source, "default", json!({}))
                .with_host()
                .with_libraries(libs.clone());
            async move { p.run_with(&call, Some(&EchoHost)).await }
        };
        assert_eq!(run(tracer).await, Ok(json!("left")), "{what}: the call itself answers");
        let reused = p.calls_in_reused_contexts();
        assert_eq!(
            run(checker.clone()).await,
            Ok(json!(true)),
            "{what} reached the next call"
        );
        assert_eq!(
            p.calls_in_reused_contexts(),
            reused,
            "{what}: the next call got a fresh context"
        );
        // The fresh context is clean again: the check passes in it, reused.
        assert_eq!(run(checker).await, Ok(json!(true)), "{what}: a clean call after");
        assert_eq!(
            p.calls_in_reused_contexts(),
            reused + 1,
            "{what}: a clean call leaves its context"
        );
    }
    // A library's module state is not a trace: a library is evaluated afresh in each call
    // that imports it, so its state starts over in a reused context too.
    let counting = Call::module(
        "import { next } from 'counter';\nexport default function () { next(); return next(); }",
        "default",
        json!({}),
    )
    .with_host()
    .with_libraries(libs);
    let reused = p.calls_in_reused_contexts();
    for round in 0..3 {
        assert_eq!(
            p.run_with(&counting, Some(&EchoHost)).await,
            Ok(json!(2)),
            "round {round}"
        );
    }
    assert!(
        p.calls_in_reused_contexts() >= reused + 2,
        "the library's state left no trace"
    );
}

#[tokio::test]
async fn a_call_abandoned_mid_host_call_leaves_the_pool_serving() {
    // The caller goes away while the script waits for a host call: the host process is
    // dropped (killed), and the next call gets a fresh one instead of a confused one.
    struct Never;
    impl llmr_script::Host for Never {
        fn call<'a>(&'a self, _: &'a str, _: &'a str, _: serde_json::Value) -> llmr_script::HostFuture<'a> {
            Box::pin(std::future::pending())
        }
    }
    let p = pool(Limits::default());
    still_serves(&p).await;
    let chat = Call::eval("ai.chat('x')", json!(null)).with_host();
    let abandoned = p.run_with(&chat, Some(&Never));
    assert!(
        tokio::time::timeout(Duration::from_millis(300), abandoned)
            .await
            .is_err(),
        "the host call never answers"
    );
    still_serves(&p).await;
    still_serves(&p).await;
}

#[tokio::test]
async fn tampering_with_builtins_does_not_reach_the_next_call() {
    // One host process (pool of one) serves both calls: whatever the first call changes in
    // its globals must be gone for the second.
    let p = pool(Limits::default());
    let tamper = r#"
Object.prototype.polluted = "yes";
Array.prototype.map = function () { return "hijacked"; };
JSON.stringify = function () { return "forged"; };
JSON.parse = function () { return { forged: true }; };
Math.random = function () { return 4; };
Math.max = function () { return -1; };
Date.now = function () { return 0; };
Date.prototype.getTime = function () { return 0; };
String.prototype.toUpperCase = function () { return "no"; };
Function.prototype.call = function () { return "hijacked"; };
globalThis.leak = 42;
Object.defineProperty(globalThis, "sticky", { value: 1, writable: false, configurable: false });
export const description = "tampers";
export default function () { return { tampered: [1].map(function (x) { return x; }) }; }"#;
    assert_eq!(
        p.run(&Call::module(tamper, "default", json!({}))).await.unwrap(),
        json!({"tampered": "hijacked"}),
        "the tampering took effect inside its own call"
    );
    let check = r#"
export const description = "checks";
export default function () {
  return {
    polluted: ({}).polluted === undefined,
    map: [1, 2].map(function (x) { return x * 2; })[1] === 4,
    stringify: JSON.stringify({ a: 1 }) === '{"a":1}',
    parse: JSON.parse('{"b":2}').b === 2,
    random: Math.random() < 1,
    max: Math.max(1, 2) === 2,
    now: Date.now() > 1700000000000,
    getTime: new Date(5).getTime() === 5,
    upper: "a".toUpperCase() === "A",
    call: (function () { return 7; }).call(null) === 7,
    leak: typeof globalThis.leak === "undefined",
    sticky: typeof globalThis.sticky === "undefined",
  };
}"#;
    for round in 0..3 {
        let seen = p.run(&Call::module(check, "default", json!({}))).await.unwrap();
        for (name, clean) in seen.as_object().unwrap() {
            assert_eq!(
                clean,
                &json!(true),
                "round {round}: `{name}` leaked from the previous call: {seen}"
            );
        }
        // Script (non-module) calls too.
        let src =
            "function f() { return [({}).polluted === undefined, typeof leak === 'undefined', Math.random() < 1]; }";
        assert_eq!(
            p.run(&call(src, "f", json!({}))).await.unwrap(),
            json!([true, true, true])
        );
        p.run(&Call::module(tamper, "default", json!({}))).await.unwrap();
    }
}

#[tokio::test]
async fn a_hundred_megabyte_string_is_stopped() {
    let p = pool(Limits::default());
    let e = stopped(
        &p,
        "100 MB string",
        "function f() { var s = 'x'.repeat(100 * 1024 * 1024); return s.length; }",
    )
    .await;
    assert!(
        matches!(
            e,
            ScriptError::Limit { .. } | ScriptError::Exception { .. } | ScriptError::Crashed { .. }
        ),
        "{e}"
    );
    // Doubling keeps a rope (no 128 MB is materialized): allowed, or stopped; either way
    // the pool serves on.
    let doubled = "function f() { var s = 'x'; for (var i = 0; i < 27; i++) { s = s + s; } return s.length; }";
    let r = p.run(&call(doubled, "f", json!({}))).await;
    eprintln!("sandbox: doubling a string to 128 Mi characters: {r:?}");
    assert!(matches!(&r, Ok(v) if v == &json!(134_217_728)) || r.is_err(), "{r:?}");
    still_serves(&p).await;
}

#[tokio::test]
async fn proxies_and_getters_cannot_trap_the_host() {
    let p = pool(Limits::default());
    let cases = [
        (
            "a getter that never returns",
            "function f() { return { get x() { while (true) {} } }; }",
        ),
        (
            "a getter that throws",
            "function f() { return { get x() { throw new Error('gotcha'); } }; }",
        ),
        (
            "a proxy whose traps throw",
            "function f() { return new Proxy({}, { ownKeys() { throw new Error('keys'); }, get() { throw new Error('get'); } }); }",
        ),
        (
            "a proxy that loops",
            "function f() { return new Proxy({}, { ownKeys() { while (true) {} } }); }",
        ),
        (
            "toJSON that recurses",
            "function f() { var o = {}; o.toJSON = function () { return [o, o]; }; return o; }",
        ),
        ("a cycle", "function f() { var a = {}; a.self = a; return a; }"),
    ];
    // Each ends within its limits — a value (accessors are not called when the result is
    // read) or a clear error — and the pool serves on.
    for (name, src) in cases {
        let t = Instant::now();
        let r = p.run(&call(src, "f", json!({}))).await;
        eprintln!("sandbox: {name}: {r:?} after {:?}", t.elapsed());
        assert!(t.elapsed() < Duration::from_secs(4), "{name}: {:?}", t.elapsed());
        if let Err(e) = &r {
            assert!(
                !matches!(e, ScriptError::Unavailable { .. } | ScriptError::NoFunction { .. }),
                "{name}: {e}"
            );
        }
        still_serves(&p).await;
    }
}

#[tokio::test]
async fn deeply_nested_results_are_refused_cleanly() {
    let p = pool(Limits::default());
    for depth in [50, 100, 200, 400, 1_000, 100_000] {
        let src = format!("function f() {{ var o = 1; for (var i = 0; i < {depth}; i++) {{ o = [o]; }} return o; }}");
        let t = Instant::now();
        let r = p.run(&call(&src, "f", json!({}))).await;
        eprintln!(
            "sandbox: result nested {depth} deep: {:?} after {:?}",
            r.as_ref().err(),
            t.elapsed()
        );
        if depth <= 50 {
            assert!(r.is_ok(), "nested {depth} deep: {r:?}");
        } else if depth < 10_000 {
            assert!(
                matches!(&r, Err(ScriptError::Limit { message }) if message.contains("nested deeper")),
                "nested {depth} deep: refused at once: {r:?}"
            );
            assert!(t.elapsed() < Duration::from_secs(1), "{:?}", t.elapsed());
        } else {
            assert!(r.is_err(), "nested {depth} deep: refused");
        }
        still_serves(&p).await;
    }
}

#[tokio::test]
async fn host_call_arguments_nested_too_deeply_are_refused_at_once() {
    let p = pool(Limits::default());
    let src = "var o = 1; for (var i = 0; i < 500; i++) { o = [o]; } kv.set('k', o)";
    let t = Instant::now();
    let r = p
        .run_with(&Call::eval(src, json!(null)).with_host(), Some(&EchoHost))
        .await;
    eprintln!(
        "sandbox: host call with arguments nested 500 deep: {r:?} after {:?}",
        t.elapsed()
    );
    assert!(
        matches!(&r, Err(ScriptError::Exception { message }) if message.contains("nested deeper")),
        "{r:?}"
    );
    assert!(
        t.elapsed() < Duration::from_secs(1),
        "at once, not at the wall clock: {:?}",
        t.elapsed()
    );
    still_serves(&p).await;
}
