//! Shared multiplexed Redis connections for everything that does not block.
//!
//! A multiplexed connection carries many concurrent commands (pipelined on one socket), so
//! checking one out of the pool per operation — which deadpool-redis follows with an
//! `UNWATCH`+`PING` round trip on every checkout — only doubles the round trips. Instead a
//! few connections are taken out of the pool once (so connecting still goes through the
//! pool and its timeouts) and cloned per operation; a connection that fails is dropped and
//! the next operation takes a fresh one. A command that finds its connection already dead —
//! as every cached connection is after a Redis restart — was never sent: it is retried once
//! on a fresh connection, so a restart costs no operation an error. A slot is reconnected by
//! one operation at a time: the others that find it empty meanwhile wait for that one and
//! share what it made (or fail with it), so a blip under load costs one connection per slot,
//! not one per operation in flight (200 at once made 200 connections before).

use std::sync::Mutex;
use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering};

use deadpool_redis::{Pool, PoolError};
use redis::aio::MultiplexedConnection;

/// How many multiplexed connections one process keeps.
const SLOTS: usize = 4;

pub struct RedisConns {
    pool: Pool,
    slots: Vec<Slot>,
    next: AtomicUsize,
    /// Numbers each connection made, so a failure drops the connection it was seen on and
    /// not a fresh one another operation has put in its place.
    made: AtomicU64,
}

/// One cached connection and the lock its reconnection holds: when many operations find
/// the slot empty at once (a restart, a timeout under load), one connects and the others wait
/// for it, instead of each making a connection of its own and the pool queueing them.
#[derive(Default)]
struct Slot {
    cached: Mutex<Option<(u64, MultiplexedConnection)>>,
    connecting: tokio::sync::Mutex<()>,
    /// Connects that failed (to tell a waiter that the attempt it waited for failed; one
    /// cancelled midway leaves the next waiter to try).
    failed: AtomicU64,
}

impl Slot {
    fn cached(&self) -> Option<(u64, MultiplexedConnection)> {
        self.cached.lock().ok().and_then(|s| s.clone())
    }
}

/// One operation's connection. A connection-level failure (I/O, timeout, dropped) drops it
/// from the cache, so the next operation reconnects.
pub struct Conn<'a> {
    conn: MultiplexedConnection,
    owner: &'a RedisConns,
    slot: usize,
    made: u64,
}

impl Conn<'_> {
    fn check<T>(&self, r: redis::RedisResult<T>) -> redis::RedisResult<T> {
        if let Err(e) = &r
            && (e.is_io_error() || e.is_timeout() || e.is_connection_dropped() || e.is_unrecoverable_error())
        {
            self.owner.forget(self.slot, self.made);
        }
        r
    }

    /// A fresh connection in place of a dead one, when `e` says the command never left (the
    /// socket was already closed): then it may be sent again.
    async fn replace_if_unsent(&mut self, e: &redis::RedisError) -> bool {
        let io_kind = std::error::Error::source(e)
            .and_then(|s| s.downcast_ref::<std::io::Error>())
            .map(std::io::Error::kind);
        let unsent = e.is_connection_dropped()
            || (e.is_io_error()
                && (matches!(
                    io_kind,
                    Some(std::io::ErrorKind::BrokenPipe | std::io::ErrorKind::NotConnected)
                ) || e.to_string().to_ascii_lowercase().contains("broken pipe")));
        if !unsent {
            return false;
        }
        self.owner.forget(self.slot, self.made);
        match self.owner.connection(self.slot).await {
            Ok((made, c)) => {
                (self.made, self.conn) = (made, c);
                true
            }
            Err(_) => false,
        }
    }
}

