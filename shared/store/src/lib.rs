//! Shared state of the cluster: leases (load), provider catalog and state, live services,
//! and usage counters. Redis for the cluster, memory for `llmrouter all` without Redis;
//! both pass one conformance suite (`tests/conformance.rs`).
//!
//! Keys (under the configured prefix) and what they hold:
//! - `lease:{target}`: sorted set, member = one in-flight call, score = its expiry (ms).
//!   The load of a target is its live members; a dead worker's leases simply expire.
//! - `providers`: hash, provider name → JSON [`ProviderStatus`] (models, state).
//! - `alive`: sorted set, member = `service/instance`, score = expiry of its heartbeat
//!   (Redis's own clock); `alive:epoch`: string, changes when Redis lost the heartbeats
//!   (see [`redis_alive`]). Every instance beats every [`HEARTBEAT_EVERY`] (500 ms), alive
//!   for three periods.
//! - `instance:{service}/{instance}` (no hash tag): string, JSON [`InstanceInfo`] — the
//!   version and start time of a live instance — expiring with its heartbeat.
//! - `lock:{target}`: string, SET NX PX with a token: exclusive targets.
//! - `health:{id}`: hash — circuit state, failure window, open/probe/cooldown times, latency
//!   EWMA — for targets (`t:provider/model`) and keys (`k:provider#index`).
//! - `usage_counts:{key}:{model}:{day}`: six signed 64-bit big-endian counters in one string,
//!   added to with one BITFIELD per request: `requests`, `prompt_tokens`, `completion_tokens`
//!   (as the upstream reported them), `estimated` (requests it reported nothing for),
//!   `est_prompt_tokens` and `est_completion_tokens` (our estimates, kept apart);
//!   `usage_index:{day}` lists the `key|model` pairs of a day. `usage:{key}:{model}:{day}`,
//!   a hash of the same six fields, is what releases before wrote: read and added, never
//!   written.
//!
//! # Layout
//! - [`cache`]: the response cache's key scheme (`cache:{digest}`), entries, lookup and put.
//! - [`governance`]: virtual keys, teams, admission by reservation, spend and the request log.
//! - [`health`]: circuit-breaker and cooldown rules (the Redis scripts do the same).
//! - [`memory`]: the in-memory implementation.
//! - [`peers`]: which services have a live instance, read in the background.
//! - [`redis_alive`]: heartbeats in Redis (on Redis's clock) and their epoch.
//! - [`redis_store`]: the Redis implementation.

pub mod cache;
pub mod governance;
pub mod health;
pub mod memory;
pub mod peers;
pub mod redis_alive;
mod redis_gov;
pub mod redis_store;

pub use health::{Availability, Breaker, Circuit, HealthRecord};

use std::sync::Arc;

use llmr_protocol::ApiError;
use serde::{Deserialize, Serialize};

pub use memory::MemoryStore;
pub use peers::Peers;
pub use redis_store::RedisStore;

#[derive(Debug, thiserror::Error)]
pub enum StoreError {
    #[error("the state store is unreachable: {0}")]
    Unavailable(String),
}

/// Any failure of a Redis call as the store's error.
pub(crate) fn unavailable(e: impl std::fmt::Display) -> StoreError {
    StoreError::Unavailable(e.to_string())
}

impl From<StoreError> for ApiError {
    fn from(e: StoreError) -> ApiError {
        match e {
            StoreError::Unavailable(m) => ApiError::Unavailable {
                message: format!("The state store (Redis) is unreachable: {m}"),
            },
        }
    }
}

/// What the cluster knows of one provider.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ProviderStatus {
    pub name: String,
    /// Models it serves (after allow/deny lists).
    pub models: Vec<String>,
    /// `ok`, or `error` when its model list could not be fetched.
    pub state: String,
    pub error: Option<String>,
    pub updated_ms: u64,
}

/// A service instance seen alive.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Alive {
    pub service: String,
    pub instance: String,
}

/// The live instances at one read, and the epoch of the heartbeats they were read from: a
/// different epoch than at an earlier read means the store lost every heartbeat meanwhile
/// (a Redis restarted without its data), so an instance missing now may well be alive.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Live {
    pub epoch: String,
    pub alive: Vec<Alive>,
}

