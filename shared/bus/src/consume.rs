//! The one consumer loop, used by every service that reads a stream (router, provider
//! worker, mcp-tools): read only as much as there is room for, take over what dead peers
//! left (reclaim), keep long-running entries from being reclaimed (touch), settle finished
//! work in batches (ack, finish, or forward to the next stream atomically), back off when
//! the bus fails, pass cancels to the work they concern, and drain on stop by waiting for
//! every task it started.
//!
//! A service supplies a [`Work`]: given a batch of deliveries it starts tasks through
//! [`Tasks`], each resolving to what becomes of its entries ([`Done`]). The loop owns the
//! tasks (a `JoinSet` on the current thread), so nothing it starts runs unobserved.
//!
//! [`ConsumerLoop::step`] runs one turn (one read, one finished task, one timer, one
//! cancel or the stop), so tests drive the loop message by message without real timers;
//! [`ConsumerLoop::run`] turns it until stopped. [`ConsumerActor`] hosts a loop as an actix
//! actor whose `Drain` message stops it.

use foldhash::HashMap;
use std::future::Future;
use std::pin::Pin;
use std::rc::Rc;
use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::Duration;

use actix::{Actor, ActorFutureExt, AsyncContext, Context, Message, ResponseFuture, WrapFuture};
use llmr_protocol::{Envelope, TraceContext};
use tokio::sync::{Notify, mpsc, oneshot, watch};
use tokio::task::{Id, JoinSet};
use tokio::time::{Instant, Interval, MissedTickBehavior};
use tracing::Instrument;
use uuid::Uuid;

use crate::{Bus, BusError, Consumer, Delivery, Subscription};

/// What becomes of a delivery once its work is over.
#[derive(Debug)]
pub enum Done {
    /// Ack the entry.
    Ack,
    /// Ack the entry and forget the request's first-frame marker (work that replied).
    Finish,
    /// Publish this envelope on that stream and ack the entry, atomically.
    Forward { stream: String, envelope: Box<Envelope> },
    /// Leave the entry pending: a live peer reclaims it after the idle limit.
    Keep,
}

/// One delivery settled.
pub type Settled = (String, Uuid, Done);

/// Resolves when the client of the request went away.
pub type Cancelled = oneshot::Receiver<()>;

type TaskFuture = Pin<Box<dyn Future<Output = Vec<Settled>>>>;

/// A service's work on the deliveries of its stream.
pub trait Work: Unpin + 'static {
    /// Starts the work of `batch` through `tasks`; runs on the loop, so it must not block.
    fn start(&self, batch: Vec<Delivery>, tasks: &mut Tasks);
}

/// The tasks a loop runs, and the entries each holds.
#[derive(Default)]
pub struct Tasks {
    /// The stream read (names the CONSUMER spans).
    stream: String,
    set: JoinSet<Vec<Settled>>,
    /// Entries each task holds.
    held: HashMap<Id, Vec<(String, Uuid)>>,
    /// Entries in flight, and how many live tasks hold each.
    entries: HashMap<String, usize>,
    /// Cancel senders of one-delivery tasks, by request id.
    cancels: HashMap<Uuid, oneshot::Sender<()>>,
    /// Settled without a task (answered at once).
    ready: Vec<Settled>,
}

impl Tasks {
    /// Starts one delivery's work; `work` gets the delivery and a future that resolves if
    /// its client goes away (when the loop listens for cancels).
    pub fn spawn_one<F, Fut>(&mut self, d: Delivery, work: F)
    where
        F: FnOnce(Delivery, Cancelled) -> Fut,
        Fut: Future<Output = Done> + 'static,
    {
        let (tx, rx) = oneshot::channel();
        let (entry, id) = (d.entry.clone(), d.envelope.id);
        self.cancels.insert(id, tx);
        // One message: its CONSUMER span continues the producer's trace.
        let span = self.consumer_span(&d);
        llmr_telemetry::set_parent(&span, &d.envelope.trace);
        // Boxed where it is made: a job's future is large, and every move of it (into the
        // span, the task, its first poll) was a memcpy of all of it.
        let fut = Box::pin(work(d, rx)).instrument(span);
        let e2 = entry.clone();
        self.spawn(vec![(entry, id)], Box::pin(async move { vec![(e2, id, fut.await)] }));
    }

    /// Starts work that settles several deliveries (a routed batch); its CONSUMER span links
    /// every message's trace (`traces`).
    pub fn spawn_batch(
        &mut self,
        held: Vec<(String, Uuid)>,
        traces: &[TraceContext],
        work: impl Future<Output = Vec<Settled>> + 'static,
    ) {
        if !llmr_telemetry::exported() {
            self.spawn(held, Box::pin(work));
            return;
        }
        let span = tracing::info_span!(
            "process",
            otel.name = %format!("process {}", self.stream),
            otel.kind = "consumer",
            messaging.destination.name = %self.stream,
            messaging.batch.message_count = held.len() as i64,
        );
        for trace in traces {
            llmr_telemetry::add_link(&span, trace);
        }
        self.spawn(held, Box::pin(work.instrument(span)));
    }

