"""compose.yaml for real: the official SDKs through the published gateway port, worker scaling,
a killed worker, a worker cut off from Redis, and a Redis restart (AOF keeps usage and MCP
sessions). The tests run in file order on one compose project (the `cluster` fixture)."""

import asyncio
import re
import time

import httpx
from mcp import ClientSession
from mcp.client.streamable_http import streamable_http_client
from mcp.shared._httpx_utils import create_mcp_http_client
import openai
from openai import OpenAI

from conftest import TOKEN, chat, eventually, load, run, tally

STREAM = "jobs:default"  # the metric labels streams without the key prefix


def client(c):
    return OpenAI(base_url=c.url("/v1"), api_key=TOKEN, max_retries=0, timeout=30)


def test_openai_sdk_plain_and_streamed(cluster):
    oa = client(cluster)
    r = oa.chat.completions.create(model="echo", messages=[{"role": "user", "content": "hello compose"}])
    assert r.choices[0].message.content == "hello compose"
    assert r.usage.total_tokens > 0
    parts = [ch.choices[0].delta.content or "" for ch in oa.chat.completions.create(
        model="echo", messages=[{"role": "user", "content": "streamed through compose"}], stream=True) if ch.choices]
    assert "".join(parts) == "streamed through compose"
    assert any(m.id == "echo" for m in oa.models.list().data)


def test_mcp_sdk_initialize_list_call(cluster):
    async def session():
        http = create_mcp_http_client(headers={"Authorization": f"Bearer {TOKEN}"})
        async with http, streamable_http_client(cluster.url("/mcp"), http_client=http) as (r, w):
            async with ClientSession(r, w) as s:
                init = await s.initialize()
                tools = [t.name for t in (await s.list_tools()).tools]
                result = await s.call_tool("calculator", {"expression": "(2+3)*4"})
                return init, tools, result

    init, tools, result = asyncio.run(session())
    assert (getattr(init, "server_info", None) or init.serverInfo).name
    assert "calculator" in tools, tools
    assert not result.is_error
    assert "20" in result.content[0].text


def test_scaling_workers_spreads_jobs_over_all_of_them(cluster):
    cluster.dc("up", "-d", "--no-recreate", "--scale", "worker=3", timeout=240)
    cluster.wait_ready(workers=3)
    workers = cluster.running("worker")
    assert len(workers) == 3
    before = {w: cluster.metric(w, "llmr_upstream_attempts_total", provider="slow") for w in workers}
    results = load(cluster, "slow", total=60, concurrency=12)
    assert tally(results)["ok"] == 60, tally(results)
    spread = {w[:12]: cluster.metric(w, "llmr_upstream_attempts_total", provider="slow") - before[w] for w in workers}
    print(f"jobs per worker after scaling 1 -> 3: {spread}")
    assert sum(spread.values()) == 60
    assert all(n > 0 for n in spread.values()), spread


def reclaimed_by_worker(cluster):
    """Jobs each running worker took over so far."""
    return {w: cluster.metric(w, "llmr_stream_reclaimed_total", stream=STREAM) for w in cluster.running("worker")}


def busiest_worker(cluster, exclude=(), timeout=5):
    """The worker holding the most jobs right now (waits until one holds any), of those not
    in `exclude` (workers already faulted, which may not answer)."""
    deadline = time.time() + timeout
    while time.time() < deadline:
        loads = {w: cluster.metric(w, "llmr_consumer_in_flight", stream=STREAM)
                 for w in cluster.running("worker") if w not in exclude}
        worker, held = max(loads.items(), key=lambda kv: kv[1])
        if held > 0:
            return worker
        time.sleep(0.02)
    raise AssertionError("no worker held a job under load")


def held_in_redis(cluster, worker):
    """The jobs Redis has delivered to `worker`'s consumer and not yet seen acknowledged:
    what a faulted worker leaves for the others to take over."""
    logs = run(["docker", "logs", worker])
    instance = re.search(r'"instance":"(worker-[0-9a-f]+)"', logs).group(1)
    redis = cluster.running("redis")[0]
    key = next(k for k in run(["docker", "exec", redis, "redis-cli", "--scan", "--pattern", "*" + STREAM]).split()
               if k.endswith(STREAM))
    out = run(["docker", "exec", redis, "redis-cli", "XPENDING", key, "workers", "-", "+", "1000", instance])
    return len(out.split()) // 4  # id, consumer, idle, deliveries per entry


