//! The message bus between llmrouter services: work streams with consumer groups, one reply
//! stream per caller instance, and a cancel broadcast.
//!
//! Two implementations behind one enum (no boxing, no dynamic dispatch): Redis streams for
//! the cluster, and an in-process bus for `llmrouter all` without Redis. Both pass the same
//! conformance suite (`tests/conformance.rs`).
//!
//! Semantics both keep:
//! - `publish` appends an envelope; a [`Consumer`] of a group reads each entry once, holds it
//!   pending until `ack`, and a live consumer can `reclaim` entries a dead one held longer
//!   than the idle limit (`touch` keeps a live consumer's long-running entries fresh).
//! - `forward` publishes to the next stream and acks the entry it came from atomically, so a
//!   router that dies between the two neither loses nor duplicates work.
//! - Reply frames go to `replies:{instance}`, read by one reader per instance. A `head` frame
//!   sent without the end of its answer records, atomically with its delivery, that the
//!   request has reached its caller (`first_frame_sent`): reclaimed work is retried only when
//!   it has not. `finish` acks a job and drops its marker, so markers live only as long as
//!   their jobs. A whole answer sent at once (head, body, end) sets no marker: a worker that
//!   dies before acking it has its job rerun, and the caller drops the second answer.
//!
//! # Layout
//! - [`memory`]: the in-process implementation.
//! - [`redis`](crate::redis_bus): the Redis streams implementation.
//! - [`conns`]: the shared multiplexed connections of a process (bus and store).
//! - [`hub`]: in-flight requests of one caller instance and the frames routed to them.
//! - [`caller`]: the one way to ask: publish and follow the reply frames, cancel on drop.
//! - [`replier`]: the one way to answer: numbered head / chunk / end / error frames.
//! - [`consume`]: the one consumer loop (room, reclaim, touch, batched acks, drain).

pub mod caller;
pub mod conns;
pub mod consume;
pub mod hub;
pub mod memory;
pub mod redis_bus;
pub mod replier;

use std::sync::Arc;
use std::time::Duration;

use llmr_protocol::{ApiError, Envelope, Frame, FrameKind};
use uuid::Uuid;

pub use caller::{Answer, Call, Caller};
pub use conns::RedisConns;
pub use consume::{ConsumerActor, ConsumerLoop, Done, Drain, LoopConfig, Room, Settled, Step, Tasks, Work};
pub use hub::Hub;
pub use memory::MemoryBus;
pub use redis_bus::{RedisBus, redis_pool};
pub use replier::Replier;

/// Called for every reply frame that reaches this instance.
pub type ReplySink = Arc<dyn Fn(Frame) + Send + Sync>;
/// Called for every cancel broadcast.
pub type CancelSink = Arc<dyn Fn(Uuid) + Send + Sync>;

/// Whether sending `frames` (one request's) records that its answer has started to reach the
/// caller: a head sent without the answer's final frame. A whole answer in one send needs no
/// record — the caller has all of it or none of it.
pub(crate) fn marks_first(frames: &[Frame]) -> bool {
    frames.iter().any(|f| f.kind == FrameKind::Head) && !frames.last().is_some_and(|f| f.kind.is_final())
}

/// Why a bus operation failed.
#[derive(Debug, thiserror::Error)]
pub enum BusError {
    #[error("the message bus is unreachable: {0}")]
    Unavailable(String),
}

impl From<BusError> for ApiError {
    fn from(e: BusError) -> ApiError {
        match e {
            BusError::Unavailable(m) => ApiError::Unavailable {
                message: format!("The message bus (Redis) is unreachable: {m}"),
            },
        }
    }
}

/// A consumer group's backlog on its stream.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Backlog {
    /// Entries in the stream (acked entries are deleted, so: waiting or in flight).
    pub length: u64,
    /// Entries delivered to the group and not acked.
    pub pending: u64,
    /// Entries not yet delivered to the group (None: this Redis does not report it).
    pub lag: Option<u64>,
    /// Entries ever delivered to the group — a counter whose growth is the rate the group
    /// consumes at (Redis's `entries-read`; None: this Redis does not report it, or cannot
    /// tell after deletions in the middle of the stream).
    pub read: Option<u64>,
}

