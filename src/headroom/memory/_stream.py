"""Streamed replies: the ``<memory>`` block removed from chunks as they pass, memories stored at the end.

``StreamFilter`` is the sans-I/O part (one ``BlockParser`` per choice); ``MemoryStream`` and
``AsyncMemoryStream`` are thin shells that drive it from the SDK's own stream objects and yield the
SDK's own chunk objects.
"""

from __future__ import annotations

import asyncio
import logging
from typing import Any

from ._protocol import BlockParser, ExtractedMemory

__all__ = ["StreamFilter", "MemoryStream", "AsyncMemoryStream"]

logger = logging.getLogger(__name__)


class StreamFilter:
    """Strips blocks from chat completion chunks in place and keeps what they said."""

    def __init__(self) -> None:
        self._parsers: dict[int, BlockParser] = {}
        self._finished: set[int] = set()

    def process(self, chunk: Any) -> Any:
        for choice in getattr(chunk, "choices", None) or []:
            index = getattr(choice, "index", 0) or 0
            parser = self._parsers.setdefault(index, BlockParser())
            delta = getattr(choice, "delta", None)
            content = getattr(delta, "content", None)
            text = parser.feed(content) if isinstance(content, str) else ""
            if getattr(choice, "finish_reason", None) is not None and index not in self._finished:
                self._finished.add(index)
                text += parser.finish()  # release what was held back as a possible tag
            if delta is not None and (isinstance(content, str) or text):
                delta.content = text
        return chunk

    def memories(self) -> list[ExtractedMemory]:
        """Memories of the first choice; unfinished parsers are closed on what arrived."""
        for index, parser in self._parsers.items():
            if index not in self._finished:
                self._finished.add(index)
                parser.finish()
            for problem in parser.problems:
                logger.warning("memory block: %s", problem)
        first = self._parsers.get(0)
        return list(first.memories) if first else []


class _StreamShell:
    """What both stream shells share: the filter, the end-of-stream bookkeeping, the SDK's attributes."""

    def __init__(self, stream: Any, store: Any) -> None:
        self._stream = stream
        self._store = store  # called once with the memories when the stream ends well
        self._filter = StreamFilter()
        self._done = False

    def _end(self, ok: bool) -> list[ExtractedMemory]:
        """Memories to store, once; none after a failure (nothing half-stored)."""
        if self._done:
            return []
        self._done = True
        if not ok:
            logger.info("stream failed; nothing from it is stored")
            return []
        return self._filter.memories()

    @property
    def response(self) -> Any:
        return self._stream.response

    def __getattr__(self, name: str) -> Any:
        return getattr(self._stream, name)


class MemoryStream(_StreamShell):
    """Iterates the SDK's stream, yielding its own chunks with the block removed."""

    def __init__(self, stream: Any, store: Any) -> None:
        super().__init__(stream, store)
        self._iterator = iter(stream)

    def __iter__(self) -> "MemoryStream":
        return self

    def __next__(self) -> Any:
        try:
            chunk = next(self._iterator)
        except StopIteration:
            self._finish()
            raise
        except BaseException:
            self._end(False)
            raise
        return self._filter.process(chunk)

    def _finish(self) -> None:
        memories = self._end(True)
        if memories:
            self._store(memories)

    def close(self) -> None:
        """Close the SDK's stream; what arrived complete is parsed and stored."""
        try:
            self._stream.close()
        finally:
            self._finish()

    def __enter__(self) -> "MemoryStream":
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()


class AsyncMemoryStream(_StreamShell):
    """Async-iterates the SDK's stream; storing runs off the event loop."""

    def __init__(self, stream: Any, store: Any) -> None:
        super().__init__(stream, store)
        self._iterator = stream.__aiter__()

    def __aiter__(self) -> "AsyncMemoryStream":
        return self

    async def __anext__(self) -> Any:
        try:
            chunk = await self._iterator.__anext__()
        except StopAsyncIteration:
            await self._finish()
            raise
        except BaseException:
            self._end(False)
            raise
        return self._filter.process(chunk)

    async def _finish(self) -> None:
        memories = self._end(True)
        if memories:
            await asyncio.to_thread(self._store, memories)

    async def close(self) -> None:
        """Close the SDK's stream; what arrived complete is parsed and stored."""
        try:
            await self._stream.close()
        finally:
            await self._finish()

    aclose = close

    async def __aenter__(self) -> "AsyncMemoryStream":
        return self

    async def __aexit__(self, *exc: object) -> None:
        await self.close()
