"""The reply as JSON, for servers with structured output: ``{"memories": [...], "answer": "..."}``.

A small model often forgets the ``<memory>`` block at the end of a free-text reply (about half the
turns of Qwen2.5-Coder-1.5B, bench/RESULTS.md "A real model"). A server that constrains output to
a JSON schema (``response_format`` ``json_schema``: OpenAI, vLLM, llama.cpp) cannot forget it: the
schema makes the answer and the memories two required fields. ``with_fast_memory(...,
structured_output=True)`` asks for that; the caller still gets plain text, the answer alone.

The memories come first. Asked for the answer first, the 1.5B model wrote ``"memories": []`` on
most turns that stated a fact, and its answers restated the user's words, which then made the
fallback extraction's notes look like the reply's (bench/RESULTS.md, "A real model", session 12).
Noting the facts first is the extraction call's task, which it does well; the answer streams once
they are written.

``JsonReplyParser`` reads such a reply incrementally, as ``BlockParser`` reads a block: ``feed``
returns the answer's text decoded from its JSON string as it arrives (escapes held back until
whole), ``finish`` the rest; the memories are read from the whole JSON at the end. The answer's text
goes on through a ``BlockParser``, so an echoed context block or a stray ``<memory>`` block inside
it is removed as in a plain reply. A reply that does not start with ``{`` (a server that ignored
the schema) is read as a plain reply. No I/O.
"""

from __future__ import annotations

import json
import re
from typing import Any

from ._parser import BlockParser, ExtractedMemory, ParseResult, parse_block

__all__ = ["JSON_INSTRUCTION", "JSON_REPLACES", "JsonReplyParser", "parse_json_reply", "reply_schema"]

JSON_INSTRUCTION = (
    'Reply in JSON. First "memories": the new facts the user just stated about themselves, each '
    '{"content": a short sentence, "category": "preference", "fact" or "context"}; [] if there are none. '
    'Then "answer": your full reply to the user, as you would write it to them.'
)
#: Added when notes were shown: they are numbered, and the schema then allows ``replaces``.
JSON_REPLACES = ' If a fact changes a numbered note, add "replaces": that number.'


def reply_schema(notes: int) -> dict[str, Any]:
    """The JSON schema of a reply, in the form OpenAI's strict mode accepts (every field required,
    none other allowed). ``replaces`` is there only when ``notes`` numbered notes were shown, as
    one of their numbers or null: offered with none shown, the 1.5B model filled it in anyway."""
    item: dict[str, Any] = {
        "type": "object",
        "properties": {"content": {"type": "string"},
                       "category": {"type": "string", "enum": ["preference", "fact", "context"]}},
        "required": ["content", "category"], "additionalProperties": False}
    if notes:
        item["properties"]["replaces"] = {"enum": [None, *range(1, notes + 1)]}
        item["required"].append("replaces")
    return {"type": "object",
            "properties": {"memories": {"type": "array", "items": item}, "answer": {"type": "string"}},
            "required": ["memories", "answer"], "additionalProperties": False}


_ANSWER = re.compile(r'"answer"\s*:\s*"')
_SPECIAL = re.compile(r'["\\]')
_ESCAPES = {"n": "\n", "t": "\t", "r": "\r", "b": "\b", "f": "\f", "/": "/", "\\": "\\", '"': '"'}
_HEX = re.compile(r"[0-9a-fA-F]{4}")


def _decode(text: str) -> tuple[str, int, bool]:
    """The characters of a JSON string's inside at the start of ``text``: (decoded, how many
    characters of ``text`` were used, whether its closing quote was reached). An escape whose
    characters have not all arrived is left unused."""
    out: list[str] = []
    i = 0
    while True:
        special = _SPECIAL.search(text, i)
        if special is None:
            out.append(text[i:])
            return "".join(out), len(text), False
        out.append(text[i:special.start()])
        i = special.start()
        if text[i] == '"':
            return "".join(out), i + 1, True
        if i + 1 >= len(text):
            return "".join(out), i, False
        kind = text[i + 1]
        if kind != "u":
            out.append(_ESCAPES.get(kind, kind))
            i += 2
            continue
        if len(text) < i + 6:
            return "".join(out), i, False
        if not _HEX.fullmatch(text, i + 2, i + 6):
            out.append(text[i + 2:i + 6])  # a broken escape: its characters, as a lenient reader would
            i += 6
            continue
        code = int(text[i + 2:i + 6], 16)
        if 0xD800 <= code < 0xDC00:  # the first half of a pair: wait for the second
            if len(text) < i + 12:
                return "".join(out), i, False
            low = text[i + 8:i + 12] if text[i + 6:i + 8] == "\\u" and _HEX.fullmatch(text, i + 8, i + 12) else ""
            if low and 0xDC00 <= int(low, 16) < 0xE000:
                out.append(chr(0x10000 + ((code - 0xD800) << 10) + (int(low, 16) - 0xDC00)))
                i += 12
                continue
        out.append(chr(code) if not 0xD800 <= code < 0xE000 else "\ufffd")
        i += 6


