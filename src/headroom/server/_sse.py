"""Server-sent events as the chat APIs use them: decoded from the upstream's lines into JSON dicts,
encoded back for the caller. No I/O of its own; the proxy feeds it lines and sends its bytes.
"""

from __future__ import annotations

import codecs
import json
import re
from dataclasses import dataclass
from typing import Any, AsyncIterator

__all__ = ["RawEvent", "LineSplitter", "lines", "decode", "encode", "DONE"]

DONE = "[DONE]"


@dataclass(frozen=True)
class RawEvent:
    """An event whose data is not a JSON object (``[DONE]``, a keep-alive): passed on as it came.
    It has no ``type`` or ``choices``, so the stream filters pass it untouched."""

    name: str | None
    data: str


_BREAK = re.compile("\r\n|\r|\n")


class LineSplitter:
    """Bytes as they arrive, in chunks cut anywhere, to the lines of an event stream: ended by CRLF,
    CR or LF as the SSE format allows (not by the other breaks ``str.splitlines`` knows). A CR at the
    end of a chunk waits for the next one, which may begin with its LF."""

    def __init__(self) -> None:
        self._decoder = codecs.getincrementaldecoder("utf-8")(errors="replace")
        self._pending = ""

    def feed(self, chunk: bytes) -> list[str]:
        text = self._pending + self._decoder.decode(chunk)
        held = text.endswith("\r")
        *complete, self._pending = _BREAK.split(text[:-1] if held else text)
        if held:
            self._pending += "\r"
        return complete

    def end(self) -> list[str]:
        """The last line, when the stream ended without a line break."""
        text = self._pending + self._decoder.decode(b"", final=True)
        self._pending = ""
        if not text:
            return []
        found = _BREAK.split(text)
        return found[:-1] if found[-1] == "" else found


async def lines(chunks: AsyncIterator[bytes]) -> AsyncIterator[str]:
    """The lines of a stream of bytes (see ``LineSplitter``)."""
    splitter = LineSplitter()
    async for chunk in chunks:
        for line in splitter.feed(chunk):
            yield line
    for line in splitter.end():
        yield line


async def decode(lines: AsyncIterator[str]) -> AsyncIterator[tuple[str | None, Any]]:
    """``(event name, data)`` per event: data is a dict when it is a JSON object, else a ``RawEvent``."""
    name: str | None = None
    data: list[str] = []
    async for line in lines:
        if line == "":
            if data:
                yield name, _parse(name, "\n".join(data))
            name, data = None, []
            continue
        if line.startswith(":"):
            continue  # a comment (keep-alive)
        field, _, value = line.partition(":")
        value = value[1:] if value.startswith(" ") else value
        if field == "data":
            data.append(value)
        elif field == "event":
            name = value
    if data:
        yield name, _parse(name, "\n".join(data))


def _parse(name: str | None, data: str) -> Any:
    try:
        parsed = json.loads(data)
    except ValueError:
        return RawEvent(name, data)
    return parsed if isinstance(parsed, dict) else RawEvent(name, data)


def encode(item: Any, named: bool) -> bytes:
    """One event for the caller. ``named``: the upstream named its events (the Messages API does,
    after each event's ``type``), so a dict gets an ``event:`` line from its ``type``."""
    if isinstance(item, RawEvent):
        head = f"event: {item.name}\n" if item.name else ""
        return f"{head}data: {item.data}\n\n".encode()
    kind = item.get("type") if named else None
    head = f"event: {kind}\n" if isinstance(kind, str) else ""
    return f"{head}data: {json.dumps(item, ensure_ascii=False, separators=(',', ':'))}\n\n".encode()
