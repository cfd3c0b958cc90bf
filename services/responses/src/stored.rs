//! What the responses service keeps in the store, under `resp:{id}` keys with the
//! configured TTL: the response with the chat context a chain continues from (and, for a
//! background response, its request, so a peer can rerun it), its input items, its stream
//! events (background responses, for resuming a stream), and a cancel flag.

use llmr_config::FailPolicy;
use llmr_protocol::ApiError;
use llmr_store::Store;
use serde_json::{Value, json};

/// Statuses after which a response never changes.
pub const TERMINAL: [&str; 4] = ["completed", "failed", "incomplete", "cancelled"];

/// Store access for responses.
#[derive(Clone)]
pub struct Stored {
    pub store: Store,
    pub ttl_ms: u64,
    pub max_bytes: usize,
    /// What a finished foreground response does when it cannot be stored
    /// (`degraded.stored_responses`).
    pub policy: FailPolicy,
}

fn unavailable(e: llmr_store::StoreError) -> ApiError {
    ApiError::Unavailable {
        message: format!("The response store is unreachable: {e}"),
    }
}

pub fn doc_key(id: &str) -> String {
    format!("resp:{id}")
}
pub fn input_key(id: &str) -> String {
    format!("resp:{id}:input")
}
pub fn events_key(id: &str) -> String {
    format!("resp:{id}:events")
}
fn cancel_key(id: &str) -> String {
    format!("resp:{id}:cancel")
}

/// The "not found" answer for `id`.
pub fn not_found(id: &str) -> ApiError {
    ApiError::NotFound {
        message: format!("Response with id '{id}' not found."),
    }
}

impl Stored {
    /// The stored document of `id`: `{"response", "context", "request"?}`.
    pub async fn doc(&self, id: &str) -> Result<Option<Value>, ApiError> {
        let raw = self.store.doc_get(&doc_key(id)).await.map_err(unavailable)?;
        Ok(raw.and_then(|r| serde_json::from_str(&r).ok()))
    }

    /// The stored response object of `id`, or 404.
    pub async fn response(&self, id: &str) -> Result<Value, ApiError> {
        let doc = self.doc(id).await?.ok_or_else(|| not_found(id))?;
        Ok(doc["response"].clone())
    }

    /// Stores `doc`; false (nothing stored) when it is larger than the bound.
    pub async fn put(&self, id: &str, doc: &Value) -> Result<bool, ApiError> {
        let text = doc.to_string();
        if text.len() > self.max_bytes {
            return Ok(false);
        }
        self.store
            .doc_put(&doc_key(id), &text, self.ttl_ms)
            .await
            .map_err(unavailable)?;
        Ok(true)
    }

    /// Stores a finished response and its input items; false (the client is told `store:
    /// false`) when it is too large or — a foreground response under `open` — when the store
    /// fails. Background responses were promised to be kept: their failures always refuse.
    pub async fn put_finished(
        &self,
        id: &str,
        doc: &Value,
        input: &[Value],
        background: bool,
    ) -> Result<bool, ApiError> {
        let stored = async {
            if !self.put(id, doc).await? {
                return Ok(false);
            }
            self.put_input(id, input).await?;
            Ok(true)
        }
        .await;
        match stored {
            Err(e) if self.policy.is_open() && !background => {
                tracing::warn!(response_id = %id, error = %e, "response not stored; answered with store=false (degraded.stored_responses = open)");
                Ok(false)
            }
            other => other,
        }
    }

    pub async fn put_input(&self, id: &str, items: &[Value]) -> Result<(), ApiError> {
        let text = Value::from(items.to_vec()).to_string();
        self.store
            .doc_put(&input_key(id), &text, self.ttl_ms)
            .await
            .map_err(unavailable)
    }

    pub async fn input(&self, id: &str) -> Result<Vec<Value>, ApiError> {
        let raw = self.store.doc_get(&input_key(id)).await.map_err(unavailable)?;
        Ok(raw
            .and_then(|r| serde_json::from_str::<Vec<Value>>(&r).ok())
            .unwrap_or_default())
    }

    pub async fn append_events(&self, id: &str, events: &[String]) -> Result<(), ApiError> {
        self.store
            .log_append(&events_key(id), events, self.ttl_ms)
            .await
            .map(|_| ())
            .map_err(unavailable)
    }

    pub async fn events(&self, id: &str, from: usize) -> Result<Vec<String>, ApiError> {
        self.store.log_range(&events_key(id), from).await.map_err(unavailable)
    }

    /// Forgets the events of a run that starts over.
    pub async fn clear_events(&self, id: &str) -> Result<(), ApiError> {
        self.store
            .doc_delete(&[events_key(id)])
            .await
            .map(|_| ())
            .map_err(unavailable)
    }

    /// Deletes everything of `id`; false when there was no such response.
    pub async fn delete(&self, id: &str) -> Result<bool, ApiError> {
        let keys = [doc_key(id), input_key(id), events_key(id), cancel_key(id)];
        let n = self.store.doc_delete(&keys[..1]).await.map_err(unavailable)?;
        self.store.doc_delete(&keys[1..]).await.map_err(unavailable)?;
        Ok(n > 0)
    }

    pub async fn request_cancel(&self, id: &str) -> Result<(), ApiError> {
        self.store
            .doc_put(&cancel_key(id), "1", self.ttl_ms)
            .await
            .map_err(unavailable)
    }

    pub async fn cancel_requested(&self, id: &str) -> bool {
        matches!(self.store.doc_get(&cancel_key(id)).await, Ok(Some(_)))
    }
}

/// Whether a response object's status is final.
pub fn is_terminal(response: &Value) -> bool {
    response["status"].as_str().is_some_and(|s| TERMINAL.contains(&s))
}

/// A stored document for `response`.
pub fn document(response: &Value, context: &[Value], request: Option<&Value>) -> Value {
    let mut doc = json!({"response": response, "context": context});
    if let Some(r) = request {
        doc["request"] = r.clone();
    }
    doc
}
