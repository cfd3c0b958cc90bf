"""The gateway's HTTP behaviour as a browser or plain HTTP client sees it: CORS (preflight
answered without auth, only configured origins) and compression (gzip, brotli, zstd by
Accept-Encoding; SSE only when asked), against `all` and the processes over Redis."""

import gzip
import json
import os
import shutil
import tempfile

import httpx
import pytest

from conftest import TOKEN, Stack, free_port, start_llmrouter

ORIGIN = "https://app.example.com"


@pytest.fixture(scope="module", params=["all-in-memory", "cluster-over-redis"])
def base(request):
    tmp = tempfile.mkdtemp(prefix="llmr-http-")
    config = os.path.join(tmp, "config.toml")
    with open(config, "w") as f:
        f.write(f'[server]\ncors_origins = ["{ORIGIN}"]\ncors_credentials = true\n')
    stack, port = Stack(), free_port()
    env = dict(os.environ, LLMR__SERVER__PORT=str(port), LLMR__SERVER__TOKEN=TOKEN, RUST_LOG="warn")
    try:
        start_llmrouter(stack, request.param, port, env, config=config)
        yield f"http://127.0.0.1:{port}"
    finally:
        stack.stop()
        shutil.rmtree(tmp, ignore_errors=True)


AUTH = {"authorization": f"Bearer {TOKEN}"}
CHAT = {"model": "echo", "messages": [{"role": "user", "content": "compress me " * 50}]}


def test_preflight_is_answered_without_auth_for_configured_origins_only(base):
    asked = {"origin": ORIGIN, "access-control-request-method": "POST",
             "access-control-request-headers": "authorization, content-type"}
    r = httpx.options(base + "/v1/chat/completions", headers=asked)
    assert r.status_code == 200, r.text
    assert r.headers["access-control-allow-origin"] == ORIGIN
    assert "POST" in r.headers["access-control-allow-methods"]
    assert "authorization" in r.headers["access-control-allow-headers"].lower()
    assert r.headers["access-control-allow-credentials"] == "true"
    other = httpx.options(base + "/v1/chat/completions", headers={**asked, "origin": "https://evil.example"})
    assert "access-control-allow-origin" not in other.headers
    # The real request carries the CORS answer headers (and still needs the token).
    r = httpx.post(base + "/v1/chat/completions", json=CHAT, headers={**AUTH, "origin": ORIGIN})
    assert r.status_code == 200 and r.headers["access-control-allow-origin"] == ORIGIN
    assert "x-llmr-cache" in r.headers["access-control-expose-headers"]
    assert httpx.post(base + "/v1/chat/completions", json=CHAT, headers={"origin": ORIGIN}).status_code == 401


@pytest.mark.parametrize("encoding", ["gzip", "br", "zstd"])
def test_answers_are_compressed_as_accept_encoding_allows(base, encoding):
    with httpx.stream("POST", base + "/v1/chat/completions", json=CHAT,
                      headers={**AUTH, "accept-encoding": encoding}) as r:
        raw = b"".join(r.iter_raw())
    assert r.status_code == 200 and r.headers["content-encoding"] == encoding
    plain = httpx.post(base + "/v1/chat/completions", json=CHAT, headers={**AUTH, "accept-encoding": "identity"})
    assert "content-encoding" not in plain.headers
    assert len(raw) < len(plain.content) / 2, "compressed"
    if encoding == "gzip":
        answer = json.loads(gzip.decompress(raw))
        assert answer["choices"][0]["message"]["content"] == plain.json()["choices"][0]["message"]["content"]


def test_streams_are_not_compressed_unless_asked(base):
    body = {**CHAT, "stream": True}
    with httpx.stream("POST", base + "/v1/chat/completions", json=body,
                      headers={**AUTH, "accept-encoding": "gzip"}) as r:
        raw = b"".join(r.iter_raw())
    assert r.headers.get("content-encoding") in (None, "identity")
    assert raw.rstrip().endswith(b"data: [DONE]")
    with httpx.stream("POST", base + "/v1/chat/completions", json=body,
                      headers={**AUTH, "accept-encoding": "gzip", "x-llmr-compress-stream": "true"}) as r:
        raw = b"".join(r.iter_raw())
    assert r.headers["content-encoding"] == "gzip"
    assert gzip.decompress(raw).rstrip().endswith(b"data: [DONE]")


def test_without_configured_origins_no_cors_headers_and_nothing_refused(gateway):
    r = httpx.post(gateway + "/chat/completions", json=CHAT, headers={**AUTH, "origin": ORIGIN})
    assert r.status_code == 200
    assert "access-control-allow-origin" not in r.headers


def test_bounds_on_messages_tools_nesting_headers_and_text_are_clear_4xx(base):
    url = f"{base}/v1/chat/completions"
    many = {"model": "echo", "messages": [{"role": "user", "content": "w"}] * 10001}
    r = httpx.post(url, headers=AUTH, json=many, timeout=30)
    assert r.status_code == 400 and r.json()["error"]["param"] == "messages", r.text
    assert "10001" in r.json()["error"]["message"]
    r = httpx.post(url, headers={**AUTH, "x-padding": "p" * 20000}, json=CHAT)
    assert r.status_code == 431 and r.json()["error"]["code"] == "request_header_fields_too_large", r.text
    r = httpx.post(f"{base}/v1/messages", headers={**AUTH, "x-padding": "p" * 20000},
                   json={"model": "echo", "max_tokens": 5, "messages": [{"role": "user", "content": "x"}]})
    assert r.status_code == 431 and r.json()["type"] == "error", "in the front door's own shape"
    lone = b'{"model":"echo","messages":[{"role":"user","content":"x"}],"tools":[{"type":"function","function":{"name":"f","description":"\\ud800"}}]}'
    r = httpx.post(url, headers={**AUTH, "content-type": "application/json"}, content=lone)
    assert r.status_code == 400 and "surrogate" in r.json()["error"]["message"], r.text
    bad = b'{"model":"echo","messages":[{"role":"user","content":"x"}],"response_format":{"x":"\xff"}}'
    r = httpx.post(url, headers={**AUTH, "content-type": "application/json"}, content=bad)
    assert r.status_code == 400 and "UTF-8" in r.json()["error"]["message"], r.text
    tools = [{"type": "function", "function": {"name": f"f{i}", "parameters": {"type": "object"}}} for i in range(513)]
    r = httpx.post(url, headers=AUTH, json={**CHAT, "tools": tools}, timeout=30)
    assert r.status_code == 400 and r.json()["error"]["param"] == "tools" and "513" in r.text, r.text
    assert httpx.post(url, headers=AUTH, json={**CHAT, "tools": tools[:512]}, timeout=30).status_code == 200
    deep = b'{"model":"echo","messages":[{"role":"user","content":"x"}],"tools":' + b"[" * 100000 + b"]" * 100000 + b"}"
    r = httpx.post(url, headers={**AUTH, "content-type": "application/json"}, content=deep, timeout=30)
    assert r.status_code == 400 and "recursion limit" in r.json()["error"]["message"], r.text
    assert httpx.post(url, headers=AUTH, json=CHAT).status_code == 200, "and it still serves"
