"""Tool calls for a model without native tools (`supports_tools = false`), with the official
`openai` package: the model (the mock's `xml-model`) gets the tools in its system prompt and
answers with `<tool_call>` blocks, which reach the client as tool calls — plain and streamed,
with no partial XML in any chunk — through the client's own tool loop and the server-side one."""

import openai
import pytest

import wire_mock
from conftest import TOKEN
from fronts import running

WEATHER = [{"type": "function", "function": {"name": "get_weather", "description": "Weather of a city",
                                             "parameters": {"type": "object", "properties": {"city": {"type": "string"}}}}}]


@pytest.fixture(scope="module", params=["all-in-memory", "cluster-over-redis"])
def client(request):
    for url, _ in running(request.param):
        yield openai.OpenAI(base_url=f"{url}/v1", api_key=TOKEN, max_retries=0)


def round_trip(client, stream):
    """The client's tool loop: ask, get a call, answer it, get the final text."""
    messages = [{"role": "user", "content": "weather in Oslo?"}]
    if stream:
        chunks = list(client.chat.completions.create(model="xml", messages=messages, tools=WEATHER, stream=True))
        texts = [c.choices[0].delta.content or "" for c in chunks if c.choices]
        assert not any("<" in t or "tool_call" in t for t in texts), f"partial XML reached the client: {texts}"
        calls = [tc for c in chunks if c.choices for tc in (c.choices[0].delta.tool_calls or [])]
        finish = [c.choices[0].finish_reason for c in chunks if c.choices and c.choices[0].finish_reason]
        assert finish == ["tool_calls"]
        call = {"id": calls[0].id, "type": "function",
                "function": {"name": calls[0].function.name, "arguments": calls[0].function.arguments}}
        assert "".join(texts).strip() == "Let me check."
    else:
        r = client.chat.completions.create(model="xml", messages=messages, tools=WEATHER)
        assert r.choices[0].finish_reason == "tool_calls"
        assert r.choices[0].message.content == "Let me check."
        tc = r.choices[0].message.tool_calls[0]
        call = {"id": tc.id, "type": "function", "function": {"name": tc.function.name, "arguments": tc.function.arguments}}
    assert call["function"]["name"] == "get_weather" and call["function"]["arguments"] == '{"city":"Oslo"}'
    sent = wire_mock.seen[-1]["body"]
    assert "tools" not in sent and "get_weather" in sent["messages"][0]["content"]
    messages += [{"role": "assistant", "content": None, "tool_calls": [call]},
                 {"role": "tool", "tool_call_id": call["id"], "content": "Sunny"}]
    final = client.chat.completions.create(model="xml", messages=messages, tools=WEATHER)
    assert final.choices[0].finish_reason == "stop"
    assert final.choices[0].message.content.endswith('<tool_result name="get_weather">Sunny</tool_result>')
    # The history went to the model as text: the call as a block, the result as a user turn.
    sent = wire_mock.seen[-1]["body"]["messages"]
    assert sent[-2] == {"role": "assistant", "content": '<tool_call>{"arguments":{"city":"Oslo"},"name":"get_weather"}</tool_call>'}
    assert sent[-1]["role"] == "user"


@pytest.mark.parametrize("stream", [False, True])
def test_the_clients_tool_loop(client, stream):
    round_trip(client, stream)


@pytest.mark.parametrize("stream", [False, True])
def test_the_server_side_tool_loop(client, stream):
    messages = [{"role": "user", "content": "what is 6*7?"}]
    if stream:
        text = "".join(c.choices[0].delta.content or "" for c in
                       client.chat.completions.create(model="xml-loop", messages=messages, stream=True) if c.choices)
    else:
        text = client.chat.completions.create(model="xml-loop", messages=messages).choices[0].message.content
    assert '"value":42' in text.replace(" ", ""), text
    assert "<tool_call" not in text
