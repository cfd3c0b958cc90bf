//! Tool calls for models without native tools (a target with `supports_tools = false`): the
//! request's tools are described in its system prompt, earlier calls and results become text
//! (`<tool_call>` and `<tool_result>` blocks), and the model's `<tool_call>` blocks are parsed
//! back into OpenAI `tool_calls` — in a whole answer, or in a stream as it passes, holding back
//! any text that may be the start of a block so that no partial XML reaches the client.
//!
//! A block holds JSON — `<tool_call>{"name": "…", "arguments": {…}}</tool_call>` — or tags —
//! `<tool_call><name>…</name><arguments>{…}</arguments></tool_call>`.

use bytes::Bytes;
use serde_json::{Map, Value, json};

use crate::openai::{ChatChunk, ChatCompletion, Delta, FunctionCall, ToolCall, ToolCallDelta};

const OPEN: &str = "<tool_call>";
const CLOSE: &str = "</tool_call>";

/// Rewrites an answer on its way to the caller: the seam through which the worker's
/// `Replier` applies [`Parser`] (or any other rewrite of a chat answer).
pub trait AnswerRewrite: Send {
    /// A whole (non-streamed) completion body.
    fn body(&mut self, body: Bytes) -> Bytes;
    /// A stream's event payloads (OpenAI chunks) → the payloads to send.
    fn events(&mut self, payloads: &[Bytes]) -> Vec<Bytes>;
    /// What is still held when the stream ends.
    fn finish(&mut self) -> Vec<Bytes>;
}

/// The system prompt that describes `tools` (OpenAI function tools).
pub fn prompt(tools: &[Value], required: bool) -> String {
    let mut p = String::from(
        "You can call tools. To call one, answer with a block of this exact form, with JSON inside:\n\
         <tool_call>{\"name\": \"TOOL_NAME\", \"arguments\": {ARGUMENTS}}</tool_call>\n\
         You may call several tools, one block each; write nothing after your last block. Each \
         result comes back in a <tool_result name=\"TOOL_NAME\"> block. Answer normally when you \
         need no tool.",
    );
    if required {
        p.push_str(" You must call at least one tool now.");
    }
    p.push_str("\n\nTools:\n");
    for t in tools {
        let f = &t["function"];
        p.push_str(&format!(
            "- {}: {}\n  arguments (JSON Schema): {}\n",
            f["name"].as_str().unwrap_or_default(),
            f["description"].as_str().unwrap_or_default(),
            f.get("parameters")
                .cloned()
                .unwrap_or_else(|| json!({"type": "object"}))
        ));
    }
    p
}

fn call_block(call: &Value) -> String {
    let args = call["function"]["arguments"].as_str().unwrap_or("{}");
    let args: Value = serde_json::from_str(args).unwrap_or_else(|_| json!({}));
    format!(
        "{OPEN}{}{CLOSE}",
        json!({"name": call["function"]["name"], "arguments": args})
    )
}

/// The request for a model without native tools; `None` when it offers no tools.
pub fn request(chat: &Value) -> Option<Value> {
    let tools = chat["tools"].as_array().filter(|t| !t.is_empty())?;
    let mut body: Map<String, Value> = chat.as_object()?.clone();
    for k in ["tools", "tool_choice", "parallel_tool_calls"] {
        body.remove(k);
    }
    let mut names = std::collections::HashMap::new();
    let mut messages: Vec<Value> = Vec::new();
    if chat["tool_choice"] != "none" {
        messages.push(json!({"role": "system", "content": prompt(tools, chat["tool_choice"] == "required")}));
    }
    for m in chat["messages"].as_array().into_iter().flatten() {
        match m["role"].as_str() {
            Some("assistant") if m["tool_calls"].is_array() => {
                let mut t = crate::chat::text_of(&m["content"]);
                for c in m["tool_calls"].as_array().into_iter().flatten() {
                    names.insert(
                        c["id"].as_str().unwrap_or_default().to_owned(),
                        c["function"]["name"].clone(),
                    );
                    t.push_str(&call_block(c));
                }
                messages.push(json!({"role": "assistant", "content": t}));
            }
            Some("tool") => {
                let name = names
                    .get(m["tool_call_id"].as_str().unwrap_or_default())
                    .cloned()
                    .unwrap_or_default();
                let block = format!(
                    "<tool_result name=\"{}\">{}</tool_result>",
                    name.as_str().unwrap_or_default(),
                    crate::chat::text_of(&m["content"])
                );
                // Results of one round go back as one user turn.
                match messages.last_mut() {
                    Some(last)
                        if last["role"] == "user"
                            && last["content"].as_str().is_some_and(|c| c.starts_with("<tool_result")) =>
                    {
                        let joined = format!("{}\n{block}", last["content"].as_str().unwrap_or_default());
                        last["content"] = json!(joined);
                    }
                    _ => messages.push(json!({"role": "user", "content": block})),
                }
            }
            _ => messages.push(m.clone()),
        }
    }
    body.insert("messages".into(), Value::from(messages));
    Some(Value::Object(body))
}

