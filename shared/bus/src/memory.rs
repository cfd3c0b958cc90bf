//! The in-process bus: the same semantics as the Redis streams, on mutex-guarded queues.
//!
//! Each group has its own queue of undelivered entries and a pending table (consumer,
//! delivery time) for reclaim. Entries published before any group exists wait in a backlog
//! that the first group created takes over, as a Redis group created at `0` would read them.
//! Reply frames are handed straight to the registered sink of the target instance.
//!
//! A group may also have thread-local consumers ([`MemoryBus::register_local`]): what is
//! published on a thread that has one goes to that consumer only, so a request published by
//! an HTTP worker is routed and run on the same thread, with no hand-off to another. A
//! thread's queue falls back to the shared one when its last local consumer goes.

use std::collections::VecDeque;

use foldhash::{HashMap, HashSet};
use std::sync::{Arc, Mutex, MutexGuard};
use std::thread::ThreadId;
use std::time::Duration;

use llmr_protocol::{Envelope, Frame, now_ms};
use tokio::sync::Notify;
use uuid::Uuid;

use crate::{CancelSink, Delivery, ReplySink, Room, Subscription};

#[derive(Default)]
pub struct MemoryBus {
    state: Mutex<State>,
}

#[derive(Default)]
struct State {
    streams: HashMap<String, MemStream>,
    replies: HashMap<String, ReplySink>,
    cancels: HashMap<u64, CancelSink>,
    /// Requests whose head frame went out, until their job finishes.
    first_frames: HashSet<Uuid>,
    next_id: u64,
}

#[derive(Default)]
struct MemStream {
    backlog: VecDeque<(String, Envelope)>,
    groups: HashMap<String, Group>,
    notify: Arc<Notify>,
}

#[derive(Default)]
struct Group {
    queue: VecDeque<(String, Envelope)>,
    /// What was published on a thread with local consumers, for them alone.
    local: HashMap<ThreadId, Local>,
    pending: HashMap<String, Pending>,
    /// Entries ever queued for the group (with those it took over at its creation).
    added: u64,
}

impl MemStream {
    /// The group, created when missing: it takes over the entries published before any group.
    fn group(&mut self, group: &str) -> &mut Group {
        self.groups.entry(group.to_owned()).or_insert_with(|| Group {
            added: self.backlog.len() as u64,
            queue: std::mem::take(&mut self.backlog),
            ..Group::default()
        })
    }
}

/// One thread's local consumers of a group and what waits for them.
#[derive(Default)]
struct Local {
    queue: VecDeque<(String, Envelope)>,
    notify: Arc<Notify>,
    consumers: usize,
}

/// A thread-local consumer's place in its group; dropping it hands what waits for the
/// thread back to the shared queue once no local consumer of the thread is left.
pub struct LocalGuard {
    bus: Arc<MemoryBus>,
    stream: String,
    group: String,
    thread: ThreadId,
}

impl Drop for LocalGuard {
    fn drop(&mut self) {
        let mut st = self.bus.lock();
        let Some(s) = st.streams.get_mut(&self.stream) else {
            return;
        };
        let Some(g) = s.groups.get_mut(&self.group) else {
            return;
        };
        let Some(l) = g.local.get_mut(&self.thread) else {
            return;
        };
        l.consumers -= 1;
        if l.consumers == 0
            && let Some(l) = g.local.remove(&self.thread)
        {
            g.queue.extend(l.queue);
            s.notify.notify_waiters();
        }
    }
}

/// What a read found.
enum Found {
    Entries(Vec<Delivery>),
    /// Nothing queued: wait for this.
    Wait(Arc<Notify>),
    /// Entries queued, but the shared room has no place: wait for one.
    Full,
}

/// Takes as many of `queue`'s entries as `count` and the room allow.
fn take(
    queue: &mut VecDeque<(String, Envelope)>,
    pending: &mut HashMap<String, Pending>,
    consumer: &str,
    count: usize,
    room: Option<&Room>,
) -> Found {
    let n = count.min(queue.len());
    match room.map_or(n, |r| r.take(n)) {
        0 => Found::Full,
        n => Found::Entries(deliver(queue, pending, consumer, n)),
    }
}

/// Waits for `wake` until `deadline`; false when the deadline came first (or there is
/// nothing to wait for).
async fn wait_until(deadline: tokio::time::Instant, wake: Option<impl std::future::Future<Output = ()>>) -> bool {
    match wake {
        Some(w) => tokio::time::timeout_at(deadline, w).await.is_ok(),
        None => false,
    }
}

/// Takes up to `count` entries from `queue` into the group's pending table for `consumer`.
fn deliver(
    queue: &mut VecDeque<(String, Envelope)>,
    pending: &mut HashMap<String, Pending>,
    consumer: &str,
    count: usize,
) -> Vec<Delivery> {
    let n = count.min(queue.len());
    let now = now_ms();
    queue
        .drain(..n)
        .map(|(entry, env)| {
            pending.insert(
                entry.clone(),
                Pending {
                    consumer: consumer.to_owned(),
                    since_ms: now,
                    env: env.clone(),
                },
            );
            Delivery {
                entry,
                envelope: env,
                reclaimed: false,
            }
        })
        .collect()
}