/// One entry handed to a consumer.
#[derive(Debug, Clone)]
pub struct Delivery {
    /// The stream entry id, for `ack`, `touch` and `forward`.
    pub entry: String,
    pub envelope: Envelope,
    /// True when this entry was taken over from another consumer.
    pub reclaimed: bool,
}

/// The bus, Redis or in-process. The Redis calls' futures are boxed where they are awaited:
/// inline, their kilobytes would be carried (and copied on every move) by the futures of
/// every caller, on the in-process bus too.
#[derive(Clone)]
pub enum Bus {
    Memory(Arc<MemoryBus>),
    Redis(Arc<RedisBus>),
}

impl Bus {
    /// A fresh in-process bus.
    pub fn memory() -> Bus {
        Bus::Memory(Arc::new(MemoryBus::default()))
    }

    /// A Redis bus with its own connections; connects lazily, so this succeeds while Redis is
    /// down.
    pub fn redis(url: &str, prefix: &str, pool_size: usize) -> Result<Bus, BusError> {
        let conns = std::sync::Arc::new(RedisConns::new(redis_pool(url, pool_size)?));
        Bus::redis_with(url, prefix, conns)
    }

    /// A Redis bus on connections shared with the store.
    pub fn redis_with(url: &str, prefix: &str, conns: std::sync::Arc<RedisConns>) -> Result<Bus, BusError> {
        Ok(Bus::Redis(Arc::new(RedisBus::new(url, prefix, conns)?)))
    }

    pub fn is_memory(&self) -> bool {
        matches!(self, Bus::Memory(_))
    }

    /// Appends `env` to `stream`.
    pub async fn publish(&self, stream: &str, env: Envelope) -> Result<(), BusError> {
        match self {
            Bus::Memory(b) => {
                b.publish(stream, env);
                Ok(())
            }
            Bus::Redis(b) => Box::pin(b.publish(stream, &env)).await,
        }
    }

    /// A consumer of `group` on `stream` named `name`; creates the group when missing.
    pub async fn consumer(&self, stream: &str, group: &str, name: &str) -> Result<Consumer, BusError> {
        self.consumer_of(stream, group, name, false).await
    }

    /// A consumer that reads only what the calling thread publishes on `stream` (the
    /// in-process bus; see [`memory`]): while it lives, that work goes to it alone. On Redis,
    /// an ordinary consumer.
    pub async fn local_consumer(&self, stream: &str, group: &str, name: &str) -> Result<Consumer, BusError> {
        self.consumer_of(stream, group, name, true).await
    }

    async fn consumer_of(&self, stream: &str, group: &str, name: &str, local: bool) -> Result<Consumer, BusError> {
        let inner = match self {
            Bus::Memory(b) => {
                b.create_group(stream, group);
                ConsumerInner::Memory(b.clone(), local.then(|| b.register_local(stream, group)))
            }
            Bus::Redis(b) => {
                b.create_group(stream, group).await?;
                ConsumerInner::Redis(b.clone(), None)
            }
        };
        Ok(Consumer {
            inner,
            stream: stream.to_owned(),
            group: group.to_owned(),
            name: name.to_owned(),
            cursor: "0-0".into(),
            room: None,
        })
    }

    /// Sends frames to the reply stream of instance `reply_to`, in order. A `head` frame
    /// among them is recorded as the request's first frame in the same round trip.
    pub async fn reply(&self, reply_to: &str, frames: &[Frame]) -> Result<(), BusError> {
        match self {
            Bus::Memory(b) => {
                b.reply(reply_to, frames);
                Ok(())
            }
            Bus::Redis(b) => Box::pin(b.reply(reply_to, frames)).await,
        }
    }

