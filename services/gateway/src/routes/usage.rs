//! `GET /v1/usage?day=YYYY-MM-DD` (default: today, UTC): requests and tokens per key and
//! model — as the upstreams reported them, with estimates for the requests they reported
//! nothing for kept apart. A virtual key is answered with its own figures only: its spend
//! rows of the day, per model (requests, tokens, dollars), never the provider keys'.

use actix_web::{HttpResponse, web};
use llmr_protocol::{ApiError, now_ms};
use serde::Deserialize;
use serde_json::json;

use crate::{AppState, HttpError};

#[derive(Deserialize)]
pub struct Query {
    day: Option<String>,
}

pub async fn usage(
    req: actix_web::HttpRequest,
    q: web::Query<Query>,
    state: web::Data<AppState>,
) -> Result<HttpResponse, HttpError> {
    let day = q.into_inner().day.unwrap_or_else(|| llmr_store::utc_day(now_ms()));
    let valid = day.len() == 10
        && day.bytes().enumerate().all(|(i, b)| {
            if i == 4 || i == 7 {
                b == b'-'
            } else {
                b.is_ascii_digit()
            }
        });
    if !valid {
        return Err(HttpError(ApiError::invalid(
            "`day` must be a date as YYYY-MM-DD.",
            Some("day"),
        )));
    }
    if let crate::keys::Identity::Key(c) = super::models::identity(&req) {
        let data: Vec<_> = state
            .store
            .gov_spend(&day, &day)
            .await?
            .into_iter()
            .filter(|r| r.key == c.key.id)
            .map(|r| {
                json!({"model": r.model, "requests": r.requests, "input_tokens": r.input_tokens,
                       "output_tokens": r.output_tokens, "spend_usd": llmr_store::governance::usd(r.spend_micros)})
            })
            .collect();
        return Ok(HttpResponse::Ok().json(json!({"object": "list", "day": day, "key": c.key.id, "data": data})));
    }
    let rows = state.store.usage_day(&day).await?;
    Ok(HttpResponse::Ok().json(json!({"object": "list", "day": day, "data": rows})))
}