def _loads(text: str) -> Any:
    try:
        return json.loads(text)
    except ValueError:
        return None


class JsonReplyParser:
    """Incremental reader of a structured reply, with ``BlockParser``'s interface (``feed``,
    ``finish``, ``result`` and its counts); see the module's docstring."""

    def __init__(self) -> None:
        self._inner = BlockParser()  # the answer's text, or a plain reply, goes through it
        self._raw: list[str] = []  # everything that arrived
        self._state = "start"  # start, head (before the answer's text), answer, tail, plain
        self._pending = ""
        self._head = ""  # what came before the answer's text
        self._memories: list[ExtractedMemory] = []
        self._problems: list[str] = []
        self._blocks = 0

    @property
    def memories(self) -> list[ExtractedMemory]:
        return self._memories + self._inner.memories

    @property
    def problems(self) -> list[str]:
        return self._problems + self._inner.problems

    @property
    def blocks(self) -> int:
        return self._blocks + self._inner.blocks

    @property
    def repairs(self) -> int:
        return self._inner.repairs

    @property
    def echoes(self) -> int:
        return self._inner.echoes

    def feed(self, chunk: str) -> str:
        self._raw.append(chunk)
        if self._state == "plain":
            return self._inner.feed(chunk)
        self._pending += chunk
        if self._state == "start":
            if not self._pending.strip():
                return ""
            if not self._pending.lstrip().startswith("{"):
                self._state = "plain"
                text, self._pending = self._pending, ""
                return self._inner.feed(text)
            self._state = "head"
        if self._state == "head":
            opening = _ANSWER.search(self._pending)
            if opening is None:
                return ""
            self._head = self._pending[:opening.start()]  # the memories, when they came first
            self._pending = self._pending[opening.end():]
            self._state = "answer"
        if self._state == "answer":
            text, used, closed = _decode(self._pending)
            self._pending = self._pending[used:]
            if closed:
                self._state, self._pending = "tail", ""
            return self._inner.feed(text)
        return ""

    def finish(self) -> str:
        """The text still held back; the memories are read from the whole reply here."""
        raw = "".join(self._raw)
        if self._state in ("plain", "start"):
            return self._inner.finish()
        if self._state == "answer":  # cut off (the token limit): memories written before the answer still count
            self._problems.append("structured reply was cut off inside its answer")
            self._read(_loads(self._head.rstrip().rstrip(",") + "}"))
            return self._inner.feed(_decode(self._pending)[0]) + self._inner.finish()
        data = _loads(raw)
        if self._state == "head" and not (isinstance(data, dict) and "memories" in data):
            self._state = "plain"  # JSON, or text in braces, that is not a structured reply: the answer's text
            return self._inner.feed(raw) + self._inner.finish()
        if not isinstance(data, dict):
            self._problems.append("structured reply is not valid JSON after its answer; no memories read")
        elif "memories" not in data:
            self._problems.append("structured reply has no memories field")
        else:
            self._read(data)
        return self._inner.finish()

    def _read(self, data: Any) -> None:
        """The memories of a parsed reply (or of the part before its answer), if it has them."""
        if isinstance(data, dict) and "memories" in data:
            self._blocks += 1
            memories, problems = parse_block(json.dumps({"memories": data["memories"]}))
            self._memories += memories
            self._problems += problems

    def result(self, text: str) -> ParseResult:
        """What this parser found, with ``text``, the reply as the caller got it."""
        return ParseResult(text, self.memories, self.problems, self.blocks, self.repairs, self.echoes)


def parse_json_reply(text: str) -> ParseResult:
    """A whole structured reply: its answer as the text, and its memories."""
    parser = JsonReplyParser()
    return parser.result(parser.feed(text) + parser.finish())
