//! Request/answer over the bus, for services that call other services (the router's tool
//! loop calling workers and mcp-tools; mcp-tools calling the router for `ai.chat`).
//!
//! A caller owns a reply stream (`replies:{instance}`) and a [`Hub`]; [`Caller::call`]
//! publishes an envelope and collects its frames into one answer, within the envelope's
//! deadline (a late answer is cancelled).

use std::sync::Arc;
use std::time::Duration;

use bytes::Bytes;
use llmr_protocol::{ApiError, Envelope, FrameKind, now_ms};

use crate::{Bus, Hub, Subscription};

/// A complete, non-streamed answer.
#[derive(Debug, Clone)]
pub struct Answer {
    pub status: u16,
    pub body: Bytes,
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

    /// A caller on a reply stream someone else already reads into `hub` (the gateway).
    pub fn attach(bus: Bus, hub: Arc<Hub>, instance: &str) -> Caller {
        Caller {
            bus,
            hub,
            instance: instance.to_owned(),
            _replies: None,
        }
    }

    /// The instance whose reply stream this caller reads (put it in `reply_to`).
    pub fn instance(&self) -> &str {
        &self.instance
    }

    pub fn bus(&self) -> &Bus {
        &self.bus
    }

    /// Publishes `env` on `stream` and waits for its whole answer until its deadline.
    pub async fn call(&self, stream: &str, env: &Envelope) -> Result<Answer, ApiError> {
        let mut rx = self.hub.register(env.id);
        let wait = Duration::from_millis(env.remaining_ms(now_ms()));
        if let Err(e) = self.bus.publish(stream, env).await {
            self.hub.forget(env.id);
            return Err(e.into());
        }
        let collect = async {
            let mut status = 200;
            let mut parts: Vec<Bytes> = Vec::new();
            while let Some(f) = rx.recv().await {
                match f.kind {
                    FrameKind::Head => status = f.as_head().map_or(200, |h| h.status),
                    FrameKind::Chunk => parts.push(f.data),
                    FrameKind::End => {
                        return Ok(Answer {
                            status,
                            body: Bytes::from(parts.concat()),
                        });
                    }
                    FrameKind::Error => return Err(f.as_error()),
                }
            }
            Err(ApiError::Internal {
                message: "the reply channel closed".into(),
            })
        };
        match tokio::time::timeout(wait, collect).await {
            Ok(r) => r,
            Err(_) => {
                self.hub.forget(env.id);
                let _ = self.bus.cancel(env.id).await;
                Err(ApiError::DeadlineExceeded)
            }
        }
    }
}
