"""Prompt templates with the official `openai` package and plain HTTP (in memory and over
Redis): a template named per request with its variables, a model group's own template, a
named text endpoint (plain and streamed), and the errors — and the model catalog's prices
steering a `cost` group."""

import json

import httpx
import openai
import pytest

import wire_mock
from conftest import TOKEN
from fronts import running

AUTH = {"Authorization": f"Bearer {TOKEN}"}


@pytest.fixture(scope="module", params=["all-in-memory", "cluster-over-redis"])
def gw(request):
    yield from running(request.param)


@pytest.fixture
def client(gw):
    return openai.OpenAI(base_url=f"{gw[0]}/v1", api_key=TOKEN, max_retries=0)


def test_a_template_named_by_the_request(client):
    r = client.chat.completions.create(model="gpt", messages=[{"role": "user", "content": "hello"}],
                                       extra_body={"template": "translate", "template_vars": {"LANGUAGE": "German", "TONE": "warm"}})
    assert r.choices[0].message.content == "saw 2 messages; last: hello"
    sent = wire_mock.seen[-1]["body"]
    assert sent["messages"][0] == {"role": "system", "content": "Translate the user's text into German. Keep the warm tone."}
    assert "template" not in sent and "template_vars" not in sent


def test_a_groups_template(client):
    client.chat.completions.create(model="polite", messages=[{"role": "user", "content": "hi"}])
    assert wire_mock.seen[-1]["body"]["messages"][0] == {"role": "system", "content": "Always answer politely."}


def test_template_errors_reach_no_upstream(client):
    before = len(wire_mock.seen)
    with pytest.raises(openai.BadRequestError) as e:
        client.chat.completions.create(model="gpt", messages=[{"role": "user", "content": "x"}],
                                       extra_body={"template": "translate", "template_vars": {"LANGUAGE": "German"}})
    assert "TONE" in e.value.message
    with pytest.raises(openai.BadRequestError):
        client.chat.completions.create(model="gpt", messages=[{"role": "user", "content": "x"}], extra_body={"template": "nope"})
    assert len(wire_mock.seen) == before


def test_a_text_endpoint(gw):
    r = httpx.post(f"{gw[0]}/v1/text/translate", headers=AUTH, json={"text": "good morning", "variables": {"LANGUAGE": "French"}})
    assert r.status_code == 200, r.text
    body = r.json()
    assert body["object"] == "text.completion" and body["text"] == "saw 2 messages; last: good morning"
    assert body["usage"]["total_tokens"] > 0
    assert wire_mock.seen[-1]["body"]["messages"][0]["content"] == "Translate the user's text into French. Keep the neutral tone."
    with httpx.stream("POST", f"{gw[0]}/v1/text/translate", headers=AUTH,
                      json={"text": "streamed", "variables": {"LANGUAGE": "Dutch"}, "stream": True}) as s:
        text = s.read().decode()
    assert text.endswith("data: [DONE]\n\n")
    chunks = [json.loads(line[6:]) for line in text.splitlines() if line.startswith("data: {")]
    assert "".join(c["choices"][0]["delta"].get("content") or "" for c in chunks if c["choices"]) == "saw 2 messages; last: streamed"
    r = httpx.post(f"{gw[0]}/v1/text/nope", headers=AUTH, json={"text": "x"})
    assert r.status_code == 404 and r.json()["error"]["message"]
    r = httpx.post(f"{gw[0]}/v1/text/translate", headers=AUTH, json={"text": "x"})
    assert r.status_code == 400 and "LANGUAGE" in r.json()["error"]["message"]


def test_the_catalog_prices_steer_the_cost_strategy(client):
    # The catalog makes the Anthropic target 20x cheaper: the cost group picks it every time.
    before = len(wire_mock.seen)
    for _ in range(4):
        client.chat.completions.create(model="cheapest", messages=[{"role": "user", "content": "cheap?"}])
    assert [s["path"] for s in wire_mock.seen[before:]] == ["/v1/messages"] * 4
