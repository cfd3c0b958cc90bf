"""The official `mcp` Python package as the client of llmrouter's /mcp, on `llmrouter all`
in memory and on gateway + router + worker + mcp-tools processes over Redis: initialize,
list (paged), call, tool errors, protocol errors, discovery mode, and a remote MCP server
built with `fastmcp` merged under its namespace (visible and on-demand), including that
server going down."""

import asyncio
import os
import shutil
import subprocess
import sys
import tempfile
import time
import urllib.request

import pytest
from mcp import ClientSession
from mcp.client.streamable_http import streamable_http_client
from mcp.shared._httpx_utils import create_mcp_http_client
from mcp.shared.exceptions import MCPError
from mcp_types import PaginatedRequestParams

from conftest import ROOT, TOKEN, Stack, binary, free_port, start_llmrouter

HERE = os.path.dirname(os.path.abspath(__file__))

WEATHER = """export const description = "Weather forecast for a city.";
export const keywords = ["forecast", "temperature"];
export const visibility = "ondemand";
export const parameters = { type: "object", properties: { city: { type: "string" } }, required: ["city"] };
export default function ({ city }) { return { city, celsius: 21 }; }
"""


def wait_port(port, proc, timeout=30):
    deadline = time.time() + timeout
    while time.time() < deadline:
        if proc.poll() is not None:
            raise RuntimeError(f"{proc.args} exited with {proc.returncode}")
        try:
            urllib.request.urlopen(f"http://127.0.0.1:{port}/mcp", timeout=1)
        except urllib.error.HTTPError:
            return  # it answers (405/406 for a GET)
        except OSError:
            time.sleep(0.1)
            continue
        return
    raise RuntimeError("the remote MCP server did not start")


class Cluster:
    def __init__(self, url, remote, tools):
        self.url = url
        self.remote = remote
        self.tools = tools


@pytest.fixture(scope="module", params=["all-in-memory", "cluster-over-redis"])
def mcp_cluster(request):
    stack = Stack()
    tools = tempfile.mkdtemp(prefix="llmr-py-tools-")
    try:
        for f in os.listdir(os.path.join(ROOT, "config", "tools")):
            shutil.copy(os.path.join(ROOT, "config", "tools", f), tools)
        with open(os.path.join(tools, "weather.js"), "w") as f:
            f.write(WEATHER)
        rport = free_port()
        remote = stack.spawn([sys.executable, os.path.join(HERE, "remote_server.py"), str(rport)], dict(os.environ))
        wait_port(rport, remote)
        port = free_port()
        config = tools + ".toml"
        with open(config, "w") as f:
            f.write(
                f"""
[scripting]
tools_path = "{tools}"
libraries_path = "{os.path.join(ROOT, 'config', 'libraries')}"
http_allowlist = ["127.0.0.1:{port}"]
[mcp]
page_size = 3
remote_timeout_ms = 3000
remote_refresh_ms = 1000
[[mcp.remote_servers]]
namespace = "docs"
url = "http://127.0.0.1:{rport}/mcp"
[[mcp.remote_servers]]
namespace = "hidden-docs"
url = "http://127.0.0.1:{rport}/mcp"
tool_visibility = "ondemand"
"""
            )
        env = dict(
            os.environ,
            LLMR__SERVER__PORT=str(port),
            LLMR__SERVER__TOKEN=TOKEN,
            RUST_LOG="warn",
        )
        start_llmrouter(stack, request.param, port, env, ("router", "worker", "mcp-tools", "gateway"), config)
        yield Cluster(f"http://127.0.0.1:{port}/mcp", remote, tools)
    finally:
        stack.stop()
        shutil.rmtree(tools, ignore_errors=True)
        if os.path.exists(tools + ".toml"):
            os.remove(tools + ".toml")


def session(url, headers=None, fn=None):
    async def run():
        h = {"Authorization": f"Bearer {TOKEN}", **(headers or {})}
        http = create_mcp_http_client(headers=h)
        async with http:
            async with streamable_http_client(url, http_client=http) as (r, w):
                async with ClientSession(r, w) as s:
                    init = await s.initialize()
                    return await fn(s, init)

    return asyncio.run(run())


async def all_tools(s):
    names, cursor = [], None
    while True:
        page = await s.list_tools(params=PaginatedRequestParams(cursor=cursor)) if cursor else await s.list_tools()
        names += [t.name for t in page.tools]
        cursor = page.next_cursor
        if not cursor:
            return names


def test_initialize_list_and_call(mcp_cluster):
    async def fn(s, init):
        assert init.server_info.name == "llmrouter"
        assert init.capabilities.tools is not None
        names = await all_tools(s)
        assert {"tool_search", "execute_tool", "execute_code", "calculator", "docs_search", "docs_page_get"} <= set(names)
        assert "weather" not in names and "summarize" not in names  # on demand
        assert not any(n.startswith("hidden-docs_") for n in names)
        r = await s.call_tool("calculator", {"expression": "(1+2)*7"})
        assert not r.is_error
        assert r.structured_content == {"expression": "(1+2)*7", "value": 21}
        return True

    assert session(mcp_cluster.url, fn=fn)


