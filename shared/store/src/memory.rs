//! The in-memory store: the same semantics as Redis, behind one mutex.

use std::collections::{BTreeMap, HashMap};
use std::sync::{Mutex, MutexGuard};

use llmr_protocol::now_ms;

use crate::{Alive, ProviderStatus, StoreError, UsageRecord, split_alive};

#[derive(Default)]
pub struct MemoryStore {
    state: Mutex<State>,
}

#[derive(Default)]
struct State {
    /// target → member → expiry ms
    leases: HashMap<String, HashMap<String, u64>>,
    providers: BTreeMap<String, ProviderStatus>,
    alive: BTreeMap<String, u64>,
    usage: HashMap<String, UsageRecord>,
}

impl MemoryStore {
    fn lock(&self) -> MutexGuard<'_, State> {
        self.state.lock().unwrap_or_else(|e| e.into_inner())
    }

    pub(crate) fn acquire_lease(
        &self,
        target: &str,
        member: &str,
        ttl_ms: u64,
    ) -> Result<(), StoreError> {
        let now = now_ms();
        let mut st = self.lock();
        let l = st.leases.entry(target.to_owned()).or_default();
        l.retain(|_, exp| *exp > now);
        l.insert(member.to_owned(), now + ttl_ms);
        Ok(())
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

    pub(crate) fn set_provider(&self, status: &ProviderStatus) -> Result<(), StoreError> {
        self.lock()
            .providers
            .insert(status.name.clone(), status.clone());
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
    ) -> Result<(), StoreError> {
        self.lock()
            .alive
            .insert(format!("{service}/{instance}"), now_ms() + ttl_ms);
        Ok(())
    }

    pub(crate) fn depart(&self, service: &str, instance: &str) -> Result<(), StoreError> {
        self.lock().alive.remove(&format!("{service}/{instance}"));
        Ok(())
    }

    pub(crate) fn alive(&self) -> Result<Vec<Alive>, StoreError> {
        let now = now_ms();
        let mut st = self.lock();
        st.alive.retain(|_, exp| *exp > now);
        Ok(st.alive.keys().filter_map(|m| split_alive(m)).collect())
    }

    pub(crate) fn record_usage(
        &self,
        key: &str,
        model: &str,
        day: &str,
        prompt: u64,
        completion: u64,
        estimated: bool,
    ) -> Result<(), StoreError> {
        let mut st = self.lock();
        let u = st.usage.entry(format!("{key}:{model}:{day}")).or_default();
        u.requests += 1;
        u.prompt_tokens += prompt;
        u.completion_tokens += completion;
        u.estimated += u64::from(estimated);
        Ok(())
    }

    pub(crate) fn usage(
        &self,
        key: &str,
        model: &str,
        day: &str,
    ) -> Result<UsageRecord, StoreError> {
        Ok(self
            .lock()
            .usage
            .get(&format!("{key}:{model}:{day}"))
            .copied()
            .unwrap_or_default())
    }
}
