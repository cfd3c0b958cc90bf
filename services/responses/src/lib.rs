//! The responses service: OpenAI's Responses API, emulated over chat completions.
//!
//! It reads the `responses` stream: `responses` envelopes carry one [`Op`] from the gateway
//! (create, retrieve, delete, cancel, input items, input tokens). A create becomes a chat
//! completion through the router (`requests` stream), so groups, strategies, failover and
//! usage apply as for any chat; its stream is translated into Responses events. Responses
//! are kept in the store (memory or Redis) under `resp:{id}` keys with `responses.ttl_ms`,
//! so any gateway and any responses instance serve any id, also after a restart.
//!
//! # Layout
//! - [`convert`]: request validation; input items ↔ chat messages; tools and formats.
//! - [`translate`]: chat chunks → Responses events and output items.
//! - [`stored`]: what is kept in the store, and how.
//! - [`run`]: creating a response (plain, streamed, background; chains).
//! - [`ops`]: retrieve (and resume), delete, cancel, input items, input tokens, compact.
//! - [`conversations`]: the Conversations API and its items.
//! - [`list`]: the list shape and its paging.
//! - [`work`]: the stream's work under the shared consumer loop.
//!
//! Imports run one way: work → {run, ops} → conversations → {convert, translate, stored, list}.
//!
//! [`Op`]: llmr_protocol::responses::Op

pub mod conversations;
pub mod convert;
pub mod list;
pub mod ops;
pub mod run;
pub mod stored;
pub mod translate;
pub mod work;

use std::rc::Rc;
use std::time::Duration;

use actix::Addr;
use llmr_bus::{Bus, Caller, ConsumerActor, Drain, LoopConfig};
use llmr_config::Settings;
use llmr_protocol::streams;
use llmr_store::{Store, TaskGuard};

#[derive(Debug, thiserror::Error)]
pub enum InitError {
    #[error(transparent)]
    Bus(#[from] llmr_bus::BusError),
}

/// A running responses instance.
pub struct ResponsesService {
    addr: Addr<ConsumerActor<work::Operations>>,
    _heartbeat: TaskGuard,
}

impl ResponsesService {
    /// Starts the service on the current arbiter (inside an actix System).
    pub async fn build(
        settings: &Settings,
        bus: Bus,
        store: Store,
        instance: &str,
    ) -> Result<ResponsesService, InitError> {
        let ctx = Rc::new(run::Ctx {
            caller: Caller::new(bus.clone(), &format!("{instance}-responses")),
            stored: stored::Stored {
                store: store.clone(),
                ttl_ms: settings.responses.ttl_ms,
                max_bytes: settings.responses.max_stored_bytes,
                policy: settings.degraded.stored_responses,
            },
        });
        let cfg = LoopConfig::new(
            &bus,
            settings.responses.max_in_flight,
            Duration::from_millis(settings.redis.claim_idle_ms),
        );
        let work = work::Operations { ctx };
        let addr = ConsumerActor::start(
            &bus,
            streams::RESPONSES,
            streams::groups::RESPONSES,
            instance,
            cfg,
            work,
        )
        .await?;
        let heartbeat = store.keep_alive("responses", instance, llmr_store::HEARTBEAT_EVERY);
        Ok(ResponsesService {
            addr,
            _heartbeat: heartbeat,
        })
    }

    /// Stops reading and waits up to `grace` for running operations.
    pub async fn drain(&self, grace: Duration) {
        let _ = self.addr.send(Drain { grace }).await;
    }
}
