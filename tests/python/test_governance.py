"""Virtual keys, limits, budgets and allowlists as a user meets them: keys made with the admin
API (plain HTTP, `server.admin_token`), then the official `openai`, `anthropic`, `ollama` and
`mcp` packages called with those keys — on `llmrouter all` in memory and on gateway + router +
worker + mcp-tools processes over Redis.

The upstream is the two-format mock of `wire_mock` (its OpenAI answers report 5 completion
tokens), behind a provider priced at $2000 per million output tokens: a request with
`max_tokens` 10 reserves $0.02 and costs $0.01."""

import asyncio
import datetime
import os
import shutil
import tempfile
import time

import anthropic
import httpx
import ollama
import openai
import pytest
from mcp import ClientSession
from mcp.client.streamable_http import streamable_http_client
from mcp.shared._httpx_utils import create_mcp_http_client
from mcp.shared.exceptions import MCPError
from mcp_types import PaginatedRequestParams

import wire_mock
from conftest import ROOT, TOKEN, Stack, binary, free_port, start_llmrouter

ADMIN = "gov-admin-token"
MAX_TOKENS = 10
RESERVE, COST = 0.02, 0.01  # per request with MAX_TOKENS, as priced below
ALLOWED = {"allowed-a", "allowed-b"}


def config(upstream_port):
    return f"""
[scripting]
tools_path = "{ROOT}/config/tools"
libraries_path = "{ROOT}/config/libraries"

[[providers]]
name = "echo"
type = "echo"
models = ["echo"]

[[providers]]
name = "priced-up"
type = "openai"
base_url = "http://127.0.0.1:{upstream_port}/v1"
models = ["allowed-a", "allowed-b", "other"]
cost_output_per_mtok = 2000.0
"""


class Gateway:
    def __init__(self, root):
        self.root = root
        self.v1 = f"{root}/v1"
        self.admin_http = httpx.Client(base_url=root, headers={"Authorization": f"Bearer {ADMIN}"}, timeout=30)

    def admin(self, method, path, body=None, expect=(200, 201)):
        r = self.admin_http.request(method, path, json=body)
        assert r.status_code in expect, f"{method} {path}: {r.status_code} {r.text}"
        return r.json()

    def key(self, **fields):
        """A new virtual key: (id, secret)."""
        fields.setdefault("name", "py-key")
        r = self.admin_http.post("/admin/keys", json=fields)
        assert r.status_code == 201, r.text
        v = r.json()
        assert v["key"].startswith("sk-llmr-")
        return v["id"], v["key"]

    def openai(self, secret):
        return openai.OpenAI(base_url=self.v1, api_key=secret, max_retries=0, timeout=30)

    def anthropic(self, secret):
        return anthropic.Anthropic(base_url=self.root, api_key=secret, max_retries=0, timeout=30)

    def ollama(self, secret):
        return ollama.Client(host=self.root, headers={"Authorization": f"Bearer {secret}"}, timeout=30)


@pytest.fixture(scope="module", params=["all-in-memory", "cluster-over-redis"])
def gw(request):
    upstream = wire_mock.start()
    tmp = tempfile.mkdtemp(prefix="llmr-gov-")
    path = os.path.join(tmp, "config.toml")
    with open(path, "w") as f:
        f.write(config(upstream.server_port))
    stack = Stack()
    port = free_port()
    env = dict(os.environ, LLMR__SERVER__PORT=str(port), LLMR__SERVER__TOKEN=TOKEN,
               LLMR__SERVER__ADMIN_TOKEN=ADMIN, RUST_LOG="warn", LLMR__SERVER__REQUEST_TIMEOUT_MS="30000")
    g = None
    try:
        binary()
        start_llmrouter(stack, request.param, port, env, roles=("router", "worker", "mcp-tools", "gateway"), config=path)
        g = Gateway(f"http://127.0.0.1:{port}")
        yield g
    finally:
        if g is not None:
            g.admin_http.close()
        stack.stop()
        upstream.shutdown()
        shutil.rmtree(tmp, ignore_errors=True)


def chat(client, model="allowed-a", raw=True):
    call = client.chat.completions.with_raw_response.create if raw else client.chat.completions.create
    return call(model=model, max_tokens=MAX_TOKENS, messages=[{"role": "user", "content": "hi"}])


