//! Reply frames: what a worker sends back on the caller's reply stream.
//!
//! A request's frames arrive in `seq` order: one `head` (status, stream or not), any number
//! of `chunk`s (for a stream, one or more SSE events as text ready to write, `data: …\n\n`,
//! their payloads passed through as the upstream sent them; otherwise the whole body), then
//! exactly one `end` or `error` that closes the request.

use bytes::Bytes;
use serde::{Deserialize, Serialize};
use uuid::Uuid;

use crate::envelope::{DecodeError, NativeApi};
use crate::error::ApiError;

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum FrameKind {
    Head,
    Chunk,
    End,
    Error,
}

impl FrameKind {
    pub fn as_str(self) -> &'static str {
        match self {
            FrameKind::Head => "head",
            FrameKind::Chunk => "chunk",
            FrameKind::End => "end",
            FrameKind::Error => "error",
        }
    }

    fn parse(s: &[u8]) -> Option<FrameKind> {
        match s {
            b"head" => Some(FrameKind::Head),
            b"chunk" => Some(FrameKind::Chunk),
            b"end" => Some(FrameKind::End),
            b"error" => Some(FrameKind::Error),
            _ => None,
        }
    }

    /// Whether this frame closes its request.
    pub fn is_final(self) -> bool {
        matches!(self, FrameKind::End | FrameKind::Error)
    }
}

/// The data of a `head` frame.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub struct Head {
    pub status: u16,
    pub stream: bool,
    /// What the response cache did (the `x-llmr-cache` answer header), when it is on.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub cache: Option<CacheStatus>,
    /// Set when the chunks are not chat completions but the events of this API, answered
    /// natively (a `responses = true` provider given a Responses body).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub native: Option<NativeApi>,
}

/// What the response cache did for a request.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum CacheStatus {
    /// Answered from the cache.
    Hit,
    /// Looked up and not found (the answer may be stored).
    Miss,
    /// Not looked up: not cacheable (not deterministic, opted out, or its group is off).
    Bypass,
}

impl CacheStatus {
    pub fn as_str(self) -> &'static str {
        match self {
            CacheStatus::Hit => "hit",
            CacheStatus::Miss => "miss",
            CacheStatus::Bypass => "bypass",
        }
    }
}

/// Token counts, as OpenAI reports them.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct Usage {
    #[serde(default)]
    pub prompt_tokens: u64,
    #[serde(default)]
    pub completion_tokens: u64,
    #[serde(default)]
    pub total_tokens: u64,
}

/// What answered a request and what it cost: the data of the `end` frame a provider worker
/// sends (empty from others: a cache hit, a tool result). The gateway settles the caller's
/// reservation and writes the request log from it.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct Outcome {
    pub provider: String,
    /// The model the upstream was asked for.
    pub model: String,
    /// Tokens as the upstream reported them, else our estimate (`estimated`).
    pub usage: Usage,
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub estimated: bool,
    /// Cost at the target's prices (US dollars).
    pub cost_usd: f64,
    /// Upstream attempts made (failovers included).
    pub attempts: u32,
}

impl Outcome {
    /// Adds another call's outcome to this one (rounds of a tool loop): tokens, cost and
    /// attempts add up; the last provider and model are named.
    pub fn add(&mut self, other: &Outcome) {
        self.usage.prompt_tokens += other.usage.prompt_tokens;
        self.usage.completion_tokens += other.usage.completion_tokens;
        self.usage.total_tokens += other.usage.total_tokens;
        self.cost_usd += other.cost_usd;
        self.attempts += other.attempts;
        self.estimated |= other.estimated;
        self.provider.clone_from(&other.provider);
        self.model.clone_from(&other.model);
    }

    /// The cost of `usage` at prices per million tokens.
    pub fn price(usage: &Usage, (input, output): (f64, f64)) -> f64 {
        (usage.prompt_tokens as f64 * input + usage.completion_tokens as f64 * output) / 1e6
    }
}

/// One reply frame.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Frame {
    /// The request id.
    pub id: Uuid,
    pub seq: u32,
    pub kind: FrameKind,
    pub data: Bytes,
}

