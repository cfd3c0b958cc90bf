//! The Redis streams bus.
//!
//! Keys (under the configured prefix): the work streams by name (`requests`, `jobs:{pool}`)
//! with consumer groups; `replies:{instance}` (capped with MAXLEN ~, expiring once its reader
//! is gone; up to four frames of one request per entry, so a whole answer is one entry);
//! `first:{request id}` (the first-frame marker, SET NX with a TTL); the pub/sub channel
//! `cancel`. Acked entries are deleted from their stream in bulk (XTRIM MINID past what
//! every group is done with, once a second per stream and process), so streams hold live
//! work and at most about a second of finished work. Blocking reads (XREADGROUP, the reply
//! reader, SUBSCRIBE) use dedicated connections; everything else goes through the
//! deadpool-redis pool, pipelined.

use std::collections::HashMap;
use std::time::Duration;

use deadpool_redis::{Pool, PoolConfig, Runtime, Timeouts};
use futures_util::StreamExt;
use llmr_protocol::frame::{BATCH_MAX, batch_from_fields, batch_to_fields};
use llmr_protocol::{Envelope, Frame};
use redis::streams::{StreamAutoClaimReply, StreamId, StreamReadReply};
use redis::{AsyncConnectionConfig, Value};
use uuid::Uuid;

use crate::conns::{Conn, EveryPerKey, RedisConns};
use crate::{BusError, CancelSink, Delivery, ReplySink, Subscription};

/// Frames kept at most in one reply stream (approximate trim).
const REPLY_MAXLEN: usize = 100_000;
/// Publishes an envelope and acks the delivery it came from, atomically. KEYS: the stream
/// published to, the stream acked; ARGV: the group, the entry, then the envelope's fields.
const FORWARD_ONE: &str = r"
redis.call('XADD', KEYS[1], '*', unpack(ARGV, 3))
return redis.call('XACK', KEYS[2], ARGV[1], ARGV[2])";

/// How often one process trims a work stream of acked entries.
const TRIM_EVERY: Duration = Duration::from_secs(1);
/// A reply stream whose reader is gone expires after this long.
const REPLY_TTL_MS: u64 = 300_000;
/// A first-frame marker is deleted when its job finishes; this only bounds a leftover.
const FIRST_FRAME_TTL_MS: u64 = 600_000;
/// Deletes the entries of a stream that every group is done with: those before the oldest
/// one still pending or not yet delivered in any group (XTRIM MINID). A stream with no group
/// keeps everything (its entries wait for the first group).
const TRIM_DONE: &str = r"
local groups = redis.call('XINFO', 'GROUPS', KEYS[1])
if #groups == 0 then return 0 end
local floor = nil
local function older(a, b)
  local am, as = string.match(a, '^(%d+)-(%d+)$')
  local bm, bs = string.match(b, '^(%d+)-(%d+)$')
  if #am ~= #bm then return #am < #bm end
  if am ~= bm then return am < bm end
  return tonumber(as) < tonumber(bs)
end
for _, g in ipairs(groups) do
  local f = {}
  for i = 1, #g, 2 do f[g[i]] = g[i + 1] end
  local keep
  if tonumber(f['pending']) > 0 then
    keep = redis.call('XPENDING', KEYS[1], f['name'])[2]
  else
    local ms, seq = string.match(f['last-delivered-id'], '^(%d+)-(%d+)$')
    keep = ms .. '-' .. string.format('%d', tonumber(seq) + 1)
  end
  if floor == nil or older(keep, floor) then floor = keep end
end
return redis.call('XTRIM', KEYS[1], 'MINID', floor)";

/// How long a failed reader waits before reconnecting.
const RECONNECT_BACKOFF: Duration = Duration::from_millis(200);
const RECONNECT_BACKOFF_MAX: Duration = Duration::from_secs(5);

pub struct RedisBus {
    client: redis::Client,
    conns: std::sync::Arc<RedisConns>,
    prefix: String,
    /// Each reply stream's expiry is pushed back at most every tenth of it.
    refreshed: EveryPerKey,
    /// Each work stream is trimmed of acked entries at most once a second.
    trimmed: EveryPerKey,
    forward_one: redis::Script,
}