    /// Whether a `head` frame of request `id` was already sent to its caller (without the
    /// end of its answer: see [`marks_first`]).
    pub async fn first_frame_sent(&self, id: Uuid) -> Result<bool, BusError> {
        match self {
            Bus::Memory(b) => Ok(b.first_frame_sent(id)),
            Bus::Redis(b) => Box::pin(b.first_frame_sent(id)).await,
        }
    }

    /// Starts the one reader of this instance's reply stream; frames go to `sink`.
    /// The reader stops when the handle is dropped.
    pub fn subscribe_replies(&self, instance: &str, sink: ReplySink) -> Subscription {
        match self {
            Bus::Memory(b) => b.subscribe_replies(instance, sink),
            Bus::Redis(b) => b.subscribe_replies(instance, sink),
        }
    }

    /// Broadcasts that request `id` was abandoned by its client.
    pub async fn cancel(&self, id: Uuid) -> Result<(), BusError> {
        match self {
            Bus::Memory(b) => {
                b.cancel(id);
                Ok(())
            }
            Bus::Redis(b) => Box::pin(b.cancel(id)).await,
        }
    }

    /// Receives cancel broadcasts until the handle is dropped.
    pub fn subscribe_cancels(&self, sink: CancelSink) -> Subscription {
        match self {
            Bus::Memory(b) => b.subscribe_cancels(sink),
            Bus::Redis(b) => b.subscribe_cancels(sink),
        }
    }

    /// Entries of `group` delivered but not yet acked (the autoscaling signal).
    pub async fn pending(&self, stream: &str, group: &str) -> Result<u64, BusError> {
        match self {
            Bus::Memory(b) => Ok(b.pending(stream, group)),
            Bus::Redis(b) => Box::pin(b.pending(stream, group)).await,
        }
    }

    /// A group's backlog: the stream's length, entries pending in the group, and its lag
    /// (entries not yet delivered to it; unknown on Redis before 7).
    pub async fn backlog(&self, stream: &str, group: &str) -> Result<Backlog, BusError> {
        match self {
            Bus::Memory(b) => Ok(b.backlog(stream, group)),
            Bus::Redis(b) => Box::pin(b.backlog(stream, group)).await,
        }
    }

    /// Checks the bus answers.
    pub async fn ping(&self) -> Result<(), BusError> {
        match self {
            Bus::Memory(_) => Ok(()),
            Bus::Redis(b) => Box::pin(b.ping()).await,
        }
    }
}

/// A running reader (reply stream or cancels); dropping it stops the reader.
pub struct Subscription {
    cleanup: Option<Box<dyn FnOnce() + Send>>,
}

impl Subscription {
    pub(crate) fn new(cleanup: impl FnOnce() + Send + 'static) -> Subscription {
        Subscription {
            cleanup: Some(Box::new(cleanup)),
        }
    }
}

impl Drop for Subscription {
    fn drop(&mut self) {
        if let Some(f) = self.cleanup.take() {
            f();
        }
    }
}

enum ConsumerInner {
    /// The bus, and this consumer's place as a thread-local one.
    Memory(Arc<MemoryBus>, Option<memory::LocalGuard>),
    /// The bus and this consumer's own blocking connection (opened on first read).
    Redis(Arc<RedisBus>, Option<redis::aio::MultiplexedConnection>),
}

/// One named consumer of a group. Blocking reads use its own connection.
pub struct Consumer {
    inner: ConsumerInner,
    stream: String,
    group: String,
    name: String,
    /// XAUTOCLAIM cursor.
    cursor: String,
    /// The room this consumer's reads share with the process's other consumers of the group
    /// (in-process bus only).
    room: Option<Arc<Room>>,
}

impl Consumer {
    pub fn name(&self) -> &str {
        &self.name
    }

    /// This consumer's reads take their places from `room`, shared with the process's other
    /// consumers of the group (the in-process bus; ignored on Redis).
    pub fn with_room(mut self, room: Option<Arc<Room>>) -> Consumer {
        self.room = room;
        self
    }

