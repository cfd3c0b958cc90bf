//! The worker's consumer actor: reads only as many jobs as it can run, runs them, acks them
//! when done, keeps its long-running entries from being reclaimed, takes over the entries of
//! dead peers, and aborts jobs whose client went away.

use std::collections::HashMap;
use std::rc::Rc;
use std::time::Duration;

use actix::{Actor, ActorFutureExt, AsyncContext, Context, Handler, Message, ResponseActFuture, WrapFuture};
use llmr_bus::{Consumer, Delivery};
use uuid::Uuid;

use crate::job::{self, JobCtx};

/// Read more jobs if there is room.
#[derive(Message)]
#[rtype(result = "()")]
pub struct Poll;

/// A job finished (or was cancelled); ack it.
#[derive(Message)]
#[rtype(result = "()")]
pub struct JobDone {
    pub id: Uuid,
    pub entry: String,
}

/// The client of request `id` went away.
#[derive(Message)]
#[rtype(result = "()")]
pub struct Cancel(pub Uuid);

/// Keep this worker's in-flight entries fresh.
#[derive(Message)]
#[rtype(result = "()")]
pub struct Touch;

/// Take over entries of a dead worker.
#[derive(Message)]
#[rtype(result = "()")]
pub struct Reclaim;

/// Stop reading; resolves when in-flight jobs are done or `grace` passed.
#[derive(Message)]
#[rtype(result = "()")]
pub struct Drain {
    pub grace: Duration,
}

const BLOCK: Duration = Duration::from_millis(1000);
const ERROR_BACKOFF: Duration = Duration::from_millis(500);

struct Running {
    entry: String,
    cancel: tokio::sync::oneshot::Sender<()>,
}

pub struct WorkerActor {
    ctx: Rc<JobCtx>,
    /// Reads new jobs and reclaims dead peers' (taken while a read is under way).
    reader: Option<Consumer>,
    acker: Rc<Consumer>,
    max_in_flight: usize,
    claim_idle: Duration,
    running: HashMap<Uuid, Running>,
    reading: bool,
    /// Finished jobs not acked yet, and whether an ack is under way (acks batch up while one
    /// is in flight).
    to_finish: Vec<(String, Uuid)>,
    finishing: bool,
    /// Set by the reclaim timer; served by the next poll before reading new jobs, so a
    /// dead peer's jobs go first.
    reclaim_due: bool,
    draining: bool,
    idle: tokio::sync::watch::Sender<usize>,
}

impl WorkerActor {
    pub fn new(ctx: Rc<JobCtx>, consumers: [Consumer; 2], max_in_flight: usize, claim_idle: Duration) -> WorkerActor {
        let [reader, acker] = consumers;
        WorkerActor {
            ctx,
            reader: Some(reader),
            acker: Rc::new(acker),
            max_in_flight,
            claim_idle,
            running: HashMap::new(),
            reading: false,
            to_finish: Vec::new(),
            finishing: false,
            reclaim_due: false,
            draining: false,
            idle: tokio::sync::watch::channel(0).0,
        }
    }

    fn room(&self) -> usize {
        self.max_in_flight.saturating_sub(self.running.len())
    }

    /// Starts jobs for `deliveries`.
    fn start_jobs(&mut self, deliveries: Vec<Delivery>, ctx: &mut Context<Self>) {
        for d in deliveries {
            let (tx, rx) = tokio::sync::oneshot::channel();
            let (id, entry) = (d.envelope.id, d.entry.clone());
            if let Some(old) = self.running.insert(
                id,
                Running {
                    entry: entry.clone(),
                    cancel: tx,
                },
            ) {
                // The same request delivered twice to this worker (a reclaim of our own
                // entry): let the first run finish; ack the duplicate.
                self.running.insert(id, old);
                let acker = self.acker.clone();
                ctx.spawn(async move { drop(acker.ack(&[entry]).await) }.into_actor(self));
                continue;
            }
            let job = job::run(self.ctx.clone(), d, rx);
            ctx.spawn(
                job.into_actor(self)
                    .map(move |(), _, ctx| ctx.notify(JobDone { id, entry })),
            );
        }
        self.idle.send_replace(self.running.len());
    }
}

impl Actor for WorkerActor {
    type Context = Context<Self>;

    fn started(&mut self, ctx: &mut Context<Self>) {
        ctx.notify(Poll);
        if !self.ctx.bus.is_memory() {
            ctx.run_interval(self.claim_idle / 3, |_, ctx| ctx.notify(Touch));
            ctx.run_interval(self.claim_idle / 2, |_, ctx| ctx.notify(Reclaim));
        }
    }
}

impl Handler<Poll> for WorkerActor {
    type Result = ResponseActFuture<Self, ()>;

