//! Chat completion chunks → Responses stream events and output items.
//!
//! Every output item is announced (`response.output_item.added`, and for text
//! `response.content_part.added`) before its first delta, each item has its own
//! `output_index`, and every item is closed (`…done` events, `response.output_item.done`)
//! when the answer ends. Events are returned unnumbered; the caller numbers and sends them.

use llmr_protocol::responses::wire;
use llmr_protocol::responses::{
    ArgumentsEvent, ContentPart, FunctionCallItem, ItemEvent, MessageContent, MessageItem, PartEvent, StreamEvent,
    TextEvent,
};
use serde_json::{Map, Value, json};

use crate::convert::new_id;

enum Item {
    Text {
        id: String,
        text: String,
    },
    Call {
        id: String,
        call_id: String,
        name: String,
        arguments: String,
    },
}

/// The state of one answer being translated.
#[derive(Default)]
pub struct Translator {
    items: Vec<Item>,
    text_item: Option<usize>,
    /// chat tool-call index → output index
    calls: Vec<(u64, usize)>,
    pub usage: Option<Value>,
    pub finish_reason: Option<String>,
    pub model: Option<String>,
}

impl Translator {
    /// The events of one chat chunk (`choices[0].delta`, `usage`, `model`).
    pub fn chunk(&mut self, chunk: &Value, out: &mut Vec<Value>) {
        if let Some(m) = chunk["model"].as_str() {
            self.model.get_or_insert_with(|| m.to_owned());
        }
        if chunk["usage"].is_object() {
            self.usage = Some(chunk["usage"].clone());
        }
        let Some(choice) = chunk["choices"].get(0) else { return };
        if let Some(r) = choice["finish_reason"].as_str() {
            self.finish_reason = Some(r.to_owned());
        }
        let delta = &choice["delta"];
        if let Some(text) = delta["content"].as_str().filter(|t| !t.is_empty()) {
            self.text(text, out);
        }
        for call in delta["tool_calls"].as_array().into_iter().flatten() {
            self.call(call, out);
        }
    }

    fn text(&mut self, text: &str, out: &mut Vec<Value>) {
        let index = match self.text_item {
            Some(i) => i,
            None => {
                let id = new_id("msg");
                let index = self.items.len();
                let item = message_item(&id, "in_progress", Vec::new());
                out.push(StreamEvent::OutputItemAdded(item_event(index, item)).to_value());
                let part = ContentPart::output_text("");
                out.push(StreamEvent::ContentPartAdded(part_event(&id, index, part)).to_value());
                self.items.push(Item::Text {
                    id,
                    text: String::new(),
                });
                self.text_item = Some(index);
                index
            }
        };
        if let Item::Text { id, text: all } = &mut self.items[index] {
            all.push_str(text);
            let delta = text_event(id, index, Some(text.to_owned()), None);
            out.push(StreamEvent::OutputTextDelta(delta).to_value());
        }
    }

    fn call(&mut self, call: &Value, out: &mut Vec<Value>) {
        let chat_index = call["index"].as_u64().unwrap_or(0);
        let index = match self.calls.iter().find(|(c, _)| *c == chat_index) {
            Some((_, i)) => *i,
            None => {
                let id = new_id("fc");
                let call_id = call["id"].as_str().map_or_else(|| new_id("call"), str::to_owned);
                let name = call["function"]["name"].as_str().unwrap_or_default().to_owned();
                let index = self.items.len();
                let item = call_item(&id, "in_progress", &call_id, &name, "");
                out.push(StreamEvent::OutputItemAdded(item_event(index, item)).to_value());
                self.items.push(Item::Call {
                    id,
                    call_id,
                    name,
                    arguments: String::new(),
                });
                self.calls.push((chat_index, index));
                index
            }
        };
        if let Item::Call {
            id, name, arguments, ..
        } = &mut self.items[index]
        {
            if name.is_empty()
                && let Some(n) = call["function"]["name"].as_str()
            {
                n.clone_into(name);
            }
            if let Some(d) = call["function"]["arguments"].as_str().filter(|d| !d.is_empty()) {
                arguments.push_str(d);
                let delta = arguments_event(id, index, Some(d.to_owned()), None);
                out.push(StreamEvent::FunctionCallArgumentsDelta(delta).to_value());
            }
        }
    }