def cost_of(raw):
    value = raw.headers.get("x-llmr-cost-usd")
    assert value is not None, dict(raw.headers)
    return float(value)


def settled(gw, kid):
    """The key's figures once nothing of it is in flight (settlement is written after the answer)."""
    v = eventually(lambda: (lambda k: k if k["in_flight"] == 0 and k["reserved_usd"] == 0 else None)(
        gw.admin("GET", f"/admin/keys/{kid}")))
    assert v, gw.admin("GET", f"/admin/keys/{kid}")
    return v


def eventually(check, timeout=5.0):
    """Polls `check` (bounded) until it returns a truthy value; returns its last value."""
    deadline = time.time() + timeout
    while True:
        v = check()
        if v or time.time() > deadline:
            return v
        time.sleep(0.1)


# 1. ------------------------------------------------------------------------------------------

def test_openai_rpm_answers_exactly_the_limit_then_rate_limit_error(gw):
    _, secret = gw.key(name="rpm5", rpm=5)
    client = gw.openai(secret)
    ok, refused = [], []
    for _ in range(8):
        try:
            ok.append(chat(client))
        except openai.RateLimitError as e:
            refused.append(e)
    assert (len(ok), len(refused)) == (5, 3), "exactly the rpm is answered"
    for raw in ok:
        assert raw.status_code == 200
        assert raw.parse().choices[0].message.content == "saw 1 messages; last: hi"
        assert raw.headers.get("x-ratelimit-limit-requests") == "5"
        assert raw.headers.get("x-ratelimit-remaining-requests") is not None
        assert cost_of(raw) == pytest.approx(COST)
    remaining = [int(r.headers["x-ratelimit-remaining-requests"]) for r in ok]
    assert remaining == sorted(remaining, reverse=True) and remaining[-1] == 0, remaining
    for e in refused:
        assert e.status_code == 429
        assert e.code == "rate_limit_exceeded", e.body
        assert int(e.response.headers["retry-after"]) >= 1


# 2. ------------------------------------------------------------------------------------------

def test_openai_budget_spent_is_insufficient_quota(gw):
    budget = 0.05
    kid, secret = gw.key(name="budget", budget_usd=budget, budget_period="month")
    client = gw.openai(secret)
    costs, refusal = [], None
    for _ in range(10):
        try:
            costs.append(cost_of(chat(client)))
        except openai.RateLimitError as e:
            refusal = e
            break
        # Settlement lands just after the answer: the next request is admitted against it.
        settled(gw, kid)
    assert refusal is not None, f"the budget never refused: {costs}"
    assert refusal.code == "insufficient_quota", refusal.body
    assert refusal.status_code == 429
    # Each request reserves $0.02 and costs $0.01: admitted while spend + 0.02 <= 0.05.
    assert 3 <= len(costs) <= 4, costs
    assert all(c == pytest.approx(COST) for c in costs)
    v = settled(gw, kid)
    assert v["spend_usd"] == pytest.approx(sum(costs), abs=1e-9)
    assert v["spend_usd"] <= budget + 1e-9
    assert v["reserved_usd"] == 0
    # Still spent: refused again, the same way.
    with pytest.raises(openai.RateLimitError) as e:
        chat(client)
    assert e.value.code == "insufficient_quota"


# 3. ------------------------------------------------------------------------------------------

def test_openai_model_allowlist(gw):
    _, secret = gw.key(name="models", models=["allowed*"])
    client = gw.openai(secret)
    ids = {m.id for m in client.models.list()}
    assert ids == ALLOWED, ids
    before = len(wire_mock.seen)
    for model in ("other", "echo"):
        with pytest.raises(openai.PermissionDeniedError) as e:
            chat(client, model=model, raw=False)
        assert e.value.status_code == 403
        assert e.value.code == "permission_denied", e.value.body
    assert len(wire_mock.seen) == before, "a refused model reaches no upstream"
    r = chat(client, model="allowed-b", raw=False)
    assert r.choices[0].message.content == "saw 1 messages; last: hi"
    assert r.usage.completion_tokens == 5


# 4. ------------------------------------------------------------------------------------------

def anthropic_message(client, model="allowed-a", raw=True):
    call = client.messages.with_raw_response.create if raw else client.messages.create
    return call(model=model, max_tokens=MAX_TOKENS, messages=[{"role": "user", "content": "hello"}])


