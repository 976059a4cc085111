"""with_fast_memory end to end: the real openai SDK over HTTP to a scripted server on 127.0.0.1."""

import copy
import json
import logging

import openai
import pytest

from headroom._scripted_server import ScriptedServer
from headroom.memory import InvalidInputError, MemoryBypassWarning, with_fast_memory
from headroom.memory._protocol import REMINDER

from .spec_examples import examples


@pytest.fixture
def server(monkeypatch, db_path, local_embedder):
    with ScriptedServer() as srv:
        monkeypatch.setenv("OPENAI_BASE_URL", srv.base_url)
        monkeypatch.setenv("OPENAI_API_KEY", "sk-test")
        monkeypatch.setenv("HEADROOM_MEMORY_DB", db_path)  # the spec's examples name no path
        yield srv


def user_text(body):
    return [m for m in body["messages"] if m["role"] == "user"][-1]["content"]


def system_text(body):
    return "\n".join(m["content"] for m in body["messages"] if m["role"] == "system")


# The imports of the spec's Quick Start, which its later sections take as given.
PREAMBLE = "from openai import OpenAI\nfrom headroom.memory import with_fast_memory\n"


def run(code: str) -> dict:
    namespace: dict = {}
    exec(compile(PREAMBLE + code, "<spec>", "exec"), namespace)
    return namespace


# -- the spec's examples, as written -----------------------------------------------------------------


def test_quick_start(doc, server, capsys):
    (code,) = examples("### Zero-Latency Memory (Recommended)", doc)
    ns = run(code)
    first, second = server.chat_requests()
    assert "<memory>" in system_text(first) and "<remembered_context>" not in user_text(first)
    assert [m.text for m in ns["client"].memory.get_all()] == ["Prefers Python for backend work"]
    assert "Prefers Python for backend work" in user_text(second)  # injected into the new conversation
    assert user_text(second).endswith(f"What language should I use?\n\n{REMINDER}")
    answer = ns["response"].choices[0].message.content
    assert "Python" in answer and "<memory" not in answer


def test_memory_api_section(doc, server, capsys):
    (code,) = examples("## Memory API", doc)
    ns = run(code)
    assert capsys.readouterr().out.strip() == "Total memories: 0"  # cleared just before stats
    assert ns["all_memories"][0].text == "User is a senior engineer"


def test_multi_turn_example(doc, server, capsys):
    (code,) = examples("## Example: Multi-Turn Conversation", doc)
    ns = run(code)
    stored = {m.text for m in ns["client"].memory.get_all()}
    assert stored == {"Is a Python developer", "Works at a fintech startup", "Uses PostgreSQL"}
    first, second = server.chat_requests()
    assert "Uses PostgreSQL" in user_text(second)
    out = capsys.readouterr().out
    assert "PostgreSQL" in out and "<memory" not in out
    assert "<memory" not in ns["response"].choices[0].message.content


def test_multi_user_isolation(doc, server):
    (code,) = examples("## Multi-User Isolation", doc)
    ns = run(code)
    alice, bob = ns["alice_client"], ns["bob_client"]
    alice.chat.completions.create(model="gpt-4o", messages=[{"role": "user", "content": "I prefer Rust for CLIs."}])
    bob.chat.completions.create(model="gpt-4o", messages=[{"role": "user", "content": "Which language for CLIs?"}])
    assert [m.text for m in alice.memory.get_all()] == ["Prefers Rust for CLIs"]
    assert bob.memory.get_all() == [] and bob.memory.search("Rust for CLIs") == []
    assert "Rust" not in user_text(server.chat_requests()[-1])
    assert ns["agent_client"].memory.stats()["total_chunks"] == 0


# -- requests it must not break ------------------------------------------------------------------------


@pytest.fixture
def client(server, db_path):
    with with_fast_memory(openai.OpenAI(), user_id="jane", db_path=db_path) as c:
        yield c