impl redis::aio::ConnectionLike for Conn<'_> {
    fn req_packed_command<'a>(&'a mut self, cmd: &'a redis::Cmd) -> redis::RedisFuture<'a, redis::Value> {
        Box::pin(async move {
            let r = self.conn.req_packed_command(cmd).await;
            let r = match r {
                Err(e) if self.replace_if_unsent(&e).await => self.conn.req_packed_command(cmd).await,
                r => r,
            };
            self.check(r)
        })
    }

    fn req_packed_commands<'a>(
        &'a mut self,
        pipeline: &'a redis::Pipeline,
        offset: usize,
        count: usize,
    ) -> redis::RedisFuture<'a, Vec<redis::Value>> {
        Box::pin(async move {
            let r = self.conn.req_packed_commands(pipeline, offset, count).await;
            let r = match r {
                Err(e) if self.replace_if_unsent(&e).await => {
                    self.conn.req_packed_commands(pipeline, offset, count).await
                }
                r => r,
            };
            self.check(r)
        })
    }

    fn get_db(&self) -> i64 {
        self.conn.get_db()
    }
}

impl RedisConns {
    pub fn new(pool: Pool) -> RedisConns {
        let n = SLOTS.min(pool.status().max_size.max(1));
        RedisConns {
            pool,
            slots: (0..n).map(|_| Slot::default()).collect(),
            next: AtomicUsize::new(0),
            made: AtomicU64::new(0),
        }
    }

    /// A connection for one operation.
    pub async fn get(&self) -> Result<Conn<'_>, PoolError> {
        let slot = self.next.fetch_add(1, Ordering::Relaxed) % self.slots.len();
        let (made, conn) = self.connection(slot).await?;
        Ok(Conn {
            conn,
            owner: self,
            slot,
            made,
        })
    }

    /// Drops `slot`'s connection if it is still connection number `made`.
    fn forget(&self, slot: usize, made: u64) {
        if let Ok(mut s) = self.slots[slot].cached.lock()
            && s.as_ref().is_some_and(|(m, _)| *m == made)
        {
            *s = None;
        }
    }

    /// `slot`'s connection, made from the pool when there is none: by one operation at a
    /// time, the others waiting for it and taking what it made — or, when its attempt failed,
    /// failing at once too (so an unreachable Redis still fails every operation fast, not one
    /// connect timeout after another).
    async fn connection(&self, slot: usize) -> Result<(u64, MultiplexedConnection), PoolError> {
        let s = &self.slots[slot];
        if let Some(c) = s.cached() {
            return Ok(c);
        }
        let tried = s.failed.load(Ordering::Acquire);
        let _connecting = s.connecting.lock().await;
        if let Some(c) = s.cached() {
            return Ok(c);
        }
        if s.failed.load(Ordering::Acquire) != tried {
            return Err(PoolError::Backend(redis::RedisError::from((
                redis::ErrorKind::Io,
                "cannot connect to Redis (the connection attempt this operation waited for failed)",
            ))));
        }
        let obj = match self.pool.get().await {
            Ok(obj) => obj,
            Err(e) => {
                s.failed.fetch_add(1, Ordering::AcqRel);
                return Err(e);
            }
        };
        let c: MultiplexedConnection = deadpool_redis::Connection::take(obj);
        let made = self.made.fetch_add(1, Ordering::Relaxed) + 1;
        if let Ok(mut cached) = s.cached.lock() {
            *cached = Some((made, c.clone()));
        }
        Ok((made, c))
    }
}

/// "At most once per `every` for each key" in one process: the Redis writes that only need
/// repeating now and then (a stream's expiry, a counter's index entry), shared by the bus and
/// the store.
#[derive(Debug)]
pub struct EveryPerKey {
    every: std::time::Duration,
    last: std::sync::Mutex<std::collections::HashMap<String, std::time::Instant>>,
}

impl EveryPerKey {
    pub fn new(every: std::time::Duration) -> EveryPerKey {
        EveryPerKey {
            every,
            last: std::sync::Mutex::default(),
        }
    }

    /// Whether `key` is due now (and if so, its clock restarts). Keys are forgotten all at
    /// once past 10,000, which only makes some due early.
    pub fn due(&self, key: &str) -> bool {
        let now = std::time::Instant::now();
        let mut last = self.last.lock().unwrap_or_else(std::sync::PoisonError::into_inner);
        if last.len() > 10_000 {
            last.clear();
        }
        match last.get(key) {
            Some(at) if now.duration_since(*at) < self.every => false,
            _ => {
                last.insert(key.to_owned(), now);
                true
            }
        }
    }
}
