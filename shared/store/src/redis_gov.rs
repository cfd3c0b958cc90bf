//! Governance on Redis: keys and teams as JSON in hashes, admission and settlement as Lua
//! scripts (one atomic step each), spend rows per day, the request log as a capped stream.
//! The semantics are `governance::GovMemory`'s, line for line; the key layout is the one the
//! `governance` module documents.
//!
//! Every script names each key it touches in KEYS, and takes its time from its caller
//! (`now_ms`), never from Redis: both backends then answer alike for the same inputs.
//! Amounts travel as integer strings and stay below 2^53 (Lua numbers are doubles).
//!
//! A subject is two keys: `gov:sub:{subject}`, a hash of its requests (`r:{request}` =
//! `micros:deadline_ms:tokens`, the reservation and the request's tokens in the tpm window)
//! and its running counters (`n` live reservations, `m` their micros, `d` the earliest
//! deadline, `q` requests in the rpm window and `o` the oldest, `t` tokens in the tpm window,
//! `x` the window's oldest entry, `e` the keys' expiry), and `gov:win:{subject}`, a sorted
//! set of its window entries (`q:{request}` rpm, `t:{request}` tpm) by admitted ms. Admission
//! reads the counters in one HMGET and touches the window's head only once its oldest entry
//! has left, the reservations (one scan) only once the earliest deadline has passed; all it
//! writes is one HSET and one ZADD. Settlement is an HMGET and an HSET per subject, INCRBY of
//! the spend, BITFIELD of the spend row (`gov:row:{day}:{key|team|model}`, four i64
//! counters; SADD to `gov:rowidx:{day}` when new) and an XADD and XTRIM of the log.
//!
//! Expiry: a subject's two keys live a window past its latest reservation's deadline and two
//! past its last admission, pushed a window further so that they move at most once a window;
//! a period's spend [`SPEND_GRACE_MS`] past the period's end, set when it begins (`total`
//! never expires). Spend rows and the log (capped by count and age) do not expire.
//!
//! The log's entry ids are `{ms}-{seq}` with `ms` the record's arrival time (raised to the
//! last entry's, ids only grow), so trimming by age (`MINID`, in the XADD) drops what the
//! in-memory log drops. Both trims are exact (no `~`): the log is small enough that exactness
//! costs nothing worth saving.

use std::collections::{BTreeMap, HashMap};

use crate::governance as gv;
use crate::{RedisStore, StoreError, unavailable};

/// A period's spend is kept this long after the period ends.
pub(crate) const SPEND_GRACE_MS: u64 = 7 * 86_400_000;

/// What both scripts share: the window, the caller's clock, batched HDEL and a subject's
/// request fields (`r:{request}` = `micros:deadline:tokens`, micros and deadline empty once
/// the reservation is gone, tokens empty once out of the tpm window, the field deleted when
/// both are). ARGV[2] is `now` in both.
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

-- A request field's value as {m, e, t} (nil where empty); false when absent or unreadable.
local function parse(v)
  if not v then return false end
  local m, e, t = string.match(v, '^(%d*):(%d*):(%d*)$')
  if not m then return false end
  return {m = tonumber(m), e = tonumber(e), t = tonumber(t)}
end

local function num(x)
  if x then return string.format('%d', x) end
  return ''
end

-- A request field's value, or nil when nothing is left of it.
local function unparse(f)
  if not f.m and not f.t then return nil end
  return num(f.m) .. ':' .. num(f.e) .. ':' .. num(f.t)
end
";

