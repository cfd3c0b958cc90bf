"""A programmable mock upstream (in a thread) that speaks two wire formats, for the front-door
tests: Anthropic's `POST /v1/messages` (plain and streamed events, thinking blocks with a
signature, tool_use) and OpenAI's `POST /v1/chat/completions` (plain and SSE, tool calls,
reasoning_content) and `/v1/embeddings`. Every request is kept in `seen` for assertions.

Answers: with tools offered and the last turn the user's own words, a call of the first tool
with {"city": "Oslo"}; otherwise text `saw N messages; last: TEXT` (`[image]` when the last
turn had one). A model named `xml-*` answers a tool call as an XML block in plain text (a
model without native tools); `*-broken` models answer 500."""

import json
import os
import threading
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

seen = []


def last_text(content):
    if isinstance(content, str):
        return content
    out = []
    for b in content or []:
        if b.get("type") == "text":
            out.append(b["text"])
        elif b.get("type") == "tool_result":
            c = b["content"]
            out.append("result " + (c if isinstance(c, str) else " ".join(x.get("text", "") for x in c)))
        elif b.get("type") in ("image", "image_url"):
            out.append("[image]")
    return " ".join(out)


def anthropic_answer(req):
    msgs = req["messages"]
    last = msgs[-1]
    own_words = last["role"] == "user" and not any(
        isinstance(b, dict) and b.get("type") == "tool_result" for b in (last["content"] if isinstance(last["content"], list) else []))
    blocks = []
    if req.get("thinking", {}).get("type") == "enabled":
        blocks.append({"type": "thinking", "thinking": "pondering", "signature": "sig-123"})
    if req.get("tools") and own_words:
        blocks.append({"type": "tool_use", "id": "toolu_1", "name": req["tools"][0]["name"], "input": {"city": "Oslo"}})
        stop = "tool_use"
    else:
        blocks.append({"type": "text", "text": f"saw {len(msgs)} messages; last: {last_text(last['content'])}"})
        stop = "end_turn"
    return blocks, stop


def anthropic_events(req, blocks, stop):
    msg = {"id": "msg_up1", "type": "message", "role": "assistant", "model": req["model"], "content": [],
           "stop_reason": None, "stop_sequence": None, "usage": {"input_tokens": 21, "output_tokens": 1}}
    ev = [("message_start", {"type": "message_start", "message": msg}), ("ping", {"type": "ping"})]
    for i, b in enumerate(blocks):
        if b["type"] == "thinking":
            ev.append(("content_block_start", {"type": "content_block_start", "index": i,
                                               "content_block": {"type": "thinking", "thinking": "", "signature": ""}}))
            ev.append(("content_block_delta", {"type": "content_block_delta", "index": i,
                                               "delta": {"type": "thinking_delta", "thinking": b["thinking"]}}))
            ev.append(("content_block_delta", {"type": "content_block_delta", "index": i,
                                               "delta": {"type": "signature_delta", "signature": b["signature"]}}))
        elif b["type"] == "text":
            ev.append(("content_block_start", {"type": "content_block_start", "index": i,
                                               "content_block": {"type": "text", "text": ""}}))
            half = len(b["text"]) // 2
            for part in (b["text"][:half], b["text"][half:]):
                ev.append(("content_block_delta", {"type": "content_block_delta", "index": i,
                                                   "delta": {"type": "text_delta", "text": part}}))
        else:
            ev.append(("content_block_start", {"type": "content_block_start", "index": i,
                                               "content_block": {**b, "input": {}}}))
            ev.append(("content_block_delta", {"type": "content_block_delta", "index": i,
                                               "delta": {"type": "input_json_delta", "partial_json": json.dumps(b["input"])}}))
        ev.append(("content_block_stop", {"type": "content_block_stop", "index": i}))
    ev.append(("message_delta", {"type": "message_delta", "delta": {"stop_reason": stop, "stop_sequence": None},
                                 "usage": {"output_tokens": 9}}))
    ev.append(("message_stop", {"type": "message_stop"}))
    return "".join(f"event: {n}\ndata: {json.dumps(d)}\n\n" for n, d in ev)


