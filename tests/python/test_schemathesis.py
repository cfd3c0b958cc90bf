"""schemathesis (PyPI) against a running llmrouter (`all` in memory, and the processes over
Redis), driven by the gateway's own `/openapi.json`: every operation gets generated valid and
invalid requests (examples, coverage, fuzzing, and stateful sequences that follow the
document's links from a created response or conversation to its other operations). Checked on
every answer: no 5xx, none slower than 10 s, status, content type and body as documented —
which makes every error the body of its API's error shape (OpenAI's; Anthropic's and
Ollama's on their front doors).

The only change made to the served document is the test's own: `model` fields are limited to
the models this deployment serves, so that generated requests reach the routers and the
worker instead of stopping at 404."""

import json
import os
import re
import subprocess
import sys
import tempfile
import urllib.request

import pytest
from conftest import TOKEN, Stack, free_port, start_llmrouter

MODELS = ["echo"]


def served_document(root):
    with urllib.request.urlopen(f"{root}/openapi.json", timeout=10) as r:
        doc = json.load(r)
    for schema in doc["components"]["schemas"].values():
        props = schema.get("properties", {})
        if "model" in props:
            props["model"] = {"type": "string", "enum": MODELS}
    return doc


@pytest.fixture(scope="module", params=["all-in-memory", "cluster-over-redis"])
def root(request):
    """Every service: gateway, router, worker, mcp-tools and responses."""
    stack = Stack()
    port = free_port()
    env = dict(os.environ, LLMR__SERVER__PORT=str(port), LLMR__SERVER__TOKEN=TOKEN, RUST_LOG="warn")
    try:
        start_llmrouter(stack, request.param, port, env, roles=("router", "worker", "mcp-tools", "responses", "gateway"))
        yield f"http://127.0.0.1:{port}"
    finally:
        stack.stop()


def test_generated_requests_get_documented_answers_and_no_server_error(root):
    doc = served_document(root)
    with tempfile.TemporaryDirectory() as tmp:
        path = os.path.join(tmp, "openapi.json")
        with open(path, "w") as f:
            json.dump(doc, f)
        cli = os.path.join(os.path.dirname(sys.executable), "schemathesis")
        args = [cli, "run", path, "--url", root, "-H", f"Authorization: Bearer {TOKEN}",
                "--checks", "not_a_server_error,status_code_conformance,content_type_conformance,response_schema_conformance",
                "--phases", "examples,coverage,fuzzing,stateful", "--max-examples", "15", "--seed", "7",
                "--request-timeout", "20", "--max-response-time", "10", "--workers", "2", "--no-color"]
        run = subprocess.run(args, capture_output=True, text=True, timeout=600, cwd=tmp)
    out = run.stdout + run.stderr
    assert run.returncode == 0, out[-6000:]
    counts = re.search(r"(\d+) generated, (\d+) passed", out)
    assert counts, out[-3000:]
    generated, passed = int(counts.group(1)), int(counts.group(2))
    print(f"schemathesis: {generated} generated, {passed} passed")
    assert generated >= 1000 and passed == generated, out[-3000:]
