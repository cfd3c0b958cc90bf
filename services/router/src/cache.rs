//! The exact response cache of chat completions, embeddings and text completions: which
//! requests may be answered from it, their key, the lookup, and answering a hit straight
//! onto the caller's reply stream.
//!
//! A request is cacheable when the cache is on (`cache.enabled`, or its group's `cache`
//! switch) and it is deterministic (`temperature` 0 or a `seed`, one choice; embeddings
//! always) — or it opts in with `x-llmr-cache: ttl=SECONDS`. `no-cache` skips the lookup (the
//! answer is still stored), `no-store` keeps the answer out. The key is a SHA-256 of the
//! endpoint, the requested model or group, the stream flags and the body without the fields
//! that do not change the answer; streamed and plain answers are kept apart, so a streamed
//! hit replays the very chunks of the original. The worker stores a miss once it completed
//! (see `CachePlan`); entries live under `llmr_store::cache::cache_key`.
use bytes::Bytes;
use llmr_bus::{Bus, Replier};
use llmr_config::{Cache as Settings, FailPolicy};
use llmr_protocol::{CachePlan, CacheStatus, Envelope, now_ms};
use llmr_store::{Store, StoreError, UsageDelta, utc_day};
use serde_json::Value;
use sha2::{Digest, Sha256};

use crate::catalog::Route;

/// What the cache does for one request.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Decision {
    /// The cache is off for this request's model: no header, nothing stored.
    Off,
    /// Not cacheable: answered upstream, reported as `bypass`.
    Bypass,
    /// Cacheable under `key`: looked up unless `read` is false; stored unless `store` is.
    Use {
        key: String,
        read: bool,
        store: bool,
        ttl_ms: u64,
    },
}

impl Decision {
    /// The plan's part of the decision, for a request that goes upstream.
    pub fn plan(&self) -> Option<CachePlan> {
        match self {
            Decision::Off => None,
            Decision::Bypass => Some(CachePlan {
                status: CacheStatus::Bypass,
                key: String::new(),
                store: false,
                ttl_ms: 0,
            }),
            Decision::Use {
                key,
                store,
                ttl_ms,
                read,
            } => Some(CachePlan {
                status: if *read { CacheStatus::Miss } else { CacheStatus::Bypass },
                key: key.clone(),
                store: *store,
                ttl_ms: *ttl_ms,
            }),
        }
    }
}

/// The client's `x-llmr-cache` directives.
#[derive(Debug, Default, PartialEq, Eq)]
struct Directives {
    no_store: bool,
    no_cache: bool,
    ttl_s: Option<u64>,
}

fn directives(header: &str) -> Directives {
    let mut d = Directives::default();
    for part in header.split(',').map(str::trim) {
        match part {
            "no-store" => d.no_store = true,
            "no-cache" => d.no_cache = true,
            p => d.ttl_s = p.strip_prefix("ttl=").and_then(|n| n.parse().ok()).or(d.ttl_s),
        }
    }
    d
}

/// Whether the same request always gets the same answer.
fn deterministic(body: &Value) -> bool {
    let one_choice = body.get("n").is_none_or(|n| n.is_null() || n.as_u64() == Some(1));
    let zero_temperature = body.get("temperature").and_then(Value::as_f64) == Some(0.0);
    let seeded = body.get("seed").is_some_and(|s| !s.is_null());
    one_choice && (zero_temperature || seeded)
}

/// The cache key of a request: model or group, stream flags, and the answer-changing body.
pub fn key(env: &Envelope, body: &Value) -> String {
    let mut canonical = body.clone();
    if let Value::Object(m) = &mut canonical {
        for k in ["stream", "stream_options", "user", "metadata", "store"] {
            m.remove(k);
        }
    }
    let mut h = Sha256::new();
    // Entries are shared only within the caller's scope (`cache.scope`).
    h.update(env.meta.scope.as_bytes());
    h.update([0]);
    h.update(env.meta.endpoint.as_str().as_bytes());
    h.update([0]);
    h.update(env.meta.model.as_bytes());
    h.update([0, u8::from(env.meta.stream), u8::from(env.meta.include_usage), 0]);
    // serde_json's maps are ordered by key: the text is canonical.
    h.update(canonical.to_string().as_bytes());
    h.finalize().iter().map(|b| format!("{b:02x}")).collect()
}

/// What the cache does for `env` on `route`.
pub fn decide(settings: &Settings, route: &Route, env: &Envelope) -> Decision {
    if !route.cache.unwrap_or(settings.enabled) {
        return Decision::Off;
    }
    let d = directives(&env.meta.cache);
    let Ok(body) = serde_json::from_slice::<Value>(&env.body) else {
        return Decision::Bypass;
    };
    let embeddings = env.meta.endpoint == llmr_protocol::Endpoint::Embeddings;
    if !embeddings && !deterministic(&body) && d.ttl_s.is_none() {
        return Decision::Bypass;
    }
    Decision::Use {
        key: key(env, &body),
        read: !d.no_cache,
        store: !d.no_store,
        ttl_ms: d.ttl_s.map_or(settings.ttl_ms, |s| s.saturating_mul(1000).max(1)),
    }
}

