//! Governance state: virtual keys and teams, their admission (rate windows, parallel slots and
//! budget reservations, all checked and taken in one atomic step), settlement against what a
//! request really cost, spend rows and the capped per-request log.
//!
//! Money is kept in integer micro-dollars (`*_micros`), so sums are exact on both backends.
//!
//! Admission ([`Reservation`]): for every [`Charge`] (a key, then its team) in one atomic step,
//! - reservations whose `expires_ms` passed are dropped (a gateway that died mid-request
//!   frees what it held by its deadline);
//! - `max_parallel`: live reservations + 1 ≤ max;
//! - `rpm`: requests admitted in `(now - 60 s, now]` + 1 ≤ rpm (a sliding log, not clock
//!   minutes); refused with the time until the oldest one leaves the window;
//! - `tpm`: tokens in the window (reserved worst cases, replaced by the real count at
//!   settlement) + this request's worst case ≤ tpm;
//! - budget: spend of the current period + live reservations + this worst case ≤ budget;
//!   refused with the time to the period's end (none for `total`).
//!
//! If every charge passes, each records the reservation, the request in its rpm window and
//! its tokens in its tpm window; otherwise nothing is written. Settlement ([`Settlement`])
//! removes the reservation, puts the real token count in the tpm window (when the entry is
//! still in it), adds the real cost to each subject's spend of the period, adds a spend row
//! (day, key, team, model) and appends the request record to the capped log — one step.
//!
//! Keys (under the store's prefix; Redis): `gov:keys`, `gov:teams` (hash id → JSON),
//! `gov:version` (string, bumped by every change), `gov:sub:{subject}` (hash: `r:{request}`
//! → `micros:deadline_ms:tokens`, the reservation and the tpm window's tokens, and the running
//! counters), `gov:win:{subject}` (sorted set `q:{request}` rpm and `t:{request}` tpm →
//! admitted ms), `gov:spend:{subject}:{period}` (integer micro-dollars), `gov:row:{day}:{key|
//! team|model}` (four i64 counters, BITFIELD) indexed by `gov:rowidx:{day}` (set),
//! `gov:log` (stream, one field `r` = JSON [`RequestRecord`], trimmed by count and age).

use std::collections::BTreeMap;

use serde::{Deserialize, Serialize};

pub use llmr_protocol::limits::{Limits, Period, days_from_civil};

/// The rate window (ms): 60 seconds, sliding.
pub const WINDOW_MS: u64 = 60_000;

/// Micro-dollars of a dollar amount (rounded to the nearest).
pub fn micros(usd: f64) -> u64 {
    (usd.max(0.0) * 1e6).round() as u64
}

/// Dollars of a micro-dollar amount.
pub fn usd(micros: u64) -> f64 {
    micros as f64 / 1e6
}

/// A virtual key. The secret itself is never stored: `hash` is its SHA-256 (hex).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct VirtualKey {
    pub id: String,
    pub name: String,
    /// SHA-256 of the secret, hex.
    pub hash: String,
    /// The secret's first and last characters, for people to tell keys apart (`sk-llmr-ab…yz`).
    #[serde(default)]
    pub hint: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub team: Option<String>,
    /// Models and groups it may use (globs); empty = all.
    #[serde(default)]
    pub models: Vec<String>,
    /// MCP tools it may list and call (globs); empty = all.
    #[serde(default)]
    pub tools: Vec<String>,
    #[serde(flatten)]
    pub limits: Limits,
    /// Unix ms after which it is refused.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub expires_at_ms: Option<u64>,
    #[serde(default)]
    pub metadata: serde_json::Value,
    #[serde(default)]
    pub created_ms: u64,
    /// Set when revoked: it is kept (its spend and log stay readable) but refused.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub revoked_ms: Option<u64>,
    /// Declared in the config file (`[[keys]]`), not through the admin API.
    #[serde(default)]
    pub from_config: bool,
}

impl VirtualKey {
    /// The admission subject of this key.
    pub fn subject(&self) -> String {
        format!("key/{}", self.id)
    }

    /// Whether it may be used at `now_ms`.
    pub fn live(&self, now_ms: u64) -> bool {
        self.revoked_ms.is_none() && self.expires_at_ms.is_none_or(|t| now_ms < t)
    }
}

