//! Sandboxed JavaScript for llmrouter: MCP tools and scripted routing run their scripts
//! here, on boa_engine.
//!
//! boa has no way to interrupt a running script and no heap limit, so scripts run in child
//! processes (`host_main`, started as `<exe> <args…>`): a call past its wall-clock limit, or
//! a child that dies (a script that allocates past the memory limit aborts its process), is
//! answered with a clear error, the child is killed and replaced, and the pool keeps
//! serving. Inside the child every call gets a fresh `Context` with loop, recursion and stack
//! limits, and a bound on the size of its result. A script reaches nothing of the host: boa
//! has no file, process, network or environment APIs, and none is added here.
//!
//! # Layout
//! - [`host`]: the child side (one JSON request per line on stdin, one answer per line).
//! - [`pool`]: the parent side: a pool of children, with the wall-clock limit.
//! - `pristine`: whether a context a call ran in is still as it was made, so it can serve
//!   the next call.
//! - [`modules`]: the host modules (`mcp`, `ai`, `http`, `kv`) scripts may import; each
//!   function is a synchronous round trip to the parent, which decides what it may do.

pub mod host;
pub mod modules;
pub mod pool;
mod pristine;

use serde::{Deserialize, Serialize};

pub use host::host_main;
pub use pool::{Host, HostCallError, HostFuture, ScriptPool};

use llmr_config::Settings;
use std::path::PathBuf;

/// How to start a script host process: a program and its arguments.
#[derive(Debug, Clone)]
pub struct ScriptHost {
    pub program: PathBuf,
    pub args: Vec<String>,
}

impl ScriptHost {
    /// `[scripting] host_command` when set, else this executable with `script-host`.
    pub fn from_settings(settings: &Settings) -> ScriptHost {
        let cmd = settings.scripting.host_command.trim();
        if !cmd.is_empty() {
            let mut parts = cmd.split_whitespace().map(str::to_owned);
            let program = PathBuf::from(parts.next().unwrap_or_default());
            return ScriptHost {
                program,
                args: parts.collect(),
            };
        }
        ScriptHost {
            program: std::env::current_exe().unwrap_or_else(|_| PathBuf::from("llmrouter")),
            args: vec!["script-host".into()],
        }
    }

    /// A pool of hosts with the sandbox limits of `[scripting]` (and `wall_ms`).
    pub fn pool(&self, settings: &Settings, wall_ms: u64) -> ScriptPool {
        let sc = &settings.scripting;
        let limits = Limits {
            wall_ms,
            loop_iterations: sc.loop_iterations,
            recursion: sc.recursion,
            memory_mb: sc.memory_mb,
            result_bytes: sc.max_result_bytes,
            ..Limits::default()
        };
        ScriptPool::new(self.program.clone(), self.args.clone(), limits, sc.hosts)
    }
}

/// The sandbox's bounds.
#[derive(Debug, Clone, Copy, Serialize, Deserialize)]
pub struct Limits {
    /// Wall-clock time of one call, enforced by the parent (kill and replace the child).
    pub wall_ms: u64,
    /// Loop iterations per call frame (boa's own limit).
    pub loop_iterations: u64,
    /// Call depth.
    pub recursion: usize,
    /// VM stack size.
    pub stack: usize,
    /// Address space of a child process, in MiB.
    pub memory_mb: u64,
    /// Largest result, as JSON bytes.
    pub result_bytes: usize,
}

impl Default for Limits {
    fn default() -> Limits {
        Limits {
            wall_ms: 2000,
            loop_iterations: 10_000_000,
            recursion: 256,
            stack: 10 * 1024,
            memory_mb: 512,
            result_bytes: 1 << 20,
        }
    }
}

/// How `source` is read.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Kind {
    /// A classic script; `function` is a global name or `object.member`.
    #[default]
    Script,
    /// An ES module (a tool file); `function` names an export (`default` for the default
    /// export). With an empty `function`, the call returns the module's non-function exports
    /// (a tool's description, parameters, keywords, visibility).
    Module,
    /// A classic script whose completion value is the result (`execute_code`); `args` is the
    /// global `args`, and the host modules are globals.
    Eval,
}

