//! The in-memory store: the same semantics as Redis, behind one mutex.

use std::collections::BTreeMap;

use foldhash::HashMap;
use std::sync::{Mutex, MutexGuard};

use llmr_protocol::now_ms;

use crate::governance as gv;
use crate::health::{Breaker, HealthRecord};
use crate::{
    Alive, InstanceInfo, ProviderStatus, RoutingState, Settle, StoreError, UsageDelta, UsageRecord, UsageRow,
    alive_member, split_alive,
};

#[derive(Default)]
pub struct MemoryStore {
    state: Mutex<State>,
    /// (namespace, key) → (value, expiry ms or 0)
    kv: Mutex<BTreeMap<(String, String), (String, u64)>>,
    /// Documents and logs (stored responses): key → (value, expiry ms)
    docs: Mutex<Docs>,
    /// Keys, teams, reservations, spend and the request log.
    gov: Mutex<crate::governance::GovMemory>,
}

#[derive(Default)]
struct Docs {
    values: HashMap<String, (String, u64)>,
    logs: HashMap<String, (Vec<String>, u64)>,
    writes: u64,
}

impl Docs {
    /// Drops expired entries every 1024 writes (reads check expiry themselves).
    fn sweep(&mut self, now: u64) {
        self.writes += 1;
        if self.writes.is_multiple_of(1024) {
            self.values.retain(|_, (_, exp)| *exp > now);
            self.logs.retain(|_, (_, exp)| *exp > now);
        }
    }
}

#[derive(Default)]
struct State {
    /// target → member → expiry ms
    leases: HashMap<String, HashMap<String, u64>>,
    /// target → (token, expiry ms)
    locks: HashMap<String, (String, u64)>,
    health: HashMap<String, HealthRecord>,
    providers: BTreeMap<String, ProviderStatus>,
    alive: BTreeMap<String, u64>,
    /// `service/instance` → (what it said of itself, expiry ms)
    instances: BTreeMap<String, (InstanceInfo, u64)>,
    /// (day, key, model) → counters
    usage: BTreeMap<(String, String, String), UsageRecord>,
}