/// One `<tool_call>` block's inside as (name, JSON arguments).
fn parse_call(inner: &str) -> Option<(String, String)> {
    let inner = inner.trim();
    if let Ok(v) = serde_json::from_str::<Value>(inner) {
        let name = v["name"].as_str()?.to_owned();
        let args = match v.get("arguments").or(v.get("parameters")) {
            Some(Value::String(s)) => s.clone(),
            Some(a) => a.to_string(),
            None => "{}".into(),
        };
        return Some((name, args));
    }
    let tag = |t: &str| {
        let (open, close) = (format!("<{t}>"), format!("</{t}>"));
        let start = inner.find(&open)? + open.len();
        let end = inner[start..].find(&close)? + start;
        Some(inner[start..end].trim().to_owned())
    };
    let args = tag("arguments").unwrap_or_else(|| "{}".into());
    Some((tag("name")?, args))
}

/// The length of the longest suffix of `s` that starts `OPEN` (text that must be held).
fn partial_open(s: &str) -> usize {
    (1..OPEN.len().min(s.len() + 1))
        .rev()
        .find(|&n| s.is_char_boundary(s.len() - n) && OPEN.starts_with(&s[s.len() - n..]))
        .unwrap_or(0)
}

/// Parses `<tool_call>` blocks out of a model's text, whole or as it streams.
#[derive(Debug, Default)]
pub struct Parser {
    held: String,
    in_block: bool,
    calls: u32,
    /// Prefix of the tool call ids (unique per answer).
    id_prefix: String,
    /// The last chunk seen, without its choices: what the held text goes out as at the end.
    template: Option<ChatChunk>,
}

impl Parser {
    pub fn new(id_prefix: &str) -> Parser {
        Parser {
            id_prefix: id_prefix.to_owned(),
            ..Parser::default()
        }
    }

    fn tool_call(&mut self, name: String, args: String) -> ToolCallDelta {
        let index = self.calls;
        self.calls += 1;
        let call = ToolCall::function(format!("call_{}_{index}", self.id_prefix), name, args);
        ToolCallDelta::whole(index, &call)
    }

    /// Feeds text; returns the text that may be shown and the calls completed.
    pub fn push(&mut self, t: &str) -> (String, Vec<ToolCallDelta>) {
        self.held.push_str(t);
        let (mut shown, mut calls) = (String::new(), Vec::new());
        loop {
            if self.in_block {
                let Some(end) = self.held.find(CLOSE) else { break };
                let inner: String = self.held[..end].to_owned();
                self.held.drain(..end + CLOSE.len());
                self.in_block = false;
                match parse_call(&inner) {
                    Some((name, args)) => calls.push(self.tool_call(name, args)),
                    None => shown.push_str(&format!("{OPEN}{inner}{CLOSE}")),
                }
            } else if let Some(start) = self.held.find(OPEN) {
                shown.push_str(&self.held[..start]);
                self.held.drain(..start + OPEN.len());
                self.in_block = true;
            } else {
                let keep = partial_open(&self.held);
                let cut = self.held.len() - keep;
                shown.push_str(&self.held[..cut]);
                self.held.drain(..cut);
                break;
            }
        }
        (shown, calls)
    }

    /// Text still held at the end (an unfinished block is shown as it was written).
    pub fn flush(&mut self) -> String {
        let held = std::mem::take(&mut self.held);
        if std::mem::take(&mut self.in_block) {
            format!("{OPEN}{held}")
        } else {
            held
        }
    }

    /// Whether any call was parsed.
    pub fn called(&self) -> bool {
        self.calls > 0
    }

