"""Fixtures: llmrouter as a user runs it — `llmrouter all` in memory, and the separate
processes (gateway, router, worker) over a throw-away redis-server. Every process is
started here and stopped by its PID."""

import json
import os
import shutil
import socket
import subprocess
import tempfile
import time
import urllib.request

import pytest

TOKEN = "sdk-test-token"
ROOT = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))


def binary():
    path = os.environ.get("LLMROUTER_BIN") or os.path.join(ROOT, "target", "debug", "llmrouter")
    if not os.path.exists(path):
        pytest.fail(f"llmrouter binary not found at {path}: run `cargo build --bin llmrouter` (just test does)")
    return path


def free_port():
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def wait_healthy(port, want_services, procs, timeout=30):
    deadline = time.time() + timeout
    last = None
    while time.time() < deadline:
        for p in procs:
            if p.poll() is not None:
                raise RuntimeError(f"{p.args} exited with {p.returncode}")
        try:
            with urllib.request.urlopen(f"http://127.0.0.1:{port}/health", timeout=2) as r:
                last = json.load(r)
                seen = {s["service"] for s in last.get("services", [])}
                if want_services <= seen:
                    return
        except OSError:
            pass
        time.sleep(0.1)
    raise RuntimeError(f"llmrouter did not become healthy: {last}")


class Stack:
    def __init__(self):
        self.procs = []
        self.logs = []

    def spawn(self, args, env):
        log = tempfile.TemporaryFile()
        self.logs.append(log)
        p = subprocess.Popen(args, env=env, stdout=log, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL)
        self.procs.append(p)
        return p

    def stop(self):
        for p in reversed(self.procs):
            if p.poll() is None:
                p.kill()
                p.wait(timeout=10)
        for log in self.logs:
            log.close()


def start_llmrouter(stack, mode, port, env, roles=("router", "worker", "gateway"), config=None):
    """Starts `llmrouter all` (in memory) or one process per role over a fresh redis-server."""
    base = [binary()] + (["--config", config] if config else [])
    want = {"gateway", "router", "worker"} | ({"mcp-tools"} if "mcp-tools" in roles else set())
    if mode == "all-in-memory":
        p = stack.spawn(base + ["all"], env)
        wait_healthy(port, want, [p])
    else:
        if shutil.which("redis-server") is None:
            pytest.fail("redis-server is not installed (Debian package `redis-server`)")
        rport = free_port()
        stack.spawn(["redis-server", "--port", str(rport), "--bind", "127.0.0.1", "--save", "", "--appendonly", "no"], env)
        env["LLMR__REDIS__URL"] = f"redis://127.0.0.1:{rport}/"
        procs = [stack.spawn(base + [role], env) for role in roles]
        wait_healthy(port, want, procs)


@pytest.fixture(scope="module", params=["all-in-memory", "cluster-over-redis"])
def gateway(request):
    """Yields the base URL (http://127.0.0.1:PORT/v1) of a running llmrouter."""
    stack = Stack()
    port = free_port()
    env = dict(os.environ, LLMR__SERVER__PORT=str(port), LLMR__SERVER__TOKEN=TOKEN, RUST_LOG="warn")
    try:
        start_llmrouter(stack, request.param, port, env)
        yield f"http://127.0.0.1:{port}/v1"
    finally:
        stack.stop()
