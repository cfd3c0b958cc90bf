//! The child side: caps its own address space, then answers one JSON request per line.
//! While a call runs, a host-module call writes `{"host": {module, function, args}}` and
//! reads the parent's `{"ok": value}` or `{"error": message}` line.

use std::cell::RefCell;
use std::collections::HashMap;
use std::io::{BufRead, Write};
use std::rc::Rc;

use boa_engine::builtins::promise::PromiseState;
use boa_engine::module::{ModuleLoader, ModuleRequest, Referrer};
use boa_engine::{Context, JsError, JsNativeError, JsResult, JsString, JsValue, Module, NativeFunction, Source};
use serde::{Deserialize, Serialize};

use crate::pristine::{Jobs, Pristine};
use crate::{Call, Kind, Limits, ScriptError, library_key, modules};

#[derive(Deserialize)]
pub(crate) struct Request {
    pub id: u64,
    pub call: Call,
}

/// A [`Request`] as the parent writes it (the call borrowed, not copied into a JSON tree).
#[derive(Serialize)]
pub(crate) struct RequestRef<'a> {
    pub id: u64,
    pub call: &'a Call,
}

#[derive(Serialize, Deserialize)]
pub(crate) struct Response {
    pub id: u64,
    pub result: Result<serde_json::Value, ScriptError>,
    /// The call ran in a context an earlier call had left as it was made (see `pristine.rs`).
    #[serde(default)]
    pub reused: bool,
}

/// A host-module call, from the child to the parent.
#[derive(Serialize, Deserialize)]
pub(crate) struct HostCall {
    pub host: HostCallBody,
}

#[derive(Serialize, Deserialize)]
pub(crate) struct HostCallBody {
    pub module: String,
    pub function: String,
    pub args: serde_json::Value,
}

/// The first line a host writes, once it can take calls.
#[derive(Serialize, Deserialize)]
pub(crate) struct Ready {
    pub ready: bool,
}

/// The parent's answer to a [`HostCall`].
#[derive(Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub(crate) enum HostAnswer {
    Ok(serde_json::Value),
    Error(String),
}

fn read_line() -> Option<String> {
    let mut line = String::new();
    match std::io::stdin().lock().read_line(&mut line) {
        Ok(0) | Err(_) => None,
        Ok(_) => Some(line),
    }
}

fn write_line(text: &str) -> bool {
    let mut out = std::io::stdout().lock();
    writeln!(out, "{text}").and_then(|()| out.flush()).is_ok()
}

/// Runs the host until stdin closes. The first line is the [`Limits`] as JSON.
pub fn host_main() -> std::process::ExitCode {
    let Some(first) = read_line() else {
        return std::process::ExitCode::FAILURE;
    };
    let Ok(limits) = serde_json::from_str::<Limits>(&first) else {
        return std::process::ExitCode::FAILURE;
    };
    let bytes = limits.memory_mb.saturating_mul(1024 * 1024);
    if let Err(e) = rlimit::setrlimit(rlimit::Resource::AS, bytes, bytes) {
        tracing::warn!(error = %e, "could not limit the script host's memory");
    }
    // The next call's context is made while the host waits for it, off the call's path.
    // Tools (host modules) first; after that, of the kind of the call before, recorded for
    // reuse when that was a tool call.
    let mut next = Prepared::make(true, true).ok();
    if !write_ready() {
        return std::process::ExitCode::SUCCESS;
    }
    while let Some(line) = read_line() {
        let Ok(req) = serde_json::from_str::<Request>(&line) else {
            continue;
        };
        let prepared = match next.take() {
            Some(p) if p.loader.host == req.call.host => Ok(p),
            // Made on the call's path: not recorded, it serves this call only.
            _ => Prepared::make(req.call.host, false),
        };
        let (result, used) = match prepared {
            Ok(mut p) => (p.run(&req.call, &limits), Some(p)),
            Err(e) => (Err(e), None),
        };
        let resp = Response {
            id: req.id,
            reused: used.as_ref().is_some_and(|p| p.calls > 1),
            result,
        };
        let Ok(text) = serde_json::to_string(&resp) else {
            continue;
        };
        if !write_line(&text) {
            break;
        }
        // The context serves the next call only if this one left no trace in it.
        next = used
            .filter(|_| resp.result.is_ok())
            .and_then(|mut p| p.reusable(&req.call).then_some(p))
            .or_else(|| Prepared::make(req.call.host, tool_call(&req.call)).ok());
        if !write_ready() {
            break;
        }
    }
    std::process::ExitCode::SUCCESS
}