def fault_one_holding_jobs(cluster, action, tries=2):
    """A `during` callback for `load` that applies `action` (a command on a container id) to
    the busiest worker, and the list that gets (victim, jobs it held). Its in-flight gauge is
    read before the fault, so the jobs it showed may all have ended by the time the fault
    lands: Redis says what it really held, and an idle victim is no test, so the next busiest
    is faulted too (at most `tries` in all)."""
    hit = []

    def during():
        for _ in range(tries):
            worker = busiest_worker(cluster, exclude=[w for w, _ in hit])
            run([*action, worker])
            hit.append((worker, held_in_redis(cluster, worker)))
            if hit[-1][1]:
                return
    return during, hit


def taken_over(before, after, victims):
    return sum(n - before.get(w, 0) for w, n in after.items() if w not in victims)


def faulted_under_load(cluster, action, what):
    """Runs 90 slow chats at c=9 with `action` on the busiest worker after 15 answers: every
    request answered, none hung, and the others took over every job the victims held.
    Returns the victims."""
    cluster.wait_ready(workers=3)
    before = reclaimed_by_worker(cluster)
    started = time.time()
    during, hit = fault_one_holding_jobs(cluster, action)
    results = load(cluster, "slow", total=90, concurrency=9, during=during, after=15)
    victims = [w for w, _ in hit]
    counts = tally(results)
    # (A victim may not answer: only the others are asked.)
    after = {w: cluster.metric(w, "llmr_stream_reclaimed_total", stream=STREAM) for w in before if w not in victims}
    taken = taken_over(before, after, victims)
    held = sum(n for _, n in hit)
    print(f"{what} under load: {counts}, held by the victims {[(w[:12], n) for w, n in hit]}, "
          f"reclaimed by the others: {taken:.0f}, {time.time() - started:.1f}s")
    assert counts["ok"] == 90, counts
    assert counts["hung"] == 0
    assert held >= 1, "a victim held jobs when the fault landed"
    assert taken >= held, "the others took over every job the victims held"
    return victims


def test_a_killed_worker_loses_nothing(cluster):
    try:
        faulted_under_load(cluster, ["docker", "kill"], "docker kill of the busiest worker")
    finally:
        cluster.dc("up", "-d", "--no-recreate", "--scale", "worker=3", timeout=240)


def test_a_worker_cut_off_from_redis_has_its_jobs_answered_by_the_others(cluster):
    cut = ["docker", "network", "disconnect", cluster.network]
    victims = []
    try:
        victims = faulted_under_load(cluster, cut, "busiest worker disconnected from Redis")
    finally:
        for w in victims or cluster.running("worker"):
            run(["docker", "network", "connect", cluster.network, w], check=False)


def after_recovery(call, timeout=30):
    """`call()`, retried while it fails with 503 (a connection that still has to notice the
    Redis restart), up to `timeout` seconds."""
    deadline = time.time() + timeout
    while True:
        try:
            return call()
        except openai.InternalServerError as e:
            if e.status_code != 503 or time.time() > deadline:
                raise
            time.sleep(0.2)


def mcp_post(cluster, body, session=None):
    headers = {"authorization": f"Bearer {TOKEN}", "accept": "application/json, text/event-stream"}
    if session:
        headers["mcp-session-id"] = session
    return httpx.post(cluster.url("/mcp"), json=body, headers=headers, timeout=10)


def test_redis_restart_fails_fast_recovers_and_keeps_its_data(cluster):
    init = mcp_post(cluster, {"jsonrpc": "2.0", "id": 1, "method": "initialize", "params": {
        "protocolVersion": "2025-06-18", "capabilities": {}, "clientInfo": {"name": "deploy-test", "version": "1"}}})
    assert init.status_code == 200, init.text
    sid = init.headers["mcp-session-id"]
    assert chat(cluster.url("/v1/chat/completions"), "echo", "before the restart")[0] == 200
    stored = client(cluster).responses.create(model="echo", input="stored before the restart")
    usage_url = cluster.url("/v1/usage")
    auth = {"authorization": f"Bearer {TOKEN}"}

    def echo_requests():
        rows = httpx.get(usage_url, headers=auth, timeout=10).json()["data"]
        return sum(r["requests"] for r in rows if r["model"] == "echo")

    before = echo_requests()
    assert before >= 1

    cluster.dc("stop", "-t", "10", "redis")
    outage = [chat(cluster.url("/v1/chat/completions"), "echo", f"during the outage {i}", timeout=20) for i in range(5)]
    print(f"requests while Redis was down: {[(s, round(t, 2)) for s, t, _ in outage]}")
    assert all(s == 503 for s, _, _ in outage), outage
    assert max(t for _, t, _ in outage) < 5, "failed fast"
    stopped = time.time()
    cluster.dc("start", "redis")

    def serves():
        return chat(cluster.url("/v1/chat/completions"), "echo", "after the restart", timeout=10)[0] == 200
    eventually(serves, 90, "the cluster serving again after the Redis restart")
    print(f"serving again {time.time() - stopped:.1f}s after Redis came back")
    cluster.wait_ready(workers=3)
    assert eventually(lambda: echo_requests() >= before, 30, "usage read back"), \
        "usage written before the restart survived (AOF)"

    # Counting goes on. The first request served after the restart may have gone to a worker
    # whose store connection was still being remade: under the default open usage policy it
    # is answered and its count dropped (logged). So a fresh request until one is counted.
    def counted_again():
        chat(cluster.url("/v1/chat/completions"), "echo", "counted after the restart")
        return echo_requests() >= before + 1
    assert eventually(counted_again, 30, "usage counted after the restart")
    listed = eventually(lambda: (r := mcp_post(cluster, {"jsonrpc": "2.0", "id": 2, "method": "tools/list",
                                                         "params": {}}, session=sid)).status_code != 503 and r, 30,
                        "the MCP session answering")
    assert listed.status_code == 200, listed.text
    assert "calculator" in listed.text, "the MCP session opened before the restart is still valid"
    # A process's shared Redis connection may fail once more after the restart before it is
    # replaced (a 503 that a retry answers): the Responses calls retry those like a client would.
    again = after_recovery(lambda: client(cluster).responses.retrieve(stored.id))
    assert again.output_text == "stored before the restart", "a stored response survived (AOF)"
    chained = after_recovery(lambda: client(cluster).responses.create(
        model="echo", input="and after", previous_response_id=stored.id))
    assert chained.status == "completed"


