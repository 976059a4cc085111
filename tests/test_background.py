"""with_memory: the reply untouched, extraction in the background, never losing a turn."""

import json
import logging
import signal
import subprocess
import sys
import threading
import time

import openai
import pytest

from headroom._scripted_server import ScriptedServer, chat_chunks, chat_completion, rule_based_reply
from headroom.memory import RetryPolicy, with_fast_memory, with_memory

from .spec_examples import examples
from .test_concurrency import WORKER


def is_extraction(body):
    return "You keep long-term memory" in str(body["messages"][0].get("content"))


class Model:
    """The rule-based stand-in, with extraction calls that can be held or made to fail."""

    def __init__(self):
        self.hold = 0.0
        self.fail = False
        self.extractions = 0
        self.lock = threading.Lock()

    def __call__(self, body):
        if is_extraction(body):
            with self.lock:
                self.extractions += 1
            time.sleep(self.hold)
            if self.fail:
                return 500, {"error": {"message": "extraction model down", "type": "server_error"}}
        if body.get("stream"):
            return 200, chat_chunks(body, rule_based_reply(body), 4)
        return 200, chat_completion(body, [rule_based_reply(body)])


@pytest.fixture
def model():
    return Model()


@pytest.fixture
def server(model, local_embedder):
    with ScriptedServer() as srv:
        srv.handlers["/v1/chat/completions"] = model
        yield srv


def client_for(server, db_path, **kw):
    return with_memory(openai.OpenAI(base_url=server.base_url, api_key="x", max_retries=0), user_id="alice",
                       db_path=db_path, **kw)


def test_spec_background_example(doc, server, tmp_path, monkeypatch):
    monkeypatch.setenv("OPENAI_BASE_URL", server.base_url)
    monkeypatch.setenv("OPENAI_API_KEY", "sk-test")
    monkeypatch.chdir(tmp_path)
    (code,) = examples("### 2. Background Memory (Separate Extraction)", doc)
    namespace: dict = {}
    exec("from openai import OpenAI\n" + code, namespace)
    client = namespace["client"]
    response = client.chat.completions.create(
        model="gpt-4o", messages=[{"role": "user", "content": "I prefer Python for backend work"}])
    assert response.choices[0].message.content == "Thanks, noted: Prefers Python for backend work."
    assert client.memory.flush(timeout=30) is True
    assert [m.text for m in client.memory.get_all()] == ["Prefers Python for backend work"]
    assert client.memory.get_all()[0].source == "background"
    assert (tmp_path / "memory.db").is_file()
    client.close()


def test_reply_is_untouched_and_the_caller_does_not_wait(server, model, db_path):
    model.hold = 2.0
    client = client_for(server, db_path)
    started = time.monotonic()
    response = client.chat.completions.create(model="m", messages=[{"role": "user", "content": "We use Kafka."}])
    assert time.monotonic() - started < 1.0  # the extraction is still held by the server
    assert response.choices[0].message.content == "Thanks, noted: Uses Kafka."
    sent = server.chat_requests()[0]
    assert sent["messages"] == [{"role": "user", "content": "We use Kafka."}]  # no instruction added
    assert client.memory.get_all() == [] and client.memory.stats()["pending_extractions"] == 1
    assert client.memory.flush(timeout=30) is True
    assert [m.text for m in client.memory.get_all()] == ["Uses Kafka"]
    assert client.memory.stats()["pending_extractions"] == 0
    client.close()


def test_known_memories_are_shown_to_the_extractor_and_injected(server, db_path):
    client = client_for(server, db_path)
    client.chat.completions.create(model="m", messages=[{"role": "user", "content": "I prefer Rust for CLIs."}])
    client.memory.flush(timeout=30)
    client.chat.completions.create(model="m", messages=[{"role": "user", "content": "Which language for CLIs?"}])
    client.memory.flush(timeout=30)
    bodies = server.chat_requests()
    assert "preference: Prefers Rust for CLIs" in bodies[2]["messages"][-1]["content"]  # injected
    assert "preference: Prefers Rust for CLIs" in bodies[3]["messages"][0]["content"]  # known to extractor
    client.close()


