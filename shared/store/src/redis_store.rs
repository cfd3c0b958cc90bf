//! The Redis store: pooled multiplexed connections (deadpool-redis, shared with the bus),
//! pipelined writes.

use std::sync::Arc;

use llmr_bus::RedisConns;
use llmr_bus::conns::Conn;
use llmr_protocol::now_ms;
use std::collections::HashMap;

use crate::health::{Breaker, Circuit, HealthRecord, LATENCY_ALPHA};
use crate::{ProviderStatus, RoutingState, Settle, StoreError, UsageDelta, UsageRecord, UsageRow, unavailable};

/// Health hashes and locks outlive their last change by this long.
const HEALTH_TTL_MS: u64 = 86_400_000;

/// Admission (mirrors `MemoryStore::admit`). KEYS: the lease set or lock, then the gates'
/// health hashes. ARGV: now, ttl, member, max, exclusive, then per gate whether it is probed.
/// 2 admitted with every gate's record clean (closed, no failures, no probe), 1 admitted,
/// 0 busy, -1 a gate cools down, -2 a gate's circuit is open.
const ADMIT: &str = r"
local now = tonumber(ARGV[1])
local yes = 2
for i = 2, #KEYS do
  local h = redis.call('HMGET', KEYS[i], 'circuit', 'cooldown_until', 'failures', 'probe_until')
  if tonumber(h[2] or '0') > now then return -1 end
  if (h[1] == 'open' or h[1] == 'half_open') and ARGV[4 + i] ~= '1' then return -2 end
  if (h[1] and h[1] ~= 'closed') or tonumber(h[3] or '0') > 0 or tonumber(h[4] or '0') > 0 then yes = 1 end
end
local ttl = tonumber(ARGV[2])
if ARGV[5] == '1' then
  if redis.call('SET', KEYS[1], ARGV[3], 'NX', 'PX', ttl) then return yes end
  return 0
