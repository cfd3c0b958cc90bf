//! `GET /v1/usage?day=YYYY-MM-DD` (default: today, UTC): requests and tokens per key and
//! model — as the upstreams reported them, with estimates for the requests they reported
//! nothing for kept apart.

use actix_web::{HttpResponse, web};
use llmr_protocol::{ApiError, now_ms};
use serde::Deserialize;
use serde_json::json;

use crate::{AppState, HttpError};

#[derive(Deserialize)]
pub struct Query {
    day: Option<String>,
}

pub async fn usage(q: web::Query<Query>, state: web::Data<AppState>) -> Result<HttpResponse, HttpError> {
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
    let rows = state.store.usage_day(&day).await?;
    Ok(HttpResponse::Ok().json(json!({"object": "list", "day": day, "data": rows})))
}