def test_failures_are_retried_then_kept_as_failed_and_retryable(server, model, db_path, caplog):
    model.fail = True
    client = client_for(server, db_path, retry=RetryPolicy(max_attempts=3, base_delay=0.05, max_delay=0.1))
    with caplog.at_level(logging.WARNING, logger="headroom.memory"):
        client.chat.completions.create(model="m", messages=[{"role": "user", "content": "We use Flink."}])
        assert client.memory.flush(timeout=30) is False
    assert model.extractions == 3
    stats = client.memory.stats()
    assert stats["failed_extractions"] == 1 and stats["pending_extractions"] == 0
    assert any("kept as failed" in r.message for r in caplog.records)
    model.fail = False
    assert client.memory.retry_failed() == 1
    assert client.memory.flush(timeout=30) is True
    assert [m.text for m in client.memory.get_all()] == ["Uses Flink"]
    client.close()


def test_a_killed_process_leaves_a_job_the_next_one_completes(server, model, db_path):
    model.hold = 60.0  # the child's extraction never returns
    child = subprocess.Popen([sys.executable, WORKER, "background-call", db_path, "alice", server.base_url,
                              "I prefer Elixir for chat servers."], stdout=subprocess.PIPE, text=True)
    assert child.stdout.readline().strip() == "called"
    deadline = time.monotonic() + 30
    while model.extractions == 0 and time.monotonic() < deadline:
        time.sleep(0.05)  # until the child's worker has taken the job
    child.send_signal(signal.SIGKILL)
    child.wait()
    model.hold = 0.0
    client = with_memory(openai.OpenAI(base_url=server.base_url, api_key="x"), user_id="alice", db_path=db_path)
    assert client.memory.flush(timeout=30) is True
    assert [m.text for m in client.memory.get_all()] == ["Prefers Elixir for chat servers"]
    client.close()