end
-- Expired leases (a dead holder's) are not counted (ZCOUNT from now); they are removed when
-- a slot is counted and otherwise now and then (1 call in 16, by the clock), which bounds the
-- set. The set has no expiry: Redis drops it with its last lease.
local max = tonumber(ARGV[4])
if max > 0 then
  redis.call('ZREMRANGEBYSCORE', KEYS[1], '-inf', now)
  if redis.call('ZCARD', KEYS[1]) >= max then return 0 end
elseif now % 16 == 0 then
  redis.call('ZREMRANGEBYSCORE', KEYS[1], '-inf', now)
end
redis.call('ZADD', KEYS[1], now + ttl, ARGV[3])
return yes";

/// Renewal of a held lease or lock. KEYS: the lease set or lock. ARGV: now, ttl, member, exclusive.
const RENEW: &str = r"
local ttl = tonumber(ARGV[2])
if ARGV[4] == '1' then
  if redis.call('GET', KEYS[1]) == ARGV[3] then redis.call('PEXPIRE', KEYS[1], ttl); return 1 end
  return 0
end
local exp = redis.call('ZSCORE', KEYS[1], ARGV[3])
if not exp or tonumber(exp) <= tonumber(ARGV[1]) then return 0 end
redis.call('ZADD', KEYS[1], 'XX', tonumber(ARGV[1]) + ttl, ARGV[3])
return 1";

const RELEASE_LOCK: &str = r"
if redis.call('GET', KEYS[1]) == ARGV[1] then redis.call('DEL', KEYS[1]) end
return 1";

/// ARGV: now, threshold, window, recovery, ttl. Mirrors `HealthRecord::fail`.
const RECORD_FAILURE: &str = r"
local h = redis.call('HMGET', KEYS[1], 'circuit', 'failures', 'window_start')
local now = tonumber(ARGV[1])
local failures = tonumber(h[2] or '0')
local ws = tonumber(h[3] or '0')
if now - ws > tonumber(ARGV[3]) then failures = 0; ws = now end
failures = failures + 1
if h[1] == 'half_open' or failures >= tonumber(ARGV[2]) then
  redis.call('HSET', KEYS[1], 'circuit', 'open', 'open_until', now + tonumber(ARGV[4]), 'failures', 0, 'window_start', now)
else
  redis.call('HSET', KEYS[1], 'failures', failures, 'window_start', ws)
end
redis.call('PEXPIRE', KEYS[1], ARGV[5])
return 1";

/// ARGV: latency (or -1), alpha, ttl. Mirrors `HealthRecord::succeed`.
const RECORD_SUCCESS: &str = r"
-- The expiry is set when the hash gains fields (it is new); failures and cooldowns push it
-- back, so a healthy target's record lives a day from its creation, then starts afresh.
local lat = tonumber(ARGV[1])
local added
if lat >= 0 then
  local old = tonumber(redis.call('HGET', KEYS[1], 'latency_ms') or '-1')
  if old >= 0 then lat = old + tonumber(ARGV[2]) * (lat - old) end
  added = redis.call('HSET', KEYS[1], 'latency_ms', tostring(lat), 'circuit', 'closed', 'failures', 0, 'probe_until', 0)
else
  added = redis.call('HSET', KEYS[1], 'circuit', 'closed', 'failures', 0, 'probe_until', 0)
end
if added > 0 then redis.call('PEXPIRE', KEYS[1], ARGV[3]) end
return 1";

/// ARGV: until, ttl.
const COOLDOWN: &str = r"
local cur = tonumber(redis.call('HGET', KEYS[1], 'cooldown_until') or '0')
if tonumber(ARGV[1]) > cur then redis.call('HSET', KEYS[1], 'cooldown_until', ARGV[1]) end
redis.call('PEXPIRE', KEYS[1], ARGV[2])
return 1";

/// ARGV: now, probe ttl. Mirrors `HealthRecord::probe`.
const TRY_PROBE: &str = r"
local h = redis.call('HMGET', KEYS[1], 'circuit', 'open_until', 'probe_until')
local now = tonumber(ARGV[1])
if h[1] == 'open' then
  if now < tonumber(h[2] or '0') then return 0 end
  redis.call('HSET', KEYS[1], 'circuit', 'half_open', 'probe_until', now + tonumber(ARGV[2]))
  return 1
elseif h[1] == 'half_open' then
  if now < tonumber(h[3] or '0') then return 0 end
  redis.call('HSET', KEYS[1], 'probe_until', now + tonumber(ARGV[2]))
  return 1
end
return 1";

/// Put a document unless one is there; the one there, or nil. (SET NX GET needs Redis 7.)
const CLAIM: &str = r"
local v = redis.call('GET', KEYS[1])
if v then return v end
redis.call('SET', KEYS[1], ARGV[1], 'PX', ARGV[2])
return false";

pub(crate) struct Scripts {
    claim: redis::Script,
    admit: redis::Script,
    renew: redis::Script,
    release_lock: redis::Script,
    record_failure: redis::Script,
    record_success: redis::Script,
    cooldown: redis::Script,
    try_probe: redis::Script,
    /// Governance admission and settlement (`redis_gov`).
    pub(crate) gov_admit: redis::Script,
    pub(crate) gov_settle: redis::Script,
}

/// Usage counters are kept this long.
const USAGE_TTL_S: u64 = 90 * 86_400;

/// How often one process writes a usage counter's index entry and expiry.
const USAGE_INDEX_EVERY: std::time::Duration = std::time::Duration::from_secs(60);

pub struct RedisStore {
    conns: Arc<RedisConns>,
    prefix: String,
    pub(crate) scripts: Scripts,
    /// When this process last indexed each usage counter.
    indexed: llmr_bus::conns::EveryPerKey,
}

impl RedisStore {
    pub fn new(conns: Arc<RedisConns>, prefix: &str) -> RedisStore {
        let scripts = Scripts {
            claim: redis::Script::new(CLAIM),
            admit: redis::Script::new(ADMIT),
            renew: redis::Script::new(RENEW),
            release_lock: redis::Script::new(RELEASE_LOCK),
            record_failure: redis::Script::new(RECORD_FAILURE),
            record_success: redis::Script::new(RECORD_SUCCESS),
            cooldown: redis::Script::new(COOLDOWN),
            try_probe: redis::Script::new(TRY_PROBE),
            gov_admit: redis::Script::new(&crate::redis_gov::admit_script()),
            gov_settle: redis::Script::new(&crate::redis_gov::settle_script()),
        };
        RedisStore {
            conns,
            prefix: prefix.to_owned(),
            scripts,
            indexed: llmr_bus::conns::EveryPerKey::new(USAGE_INDEX_EVERY),
        }
    }

    pub(crate) fn key(&self, k: &str) -> String {
        format!("{}{}", self.prefix, k)
    }

    pub(crate) async fn conn(&self) -> Result<Conn<'_>, StoreError> {
        self.conns.get().await.map_err(unavailable)
    }

    /// `kv:{ns}:{key}` holds a value; the set `kvkeys:{ns}` names the keys of a namespace.
    pub(crate) async fn doc_put(&self, key: &str, value: &str, ttl_ms: u64) -> Result<(), StoreError> {
        let mut c = self.conn().await?;
        redis::cmd("SET")
            .arg(self.key(key))
            .arg(value)
            .arg("PX")
            .arg(ttl_ms.max(1))
            .query_async::<()>(&mut c)
            .await
            .map_err(unavailable)
    }

    pub(crate) async fn doc_claim(&self, key: &str, value: &str, ttl_ms: u64) -> Result<Option<String>, StoreError> {
        let mut c = self.conn().await?;
        self.scripts
            .claim
            .key(self.key(key))
            .arg(value)
            .arg(ttl_ms.max(1))
            .invoke_async(&mut c)
            .await
            .map_err(unavailable)
    }

    pub(crate) async fn doc_get(&self, key: &str) -> Result<Option<String>, StoreError> {
        let mut c = self.conn().await?;
        redis::cmd("GET")
            .arg(self.key(key))
            .query_async(&mut c)
            .await
            .map_err(unavailable)
    }

    pub(crate) async fn doc_delete(&self, keys: &[String]) -> Result<u64, StoreError> {
        let mut c = self.conn().await?;
        let keys: Vec<String> = keys.iter().map(|k| self.key(k)).collect();
        redis::cmd("DEL")
            .arg(&keys)
            .query_async(&mut c)
            .await
            .map_err(unavailable)
    }

    pub(crate) async fn log_append(&self, key: &str, entries: &[String], ttl_ms: u64) -> Result<u64, StoreError> {
        let mut c = self.conn().await?;
        let k = self.key(key);
        let (n,): (u64,) = redis::pipe()
            .cmd("RPUSH")
            .arg(&k)
            .arg(entries)
            .cmd("PEXPIRE")
            .arg(&k)
            .arg(ttl_ms.max(1))
            .ignore()
            .query_async(&mut c)
            .await
            .map_err(unavailable)?;
        Ok(n)
    }

    pub(crate) async fn log_range(&self, key: &str, from: usize) -> Result<Vec<String>, StoreError> {
        let mut c = self.conn().await?;
        redis::cmd("LRANGE")
            .arg(self.key(key))
            .arg(from)
            .arg(-1)
            .query_async(&mut c)
            .await
            .map_err(unavailable)
    }

    pub(crate) async fn kv_get(&self, ns: &str, key: &str) -> Result<Option<String>, StoreError> {
        let mut c = self.conn().await?;
        redis::cmd("GET")
            .arg(self.key(&format!("kv:{ns}:{key}")))
            .query_async(&mut c)
            .await
            .map_err(unavailable)
    }

    pub(crate) async fn kv_get_touch(&self, ns: &str, key: &str, ttl_ms: u64) -> Result<Option<String>, StoreError> {
        let mut c = self.conn().await?;
        redis::cmd("GETEX")
            .arg(self.key(&format!("kv:{ns}:{key}")))
            .arg("PX")
            .arg(ttl_ms.max(1))
            .query_async(&mut c)
            .await
            .map_err(unavailable)
    }

    pub(crate) async fn kv_set(&self, ns: &str, key: &str, value: &str, ttl_ms: Option<u64>) -> Result<(), StoreError> {
        let mut c = self.conn().await?;
        let mut set = redis::cmd("SET");
        set.arg(self.key(&format!("kv:{ns}:{key}"))).arg(value);
        if let Some(t) = ttl_ms {
            set.arg("PX").arg(t.max(1));
        }
        redis::pipe()
            .add_command(set)
            .ignore()
            .cmd("SADD")
            .arg(self.key(&format!("kvkeys:{ns}")))
            .arg(key)
            .ignore()
            .query_async::<()>(&mut c)
            .await
            .map_err(unavailable)
    }

    pub(crate) async fn kv_delete(&self, ns: &str, key: &str) -> Result<bool, StoreError> {
        let mut c = self.conn().await?;
        let (n, _): (u64, u64) = redis::pipe()
            .cmd("DEL")
            .arg(self.key(&format!("kv:{ns}:{key}")))
            .cmd("SREM")
            .arg(self.key(&format!("kvkeys:{ns}")))
            .arg(key)
            .query_async(&mut c)
            .await
            .map_err(unavailable)?;
        Ok(n > 0)
    }

    pub(crate) async fn kv_keys(&self, ns: &str) -> Result<Vec<String>, StoreError> {
        let mut c = self.conn().await?;
        let mut keys: Vec<String> = redis::cmd("SMEMBERS")
            .arg(self.key(&format!("kvkeys:{ns}")))
            .query_async(&mut c)
            .await
            .map_err(unavailable)?;
        keys.sort();
        if keys.is_empty() {
            return Ok(keys);
        }
        let mut exists = redis::pipe();
        for k in &keys {
            exists.cmd("EXISTS").arg(self.key(&format!("kv:{ns}:{k}")));
        }
        let live: Vec<u64> = exists.query_async(&mut c).await.map_err(unavailable)?;
        let (live_keys, gone): (Vec<_>, Vec<_>) = keys.into_iter().zip(live).partition(|(_, n)| *n > 0);
        if !gone.is_empty() {
            let mut srem = redis::cmd("SREM");
            srem.arg(self.key(&format!("kvkeys:{ns}")));
            for (k, _) in &gone {
                srem.arg(k);
            }
            let _ = srem.query_async::<()>(&mut c).await;
        }
        Ok(live_keys.into_iter().map(|(k, _)| k).collect())
    }

    pub(crate) async fn ping(&self) -> Result<(), StoreError> {
        let mut c = self.conn().await?;
        redis::cmd("PING").query_async::<()>(&mut c).await.map_err(unavailable)
    }

    /// The lease set's or lock's key of a target.
    fn holder_key(&self, target: &str, exclusive: bool) -> String {
        self.key(&if exclusive {
            format!("lock:{target}")
        } else {
            format!("lease:{target}")
        })
    }

    pub(crate) async fn admit(&self, a: &crate::Admit<'_>) -> Result<i64, StoreError> {
        let now = now_ms();
        let mut c = self.conn().await?;
        let mut inv = self.scripts.admit.key(self.holder_key(a.target, a.exclusive));
        for (id, _) in a.gates {
            inv.key(self.key(&format!("health:{id}")));
        }
        inv.arg(now)
            .arg(a.ttl_ms.max(1))
            .arg(a.member)
            .arg(a.max)
            .arg(u8::from(a.exclusive));
        for (_, probe) in a.gates {
            inv.arg(u8::from(*probe));
        }
        inv.invoke_async(&mut c).await.map_err(unavailable)
    }

    pub(crate) async fn renew(
        &self,
        target: &str,
        member: &str,
        exclusive: bool,
        ttl_ms: u64,
    ) -> Result<bool, StoreError> {
        let mut c = self.conn().await?;
        self.scripts
            .renew
            .key(self.holder_key(target, exclusive))
            .arg(now_ms())
            .arg(ttl_ms.max(1))
            .arg(member)
            .arg(u8::from(exclusive))
            .invoke_async(&mut c)
            .await
            .map_err(unavailable)
    }

    pub(crate) async fn release_lock(&self, target: &str, token: &str) -> Result<(), StoreError> {
        let mut c = self.conn().await?;
        self.scripts
            .release_lock
            .key(self.key(&format!("lock:{target}")))
            .arg(token)
            .invoke_async::<()>(&mut c)
            .await
            .map_err(unavailable)
    }

    pub(crate) async fn settle(&self, s: &Settle<'_>, b: &Breaker) -> Result<(), StoreError> {
        let mut pipe = redis::pipe();
        let now = now_ms();
        if let Some((t, m)) = s.lease {
            pipe.cmd("ZREM").arg(self.key(&format!("lease:{t}"))).arg(m).ignore();
        }
        // EVAL, not EVALSHA: a pipeline is not atomic, so a NOSCRIPT (Redis restarted) must
        // not be possible halfway through it. Redis caches the compiled scripts anyway.
        if let Some((t, tok)) = s.lock {
            pipe.cmd("EVAL")
                .arg(RELEASE_LOCK)
                .arg(1)
                .arg(self.key(&format!("lock:{t}")))
                .arg(tok)
                .ignore();
        }
        for (id, lat) in &s.success {
            pipe.cmd("EVAL")
                .arg(RECORD_SUCCESS)
                .arg(1)
                .arg(self.key(&format!("health:{id}")))
                .arg(lat.unwrap_or(-1.0))
                .arg(LATENCY_ALPHA)
                .arg(HEALTH_TTL_MS)
                .ignore();
        }
        if let Some(id) = s.failure {
            pipe.cmd("EVAL")
                .arg(RECORD_FAILURE)
                .arg(1)
                .arg(self.key(&format!("health:{id}")))
                .arg(now)
                .arg(b.failure_threshold)
                .arg(b.failure_window_ms)
                .arg(b.recovery_ms)
                .arg(HEALTH_TTL_MS)
                .ignore();
        }
        if let Some((id, until)) = s.cooldown {
            pipe.cmd("EVAL")
                .arg(COOLDOWN)
                .arg(1)
                .arg(self.key(&format!("health:{id}")))
                .arg(until)
                .arg(HEALTH_TTL_MS)
                .ignore();
        }
        if let Some((k, m, d, delta)) = s.usage {
            self.usage_into(&mut pipe, k, m, d, delta);
        }
        let mut c = self.conn().await?;
        pipe.query_async::<()>(&mut c).await.map_err(unavailable)
    }

    pub(crate) async fn routing_state(
        &self,
        leases: &[String],
        ids: &[String],
        pairs: &[(String, String)],
        day: &str,
    ) -> Result<RoutingState, StoreError> {
        if leases.is_empty() && ids.is_empty() && pairs.is_empty() {
            return Ok(RoutingState::default());
        }
        let now = now_ms();
        let mut pipe = redis::pipe();
        for t in leases {
            pipe.cmd("ZCOUNT")
                .arg(self.key(&format!("lease:{t}")))
                .arg(format!("({now}"))
                .arg("+inf");
        }
        for id in ids {
            pipe.cmd("HGETALL").arg(self.key(&format!("health:{id}")));
        }
        for (k, m) in pairs {
            self.requests_into(&mut pipe, k, m, day);
        }
        let mut c = self.conn().await?;
        let values: Vec<redis::Value> = pipe.query_async(&mut c).await.map_err(unavailable)?;
        let mut it = values.into_iter();
        let mut take = |n: usize| it.by_ref().take(n).collect::<Vec<_>>();
        let loads = take(leases.len())
            .into_iter()
            .map(|v| redis::from_redis_value::<u64>(v).unwrap_or(0))
            .collect();
        let health = take(ids.len())
            .into_iter()
            .map(|v| {
                redis::from_redis_value::<HashMap<String, String>>(v)
                    .map(|h| parse_health(&h))
                    .unwrap_or_default()
            })
            .collect();
        let requests_today = take(pairs.len()).into_iter().map(requests_of).collect();
        Ok(RoutingState {
            loads,
            health,
            requests_today,
        })
    }

    pub(crate) async fn health(&self, ids: &[String]) -> Result<Vec<HealthRecord>, StoreError> {
        if ids.is_empty() {
            return Ok(Vec::new());
        }
        let mut pipe = redis::pipe();
        for id in ids {
            pipe.cmd("HGETALL").arg(self.key(&format!("health:{id}")));
        }
        let mut c = self.conn().await?;
        let rows: Vec<HashMap<String, String>> = pipe.query_async(&mut c).await.map_err(unavailable)?;
        Ok(rows.iter().map(parse_health).collect())
    }

    pub(crate) async fn record_success(&self, id: &str, latency_ms: Option<f64>) -> Result<(), StoreError> {
        let mut c = self.conn().await?;
        self.scripts
            .record_success
            .key(self.key(&format!("health:{id}")))
            .arg(latency_ms.unwrap_or(-1.0))
            .arg(LATENCY_ALPHA)
            .arg(HEALTH_TTL_MS)
            .invoke_async::<()>(&mut c)
            .await
            .map_err(unavailable)
    }

    pub(crate) async fn record_failure(&self, id: &str, b: &Breaker) -> Result<(), StoreError> {
        let mut c = self.conn().await?;
        self.scripts
            .record_failure
            .key(self.key(&format!("health:{id}")))
            .arg(now_ms())
            .arg(b.failure_threshold)
            .arg(b.failure_window_ms)
            .arg(b.recovery_ms)
            .arg(HEALTH_TTL_MS)
            .invoke_async::<()>(&mut c)
            .await
            .map_err(unavailable)
    }

    pub(crate) async fn cooldown(&self, id: &str, until_ms: u64) -> Result<(), StoreError> {
        let mut c = self.conn().await?;
        self.scripts
            .cooldown
            .key(self.key(&format!("health:{id}")))
            .arg(until_ms)
            .arg(HEALTH_TTL_MS)
            .invoke_async::<()>(&mut c)
            .await
            .map_err(unavailable)
    }

    pub(crate) async fn try_probe(&self, id: &str, probe_ttl_ms: u64) -> Result<bool, StoreError> {
        let mut c = self.conn().await?;
        self.scripts
            .try_probe
            .key(self.key(&format!("health:{id}")))
            .arg(now_ms())
            .arg(probe_ttl_ms)
            .invoke_async(&mut c)
            .await
            .map_err(unavailable)
    }

    pub(crate) async fn release_lease(&self, target: &str, member: &str) -> Result<(), StoreError> {
        let mut c = self.conn().await?;
        redis::cmd("ZREM")
            .arg(self.key(&format!("lease:{target}")))
            .arg(member)
            .query_async::<()>(&mut c)
            .await
            .map_err(unavailable)
    }

    pub(crate) async fn loads(&self, targets: &[String]) -> Result<Vec<u64>, StoreError> {
        if targets.is_empty() {
            return Ok(Vec::new());
        }
        let now = now_ms();
        let mut pipe = redis::pipe();
        for t in targets {
            pipe.cmd("ZCOUNT")
                .arg(self.key(&format!("lease:{t}")))
                .arg(format!("({now}"))
                .arg("+inf");
        }
        let mut c = self.conn().await?;
        pipe.query_async(&mut c).await.map_err(unavailable)
    }

    pub(crate) async fn set_provider(&self, status: &ProviderStatus) -> Result<(), StoreError> {
        let json = serde_json::to_string(status).map_err(unavailable)?;
        let mut c = self.conn().await?;
        redis::cmd("HSET")
            .arg(self.key("providers"))
            .arg(&status.name)
            .arg(json)
            .query_async::<()>(&mut c)
            .await
            .map_err(unavailable)
    }

    pub(crate) async fn providers(&self) -> Result<Vec<ProviderStatus>, StoreError> {
        let mut c = self.conn().await?;
        let all: HashMap<String, String> = redis::cmd("HGETALL")
            .arg(self.key("providers"))
            .query_async(&mut c)
            .await
            .map_err(unavailable)?;
        let mut out: Vec<ProviderStatus> = all.values().filter_map(|v| serde_json::from_str(v).ok()).collect();
        out.sort_by(|a, b| a.name.cmp(&b.name));
        Ok(out)
    }

    /// A day's counters of a key and model: the packed string every count goes to, and the
    /// hash that releases before it wrote (read, never written).
    fn usage_keys(&self, key: &str, model: &str, day: &str) -> (String, String) {
        (
            self.key(&format!("usage_counts:{key}:{model}:{day}")),
            self.key(&format!("usage:{key}:{model}:{day}")),
        )
    }

    fn usage_into(&self, pipe: &mut redis::Pipeline, key: &str, model: &str, day: &str, d: UsageDelta) {
        let (k, _) = self.usage_keys(key, model, day);
        let index = self.key(&format!("usage_index:{day}"));
        // One command for the request's counters: BITFIELD adds to several at once.
        let bf = pipe.cmd("BITFIELD").arg(&k);
        let mut add = |slot: Slot, by: u64| {
            bf.arg("INCRBY").arg("i64").arg(slot.at()).arg(by);
        };
        add(Slot::Requests, 1);
        if d.estimated {
            add(Slot::Estimated, 1);
            add(Slot::EstPrompt, d.prompt);
            add(Slot::EstCompletion, d.completion);
        } else {
            add(Slot::Prompt, d.prompt);
            add(Slot::Completion, d.completion);
        }
        bf.ignore();
        // Once a minute per counter from this process, not on every count (a Redis that lost
        // them — restarted without persistence — has them back within a minute).
        if self.indexed.due(&k) {
            pipe.cmd("EXPIRE").arg(&k).arg(USAGE_TTL_S).ignore();
            pipe.cmd("SADD").arg(&index).arg(format!("{key}|{model}")).ignore();
            pipe.cmd("EXPIRE").arg(&index).arg(USAGE_TTL_S).ignore();
        }
    }

    pub(crate) async fn record_usage(
        &self,
        key: &str,
        model: &str,
        day: &str,
        d: UsageDelta,
    ) -> Result<(), StoreError> {
        let mut pipe = redis::pipe();
        self.usage_into(&mut pipe, key, model, day, d);
        let mut conn = self.conn().await?;
        pipe.query_async::<()>(&mut conn).await.map_err(unavailable)
    }

    pub(crate) async fn requests_on(&self, pairs: &[(String, String)], day: &str) -> Result<Vec<u64>, StoreError> {
        if pairs.is_empty() {
            return Ok(Vec::new());
        }
        let mut pipe = redis::pipe();
        for (k, m) in pairs {
            self.requests_into(&mut pipe, k, m, day);
        }
        let mut c = self.conn().await?;
        let v: Vec<redis::Value> = pipe.query_async(&mut c).await.map_err(unavailable)?;
        Ok(v.into_iter().map(requests_of).collect())
    }

    /// Reads a day's request count of a key and model (its first counter's eight bytes).
    fn requests_into(&self, pipe: &mut redis::Pipeline, key: &str, model: &str, day: &str) {
        let (k, _) = self.usage_keys(key, model, day);
        let end = Slot::Requests.offset() + 7;
        pipe.cmd("GETRANGE").arg(k).arg(Slot::Requests.offset()).arg(end);
    }

    pub(crate) async fn usage_day(&self, day: &str) -> Result<Vec<UsageRow>, StoreError> {
        let mut c = self.conn().await?;
        let mut pairs: Vec<String> = redis::cmd("SMEMBERS")
            .arg(self.key(&format!("usage_index:{day}")))
            .query_async(&mut c)
            .await
            .map_err(unavailable)?;
        drop(c);
        pairs.sort();
        let pairs: Vec<(&str, &str)> = pairs.iter().filter_map(|p| p.split_once('|')).collect();
        let usage = self.usage_of(&pairs, day).await?;
        Ok(pairs
            .into_iter()
            .zip(usage)
            .map(|((key, model), usage)| UsageRow {
                key: key.to_owned(),
                model: model.to_owned(),
                usage,
            })
            .collect())
    }

    pub(crate) async fn usage(&self, key: &str, model: &str, day: &str) -> Result<UsageRecord, StoreError> {
        let mut one = self.usage_of(&[(key, model)], day).await?;
        Ok(one.pop().unwrap_or_default())
    }

    /// The counters of each `(key, model)` on `day`, in one round trip: the packed counters
    /// plus what an earlier release wrote to the hash that day.
    async fn usage_of(&self, pairs: &[(&str, &str)], day: &str) -> Result<Vec<UsageRecord>, StoreError> {
        if pairs.is_empty() {
            return Ok(Vec::new());
        }
        let mut pipe = redis::pipe();
        for (key, model) in pairs {
            let (packed, legacy) = self.usage_keys(key, model, day);
            pipe.cmd("GET").arg(packed).cmd("HGETALL").arg(legacy);
        }
        let mut c = self.conn().await?;
        let values: Vec<redis::Value> = pipe.query_async(&mut c).await.map_err(unavailable)?;
        let mut it = values.into_iter();
        Ok(std::iter::from_fn(|| Some((it.next()?, it.next()?)))
            .map(|(packed, legacy)| {
                let packed: Vec<u8> = redis::from_redis_value(packed).unwrap_or_default();
                let h: HashMap<String, u64> = redis::from_redis_value(legacy).unwrap_or_default();
                let p = |s: Slot| slot_of(&packed, s);
                let g = |f: &str| h.get(f).copied().unwrap_or(0);
                UsageRecord {
                    requests: p(Slot::Requests) + g("requests"),
                    prompt_tokens: p(Slot::Prompt) + g("prompt_tokens"),
                    completion_tokens: p(Slot::Completion) + g("completion_tokens"),
                    estimated: p(Slot::Estimated) + g("estimated"),
                    est_prompt_tokens: p(Slot::EstPrompt) + g("est_prompt_tokens"),
                    est_completion_tokens: p(Slot::EstCompletion) + g("est_completion_tokens"),
                }
            })
            .collect())
    }
}

