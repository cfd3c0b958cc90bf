//! The one way to answer a request: its reply frames (head, chunks, end or error) with
//! their sequence numbers, sent to the caller's reply stream, and the knowledge of whether
//! anything reached the caller yet (after which no other attempt may run).
//!
//! It only moves frames: what goes in them (a provider's answer rewritten, a recording for
//! the response cache) is its callers' business — the provider worker's `outbox` does that.
//! Used by the provider worker, the router (tool loop, cache hits, errors it answers itself),
//! mcp-tools and responses. Each method is one round trip to the bus.

use std::time::Duration;

use bytes::Bytes;
use llmr_protocol::{ApiError, CacheStatus, Envelope, Frame, Head, NativeApi};
use uuid::Uuid;

use crate::{Bus, BusError};

/// How long a reply is sent again while the bus fails.
pub const RESEND_FOR: Duration = Duration::from_secs(5);

pub struct Replier {
    bus: Bus,
    reply_to: String,
    id: Uuid,
    seq: u32,
    started: bool,
    stream: bool,
    /// Reported in the head (`x-llmr-cache`).
    cache: Option<CacheStatus>,
    /// Reported in the head: the answer is in this API, not chat completions.
    native: Option<NativeApi>,
    /// Whether a send left a first-frame marker (see `marks_first`).
    marked: bool,
    /// What the end frame reports (a provider worker's attempt), with the prices that make
    /// its cost; the usage is filled in by [`Replier::set_usage`] or estimated.
    outcome: Option<(llmr_protocol::Outcome, Option<(f64, f64)>)>,
    /// Bytes of chunks sent (the estimate of output tokens when no usage is reported).
    sent_bytes: u64,
}

impl Replier {
    /// Answers request `id` on `reply_to`; `stream` is what the head frame says.
    pub fn new(bus: Bus, reply_to: &str, id: Uuid, stream: bool) -> Replier {
        Replier {
            bus,
            reply_to: reply_to.to_owned(),
            id,
            seq: 0,
            started: false,
            stream,
            cache: None,
            native: None,
            marked: false,
            outcome: None,
            sent_bytes: 0,
        }
    }

    /// Makes the end frame report what answered: `provider`, `model`, the attempt's number,
    /// the input estimate (tokens) and the prices (per million tokens) of its cost.
    pub fn set_attempt(&mut self, provider: &str, model: &str, attempts: u32, input_estimate: u64, prices: (f64, f64)) {
        let usage = llmr_protocol::Usage {
            prompt_tokens: input_estimate,
            ..Default::default()
        };
        let outcome = llmr_protocol::Outcome {
            provider: provider.to_owned(),
            model: model.to_owned(),
            usage,
            estimated: true,
            cost_usd: 0.0,
            attempts,
        };
        self.outcome = Some((outcome, Some(prices)));
    }

    /// Makes the end frame report `outcome` as it is (what calls made on the request's
    /// behalf cost: a tool loop's rounds, a response's chat).
    pub fn set_outcome(&mut self, outcome: Option<llmr_protocol::Outcome>) {
        self.outcome = outcome.map(|o| (o, None));
    }

    /// The usage the upstream reported (before the end frame is sent).
    pub fn set_usage(&mut self, usage: Option<llmr_protocol::Usage>) {
        if let (Some((o, _)), Some(u)) = (&mut self.outcome, usage) {
            o.usage = u;
            o.estimated = false;
        }
    }

    /// The response cache's verdict, sent in the head.
    pub fn set_cache(&mut self, cache: Option<CacheStatus>) {
        self.cache = cache;
    }

    /// Says in the head that the answer is in `native`'s API (until a frame has gone, it can
    /// be set again: a failed attempt before it is followed by another).
    pub fn set_native(&mut self, native: Option<NativeApi>) {
        self.native = native;
    }

    /// Answers `env`, streamed when its client asked for a stream.
    pub fn to(bus: Bus, env: &Envelope) -> Replier {
        Replier::new(bus, &env.reply_to, env.id, env.meta.stream)
    }

    /// Whether a frame has reached the caller.
    pub fn started(&self) -> bool {
        self.started
    }