/// A team: limits and a budget that cap the sum of its keys.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Team {
    pub id: String,
    pub name: String,
    #[serde(default)]
    pub models: Vec<String>,
    #[serde(default)]
    pub tools: Vec<String>,
    #[serde(flatten)]
    pub limits: Limits,
    #[serde(default)]
    pub metadata: serde_json::Value,
    #[serde(default)]
    pub created_ms: u64,
    #[serde(default)]
    pub from_config: bool,
}

impl Team {
    pub fn subject(&self) -> String {
        format!("team/{}", self.id)
    }
}

/// One subject (a key or a team) charged for a request.
#[derive(Debug, Clone, Copy)]
pub struct Charge<'a> {
    /// `key/{id}` or `team/{id}`.
    pub subject: &'a str,
    pub limits: &'a Limits,
}

/// What admission reserves for a request: its worst case, against every charge.
#[derive(Debug, Clone, Copy)]
pub struct Reservation<'a> {
    /// The request id (the reservation's name).
    pub request: &'a str,
    pub now_ms: u64,
    /// When the reservation lapses by itself (the request's deadline).
    pub expires_ms: u64,
    /// Worst-case tokens (estimated input + the output cap).
    pub tokens: u64,
    /// Worst-case cost.
    pub cost_micros: u64,
    pub charges: &'a [Charge<'a>],
}

/// Which limit refused a request.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum Limit {
    Requests,
    Tokens,
    Parallel,
    Budget,
}

/// A rate window as the client is told of it (`x-ratelimit-*`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
pub struct Window {
    pub limit: u64,
    /// What is left after this request.
    pub remaining: u64,
    /// Ms until the window has room for all of `limit` again.
    pub reset_ms: u64,
}

/// A charge's standing after admission.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize)]
pub struct Standing {
    pub requests: Option<Window>,
    pub tokens: Option<Window>,
}

/// The answer of admission.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Admission {
    /// Reserved; one standing per charge, in the order given.
    Admitted(Vec<Standing>),
    /// Nothing was written: `charge` (its index) refused for `limit`; it may be retried
    /// after `retry_after_ms` (none: not within its period, or never).
    Refused {
        charge: usize,
        limit: Limit,
        retry_after_ms: Option<u64>,
    },
}

/// One request as the log keeps it: no prompt or answer text.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct RequestRecord {
    /// The request id.
    pub id: String,
    /// The log's own cursor (set when read back; `before=` takes it).
    #[serde(default, skip_serializing_if = "String::is_empty")]
    pub cursor: String,
    /// Unix ms when the request arrived.
    pub time_ms: u64,
    /// The key id (`default` for `server.token`, empty when no auth is configured).
    pub key: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub team: Option<String>,
    /// The front door: `chat`, `embeddings`, `completions`, `anthropic`, `ollama`, ...
    pub route: String,
    /// The model the client asked for.
    pub model: String,
    /// The group it resolved to, when it was one.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub group: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub provider: Option<String>,
    /// The model the upstream was asked for.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub target_model: Option<String>,
    /// The HTTP status answered.
    pub status: u16,
    /// The error's OpenAI `type` (or `code` for limits), when it failed.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub error_type: Option<String>,
    pub latency_ms: u64,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub ttft_ms: Option<u64>,
    pub input_tokens: u64,
    pub output_tokens: u64,
    #[serde(default)]
    pub cached_tokens: u64,
    pub cost_usd: f64,
    #[serde(default)]
    pub cache_hit: bool,
    pub attempts: u32,
    #[serde(default)]
    pub stream: bool,
}

/// The log's bounds (`[log]`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct LogBounds {
    pub max_records: u64,
    pub max_age_ms: u64,
}

