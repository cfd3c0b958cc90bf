//! `POST /v1/chat/completions`: validate, publish on `requests`, answer from reply frames.

use std::sync::Arc;
use std::time::Duration;

use actix_web::{HttpRequest, HttpResponse, web};
use bytes::Bytes;
use llmr_bus::Bus;
use llmr_protocol::{ApiError, Envelope, Frame, FrameKind, Kind, Meta, chat, now_ms};
use tokio::sync::mpsc::UnboundedReceiver;
use tokio::time::Instant;
use uuid::Uuid;

use crate::{AppState, HttpError};
use llmr_bus::Hub;

/// The stream the routers read.
const REQUESTS: &str = "requests";
/// Publishing gives up after this long, so an unreachable Redis is a prompt 503.
const PUBLISH_TIMEOUT: Duration = Duration::from_millis(900);

pub async fn completions(
    req: HttpRequest,
    payload: web::Payload,
    state: web::Data<AppState>,
) -> Result<HttpResponse, HttpError> {
    let body = super::read_body(&req, payload, state.settings.server.max_body_bytes).await?;
    let parsed = chat::parse(&body)?;
    let id = Uuid::now_v7();
    let timeout_ms = state.settings.server.request_timeout_ms;
    let client_tp = req
        .headers()
        .get("traceparent")
        .and_then(|v| v.to_str().ok())
        .unwrap_or("");
    let span = tracing::info_span!("chat", request_id = %id, model = %parsed.model, stream = parsed.stream);
    llmr_telemetry::set_parent(&span, client_tp);
    let env = Envelope {
        id,
        kind: Kind::Chat,
        reply_to: state.instance.clone(),
        deadline_ms: now_ms() + timeout_ms,
        traceparent: llmr_telemetry::traceparent(&span, client_tp),
        meta: Meta {
            model: parsed.model.into_owned(),
            stream: parsed.stream,
            include_usage: parsed.include_usage,
            caller: state.instance.clone(),
            attempt: 0,
            plan: None,
            mode: String::new(),
        },
        body,
    };
    let deadline = Instant::now() + Duration::from_millis(timeout_ms);
    let stream = env.meta.stream;
    let mut rx = state.hub.register(id);
    let mut guard = InFlight {
        id,
        hub: state.hub.clone(),
        bus: state.bus.clone(),
        done: false,
    };
    match tokio::time::timeout(PUBLISH_TIMEOUT, state.bus.publish(REQUESTS, &env)).await {
        Ok(Ok(())) => {}
        Ok(Err(e)) => {
            guard.done = true;
            state.hub.forget(id);
            return Err(e.into());
        }
        Err(_) => {
            guard.done = true;
            state.hub.forget(id);
            return Err(HttpError(ApiError::Unavailable {
                message: "The message bus (Redis) did not answer in time.".into(),
            }));
        }
    }
    tracing::debug!(parent: &span, "published");

    // Wait for the head (or an error) before choosing the response shape.
    let first = next_frame(&mut rx, deadline).await;
    match first.kind {
        FrameKind::Error => {
            guard.done = true;
            Err(HttpError(first.as_error()))
        }
        FrameKind::Head => {
            let head = first.as_head().map_err(|_| {
                HttpError(ApiError::Internal {
                    message: "unreadable head frame".into(),
                })
            })?;
            if stream && head.stream {
                Ok(sse_response(rx, guard, deadline))
            } else {
                collect(rx, guard, deadline, head.status).await
            }
        }
        FrameKind::Chunk | FrameKind::End => Err(HttpError(ApiError::Internal {
            message: "reply frames arrived out of order".into(),
        })),
    }
}

