//! The tool catalog: built-ins, JavaScript tools from `[scripting] tools_path`, and the
//! tools of remote MCP servers, with their visibility; and calling any of them.
//!
//! Local tools are rescanned on every list, search and call: a file's description is
//! cached by its modification time and size, so adding, editing or deleting a tool takes
//! effect on the next call without a restart. Libraries a tool imports are read from
//! `libraries_path` when a call first needs them (cached the same way).

use std::cell::RefCell;
use std::collections::{BTreeMap, HashMap};
use std::path::{Path, PathBuf};
use std::rc::Rc;
use std::time::SystemTime;

use llmr_bus::Caller;
use llmr_config::{Settings, Visibility};
use llmr_script::{Call, ScriptError, ScriptPool, imports, library_key};
use llmr_store::Store;
use serde_json::{Value, json};

use crate::host::{HostEnv, HostError, ToolHost};
use crate::remote::Remote;

/// How deep tools may call tools (`mcp.call`, `execute_tool`).
const MAX_DEPTH: u32 = 4;

pub use crate::model::{CallError, Origin, ToolDef, Via, text_result, to_result, valid_name};
use llmr_protocol::tools::{EXECUTE_CODE, EXECUTE_TOOL, Inventory, Source, TOOL_SEARCH, ToolEntry};

type Stamp = (SystemTime, u64);
/// A tool file as last read: the tool, or `(name, why it did not load)`.
type Loaded = Result<ToolDef, (String, String)>;

/// The catalog and everything a call may use.
pub struct Tools {
    pub(crate) settings: Settings,
    pub(crate) pool: ScriptPool,
    pub(crate) caller: Caller,
    pub(crate) store: Store,
    pub(crate) http: awc::Client,
    pub(crate) remotes: Vec<Remote>,
    local: RefCell<HashMap<PathBuf, (Stamp, Loaded)>>,
    libs: RefCell<HashMap<PathBuf, (Stamp, Rc<str>)>>,
}

fn stamp(path: &Path) -> Option<Stamp> {
    let m = std::fs::metadata(path).ok()?;
    Some((m.modified().ok()?, m.len()))
}

/// How operators read a visibility (as the config file writes it).
fn visibility_name(v: Visibility) -> &'static str {
    match v {
        Visibility::Visible => "visible",
        Visibility::Hidden => "hidden",
        Visibility::Ondemand => "ondemand",
    }
}

/// The definition of built-in tool `name` (one of [`Tools::builtin_names`]).
fn builtin(name: &str) -> ToolDef {
    let (description, schema) = match name {
        TOOL_SEARCH => (
            "Search the available tools by name, description and keywords. Returns matching tools with their input schemas.",
            json!({"type": "object", "properties": {
                "query": {"type": "string", "description": "Words to look for"},
                "limit": {"type": "integer", "minimum": 1, "maximum": 100, "description": "Most results to return (default 10)"}
            }, "required": ["query"]}),
        ),
        EXECUTE_TOOL => (
            "Call a tool by its exact name (including tools found with tool_search).",
            json!({"type": "object", "properties": {
                "name": {"type": "string", "description": "The tool's name"},
                "arguments": {"type": "object", "description": "The tool's arguments"}
            }, "required": ["name"]}),
        ),
        _ => (
            "Run JavaScript in a sandbox and return the value of its last expression. `args` holds the arguments; `mcp.call(name, args)` calls a tool.",
            json!({"type": "object", "properties": {
                "code": {"type": "string", "description": "JavaScript source"},
                "args": {"description": "Available to the code as `args`"}
            }, "required": ["code"]}),
        ),
    };
    ToolDef {
        name: name.into(),
        description: description.into(),
        input_schema: schema,
        keywords: Vec::new(),
        visibility: Visibility::Visible,
        origin: Origin::Builtin,
    }
}

impl Tools {
    pub fn new(settings: &Settings, pool: ScriptPool, caller: Caller, store: Store, http: awc::Client) -> Tools {
        let remotes = settings
            .mcp
            .remote_servers
            .iter()
            .map(|r| Remote::new(r.clone(), &settings.mcp))
            .collect();
        Tools {
            settings: settings.clone(),
            pool,
            caller,
            store,
            http,
            remotes,
            local: RefCell::new(HashMap::new()),
            libs: RefCell::new(HashMap::new()),
        }
    }

