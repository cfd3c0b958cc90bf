//! The way out of a job's answer: what the worker does to an answer before its frames go
//! (the XML tool-call rewrite of a model without native tools, the SSE text of stream
//! events) and the copy it keeps for the response cache, in front of the bus's `Replier`,
//! which only moves frames. A cached answer is stored before its end frame goes, so the
//! next identical request, sent once this one is answered, finds it.

use bytes::Bytes;
use llmr_bus::{BusError, Replier};
use llmr_protocol::xmltools::AnswerRewrite;
use llmr_protocol::{ApiError, CacheStatus, NativeApi, Usage};
use llmr_store::Store;
use llmr_store::cache::CachedAnswer;

/// A job's answer on its way to the caller.
pub struct Outbox {
    out: Replier,
    /// Applied to a chat answer before it is sent (tool calls parsed from XML blocks).
    rewrite: Option<Box<dyn AnswerRewrite>>,
    /// A copy of what is sent, for the response cache.
    recording: Option<Recording>,
    /// Where the copy goes before the end frame.
    sink: Option<CacheSink>,
    /// The answer is in this API (not chat completions): said in the head, never cached.
    native: Option<NativeApi>,
}

/// Where a recorded answer is stored: the response cache entry `digest` of the plan.
pub struct CacheSink {
    pub store: Store,
    pub digest: String,
    pub ttl_ms: u64,
    /// A streamed answer (kept apart from a whole one).
    pub stream: bool,
    /// Answers with tool calls are cached too (`cache.tool_calls`).
    pub tool_calls: bool,
}

/// What a recording outbox kept: the status of the answer and every chunk's data.
#[derive(Debug, Default)]
struct Recording {
    status: Option<u16>,
    data: Vec<u8>,
    limit: usize,
    overflow: bool,
}

impl Recording {
    fn keep(&mut self, status: u16, data: &[u8]) {
        self.status.get_or_insert(status);
        if self.data.len() + data.len() > self.limit {
            self.overflow = true;
            self.data = Vec::new();
        } else if !self.overflow {
            self.data.extend_from_slice(data);
        }
    }
}

impl From<Replier> for Outbox {
    fn from(out: Replier) -> Outbox {
        Outbox {
            out,
            rewrite: None,
            recording: None,
            sink: None,
            native: None,
        }
    }
}

impl Outbox {
    /// Rewrites what follows (until set again) on its way out: whole bodies of status 200,
    /// stream events, and at the end of a stream what the rewrite still holds.
    pub fn set_rewrite(&mut self, rewrite: Option<Box<dyn AnswerRewrite>>) {
        self.rewrite = rewrite;
    }

    /// Says that the answer is in `native`'s API (in the head; such an answer is not cached).
    pub fn set_native(&mut self, native: Option<NativeApi>) {
        self.native = native;
        self.out.set_native(native);
    }

    /// Keeps a copy of the answer (up to `limit` bytes) for the response cache.
    pub fn record(&mut self, limit: usize) {
        self.recording = Some(Recording {
            limit,
            ..Recording::default()
        });
    }

    /// Keeps a copy (up to `limit` bytes) and stores it in `sink` before the end frame.
    pub fn record_to(&mut self, limit: usize, sink: CacheSink) {
        self.record(limit);
        self.sink = Some(sink);
    }

    /// Stores the recorded answer in the sink, when it is a successful chat answer within the
    /// size bound and, unless the sink allows them, without tool calls. A store that fails
    /// costs the cache entry, never the answer.
    async fn store_recording(&mut self) {
        let Some(sink) = self.sink.take() else {
            return;
        };
        let Some((status, data)) = self.take_recording() else {
            return;
        };
        let data = String::from_utf8_lossy(&data).into_owned();
        if status != 200 || (!sink.tool_calls && data.contains("\"tool_calls\"")) {
            return;
        }
        let answer = CachedAnswer {
            stream: sink.stream,
            data,
        };
        if let Err(e) = llmr_store::cache::put(&sink.store, &sink.digest, &answer, sink.ttl_ms).await {
            tracing::warn!(error = %e, "could not store an answer in the response cache");
        }
    }

    /// The recorded answer — its status and the chunks' data, concatenated — unless it
    /// outgrew its limit or is not a chat answer (a native one).
    pub fn take_recording(&mut self) -> Option<(u16, Bytes)> {
        let r = self.recording.take()?;
        (!r.overflow && self.native.is_none()).then(|| (r.status.unwrap_or(200), Bytes::from(r.data)))
    }

    fn keep(&mut self, status: u16, data: &[u8]) {
        if let Some(r) = &mut self.recording {
            r.keep(status, data);
        }
    }

    /// Stream events (one payload each, rewritten when a rewrite is set): one chunk frame of
    /// their SSE text; the head goes first.
    pub async fn events(&mut self, payloads: &[Bytes]) -> Result<(), BusError> {
        let rewritten;
        let payloads = match &mut self.rewrite {
            Some(r) => {
                rewritten = r.events(payloads);
                if rewritten.is_empty() {
                    return Ok(());
                }
                rewritten.as_slice()
            }
            None => payloads,
        };
        let data = Bytes::from(llmr_protocol::openai::sse(payloads));
        self.keep(200, &data);
        self.out.raw(data).await
    }