    /// Whether a send recorded the first-frame marker (a head sent before the answer's end);
    /// an answer sent whole records none.
    pub fn marked(&self) -> bool {
        self.marked
    }

    fn next(&mut self) -> u32 {
        self.seq += 1;
        self.seq
    }

    fn head_if_needed(&mut self, frames: &mut Vec<Frame>, status: u16) {
        if !self.started {
            frames.push(Frame::head(
                self.id,
                Head {
                    status,
                    stream: self.stream,
                    cache: self.cache,
                    native: self.native,
                },
            ));
            self.started = true;
        }
    }

    fn chunk(&mut self, frames: &mut Vec<Frame>, data: Bytes) {
        self.sent_bytes += data.len() as u64;
        let seq = self.next();
        frames.push(Frame::chunk(self.id, seq, data));
    }

    /// Sends frames, again while the bus fails for up to [`RESEND_FOR`] (a slow or restarting
    /// Redis): a lost answer would leave its caller waiting until the deadline. A resend after
    /// a write that did land repeats frames; callers drop the repeats by sequence number.
    async fn send(&mut self, frames: &[Frame]) -> Result<(), BusError> {
        self.marked |= crate::marks_first(frames);
        let until = tokio::time::Instant::now() + RESEND_FOR;
        let mut pause = Duration::from_millis(50);
        loop {
            match self.bus.reply(&self.reply_to, frames).await {
                Ok(()) => return Ok(()),
                Err(e) if tokio::time::Instant::now() + pause < until => {
                    tracing::warn!(request_id = %self.id, error = %e, "could not send reply frames; sending them again");
                    tokio::time::sleep(pause).await;
                    pause = (pause * 2).min(Duration::from_millis(500));
                }
                Err(e) => return Err(e),
            }
        }
    }

    fn end_frame(&mut self, frames: &mut Vec<Frame>) {
        let seq = self.next();
        match &mut self.outcome {
            Some((o, prices)) => {
                if let Some(prices) = prices {
                    if o.estimated {
                        o.usage.completion_tokens = self.sent_bytes / 4;
                    }
                    o.usage.total_tokens = o.usage.prompt_tokens + o.usage.completion_tokens;
                    o.cost_usd = llmr_protocol::Outcome::price(&o.usage, *prices);
                }
                frames.push(Frame::end_with(self.id, seq, o));
            }
            None => frames.push(Frame::end(self.id, seq)),
        }
    }

    /// Stream bytes ready to write (SSE text: `data: …\n\n` each event, or Responses events
    /// with `event:` lines): one chunk frame; the head goes first.
    pub async fn raw(&mut self, data: Bytes) -> Result<(), BusError> {
        let mut frames = Vec::with_capacity(2);
        self.head_if_needed(&mut frames, 200);
        self.chunk(&mut frames, data);
        self.send(&frames).await
    }

    /// The last stream bytes (none when empty) and the end, in one send.
    pub async fn finish(&mut self, data: Bytes) -> Result<(), BusError> {
        if data.is_empty() {
            return self.empty(200).await;
        }
        let mut frames = Vec::with_capacity(3);
        self.head_if_needed(&mut frames, 200);
        self.chunk(&mut frames, data);
        self.end_frame(&mut frames);
        self.send(&frames).await
    }

    /// A whole stream of OpenAI events at once (one payload each): head, one chunk with
    /// every event as SSE text, end.
    pub async fn stream_all(&mut self, payloads: &[Bytes]) -> Result<(), BusError> {
        self.finish(Bytes::from(llmr_protocol::openai::sse(payloads))).await
    }

    /// A whole (non-streamed) answer: head, body, end.
    pub async fn complete(&mut self, status: u16, body: Bytes) -> Result<(), BusError> {
        let mut frames = Vec::with_capacity(3);
        self.head_if_needed(&mut frames, status);
        self.chunk(&mut frames, body);
        self.end_frame(&mut frames);
        self.send(&frames).await
    }