struct Pending {
    consumer: String,
    since_ms: u64,
    env: Envelope,
}

impl MemoryBus {
    fn lock(&self) -> MutexGuard<'_, State> {
        // A panic while holding this lock cannot leave the queues half-updated in a way
        // that matters more than stopping; recover the guard rather than poisoning callers.
        self.state.lock().unwrap_or_else(|e| e.into_inner())
    }

    pub(crate) fn publish(&self, stream: &str, env: Envelope) {
        let mut st = self.lock();
        st.next_id += 1;
        let entry = format!("{}-{}", now_ms(), st.next_id);
        let s = st.streams.entry(stream.to_owned()).or_default();
        if s.groups.is_empty() {
            s.backlog.push_back((entry, env));
            return s.notify.notify_waiters();
        }
        let thread = std::thread::current().id();
        let mut shared = false;
        // Each group gets its copy; the last one takes the envelope itself.
        let mut item = Some((entry, env));
        let mut groups = s.groups.values_mut().peekable();
        while let Some(g) = groups.next() {
            let copy = match groups.peek() {
                Some(_) => item.clone(),
                None => item.take(),
            };
            let Some(copy) = copy else { break };
            g.added += 1;
            match g.local.get_mut(&thread) {
                Some(l) => {
                    l.queue.push_back(copy);
                    l.notify.notify_one();
                }
                None => {
                    g.queue.push_back(copy);
                    shared = true;
                }
            }
        }
        if shared {
            s.notify.notify_waiters();
        }
    }

    /// Makes the calling thread's consumer of `group` a local one: from now on what this
    /// thread publishes on `stream` goes to it alone, until the guard is dropped.
    pub(crate) fn register_local(self: &Arc<Self>, stream: &str, group: &str) -> LocalGuard {
        let thread = std::thread::current().id();
        let mut st = self.lock();
        let g = st.streams.entry(stream.to_owned()).or_default().group(group);
        g.local.entry(thread).or_default().consumers += 1;
        LocalGuard {
            bus: self.clone(),
            stream: stream.to_owned(),
            group: group.to_owned(),
            thread,
        }
    }

    /// Reads up to `count` entries published on the guard's thread, waiting up to `block`.
    pub(crate) async fn read_local(
        &self,
        local: &LocalGuard,
        consumer: &str,
        count: usize,
        block: Duration,
        room: Option<&Room>,
    ) -> Vec<Delivery> {
        self.read_from(block, room, |st| {
            let g = st.streams.get_mut(&local.stream)?.groups.get_mut(&local.group)?;
            let l = g.local.get_mut(&local.thread)?;
            Some(if l.queue.is_empty() {
                Found::Wait(l.notify.clone())
            } else {
                take(&mut l.queue, &mut g.pending, consumer, count, room)
            })
        })
        .await
    }

    pub(crate) fn create_group(&self, stream: &str, group: &str) {
        self.lock().streams.entry(stream.to_owned()).or_default().group(group);
    }

    pub(crate) async fn read(
        &self,
        stream: &str,
        group: &str,
        consumer: &str,
        count: usize,
        block: Duration,
        room: Option<&Room>,
    ) -> Vec<Delivery> {
        self.read_from(block, room, |st| {
            let s = st.streams.entry(stream.to_owned()).or_default();
            Some(match s.groups.get_mut(group) {
                Some(g) if !g.queue.is_empty() => take(&mut g.queue, &mut g.pending, consumer, count, room),
                _ => Found::Wait(s.notify.clone()),
            })
        })
        .await
    }

    /// The one read loop: `look` (under the lock) takes entries or says what to wait for
    /// (None: the queue is gone); waits until `block` has passed.
    async fn read_from(
        &self,
        block: Duration,
        room: Option<&Room>,
        mut look: impl FnMut(&mut State) -> Option<Found>,
    ) -> Vec<Delivery> {
        let deadline = tokio::time::Instant::now() + block;
        loop {
            // Registered before looking, so places given back meanwhile are not missed.
            let mut freed = std::pin::pin!(room.map(Room::freed));
            if let Some(f) = freed.as_mut().as_pin_mut() {
                f.enable();
            }
            // The lock is held for the look only (a guard in the match would live through it).
            let found = look(&mut self.lock());
            let woken = match found {
                None => return Vec::new(),
                Some(Found::Entries(d)) => return d,
                Some(Found::Full) => wait_until(deadline, freed.as_pin_mut()).await,
                Some(Found::Wait(notify)) => {
                    let notified = notify.notified();
                    tokio::pin!(notified);
                    notified.as_mut().enable();
                    // Look again after registering, so a publish in between is seen.
                    let again = look(&mut self.lock());
                    match again {
                        None => return Vec::new(),
                        Some(Found::Entries(d)) => return d,
                        Some(Found::Full) => continue,
                        Some(Found::Wait(_)) => wait_until(deadline, Some(notified)).await,
                    }
                }
            };
            if !woken {
                return Vec::new();
            }
        }
    }

    pub(crate) fn reclaim(
        &self,
        stream: &str,
        group: &str,
        consumer: &str,
        min_idle: Duration,
        count: usize,
    ) -> Vec<Delivery> {
        let mut st = self.lock();
        let Some(g) = st.streams.get_mut(stream).and_then(|s| s.groups.get_mut(group)) else {
            return Vec::new();
        };
        let now = now_ms();
        let idle = min_idle.as_millis() as u64;
        let mut stale: Vec<&String> = g
            .pending
            .iter()
            .filter(|(_, p)| now.saturating_sub(p.since_ms) >= idle)
            .map(|(k, _)| k)
            .collect();
        stale.sort();
        let ids: Vec<String> = stale.into_iter().take(count).cloned().collect();
        ids.into_iter()
            .filter_map(|entry| {
                let p = g.pending.get_mut(&entry)?;
                p.consumer = consumer.to_owned();
                p.since_ms = now;
                Some(Delivery {
                    entry,
                    envelope: p.env.clone(),
                    reclaimed: true,
                })
            })
            .collect()
    }

    pub(crate) fn ack(&self, stream: &str, group: &str, entries: &[String]) {
        let mut st = self.lock();
        if let Some(g) = st.streams.get_mut(stream).and_then(|s| s.groups.get_mut(group)) {
            for e in entries {
                g.pending.remove(e);
            }
        }
    }

    pub(crate) fn touch(&self, stream: &str, group: &str, consumer: &str, entries: &[String]) {
        let mut st = self.lock();
        if let Some(g) = st.streams.get_mut(stream).and_then(|s| s.groups.get_mut(group)) {
            let now = now_ms();
            for e in entries {
                if let Some(p) = g.pending.get_mut(e) {
                    p.consumer = consumer.to_owned();
                    p.since_ms = now;
                }
            }
        }
    }

    pub(crate) fn pending(&self, stream: &str, group: &str) -> u64 {
        self.lock()
            .streams
            .get(stream)
            .and_then(|s| s.groups.get(group))
            .map_or(0, |g| g.pending.len() as u64)
    }

    pub(crate) fn backlog(&self, stream: &str, group: &str) -> crate::Backlog {
        let st = self.lock();
        let Some(s) = st.streams.get(stream) else {
            // No stream: nothing waits in it, for any group.
            return crate::Backlog {
                lag: Some(0),
                ..crate::Backlog::default()
            };
        };
        let g = s.groups.get(group);
        let (queued, pending, added) = g.map_or((s.backlog.len(), 0, 0), |g| {
            let local: usize = g.local.values().map(|l| l.queue.len()).sum();
            (g.queue.len() + local, g.pending.len(), g.added)
        });
        crate::Backlog {
            length: (queued + pending) as u64,
            pending: pending as u64,
            lag: Some(queued as u64),
            read: Some(added.saturating_sub(queued as u64)),
        }
    }

    pub(crate) fn reply(&self, reply_to: &str, frames: &[Frame]) {
        let sink = {
            let mut st = self.lock();
            if let Some(f) = frames.first()
                && crate::marks_first(frames)
            {
                st.first_frames.insert(f.id);
            }
            st.replies.get(reply_to).cloned()
        };
        if let Some(sink) = sink {
            for f in frames {
                sink(f.clone());
            }
        }
    }

    pub(crate) fn first_frame_sent(&self, id: Uuid) -> bool {
        self.lock().first_frames.contains(&id)
    }

    pub(crate) fn forget_first_frame(&self, id: Uuid) {
        self.lock().first_frames.remove(&id);
    }

    pub(crate) fn subscribe_replies(self: &Arc<Self>, instance: &str, sink: ReplySink) -> Subscription {
        self.lock().replies.insert(instance.to_owned(), sink);
        let me = Arc::downgrade(self);
        let instance = instance.to_owned();
        Subscription::new(move || {
            if let Some(b) = me.upgrade() {
                b.lock().replies.remove(&instance);
            }
        })
    }

    pub(crate) fn cancel(&self, id: Uuid) {
        let sinks: Vec<CancelSink> = self.lock().cancels.values().cloned().collect();
        for s in sinks {
            s(id);
        }
    }

    pub(crate) fn subscribe_cancels(self: &Arc<Self>, sink: CancelSink) -> Subscription {
        let key = {
            let mut st = self.lock();
            st.next_id += 1;
            let k = st.next_id;
            st.cancels.insert(k, sink);
            k
        };
        let me = Arc::downgrade(self);
        Subscription::new(move || {
            if let Some(b) = me.upgrade() {
                b.lock().cancels.remove(&key);
            }
        })
    }
}