def openai_deltas(req):
    msgs = req["messages"]
    last = msgs[-1]
    if req["model"].startswith("xml-"):
        if req.get("tools"):
            raise AssertionError("a target without native tools was sent `tools`")
        prompt = msgs[0]["content"] if msgs[0]["role"] == "system" else ""
        names = [line[2:].split(":")[0] for line in prompt.splitlines() if line.startswith("- ")]
        if names and last["role"] == "user" and "<tool_result" not in str(last["content"]):
            args = {"expression": "6*7"} if "calculator" in names[0] else {"city": "Oslo"}
            text = f'Let me check. <tool_call>{json.dumps({"name": names[0], "arguments": args})}</tool_call>'
        else:
            text = f"saw {len(msgs)} messages; last: {last_text(last['content'])}"
        # Split mid-tag, as a real stream would.
        return [{"role": "assistant", "content": ""}] + [{"content": text[i:i + 7]} for i in range(0, len(text), 7)], "stop"
    if req.get("tools") and last["role"] == "user":
        name = req["tools"][0]["function"]["name"]
        return [{"role": "assistant", "tool_calls": [{"index": 0, "id": "call_w1", "type": "function",
                                                       "function": {"name": name, "arguments": ""}}]},
                {"tool_calls": [{"index": 0, "function": {"arguments": "{\"city\":"}}]},
                {"tool_calls": [{"index": 0, "function": {"arguments": "\"Oslo\"}"}}]}], "tool_calls"
    text = f"saw {len(msgs)} messages; last: {last_text(last['content'])}"
    return [{"role": "assistant", "content": ""}, {"reasoning_content": "thought"}, {"content": text[:5]},
            {"content": text[5:]}], "stop"


class Handler(BaseHTTPRequestHandler):
    def log_message(self, *args):
        pass

    def reply(self, status, body, kind="application/json"):
        data = body.encode() if isinstance(body, str) else body
        self.send_response(status)
        self.send_header("content-type", kind)
        self.send_header("content-length", str(len(data)))
        self.end_headers()
        self.wfile.write(data)

    def do_POST(self):
        req = json.loads(self.rfile.read(int(self.headers["content-length"])))
        seen.append({"path": self.path, "body": req, "headers": dict(self.headers)})
        if req.get("model", "").endswith("-broken"):
            return self.reply(500, json.dumps({"error": {"message": "broken upstream", "type": "server_error"}}))
        if self.path.endswith("/messages"):
            blocks, stop = anthropic_answer(req)
            if req.get("stream"):
                return self.reply(200, anthropic_events(req, blocks, stop), "text/event-stream")
            return self.reply(200, json.dumps({"id": "msg_up1", "type": "message", "role": "assistant", "model": req["model"],
                                               "content": blocks, "stop_reason": stop, "stop_sequence": None,
                                               "usage": {"input_tokens": 21, "output_tokens": 9}}))
        if self.path.endswith("/embeddings"):
            inputs = req["input"] if isinstance(req["input"], list) else [req["input"]]
            data = [{"object": "embedding", "index": i, "embedding": [0.1, 0.2, float(len(t))]} for i, t in enumerate(inputs)]
            return self.reply(200, json.dumps({"object": "list", "model": req["model"], "data": data,
                                               "usage": {"prompt_tokens": 3, "total_tokens": 3}}))
        deltas, finish = openai_deltas(req)
        usage = {"prompt_tokens": 17, "completion_tokens": 5, "total_tokens": 22}
        if req.get("stream"):
            chunks = [{"id": "c1", "object": "chat.completion.chunk", "created": 1, "model": req["model"],
                       "choices": [{"index": 0, "delta": d, "finish_reason": None}]} for d in deltas]
            chunks[-1]["choices"][0]["finish_reason"] = finish
            chunks.append({"id": "c1", "object": "chat.completion.chunk", "created": 1, "model": req["model"],
                           "choices": [], "usage": usage})
            body = "".join(f"data: {json.dumps(c)}\n\n" for c in chunks) + "data: [DONE]\n\n"
            return self.reply(200, body, "text/event-stream")
        message = {"role": "assistant", "content": "".join(d.get("content") or "" for d in deltas) or None}
        reasoning = "".join(d.get("reasoning_content") or "" for d in deltas)
        if reasoning:
            message["reasoning_content"] = reasoning
        calls = {}
        for d in deltas:
            for tc in d.get("tool_calls", []):
                call = calls.setdefault(tc["index"], {"id": tc.get("id"), "type": "function", "function": {"name": "", "arguments": ""}})
                call["function"]["name"] += tc["function"].get("name", "")
                call["function"]["arguments"] += tc["function"].get("arguments", "")
        if calls:
            message["tool_calls"] = list(calls.values())
        self.reply(200, json.dumps({"id": "c1", "object": "chat.completion", "created": 1, "model": req["model"],
                                    "choices": [{"index": 0, "message": message, "finish_reason": finish}], "usage": usage}))


