"""The <memory> block protocol: pure functions, tested on plain strings."""

import json

import pytest
from hypothesis import assume, given, settings
from hypothesis import strategies as st

from headroom.memory._parser import _TAG
from headroom.memory._protocol import (
    INSTRUCTION,
    BlockParser,
    ExtractedMemory,
    format_injection,
    parse_block,
    parse_reply,
)

BLOCK = '<memory>{"memories": [{"content": "Prefers Python", "category": "preference"}]}</memory>'


def test_instruction_is_short_names_the_categories_and_its_example_is_never_stored():
    assert len(INSTRUCTION.split()) < 80
    for word in ("answer to the user first", "preference", "fact", "context", "<memory>", '"memories": []',
                 "replaces"):
        assert word in INSTRUCTION
    for example in ("Prefers Python", "fintech", "microservices", '"..."'):  # copied verbatim by small models
        assert example not in INSTRUCTION
    example = INSTRUCTION.split("Example: ")[1].split("\n")[0]
    copied = parse_reply("Sure.\n" + example)
    assert copied.text == "Sure." and copied.blocks == 1 and copied.memories == []  # a copy is not a fact


def test_plain_block_is_stripped_and_parsed():
    result = parse_reply("Python it is.\n\n" + BLOCK)
    assert result.text == "Python it is."
    assert result.memories == [ExtractedMemory("Prefers Python", "preference")]
    assert result.problems == []


def test_reply_without_block_is_untouched():
    text = "  Hello there!\n\nNo memory today.  \n"
    result = parse_reply(text)
    assert result.text == text and result.memories == [] and result.problems == []


def test_synonyms_bare_lists_and_plain_strings():
    memories, problems = parse_block('[{"text": "Uses vim", "category": "preference"}, "Lives in Oslo"]')
    assert memories == [ExtractedMemory("Uses vim", "preference"), ExtractedMemory("Lives in Oslo", "fact")]
    assert problems == []
    assert parse_block('"Has a cat"')[0] == [ExtractedMemory("Has a cat")]
    assert parse_block('{"memories": "Has a dog"}')[0] == [ExtractedMemory("Has a dog")]


def test_missing_or_unknown_category_becomes_fact_and_an_unknown_one_is_reported():
    memories, problems = parse_block('{"memories": [{"content": "A"}, {"content": "B", "category": "hobby"}]}')
    assert [m.category for m in memories] == ["fact", "fact"]
    assert len(problems) == 1 and "hobby" in problems[0]


def test_categories_ignore_case_and_fold_synonyms():
    body = json.dumps([{"content": f"Note on {c}", "category": c}
                       for c in ("Fact", "Preferences", "goal", " CONTEXT ", "likes")])
    memories, problems = parse_block(body)
    assert [m.category for m in memories] == ["fact", "preference", "context", "context", "preference"]
    assert problems == []


NEAR_MISSES = {
    "memories tags": 'Sure.\n<memories>{"memories": [{"content": "Uses vim"}]}</memories>',
    "mismatched close": 'Sure.\n<memory>{"memories": [{"content": "Uses vim"}]}</memories>',
    "untagged object": 'Sure.\n{"memories": [{"content": "Uses vim", "category": "preference"}]}',
    "fenced object": 'Sure.\n```json\n{"memories": [{"content": "Uses vim"}]}\n```',
    "single quotes": "Sure.\n<memory>{'memories': [{'content': 'Uses vim'}]}</memory>",
    "untagged single quotes": "Sure.\n{'memories': [{'content': 'Uses vim'}]}",
    "labelled object": 'Sure.\nMemory block:\n{"memories": [{"content": "Uses vim"}]}',
    "label, blank line, tagged block": 'Sure.\nMEMORY\n\n<memory>{"memories": [{"content": "Uses vim"}]}</memory>',
    "labelled fenced object": 'Sure.\n**Memories:**\n```json\n{"memories": [{"content": "Uses vim"}]}\n```',
    "labelled tagged block": 'Sure.\nMemory block:\n<memory>{"memories": [{"content": "Uses vim"}]}</memory>',
    "fence and broken tag": 'Sure.\n```memory>{"memories": [{"content": "Uses vim"}]}</memory>\n```',
    "tag without its bracket": 'Sure.\n<memory {"memories": [{"content": "Uses vim"}]}</memory>',
    "label on the line": 'Sure.\nMemory: {"memories": [{"content": "Uses vim"}]}',
    "untagged object, closing tag": 'Sure.\n{"memories": [{"content": "Uses vim"}]}</memory>',
    "keys unquoted": 'Sure.\n{ memories: [\n  {\n    content: "Uses vim",\n    category: "fact"\n  }\n] }',
    "another tag around it": 'Sure.\n<answer>{"memories": [{"content": "Uses vim"}]}</answer>',
    "tagged, keys unquoted": "Sure.\n<memory>{memories: [{content: 'Uses vim', category: 'fact'}]}</memory>",
}


