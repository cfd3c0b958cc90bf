//! Governance on Redis: keys and teams as JSON in hashes, admission and settlement as Lua
//! scripts (one atomic step each), spend rows per day, the request log as a capped stream.
//! The semantics are `governance::GovMemory`'s, line for line.

use crate::governance as gv;
use crate::{RedisStore, StoreError};

fn unimplemented_yet() -> StoreError {
    StoreError::Unavailable("governance on Redis is being written".into())
}

impl RedisStore {
    pub(crate) async fn gov_put_key(&self, _key: &gv::VirtualKey) -> Result<(), StoreError> {
        Err(unimplemented_yet())
    }
    pub(crate) async fn gov_keys(&self) -> Result<Vec<gv::VirtualKey>, StoreError> {
        Err(unimplemented_yet())
    }
    pub(crate) async fn gov_put_team(&self, _team: &gv::Team) -> Result<(), StoreError> {
        Err(unimplemented_yet())
    }
    pub(crate) async fn gov_delete_team(&self, _id: &str) -> Result<bool, StoreError> {
        Err(unimplemented_yet())
    }
    pub(crate) async fn gov_teams(&self) -> Result<Vec<gv::Team>, StoreError> {
        Err(unimplemented_yet())
    }
    pub(crate) async fn gov_version(&self) -> Result<u64, StoreError> {
        Err(unimplemented_yet())
    }
    pub(crate) async fn gov_admit(&self, _r: &gv::Reservation<'_>) -> Result<gv::Admission, StoreError> {
        Err(unimplemented_yet())
    }
    pub(crate) async fn gov_settle(&self, _st: &gv::Settlement<'_>) -> Result<(), StoreError> {
        Err(unimplemented_yet())
    }
    pub(crate) async fn gov_standings(
        &self,
        _subject: &str,
        _period: gv::Period,
        _now: u64,
    ) -> Result<gv::Standings, StoreError> {
        Err(unimplemented_yet())
    }
    pub(crate) async fn gov_spend(&self, _from: &str, _to: &str) -> Result<Vec<gv::SpendRow>, StoreError> {
        Err(unimplemented_yet())
    }
    pub(crate) async fn gov_requests(
        &self,
        _before: Option<&str>,
        _limit: usize,
    ) -> Result<Vec<gv::RequestRecord>, StoreError> {
        Err(unimplemented_yet())
    }
}
