//! The bus envelope: one stream entry of work, encoded as flat stream fields.
//!
//! `body` travels as the raw JSON bytes the client sent (never JSON wrapped in JSON); the
//! plan, when present, is its own field.

use bytes::Bytes;
use uuid::Uuid;

use crate::plan::Plan;

/// What an envelope asks for.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Kind {
    /// A chat completion from a client, for the router.
    Chat,
    /// A routed chat completion with a plan, for a provider worker.
    Job,
    /// An MCP JSON-RPC message from a client, for mcp-tools (`meta.caller` is the session,
    /// `meta.mode` the tool mode).
    Mcp,
    /// A tool call from inside the cluster (the router's tool loop), for mcp-tools: the body
    /// is `{"name": …, "arguments": {…}}`, the answer an MCP `CallToolResult`.
    Tool,
}

impl Kind {
    pub fn as_str(self) -> &'static str {
        match self {
            Kind::Chat => "chat",
            Kind::Job => "job",
            Kind::Mcp => "mcp",
            Kind::Tool => "tool",
        }
    }

    fn parse(s: &[u8]) -> Option<Kind> {
        match s {
            b"chat" => Some(Kind::Chat),
            b"job" => Some(Kind::Job),
            b"mcp" => Some(Kind::Mcp),
            b"tool" => Some(Kind::Tool),
            _ => None,
        }
    }
}

/// Facts about the request that travel beside the body so no consumer re-parses it.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Meta {
    /// The model the client asked for.
    pub model: String,
    /// Whether the client asked for a stream.
    pub stream: bool,
    /// Whether the client asked for a usage chunk at the end of a stream.
    pub include_usage: bool,
    /// Who is calling (the gateway instance, later the API key's identity).
    pub caller: String,
    /// How many times this work was delivered before (reclaims).
    pub attempt: u32,
    /// The routing plan, set by the router on jobs.
    pub plan: Option<Plan>,
    /// A free-form mode travelling with the request (MCP: `discovery`); empty for none.
    pub mode: String,
}

/// One unit of work on a stream.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Envelope {
    /// The request id (UUID v7); reply frames carry it.
    pub id: Uuid,
    pub kind: Kind,
    /// The caller instance whose reply stream gets the frames.
    pub reply_to: String,
    /// Unix milliseconds after which the work is dropped and answered with an error.
    pub deadline_ms: u64,
    /// W3C trace context of the caller.
    pub traceparent: String,
    /// The raw JSON request body.
    pub body: Bytes,
    pub meta: Meta,
}

/// Why stream fields could not be read as an envelope or frame.
#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum DecodeError {
    #[error("stream entry lacks field `{0}`")]
    Missing(&'static str),
    #[error("stream entry has an invalid `{0}`")]
    Invalid(&'static str),
}

impl Envelope {
    /// Whether the deadline has passed at `now_ms`.
    pub fn expired(&self, now_ms: u64) -> bool {
        now_ms >= self.deadline_ms
    }

    /// Milliseconds left before the deadline (0 when passed).
    pub fn remaining_ms(&self, now_ms: u64) -> u64 {
        self.deadline_ms.saturating_sub(now_ms)
    }

    /// The flat stream fields of this envelope.
    pub fn to_fields(&self) -> Vec<(&'static str, Bytes)> {
        let m = &self.meta;
        let mut f = vec![
            ("id", Bytes::from(self.id.to_string())),
            ("kind", Bytes::from_static(self.kind.as_str().as_bytes())),
            ("reply_to", Bytes::from(self.reply_to.clone())),
            ("deadline_ms", Bytes::from(self.deadline_ms.to_string())),
            ("traceparent", Bytes::from(self.traceparent.clone())),
            ("model", Bytes::from(m.model.clone())),
            ("stream", Bytes::from_static(flag(m.stream))),
            ("include_usage", Bytes::from_static(flag(m.include_usage))),
            ("caller", Bytes::from(m.caller.clone())),
            ("attempt", Bytes::from(m.attempt.to_string())),
            ("body", self.body.clone()),
        ];
        if !m.mode.is_empty() {
            f.push(("mode", Bytes::from(m.mode.clone())));
        }
        if let Some(plan) = &m.plan {
            // A plan is a handful of short strings; serializing it cannot fail.
            f.push(("plan", Bytes::from(serde_json::to_vec(plan).unwrap_or_default())));
        }
        f
    }

    /// Reads an envelope back from stream fields; `get` looks a field up by name.
    pub fn from_fields<'a>(get: impl Fn(&str) -> Option<&'a [u8]>) -> Result<Envelope, DecodeError> {
        let req = |name: &'static str| get(name).ok_or(DecodeError::Missing(name));
        let text = |name: &'static str| -> Result<&'a str, DecodeError> {
            std::str::from_utf8(req(name)?).map_err(|_| DecodeError::Invalid(name))
        };
        let num = |name: &'static str| -> Result<u64, DecodeError> {
            text(name)?.parse().map_err(|_| DecodeError::Invalid(name))
        };
        let plan = match get("plan") {
            Some(raw) => Some(serde_json::from_slice(raw).map_err(|_| DecodeError::Invalid("plan"))?),
            None => None,
        };
        Ok(Envelope {
            id: Uuid::parse_str(text("id")?).map_err(|_| DecodeError::Invalid("id"))?,
            kind: Kind::parse(req("kind")?).ok_or(DecodeError::Invalid("kind"))?,
            reply_to: text("reply_to")?.to_owned(),
            deadline_ms: num("deadline_ms")?,
            traceparent: text("traceparent")?.to_owned(),
            body: Bytes::copy_from_slice(req("body")?),
            meta: Meta {
                model: text("model")?.to_owned(),
                stream: req("stream")? == b"1",
                include_usage: req("include_usage")? == b"1",
                caller: text("caller")?.to_owned(),
                attempt: num("attempt")? as u32,
                plan,
                mode: match get("mode") {
                    Some(raw) => std::str::from_utf8(raw)
                        .map_err(|_| DecodeError::Invalid("mode"))?
                        .to_owned(),
                    None => String::new(),
                },
            },
        })
    }
}