/// The cache as the router uses it: its settings and the store its answers live in.
pub struct Cache {
    pub settings: Settings,
    pub store: Store,
    /// What a failed lookup does (`degraded.cache`).
    pub policy: FailPolicy,
}

/// A stored answer: whether it was streamed, and its data (SSE text of the chunks, or the
/// JSON body); None when there is none (or it cannot be read back), an error when the store
/// fails. The key scheme and the entry are `llmr_store::cache`'s.
pub async fn lookup(store: &Store, key: &str) -> Result<Option<(bool, Bytes)>, StoreError> {
    Ok(llmr_store::cache::lookup(store, key)
        .await?
        .map(|a| (a.stream, Bytes::from(a.data))))
}

/// Answers `env` from the cache; counts it in usage as a cached request (no provider tokens).
pub async fn answer_hit(bus: &Bus, store: &Store, env: &Envelope, stream: bool, data: Bytes) {
    let mut out = Replier::new(bus.clone(), &env.reply_to, env.id, stream);
    out.set_cache(Some(CacheStatus::Hit));
    let sent = if stream {
        match out.raw(data).await {
            Ok(()) => out.end().await,
            Err(e) => Err(e),
        }
    } else {
        out.complete(200, data).await
    };
    if let Err(e) = sent {
        tracing::warn!(request_id = %env.id, error = %e, "could not answer from the cache");
    }
    let delta = UsageDelta {
        prompt: 0,
        completion: 0,
        estimated: false,
    };
    if let Err(e) = store
        .record_usage("cache", &env.meta.model, &utc_day(now_ms()), delta)
        .await
    {
        tracing::warn!(error = %e, "could not record a cache hit in usage");
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use bytes::Bytes;
    use llmr_protocol::{Kind, Meta};
    use serde_json::json;

    fn env(body: Value, stream: bool, header: &str) -> Envelope {
        let meta = Meta {
            model: "g".into(),
            stream,
            cache: header.into(),
            ..Meta::default()
        };
        Envelope::new(
            Kind::Chat,
            "gw",
            u64::MAX,
            Default::default(),
            Bytes::from(body.to_string()),
            meta,
        )
    }

    fn route(cache: Option<bool>) -> Route {
        Route {
            name: "g".into(),
            strategy: llmr_config::Strategy::LeastLoad,
            targets: Vec::new(),
            fallbacks: Vec::new(),
            tools: Vec::new(),
            cache,
        }
    }

    fn on() -> Settings {
        Settings {
            enabled: true,
            ttl_ms: 60_000,
            max_entry_bytes: 1 << 20,
            tool_calls: false,
            scope: llmr_config::CacheScope::Team,
        }
    }

    #[test]
    fn only_deterministic_requests_unless_they_opt_in() {
        let msgs = json!([{"role": "user", "content": "hi"}]);
        let zero = json!({"model": "g", "messages": msgs, "temperature": 0});
        let warm = json!({"model": "g", "messages": msgs, "temperature": 0.7});
        assert!(matches!(
            decide(&on(), &route(None), &env(zero.clone(), false, "")),
            Decision::Use {
                read: true,
                store: true,
                ttl_ms: 60_000,
                ..
            }
        ));
        assert_eq!(
            decide(&on(), &route(None), &env(warm.clone(), false, "")),
            Decision::Bypass
        );
        assert!(matches!(
            decide(&on(), &route(None), &env(warm, false, "ttl=5")),
            Decision::Use { ttl_ms: 5000, .. }
        ));
        assert!(matches!(
            decide(&on(), &route(None), &env(zero.clone(), false, "no-store")),
            Decision::Use { store: false, .. }
        ));
        assert!(matches!(
            decide(&on(), &route(None), &env(zero.clone(), false, "no-cache")),
            Decision::Use { read: false, .. }
        ));
        assert_eq!(
            decide(&on(), &route(Some(false)), &env(zero.clone(), false, "")),
            Decision::Off
        );
        let off = Settings { enabled: false, ..on() };
        assert_eq!(decide(&off, &route(None), &env(zero.clone(), false, "")), Decision::Off);
        assert!(matches!(
            decide(&off, &route(Some(true)), &env(zero, false, "")),
            Decision::Use { .. }
        ));
    }

    #[test]
    fn keys_ignore_what_does_not_change_the_answer_and_keep_streams_apart() {
        let a = json!({"model": "g", "messages": [], "temperature": 0, "user": "x", "stream": false});
        let b = json!({"temperature": 0, "messages": [], "model": "g", "metadata": {"k": "v"}});
        let c = json!({"model": "g", "messages": [], "temperature": 0, "max_tokens": 5});
        let k = |v: &Value, s: bool| key(&env(v.clone(), s, ""), v);
        assert_eq!(k(&a, false), k(&b, false));
        assert_ne!(k(&a, false), k(&c, false));
        assert_ne!(k(&a, false), k(&a, true));
        assert_eq!(k(&a, false).len(), 64);
    }
}
