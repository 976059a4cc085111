"""How each API family carries the instruction and the reply: OpenAI chat completions and Anthropic
messages. Pure functions over requests and responses, as the SDKs' objects or as their plain JSON dicts
(one code path for the client wrappers and a server); no I/O.

A dialect adds the instruction to a request, strips blocks from a whole response, and makes a
stream filter that strips them from streamed chunks or events as they pass.
"""

from __future__ import annotations

import copy
import functools
import logging
from dataclasses import dataclass
from typing import Any, Callable, Mapping, MutableMapping, Protocol

from ._inject import add_instruction, wants_json
from ._parser import ExtractedMemory
from ._protocol import INSTRUCTION, BlockParser, ParseResult, parse_reply
from ._structured import JSON_INSTRUCTION, JSON_REPLACES, JsonReplyParser, parse_json_reply, reply_schema

__all__ = ["Dialect", "StreamFilter", "OPENAI", "OPENAI_JSON", "ANTHROPIC", "ChunkFilter", "EventFilter"]

logger = logging.getLogger(__name__)


class StreamFilter(Protocol):
    def process(self, item: Any) -> list[Any]:
        """What to pass on for one item of the SDK's stream (usually the item itself, cleaned)."""
        ...

    def end(self) -> list[Any]:
        """Items to pass on after the SDK's last one: text still held back when a stream ends
        without saying so (no ``finish_reason``, no ``content_block_stop``)."""
        ...

    def result(self) -> ParseResult | None:
        """What the stream said (memories, blocks, the text the caller got), once it has ended or
        was closed; None when it carried no text (tool calls only)."""
        ...

    def text(self) -> str:
        """The reply's text as the caller got it (first choice, or every text block), for
        background extraction."""
        ...


class ReplyParser(Protocol):
    """What reads one reply as it streams: ``BlockParser`` (a block after the answer) or
    ``JsonReplyParser`` (the answer and memories as JSON)."""

    @property
    def memories(self) -> list[ExtractedMemory]: ...

    @property
    def problems(self) -> list[str]: ...

    @property
    def blocks(self) -> int: ...

    @property
    def repairs(self) -> int: ...

    @property
    def echoes(self) -> int: ...

    def feed(self, chunk: str) -> str: ...

    def finish(self) -> str: ...

    def result(self, text: str) -> ParseResult: ...


@dataclass(frozen=True)
class Dialect:
    name: str
    #: Adds the instruction to a request copy, given how many numbered notes it shows; False if it must not.
    instruct: Callable[[dict[str, Any], int], bool]
    clean: Callable[..., ParseResult | None]  # strips blocks (blocks=False: only echoes) in place; None: no text
    reply_text: Callable[[Any], str]  # the reply's text, as it is now
    stream_filter: Callable[..., StreamFilter]  # blocks=False strips only echoes of the remembered context
    #: Whether the model needs reminding at the end of the prompt (and earlier blocks shown again):
    #: not when the server holds the reply to a schema.
    reminds: bool = True


def _log(parsers: list[ReplyParser]) -> None:
    for parser in parsers:
        for problem in parser.problems:
            logger.warning("memory block: %s", problem)


def _get(item: Any, name: str) -> Any:
    """A field of an SDK object or of its JSON dict: the same code cleans both (the wrappers get the
    SDKs' objects, a server would get plain JSON)."""
    return item.get(name) if isinstance(item, Mapping) else getattr(item, name, None)


def _set(item: Any, name: str, value: Any) -> None:
    if isinstance(item, MutableMapping):
        item[name] = value
    else:
        setattr(item, name, value)


# -- OpenAI chat completions --------------------------------------------------------------------------


def _openai_instruct(request: dict[str, Any], notes: int = 0) -> bool:
    if wants_json(request):  # an appended block would break the JSON the caller asked for
        return False
    request["messages"] = add_instruction(request["messages"], INSTRUCTION)
    return True


