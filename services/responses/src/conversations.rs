//! The Conversations API: a conversation object (`conv:{id}`) and its items, an
//! append-only log (`conv:{id}:items`) with a log of deleted item ids beside it, so
//! concurrent responses appending to one conversation never lose each other's items.
//! A response created with `conversation` starts from its items and, once completed,
//! appends its input and output.

use llmr_protocol::responses::ListQuery;
use llmr_protocol::{ApiError, now_ms};
use serde_json::{Value, json};

use crate::convert::{new_id, normalize_item};
use crate::stored::Stored;

fn doc_key(id: &str) -> String {
    format!("conv:{id}")
}
fn items_key(id: &str) -> String {
    format!("conv:{id}:items")
}
fn deleted_key(id: &str) -> String {
    format!("conv:{id}:deleted")
}

fn not_found(id: &str) -> ApiError {
    ApiError::NotFound {
        message: format!("Conversation with id '{id}' not found."),
    }
}

fn unavailable(e: llmr_store::StoreError) -> ApiError {
    ApiError::Unavailable {
        message: format!("The response store is unreachable: {e}"),
    }
}

/// Metadata as OpenAI takes it: an object of at most 16 string values.
fn metadata(body: &Value) -> Result<Value, ApiError> {
    match body.get("metadata") {
        None | Some(Value::Null) => Ok(json!({})),
        Some(Value::Object(m)) if m.len() <= 16 && m.values().all(Value::is_string) => Ok(Value::Object(m.clone())),
        Some(_) => Err(ApiError::invalid(
            "`metadata` must be an object of at most 16 string values.",
            Some("metadata"),
        )),
    }
}

/// Validated items of a body's `items` (ids assigned).
fn items_of(body: &Value) -> Result<Vec<Value>, ApiError> {
    match body.get("items") {
        None | Some(Value::Null) => Ok(Vec::new()),
        Some(Value::Array(items)) if items.len() <= 20 => items
            .iter()
            .enumerate()
            .map(|(i, item)| normalize_item(item.clone(), i))
            .collect::<Result<Vec<_>, _>>()
            .map_err(|e| match e {
                ApiError::InvalidRequest { message, param } => ApiError::InvalidRequest {
                    message,
                    param: param.map(|p| p.replacen("input", "items", 1)),
                },
                other => other,
            }),
        Some(_) => Err(ApiError::invalid(
            "`items` must be an array of at most 20 items.",
            Some("items"),
        )),
    }
}

/// `POST /v1/conversations`.
pub async fn create(stored: &Stored, body: &Value) -> Result<Value, ApiError> {
    let meta = metadata(body)?;
    let items = items_of(body)?;
    let id = new_id("conv");
    let conv = json!({"id": id, "object": "conversation", "created_at": now_ms() / 1000, "metadata": meta});
    put(stored, &conv).await?;
    append(stored, &id, &items).await?;
    Ok(conv)
}

async fn put(stored: &Stored, conv: &Value) -> Result<(), ApiError> {
    let id = conv["id"].as_str().unwrap_or_default();
    stored
        .store
        .doc_put(&doc_key(id), &conv.to_string(), stored.ttl_ms)
        .await
        .map_err(unavailable)
}

/// `GET /v1/conversations/{id}`.
pub async fn retrieve(stored: &Stored, id: &str) -> Result<Value, ApiError> {
    let raw = stored.store.doc_get(&doc_key(id)).await.map_err(unavailable)?;
    raw.and_then(|r| serde_json::from_str(&r).ok())
        .ok_or_else(|| not_found(id))
}

/// `POST /v1/conversations/{id}`: replaces the metadata.
pub async fn update(stored: &Stored, id: &str, body: &Value) -> Result<Value, ApiError> {
    let mut conv = retrieve(stored, id).await?;
    if body.get("metadata").is_none() {
        return Err(ApiError::invalid(
            "Missing required parameter: 'metadata'.",
            Some("metadata"),
        ));
    }
    conv["metadata"] = metadata(body)?;
    put(stored, &conv).await?;
    Ok(conv)
}

/// `DELETE /v1/conversations/{id}`.
pub async fn delete(stored: &Stored, id: &str) -> Result<Value, ApiError> {
    let keys = [doc_key(id), items_key(id), deleted_key(id)];
    if stored.store.doc_delete(&keys[..1]).await.map_err(unavailable)? == 0 {
        return Err(not_found(id));
    }
    stored.store.doc_delete(&keys[1..]).await.map_err(unavailable)?;
    Ok(json!({"id": id, "object": "conversation.deleted", "deleted": true}))
}

/// Appends items (already normalized) to a conversation and renews its expiry.
pub async fn append(stored: &Stored, id: &str, items: &[Value]) -> Result<(), ApiError> {
    if items.is_empty() {
        return Ok(());
    }
    let entries: Vec<String> = items.iter().map(Value::to_string).collect();
    stored
        .store
        .log_append(&items_key(id), &entries, stored.ttl_ms)
        .await
        .map_err(unavailable)?;
    let conv = retrieve(stored, id).await?;
    put(stored, &conv).await
}

/// The live items of a conversation, oldest first.
pub async fn items(stored: &Stored, id: &str) -> Result<Vec<Value>, ApiError> {
    retrieve(stored, id).await?;
    let deleted = stored.store.log_range(&deleted_key(id), 0).await.map_err(unavailable)?;
    let all = stored.store.log_range(&items_key(id), 0).await.map_err(unavailable)?;
    Ok(all
        .iter()
        .filter_map(|e| serde_json::from_str::<Value>(e).ok())
        .filter(|item| !item["id"].as_str().is_some_and(|i| deleted.iter().any(|d| d == i)))
        .collect())
}

/// `POST /v1/conversations/{id}/items`.
pub async fn add_items(stored: &Stored, id: &str, body: &Value) -> Result<Value, ApiError> {
    retrieve(stored, id).await?;
    let new = items_of(body)?;
    if new.is_empty() {
        return Err(ApiError::invalid("Missing required parameter: 'items'.", Some("items")));
    }
    append(stored, id, &new).await?;
    Ok(crate::list::shape(false, new))
}

/// `GET /v1/conversations/{id}/items` (see [`crate::list`] for paging).
pub async fn list_items(stored: &Stored, id: &str, q: &ListQuery) -> Result<Value, ApiError> {
    crate::list::page(items(stored, id).await?, q)
}

/// `GET /v1/conversations/{id}/items/{item_id}`.
pub async fn get_item(stored: &Stored, id: &str, item_id: &str) -> Result<Value, ApiError> {
    items(stored, id)
        .await?
        .into_iter()
        .find(|i| i["id"] == item_id)
        .ok_or_else(|| ApiError::NotFound {
            message: format!("Item with id '{item_id}' not found."),
        })
}

/// `DELETE /v1/conversations/{id}/items/{item_id}`: returns the conversation.
pub async fn delete_item(stored: &Stored, id: &str, item_id: &str) -> Result<Value, ApiError> {
    get_item(stored, id, item_id).await?;
    stored
        .store
        .log_append(&deleted_key(id), &[item_id.to_owned()], stored.ttl_ms)
        .await
        .map_err(unavailable)?;
    retrieve(stored, id).await
}