def test_anthropic_rpm_headers_and_model_allowlist(gw):
    _, secret = gw.key(name="claude-user", rpm=2)
    client = gw.anthropic(secret)
    for i in range(2):
        raw = anthropic_message(client)
        assert raw.status_code == 200
        m = raw.parse()
        assert m.content[-1].text == "saw 1 messages; last: hello"
        assert raw.headers.get("anthropic-ratelimit-requests-limit") == "2"
        assert raw.headers.get("anthropic-ratelimit-requests-remaining") == str(1 - i)
        assert raw.headers.get("anthropic-ratelimit-requests-reset")
        assert "x-ratelimit-limit-requests" not in raw.headers
        assert cost_of(raw) == pytest.approx(COST)
    with pytest.raises(anthropic.RateLimitError) as e:
        anthropic_message(client, raw=False)
    assert e.value.status_code == 429
    assert e.value.body["type"] == "error" and e.value.body["error"]["type"] == "rate_limit_error", e.value.body
    assert int(e.value.response.headers["retry-after"]) >= 1

    _, limited = gw.key(name="claude-models", models=["allowed*"])
    client = gw.anthropic(limited)
    with pytest.raises(anthropic.PermissionDeniedError) as e:
        anthropic_message(client, model="other", raw=False)
    assert e.value.status_code == 403
    assert e.value.body["error"]["type"] == "permission_error", e.value.body
    assert anthropic_message(client, model="allowed-b", raw=False).content[-1].text.endswith("last: hello")


# 5. ------------------------------------------------------------------------------------------

def test_ollama_allowlist_list_and_rpm(gw):
    _, secret = gw.key(name="ollama-models", models=["allowed*"])
    client = gw.ollama(secret)
    names = {m.model for m in client.list().models}
    assert names == ALLOWED, names
    with pytest.raises(ollama.ResponseError) as e:
        client.chat(model="other", messages=[{"role": "user", "content": "x"}])
    assert e.value.status_code == 403
    assert "other" in e.value.error
    r = client.chat(model="allowed-a", messages=[{"role": "user", "content": "hello"}], options={"num_predict": MAX_TOKENS})
    assert r.message.content.endswith("last: hello")

    _, rpm = gw.key(name="ollama-rpm", rpm=2)
    client = gw.ollama(rpm)
    for _ in range(2):
        client.chat(model="allowed-a", messages=[{"role": "user", "content": "hi"}], options={"num_predict": MAX_TOKENS})
    with pytest.raises(ollama.ResponseError) as e:
        client.chat(model="allowed-a", messages=[{"role": "user", "content": "hi"}], options={"num_predict": MAX_TOKENS})
    assert e.value.status_code == 429
    assert "Rate limit" in e.value.error


# 6. ------------------------------------------------------------------------------------------

def mcp_session(gw, secret, fn):
    async def run():
        http = create_mcp_http_client(headers={"Authorization": f"Bearer {secret}"})
        async with http:
            async with streamable_http_client(f"{gw.root}/mcp", http_client=http) as (r, w):
                async with ClientSession(r, w) as s:
                    await s.initialize()
                    return await fn(s)

    return asyncio.run(asyncio.wait_for(run(), timeout=60))


async def tool_names(s):
    names, cursor = [], None
    for _ in range(50):
        page = await s.list_tools(params=PaginatedRequestParams(cursor=cursor)) if cursor else await s.list_tools()
        names += [t.name for t in page.tools]
        cursor = page.next_cursor
        if not cursor:
            return names
    raise AssertionError("tools/list never ended")


async def refused_call(s, name, arguments):
    """A tools/call the key may not make: a JSON-RPC error, or an is_error result saying so."""
    try:
        r = await s.call_tool(name, arguments)
    except MCPError as e:
        # -32602 (invalid params) as for an unknown tool, or a similar JSON-RPC error.
        assert -32700 <= e.code <= -32000, e
        assert name in str(e), e
        return
    assert r.is_error, f"{name} was called: {r}"
    text = " ".join(getattr(c, "text", "") for c in r.content).lower()
    assert "may not" in text or "not allowed" in text, text