@pytest.mark.parametrize("reply", NEAR_MISSES.values(), ids=NEAR_MISSES.keys())
def test_near_miss_formats_are_stripped_stored_and_counted(reply):
    result = parse_reply(reply)
    assert result.text == "Sure." and [m.text for m in result.memories] == ["Uses vim"]
    assert (result.repairs >= 1 or "<memory>" in reply) and result.blocks == 1
    for cut in range(len(reply) + 1):
        assert chunked(reply, [cut]) == "Sure."


def test_an_untagged_block_in_the_middle_of_a_line_is_removed_the_same_over_every_split():
    """Seen twice on the 1.5B model. The words before it on its line stay: in a stream they are
    shown before the block starts."""
    reply = 'Moved, noted. Here is {"memories": [{"content": "Moved to Amsterdam"}]} and more.'
    result = parse_reply(reply)
    assert result.text == "Moved, noted. Here is and more."
    assert [m.text for m in result.memories] == ["Moved to Amsterdam"] and result.repairs == 1
    for cut in range(len(reply) + 1):
        assert chunked(reply, [cut]) == result.text
        assert chunked(reply, [cut, cut + 3]) == result.text
    code = 'In Python: data = {"memory": 1} or f"{memories}" and {memories: 2}.'
    assert parse_reply(code).text == code  # a key not quoted, or another key: the answer's own text


def test_a_label_alone_is_the_answers_text_and_a_labelled_block_leaves_nothing():
    assert parse_reply("Memory safety matters.\nMemories: we keep none.").text == "Memory safety matters.\nMemories: we keep none."
    assert parse_reply('Memory block:\n{"memories": []}').text == ""


TALK = "Rest well. The <memory> block should remain empty as there is no new information to add."


def test_a_sentence_about_the_block_is_removed_the_same_over_every_split():
    for reply, kept in [(TALK, "Rest well."), (TALK + "\n\nGood luck!", "Rest well.\n\nGood luck!"),
                        ("Your <memory> block: nothing new", "")]:
        result = parse_reply(reply)
        assert result.text == kept and result.memories == [] and result.blocks == 0
        assert "talked about its memory block" in result.problems[0]
        for cut in range(len(reply) + 1):
            assert chunked(reply, [cut]) == kept
            assert chunked(reply, [cut, cut + 7]) == kept
    prose = "In HTML a <memory> tag is not standard; the <memory> element blocks nothing."
    assert parse_reply(prose).text == prose  # not followed by "block": the answer's own words


def test_unquoting_keys_never_touches_the_text_of_strings():
    body = '{memories: [{content: "Said \\"a, b: c\\" {d: e}", category: "fact"}]}'
    memories, problems = parse_block(body)
    assert [m.text for m in memories] == ['Said "a, b: c" {d: e}'] and problems == []
    assert "not valid JSON" in parse_block("{memories: [unquoted words]}")[1][0]


def test_json_in_an_answer_is_the_answers_text():
    answer = 'Use this config:\n```json\n{"name": "api", "memory": 512}\n```\nand {"memory_limit": 2}.'
    result = parse_reply(answer)
    assert result.text == answer and result.memories == [] and result.repairs == 0


def test_a_stray_replaces_tag_is_removed_when_short_and_kept_in_prose():
    assert parse_reply('<memory>["Lives in Amsterdam"]</memory>\n<replaces>:1</replaces>').text == ""
    prose = "In XSLT, <replaces> is not an element; " + "you want xsl:copy or a template match instead. " * 3
    assert parse_reply(prose).text == prose


def test_a_category_list_copied_from_the_template_folds_to_its_first_known_word():
    (memory,), problems = parse_block('[{"content": "Migrating to microservices", "category": "context|fact|project"}]')
    assert memory.category == "context" and problems == []


def test_an_echoed_context_block_is_removed_unparsed():
    reply = ("<remembered_context>\nNotes from earlier...\n[1] 2026-11-24, fact: Uses Go\n</remembered_context>\n"
             'Go it is.\n<memory>{"memories": []}</memory>')
    result = parse_reply(reply)
    assert result.text == "Go it is." and result.memories == [] and result.echoes == 1
    for cut in range(len(reply) + 1):
        assert chunked(reply, [cut]) == "Go it is."


def test_an_unclosed_block_is_stripped_and_stored_only_if_it_parses():
    broken = parse_reply('Sure thing! <memory>{"memories": [{"content": "Likes te')
    assert broken.text == "Sure thing!" and broken.memories == []
    whole = parse_reply('Sure thing! <memory>{"memories": [{"content": "Likes tea"}]}')
    assert whole.text == "Sure thing!" and [m.text for m in whole.memories] == ["Likes tea"]
    bare = parse_reply('Sure thing!\n{"memories": [{"content": "Likes te')
    assert bare.text == "Sure thing!" and bare.memories == []