/// How often every instance heartbeats ([`Store::keep_alive`]); a beat lives three periods.
/// Short, because the workers' notice of a dead caller waits for its beat to lapse
/// (`services/provider-worker/src/callers.rs` has the arithmetic); one small write per
/// instance per period.
pub const HEARTBEAT_EVERY: std::time::Duration = std::time::Duration::from_millis(500);

/// What a live instance says of itself with its heartbeat.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct InstanceInfo {
    /// The llmrouter release it runs.
    pub version: String,
    /// When it started (unix ms).
    pub started_ms: u64,
}

impl InstanceInfo {
    /// This process's release, started now.
    pub fn now() -> InstanceInfo {
        InstanceInfo {
            version: env!("CARGO_PKG_VERSION").to_owned(),
            started_ms: llmr_protocol::now_ms(),
        }
    }
}

/// A live instance and what it said of itself (nothing when it heartbeats without it: an
/// older release, or [`Store::heartbeat`] called directly).
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Instance {
    pub service: String,
    pub instance: String,
    pub version: Option<String>,
    pub started_ms: Option<u64>,
}

impl Instance {
    fn of(alive: Alive, info: Option<InstanceInfo>) -> Instance {
        Instance {
            service: alive.service,
            instance: alive.instance,
            version: info.as_ref().map(|i| i.version.clone()),
            started_ms: info.map(|i| i.started_ms),
        }
    }
}

/// Usage counters of one key, model and day.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize)]
pub struct UsageRecord {
    pub requests: u64,
    /// Tokens as the upstream reported them.
    pub prompt_tokens: u64,
    pub completion_tokens: u64,
    /// Requests whose token counts the upstream did not report...
    pub estimated: u64,
    /// ...and our estimates for them, never mixed with reported counts.
    pub est_prompt_tokens: u64,
    pub est_completion_tokens: u64,
}

/// One row of a day's usage.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct UsageRow {
    pub key: String,
    pub model: String,
    #[serde(flatten)]
    pub usage: UsageRecord,
}

/// Tokens of one request.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct UsageDelta {
    pub prompt: u64,
    pub completion: u64,
    /// True when these are our estimates, not the upstream's numbers.
    pub estimated: bool,
}

/// Everything to write once an attempt is over, in one round trip.
#[derive(Debug, Default)]
pub struct Settle<'a> {
    /// `(target, member)` of a lease to release.
    pub lease: Option<(&'a str, &'a str)>,
    /// `(target, token)` of a lock to release.
    pub lock: Option<(&'a str, &'a str)>,
    /// Health ids that succeeded, with the call's latency (ms) when it counts.
    pub success: Vec<(&'a str, Option<f64>)>,
    /// A health id that failed.
    pub failure: Option<&'a str>,
    /// A health id to cool down until (ms).
    pub cooldown: Option<(&'a str, u64)>,
    /// `(key, model, day, tokens)` to add to usage.
    pub usage: Option<(&'a str, &'a str, &'a str, UsageDelta)>,
}

/// What an attempt asks of the store before it may call its upstream: a lease (or slot, or
/// the exclusive lock) on its target, taken only if — in the same atomic step — none of its
/// `gates` (the target's and key's health ids) is cooling down or has an open circuit.
#[derive(Debug, Clone, Copy)]
pub struct Admit<'a> {
    /// The target (`provider/model`): the lease's or lock's name.
    pub target: &'a str,
    /// Who holds it (the request id).
    pub member: &'a str,
    /// How long it lives unless renewed or released (ms).
    pub ttl_ms: u64,
    /// With a lease: 0 counts load only; n > 0 makes it one of n slots.
    pub max: u32,
    /// Take the target's exclusive lock instead of a lease.
    pub exclusive: bool,
    /// Health ids that must be available, each with whether this attempt holds its probe
    /// (a half-open circuit is then its own to try).
    pub gates: &'a [(&'a str, bool)],
}

/// Why an admission was refused, or that it was not.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Admitted {
    Yes,
    /// Every slot is taken, or the lock is held.
    Busy,
    /// A gate is cooling down (a 429 was recorded).
    Cooling,
    /// A gate's circuit is open (or another request holds its probe).
    Open,
}

