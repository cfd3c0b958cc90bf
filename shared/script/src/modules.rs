//! The host modules a tool may import — `mcp`, `ai`, `http`, `kv` — as JavaScript over one
//! native function, `__host(module, function, args)`, which writes a request line to the
//! parent and blocks for its answer. The parent decides what each call may do (the `http`
//! allowlist, the tool's own `kv` space); the child reaches nothing itself.

/// The global object every host module is a view of.
pub const PRELUDE: &str = r#"
globalThis.__llmr = (function (host) {
  const text = (s) => ({ content: [{ type: "text", text: String(s) }] });
  return Object.freeze({
    mcp: Object.freeze({
      text,
      json: (v) => ({ content: [{ type: "text", text: JSON.stringify(v) }], structuredContent: v }),
      error: (s) => ({ content: [{ type: "text", text: String(s) }], isError: true }),
      call: (name, args) => host("mcp", "call", [String(name), args === undefined ? {} : args]),
    }),
    ai: Object.freeze({
      chat: (input, options) => host("ai", "chat", [input, options === undefined ? {} : options]),
    }),
    http: Object.freeze({
      fetch: (url, options) => host("http", "fetch", [String(url), options === undefined ? {} : options]),
      get: (url) => host("http", "fetch", [String(url), {}]),
      getJson: (url) => JSON.parse(host("http", "fetch", [String(url), {}]).body),
    }),
    kv: Object.freeze({
      get: (key) => host("kv", "get", [String(key)]),
      set: (key, value, ttlMs) => host("kv", "set", [String(key), value, ttlMs === undefined ? null : ttlMs]),
      delete: (key) => host("kv", "delete", [String(key)]),
      keys: () => host("kv", "keys", []),
    }),
  });
})(__host);
"#;

/// Globals for `Kind::Eval` (`execute_code`): the modules without an import.
pub const EVAL_GLOBALS: &str = "var mcp = __llmr.mcp, ai = __llmr.ai, http = __llmr.http, kv = __llmr.kv;";

/// The names of the host modules.
pub const NAMES: [&str; 4] = ["mcp", "ai", "http", "kv"];

/// The ES module source of host module `name`.
pub fn source(name: &str) -> Option<String> {
    let exports = match name {
        "mcp" => "text, json, error, call",
        "ai" => "chat",
        "http" => "fetch, get, getJson",
        "kv" => "get, set, keys",
        _ => return None,
    };
    let extra = if name == "kv" {
        "export const del = m.delete;\n"
    } else {
        ""
    };
    Some(format!(
        "const m = globalThis.__llmr.{name};\nexport default m;\nexport const {{ {exports} }} = m;\n{extra}"
    ))
}
