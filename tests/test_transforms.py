"""Token counting offline and RollingWindowTransform's keep rules."""

import copy
import logging

import pytest

from headroom.transforms import RollingWindowTransform, TokenCounter, _tokens, encoding_for_model
from headroom.transforms._tokens import REPLY_PRIMING, TOKENS_PER_IMAGE, TOKENS_PER_MESSAGE

# Token ids as tiktoken gives them (the first two as in tiktoken's own README); checked in.
EXPECTED = {
    "cl100k_base": {
        "hello world": [15339, 1917],
        "tiktoken is great!": [83, 1609, 5963, 374, 2294, 0],
        "Schöne Grüße aus München 🚀": [31224, 3029, 818, 95163, 24352, 9608, 90366, 11410, 248, 222],
        "日本語のテキスト": [9080, 22656, 45918, 252, 16144, 57933, 62903, 71634],
    },
    "o200k_base": {
        "hello world": [24912, 2375],
        "tiktoken is great!": [83, 8251, 2488, 382, 2212, 0],
        "Schöne Grüße aus München 🚀": [14948, 61362, 99720, 3976, 61963, 169883, 222],
        "  def f(x):\n\treturn x**2  # ok": [220, 1056, 285, 4061, 1883, 1393, 1215, 410, 17, 220, 1069, 4763],
    },
}


@pytest.mark.parametrize("loader", [_tokens._tiktoken_encoding, _tokens._pure_encoding])
@pytest.mark.parametrize("name", sorted(EXPECTED))
def test_exact_tokens_offline(name, loader):
    encoding = loader(name)
    for text, ids in EXPECTED[name].items():
        assert encoding.encode_ordinary(text) == ids, text


def test_encoding_follows_the_model_and_says_when_it_guesses(caplog):
    assert encoding_for_model("gpt-4o") == "o200k_base" and encoding_for_model("gpt-4o-mini") == "o200k_base"
    assert encoding_for_model("o3-mini") == "o200k_base" and encoding_for_model("gpt-4.1") == "o200k_base"
    assert encoding_for_model("gpt-4") == "cl100k_base" and encoding_for_model("gpt-3.5-turbo") == "cl100k_base"
    assert encoding_for_model("openai/gpt-4o") == "o200k_base"
    with caplog.at_level(logging.INFO, logger="headroom.transforms"):
        llama = TokenCounter("llama-3.1-70b")
    assert llama.encoding_name == "approximate" and not llama.exact
    assert llama.count("x" * 40) == 10
    assert any("approximately" in r.message for r in caplog.records)
    counter = TokenCounter("gpt-4o")
    assert counter.exact and counter.count("hello world") == 2


def test_message_overhead():
    counter = TokenCounter("gpt-4o")
    message = {"role": "user", "content": "hello world", "name": "jane"}
    assert counter.count_message(message) == TOKENS_PER_MESSAGE + 1 + 2 + 1 + counter.count("jane")
    parts = {"role": "user", "content": [{"type": "text", "text": "hello world"},
                                         {"type": "image_url", "image_url": {"url": "data:,"}}]}
    assert counter.count_message(parts) == TOKENS_PER_MESSAGE + 1 + 2 + TOKENS_PER_IMAGE
    assert counter.count_messages([message, parts]) == (
        counter.count_message(message) + counter.count_message(parts) + REPLY_PRIMING)


def conversation(turns: int, words: int = 20) -> list[dict]:
    messages = [{"role": "system", "content": "You are helpful."}]
    for i in range(turns):
        messages.append({"role": "user", "content": f"question {i} " + "word " * words})
        messages.append({"role": "assistant", "content": f"answer {i} " + "word " * words})
    return messages