    /// A chunk like `template` with `delta` and `finish`.
    fn chunk(template: &ChatChunk, delta: Delta, finish: Option<String>) -> Bytes {
        let mut c = ChatChunk::delta(&template.id, &template.model, template.created, delta, finish);
        c.object.clone_from(&template.object);
        c.usage = template.usage;
        c.extra.clone_from(&template.extra);
        c.to_bytes()
    }

    /// One stream chunk's payloads after parsing.
    fn event(&mut self, payload: &Bytes, out: &mut Vec<Bytes>) {
        let Ok(mut chunk) = serde_json::from_slice::<ChatChunk>(payload) else {
            out.push(payload.clone());
            return;
        };
        let Some(choice) = chunk.choices.first_mut() else {
            out.push(payload.clone()); // the usage chunk
            return;
        };
        let finish = choice.finish_reason.take();
        let mut delta = std::mem::take(&mut choice.delta);
        chunk.choices.clear();
        let content = delta.content.take();
        let (mut shown, calls) = self.push(content.as_deref().unwrap_or_default());
        if finish.is_some() {
            shown.push_str(&self.flush());
        }
        if !shown.is_empty() {
            delta.content = Some(shown);
        }
        if delta != Delta::default() {
            out.push(Self::chunk(&chunk, delta, None));
        }
        for c in calls {
            let delta = Delta {
                tool_calls: Some(vec![c]),
                ..Delta::default()
            };
            out.push(Self::chunk(&chunk, delta, None));
        }
        if let Some(f) = finish {
            let f = if self.called() { "tool_calls".to_owned() } else { f };
            out.push(Self::chunk(&chunk, Delta::default(), Some(f)));
        }
        self.template = Some(chunk);
    }
}

impl AnswerRewrite for Parser {
    fn body(&mut self, body: Bytes) -> Bytes {
        let Ok(mut completion) = serde_json::from_slice::<ChatCompletion>(&body) else {
            return body;
        };
        let Some(choice) = completion.choices.first_mut() else {
            return body;
        };
        let Some(content) = choice.message.content.take() else {
            return body;
        };
        let (mut shown, calls) = self.push(&content);
        shown.push_str(&self.flush());
        if calls.is_empty() {
            return body;
        }
        let shown = shown.trim();
        choice.message.content = (!shown.is_empty()).then(|| shown.to_owned());
        let calls = calls
            .into_iter()
            .map(|c| {
                let f = c.function.unwrap_or_default();
                ToolCall {
                    index: None,
                    id: c.id.unwrap_or_default(),
                    kind: c.kind.unwrap_or_default(),
                    function: FunctionCall {
                        name: f.name.unwrap_or_default(),
                        arguments: f.arguments.unwrap_or_default(),
                    },
                }
            })
            .collect();
        choice.message.tool_calls = Some(calls);
        choice.finish_reason = Some("tool_calls".into());
        // The usage as the upstream wrote it (details such as `prompt_tokens_details`
        // included), not the three counts our type names.
        let usage = serde_json::from_slice::<Value>(&body)
            .ok()
            .and_then(|mut v| v.get_mut("usage").map(Value::take));
        match (usage, serde_json::to_value(&completion)) {
            (Some(u), Ok(mut v)) => {
                v["usage"] = u;
                Bytes::from(v.to_string())
            }
            _ => completion.to_bytes(),
        }
    }

    fn events(&mut self, payloads: &[Bytes]) -> Vec<Bytes> {
        let mut out = Vec::with_capacity(payloads.len());
        for p in payloads {
            self.event(p, &mut out);
        }
        out
    }