/// `__host(module, function, args)`: one round trip to the parent.
fn host_call(_: &JsValue, args: &[JsValue], ctx: &mut Context) -> JsResult<JsValue> {
    let text = |i: usize, ctx: &mut Context| -> JsResult<String> {
        Ok(args
            .get(i)
            .cloned()
            .unwrap_or_default()
            .to_string(ctx)?
            .to_std_string_escaped())
    };
    let module = text(0, ctx)?;
    let function = text(1, ctx)?;
    let call_args = match args.get(2) {
        Some(v) if !v.is_undefined() => v.to_json(ctx)?.unwrap_or_default(),
        _ => serde_json::Value::Null,
    };
    // The parent could not read deeper arguments: refuse here, at once, as for results.
    if depth(&call_args) > MAX_RESULT_DEPTH {
        return Err(JsNativeError::error()
            .with_message(format!(
                "{module}.{function}: arguments nested deeper than {MAX_RESULT_DEPTH} levels"
            ))
            .into());
    }
    let req = HostCall {
        host: HostCallBody {
            module,
            function,
            args: call_args,
        },
    };
    let line = serde_json::to_string(&req).map_err(|e| JsNativeError::error().with_message(e.to_string()))?;
    if !write_line(&line) {
        return Err(JsNativeError::error().with_message("the host is gone").into());
    }
    let answer = read_line()
        .and_then(|l| serde_json::from_str::<HostAnswer>(&l).ok())
        .ok_or_else(|| JsNativeError::error().with_message("the host did not answer"))?;
    match answer {
        HostAnswer::Ok(v) => JsValue::from_json(&v, ctx),
        HostAnswer::Error(message) => Err(JsNativeError::error().with_message(message).into()),
    }
}

/// Resolves imports: the host modules (when the call allows them) and the libraries the
/// parent sent along. Anything else (a file, `fs`, a URL) does not exist here.
#[derive(Default)]
struct Loader {
    host: bool,
    libraries: RefCell<std::collections::BTreeMap<String, String>>,
    loaded: RefCell<HashMap<String, Module>>,
    /// The module of the call, importable as [`MAIN`] while its export is read.
    main: RefCell<Option<Module>>,
}

impl ModuleLoader for Loader {
    async fn load_imported_module(
        self: Rc<Self>,
        _referrer: Referrer,
        request: ModuleRequest,
        context: &RefCell<&mut Context>,
    ) -> JsResult<Module> {
        let spec = request.specifier().to_std_string_escaped();
        if spec == MAIN
            && let Some(m) = self.main.borrow().as_ref()
        {
            return Ok(m.clone());
        }
        let (key, source) = if modules::NAMES.contains(&spec.as_str()) {
            match modules::source(&spec).filter(|_| self.host) {
                Some(src) => (spec.clone(), src),
                None => return Err(not_available(&spec)),
            }
        } else {
            let key = library_key(&spec);
            match self.libraries.borrow().get(&key) {
                Some(src) => (key, src.clone()),
                None => return Err(not_available(&spec)),
            }
        };
        if let Some(m) = self.loaded.borrow().get(&key) {
            return Ok(m.clone());
        }
        let module = Module::parse(Source::from_bytes(source.as_bytes()), None, &mut context.borrow_mut())?;
        self.loaded.borrow_mut().insert(key, module.clone());
        Ok(module)
    }
}

fn not_available(spec: &str) -> JsError {
    JsNativeError::typ()
        .with_message(format!(
            "module `{spec}` is not available (tools may import mcp, ai, http, kv and the configured libraries)"
        ))
        .into()
}

fn classify(e: JsError) -> ScriptError {
    let message = e.to_string();
    let first = message.lines().next().unwrap_or("").to_owned();
    if first.starts_with("RuntimeLimitError") {
        ScriptError::Limit { message: first }
    } else {
        ScriptError::Exception { message: first }
    }
}

/// A context, made before its call arrives: building boa's intrinsics takes most of a
/// trivial call's time (~0.6 ms). It serves the next call too only if the call before left
/// it exactly as it was made (`pristine.rs`); else it is dropped, so no call sees what an
/// earlier one left.
pub struct Prepared {
    ctx: Context,
    loader: Rc<Loader>,
    jobs: Rc<Jobs>,
    /// How it looked when made, when it was made to be reused.
    pristine: Option<Pristine>,
    /// Calls run in it so far.
    calls: u32,
}

/// A context serves at most this many calls: boa 0.22 leaves three VM stack slots behind per
/// module it evaluates (a call evaluates two — the tool and its export reader — and each
/// library it imports), which count against the stack limit (`Limits::stack`, 10,240 by
/// default): 64 calls without libraries take 384 of them.
const CALLS_PER_CONTEXT: u32 = 64;

/// Tells the parent the next call's context is made (it prefers such a host).
fn write_ready() -> bool {
    serde_json::to_string(&Ready { ready: true }).is_ok_and(|line| write_line(&line))
}