def start():
    """Starts the mock; returns the server (its port: .server_port; stop: .shutdown())."""
    server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    return server


def config(port, root, tmp):
    """A config with an Anthropic-type and an OpenAI-type upstream on the mock, groups over
    them (one that fails over from a broken target), an embeddings model, a target without
    native tools, prompt templates (written into `tmp`) with a text endpoint, and a model
    catalog for a `cost` group."""
    os.makedirs(f"{tmp}/templates", exist_ok=True)
    with open(f"{tmp}/templates/translate.txt", "w") as f:
        f.write("Translate the user's text into ##LANGUAGE##. Keep the ##TONE## tone.")
    with open(f"{tmp}/templates/polite.md", "w") as f:
        f.write("Always answer politely.")
    with open(f"{tmp}/catalog.json", "w") as f:
        json.dump([{"model": "gpt-mock", "context_window": 128000, "input_cost_per_token": 5e-6, "output_cost_per_token": 1.5e-5},
                   {"model": "anthropic/claude-3-mock", "max_input_tokens": 200000, "input_cost_per_mtok": 0.25,
                    "output_cost_per_mtok": 1.25}], f)
    return f"""
[router]
catalog = "{tmp}/catalog.json"

[templates]
path = "{tmp}/templates"

[[text_endpoints]]
name = "translate"
template = "translate"
model = "gpt"
defaults = {{ TONE = "neutral" }}

[scripting]
tools_path = "{root}/config/tools"
libraries_path = "{root}/config/libraries"

[[providers]]
name = "claude-up"
type = "anthropic"
base_url = "http://127.0.0.1:{port}/v1"
api_key_env = "MOCK_ANTHROPIC_KEY"
models = ["claude-3-mock", "claude-broken"]
context_window = {{ "*" = 200000 }}

[[providers]]
name = "gpt-up"
type = "openai"
base_url = "http://127.0.0.1:{port}/v1"
models = ["gpt-mock", "text-embed", "xml-model", "gpt-broken"]

[[models]]
name = "claude"
targets = [{{ provider = "claude-up", model = "claude-3-mock" }}]

[[models]]
name = "gpt"
targets = [{{ provider = "gpt-up", model = "gpt-mock" }}]

[[models]]
name = "failover"
strategy = "first_available"
targets = [{{ provider = "gpt-up", model = "gpt-broken" }}, {{ provider = "claude-up", model = "claude-3-mock" }}]

[[models]]
name = "xml"
targets = [{{ provider = "gpt-up", model = "xml-model", supports_tools = false }}]

[[models]]
name = "xml-loop"
targets = [{{ provider = "gpt-up", model = "xml-model", supports_tools = false }}]
tools = ["calculator"]

[[models]]
name = "polite"
targets = [{{ provider = "gpt-up", model = "gpt-mock" }}]
template = "polite"

[[models]]
name = "cheapest"
strategy = "cost"
targets = [{{ provider = "gpt-up", model = "gpt-mock" }}, {{ provider = "claude-up", model = "claude-3-mock" }}]

[[models]]
name = "emb"
targets = [{{ provider = "gpt-up", model = "text-embed" }}]
"""
