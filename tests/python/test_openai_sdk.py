"""Client compatibility: the official `openai` package, called as a user would."""

import openai
import pytest

from conftest import TOKEN


@pytest.fixture
def client(gateway):
    return openai.OpenAI(base_url=gateway, api_key=TOKEN, max_retries=0, timeout=30)


def test_models_list(client):
    ids = [m.id for m in client.models.list()]
    assert "echo" in ids


def test_models_retrieve(client):
    assert client.models.retrieve("echo").id == "echo"


def test_chat_completion(client):
    r = client.chat.completions.create(model="echo", messages=[{"role": "user", "content": "hello from the sdk"}])
    assert r.choices[0].message.content == "hello from the sdk"
    assert r.choices[0].finish_reason == "stop"
    assert r.usage.completion_tokens == 4


def test_chat_completion_stream_with_usage(client):
    stream = client.chat.completions.create(
        model="echo",
        messages=[{"role": "user", "content": "one two three four"}],
        stream=True,
        stream_options={"include_usage": True},
    )
    chunks = list(stream)
    text = "".join(c.choices[0].delta.content or "" for c in chunks if c.choices)
    assert text == "one two three four"
    assert len(chunks) >= 6, "streamed word by word"
    assert chunks[-1].usage is not None and chunks[-1].usage.completion_tokens == 4
    assert all(c.usage is None for c in chunks[:-1])


def test_stream_without_usage_has_no_usage_chunk(client):
    chunks = list(client.chat.completions.create(model="echo", messages=[{"role": "user", "content": "a b"}], stream=True))
    assert all(c.usage is None for c in chunks)
    assert "".join(c.choices[0].delta.content or "" for c in chunks if c.choices) == "a b"


def test_unknown_model_raises_not_found(client):
    with pytest.raises(openai.NotFoundError) as e:
        client.chat.completions.create(model="no-such-model", messages=[{"role": "user", "content": "x"}])
    assert e.value.code == "model_not_found"


def test_wrong_key_raises_authentication_error(gateway):
    bad = openai.OpenAI(base_url=gateway, api_key="wrong", max_retries=0)
    with pytest.raises(openai.AuthenticationError):
        bad.models.list()
    with pytest.raises(openai.AuthenticationError):
        bad.chat.completions.create(model="echo", messages=[{"role": "user", "content": "x"}])


def test_bad_request_raises_bad_request_error(client):
    with pytest.raises(openai.BadRequestError) as e:
        client.chat.completions.create(model="echo", messages=[])
    assert e.value.param == "messages"
    with pytest.raises(openai.BadRequestError) as e:
        client.chat.completions.create(model="echo", messages=[{"role": "wizard", "content": "x"}])
    assert e.value.param == "messages[0].role"


def test_embeddings_float_and_base64(client):
    floats = client.embeddings.create(model="echo", input=["hello", "world"], encoding_format="float", dimensions=6)
    assert [d.index for d in floats.data] == [0, 1]
    assert len(floats.data[0].embedding) == 6 and floats.data[0].embedding != floats.data[1].embedding
    assert floats.usage.prompt_tokens == 2
    # The SDK's default asks for base64 and decodes it: the same vectors come back.
    decoded = client.embeddings.create(model="echo", input=["hello", "world"], dimensions=6)
    for a, b in zip(decoded.data, floats.data):
        assert a.embedding == pytest.approx(b.embedding, abs=1e-6)
    tokens = client.embeddings.create(model="echo", input=[[1, 2, 3], [4, 5]])
    assert len(tokens.data) == 2
    with pytest.raises(openai.BadRequestError):
        client.embeddings.create(model="echo", input=[])


def test_legacy_completions_plain_and_streamed(client):
    r = client.completions.create(model="echo", prompt="complete me please")
    assert r.object == "text_completion" and r.choices[0].text == "complete me please"
    assert r.choices[0].finish_reason == "stop" and r.usage.completion_tokens == 3
    chunks = list(client.completions.create(model="echo", prompt="one two three", stream=True,
                                            stream_options={"include_usage": True}))
    assert "".join(c.choices[0].text for c in chunks if c.choices) == "one two three"
    assert chunks[-1].usage.total_tokens == 6