    fn consumer_span(&self, d: &Delivery) -> tracing::Span {
        if !llmr_telemetry::exported() {
            return tracing::Span::none();
        }
        tracing::info_span!(
            "process",
            otel.name = %format!("process {}", self.stream),
            otel.kind = "consumer",
            messaging.destination.name = %self.stream,
            messaging.message.id = %d.envelope.id,
        )
    }

    /// Settles a delivery without work.
    pub fn settle(&mut self, d: &Delivery, done: Done) {
        self.ready.push((d.entry.clone(), d.envelope.id, done));
    }

    fn spawn(&mut self, held: Vec<(String, Uuid)>, fut: TaskFuture) {
        for (entry, _) in &held {
            *self.entries.entry(entry.clone()).or_default() += 1;
        }
        let handle = self.set.spawn_local(fut);
        self.held.insert(handle.id(), held);
    }

    /// Entries in flight.
    pub fn len(&self) -> usize {
        self.entries.len()
    }

    pub fn is_empty(&self) -> bool {
        self.entries.is_empty() && self.set.is_empty()
    }

    fn running(&self, entry: &str) -> bool {
        self.entries.contains_key(entry)
    }

    fn running_request(&self, id: &Uuid) -> bool {
        self.cancels.contains_key(id)
    }

    /// A task ended (or died): its entries are released; those it did not settle, and that
    /// no other task holds, stay pending for a peer.
    fn ended(&mut self, task: Id, result: Option<Vec<Settled>>) -> Vec<Settled> {
        let held = self.held.remove(&task).unwrap_or_default();
        let mut settled = result.unwrap_or_default();
        for (entry, id) in held {
            self.cancels.remove(&id);
            let left = self.entries.get_mut(&entry).map(|n| {
                *n -= 1;
                *n
            });
            if left == Some(0) {
                self.entries.remove(&entry);
                if !settled.iter().any(|(e, _, _)| *e == entry) {
                    tracing::warn!(
                        entry,
                        "work ended without settling its entry; left for a peer to reclaim"
                    );
                    settled.push((entry, id, Done::Keep));
                }
            }
        }
        settled
    }

    fn cancel(&mut self, id: Uuid) {
        if let Some(tx) = self.cancels.remove(&id) {
            let _ = tx.send(());
        }
    }
}

/// How a loop reads.
#[derive(Debug, Clone)]
pub struct LoopConfig {
    /// Entries in flight at most (reads ask for no more than the room left).
    pub max_in_flight: usize,
    /// Entries one read asks for at most.
    pub max_batch: usize,
    /// How long one read waits for new entries.
    pub block: Duration,
    /// Entries idle this long are taken over from dead peers; this loop touches its own
    /// every third of it. `None`: no reclaim or touch timers (the in-process bus).
    pub claim_idle: Option<Duration>,
    /// Listen for cancel broadcasts and pass them to one-delivery tasks.
    pub cancels: bool,
    /// How long to wait after a failed read before the next.
    pub backoff: Duration,
    /// Read only what this thread publishes ([`Bus::local_consumer`]): a service run beside
    /// each HTTP worker of `llmrouter all` in memory.
    pub local: bool,
    /// A room shared with the process's other loops of the stream (in-process bus only):
    /// together they hold no more entries than it has places.
    pub room: Option<Arc<Room>>,
}

/// Places shared by the loops of one stream in a process — a worker beside each HTTP
/// worker thread and the process's own — so that together they run no more than one
/// worker would (`worker.max_in_flight`). In-process bus only: the places are taken as
/// entries are handed out, under the bus's lock.
#[derive(Debug)]
pub struct Room {
    limit: usize,
    used: AtomicUsize,
    freed: Notify,
}

impl Room {
    pub fn new(limit: usize) -> Arc<Room> {
        Arc::new(Room {
            limit: limit.max(1),
            used: AtomicUsize::new(0),
            freed: Notify::new(),
        })
    }

    /// Takes up to `n` places; how many it took.
    pub(crate) fn take(&self, n: usize) -> usize {
        let mut used = self.used.load(Ordering::Acquire);
        loop {
            let k = n.min(self.limit.saturating_sub(used));
            if k == 0 {
                return 0;
            }
            match self
                .used
                .compare_exchange_weak(used, used + k, Ordering::AcqRel, Ordering::Acquire)
            {
                Ok(_) => return k,
                Err(now) => used = now,
            }
        }
    }