    /// A whole stream at once (one payload each, rewritten when a rewrite is set): head, one
    /// chunk of their SSE text, end.
    pub async fn stream_all(&mut self, payloads: &[Bytes]) -> Result<(), BusError> {
        let rewritten;
        let payloads = match &mut self.rewrite {
            Some(r) => {
                rewritten = [r.events(payloads), r.finish()].concat();
                rewritten.as_slice()
            }
            None => payloads,
        };
        let data = Bytes::from(llmr_protocol::openai::sse(payloads));
        self.keep(200, &data);
        self.store_recording().await;
        self.out.finish(data).await
    }

    /// A whole (non-streamed) answer: head, body (rewritten when 200), end.
    pub async fn complete(&mut self, status: u16, mut body: Bytes) -> Result<(), BusError> {
        if status == 200
            && let Some(r) = &mut self.rewrite
        {
            body = r.body(body);
        }
        self.keep(status, &body);
        self.store_recording().await;
        self.out.complete(status, body).await
    }

    /// Closes a stream (after what a rewrite still holds).
    pub async fn end(&mut self) -> Result<(), BusError> {
        let tail = self.rewrite.as_mut().map(|r| r.finish()).unwrap_or_default();
        let data = match tail.is_empty() {
            true => Bytes::new(),
            false => Bytes::from(llmr_protocol::openai::sse(&tail)),
        };
        self.keep(200, &data);
        self.store_recording().await;
        self.out.finish(data).await
    }

    /// Ends the request with an error.
    pub async fn error(&mut self, err: &ApiError) -> Result<(), BusError> {
        self.out.error(err).await
    }

    /// Whether a frame has reached the caller.
    pub fn started(&self) -> bool {
        self.out.started()
    }

    /// Whether a send recorded the first-frame marker (see `Replier::marked`).
    pub fn marked(&self) -> bool {
        self.out.marked()
    }

    /// The usage the upstream reported (before the end frame is sent).
    pub fn set_usage(&mut self, usage: Option<Usage>) {
        self.out.set_usage(usage);
    }

    /// The response cache's verdict, sent in the head.
    pub fn set_cache(&mut self, cache: Option<CacheStatus>) {
        self.out.set_cache(cache);
    }

    /// Makes the end frame report what answered (see `Replier::set_attempt`).
    pub fn set_attempt(&mut self, provider: &str, model: &str, attempts: u32, input_estimate: u64, prices: (f64, f64)) {
        self.out.set_attempt(provider, model, attempts, input_estimate, prices);
    }
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]
    use super::*;
    use llmr_bus::Bus;
    use llmr_protocol::Frame;
    use std::sync::{Arc, Mutex};

    /// A rewrite that drops every other event and adds one at the end.
    struct Halve(bool);

    impl AnswerRewrite for Halve {
        fn body(&mut self, _: Bytes) -> Bytes {
            Bytes::from_static(b"{\"rewritten\":true}")
        }
        fn events(&mut self, payloads: &[Bytes]) -> Vec<Bytes> {
            payloads
                .iter()
                .filter(|_| {
                    self.0 = !self.0;
                    self.0
                })
                .cloned()
                .collect()
        }
        fn finish(&mut self) -> Vec<Bytes> {
            vec![Bytes::from_static(b"{\"tail\":1}")]
        }
    }

    fn outbox() -> (Outbox, Arc<Mutex<Vec<Frame>>>, llmr_bus::Subscription) {
        let bus = Bus::memory();
        let got = Arc::new(Mutex::new(Vec::new()));
        let g = got.clone();
        let sub = bus.subscribe_replies("r", Arc::new(move |f: Frame| g.lock().unwrap().push(f)));
        let out = Outbox::from(Replier::new(bus, "r", uuid::Uuid::now_v7(), true));
        (out, got, sub)
    }

    #[tokio::test]
    async fn a_stream_is_rewritten_framed_as_sse_and_recorded_as_sent() {
        let (mut out, got, _sub) = outbox();
        out.record(1 << 10);
        out.set_rewrite(Some(Box::new(Halve(false))));
        let ev = |s: &'static str| Bytes::from_static(s.as_bytes());
        out.events(&[ev("{\"a\":1}"), ev("{\"b\":2}")]).await.unwrap();
        out.end().await.unwrap();
        tokio::task::yield_now().await;
        let sent: String = got
            .lock()
            .unwrap()
            .iter()
            .filter(|f| f.kind == llmr_protocol::FrameKind::Chunk)
            .map(|f| String::from_utf8_lossy(&f.data).into_owned())
            .collect();
        assert_eq!(sent, "data: {\"a\":1}\n\ndata: {\"tail\":1}\n\n");
        let (status, recorded) = out.take_recording().unwrap();
        assert_eq!((status, recorded.as_ref()), (200, sent.as_bytes()));
    }

    #[tokio::test]
    async fn a_native_or_oversized_answer_is_not_kept_for_the_cache() {
        let (mut out, _got, _sub) = outbox();
        out.record(4);
        out.complete(200, Bytes::from_static(b"{\"too\":\"long\"}"))
            .await
            .unwrap();
        assert_eq!(out.take_recording(), None);
        let (mut out, got, _sub) = outbox();
        out.record(1 << 10);
        out.set_native(Some(NativeApi::Responses));
        out.events(&[Bytes::from_static(b"{\"type\":\"response.created\"}")])
            .await
            .unwrap();
        assert_eq!(out.take_recording(), None);
        tokio::task::yield_now().await;
        let head = got.lock().unwrap()[0].as_head().unwrap();
        assert_eq!(head.native, Some(NativeApi::Responses));
    }
}