def test_caller_messages_are_never_mutated_and_earlier_turns_stay_identical(client, server):
    client.memory.add("Prefers PostgreSQL for storage", "preference")
    messages = [
        {"role": "system", "content": "You are terse."},
        {"role": "user", "content": "Hi"},
        {"role": "assistant", "content": "Hello."},
        {"role": "user", "content": "Which storage do I prefer?"},
    ]
    before = copy.deepcopy(messages)
    client.chat.completions.create(model="m", messages=messages)
    assert messages == before
    sent = server.chat_requests()[-1]["messages"]
    assert sent[1:3] == messages[1:3]
    assert sent[0]["content"].startswith("You are terse.") and "<memory>" in sent[0]["content"]
    assert sent[3]["content"].startswith("<remembered_context>")
    assert "preference: Prefers PostgreSQL for storage" in sent[3]["content"]
    assert sent[3]["content"].endswith(f"Which storage do I prefer?\n\n{REMINDER}")


def test_earlier_answers_are_sent_with_their_blocks_and_the_callers_history_is_untouched(client, server):
    replies = iter(['Nice to meet you.\n<memory>{"memories": [{"content": "Lives in Oslo", "category": "fact"}]}</memory>',
                    "Sure.", "Oslo, then.\n<memory>{\"memories\": []}</memory>", "Done."])
    server.script_chat(lambda body: next(replies))
    history = [{"role": "user", "content": "I live in Oslo."}]
    for said in ("Thanks.", "Where do I live?", "Bye."):
        answer = client.chat.completions.create(model="m", messages=history).choices[0].message.content
        history = [*history, {"role": "assistant", "content": answer}, {"role": "user", "content": said}]
    snapshot = copy.deepcopy(history)
    client.chat.completions.create(model="m", messages=history)
    *_, third, fourth = server.chat_requests()
    assert history == snapshot and "<memory>" not in json.dumps(history)
    assistant = [m["content"] for m in fourth["messages"] if m["role"] == "assistant"]
    assert assistant == ['Nice to meet you.\n\n<memory>{"memories": [{"content": "Lives in Oslo", "category": "fact"}]}</memory>',
                         "Sure.", "Oslo, then."]  # no block, and an empty one: as the caller has them
    assert [m for m in third["messages"] if m["role"] == "assistant"] == [  # the same bytes on every turn
        {"role": "assistant", "content": a} for a in assistant[:2]]


def test_an_answer_to_a_question_is_not_stored_as_the_users_fact(client, server):
    server.script_chat(lambda body: 'You work at Google.\n<memory>{"memories": [{"content": "Works at Google"}, '
                                    '{"content": "Where do I work?"}]}</memory>')
    client.chat.completions.create(model="m", messages=[{"role": "user", "content": "Where do I work?"}])
    assert client.memory.get_all() == []  # invented to answer the question; and a question is no fact
    server.script_chat(lambda body: 'Noted.\n<memory>{"memories": [{"content": "Works at a hospital in Leeds"}]}</memory>')
    client.chat.completions.create(model="m", messages=[{"role": "user", "content": "I work at a hospital in Leeds, ok?"}])
    assert [m.text for m in client.memory.get_all()] == ["Works at a hospital in Leeds"]  # in the user's words


def test_unrelated_memories_are_not_injected(client, server):
    client.memory.add("Has a cat named Miso", "fact")
    client.chat.completions.create(model="m", messages=[{"role": "user", "content": "Explain TCP slow start"}])
    assert "remembered_context" not in user_text(server.chat_requests()[-1])


def test_tool_call_reply_without_content(client, server):
    server.script_chat(lambda body: {"tool_calls": [{"id": "call_1", "type": "function",
                                                     "function": {"name": "lookup", "arguments": "{}"}}]})
    response = client.chat.completions.create(
        model="m", messages=[{"role": "user", "content": "I prefer tea."}],
        tools=[{"type": "function", "function": {"name": "lookup", "parameters": {"type": "object"}}}])
    assert response.choices[0].message.content is None
    assert response.choices[0].message.tool_calls[0].function.name == "lookup"
    assert client.memory.get_all() == []


