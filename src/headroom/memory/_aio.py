"""Awaitable counterparts of the memory API, for async code.

Each method runs its synchronous twin in a worker thread, so embedding and SQLite work never block
the event loop. The methods are generated from ``UserMemory`` itself, so the two cannot drift apart.
"""

from __future__ import annotations

import asyncio
import functools
from typing import Any, Callable

from ._api import UserMemory

__all__ = ["AsyncUserMemory", "ASYNC_METHODS"]

ASYNC_METHODS = ("search", "add", "add_many", "get", "get_all", "update", "delete", "clear", "stats", "flush",
                 "retry_failed", "remember", "resolve", "history")


def _off_loop(method: Callable[..., Any]) -> Callable[..., Any]:
    @functools.wraps(method)
    async def run(self: "AsyncUserMemory", *args: Any, **kwargs: Any) -> Any:
        return await asyncio.to_thread(method, self.sync, *args, **kwargs)

    return run


class AsyncUserMemory:
    """``await memory.search(...)`` and friends; ``sync`` is the ``UserMemory`` underneath."""

    def __init__(self, memory: UserMemory) -> None:
        self.sync = memory

    @property
    def user_id(self) -> str:
        return self.sync.user_id

    async def close(self) -> None:
        await asyncio.to_thread(self.sync.close)

    async def __aenter__(self) -> "AsyncUserMemory":
        return self

    async def __aexit__(self, *exc: object) -> None:
        await self.close()

    def __repr__(self) -> str:
        return f"Async{self.sync!r}"


for _name in ASYNC_METHODS:
    setattr(AsyncUserMemory, _name, _off_loop(getattr(UserMemory, _name)))