impl Frame {
    pub fn head(id: Uuid, head: Head) -> Frame {
        let mut data = format!(r#"{{"status":{},"stream":{}"#, head.status, head.stream);
        if let Some(c) = head.cache {
            data.push_str(&format!(r#","cache":"{}""#, c.as_str()));
        }
        if let Some(n) = head.native {
            data.push_str(match n {
                NativeApi::Responses => r#","native":"responses""#,
                NativeApi::Anthropic => r#","native":"anthropic""#,
            });
        }
        data.push('}');
        let data = Bytes::from(data);
        Frame {
            id,
            seq: 0,
            kind: FrameKind::Head,
            data,
        }
    }

    pub fn chunk(id: Uuid, seq: u32, data: Bytes) -> Frame {
        Frame {
            id,
            seq,
            kind: FrameKind::Chunk,
            data,
        }
    }

    pub fn end(id: Uuid, seq: u32) -> Frame {
        Frame {
            id,
            seq,
            kind: FrameKind::End,
            data: Bytes::new(),
        }
    }

    /// An `end` frame that says what answered and what it cost.
    pub fn end_with(id: Uuid, seq: u32, outcome: &Outcome) -> Frame {
        Frame {
            id,
            seq,
            kind: FrameKind::End,
            data: Bytes::from(serde_json::to_vec(outcome).unwrap_or_default()),
        }
    }

    /// The outcome an `end` frame carries, when it carries one.
    pub fn as_outcome(&self) -> Option<Outcome> {
        (self.kind == FrameKind::End && !self.data.is_empty())
            .then(|| serde_json::from_slice(&self.data).ok())
            .flatten()
    }

    pub fn error(id: Uuid, seq: u32, err: &ApiError) -> Frame {
        Frame {
            id,
            seq,
            kind: FrameKind::Error,
            data: Bytes::from(serde_json::to_vec(err).unwrap_or_default()),
        }
    }

    /// The head of a `head` frame.
    pub fn as_head(&self) -> Result<Head, DecodeError> {
        serde_json::from_slice(&self.data).map_err(|_| DecodeError::Invalid("data"))
    }

    /// The error of an `error` frame (an unreadable one becomes an internal error).
    pub fn as_error(&self) -> ApiError {
        serde_json::from_slice(&self.data).unwrap_or_else(|_| ApiError::Internal {
            message: "a service sent an unreadable error frame".into(),
        })
    }

    pub fn to_fields(&self) -> [(&'static str, Bytes); 4] {
        [
            ("id", Bytes::from(self.id.to_string())),
            ("seq", Bytes::from(self.seq.to_string())),
            ("type", Bytes::from_static(self.kind.as_str().as_bytes())),
            ("data", self.data.clone()),
        ]
    }

    pub fn from_fields<'a>(get: impl Fn(&str) -> Option<&'a [u8]>) -> Result<Frame, DecodeError> {
        let req = |name: &'static str| get(name).ok_or(DecodeError::Missing(name));
        let text = |name: &'static str| std::str::from_utf8(req(name)?).map_err(|_| DecodeError::Invalid(name));
        Ok(Frame {
            id: Uuid::parse_str(text("id")?).map_err(|_| DecodeError::Invalid("id"))?,
            seq: text("seq")?.parse().map_err(|_| DecodeError::Invalid("seq"))?,
            kind: FrameKind::parse(req("type")?).ok_or(DecodeError::Invalid("type"))?,
            data: Bytes::copy_from_slice(req("data")?),
        })
    }
}

/// The most frames of one request one stream entry carries ([`batch_to_fields`]).
pub const BATCH_MAX: usize = 4;

/// Field names of the frames after the first in a batch entry.
const BATCH_FIELDS: [[&str; 3]; BATCH_MAX - 1] = [
    ["seq.1", "type.1", "data.1"],
    ["seq.2", "type.2", "data.2"],
    ["seq.3", "type.3", "data.3"],
];

/// Frames of one request (at most [`BATCH_MAX`], the same id) as one stream entry: the first
/// as [`Frame::to_fields`], each next one as `seq.N`, `type.N`, `data.N` — a whole answer
/// (head, body, end) is one entry.
pub fn batch_to_fields(frames: &[Frame]) -> Vec<(&'static str, Bytes)> {
    let mut out = Vec::with_capacity(4 + 3 * frames.len().saturating_sub(1));
    let Some((first, rest)) = frames.split_first() else {
        return out;
    };
    out.extend(first.to_fields());
    for (f, names) in rest.iter().zip(BATCH_FIELDS) {
        out.push((names[0], Bytes::from(f.seq.to_string())));
        out.push((names[1], Bytes::from_static(f.kind.as_str().as_bytes())));
        out.push((names[2], f.data.clone()));
    }
    out
}

/// The frames of a stream entry written by [`batch_to_fields`] (or by `to_fields`: one).
pub fn batch_from_fields<'a>(get: impl Fn(&str) -> Option<&'a [u8]>) -> Result<Vec<Frame>, DecodeError> {
    let first = Frame::from_fields(&get)?;
    let mut out = vec![first];
    for names in BATCH_FIELDS {
        let Some(kind) = get(names[1]) else { break };
        let seq = get(names[0])
            .and_then(|s| std::str::from_utf8(s).ok()?.parse().ok())
            .ok_or(DecodeError::Invalid("seq"))?;
        out.push(Frame {
            id: out[0].id,
            seq,
            kind: FrameKind::parse(kind).ok_or(DecodeError::Invalid("type"))?,
            data: Bytes::copy_from_slice(get(names[2]).ok_or(DecodeError::Missing("data"))?),
        });
    }
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::collections::HashMap;

    #[test]
    fn an_end_frame_carries_the_outcome_and_outcomes_add_up() {
        let id = Uuid::now_v7();
        let usage = Usage {
            prompt_tokens: 10,
            completion_tokens: 2,
            total_tokens: 12,
        };
        let mut o = Outcome {
            provider: "a".into(),
            model: "m1".into(),
            usage,
            estimated: false,
            cost_usd: Outcome::price(&usage, (1.0, 5000.0)),
            attempts: 1,
        };
        assert!((o.cost_usd - 0.01001).abs() < 1e-12);
        let f = Frame::end_with(id, 3, &o);
        assert_eq!(f.as_outcome(), Some(o.clone()));
        assert_eq!(Frame::end(id, 3).as_outcome(), None);
        o.add(&Outcome {
            provider: "b".into(),
            model: "m2".into(),
            usage,
            estimated: true,
            cost_usd: 0.5,
            attempts: 2,
        });
        assert_eq!((o.provider.as_str(), o.model.as_str(), o.attempts), ("b", "m2", 3));
        assert_eq!(
            (o.usage.prompt_tokens, o.usage.total_tokens, o.estimated),
            (20, 24, true)
        );
        assert!((o.cost_usd - 0.51001).abs() < 1e-12);
    }

    #[test]
    fn a_batch_of_frames_round_trips_through_one_entry() {
        let id = Uuid::now_v7();
        let head = Head {
            status: 200,
            stream: false,
            cache: None,
            native: None,
        };
        let frames = vec![
            Frame::head(id, head),
            Frame::chunk(id, 1, Bytes::from_static(b"{\"a\":1}")),
            Frame::end(id, 2),
        ];
        let fields: HashMap<&str, Bytes> = batch_to_fields(&frames).into_iter().collect();
        let back = batch_from_fields(|k| fields.get(k).map(|b| b.as_ref())).unwrap();
        assert_eq!(back, frames);
        let one: HashMap<&str, Bytes> = frames[1].to_fields().into_iter().collect();
        assert_eq!(
            batch_from_fields(|k| one.get(k).map(|b| b.as_ref())).unwrap(),
            vec![frames[1].clone()]
        );
    }

    #[test]
    fn frames_round_trip_through_flat_fields() {
        let id = Uuid::now_v7();
        for f in [
            Frame::head(
                id,
                Head {
                    status: 200,
                    stream: true,
                    cache: Some(CacheStatus::Hit),
                    native: Some(NativeApi::Responses),
                },
            ),
            Frame::chunk(id, 1, Bytes::from_static(b"{\"x\":1}")),
            Frame::end(id, 2),
            Frame::error(id, 3, &ApiError::DeadlineExceeded),
        ] {
            let fields: HashMap<&str, Bytes> = f.to_fields().into_iter().collect();
            assert_eq!(Frame::from_fields(|k| fields.get(k).map(|b| b.as_ref())).unwrap(), f);
        }
    }

    #[test]
    fn a_native_answer_is_said_in_its_head() {
        let head = Head {
            status: 200,
            stream: true,
            cache: None,
            native: Some(NativeApi::Responses),
        };
        let f = Frame::head(Uuid::now_v7(), head);
        assert_eq!(f.data.as_ref(), br#"{"status":200,"stream":true,"native":"responses"}"#);
        assert_eq!(f.as_head().unwrap(), head);
    }

    #[test]
    fn head_and_error_data_decode() {
        let id = Uuid::now_v7();
        assert_eq!(
            Frame::head(
                id,
                Head {
                    status: 201,
                    stream: false,
                    cache: None,
                    native: None,
                }
            )
            .as_head()
            .unwrap(),
            Head {
                status: 201,
                stream: false,
                cache: None,
                native: None,
            }
        );
        let err = ApiError::ModelNotFound { model: "x".into() };
        assert_eq!(Frame::error(id, 0, &err).as_error(), err);
        assert!(Frame::end(id, 1).kind.is_final());
        assert!(!Frame::chunk(id, 1, Bytes::new()).kind.is_final());
    }
}