def test_json_mode_gets_memories_but_no_instruction(client, server):
    client.memory.add("Lives in Lisbon", "fact")
    server.script_chat(lambda body: '{"city": "Lisbon"}')
    response = client.chat.completions.create(
        model="m", response_format={"type": "json_object"},
        messages=[{"role": "user", "content": "Which city do I live in? Answer in JSON."}])
    assert json.loads(response.choices[0].message.content) == {"city": "Lisbon"}
    body = server.chat_requests()[-1]
    assert "<memory>" not in json.dumps(body["messages"]) and "Lives in Lisbon" in user_text(body)


def test_n_choices_all_cleaned_first_stored(client, server):
    server.script_chat(lambda body: [
        'One.<memory>["Likes jazz"]</memory>', 'Two.<memory>["Likes metal"]</memory>'])
    response = client.chat.completions.create(model="m", n=2, messages=[{"role": "user", "content": "Play some music, I like jazz and metal."}])
    assert [c.message.content for c in response.choices] == ["One.", "Two."]
    assert [m.text for m in client.memory.get_all()] == ["Likes jazz"]


def test_no_user_message_and_content_parts(client, server):
    response = client.chat.completions.create(model="m", messages=[{"role": "system", "content": "Say hi"}])
    assert "<memory" not in response.choices[0].message.content
    client.memory.add("Prefers Python for backend work", "preference")
    parts = [{"type": "text", "text": "What language should I use for the backend?"},
             {"type": "image_url", "image_url": {"url": "data:image/png;base64,AAAA"}}]
    client.chat.completions.create(model="m", messages=[{"role": "user", "content": parts}])
    sent = server.chat_requests()[-1]["messages"][-1]["content"]
    assert sent[0]["type"] == "text" and "Prefers Python" in sent[0]["text"]
    assert sent[1:] == [*parts, {"type": "text", "text": REMINDER}]


def test_the_reminder_follows_only_a_user_message_that_ends_the_request(client, server):
    call = {"role": "assistant", "content": None,
            "tool_calls": [{"id": "c1", "type": "function", "function": {"name": "now", "arguments": "{}"}}]}
    messages = [{"role": "user", "content": "What time is it?"}, call,
                {"role": "tool", "tool_call_id": "c1", "content": "12:00"}]
    client.chat.completions.create(model="m", messages=messages)
    assert REMINDER not in json.dumps(server.chat_requests()[-1]["messages"])
    client.chat.completions.create(model="m", messages=messages[:1])
    assert user_text(server.chat_requests()[-1]) == f"What time is it?\n\n{REMINDER}"


def test_response_is_the_sdks_own_object(client, server):
    raw = openai.OpenAI().chat.completions.create(model="m", messages=[{"role": "user", "content": "hello"}])
    response = client.chat.completions.create(model="m", messages=[{"role": "user", "content": "hello"}])
    assert type(response) is type(raw)
    assert response.model == "m" and response.id.startswith("chatcmpl-") and response.usage.total_tokens > 0


@pytest.mark.parametrize("reply", [
    "Sure.<memory>{not json</memory>",
    'Sure.<memory>{"memories": [{"content": "Half',
    'Sure.<memory>{"memories": [{"content": 42}]}</memory>',
    'Sure.<memory>["' + "x" * 30_000 + '"]</memory>',
    "Sure.",  # the model ignored the instruction
])
def test_bad_blocks_still_give_the_answer_and_log(client, server, caplog, reply):
    server.script_chat(lambda body: reply)
    with caplog.at_level(logging.WARNING, logger="headroom.memory"):
        response = client.chat.completions.create(model="m", messages=[{"role": "user", "content": "hi"}])
    assert response.choices[0].message.content == "Sure."
    assert client.memory.get_all() == []
    if reply != "Sure.":
        assert any("memory block" in r.message for r in caplog.records)