fn unavailable(e: impl std::fmt::Display) -> BusError {
    BusError::Unavailable(e.to_string())
}

/// The pooled (multiplexed, pipelined) Redis connections of one process, shared by the bus
/// and the store. Getting a connection gives up after 500 ms, so an unreachable Redis is
/// reported promptly.
pub fn redis_pool(url: &str, pool_size: usize) -> Result<Pool, BusError> {
    let mut cfg = deadpool_redis::Config::from_url(url);
    cfg.pool = Some(PoolConfig {
        max_size: pool_size,
        timeouts: Timeouts {
            wait: Some(Duration::from_millis(500)),
            create: Some(Duration::from_millis(500)),
            recycle: Some(Duration::from_millis(500)),
        },
        ..PoolConfig::default()
    });
    cfg.create_pool(Some(Runtime::Tokio1)).map_err(unavailable)
}

impl RedisBus {
    pub fn new(url: &str, prefix: &str, conns: std::sync::Arc<RedisConns>) -> Result<RedisBus, BusError> {
        let client = redis::Client::open(url).map_err(unavailable)?;
        Ok(RedisBus {
            client,
            conns,
            prefix: prefix.to_owned(),
            refreshed: EveryPerKey::new(Duration::from_millis(REPLY_TTL_MS / 10)),
            trimmed: EveryPerKey::new(TRIM_EVERY),
            forward_one: redis::Script::new(FORWARD_ONE),
        })
    }

    fn key(&self, name: &str) -> String {
        format!("{}{}", self.prefix, name)
    }

    fn reply_key(&self, instance: &str) -> String {
        format!("{}{}", self.prefix, llmr_protocol::streams::replies(instance))
    }

