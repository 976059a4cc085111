"""Reading a model's reply: memory blocks found, parsed and removed, incrementally. No I/O.

A block is ``<memory>`` + JSON + ``</memory>``. Real models also write near misses, which are
recognised, stripped and parsed too (and counted as repairs): ``<memories>`` tags or a mismatched
closing tag, an untagged ``{"memories": ...}`` object (fenced or not) on a line of its own,
single-quoted (Python-style) JSON. A model that echoes the ``<remembered_context>`` block it was
shown has the echo removed, unparsed. ``BlockParser`` does all of it over any split of the reply,
so plain and streamed replies are handled by the same code; what it could not use is reported in
``problems``, never raised.
"""

from __future__ import annotations

import ast
import json
import re
from dataclasses import dataclass, field
from typing import Any, Callable, Iterator

from ._models import CATEGORIES, MAX_TEXT_CHARS, is_encodable

__all__ = ["ExtractedMemory", "ParseResult", "BlockParser", "parse_reply", "parse_block", "CATEGORY_SYNONYMS"]

MAX_BLOCK_CHARS = 20_000
MAX_MEMORIES_PER_BLOCK = 20

#: What models write for a category, folded to ours (case is ignored too).
CATEGORY_SYNONYMS = {
    "preference": "preference", "preferences": "preference", "pref": "preference", "like": "preference",
    "likes": "preference", "dislike": "preference", "dislikes": "preference", "taste": "preference",
    "fact": "fact", "facts": "fact", "identity": "fact", "personal": "fact", "profile": "fact", "bio": "fact",
    "constraint": "fact", "health": "fact", "context": "context", "contexts": "context", "goal": "context",
    "goals": "context", "task": "context", "tasks": "context", "project": "context", "plan": "context",
    "plans": "context", "ongoing": "context", "current": "context", "event": "context",
}
#: Template and placeholder text a model may copy from the instruction instead of writing a fact.
_PLACEHOLDER = re.compile(
    r"^\W*$|^<[^>]*>$|^\.\.\.|^(content|text|memory|fact|facts|preference|context|none|null|n/?a|string|"
    r"example|todo|tbd|user|the user|nothing( new)?( to remember)?)\W*$|\bpreference\|fact\b|"
    r"^has a dog named rex\W*$",  # the instruction's example
    re.IGNORECASE)
#: Decorations copied from the lines of remembered context: a leading ``[1]``, a date, a category.
_COPIED = re.compile(r"^\s*(?:-\s*)?(?:\[\d+\]\s*)?(?:\d{4}-\d\d-\d\d\s*[,:;·-]?\s*)?"
                     r"(?:(?:preference|fact|context)\s*[:·-]\s*)?|\s*[(\[](?:said\s*)?\d{4}-\d\d-\d\d[)\]]\s*$",
                     re.IGNORECASE)
_FENCE = re.compile(r"^```[a-zA-Z]*\s*|\s*```$")
_LEADING_TAGS = re.compile(r"^(?:\s*<\s*memor(?:y|ies)\s*>)+", re.IGNORECASE)  # a repeated opening tag