fn flag(b: bool) -> &'static [u8] {
    if b { b"1" } else { b"0" }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::plan::Attempt;
    use std::collections::HashMap;

    fn sample() -> Envelope {
        Envelope {
            id: Uuid::now_v7(),
            kind: Kind::Job,
            reply_to: "gw-1".into(),
            deadline_ms: 42,
            traceparent: "00-0af7651916cd43dd8448eb211c80319c-b7ad6b7169203331-01".into(),
            body: Bytes::from_static(br#"{"model":"m","messages":[]}"#),
            meta: Meta {
                model: "m".into(),
                stream: true,
                include_usage: false,
                caller: "gw-1".into(),
                attempt: 2,
                plan: Some(Plan {
                    pool: "default".into(),
                    attempts: vec![Attempt {
                        key: Some(1),
                        probe: true,
                        ..Attempt::new("p", "u")
                    }],
                    wait_ms: 5,
                }),
                mode: "discovery".into(),
            },
        }
    }

    #[test]
    fn round_trips_through_flat_fields() {
        let env = sample();
        let fields: HashMap<&str, Bytes> = env.to_fields().into_iter().collect();
        let back = Envelope::from_fields(|k| fields.get(k).map(|b| b.as_ref())).unwrap();
        assert_eq!(back, env);
    }

    #[test]
    fn body_is_raw_bytes_not_wrapped_json() {
        let env = sample();
        let fields: HashMap<&str, Bytes> = env.to_fields().into_iter().collect();
        assert_eq!(fields["body"].as_ref(), env.body.as_ref());
    }

    #[test]
    fn rejects_missing_and_invalid_fields() {
        let env = sample();
        let mut fields: HashMap<&str, Bytes> = env.to_fields().into_iter().collect();
        fields.remove("reply_to");
        assert_eq!(
            Envelope::from_fields(|k| fields.get(k).map(|b| b.as_ref())),
            Err(DecodeError::Missing("reply_to"))
        );
        fields.insert("reply_to", Bytes::from_static(b"x"));
        fields.insert("deadline_ms", Bytes::from_static(b"soon"));
        assert_eq!(
            Envelope::from_fields(|k| fields.get(k).map(|b| b.as_ref())),
            Err(DecodeError::Invalid("deadline_ms"))
        );
    }

    #[test]
    fn expiry_follows_the_deadline() {
        let env = sample();
        assert!(!env.expired(41));
        assert!(env.expired(42));
        assert_eq!(env.remaining_ms(40), 2);
        assert_eq!(env.remaining_ms(50), 0);
    }
}
