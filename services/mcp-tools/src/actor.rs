//! The consumer actor of the `mcp` stream: reads as many messages as it has room for, runs
//! each as its own task on this arbiter, answers on the caller's reply stream and acks.

use std::cell::Cell;
use std::rc::Rc;
use std::time::Duration;

use actix::{Actor, ActorFutureExt, AsyncContext, Context, Handler, Message, ResponseActFuture, WrapFuture};
use bytes::Bytes;
use llmr_bus::{Consumer, Delivery};
use llmr_protocol::{ApiError, Frame, Head, Kind, now_ms};
use serde_json::Value;

use crate::rpc;
use crate::tools::{Tools, Via, text_result};

#[derive(Message)]
#[rtype(result = "()")]
pub struct Poll;

#[derive(Message)]
#[rtype(result = "()")]
pub struct Reclaim;

/// Stop reading; resolves when running calls are done or `grace` passed.
#[derive(Message)]
#[rtype(result = "()")]
pub struct Drain {
    pub grace: Duration,
}

const BLOCK: Duration = Duration::from_millis(1000);
const ERROR_BACKOFF: Duration = Duration::from_millis(500);
const FULL_BACKOFF: Duration = Duration::from_millis(5);

pub struct McpActor {
    tools: Rc<Tools>,
    reader: Option<Consumer>,
    acker: Rc<Consumer>,
    max_in_flight: usize,
    running: Rc<Cell<usize>>,
    claim_idle: Duration,
    reclaim_due: bool,
    draining: bool,
}

impl McpActor {
    pub fn new(tools: Rc<Tools>, consumers: [Consumer; 2], max_in_flight: usize, claim_idle: Duration) -> McpActor {
        let [reader, acker] = consumers;
        McpActor {
            tools,
            reader: Some(reader),
            acker: Rc::new(acker),
            max_in_flight,
            running: Rc::new(Cell::new(0)),
            claim_idle,
            reclaim_due: false,
            draining: false,
        }
    }

    fn spawn_calls(&self, deliveries: Vec<Delivery>) {
        for d in deliveries {
            let (tools, acker, running) = (self.tools.clone(), self.acker.clone(), self.running.clone());
            running.set(running.get() + 1);
            actix::spawn(async move {
                serve(&tools, &d).await;
                if let Err(e) = acker.ack(std::slice::from_ref(&d.entry)).await {
                    tracing::warn!(error = %e, "could not ack an MCP message");
                }
                running.set(running.get().saturating_sub(1));
            });
        }
    }
}

impl Actor for McpActor {
    type Context = Context<Self>;

    fn started(&mut self, ctx: &mut Context<Self>) {
        ctx.notify(Poll);
        if !self.tools.caller.bus().is_memory() {
            ctx.run_interval(self.claim_idle / 2, |act, _| act.reclaim_due = true);
        }
    }
}

impl Handler<Poll> for McpActor {
    type Result = ResponseActFuture<Self, ()>;

    fn handle(&mut self, _: Poll, ctx: &mut Context<Self>) -> Self::Result {
        if self.draining {
            return Box::pin(actix::fut::ready(()));
        }
        let room = self.max_in_flight.saturating_sub(self.running.get());
        if room == 0 {
            ctx.notify_later(Poll, FULL_BACKOFF);
            return Box::pin(actix::fut::ready(()));
        }
        let Some(mut reader) = self.reader.take() else {
            return Box::pin(actix::fut::ready(()));
        };
        let reclaim = std::mem::take(&mut self.reclaim_due);
        let idle = self.claim_idle;
        Box::pin(
            async move {
                let mut got = Vec::new();
                if reclaim {
                    match reader.reclaim(idle, room).await {
                        Ok(d) => got.extend(d),
                        Err(e) => tracing::warn!(error = %e, "mcp-tools cannot reclaim messages"),
                    }
                }
                let ok = match reader.read(room.saturating_sub(got.len()).max(1), BLOCK).await {
                    Ok(d) => {
                        got.extend(d);
                        true
                    }
                    Err(e) => {
                        tracing::warn!(error = %e, "mcp-tools cannot read messages");
                        false
                    }
                };
                (reader, got, ok)
            }
            .into_actor(self)
            .map(|(reader, got, ok), act, ctx| {
                act.reader = Some(reader);
                act.spawn_calls(got);
                if ok {
                    ctx.notify(Poll);
                } else {
                    ctx.notify_later(Poll, ERROR_BACKOFF);
                }
            }),
        )
    }
}

impl Handler<Reclaim> for McpActor {
    type Result = ();

    fn handle(&mut self, _: Reclaim, _: &mut Context<Self>) {
        self.reclaim_due = true;
    }
}

impl Handler<Drain> for McpActor {
    type Result = ResponseActFuture<Self, ()>;

    fn handle(&mut self, msg: Drain, _: &mut Context<Self>) -> Self::Result {
        self.draining = true;
        let running = self.running.clone();
        Box::pin(
            async move {
                let until = tokio::time::Instant::now() + msg.grace;
                while running.get() > 0 && tokio::time::Instant::now() < until {
                    tokio::time::sleep(Duration::from_millis(10)).await;
                }
            }
            .into_actor(self),
        )
    }
}

/// Answers one message on its caller's reply stream.
async fn serve(tools: &Rc<Tools>, d: &Delivery) {
    let env = &d.envelope;
    let span = tracing::info_span!("mcp", request_id = %env.id, kind = env.kind.as_str());
    llmr_telemetry::set_parent(&span, &env.traceparent);
    let frames = if env.expired(now_ms()) {
        vec![Frame::error(env.id, 0, &ApiError::DeadlineExceeded)]
    } else {
        let discovery = env.meta.mode.eq_ignore_ascii_case("discovery");
        let answer: Option<Value> = match serde_json::from_slice::<Value>(&env.body) {
            Err(e) => Some(rpc::error(Value::Null, rpc::PARSE_ERROR, format!("Parse error: {e}"))),
            Ok(msg) => match env.kind {
                Kind::Tool => {
                    let name = msg.get("name").and_then(Value::as_str).unwrap_or_default();
                    let args = msg.get("arguments").cloned().unwrap_or(Value::Null);
                    Some(match tools.call(name, args, Via::Indirect, false, 0).await {
                        Ok(r) => r,
                        Err(e) => text_result(e.to_string(), true),
                    })
                }
                _ => rpc::handle(tools, &msg, discovery).await,
            },
        };
        match answer {
            Some(v) => vec![
                Frame::head(
                    env.id,
                    Head {
                        status: 200,
                        stream: false,
                    },
                ),
                Frame::chunk(env.id, 1, Bytes::from(v.to_string())),
                Frame::end(env.id, 2),
            ],
            None => vec![
                Frame::head(
                    env.id,
                    Head {
                        status: 202,
                        stream: false,
                    },
                ),
                Frame::end(env.id, 1),
            ],
        }
    };
    if let Err(e) = tools.caller.bus().reply(&env.reply_to, &frames).await {
        tracing::warn!(parent: &span, error = %e, "could not answer an MCP message");
    }
}