    /// An answer without a body (`202 Accepted` for an MCP notification): head, end.
    pub async fn empty(&mut self, status: u16) -> Result<(), BusError> {
        let mut frames = Vec::with_capacity(2);
        self.head_if_needed(&mut frames, status);
        self.end_frame(&mut frames);
        self.send(&frames).await
    }

    /// Closes a stream.
    pub async fn end(&mut self) -> Result<(), BusError> {
        self.empty(200).await
    }

    /// Ends the request with an error.
    pub async fn error(&mut self, err: &ApiError) -> Result<(), BusError> {
        let seq = if self.started { self.next() } else { 0 };
        self.started = true;
        self.send(&[Frame::error(self.id, seq, err)]).await
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::Bus;
    use llmr_protocol::FrameKind;
    use std::sync::{Arc, Mutex};

    async fn frames_of(f: impl AsyncFnOnce(&mut Replier)) -> Vec<(FrameKind, u32)> {
        let bus = Bus::memory();
        let got = Arc::new(Mutex::new(Vec::new()));
        let g = got.clone();
        let _sub = bus.subscribe_replies(
            "r",
            Arc::new(move |fr: Frame| g.lock().unwrap().push((fr.kind, fr.seq))),
        );
        let mut r = Replier::new(bus, "r", Uuid::now_v7(), true);
        f(&mut r).await;
        tokio::task::yield_now().await;
        got.lock().unwrap().clone()
    }

    #[tokio::test]
    async fn numbers_frames_in_order_with_one_head() {
        let got = frames_of(async |r| {
            r.raw(Bytes::from_static(b"data: {}\n\n")).await.unwrap();
            r.raw(Bytes::from_static(b"data: {}\n\n")).await.unwrap();
            r.end().await.unwrap();
        })
        .await;
        use FrameKind::*;
        assert_eq!(got, vec![(Head, 0), (Chunk, 1), (Chunk, 2), (End, 3)]);
    }

    #[tokio::test]
    async fn the_end_frame_reports_the_attempt_and_its_cost() {
        let bus = Bus::memory();
        let got = Arc::new(Mutex::new(Vec::new()));
        let g = got.clone();
        let _sub = bus.subscribe_replies("r", Arc::new(move |fr: Frame| g.lock().unwrap().push(fr)));
        let mut r = Replier::new(bus.clone(), "r", Uuid::now_v7(), false);
        r.set_attempt("up", "m", 2, 100, (1.0, 2.0));
        r.set_usage(Some(llmr_protocol::Usage {
            prompt_tokens: 7,
            completion_tokens: 3,
            total_tokens: 10,
        }));
        r.complete(200, Bytes::from_static(b"{}")).await.unwrap();
        // No usage reported: the input estimate and the bytes sent, at the same prices.
        let mut est = Replier::new(bus, "r", Uuid::now_v7(), false);
        est.set_attempt("up", "m", 1, 100, (1.0, 2.0));
        est.complete(200, Bytes::from_static(b"0123456789ab")).await.unwrap();
        tokio::task::yield_now().await;
        let outcomes: Vec<_> = got.lock().unwrap().iter().filter_map(Frame::as_outcome).collect();
        assert_eq!(outcomes.len(), 2);
        let (a, b) = (&outcomes[0], &outcomes[1]);
        assert_eq!((a.provider.as_str(), a.attempts, a.estimated), ("up", 2, false));
        assert!((a.cost_usd - 13e-6).abs() < 1e-12, "{a:?}");
        assert_eq!(
            (b.usage.prompt_tokens, b.usage.completion_tokens, b.estimated),
            (100, 3, true)
        );
        assert!((b.cost_usd - 106e-6).abs() < 1e-12, "{b:?}");
    }

    #[tokio::test]
    async fn an_error_before_anything_is_frame_zero() {
        let got = frames_of(async |r| r.error(&ApiError::DeadlineExceeded).await.unwrap()).await;
        assert_eq!(got, vec![(FrameKind::Error, 0)]);
        let got = frames_of(async |r| r.empty(202).await.unwrap()).await;
        assert_eq!(got, vec![(FrameKind::Head, 0), (FrameKind::End, 1)]);
    }
}
