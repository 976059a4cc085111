"""stream=True through with_fast_memory, over HTTP with the real SDKs, and the filter on SDK chunks."""

import json

import groq
import openai
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from openai.types.chat import ChatCompletionChunk

from headroom._scripted_server import ScriptedServer, chat_chunks
from headroom.memory import MemoryStream, with_fast_memory
from headroom.memory._dialects import ChunkFilter
from headroom.memory._protocol import parse_reply

REPLY = ('Use PostgreSQL, it suits you.\n\n<memory>{"memories": [{"content": "Prefers PostgreSQL", '
         '"category": "preference"}, {"content": "Builds a ledger service", "category": "context"}]}</memory>')


@pytest.fixture
def server(local_embedder):
    with ScriptedServer() as srv:
        srv.script_chat(lambda body: REPLY)
        yield srv


@pytest.fixture
def client(server, db_path):
    with with_fast_memory(openai.OpenAI(base_url=server.base_url, api_key="x"), user_id="jane",
                          db_path=db_path) as c:
        yield c


def ask(client, **extra):
    return client.chat.completions.create(
        model="m", stream=True, messages=[{"role": "user", "content": "I build a ledger service and prefer PostgreSQL."}], **extra)


@pytest.mark.parametrize("size", [1, 2, 3, 7, 64])
def test_stream_strips_the_block_and_stores_at_the_end(client, server, size):
    server.stream_chunk_size = size
    stream = ask(client)
    assert isinstance(stream, MemoryStream)
    chunks = list(stream)
    assert all(type(c) is ChatCompletionChunk for c in chunks)
    text = "".join(c.choices[0].delta.content or "" for c in chunks if c.choices)
    assert text == "Use PostgreSQL, it suits you."
    assert chunks[-1].choices[0].finish_reason == "stop"
    assert {m.text for m in client.memory.get_all()} == {"Prefers PostgreSQL", "Builds a ledger service"}
    assert "<memory>" in server.chat_requests()[-1]["messages"][0]["content"]  # instructed


def test_text_is_not_delayed_beyond_a_possible_tag(client, server):
    server.stream_chunk_size = 5
    seen = []
    for chunk in ask(client):
        if chunk.choices and chunk.choices[0].delta.content is not None:
            seen.append(chunk.choices[0].delta.content)
    # Each piece of plain text goes out in the chunk it arrived in, but for white space that could
    assert seen[1:6] == ["Use P", "ostgr", "eSQL,", " it s", "uits"]  # precede a block


def test_usage_chunk_and_context_manager(client, server):
    with ask(client, stream_options={"include_usage": True}) as stream:
        chunks = list(stream)
        assert stream.response.status_code == 200
    assert chunks[-1].choices == [] and chunks[-1].usage.total_tokens > 0
    assert len(client.memory.get_all()) == 2


def test_early_break_and_close_parses_what_arrived(client, server):
    server.stream_chunk_size = 3
    stream = ask(client)
    for chunk in stream:
        break  # the caller stops before the block
    stream.close()
    assert client.memory.get_all() == []
    # Stop after the last content chunk, before the finish chunk: the block is complete, so it counts.
    content_chunks = -(-len(REPLY) // 3)
    stream = ask(client)
    for n, chunk in enumerate(stream):
        if n == content_chunks:
            break
    stream.close()
    stream.close()  # closing twice is harmless
    assert len(client.memory.get_all()) == 2


def test_server_error_mid_stream_reaches_the_caller_and_stores_nothing(client, server):
    server.stream_chunk_size = 10
    server.stream_fail_after = len(REPLY) // 10 - 1  # inside the block, after its first memory
    stream = ask(client)
    with pytest.raises(openai.APIError, match="scripted failure"):
        for _ in stream:
            pass
    assert client.memory.get_all() == []


def test_stream_without_instruction_in_json_mode_is_the_sdks_own(client, server):
    server.script_chat(lambda body: '{"a": 1}')
    stream = ask(client, response_format={"type": "json_object"})
    assert type(stream) is openai.Stream
    assert "".join(c.choices[0].delta.content or "" for c in stream if c.choices) == '{"a": 1}'


def test_groq_sdk(server, db_path):
    client = with_fast_memory(groq.Groq(base_url=server.base_url.removesuffix("/v1"), api_key="x"),
                              user_id="jane", db_path=db_path)
    response = client.chat.completions.create(model="llama", messages=[{"role": "user", "content": "I build a ledger service and prefer PostgreSQL."}])
    assert type(response).__module__.startswith("groq.") and response.choices[0].message.content == (
        "Use PostgreSQL, it suits you.")
    text = "".join(c.choices[0].delta.content or "" for c in client.chat.completions.create(
        model="llama", stream=True, messages=[{"role": "user", "content": "I build a ledger service and prefer PostgreSQL."}]) if c.choices)
    assert text == "Use PostgreSQL, it suits you."
    assert len(client.memory.get_all()) == 2
    client.close()


# -- the filter on the SDK's own chunk objects, split at any positions --------------------------------


def sdk_chunks(reply: str, cuts: list[int]) -> list[ChatCompletionChunk]:
    points = sorted({c % (len(reply) + 1) for c in cuts} | {0, len(reply)})
    body = {"model": "m"}
    events = chat_chunks(body, "", 1).events  # role chunk, finish chunk, [DONE]
    pieces = [reply[a:b] for a, b in zip(points, points[1:])]
    role, finish = events[0], events[-2]
    content = [{**role, "choices": [{"index": 0, "delta": {"content": p}, "finish_reason": None}]} for p in pieces]
    return [ChatCompletionChunk.model_validate(e) for e in [role, *content, finish]]


@settings(max_examples=300, deadline=None)
@given(cuts=st.lists(st.integers(min_value=0, max_value=len(REPLY)), max_size=20))
def test_any_split_of_a_real_reply(cuts):
    filt = ChunkFilter()
    shown = "".join(filt.process(c)[0].choices[0].delta.content or "" for c in sdk_chunks(REPLY, cuts))
    assert shown == parse_reply(REPLY).text == "Use PostgreSQL, it suits you."
    assert [m.text for m in filt.result().memories] == ["Prefers PostgreSQL", "Builds a ledger service"]


def test_every_single_split_position():
    for cut in range(len(REPLY) + 1):
        filt = ChunkFilter()
        shown = "".join(filt.process(c)[0].choices[0].delta.content or "" for c in sdk_chunks(REPLY, [cut]))
        assert shown == "Use PostgreSQL, it suits you.", cut
        assert len(filt.result().memories) == 2


def test_stream_of_plain_text_is_unchanged():
    text = "No block here, only < and <mem and a trailing space "
    filt = ChunkFilter()
    shown = "".join(filt.process(c)[0].choices[0].delta.content or "" for c in sdk_chunks(text, [5, 20, 21, 30]))
    assert shown == text and filt.result().memories == []
    assert json.dumps(text)  # the reply survives as JSON too