    async fn conn(&self) -> Result<Conn<'_>, BusError> {
        self.conns.get().await.map_err(unavailable)
    }

    /// A dedicated connection for blocking commands: no response timeout.
    async fn blocking_conn(&self) -> Result<redis::aio::MultiplexedConnection, BusError> {
        let cfg = AsyncConnectionConfig::new()
            .set_response_timeout(None)
            .set_connection_timeout(Some(Duration::from_secs(1)));
        self.client
            .get_multiplexed_async_connection_with_config(&cfg)
            .await
            .map_err(unavailable)
    }

    pub(crate) async fn ping(&self) -> Result<(), BusError> {
        let mut c = self.conn().await?;
        redis::cmd("PING").query_async::<()>(&mut c).await.map_err(unavailable)
    }

    fn xadd_envelope(&self, pipe: &mut redis::Pipeline, stream: &str, env: &Envelope) {
        let c = pipe.cmd("XADD").arg(self.key(stream)).arg("*");
        for (k, v) in env.to_fields() {
            c.arg(k).arg(v.as_ref());
        }
        c.ignore();
    }

    pub(crate) async fn publish(&self, stream: &str, env: &Envelope) -> Result<(), BusError> {
        let mut pipe = redis::pipe();
        self.xadd_envelope(&mut pipe, stream, env);
        let mut c = self.conn().await?;
        pipe.query_async::<()>(&mut c).await.map_err(unavailable)
    }

    /// Makes `group` on `stream` (and the stream) unless it exists. A timeout or a dropped
    /// connection is tried again, a few times over about 3 s: a service starting while Redis
    /// is slow (a fork for a snapshot, a busy host) waits for it instead of failing to start.
    pub(crate) async fn create_group(&self, stream: &str, group: &str) -> Result<(), BusError> {
        let mut pause = Duration::from_millis(100);
        loop {
            match self.try_create_group(stream, group).await {
                Err(e) if pause <= Duration::from_millis(1600) && (e.is_timeout() || e.is_io_error()) => {
                    tracing::warn!(error = %e, stream, group, "Redis is slow to make a consumer group; trying again");
                    tokio::time::sleep(pause).await;
                    pause *= 2;
                }
                Err(e) => return Err(unavailable(e)),
                Ok(()) => return Ok(()),
            }
        }
    }

    async fn try_create_group(&self, stream: &str, group: &str) -> Result<(), redis::RedisError> {
        let mut c = self
            .conn()
            .await
            .map_err(|e| redis::RedisError::from((redis::ErrorKind::Io, "no connection", e.to_string())))?;
        let r = redis::cmd("XGROUP")
            .arg("CREATE")
            .arg(self.key(stream))
            .arg(group)
            .arg("0")
            .arg("MKSTREAM")
            .query_async::<()>(&mut c)
            .await;
        match r {
            Err(e) if e.code() == Some("BUSYGROUP") => Ok(()),
            r => r,
        }
    }

    pub(crate) async fn read(
        &self,
        conn: &mut Option<redis::aio::MultiplexedConnection>,
        stream: &str,
        group: &str,
        consumer: &str,
        count: usize,
        block: Duration,
    ) -> Result<Vec<Delivery>, BusError> {
        if conn.is_none() {
            *conn = Some(self.blocking_conn().await?);
        }
        let Some(c) = conn.as_mut() else {
            return Ok(Vec::new());
        };
        let key = self.key(stream);
        let r = redis::cmd("XREADGROUP")
            .arg("GROUP")
            .arg(group)
            .arg(consumer)
            .arg("COUNT")
            .arg(count)
            .arg("BLOCK")
            .arg(block.as_millis() as u64)
            .arg("STREAMS")
            .arg(&key)
            .arg(">")
            .query_async::<Option<StreamReadReply>>(c)
            .await;
        let reply = match r {
            Ok(r) => r,
            Err(e) => {
                *conn = None;
                // The group vanishes if the stream key was deleted (e.g. Redis restarted
                // without persistence): recreate it and read again next time.
                if e.code() == Some("NOGROUP") {
                    self.create_group(stream, group).await?;
                    return Ok(Vec::new());
                }
                return Err(unavailable(e));
            }
        };
        let ids: Vec<StreamId> = reply
            .map(|r| r.keys.into_iter().flat_map(|k| k.ids).collect())
            .unwrap_or_default();
        Ok(self.decode_entries(stream, group, ids, false).await)
    }

    /// Decodes entries; undecodable ones are acked and dropped with a warning.
    async fn decode_entries(&self, stream: &str, group: &str, ids: Vec<StreamId>, reclaimed: bool) -> Vec<Delivery> {
        let mut out = Vec::with_capacity(ids.len());
        let mut poison = Vec::new();
        for sid in ids {
            match Envelope::from_fields(|k| field(&sid.map, k)) {
                Ok(envelope) => out.push(Delivery {
                    entry: sid.id,
                    envelope,
                    reclaimed,
                }),
                Err(e) => {
                    tracing::warn!(stream, entry = %sid.id, error = %e, "dropping an undecodable stream entry");
                    poison.push(sid.id);
                }
            }
        }
        if !poison.is_empty()
            && let Err(e) = self.ack(stream, group, &poison).await
        {
            tracing::warn!(error = %e, "could not ack undecodable entries");
        }
        out
    }

    pub(crate) async fn reclaim(
        &self,
        stream: &str,
        group: &str,
        consumer: &str,
        min_idle: Duration,
        count: usize,
        cursor: &mut String,
    ) -> Result<Vec<Delivery>, BusError> {
        let mut c = self.conn().await?;
        let reply: StreamAutoClaimReply = redis::cmd("XAUTOCLAIM")
            .arg(self.key(stream))
            .arg(group)
            .arg(consumer)
            .arg(min_idle.as_millis() as u64)
            .arg(cursor.as_str())
            .arg("COUNT")
            .arg(count)
            .query_async(&mut c)
            .await
            .map_err(unavailable)?;
        *cursor = reply.next_stream_id;
        if !reply.deleted_ids.is_empty() {
            self.ack(stream, group, &reply.deleted_ids).await?;
        }
        Ok(self.decode_entries(stream, group, reply.claimed, true).await)
    }

    /// XACK, and now and then (once a second per stream and process) the trim of what every
    /// group is done with: acked entries are deleted in bulk instead of one XDEL per ack.
    fn ack_into(&self, pipe: &mut redis::Pipeline, stream: &str, group: &str, entries: &[impl redis::ToRedisArgs]) {
        let key = self.key(stream);
        pipe.cmd("XACK").arg(&key).arg(group).arg(entries).ignore();
        self.trim_into(pipe, &key);
    }

    /// The trim of stream `key` (see [`TRIM_DONE`]), when it is due.
    fn trim_into(&self, pipe: &mut redis::Pipeline, key: &str) {
        if self.trimmed.due(key) {
            // EVAL, not EVALSHA: a NOSCRIPT (Redis restarted) must not fail the pipeline.
            pipe.cmd("EVAL").arg(TRIM_DONE).arg(1).arg(key).ignore();
        }
    }

    pub(crate) async fn ack(&self, stream: &str, group: &str, entries: &[String]) -> Result<(), BusError> {
        let mut pipe = redis::pipe();
        self.ack_into(&mut pipe, stream, group, entries);
        let mut c = self.conn().await?;
        pipe.query_async::<()>(&mut c).await.map_err(unavailable)
    }

    pub(crate) async fn touch(
        &self,
        stream: &str,
        group: &str,
        consumer: &str,
        entries: &[String],
    ) -> Result<(), BusError> {
        let mut c = self.conn().await?;
        redis::cmd("XCLAIM")
            .arg(self.key(stream))
            .arg(group)
            .arg(consumer)
            .arg(0)
            .arg(entries)
            .arg("JUSTID")
            .query_async::<Value>(&mut c)
            .await
            .map(|_| ())
            .map_err(unavailable)
    }

    pub(crate) async fn forward_many(
        &self,
        stream: &str,
        group: &str,
        items: &[(String, String, Envelope)],
    ) -> Result<(), BusError> {
        if let [(entry, to, env)] = items {
            // One delivery (the usual case): a script, one command fewer than MULTI/EXEC.
            let mut inv = self.forward_one.key(self.key(to));
            inv.key(self.key(stream)).arg(group).arg(entry);
            for (k, v) in env.to_fields() {
                inv.arg(k).arg(v.as_ref());
            }
            let mut c = self.conn().await?;
            inv.invoke_async::<()>(&mut c).await.map_err(unavailable)?;
            let mut trim = redis::pipe();
            self.trim_into(&mut trim, &self.key(stream));
            if !trim.is_empty() {
                trim.query_async::<()>(&mut c).await.map_err(unavailable)?;
            }
            return Ok(());
        }
        let mut pipe = redis::pipe();
        pipe.atomic();
        for (_, to, env) in items {
            self.xadd_envelope(&mut pipe, to, env);
        }
        let entries: Vec<&str> = items.iter().map(|(e, _, _)| e.as_str()).collect();
        self.ack_into(&mut pipe, stream, group, &entries);
        let mut c = self.conn().await?;
        pipe.query_async::<()>(&mut c).await.map_err(unavailable)
    }

    pub(crate) async fn finish_many(&self, stream: &str, group: &str, jobs: &[(String, Uuid)]) -> Result<(), BusError> {
        let mut pipe = redis::pipe();
        let entries: Vec<&str> = jobs.iter().map(|(e, _)| e.as_str()).collect();
        self.ack_into(&mut pipe, stream, group, &entries);
        let keys: Vec<String> = jobs.iter().map(|(_, id)| self.key(&format!("first:{id}"))).collect();
        pipe.cmd("DEL").arg(&keys).ignore();
        let mut c = self.conn().await?;
        pipe.query_async::<()>(&mut c).await.map_err(unavailable)
    }

    pub(crate) async fn pending(&self, stream: &str, group: &str) -> Result<u64, BusError> {
        let mut c = self.conn().await?;
        let v: Value = redis::cmd("XPENDING")
            .arg(self.key(stream))
            .arg(group)
            .query_async(&mut c)
            .await
            .map_err(unavailable)?;
        Ok(match v {
            Value::Array(items) => match items.first() {
                Some(Value::Int(n)) => *n as u64,
                _ => 0,
            },
            _ => 0,
        })
    }

    /// XINFO GROUPS: the group's lag (entries not yet delivered; Redis >= 7) and XLEN.
    pub(crate) async fn backlog(&self, stream: &str, group: &str) -> Result<crate::Backlog, BusError> {
        let mut c = self.conn().await?;
        let key = self.key(stream);
        // Each answer apart: XINFO fails on a stream nobody made (XLEN says 0 for it).
        let mut answers: Vec<redis::RedisResult<Value>> = redis::pipe()
            .ignore_errors()
            .cmd("XINFO")
            .arg("GROUPS")
            .arg(&key)
            .cmd("XLEN")
            .arg(&key)
            .query_async(&mut c)
            .await
            .map_err(unavailable)?;
        let length: u64 = match answers.pop() {
            Some(Ok(v)) => redis::from_redis_value(v).map_err(unavailable)?,
            Some(Err(e)) => return Err(unavailable(e)),
            None => return Err(unavailable("XLEN gave no answer")),
        };
        let groups = match answers.pop() {
            Some(Ok(v)) => v,
            // No stream: nothing waits in it, for any group.
            Some(Err(_)) | None if length == 0 => {
                return Ok(crate::Backlog {
                    lag: Some(0),
                    ..crate::Backlog::default()
                });
            }
            Some(Err(e)) => return Err(unavailable(e)),
            None => return Err(unavailable("XINFO gave no answer")),
        };
        let mut out = crate::Backlog {
            length,
            ..crate::Backlog::default()
        };
        // Each group is a flat [name, value, …] list (RESP2) or a map (RESP3).
        let fields = |g: &Value| -> Vec<(String, Value)> {
            match g {
                Value::Array(items) => items
                    .chunks(2)
                    .filter_map(|kv| match kv {
                        [k, v] => redis::from_redis_value::<String>(k.clone())
                            .ok()
                            .map(|k| (k, v.clone())),
                        _ => None,
                    })
                    .collect(),
                Value::Map(kvs) => kvs
                    .iter()
                    .filter_map(|(k, v)| {
                        redis::from_redis_value::<String>(k.clone())
                            .ok()
                            .map(|k| (k, v.clone()))
                    })
                    .collect(),
                _ => Vec::new(),
            }
        };
        if let Value::Array(gs) = groups {
            for g in &gs {
                let f = fields(g);
                let get = |name: &str| f.iter().find(|(k, _)| k == name).map(|(_, v)| v.clone());
                let named = get("name").and_then(|v| redis::from_redis_value::<String>(v).ok());
                if named.as_deref() == Some(group) {
                    out.pending = get("pending")
                        .and_then(|v| redis::from_redis_value(v).ok())
                        .unwrap_or(0);
                    out.lag = get("lag").and_then(|v| redis::from_redis_value(v).ok());
                    out.read = get("entries-read").and_then(|v| redis::from_redis_value(v).ok());
                }
            }
        }
        Ok(out)
    }

    /// Sends frames of one request: one stream entry per [`BATCH_MAX`] frames, the
    /// first-frame marker when [`crate::marks_first`] says so, and the stream's expiry pushed
    /// back at most every tenth of it (per process and stream).
    pub(crate) async fn reply(&self, reply_to: &str, frames: &[Frame]) -> Result<(), BusError> {
        let key = self.reply_key(reply_to);
        let mut pipe = redis::pipe();
        if let Some(f) = frames.first()
            && crate::marks_first(frames)
        {
            pipe.cmd("SET")
                .arg(self.key(&format!("first:{}", f.id)))
                .arg(1)
                .arg("NX")
                .arg("PX")
                .arg(FIRST_FRAME_TTL_MS)
                .ignore();
        }
        for batch in frames.chunks(BATCH_MAX) {
            let c = pipe
                .cmd("XADD")
                .arg(&key)
                .arg("MAXLEN")
                .arg("~")
                .arg(REPLY_MAXLEN)
                .arg("*");
            for (k, v) in batch_to_fields(batch) {
                c.arg(k).arg(v.as_ref());
            }
            c.ignore();
        }
        if self.refreshed.due(&key) {
            pipe.cmd("PEXPIRE").arg(&key).arg(REPLY_TTL_MS).ignore();
        }
        let mut c = self.conn().await?;
        pipe.query_async::<()>(&mut c).await.map_err(unavailable)
    }

    pub(crate) async fn first_frame_sent(&self, id: Uuid) -> Result<bool, BusError> {
        let mut c = self.conn().await?;
        redis::cmd("EXISTS")
            .arg(self.key(&format!("first:{id}")))
            .query_async::<bool>(&mut c)
            .await
            .map_err(unavailable)
    }

    pub(crate) fn subscribe_replies(&self, instance: &str, sink: ReplySink) -> Subscription {
        let key = self.reply_key(instance);
        let client = self.client.clone();
        let task = tokio::spawn(async move {
            let mut last = "0-0".to_string();
            let mut backoff = RECONNECT_BACKOFF;
            loop {
                match read_replies(&client, &key, &mut last, &sink).await {
                    Ok(()) => {}
                    Err(e) => {
                        tracing::warn!(error = %e, stream = %key, "reply reader lost Redis; reconnecting");
                        tokio::time::sleep(backoff).await;
                        backoff = (backoff * 2).min(RECONNECT_BACKOFF_MAX);
                        continue;
                    }
                }
                backoff = RECONNECT_BACKOFF;
            }
        });
        let abort = task.abort_handle();
        Subscription::new(move || abort.abort())
    }

    pub(crate) async fn cancel(&self, id: Uuid) -> Result<(), BusError> {
        let mut c = self.conn().await?;
        redis::cmd("PUBLISH")
            .arg(self.key("cancel"))
            .arg(id.to_string())
            .query_async::<()>(&mut c)
            .await
            .map_err(unavailable)
    }

    pub(crate) fn subscribe_cancels(&self, sink: CancelSink) -> Subscription {
        let channel = self.key("cancel");
        let client = self.client.clone();
        let task = tokio::spawn(async move {
            let mut backoff = RECONNECT_BACKOFF;
            loop {
                let r: redis::RedisResult<()> = async {
                    let mut ps = client.get_async_pubsub().await?;
                    ps.subscribe(&channel).await?;
                    let mut msgs = ps.on_message();
                    while let Some(m) = msgs.next().await {
                        let Ok(text) = m.get_payload::<String>() else {
                            continue;
                        };
                        if let Ok(id) = Uuid::parse_str(&text) {
                            sink(id);
                        }
                    }
                    Ok(())
                }
                .await;
                if let Err(e) = r {
                    tracing::warn!(error = %e, "cancel subscriber lost Redis; reconnecting");
                }
                tokio::time::sleep(backoff).await;
                backoff = (backoff * 2).min(RECONNECT_BACKOFF_MAX);
            }
        });
        let abort = task.abort_handle();
        Subscription::new(move || abort.abort())
    }
}

