//! Relaying a call's frames to an HTTP client as a stream, in the dialect of the API: chat
//! completions end with `data: [DONE]` and report a late error as an OpenAI error object;
//! the Responses API has no `[DONE]` and reports one as an `error` event; the Anthropic and
//! Ollama front doors translate each chunk into their events or NDJSON lines.

use crate::govern::Ticket;
use actix_web::HttpResponse;
use bytes::Bytes;
use llmr_bus::Call;
use llmr_protocol::openai::ChatChunk;
use llmr_protocol::{ApiError, CacheStatus, FrameKind, anthropic, ollama};

/// The response cache's request and answer header.
pub const CACHE_HEADER: &str = "x-llmr-cache";

/// Which API's stream conventions apply; the front doors of other APIs translate the
/// OpenAI chunks as they pass.
#[derive(Debug)]
pub enum Dialect {
    Chat,
    Responses,
    /// Anthropic's event sequence (`/v1/messages`).
    Anthropic(Box<anthropic::front::Events>),
    /// Ollama's NDJSON lines (`/api/chat`, `/api/generate`).
    Ollama(Box<ollama::front::Lines>),
}

impl Dialect {
    /// The stream's media type.
    pub fn content_type(&self) -> &'static str {
        match self {
            Dialect::Ollama(_) => "application/x-ndjson",
            _ => "text/event-stream",
        }
    }

    /// A chunk frame's data (OpenAI SSE events), as this dialect writes it.
    fn chunk(&mut self, data: &[u8], out: &mut Vec<u8>) {
        let chunks =
            llmr_protocol::openai::sse_payloads(data).filter_map(|p| serde_json::from_slice::<ChatChunk>(p).ok());
        match self {
            Dialect::Chat | Dialect::Responses => out.extend_from_slice(data),
            Dialect::Anthropic(e) => chunks.for_each(|c| anthropic::front::sse(&e.chunk(&c), out)),
            Dialect::Ollama(l) => chunks.for_each(|c| ollama::front::ndjson(&l.chunk(&c), out)),
        }
    }

    /// What ends a stream.
    fn trailer(&mut self, out: &mut Vec<u8>) {
        match self {
            Dialect::Chat => out.extend_from_slice(b"data: [DONE]\n\n"),
            Dialect::Responses => {}
            Dialect::Anthropic(e) => anthropic::front::sse(&e.finish(), out),
            Dialect::Ollama(l) => ollama::front::ndjson(&[l.finish()], out),
        }
    }

    /// `out` followed by the stream's error event and end.
    fn error_event(&mut self, mut out: Vec<u8>, e: &ApiError) -> Bytes {
        match self {
            Dialect::Chat => {
                out.extend_from_slice(b"data: ");
                out.extend_from_slice(&e.to_json());
                out.extend_from_slice(b"\n\n");
                self.trailer(&mut out);
            }
            Dialect::Responses => {
                let event = llmr_protocol::responses::ErrorEvent::new(e.code(), e.to_string(), e.param());
                out.extend_from_slice(b"event: error\ndata: ");
                out.extend_from_slice(event.to_json().as_bytes());
                out.extend_from_slice(b"\n\n");
            }
            // Anthropic ends a failed stream with the error event alone.
            Dialect::Anthropic(_) => {
                let error = anthropic::front::error_body(e).error;
                anthropic::front::sse(&[anthropic::StreamEvent::Error { error }], &mut out);
            }
            Dialect::Ollama(_) => ollama::front::ndjson(&[ollama::ErrorBody { error: e.message() }], &mut out),
        }
        Bytes::from(out)
    }
}

/// A streamed answer: the SSE events of each chunk frame are flushed as they arrive; the
/// frames already waiting are written together. An error after the start ends the stream
/// with an error event.
///
/// `ticket` (the request's governance) is settled when the stream ends: with the end frame's
/// outcome, or as failed; a client that goes away drops it, which settles it as cancelled.
pub fn relay(
    call: Call,
    dialect: Dialect,
    cache: Option<CacheStatus>,
    compress: bool,
    ticket: Option<Ticket>,
) -> HttpResponse {
    let content_type = dialect.content_type();
    let hit = cache == Some(CacheStatus::Hit);
    let stream = futures_util::stream::unfold(Some((call, dialect, ticket)), move |state| async move {
        let (mut call, mut dialect, mut ticket) = state?;
        let mut out: Vec<u8> = Vec::new();
        let mut next = call.next().await;
        loop {
            let failed = match next {
                Ok(f) => match f.kind {
                    FrameKind::Head => None,
                    // Chunk frames of a stream carry SSE events ready to write.
                    FrameKind::Chunk => {
                        dialect.chunk(&f.data, &mut out);
                        None
                    }
                    FrameKind::End => {
                        dialect.trailer(&mut out);
                        if let Some(mut t) = ticket.take() {
                            t.answered(200, call.outcome(), hit);
                            t.settle();
                        }
                        return Some((Ok::<_, actix_web::Error>(Bytes::from(out)), None));
                    }
                    FrameKind::Error => Some(f.as_error()),
                },
                // Deadline or a closed channel: the call stays open, so dropping it cancels.
                Err(e) => Some(e),
            };
            if let Some(e) = failed {
                if let Some(mut t) = ticket.take() {
                    t.failed(&e);
                    t.settle();
                }
                return Some((Ok(dialect.error_event(out, &e)), None));
            }
            match call.try_next() {
                Some(f) => next = Ok(f),
                None if out.is_empty() => next = call.next().await,
                None => return Some((Ok(Bytes::from(out)), Some((call, dialect, ticket)))),
            }
        }
    });
    let mut r = HttpResponse::Ok();
    if let Some(c) = cache {
        r.insert_header((CACHE_HEADER, c.as_str()));
    }
    if !compress {
        // The compression middleware leaves answers that name their encoding alone.
        r.insert_header(("content-encoding", "identity"));
    }
    r.content_type(content_type)
        .insert_header(("cache-control", "no-cache"))
        .insert_header(("x-accel-buffering", "no"))
        .streaming(stream)
}

/// [`relay`] with the ticket's rate-limit headers on the answer's head.
pub fn relay_settled(
    call: Call,
    dialect: Dialect,
    cache: Option<CacheStatus>,
    compress: bool,
    ticket: Option<Ticket>,
    wire: crate::error::Wire,
) -> HttpResponse {
    let mut headers = HttpResponse::Ok().finish();
    if let Some(t) = &ticket {
        t.decorate(wire, &mut headers);
    }
    let mut out = relay(call, dialect, cache, compress, ticket);
    for (name, value) in headers.headers() {
        out.headers_mut().insert(name.clone(), value.clone());
    }
    out
}

/// The client's `x-llmr-cache` request header, as it travels to the router.
pub fn cache_directives(req: &actix_web::HttpRequest) -> String {
    req.headers()
        .get(CACHE_HEADER)
        .and_then(|v| v.to_str().ok())
        .unwrap_or_default()
        .to_owned()
}

/// Whether the client asked for its stream to be compressed too (`x-llmr-compress-stream:
/// true`): compressed SSE may be held back by the encoder, so it is off unless asked.
pub fn compress_stream(req: &actix_web::HttpRequest) -> bool {
    req.headers()
        .get("x-llmr-compress-stream")
        .and_then(|v| v.to_str().ok())
        .is_some_and(|v| v.eq_ignore_ascii_case("true") || v == "1")
}
