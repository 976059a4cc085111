"""Awaitable counterparts of the memory API, for async code.

Each method runs its synchronous twin in a worker thread, so embedding and SQLite work never block
the event loop. The methods are written out (so type checkers and editors see them) and delegate to
``UserMemory``; a test keeps their signatures identical to the synchronous ones.
"""

from __future__ import annotations

import asyncio
from datetime import datetime
from typing import Any, Iterable, Mapping

from ._api import MemoryInput, UserMemory
from ._jobs import Job
from ._models import Category, Memory, Source

__all__ = ["AsyncUserMemory"]


class AsyncUserMemory:
    """``await memory.search(...)`` and friends; ``sync`` is the ``UserMemory`` underneath."""

    def __init__(self, memory: UserMemory) -> None:
        self.sync = memory

    @property
    def user_id(self) -> str:
        return self.sync.user_id

    async def search(self, query: str, top_k: int = 5, category: Category | None = None) -> list[tuple[Memory, float]]:
        return await asyncio.to_thread(self.sync.search, query, top_k, category)

    async def explain(self, query: str, top_k: int = 5,
                      category: Category | None = None) -> list[tuple[Memory, float, float]]:
        return await asyncio.to_thread(self.sync.explain, query, top_k, category)

    async def add(
        self,
        text: str,
        category: Category | None = "fact",
        metadata: Mapping[str, Any] | None = None,
        *,
        source: Source = "manual",
        replaces: str | None = None,
        said_at: datetime | str | float | None = None,
    ) -> Memory:
        return await asyncio.to_thread(self.sync.add, text, category, metadata, source=source, replaces=replaces,
                                       said_at=said_at)

    async def add_many(self, items: Iterable[MemoryInput], *, source: Source = "manual",
                       defer_embedding: bool = False, done: Job | None = None) -> list[Memory]:
        return await asyncio.to_thread(self.sync.add_many, items, source=source, defer_embedding=defer_embedding,
                                       done=done)

    async def get(self, memory_id: str) -> Memory:
        return await asyncio.to_thread(self.sync.get, memory_id)

    async def get_all(self, category: Category | None = None) -> list[Memory]:
        return await asyncio.to_thread(self.sync.get_all, category)

    async def resolve(self, ref: str) -> Memory | None:
        return await asyncio.to_thread(self.sync.resolve, ref)

    async def history(self, memory_id: str) -> list[Memory]:
        return await asyncio.to_thread(self.sync.history, memory_id)

    async def update(self, memory_id: str, text: str | None = None, category: Category | None = None,
                     metadata: Mapping[str, Any] | None = None) -> Memory:
        return await asyncio.to_thread(self.sync.update, memory_id, text, category, metadata)

    async def delete(self, memory_id: str) -> bool:
        return await asyncio.to_thread(self.sync.delete, memory_id)

    async def clear(self) -> int:
        return await asyncio.to_thread(self.sync.clear)

    async def stats(self) -> dict[str, Any]:
        return await asyncio.to_thread(self.sync.stats)

    async def flush(self, timeout: float | None = None) -> bool:
        return await asyncio.to_thread(self.sync.flush, timeout)

    async def remember(self, messages: Iterable[Mapping[str, Any]]) -> int:
        return await asyncio.to_thread(self.sync.remember, messages)

    async def retry_failed(self) -> int:
        return await asyncio.to_thread(self.sync.retry_failed)

    async def close(self) -> None:
        await asyncio.to_thread(self.sync.close)

    async def __aenter__(self) -> "AsyncUserMemory":
        return self

    async def __aexit__(self, *exc: object) -> None:
        await self.close()

    def __repr__(self) -> str:
        return f"Async{self.sync!r}"
