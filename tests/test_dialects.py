"""The dialects clean the SDKs' objects and their plain JSON dicts by one code path, with one result."""

import copy

import anthropic.types
import openai.types.chat
import pytest
from pydantic import TypeAdapter

from headroom._scripted_server import anthropic_events, anthropic_message, chat_chunks, chat_completion
from headroom.memory._dialects import ANTHROPIC, OPENAI

REPLY = ('Use PostgreSQL.\n<remembered_context>[1] old</remembered_context>\n'
         '<memory>{"memories": [{"content": "Prefers PostgreSQL", "category": "preference"}]}</memory>')


def test_a_whole_reply_as_object_or_dict():
    raw = chat_completion({"model": "m"}, [REPLY, REPLY])
    as_dict, as_object = copy.deepcopy(raw), openai.types.chat.ChatCompletion.model_validate(raw)
    from_dict, from_object = OPENAI.clean(as_dict), OPENAI.clean(as_object)
    assert from_dict == from_object and [m.text for m in from_dict.memories] == ["Prefers PostgreSQL"]
    assert [c["message"]["content"] for c in as_dict["choices"]] == [c.message.content for c in as_object.choices]
    assert as_dict["choices"][1]["message"]["content"] == "Use PostgreSQL." and OPENAI.reply_text(as_dict) == "Use PostgreSQL."
    message = anthropic_message({"model": "m"}, REPLY)
    as_dict, as_object = copy.deepcopy(message), anthropic.types.Message.model_validate(message)
    assert ANTHROPIC.clean(as_dict) == ANTHROPIC.clean(as_object)
    assert as_dict["content"][0]["text"] == as_object.content[0].text == "Use PostgreSQL."


@pytest.mark.parametrize("size", [1, 3, 7, 50])
def test_a_stream_as_objects_or_dicts(size):
    chunks = [e for e in chat_chunks({"model": "m"}, REPLY, size).events if isinstance(e, dict)]
    dicts, objects = OPENAI.stream_filter(), OPENAI.stream_filter()
    out_dicts = [c for chunk in copy.deepcopy(chunks) for c in dicts.process(chunk)] + dicts.end()
    out_objects = [c for chunk in chunks
                   for c in objects.process(openai.types.chat.ChatCompletionChunk.model_validate(chunk))] + objects.end()
    text = "".join(c["choices"][0]["delta"].get("content") or "" for c in out_dicts if c["choices"])
    assert text == "".join(c.choices[0].delta.content or "" for c in out_objects if c.choices) == "Use PostgreSQL."
    assert dicts.result() == objects.result()
    events = [data for _, data in anthropic_events({"model": "m"}, REPLY, size).events]
    dicts, objects = ANTHROPIC.stream_filter(), ANTHROPIC.stream_filter()
    out_dicts = [e for event in copy.deepcopy(events) for e in dicts.process(event)]
    out_objects = [e for event in events for e in objects.process(_event(event))]
    texts = ["".join(e["delta"]["text"] for e in out_dicts if e["type"] == "content_block_delta"),
             "".join(e.delta.text for e in out_objects if e.type == "content_block_delta")]
    assert texts == ["Use PostgreSQL.", "Use PostgreSQL."] and dicts.result() == objects.result()


def _event(data):
    """A Messages API stream event as the anthropic SDK builds it from the JSON."""
    return TypeAdapter(anthropic.types.RawMessageStreamEvent).validate_python(data)