/// The counters of `usage_counts:{key}:{model}:{day}`: signed 64-bit big-endian integers one
/// after another in one string, each at `#slot` for BITFIELD (one command adds to several).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Slot {
    Requests = 0,
    Prompt = 1,
    Completion = 2,
    Estimated = 3,
    EstPrompt = 4,
    EstCompletion = 5,
}

impl Slot {
    /// BITFIELD's offset of the counter: `#n` counts in units of the type's width.
    fn at(self) -> String {
        format!("#{}", self as u8)
    }

    /// The counter's first byte in the string.
    fn offset(self) -> usize {
        8 * self as usize
    }
}

/// A counter's value in the packed string; bytes past its end (never written) count as 0.
fn slot_of(packed: &[u8], s: Slot) -> u64 {
    let mut b = [0u8; 8];
    let from = s.offset().min(packed.len());
    let to = (s.offset() + 8).min(packed.len());
    b[..to - from].copy_from_slice(&packed[from..to]);
    u64::try_from(i64::from_be_bytes(b)).unwrap_or(0)
}

/// A request count read by `requests_into` (GETRANGE of the first counter).
fn requests_of(v: redis::Value) -> u64 {
    let bytes: Vec<u8> = redis::from_redis_value(v).unwrap_or_default();
    slot_of(&bytes, Slot::Requests)
}

fn parse_health(h: &HashMap<String, String>) -> HealthRecord {
    let n = |f: &str| h.get(f).and_then(|v| v.parse::<u64>().ok()).unwrap_or(0);
    HealthRecord {
        circuit: h.get("circuit").map_or(Circuit::Closed, |c| Circuit::parse(c)),
        failures: n("failures") as u32,
        window_start_ms: n("window_start"),
        open_until_ms: n("open_until"),
        probe_until_ms: n("probe_until"),
        cooldown_until_ms: n("cooldown_until"),
        latency_ms: h.get("latency_ms").and_then(|v| v.parse().ok()),
    }
}