impl Admitted {
    fn from_code(code: i64) -> Admitted {
        match code {
            // 2: admitted, and every gate's record was clean.
            1 | 2 => Admitted::Yes,
            -1 => Admitted::Cooling,
            -2 => Admitted::Open,
            _ => Admitted::Busy,
        }
    }
}

/// What routing needs to know of a batch's targets and keys.
#[derive(Debug, Default)]
pub struct RoutingState {
    pub loads: Vec<u64>,
    pub health: Vec<HealthRecord>,
    pub requests_today: Vec<u64>,
}

/// The health id of a target.
pub fn target_id(provider: &str, model: &str) -> String {
    format!("t:{provider}/{model}")
}

/// The health id (and usage name) of a provider's key: `provider#index`, never the key.
pub fn key_name(provider: &str, index: usize) -> String {
    format!("{provider}#{index}")
}

/// The health id of a key.
pub fn key_id(provider: &str, index: usize) -> String {
    format!("k:{provider}#{index}")
}

/// The store, Redis or memory.
#[derive(Clone)]
pub enum Store {
    Memory(Arc<MemoryStore>),
    Redis(Arc<RedisStore>),
}

/// Calls the backend. The Redis arm's future is boxed: it is kilobytes (redis-rs's), and
/// inline it would make every store call that size on the in-memory backend too — futures
/// its callers hold, and copy whenever they are moved.
macro_rules! dispatch {
    ($self:ident, $s:ident => $e:expr) => {
        match $self {
            Store::Memory($s) => $e,
            Store::Redis($s) => Box::pin($e).await,
        }
    };
}

impl Store {
    pub fn memory() -> Store {
        Store::Memory(Arc::new(MemoryStore::default()))
    }

    /// A Redis store on the process's shared connections (see `llmr_bus::RedisConns`).
    pub fn redis(conns: Arc<llmr_bus::RedisConns>, prefix: &str) -> Store {
        Store::Redis(Arc::new(RedisStore::new(conns, prefix)))
    }

    /// Admits an attempt (see [`Admit`]) in one atomic step.
    pub async fn admit(&self, a: &Admit<'_>) -> Result<Admitted, StoreError> {
        Ok(self.admit_seen(a).await?.0)
    }

    /// [`Store::admit`], and whether every gate's health record was clean when admitted
    /// (circuit closed, no failures in its window, no probe): then a success would change
    /// nothing in it but the latency average, and the worker may leave it unwritten.
    pub async fn admit_seen(&self, a: &Admit<'_>) -> Result<(Admitted, bool), StoreError> {
        let code = dispatch!(self, s => s.admit(a))?;
        Ok((Admitted::from_code(code), code == 2))
    }

    /// Extends a held lease or lock to `ttl_ms` from now; false when it is no longer held
    /// (it expired, or was released).
    pub async fn renew(&self, target: &str, member: &str, exclusive: bool, ttl_ms: u64) -> Result<bool, StoreError> {
        dispatch!(self, s => s.renew(target, member, exclusive, ttl_ms))
    }

    /// Takes a lease on `target` for one call, expiring after `ttl_ms` unless released.
    /// With `max > 0` it is a slot: refused (false) when `max` live leases exist.
    pub async fn acquire_lease(&self, target: &str, member: &str, ttl_ms: u64, max: u32) -> Result<bool, StoreError> {
        let a = Admit {
            target,
            member,
            ttl_ms,
            max,
            exclusive: false,
            gates: &[],
        };
        Ok(self.admit(&a).await? == Admitted::Yes)
    }

    /// Takes the exclusive lock of `target` with `token`, expiring after `ttl_ms`.
    pub async fn acquire_lock(&self, target: &str, token: &str, ttl_ms: u64) -> Result<bool, StoreError> {
        let a = Admit {
            target,
            member: token,
            ttl_ms,
            max: 0,
            exclusive: true,
            gates: &[],
        };
        Ok(self.admit(&a).await? == Admitted::Yes)
    }

    /// Releases the lock if `token` still holds it.
    pub async fn release_lock(&self, target: &str, token: &str) -> Result<(), StoreError> {
        dispatch!(self, s => s.release_lock(target, token))
    }

    /// Writes what an attempt left behind (lease or lock, health, usage) in one round trip.
    pub async fn settle(&self, s: &Settle<'_>, breaker: &Breaker) -> Result<(), StoreError> {
        dispatch!(self, st => st.settle(s, breaker))
    }

