//! Sends one request's reply frames in order, and knows whether anything reached the caller.

use bytes::Bytes;
use llmr_bus::{Bus, BusError};
use llmr_protocol::{ApiError, Frame, Head};
use uuid::Uuid;

pub struct Replier {
    bus: Bus,
    reply_to: String,
    id: Uuid,
    seq: u32,
    started: bool,
    stream: bool,
}

impl Replier {
    pub fn new(bus: Bus, reply_to: String, id: Uuid, stream: bool) -> Replier {
        Replier {
            bus,
            reply_to,
            id,
            seq: 0,
            started: false,
            stream,
        }
    }

    /// Whether a frame has reached the caller (after which no other attempt may run).
    pub fn started(&self) -> bool {
        self.started
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
                },
            ));
            self.started = true;
        }
    }

    /// Stream events (one SSE payload each): one chunk frame carrying them as SSE text
    /// (`data: …\n\n` each), in one round trip; the head goes first.
    pub async fn events(&mut self, payloads: Vec<Bytes>) -> Result<(), BusError> {
        let mut frames = Vec::with_capacity(2);
        self.head_if_needed(&mut frames, 200);
        let len = payloads.iter().map(|p| p.len() + 8).sum();
        let mut sse = Vec::with_capacity(len);
        for p in &payloads {
            sse.extend_from_slice(b"data: ");
            sse.extend_from_slice(p);
            sse.extend_from_slice(b"\n\n");
        }
        let seq = self.next();
        frames.push(Frame::chunk(self.id, seq, Bytes::from(sse)));
        self.bus.reply(&self.reply_to, &frames).await
    }

    /// A whole (non-streamed) answer: head, body, end, in one round trip.
    pub async fn complete(&mut self, status: u16, body: Bytes) -> Result<(), BusError> {
        let mut frames = Vec::with_capacity(3);
        self.head_if_needed(&mut frames, status);
        let seq = self.next();
        frames.push(Frame::chunk(self.id, seq, body));
        let seq = self.next();
        frames.push(Frame::end(self.id, seq));
        self.bus.reply(&self.reply_to, &frames).await
    }

    /// Closes a stream.
    pub async fn end(&mut self) -> Result<(), BusError> {
        let mut frames = Vec::with_capacity(2);
        self.head_if_needed(&mut frames, 200);
        let seq = self.next();
        frames.push(Frame::end(self.id, seq));
        self.bus.reply(&self.reply_to, &frames).await
    }

    /// Ends the request with an error.
    pub async fn error(&mut self, err: &ApiError) -> Result<(), BusError> {
        let seq = if self.started { self.next() } else { 0 };
        self.started = true;
        self.bus.reply(&self.reply_to, &[Frame::error(self.id, seq, err)]).await
    }
}