    /// Gives `n` places back, waking the reads that wait for one.
    pub(crate) fn give(&self, n: usize) {
        if n > 0 {
            self.used.fetch_sub(n, Ordering::AcqRel);
            self.freed.notify_waiters();
        }
    }

    /// Resolves when places are given back (enable it before checking for room).
    pub(crate) fn freed(&self) -> tokio::sync::futures::Notified<'_> {
        self.freed.notified()
    }
}

impl LoopConfig {
    /// `max_in_flight` entries at once; reclaim and touch with Redis only.
    pub fn new(bus: &Bus, max_in_flight: usize, claim_idle: Duration) -> LoopConfig {
        LoopConfig {
            max_in_flight: max_in_flight.max(1),
            max_batch: max_in_flight.max(1),
            block: Duration::from_millis(1000),
            claim_idle: (!bus.is_memory()).then_some(claim_idle),
            cancels: false,
            backoff: Duration::from_millis(500),
            local: false,
            room: None,
        }
    }
}

/// What one turn of the loop did.
#[derive(Debug, PartialEq, Eq)]
pub enum Step {
    /// A read (or reclaim) returned this many new deliveries.
    Read(usize),
    /// A read failed; the next waits for the backoff.
    ReadFailed,
    /// Work on this many deliveries ended (their settle follows).
    Ended(usize),
    /// This many deliveries were settled (acked, finished or forwarded).
    Settled(usize),
    /// In-flight entries were touched.
    Touched,
    /// A reclaim is due with the next read.
    ReclaimDue,
    /// A cancel reached its task (or found none).
    Cancel,
    /// The loop was asked to stop.
    Stopping,
    /// Draining took longer than its grace: the remaining tasks were dropped.
    GraceOver,
    /// Nothing is left to do: drained.
    Stopped,
}

type ReadFuture = Pin<Box<dyn Future<Output = (Consumer, Result<Vec<Delivery>, BusError>)>>>;
type SettleFuture = Pin<Box<dyn Future<Output = usize>>>;

/// A consumer loop over one stream and group.
pub struct ConsumerLoop<W: Work> {
    work: W,
    cfg: LoopConfig,
    /// The stream read (for the log).
    stream: String,
    /// Reads; moved into the read under way.
    reader: Option<Consumer>,
    /// Acks, touches and forwards (never blocked by a read).
    acker: Rc<Consumer>,
    tasks: Tasks,
    /// Settled deliveries waiting for the settle under way.
    unsettled: Vec<Settled>,
    /// The settle (forwards, finishes, acks) under way; one at a time, so the deliveries
    /// that end meanwhile go in the next one together.
    settling: Option<SettleFuture>,
    reading: Option<ReadFuture>,
    failed: bool,
    reclaim_due: bool,
    /// What this loop added to the in-flight gauge (loops of one stream in a process add up).
    reported: i64,
    /// Places of the shared room this loop holds (entries read and not yet ended).
    held: usize,
    touch: Option<Interval>,
    reclaim: Option<Interval>,
    cancel_rx: Option<mpsc::UnboundedReceiver<Uuid>>,
    _cancels: Option<Subscription>,
    stop: watch::Receiver<Option<Duration>>,
    drain_until: Option<Instant>,
}

impl<W: Work> Drop for ConsumerLoop<W> {
    fn drop(&mut self) {
        self.report(0);
        if let Some(room) = &self.cfg.room {
            room.give(self.held);
        }
    }
}

impl<W: Work> ConsumerLoop<W> {
    /// A loop reading `stream` as `name` in `group`; `stop` carries the drain grace.
    pub async fn new(
        bus: &Bus,
        stream: &str,
        group: &str,
        name: &str,
        cfg: LoopConfig,
        work: W,
        stop: watch::Receiver<Option<Duration>>,
    ) -> Result<ConsumerLoop<W>, BusError> {
        let reader = if cfg.local {
            bus.local_consumer(stream, group, name).await?
        } else {
            bus.consumer(stream, group, name).await?
        }
        .with_room(cfg.room.clone());
        let acker = bus.consumer(stream, group, name).await?;
        let interval = |d: Duration| {
            let mut i = tokio::time::interval_at(Instant::now() + d, d);
            i.set_missed_tick_behavior(MissedTickBehavior::Delay);
            i
        };
        let (cancel_rx, cancels) = if cfg.cancels {
            let (tx, rx) = mpsc::unbounded_channel();
            let sub = bus.subscribe_cancels(std::sync::Arc::new(move |id| {
                let _ = tx.send(id);
            }));
            (Some(rx), Some(sub))
        } else {
            (None, None)
        };
        Ok(ConsumerLoop {
            touch: cfg.claim_idle.map(|d| interval((d / 3).max(Duration::from_millis(1)))),
            reclaim: cfg.claim_idle.map(|d| interval((d / 2).max(Duration::from_millis(1)))),
            work,
            cfg,
            stream: stream.to_owned(),
            reader: Some(reader),
            acker: Rc::new(acker),
            tasks: Tasks {
                stream: stream.to_owned(),
                ..Tasks::default()
            },
            unsettled: Vec::new(),
            settling: None,
            reading: None,
            failed: false,
            // Take over what a previous instance left, first thing.
            reclaim_due: true,
            reported: 0,
            held: 0,
            cancel_rx,
            _cancels: cancels,
            stop,
            drain_until: None,
        })
    }