/// Reads one instance's reply stream until the connection fails.
async fn read_replies(
    client: &redis::Client,
    key: &str,
    last: &mut String,
    sink: &ReplySink,
) -> redis::RedisResult<()> {
    let cfg = AsyncConnectionConfig::new()
        .set_response_timeout(None)
        .set_connection_timeout(Some(Duration::from_secs(1)));
    let mut c = client.get_multiplexed_async_connection_with_config(&cfg).await?;
    loop {
        let r: Option<StreamReadReply> = redis::cmd("XREAD")
            .arg("COUNT")
            .arg(1024)
            .arg("BLOCK")
            .arg(2000)
            .arg("STREAMS")
            .arg(key)
            .arg(last.as_str())
            .query_async(&mut c)
            .await?;
        let Some(r) = r else { continue };
        for sid in r.keys.into_iter().flat_map(|k| k.ids) {
            match batch_from_fields(|k| field(&sid.map, k)) {
                Ok(frames) => frames.into_iter().for_each(|f| sink(f)),
                Err(e) => tracing::warn!(error = %e, "dropping an undecodable reply entry"),
            }
            *last = sid.id;
        }
    }
}

fn field<'a>(map: &'a HashMap<String, Value>, k: &str) -> Option<&'a [u8]> {
    match map.get(k)? {
        Value::BulkString(b) => Some(b.as_slice()),
        Value::SimpleString(s) => Some(s.as_bytes()),
        _ => None,
    }
}