    /// Closes every item; returns the output items of the response.
    pub fn finish(&mut self, out: &mut Vec<Value>) -> Vec<Value> {
        let mut output = Vec::with_capacity(self.items.len());
        for (index, item) in self.items.iter().enumerate() {
            let done = match item {
                Item::Text { id, text } => {
                    let part = ContentPart::output_text(text.clone());
                    let text_done = text_event(id, index, None, Some(text.clone()));
                    out.push(StreamEvent::OutputTextDone(text_done).to_value());
                    out.push(StreamEvent::ContentPartDone(part_event(id, index, part.clone())).to_value());
                    message_item(id, "completed", vec![part])
                }
                Item::Call {
                    id,
                    call_id,
                    name,
                    arguments,
                } => {
                    let args_done = arguments_event(id, index, None, Some((name, arguments)));
                    out.push(StreamEvent::FunctionCallArgumentsDone(args_done).to_value());
                    call_item(id, "completed", call_id, name, arguments)
                }
            };
            let done = item_event(index, done);
            output.push(serde_json::to_value(&done.item).unwrap_or(Value::Null));
            out.push(StreamEvent::OutputItemDone(done).to_value());
        }
        output
    }
}

/// An assistant message item.
fn message_item(id: &str, status: &str, parts: Vec<ContentPart>) -> wire::Item {
    wire::Item::Message(MessageItem {
        id: Some(id.to_owned()),
        role: "assistant".into(),
        content: MessageContent::Parts(parts),
        status: Some(status.to_owned()),
        extra: Map::new(),
    })
}

/// A function call item.
fn call_item(id: &str, status: &str, call_id: &str, name: &str, arguments: &str) -> wire::Item {
    wire::Item::FunctionCall(FunctionCallItem {
        id: Some(id.to_owned()),
        status: Some(status.to_owned()),
        call_id: call_id.to_owned(),
        name: name.to_owned(),
        arguments: arguments.to_owned(),
        extra: Map::new(),
    })
}

fn item_event(output_index: usize, item: wire::Item) -> ItemEvent {
    ItemEvent {
        output_index,
        item,
        extra: Map::new(),
    }
}

/// A content part event of an answer's one text part.
fn part_event(item_id: &str, output_index: usize, part: ContentPart) -> PartEvent {
    PartEvent {
        item_id: item_id.to_owned(),
        output_index,
        content_index: 0,
        part,
        extra: Map::new(),
    }
}

/// An `output_text` delta (`delta`) or done (`text`) event, with no logprobs.
fn text_event(item_id: &str, output_index: usize, delta: Option<String>, text: Option<String>) -> TextEvent {
    TextEvent {
        item_id: item_id.to_owned(),
        output_index,
        content_index: 0,
        delta,
        text,
        logprobs: Some(Vec::new()),
        extra: Map::new(),
    }
}

/// A `function_call_arguments` delta (`delta`) or done (`name` and `arguments`) event.
fn arguments_event(
    item_id: &str,
    output_index: usize,
    delta: Option<String>,
    done: Option<(&str, &str)>,
) -> ArgumentsEvent {
    ArgumentsEvent {
        item_id: item_id.to_owned(),
        output_index,
        delta,
        name: done.map(|(n, _)| n.to_owned()),
        arguments: done.map(|(_, a)| a.to_owned()),
        extra: Map::new(),
    }
}

/// Chat usage as Responses usage.
pub fn usage(chat: &Value) -> Value {
    let input = chat["prompt_tokens"].as_u64().unwrap_or(0);
    let output = chat["completion_tokens"].as_u64().unwrap_or(0);
    json!({
        "input_tokens": input,
        "input_tokens_details": {"cached_tokens": chat["prompt_tokens_details"]["cached_tokens"].as_u64().unwrap_or(0)},
        "output_tokens": output,
        "output_tokens_details": {"reasoning_tokens": chat["completion_tokens_details"]["reasoning_tokens"].as_u64().unwrap_or(0)},
        "total_tokens": chat["total_tokens"].as_u64().unwrap_or(input + output),
    })
}