    /// Loads of `leases`, health of `ids` and today's requests of `pairs`, in one round trip.
    pub async fn routing_state(
        &self,
        leases: &[String],
        ids: &[String],
        pairs: &[(String, String)],
        day: &str,
    ) -> Result<RoutingState, StoreError> {
        dispatch!(self, st => st.routing_state(leases, ids, pairs, day))
    }

    /// Health of targets and keys by id (one round trip).
    pub async fn health(&self, ids: &[String]) -> Result<Vec<HealthRecord>, StoreError> {
        dispatch!(self, s => s.health(ids))
    }

    /// A call succeeded: closes the circuit, feeds the latency average.
    pub async fn record_success(&self, id: &str, latency_ms: Option<f64>) -> Result<(), StoreError> {
        dispatch!(self, s => s.record_success(id, latency_ms))
    }

    /// A call failed: counts toward opening the circuit (or reopens a probing one).
    pub async fn record_failure(&self, id: &str, breaker: &Breaker) -> Result<(), StoreError> {
        dispatch!(self, s => s.record_failure(id, breaker))
    }

    /// Puts a target or key in cooldown until `until_ms` (never shortens one).
    pub async fn cooldown(&self, id: &str, until_ms: u64) -> Result<(), StoreError> {
        dispatch!(self, s => s.cooldown(id, until_ms))
    }

    /// Asks to call a target or key whose circuit may be open: true for closed circuits and
    /// for the one caller that wins the probe of a recovered one.
    pub async fn try_probe(&self, id: &str, probe_ttl_ms: u64) -> Result<bool, StoreError> {
        dispatch!(self, s => s.try_probe(id, probe_ttl_ms))
    }

    pub async fn release_lease(&self, target: &str, member: &str) -> Result<(), StoreError> {
        dispatch!(self, s => s.release_lease(target, member))
    }

    /// Live leases per target, in the order asked (one round trip).
    pub async fn loads(&self, targets: &[String]) -> Result<Vec<u64>, StoreError> {
        dispatch!(self, s => s.loads(targets))
    }

    pub async fn set_provider(&self, status: &ProviderStatus) -> Result<(), StoreError> {
        dispatch!(self, s => s.set_provider(status))
    }

    /// Every provider's last published status, sorted by name.
    pub async fn providers(&self) -> Result<Vec<ProviderStatus>, StoreError> {
        dispatch!(self, s => s.providers())
    }

    /// Records that `service/instance` is alive for `ttl_ms`.
    pub async fn heartbeat(&self, service: &str, instance: &str, ttl_ms: u64) -> Result<(), StoreError> {
        dispatch!(self, s => s.heartbeat(service, instance, ttl_ms, None))
    }

    /// [`Store::heartbeat`] with what the instance says of itself (kept as long as the beat).
    pub async fn heartbeat_as(
        &self,
        service: &str,
        instance: &str,
        ttl_ms: u64,
        info: &InstanceInfo,
    ) -> Result<(), StoreError> {
        dispatch!(self, s => s.heartbeat(service, instance, ttl_ms, Some(info)))
    }

    /// Removes an instance that is shutting down.
    pub async fn depart(&self, service: &str, instance: &str) -> Result<(), StoreError> {
        dispatch!(self, s => s.depart(service, instance))
    }

    /// Instances whose heartbeat has not expired, sorted.
    pub async fn alive(&self) -> Result<Vec<Alive>, StoreError> {
        Ok(self.live().await?.alive)
    }

    /// [`Store::alive`] with the heartbeats' epoch (one round trip).
    pub async fn live(&self) -> Result<Live, StoreError> {
        dispatch!(self, s => s.live())
    }

    /// [`Store::alive`] with each instance's version and start time, when it gave them.
    pub async fn instances(&self) -> Result<Vec<Instance>, StoreError> {
        let alive = self.alive().await?;
        let infos = dispatch!(self, s => s.instance_infos(&alive))?;
        Ok(alive.into_iter().zip(infos).map(|(a, i)| Instance::of(a, i)).collect())
    }

    /// Adds one request's usage to the key's daily counters.
    pub async fn record_usage(&self, key: &str, model: &str, day: &str, delta: UsageDelta) -> Result<(), StoreError> {
        dispatch!(self, s => s.record_usage(key, model, day, delta))
    }