    /// The built-in tools' names, in the order they are listed (`execute_code` when enabled).
    fn builtin_names(&self) -> &'static [&'static str] {
        if self.settings.scripting.execute_code {
            &[TOOL_SEARCH, EXECUTE_TOOL, EXECUTE_CODE]
        } else {
            &[TOOL_SEARCH, EXECUTE_TOOL]
        }
    }

    fn builtins(&self) -> Vec<ToolDef> {
        self.builtin_names().iter().map(|name| builtin(name)).collect()
    }

    /// Local tools as they are on disk now.
    async fn local(&self) -> Vec<ToolDef> {
        let dir = &self.settings.scripting.tools_path;
        if dir.is_empty() {
            return Vec::new();
        }
        let mut files: Vec<(PathBuf, Stamp)> = match std::fs::read_dir(dir) {
            Ok(rd) => rd
                .filter_map(Result::ok)
                .map(|e| e.path())
                .filter(|p| p.extension().is_some_and(|x| x == "js" || x == "mjs"))
                .filter_map(|p| stamp(&p).map(|s| (p, s)))
                .collect(),
            Err(e) => {
                tracing::warn!(dir = %dir, error = %e, "cannot read the tools directory");
                Vec::new()
            }
        };
        files.sort();
        self.local.borrow_mut().retain(|p, _| files.iter().any(|(f, _)| f == p));
        let mut out = Vec::with_capacity(files.len());
        for (path, st) in files {
            out.extend(self.load(&path, st).await.ok());
        }
        out
    }

    /// A tool file's description, from the cache while its stamp is the same.
    async fn load(&self, path: &Path, st: Stamp) -> Loaded {
        let cached = self
            .local
            .borrow()
            .get(path)
            .filter(|(s, _)| *s == st)
            .map(|(_, d)| d.clone());
        if let Some(d) = cached {
            return d;
        }
        let d = self.describe(path).await;
        if let Err((name, e)) = &d {
            tracing::warn!(tool = %name, error = %e, "tool not loaded");
        }
        self.local.borrow_mut().insert(path.to_owned(), (st, d.clone()));
        d
    }

    /// The tool a call names, found without building the whole catalog when it is a tool
    /// file: the file `name.js` (else `name.mjs`) is what the catalog would serve under that
    /// name unless a built-in has it. Anything else (a built-in, a remote tool, a file that
    /// did not load, no such tool) is looked up in the catalog.
    async fn find(&self, name: &str) -> Option<ToolDef> {
        let dir = &self.settings.scripting.tools_path;
        if !self.builtin_names().contains(&name) && !dir.is_empty() && crate::model::valid_name(name) {
            for ext in ["js", "mjs"] {
                let path = Path::new(dir).join(format!("{name}.{ext}"));
                if let Some(st) = stamp(&path) {
                    match self.load(&path, st).await {
                        Ok(def) if def.name == name => return Some(def),
                        _ => break,
                    }
                }
            }
        }
        self.catalog().await.into_iter().find(|t| t.name == name)
    }

    /// Why the tool file `name` did not load, when it did not.
    fn load_error(&self, name: &str) -> Option<String> {
        self.local.borrow().values().find_map(|(_, d)| match d {
            Err((n, e)) if n == name => Some(e.clone()),
            _ => None,
        })
    }

    /// Reads a tool file's exports: the tool, or `(name, why it is not a usable tool)`.
    async fn describe(&self, path: &Path) -> Loaded {
        let name = path.file_stem().and_then(|s| s.to_str()).unwrap_or_default().to_owned();
        let fail = |e: String| (name.clone(), e);
        if !valid_name(&name) {
            return Err(fail(
                "tool file names must be letters, digits, `_` or `-` (at most 64)".into(),
            ));
        }
        let source = std::fs::read_to_string(path).map_err(|e| fail(e.to_string()))?;
        let libraries = self.libraries(&source).map_err(|e| fail(e.to_string()))?;
        let d = self
            .pool
            .run(&Call::describe(&source).with_host().with_libraries(libraries))
            .await
            .map_err(|e| fail(e.to_string()))?;
        let text = |k: &str| d.get(k).and_then(Value::as_str).map(str::to_owned);
        let visibility = match text("visibility").as_deref() {
            None | Some("visible") => Visibility::Visible,
            Some("hidden") => Visibility::Hidden,
            Some("ondemand") => Visibility::Ondemand,
            Some(other) => {
                return Err(fail(format!(
                    "unknown visibility `{other}` (visible, hidden, ondemand)"
                )));
            }
        };
        let input_schema = d
            .get("parameters")
            .or_else(|| d.get("inputSchema"))
            .cloned()
            .filter(Value::is_object)
            .unwrap_or_else(|| json!({"type": "object", "properties": {}}));
        tracing::info!(tool = %name, "tool loaded");
        Ok(ToolDef {
            description: text("description").unwrap_or_default(),
            input_schema,
            keywords: d
                .get("keywords")
                .and_then(Value::as_array)
                .map(|a| a.iter().filter_map(|k| k.as_str().map(str::to_owned)).collect())
                .unwrap_or_default(),
            visibility,
            origin: Origin::Local { source: source.into() },
            name,
        })
    }

    /// The libraries `source` imports, transitively, read from `libraries_path`.
    fn libraries(&self, source: &str) -> Result<BTreeMap<String, String>, LibraryError> {
        let mut out = BTreeMap::new();
        let mut todo: Vec<String> = imports(source);
        while let Some(spec) = todo.pop() {
            if llmr_script::modules::NAMES.contains(&spec.as_str()) {
                continue;
            }
            let key = library_key(&spec);
            if out.contains_key(&key) {
                continue;
            }
            let dir = &self.settings.scripting.libraries_path;
            // Only plain names inside the libraries directory; the sandbox reports the rest.
            if dir.is_empty() || key.contains("..") || key.starts_with('/') || key.contains(':') {
                continue;
            }
            let path = Path::new(dir).join(&key);
            let Some(st) = stamp(&path) else { continue };
            let cached = self
                .libs
                .borrow()
                .get(&path)
                .filter(|(s, _)| *s == st)
                .map(|(_, t)| t.clone());
            let text = match cached {
                Some(t) => t,
                None => {
                    let t: Rc<str> = std::fs::read_to_string(&path)
                        .map_err(|source| LibraryError {
                            key: key.clone(),
                            source,
                        })?
                        .into();
                    self.libs.borrow_mut().insert(path.clone(), (st, t.clone()));
                    t
                }
            };
            todo.extend(imports(&text));
            out.insert(key, text.to_string());
        }
        Ok(out)
    }

    /// Every tool, whatever its visibility.
    pub async fn catalog(&self) -> Vec<ToolDef> {
        let mut all = self.builtins();
        let local = self.local().await;
        let remote = futures_util::future::join_all(self.remotes.iter().map(|r| r.tools(&self.http))).await;
        for t in local.into_iter().chain(remote.into_iter().flatten()) {
            if all.iter().any(|x| x.name == t.name) {
                tracing::warn!(tool = %t.name, "two tools share a name; the first one is served");
                continue;
            }
            all.push(t);
        }
        all
    }

    /// The catalog as operators see it: every served tool with its source (a file's path, a
    /// server's namespace), the tool files that did not load and why, and each remote
    /// server's state.
    pub async fn inventory(&self) -> Inventory {
        let served = self.catalog().await;
        let local = self.local.borrow();
        let path_of = |name: &str| {
            local.iter().find_map(|(p, (_, d))| match d {
                Ok(def) if def.name == name => Some(p.display().to_string()),
                _ => None,
            })
        };
        let mut tools: Vec<ToolEntry> = served
            .iter()
            .map(|t| {
                let (source, origin) = match &t.origin {
                    Origin::Builtin => (Source::Builtin, None),
                    Origin::Local { .. } => (Source::File, path_of(&t.name)),
                    Origin::Remote { namespace, .. } => (Source::Remote, Some(namespace.clone())),
                };
                ToolEntry {
                    name: t.name.clone(),
                    description: t.description.clone(),
                    source,
                    origin,
                    visibility: visibility_name(t.visibility).to_owned(),
                    error: None,
                }
            })
            .collect();
        let mut failed: Vec<ToolEntry> = local
            .iter()
            .filter_map(|(p, (_, d))| d.as_ref().err().map(|(name, why)| (p, name, why)))
            .map(|(p, name, why)| ToolEntry {
                name: name.clone(),
                description: String::new(),
                source: Source::File,
                origin: Some(p.display().to_string()),
                visibility: visibility_name(Visibility::Visible).to_owned(),
                error: Some(why.clone()),
            })
            .collect();
        failed.sort_by(|a, b| a.origin.cmp(&b.origin));
        tools.extend(failed);
        Inventory {
            tools,
            remote_servers: self.remotes.iter().map(Remote::state).collect(),
        }
    }

    /// What `tools/list` shows: visible tools, or only the built-ins in discovery mode.
    pub async fn list(&self, discovery: bool) -> Vec<ToolDef> {
        if discovery {
            return self.builtins();
        }
        self.catalog()
            .await
            .into_iter()
            .filter(|t| t.visibility == Visibility::Visible)
            .collect()
    }

    /// `tool_search`: on-demand tools (and, in discovery mode, visible ones) matching the
    /// query's words, best first.
    pub async fn search(&self, query: &str, discovery: bool, limit: usize) -> Vec<ToolDef> {
        let words: Vec<String> = query
            .split(|c: char| !c.is_alphanumeric())
            .filter(|w| !w.is_empty())
            .map(str::to_lowercase)
            .collect();
        let mut scored: Vec<(u32, ToolDef)> = self
            .catalog()
            .await
            .into_iter()
            .filter(|t| t.origin != Origin::Builtin)
            .filter(|t| t.visibility == Visibility::Ondemand || (discovery && t.visibility == Visibility::Visible))
            .filter_map(|t| {
                let name = t.name.to_lowercase();
                let desc = t.description.to_lowercase();
                let kws: Vec<String> = t.keywords.iter().map(|k| k.to_lowercase()).collect();
                let score: u32 = words
                    .iter()
                    .map(|w| {
                        3 * u32::from(name.contains(w.as_str()))
                            + 2 * u32::from(kws.iter().any(|k| k.contains(w.as_str())))
                            + u32::from(desc.contains(w.as_str()))
                    })
                    .sum();
                (score > 0 || words.is_empty()).then_some((score, t))
            })
            .collect();
        scored.sort_by(|a, b| b.0.cmp(&a.0).then_with(|| a.1.name.cmp(&b.1.name)));
        scored.into_iter().take(limit).map(|(_, t)| t).collect()
    }

    /// Calls a tool: the CallToolResult, or why it could not start.
    pub fn call<'a>(
        self: &'a Rc<Self>,
        name: &'a str,
        args: Value,
        via: Via,
        discovery: bool,
        depth: u32,
    ) -> futures_util::future::LocalBoxFuture<'a, Result<Value, CallError>> {
        let span = if !llmr_telemetry::exported() {
            tracing::Span::none()
        } else {
            tracing::info_span!(
                "execute_tool",
                otel.name = %format!("execute_tool {name}"),
                otel.kind = "internal",
                gen_ai.operation.name = "execute_tool",
                gen_ai.tool.name = %name,
            )
        };
        Box::pin(tracing::Instrument::instrument(
            async move {
                if depth > MAX_DEPTH {
                    return Ok(text_result(
                        format!("tools may call tools at most {MAX_DEPTH} deep"),
                        true,
                    ));
                }
                let args = match args {
                    Value::Null => json!({}),
                    a @ Value::Object(_) => a,
                    _ => return Err(CallError::Arguments(name.into(), "arguments must be an object".into())),
                };
                let Some(tool) = self.find(name).await else {
                    if let Some(e) = self.load_error(name) {
                        return Ok(text_result(format!("tool `{name}` failed to load: {e}"), true));
                    }
                    return Err(CallError::Unknown(name.into()));
                };
                if via == Via::Direct && tool.visibility == Visibility::Ondemand {
                    return Err(CallError::OnDemand(name.into()));
                }
                let started = std::time::Instant::now();
                let out = match &tool.origin {
                    Origin::Builtin => self.builtin(name, args, discovery, depth).await?,
                    Origin::Local { source } => self.run_local(&tool.name, source, args, depth).await,
                    Origin::Remote { namespace, name } => {
                        match self.remotes.iter().find(|r| &r.namespace() == namespace) {
                            Some(r) => r.call(&self.http, name, args).await,
                            None => text_result(format!("remote server `{namespace}` is not configured"), true),
                        }
                    }
                };
                let is_error = out.get("isError").and_then(Value::as_bool).unwrap_or(false);
                let m = llmr_telemetry::metrics::metrics();
                let outcome = if is_error { "error" } else { "ok" };
                m.tool_calls.with_label_values(&[name, outcome]).inc();
                m.tool_duration
                    .with_label_values(&[name])
                    .observe(started.elapsed().as_secs_f64());
                tracing::info!(tool = %name, ms = started.elapsed().as_millis() as u64, is_error, "tool called");
                Ok(out)
            },
            span,
        ))
    }

    async fn run_local(self: &Rc<Self>, name: &str, source: &str, args: Value, depth: u32) -> Value {
        let libraries = match self.libraries(source) {
            Ok(l) => l,
            Err(e) => return text_result(e.to_string(), true),
        };
        let host = ToolHost {
            env: self,
            tool: name.to_owned(),
            depth,
        };
        let call = Call::module(source, "default", args)
            .with_host()
            .with_libraries(libraries);
        script_result(self.pool.run_with(&call, Some(&host)).await)
    }

    async fn builtin(
        self: &Rc<Self>,
        name: &str,
        args: Value,
        discovery: bool,
        depth: u32,
    ) -> Result<Value, CallError> {
        let bad = |m: &str| CallError::Arguments(name.into(), m.into());
        match name {
            TOOL_SEARCH => {
                let query = args
                    .get("query")
                    .and_then(Value::as_str)
                    .ok_or_else(|| bad("`query` (a string) is required"))?;
                let limit = args.get("limit").and_then(Value::as_u64).unwrap_or(10).clamp(1, 100) as usize;
                let found = self.search(query, discovery, limit).await;
                let tools: Vec<Value> = found
                    .iter()
                    .map(|t| json!({"name": t.name, "description": t.description, "inputSchema": t.input_schema, "visibility": t.visibility}))
                    .collect();
                let structured = json!({"tools": tools});
                Ok(
                    json!({"content": [{"type": "text", "text": structured.to_string()}], "structuredContent": structured, "isError": false}),
                )
            }
            EXECUTE_TOOL => {
                let target = args
                    .get("name")
                    .and_then(Value::as_str)
                    .ok_or_else(|| bad("`name` (a string) is required"))?;
                let inner = args.get("arguments").cloned().unwrap_or(Value::Null);
                if [TOOL_SEARCH, EXECUTE_TOOL].contains(&target) {
                    return Err(bad("execute_tool calls other tools"));
                }
                match self.call(target, inner, Via::Indirect, discovery, depth + 1).await {
                    Ok(r) => Ok(r),
                    Err(e) => Ok(text_result(e.to_string(), true)),
                }
            }
            EXECUTE_CODE => {
                let code = args
                    .get("code")
                    .and_then(Value::as_str)
                    .ok_or_else(|| bad("`code` (a string) is required"))?;
                let host = ToolHost {
                    env: self,
                    tool: EXECUTE_CODE.to_owned(),
                    depth,
                };
                let call = Call::eval(code, args.get("args").cloned().unwrap_or(Value::Null)).with_host();
                Ok(script_result(self.pool.run_with(&call, Some(&host)).await))
            }
            _ => Err(CallError::Unknown(name.into())),
        }
    }
}