    /// Entries in flight.
    pub fn in_flight(&self) -> usize {
        self.tasks.len()
    }

    fn draining(&self) -> bool {
        self.drain_until.is_some()
    }

    /// Starts a read when there is room and none is under way.
    fn maybe_read(&mut self) {
        let room = self
            .cfg
            .max_in_flight
            .saturating_sub(self.tasks.len())
            .min(self.cfg.max_batch);
        if self.reading.is_some() || self.draining() || room == 0 {
            return;
        }
        let Some(mut reader) = self.reader.take() else {
            return;
        };
        let reclaim = self.cfg.claim_idle.filter(|_| std::mem::take(&mut self.reclaim_due));
        let backoff = std::mem::take(&mut self.failed).then_some(self.cfg.backoff);
        let block = self.cfg.block;
        let stream = self.stream.clone();
        self.reading = Some(Box::pin(async move {
            if let Some(b) = backoff {
                tokio::time::sleep(b).await;
            }
            let mut got = Vec::new();
            if let Some(idle) = reclaim {
                match reader.reclaim(idle, room).await {
                    Ok(d) => {
                        if !d.is_empty() {
                            tracing::info!(stream, count = d.len(), "took over work of a stopped peer");
                            let reclaimed = &llmr_telemetry::metrics::metrics().reclaimed;
                            reclaimed.with_label_values(&[stream.as_str()]).inc_by(d.len() as u64);
                        }
                        got = d;
                    }
                    Err(e) => tracing::warn!(error = %e, "cannot reclaim entries"),
                }
            }
            if got.len() >= room {
                return (reader, Ok(got));
            }
            // Barely wait when reclaimed work is waiting to start (Redis reads BLOCK 0 as
            // "forever", so never less than 1 ms).
            let wait = if got.is_empty() { block } else { Duration::ZERO }.max(Duration::from_millis(1));
            let r = reader.read(room - got.len(), wait).await.map(|mut d| {
                got.append(&mut d);
                got
            });
            (reader, r)
        }));
    }

    /// One turn: waits for the first of a read, a finished task, a timer, a cancel or the
    /// stop, and handles it.
    pub async fn step(&mut self) -> Step {
        self.maybe_read();
        self.maybe_settle();
        if self.draining() && self.reading.is_none() && self.tasks.is_empty() && self.settling.is_none() {
            return Step::Stopped;
        }
        let busy = !self.tasks.is_empty();
        let reading = &mut self.reading;
        let settling = &mut self.settling;
        let tasks = &mut self.tasks.set;
        let (touch, reclaim) = (&mut self.touch, &mut self.reclaim);
        let cancel_rx = &mut self.cancel_rx;
        let stop = &mut self.stop;
        let drain_until = self.drain_until;
        tokio::select! {
            (reader, r) = read_under_way(reading), if reading.is_some() => {
                self.reading = None;
                self.reader = Some(reader);
                match r {
                    Ok(batch) => self.start(batch),
                    Err(e) => {
                        tracing::warn!(error = %e, "cannot read the stream; backing off");
                        self.failed = true;
                        Step::ReadFailed
                    }
                }
            }
            Some(joined) = tasks.join_next_with_id(), if !tasks.is_empty() => {
                let mut settled = self.ended(joined);
                while let Some(more) = self.tasks.set.try_join_next_with_id() {
                    settled.extend(self.ended(more));
                }
                let n = settled.len();
                self.unsettled.append(&mut settled);
                self.gauge();
                Step::Ended(n)
            }
            n = settle_under_way(settling), if settling.is_some() => {
                self.settling = None;
                Step::Settled(n)
            }
            _ = tick(touch) => {
                self.touch().await;
                Step::Touched
            }
            _ = tick(reclaim) => {
                self.reclaim_due = true;
                Step::ReclaimDue
            }
            Some(id) = recv(cancel_rx) => {
                self.tasks.cancel(id);
                Step::Cancel
            }
            Ok(()) = stop.changed(), if drain_until.is_none() => {
                let grace = (*self.stop.borrow()).unwrap_or_default();
                self.drain_until = Some(Instant::now() + grace);
                if self.cfg.claim_idle.is_none() {
                    // The in-process read takes entries only when it returns: stop waiting.
                    self.reading = None;
                }
                Step::Stopping
            }
            () = tokio::time::sleep_until(drain_until.unwrap_or_else(Instant::now)), if drain_until.is_some() && busy => {
                tracing::warn!(left = self.tasks.len(), "drain grace over; unfinished work is left for a peer");
                // Dropping the set aborts its tasks; their entries stay pending.
                let ready = std::mem::take(&mut self.tasks.ready);
                self.tasks = Tasks {
                    ready,
                    stream: self.stream.clone(),
                    ..Tasks::default()
                };
                self.reading = None;
                self.gauge();
                Step::GraceOver
            }
        }
    }