/// One call: evaluate `source`, then call `function` with `args`.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct Call {
    pub source: String,
    pub function: String,
    pub args: serde_json::Value,
    #[serde(default)]
    pub kind: Kind,
    /// Whether the host modules (`mcp`, `ai`, `http`, `kv`) are importable.
    #[serde(default)]
    pub host: bool,
    /// Library sources by specifier (`name.js`), importable by the module.
    #[serde(default)]
    pub libraries: std::collections::BTreeMap<String, String>,
}

impl Call {
    /// A call of a classic script's function.
    pub fn script(source: &str, function: &str, args: serde_json::Value) -> Call {
        Call {
            source: source.into(),
            function: function.into(),
            args,
            kind: Kind::Script,
            host: false,
            libraries: Default::default(),
        }
    }

    /// A call of an ES module's export.
    pub fn module(source: &str, export: &str, args: serde_json::Value) -> Call {
        Call {
            source: source.into(),
            function: export.into(),
            args,
            kind: Kind::Module,
            host: false,
            libraries: Default::default(),
        }
    }

    /// The non-function exports of an ES module.
    pub fn describe(source: &str) -> Call {
        Call {
            source: source.into(),
            function: String::new(),
            args: serde_json::Value::Null,
            kind: Kind::Module,
            host: false,
            libraries: Default::default(),
        }
    }

    /// A classic script evaluated for its completion value, with `args` as a global.
    pub fn eval(source: &str, args: serde_json::Value) -> Call {
        Call {
            source: source.into(),
            function: String::new(),
            args,
            kind: Kind::Eval,
            host: false,
            libraries: Default::default(),
        }
    }

    /// Makes the host modules available to this call.
    pub fn with_host(mut self) -> Call {
        self.host = true;
        self
    }

    /// Makes these libraries importable.
    pub fn with_libraries(mut self, libraries: std::collections::BTreeMap<String, String>) -> Call {
        self.libraries = libraries;
        self
    }
}

/// The specifier a library import resolves to: `./x`, `x` and `x.js` are all `x.js`.
pub fn library_key(specifier: &str) -> String {
    let s = specifier.trim_start_matches("./");
    if s.ends_with(".js") || s.ends_with(".mjs") {
        s.to_owned()
    } else {
        format!("{s}.js")
    }
}

/// The bare specifiers a module's source imports (static and dynamic), in order of
/// appearance; host modules included.
pub fn imports(source: &str) -> Vec<String> {
    let mut out: Vec<String> = Vec::new();
    let b = source.as_bytes();
    let mut i = 0;
    while i < b.len() {
        let rest = &source[i..];
        let skip = if rest.starts_with("from") {
            4
        } else if rest.starts_with("import") {
            6
        } else {
            0
        };
        if skip == 0 {
            i += rest.chars().next().map_or(1, char::len_utf8);
            continue;
        }
        let after = rest[skip..].trim_start_matches([' ', '\t', '\n', '\r', '(']);
        if let Some(q) = after.chars().next().filter(|c| *c == '"' || *c == '\'')
            && let Some(end) = after[1..].find(q)
        {
            let spec = after[1..1 + end].to_owned();
            if !out.contains(&spec) {
                out.push(spec);
            }
        }
        i += skip;
    }
    out
}

/// Why a call produced no result.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, thiserror::Error)]
#[serde(tag = "kind", rename_all = "snake_case")]
pub enum ScriptError {
    /// The script threw (or did not parse).
    #[error("script error: {message}")]
    Exception { message: String },
    /// A loop, recursion or stack limit stopped it.
    #[error("script stopped by a limit: {message}")]
    Limit { message: String },
    /// It ran past the wall-clock limit and was killed.
    #[error("script ran longer than {wall_ms} ms and was stopped")]
    Timeout { wall_ms: u64 },
    /// Its process died (usually: it allocated past the memory limit).
    #[error("script process died (memory limit of {memory_mb} MiB or a crash)")]
    Crashed { memory_mb: u64 },
    /// Its result was larger than allowed.
    #[error("script result is {bytes} bytes, over the limit of {limit}")]
    ResultTooLarge { bytes: usize, limit: usize },
    /// The function named is not there.
    #[error("script has no function `{name}`")]
    NoFunction { name: String },
    /// The sandbox could not run at all.
    #[error("script sandbox unavailable: {message}")]
    Unavailable { message: String },
}
