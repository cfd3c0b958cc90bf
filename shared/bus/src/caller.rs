//! The one way to ask: publish an envelope and follow its reply frames, for the gateway's
//! routes (`/v1/chat/completions`, `/mcp`) and for services that call other services (the
//! router's tool loop calling workers and mcp-tools; mcp-tools calling the router for
//! `ai.chat`).
//!
//! A caller owns a reply stream (`replies:{instance}`) and a [`Hub`]. [`Caller::send`]
//! publishes and returns a [`Call`] that yields the request's frames until its deadline; a
//! call dropped before its final frame (client gone, deadline passed) forgets the request
//! and broadcasts a cancel, so whoever runs it stops. [`Caller::call`] collects a whole
//! answer.

use std::sync::Arc;
use std::time::Duration;

use bytes::Bytes;
use llmr_protocol::{ApiError, Envelope, Frame, FrameKind, Head, now_ms};
use tokio::sync::mpsc::UnboundedReceiver;
use tokio::time::Instant;
use tracing::Instrument;
use uuid::Uuid;

use crate::{Bus, Hub, Subscription};

/// Publishing gives up after this long, so an unreachable Redis is a prompt 503.
const PUBLISH_TIMEOUT: Duration = Duration::from_millis(900);

/// A complete, non-streamed answer.
#[derive(Debug, Clone)]
pub struct Answer {
    pub status: u16,
    pub body: Bytes,
    /// What the end frame said answered and what it cost (a provider worker's answer).
    pub outcome: Option<llmr_protocol::Outcome>,
}

/// One caller instance: its reply stream and in-flight requests.
pub struct Caller {
    bus: Bus,
    hub: Arc<Hub>,
    instance: String,
    _replies: Option<std::sync::Mutex<Subscription>>,
}

impl Caller {
    /// Starts reading `replies:{instance}`.
    pub fn new(bus: Bus, instance: &str) -> Caller {
        let hub = Arc::new(Hub::default());
        let h2 = hub.clone();
        let replies = bus.subscribe_replies(instance, Arc::new(move |f| h2.dispatch(f)));
        Caller {
            bus,
            hub,
            instance: instance.to_owned(),
            _replies: Some(std::sync::Mutex::new(replies)),
        }
    }

    /// The instance whose reply stream this caller reads (put it in `reply_to`).
    pub fn instance(&self) -> &str {
        &self.instance
    }

    pub fn bus(&self) -> &Bus {
        &self.bus
    }

    /// Requests waiting for their answers right now.
    pub fn in_flight(&self) -> usize {
        self.hub.in_flight()
    }

    /// Publishes `env` on `stream` (a PRODUCER span `publish {stream}`, whose context the
    /// envelope carries on); the call yields its frames until its deadline.
    pub async fn send(&self, stream: &str, env: &Envelope) -> Result<Call, ApiError> {
        let span = producer_span(&self.bus, stream, env);
        let mut env = env.clone();
        env.trace = llmr_telemetry::context(&span, &env.trace);
        let rx = self.hub.register(env.id);
        let mut call = Call {
            id: env.id,
            rx,
            hub: self.hub.clone(),
            bus: self.bus.clone(),
            deadline: Instant::now() + Duration::from_millis(env.remaining_ms(now_ms())),
            done: false,
            last_seq: None,
            outcome: None,
        };
        let published = tokio::time::timeout(PUBLISH_TIMEOUT, self.bus.publish(stream, env))
            .instrument(span)
            .await;
        match published {
            Ok(Ok(())) => Ok(call),
            Ok(Err(e)) => {
                call.done = true;
                Err(e.into())
            }
            Err(_) => {
                call.done = true;
                Err(ApiError::Unavailable {
                    message: "The message bus (Redis) did not answer in time.".into(),
                })
            }
        }
    }

    /// Publishes `env` on `stream` and waits for its whole answer until its deadline.
    pub async fn call(&self, stream: &str, env: &Envelope) -> Result<Answer, ApiError> {
        self.send(stream, env).await?.answer().await
    }
}

/// The PRODUCER span of one publish, continuing `env`'s trace.
pub fn producer_span(bus: &Bus, stream: &str, env: &Envelope) -> tracing::Span {
    if !llmr_telemetry::exported() {
        return tracing::Span::none();
    }
    let span = tracing::info_span!(
        "publish",
        otel.name = %format!("publish {stream}"),
        otel.kind = "producer",
        messaging.system = if bus.is_memory() { "memory" } else { "redis" },
        messaging.destination.name = %stream,
        messaging.message.id = %env.id,
    );
    llmr_telemetry::set_parent(&span, &env.trace);
    span
}