#: Blocks removed unparsed: the context a model repeats, and a stray ``<replaces>1</replaces>`` a
#: model writes after its block (removed only when it closes within ``SHORT_ECHO_CHARS``).
_ECHOES = ("remembered_context", "replaces")
_NAMES = ("memory", "memories", *_ECHOES)
SHORT_ECHO_CHARS = 120
#: Tags are matched case-insensitively, with white space allowed inside (``<memory >``, ``</ memory>``).
_TAG = re.compile(r"<\s*(/?)\s*(" + "|".join(_NAMES) + r")\s*>", re.IGNORECASE)
_MEMORY_CLOSE = re.compile(r"<\s*/\s*memor(?:y|ies)\s*>", re.IGNORECASE)
_ECHO_CLOSE = {name: re.compile(rf"<\s*/\s*{name}\s*>", re.IGNORECASE) for name in _ECHOES}
_PARTIAL = re.compile(r"<\s*/?\s*([A-Za-z_]*)(\s*)")
#: A reply that ends inside an opening memory tag (at least "<mem"): the tag was cut off.
_CUT_TAG = re.compile(r"\s*<\s*mem(?:o(?:r(?:y|i(?:e(?:s)?)?)?)?)?\s*$", re.IGNORECASE)
MAX_TAG_CHARS = 32
#: An untagged block: a line that starts a JSON object whose first key is "memories", perhaps after
#: a code fence and a broken tag or label on the same line (```` ```memory>{ ````, ``<memory {``,
#: ``Memory: {``); a ``</memory>`` after its JSON is removed with it.
_BARE = re.compile(r"[ \t]*(?:```[a-zA-Z]*[ \t]*\n?[ \t]*)?"
                   r"(?:<[ \t]*memor(?:y|ies)[ \t]*|memor(?:y|ies)(?:[ \t]+block)?[ \t]*>?[ \t]*:?[ \t]*"
                   r"|<[ \t]*(?!(?:memory|memories|remembered_context|replaces)[ \t]*>)"
                   r"(?P<other>[A-Za-z_][A-Za-z_-]{0,20})[ \t]*>[ \t]*)?"
                   r"(?=\{\s*[\"']?memories[\"']?\s*:)", re.IGNORECASE)
#: An untagged block in the middle of a line ("... the memory block is {"memories": [...]}"): only
#: with its key quoted, as JSON or a Python literal (``{memories:`` is common in code).
_MID_BARE = re.compile(r"\{\s*[\"']memories[\"']\s*:")
_MID_FORMS = ('{"memories":', "{'memories':")
#: Another tag around an untagged block (``<answer>{"memories": []}</answer>``), its name and a
#: part of it as a line may still grow into it.
_OTHER_TAG = re.compile(r"<[a-z_][a-z_-]{0,20}>")
_OTHER_TAG_PART = re.compile(r"<[a-z_][a-z_-]{0,20}|<")
_FENCE_LINE = re.compile(r"[ \t]*```[a-zA-Z]*[ \t]*")
#: A sentence about the block instead of the block ("The <memory> block should remain empty as
#: there is no new information."), which small models write: removed from the reply, with the short
#: word before the tag. Such a word at the end of the text so far is held back until what follows
#: it shows whether it opens that sentence.
_TALK = re.compile(r"\s*block\b", re.IGNORECASE)
_TALK_OPENERS = ("the", "your", "a", "an", "this", "my", "no")
_LAST_WORD = re.compile(r"(?:^|(?<=\s))([A-Za-z]+)(\s*)$")
_SENTENCE_END = re.compile(r"[.!?](?=\s|$)|\n")
MAX_TALK_CHARS = 400


def _opener_from(text: str, end: int) -> int:
    """Where a word that may open a sentence about the block ends ``text[:end]`` (a word still
    being written counts if it may grow into one), else ``end``."""
    last = _LAST_WORD.search(text, max(0, end - MAX_TAG_CHARS), end)  # an opener is a short word
    if last is None:
        return end
    word = last.group(1).lower()
    if word in _TALK_OPENERS or (not last.group(2) and any(o.startswith(word) for o in _TALK_OPENERS)):
        return last.start()
    return end


#: A line that only announces the block ("Memory block:", "**Memories:**"): removed with it.
_LABEL = r"[ \t]*[*_#]*[ \t]*(?:memory(?:[ \t]+block)?|memories)[ \t]*[*_]*[ \t]*:?[ \t]*[*_]*[ \t]*"
_LABEL_LINE = re.compile(_LABEL, re.IGNORECASE)
_TRAILING_LABEL = re.compile(r"(?:^|\n)" + _LABEL + r"$", re.IGNORECASE)
_LABEL_FORMS = ("memoryblock:", "memories:")
_BARE_FORMS = tuple(f"{start}{quote}memories{quote}:" for start in ("{", "```json{", "```{", "```memory>{", "memory>{",
                                                                   "<memory{", "memory:{")
                    for quote in ("\"", "'", ""))


@dataclass(frozen=True)
class ExtractedMemory:
    text: str
    category: str = "fact"
    #: What the model says this memory corrects: a number of the remembered context (``"2"``), a
    #: memory reference (``m1a2b3c``), or the old text. Resolved by whoever showed the context.
    replaces: str | None = None


