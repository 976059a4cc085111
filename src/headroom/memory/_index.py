"""The in-process vector index of one user: a normalized float32 matrix kept in step with writes.

A search is one matrix-vector product and a partial sort; nothing is read from disk. The store
owns the index and its lock; this module knows nothing of SQL.
"""

from __future__ import annotations

import threading
from contextlib import AbstractContextManager, nullcontext
from typing import Any, Sequence

import numpy as np

from ._models import CATEGORIES, Memory

__all__ = ["VectorIndex", "single_blas_thread"]

_CATEGORY_CODE = {name: code for code, name in enumerate(CATEGORIES)}


_BLAS: Any = None
_BLAS_LOCK = threading.Lock()


def single_blas_thread() -> AbstractContextManager[Any]:
    """Run one matrix product on one BLAS thread.

    A multi-threaded product is a little faster alone, but OpenBLAS threads keep spinning after it
    and starve the embedding model that runs next: measured on 2 cores, search at 10k memories went
    from 9.5 ms to 4.1 ms with one thread (bench/RESULTS.md).
    """
    global _BLAS
    if _BLAS is None:
        try:
            from threadpoolctl import ThreadpoolController

            _BLAS = ThreadpoolController()
        except ImportError:  # pragma: no cover - a base dependency
            _BLAS = False
    return _BLAS.limit(limits=1, user_api="blas") if _BLAS else nullcontext()


class VectorIndex:
    """One user's live memories and their vectors; ``version`` is the store's change counter it reflects.

    Vectors are stored as columns (``dim x capacity``): on one BLAS thread ``query @ columns`` runs
    about three times faster than ``rows @ query`` (0.39 vs 1.19 ms at 10k memories here).
    """

    def __init__(self, dim: int, version: int) -> None:
        self.version = version
        self._dim = dim
        self._matrix = np.empty((dim, 0), dtype=np.float32)
        self._codes = np.empty(0, dtype=np.int8)
        self._memories: list[Memory] = []
        self._row: dict[str, int] = {}

    def __len__(self) -> int:
        return len(self._memories)

    def _grow(self, extra: int) -> None:
        needed = len(self._memories) + extra
        if needed <= self._matrix.shape[1]:
            return
        capacity = max(needed, 2 * self._matrix.shape[1], 16)
        matrix = np.empty((self._dim, capacity), dtype=np.float32)
        codes = np.empty(capacity, dtype=np.int8)
        n = len(self._memories)
        matrix[:, :n] = self._matrix[:, :n]
        codes[:n] = self._codes[:n]
        self._matrix, self._codes = matrix, codes

    def add(self, memories: Sequence[Memory], vectors: np.ndarray) -> None:
        self._grow(len(memories))
        for memory, vector in zip(memories, vectors):
            row = len(self._memories)
            self._matrix[:, row] = vector
            self._codes[row] = _CATEGORY_CODE[memory.category]
            self._memories.append(memory)
            self._row[memory.id] = row

    def replace(self, memory: Memory, vector: np.ndarray | None) -> None:
        row = self._row.get(memory.id)
        if row is None:  # not searchable yet (waiting for its vector)
            if vector is not None:
                self.add([memory], np.asarray([vector], dtype=np.float32))
            return
        self._memories[row] = memory
        self._codes[row] = _CATEGORY_CODE[memory.category]
        if vector is not None:
            self._matrix[:, row] = vector

    def remove(self, memory_id: str) -> None:
        """Drop one row by moving the last row into its place."""
        row = self._row.pop(memory_id, None)
        if row is None:
            return
        last = len(self._memories) - 1
        if row != last:
            moved = self._memories[last]
            self._memories[row] = moved
            self._matrix[:, row] = self._matrix[:, last]
            self._codes[row] = self._codes[last]
            self._row[moved.id] = row
        self._memories.pop()

    def similarity(self, memory_id: str, query: np.ndarray) -> tuple[Memory, float] | None:
        """One memory and its cosine to ``query``, if it is in the index."""
        row = self._row.get(memory_id)
        if row is None:
            return None
        return self._memories[row], float(self._matrix[:, row] @ query)

    def search(self, query: np.ndarray, top_k: int, category: str | None = None) -> list[tuple[Memory, float]]:
        n = len(self._memories)
        if n == 0 or top_k <= 0:
            return []
        with _BLAS_LOCK, single_blas_thread():
            scores = query @ self._matrix[:, :n]
        if category is not None:
            scores = np.where(self._codes[:n] == _CATEGORY_CODE[category], scores, -np.inf)
        k = min(top_k, n)
        if k == 1:  # the near-duplicate check asks for one: a single pass
            top = np.array([int(np.argmax(scores))])
        else:
            top = np.argpartition(-scores, k - 1)[:k] if k < n else np.arange(n)
        top = top[np.argsort(-scores[top], kind="stable")]
        return [(self._memories[i], float(scores[i])) for i in top if scores[i] > -np.inf]