    /// Turns the loop until it is stopped and drained.
    pub async fn run(mut self) {
        while self.step().await != Step::Stopped {}
    }

    /// Publishes the work in flight (`llmr_consumer_in_flight`).
    /// Reports the entries in flight, and gives the shared room back what ended.
    fn gauge(&mut self) {
        let now = self.tasks.len();
        self.report(now as i64);
        if let Some(room) = &self.cfg.room
            && self.held > now
        {
            room.give(self.held - now);
            self.held = now;
        }
    }

    fn report(&mut self, now: i64) {
        if now == self.reported {
            return;
        }
        llmr_telemetry::metrics::metrics()
            .in_flight
            .with_label_values(&[self.stream.as_str()])
            .add(now - self.reported);
        self.reported = now;
    }

    fn start(&mut self, batch: Vec<Delivery>) -> Step {
        if self.cfg.room.is_some() {
            self.held += batch.len();
        }
        let mut fresh: Vec<Delivery> = Vec::with_capacity(batch.len());
        for d in batch {
            if self.tasks.running(&d.entry) {
                // Our own entry, reclaimed by ourselves while it runs: it is in hand.
                continue;
            }
            if self.tasks.running_request(&d.envelope.id) || fresh.iter().any(|f| f.envelope.id == d.envelope.id) {
                tracing::info!(request_id = %d.envelope.id, "the same request delivered twice; the first run goes on");
                self.tasks.settle(&d, Done::Ack);
                continue;
            }
            fresh.push(d);
        }
        let n = fresh.len();
        if n > 0 {
            self.work.start(fresh, &mut self.tasks);
        }
        // Also gives back the places of deliveries settled without work.
        self.gauge();
        Step::Read(n)
    }

    fn ended(&mut self, joined: Result<(Id, Vec<Settled>), tokio::task::JoinError>) -> Vec<Settled> {
        match joined {
            Ok((id, settled)) => self.tasks.ended(id, Some(settled)),
            Err(e) => {
                tracing::error!(error = %e, "a task failed; its entries are left for a peer");
                self.tasks.ended(e.id(), None)
            }
        }
    }

    /// Starts settling what ended, unless a settle is under way (then it waits for the next).
    fn maybe_settle(&mut self) {
        if self.settling.is_some() {
            return;
        }
        let mut batch = std::mem::take(&mut self.unsettled);
        batch.append(&mut self.tasks.ready);
        if !batch.is_empty() {
            self.settling = Some(Box::pin(settle(self.acker.clone(), batch)));
        }
    }

    async fn touch(&self) {
        let entries: Vec<String> = self.tasks.entries.keys().cloned().collect();
        if let Err(e) = self.acker.touch(&entries).await {
            tracing::warn!(error = %e, "could not refresh in-flight entries");
        }
    }
}

/// Settles deliveries in as few round trips as their kinds allow; returns how many.
async fn settle(acker: Rc<Consumer>, settled: Vec<Settled>) -> usize {
    let n = settled.len();
    let (mut acks, mut finishes, mut forwards) = (Vec::new(), Vec::new(), Vec::new());
    for (entry, id, done) in settled {
        match done {
            Done::Ack => acks.push(entry),
            Done::Finish => finishes.push((entry, id)),
            Done::Forward { stream, envelope } => forwards.push((entry, stream, *envelope)),
            Done::Keep => {}
        }
    }
    let count = forwards.len();
    if let Err(e) = acker.forward_many(forwards).await {
        // Left pending: routed again when reclaimed.
        tracing::warn!(error = %e, count, "could not forward work");
    }
    if let Err(e) = acker.finish_many(&finishes).await {
        tracing::warn!(error = %e, count = finishes.len(), "could not ack finished work (a peer may reclaim it; answered work is not run again)");
    }
    if let Err(e) = acker.ack(&acks).await {
        tracing::warn!(error = %e, count = acks.len(), "could not ack work");
    }
    n
}