def test_tool_errors_and_protocol_errors(mcp_cluster):
    async def fn(s, init):
        r = await s.call_tool("calculator", {"expression": "2+"})
        assert r.is_error
        assert "expected a number" in r.content[0].text
        with pytest.raises(MCPError) as e:
            await s.call_tool("no_such_tool", {})
        assert e.value.code == -32602
        with pytest.raises(MCPError) as e:
            await s.call_tool("weather", {"city": "Oslo"})  # on demand: only via execute_tool
        assert e.value.code == -32602
        return True

    assert session(mcp_cluster.url, fn=fn)


def test_search_and_execute_on_demand_tools(mcp_cluster):
    async def fn(s, init):
        r = await s.call_tool("tool_search", {"query": "temperature forecast"})
        found = [t["name"] for t in r.structured_content["tools"]]
        assert found[0] == "weather"
        r = await s.call_tool("tool_search", {"query": "documentation"})
        found = [t["name"] for t in r.structured_content["tools"]]
        assert "hidden-docs_search" in found and "docs_search" not in found
        r = await s.call_tool("execute_tool", {"name": "weather", "arguments": {"city": "Oslo"}})
        assert r.structured_content == {"city": "Oslo", "celsius": 21}
        r = await s.call_tool("execute_tool", {"name": "hidden-docs_search", "arguments": {"query": "x"}})
        assert r.content[0].text == "found: x"
        return True

    assert session(mcp_cluster.url, fn=fn)


def test_discovery_mode_lists_only_builtins(mcp_cluster):
    async def fn(s, init):
        names = await all_tools(s)
        assert sorted(names) == ["execute_code", "execute_tool", "tool_search"]
        r = await s.call_tool("tool_search", {"query": "arithmetic"})
        assert "calculator" in [t["name"] for t in r.structured_content["tools"]]
        return True

    assert session(mcp_cluster.url, headers={"X-MCP-Tool-Mode": "discovery"}, fn=fn)


def test_remote_tools_are_proxied(mcp_cluster):
    async def fn(s, init):
        r = await s.call_tool("docs_search", {"query": "routing"})
        assert not r.is_error and r.content[0].text == "found: routing"
        r = await s.call_tool("docs_page_get", {"id": 7})
        assert r.structured_content == {"id": 7, "title": "Page 7"} or '"Page 7"' in r.content[0].text
        r = await s.call_tool("execute_code", {"code": "mcp.call('docs_search', {query: 'js'})"})
        assert "found: js" in r.content[0].text
        return True

    assert session(mcp_cluster.url, fn=fn)


def test_zz_remote_server_down_fails_only_its_tools(mcp_cluster):
    """Runs last in the module: it stops the remote server."""
    mcp_cluster.remote.kill()
    mcp_cluster.remote.wait(timeout=10)
    time.sleep(1.2)  # past remote_refresh_ms

    async def fn(s, init):
        r = await s.call_tool("docs_search", {"query": "x"})
        assert r.is_error and "docs" in r.content[0].text
        r = await s.call_tool("calculator", {"expression": "2*2"})
        assert r.structured_content["value"] == 4
        names = await all_tools(s)
        assert "calculator" in names
        return True

    assert session(mcp_cluster.url, fn=fn)


def test_example_tools_use_ai_http_and_kv(mcp_cluster):
    async def fn(s, init):
        r = await s.call_tool("execute_tool", {"name": "summarize", "arguments": {"text": "hello world", "model": "echo"}})
        assert not r.is_error, r
        assert r.content[0].text == "hello world"  # the echo provider answers with the text
        health = mcp_cluster.url.replace("/mcp", "/health")
        r = await s.call_tool("execute_tool", {"name": "fetch_json", "arguments": {"url": health}})
        assert not r.is_error, r
        assert r.structured_content["cached"] is False and r.structured_content["data"]["status"] == "ok"
        r = await s.call_tool("execute_tool", {"name": "fetch_json", "arguments": {"url": health}})
        assert r.structured_content["cached"] is True
        r = await s.call_tool("execute_tool", {"name": "fetch_json", "arguments": {"url": "http://example.org/x.json"}})
        assert r.is_error and "http_allowlist" in r.content[0].text
        return True

    assert session(mcp_cluster.url, fn=fn)


def test_cli_tool_and_script(mcp_cluster, tmp_path):
    server = mcp_cluster.url.replace("/mcp", "")
    out = subprocess.run(
        [binary(), "tool", "calculator", '{"expression": "2^10"}', "--server", server, "--token", TOKEN],
        capture_output=True, text=True, timeout=60,
    )
    assert out.returncode == 0, out.stderr
    assert '"value": 1024' in out.stdout
    out = subprocess.run(
        [binary(), "tool", "calculator", '{"expression": "2+"}', "--server", server, "--token", TOKEN, "-v"],
        capture_output=True, text=True, timeout=60,
    )
    assert out.returncode == 1 and "expected a number" in out.stderr
    assert '"method":"tools/call"' in out.stderr  # -v shows the exchange
    script = tmp_path / "double.js"
    script.write_text("args.n * 2 + mcp.call('calculator', {expression: '1+1'}).value")
    out = subprocess.run(
        [binary(), "script", str(script), '{"n": 20}', "--server", server, "--token", TOKEN],
        capture_output=True, text=True, timeout=60,
    )
    assert out.returncode == 0, out.stderr
    assert out.stdout.strip() == "42"
    out = subprocess.run(
        [binary(), "tool", "calculator", "{}", "--server", server, "--token", "wrong"],
        capture_output=True, text=True, timeout=60,
    )
    assert out.returncode == 1
