//! The Redis store: pooled multiplexed connections (deadpool-redis, shared with the bus),
//! pipelined writes.

use deadpool_redis::Pool;
use llmr_protocol::now_ms;
use std::collections::HashMap;

use crate::{Alive, ProviderStatus, StoreError, UsageRecord, split_alive};

/// Usage counters are kept this long.
const USAGE_TTL_S: u64 = 90 * 86_400;

pub struct RedisStore {
    pool: Pool,
    prefix: String,
}

fn unavailable(e: impl std::fmt::Display) -> StoreError {
    StoreError::Unavailable(e.to_string())
}

impl RedisStore {
    pub fn new(pool: Pool, prefix: &str) -> RedisStore {
        RedisStore {
            pool,
            prefix: prefix.to_owned(),
        }
    }

    fn key(&self, k: &str) -> String {
        format!("{}{}", self.prefix, k)
    }

    async fn conn(&self) -> Result<deadpool_redis::Connection, StoreError> {
        self.pool.get().await.map_err(unavailable)
    }

    pub(crate) async fn ping(&self) -> Result<(), StoreError> {
        let mut c = self.conn().await?;
        redis::cmd("PING")
            .query_async::<()>(&mut c)
            .await
            .map_err(unavailable)
    }

    pub(crate) async fn acquire_lease(
        &self,
        target: &str,
        member: &str,
        ttl_ms: u64,
    ) -> Result<(), StoreError> {
        let key = self.key(&format!("lease:{target}"));
        let now = now_ms();
        let mut pipe = redis::pipe();
        pipe.cmd("ZREMRANGEBYSCORE")
            .arg(&key)
            .arg("-inf")
            .arg(now)
            .ignore();
        pipe.cmd("ZADD")
            .arg(&key)
            .arg(now + ttl_ms)
            .arg(member)
            .ignore();
        pipe.cmd("PEXPIRE").arg(&key).arg(ttl_ms * 2).ignore();
        let mut c = self.conn().await?;
        pipe.query_async::<()>(&mut c).await.map_err(unavailable)
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
        let mut out: Vec<ProviderStatus> = all
            .values()
            .filter_map(|v| serde_json::from_str(v).ok())
            .collect();
        out.sort_by(|a, b| a.name.cmp(&b.name));
        Ok(out)
    }

    pub(crate) async fn heartbeat(
        &self,
        service: &str,
        instance: &str,
        ttl_ms: u64,
    ) -> Result<(), StoreError> {
        let key = self.key("alive");
        let now = now_ms();
        let mut pipe = redis::pipe();
        pipe.cmd("ZREMRANGEBYSCORE")
            .arg(&key)
            .arg("-inf")
            .arg(now)
            .ignore();
        pipe.cmd("ZADD")
            .arg(&key)
            .arg(now + ttl_ms)
            .arg(format!("{service}/{instance}"))
            .ignore();
        let mut c = self.conn().await?;
        pipe.query_async::<()>(&mut c).await.map_err(unavailable)
    }

    pub(crate) async fn depart(&self, service: &str, instance: &str) -> Result<(), StoreError> {
        let mut c = self.conn().await?;
        redis::cmd("ZREM")
            .arg(self.key("alive"))
            .arg(format!("{service}/{instance}"))
            .query_async::<()>(&mut c)
            .await
            .map_err(unavailable)
    }

    pub(crate) async fn alive(&self) -> Result<Vec<Alive>, StoreError> {
        let mut c = self.conn().await?;
        let members: Vec<String> = redis::cmd("ZRANGEBYSCORE")
            .arg(self.key("alive"))
            .arg(format!("({}", now_ms()))
            .arg("+inf")
            .query_async(&mut c)
            .await
            .map_err(unavailable)?;
        let mut out: Vec<Alive> = members.iter().filter_map(|m| split_alive(m)).collect();
        out.sort_by(|a, b| (&a.service, &a.instance).cmp(&(&b.service, &b.instance)));
        Ok(out)
    }

    pub(crate) async fn record_usage(
        &self,
        key: &str,
        model: &str,
        day: &str,
        prompt: u64,
        completion: u64,
        estimated: bool,
    ) -> Result<(), StoreError> {
        let k = self.key(&format!("usage:{key}:{model}:{day}"));
        let mut pipe = redis::pipe();
        pipe.cmd("HINCRBY").arg(&k).arg("requests").arg(1).ignore();
        pipe.cmd("HINCRBY")
            .arg(&k)
            .arg("prompt_tokens")
            .arg(prompt)
            .ignore();
        pipe.cmd("HINCRBY")
            .arg(&k)
            .arg("completion_tokens")
            .arg(completion)
            .ignore();
        if estimated {
            pipe.cmd("HINCRBY").arg(&k).arg("estimated").arg(1).ignore();
        }
        pipe.cmd("EXPIRE").arg(&k).arg(USAGE_TTL_S).ignore();
        let mut c = self.conn().await?;
        pipe.query_async::<()>(&mut c).await.map_err(unavailable)
    }

    pub(crate) async fn usage(
        &self,
        key: &str,
        model: &str,
        day: &str,
    ) -> Result<UsageRecord, StoreError> {
        let mut c = self.conn().await?;
        let h: HashMap<String, u64> = redis::cmd("HGETALL")
            .arg(self.key(&format!("usage:{key}:{model}:{day}")))
            .query_async(&mut c)
            .await
            .map_err(unavailable)?;
        let g = |f: &str| h.get(f).copied().unwrap_or(0);
        Ok(UsageRecord {
            requests: g("requests"),
            prompt_tokens: g("prompt_tokens"),
            completion_tokens: g("completion_tokens"),
            estimated: g("estimated"),
        })
    }
}
