//! In-flight requests of this gateway instance, and the routing of reply frames to them.
//!
//! The reply reader calls [`Hub::dispatch`] for every frame; the frame goes to the channel
//! of its request. A final frame (`end`, `error`) closes the entry. Frames of requests no
//! longer waiting (timed out, client gone) are dropped.

use foldhash::HashMap;
use std::sync::Mutex;

use llmr_protocol::Frame;
use tokio::sync::mpsc::{UnboundedReceiver, UnboundedSender, unbounded_channel};
use uuid::Uuid;

const SHARDS: usize = 16;

/// Sharded by request id, so concurrent requests rarely contend.
pub struct Hub {
    shards: [Mutex<HashMap<Uuid, UnboundedSender<Frame>>>; SHARDS],
}

impl Default for Hub {
    fn default() -> Hub {
        Hub {
            shards: std::array::from_fn(|_| Mutex::new(HashMap::default())),
        }
    }
}

impl Hub {
    fn shard(&self, id: &Uuid) -> std::sync::MutexGuard<'_, HashMap<Uuid, UnboundedSender<Frame>>> {
        let i = id.as_u128() as usize % SHARDS;
        self.shards[i].lock().unwrap_or_else(|e| e.into_inner())
    }

    /// Starts waiting for the frames of request `id`.
    pub fn register(&self, id: Uuid) -> UnboundedReceiver<Frame> {
        let (tx, rx) = unbounded_channel();
        self.shard(&id).insert(id, tx);
        rx
    }

    /// Stops waiting for request `id`.
    pub fn forget(&self, id: Uuid) {
        self.shard(&id).remove(&id);
    }

    /// Hands a frame to its request.
    pub fn dispatch(&self, frame: Frame) {
        let mut shard = self.shard(&frame.id);
        if frame.kind.is_final() {
            if let Some(tx) = shard.remove(&frame.id) {
                let _ = tx.send(frame);
            }
        } else if let Some(tx) = shard.get(&frame.id) {
            let _ = tx.send(frame);
        }
    }

    /// Requests waiting right now.
    pub fn in_flight(&self) -> usize {
        self.shards.iter().map(|s| s.lock().map_or(0, |m| m.len())).sum()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use bytes::Bytes;

    #[test]
    fn routes_frames_to_their_request_and_closes_on_end() {
        let hub = Hub::default();
        let (a, b) = (Uuid::now_v7(), Uuid::now_v7());
        let mut ra = hub.register(a);
        let mut rb = hub.register(b);
        hub.dispatch(Frame::chunk(a, 1, Bytes::from_static(b"x")));
        hub.dispatch(Frame::end(b, 1));
        hub.dispatch(Frame::end(a, 2));
        assert_eq!(ra.try_recv().unwrap().seq, 1);
        assert_eq!(ra.try_recv().unwrap().seq, 2);
        assert!(ra.try_recv().is_err());
        assert_eq!(rb.try_recv().unwrap().seq, 1);
        assert_eq!(hub.in_flight(), 0);
    }

    #[test]
    fn drops_frames_of_forgotten_requests() {
        let hub = Hub::default();
        let id = Uuid::now_v7();
        let mut rx = hub.register(id);
        hub.forget(id);
        hub.dispatch(Frame::chunk(id, 1, Bytes::new()));
        assert!(rx.try_recv().is_err());
    }
}