/// The next frame, or an error frame when the deadline passes or the channel closes.
async fn next_frame(rx: &mut UnboundedReceiver<Frame>, deadline: Instant) -> Frame {
    match tokio::time::timeout_at(deadline, rx.recv()).await {
        Ok(Some(f)) => f,
        Ok(None) => Frame::error(
            Uuid::nil(),
            0,
            &ApiError::Internal {
                message: "the reply channel closed".into(),
            },
        ),
        Err(_) => Frame::error(Uuid::nil(), 0, &ApiError::DeadlineExceeded),
    }
}

/// A non-streamed answer: the chunks up to `end`.
async fn collect(
    mut rx: UnboundedReceiver<Frame>,
    mut guard: InFlight,
    deadline: Instant,
    status: u16,
) -> Result<HttpResponse, HttpError> {
    let mut parts: Vec<Bytes> = Vec::with_capacity(1);
    loop {
        let f = next_frame(&mut rx, deadline).await;
        match f.kind {
            FrameKind::Chunk => parts.push(f.data),
            FrameKind::End => break,
            FrameKind::Error => {
                guard.done = f.id != Uuid::nil();
                return Err(HttpError(f.as_error()));
            }
            FrameKind::Head => {}
        }
    }
    guard.done = true;
    let body = if parts.len() == 1 {
        parts.remove(0)
    } else {
        Bytes::from(parts.concat())
    };
    let status = actix_web::http::StatusCode::from_u16(status).unwrap_or(actix_web::http::StatusCode::OK);
    Ok(HttpResponse::build(status).content_type("application/json").body(body))
}

/// A streamed answer: the SSE events of each chunk frame are flushed as they arrive; the
/// frames already waiting are written together.
fn sse_response(rx: UnboundedReceiver<Frame>, guard: InFlight, deadline: Instant) -> HttpResponse {
    let stream = futures_util::stream::unfold(Some((rx, guard)), move |state| async move {
        let (mut rx, mut guard) = state?;
        let mut out: Vec<u8> = Vec::new();
        let mut f = next_frame(&mut rx, deadline).await;
        loop {
            match f.kind {
                FrameKind::Head => {}
                // Chunk frames of a stream carry SSE events ready to write.
                FrameKind::Chunk => out.extend_from_slice(&f.data),
                FrameKind::End => {
                    guard.done = true;
                    out.extend_from_slice(b"data: [DONE]\n\n");
                    return Some((Ok::<_, actix_web::Error>(Bytes::from(out)), None));
                }
                FrameKind::Error => {
                    // A real error frame closes the request upstream too; a local one
                    // (deadline) leaves the guard to cancel it.
                    guard.done = f.id != Uuid::nil();
                    out.extend_from_slice(b"data: ");
                    out.extend_from_slice(&f.as_error().to_json());
                    out.extend_from_slice(b"\n\ndata: [DONE]\n\n");
                    return Some((Ok(Bytes::from(out)), None));
                }
            }
            match rx.try_recv() {
                Ok(next) => f = next,
                Err(_) if out.is_empty() => f = next_frame(&mut rx, deadline).await,
                Err(_) => return Some((Ok(Bytes::from(out)), Some((rx, guard)))),
            }
        }
    });
    HttpResponse::Ok()
        .content_type("text/event-stream")
        .insert_header(("cache-control", "no-cache"))
        .insert_header(("x-accel-buffering", "no"))
        .streaming(stream)
}

/// A request waiting for its answer. Dropped before the answer is complete (client gone,
/// deadline passed), it forgets the request and broadcasts a cancel so the worker aborts
/// the upstream call.
struct InFlight {
    id: Uuid,
    hub: Arc<Hub>,
    bus: Bus,
    done: bool,
}

impl Drop for InFlight {
    fn drop(&mut self) {
        self.hub.forget(self.id);
        if !self.done {
            let (bus, id) = (self.bus.clone(), self.id);
            tracing::info!(request_id = %id, "client went away or the deadline passed; cancelling");
            tokio::spawn(async move {
                if let Err(e) = bus.cancel(id).await {
                    tracing::warn!(error = %e, "could not broadcast a cancel");
                }
            });
        }
    }
}