    /// Reads up to `count` new entries, waiting up to `block` for the first.
    pub async fn read(&mut self, count: usize, block: Duration) -> Result<Vec<Delivery>, BusError> {
        let room = self.room.as_deref();
        match &mut self.inner {
            ConsumerInner::Memory(b, Some(local)) => Ok(b.read_local(local, &self.name, count, block, room).await),
            ConsumerInner::Memory(b, None) => {
                Ok(b.read(&self.stream, &self.group, &self.name, count, block, room).await)
            }
            ConsumerInner::Redis(b, conn) => {
                Box::pin(b.read(conn, &self.stream, &self.group, &self.name, count, block)).await
            }
        }
    }

    /// Takes over up to `count` entries other consumers held longer than `min_idle`.
    pub async fn reclaim(&mut self, min_idle: Duration, count: usize) -> Result<Vec<Delivery>, BusError> {
        match &mut self.inner {
            ConsumerInner::Memory(b, _) => Ok(b.reclaim(&self.stream, &self.group, &self.name, min_idle, count)),
            ConsumerInner::Redis(b, _) => {
                b.reclaim(&self.stream, &self.group, &self.name, min_idle, count, &mut self.cursor)
                    .await
            }
        }
    }

    /// Marks entries done (and drops them from the stream).
    pub async fn ack(&self, entries: &[String]) -> Result<(), BusError> {
        if entries.is_empty() {
            return Ok(());
        }
        match &self.inner {
            ConsumerInner::Memory(b, _) => {
                b.ack(&self.stream, &self.group, entries);
                Ok(())
            }
            ConsumerInner::Redis(b, _) => Box::pin(b.ack(&self.stream, &self.group, entries)).await,
        }
    }

    /// Marks the job of request `id` done: acks its entry and forgets its first-frame
    /// marker, in one round trip.
    pub async fn finish(&self, entry: &str, id: Uuid) -> Result<(), BusError> {
        self.finish_many(&[(entry.to_owned(), id)]).await
    }

    /// Resets the idle time of entries this consumer is still working on, so no peer
    /// reclaims them.
    pub async fn touch(&self, entries: &[String]) -> Result<(), BusError> {
        if entries.is_empty() {
            return Ok(());
        }
        match &self.inner {
            ConsumerInner::Memory(b, _) => {
                b.touch(&self.stream, &self.group, &self.name, entries);
                Ok(())
            }
            ConsumerInner::Redis(b, _) => Box::pin(b.touch(&self.stream, &self.group, &self.name, entries)).await,
        }
    }

    /// Publishes each `(entry, stream, envelope)` and acks its entry, all in one atomic
    /// round trip.
    pub async fn forward_many(&self, items: Vec<(String, String, Envelope)>) -> Result<(), BusError> {
        if items.is_empty() {
            return Ok(());
        }
        match &self.inner {
            ConsumerInner::Memory(b, _) => {
                for (entry, stream, env) in items {
                    b.publish(&stream, env);
                    b.ack(&self.stream, &self.group, std::slice::from_ref(&entry));
                }
                Ok(())
            }
            ConsumerInner::Redis(b, _) => Box::pin(b.forward_many(&self.stream, &self.group, &items)).await,
        }
    }

    /// [`Consumer::finish`] for many jobs in one round trip.
    pub async fn finish_many(&self, jobs: &[(String, Uuid)]) -> Result<(), BusError> {
        if jobs.is_empty() {
            return Ok(());
        }
        match &self.inner {
            ConsumerInner::Memory(b, _) => {
                let entries: Vec<String> = jobs.iter().map(|(e, _)| e.clone()).collect();
                b.ack(&self.stream, &self.group, &entries);
                for (_, id) in jobs {
                    b.forget_first_frame(*id);
                }
                Ok(())
            }
            ConsumerInner::Redis(b, _) => Box::pin(b.finish_many(&self.stream, &self.group, jobs)).await,
        }
    }

    /// Publishes `env` to `to_stream` and acks `entry`, atomically.
    pub async fn forward(&self, entry: &str, to_stream: &str, env: &Envelope) -> Result<(), BusError> {
        self.forward_many(vec![(entry.to_owned(), to_stream.to_owned(), env.clone())])
            .await
    }
}
