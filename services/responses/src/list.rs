//! OpenAI's list shape (`object: "list"`, `data`, `first_id`, `last_id`, `has_more`) and its
//! paging: `order` (`desc` by default, or `asc`), `after` / `before` (item ids), `limit`
//! (1–100, default 20). Used by input items and conversation items.

use llmr_protocol::ApiError;
use llmr_protocol::responses::ListQuery;
use serde_json::{Value, json};

/// One page of `items` (oldest first) as `q` asks.
pub fn page(mut items: Vec<Value>, q: &ListQuery) -> Result<Value, ApiError> {
    match q.order.as_deref() {
        None | Some("desc") => items.reverse(),
        Some("asc") => {}
        Some(_) => return Err(ApiError::invalid("`order` must be asc or desc.", Some("order"))),
    }
    let limit = q.limit.unwrap_or(20);
    if !(1..=100).contains(&limit) {
        return Err(ApiError::invalid("`limit` must be between 1 and 100.", Some("limit")));
    }
    let position = |cursor: &str| items.iter().position(|i| i["id"] == cursor);
    let start = q
        .after
        .as_deref()
        .map_or(0, |a| position(a).map_or(items.len(), |p| p + 1));
    let end = q
        .before
        .as_deref()
        .map_or(items.len(), |b| position(b).unwrap_or(items.len()))
        .max(start);
    let window: Vec<Value> = items[start..end].iter().take(limit as usize).cloned().collect();
    Ok(shape(end - start > window.len(), window))
}

/// The list shape around `data`.
pub fn shape(has_more: bool, data: Vec<Value>) -> Value {
    json!({
        "object": "list",
        "first_id": data.first().map(|i| i["id"].clone()),
        "last_id": data.last().map(|i| i["id"].clone()),
        "has_more": has_more,
        "data": data,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ids(v: &Value) -> Vec<&str> {
        v["data"]
            .as_array()
            .unwrap()
            .iter()
            .map(|i| i["id"].as_str().unwrap())
            .collect()
    }

    #[test]
    fn pages_in_either_order_between_cursors() {
        let items: Vec<Value> = ["a", "b", "c", "d"].iter().map(|i| json!({"id": i})).collect();
        let q = |order: Option<&str>, after: Option<&str>, before: Option<&str>, limit| ListQuery {
            limit,
            order: order.map(str::to_owned),
            after: after.map(str::to_owned),
            before: before.map(str::to_owned),
        };
        let newest = page(items.clone(), &q(None, None, None, Some(2))).unwrap();
        assert_eq!(
            (ids(&newest), newest["has_more"].as_bool()),
            (vec!["d", "c"], Some(true))
        );
        let rest = page(items.clone(), &q(Some("asc"), Some("a"), Some("d"), None)).unwrap();
        assert_eq!((ids(&rest), rest["has_more"].as_bool()), (vec!["b", "c"], Some(false)));
        assert!(page(items.clone(), &q(Some("up"), None, None, None)).is_err());
        assert!(page(items, &q(None, None, None, Some(0))).is_err());
    }
}