def test_the_image_alone_runs_all_read_only_with_its_own_tools_and_turns_healthy(image):
    """`docker run IMAGE` (role `all`, in memory): read-only root, no capabilities, the example
    tools baked into the image run in the script host, and the HEALTHCHECK reports healthy."""
    from conftest import free_port
    port = free_port()
    cid = run(["docker", "run", "-d", "--read-only", "--cap-drop", "ALL", "--security-opt", "no-new-privileges",
               "-p", f"127.0.0.1:{port}:8080", image])
    try:
        url = f"http://127.0.0.1:{port}/mcp"
        headers = {"accept": "application/json, text/event-stream"}

        def initialized():
            r = httpx.post(url, headers=headers, timeout=5, json={"jsonrpc": "2.0", "id": 1, "method": "initialize",
                           "params": {"protocolVersion": "2025-06-18", "capabilities": {},
                                      "clientInfo": {"name": "image-test", "version": "1"}}})
            return r.headers.get("mcp-session-id") if r.status_code == 200 else None
        sid = eventually(initialized, 30, "the image's gateway answering")
        call = httpx.post(url, headers={**headers, "mcp-session-id": sid}, timeout=10, json={
            "jsonrpc": "2.0", "id": 2, "method": "tools/call",
            "params": {"name": "calculator", "arguments": {"expression": "6*7"}}}).json()
        assert call["result"]["structuredContent"]["value"] == 42, call
        health = eventually(lambda: run(["docker", "inspect", "-f", "{{.State.Health.Status}}", cid]) == "healthy",
                            40, "the HEALTHCHECK reporting healthy")
        assert health
        user = run(["docker", "inspect", "-f", "{{.Config.User}}", cid])
        assert user == "10001:10001"
    finally:
        run(["docker", "rm", "-f", cid], check=False)


def test_compose_file_and_the_observability_profile_are_valid():
    """compose.yaml with every profile passes `docker-compose config`; the Prometheus config of
    the observability profile passes `promtool check config`, and the collector's pipeline
    sends traces on to Jaeger (those images cannot be pulled here, so they are not started)."""
    import os
    import tempfile

    import yaml

    from conftest import ROOT
    with tempfile.NamedTemporaryFile("w", suffix=".env") as secrets:
        env = {**os.environ, "LLMR_SECRETS_FILE": secrets.name}
        rendered = yaml.safe_load(run(["docker-compose", "-p", "llmrcheck", "-f", "compose.yaml", "--profile",
                                       "observability", "config"], env=env))
    services = rendered["services"]
    assert {"redis", "gateway", "router", "worker", "mcp-tools", "responses", "otel-collector", "jaeger",
            "prometheus"} <= set(services)
    assert "--appendonly" in services["redis"]["command"]
    for name in ("gateway", "router", "worker", "mcp-tools", "responses"):
        assert services[name]["read_only"] is True
        assert services[name]["depends_on"]["redis"]["condition"] == "service_healthy"
    run(["promtool", "check", "config", os.path.join(ROOT, "deploy", "prometheus.yml")])
    collector = yaml.safe_load(open(os.path.join(ROOT, "deploy", "otel-collector.yaml")))
    assert collector["service"]["pipelines"]["traces"]["exporters"] == ["otlp/jaeger"]