async fn settle_under_way(s: &mut Option<SettleFuture>) -> usize {
    match s {
        Some(f) => f.as_mut().await,
        None => std::future::pending().await,
    }
}

async fn read_under_way(r: &mut Option<ReadFuture>) -> (Consumer, Result<Vec<Delivery>, BusError>) {
    match r {
        Some(f) => f.as_mut().await,
        None => std::future::pending().await,
    }
}

async fn tick(i: &mut Option<Interval>) {
    match i {
        Some(i) => {
            i.tick().await;
        }
        None => std::future::pending().await,
    }
}

async fn recv(rx: &mut Option<mpsc::UnboundedReceiver<Uuid>>) -> Option<Uuid> {
    match rx {
        Some(rx) => rx.recv().await,
        None => std::future::pending().await,
    }
}

/// Stop reading; resolves when the loop's work is done or `grace` passed.
#[derive(Message)]
#[rtype(result = "()")]
pub struct Drain {
    pub grace: Duration,
}

/// An actix actor running one consumer loop on its arbiter.
pub struct ConsumerActor<W: Work> {
    inner: Option<ConsumerLoop<W>>,
    stop: watch::Sender<Option<Duration>>,
    stopped: watch::Sender<bool>,
}

impl<W: Work> ConsumerActor<W> {
    /// Builds the loop (joining the group) and starts the actor.
    pub async fn start(
        bus: &Bus,
        stream: &str,
        group: &str,
        name: &str,
        cfg: LoopConfig,
        work: W,
    ) -> Result<actix::Addr<ConsumerActor<W>>, BusError> {
        let (stop, stop_rx) = watch::channel(None);
        let inner = ConsumerLoop::new(bus, stream, group, name, cfg, work, stop_rx).await?;
        Ok(ConsumerActor {
            inner: Some(inner),
            stop,
            stopped: watch::channel(false).0,
        }
        .start())
    }
}

impl<W: Work> Actor for ConsumerActor<W> {
    type Context = Context<Self>;

    fn started(&mut self, ctx: &mut Context<Self>) {
        if let Some(inner) = self.inner.take() {
            ctx.spawn(inner.run().into_actor(self).map(|(), act, _| {
                act.stopped.send_replace(true);
            }));
        }
    }
}

impl<W: Work> actix::Handler<Drain> for ConsumerActor<W> {
    type Result = ResponseFuture<()>;

