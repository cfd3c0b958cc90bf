"""The official `anthropic` package against llmrouter's `/v1/messages`, unchanged, as a user
calls it: to an Anthropic-type upstream (`claude`) and an OpenAI-type one (`gpt`), in memory
and over Redis — plain, streamed, tools, images, count_tokens, thinking, failover, errors."""

import base64

import anthropic
import httpx
import pytest

import wire_mock
from conftest import TOKEN
from fronts import running

PNG = base64.b64encode(b"\x89PNG\r\n\x1a\n" + b"\0" * 16).decode()
WEATHER = {"name": "get_weather", "description": "Weather of a city",
           "input_schema": {"type": "object", "properties": {"city": {"type": "string"}}, "required": ["city"]}}


@pytest.fixture(scope="module", params=["all-in-memory", "cluster-over-redis"])
def gw(request):
    yield from running(request.param)


@pytest.fixture
def client(gw):
    return anthropic.Anthropic(base_url=gw[0], api_key=TOKEN, max_retries=0)


@pytest.mark.parametrize("model", ["claude", "gpt"])
def test_plain_message(client, model):
    m = client.messages.create(model=model, max_tokens=100, system="be brief",
                               messages=[{"role": "user", "content": "hello"}])
    assert m.type == "message" and m.role == "assistant"
    text = "".join(b.text for b in m.content if b.type == "text")
    assert text == "saw 2 messages; last: hello" if model == "gpt" else text == "saw 1 messages; last: hello"
    assert m.stop_reason == "end_turn"
    assert m.usage.input_tokens > 0 and m.usage.output_tokens > 0


@pytest.mark.parametrize("model", ["claude", "gpt"])
def test_stream_with_the_sdk_helper(client, model):
    with client.messages.stream(model=model, max_tokens=100, messages=[{"role": "user", "content": "stream me"}]) as s:
        text = "".join(s.text_stream)
        final = s.get_final_message()
    assert text.endswith("last: stream me")
    assert final.stop_reason == "end_turn"
    assert final.usage.output_tokens > 0


@pytest.mark.parametrize("model", ["claude", "gpt"])
def test_raw_stream_event_order(client, model):
    events = list(client.messages.create(model=model, max_tokens=50, stream=True,
                                         messages=[{"role": "user", "content": "order"}]))
    kinds = [e.type for e in events]
    assert kinds[0] == "message_start" and kinds[-2:] == ["message_delta", "message_stop"]
    assert "content_block_start" in kinds and "content_block_delta" in kinds and "content_block_stop" in kinds


@pytest.mark.parametrize("model", ["claude", "gpt"])
@pytest.mark.parametrize("stream", [False, True])
def test_tool_use_and_tool_result(client, model, stream):
    messages = [{"role": "user", "content": "weather in Oslo?"}]
    if stream:
        with client.messages.stream(model=model, max_tokens=100, tools=[WEATHER], messages=messages) as s:
            m = s.get_final_message()
    else:
        m = client.messages.create(model=model, max_tokens=100, tools=[WEATHER], messages=messages)
    assert m.stop_reason == "tool_use"
    use = [b for b in m.content if b.type == "tool_use"][0]
    assert use.name == "get_weather" and use.input == {"city": "Oslo"}
    messages += [{"role": "assistant", "content": m.content},
                 {"role": "user", "content": [{"type": "tool_result", "tool_use_id": use.id, "content": "Sunny, 21C"}]}]
    m2 = client.messages.create(model=model, max_tokens=100, tools=[WEATHER], messages=messages)
    assert m2.stop_reason == "end_turn"
    assert "Sunny, 21C" in m2.content[-1].text


@pytest.mark.parametrize("model", ["claude", "gpt"])
def test_image_block_reaches_the_upstream(client, model):
    m = client.messages.create(model=model, max_tokens=50, messages=[{"role": "user", "content": [
        {"type": "image", "source": {"type": "base64", "media_type": "image/png", "data": PNG}},
        {"type": "text", "text": "what is it?"}]}])
    assert "[image]" in m.content[-1].text
    body = wire_mock.seen[-1]["body"]
    if model == "claude":
        assert body["messages"][0]["content"][0]["source"]["data"] == PNG
    else:
        assert body["messages"][0]["content"][0]["image_url"]["url"] == f"data:image/png;base64,{PNG}"


