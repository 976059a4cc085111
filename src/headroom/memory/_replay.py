"""Showing a model its own earlier memory blocks, in the history the caller sends back.

The caller's history holds the model's earlier answers as the caller got them: cleaned, without
their blocks. A model that reads a conversation in which it never wrote a block learns from it not
to write one, and small models follow the conversation more than the system message. So ``BlockReplay``
remembers, for each cleaned answer, the memories its block carried (written out again in the
canonical form), and puts them back after that answer in the copy of the history sent
to the model. The caller's messages are never changed, and a history restored the same way every
time is the same bytes every time, so the provider's prompt cache still holds.

Kept in memory and bounded: an answer this process did not see (another worker, a restart) is sent
as the caller wrote it.
"""

from __future__ import annotations

import hashlib
import json
import threading
from collections import OrderedDict
from typing import Any, Mapping, Sequence

from ._inject import message_text, with_text_after
from ._parser import ExtractedMemory

__all__ = ["BlockReplay", "format_block"]

#: Answers remembered per wrapped client: a few conversations' worth, a few hundred bytes each.
MAX_ANSWERS = 512


def format_block(memories: Sequence[ExtractedMemory]) -> str:
    """A memory block in the form the instruction asks for (``replaces`` is not shown again: the
    numbers it used belonged to that turn's notes)."""
    items = [{"content": m.text, "category": m.category} for m in memories]
    return f"<memory>{json.dumps({'memories': items}, ensure_ascii=False)}</memory>"


def _key(text: str) -> bytes:
    return hashlib.blake2b(text.strip().encode("utf-8", "surrogatepass"), digest_size=16).digest()


def _text_only(message: Mapping[str, Any]) -> bool:
    """Whether the message is only text: a block is never put after a tool call or an image."""
    content = message.get("content")
    return isinstance(content, str) or (
        isinstance(content, Sequence) and all(isinstance(p, Mapping) and p.get("type") == "text" for p in content))


class BlockReplay:
    """The blocks of the answers this client has cleaned, keyed by the cleaned answer's text."""

    def __init__(self, capacity: int = MAX_ANSWERS) -> None:
        self._blocks: OrderedDict[bytes, str] = OrderedDict()
        self._capacity = capacity
        self._lock = threading.Lock()

    def remember(self, answer: str, memories: Sequence[ExtractedMemory]) -> None:
        """Note that ``answer`` (as the caller got it) carried a block holding ``memories``. An
        answer with no memories is not noted: a history of empty blocks taught a 1.5B model to
        write only empty blocks (bench/RESULTS.md)."""
        if not answer.strip() or not memories:
            return
        key = _key(answer)
        with self._lock:
            self._blocks[key] = format_block(memories)
            self._blocks.move_to_end(key)
            while len(self._blocks) > self._capacity:
                self._blocks.popitem(last=False)

    def restore(self, messages: Sequence[Any]) -> list[Any]:
        """A copy of ``messages`` in which each assistant answer this client cleaned ends with its
        block again; every other message is the caller's own object."""
        out = list(messages)
        with self._lock:
            if not self._blocks:
                return out
            for i, message in enumerate(messages):
                if not isinstance(message, Mapping) or message.get("role") != "assistant" or not _text_only(message):
                    continue
                block = self._blocks.get(_key(message_text(message)))
                if block is not None:
                    out[i] = {**message, "content": with_text_after(message.get("content"), block)}
        return out