impl MemoryStore {
    fn lock(&self) -> MutexGuard<'_, State> {
        self.state.lock().unwrap_or_else(|e| e.into_inner())
    }

    fn kv(&self) -> MutexGuard<'_, BTreeMap<(String, String), (String, u64)>> {
        let mut kv = self.kv.lock().unwrap_or_else(|e| e.into_inner());
        let now = now_ms();
        kv.retain(|_, (_, exp)| *exp == 0 || *exp > now);
        kv
    }

    fn gov(&self) -> MutexGuard<'_, crate::governance::GovMemory> {
        self.gov.lock().unwrap_or_else(|e| e.into_inner())
    }

    pub(crate) fn gov_put_key(&self, key: &gv::VirtualKey) -> Result<(), StoreError> {
        let mut g = self.gov();
        g.keys.insert(key.id.clone(), key.clone());
        g.version += 1;
        Ok(())
    }

    pub(crate) fn gov_keys(&self) -> Result<Vec<gv::VirtualKey>, StoreError> {
        Ok(self.gov().keys.values().cloned().collect())
    }

    pub(crate) fn gov_put_team(&self, team: &gv::Team) -> Result<(), StoreError> {
        let mut g = self.gov();
        g.teams.insert(team.id.clone(), team.clone());
        g.version += 1;
        Ok(())
    }

    pub(crate) fn gov_delete_team(&self, id: &str) -> Result<bool, StoreError> {
        let mut g = self.gov();
        g.version += 1;
        Ok(g.teams.remove(id).is_some())
    }

    pub(crate) fn gov_teams(&self) -> Result<Vec<gv::Team>, StoreError> {
        Ok(self.gov().teams.values().cloned().collect())
    }

    pub(crate) fn gov_version(&self) -> Result<u64, StoreError> {
        Ok(self.gov().version)
    }

    pub(crate) fn gov_admit(&self, r: &gv::Reservation<'_>) -> Result<gv::Admission, StoreError> {
        Ok(self.gov().admit(r))
    }

    pub(crate) fn gov_settle(&self, st: &gv::Settlement<'_>) -> Result<(), StoreError> {
        self.gov().settle(st);
        Ok(())
    }

    pub(crate) fn gov_standings(
        &self,
        subject: &str,
        period: gv::Period,
        now: u64,
    ) -> Result<gv::Standings, StoreError> {
        Ok(self.gov().standings(subject, period, now))
    }

    pub(crate) fn gov_spend(&self, from: &str, to: &str) -> Result<Vec<gv::SpendRow>, StoreError> {
        let days = gv::days_between(from, to, 400);
        let g = self.gov();
        Ok(days
            .iter()
            .flat_map(|d| {
                g.rows
                    .range((d.clone(), String::new(), String::new(), String::new())..)
                    .take_while(move |((day, ..), _)| day == d)
                    .map(|(_, r)| r.clone())
            })
            .collect())
    }

    pub(crate) fn gov_requests(
        &self,
        before: Option<&str>,
        limit: usize,
    ) -> Result<Vec<gv::RequestRecord>, StoreError> {
        Ok(self.gov().requests(before, limit))
    }

    fn docs(&self) -> MutexGuard<'_, Docs> {
        self.docs.lock().unwrap_or_else(|e| e.into_inner())
    }

    pub(crate) fn doc_put(&self, key: &str, value: &str, ttl_ms: u64) -> Result<(), StoreError> {
        let now = now_ms();
        let mut d = self.docs();
        d.sweep(now);
        d.values.insert(key.to_owned(), (value.to_owned(), now + ttl_ms.max(1)));
        Ok(())
    }

    pub(crate) fn doc_claim(&self, key: &str, value: &str, ttl_ms: u64) -> Result<Option<String>, StoreError> {
        let now = now_ms();
        let mut d = self.docs();
        d.sweep(now);
        if let Some((v, exp)) = d.values.get(key)
            && *exp > now
        {
            return Ok(Some(v.clone()));
        }
        d.values.insert(key.to_owned(), (value.to_owned(), now + ttl_ms.max(1)));
        Ok(None)
    }

    pub(crate) fn doc_get(&self, key: &str) -> Result<Option<String>, StoreError> {
        let now = now_ms();
        Ok(self
            .docs()
            .values
            .get(key)
            .filter(|(_, exp)| *exp > now)
            .map(|(v, _)| v.clone()))
    }

    pub(crate) fn doc_delete(&self, keys: &[String]) -> Result<u64, StoreError> {
        let now = now_ms();
        let mut d = self.docs();
        let mut n = 0;
        for k in keys {
            n += u64::from(d.values.remove(k).is_some_and(|(_, exp)| exp > now));
            n += u64::from(d.logs.remove(k).is_some_and(|(_, exp)| exp > now));
        }
        Ok(n)
    }

    pub(crate) fn log_append(&self, key: &str, entries: &[String], ttl_ms: u64) -> Result<u64, StoreError> {
        let now = now_ms();
        let mut d = self.docs();
        d.sweep(now);
        let log = d.logs.entry(key.to_owned()).or_insert_with(|| (Vec::new(), 0));
        if log.1 <= now {
            log.0.clear();
        }
        log.0.extend(entries.iter().cloned());
        log.1 = now + ttl_ms.max(1);
        Ok(log.0.len() as u64)
    }

    pub(crate) fn log_range(&self, key: &str, from: usize) -> Result<Vec<String>, StoreError> {
        let now = now_ms();
        Ok(self
            .docs()
            .logs
            .get(key)
            .filter(|(_, exp)| *exp > now)
            .map(|(log, _)| log.iter().skip(from).cloned().collect())
            .unwrap_or_default())
    }

    pub(crate) fn kv_get(&self, ns: &str, key: &str) -> Result<Option<String>, StoreError> {
        Ok(self.kv().get(&(ns.to_owned(), key.to_owned())).map(|(v, _)| v.clone()))
    }

    pub(crate) fn kv_get_touch(&self, ns: &str, key: &str, ttl_ms: u64) -> Result<Option<String>, StoreError> {
        let mut kv = self.kv();
        Ok(kv.get_mut(&(ns.to_owned(), key.to_owned())).map(|(v, exp)| {
            *exp = now_ms() + ttl_ms.max(1);
            v.clone()
        }))
    }

    pub(crate) fn kv_set(&self, ns: &str, key: &str, value: &str, ttl_ms: Option<u64>) -> Result<(), StoreError> {
        let exp = ttl_ms.map_or(0, |t| now_ms() + t.max(1));
        self.kv()
            .insert((ns.to_owned(), key.to_owned()), (value.to_owned(), exp));
        Ok(())
    }

    pub(crate) fn kv_delete(&self, ns: &str, key: &str) -> Result<bool, StoreError> {
        Ok(self.kv().remove(&(ns.to_owned(), key.to_owned())).is_some())
    }

    pub(crate) fn kv_keys(&self, ns: &str) -> Result<Vec<String>, StoreError> {
        Ok(self
            .kv()
            .keys()
            .filter(|(n, _)| n == ns)
            .map(|(_, k)| k.clone())
            .collect())
    }

    /// Mirrors the Redis `ADMIT` script: 1 admitted, 0 busy, -1 cooling, -2 open.
    pub(crate) fn admit(&self, a: &crate::Admit<'_>) -> Result<i64, StoreError> {
        let now = now_ms();
        let mut st = self.lock();
        let mut yes = 2;
        for (id, probe) in a.gates {
            let h = st.health.get(*id).copied().unwrap_or_default();
            if h.cooldown_until_ms > now {
                return Ok(-1);
            }
            if h.circuit != crate::health::Circuit::Closed && !probe {
                return Ok(-2);
            }
            if h.circuit != crate::health::Circuit::Closed || h.failures > 0 || h.probe_until_ms > 0 {
                yes = 1;
            }
        }
        let ttl = a.ttl_ms.max(1);
        if a.exclusive {
            return Ok(match st.locks.get(a.target) {
                Some((_, exp)) if *exp > now => 0,
                _ => {
                    st.locks.insert(a.target.to_owned(), (a.member.to_owned(), now + ttl));
                    yes
                }
            });
        }
        let l = st.leases.entry(a.target.to_owned()).or_default();
        l.retain(|_, exp| *exp > now);
        if a.max > 0 && l.len() >= a.max as usize {
            return Ok(0);
        }
        l.insert(a.member.to_owned(), now + ttl);
        Ok(yes)
    }

    pub(crate) fn renew(&self, target: &str, member: &str, exclusive: bool, ttl_ms: u64) -> Result<bool, StoreError> {
        let now = now_ms();
        let mut st = self.lock();
        let held = if exclusive {
            st.locks
                .get_mut(target)
                .filter(|(t, exp)| t == member && *exp > now)
                .map(|(_, exp)| exp)
        } else {
            st.leases
                .get_mut(target)
                .and_then(|l| l.get_mut(member))
                .filter(|exp| **exp > now)
        };
        Ok(held.map(|exp| *exp = now + ttl_ms.max(1)).is_some())
    }

    pub(crate) fn release_lease(&self, target: &str, member: &str) -> Result<(), StoreError> {
        let mut st = self.lock();
        if let Some(l) = st.leases.get_mut(target) {
            l.remove(member);
            if l.is_empty() {
                st.leases.remove(target);
            }
        }
        Ok(())
    }

    pub(crate) fn loads(&self, targets: &[String]) -> Result<Vec<u64>, StoreError> {
        let now = now_ms();
        let st = self.lock();
        Ok(targets
            .iter()
            .map(|t| {
                st.leases
                    .get(t)
                    .map_or(0, |l| l.values().filter(|e| **e > now).count() as u64)
            })
            .collect())
    }

    pub(crate) fn release_lock(&self, target: &str, token: &str) -> Result<(), StoreError> {
        let mut st = self.lock();
        if st.locks.get(target).is_some_and(|(t, _)| t == token) {
            st.locks.remove(target);
        }
        Ok(())
    }

    pub(crate) fn health(&self, ids: &[String]) -> Result<Vec<HealthRecord>, StoreError> {
        let st = self.lock();
        Ok(ids
            .iter()
            .map(|id| st.health.get(id).copied().unwrap_or_default())
            .collect())
    }

    pub(crate) fn record_success(&self, id: &str, latency_ms: Option<f64>) -> Result<(), StoreError> {
        self.lock().health.entry(id.to_owned()).or_default().succeed(latency_ms);
        Ok(())
    }

    pub(crate) fn record_failure(&self, id: &str, b: &Breaker) -> Result<(), StoreError> {
        self.lock().health.entry(id.to_owned()).or_default().fail(now_ms(), b);
        Ok(())
    }

    pub(crate) fn cooldown(&self, id: &str, until_ms: u64) -> Result<(), StoreError> {
        let mut st = self.lock();
        let h = st.health.entry(id.to_owned()).or_default();
        h.cooldown_until_ms = h.cooldown_until_ms.max(until_ms);
        Ok(())
    }

    pub(crate) fn try_probe(&self, id: &str, probe_ttl_ms: u64) -> Result<bool, StoreError> {
        Ok(self
            .lock()
            .health
            .entry(id.to_owned())
            .or_default()
            .probe(now_ms(), probe_ttl_ms))
    }

    pub(crate) fn settle(&self, s: &Settle<'_>, b: &Breaker) -> Result<(), StoreError> {
        if let Some((t, m)) = s.lease {
            self.release_lease(t, m)?;
        }
        if let Some((t, tok)) = s.lock {
            self.release_lock(t, tok)?;
        }
        for (id, lat) in &s.success {
            self.record_success(id, *lat)?;
        }
        if let Some(id) = s.failure {
            self.record_failure(id, b)?;
        }
        if let Some((id, until)) = s.cooldown {
            self.cooldown(id, until)?;
        }
        if let Some((k, m, d, delta)) = s.usage {
            self.record_usage(k, m, d, delta)?;
        }
        Ok(())
    }

    pub(crate) fn routing_state(
        &self,
        leases: &[String],
        ids: &[String],
        pairs: &[(String, String)],
        day: &str,
    ) -> Result<RoutingState, StoreError> {
        Ok(RoutingState {
            loads: self.loads(leases)?,
            health: self.health(ids)?,
            requests_today: self.requests_on(pairs, day)?,
        })
    }

    pub(crate) fn set_provider(&self, status: &ProviderStatus) -> Result<(), StoreError> {
        self.lock().providers.insert(status.name.clone(), status.clone());
        Ok(())
    }

    pub(crate) fn providers(&self) -> Result<Vec<ProviderStatus>, StoreError> {
        Ok(self.lock().providers.values().cloned().collect())
    }

    pub(crate) fn heartbeat(
        &self,
        service: &str,
        instance: &str,
        ttl_ms: u64,
        info: Option<&InstanceInfo>,
    ) -> Result<(), StoreError> {
        let (member, until) = (alive_member(service, instance), now_ms() + ttl_ms);
        let mut st = self.lock();
        if let Some(info) = info {
            st.instances.insert(member.clone(), (info.clone(), until));
        }
        st.alive.insert(member, until);
        Ok(())
    }

    pub(crate) fn depart(&self, service: &str, instance: &str) -> Result<(), StoreError> {
        let member = alive_member(service, instance);
        let mut st = self.lock();
        st.alive.remove(&member);
        st.instances.remove(&member);
        Ok(())
    }

    /// What each of `alive` said of itself, in its order.
    pub(crate) fn instance_infos(&self, alive: &[Alive]) -> Result<Vec<Option<InstanceInfo>>, StoreError> {
        let now = now_ms();
        let mut st = self.lock();
        st.instances.retain(|_, (_, exp)| *exp > now);
        Ok(alive
            .iter()
            .map(|a| {
                st.instances
                    .get(&alive_member(&a.service, &a.instance))
                    .map(|(i, _)| i.clone())
            })
            .collect())
    }

    /// The live instances; the epoch never changes (memory loses nothing while it lives).
    pub(crate) fn live(&self) -> Result<crate::Live, StoreError> {
        let now = now_ms();
        let mut st = self.lock();
        st.alive.retain(|_, exp| *exp > now);
        Ok(crate::Live {
            epoch: "memory".to_owned(),
            alive: st.alive.keys().filter_map(|m| split_alive(m)).collect(),
        })
    }

    pub(crate) fn record_usage(&self, key: &str, model: &str, day: &str, d: UsageDelta) -> Result<(), StoreError> {
        let mut st = self.lock();
        let u = st
            .usage
            .entry((day.to_owned(), key.to_owned(), model.to_owned()))
            .or_default();
        u.requests += 1;
        if d.estimated {
            u.estimated += 1;
            u.est_prompt_tokens += d.prompt;
            u.est_completion_tokens += d.completion;
        } else {
            u.prompt_tokens += d.prompt;
            u.completion_tokens += d.completion;
        }
        Ok(())
    }

    pub(crate) fn usage(&self, key: &str, model: &str, day: &str) -> Result<UsageRecord, StoreError> {
        Ok(self
            .lock()
            .usage
            .get(&(day.to_owned(), key.to_owned(), model.to_owned()))
            .copied()
            .unwrap_or_default())
    }

    pub(crate) fn requests_on(&self, pairs: &[(String, String)], day: &str) -> Result<Vec<u64>, StoreError> {
        let st = self.lock();
        Ok(pairs
            .iter()
            .map(|(k, m)| {
                st.usage
                    .get(&(day.to_owned(), k.clone(), m.clone()))
                    .map_or(0, |u| u.requests)
            })
            .collect())
    }

    pub(crate) fn usage_day(&self, day: &str) -> Result<Vec<UsageRow>, StoreError> {
        Ok(self
            .lock()
            .usage
            .iter()
            .filter(|((d, _, _), _)| d == day)
            .map(|((_, k, m), u)| UsageRow {
                key: k.clone(),
                model: m.clone(),
                usage: *u,
            })
            .collect())
    }
}