def test_thinking_is_kept_intact_for_an_anthropic_target(client):
    thinking = {"type": "enabled", "budget_tokens": 1024}
    m = client.messages.create(model="claude", max_tokens=2000, thinking=thinking, extra_body={"top_k": 5},
                               messages=[{"role": "user", "content": "think"}])
    block = m.content[0]
    assert block.type == "thinking" and block.thinking == "pondering" and block.signature == "sig-123"
    # The thinking block goes back with its signature, as Anthropic requires in a tool loop.
    m2 = client.messages.create(model="claude", max_tokens=2000, thinking=thinking, messages=[
        {"role": "user", "content": "think"}, {"role": "assistant", "content": m.content},
        {"role": "user", "content": "again"}])
    sent = wire_mock.seen[-1]
    assert sent["path"].endswith("/messages")
    assert sent["body"]["thinking"] == thinking
    assert sent["body"]["messages"][1]["content"][0] == {"type": "thinking", "thinking": "pondering", "signature": "sig-123"}
    assert sent["body"]["model"] == "claude-3-mock"
    assert sent["headers"]["x-api-key"] == "sk-ant-mock"
    assert m2.content[-1].text == "saw 3 messages; last: again"
    with client.messages.stream(model="claude", max_tokens=2000, thinking=thinking,
                                messages=[{"role": "user", "content": "think"}]) as s:
        final = s.get_final_message()
    assert final.content[0].type == "thinking" and final.content[0].signature == "sig-123"


def test_reasoning_of_an_openai_target_comes_back_as_thinking(client):
    m = client.messages.create(model="gpt", max_tokens=100, messages=[{"role": "user", "content": "hi"}])
    assert m.content[0].type == "thinking" and m.content[0].thinking == "thought"
    sent = wire_mock.seen[-1]["body"]
    assert "thinking" not in sent and "top_k" not in sent


def test_count_tokens(client):
    n = client.messages.count_tokens(model="claude", messages=[{"role": "user", "content": "count " * 50}])
    assert 50 <= n.input_tokens <= 200


def test_a_group_fails_over_from_a_broken_openai_target_to_anthropic(client):
    before = len(wire_mock.seen)
    m = client.messages.create(model="failover", max_tokens=50, messages=[{"role": "user", "content": "still there?"}])
    assert m.content[-1].text == "saw 1 messages; last: still there?"
    paths = [s["path"] for s in wire_mock.seen[before:]]
    assert paths[-1].endswith("/messages")


def test_errors_have_anthropics_shape(client, gw):
    with pytest.raises(anthropic.NotFoundError) as e:
        client.messages.create(model="no-such-model", max_tokens=10, messages=[{"role": "user", "content": "x"}])
    assert e.value.body["type"] == "error" and e.value.body["error"]["type"] == "not_found_error"
    before = len(wire_mock.seen)
    with pytest.raises(anthropic.BadRequestError) as e:
        client.messages.create(model="claude", max_tokens=10, messages=[])
    assert e.value.body["error"]["type"] == "invalid_request_error"
    assert len(wire_mock.seen) == before, "a bad request reaches no upstream"
    bad = anthropic.Anthropic(base_url=gw[0], api_key="wrong", max_retries=0)
    with pytest.raises(anthropic.AuthenticationError) as e:
        bad.messages.create(model="claude", max_tokens=10, messages=[{"role": "user", "content": "x"}])
    assert e.value.body["error"]["type"] == "authentication_error"
    # Bearer works as well as x-api-key.
    r = httpx.post(f"{gw[0]}/v1/messages", headers={"authorization": f"Bearer {TOKEN}"},
                   json={"model": "claude", "max_tokens": 10, "messages": [{"role": "user", "content": "bearer"}]})
    assert r.status_code == 200 and r.json()["content"][0]["text"].endswith("bearer")


@pytest.mark.parametrize("stream", [False, True])
def test_xml_tool_calls_of_a_model_without_tools_come_back_as_tool_use(client, stream):
    messages = [{"role": "user", "content": "weather in Oslo?"}]
    if stream:
        with client.messages.stream(model="xml", max_tokens=100, tools=[WEATHER], messages=messages) as s:
            m = s.get_final_message()
    else:
        m = client.messages.create(model="xml", max_tokens=100, tools=[WEATHER], messages=messages)
    assert m.stop_reason == "tool_use"
    assert [b.text for b in m.content if b.type == "text"] in (["Let me check. "], ["Let me check."])
    use = [b for b in m.content if b.type == "tool_use"][0]
    assert use.name == "get_weather" and use.input == {"city": "Oslo"}
