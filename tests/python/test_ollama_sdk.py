"""The official `ollama` package against llmrouter's Ollama-compatible `/api/*`, unchanged, as a
user calls it (in memory and over Redis): list, show, ps, chat plain and streamed, tools,
generate, embed, errors; plus LM Studio's model list."""

import httpx
import ollama
import pytest

import wire_mock
from conftest import TOKEN
from fronts import running


@pytest.fixture(scope="module", params=["all-in-memory", "cluster-over-redis"])
def gw(request):
    yield from running(request.param)


@pytest.fixture
def client(gw):
    return ollama.Client(host=gw[0], headers={"Authorization": f"Bearer {TOKEN}"})


def test_list_show_ps_version(client, gw):
    names = {m.model for m in client.list().models}
    assert {"claude", "gpt", "emb", "claude-3-mock"} <= names
    shown = client.show("claude")
    assert shown.modelinfo["llmrouter.context_length"] == 200000
    assert "claude" in {m.model for m in client.ps().models}
    r = httpx.get(f"{gw[0]}/api/version", headers={"Authorization": f"Bearer {TOKEN}"})
    assert r.json()["version"]


@pytest.mark.parametrize("model", ["gpt", "claude"])
def test_chat_plain(client, model):
    r = client.chat(model=model, messages=[{"role": "user", "content": "hello"}], options={"temperature": 0.1, "num_predict": 40})
    assert r.message.role == "assistant"
    assert r.message.content.endswith("last: hello")
    assert r.done and r.done_reason == "stop"
    assert r.prompt_eval_count > 0 and r.eval_count > 0 and r.total_duration > 0
    sent = wire_mock.seen[-1]["body"]
    if model == "gpt":
        assert sent["max_tokens"] == 40 and sent["temperature"] == 0.1


@pytest.mark.parametrize("model", ["gpt", "claude"])
def test_chat_stream(client, model):
    parts = list(client.chat(model=model, messages=[{"role": "user", "content": "stream"}], stream=True))
    assert len(parts) >= 2
    assert all(not p.done for p in parts[:-1]) and parts[-1].done
    assert "".join(p.message.content for p in parts).endswith("last: stream")
    assert parts[-1].eval_count > 0


@pytest.mark.parametrize("stream", [False, True])
def test_tools(client, stream):
    tools = [{"type": "function", "function": {"name": "get_weather", "description": "weather",
                                               "parameters": {"type": "object", "properties": {"city": {"type": "string"}}}}}]
    messages = [{"role": "user", "content": "weather in Oslo?"}]
    if stream:
        calls = [c for p in client.chat(model="gpt", messages=messages, tools=tools, stream=True)
                 for c in (p.message.tool_calls or [])]
    else:
        calls = client.chat(model="gpt", messages=messages, tools=tools).message.tool_calls
    assert calls[0].function.name == "get_weather" and calls[0].function.arguments == {"city": "Oslo"}
    messages += [{"role": "assistant", "content": "", "tool_calls": calls},
                 {"role": "tool", "tool_name": "get_weather", "content": "Sunny"}]
    r = client.chat(model="gpt", messages=messages, tools=tools)
    assert r.message.content.endswith("last: Sunny")
    sent = wire_mock.seen[-1]["body"]["messages"]
    assert sent[-1]["tool_call_id"] == sent[-2]["tool_calls"][0]["id"]


def test_generate_plain_and_stream(client):
    r = client.generate(model="gpt", prompt="say hi", system="be kind")
    assert r.response == "saw 2 messages; last: say hi" and r.done
    parts = list(client.generate(model="gpt", prompt="stream hi", stream=True))
    assert "".join(p.response for p in parts).endswith("last: stream hi") and parts[-1].done


def test_embed(client):
    r = client.embed(model="emb", input=["a", "bbb"])
    assert r.embeddings == [[0.1, 0.2, 1.0], [0.1, 0.2, 3.0]]
    assert wire_mock.seen[-1]["path"].endswith("/embeddings")


def test_images_reach_the_upstream(client):
    png = "iVBORw0KGgoAAAANSUhEUg=="
    r = client.chat(model="gpt", messages=[{"role": "user", "content": "see", "images": [png]}])
    assert "[image]" in r.message.content
    part = wire_mock.seen[-1]["body"]["messages"][0]["content"][1]
    assert part["image_url"]["url"] == f"data:image/png;base64,{png}"


def test_errors_have_ollamas_shape(client, gw):
    with pytest.raises(ollama.ResponseError) as e:
        client.chat(model="no-such-model", messages=[{"role": "user", "content": "x"}])
    assert e.value.status_code == 404 and "no-such-model" in e.value.error
    before = len(wire_mock.seen)
    r = httpx.post(f"{gw[0]}/api/chat", headers={"Authorization": f"Bearer {TOKEN}"}, json={"model": "gpt"})
    assert r.status_code == 400 and "messages" in r.json()["error"]
    assert len(wire_mock.seen) == before
    r = httpx.get(f"{gw[0]}/api/tags")
    assert r.status_code == 401 and "error" in r.json()


def test_lm_studio_models(gw):
    r = httpx.get(f"{gw[0]}/api/v0/models", headers={"Authorization": f"Bearer {TOKEN}"})
    data = {m["id"]: m for m in r.json()["data"]}
    assert data["claude"]["max_context_length"] == 200000 and data["gpt"]["type"] == "llm"
