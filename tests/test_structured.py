"""Replies asked for as JSON under the server's schema (``structured_output=True``): the parser over
every split, and the wrappers over HTTP with the real SDKs."""

import asyncio
import json

import anthropic
import openai
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from headroom._scripted_server import ScriptedServer
from headroom.memory import InvalidInputError, with_fast_memory
from headroom.memory._parser import parse_reply
from headroom.memory._protocol import INSTRUCTION, REMINDER
from headroom.memory._structured import JsonReplyParser, parse_json_reply, reply_schema

ANSWER = 'Use PostgreSQL.\nIt suits "you" \\ well: caf\u00e9 \U0001f418'
MEMORIES = [{"content": "Prefers PostgreSQL", "category": "Preference"},
            {"content": "Builds a ledger service", "category": "context"}]
REPLY = json.dumps({"memories": MEMORIES, "answer": ANSWER}, indent=2)  # escapes \n, \", \\ and \ud83d\udc18
ANSWER_FIRST = json.dumps({"answer": ANSWER, "memories": MEMORIES})


def fed(reply, cuts):
    parser = JsonReplyParser()
    pieces = [reply[a:b] for a, b in zip([0, *cuts], [*cuts, len(reply)])]
    text = "".join(parser.feed(piece) for piece in pieces) + parser.finish()
    return parser.result(text)


def test_the_answer_is_decoded_and_the_memories_read():
    result = parse_json_reply(REPLY)
    assert result.text == ANSWER
    assert [(m.text, m.category) for m in result.memories] == [
        ("Prefers PostgreSQL", "preference"), ("Builds a ledger service", "context")]
    assert (result.blocks, result.problems) == (1, [])


@pytest.mark.parametrize("reply", [REPLY, ANSWER_FIRST])
def test_every_split_gives_the_same_text_and_memories(reply):
    whole = parse_json_reply(reply)
    assert (whole.text, len(whole.memories)) == (ANSWER, 2)
    for cut in range(len(reply) + 1):
        assert fed(reply, [cut]) == whole, cut
    assert fed(reply, list(range(1, len(reply)))) == whole  # one character at a time


def test_the_answer_streams_as_it_arrives():
    parser = JsonReplyParser()
    assert parser.feed('{"answer": "Hello') == "Hello"
    assert parser.feed(" there\\") == " there"  # the escape waits for its second character
    assert parser.feed('n, friend", "memories": []}') == "\n, friend"
    assert parser.finish() == ""
    assert (parser.blocks, parser.memories) == (1, [])


@settings(max_examples=150, deadline=None)
@given(answer=st.text(max_size=60), ascii_only=st.booleans(), cuts=st.lists(st.integers(0, 400), max_size=4))
def test_any_answer_reaches_the_caller_as_a_plain_reply_would(answer, ascii_only, cuts):
    reply = json.dumps({"answer": answer, "memories": [{"content": "Has a dog", "category": "fact"}]},
                       ensure_ascii=ascii_only)
    result = fed(reply, sorted(c for c in cuts if c <= len(reply)))
    assert result.text == parse_reply(answer).text  # the answer's text goes through the block parser
    assert "Has a dog" in [m.text for m in result.memories]


def test_memories_before_the_answer_and_no_answer_at_all():
    result = parse_json_reply('{"memories": [{"content": "Has a dog", "category": "fact"}], "answer": "Nice!"}')
    assert (result.text, [m.text for m in result.memories]) == ("Nice!", ["Has a dog"])
    result = parse_json_reply('{"memories": [{"content": "Has a dog", "category": "fact"}]}')
    assert (result.text, result.blocks, [m.text for m in result.memories]) == ("", 1, ["Has a dog"])


def test_a_reply_cut_off_keeps_its_answer_and_the_memories_written_before_it():
    result = parse_json_reply('{"answer": "The first part of a long ans')
    assert (result.text, result.memories, result.blocks) == ("The first part of a long ans", [], 0)
    assert "cut off" in result.problems[0]
    result = fed('{"memories": [{"content": "Has a dog", "category": "fact"}],\n "answer": "A long ans', [20, 70])
    assert (result.text, [m.text for m in result.memories], result.blocks) == ("A long ans", ["Has a dog"], 1)
    assert "cut off" in result.problems[0]
    result = parse_json_reply('{"answer": "Done.", "memories": [{"content": "Has a d')
    assert (result.text, result.memories, result.blocks) == ("Done.", [], 0)
    assert "not valid JSON" in result.problems[0]


def test_a_plain_reply_or_other_json_is_read_as_without_a_schema():
    plain = 'Sure.\n<memory>{"memories": [{"content": "Has a dog", "category": "fact"}]}</memory>'
    assert parse_json_reply(plain) == parse_reply(plain)
    other = '{"name": "config", "debug": true}'
    assert parse_json_reply(other).text == other


def test_echoes_and_stray_blocks_inside_the_answer_are_removed():
    answer = ('<remembered_context>\n[1] 2026-11-24, fact: Has a dog\n</remembered_context>\nYes, walk him. '
              '<memory>{"memories": [{"content": "Walks the dog daily", "category": "fact"}]}</memory>')
    result = parse_json_reply(json.dumps({"answer": answer, "memories": []}))
    assert result.text == "Yes, walk him."
    assert [m.text for m in result.memories] == ["Walks the dog daily"]
    assert result.echoes == 1