/// A library a tool imports could not be read.
#[derive(Debug, thiserror::Error)]
#[error("library {key}: {source}")]
pub struct LibraryError {
    key: String,
    source: std::io::Error,
}

/// What host modules reach of the catalog.
impl HostEnv for Rc<Tools> {
    fn call_tool<'a>(
        &'a self,
        name: &'a str,
        args: Value,
        depth: u32,
    ) -> futures_util::future::LocalBoxFuture<'a, Result<Value, HostError>> {
        Box::pin(async move { Ok(self.call(name, args, Via::Indirect, false, depth).await?) })
    }
    fn caller(&self) -> &Caller {
        &self.caller
    }
    fn settings(&self) -> &Settings {
        &self.settings
    }
    fn store(&self) -> &Store {
        &self.store
    }
    fn http(&self) -> &awc::Client {
        &self.http
    }
}

fn script_result(r: Result<Value, ScriptError>) -> Value {
    match r {
        Ok(v) => to_result(v),
        Err(e) => text_result(e.to_string(), true),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn script_values_become_call_results() {
        assert_eq!(to_result(json!("hi"))["content"][0]["text"], json!("hi"));
        let r = to_result(json!({"sum": 3}));
        assert_eq!(r["structuredContent"], json!({"sum": 3}));
        assert_eq!(r["isError"], json!(false));
        let r = to_result(json!({"content": [{"type": "text", "text": "x"}], "isError": true}));
        assert_eq!(r["isError"], json!(true));
        assert_eq!(to_result(json!(42))["content"][0]["text"], json!("42"));
    }

    #[test]
    fn names_must_suit_openai_functions() {
        assert!(valid_name("calc_2-x"));
        assert!(!valid_name("a.b"));
        assert!(!valid_name(""));
        assert!(!valid_name(&"x".repeat(65)));
    }
}