def test_dead_embedding_service_still_answers_and_keeps_the_memory(server, db_path, caplog):
    client = with_fast_memory(openai.OpenAI(max_retries=0), user_id="jane", db_path=db_path,
                              use_local_embeddings=False)
    working = server.handlers["/v1/embeddings"]
    server.handlers["/v1/embeddings"] = lambda body: (500, {"error": {"message": "down", "type": "server"}})
    with caplog.at_level(logging.WARNING, logger="headroom.memory"):
        response = client.chat.completions.create(model="m", messages=[{"role": "user", "content": "I prefer tea."}])
        assert response.choices[0].message.content == "Thanks, noted: Prefers tea."
        assert client.memory.flush(timeout=5) is False
    assert any("search failed" in r.message for r in caplog.records)
    assert any("could not embed 1 stored memories" in r.message for r in caplog.records)
    assert [m.text for m in client.memory.get_all()] == ["Prefers tea"]  # stored, waiting for its vector
    server.handlers["/v1/embeddings"] = working
    assert client.memory.flush(timeout=30) is True
    assert [m.text for m, _ in client.memory.search("Prefers tea.")] == ["Prefers tea"]
    client.close()


def test_other_attributes_reach_the_client(client, server):
    assert client.base_url == openai.OpenAI().base_url
    assert client.embeddings.create(model="text-embedding-3-small", input=["x"]).data[0].index == 0
    scoped = client.with_options(timeout=5)
    assert scoped.memory is client.memory and scoped.timeout == 5
    scoped.chat.completions.create(model="m", messages=[{"role": "user", "content": "I prefer tea."}])
    assert [m.text for m in client.memory.get_all()] == ["Prefers tea"]
    with pytest.warns(MemoryBypassWarning, match="with_raw_response bypasses headroom memory"):
        raw = client.chat.completions.with_raw_response.create(
            model="m", messages=[{"role": "user", "content": "I prefer coffee."}])
    assert raw.parse().choices[0].message.content.startswith("Thanks, noted")
    assert "<memory>" not in system_text(server.chat_requests()[-1])  # no memory on that call
    with pytest.warns(MemoryBypassWarning, match="stream bypasses"):
        assert client.chat.completions.stream is not None


def test_wrapping_checks_the_client_and_arguments(tmp_path):
    with pytest.raises(TypeError, match="messages.create"):
        with_fast_memory(object(), user_id="x", db_path=str(tmp_path / "a.db"))
    with pytest.raises(InvalidInputError):
        with_fast_memory(openai.OpenAI(api_key="k"), user_id="x", db_path=str(tmp_path / "a.db"), top_k=0)


def test_protocol_lapses_are_counted_in_stats_and_warned_about_once_a_minute(client, server, caplog):
    replies = iter(["No block here.", "Still none.", '<memory>{"memories": [{"content": "Likes figs"}]}</memory>.',
                   "Figs are great.",  # asked again without the instruction: the model wrote only its block and "."
                   'Sure.\n<memories>{"memories": [{"content": "Uses vim"}]}</memories>',
                   "<remembered_context>\n[1] 2026-01-01, fact: Likes figs\n</remembered_context>\nFigs!"])
    server.script_chat(lambda body: next(replies))
    with caplog.at_level(logging.WARNING, logger="headroom.memory"):
        answers = [client.chat.completions.create(model="m", messages=[{"role": "user", "content": f"turn {i}: I like figs, I use vim"}])
                   .choices[0].message.content for i in range(5)]
    assert answers == ["No block here.", "Still none.", "Figs are great.", "Sure.", "Figs!"]
    assert "<memory>" in system_text(server.chat_requests()[2]) and "<memory>" not in system_text(server.chat_requests()[3])
    stats = client.memory.stats()
    assert stats["replies_without_block"] == 3  # the echo reply had no block either
    assert stats["empty_replies"] == 1 and stats["asked_again"] == 1
    assert stats["repaired_blocks"] == 1 and stats["echoed_context"] == 1
    assert sorted(m.text for m in client.memory.get_all()) == ["Likes figs", "Uses vim"]
    lapses = [r.message for r in caplog.records if "wrote none" in r.message]
    assert len(lapses) == 1 and "1 so far" in lapses[0]  # the second lapse is counted, not logged