def test_the_schema_offers_replaces_only_for_the_notes_shown():
    assert "replaces" not in reply_schema(0)["properties"]["memories"]["items"]["properties"]
    item = reply_schema(3)["properties"]["memories"]["items"]
    assert item["properties"]["replaces"] == {"enum": [None, 1, 2, 3]}
    assert set(item["required"]) == set(item["properties"])  # OpenAI's strict mode wants every field required


# -- through the wrappers --------------------------------------------------------------------------------

SAID = "I build a ledger service and prefer PostgreSQL."


def structured_reply(body):
    """A server that honours the schema when asked for it, and writes a block otherwise."""
    if (body.get("response_format") or {}).get("type") == "json_schema":
        return REPLY
    return 'Plain answer.\n<memory>{"memories": [{"content": "Prefers PostgreSQL", "category": "fact"}]}</memory>'


@pytest.fixture
def server(local_embedder):
    with ScriptedServer() as srv:
        srv.script_chat(structured_reply)
        yield srv


def wrapped(server, db_path, cls=openai.OpenAI, **options):
    return with_fast_memory(cls(base_url=server.base_url, api_key="x"), user_id="jane", db_path=db_path,
                            structured_output=True, **options)


def test_a_whole_reply_gives_the_caller_the_answer_and_stores_the_memories(server, db_path):
    messages = [{"role": "user", "content": SAID}]
    with wrapped(server, db_path) as client:
        answer = client.chat.completions.create(model="m", messages=messages)
        stored = {m.text for m in client.memory.get_all()}
    assert answer.choices[0].message.content == ANSWER
    assert stored == {"Prefers PostgreSQL", "Builds a ledger service"}
    sent = server.chat_requests()[-1]
    assert sent["response_format"]["type"] == "json_schema"
    assert sent["response_format"]["json_schema"]["schema"] == reply_schema(0)
    assert REMINDER not in json.dumps(sent["messages"]) and "<memory>" not in json.dumps(sent["messages"])
    assert messages == [{"role": "user", "content": SAID}]  # the caller's messages are untouched


@pytest.mark.parametrize("size", [1, 3, 16, 4096])
def test_a_stream_carries_the_answer_alone(server, db_path, size):
    server.stream_chunk_size = size
    with wrapped(server, db_path) as client:
        chunks = list(client.chat.completions.create(model="m", stream=True, messages=[{"role": "user", "content": SAID}]))
        stored = {m.text for m in client.memory.get_all()}
    assert "".join(c.choices[0].delta.content or "" for c in chunks if c.choices) == ANSWER
    assert stored == {"Prefers PostgreSQL", "Builds a ledger service"}


def test_an_async_stream(server, db_path):
    async def run():
        async with wrapped(server, db_path, openai.AsyncOpenAI) as client:
            stream = await client.chat.completions.create(model="m", stream=True,
                                                          messages=[{"role": "user", "content": SAID}])
            text = "".join([c.choices[0].delta.content or "" async for c in stream if c.choices])
            return text, {m.text for m in await client.memory.get_all()}

    assert asyncio.run(run()) == (ANSWER, {"Prefers PostgreSQL", "Builds a ledger service"})


def test_a_numbered_note_is_replaced_by_its_number(server, db_path):
    def reply(body):
        shown = "Lives in Rotterdam" in json.dumps(body["messages"])
        memories = [{"content": "Lives in Amsterdam", "category": "fact", "replaces": 1 if shown else None}]
        return json.dumps({"answer": "Noted.", "memories": memories})

    server.script_chat(reply)
    with wrapped(server, db_path) as client:
        client.memory.add("Lives in Rotterdam")
        client.chat.completions.create(model="m", messages=[{"role": "user", "content": "Where do I live? Amsterdam now."}])
        live = [m.text for m in client.memory.get_all()]
    assert server.chat_requests()[-1]["response_format"]["json_schema"]["schema"] == reply_schema(1)
    assert live == ["Lives in Amsterdam"]


def test_a_server_that_ignores_the_schema_still_works(server, db_path):
    server.script_chat(lambda body: 'Plain answer.\n<memory>{"memories": [{"content": "Prefers PostgreSQL", '
                                    '"category": "fact"}]}</memory>')
    with wrapped(server, db_path) as client:
        answer = client.chat.completions.create(model="m", messages=[{"role": "user", "content": SAID}])
        assert [m.text for m in client.memory.get_all()] == ["Prefers PostgreSQL"]
    assert answer.choices[0].message.content == "Plain answer."


def test_tools_ask_for_the_block_and_the_callers_own_format_is_left_alone(server, db_path):
    tool = {"type": "function", "function": {"name": "f", "parameters": {"type": "object", "properties": {}}}}
    with wrapped(server, db_path) as client:
        answer = client.chat.completions.create(model="m", tools=[tool], messages=[{"role": "user", "content": SAID}])
        sent = server.chat_requests()[-1]
        assert "response_format" not in sent and INSTRUCTION in sent["messages"][0]["content"]
        assert answer.choices[0].message.content == "Plain answer."
        own = {"type": "json_object"}
        client.chat.completions.create(model="m", response_format=own, messages=[{"role": "user", "content": SAID}])
        sent = server.chat_requests()[-1]
        assert sent["response_format"] == own and "<memory>" not in json.dumps(sent["messages"])


def test_an_anthropic_client_is_refused(db_path):
    with pytest.raises(InvalidInputError, match="OpenAI-compatible"):
        with_fast_memory(anthropic.Anthropic(api_key="x"), user_id="jane", db_path=db_path, structured_output=True)