def _openai_json_instruct(request: dict[str, Any], notes: int = 0) -> bool:
    """The reply asked for as JSON under the server's schema. A request with tools asks for the
    block instead (a schema would keep the model from calling them; ``JsonReplyParser`` reads a
    plain reply too), and one that asks for JSON of its own is not instructed."""
    if wants_json(request):
        return False
    if request.get("tools") or request.get("functions"):
        return _openai_instruct(request)
    request["messages"] = add_instruction(request["messages"], JSON_INSTRUCTION + (JSON_REPLACES if notes else ""))
    request["response_format"] = {"type": "json_schema", "json_schema": {
        "name": "answer_with_memories", "strict": True, "schema": reply_schema(notes)}}
    return True


def _openai_clean(response: Any, blocks: bool = True, structured: bool = False) -> ParseResult | None:
    """Strip every choice; the memories come from the first (``n > 1`` must not store alternatives).
    ``structured``: the replies were asked for as JSON; each becomes its answer's text."""
    first: ParseResult | None = None
    for choice in _get(response, "choices") or []:
        message: Any = _get(choice, "message")
        content = _get(message, "content")
        if not isinstance(content, str):
            continue  # tool calls, refusals: nothing to strip
        result = parse_json_reply(content) if structured and blocks else parse_reply(content, blocks)
        _set(message, "content", result.text)
        for problem in result.problems:
            logger.warning("memory block: %s", problem)
        if first is None:
            first = result
    return first


def _openai_text(response: Any) -> str:
    choices = _get(response, "choices") or []
    content = _get(_get(choices[0], "message"), "content") if choices else None
    return content if isinstance(content, str) else ""


class _Parsers:
    """What both stream filters keep: a parser per choice or block, and the text shown."""

    def __init__(self, blocks: bool = True, structured: bool = False) -> None:
        self._blocks = blocks
        self._structured = structured and blocks  # replies asked for as JSON (``_structured.py``)
        self._parsers: dict[int, ReplyParser] = {}
        self._finished: set[int] = set()
        self._shown: list[str] = []  # the text the caller got (first choice, or every text block)
        self._last: dict[int, Any] = {}  # the last item that carried text for each parser

    def _finish_all(self) -> list[ReplyParser]:
        """Close every parser still open on what arrived, and log what they met."""
        for index, parser in self._parsers.items():
            if index not in self._finished:
                self._finished.add(index)
                parser.finish()
        _log(list(self._parsers.values()))
        return list(self._parsers.values())

    def text(self) -> str:
        self._finish_all()
        return "".join(self._shown)

    def end(self) -> list[Any]:
        extra = []
        for index, parser in self._parsers.items():
            if index not in self._finished:
                self._finished.add(index)
                rest = parser.finish()
                if rest and index in self._last:
                    extra.append(self._carrying(self._last[index], index, rest))
                    self._saw(index, rest)
        return extra

    def _saw(self, index: int, text: str) -> None:
        """Text shown to the caller for ``index``; which of it makes the reply's text is the filter's rule."""
        raise NotImplementedError

    def _carrying(self, item: Any, index: int, text: str) -> Any:
        """A copy of ``item`` that carries ``text`` as the next piece of ``index``'s text."""
        raise NotImplementedError

    def _parser(self, index: int) -> ReplyParser:
        parser = self._parsers.get(index)
        if parser is None:
            parser = self._parsers[index] = JsonReplyParser() if self._structured else BlockParser(self._blocks)
        return parser


