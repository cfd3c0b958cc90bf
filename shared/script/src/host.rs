//! The child side: caps its own address space, then answers one JSON request per line.

use std::io::{BufRead, Write};

use boa_engine::builtins::promise::PromiseState;
use boa_engine::{Context, JsError, JsString, JsValue, Module, Source};
use serde::{Deserialize, Serialize};

use crate::{Call, Kind, Limits, ScriptError};

#[derive(Deserialize)]
pub(crate) struct Request {
    pub id: u64,
    pub call: Call,
}

#[derive(Serialize, Deserialize)]
pub(crate) struct Response {
    pub id: u64,
    pub result: Result<serde_json::Value, ScriptError>,
}

/// Runs the host until stdin closes. The first line is the [`Limits`] as JSON.
pub fn host_main() -> std::process::ExitCode {
    let stdin = std::io::stdin();
    let mut lines = stdin.lock().lines();
    let Some(Ok(first)) = lines.next() else {
        return std::process::ExitCode::FAILURE;
    };
    let Ok(limits) = serde_json::from_str::<Limits>(&first) else {
        return std::process::ExitCode::FAILURE;
    };
    let bytes = limits.memory_mb.saturating_mul(1024 * 1024);
    if let Err(e) = rlimit::setrlimit(rlimit::Resource::AS, bytes, bytes) {
        tracing::warn!(error = %e, "could not limit the script host's memory");
    }
    let mut out = std::io::stdout().lock();
    for line in lines {
        let Ok(line) = line else { break };
        let Ok(req) = serde_json::from_str::<Request>(&line) else {
            continue;
        };
        let resp = Response {
            id: req.id,
            result: run(&req.call, &limits),
        };
        let Ok(text) = serde_json::to_string(&resp) else {
            continue;
        };
        if writeln!(out, "{text}").and_then(|()| out.flush()).is_err() {
            break;
        }
    }
    std::process::ExitCode::SUCCESS
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

/// Runs one call in a fresh context.
pub fn run(call: &Call, limits: &Limits) -> Result<serde_json::Value, ScriptError> {
    let mut ctx = Context::default();
    let l = ctx.runtime_limits_mut();
    l.set_loop_iteration_limit(limits.loop_iterations);
    l.set_recursion_limit(limits.recursion);
    l.set_stack_size_limit(limits.stack);
    let (this, target): (JsValue, JsValue) = match call.kind {
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
                target = obj.get(JsString::from(part), &mut ctx).map_err(classify)?;
            }
            (this, target)
        }
        Kind::Module => {
            let module = Module::parse(Source::from_bytes(call.source.as_bytes()), None, &mut ctx).map_err(classify)?;
            let promise = module.load_link_evaluate(&mut ctx);
            ctx.run_jobs().map_err(classify)?;
            if let PromiseState::Rejected(e) = promise.state() {
                return Err(classify(JsError::from_opaque(e)));
            }
            let ns = module.namespace(&mut ctx);
            if call.function.is_empty() {
                return describe(&ns, &mut ctx, limits);
            }
            (
                JsValue::undefined(),
                ns.get(JsString::from(call.function.as_str()), &mut ctx)
                    .map_err(classify)?,
            )
        }
    };
    let Some(f) = target.as_callable() else {
        return Err(ScriptError::NoFunction {
            name: call.function.clone(),
        });
    };
    let args = JsValue::from_json(&call.args, &mut ctx).map_err(classify)?;
    let value = f.call(&this, &[args], &mut ctx).map_err(classify)?;
    to_json(&value, &mut ctx, limits)
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

fn to_json(value: &JsValue, ctx: &mut Context, limits: &Limits) -> Result<serde_json::Value, ScriptError> {
    let json = if value.is_undefined() {
        serde_json::Value::Null
    } else {
        value.to_json(ctx).map_err(classify)?.unwrap_or_default()
    };
    let bytes = serde_json::to_vec(&json).map_or(0, |v| v.len());
    if bytes > limits.result_bytes {
        return Err(ScriptError::ResultTooLarge {
            bytes,
            limit: limits.result_bytes,
        });
    }
    Ok(json)
}
