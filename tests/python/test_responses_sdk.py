"""The Responses API with the official `openai` package, called as a user would: against
`llmrouter all` (memory) and against two gateways, a router, a worker and two responses
instances over Redis (chains cross gateways and instances). A small OpenAI-compatible mock
upstream (here, in a thread) answers with tool calls when given tools and says how many
messages it saw, so chains and function calling can be checked."""

import json
import os
import shutil
import tempfile
import threading
import time
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

import httpx
import openai
import pytest

from conftest import TOKEN, Stack, binary, free_port, wait_healthy


NATIVE_SEEN = []


class MockUpstream(BaseHTTPRequestHandler):
    """POST /v1/chat/completions (streamed or not): a tool call when tools are offered and the last
    message is the user's; otherwise `saw N messages; last: TEXT`."""

    seen = []

    def log_message(self, *args):
        pass

    def native(self, req):
        """POST /v1/responses, streamed: OpenAI's Responses events, ids of its own."""
        NATIVE_SEEN.append(req)
        rid, mid = f"resp_up_{len(NATIVE_SEEN)}", f"msg_up_{len(NATIVE_SEEN)}"
        items = req["input"] if isinstance(req["input"], list) else [{"role": "user", "content": req["input"]}]
        last = items[-1]["content"]
        last = last if isinstance(last, str) else last[0]["text"]
        text = f"native saw previous={req.get('previous_response_id') or 'none'}; input={last}"
        base = {"id": rid, "object": "response", "model": req["model"], "output": [], "status": "in_progress"}
        part = {"type": "output_text", "text": text, "annotations": []}
        item = {"id": mid, "type": "message", "role": "assistant", "status": "completed", "content": [part]}
        usage = {"input_tokens": 11, "output_tokens": 4, "total_tokens": 15}
        events = [
            {"type": "response.created", "response": base},
            {"type": "response.in_progress", "response": base},
            {"type": "response.output_item.added", "output_index": 0, "item": {**item, "status": "in_progress", "content": []}},
            {"type": "response.content_part.added", "item_id": mid, "output_index": 0, "content_index": 0,
             "part": {**part, "text": ""}},
            {"type": "response.output_text.delta", "item_id": mid, "output_index": 0, "content_index": 0, "delta": text},
            {"type": "response.output_text.done", "item_id": mid, "output_index": 0, "content_index": 0, "text": text},
            {"type": "response.content_part.done", "item_id": mid, "output_index": 0, "content_index": 0, "part": part},
            {"type": "response.output_item.done", "output_index": 0, "item": item},
            {"type": "response.completed", "response": {**base, "status": "completed", "output": [item], "usage": usage}},
        ]
        body = "".join(f"event: {e['type']}\ndata: {json.dumps({**e, 'sequence_number': i})}\n\n"
                       for i, e in enumerate(events)).encode()
        self.send_response(200)
        self.send_header("content-type", "text/event-stream")
        self.send_header("content-length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)

    def do_GET(self):
        body = json.dumps({"object": "list", "data": [{"id": "mock", "object": "model"}]}).encode()
        self.send_response(200)
        self.send_header("content-type", "application/json")
        self.send_header("content-length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)

    def do_POST(self):
        req = json.loads(self.rfile.read(int(self.headers["content-length"])))
        if self.path.endswith("/responses"):
            return self.native(req)
        MockUpstream.seen.append(req)
        msgs = req["messages"]
        last = msgs[-1]
        calc = [t["function"]["name"] for t in req.get("tools", []) if "calculator" in t["function"]["name"]]
        if calc and last["role"] == "user":
            deltas = [{"role": "assistant", "tool_calls": [{"index": 0, "id": "call_c1", "type": "function",
                                                             "function": {"name": calc[0], "arguments": "{\"expression\": \"6*7\"}"}}]}]
            finish = "tool_calls"
        elif req.get("tools") and last["role"] == "user":
            deltas = [{"role": "assistant", "tool_calls": [{"index": 0, "id": "call_w1", "type": "function",
                                                             "function": {"name": "get_weather", "arguments": ""}}]},
                      {"tool_calls": [{"index": 0, "function": {"arguments": "{\"city\":"}}]},
                      {"tool_calls": [{"index": 0, "function": {"arguments": "\"Oslo\"}"}}]}]
            finish = "tool_calls"
        else:
            text = last["content"] if isinstance(last["content"], str) else json.dumps(last["content"])
            deltas = [{"role": "assistant", "content": ""}, {"content": f"saw {len(msgs)} messages; "},
                      {"content": f"last: {text}"}]
            finish = "stop"
        chunks = [{"id": "c1", "object": "chat.completion.chunk", "created": 1, "model": "mock",
                   "choices": [{"index": 0, "delta": d, "finish_reason": None}]} for d in deltas]
        chunks[-1]["choices"][0]["finish_reason"] = finish
        chunks.append({"id": "c1", "object": "chat.completion.chunk", "created": 1, "model": "mock", "choices": [],
                       "usage": {"prompt_tokens": 7, "completion_tokens": 5, "total_tokens": 12}})
        if req.get("stream"):
            body, kind = "".join(f"data: {json.dumps(c)}\n\n" for c in chunks) + "data: [DONE]\n\n", "text/event-stream"
        else:
            message = {"role": "assistant", "content": "".join(d.get("content") or "" for d in deltas) or None}
            calls = {}
            for d in deltas:
                for tc in d.get("tool_calls", []):
                    call = calls.setdefault(tc["index"], {"id": tc.get("id"), "type": "function",
                                                          "function": {"name": "", "arguments": ""}})
                    call["function"]["name"] += tc["function"].get("name", "")
                    call["function"]["arguments"] += tc["function"].get("arguments", "")
            if calls:
                message["tool_calls"] = list(calls.values())
            body, kind = json.dumps({"id": "c1", "object": "chat.completion", "created": 1, "model": "mock", "choices": [
                {"index": 0, "message": message, "finish_reason": finish}],
                "usage": chunks[-1]["usage"]}), "application/json"
        self.send_response(200)
        self.send_header("content-type", kind)
        self.send_header("content-length", str(len(body.encode())))
        self.end_headers()
        self.wfile.write(body.encode())


@pytest.fixture(scope="module", params=["all-in-memory", "cluster-over-redis"])
def urls(request):
    """Base URLs (…/v1) of one or two gateways, the stack, and how to start more processes."""
    yield from running(request.param)


@pytest.fixture(scope="module")
def cluster_urls():
    yield from running("cluster-over-redis")


def running(mode):
    upstream = ThreadingHTTPServer(("127.0.0.1", 0), MockUpstream)
    threading.Thread(target=upstream.serve_forever, daemon=True).start()
    tmp = tempfile.mkdtemp(prefix="llmr-resp-")
    config = os.path.join(tmp, "config.toml")
    with open(config, "w") as f:
        root = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
        f.write(f"""
[responses]
max_stored_bytes = 60000

[scripting]
tools_path = "{root}/config/tools"
libraries_path = "{root}/config/libraries"

[[providers]]
name = "echo"
type = "echo"
models = ["echo"]

[[providers]]
name = "pymock"
type = "openai"
base_url = "http://127.0.0.1:{upstream.server_port}/v1"
models = ["mock"]

[[providers]]
name = "native"
type = "openai"
base_url = "http://127.0.0.1:{upstream.server_port}/v1"
models = ["native"]
responses = true

[[providers]]
name = "slow"
type = "chaos"
models = ["slow"]
[providers.chaos]
latency_ms = 3000
""")
    stack = Stack()
    ports = [free_port(), free_port()]
    env = dict(os.environ, LLMR__SERVER__TOKEN=TOKEN, RUST_LOG="warn", LLMR__REDIS__CLAIM_IDLE_MS="2000")
    base = [binary(), "--config", config]
    try:
        if mode == "all-in-memory":
            p = stack.spawn(base + ["all"], dict(env, LLMR__SERVER__PORT=str(ports[0])))
            wait_healthy(ports[0], {"gateway", "router", "worker", "responses", "mcp-tools"}, [p])
            yield [f"http://127.0.0.1:{ports[0]}/v1"] * 2, stack, None
        else:
            rport = free_port()
            stack.spawn(["redis-server", "--port", str(rport), "--bind", "127.0.0.1", "--save", "", "--appendonly", "no"], env)
            env["LLMR__REDIS__URL"] = f"redis://127.0.0.1:{rport}/"
            roles = ("router", "worker", "mcp-tools", "responses", "responses")
            procs = [stack.spawn(base + [role], env) for role in roles]
            gateways = [stack.spawn(base + ["gateway"], dict(env, LLMR__SERVER__PORT=str(p))) for p in ports]
            for p in ports:
                wait_healthy(p, {"gateway", "router", "worker", "responses", "mcp-tools"}, procs + gateways)
            yield [f"http://127.0.0.1:{p}/v1" for p in ports], stack, (base, env, gateways)
    finally:
        stack.stop()
        upstream.shutdown()
        shutil.rmtree(tmp, ignore_errors=True)


def clients(urls):
    return [openai.OpenAI(base_url=u, api_key=TOKEN, max_retries=0, timeout=30) for u in urls[0]]


def test_create_plain(urls):
    c = clients(urls)[0]
    r = c.responses.create(model="echo", input="hello responses")
    assert r.status == "completed"
    assert r.output_text == "hello responses"
    assert r.id.startswith("resp_") and r.model == "echo"
    assert r.usage.output_tokens > 0 and r.usage.total_tokens == r.usage.input_tokens + r.usage.output_tokens


def test_stream_events_in_order_with_sequence_numbers(urls):
    c = clients(urls)[0]
    events = list(c.responses.create(model="echo", input="one two three", stream=True))
    types = [e.type for e in events]
    assert [e.sequence_number for e in events] == list(range(len(events)))
    assert types[:4] == ["response.created", "response.in_progress", "response.output_item.added",
                         "response.content_part.added"]
    assert types[-4:] == ["response.output_text.done", "response.content_part.done", "response.output_item.done",
                          "response.completed"]
    assert "".join(e.delta for e in events if e.type == "response.output_text.delta") == "one two three"
    done = events[-1].response
    assert done.id == events[0].response.id and done.model == "echo" and done.output_text == "one two three"
    # The wire itself: an `event:` line equal to each type, and no [DONE].
    raw = httpx.post(urls[0][0] + "/responses", headers={"authorization": f"Bearer {TOKEN}"},
                     json={"model": "echo", "input": "wire", "stream": True}, timeout=30).text
    assert "[DONE]" not in raw
    for block in raw.strip().split("\n\n"):
        event, data = block.split("\n", 1)
        assert event == "event: " + json.loads(data.removeprefix("data: "))["type"]


def test_stream_helper_and_final_response(urls):
    c = clients(urls)[0]
    with c.responses.stream(model="echo", input="streamed by the helper") as s:
        deltas = [e.delta for e in s if e.type == "response.output_text.delta"]
        final = s.get_final_response()
    assert "".join(deltas) == "streamed by the helper"
    assert final.output_text == "streamed by the helper"


def test_retrieve_input_items_delete(urls):
    first, second = clients(urls)
    r = first.responses.create(model="echo", input=[{"role": "user", "content": "keep me"}])
    got = second.responses.retrieve(r.id)
    assert got.id == r.id and got.output_text == "keep me"
    items = second.responses.input_items.list(r.id)
    assert [i.type for i in items.data] == ["message"]
    assert items.data[0].content[0].text == "keep me"
    assert second.responses.delete(r.id) is None
    with pytest.raises(openai.NotFoundError):
        first.responses.retrieve(r.id)
    with pytest.raises(openai.NotFoundError):
        first.responses.delete(r.id)


def test_previous_response_id_chains_across_gateways(urls):
    first, second = clients(urls)
    MockUpstream.seen.clear()
    # The chain continues the moment the first stream has completed.
    with first.responses.stream(model="mock", input="my name is Ada", instructions="be brief") as s:
        r1 = s.get_final_response()
    assert r1.output_text == "saw 2 messages; last: my name is Ada"
    r2 = second.responses.create(model="mock", input="what is my name?", previous_response_id=r1.id)
    assert r2.output_text == "saw 3 messages; last: what is my name?"
    sent = MockUpstream.seen[-1]["messages"]
    assert [m["role"] for m in sent] == ["user", "assistant", "user"], "instructions do not carry over"
    assert sent[1]["content"] == r1.output_text
    r3 = first.responses.create(model="mock", input="and again", previous_response_id=r2.id, instructions="new")
    assert r3.output_text == "saw 6 messages; last: and again"


def test_function_calling_with_function_call_output(urls):
    c = clients(urls)[0]
    tools = [{"type": "function", "name": "get_weather", "description": "Weather of a city",
              "parameters": {"type": "object", "properties": {"city": {"type": "string"}}, "required": ["city"]}}]
    r = c.responses.create(model="mock", input="weather in Oslo?", tools=tools)
    (call,) = [o for o in r.output if o.type == "function_call"]
    assert call.name == "get_weather" and json.loads(call.arguments) == {"city": "Oslo"}
    follow = c.responses.create(model="mock", previous_response_id=r.id, tools=tools,
                                input=[{"type": "function_call_output", "call_id": call.call_id, "output": "sunny"}])
    assert follow.output_text == "saw 3 messages; last: sunny"
    sent = MockUpstream.seen[-1]["messages"]
    assert sent[1]["tool_calls"][0]["id"] == call.call_id and sent[2] == {
        "role": "tool", "tool_call_id": call.call_id, "content": "sunny"}
    # Streamed: the function call item is announced before its argument deltas.
    events = list(c.responses.create(model="mock", input="weather?", tools=tools, stream=True))
    types = [e.type for e in events]
    assert types.index("response.output_item.added") < types.index("response.function_call_arguments.delta")
    assert "response.function_call_arguments.done" in types


def test_background_cancel_never_completes(urls):
    c = clients(urls)[0]
    r = c.responses.create(model="slow", input="take your time", background=True)
    assert r.status == "queued" and r.background
    cancelled = c.responses.cancel(r.id)
    assert cancelled.status == "cancelled"
    assert c.responses.cancel(r.id).status == "cancelled", "idempotent"
    time.sleep(3.5)
    assert c.responses.retrieve(r.id).status == "cancelled", "a cancelled response never turns completed"
    plain = c.responses.create(model="echo", input="not background")
    with pytest.raises(openai.BadRequestError):
        c.responses.cancel(plain.id)


def test_background_completes_and_its_stream_resumes(urls):
    first, second = clients(urls)
    r = first.responses.create(model="echo", input="in the background", background=True)
    deadline = time.time() + 20
    while first.responses.retrieve(r.id).status in ("queued", "in_progress") and time.time() < deadline:
        time.sleep(0.1)
    assert second.responses.retrieve(r.id).output_text == "in the background"
    events = list(second.responses.retrieve(r.id, stream=True, starting_after=2))
    assert events[0].sequence_number == 3
    assert [e.sequence_number for e in events] == list(range(3, 3 + len(events)))
    assert events[-1].type == "response.completed"


def test_bad_requests_are_400_and_reach_no_upstream(urls):
    c = clients(urls)[0]
    before = len(MockUpstream.seen)
    for kwargs in [
        {"model": "mock", "input": "x", "tools": [{"type": "web_search"}]},
        {"model": "mock", "input": "x", "previous_response_id": "resp_x", "conversation": "conv_x"},
        {"model": "mock", "input": [{"type": "item_reference", "id": "x"}]},
        {"model": "mock", "input": "x", "max_output_tokens": -1},
    ]:
        with pytest.raises(openai.BadRequestError):
            c.responses.create(**kwargs)
    with pytest.raises(openai.NotFoundError):
        c.responses.create(model="mock", input="x", previous_response_id="resp_missing")
    with pytest.raises(openai.NotFoundError):
        c.responses.create(model="no-such-model", input="x")
    assert len(MockUpstream.seen) == before


def test_input_tokens_is_an_estimate(urls):
    r = httpx.post(urls[0][0] + "/responses/input_tokens", headers={"authorization": f"Bearer {TOKEN}"},
                   json={"model": "echo", "input": "a" * 400}, timeout=10).json()
    assert r["object"] == "response.input_tokens" and r["estimated"] is True
    assert 100 <= r["input_tokens"] <= 120


def test_a_chain_continues_after_the_responses_service_restarts(cluster_urls):
    urls = cluster_urls
    _, stack, (base, env, _) = urls
    first, second = clients(urls)
    r1 = first.responses.create(model="mock", input="remember 42")
    for p in stack.procs:
        if p.args[-1] == "responses" and p.poll() is None:
            p.terminate()
            p.wait(timeout=20)
    fresh = stack.spawn(base + ["responses"], env)
    wait_healthy(int(urls[0][1].split(":")[2].split("/")[0]), {"responses"}, [fresh])
    r2 = second.responses.create(model="mock", input="what did I say?", previous_response_id=r1.id)
    assert r2.output_text == "saw 3 messages; last: what did I say?"


def test_conversations_create_items_and_responses_that_extend_them(urls):
    first, second = clients(urls)
    conv = first.conversations.create(metadata={"topic": "names"},
                                      items=[{"type": "message", "role": "user", "content": "my name is Ada"}])
    assert conv.id.startswith("conv_") and conv.metadata == {"topic": "names"}
    assert second.conversations.retrieve(conv.id).id == conv.id
    updated = second.conversations.update(conv.id, metadata={"topic": "people"})
    assert updated.metadata == {"topic": "people"}
    added = first.conversations.items.create(conv.id, items=[
        {"type": "message", "role": "assistant", "content": "Hello Ada"}])
    assert len(added.data) == 1
    # A response in the conversation starts from its items and appends its input and output.
    r = second.responses.create(model="mock", input="what is my name?", conversation=conv.id)
    assert r.output_text == "saw 3 messages; last: what is my name?"
    assert r.conversation.id == conv.id
    items = list(first.conversations.items.list(conv.id, order="asc"))
    assert [i.type for i in items] == ["message"] * 4
    assert items[2].content[0].text == "what is my name?" and items[3].content[0].text == r.output_text
    newest = first.conversations.items.list(conv.id, limit=1)
    assert newest.data[0].id == items[3].id and newest.has_more
    one = second.conversations.items.retrieve(items[1].id, conversation_id=conv.id)
    assert one.id == items[1].id
    assert first.conversations.items.delete(items[1].id, conversation_id=conv.id).id == conv.id
    assert len(list(first.conversations.items.list(conv.id))) == 3
    with pytest.raises(openai.BadRequestError):
        first.responses.create(model="mock", input="x", conversation=conv.id, previous_response_id=r.id)
    deleted = second.conversations.delete(conv.id)
    assert deleted.deleted
    with pytest.raises(openai.NotFoundError):
        first.conversations.retrieve(conv.id)
    with pytest.raises(openai.NotFoundError):
        first.responses.create(model="mock", input="x", conversation=conv.id)


def test_compact_shortens_a_chain_into_a_summary_and_the_last_question(urls):
    c = clients(urls)[0]
    r1 = c.responses.create(model="mock", input="my name is Ada")
    r2 = c.responses.create(model="mock", input="I live in Oslo", previous_response_id=r1.id)
    raw = httpx.post(urls[0][0] + "/responses/compact", headers={"authorization": f"Bearer {TOKEN}"}, timeout=30,
                     json={"model": "mock", "previous_response_id": r2.id,
                           "input": [{"role": "user", "content": "where do I live?"}]}).json()
    assert raw["object"] == "response.compaction", raw
    summary, last = raw["output"]
    assert summary["role"] == "developer" and summary["content"][0]["text"].startswith("Summary of the conversation")
    assert "saw 6 messages" in summary["content"][0]["text"], "the whole chain went to the model"
    assert last["content"][0]["text"] == "where do I live?"
    follow = c.responses.create(model="mock", input=raw["output"])
    assert follow.output_text == "saw 2 messages; last: where do I live?"


def test_mcp_tools_run_server_side_through_the_tool_loop(urls):
    c = clients(urls)[0]
    tools = [{"type": "mcp", "server_label": "llmrouter", "allowed_tools": ["calculator"], "require_approval": "never"}]
    r = c.responses.create(model="mock", input="what is 6*7?", tools=tools)
    assert r.status == "completed"
    assert r.output_text.startswith("saw 3 messages; last:") and "42" in r.output_text, r.output_text
    with pytest.raises(openai.BadRequestError):
        c.responses.create(model="mock", input="x", tools=[{"type": "mcp", "server_label": "llmrouter",
                                                            "require_approval": "always"}])


def test_a_background_response_whose_instance_dies_is_rerun_by_a_peer(cluster_urls):
    _, stack, (base, env, _) = cluster_urls
    first, second = clients(cluster_urls)
    r = first.responses.create(model="slow", input="survive a crash", background=True)
    deadline = time.time() + 5
    while first.responses.retrieve(r.id).status == "queued" and time.time() < deadline:
        time.sleep(0.05)
    for p in stack.procs:
        if p.args[-1] == "responses" and p.poll() is None:
            p.kill()  # SIGKILL: no drain, the entry stays pending under a dead consumer
            p.wait(timeout=10)
    # (Nothing answers for the response now: every operation waits for a responses instance.)
    fresh = stack.spawn(base + ["responses"], env)
    gateway_port = int(cluster_urls[0][1].split(":")[2].split("/")[0])
    wait_healthy(gateway_port, {"responses"}, [fresh])
    deadline = time.time() + 30
    status = None
    while time.time() < deadline:
        status = second.responses.retrieve(r.id).status
        if status not in ("queued", "in_progress"):
            break
        time.sleep(0.2)
    assert status == "completed", f"rerun by the new instance, not left {status}"
    assert second.responses.retrieve(r.id).output_text == "survive a crash"


def test_a_response_too_large_to_store_is_answered_but_not_stored(urls):
    c = clients(urls)[0]
    big = "word " * 20000
    r = c.responses.create(model="echo", input=big)
    assert r.output_text == big.strip() or r.output_text == big
    assert r.store is False, "reported as not stored"
    with pytest.raises(openai.NotFoundError):
        c.responses.retrieve(r.id)


def test_a_background_response_outlives_the_gateway_that_took_it(cluster_urls):
    _, stack, (base, env, gateways) = cluster_urls
    first, second = clients(cluster_urls)
    r = first.responses.create(model="slow", input="outlive the gateway", background=True)
    gateways[0].terminate()  # the gateway that took it goes away at once
    gateways[0].wait(timeout=20)
    deadline = time.time() + 30
    status = None
    while time.time() < deadline:
        status = second.responses.retrieve(r.id).status
        if status not in ("queued", "in_progress"):
            break
        time.sleep(0.2)
    assert status == "completed"
    assert second.responses.retrieve(r.id).output_text == "outlive the gateway"


def test_a_responses_provider_gets_requests_natively_with_our_ids_kept(urls):
    first, second = clients(urls)
    r1 = first.responses.create(model="native", input="hi there")
    assert r1.id.startswith("resp_") and "up" not in r1.id
    assert r1.output_text == "native saw previous=none; input=hi there"
    assert r1.usage.input_tokens == 11 and r1.usage.output_tokens == 4
    upstream_first = f"resp_up_{len(NATIVE_SEEN)}"
    # A chain continues at the provider under its own id, with only the new input.
    r2 = second.responses.create(model="native", input="again", previous_response_id=r1.id)
    assert NATIVE_SEEN[-1]["previous_response_id"] == upstream_first
    assert [i["content"] for i in NATIVE_SEEN[-1]["input"]] == [[{"type": "input_text", "text": "again"}]]
    assert r2.output_text == f"native saw previous={upstream_first}; input=again"
    assert second.responses.retrieve(r2.id).id == r2.id
    # Streamed: renumbered, our id in every response object, our created/in_progress.
    events = list(first.responses.create(model="native", input="streamed", previous_response_id=r2.id, stream=True))
    assert [e.sequence_number for e in events] == list(range(len(events)))
    assert [e.type for e in events][:2] == ["response.created", "response.in_progress"]
    assert events[-1].type == "response.completed"
    ids = {e.response.id for e in events if hasattr(e, "response") and e.response is not None}
    assert ids == {events[0].response.id} and not any("up" in i for i in ids)
    # The stored context lets a chain go on at an emulated provider too.
    r4 = first.responses.create(model="mock", input="and now?", previous_response_id=events[-1].response.id)
    assert r4.output_text == "saw 7 messages; last: and now?"
    usage = httpx.get(urls[0][0] + "/usage", headers={"authorization": f"Bearer {TOKEN}"}, timeout=10).json()
    assert any(row["model"] == "native" and row["prompt_tokens"] >= 33 for row in usage["data"]), usage
