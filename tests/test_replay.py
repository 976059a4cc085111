"""BlockReplay: earlier answers get their blocks back in the copy of the history sent to the model."""

from headroom.memory._parser import ExtractedMemory, parse_reply
from headroom.memory._replay import BlockReplay, format_block


def test_a_restored_block_parses_back_to_what_was_stored():
    memories = [ExtractedMemory("Lives in Oslo", "fact"), ExtractedMemory('Says "hi" <b>', "context")]
    result = parse_reply("Hi.\n" + format_block(memories))
    assert result.text == "Hi." and result.memories == memories and result.repairs == 0


def test_only_text_answers_this_client_cleaned_get_a_block():
    replay = BlockReplay()
    fact = [ExtractedMemory("Says hello", "fact")]
    replay.remember("Hello there.", fact)
    replay.remember("", fact)  # an empty answer is no key
    replay.remember("Someone else's answer.", [])  # nor is an answer whose block held nothing
    messages = [
        {"role": "user", "content": "Hello there."},  # a user's message with the same text: untouched
        {"role": "assistant", "content": "Hello there.  "},
        {"role": "assistant", "content": [{"type": "text", "text": "Hello there."}]},  # Anthropic's parts
        {"role": "assistant", "content": [{"type": "text", "text": "Hello there."}, {"type": "tool_use", "id": "t"}]},
        {"role": "assistant", "content": "Someone else's answer."},
        {"role": "assistant", "content": None, "tool_calls": []},
    ]
    out = replay.restore(messages)
    assert out[0] is messages[0] and out[3] is messages[3] and out[4] is messages[4] and out[5] is messages[5]
    block = '<memory>{"memories": [{"content": "Says hello", "category": "fact"}]}</memory>'
    assert out[1]["content"] == f"Hello there.  \n\n{block}"
    assert out[2]["content"][-1] == {"type": "text", "text": block}
    assert messages[1]["content"] == "Hello there.  " and len(messages[2]["content"]) == 1


def test_the_oldest_answers_are_forgotten_first():
    replay = BlockReplay(capacity=2)
    for text in ("one", "two", "three"):
        replay.remember(text, [ExtractedMemory(text)])
    out = replay.restore([{"role": "assistant", "content": t} for t in ("one", "two", "three")])
    assert [m["content"].endswith("</memory>") for m in out] == [False, True, True]