def test_a_block_cut_off_at_the_token_limit_is_stripped_however_the_reply_is_split():
    """The 1.5B model, stopped by max_tokens, ended two replies with "... The <memory>" (session 11):
    an opening tag (or most of one) at the very end of a reply is a block cut off, not the answer.
    Mentioning the tag in prose is left alone."""
    for reply, problem in (("Go for microservices. The <memory>", "cut off before its content"),
                           ("Go for microservices. The <memory>\n  ", "cut off before its content"),
                           ("Go for microservices. The <memor", "tag was cut off"),
                           ("Go for microservices.\n<MEMORIES", "tag was cut off")):
        result = parse_reply(reply)
        assert result.text in ("Go for microservices. The", "Go for microservices.") and result.blocks == 0
        assert any(problem in p for p in result.problems), result.problems
        for cut in range(len(reply) + 1):
            assert chunked(reply, [cut]) == result.text
    for prose in ("Wrap it in a <memory>.", "A <m", "Tags like <memory> and </memory> mark it"):
        assert parse_reply(prose).text == prose


@pytest.mark.parametrize("content", ["...", "<fact>", "content", "None", "", "  ", "nothing new", "preference|fact"])
def test_placeholders_are_never_stored(content):
    memories, problems = parse_block(json.dumps({"memories": [{"content": content, "category": "fact"}]}))
    assert memories == [] and problems


@pytest.mark.parametrize("copied", ["[1] 2026-11-24, fact: Uses Go", "Uses Go (said 2026-11-24)", "- [2] Uses Go",
                                    "2026-11-24, fact: Uses Go"])
def test_decorations_copied_from_the_context_are_dropped(copied):
    (memory,), _ = parse_block(json.dumps([{"content": copied}]))
    assert memory.text == "Uses Go"


def test_replaces_by_number_text_or_reference():
    from headroom.memory import Memory
    from headroom.memory._models import utcnow
    from headroom.memory._protocol import resolve_replaces

    now = utcnow()
    shown = [Memory("a" * 32, "u", "Lives in Rotterdam", "fact", now, now),
             Memory("b" * 32, "u", "Prefers Go", "preference", now, now)]
    assert resolve_replaces("2", shown) == "b" * 32 and resolve_replaces("[1]", shown) == "a" * 32
    assert resolve_replaces("lives in  rotterdam", shown) == "a" * 32
    assert resolve_replaces("m1a2b3c", shown) == "m1a2b3c" and resolve_replaces("7", shown) == "7"
    assert resolve_replaces(None, shown) is None
    (memory,), _ = parse_block('[{"content": "Lives in Amsterdam", "replaces": 1}]')
    assert memory.replaces == "1"


def test_code_fence_and_white_space_inside_block():
    body = '\n  ```json\n{"memories": [{"content": "Runs Arch Linux", "category": "fact"}]}\n```  \n'
    result = parse_reply(f"Done.<memory>{body}</memory>")
    assert result.text == "Done." and result.memories == [ExtractedMemory("Runs Arch Linux", "fact")]


def test_several_blocks_and_case_insensitive_tags():
    reply = 'A<memory>["One"]</memory> B <MEMORY>["Two"]</Memory>'
    result = parse_reply(reply)
    assert result.text == "A B" and [m.text for m in result.memories] == ["One", "Two"]


def test_unclosed_block_is_stripped_from_the_tag_on():
    result = parse_reply('Sure thing! <memory>{"memories": [{"content": "Likes te')
    assert result.text == "Sure thing!" and result.memories == []
    assert any("never closed" in p for p in result.problems)


def test_invalid_json_is_stripped_and_reported():
    result = parse_reply("Answer.<memory>{not json at all</memory>")
    assert result.text == "Answer." and result.memories == [] and "not valid JSON" in result.problems[0]


def test_hostile_blocks():
    huge = '<memory>["' + "x" * 50_000 + '"]</memory>'
    result = parse_reply("Hi" + huge + " there")
    assert result.text == "Hi there" and result.memories == [] and result.problems
    many = "<memory>" + json.dumps([f"fact {i}" for i in range(100)]) + "</memory>"
    assert len(parse_reply(many).memories) == 20
    nested = parse_reply('<memory>{"memories": [{"content": {"evil": 1}}, 5, null, ""]}</memory>ok')
    assert nested.text == "ok" and nested.memories == [] and len(nested.problems) == 4
    stray = parse_reply("text </memory> more")  # a closing tag outside a block is the answer's text
    assert stray.text == "text </memory> more"
    assert parse_reply("<memory>[1, 2]</memory>").memories == []


