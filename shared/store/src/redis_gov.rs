//! Governance on Redis: keys and teams as JSON in hashes, admission and settlement as Lua
//! scripts (one atomic step each), spend rows per day, the request log as a capped stream.
//! The semantics are `governance::GovMemory`'s, line for line; the key layout is the one the
//! `governance` module documents.
//!
//! Every script names each key it touches in KEYS, and takes its time from its caller
//! (`now_ms`), never from Redis: both backends then answer alike for the same inputs.
//! Amounts travel as integer strings and stay below 2^53 (Lua numbers are doubles).
//!
//! Expiry: a subject's rate windows (`gov:rpm:`, `gov:tpm:`, `gov:tpmv:`, `gov:tpms:`) live
//! two windows after their last admission; its reservations (`gov:res:`) a window past the
//! latest one's deadline; a period's spend [`SPEND_GRACE_MS`] past the period's end (`total`
//! never expires). Spend rows and the log (capped by count and age) do not expire.
//!
//! The log's entry ids are `{ms}-{seq}` with `ms` the record's arrival time (raised to the
//! last entry's, ids only grow), so trimming by age (`XTRIM MINID`) drops what the in-memory
//! log drops. Both trims are exact (no `~`): the log is small enough that exactness costs
//! nothing worth saving.

use std::collections::{BTreeMap, HashMap};

use crate::governance as gv;
use crate::redis_store::unavailable;
use crate::{RedisStore, StoreError};

/// A period's spend is kept this long after the period ends.
pub(crate) const SPEND_GRACE_MS: u64 = 7 * 86_400_000;

