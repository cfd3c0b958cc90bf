//! The `mcp` stream's work, under the shared consumer loop: every message is its own task
//! (up to 64 at once per instance), answered on its caller's reply stream and acked once
//! answered. A caller that goes away (an MCP client that left, a tool loop that ended)
//! cancels its call.

use std::rc::Rc;

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
    let mut out = Replier::new(tools.caller.bus().clone(), &env.reply_to, env.id, false);
    let sent = if env.expired(now_ms()) {
        out.error(&ApiError::DeadlineExceeded).await
    } else {
        match answer(tools, d).await {
            Some(v) => out.complete(200, bytes::Bytes::from(v.to_string())).await,
            None => out.empty(202).await,
        }
    };
    if let Err(e) = sent {
        tracing::warn!(parent: &span, error = %e, "could not answer an MCP message");
    }
}

/// The JSON-RPC answer (or tool result) of one message; None for a notification.
async fn answer(tools: &Rc<Tools>, d: &Delivery) -> Option<Value> {
    let env = &d.envelope;
    let msg = match serde_json::from_slice::<Value>(&env.body) {
        Ok(msg) => msg,
        Err(e) => return Some(rpc::error(Value::Null, rpc::PARSE_ERROR, format!("Parse error: {e}"))),
    };
    match env.kind {
        Kind::Tool => {
            let name = msg.get("name").and_then(Value::as_str).unwrap_or_default();
            let args = msg.get("arguments").cloned().unwrap_or(Value::Null);
            Some(match tools.call(name, args, Via::Indirect, false, 0).await {
                Ok(r) => r,
                Err(e) => text_result(e.to_string(), true),
            })
        }
        _ => rpc::handle(tools, &msg, env.meta.mode == ToolMode::Discovery).await,
    }
}
