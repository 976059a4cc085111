"""The memories a server holds: one store, one embedder, and per-user state in a bounded cache.

A ``UserMemory`` holds nothing but its user id and the shared store and embedder, so one is made per
request. What a user's ``FastMemory`` keeps between calls (the protocol counters, the blocks its
earlier answers carried) lives in an LRU of at most ``max_users`` entries: a user evicted from it
loses only that, never a memory. Embedding runs in the store's one worker thread for every user.
"""

from __future__ import annotations

import logging
import threading
from collections import OrderedDict
from typing import Any

from headroom.memory import UserMemory
from headroom.memory._embedders import Embedder
from headroom.memory._fast import FastMemory, Turn
from headroom.memory._parser import ExtractedMemory
from headroom.memory._store import Store

from ._config import ServerConfig
from ._metrics import Metrics

__all__ = ["Users"]

logger = logging.getLogger(__name__)


class _CountedFastMemory(FastMemory):
    """``FastMemory`` that reports what it stored to the server's metrics."""

    metrics: Metrics

    def write(self, extracted: list[ExtractedMemory], turn: Turn) -> list[Any]:
        stored = super().write(extracted, turn)
        if stored:
            self.metrics.stored(len(stored))
        return stored


class Users:
    def __init__(self, store: Store, embedder: Embedder, config: ServerConfig, metrics: Metrics) -> None:
        self.store = store
        self.embedder = embedder
        self.config = config
        self.metrics = metrics
        self._cores: OrderedDict[tuple[str, str], FastMemory] = OrderedDict()
        self._lock = threading.Lock()

    def memory(self, user_id: str) -> UserMemory:
        return UserMemory(user_id, self.store, self.embedder)

    def core(self, user_id: str, dialect: str) -> FastMemory:
        """The user's ``FastMemory`` for one API family: instructed inline in fast mode; in
        background mode (``record`` set by the server) the reply is left as written and the turn
        queued, with the family its extraction call must speak; in fast mode with a ``fallback``,
        only turns whose reply gave no note to read are queued."""
        key = (user_id, dialect)
        with self._lock:
            core = self._cores.get(key)
            if core is not None:
                self._cores.move_to_end(key)
                return core
        record, fallback = self.record, self.fallback
        core = _CountedFastMemory(
            self.memory(user_id), top_k=self.config.top_k, min_score=self.config.min_score,
            record=None if record is None else lambda turn, reply: record(user_id, dialect, turn, reply),
            fallback=None if fallback is None else lambda turn, reply: fallback(user_id, dialect, turn, reply))
        core.metrics = self.metrics
        with self._lock:
            core = self._cores.setdefault(key, core)
            while len(self._cores) > self.config.max_users:
                self._cores.popitem(last=False)
        return core

    #: Set by the server in background mode: ``record(user_id, dialect, turn, reply)`` queues a turn.
    record: Any = None
    #: Set by the server in fast mode with ``fallback_extraction``: the same, for a turn whose reply
    #: gave no note to read.
    fallback: Any = None

    def __len__(self) -> int:
        return len(self._cores)

    def flush(self, timeout: float) -> bool:
        """Wait for memories written but not yet embedded (at most ``timeout`` seconds)."""
        from headroom.memory._deferred import EmbeddingWorker

        return EmbeddingWorker.of(self.store, self.embedder).wait(timeout)