@dataclass
class ParseResult:
    text: str
    memories: list[ExtractedMemory] = field(default_factory=list)
    problems: list[str] = field(default_factory=list)
    blocks: int = 0
    repairs: int = 0
    echoes: int = 0


def parse_block(body: str) -> tuple[list[ExtractedMemory], list[str]]:
    """The memories in the inside of one block, and what was wrong with it."""
    memories, problems, _ = _parse_block(body)
    return memories, problems


def _load(body: str) -> tuple[Any, bool]:
    """JSON, or else a Python literal (single quotes), either with its keys unquoted as in
    JavaScript (``{memories: [{content: "..."}]}``): the value and whether it needed a repair."""
    try:
        return json.loads(body), False
    except (ValueError, RecursionError) as exc:  # also: nesting too deep, an integer too long
        error = exc
    quoted = _quote_keys(body)
    attempts: tuple[tuple[Callable[[str], Any], str], ...] = (
        (ast.literal_eval, body), (json.loads, quoted), (ast.literal_eval, quoted))
    for attempt, text in attempts:
        try:
            return attempt(text), True
        except (ValueError, SyntaxError, TypeError, RecursionError, MemoryError):
            continue
    raise ValueError(str(error)[:120])


_KEY = re.compile(r"[A-Za-z_][A-Za-z0-9_]*")


def _quote_keys(body: str) -> str:
    """``body`` with each bare key (a name after ``{`` or ``,`` and before ``:``, outside strings)
    in double quotes; text inside strings is never touched."""
    keys: list[tuple[int, int]] = []
    expect_key = False
    for i, char in _unquoted(body):
        if char in "{,":
            expect_key = True
        elif expect_key and not char.isspace():
            expect_key = False
            key = _KEY.match(body, i)
            if key is not None and body[key.end():].lstrip().startswith(":"):
                keys.append(key.span())
    out, last = [], 0
    for start, end in keys:
        out += [body[last:start], '"', body[start:end], '"']
        last = end
    return "".join(out) + body[last:]


def _unquoted(text: str) -> Iterator[tuple[int, str]]:
    """The characters of ``text`` outside its strings (in JSON's or Python's quotes), with their
    positions: a quote that opens a string is given, what it holds and its closing quote are not."""
    quote, escaped = "", False
    for i, char in enumerate(text):
        if quote:
            if escaped:
                escaped = False
            elif char == "\\":
                escaped = True
            elif char == quote:
                quote = ""
            continue
        if char in "\"'":
            quote = char
        yield i, char


def _parse_block(body: str) -> tuple[list[ExtractedMemory], list[str], bool]:
    problems: list[str] = []
    body = _FENCE.sub("", _LEADING_TAGS.sub("", body).strip()).strip()
    if not body:
        return [], problems, False
    if len(body) > MAX_BLOCK_CHARS:
        return [], [f"memory block of {len(body)} characters exceeds {MAX_BLOCK_CHARS}; ignored"], False
    try:
        data, repaired = _load(body)
    except ValueError as exc:
        return [], [f"memory block is not valid JSON ({exc}); ignored"], False
    if isinstance(data, dict):
        data = data.get("memories", [])
    if isinstance(data, (str, dict)):
        data = [data]
    if not isinstance(data, list):
        return [], [f"memory block holds {type(data).__name__}, not a list of memories; ignored"], repaired
    memories = [m for m in (_item(item, problems) for item in data[:MAX_MEMORIES_PER_BLOCK]) if m is not None]
    if len(data) > MAX_MEMORIES_PER_BLOCK:
        problems.append(f"memory block had {len(data)} items; kept the first {MAX_MEMORIES_PER_BLOCK}")
    return memories, problems, repaired


