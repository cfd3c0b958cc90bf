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

pub mod host;
pub mod pool;

use serde::{Deserialize, Serialize};

pub use host::host_main;
pub use pool::ScriptPool;

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
}

/// One call: evaluate `source`, then call `function` with `args`.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct Call {
    pub source: String,
    pub function: String,
    pub args: serde_json::Value,
    #[serde(default)]
    pub kind: Kind,
}

impl Call {
    /// A call of a classic script's function.
    pub fn script(source: &str, function: &str, args: serde_json::Value) -> Call {
        Call {
            source: source.into(),
            function: function.into(),
            args,
            kind: Kind::Script,
        }
    }

    /// A call of an ES module's export.
    pub fn module(source: &str, export: &str, args: serde_json::Value) -> Call {
        Call {
            source: source.into(),
            function: export.into(),
            args,
            kind: Kind::Module,
        }
    }

    /// The non-function exports of an ES module.
    pub fn describe(source: &str) -> Call {
        Call {
            source: source.into(),
            function: String::new(),
            args: serde_json::Value::Null,
            kind: Kind::Module,
        }
    }
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
