//! Relaying a call's frames to an HTTP client as Server-Sent Events, in the dialect of the
//! API: chat completions end with `data: [DONE]` and report a late error as an OpenAI error
//! object; the Responses API has no `[DONE]` and reports one as an `error` event.

use actix_web::HttpResponse;
use bytes::Bytes;
use llmr_bus::Call;
use llmr_protocol::{ApiError, CacheStatus, FrameKind};

/// The response cache's request and answer header.
pub const CACHE_HEADER: &str = "x-llmr-cache";
use serde_json::json;

/// Which API's stream conventions apply.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Dialect {
    Chat,
    Responses,
}

impl Dialect {
    /// What ends a stream.
    fn trailer(self) -> &'static [u8] {
        match self {
            Dialect::Chat => b"data: [DONE]\n\n",
            Dialect::Responses => b"",
        }
    }

    /// `out` followed by the stream's error event and end.
    fn error_event(self, mut out: Vec<u8>, e: &ApiError) -> Bytes {
        match self {
            Dialect::Chat => {
                out.extend_from_slice(b"data: ");
                out.extend_from_slice(&e.to_json());
                out.extend_from_slice(b"\n\n");
            }
            Dialect::Responses => {
                let event = json!({"type": "error", "code": e.code(), "message": e.to_string(), "param": e.param()});
                out.extend_from_slice(b"event: error\ndata: ");
                out.extend_from_slice(event.to_string().as_bytes());
                out.extend_from_slice(b"\n\n");
            }
        }
        out.extend_from_slice(self.trailer());
        Bytes::from(out)
    }
}

/// A streamed answer: the SSE events of each chunk frame are flushed as they arrive; the
/// frames already waiting are written together. An error after the start ends the stream
/// with an error event.
pub fn relay(call: Call, dialect: Dialect, cache: Option<CacheStatus>, compress: bool) -> HttpResponse {
    let stream = futures_util::stream::unfold(Some(call), move |state| async move {
        let mut call = state?;
        let mut out: Vec<u8> = Vec::new();
        let mut next = call.next().await;
        loop {
            match next {
                Ok(f) => match f.kind {
                    FrameKind::Head => {}
                    // Chunk frames of a stream carry SSE events ready to write.
                    FrameKind::Chunk => out.extend_from_slice(&f.data),
                    FrameKind::End => {
                        out.extend_from_slice(dialect.trailer());
                        return Some((Ok::<_, actix_web::Error>(Bytes::from(out)), None));
                    }
                    FrameKind::Error => return Some((Ok(dialect.error_event(out, &f.as_error())), None)),
                },
                // Deadline or a closed channel: the call stays open, so dropping it cancels.
                Err(e) => return Some((Ok(dialect.error_event(out, &e)), None)),
            }
            match call.try_next() {
                Some(f) => next = Ok(f),
                None if out.is_empty() => next = call.next().await,
                None => return Some((Ok(Bytes::from(out)), Some(call))),
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
    r.content_type("text/event-stream")
        .insert_header(("cache-control", "no-cache"))
        .insert_header(("x-accel-buffering", "no"))
        .streaming(stream)
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