def _item(item: Any, problems: list[str]) -> ExtractedMemory | None:
    category: Any = "fact"  # a plain string carries no category; fact is its meaning
    replaces: Any = None
    text: Any = item
    if isinstance(item, dict):
        text = item.get("content", item.get("text", item.get("memory")))
        category = item.get("category", "fact")
        replaces = item.get("replaces")
    if not isinstance(text, str) or not text.strip():
        problems.append(f"memory item without text skipped: {str(item)[:80]!r}")
        return None
    if len(text.strip()) > MAX_TEXT_CHARS:
        problems.append(f"memory item of {len(text)} characters skipped")
        return None
    if not is_encodable(text):
        problems.append("memory item holding a lone surrogate (not valid Unicode text) skipped")
        return None
    text = _COPIED.sub("", text).strip()  # decorations copied from the remembered context
    if _PLACEHOLDER.search(text):
        problems.append(f"placeholder memory {text[:40]!r} skipped")
        return None
    folded = _fold(category)
    if folded is None:
        problems.append(f"memory category {category!r} is not one of {CATEGORIES}; stored as fact")
    if isinstance(replaces, int) and not isinstance(replaces, bool):
        replaces = str(replaces)
    if replaces is not None and not (isinstance(replaces, str) and 0 < len(replaces.strip()) <= MAX_TEXT_CHARS):
        problems.append(f"memory item's replaces {str(replaces)[:40]!r} is not a reference; ignored")
        replaces = None
    return ExtractedMemory(text, folded or "fact", replaces.strip() if replaces else None)


def _fold(category: Any) -> str | None:
    """Our category for what a model wrote: any case, a synonym, or the first known word of a list
    copied from the template (``"context|fact"``)."""
    if not isinstance(category, str):
        return None
    for word in [category.strip(), *re.split(r"[^A-Za-z]+", category)]:
        folded = CATEGORY_SYNONYMS.get(word.lower())
        if folded:
            return folded
    return None


def _could_be_tag(text: str) -> bool:
    """Whether ``text`` (from a ``<``) could still grow into one of our tags."""
    partial = _PARTIAL.fullmatch(text) if len(text) <= MAX_TAG_CHARS else None
    if partial is None:
        return False
    word = partial.group(1).lower()
    return word in _NAMES if partial.group(2) else any(name.startswith(word) for name in _NAMES)


def _could_be_bare(line: str) -> bool:
    """Whether a line could still grow into the start of an untagged block, or a label before one."""
    compact = re.sub(r"\s", "", line).lower()
    label = compact.strip("*_#")
    other = _OTHER_TAG.match(compact)
    if other is not None:
        compact = compact[other.end():]
    elif _OTHER_TAG_PART.fullmatch(compact):
        return len(line) <= 48
    return len(line) <= 48 and (any(form.startswith(compact) for form in _BARE_FORMS)
                                or any(form.startswith(label) for form in _LABEL_FORMS))


def _unlabelled(text: str) -> str:
    """``text`` without a last line that only announces a memory block."""
    return _TRAILING_LABEL.sub("", text.rstrip()).rstrip()


def _hold_from(text: str, line_start: bool) -> int:
    """Where a suffix of ``text`` that could still grow into a tag or an untagged block begins."""
    start = max(0, len(text) - MAX_TAG_CHARS)
    tag = next((i for i in range(start, len(text)) if text[i] == "<" and _could_be_tag(text[i:])), len(text))
    line = text.rfind("\n") + 1
    tag = _opener_from(text, tag)
    brace = text.rfind("{", max(0, len(text) - len(_MID_FORMS[0]) - 4))
    if brace >= 0 and brace < tag:
        compact = re.sub(r"\s", "", text[brace:])
        tag = brace if any(form.startswith(compact) for form in _MID_FORMS) else tag
    if line == 0 and not line_start:
        return tag
    if not (_could_be_bare(text[line:]) or tag == line):
        return tag
    return min(tag, _announced_from(text, line, line_start))


def _announced_from(text: str, line: int, line_start: bool) -> int:
    """The start of the fence and label lines just before ``line`` (which may open a block), else
    ``line``; blank lines between them belong to the block too (as ``_unlabelled`` has it)."""
    found, kept = 0, line
    while found < 2 and line:  # a fence, and a label before it, on the lines before may belong to the block
        previous = text.rfind("\n", 0, line - 1) + 1
        if not (previous or line_start):
            break
        if not text[previous:line - 1].strip():
            line = previous  # a blank line: look further up
            continue
        if not (_FENCE_LINE.fullmatch(text, previous, line - 1) or _LABEL_LINE.fullmatch(text, previous, line - 1)):
            break
        found, line = found + 1, previous
        kept = line
    return kept