/// Admission's reads of a subject: its counters and the request's field in one HMGET, the
/// lapsed reservations (a scan, only once the earliest deadline has passed) and the lapsed
/// window entries (the window's head, only once its oldest entry has left).
const LUA_ADMIT_LOAD: &str = r"
-- Reads more request fields into S.f.
local function fetch(S, fields)
  for i = 1, #fields, 500 do
    local part = {unpack(fields, i, math.min(i + 499, #fields))}
    local vs = redis.call('HMGET', S.key, unpack(part))
    for j = 1, #part do S.f[part[j]] = parse(vs[j]) end
  end
end

-- Drops lapsed reservations: recounts the live ones from every field.
local function purge_res(S)
  local all = redis.call('HGETALL', S.key)
  S.n, S.m, S.d = 0, 0, nil
  for i = 1, #all, 2 do
    local name = all[i]
    if string.sub(name, 1, 2) == 'r:' then
      local f = parse(all[i + 1])
      if f and f.m and f.e <= now then
        f.m, f.e = nil, nil
        S.dirty[name] = true
      elseif f and f.m then
        S.n, S.m, S.d = S.n + 1, S.m + f.m, math.min(S.d or f.e, f.e)
      end
      S.f[name] = f
    end
  end
end

-- Drops the window's entries that left it (`q:` rpm, `t:` tpm, oldest first); finds the
-- oldest left of each kind.
local function purge_win(S)
  local gone, q, start = {}, S.q, 0
  S.x, S.o = nil, nil
  while true do
    local zs = redis.call('ZRANGE', S.win, start, start + 15, 'WITHSCORES')
    for j = 1, #zs, 2 do
      local mbr, sc = zs[j], tonumber(zs[j + 1])
      local rpm = string.sub(mbr, 1, 2) == 'q:'
      if sc <= floor then
        gone[#gone + 1] = mbr
        if rpm then q = q - 1 end
      else
        S.x = S.x or sc
        if rpm and not S.o then S.o = sc end
        if S.o or q == 0 then break end
      end
    end
    if #zs < 32 or (S.x and (S.o or q == 0)) then break end
    start = start + 16
  end
  S.q, S.gone = math.max(q, 0), #gone
  local want = {}
  for _, mbr in ipairs(gone) do
    local name = 'r:' .. string.sub(mbr, 3)
    if string.sub(mbr, 1, 2) == 't:' and S.f[name] == nil then want[#want + 1] = name end
  end
  fetch(S, want)
  for _, mbr in ipairs(gone) do
    local name = 'r:' .. string.sub(mbr, 3)
    local f = S.f[name]
    if string.sub(mbr, 1, 2) == 't:' and f and f.t then
      S.t, f.t = S.t - f.t, nil
      S.dirty[name] = true
    end
  end
end

-- A charge's subject, read and purged as of now.
local function load(i)
  local S = {key = KEYS[(i - 1) * 3 + 1], win = KEYS[(i - 1) * 3 + 2], f = {}, dirty = {}, gone = 0}
  local v = redis.call('HMGET', S.key, reqf, 'n', 'm', 'd', 'q', 'o', 't', 'x', 'e')
  S.f[reqf] = parse(v[1])
  S.n, S.m, S.d = tonumber(v[2]) or 0, tonumber(v[3]) or 0, tonumber(v[4])
  S.q, S.o, S.t = tonumber(v[5]) or 0, tonumber(v[6]), tonumber(v[7]) or 0
  S.x, S.e = tonumber(v[8]), tonumber(v[9])
  if S.d and S.d <= now then purge_res(S) end
  if S.x and S.x <= floor then purge_win(S) end
  return S
end

-- Ms until the window's oldest tokens that leave it free `need` (oldest first).
local function tpm_retry(S, need)
  local zs = redis.call('ZRANGE', S.win, 0, -1, 'WITHSCORES')
  local at, want = {}, {}
  for j = 1, #zs, 2 do
    local sc = tonumber(zs[j + 1])
    if sc > floor and string.sub(zs[j], 1, 2) == 't:' then
      local name = 'r:' .. string.sub(zs[j], 3)
      at[#at + 1] = {name, sc}
      if S.f[name] == nil then want[#want + 1] = name end
    end
  end
  fetch(S, want)
  local freed = 0
  for _, p in ipairs(at) do
    local f = S.f[p[1]]
    freed = freed + ((f and f.t) or 0)
    if freed >= need then return p[2] + W - now end
  end
  return W
end
";

/// Admission's check of one charge (GovMemory::admit's loop body). Refusal codes: 1 requests,
/// 2 tokens, 3 parallel, 4 budget; -1 stands for none.
const LUA_ADMIT_CHECK: &str = r"
local function check(i, S)
  local a = 5 + (i - 1) * 5
  local rpm, tpm = tonumber(ARGV[a + 1]), tonumber(ARGV[a + 2])
  local par, budget, pend = tonumber(ARGV[a + 3]), tonumber(ARGV[a + 4]), tonumber(ARGV[a + 5])
  if par and S.n + 1 > par then return {0, i - 1, 3, 1000} end
  local reset = W
  if S.o then reset = S.o + W - now end
  if rpm and S.q + 1 > rpm then return {0, i - 1, 1, reset} end
  if tpm and S.t + tokens > tpm then
    local retry = -1
    if tokens <= tpm then retry = tpm_retry(S, S.t + tokens - tpm) end
    return {0, i - 1, 2, retry}
  end
  if budget then
    local spent = tonumber(redis.call('GET', KEYS[i * 3]) or '0')
    if spent + S.m + cost > budget then
      local retry = -1
      if pend then retry = pend - now end
      return {0, i - 1, 4, retry}
    end
  end
  local s = {1, -1, -1, -1, -1, -1, -1}
  if rpm then s[2], s[3], s[4] = rpm, rpm - S.q - 1, reset end
  if tpm then s[5], s[6], s[7] = tpm, tpm - S.t - tokens, W end
  return s
end
";

/// Admission's writes for one charge (one ZADD, one HSET, an HDEL and a ZREMRANGEBYRANK when
/// a purge dropped something, the expiries when they must grow), and the script's body.
const LUA_ADMIT_MAIN: &str = r"
local function record(i, S)
  local a = 5 + (i - 1) * 5
  local rpm, tpm = ARGV[a + 1] ~= '', ARGV[a + 2] ~= ''
  local f = S.f[reqf] or {}
  if f.m then S.n, S.m = S.n - 1, S.m - f.m end
  f.m, f.e = cost, expires
  S.n, S.m, S.d = S.n + 1, S.m + cost, math.min(S.d or expires, expires)
  local had_win = S.x ~= nil
  local z, tnew = {}, 0
  if rpm then z[#z + 1], z[#z + 2] = ARGV[2], 'q:' .. req end
  if tpm then
    -- A `t:` member is in the window exactly when its field holds tokens.
    if not f.t then z[#z + 1], z[#z + 2], tnew = ARGV[2], 't:' .. req, 1 end
    S.t, f.t = S.t - (f.t or 0) + tokens, tokens
  end
  if S.gone > 0 then redis.call('ZREMRANGEBYRANK', S.win, 0, S.gone - 1) end
  if #z > 0 then
    local added = redis.call('ZADD', S.win, 'NX', unpack(z))
    if rpm then S.q, S.o = S.q + math.max(added - tnew, 0), math.min(S.o or now, now) end
    S.x = math.min(S.x or now, now)
  end
  S.f[reqf], S.dirty[reqf] = f, true
  -- Both keys live a window past the latest deadline and two past the last admission; the
  -- expiry is pushed a window further, so that it moves at most once a window.
  local need, grow = math.max(expires + W, now + 2 * W), false
  if not S.e or S.e < need then S.e, grow = need + W, true end
  local set = {'n', num(S.n), 'm', num(S.m), 'd', num(S.d), 'q', num(S.q), 'o', num(S.o), 't', num(S.t)}
  set[#set + 1], set[#set + 2], set[#set + 3], set[#set + 4] = 'x', num(S.x), 'e', num(S.e)
  local del = {}
  for name in pairs(S.dirty) do
    local v = unparse(S.f[name])
    if v then set[#set + 1], set[#set + 2] = name, v else del[#del + 1] = name end
  end
  hdel(S.key, del)
  redis.call('HSET', S.key, unpack(set))
  if grow then redis.call('PEXPIRE', S.key, num(S.e - now)) end
  if (grow and S.x) or (#z > 0 and not had_win) then redis.call('PEXPIRE', S.win, num(S.e - now)) end
end

local n = #KEYS / 3
local reply, subjects = {1}, {}
for i = 1, n do
  subjects[i] = load(i)
  local s = check(i, subjects[i])
  if s[1] == 0 then return s end
  for j = 2, 7 do reply[#reply + 1] = s[j] end
end
for i = 1, n do record(i, subjects[i]) end
return reply
";

/// Admission (mirrors `GovMemory::admit`). KEYS, per charge: `sub`, `win` and the spend of
/// the budget's current period. ARGV: request, now, expires, tokens, cost micros; per charge
/// rpm, tpm, max parallel, budget micros, period end ('' = none); last, the window. Reply:
/// `{1, per charge rpm limit, remaining, reset, tpm limit, remaining, reset}` (-1 = no such
/// limit) or `{0, charge index, limit code, retry ms or -1}`.
pub(crate) fn admit_script() -> String {
    let head = "local req, expires, tokens, cost = ARGV[1], tonumber(ARGV[3]), tonumber(ARGV[4]), \
                tonumber(ARGV[5])\nlocal reqf = 'r:' .. req\n";
    [LUA_COMMON, head, LUA_ADMIT_LOAD, LUA_ADMIT_CHECK, LUA_ADMIT_MAIN].concat()
}

/// Settlement of each subject: its reservation and tpm entry (one HMGET, one HSET, an HDEL
/// when nothing is left of the request), its spend (INCRBY; PEXPIRE when it makes the key).
const LUA_SETTLE_SUBJECTS: &str = r"
local req, tok_s, cost_s = ARGV[1], ARGV[3], ARGV[4]
local tokens, cost = tonumber(tok_s), tonumber(cost_s)
local n = (#KEYS - 3) / 2
for i = 1, n do
  local key, spend = KEYS[2 * i - 1], KEYS[2 * i]
  local v = redis.call('HMGET', key, 'r:' .. req, 'n', 'm', 't')
  local f = parse(v[1])
  if f then
    local set = {}
    if f.m then
      set = {'n', num((tonumber(v[2]) or 1) - 1), 'm', num((tonumber(v[3]) or f.m) - f.m)}
      f.m, f.e = nil, nil
    end
    if f.t then
      set[#set + 1], set[#set + 2] = 't', num((tonumber(v[4]) or f.t) - f.t + tokens)
      f.t = tokens
    end
    local nv = unparse(f)
    if nv then
      set[#set + 1], set[#set + 2] = 'r:' .. req, nv
    else
      redis.call('HDEL', key, 'r:' .. req)
    end
    if #set > 0 then redis.call('HSET', key, unpack(set)) end
  end
  if cost > 0 then
    -- A period's expiry is fixed (its end and a grace): set once, when the spend begins.
    local total = redis.call('INCRBY', spend, cost_s)
    if total == cost and ARGV[4 + i] ~= '' then redis.call('PEXPIRE', spend, ARGV[4 + i]) end
  end
end
";

/// Settlement's spend row (BITFIELD of its counters; SADD to the day's index when new) and log
/// record. The log's id is `{arrival ms}-*` in one XADD that
/// also trims by age; only a record that arrived before the last entry reads that entry's
/// time, to take it instead (ids only grow). The count trim follows (exact, both).
const LUA_SETTLE_ROW_LOG: &str = r"
local a = 4 + n
local row, index, log = KEYS[#KEYS - 2], KEYS[#KEYS - 1], KEYS[#KEYS]
if ARGV[a + 1] ~= '' then
  -- The row's four counters in one command; a new row (its first request) joins the index.
  local v = redis.call('BITFIELD', row, 'INCRBY', 'i64', '#0', '1', 'INCRBY', 'i64', '#1', ARGV[a + 2],
    'INCRBY', 'i64', '#2', ARGV[a + 3], 'INCRBY', 'i64', '#3', cost_s)
  if v[1] == 1 then redis.call('SADD', index, ARGV[a + 1]) end
end
if ARGV[a + 4] ~= '' then
  local rec, oldest = ARGV[a + 4], ARGV[a + 7]
  local added = redis.pcall('XADD', log, 'MINID', oldest, ARGV[a + 5] .. '-*', 'r', rec)
  if type(added) == 'table' and added.err then
    local last = redis.call('XREVRANGE', log, '+', '-', 'COUNT', 1)
    -- Trimmed empty, its last id still ahead: let Redis pick a larger one.
    local id = '*'
    if last[1] then id = string.match(last[1][1], '^(%d+)') .. '-*' end
    redis.call('XADD', log, 'MINID', oldest, id, 'r', rec)
  end
  redis.call('XTRIM', log, 'MAXLEN', ARGV[a + 6])
end
return 1
";

/// Settlement (mirrors `GovMemory::settle`). KEYS: per subject `sub` and the spend of its
/// period now; then the row, the day's index of rows and the log. ARGV: request, now, real
/// tokens, real cost micros; per subject its spend's expiry in ms ('' = none); the row's id
/// `key|team|model` ('' = no row), input and output tokens; the record JSON ('' = none), its
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

/// A request field's value, `micros:deadline_ms:tokens` (micros and deadline empty once the
/// reservation is gone): the reservation's micros when it is still live at `now`.
fn live_micros(v: &str, now: u64) -> Option<u64> {
    let mut it = v.split(':').map(|p| p.parse::<u64>().ok());
    let (micros, deadline) = (it.next()??, it.next()??);
    (deadline > now).then_some(micros)
}

/// A packed row's counter `i` (`gov:row:{day}:{id}`, BITFIELD `i64` `#i`, big-endian);
/// bytes past the string's end (never written) count as 0.
fn packed_at(packed: &[u8], i: usize) -> u64 {
    let mut b = [0u8; 8];
    let (from, to) = ((8 * i).min(packed.len()), (8 * i + 8).min(packed.len()));
    b[..to - from].copy_from_slice(&packed[from..to]);
    u64::try_from(i64::from_be_bytes(b)).unwrap_or(0)
}

/// A day's spend rows, sorted by key, team and model, from its packed rows (`key|team|model`,
/// the model may hold `|`).
fn rows_of(day: &str, packed: &[(&str, Vec<u8>)]) -> Vec<gv::SpendRow> {
    let mut rows: BTreeMap<(&str, &str, &str), gv::SpendRow> = BTreeMap::new();
    fn row<'a, 'r>(
        rows: &'r mut BTreeMap<(&'a str, &'a str, &'a str), gv::SpendRow>,
        day: &str,
        (key, team, model): (&'a str, &'a str, &'a str),
    ) -> &'r mut gv::SpendRow {
        rows.entry((key, team, model)).or_insert_with(|| gv::SpendRow {
            day: day.to_owned(),
            key: key.to_owned(),
            team: team.to_owned(),
            model: model.to_owned(),
            ..gv::SpendRow::default()
        })
    }
    for (id, v) in packed {
        let Some((key, rest)) = id.split_once('|') else {
            continue;
        };
        let Some((team, model)) = rest.split_once('|') else {
            continue;
        };
        let r = row(&mut rows, day, (key, team, model));
        for (i, field) in gv::ROW_FIELDS.iter().enumerate() {
            r.add(field, packed_at(v, i));
        }
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
            for k in ["sub", "win"] {
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
            inv.key(self.gov_key(&format!("sub:{s}")));
            let (label, _, end) = period.window(now);
            inv.key(self.gov_key(&format!("spend:{s}:{label}")));
            inv.arg(opt(end.map(|e| e.saturating_sub(now) + SPEND_GRACE_MS)));
        }
        let day = crate::utc_day(now);
        let row = st.row.map(|(key, team, model)| format!("{key}|{team}|{model}"));
        inv.key(self.gov_key(&format!("row:{day}:{}", row.as_deref().unwrap_or_default())));
        inv.key(self.gov_key(&format!("rowidx:{day}")));
        inv.key(self.gov_key("log"));
        inv.arg(row.unwrap_or_default());
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
            .arg(self.gov_key(&format!("sub:{subject}")))
            .query_async(&mut c)
            .await
            .map_err(unavailable)?;
        // Lapsed reservations are not counted; the next admission removes them.
        let live: Vec<u64> = res
            .iter()
            .filter(|(f, _)| f.starts_with("r:"))
            .filter_map(|(_, v)| live_micros(v, now))
            .collect();
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
        // Each day's index of rows, then the rows.
        let mut pipe = redis::pipe();
        for d in &days {
            pipe.cmd("SMEMBERS").arg(self.gov_key(&format!("rowidx:{d}")));
        }
        let mut c = self.conn().await?;
        let found: Vec<Vec<String>> = pipe.query_async(&mut c).await.map_err(unavailable)?;
        let mut pipe = redis::pipe();
        for (d, ids) in days.iter().zip(&found) {
            for id in ids {
                pipe.cmd("GET").arg(self.gov_key(&format!("row:{d}:{id}")));
            }
        }
        let packed: Vec<Option<Vec<u8>>> = if found.iter().all(Vec::is_empty) {
            Vec::new()
        } else {
            pipe.query_async(&mut c).await.map_err(unavailable)?
        };
        let mut packed = packed.into_iter();
        Ok(days
            .iter()
            .zip(&found)
            .flat_map(|(d, ids)| {
                let rows: Vec<(&str, Vec<u8>)> = ids
                    .iter()
                    .map(|id| (id.as_str(), packed.next().flatten().unwrap_or_default()))
                    .collect();
                rows_of(d, &rows)
            })
            .collect())
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
        assert_eq!(live_micros("20000:100:60", 99), Some(20_000));
        assert_eq!(live_micros("20000:100:60", 100), None);
        assert_eq!(live_micros("::60", 0), None, "settled, still in the tpm window");
    }
}
