"""Native Anthropic clients through with_fast_memory, against a scripted Messages API on 127.0.0.1."""

import asyncio
import copy

import anthropic
import pytest
from anthropic.types import Message

from headroom._scripted_server import ScriptedServer
from headroom.memory import AsyncMemoryClient, MemoryStream, with_fast_memory
from headroom.memory._protocol import INSTRUCTION

REPLY = 'Tea it is.\n<memory>{"memories": [{"content": "Prefers green tea", "category": "preference"}]}</memory>'


@pytest.fixture
def server(local_embedder):
    with ScriptedServer() as srv:
        yield srv


def anthropic_url(server):
    return server.base_url.removesuffix("/v1")


@pytest.fixture
def client(server, db_path):
    with with_fast_memory(anthropic.Anthropic(base_url=anthropic_url(server), api_key="x"), user_id="jane",
                          db_path=db_path) as c:
        yield c


def message_requests(server):
    return [r.body for r in server.requests if r.path == "/v1/messages"]


def test_create_strips_stores_and_injects(client, server):
    messages = [{"role": "user", "content": "I prefer green tea."}]
    before = copy.deepcopy(messages)
    response = client.messages.create(model="claude", max_tokens=200, system="Be brief.", messages=messages)
    assert type(response) is Message and response.content[0].text == "Thanks, noted: Prefers green tea."
    assert messages == before
    sent = message_requests(server)[-1]
    assert sent["system"].startswith("Be brief.") and "<memory>" in sent["system"]
    assert [m.text for m in client.memory.get_all()] == ["Prefers green tea"]
    client.messages.create(model="claude", max_tokens=200,
                           messages=[{"role": "user", "content": [{"type": "text", "text": "Which tea do I like?"}]}])
    sent = message_requests(server)[-1]
    assert sent["system"] == INSTRUCTION  # no system given: the instruction alone
    assert "preference: Prefers green tea" in sent["messages"][-1]["content"][0]["text"]


def test_tool_use_blocks_are_left_alone(client, server):
    server.handlers["/v1/messages"] = lambda body: (200, {
        "id": "msg_1", "type": "message", "role": "assistant", "model": "claude", "stop_reason": "tool_use",
        "stop_sequence": None, "usage": {"input_tokens": 1, "output_tokens": 1},
        "content": [{"type": "text", "text": "Let me look.<memory>[\"Uses tools\"]</memory>"},
                    {"type": "tool_use", "id": "tu_1", "name": "lookup", "input": {"q": "x"}}]})
    response = client.messages.create(model="claude", max_tokens=50, messages=[{"role": "user", "content": "I use tools; look it up."}])
    assert response.content[0].text == "Let me look." and response.content[1].name == "lookup"
    assert [m.text for m in client.memory.get_all()] == ["Uses tools"]


@pytest.mark.parametrize("size", [1, 4, 9, 100])
def test_stream_strips_text_deltas(client, server, size):
    server.script_messages(lambda body: REPLY + " ")
    server.stream_chunk_size = size
    stream = client.messages.create(model="claude", max_tokens=50, stream=True,
                                    messages=[{"role": "user", "content": "Tea, please."}])
    assert isinstance(stream, MemoryStream)
    events = list(stream)
    text = "".join(e.delta.text for e in events if e.type == "content_block_delta")
    assert text == "Tea it is."
    assert [e.type for e in events][-3:] == ["content_block_stop", "message_delta", "message_stop"]
    assert [m.text for m in client.memory.get_all()] == ["Prefers green tea"]


def test_stream_releases_held_text_before_the_block_stops(client, server):
    server.script_messages(lambda body: "Ends with a lone <")
    server.stream_chunk_size = 3
    events = list(client.messages.create(model="claude", max_tokens=50, stream=True,
                                         messages=[{"role": "user", "content": "hi"}]))
    deltas = [e for e in events if e.type == "content_block_delta"]
    assert "".join(e.delta.text for e in deltas) == "Ends with a lone <"
    assert events.index(deltas[-1]) < [e.type for e in events].index("content_block_stop")


def test_stream_error_stores_nothing(client, server):
    server.script_messages(lambda body: REPLY)
    server.stream_chunk_size = 5
    server.stream_fail_after = len(REPLY) // 5 - 1
    with pytest.raises(anthropic.APIStatusError):
        for _ in client.messages.create(model="claude", max_tokens=50, stream=True,
                                        messages=[{"role": "user", "content": "Tea, please."}]):
            pass
    assert client.memory.get_all() == []


def test_async_anthropic_create_and_stream(server, db_path):
    server.script_messages(lambda body: REPLY)
    server.stream_chunk_size = 2

    async def main():
        client = with_fast_memory(anthropic.AsyncAnthropic(base_url=anthropic_url(server), api_key="x"),
                                  user_id="jane", db_path=db_path)
        assert isinstance(client, AsyncMemoryClient)
        response = await client.messages.create(model="claude", max_tokens=50,
                                                messages=[{"role": "user", "content": "Tea, please."}])
        assert response.content[0].text == "Tea it is."
        stream = await client.messages.create(model="claude", max_tokens=50, stream=True,
                                              messages=[{"role": "user", "content": "Tea again, please."}])
        text = "".join([e.delta.text async for e in stream if e.type == "content_block_delta"])
        memories = [m.text for m in await client.memory.get_all()]
        await client.close()
        return text, memories

    text, memories = asyncio.run(main())
    assert text == "Tea it is." and memories == ["Prefers green tea"]
