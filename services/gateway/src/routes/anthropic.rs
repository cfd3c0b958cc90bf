//! Anthropic's Messages API as a front door: `POST /v1/messages` (plain, and streamed as
//! Anthropic's event sequence) and `POST /v1/messages/count_tokens`. The body is translated
//! by `llmr_protocol::anthropic::front` into a chat completion that is routed like any other
//! (groups, failover, usage); the client's own body travels beside it, so an Anthropic
//! target gets it intact. Errors are in Anthropic's shape.

use actix_web::{HttpRequest, HttpResponse, web};
use bytes::Bytes;
use llmr_protocol::anthropic::TokenCount;
use llmr_protocol::anthropic::front::{self, Events};
use llmr_protocol::openai::ChatCompletion;
use llmr_protocol::{Endpoint, NativeBody, chat};
use serde::Deserialize;
use serde_json::Value;

use super::sse::Dialect;
use crate::error::{Wire, WireError};
use crate::{AppState, HttpError};

/// `POST /v1/messages`.
pub async fn messages(
    req: HttpRequest,
    payload: web::Payload,
    state: web::Data<AppState>,
) -> Result<HttpResponse, WireError> {
    serve(&req, payload, &state)
        .await
        .map_err(WireError::to(Wire::Anthropic))
}

async fn serve(req: &HttpRequest, payload: web::Payload, state: &AppState) -> Result<HttpResponse, HttpError> {
    let (raw, native) = super::read_json(req, payload, state).await?;
    let body = Bytes::from(front::chat_request(&native)?.to_string());
    let parsed = chat::parse(&body)?.into_owned();
    let estimate = chat::estimate_tokens(body.len());
    let mut p = super::chat::publish(
        req,
        state,
        body,
        parsed,
        Endpoint::Chat,
        Some(NativeBody::Anthropic(raw)),
    )
    .await?;
    let events = Events::new(&p.model, estimate);
    if p.streams() {
        let compress = super::sse::compress_stream(req);
        return Ok(p.relay(Dialect::Anthropic(Box::new(events)), compress, Wire::Anthropic));
    }
    let completion = p.json().await?;
    if p.stream {
        // Asked for a stream, answered whole (a cached answer): the same events at once.
        let resp = whole_as_events(events, &completion);
        return Ok(p.finish(Wire::Anthropic, resp));
    }
    let resp = HttpResponse::Ok().json(front::message(&completion, &p.model));
    Ok(p.finish(Wire::Anthropic, resp))
}

/// A whole completion as one burst of Anthropic events.
fn whole_as_events(mut events: Events, completion: &Value) -> HttpResponse {
    let mut out = Vec::new();
    if let Ok(c) = ChatCompletion::deserialize(completion) {
        for chunk in c.to_chunks(true) {
            front::sse(&events.chunk(&chunk), &mut out);
        }
    }
    front::sse(&events.finish(), &mut out);
    HttpResponse::Ok().content_type("text/event-stream").body(out)
}

/// `POST /v1/messages/count_tokens`: an estimate from the translated request's size (a
/// quarter of its JSON bytes), the same the gateway uses everywhere it has no tokenizer.
pub async fn count_tokens(
    req: HttpRequest,
    payload: web::Payload,
    state: web::Data<AppState>,
) -> Result<HttpResponse, WireError> {
    let count = async {
        let (_, native) = super::read_json(&req, payload, &state).await?;
        let mut messages = front::parse(&native)?;
        // count_tokens takes no max_tokens.
        messages.max_tokens.get_or_insert(1);
        let body = front::chat_request_of(&messages)?.to_value().to_string();
        Ok::<_, HttpError>(chat::estimate_tokens(body.len()))
    };
    let input_tokens = count.await.map_err(WireError::to(Wire::Anthropic))?;
    Ok(HttpResponse::Ok().json(TokenCount { input_tokens }))
}