def _json_end(text: str) -> int | None:
    """The end of the JSON object (or Python dict) at the start of ``text``, quotes respected."""
    depth = 0
    for i, char in _unquoted(text):
        if char in "{[":
            depth += 1
        elif char in "}]":
            depth -= 1
            if depth == 0:
                return i + 1
    return None


def _opens(name: str, after: str) -> bool | None:
    """Whether an opening tag ``name`` followed by ``after`` starts a block (None: too short to tell)."""
    if name == "remembered_context":
        return True
    if name == "replaces":
        if _ECHO_CLOSE[name].search(after[:SHORT_ECHO_CHARS]):
            return True
        return None if len(after) < SHORT_ECHO_CHARS else False
    return _opens_block(after)


def _opens_block(after: str) -> bool | None:
    """Whether a ``<memory>`` tag followed by ``after`` starts a block: only a tag followed by JSON
    (or a code fence, or its closing tag) does, so an answer that mentions ``<memory>`` keeps its
    text. None while ``after`` is too short to tell."""
    body = after.lstrip()
    if not body:
        return None
    if body[0] in "[{\"'" or body.startswith("```") or _MEMORY_CLOSE.match(body):
        return True
    again = _TAG.match(body)
    if again is not None and not again.group(1) and again.group(2).lower() not in _ECHOES:
        return _opens_block(body[again.end():])  # "<memory><memory>{...": as the second one does
    if "```".startswith(body) or _could_be_tag(body) or "block".startswith(body.lower()):
        return None
    return False


