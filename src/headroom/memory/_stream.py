"""Streamed replies: the ``<memory>`` block removed as chunks pass, memories stored at the end.

The dialect's stream filter is the sans-I/O part; ``MemoryStream`` and ``AsyncMemoryStream`` are thin
shells that drive it from the SDK's own stream objects and yield the SDK's own chunk objects.
"""

from __future__ import annotations

import asyncio
import logging
from collections import deque
from typing import Any, Callable

from ._dialects import StreamFilter

__all__ = ["MemoryStream", "AsyncMemoryStream"]

logger = logging.getLogger(__name__)


class _StreamShell:
    """What both stream shells share: the filter, the end-of-stream bookkeeping, the SDK's attributes."""

    def __init__(self, stream: Any, filter: StreamFilter, on_end: Callable[[StreamFilter], Any]) -> None:
        self._stream = stream
        self._filter = filter
        self._on_end = on_end  # called once with the filter when the stream ends well or is closed
        self._ready: deque[Any] = deque()  # items the filter produced, not yet handed out
        self._done = False
        self._broken = False  # the filter failed once: items pass through untouched from then on
        self._ended = False  # the SDK's stream is exhausted; ``_ready`` holds the last items

    def _process(self, item: Any) -> list[Any]:
        """The filter's items for one of the SDK's; a failing filter costs the caller nothing."""
        if self._broken:
            return [item]
        try:
            return self._filter.process(item)
        except Exception:
            logger.exception("memory stream filter failed; the rest of the stream passes untouched")
            self._broken = True
            return [item]

    def _tail(self) -> list[Any]:
        """What the filter still holds when the SDK's stream ends."""
        self._ended = True
        if self._broken:
            return []
        try:
            return self._filter.end()
        except Exception:
            logger.exception("memory stream filter failed at the end of the stream")
            self._broken = True
            return []

    def _handle_end(self) -> None:
        try:
            if not self._broken:
                self._on_end(self._filter)
        except Exception:
            logger.exception("storing the memories of a stream failed; the caller's stream is unaffected")

    def _end(self, ok: bool) -> bool:
        """True once, when the stream's end should be handled; never after a failure."""
        if self._done:
            return False
        self._done = True
        if not ok:
            logger.info("stream failed; nothing from it is stored")
        return ok

    @property
    def response(self) -> Any:
        return self._stream.response

    def __getattr__(self, name: str) -> Any:
        return getattr(self._stream, name)


class MemoryStream(_StreamShell):
    """Iterates the SDK's stream, yielding its own chunks with the block removed."""

    def __init__(self, stream: Any, filter: StreamFilter, on_end: Callable[[StreamFilter], Any]) -> None:
        super().__init__(stream, filter, on_end)
        self._iterator = iter(stream)

    def __iter__(self) -> "MemoryStream":
        return self

    def __next__(self) -> Any:
        while not self._ready:
            if self._ended:
                self._finish()
                raise StopIteration
            try:
                item = next(self._iterator)
            except StopIteration:
                self._ready.extend(self._tail())
                continue
            except BaseException:
                self._end(False)
                raise
            self._ready.extend(self._process(item))
        return self._ready.popleft()

    def _finish(self) -> None:
        if self._end(True):
            self._handle_end()

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

    def __init__(self, stream: Any, filter: StreamFilter, on_end: Callable[[StreamFilter], Any]) -> None:
        super().__init__(stream, filter, on_end)
        self._iterator = stream.__aiter__()

    def __aiter__(self) -> "AsyncMemoryStream":
        return self

    async def __anext__(self) -> Any:
        while not self._ready:
            if self._ended:
                await self._finish()
                raise StopAsyncIteration
            try:
                item = await self._iterator.__anext__()
            except StopAsyncIteration:
                self._ready.extend(self._tail())
                continue
            except BaseException:
                self._end(False)
                raise
            self._ready.extend(self._process(item))
        return self._ready.popleft()

    async def _finish(self) -> None:
        if self._end(True):
            await asyncio.to_thread(self._handle_end)

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
