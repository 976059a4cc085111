"""Memory keeps what the rolling window drops; the spec's compression example runs as written."""

import openai
import pytest

from headroom._scripted_server import ScriptedServer
from headroom.memory import with_fast_memory, with_memory
from headroom.memory._protocol import REMINDER
from headroom.transforms import RollingWindowTransform, TokenCounter

from .spec_examples import examples


@pytest.fixture
def server(local_embedder):
    with ScriptedServer() as srv:
        yield srv


def long_conversation(turns: int = 400) -> list[dict]:
    messages = [{"role": "user", "content": "I prefer Python for backend work."},
                {"role": "assistant", "content": "Noted."}]
    for i in range(turns):
        messages.append({"role": "user", "content": f"Let us talk about topic {i}. " + "detail " * 20})
        messages.append({"role": "assistant", "content": f"Topic {i} discussed. " + "more " * 20})
    messages.append({"role": "user", "content": "Which language should the new service use?"})
    return messages


def test_spec_compression_example(doc, server, monkeypatch, db_path):
    monkeypatch.setenv("OPENAI_BASE_URL", server.base_url)
    monkeypatch.setenv("OPENAI_API_KEY", "sk-test")
    monkeypatch.setenv("HEADROOM_MEMORY_DB", db_path)
    (code,) = examples("## How Memory Enables Compression", doc)
    very_long_conversation = long_conversation()
    namespace = {"very_long_conversation": very_long_conversation}
    exec("from openai import OpenAI\n" + code, namespace)
    sent = server.chat_requests()[-1]["messages"]
    counter = TokenCounter("gpt-4o")
    assert counter.count_messages(very_long_conversation) > 20_000
    assert counter.count_messages(namespace["messages"]) <= 4000
    assert sent[-1]["content"].endswith(f"Which language should the new service use?\n\n{REMINDER}")
    assert len(namespace["messages"]) < len(very_long_conversation)


def test_dropped_messages_stored_as_they_are_without_an_extractor(server, db_path):
    client = with_fast_memory(openai.OpenAI(base_url=server.base_url, api_key="x"), user_id="jane",
                              db_path=db_path)
    transform = RollingWindowTransform(max_tokens=2000, on_drop=client.memory.remember)
    messages = transform.apply(long_conversation(100))
    assert "I prefer Python for backend work." not in [m["content"] for m in messages]
    texts = {m.text for m in client.memory.get_all()}
    assert "I prefer Python for backend work." in texts
    assert all(m.category == "context" for m in client.memory.get_all())
    client.chat.completions.create(model="gpt-4o", messages=messages)
    assert "I prefer Python for backend work." in server.chat_requests()[-1]["messages"][-1]["content"]
    client.close()


def test_dropped_messages_go_to_the_background_extractor(server, db_path):
    client = with_memory(openai.OpenAI(base_url=server.base_url, api_key="x"), user_id="jane",
                         db_path=db_path, extraction_model="gpt-4o-mini")
    transform = RollingWindowTransform(max_tokens=2000, on_drop=client.memory.remember)
    transform.apply(long_conversation(100))
    transform.apply(long_conversation(100))  # the same drops are not queued twice
    assert client.memory.flush(timeout=60) is True
    assert [m.text for m in client.memory.get_all()] == ["Prefers Python for backend work"]
    extraction_calls = [b for b in server.chat_requests() if "long-term memory" in b["messages"][0]["content"]]
    assert len(extraction_calls) == 1 and extraction_calls[0]["model"] == "gpt-4o-mini"
    client.close()