impl Prepared {
    /// A fresh context; with `host`, the host modules are importable. With `record`, it is
    /// recorded as made (~1 ms) so that it can serve further tool calls; without, it serves
    /// one call.
    pub fn make(host: bool, record: bool) -> Result<Prepared, ScriptError> {
        let loader = Rc::new(Loader {
            host,
            ..Loader::default()
        });
        let jobs = Rc::new(Jobs::new());
        let mut ctx = Context::builder()
            .module_loader(loader.clone())
            .job_executor(jobs.clone())
            .build()
            .map_err(classify)?;
        if host {
            ctx.register_global_callable(JsString::from("__host"), 3, NativeFunction::from_fn_ptr(host_call))
                .map_err(classify)?;
            ctx.eval(Source::from_bytes(modules::PRELUDE.as_bytes()))
                .map_err(classify)?;
        }
        let pristine = record.then(|| Pristine::record(&mut ctx));
        Ok(Prepared {
            ctx,
            loader,
            jobs,
            pristine,
            calls: 0,
        })
    }

    /// Runs `call` (whose `host` must match the context's).
    pub fn run(&mut self, call: &Call, limits: &Limits) -> Result<serde_json::Value, ScriptError> {
        self.calls += 1;
        self.loader.libraries.replace(call.libraries.clone());
        let result = run_in(&mut self.ctx, &self.loader, call, limits);
        // A library's module state must not reach the next call: only the host modules
        // (stateless views of the frozen prelude) stay loaded.
        self.loader.libraries.take();
        self.loader
            .loaded
            .borrow_mut()
            .retain(|name, _| modules::NAMES.contains(&name.as_str()));
        result
    }

    /// Whether the context can serve another call after `call` (which succeeded): a tool
    /// call (a module's export; its module is evaluated afresh each time) that left no job
    /// queued and every built-in, global and host-module object as the context was made.
    /// Scripts and `eval` declare globals, and describing a module makes a namespace boa
    /// never frees, so those contexts serve one call.
    pub fn reusable(&mut self, call: &Call) -> bool {
        self.calls < CALLS_PER_CONTEXT
            && tool_call(call)
            && !self.jobs.left()
            && self.pristine.as_ref().is_some_and(|p| p.unchanged(&mut self.ctx))
    }
}

/// A call of a module's export: the only kind whose context may serve another call.
fn tool_call(call: &Call) -> bool {
    matches!(call.kind, Kind::Module) && !call.function.is_empty()
}

/// Runs one call in a fresh context.
pub fn run(call: &Call, limits: &Limits) -> Result<serde_json::Value, ScriptError> {
    Prepared::make(call.host, false)?.run(call, limits)
}

fn run_in(ctx: &mut Context, loader: &Loader, call: &Call, limits: &Limits) -> Result<serde_json::Value, ScriptError> {
    let l = ctx.runtime_limits_mut();
    l.set_loop_iteration_limit(limits.loop_iterations);
    l.set_recursion_limit(limits.recursion);
    l.set_stack_size_limit(limits.stack);
    let (this, target): (JsValue, JsValue) = match call.kind {
        Kind::Eval => {
            let args = JsValue::from_json(&call.args, ctx).map_err(classify)?;
            ctx.register_global_property(JsString::from("args"), args, boa_engine::property::Attribute::all())
                .map_err(classify)?;
            if call.host {
                ctx.eval(Source::from_bytes(modules::EVAL_GLOBALS.as_bytes()))
                    .map_err(classify)?;
            }
            let value = ctx.eval(Source::from_bytes(call.source.as_bytes())).map_err(classify)?;
            return to_json(&value, ctx, limits);
        }
        Kind::Script => {
            ctx.eval(Source::from_bytes(call.source.as_bytes())).map_err(classify)?;
            let mut target: JsValue = ctx.global_object().into();
            let mut this = JsValue::undefined();
            for part in call.function.split('.') {
                let Some(obj) = target.as_object() else {
                    return Err(ScriptError::NoFunction {
                        name: call.function.clone(),
                    });
                };
                this = target.clone();
                target = obj.get(JsString::from(part), ctx).map_err(classify)?;
            }
            (this, target)
        }
        Kind::Module => {
            let module = Module::parse(Source::from_bytes(call.source.as_bytes()), None, ctx).map_err(classify)?;
            let promise = module.load_link_evaluate(ctx);
            ctx.run_jobs().map_err(classify)?;
            if let PromiseState::Rejected(e) = promise.state() {
                return Err(classify(JsError::from_opaque(e)));
            }
            if call.function.is_empty() {
                let ns = module.namespace(ctx);
                return describe(&ns, ctx, limits);
            }
            (JsValue::undefined(), export(module, &call.function, ctx, loader)?)
        }
    };
    let Some(f) = target.as_callable() else {
        return Err(ScriptError::NoFunction {
            name: call.function.clone(),
        });
    };
    let args = JsValue::from_json(&call.args, ctx).map_err(classify)?;
    let value = f.call(&this, &[args], ctx).map_err(classify)?;
    to_json(&value, ctx, limits)
}