/// What both scripts share: the window, the caller's clock, batched HDEL, an expiry that only
/// grows. ARGV[2] is `now` in both.
const LUA_COMMON: &str = r"
local W = tonumber(ARGV[#ARGV])
local now = tonumber(ARGV[2])
local floor = math.max(now - W, 0)

-- HDEL of many fields, in batches (unpack has a limit).
local function hdel(key, fields)
  for i = 1, #fields, 500 do
    redis.call('HDEL', key, unpack(fields, i, math.min(i + 499, #fields)))
  end
end

-- Sets the key's expiry to ms from now unless it already lives longer.
local function extend(key, ms)
  local ttl = redis.call('PTTL', key)
  if ttl < ms then redis.call('PEXPIRE', key, ms) end
end
";

/// Admission's reads: purging a subject and finding when its tpm window has room.
const LUA_ADMIT_PURGE: &str = r"
-- Drops lapsed (or unreadable) reservations; the live ones' count and held micros.
local function purge_res(key)
  local all = redis.call('HGETALL', key)
  local live, held, dead = 0, 0, {}
  for i = 1, #all, 2 do
    local m, _, e = string.match(all[i + 1], '^(%d+):(%d+):(%d+)$')
    if m and tonumber(e) > now then
      live = live + 1
      held = held + tonumber(m)
    else
      dead[#dead + 1] = all[i]
    end
  end
  hdel(key, dead)
  return live, held
end

-- The tpm sum recounted from its entries (when the running sum was lost).
local function recount(vkey, skey)
  local s = 0
  for _, v in ipairs(redis.call('HVALS', vkey)) do s = s + tonumber(v) end
  local ttl = redis.call('PTTL', vkey)
  if ttl <= 0 then ttl = 2 * W end
  redis.call('SET', skey, string.format('%d', s), 'PX', ttl)
  return s
end

-- Drops tpm entries that left the window; the tokens still in it.
local function purge_tpm(zkey, vkey, skey)
  local gone = redis.call('ZRANGEBYSCORE', zkey, '-inf', floor)
  local out = 0
  for i = 1, #gone do out = out + tonumber(redis.call('HGET', vkey, gone[i]) or '0') end
  if #gone > 0 then
    redis.call('ZREMRANGEBYSCORE', zkey, '-inf', floor)
    hdel(vkey, gone)
  end
  if redis.call('HLEN', vkey) == 0 then
    redis.call('DEL', skey)
    return 0
  end
  local sum = redis.call('GET', skey)
  if not sum then return recount(vkey, skey) end
  if out > 0 then return redis.call('DECRBY', skey, out) end
  return tonumber(sum)
end

-- Ms until the window's oldest tokens that leave it free `need` (oldest first).
local function tpm_retry(zkey, vkey, need)
  local tokens = {}
  local all = redis.call('HGETALL', vkey)
  for i = 1, #all, 2 do tokens[all[i]] = tonumber(all[i + 1]) end
  local zs = redis.call('ZRANGE', zkey, 0, -1, 'WITHSCORES')
  local freed = 0
  for i = 1, #zs, 2 do
    freed = freed + (tokens[zs[i]] or 0)
    if freed >= need then return tonumber(zs[i + 1]) + W - now end
  end
  return W
end
";

/// Admission's check of one charge (GovMemory::admit's loop body). Refusal codes: 1 requests,
/// 2 tokens, 3 parallel, 4 budget; -1 stands for none.
const LUA_ADMIT_CHECK: &str = r"
local function check(i)
  local k, a = (i - 1) * 6, 5 + (i - 1) * 5
  local rpm, tpm = tonumber(ARGV[a + 1]), tonumber(ARGV[a + 2])
  local par, budget, pend = tonumber(ARGV[a + 3]), tonumber(ARGV[a + 4]), tonumber(ARGV[a + 5])
  local live, held = purge_res(KEYS[k + 1])
  redis.call('ZREMRANGEBYSCORE', KEYS[k + 2], '-inf', floor)
  local used = purge_tpm(KEYS[k + 3], KEYS[k + 4], KEYS[k + 5])
  if par and live + 1 > par then return {0, i - 1, 3, 1000} end
  local count = redis.call('ZCARD', KEYS[k + 2])
  local oldest = redis.call('ZRANGE', KEYS[k + 2], 0, 0, 'WITHSCORES')
  local reset = W
  if oldest[2] then reset = tonumber(oldest[2]) + W - now end
  if rpm and count + 1 > rpm then return {0, i - 1, 1, reset} end
  if tpm and used + tokens > tpm then
    local retry = -1
    if tokens <= tpm then retry = tpm_retry(KEYS[k + 3], KEYS[k + 4], used + tokens - tpm) end
    return {0, i - 1, 2, retry}
  end
  if budget then
    local spent = tonumber(redis.call('GET', KEYS[k + 6]) or '0')
    if spent + held + cost > budget then
      local retry = -1
      if pend then retry = pend - now end
      return {0, i - 1, 4, retry}
    end
  end
  local s = {1, -1, -1, -1, -1, -1, -1}
  if rpm then s[2], s[3], s[4] = rpm, rpm - count - 1, reset end
  if tpm then s[5], s[6], s[7] = tpm, tpm - used - tokens, W end
  return s
end
";

/// Admission's writes for one charge, and the script's body.
const LUA_ADMIT_MAIN: &str = r"
local function record(i)
  local k, a = (i - 1) * 6, 5 + (i - 1) * 5
  redis.call('HSET', KEYS[k + 1], req, ARGV[5] .. ':' .. ARGV[4] .. ':' .. ARGV[3])
  extend(KEYS[k + 1], math.max(tonumber(ARGV[3]) - now, 0) + W)
  if ARGV[a + 1] ~= '' then
    redis.call('ZADD', KEYS[k + 2], ARGV[2], req)
    redis.call('PEXPIRE', KEYS[k + 2], 2 * W)
  end
  if ARGV[a + 2] ~= '' then
    local old = tonumber(redis.call('HGET', KEYS[k + 4], req) or '0')
    redis.call('ZADD', KEYS[k + 3], ARGV[2], req)
    redis.call('HSET', KEYS[k + 4], req, ARGV[4])
    redis.call('INCRBY', KEYS[k + 5], tokens - old)
    for j = 3, 5 do redis.call('PEXPIRE', KEYS[k + j], 2 * W) end
  end
end

local n = #KEYS / 6
local reply = {1}
for i = 1, n do
  local s = check(i)
  if s[1] == 0 then return s end
  for j = 2, 7 do reply[#reply + 1] = s[j] end
end
for i = 1, n do record(i) end
return reply
";

/// Admission (mirrors `GovMemory::admit`). KEYS, per charge: `res`, `rpm`, `tpm`, `tpmv`,
/// `tpms` and the spend of the budget's current period. ARGV: request, now, expires, tokens,
/// cost micros; per charge rpm, tpm, max parallel, budget micros, period end ('' = none);
/// last, the window. Reply: `{1, per charge rpm limit, remaining, reset, tpm limit,
/// remaining, reset}` (-1 = no such limit) or `{0, charge index, limit code, retry ms or -1}`.
pub(crate) fn admit_script() -> String {
    let head = "local req, tokens, cost = ARGV[1], tonumber(ARGV[4]), tonumber(ARGV[5])\n";
    [LUA_COMMON, head, LUA_ADMIT_PURGE, LUA_ADMIT_CHECK, LUA_ADMIT_MAIN].concat()
}

/// Settlement of each subject: its reservation, its tpm entry, its spend.
const LUA_SETTLE_SUBJECTS: &str = r"
local req, tok_s, cost_s = ARGV[1], ARGV[3], ARGV[4]
local tokens, cost = tonumber(tok_s), tonumber(cost_s)
local n = (#KEYS - 2) / 4
for i = 1, n do
  local k = (i - 1) * 4
  redis.call('HDEL', KEYS[k + 1], req)
  local old = redis.call('HGET', KEYS[k + 2], req)
  if old then
    redis.call('HSET', KEYS[k + 2], req, tok_s)
    -- A lost running sum is recounted by the next admission, not revived here.
    if redis.call('EXISTS', KEYS[k + 3]) == 1 then
      redis.call('INCRBY', KEYS[k + 3], tokens - tonumber(old))
    end
  end
  if cost > 0 then
    redis.call('INCRBY', KEYS[k + 4], cost_s)
    if ARGV[4 + i] ~= '' then redis.call('PEXPIRE', KEYS[k + 4], ARGV[4 + i]) end
  end
end
";

/// Settlement's spend row and log record.
const LUA_SETTLE_ROW_LOG: &str = r"
local a = 4 + n
local rows, log = KEYS[#KEYS - 1], KEYS[#KEYS]
if ARGV[a + 1] ~= '' then
  local p = ARGV[a + 1]
  redis.call('HINCRBY', rows, p .. 'requests', 1)
  redis.call('HINCRBY', rows, p .. 'input_tokens', ARGV[a + 2])
  redis.call('HINCRBY', rows, p .. 'output_tokens', ARGV[a + 3])
  redis.call('HINCRBY', rows, p .. 'spend_micros', cost_s)
end
if ARGV[a + 4] ~= '' then
  -- The id's time is the record's arrival, raised to the last entry's (ids only grow).
  local ms = ARGV[a + 5]
  local last = redis.call('XREVRANGE', log, '+', '-', 'COUNT', 1)
  if last[1] then
    local lm = string.match(last[1][1], '^(%d+)')
    if lm and tonumber(lm) > tonumber(ms) then ms = lm end
  end
  local added = redis.pcall('XADD', log, ms .. '-*', 'r', ARGV[a + 4])
  if type(added) == 'table' and added.err then
    -- Trimmed empty, its last id still ahead: let Redis pick a larger one.
    redis.call('XADD', log, '*', 'r', ARGV[a + 4])
  end
  redis.call('XTRIM', log, 'MAXLEN', ARGV[a + 6])
  redis.call('XTRIM', log, 'MINID', ARGV[a + 7])
end
return 1
";

/// Settlement (mirrors `GovMemory::settle`). KEYS: per subject `res`, `tpmv`, `tpms` and the
/// spend of its period now; then the day's rows and the log. ARGV: request, now, real tokens,
/// real cost micros; per subject its spend's expiry in ms ('' = none); the row's field prefix
/// `key|team|model|` ('' = no row), input and output tokens; the record JSON ('' = none), its
/// arrival ms, the log's max records and its oldest ms kept; last, the window.
pub(crate) fn settle_script() -> String {
    [LUA_COMMON, LUA_SETTLE_SUBJECTS, LUA_SETTLE_ROW_LOG].concat()
}

/// An optional number as a script argument: '' for none.
fn opt(v: Option<u64>) -> String {
    v.map(|v| v.to_string()).unwrap_or_default()
}

/// The limit of a refusal code (the admission script's).
fn limit_of(code: i64) -> Option<gv::Limit> {
    Some(match code {
        1 => gv::Limit::Requests,
        2 => gv::Limit::Tokens,
        3 => gv::Limit::Parallel,
        4 => gv::Limit::Budget,
        _ => return None,
    })
}

/// A window of the admission reply: `(limit, remaining, reset)`, limit -1 when there is none.
fn window_of(limit: i64, remaining: i64, reset: i64) -> Option<gv::Window> {
    Some(gv::Window {
        limit: u64::try_from(limit).ok()?,
        remaining: u64::try_from(remaining).unwrap_or(0),
        reset_ms: u64::try_from(reset).unwrap_or(0),
    })
}

/// Decodes the admission script's reply.
fn decode_admission(reply: &[i64]) -> Result<gv::Admission, StoreError> {
    let bad = || unavailable(format!("unexpected governance admission reply {reply:?}"));
    match reply {
        [1, rest @ ..] if rest.len() % 6 == 0 => Ok(gv::Admission::Admitted(
            rest.chunks_exact(6)
                .map(|w| gv::Standing {
                    requests: window_of(w[0], w[1], w[2]),
                    tokens: window_of(w[3], w[4], w[5]),
                })
                .collect(),
        )),
        [0, charge, code, retry] => Ok(gv::Admission::Refused {
            charge: usize::try_from(*charge).map_err(|_| bad())?,
            limit: limit_of(*code).ok_or_else(bad)?,
            retry_after_ms: u64::try_from(*retry).ok(),
        }),
        _ => Err(bad()),
    }
}

/// A reservation's value, `micros:tokens:expires_ms`: its micros when still live at `now`.
fn live_micros(v: &str, now: u64) -> Option<u64> {
    let mut it = v.split(':').map(|p| p.parse::<u64>().ok());
    let (micros, _tokens, expires) = (it.next()??, it.next()??, it.next()??);
    (expires > now).then_some(micros)
}

/// A `gov:rows:{day}` field, `key|team|model|field`: the model may hold `|`, ids may not.
fn split_row_field(f: &str) -> Option<(&str, &str, &str, &str)> {
    let (key, rest) = f.split_once('|')?;
    let (team, rest) = rest.split_once('|')?;
    let (model, field) = rest.rsplit_once('|')?;
    gv::ROW_FIELDS.contains(&field).then_some((key, team, model, field))
}

/// A day's spend rows from its hash, sorted by key, team and model.
fn rows_of(day: &str, h: &HashMap<String, String>) -> Vec<gv::SpendRow> {
    let mut rows: BTreeMap<(&str, &str, &str), gv::SpendRow> = BTreeMap::new();
    for (f, v) in h {
        let (Some((key, team, model, field)), Ok(n)) = (split_row_field(f), v.parse::<i64>()) else {
            continue;
        };
        rows.entry((key, team, model))
            .or_insert_with(|| gv::SpendRow {
                day: day.to_owned(),
                key: key.to_owned(),
                team: team.to_owned(),
                model: model.to_owned(),
                ..gv::SpendRow::default()
            })
            .add(field, u64::try_from(n).unwrap_or(0));
    }
    rows.into_values().collect()
}

/// A log cursor (a stream id, `ms-seq`) as the exclusive start of a reverse read; none when
/// it is not one, or nothing can be older.
fn before_bound(cursor: &str) -> Option<String> {
    let (ms, seq) = cursor.split_once('-')?;
    let (ms, seq) = (ms.parse::<u64>().ok()?, seq.parse::<u64>().ok()?);
    (ms > 0 || seq > 0).then(|| format!("({ms}-{seq}"))
}

/// A log entry as a record, its cursor set to the entry's id.
fn record_of(entry: redis::streams::StreamId) -> Option<gv::RequestRecord> {
    let json: String = redis::from_redis_value(entry.map.get("r")?.clone()).ok()?;
    let mut r: gv::RequestRecord = serde_json::from_str(&json).ok()?;
    r.cursor = entry.id;
    Some(r)
}

impl RedisStore {
    /// A governance key: `gov:{k}` under the prefix.
    fn gov_key(&self, k: &str) -> String {
        self.key(&format!("gov:{k}"))
    }

    /// Writes `json` under `id` in the hash `gov:{hash}` and bumps the version, atomically.
    async fn gov_put(&self, hash: &str, id: &str, json: String) -> Result<(), StoreError> {
        let mut c = self.conn().await?;
        redis::pipe()
            .atomic()
            .cmd("HSET")
            .arg(self.gov_key(hash))
            .arg(id)
            .arg(json)
            .ignore()
            .cmd("INCR")
            .arg(self.gov_key("version"))
            .ignore()
            .query_async::<()>(&mut c)
            .await
            .map_err(unavailable)
    }

    /// Every value of the hash `gov:{hash}`, by id; entries that do not parse are skipped.
    async fn gov_all<T: serde::de::DeserializeOwned>(&self, hash: &str) -> Result<Vec<T>, StoreError> {
        let mut c = self.conn().await?;
        let all: BTreeMap<String, String> = redis::cmd("HGETALL")
            .arg(self.gov_key(hash))
            .query_async(&mut c)
            .await
            .map_err(unavailable)?;
        Ok(all
            .iter()
            .filter_map(|(id, v)| match serde_json::from_str(v) {
                Ok(t) => Some(t),
                Err(e) => {
                    tracing::warn!(hash, id = %id, error = %e, "unreadable governance entry skipped");
                    None
                }
            })
            .collect())
    }

    pub(crate) async fn gov_put_key(&self, key: &gv::VirtualKey) -> Result<(), StoreError> {
        let json = serde_json::to_string(key).map_err(unavailable)?;
        self.gov_put("keys", &key.id, json).await
    }

    pub(crate) async fn gov_keys(&self) -> Result<Vec<gv::VirtualKey>, StoreError> {
        self.gov_all("keys").await
    }

    pub(crate) async fn gov_put_team(&self, team: &gv::Team) -> Result<(), StoreError> {
        let json = serde_json::to_string(team).map_err(unavailable)?;
        self.gov_put("teams", &team.id, json).await
    }

    pub(crate) async fn gov_delete_team(&self, id: &str) -> Result<bool, StoreError> {
        let mut c = self.conn().await?;
        let (removed, _): (u64, u64) = redis::pipe()
            .atomic()
            .cmd("HDEL")
            .arg(self.gov_key("teams"))
            .arg(id)
            .cmd("INCR")
            .arg(self.gov_key("version"))
            .query_async(&mut c)
            .await
            .map_err(unavailable)?;
        Ok(removed > 0)
    }

    pub(crate) async fn gov_teams(&self) -> Result<Vec<gv::Team>, StoreError> {
        self.gov_all("teams").await
    }

    pub(crate) async fn gov_version(&self) -> Result<u64, StoreError> {
        let mut c = self.conn().await?;
        let v: Option<u64> = redis::cmd("GET")
            .arg(self.gov_key("version"))
            .query_async(&mut c)
            .await
            .map_err(unavailable)?;
        Ok(v.unwrap_or(0))
    }

    pub(crate) async fn gov_admit(&self, r: &gv::Reservation<'_>) -> Result<gv::Admission, StoreError> {
        let mut inv = self.scripts.gov_admit.prepare_invoke();
        inv.arg(r.request)
            .arg(r.now_ms)
            .arg(r.expires_ms)
            .arg(r.tokens)
            .arg(r.cost_micros);
        for c in r.charges {
            let s = c.subject;
            for k in ["res", "rpm", "tpm", "tpmv", "tpms"] {
                inv.key(self.gov_key(&format!("{k}:{s}")));
            }
            let l = c.limits;
            let (label, _, end) = l.budget_period.window(r.now_ms);
            inv.key(self.gov_key(&format!("spend:{s}:{label}")));
            inv.arg(opt(l.rpm))
                .arg(opt(l.tpm))
                .arg(opt(l.max_parallel))
                .arg(opt(l.budget_usd.map(gv::micros)))
                .arg(opt(end));
        }
        inv.arg(gv::WINDOW_MS);
        let mut c = self.conn().await?;
        let reply: Vec<i64> = inv.invoke_async(&mut c).await.map_err(unavailable)?;
        decode_admission(&reply)
    }

    pub(crate) async fn gov_settle(&self, st: &gv::Settlement<'_>) -> Result<(), StoreError> {
        let now = st.now_ms;
        let mut inv = self.scripts.gov_settle.prepare_invoke();
        inv.arg(st.request).arg(now).arg(st.tokens).arg(st.cost_micros);
        for (s, period) in st.subjects {
            for k in ["res", "tpmv", "tpms"] {
                inv.key(self.gov_key(&format!("{k}:{s}")));
            }
            let (label, _, end) = period.window(now);
            inv.key(self.gov_key(&format!("spend:{s}:{label}")));
            inv.arg(opt(end.map(|e| e.saturating_sub(now) + SPEND_GRACE_MS)));
        }
        inv.key(self.gov_key(&format!("rows:{}", crate::utc_day(now))));
        inv.key(self.gov_key("log"));
        match st.row {
            Some((key, team, model)) => inv.arg(format!("{key}|{team}|{model}|")),
            None => inv.arg(""),
        };
        inv.arg(st.input_tokens).arg(st.output_tokens);
        match st.record {
            Some((record, bounds)) => {
                let json = serde_json::to_string(record).map_err(unavailable)?;
                inv.arg(json)
                    .arg(record.time_ms)
                    .arg(bounds.max_records)
                    .arg(now.saturating_sub(bounds.max_age_ms))
            }
            None => inv.arg("").arg(0).arg(0).arg(0),
        };
        inv.arg(gv::WINDOW_MS);
        let mut c = self.conn().await?;
        inv.invoke_async::<()>(&mut c).await.map_err(unavailable)
    }

    pub(crate) async fn gov_standings(
        &self,
        subject: &str,
        period: gv::Period,
        now: u64,
    ) -> Result<gv::Standings, StoreError> {
        let (label, start, _) = period.window(now);
        let mut c = self.conn().await?;
        let (spend, res): (Option<u64>, HashMap<String, String>) = redis::pipe()
            .cmd("GET")
            .arg(self.gov_key(&format!("spend:{subject}:{label}")))
            .cmd("HGETALL")
            .arg(self.gov_key(&format!("res:{subject}")))
            .query_async(&mut c)
            .await
            .map_err(unavailable)?;
        // Lapsed reservations are not counted; the next admission removes them.
        let live: Vec<u64> = res.values().filter_map(|v| live_micros(v, now)).collect();
        Ok(gv::Standings {
            spend_micros: spend.unwrap_or(0),
            reserved_micros: live.iter().sum(),
            in_flight: live.len() as u64,
            period_start_ms: start,
        })
    }

    pub(crate) async fn gov_spend(&self, from: &str, to: &str) -> Result<Vec<gv::SpendRow>, StoreError> {
        let days = gv::days_between(from, to, 400);
        if days.is_empty() {
            return Ok(Vec::new());
        }
        let mut pipe = redis::pipe();
        for d in &days {
            pipe.cmd("HGETALL").arg(self.gov_key(&format!("rows:{d}")));
        }
        let mut c = self.conn().await?;
        let hashes: Vec<HashMap<String, String>> = pipe.query_async(&mut c).await.map_err(unavailable)?;
        Ok(days.iter().zip(&hashes).flat_map(|(d, h)| rows_of(d, h)).collect())
    }

    pub(crate) async fn gov_requests(
        &self,
        before: Option<&str>,
        limit: usize,
    ) -> Result<Vec<gv::RequestRecord>, StoreError> {
        let start = match before {
            None => "+".to_owned(),
            Some(c) => match before_bound(c) {
                Some(b) => b,
                None => return Ok(Vec::new()),
            },
        };
        if limit == 0 {
            return Ok(Vec::new());
        }
        let mut c = self.conn().await?;
        let reply: redis::streams::StreamRangeReply = redis::cmd("XREVRANGE")
            .arg(self.gov_key("log"))
            .arg(start)
            .arg("-")
            .arg("COUNT")
            .arg(limit)
            .query_async(&mut c)
            .await
            .map_err(unavailable)?;
        Ok(reply.ids.into_iter().filter_map(record_of).collect())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn row_fields_split_around_a_model_with_bars() {
        assert_eq!(
            split_row_field("k1|t1|org|model|v2|spend_micros"),
            Some(("k1", "t1", "org|model|v2", "spend_micros"))
        );
        assert_eq!(split_row_field("k1||m|requests"), Some(("k1", "", "m", "requests")));
        assert_eq!(split_row_field("k1|t1|m|bogus"), None);
        assert_eq!(split_row_field("k1|requests"), None);
    }

    #[test]
    fn admission_replies_decode() {
        assert_eq!(
            decode_admission(&[1, 3, 1, 60_000, -1, -1, -1]).ok(),
            Some(gv::Admission::Admitted(vec![gv::Standing {
                requests: Some(gv::Window {
                    limit: 3,
                    remaining: 1,
                    reset_ms: 60_000
                }),
                tokens: None,
            }]))
        );
        assert_eq!(
            decode_admission(&[0, 1, 2, -1]).ok(),
            Some(gv::Admission::Refused {
                charge: 1,
                limit: gv::Limit::Tokens,
                retry_after_ms: None
            })
        );
        assert!(decode_admission(&[1, 3]).is_err());
        assert!(decode_admission(&[0, 0, 9, 1]).is_err());
    }

    #[test]
    fn cursors_bound_reverse_reads() {
        assert_eq!(before_bound("1700000000000-3").as_deref(), Some("(1700000000000-3"));
        assert_eq!(before_bound("0-0"), None);
        assert_eq!(before_bound("nonsense"), None);
        assert_eq!(live_micros("20000:60:100", 99), Some(20_000));
        assert_eq!(live_micros("20000:60:100", 100), None);
    }
}
