//! Shared multiplexed Redis connections for everything that does not block.
//!
//! A multiplexed connection carries many concurrent commands (pipelined on one socket), so
//! checking one out of the pool per operation — which deadpool-redis follows with an
//! `UNWATCH`+`PING` round trip on every checkout — only doubles the round trips. Instead a
//! few connections are taken out of the pool once (so connecting still goes through the
//! pool and its timeouts) and cloned per operation; a connection that fails is dropped and
//! the next operation takes a fresh one. A command that finds its connection already dead —
//! as every cached connection is after a Redis restart — was never sent: it is retried once
//! on a fresh connection, so a restart costs no operation an error.

use std::sync::Mutex;
use std::sync::atomic::{AtomicUsize, Ordering};

use deadpool_redis::Pool;
use redis::aio::MultiplexedConnection;

/// How many multiplexed connections one process keeps.
const SLOTS: usize = 4;

pub struct RedisConns {
    pool: Pool,
    slots: Vec<Mutex<Option<MultiplexedConnection>>>,
    next: AtomicUsize,
}

/// One operation's connection. A connection-level failure (I/O, timeout, dropped) drops it
/// from the cache, so the next operation reconnects.
pub struct Conn<'a> {
    conn: MultiplexedConnection,
    owner: &'a RedisConns,
    slot: usize,
}

impl Conn<'_> {
    fn check<T>(&self, r: redis::RedisResult<T>) -> redis::RedisResult<T> {
        if let Err(e) = &r
            && (e.is_io_error() || e.is_timeout() || e.is_connection_dropped() || e.is_unrecoverable_error())
            && let Ok(mut s) = self.owner.slots[self.slot].lock()
        {
            *s = None;
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
        match self.owner.connect(self.slot).await {
            Ok(c) => {
                self.conn = c;
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
            slots: (0..n).map(|_| Mutex::new(None)).collect(),
            next: AtomicUsize::new(0),
        }
    }

    /// A connection for one operation.
    pub async fn get(&self) -> Result<Conn<'_>, deadpool_redis::PoolError> {
        let slot = self.next.fetch_add(1, Ordering::Relaxed) % self.slots.len();
        let cached = self.slots[slot].lock().ok().and_then(|s| s.clone());
        let conn = match cached {
            Some(c) => c,
            None => self.connect(slot).await?,
        };
        Ok(Conn {
            conn,
            owner: self,
            slot,
        })
    }

    /// A new connection from the pool, cached in `slot`.
    async fn connect(&self, slot: usize) -> Result<MultiplexedConnection, deadpool_redis::PoolError> {
        let obj = self.pool.get().await?;
        let c: MultiplexedConnection = deadpool_redis::Connection::take(obj);
        if let Ok(mut s) = self.slots[slot].lock() {
            *s = Some(c.clone());
        }
        Ok(c)
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
