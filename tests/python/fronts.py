"""The fixture shared by the front-door tests: llmrouter (`all` in memory, or gateway, router and
worker over Redis) in front of the two-format mock upstream of `wire_mock`."""

import os
import shutil
import tempfile

import wire_mock
from conftest import ROOT, TOKEN, Stack, binary, free_port, start_llmrouter


def running(mode):
    """Yields (gateway root URL, mock server)."""
    upstream = wire_mock.start()
    tmp = tempfile.mkdtemp(prefix="llmr-fronts-")
    config = os.path.join(tmp, "config.toml")
    with open(config, "w") as f:
        f.write(wire_mock.config(upstream.server_port, ROOT, tmp))
    stack = Stack()
    port = free_port()
    env = dict(os.environ, LLMR__SERVER__PORT=str(port), LLMR__SERVER__TOKEN=TOKEN, RUST_LOG="warn",
               MOCK_ANTHROPIC_KEY="sk-ant-mock", LLMR__SERVER__REQUEST_TIMEOUT_MS="30000")
    try:
        binary()
        start_llmrouter(stack, mode, port, env, roles=("router", "worker", "mcp-tools", "gateway"), config=config)
        yield f"http://127.0.0.1:{port}", upstream
    finally:
        stack.stop()
        upstream.shutdown()
        shutil.rmtree(tmp, ignore_errors=True)