def test_eight_threads_fifty_calls_each_every_turn_extracted_once(server, model, db_path):
    client = client_for(server, db_path, workers=2)
    errors = []

    def talk(t):
        try:
            for i in range(50):
                client.chat.completions.create(
                    model="m", messages=[{"role": "user", "content": f"I prefer tool {t} {i}."}])
        except Exception as exc:  # noqa: BLE001 - asserted below
            errors.append(exc)

    threads = [threading.Thread(target=talk, args=(t,)) for t in range(8)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    assert errors == []
    assert client.memory.flush(timeout=120) is True
    texts = [m.text for m in client.memory.get_all()]
    assert sorted(texts) == sorted(f"Prefers tool {t} {i}" for t in range(8) for i in range(50))
    assert model.extractions == 400  # exactly once each
    client.close()


def test_async_client_extracts_through_its_sync_twin(server, db_path):
    import asyncio

    async def main():
        client = with_memory(openai.AsyncOpenAI(base_url=server.base_url, api_key="x"), user_id="alice",
                             db_path=db_path)
        stream = await client.chat.completions.create(
            model="m", stream=True, messages=[{"role": "user", "content": "We use Pulsar."}])
        text = "".join([c.choices[0].delta.content or "" async for c in stream if c.choices])
        assert await client.memory.flush(30) is True
        memories = [m.text for m in await client.memory.get_all()]
        await client.close()
        return text, memories

    text, memories = asyncio.run(main())
    assert text == "Thanks, noted: Uses Pulsar." and memories == ["Uses Pulsar"]


def test_clear_forgets_queued_and_failed_extractions(server, model, db_path):
    """Forgetting a user also drops the turns waiting for extraction, and the failed ones that
    still hold the raw conversation: nothing comes back after flush."""
    client = client_for(server, db_path, retry=RetryPolicy(max_attempts=1))
    model.fail = True
    client.chat.completions.create(model="m", messages=[{"role": "user", "content": "I prefer tea."}])
    client.memory.flush(timeout=10)
    assert client.memory.stats()["failed_extractions"] == 1
    model.fail, model.hold = False, 0.5
    for text in ("I prefer Go for CLIs.", "I prefer dark mode."):
        client.chat.completions.create(model="m", messages=[{"role": "user", "content": text}])
    assert client.memory.clear() == 0
    assert client.memory.flush(timeout=20) is True
    assert client.memory.get_all() == []
    stats = client.memory.stats()
    assert stats["pending_extractions"] == 0 and stats["failed_extractions"] == 0
    rows = client.memory.store.query("SELECT count(*) FROM extraction_jobs WHERE user_id = 'alice'", ())
    assert rows[0][0] == 0
    client.close()


def extraction_requests(server):
    return [r for r in server.requests if r.path == "/v1/chat/completions" and is_extraction(r.body)]


def test_the_sync_twin_keeps_the_async_clients_settings(server, db_path):
    import asyncio

    async def main():
        raw = openai.AsyncOpenAI(base_url=server.base_url, api_key="sk-kept", organization="org-kept",
                                 project="proj-kept", default_headers={"X-Team": "search"},
                                 default_query={"tenant": "t1"}, timeout=7.0, max_retries=1)
        client = with_memory(raw, user_id="alice", db_path=db_path)
        await client.chat.completions.create(model="m", messages=[{"role": "user", "content": "We use Kafka."}])
        assert await client.memory.flush(30) is True
        await client.close()

    asyncio.run(main())
    (request,) = extraction_requests(server)
    headers = {k.lower(): v for k, v in request.headers.items()}
    assert headers["authorization"] == "Bearer sk-kept" and headers["openai-organization"] == "org-kept"
    assert headers["openai-project"] == "proj-kept" and headers["x-team"] == "search"


def test_an_async_azure_client_extracts_through_its_sync_twin(server, db_path):
    import asyncio

    async def main():
        raw = openai.AsyncAzureOpenAI(azure_endpoint=server.base_url.removesuffix("/v1"), api_key="az-key",
                                      api_version="2024-06-01", default_headers={"X-Team": "azure"})
        client = with_memory(raw, user_id="alice", db_path=db_path)
        response = await client.chat.completions.create(
            model="gpt-4o", messages=[{"role": "user", "content": "We use Cosmos DB."}])
        assert await client.memory.flush(30) is True
        memories = [m.text for m in await client.memory.get_all()]
        await client.close()
        return response.choices[0].message.content, memories

    text, memories = asyncio.run(main())
    assert text == "Thanks, noted: Uses Cosmos DB." and memories == ["Uses Cosmos DB"]
    (request,) = extraction_requests(server)
    headers = {k.lower(): v for k, v in request.headers.items()}
    assert headers["api-key"] == "az-key" and headers["x-team"] == "azure"


def test_extraction_asks_for_structured_output_with_a_token_bound_and_falls_back(server, db_path):
    seen = []

    def reply(body):
        if not is_extraction(body):
            return 200, chat_completion(body, ["Noted."])
        seen.append(body)
        if "response_format" in body:
            return 400, {"error": {"message": "response_format is not supported", "type": "invalid_request_error"}}
        return 200, chat_completion(body, ['{"memories": [{"content": "Uses Kafka", "category": "Fact"}]}'])

    server.handlers["/v1/chat/completions"] = reply
    client = client_for(server, db_path)
    for text in ("We use Kafka.", "We use Kafka a lot."):
        client.chat.completions.create(model="m", messages=[{"role": "user", "content": text}])
        assert client.memory.flush(timeout=30) is True
    assert [m.text for m in client.memory.get_all()] == ["Uses Kafka"]  # an untagged block, read as one
    first, fallback, second = seen
    assert first["response_format"]["type"] == "json_schema" and first["max_tokens"] == 512
    assert first["temperature"] == 0
    assert "response_format" not in fallback and fallback["max_tokens"] == 512
    assert "response_format" not in second and "temperature" not in second  # refused once: not asked again
    client.close()


def test_notes_from_the_reply_and_questions_are_not_stored_as_the_users(server, db_path):
    proposed = [{"content": "Is vegetarian", "category": "fact"},
                {"content": "Lentil curry is rich in protein and iron", "category": "fact"},  # the reply's
                {"content": "What should I cook after a long run?", "category": "context"}]  # a question

    def reply(body):
        if is_extraction(body):
            return 200, chat_completion(body, [json.dumps({"memories": proposed})])
        return 200, chat_completion(body, ["Try a lentil curry: lentils are rich in protein and iron, "
                                           "which helps recovery."])

    server.handlers["/v1/chat/completions"] = reply
    client = client_for(server, db_path)
    said = "I'm vegetarian. What should I cook after a long run?"
    client.chat.completions.create(model="m", messages=[{"role": "user", "content": said}])
    assert client.memory.flush(timeout=30) is True
    assert [m.text for m in client.memory.get_all()] == ["Is vegetarian"]
    client.close()


def test_a_fact_the_reply_repeats_is_still_the_users():
    from headroom.memory import LocalEmbedder
    from headroom.memory._grounding import from_user

    keep = from_user(["Her manager is Dr. Evans", "You're welcome!"], "My manager is called Dr. Evans.",
                     "Your manager is Dr. Evans. You're welcome!", LocalEmbedder())
    assert keep == [True, False]


def test_a_number_and_a_remembered_note_are_the_users_words(local_embedder):
    """The 1.5B model's two dropped facts (bench/RESULTS.md, session 9): a note that keeps the
    user's number, and a correction that restates a note the model was shown, are the user's
    even when the reply says much the same."""
    from headroom.memory._grounding import from_user

    said, reply = "My daughter Lina just turned 7.", "Wow, Lina turned 7 years old!"  # closer to the reply
    assert from_user(["Lina turned 7 years old."], said, reply, local_embedder) == [True]
    assert from_user(["Lina turned 9 years old."], said, reply, local_embedder) == [False]  # not their number
    said = "Correction: the race is in May, it got moved from April."
    reply = "Thanks for the update! The Leeds half marathon is in May now, so you have an extra month to train."
    note = ["The Leeds half marathon is in May, not April."]
    assert from_user(note, said, reply, local_embedder) == [False]  # the race's name is not in this turn
    assert from_user(note, said, reply, local_embedder,
                     remembered=["Training for the Leeds half marathon in April"]) == [True]


def test_an_extraction_call_is_not_shown_a_reply_that_disclaims_or_is_about_something_else():
    from headroom.memory._protocol import extraction_prompt, reply_for_extraction

    said = "My daughter Lina just turned 7."
    refusal = "As an AI, I don't have access to your daughter's information, but happy birthday to her!"
    for reply in (refusal, "I'm sorry, I cannot remember personal details between chats."):
        assert reply_for_extraction(reply, said) == ""
    _, user = extraction_prompt([said], reply_for_extraction(refusal, said), [])
    assert user == "User: My daughter Lina just turned 7."
    plain = "Happy birthday to Lina! Seven is a fun age."
    assert reply_for_extraction(plain, said) == plain
    assert extraction_prompt(["hi"], plain, [])[1] == f"User: hi\nAssistant: {plain}"
    # The 1.5B model's answer to a correction, about an earlier question: not one word in common.
    moved = "Actually I moved to Amsterdam last month, not Rotterdam anymore."
    assert reply_for_extraction("The language I should use for the new pricing service is Python.", moved) == ""
    assert reply_for_extraction("Enjoy Amsterdam!", moved) == "Enjoy Amsterdam!"
    assert reply_for_extraction("Anything else?", "ok") == ""  # nothing of the user's to relate to
    assert reply_for_extraction("Hello!", "") == "Hello!"


def test_notes_about_the_chat_are_not_the_users():
    from headroom.memory._grounding import from_user

    notes = ["Thanks", "user said 'haha nice'", "User greeted with a good morning message",
             "User said they are vegetarian", "Is vegetarian", "Haha nice", "ok, cool!", "Great, thanks.",
             "Lives in Nice", "Nice weather makes them happy"]
    said = "haha nice, ok cool, great thanks. I'm vegetarian and I live in Nice; nice weather makes me happy"
    assert from_user(notes, said, "") == [False, False, False, True, True, False, False, False, True, True]


def test_notes_the_user_never_said_are_invented():
    from headroom.memory._grounding import from_user

    said = "Hi! I'm Maya, a backend engineer at a logistics company in Rotterdam."
    notes = ["Is a backend engineer at a logistics company", "Name is Maya", "Lives in Rotterdam",
             "Worked on a project that optimized delivery routes to reduce fuel consumption",
             "Solved a complex bug that affected the company's inventory management system",
             "I'm sorry, but I can't assist with that."]
    assert from_user(notes, said, "") == [True, True, True, False, False, False]
    # what the user said earlier in the conversation counts too
    assert from_user(["Switched to Polars for speed"], "Faster now!", "", heard="I now use Polars.\nFaster now!") == [True]
    assert from_user(["Switched to Polars for speed"], "Faster now!", "") == [False]


@pytest.mark.parametrize("stream", [False, True])
def test_an_echo_of_the_remembered_context_is_removed_and_the_rest_left_as_written(server, db_path, stream):
    reply = ("<remembered_context>\n[1] 2026-01-01, fact: Lives in Oslo\n</remembered_context>\n"
             'Oslo it is. <memory>{"memories": []}</memory>')  # not asked for: the answer's own text

    def answer(body):
        if is_extraction(body):
            return 200, chat_completion(body, ['{"memories": []}'])
        return 200, chat_chunks(body, reply, 5) if body.get("stream") else chat_completion(body, [reply])

    server.handlers["/v1/chat/completions"] = answer
    client = client_for(server, db_path)
    client.memory.add("Lives in Oslo")
    messages = [{"role": "user", "content": "Where do I live?"}]
    if stream:
        text = "".join(c.choices[0].delta.content or "" for c in client.chat.completions.create(
            model="m", messages=messages, stream=True) if c.choices)
    else:
        text = client.chat.completions.create(model="m", messages=messages).choices[0].message.content
    assert text == 'Oslo it is. <memory>{"memories": []}</memory>'
    assert client.memory.flush(timeout=30) is True
    extraction = [r.body for r in server.requests if r.path == "/v1/chat/completions" and is_extraction(r.body)]
    assert "remembered_context" not in extraction[-1]["messages"][-1]["content"]  # the reply as the caller got it
    client.close()


def forgetful(replies):
    """A model that answers an instructed call with ``replies`` in turn (blocks or none) and an
    extraction call by the stand-in's rules."""
    replies = iter(replies)

    def answer(body):
        if is_extraction(body):
            return 200, chat_completion(body, [rule_based_reply(body)])
        reply = next(replies)
        return 200, chat_chunks(body, reply, 3) if body.get("stream") else chat_completion(body, [reply])

    return answer


@pytest.mark.parametrize("stream", [False, True])
def test_fast_memory_falls_back_to_extraction_when_the_model_gives_no_note(server, db_path, stream):
    server.handlers["/v1/chat/completions"] = forgetful([
        "Kafka is a fine choice.",  # no block: queued for extraction
        'Rust, then. <memory>{"memories": []}</memory>',  # nothing new, as the model says: not queued
        "Got it. <memory>{memories: [{content: ...</memory>",  # nothing readable in it: queued
        'Vim it is. <memory>{"memories": [{"content": "Uses vim"}]}</memory>',  # read: not queued
        'Noted. <memory>{"memories": []}</memory>',  # "nothing new" after the user told of themselves: queued
        'Nice! <memory>{"memories": [{"content": "Enjoys hiking on weekends"}]}</memory>',  # invented only: queued
    ])
    client = with_fast_memory(openai.OpenAI(base_url=server.base_url, api_key="x", max_retries=0), user_id="alice",
                              db_path=db_path, fallback_extraction=True)
    said = ["We use Kafka.", "Hi again.", "I prefer Rust for CLIs.", "I use vim.", "I'm a nurse at Leeds General.",
            "I'm a chef at the Ritz."]
    answers = []
    for text in said:
        messages = [{"role": "user", "content": text}]
        if stream:
            answers.append("".join(c.choices[0].delta.content or "" for c in client.chat.completions.create(
                model="m", messages=messages, stream=True) if c.choices))
        else:
            answers.append(client.chat.completions.create(model="m", messages=messages).choices[0].message.content)
    assert answers == ["Kafka is a fine choice.", "Rust, then.", "Got it.", "Vim it is.", "Noted.", "Nice!"]
    assert client.memory.flush(timeout=30) is True
    extractions = [r.body for r in server.requests if r.path == "/v1/chat/completions" and is_extraction(r.body)]
    assert [e["messages"][-1]["content"].splitlines()[0] for e in extractions] == [
        "User: We use Kafka.", "User: I prefer Rust for CLIs.", "User: I'm a nurse at Leeds General.",
        "User: I'm a chef at the Ritz."]
    stored = {m.text: m.source for m in client.memory.get_all()}
    assert stored == {"Uses Kafka": "background", "Prefers Rust for CLIs": "background", "Uses vim": "inline",
                      "Is a nurse": "background", "Works at Leeds General": "background",
                      "Is a chef": "background", "Works at the Ritz": "background"}
    assert client.memory.stats()["extracted_apart"] == 4
    client.close()


def test_fast_memory_without_the_fallback_makes_no_second_call(server, db_path):
    server.handlers["/v1/chat/completions"] = forgetful(["Kafka is a fine choice."])
    client = with_fast_memory(openai.OpenAI(base_url=server.base_url, api_key="x", max_retries=0), user_id="alice",
                              db_path=db_path)
    client.chat.completions.create(model="m", messages=[{"role": "user", "content": "We use Kafka."}])
    assert client.memory.flush(timeout=30) is True
    assert len(server.chat_requests()) == 1 and client.memory.get_all() == []
    assert client.memory.stats()["replies_without_block"] == 1 and client.memory.stats()["extracted_apart"] == 0
    client.close()


def test_what_counts_as_the_user_telling_of_themselves():
    from headroom.memory._grounding import tells_about_self

    told = ["I'm Priya, a data scientist working at a hospital in Leeds.", "My daughter Lina just turned 7.",
            "Hi! We moved to Porto last year.", "I prefer short answers with bullet points."]
    not_told = ["Hi again.", "Thanks, I'll try that", "Ok thanks, bye", "How are you today?",
                "Can you suggest a dinner for after a long run?", "The weather is lovely today.", "me too lol"]
    assert [tells_about_self(s) for s in told] == [True] * len(told)
    assert [tells_about_self(s) for s in not_told] == [False] * len(not_told)


def test_on_a_turn_of_questions_only_a_note_must_be_almost_all_the_users_words():
    """The two junk notes of session 10's background run were questions restated; a fact asked in
    passing is still kept."""
    from headroom.memory._grounding import from_user

    assert from_user(["The user is considering which language to use for the new pricing service."],
                     "Which language should I use for the new pricing service?", "") == [False]
    assert from_user(["Idea for a lab demo for my class: Sodium Hydroxide Reactivity"],
                     "Ideas for a lab demo for my class?", "") == [False]
    assert from_user(["Is taking a trip to Japan next week", "Has a dog", "Works at Google"],
                     "What should I pack for my trip to Japan next week?\nAny tips for walking my dog?", "") == [
        True, True, False]
