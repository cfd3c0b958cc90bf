//! The response cache's stored side, in one place: its key scheme (`cache:{digest}`, the
//! digest being what the router computes for a cacheable request), the entry it keeps
//! (`{"stream": bool, "data": text}`: the SSE text of a stream's chunks, or a whole JSON
//! body), and reading and writing entries. The router looks entries up, the worker puts
//! them, the gateway's readiness probe reads one key: all through [`cache_key`].

use serde::{Deserialize, Serialize};

use crate::{Store, StoreError};

/// The key prefix of cached answers.
pub const PREFIX: &str = "cache:";

/// The store key of the answer whose request digest is `digest`.
pub fn cache_key(digest: &str) -> String {
    format!("{PREFIX}{digest}")
}

/// One cached answer.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct CachedAnswer {
    /// Whether it was streamed (streamed and plain answers are kept apart).
    pub stream: bool,
    /// The SSE text of the chunks, or the JSON body.
    pub data: String,
}

/// The answer cached under `digest`; None when there is none (or it cannot be read back),
/// an error when the store fails.
pub async fn lookup(store: &Store, digest: &str) -> Result<Option<CachedAnswer>, StoreError> {
    let Some(raw) = store.doc_get(&cache_key(digest)).await? else {
        return Ok(None);
    };
    Ok(serde_json::from_str(&raw).ok())
}

/// Keeps `answer` under `digest` for `ttl_ms`.
pub async fn put(store: &Store, digest: &str, answer: &CachedAnswer, ttl_ms: u64) -> Result<(), StoreError> {
    // Two plain fields: serializing cannot fail.
    let entry = serde_json::to_string(answer).unwrap_or_default();
    store.doc_put(&cache_key(digest), &entry, ttl_ms.max(1)).await
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]
    use super::*;

    #[tokio::test]
    async fn an_answer_is_kept_under_its_digest_and_read_back() {
        assert_eq!(cache_key("ab12"), "cache:ab12");
        let store = Store::memory();
        let a = CachedAnswer {
            stream: true,
            data: "data: {}\n\n".into(),
        };
        put(&store, "ab12", &a, 60_000).await.unwrap();
        assert_eq!(lookup(&store, "ab12").await.unwrap(), Some(a));
        assert_eq!(lookup(&store, "other").await.unwrap(), None);
        let raw = store.doc_get("cache:ab12").await.unwrap().unwrap();
        assert_eq!(raw, r#"{"stream":true,"data":"data: {}\n\n"}"#);
    }
}