/// The specifier under which the module of a call imports itself (see [`export`]).
const MAIN: &str = "llmr:main";

/// Export `name` of an evaluated `module`, read through a second module that imports it
/// by name: boa 0.22 never frees a module whose namespace object was made (the namespace
/// keeps untraced references to its module), which would keep every call's whole realm
/// (~0.3 MB) alive; a named import makes no namespace.
fn export(module: Module, name: &str, ctx: &mut Context, loader: &Loader) -> Result<JsValue, ScriptError> {
    let missing = || ScriptError::NoFunction { name: name.to_owned() };
    let plain = |c: char| c.is_ascii_alphanumeric() || c == '_' || c == '$';
    if name.is_empty() || !name.chars().all(plain) || name.starts_with(|c: char| c.is_ascii_digit()) {
        return Err(missing());
    }
    const ENTRY: &str = "__llmr_entry";
    let source = format!("import {{ {name} as entry }} from \"{MAIN}\";\nglobalThis.{ENTRY} = entry;\n");
    loader.main.replace(Some(module));
    let reader = Module::parse(Source::from_bytes(source.as_bytes()), None, ctx).map_err(classify)?;
    let promise = reader.load_link_evaluate(ctx);
    ctx.run_jobs().map_err(classify)?;
    loader.main.replace(None);
    if !matches!(promise.state(), PromiseState::Fulfilled(_)) {
        // The module itself evaluated: what failed is the import of a name it lacks.
        return Err(missing());
    }
    let global = ctx.global_object();
    let entry = global.get(JsString::from(ENTRY), ctx).map_err(classify)?;
    global
        .delete_property_or_throw(JsString::from(ENTRY), ctx)
        .map_err(classify)?;
    Ok(entry)
}

/// The non-function exports of a module namespace, as a JSON object.
fn describe(ns: &boa_engine::JsObject, ctx: &mut Context, limits: &Limits) -> Result<serde_json::Value, ScriptError> {
    let mut out = serde_json::Map::new();
    for key in ns.own_property_keys(ctx).map_err(classify)? {
        let name = key.to_string();
        let v = ns.get(key, ctx).map_err(classify)?;
        if v.is_callable() || v.is_undefined() {
            continue;
        }
        out.insert(name, to_json(&v, ctx, limits)?);
    }
    Ok(serde_json::Value::Object(out))
}

/// Results and host-call arguments nested deeper are refused (JSON readers stop at 128 levels).
const MAX_RESULT_DEPTH: usize = 100;

/// How deeply arrays and objects nest in `v` (without recursion).
fn depth(v: &serde_json::Value) -> usize {
    let mut deepest = 0;
    let mut stack = vec![(v, 1)];
    while let Some((v, d)) = stack.pop() {
        deepest = deepest.max(d);
        match v {
            serde_json::Value::Array(a) => stack.extend(a.iter().map(|x| (x, d + 1))),
            serde_json::Value::Object(o) => stack.extend(o.values().map(|x| (x, d + 1))),
            _ => {}
        }
    }
    deepest
}

fn to_json(value: &JsValue, ctx: &mut Context, limits: &Limits) -> Result<serde_json::Value, ScriptError> {
    let json = if value.is_undefined() {
        serde_json::Value::Null
    } else {
        value.to_json(ctx).map_err(classify)?.unwrap_or_default()
    };
    if depth(&json) > MAX_RESULT_DEPTH {
        return Err(ScriptError::Limit {
            message: format!("the result is nested deeper than {MAX_RESULT_DEPTH} levels"),
        });
    }
    let json = integral(json);
    let bytes = serde_json::to_vec(&json).map_or(0, |v| v.len());
    if bytes > limits.result_bytes {
        return Err(ScriptError::ResultTooLarge {
            bytes,
            limit: limits.result_bytes,
        });
    }
    Ok(json)
}

/// JavaScript has only doubles: whole numbers go out as JSON integers (`80`, not `80.0`).
fn integral(v: serde_json::Value) -> serde_json::Value {
    use serde_json::Value;
    match v {
        Value::Number(n) => match n.as_f64() {
            Some(f) if n.is_f64() && f.fract() == 0.0 && f.abs() < 9.0e15 => Value::from(f as i64),
            _ => Value::Number(n),
        },
        Value::Array(a) => Value::Array(a.into_iter().map(integral).collect()),
        Value::Object(m) => Value::Object(m.into_iter().map(|(k, v)| (k, integral(v))).collect()),
        other => other,
    }
}