/// The messages a chain continues from after this output.
pub fn output_messages(output: &[Value]) -> Vec<Value> {
    crate::convert::messages(
        &output
            .iter()
            .map(|item| {
                if item["type"] == "message" {
                    json!({"type": "message", "role": "assistant", "content": item["content"]})
                } else {
                    item.clone()
                }
            })
            .collect::<Vec<_>>(),
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    fn types(events: &[Value]) -> Vec<&str> {
        events.iter().map(|e| e["type"].as_str().unwrap()).collect()
    }

    #[test]
    fn events_and_items_have_openai_shapes() {
        let mut t = Translator::default();
        let mut ev = Vec::new();
        t.chunk(&json!({"choices": [{"delta": {"content": "Hi"}}]}), &mut ev);
        t.chunk(
            &json!({"choices": [{"delta": {"tool_calls": [
            {"index": 0, "id": "call_a", "function": {"name": "f", "arguments": "{}"}}]}}]}),
            &mut ev,
        );
        let output = t.finish(&mut ev);
        let (msg, fc) = (output[0]["id"].clone(), output[1]["id"].clone());
        let text_part = json!({"type": "output_text", "text": "Hi", "annotations": []});
        let message =
            json!({"id": msg, "type": "message", "status": "completed", "role": "assistant", "content": [text_part]});
        let call = json!({"id": fc, "type": "function_call", "status": "completed", "call_id": "call_a", "name": "f", "arguments": "{}"});
        assert_eq!(output, [message.clone(), call.clone()]);
        assert_eq!(
            ev,
            [
                json!({"type": "response.output_item.added", "output_index": 0,
                    "item": {"id": msg, "type": "message", "status": "in_progress", "role": "assistant", "content": []}}),
                json!({"type": "response.content_part.added", "item_id": msg, "output_index": 0, "content_index": 0,
                    "part": {"type": "output_text", "text": "", "annotations": []}}),
                json!({"type": "response.output_text.delta", "item_id": msg, "output_index": 0, "content_index": 0,
                    "delta": "Hi", "logprobs": []}),
                json!({"type": "response.output_item.added", "output_index": 1,
                    "item": {"id": fc, "type": "function_call", "status": "in_progress", "call_id": "call_a", "name": "f", "arguments": ""}}),
                json!({"type": "response.function_call_arguments.delta", "item_id": fc, "output_index": 1, "delta": "{}"}),
                json!({"type": "response.output_text.done", "item_id": msg, "output_index": 0, "content_index": 0,
                    "text": "Hi", "logprobs": []}),
                json!({"type": "response.content_part.done", "item_id": msg, "output_index": 0, "content_index": 0, "part": text_part}),
                json!({"type": "response.output_item.done", "output_index": 0, "item": message}),
                json!({"type": "response.function_call_arguments.done", "item_id": fc, "output_index": 1, "name": "f", "arguments": "{}"}),
                json!({"type": "response.output_item.done", "output_index": 1, "item": call}),
            ]
        );
    }

    #[test]
    fn text_is_announced_before_its_deltas_and_closed_at_the_end() {
        let mut t = Translator::default();
        let mut ev = Vec::new();
        t.chunk(
            &json!({"model": "m", "choices": [{"delta": {"role": "assistant"}}]}),
            &mut ev,
        );
        t.chunk(&json!({"choices": [{"delta": {"content": "Hel"}}]}), &mut ev);
        t.chunk(
            &json!({"choices": [{"delta": {"content": "lo"}, "finish_reason": "stop"}]}),
            &mut ev,
        );
        t.chunk(
            &json!({"choices": [], "usage": {"prompt_tokens": 3, "completion_tokens": 2, "total_tokens": 5}}),
            &mut ev,
        );
        let output = t.finish(&mut ev);
        assert_eq!(
            types(&ev),
            [
                "response.output_item.added",
                "response.content_part.added",
                "response.output_text.delta",
                "response.output_text.delta",
                "response.output_text.done",
                "response.content_part.done",
                "response.output_item.done"
            ]
        );
        assert_eq!(output[0]["content"][0]["text"], "Hello");
        assert_eq!(t.finish_reason.as_deref(), Some("stop"));
        assert_eq!(usage(t.usage.as_ref().unwrap())["output_tokens"], 2);
    }

    #[test]
    fn each_tool_call_is_its_own_item() {
        let mut t = Translator::default();
        let mut ev = Vec::new();
        t.chunk(
            &json!({"choices": [{"delta": {"tool_calls": [
            {"index": 0, "id": "call_a", "type": "function", "function": {"name": "f", "arguments": ""}}]}}]}),
            &mut ev,
        );
        t.chunk(
            &json!({"choices": [{"delta": {"tool_calls": [{"index": 0, "function": {"arguments": "{\"x\":"}}]}}]}),
            &mut ev,
        );
        t.chunk(
            &json!({"choices": [{"delta": {"tool_calls": [
            {"index": 1, "id": "call_b", "function": {"name": "g", "arguments": "{}"}},
            {"index": 0, "function": {"arguments": "1}"}}]}, "finish_reason": "tool_calls"}]}),
            &mut ev,
        );
        let output = t.finish(&mut ev);
        assert_eq!(output.len(), 2);
        assert_eq!(output[0]["arguments"], "{\"x\":1}");
        assert_eq!(output[0]["call_id"], "call_a");
        assert_eq!(output[1]["name"], "g");
        let added: Vec<u64> = ev
            .iter()
            .filter(|e| e["type"] == "response.output_item.added")
            .map(|e| e["output_index"].as_u64().unwrap())
            .collect();
        assert_eq!(added, [0, 1]);
        let first_delta = ev
            .iter()
            .position(|e| e["type"] == "response.function_call_arguments.delta")
            .unwrap();
        assert!(first_delta > 0, "announced first");
        assert_eq!(output_messages(&output)[0]["tool_calls"].as_array().unwrap().len(), 2);
    }
}