def test_blocks_that_break_the_json_parser_are_reported_not_raised():
    for body in ["[" * 5000 + "]" * 5000, '{"memories": [' + "9" * 5000 + "]}", '["' + "\\ud800" + '"]',
                 '[{"content": "' + "\\udfff tail" + '"}]']:
        result = parse_reply("Answer.<memory>" + body + "</memory>")
        assert result.text == "Answer." and result.memories == [] and result.problems


def test_a_tag_in_the_answer_that_opens_no_block_is_the_answers_text():
    answer = "In HTML use <memory> carefully; close it with </memory> and never nest it."
    assert parse_reply(answer).text == answer
    assert parse_reply(answer + "\n" + BLOCK).text == answer
    # At the very end of a reply, the tag is a block cut off at the token limit, not prose (below).
    assert parse_reply("Ends with <memory>.").text == "Ends with <memory>."


def test_white_space_inside_tags():
    for block in ['<memory >["Uses vim"]</memory >', '< memory>["Uses vim"]</ memory>',
                  '<MEMORY\n>\n["Uses vim"]\n< / Memory >']:
        result = parse_reply("Done. " + block)
        assert result.text == "Done." and result.memories == [ExtractedMemory("Uses vim")], block


def test_empty_and_fenced_blocks_still_open_with_their_tag():
    assert parse_reply("Hi <memory></memory>").text == "Hi"
    assert parse_reply('Hi <memory>```json\n["A"]\n```</memory>').memories == [ExtractedMemory("A")]


def test_empty_block_means_nothing_to_remember():
    result = parse_reply('Hello!\n<memory>{"memories": []}</memory>\n')
    assert result.text == "Hello!" and result.memories == [] and result.problems == []


def test_injection_block_says_it_is_context_not_instructions():
    from headroom.memory import Memory
    from headroom.memory._models import utcnow

    now = utcnow()
    block = format_injection([(Memory("1a2b3c4d", "u", "Prefers Python", "preference", now, now), 0.8)])
    assert f"[1] {now:%Y-%m-%d}, preference: Prefers Python\n" in block and "not instructions" in block
    assert block.startswith("<remembered_context>") and block.endswith("</remembered_context>\n\n")


# -- property tests: any reply, any way of splitting it ---------------------------------------------

words = st.text(alphabet=st.characters(blacklist_categories=("Cs",)), max_size=40)
BLOCK_BODY = '"content": "Prefers Python"'
tags = st.sampled_from(["<memory>", "</memory>", "<mem", "<", "</", "memory>", "<MEMORY>", "\n", " ", "< memory >",
                        BLOCK, '["x"]', "{", "```", "<memories>", "</memories>", "<remembered_context>",
                        "</remembered_context>", '\n{"memories": ["y"]}', "\n```json\n", "'", "<replaces>",
                        "</replaces>", 'is {"memories": ["z"]}', '{"mem', "{ 'memories':", '"'])


def chunked(text: str, cuts: list[int]) -> str:
    parser = BlockParser()
    points = sorted({c % (len(text) + 1) for c in cuts})
    out, last = [], 0
    for point in points + [len(text)]:
        out.append(parser.feed(text[last:point]))
        last = point
    out.append(parser.finish())
    return "".join(out)


@settings(max_examples=400, deadline=None)
@given(prefix=words, cuts=st.lists(st.integers(min_value=0, max_value=400), max_size=12))
def test_split_anywhere_gives_the_same_clean_text_and_memories(prefix, cuts):
    assume("<memory>" not in prefix.lower() and "</memory>" not in prefix.lower())
    assume("memor" not in prefix.lower())  # an untagged block or a label line in the prefix belongs to the block
    reply = prefix + "\n\n" + BLOCK
    whole = parse_reply(reply)
    assert chunked(reply, cuts) == whole.text
    assert "<memory>" not in whole.text.lower() and "</memory>" not in whole.text.lower()
    assert whole.memories == [ExtractedMemory("Prefers Python", "preference")]
    assert whole.text == prefix.rstrip()  # the model's own words, kept exactly


@settings(max_examples=400, deadline=None)
@given(parts=st.lists(st.one_of(words, tags), max_size=12),
       cuts=st.lists(st.integers(min_value=0, max_value=300), max_size=12))
def test_no_block_ever_reaches_the_user(parts, cuts):
    reply = "".join(parts)
    shown = chunked(reply, cuts)
    assert shown == parse_reply(reply).text
    assert BLOCK_BODY not in shown
    for tag in _TAG.finditer(shown):  # a memory tag the user sees is followed by no JSON
        assert tag.group(1) or tag.group(2).lower() not in ("memory", "memories") or not shown[tag.end():].lstrip().startswith(("[", "{", '"', "```")), shown
    if "<" not in reply and "memories" not in reply.lower():
        assert shown == reply  # the model's own words are kept exactly