    fn finish(&mut self) -> Vec<Bytes> {
        let rest = self.flush();
        if rest.is_empty() {
            return Vec::new();
        }
        let delta = Delta {
            content: Some(rest),
            ..Delta::default()
        };
        let template = self
            .template
            .take()
            .unwrap_or_else(|| ChatChunk::delta("", "", 0, Delta::default(), None));
        vec![Self::chunk(&template, delta, None)]
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn chat_with_history() -> Value {
        json!({"model": "m", "tool_choice": "auto", "messages": [
            {"role": "system", "content": "be kind"},
            {"role": "user", "content": "weather?"},
            {"role": "assistant", "content": null, "tool_calls": [{"id": "c1", "type": "function",
                "function": {"name": "get_weather", "arguments": "{\"city\":\"Oslo\"}"}}]},
            {"role": "tool", "tool_call_id": "c1", "content": "Sunny"}],
            "tools": [{"type": "function", "function": {"name": "get_weather", "description": "weather",
                "parameters": {"type": "object"}}}]})
    }

    #[test]
    fn requests_lose_their_tools_and_carry_history_as_text() {
        let r = request(&chat_with_history()).unwrap();
        assert!(r.get("tools").is_none() && r.get("tool_choice").is_none());
        let m = r["messages"].as_array().unwrap();
        assert!(m[0]["content"].as_str().unwrap().contains("- get_weather: weather"));
        assert_eq!(m[1]["content"], "be kind");
        assert_eq!(
            m[3]["content"],
            "<tool_call>{\"arguments\":{\"city\":\"Oslo\"},\"name\":\"get_weather\"}</tool_call>"
        );
        assert_eq!(
            m[4],
            json!({"role": "user", "content": "<tool_result name=\"get_weather\">Sunny</tool_result>"})
        );
        assert!(request(&json!({"model": "m", "messages": []})).is_none());
    }

    #[test]
    fn a_whole_answer_gets_its_calls_parsed() {
        let body = json!({"id": "x", "choices": [{"index": 0, "finish_reason": "stop", "message": {"role": "assistant",
            "content": "Checking. <tool_call>{\"name\": \"get_weather\", \"arguments\": {\"city\": \"Oslo\"}}</tool_call>\n<tool_call><name>time</name><arguments>{}</arguments></tool_call>"}}],
            "usage": {"prompt_tokens": 9, "completion_tokens": 3, "total_tokens": 12, "prompt_tokens_details": {"cached_tokens": 4}}});
        let out: Value = serde_json::from_slice(&Parser::new("r").body(Bytes::from(body.to_string()))).unwrap();
        assert_eq!(out["usage"], body["usage"], "the usage as the upstream wrote it");
        let m = &out["choices"][0]["message"];
        assert_eq!(m["content"], "Checking.");
        assert_eq!(m["tool_calls"][0]["function"]["arguments"], "{\"city\":\"Oslo\"}");
        assert_eq!(m["tool_calls"][1]["function"]["name"], "time");
        assert_eq!(m["tool_calls"][0]["id"], "call_r_0");
        assert_eq!(out["choices"][0]["finish_reason"], "tool_calls");
    }

    #[test]
    fn no_partial_xml_leaves_a_stream_however_it_is_split() {
        let text = "Sure <tool_call>{\"name\": \"f\", \"arguments\": {\"a\": 1}}</tool_call> ok <tool not a call";
        for size in 1..12 {
            let mut p = Parser::new("s");
            let mut payloads: Vec<Bytes> = text
                .as_bytes()
                .chunks(size)
                .map(|c| {
                    let c = String::from_utf8_lossy(c);
                    Bytes::from(
                        json!({"id": "x", "choices": [{"index": 0, "delta": {"content": c}, "finish_reason": null}]})
                            .to_string(),
                    )
                })
                .collect();
            payloads.push(Bytes::from(
                json!({"id": "x", "choices": [{"index": 0, "delta": {}, "finish_reason": "stop"}]}).to_string(),
            ));
            let out = p.events(&payloads);
            let mut shown = String::new();
            let mut calls = Vec::new();
            let mut finish = None;
            for o in &out {
                let v: Value = serde_json::from_slice(o).unwrap();
                let d = &v["choices"][0]["delta"];
                let t = d["content"].as_str().unwrap_or_default();
                assert!(
                    !t.contains("<tool_") && !t.contains("name"),
                    "partial XML shown: {t:?} (split {size})"
                );
                shown.push_str(t);
                calls.extend(d["tool_calls"].as_array().cloned().unwrap_or_default());
                if let Some(f) = v["choices"][0]["finish_reason"].as_str() {
                    finish = Some(f.to_owned());
                }
            }
            assert_eq!(shown, "Sure  ok <tool not a call", "split {size}");
            assert_eq!(calls.len(), 1);
            assert_eq!(calls[0]["function"]["arguments"], "{\"a\":1}");
            assert_eq!(finish.as_deref(), Some("tool_calls"));
        }
    }
}
