//! The `mcp` stream's work, under the shared consumer loop: every message is its own task
//! (up to 64 at once per instance), answered on its caller's reply stream and acked once
//! answered. Besides MCP messages and tool calls it answers the admin API's
//! `tool_inventory` with the catalog as operators see it. A caller that goes away (an MCP client that left, a tool loop that ended)
//! cancels its call.
//!
//! A tool call runs once per message id: a delivery first claims `toolcall:{id}` in the store
//! and keeps the result there until the deadline. The same message delivered again (a
//! producer's retry, an entry redelivered after its answer) is answered with that result; one
//! delivered while the first run goes on waits for it. Only an entry taken over from an
//! instance that stopped (reclaimed while still marked running) runs again — at least once.

use std::rc::Rc;
use tracing::Instrument;

use llmr_bus::{Delivery, Done, Replier, Tasks, Work};
use llmr_protocol::{ApiError, Kind, ToolMode, now_ms};
use serde_json::Value;

use crate::rpc;
use crate::tools::{Tools, Via, text_result};

/// Serves MCP messages and tool calls.
pub struct Messages {
    pub tools: Rc<Tools>,
}

impl Work for Messages {
    fn start(&self, batch: Vec<Delivery>, tasks: &mut Tasks) {
        for d in batch {
            let tools = self.tools.clone();
            tasks.spawn_one(d, move |d, cancel| async move {
                tokio::select! {
                    () = serve(&tools, &d) => {}
                    Ok(()) = cancel => tracing::info!(request_id = %d.envelope.id, "caller went away; MCP call stopped"),
                }
                Done::Ack
            });
        }
    }
}

/// Answers one message on its caller's reply stream.
async fn serve(tools: &Rc<Tools>, d: &Delivery) {
    let env = &d.envelope;
    let span = tracing::info_span!("mcp", request_id = %env.id, kind = env.kind.as_str());
    llmr_telemetry::carry_for_logs(&span, &env.trace);
    let mut out = Replier::new(tools.caller.bus().clone(), &env.reply_to, env.id, false);
    let sent = if env.expired(now_ms()) {
        out.error(&ApiError::DeadlineExceeded).await
    } else {
        // Without an exporter there is no process span to be current: this one carries the
        // trace to the remote servers and scripts that continue it.
        let answered = if llmr_telemetry::exported() {
            answer(tools, d).await
        } else {
            answer(tools, d).instrument(span.clone()).await
        };
        match answered {
            Some(v) => out.complete(200, bytes::Bytes::from(v.to_string())).await,
            None => out.empty(202).await,
        }
    };
    if let Err(e) = sent {
        tracing::warn!(parent: &span, error = %e, "could not answer an MCP message");
    }
}

/// The JSON-RPC answer (or tool result, or the catalog's inventory) of one message; None
/// for a notification.
async fn answer(tools: &Rc<Tools>, d: &Delivery) -> Option<Value> {
    let env = &d.envelope;
    if env.kind == Kind::ToolInventory {
        return Some(serde_json::to_value(tools.inventory().await).unwrap_or_default());
    }
    let msg = match serde_json::from_slice::<Value>(&env.body) {
        Ok(msg) => msg,
        Err(e) => return Some(rpc::error(Value::Null, rpc::PARSE_ERROR, format!("Parse error: {e}"))),
    };
    match env.kind {
        Kind::Tool => Some(
            once(tools, d, |r| r, async {
                let name = msg.get("name").and_then(Value::as_str).unwrap_or_default();
                let args = msg.get("arguments").cloned().unwrap_or(Value::Null);
                if !llmr_protocol::allowed(&env.meta.tools, name) {
                    return text_result(rpc::not_allowed(name), true);
                }
                match tools.call(name, args, Via::Indirect, false, 0).await {
                    Ok(r) => r,
                    Err(e) => text_result(e.to_string(), true),
                }
            })
            .await,
        ),
        _ if msg.get("method").and_then(Value::as_str) == Some("tools/call") && msg.get("id").is_some() => {
            let discovery = env.meta.mode == ToolMode::Discovery;
            Some(
                once(tools, d, |r| rpc::ok(msg["id"].clone(), r), async {
                    rpc::handle(tools, &msg, discovery, &env.meta.tools)
                        .await
                        .unwrap_or_default()
                })
                .await,
            )
        }
        _ => rpc::handle(tools, &msg, env.meta.mode == ToolMode::Discovery, &env.meta.tools).await,
    }
}

/// The claim of a call still running (results are JSON objects, never this).
const RUNNING: &str = "running";

/// Runs a tool call once per message id (see the module doc); when the claim cannot be
/// stored, the call is answered as an error (`degraded.tool_calls = "closed"`) or runs as
/// delivered (`open`).
/// `answer` makes the answer `run` would give of a tool result (a JSON-RPC message for
/// `/mcp`), for the calls refused here.
async fn once(
    tools: &Rc<Tools>,
    d: &Delivery,
    answer: impl FnOnce(Value) -> Value,
    run: impl std::future::Future<Output = Value>,
) -> Value {
    let env = &d.envelope;
    let key = format!("toolcall:{}", env.id);
    let ttl = env.remaining_ms(now_ms()).max(1);
    let store = &tools.store;
    match store.doc_claim(&key, RUNNING, ttl).await {
        Ok(Some(done)) if done != RUNNING => {
            if let Ok(v) = serde_json::from_str(&done) {
                tracing::info!(request_id = %env.id, "tool call delivered again: answered with its result");
                return v;
            }
        }
        Ok(Some(_)) if !d.reclaimed => {
            tracing::info!(request_id = %env.id, "tool call delivered twice: waiting for the first run");
            while !env.expired(now_ms()) {
                tokio::time::sleep(std::time::Duration::from_millis(50)).await;
                if let Ok(Some(done)) = store.doc_get(&key).await
                    && done != RUNNING
                    && let Ok(v) = serde_json::from_str(&done)
                {
                    return v;
                }
            }
            return answer(text_result(
                "The tool call's first run did not finish before the deadline.",
                true,
            ));
        }
        Ok(_) => {}
        Err(e) if tools.settings.degraded.tool_calls.is_open() => {
            tracing::warn!(request_id = %env.id, error = %e, "could not claim a tool call; running it (degraded.tool_calls = open)");
        }
        Err(e) => {
            tracing::warn!(request_id = %env.id, error = %e, "could not claim a tool call; not run (degraded.tool_calls = closed)");
            let why = format!("The tool call was not run: its once-per-call claim cannot be stored ({e}).");
            return answer(text_result(why, true));
        }
    }
    let result = run.await;
    if let Err(e) = store.doc_put(&key, &result.to_string(), ttl).await {
        tracing::warn!(request_id = %env.id, error = %e, "could not keep a tool call's result");
    }
    result
}
