//! The Responses API between the gateway and the responses service: the operations the
//! gateway hands over ([`Op`], the body of a `responses` envelope) and the SSE framing of
//! Responses events ([`EventWriter`]: an `event:` line equal to the event's `type`, a
//! `sequence_number` from 0 up by one, and no `[DONE]`), and the `error` event that ends a
//! failed stream ([`ErrorEvent`]). The Responses bodies, items, events and errors
//! themselves are typed in [`wire`].

pub mod wire;

pub use wire::{
    ArgumentsEvent, ContentPart, ConversationRef, CreateRequest, ErrorBody, ErrorDetail, ErrorEventBody,
    FunctionCallItem, FunctionCallOutputItem, Input, Item, ItemEvent, MessageContent, MessageItem, NamedChoice,
    PartEvent, Response, ResponseEvent, StreamEvent, TextConfig, TextEvent, TextFormat, Tool, ToolChoice,
};

use bytes::Bytes;
use serde::{Deserialize, Serialize};
use serde_json::Value;

/// One Responses API operation, as the gateway received it.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(tag = "op", rename_all = "snake_case")]
pub enum Op {
    /// `POST /v1/responses`: the client's body, unchanged.
    Create { body: Value },
    /// `GET /v1/responses/{id}` (with `stream=true&starting_after=N`: replay and follow).
    Retrieve {
        id: String,
        #[serde(default)]
        stream: bool,
        #[serde(default)]
        starting_after: Option<u64>,
    },
    /// `DELETE /v1/responses/{id}`.
    Delete { id: String },
    /// `POST /v1/responses/{id}/cancel` (background responses only).
    Cancel { id: String },
    /// `GET /v1/responses/{id}/input_items`.
    InputItems {
        id: String,
        #[serde(default)]
        query: ListQuery,
    },
    /// `POST /v1/responses/input_tokens`: an estimate of the input's tokens.
    InputTokens { body: Value },
    /// `POST /v1/responses/compact`: a conversation's items compacted into a shorter input.
    Compact { body: Value },
    /// `POST /v1/conversations`.
    ConversationCreate { body: Value },
    /// `GET /v1/conversations/{id}`.
    ConversationRetrieve { id: String },
    /// `POST /v1/conversations/{id}`: a metadata update.
    ConversationUpdate { id: String, body: Value },
    /// `DELETE /v1/conversations/{id}`.
    ConversationDelete { id: String },
    /// `POST /v1/conversations/{id}/items`.
    ItemsCreate { id: String, body: Value },
    /// `GET /v1/conversations/{id}/items`.
    ItemsList {
        id: String,
        #[serde(default)]
        query: ListQuery,
    },
    /// `GET /v1/conversations/{id}/items/{item_id}`.
    ItemRetrieve { id: String, item_id: String },
    /// `DELETE /v1/conversations/{id}/items/{item_id}`.
    ItemDelete { id: String, item_id: String },
}

/// Paging of a list endpoint (`limit`, `order`, `after`, `before`).
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct ListQuery {
    pub limit: Option<u32>,
    pub order: Option<String>,
    pub after: Option<String>,
    pub before: Option<String>,
}

/// The `error` event that ends a failed stream (`code` and `param` null when none).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ErrorEvent {
    #[serde(rename = "type")]
    pub kind: String,
    pub code: Option<String>,
    pub message: String,
    pub param: Option<String>,
}

impl ErrorEvent {
    /// An error event saying `message`.
    pub fn new(code: Option<&str>, message: impl Into<String>, param: Option<&str>) -> ErrorEvent {
        ErrorEvent {
            kind: "error".into(),
            code: code.map(str::to_owned),
            message: message.into(),
            param: param.map(str::to_owned),
        }
    }

    /// The JSON text.
    pub fn to_json(&self) -> String {
        serde_json::to_string(self).unwrap_or_default()
    }
}

/// Writes Responses stream events as SSE, numbering them.
#[derive(Debug, Default)]
pub struct EventWriter {
    next: u64,
}

impl EventWriter {
    /// Numbering from `next` on (a resumed stream continues where it stood).
    pub fn starting_at(next: u64) -> EventWriter {
        EventWriter { next }
    }

    /// The number the next event gets.
    pub fn next_sequence(&self) -> u64 {
        self.next
    }

    /// Numbers `event` (an object with a `type`) and returns it as JSON text.
    pub fn number(&mut self, mut event: Value) -> String {
        if let Value::Object(m) = &mut event {
            m.insert("sequence_number".into(), Value::from(self.next));
        }
        self.next += 1;
        event.to_string()
    }
}

/// The `type` of an event, read without parsing the rest.
#[derive(Deserialize)]
struct EventType<'a> {
    #[serde(rename = "type", borrow, default)]
    kind: Option<std::borrow::Cow<'a, str>>,
}

/// SSE text of numbered events (each a JSON object with a `type`): `event: {type}` and
/// `data: {json}` per event.
pub fn sse(events: &[String]) -> Bytes {
    let mut out = Vec::with_capacity(events.iter().map(|e| e.len() + 48).sum());
    for e in events {
        let typed = serde_json::from_str::<EventType<'_>>(e).ok();
        let ty = typed.as_ref().and_then(|t| t.kind.as_deref()).unwrap_or("message");
        out.extend_from_slice(b"event: ");
        out.extend_from_slice(ty.as_bytes());
        out.extend_from_slice(b"\ndata: ");
        out.extend_from_slice(e.as_bytes());
        out.extend_from_slice(b"\n\n");
    }
    Bytes::from(out)
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn events_are_numbered_from_zero_and_framed_by_type() {
        let mut w = EventWriter::default();
        let a = w.number(json!({"type": "response.created", "response": {}}));
        let b = w.number(json!({"type": "response.output_text.delta", "delta": "hi"}));
        assert_eq!(w.next_sequence(), 2);
        let text = String::from_utf8(sse(&[a, b]).to_vec()).unwrap();
        assert_eq!(
            text,
            "event: response.created\ndata: {\"response\":{},\"sequence_number\":0,\"type\":\"response.created\"}\n\n\
             event: response.output_text.delta\ndata: {\"delta\":\"hi\",\"sequence_number\":1,\"type\":\"response.output_text.delta\"}\n\n"
        );
        assert!(!text.contains("[DONE]"));
    }

    #[test]
    fn ops_round_trip_as_json() {
        let op = Op::Retrieve {
            id: "resp_1".into(),
            stream: true,
            starting_after: Some(3),
        };
        let text = serde_json::to_string(&op).unwrap();
        assert_eq!(serde_json::from_str::<Op>(&text).unwrap(), op);
        let create: Op = serde_json::from_value(json!({"op": "create", "body": {"model": "m"}})).unwrap();
        assert_eq!(
            create,
            Op::Create {
                body: json!({"model": "m"})
            }
        );
    }
}