    fn handle(&mut self, _: Poll, _: &mut Context<Self>) -> Self::Result {
        let room = self.room();
        if self.draining || self.reading || room == 0 {
            return Box::pin(actix::fut::ready(()));
        }
        let Some(mut reader) = self.reader.take() else {
            return Box::pin(actix::fut::ready(()));
        };
        self.reading = true;
        let reclaim = std::mem::take(&mut self.reclaim_due);
        let idle = self.claim_idle;
        Box::pin(
            async move {
                let mut got = Vec::new();
                if reclaim {
                    match reader.reclaim(idle, room).await {
                        Ok(d) => {
                            if !d.is_empty() {
                                tracing::info!(count = d.len(), "took over jobs of a stopped worker");
                            }
                            got = d;
                        }
                        Err(e) => tracing::warn!(error = %e, "worker cannot reclaim jobs"),
                    }
                }
                let r = if got.len() < room {
                    // Do not block when reclaimed jobs are waiting to start.
                    let block = if got.is_empty() {
                        BLOCK
                    } else {
                        Duration::from_millis(1)
                    };
                    reader.read(room - got.len(), block).await.map(|mut d| {
                        got.append(&mut d);
                        got
                    })
                } else {
                    Ok(got)
                };
                (r, reader)
            }
            .into_actor(self)
            .map(|(r, reader), act, ctx| {
                act.reader = Some(reader);
                act.reading = false;
                match r {
                    Ok(deliveries) => {
                        act.start_jobs(deliveries, ctx);
                        ctx.notify(Poll);
                    }
                    Err(e) => {
                        tracing::warn!(error = %e, "worker cannot read jobs");
                        ctx.notify_later(Poll, ERROR_BACKOFF);
                    }
                }
            }),
        )
    }
}

impl Handler<JobDone> for WorkerActor {
    type Result = ();

    fn handle(&mut self, done: JobDone, ctx: &mut Context<Self>) {
        if self.running.get(&done.id).is_some_and(|r| r.entry == done.entry) {
            self.running.remove(&done.id);
        }
        self.idle.send_replace(self.running.len());
        self.to_finish.push((done.entry, done.id));
        self.flush_finished(ctx);
        if !self.reading {
            ctx.notify(Poll);
        }
    }
}

impl WorkerActor {
    /// Acks finished jobs: everything that finished while the previous ack was in flight
    /// goes in one round trip.
    fn flush_finished(&mut self, ctx: &mut Context<Self>) {
        if self.finishing || self.to_finish.is_empty() {
            return;
        }
        self.finishing = true;
        let batch = std::mem::take(&mut self.to_finish);
        let acker = self.acker.clone();
        ctx.spawn(
            async move {
                if let Err(e) = acker.finish_many(&batch).await {
                    tracing::warn!(error = %e, count = batch.len(), "could not ack finished jobs (a peer may reclaim them; answered ones are not run again)");
                }
            }
            .into_actor(self)
            .map(|(), act, ctx| {
                act.finishing = false;
                act.flush_finished(ctx);
            }),
        );
    }
}

impl Handler<Cancel> for WorkerActor {
    type Result = ();

    fn handle(&mut self, Cancel(id): Cancel, _: &mut Context<Self>) {
        if let Some(r) = self.running.remove(&id) {
            let _ = r.cancel.send(());
            // The job itself still reports JobDone (after releasing its lease), which acks.
            self.running.insert(
                id,
                Running {
                    entry: r.entry,
                    cancel: tokio::sync::oneshot::channel().0,
                },
            );
        }
    }
}

impl Handler<Touch> for WorkerActor {
    type Result = ();

    fn handle(&mut self, _: Touch, ctx: &mut Context<Self>) {
        let entries: Vec<String> = self.running.values().map(|r| r.entry.clone()).collect();
        if entries.is_empty() {
            return;
        }
        let acker = self.acker.clone();
        ctx.spawn(
            async move {
                if let Err(e) = acker.touch(&entries).await {
                    tracing::warn!(error = %e, "could not refresh in-flight jobs");
                }
            }
            .into_actor(self),
        );
    }
}

impl Handler<Reclaim> for WorkerActor {
    type Result = ();

    fn handle(&mut self, _: Reclaim, ctx: &mut Context<Self>) {
        self.reclaim_due = true;
        ctx.notify(Poll);
    }
}

impl Handler<Drain> for WorkerActor {
    type Result = ResponseActFuture<Self, ()>;

    fn handle(&mut self, msg: Drain, _: &mut Context<Self>) -> Self::Result {
        self.draining = true;
        let mut rx = self.idle.subscribe();
        Box::pin(
            async move {
                let _ = tokio::time::timeout(msg.grace, rx.wait_for(|n| *n == 0)).await;
            }
            .into_actor(self),
        )
    }
}
