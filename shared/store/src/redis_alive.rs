//! Heartbeats in Redis: the `alive` sorted set (score = expiry of an instance's last beat),
//! the `instance:` keys beside it, and `alive:epoch`, which says whether Redis lost them.
//!
//! Both the beat and the read take the time from Redis (`TIME` in a script), never from the
//! caller's clock: with heartbeats that live 1.5 s, two hosts whose clocks disagree by a
//! second would otherwise see each other flicker in and out of life.
//!
//! `alive:epoch` is a string with no expiry, written by the first read that finds none. A
//! Redis that restarted without its data (or failed over to a replica that never had it) has
//! lost every heartbeat at once, and the epoch with them: the next read writes a new one, and
//! whoever compares epochs (the workers' [`crate::Live`] readers) knows that missing
//! heartbeats mean nothing until the instances have had time to beat again.

use std::sync::LazyLock;

use llmr_protocol::now_ms;

use crate::redis_store::RedisStore;
use crate::{Alive, InstanceInfo, Live, StoreError, alive_member, split_alive, unavailable};

/// A beat. KEYS: `alive`, the instance's `instance:` key. ARGV: member, ttl (ms), what the
/// instance says of itself ('' for nothing). Expired members are dropped on the way.
static BEAT: LazyLock<redis::Script> = LazyLock::new(|| {
    redis::Script::new(
        r"
local t = redis.call('TIME')
local now = tonumber(t[1]) * 1000 + math.floor(tonumber(t[2]) / 1000)
local ttl = tonumber(ARGV[2])
redis.call('ZREMRANGEBYSCORE', KEYS[1], '-inf', now)
redis.call('ZADD', KEYS[1], now + ttl, ARGV[1])
if ARGV[3] ~= '' then redis.call('SET', KEYS[2], ARGV[3], 'PX', ttl) end",
    )
});

/// The live members and the epoch. KEYS: `alive`, `alive:epoch`. ARGV: a new epoch, written
/// when there is none. Returns {epoch, members}.
static READ: LazyLock<redis::Script> = LazyLock::new(|| {
    redis::Script::new(
        r"
local t = redis.call('TIME')
local now = tonumber(t[1]) * 1000 + math.floor(tonumber(t[2]) / 1000)
local epoch = redis.call('GET', KEYS[2])
if not epoch then
  epoch = ARGV[1]
  redis.call('SET', KEYS[2], epoch)
end
return {epoch, redis.call('ZRANGEBYSCORE', KEYS[1], '(' .. string.format('%d', now), '+inf')}",
    )
});

impl RedisStore {
    pub(crate) async fn heartbeat(
        &self,
        service: &str,
        instance: &str,
        ttl_ms: u64,
        info: Option<&InstanceInfo>,
    ) -> Result<(), StoreError> {
        let member = alive_member(service, instance);
        let json = match info {
            Some(info) => serde_json::to_string(info).map_err(unavailable)?,
            None => String::new(),
        };
        let mut c = self.conn().await?;
        BEAT.key(self.key("alive"))
            .key(self.key(&format!("instance:{member}")))
            .arg(&member)
            .arg(ttl_ms.max(1))
            .arg(json)
            .invoke_async::<()>(&mut c)
            .await
            .map_err(unavailable)
    }

    pub(crate) async fn depart(&self, service: &str, instance: &str) -> Result<(), StoreError> {
        let member = alive_member(service, instance);
        let mut pipe = redis::pipe();
        pipe.cmd("ZREM").arg(self.key("alive")).arg(&member).ignore();
        pipe.cmd("DEL").arg(self.key(&format!("instance:{member}"))).ignore();
        let mut c = self.conn().await?;
        pipe.query_async::<()>(&mut c).await.map_err(unavailable)
    }

    /// What each of `alive` said of itself, in its order (one pipelined GET per instance).
    pub(crate) async fn instance_infos(&self, alive: &[Alive]) -> Result<Vec<Option<InstanceInfo>>, StoreError> {
        if alive.is_empty() {
            return Ok(Vec::new());
        }
        let mut pipe = redis::pipe();
        for a in alive {
            pipe.cmd("GET")
                .arg(self.key(&format!("instance:{}", alive_member(&a.service, &a.instance))));
        }
        let mut c = self.conn().await?;
        let raw: Vec<Option<String>> = pipe.query_async(&mut c).await.map_err(unavailable)?;
        Ok(raw
            .into_iter()
            .map(|r| r.and_then(|j| serde_json::from_str(&j).ok()))
            .collect())
    }

    /// The live instances (sorted) and the heartbeats' epoch, in one round trip.
    pub(crate) async fn live(&self) -> Result<Live, StoreError> {
        // A new epoch only has to differ from every earlier one of this Redis.
        let fresh = format!("{}-{}-{}", now_ms(), std::process::id(), self.key(""));
        let mut c = self.conn().await?;
        let (epoch, members): (String, Vec<String>) = READ
            .key(self.key("alive"))
            .key(self.key("alive:epoch"))
            .arg(fresh)
            .invoke_async(&mut c)
            .await
            .map_err(unavailable)?;
        let mut alive: Vec<Alive> = members.iter().filter_map(|m| split_alive(m)).collect();
        alive.sort_by(|a, b| (&a.service, &a.instance).cmp(&(&b.service, &b.instance)));
        Ok(Live { epoch, alive })
    }
}