    fn handle(&mut self, msg: Drain, _: &mut Context<Self>) -> Self::Result {
        self.stop.send_replace(Some(msg.grace));
        let mut stopped = self.stopped.subscribe();
        // The loop itself gives up on its work at the grace; this bound is only a backstop.
        let bound = msg.grace + Duration::from_secs(2);
        Box::pin(async move {
            let _ = tokio::time::timeout(bound, stopped.wait_for(|s| *s)).await;
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use bytes::Bytes;
    use llmr_protocol::{Kind, Meta};
    use std::cell::RefCell;
    use std::rc::Rc;

    /// Work whose tasks wait for the test to release them (or for a cancel).
    #[derive(Default, Clone)]
    struct Gate {
        started: Rc<RefCell<Vec<Uuid>>>,
        release: Rc<RefCell<HashMap<Uuid, oneshot::Sender<Done>>>>,
        cancelled: Rc<RefCell<Vec<Uuid>>>,
    }

    impl Work for Gate {
        fn start(&self, batch: Vec<Delivery>, tasks: &mut Tasks) {
            for d in batch {
                let id = d.envelope.id;
                self.started.borrow_mut().push(id);
                let (tx, rx) = oneshot::channel();
                self.release.borrow_mut().insert(id, tx);
                let cancelled = self.cancelled.clone();
                tasks.spawn_one(d, move |_, cancel| async move {
                    tokio::select! {
                        Ok(done) = rx => done,
                        Ok(()) = cancel => {
                            cancelled.borrow_mut().push(id);
                            Done::Ack
                        }
                    }
                });
            }
        }
    }

    fn env() -> Envelope {
        Envelope::new(
            Kind::Chat,
            "r",
            u64::MAX,
            Default::default(),
            Bytes::from_static(b"{}"),
            Meta::default(),
        )
    }

    async fn setup(max: usize) -> (Bus, Gate, ConsumerLoop<Gate>, watch::Sender<Option<Duration>>) {
        let bus = Bus::memory();
        let gate = Gate::default();
        let (stop, rx) = watch::channel(None);
        // A read returns only when there is something to read: every turn is deterministic.
        let cfg = LoopConfig {
            block: Duration::from_secs(60),
            cancels: true,
            ..LoopConfig::new(&bus, max, Duration::from_secs(1))
        };
        let l = ConsumerLoop::new(&bus, "s", "g", "c1", cfg, gate.clone(), rx)
            .await
            .unwrap();
        (bus, gate, l, stop)
    }

    #[actix_rt::test]
    async fn reads_only_as_much_as_there_is_room_for_and_acks_when_done() {
        let (bus, gate, mut l, _stop) = setup(2).await;
        for _ in 0..3 {
            bus.publish("s", env()).await.unwrap();
        }
        assert_eq!(l.step().await, Step::Read(2));
        assert_eq!(l.in_flight(), 2);
        assert_eq!(bus.pending("s", "g").await.unwrap(), 2);
        let first = gate.started.borrow()[0];
        let _ = gate.release.borrow_mut().remove(&first).unwrap().send(Done::Ack);
        assert_eq!(l.step().await, Step::Ended(1));
        // The ack and the read that the freed room allows, in either order.
        let mut next = vec![l.step().await, l.step().await];
        next.sort_by_key(|s| format!("{s:?}"));
        assert_eq!(
            next,
            vec![Step::Read(1), Step::Settled(1)],
            "room again: the third entry"
        );
        assert_eq!(gate.started.borrow().len(), 3);
        assert_eq!(bus.pending("s", "g").await.unwrap(), 2, "the first acked; two running");
    }

    /// Steps `l` until a read returns entries (how many), for up to 2 s.
    async fn next_read(l: &mut ConsumerLoop<Gate>) -> Option<usize> {
        let read = async {
            loop {
                if let Step::Read(n) = l.step().await
                    && n > 0
                {
                    return n;
                }
            }
        };
        tokio::time::timeout(Duration::from_secs(2), read).await.ok()
    }

    #[actix_rt::test]
    async fn loops_sharing_a_room_hold_no_more_than_it_has_places() {
        let bus = Bus::memory();
        let room = Room::new(2);
        let (_stop, rx) = watch::channel(None);
        let cfg = |local| LoopConfig {
            block: Duration::from_millis(50),
            local,
            room: Some(room.clone()),
            ..LoopConfig::new(&bus, 2, Duration::from_secs(1))
        };
        let (mine, theirs) = (Gate::default(), Gate::default());
        let mut local = ConsumerLoop::new(&bus, "s", "g", "local", cfg(true), mine.clone(), rx.clone())
            .await
            .unwrap();
        let mut shared = ConsumerLoop::new(&bus, "s", "g", "shared", cfg(false), theirs.clone(), rx)
            .await
            .unwrap();
        // Two published on this thread (the local loop's), two on another (the shared queue).
        for _ in 0..2 {
            bus.publish("s", env()).await.unwrap();
        }
        std::thread::scope(|s| {
            s.spawn(|| {
                let rt = tokio::runtime::Builder::new_current_thread().build().unwrap();
                for _ in 0..2 {
                    rt.block_on(bus.publish("s", env())).unwrap();
                }
            });
        });
        assert_eq!(local.step().await, Step::Read(2), "its own thread's work");
        assert_eq!(local.in_flight(), 2);
        // The room is full: the shared loop reads nothing though its queue has two.
        let waited = tokio::time::timeout(Duration::from_millis(200), async {
            loop {
                assert_eq!(shared.step().await, Step::Read(0), "no place left");
            }
        })
        .await;
        assert!(waited.is_err());
        assert_eq!(theirs.started.borrow().len(), 0);
        // One ends: its place goes to the shared loop's next read.
        let first = mine.started.borrow()[0];
        let _ = mine.release.borrow_mut().remove(&first).unwrap().send(Done::Ack);
        assert_eq!(local.step().await, Step::Ended(1));
        let got = next_read(&mut shared).await;
        assert_eq!(got, Some(1), "one place, one entry");
        assert_eq!(local.in_flight() + shared.in_flight(), 2);
        // Dropping a loop gives back what it held.
        drop(local);
        let got = next_read(&mut shared).await;
        assert_eq!(got, Some(1), "the last entry");
        assert_eq!(theirs.started.borrow().len(), 2);
    }

    #[actix_rt::test]
    async fn forwards_settle_atomically_onto_the_next_stream() {
        let (bus, gate, mut l, _stop) = setup(4).await;
        let mut c = bus.consumer("next", "g2", "x").await.unwrap();
        bus.publish("s", env()).await.unwrap();
        assert_eq!(l.step().await, Step::Read(1));
        let id = gate.started.borrow()[0];
        let fwd = Done::Forward {
            stream: "next".into(),
            envelope: Box::new(env()),
        };
        let _ = gate.release.borrow_mut().remove(&id).unwrap().send(fwd);
        assert_eq!(l.step().await, Step::Ended(1));
        assert_eq!(l.step().await, Step::Settled(1));
        assert_eq!(bus.pending("s", "g").await.unwrap(), 0);
        assert_eq!(c.read(10, Duration::ZERO).await.unwrap().len(), 1);
    }

    #[actix_rt::test]
    async fn a_cancel_reaches_the_running_task() {
        let (bus, gate, mut l, _stop) = setup(4).await;
        let e = env();
        bus.publish("s", e.clone()).await.unwrap();
        assert_eq!(l.step().await, Step::Read(1));
        bus.cancel(e.id).await.unwrap();
        assert_eq!(l.step().await, Step::Cancel);
        assert_eq!(l.step().await, Step::Ended(1));
        assert_eq!(l.step().await, Step::Settled(1));
        assert_eq!(*gate.cancelled.borrow(), vec![e.id]);
    }

    #[actix_rt::test]
    async fn drain_waits_for_running_work_then_stops() {
        let (bus, gate, mut l, stop) = setup(4).await;
        bus.publish("s", env()).await.unwrap();
        assert_eq!(l.step().await, Step::Read(1));
        stop.send_replace(Some(Duration::from_secs(30)));
        assert_eq!(l.step().await, Step::Stopping);
        bus.publish("s", env()).await.unwrap();
        let id = gate.started.borrow()[0];
        let _ = gate.release.borrow_mut().remove(&id).unwrap().send(Done::Ack);
        assert_eq!(l.step().await, Step::Ended(1));
        assert_eq!(l.step().await, Step::Settled(1));
        assert_eq!(l.step().await, Step::Stopped);
        assert_eq!(gate.started.borrow().len(), 1, "nothing new is read while draining");
    }

    #[actix_rt::test]
    async fn drain_gives_up_on_work_after_the_grace() {
        let (bus, _gate, mut l, stop) = setup(4).await;
        bus.publish("s", env()).await.unwrap();
        assert_eq!(l.step().await, Step::Read(1));
        stop.send_replace(Some(Duration::from_millis(50)));
        assert_eq!(l.step().await, Step::Stopping);
        assert_eq!(l.step().await, Step::GraceOver);
        assert_eq!(l.step().await, Step::Stopped);
        assert_eq!(bus.pending("s", "g").await.unwrap(), 1, "left pending for a peer");
    }

    #[actix_rt::test]
    async fn a_request_delivered_twice_runs_once() {
        let (bus, gate, mut l, _stop) = setup(4).await;
        let e = env();
        bus.publish("s", e.clone()).await.unwrap();
        bus.publish("s", e.clone()).await.unwrap();
        assert_eq!(l.step().await, Step::Read(1));
        assert_eq!(l.step().await, Step::Settled(1), "the duplicate is acked");
        assert_eq!(gate.started.borrow().len(), 1);
        assert_eq!(bus.pending("s", "g").await.unwrap(), 1);
    }
}

#[cfg(test)]
mod redis_tests {
    use super::*;
    use bytes::Bytes;
    use llmr_protocol::{Kind, Meta};

    /// Work that never finishes (a worker about to die) or acks at once.
    struct Hold(bool);

    impl Work for Hold {
        fn start(&self, batch: Vec<Delivery>, tasks: &mut Tasks) {
            for d in batch {
                let hold = self.0;
                tasks.spawn_one(d, move |_, _| async move {
                    if hold {
                        std::future::pending::<()>().await;
                    }
                    Done::Ack
                });
            }
        }
    }

    #[actix_rt::test]
    async fn a_live_loop_takes_over_what_a_dead_one_held() {
        let redis = llmr_testkit::RedisServer::start();
        let bus = Bus::redis(&redis.url(), "t:", 4).unwrap();
        for _ in 0..3 {
            let e = Envelope::new(
                Kind::Chat,
                "r",
                u64::MAX,
                Default::default(),
                Bytes::from_static(b"{}"),
                Meta::default(),
            );
            bus.publish("s", e.clone()).await.unwrap();
        }
        let idle = Duration::from_millis(200);
        let cfg = LoopConfig {
            block: Duration::from_millis(10),
            ..LoopConfig::new(&bus, 8, idle)
        };
        let (_s1, rx1) = watch::channel(None);
        let mut dead = ConsumerLoop::new(&bus, "s", "g", "dead", cfg.clone(), Hold(true), rx1)
            .await
            .unwrap();
        assert_eq!(dead.step().await, Step::Read(3));
        drop(dead);
        let (_s2, rx2) = watch::channel(None);
        let mut live = ConsumerLoop::new(&bus, "s", "g", "live", cfg, Hold(false), rx2)
            .await
            .unwrap();
        let until = Instant::now() + Duration::from_secs(5);
        let mut taken = 0;
        while taken < 3 && Instant::now() < until {
            if let Step::Read(n) = live.step().await {
                taken += n;
            }
        }
        assert_eq!(taken, 3);
    }
}