class BlockParser:
    """Incremental stripper: ``feed`` returns text that is safe to show now, ``finish`` the rest.

    Only what could still be the start of a block (a partial tag, an opening tag whose next
    characters are not here yet, a line that may open an untagged block, with the white space
    before them) is held back, so text reaches the caller without visible delay. A ``<memory>`` tag
    that does not start a block, and a closing tag outside one, are the answer's own text.
    ``blocks=False`` removes only echoes of what the model was shown (a model that was not asked
    for a block may still repeat the remembered context): memory blocks are then the answer's text.
    """

    def __init__(self, blocks: bool = True) -> None:
        self._blocks = blocks
        self.memories: list[ExtractedMemory] = []
        self.problems: list[str] = []
        self.blocks = 0
        self.repairs = 0  # near-miss blocks recognised
        self.echoes = 0  # remembered-context blocks the model repeated, removed
        self._pending = ""  # text not yet shown (outside) or the block body so far (inside)
        self._kind: str | None = None  # inside: "memory", "echo" or "bare"
        self._echo = ""  # the tag of the echo block we are in
        self._final = False  # the reply has ended: what is still undecided is the answer's text
        self._fenced = False  # the untagged block began with a code fence, to be closed after it
        self._closer = _MEMORY_CLOSE  # the closing tag an untagged block's JSON may be followed by
        self._oversized = False
        self._tail = ""  # the last characters shown, which may meet the text after a removed block
        self._after_cut = False

    def feed(self, chunk: str) -> str:
        self._pending += chunk
        shown: list[str] = []
        while self._step(shown):
            pass
        return "".join(shown)

    def _step(self, shown: list[str]) -> bool:
        """One move of the scanner; False when it needs more text."""
        if self._kind is not None:
            return self._inside()
        if self._after_cut:
            joined = self._joined_tag()
            if joined is not False:
                return bool(joined)  # None: the text after a removed block might still complete a tag
        line_start = not self._tail or self._tail.endswith("\n")
        tag = _TAG.search(self._pending)
        bare = self._bare(line_start) if self._blocks else None
        if bare is not None and (tag is None or bare[0] <= tag.start()):
            self._show(shown, _unlabelled(self._pending[:bare[0]]))
            self._fenced = "`" in self._pending[bare[0]:bare[1]]
            self._closer = bare[2]
            self._pending = self._pending[bare[1]:]
            self._enter("bare")
            return True
        if tag is None:
            visible = self._pending[:_hold_from(self._pending, line_start)].rstrip()  # and the white space before
            self._show(shown, visible)
            self._pending = self._pending[len(visible):]
            return False
        closing, name = bool(tag.group(1)), tag.group(2).lower()
        if closing:
            self._show(shown, self._pending[:tag.end()])  # a closing tag outside a block: the answer's text
            self._pending = self._pending[tag.end():]
            return True
        opens = self._opens(name, self._pending[tag.end():])
        if opens is None and self._final:
            if self._blocks and name in ("memory", "memories") and not self._pending[tag.end():].strip():
                # The reply ended right after the tag: a block cut off (at the token limit) before its body.
                self._show(shown, _unlabelled(self._pending[:tag.start()]))
                self.problems.append("memory block was cut off before its content; stripped")
                self._pending = ""
                return False
            opens = False  # the reply ended before the tag could open anything: the answer's text
        if opens is None:  # wait for what follows the tag (and keep a label line before it)
            line = self._pending.rfind("\n", 0, tag.start()) + 1
            keep = tag.start() if self._pending[line:tag.start()].strip() else _announced_from(
                self._pending, line, line_start)
            visible = self._pending[:_opener_from(self._pending, keep)].rstrip()
            self._show(shown, visible)
            self._pending = self._pending[len(visible):]
            return False
        if not opens and self._blocks and name != "replaces" and _TALK.match(self._pending, tag.end()):
            return self._talk(shown, tag)
        if not opens:
            self._show(shown, self._pending[:tag.end()])  # the answer's own text
            self._pending = self._pending[tag.end():]
            return True
        self._show(shown, _unlabelled(self._pending[:tag.start()]))
        self._pending = self._pending[tag.end():]
        self._enter(name)
        if name == "memories":
            self.repairs += 1
        return True

    def _talk(self, shown: list[str], tag: re.Match[str]) -> bool:
        """Removes a sentence about the block, once it has ended (see ``_TALK``)."""
        end = _SENTENCE_END.search(self._pending, tag.end())
        if end is None and not self._final and len(self._pending) - tag.end() < MAX_TALK_CHARS:
            return False
        stop = end.end() if end is not None else min(len(self._pending), tag.end() + MAX_TALK_CHARS)
        self._show(shown, self._pending[:_opener_from(self._pending, tag.start())].rstrip())
        self.problems.append("the reply talked about its memory block instead of writing one; removed")
        self._pending = self._pending[stop:]
        return True

    def _opens(self, name: str, after: str) -> bool | None:
        return _opens(name, after) if self._blocks or name in _ECHOES else False

    def _bare(self, line_start: bool) -> tuple[int, int, re.Pattern[str]] | None:
        """Where an untagged block opens in the pending text: its line's start and its ``{``, and
        the closing tag that may follow its JSON (``</memory>``, or that of another tag before it)."""
        mid = _MID_BARE.search(self._pending)
        starts = ([0] if line_start else []) + [m.end() for m in re.finditer("\n", self._pending)]
        for start in starts:
            if mid is not None and mid.start() < start:
                break
            found = _BARE.match(self._pending, start)
            if found is not None:
                other = found.group("other")
                closer = re.compile(rf"<\s*/\s*{re.escape(other)}\s*>", re.IGNORECASE) if other else _MEMORY_CLOSE
                return start, found.end(), closer
        return None if mid is None else (mid.start(), mid.start(), _MEMORY_CLOSE)

    def _enter(self, name: str) -> None:
        """Inside a block opened by tag ``name`` (or ``bare``: an untagged one)."""
        self._echo = name if name in _ECHOES else ""
        self._kind = "echo" if self._echo else "bare" if name == "bare" else "memory"
        if name == "bare":
            self.repairs += 1

    def _inside(self) -> bool:
        if self._kind == "bare":
            end = _json_end(self._pending)
            if end is None:
                self._guard_size()
                return False
            body, rest = self._pending[:end], self._pending[end:]
            stripped = rest.lstrip()
            growing = stripped.startswith("<") and ">" not in stripped and len(stripped) < MAX_TAG_CHARS
            if not self._final and (not stripped or _could_be_tag(stripped) or growing):
                return False  # a closing tag may follow the JSON
            close = self._closer.match(stripped)
            if close is not None:
                rest = stripped[close.end():]
            if self._fenced:
                stripped = rest.lstrip()
                if "```".startswith(stripped) and len(stripped) < 3 and not self._final:
                    return False  # the closing fence may still come
                if stripped.startswith("```"):
                    rest = stripped[3:]
            self._close_block(body)
            self._pending = rest
        else:
            close = (_ECHO_CLOSE[self._echo] if self._kind == "echo" else _MEMORY_CLOSE).search(self._pending)
            if close is None:
                self._guard_size()
                return False
            if self._kind == "memory" and not close.group(0).lower().replace(" ", "").endswith("memory>"):
                self.repairs += 1  # <memory> ... </memories>
            self._close_block(self._pending[:close.start()])
            self._pending = self._pending[close.end():]
        self._after_cut = True
        return True

    def _show(self, shown: list[str], text: str) -> None:
        if not self._tail and (self.blocks or self.echoes):
            text = text.lstrip()  # nothing shown yet: the answer starts after the removed block
        if text:
            shown.append(text)
            self._tail = (self._tail + text)[-MAX_TAG_CHARS:]

    def _joined_tag(self) -> bool | None:
        """After a block was removed, the text shown before it and the text after it meet: an
        opening tag they form together (``<`` + ``memory>{...``) still opens a block. True if one
        was consumed, None if the pending text is too short to tell, False if none can form."""
        start = self._tail.find("<")
        while start >= 0:
            joined = self._tail[start:] + self._pending
            tag = _TAG.match(joined)
            if tag is not None and not tag.group(1) and tag.end() > len(self._tail) - start:
                name = tag.group(2).lower()
                opens = self._opens(name, joined[tag.end():])
                if opens is None:
                    return None
                if opens:
                    self._pending = joined[tag.end():]
                    self._enter(name)
                    return True
            elif tag is None and _could_be_tag(joined):
                return None
            start = self._tail.find("<", start + 1)
        self._after_cut = False
        return False

    def _guard_size(self) -> None:
        # A hostile or runaway block must not grow without bound; keep only enough to find the tag.
        if len(self._pending) > MAX_BLOCK_CHARS:
            if not self._oversized:
                self.problems.append(f"memory block exceeds {MAX_BLOCK_CHARS} characters; ignored")
                self._oversized = True
            self._pending = "" if self._kind == "bare" else self._pending[-MAX_TAG_CHARS:]

    def _close_block(self, body: str) -> None:
        kind, self._kind = self._kind, None
        if kind == "echo":
            self.echoes += 1
            self._oversized = False
            return
        self.blocks += 1
        if self._oversized:
            self._oversized = False
            return
        memories, problems, repaired = _parse_block(body)
        self.repairs += repaired
        self.memories.extend(memories)
        self.problems.extend(problems)

    def finish(self) -> str:
        """The text still held back; an unclosed block is stripped from its start on, and what it
        held is kept only if it parses."""
        self._final = True
        shown = self.feed("")  # what waited for text that never came: tags, an untagged block's end
        if self._kind is not None:
            if self._kind != "echo":
                self.problems.append("memory block was never closed; stripped")
            end = _json_end(self._pending) if self._kind == "bare" else None
            self._close_block(self._pending[:end])
            self._pending = ""
            return shown
        rest, self._pending = shown + self._pending, ""
        cut = _CUT_TAG.search(rest) if self._blocks else None
        if cut is not None:  # the reply ended inside a memory tag ("... The <memor"): cut off at the token limit
            rest = rest[:cut.start()]
            self.problems.append("memory tag was cut off at the end of the reply; stripped")
        if self._after_cut and not rest.strip():
            return ""  # white space after a removed block
        return rest if rest.strip() else ("" if self.blocks or self.echoes else rest)

    def result(self, text: str) -> ParseResult:
        """What this parser found, with ``text``, the reply as the caller got it."""
        return ParseResult(text, list(self.memories), list(self.problems), self.blocks, self.repairs, self.echoes)


def parse_reply(text: str, blocks: bool = True) -> ParseResult:
    """Strip every memory block (and echoed context) from a whole reply; with ``blocks=False`` only
    the echoes."""
    parser = BlockParser(blocks)
    return parser.result(parser.feed(text) + parser.finish())