class ChunkFilter(_Parsers):
    """Chat completion chunks: one parser per choice, held-back text released on ``finish_reason``."""

    def process(self, chunk: Any) -> list[Any]:
        for choice in _get(chunk, "choices") or []:
            index = _get(choice, "index") or 0
            delta = _get(choice, "delta")
            content = _get(delta, "content")
            parser = self._parser(index)
            text = parser.feed(content) if isinstance(content, str) else ""
            if isinstance(content, str):
                self._last[index] = chunk
            if _get(choice, "finish_reason") is not None and index not in self._finished:
                self._finished.add(index)
                text += parser.finish()
            if delta is not None and (isinstance(content, str) or text):
                _set(delta, "content", text)
                self._saw(index, text)
        return [chunk]

    def _saw(self, index: int, text: str) -> None:
        if index == 0:
            self._shown.append(text)

    def _carrying(self, item: Any, index: int, text: str) -> Any:
        extra = copy.deepcopy(item)
        _set(extra, "choices", [c for c in _get(extra, "choices") if (_get(c, "index") or 0) == index])
        for choice in _get(extra, "choices"):
            _set(_get(choice, "delta"), "content", text)
            _set(choice, "finish_reason", None)
        if _get(extra, "usage") is not None:
            _set(extra, "usage", None)
        return extra

    def result(self) -> ParseResult | None:
        self._finish_all()
        first = self._parsers.get(0)
        return first.result("".join(self._shown)) if first else None


OPENAI = Dialect("openai", _openai_instruct, _openai_clean, _openai_text, ChunkFilter)
#: OpenAI-compatible servers with structured output (``with_fast_memory(..., structured_output=True)``).
OPENAI_JSON = Dialect("openai-json", _openai_json_instruct, functools.partial(_openai_clean, structured=True),
                      _openai_text, functools.partial(ChunkFilter, structured=True), reminds=False)


# -- Anthropic messages -------------------------------------------------------------------------------


def _anthropic_instruct(request: dict[str, Any], notes: int = 0) -> bool:
    system = request.get("system")
    if isinstance(system, list):
        request["system"] = [*system, {"type": "text", "text": INSTRUCTION}]
    else:
        request["system"] = f"{system}\n\n{INSTRUCTION}" if system else INSTRUCTION
    return True


def _anthropic_clean(message: Any, blocks: bool = True) -> ParseResult | None:
    """One parser across the text blocks in order; tool-use blocks are left alone."""
    parser = BlockParser(blocks)
    texts = _text_blocks(message)
    for block in texts:
        _set(block, "text", parser.feed(_get(block, "text")))
    if not texts:
        return None
    _set(texts[-1], "text", _get(texts[-1], "text") + parser.finish())
    _log([parser])
    return parser.result("".join(_get(block, "text") for block in texts))


def _text_blocks(message: Any) -> list[Any]:
    return [block for block in _get(message, "content") or []
            if _get(block, "type") == "text" and isinstance(_get(block, "text"), str)]


def _anthropic_text(message: Any) -> str:
    return "".join(_get(block, "text") for block in _text_blocks(message))


class EventFilter(_Parsers):
    """Messages API stream events: ``text_delta`` text is stripped per content block; what a block
    held back is released, as one more ``text_delta`` event, just before its ``content_block_stop``."""

    def process(self, event: Any) -> list[Any]:
        kind = _get(event, "type")
        index = _get(event, "index") or 0
        delta: Any = _get(event, "delta")
        is_text = kind == "content_block_delta" and _get(delta, "type") == "text_delta"
        if is_text:
            shown = self._parser(index).feed(_get(delta, "text"))
            _set(delta, "text", shown)
            self._saw(index, shown)
            self._last[index] = event
        elif kind == "content_block_stop" and index in self._parsers and index not in self._finished:
            self._finished.add(index)
            rest = self._parsers[index].finish()
            if rest:
                self._saw(index, rest)
                return [self._carrying(self._last[index], index, rest), event]
        return [event]

    def _saw(self, index: int, text: str) -> None:
        self._shown.append(text)

    def _carrying(self, item: Any, index: int, text: str) -> Any:
        extra = copy.deepcopy(item)
        _set(_get(extra, "delta"), "text", text)
        return extra

    def result(self) -> ParseResult | None:
        parsers = self._finish_all()
        if not parsers:
            return None
        merged = parsers[0].result("".join(self._shown))
        for parser in parsers[1:]:
            merged.memories += parser.memories
            merged.problems += parser.problems
            merged.blocks += parser.blocks
            merged.repairs += parser.repairs
            merged.echoes += parser.echoes
        return merged


ANTHROPIC = Dialect("anthropic", _anthropic_instruct, _anthropic_clean, _anthropic_text, EventFilter)