    /// Requests so far on `day` for each `(key, model)` (one round trip).
    pub async fn requests_on(&self, pairs: &[(String, String)], day: &str) -> Result<Vec<u64>, StoreError> {
        dispatch!(self, s => s.requests_on(pairs, day))
    }

    /// Every key and model with usage on `day`, sorted.
    pub async fn usage_day(&self, day: &str) -> Result<Vec<UsageRow>, StoreError> {
        dispatch!(self, s => s.usage_day(day))
    }

    pub async fn usage(&self, key: &str, model: &str, day: &str) -> Result<UsageRecord, StoreError> {
        dispatch!(self, s => s.usage(key, model, day))
    }

    /// Stores a document (a stored response, a conversation) under `key`, expiring after `ttl_ms`.
    pub async fn doc_put(&self, key: &str, value: &str, ttl_ms: u64) -> Result<(), StoreError> {
        dispatch!(self, s => s.doc_put(key, value, ttl_ms))
    }

    /// Puts `value` under `key` (expiring after `ttl_ms`) only if nothing is there: `None` when
    /// it was put, else the value already there (one round trip either way).
    pub async fn doc_claim(&self, key: &str, value: &str, ttl_ms: u64) -> Result<Option<String>, StoreError> {
        dispatch!(self, s => s.doc_claim(key, value, ttl_ms))
    }

    /// The document under `key`, unless missing or expired.
    pub async fn doc_get(&self, key: &str) -> Result<Option<String>, StoreError> {
        dispatch!(self, s => s.doc_get(key))
    }

    /// Deletes documents and logs; how many of `keys` existed.
    pub async fn doc_delete(&self, keys: &[String]) -> Result<u64, StoreError> {
        dispatch!(self, s => s.doc_delete(keys))
    }

    /// Appends `entries` to the log under `key` (a response's stream events) and renews its
    /// expiry to `ttl_ms`; returns the log's length.
    pub async fn log_append(&self, key: &str, entries: &[String], ttl_ms: u64) -> Result<u64, StoreError> {
        dispatch!(self, s => s.log_append(key, entries, ttl_ms))
    }

    /// The entries of the log under `key` from index `from` on.
    pub async fn log_range(&self, key: &str, from: usize) -> Result<Vec<String>, StoreError> {
        dispatch!(self, s => s.log_range(key, from))
    }

    /// A value of namespace `ns` (a tool's `kv` space, MCP sessions).
    pub async fn kv_get(&self, ns: &str, key: &str) -> Result<Option<String>, StoreError> {
        dispatch!(self, s => s.kv_get(ns, key))
    }

    /// A value of namespace `ns`, whose expiry is renewed to `ttl_ms` from now (one round trip).
    pub async fn kv_get_touch(&self, ns: &str, key: &str, ttl_ms: u64) -> Result<Option<String>, StoreError> {
        dispatch!(self, s => s.kv_get_touch(ns, key, ttl_ms))
    }

    /// Sets a value, expiring after `ttl_ms` when given.
    pub async fn kv_set(&self, ns: &str, key: &str, value: &str, ttl_ms: Option<u64>) -> Result<(), StoreError> {
        dispatch!(self, s => s.kv_set(ns, key, value, ttl_ms))
    }

    /// Deletes a value; true when it was there.
    pub async fn kv_delete(&self, ns: &str, key: &str) -> Result<bool, StoreError> {
        dispatch!(self, s => s.kv_delete(ns, key))
    }

    /// The live keys of a namespace, sorted.
    pub async fn kv_keys(&self, ns: &str) -> Result<Vec<String>, StoreError> {
        dispatch!(self, s => s.kv_keys(ns))
    }

    /// Writes a virtual key (new or changed) and bumps the governance version.
    pub async fn gov_put_key(&self, key: &governance::VirtualKey) -> Result<(), StoreError> {
        dispatch!(self, s => s.gov_put_key(key))
    }

    /// Every virtual key (revoked ones too), by id.
    pub async fn gov_keys(&self) -> Result<Vec<governance::VirtualKey>, StoreError> {
        dispatch!(self, s => s.gov_keys())
    }