def test_mcp_tool_allowlist(gw):
    # The server token sees every tool (the reference for what the key's list hides).
    async def everything(s):
        return await tool_names(s)

    all_names = set(mcp_session(gw, TOKEN, everything))
    assert {"calculator", "execute_code", "tool_search", "execute_tool"} <= all_names, all_names

    _, secret = gw.key(name="mcp-calc", tools=["calc*"])

    async def fn(s):
        names = await tool_names(s)
        assert names == ["calculator"], names
        r = await s.call_tool("calculator", {"expression": "6*7"})
        assert not r.is_error, r
        assert r.structured_content["value"] == 42
        await refused_call(s, "execute_code", {"code": "1+1"})
        await refused_call(s, "execute_tool", {"name": "calculator", "arguments": {"expression": "1+1"}})
        await refused_call(s, "fetch_json", {"url": "http://127.0.0.1:1/x.json"})
        return True

    assert mcp_session(gw, secret, fn)


# 7. ------------------------------------------------------------------------------------------

def test_revoked_and_rotated_keys_are_authentication_errors(gw):
    kid, secret = gw.key(name="rotate-me")
    assert chat(gw.openai(secret), raw=False).choices[0].message.content.endswith("last: hi")
    rotated = gw.admin("POST", f"/admin/keys/{kid}/rotate", {})
    new = rotated["key"]
    assert new != secret and rotated["id"] == kid
    with pytest.raises(openai.AuthenticationError) as e:
        chat(gw.openai(secret), raw=False)
    assert e.value.status_code == 401
    assert chat(gw.openai(new), raw=False).choices[0].message.content.endswith("last: hi")

    deleted = gw.admin("DELETE", f"/admin/keys/{kid}")
    assert deleted["revoked"] is True
    with pytest.raises(openai.AuthenticationError) as e:
        chat(gw.openai(new), raw=False)
    assert e.value.code == "invalid_api_key", e.value.body
    with pytest.raises(anthropic.AuthenticationError):
        anthropic_message(gw.anthropic(new), raw=False)
    # A virtual key opens no admin API.
    r = httpx.get(f"{gw.root}/admin/keys", headers={"Authorization": f"Bearer {new}"}, timeout=30)
    assert r.status_code == 401


# 8. ------------------------------------------------------------------------------------------

def test_spend_and_request_log_agree_with_the_answers(gw):
    kid, secret = gw.key(name="ledger", rpm=3, models=["allowed*"])
    client = gw.openai(secret)
    costs = []
    made = []  # (status, model) of every request, oldest first
    for model in ("allowed-a", "allowed-b", "allowed-a"):
        costs.append(cost_of(chat(client, model=model)))
        made.append((200, model))
    with pytest.raises(openai.PermissionDeniedError):
        chat(client, model="other", raw=False)
    made.append((403, "other"))
    with pytest.raises(openai.RateLimitError):
        chat(client, model="allowed-b", raw=False)
    made.append((429, "allowed-b"))

    def spend_row():
        # Yesterday to today (UTC), so a request made just before midnight is still counted.
        today = datetime.datetime.now(datetime.timezone.utc).date()
        days = f"from={today - datetime.timedelta(days=1)}&to={today}"
        rows = gw.admin("GET", f"/admin/spend?group_by=key&{days}")["data"]
        return next((r for r in rows if r["key"] == kid), None)

    row = eventually(lambda: (lambda r: r if r and r["requests"] == 3 else None)(spend_row())) or spend_row()
    assert row is not None, "the key has a spend row"
    assert row["spend_usd"] == pytest.approx(sum(costs), abs=1e-9), (row, costs)
    assert row["requests"] == 3, row
    assert row["output_tokens"] == 15, row

    def records():
        return gw.admin("GET", f"/admin/requests?key={kid}")["data"]

    recs = eventually(lambda: (lambda r: r if len(r) >= len(made) else None)(records())) or records()
    assert len(recs) == len(made), recs
    # Newest first.
    assert [(r["status"], r["model"]) for r in reversed(recs)] == made, recs
    for r in recs:
        assert r["key"] == kid and r["route"] == "chat"
        assert "cost_usd" in r
        if r["status"] == 200:
            assert r["provider"] == "priced-up" and r["target_model"] == r["model"]
            assert r["cost_usd"] == pytest.approx(COST)
            assert r["output_tokens"] == 5
        else:
            assert r["cost_usd"] == 0
            assert r["error_type"] == {403: "permission_denied", 429: "rate_limit_exceeded"}[r["status"]], r
    assert sum(r["cost_usd"] for r in recs) == pytest.approx(sum(costs), abs=1e-9)