def test_keeps_system_and_newest_that_fit_without_mutating():
    messages = conversation(50)
    before = copy.deepcopy(messages)
    transform = RollingWindowTransform(max_tokens=500)
    kept = transform.apply(messages)
    assert messages == before and kept is not messages
    assert kept[0] == messages[0] and kept[-1] == messages[-1]
    assert kept[1]["role"] == "user"
    assert transform.counter.count_messages(kept) <= 500
    assert kept[1:] == messages[len(messages) - len(kept) + 1:]  # a contiguous newest window
    assert len(transform.last_dropped) == len(messages) - len(kept)
    # One more message would not have fitted (or would have started with the assistant).
    wider = messages[len(messages) - len(kept) - 1: len(messages) - len(kept) + 1]
    assert transform.counter.count_messages([messages[0], *wider, *kept[1:]]) > 500 or wider[0]["role"] == "assistant"


def test_latest_user_message_is_kept_even_alone_over_budget(caplog):
    messages = conversation(3) + [{"role": "user", "content": "huge " * 2000}]
    with caplog.at_level(logging.WARNING, logger="headroom.transforms"):
        kept = RollingWindowTransform(max_tokens=200).apply(messages)
    assert kept == [messages[0], messages[-1]]
    assert any("kept anyway" in r.message for r in caplog.records)


def tool_conversation() -> list[dict]:
    return [
        {"role": "system", "content": "sys"},
        {"role": "user", "content": "first " * 50},
        {"role": "assistant", "content": "ok " * 50},
        {"role": "user", "content": "What's the weather in Paris and Rome?"},
        {"role": "assistant", "content": None, "tool_calls": [
            {"id": "c1", "type": "function", "function": {"name": "weather", "arguments": '{"city": "Paris"}'}},
            {"id": "c2", "type": "function", "function": {"name": "weather", "arguments": '{"city": "Rome"}'}}]},
        {"role": "tool", "tool_call_id": "c1", "content": "sunny " * 40},
        {"role": "tool", "tool_call_id": "c2", "content": "rain " * 40},
        {"role": "assistant", "content": "Paris is sunny, Rome rainy."},
        {"role": "user", "content": "Thanks! And tomorrow?"},
    ]


@pytest.mark.parametrize("max_tokens", range(40, 400, 7))
def test_tool_calls_and_results_stay_together_and_history_starts_with_user(max_tokens):
    messages = tool_conversation()
    kept = RollingWindowTransform(max_tokens=max_tokens).apply(messages)
    body = [m for m in kept if m["role"] != "system"]
    assert body[0]["role"] == "user" and body[-1] == messages[-1]
    ids_called = {c["id"] for m in body for c in m.get("tool_calls") or []}
    ids_answered = {m["tool_call_id"] for m in body if m["role"] == "tool"}
    assert ids_called == ids_answered


def test_keep_first_user_and_reserve_for_reply():
    messages = conversation(40)
    plain = RollingWindowTransform(max_tokens=600).apply(messages)
    reserved = RollingWindowTransform(max_tokens=600, reserve_for_reply=200).apply(messages)
    assert len(reserved) < len(plain)
    transform = RollingWindowTransform(max_tokens=600, keep_first_user=True)
    kept = transform.apply(messages)
    assert kept[1] == messages[1] and kept[-1] == messages[-1]
    assert transform.counter.count_messages(kept) <= 600


def test_ten_thousand_messages():
    messages = conversation(5000, words=5)
    transform = RollingWindowTransform(max_tokens=4000)
    kept = transform.apply(messages)
    assert 10 < len(kept) < 1000 and kept[-1] == messages[-1]
    assert transform.counter.count_messages(kept) <= 4000
    assert len(transform.last_dropped) + len(kept) == len(messages)


def test_bad_arguments():
    with pytest.raises(ValueError):
        RollingWindowTransform(max_tokens=0)
    with pytest.raises(ValueError):
        RollingWindowTransform(max_tokens=100, reserve_for_reply=100)


def test_on_drop_hands_each_dropped_message_once():
    handed = []
    transform = RollingWindowTransform(max_tokens=300, on_drop=handed.append)
    messages = conversation(20)
    transform.apply(messages)
    first = len(handed[0])
    transform.apply(messages)  # the same conversation again: nothing new was dropped
    assert len(handed) == 1
    transform.apply(messages + conversation(2)[1:])
    assert len(handed) == 2 and 0 < len(handed[1]) <= 4 and first > 0