/// What a finished request leaves: its real cost against every subject it charged.
#[derive(Debug, Clone, Copy)]
pub struct Settlement<'a> {
    pub request: &'a str,
    pub now_ms: u64,
    /// `(subject, budget period)` of every subject charged (or merely spent against).
    pub subjects: &'a [(&'a str, Period)],
    /// Real tokens (input + output) and cost; zero for a failed or cancelled request.
    pub tokens: u64,
    pub cost_micros: u64,
    /// The spend row: `(key, team, model)` of the request; none writes no row.
    pub row: Option<(&'a str, &'a str, &'a str)>,
    pub input_tokens: u64,
    pub output_tokens: u64,
    /// The request's log record, and the log's bounds.
    pub record: Option<(&'a RequestRecord, LogBounds)>,
}

/// One spend row: a day, a key, its team and a model.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize)]
pub struct SpendRow {
    pub day: String,
    pub key: String,
    pub team: String,
    pub model: String,
    pub requests: u64,
    pub input_tokens: u64,
    pub output_tokens: u64,
    pub spend_micros: u64,
}

/// A subject's budget standing now.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize)]
pub struct Standings {
    /// Spent in the current period.
    pub spend_micros: u64,
    /// Held by live reservations.
    pub reserved_micros: u64,
    /// Live reservations (requests in flight).
    pub in_flight: u64,
    /// Start of the current period (unix ms).
    pub period_start_ms: u64,
}

/// The fields of a spend row: the counters of a packed `gov:row:` in this order.
pub const ROW_FIELDS: [&str; 4] = ["requests", "input_tokens", "output_tokens", "spend_micros"];

impl SpendRow {
    /// Adds one `field` of [`ROW_FIELDS`].
    pub fn add(&mut self, field: &str, n: u64) {
        match field {
            "requests" => self.requests += n,
            "input_tokens" => self.input_tokens += n,
            "output_tokens" => self.output_tokens += n,
            "spend_micros" => self.spend_micros += n,
            _ => {}
        }
    }
}

/// Days from `from` to `to` (`YYYY-MM-DD`, both included), at most `max` of them.
pub fn days_between(from: &str, to: &str, max: usize) -> Vec<String> {
    let parse = |d: &str| -> Option<i64> {
        let y = d.get(..4)?.parse().ok()?;
        let m = d.get(5..7)?.parse().ok()?;
        let dd = d.get(8..10)?.parse().ok()?;
        Some(days_from_civil(y, m, dd))
    };
    let (Some(a), Some(b)) = (parse(from), parse(to)) else {
        return Vec::new();
    };
    (a..=b)
        .take(max)
        .map(|d| llmr_protocol::limits::utc_day(d.max(0) as u64 * 86_400_000))
        .collect()
}

/// Governance state in memory: the same semantics as the Redis scripts.
#[derive(Default)]
pub(crate) struct GovMemory {
    pub keys: BTreeMap<String, VirtualKey>,
    pub teams: BTreeMap<String, Team>,
    pub version: u64,
    pub subjects: BTreeMap<String, SubjectMem>,
    /// subject → period label → micros
    pub spend: BTreeMap<(String, String), u64>,
    /// (day, key, team, model) → row
    pub rows: BTreeMap<(String, String, String, String), SpendRow>,
    pub log: std::collections::VecDeque<RequestRecord>,
    pub log_seq: u64,
}

/// One subject's windows and reservations, each kept in time order with running sums, so
/// admission costs the same whatever the window holds (expired entries leave from the front).
#[derive(Default)]
pub(crate) struct SubjectMem {
    /// request → (micros, tokens, expires_ms)
    reserved: foldhash::HashMap<String, (u64, u64, u64)>,
    /// `(expires_ms, request)` of every reservation, soonest first.
    expiries: std::collections::BTreeSet<(u64, String)>,
    /// The sum of the reservations' micros.
    reserved_micros: u64,
    /// Admission times in the rpm window, oldest first.
    rpm: std::collections::VecDeque<u64>,
    /// `(admitted ms, request)` in the tpm window, oldest first...
    tpm_order: std::collections::VecDeque<(u64, String)>,
    /// ...each request's tokens (reserved, then real), and their sum.
    tpm_tokens: foldhash::HashMap<String, u64>,
    tpm_sum: u64,
}

/// Inserts `v` keeping `q` sorted (admissions arrive in time order but for a clock's jitter).
fn insert_sorted<T: Ord>(q: &mut std::collections::VecDeque<T>, v: T) {
    if q.back().is_none_or(|b| *b <= v) {
        q.push_back(v);
    } else {
        let at = q.partition_point(|x| *x <= v);
        q.insert(at, v);
    }
}

impl SubjectMem {
    /// Ms until `need` tokens of the window's oldest entries have left it.
    fn tokens_free_in(&self, need: u64, now: u64) -> u64 {
        let mut freed = 0;
        self.tpm_order
            .iter()
            .find(|(_, req)| {
                freed += self.tpm_tokens.get(req).copied().unwrap_or(0);
                freed >= need
            })
            .map_or(WINDOW_MS, |(t, _)| t + WINDOW_MS - now)
    }

    fn purge(&mut self, now: u64) {
        while let Some((exp, req)) = self.expiries.first().cloned()
            && exp <= now
        {
            self.expiries.pop_first();
            if let Some((m, _, _)) = self.reserved.remove(&req) {
                self.reserved_micros -= m;
            }
        }
        let floor = now.saturating_sub(WINDOW_MS);
        while self.rpm.front().is_some_and(|t| *t <= floor) {
            self.rpm.pop_front();
        }
        while let Some((t, _)) = self.tpm_order.front()
            && *t <= floor
        {
            if let Some((_, req)) = self.tpm_order.pop_front() {
                self.tpm_sum -= self.tpm_tokens.remove(&req).unwrap_or(0);
            }
        }
    }

    fn reserve(&mut self, r: &Reservation<'_>, l: &Limits) {
        let req = r.request.to_owned();
        if let Some((m, _, exp)) = self
            .reserved
            .insert(req.clone(), (r.cost_micros, r.tokens, r.expires_ms))
        {
            self.reserved_micros -= m;
            self.expiries.remove(&(exp, req.clone()));
        }
        self.reserved_micros += r.cost_micros;
        self.expiries.insert((r.expires_ms, req.clone()));
        if l.rpm.is_some() {
            insert_sorted(&mut self.rpm, r.now_ms);
        }
        if l.tpm.is_some() {
            self.tpm_sum += r.tokens;
            if let Some(old) = self.tpm_tokens.insert(req.clone(), r.tokens) {
                self.tpm_sum -= old;
            } else {
                insert_sorted(&mut self.tpm_order, (r.now_ms, req));
            }
        }
    }

    fn release(&mut self, request: &str, tokens: u64) {
        if let Some((m, _, exp)) = self.reserved.remove(request) {
            self.reserved_micros -= m;
            self.expiries.remove(&(exp, request.to_owned()));
        }
        if let Some(n) = self.tpm_tokens.get_mut(request) {
            self.tpm_sum = self.tpm_sum - *n + tokens;
            *n = tokens;
        }
    }
}

impl GovMemory {
    pub fn admit(&mut self, r: &Reservation<'_>) -> Admission {
        let now = r.now_ms;
        let mut standings = Vec::with_capacity(r.charges.len());
        for (i, c) in r.charges.iter().enumerate() {
            let s = self.subjects.entry(c.subject.to_owned()).or_default();
            s.purge(now);
            let refuse = |limit, retry_after_ms| Admission::Refused {
                charge: i,
                limit,
                retry_after_ms,
            };
            let l = c.limits;
            if let Some(max) = l.max_parallel
                && s.reserved.len() as u64 + 1 > max
            {
                return refuse(Limit::Parallel, Some(1000));
            }
            let oldest_rpm = s.rpm.front().copied();
            if let Some(rpm) = l.rpm
                && s.rpm.len() as u64 + 1 > rpm
            {
                return refuse(
                    Limit::Requests,
                    Some(oldest_rpm.map_or(WINDOW_MS, |t| t + WINDOW_MS - now)),
                );
            }
            let used = s.tpm_sum;
            if let Some(tpm) = l.tpm
                && used + r.tokens > tpm
            {
                let retry = (r.tokens <= tpm).then(|| s.tokens_free_in(used + r.tokens - tpm, now));
                return refuse(Limit::Tokens, retry);
            }
            if let Some(budget) = l.budget_usd {
                let (label, _, end) = l.budget_period.window(now);
                let spent = self.spend.get(&(c.subject.to_owned(), label)).copied().unwrap_or(0);
                let held = self.subjects.get(c.subject).map_or(0, |s| s.reserved_micros);
                if spent + held + r.cost_micros > micros(budget) {
                    return refuse(Limit::Budget, end.map(|e| e - now));
                }
            }
            let s = self.subjects.entry(c.subject.to_owned()).or_default();
            standings.push(Standing {
                requests: l.rpm.map(|rpm| Window {
                    limit: rpm,
                    remaining: rpm - s.rpm.len() as u64 - 1,
                    reset_ms: oldest_rpm.map_or(WINDOW_MS, |t| t + WINDOW_MS - now),
                }),
                tokens: l.tpm.map(|tpm| Window {
                    limit: tpm,
                    remaining: tpm - used - r.tokens,
                    reset_ms: WINDOW_MS,
                }),
            });
        }
        for c in r.charges {
            self.subjects
                .entry(c.subject.to_owned())
                .or_default()
                .reserve(r, c.limits);
        }
        Admission::Admitted(standings)
    }

    pub fn settle(&mut self, st: &Settlement<'_>) {
        for (subject, period) in st.subjects {
            if let Some(s) = self.subjects.get_mut(*subject) {
                s.release(st.request, st.tokens);
            }
            let (label, _, _) = period.window(st.now_ms);
            *self.spend.entry(((*subject).to_owned(), label)).or_default() += st.cost_micros;
        }
        if let Some((key, team, model)) = st.row {
            let day = llmr_protocol::limits::utc_day(st.now_ms);
            let row = self
                .rows
                .entry((day.clone(), key.to_owned(), team.to_owned(), model.to_owned()))
                .or_insert_with(|| SpendRow {
                    day,
                    key: key.to_owned(),
                    team: team.to_owned(),
                    model: model.to_owned(),
                    ..SpendRow::default()
                });
            row.requests += 1;
            row.input_tokens += st.input_tokens;
            row.output_tokens += st.output_tokens;
            row.spend_micros += st.cost_micros;
        }
        if let Some((record, bounds)) = st.record {
            self.log_seq += 1;
            let mut r = record.clone();
            r.cursor = format!("{}-{}", st.now_ms, self.log_seq);
            self.log.push_back(r);
            let floor = st.now_ms.saturating_sub(bounds.max_age_ms);
            while self.log.len() as u64 > bounds.max_records || self.log.front().is_some_and(|r| r.time_ms < floor) {
                self.log.pop_front();
            }
        }
    }

    pub fn standings(&mut self, subject: &str, period: Period, now: u64) -> Standings {
        let (label, start, _) = period.window(now);
        let spend = self.spend.get(&(subject.to_owned(), label)).copied().unwrap_or(0);
        let s = self.subjects.entry(subject.to_owned()).or_default();
        s.purge(now);
        Standings {
            spend_micros: spend,
            reserved_micros: s.reserved_micros,
            in_flight: s.reserved.len() as u64,
            period_start_ms: start,
        }
    }

    /// Records newest first, older than `before` (a cursor), at most `limit`.
    pub fn requests(&self, before: Option<&str>, limit: usize) -> Vec<RequestRecord> {
        let seq = |c: &str| c.rsplit('-').next().and_then(|s| s.parse::<u64>().ok()).unwrap_or(0);
        let before = before.map(seq);
        self.log
            .iter()
            .rev()
            .filter(|r| before.is_none_or(|b| seq(&r.cursor) < b))
            .take(limit)
            .cloned()
            .collect()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn periods_start_where_the_calendar_says() {
        // 2026-12-07 (a Monday) 14:00 UTC.
        let now = 1_796_652_000_000;
        assert_eq!(llmr_protocol::limits::utc_day(now), "2026-12-07");
        let (label, start, end) = Period::Month.window(now);
        assert_eq!(label, "m2026-12");
        assert_eq!(llmr_protocol::limits::utc_day(start), "2026-12-01");
        assert_eq!(end.map(llmr_protocol::limits::utc_day).as_deref(), Some("2027-01-01"));
        let (label, start, end) = Period::Week.window(now);
        assert_eq!(label, "w2026-12-07");
        assert_eq!(end.map(|e| e - start), Some(7 * 86_400_000));
        let (label, _, end) = Period::Week.window(now + 6 * 86_400_000);
        assert_eq!(
            (label.as_str(), end.map(llmr_protocol::limits::utc_day).as_deref()),
            ("w2026-12-07", Some("2026-12-14"))
        );
        assert_eq!(Period::Day.window(now).0, "d2026-12-07");
        assert_eq!(Period::Total.window(now), ("total".into(), 0, None));
    }

    #[test]
    fn days_between_counts_both_ends() {
        assert_eq!(
            days_between("2026-02-27", "2026-03-01", 10),
            ["2026-02-27", "2026-02-28", "2026-03-01"]
        );
        assert!(days_between("2026-03-01", "2026-02-27", 10).is_empty());
        assert_eq!(days_between("2026-01-01", "2026-12-31", 5).len(), 5);
    }

    #[test]
    fn money_is_kept_in_micro_dollars() {
        assert_eq!(micros(0.02), 20_000);
        assert_eq!(micros(0.5), 500_000);
        assert_eq!(usd(10_000), 0.01);
    }
}