/// A request on its way: its frames in order, until the final one or the deadline.
/// Dropped before the final frame, it cancels the request.
pub struct Call {
    id: Uuid,
    rx: UnboundedReceiver<Frame>,
    hub: Arc<Hub>,
    bus: Bus,
    deadline: Instant,
    /// The request was closed by its final frame (or never published).
    done: bool,
    /// The sequence number of the last frame taken: a repeat (a replier that sent frames
    /// again after a bus error) is dropped.
    last_seq: Option<u32>,
    /// What the `end` frame said answered the request, and what it cost.
    outcome: Option<llmr_protocol::Outcome>,
}

impl Call {
    pub fn id(&self) -> Uuid {
        self.id
    }

    /// What the `end` frame said answered the request (after it arrived).
    pub fn outcome(&self) -> Option<&llmr_protocol::Outcome> {
        self.outcome.as_ref()
    }

    /// Whether the final frame arrived.
    pub fn done(&self) -> bool {
        self.done
    }

    /// The next frame; an error frame closes the call. `Err` when the deadline passed or
    /// the reply channel closed (the call stays open, so dropping it cancels the request).
    pub async fn next(&mut self) -> Result<Frame, ApiError> {
        loop {
            let f = match tokio::time::timeout_at(self.deadline, self.rx.recv()).await {
                Ok(Some(f)) => f,
                Ok(None) => {
                    return Err(ApiError::Internal {
                        message: "the reply channel closed".into(),
                    });
                }
                Err(_) => return Err(ApiError::DeadlineExceeded),
            };
            if let Some(f) = self.take(f) {
                return Ok(f);
            }
        }
    }

    /// `f`, unless it repeats a frame already taken (a final frame always counts: a
    /// reclaiming worker's error frame starts its own numbering).
    fn take(&mut self, f: Frame) -> Option<Frame> {
        if !f.kind.is_final() && self.last_seq.is_some_and(|l| f.seq <= l) {
            return None;
        }
        self.last_seq = Some(f.seq);
        self.done |= f.kind.is_final();
        if f.kind == FrameKind::End && !f.data.is_empty() {
            self.outcome = f.as_outcome();
        }
        Some(f)
    }

    /// A frame that is already waiting, without waiting.
    pub fn try_next(&mut self) -> Option<Frame> {
        loop {
            let f = self.rx.try_recv().ok()?;
            if let Some(f) = self.take(f) {
                return Some(f);
            }
        }
    }

    /// Waits for the head frame; an error frame instead is the request's error.
    pub async fn head(&mut self) -> Result<Head, ApiError> {
        let f = self.next().await?;
        match f.kind {
            FrameKind::Head => f.as_head().map_err(|_| ApiError::Internal {
                message: "unreadable head frame".into(),
            }),
            FrameKind::Error => Err(f.as_error()),
            FrameKind::Chunk | FrameKind::End => Err(ApiError::Internal {
                message: "reply frames arrived out of order".into(),
            }),
        }
    }

    /// The whole answer: head, then the chunks up to `end`. Dropping this future drops the
    /// call, which cancels the request.
    pub async fn answer(mut self) -> Result<Answer, ApiError> {
        let head = self.head().await?;
        let body = self.body().await?;
        Ok(Answer {
            status: head.status,
            body,
            outcome: self.outcome.take(),
        })
    }

    /// The chunks up to `end`, joined (after the head).
    pub async fn body(&mut self) -> Result<Bytes, ApiError> {
        let mut parts: Vec<Bytes> = Vec::with_capacity(1);
        loop {
            let f = self.next().await?;
            match f.kind {
                FrameKind::Chunk => parts.push(f.data),
                FrameKind::End => break,
                FrameKind::Error => return Err(f.as_error()),
                FrameKind::Head => {}
            }
        }
        Ok(if parts.len() == 1 {
            parts.remove(0)
        } else {
            Bytes::from(parts.concat())
        })
    }
}

impl Drop for Call {
    fn drop(&mut self) {
        self.hub.forget(self.id);
        if self.done {
            return;
        }
        let (bus, id) = (self.bus.clone(), self.id);
        tracing::info!(request_id = %id, "caller went away or the deadline passed; cancelling");
        // A call dropped while the runtime shuts down has nobody left to tell.
        if let Ok(rt) = tokio::runtime::Handle::try_current() {
            rt.spawn(async move {
                if let Err(e) = bus.cancel(id).await {
                    tracing::warn!(error = %e, "could not broadcast a cancel");
                }
            });
        }
    }
}