    /// Writes a team (new or changed) and bumps the governance version.
    pub async fn gov_put_team(&self, team: &governance::Team) -> Result<(), StoreError> {
        dispatch!(self, s => s.gov_put_team(team))
    }

    /// Deletes a team; true when it existed. Bumps the governance version.
    pub async fn gov_delete_team(&self, id: &str) -> Result<bool, StoreError> {
        dispatch!(self, s => s.gov_delete_team(id))
    }

    /// Every team, by id.
    pub async fn gov_teams(&self) -> Result<Vec<governance::Team>, StoreError> {
        dispatch!(self, s => s.gov_teams())
    }

    /// A number that changes whenever a key or team does (gateways poll it to reload).
    pub async fn gov_version(&self) -> Result<u64, StoreError> {
        dispatch!(self, s => s.gov_version())
    }

    /// Admission by reservation (see [`governance`]): one atomic step.
    pub async fn gov_admit(&self, r: &governance::Reservation<'_>) -> Result<governance::Admission, StoreError> {
        dispatch!(self, s => s.gov_admit(r))
    }

    /// Settles a request (see [`governance`]): one atomic step.
    pub async fn gov_settle(&self, st: &governance::Settlement<'_>) -> Result<(), StoreError> {
        dispatch!(self, s => s.gov_settle(st))
    }

    /// A subject's spend, reservations and period now.
    pub async fn gov_standings(
        &self,
        subject: &str,
        period: governance::Period,
        now_ms: u64,
    ) -> Result<governance::Standings, StoreError> {
        dispatch!(self, s => s.gov_standings(subject, period, now_ms))
    }

    /// Spend rows of the days from `from` to `to` (`YYYY-MM-DD`, both included; at most 400 days).
    pub async fn gov_spend(&self, from: &str, to: &str) -> Result<Vec<governance::SpendRow>, StoreError> {
        dispatch!(self, s => s.gov_spend(from, to))
    }

    /// Request records, newest first, older than the cursor `before`, at most `limit`.
    pub async fn gov_requests(
        &self,
        before: Option<&str>,
        limit: usize,
    ) -> Result<Vec<governance::RequestRecord>, StoreError> {
        dispatch!(self, s => s.gov_requests(before, limit))
    }

    pub async fn ping(&self) -> Result<(), StoreError> {
        match self {
            Store::Memory(_) => Ok(()),
            Store::Redis(s) => s.ping().await,
        }
    }
}

/// The `alive` member (and `instance:` key suffix) of an instance.
pub(crate) fn alive_member(service: &str, instance: &str) -> String {
    format!("{service}/{instance}")
}

/// `alive` members are `service/instance`.
pub(crate) fn split_alive(member: &str) -> Option<Alive> {
    let (service, instance) = member.split_once('/')?;
    Some(Alive {
        service: service.to_owned(),
        instance: instance.to_owned(),
    })
}

/// Today's date (UTC) as `YYYY-MM-DD`, the day of usage counters.
pub use llmr_protocol::limits::utc_day;

/// A background task that stops when dropped.
pub struct TaskGuard(tokio::task::AbortHandle);

impl TaskGuard {
    /// Stops the task of `handle` when dropped.
    pub fn new(handle: tokio::task::AbortHandle) -> TaskGuard {
        TaskGuard(handle)
    }
}

impl Drop for TaskGuard {
    fn drop(&mut self) {
        self.0.abort();
    }
}

impl Store {
    /// Heartbeats `service/instance` every `period` (alive for three periods) until the guard
    /// is dropped, with this release's version and the time it was called as the start
    /// ([`InstanceInfo::now`]); a failed beat is logged and retried on the next tick.
    pub fn keep_alive(&self, service: &str, instance: &str, period: std::time::Duration) -> TaskGuard {
        let (store, service, instance) = (self.clone(), service.to_owned(), instance.to_owned());
        let ttl = period.as_millis() as u64 * 3;
        let info = InstanceInfo::now();
        let task = tokio::spawn(async move {
            let mut tick = tokio::time::interval(period);
            loop {
                tick.tick().await;
                if let Err(e) = store.heartbeat_as(&service, &instance, ttl, &info).await {
                    tracing::warn!(error = %e, service, "heartbeat failed");
                }
            }
        });
        TaskGuard(task.abort_handle())
    }
}
