"""The in-process index of one user: a normalized float32 matrix kept in step with writes.

A search is one matrix-vector product and a partial sort, plus BM25 over the rows the full-text
index found for the query's words; nothing is read from disk. A near-duplicate check reads sign
signatures first. The store owns the index and its lock; this module knows nothing of SQL.
"""

from __future__ import annotations

import logging
import math
import threading
from collections import OrderedDict
from contextlib import AbstractContextManager, nullcontext
from functools import lru_cache
from itertools import repeat
from typing import Any, Iterator, Sequence

import numpy as np

from ._models import CATEGORIES, Memory
from ._scoring import Scoring, bm25, scale_keywords, token_count

logger = logging.getLogger(__name__)

__all__ = ["VectorIndex", "IndexCache", "rank", "category_codes", "single_blas_thread", "signatures", "max_distance", "SIGNATURE_BITS", "MISS_PROBABILITY"]

_CATEGORY_CODE = {name: code for code, name in enumerate(CATEGORIES)}

#: Bits of the sign signature (SimHash) each vector carries for the near-duplicate check.
SIGNATURE_BITS = 256
_WORDS = SIGNATURE_BITS // 64
#: The chance, at most, that ``nearest`` misses a vector at exactly its ``min_score`` (less above it).
MISS_PROBABILITY = 1e-9


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


@lru_cache(maxsize=None)
def _planes(dim: int) -> np.ndarray:
    """Fixed random hyperplanes (the same in every process: the seed is the dimension)."""
    return np.random.default_rng(dim).standard_normal((dim, SIGNATURE_BITS)).astype(np.float32)


def signatures(vectors: np.ndarray) -> np.ndarray:
    """``(words, n)`` uint64: bit i of a vector is set when it lies above hyperplane i."""
    bits = np.packbits(vectors @ _planes(vectors.shape[1]) > 0, axis=1)
    return np.ascontiguousarray(bits.view(np.uint64).T)


@lru_cache(maxsize=64)
def max_distance(min_score: float) -> int:
    """Signature bits two vectors with cosine ``min_score`` differ in, at most, but for ``MISS_PROBABILITY``.

    Each bit differs with probability angle / pi (random-hyperplane LSH), so the count is binomial.
    """
    p = math.acos(max(-1.0, min(1.0, min_score))) / math.pi
    tail = 1.0
    for k in range(SIGNATURE_BITS + 1):
        tail -= math.comb(SIGNATURE_BITS, k) * p**k * (1 - p) ** (SIGNATURE_BITS - k)
        if tail < MISS_PROBABILITY:
            return k
    return SIGNATURE_BITS


#: Signatures of up to this many rows are computed without limiting BLAS threads.
SIGN_ALONE_ROWS = 64
#: A rough size of one memory object with its text and its entries in the lookup tables.
_OBJECT_BYTES = 600


class VectorIndex:
    """One user's live memories and their vectors; ``version`` is the store's change counter it reflects.

    Each memory also has the store's integer key for its row (what the full-text index returns) and
    its length in words, so keyword matches are ranked here too, in the same pass as the vectors.

    Vectors are stored as columns (``dim x capacity``): on one BLAS thread ``query @ columns`` runs
    about three times faster than ``rows @ query`` (0.39 vs 1.19 ms at 10k memories here). Each
    vector also has a 256-bit sign signature, so the near-duplicate check of every ``add`` reads 32
    bytes a memory instead of 1,536.
    """

    def __init__(self, dim: int, version: int) -> None:
        self.version = version
        self._dim = dim
        self._matrix = np.empty((dim, 0), dtype=np.float32)
        self._codes = np.empty(0, dtype=np.int8)
        self._signs = np.empty((_WORDS, 0), dtype=np.uint64)
        self._lengths = np.empty(0, dtype=np.float32)
        self._created = np.empty(0, dtype=np.float64)
        self._memories: list[Memory] = []
        self._keys: list[int] = []
        self._row: dict[str, int] = {}
        self._row_of_key: dict[int, int] = {}
        # The keys as an array, when they ascend with the rows (they do until a delete moves a row):
        # then a word's keys find their rows by one binary search, not a dict lookup each. None:
        # not built since the last write; False: not ascending.
        self._ascending_keys: np.ndarray | bool | None = None
        self._signed = 0  # rows below this have their signature; the rest get it when ``nearest`` needs it

    def __len__(self) -> int:
        return len(self._memories)

    @property
    def nbytes(self) -> int:
        """About how much memory the index holds: its arrays, plus a rough figure per memory object."""
        arrays = self._matrix.nbytes + self._signs.nbytes + self._codes.nbytes + self._lengths.nbytes
        return arrays + self._created.nbytes + _OBJECT_BYTES * len(self._memories)

    def _grow(self, extra: int) -> None:
        needed = len(self._memories) + extra
        if needed <= self._matrix.shape[1]:
            return
        capacity = max(needed, 2 * self._matrix.shape[1], 16)
        matrix = np.empty((self._dim, capacity), dtype=np.float32)
        codes = np.empty(capacity, dtype=np.int8)
        signs = np.empty((_WORDS, capacity), dtype=np.uint64)
        lengths = np.empty(capacity, dtype=np.float32)
        created = np.empty(capacity, dtype=np.float64)
        n = len(self._memories)
        matrix[:, :n] = self._matrix[:, :n]
        codes[:n] = self._codes[:n]
        signs[:, :n] = self._signs[:, :n]
        lengths[:n] = self._lengths[:n]
        created[:n] = self._created[:n]
        self._matrix, self._codes, self._signs, self._lengths, self._created = matrix, codes, signs, lengths, created

    def add(self, memories: Sequence[Memory], vectors: np.ndarray, keys: Sequence[int]) -> None:
        self._grow(len(memories))
        start, end = len(self._memories), len(self._memories) + len(memories)
        self._matrix[:, start:end] = vectors.T
        self._codes[start:end] = [_CATEGORY_CODE[m.category] for m in memories]
        self._lengths[start:end] = [token_count(m.text) for m in memories]
        self._created[start:end] = [m.created_at.timestamp() for m in memories]
        self._memories.extend(memories)
        self._keys.extend(keys)
        self._ascending_keys = None
        self._row.update((m.id, row) for row, m in enumerate(memories, start))
        self._row_of_key.update((key, row) for row, key in enumerate(keys, start))

    def replace(self, memory: Memory, vector: np.ndarray | None, key: int) -> None:
        row = self._row.get(memory.id)
        if row is None:  # not searchable yet (waiting for its vector)
            if vector is not None:
                self.add([memory], np.asarray([vector], dtype=np.float32), [key])
            return
        self._memories[row] = memory
        self._codes[row] = _CATEGORY_CODE[memory.category]
        self._lengths[row] = token_count(memory.text)
        self._created[row] = memory.created_at.timestamp()
        if vector is not None:
            self._matrix[:, row] = vector
            if row < self._signed:
                self._signs[:, row] = signatures(vector[None])[:, 0]

    def remove(self, memory_id: str) -> None:
        """Drop one row by moving the last row into its place."""
        row = self._row.pop(memory_id, None)
        if row is None:
            return
        del self._row_of_key[self._keys[row]]
        self._ascending_keys = None
        last = len(self._memories) - 1
        if row != last:
            moved = self._memories[last]
            self._memories[row] = moved
            self._keys[row] = self._keys[last]
            self._matrix[:, row] = self._matrix[:, last]
            self._codes[row] = self._codes[last]
            if last < self._signed:
                self._signs[:, row] = self._signs[:, last]
            elif row < self._signed:
                self._signs[:, row] = signatures(self._matrix[:, row][None])[:, 0]
            self._lengths[row] = self._lengths[last]
            self._created[row] = self._created[last]
            self._row[moved.id] = row
            self._row_of_key[self._keys[row]] = row
        self._memories.pop()
        self._keys.pop()
        self._signed = min(self._signed, last)

    def _sign_rows(self, start: int, end: int) -> None:
        rows = np.ascontiguousarray(self._matrix[:, start:end].T)
        if end - start > SIGN_ALONE_ROWS:  # a big product: on one BLAS thread, as a search's
            with _BLAS_LOCK, single_blas_thread():
                self._signs[:, start:end] = signatures(rows)
        else:  # the rows one write added: too small for threads to matter, and limiting them costs more
            self._signs[:, start:end] = signatures(rows)
        self._signed = end

    def search(self, query: np.ndarray, top_k: int, category: str | None = None, matches: Sequence[np.ndarray] = (),
               scoring: Scoring | None = None, rare: Sequence[bool] = ()) -> list[tuple[Memory, float]]:
        """The ``top_k`` best memories (of ``category``, if given), best first, each with its cosine.

        Every memory is ranked by ``scoring`` (by cosine alone without it); ``matches`` holds, for
        each query word, the keys of the rows that have it, for the keyword score; ``rare``, for each
        word, whether it is rare (``_scoring.rare_words``).
        """
        return [(memory, cosine) for memory, cosine, _ in self.ranked(query, top_k, category, matches, scoring, rare)]

    def ranked(self, query: np.ndarray, top_k: int, category: str | None = None, matches: Sequence[np.ndarray] = (),
               scoring: Scoring | None = None, rare: Sequence[bool] = ()) -> list[tuple[Memory, float, float]]:
        """As ``search``, each with its cosine and its keyword score (0 to 1: ``scale_keywords``)."""
        n = len(self._memories)
        if n == 0 or top_k <= 0:
            return []
        with _BLAS_LOCK, single_blas_thread():
            cosines = query @ self._matrix[:, :n]
        rows = [self._rows(keys) for keys in matches] if matches else None
        return [(self._memories[i], cosine, keyword) for i, cosine, keyword in
                rank(cosines, rows, self._lengths[:n], self._codes[:n], self._created[:n], top_k, category, scoring,
                     rare)]

    def _rows(self, keys: np.ndarray) -> np.ndarray:
        """The rows of the keys that are in this index (a memory waiting for its vector is not)."""
        if not len(keys):
            return np.empty(0, dtype=np.intp)
        if self._ascending_keys is None:
            built = np.asarray(self._keys, dtype=np.int64)
            self._ascending_keys = built if len(built) and bool(np.all(built[1:] > built[:-1])) else False
        column = self._ascending_keys
        if not isinstance(column, np.ndarray):
            found = np.fromiter(map(self._row_of_key.get, keys.tolist(), repeat(-1)), dtype=np.intp, count=len(keys))
            return found[found >= 0]
        rows = np.minimum(np.searchsorted(column, keys), len(column) - 1)
        return rows[column[rows] == keys].astype(np.intp)

    def nearest(self, query: np.ndarray, min_score: float) -> tuple[Memory, float] | None:
        """The memory most similar to ``query`` if its cosine is at least ``min_score``.

        Only memories whose signature is within ``max_distance(min_score)`` bits are scored, so a
        match at the threshold is missed with probability below ``MISS_PROBABILITY``.
        """
        n = len(self._memories)
        if n == 0:
            return None
        if self._signed < n:  # signatures are made when first needed: a search never needs them
            self._sign_rows(self._signed, n)
        mine = signatures(query[None])[:, 0]
        distance = np.bitwise_count(self._signs[0, :n] ^ mine[0])
        for word in range(1, _WORDS):
            distance += np.bitwise_count(self._signs[word, :n] ^ mine[word])
        rows = np.flatnonzero(distance <= max_distance(min_score))
        if not len(rows):
            return None
        scores = query @ self._matrix[:, rows]
        best = int(np.argmax(scores))
        # Vectors are float32, so the threshold is compared as float32 too ("at" the threshold counts).
        if scores[best] < np.float32(min_score):
            return None
        return self._memories[rows[best]], float(scores[best])


class IndexCache:
    """Users' indexes, least recently used first, kept under a budget in bytes.

    The index used last always stays, even alone over the budget: evicting it would only make its
    next search load it again. Sizes are counted when an index is put or touched (after a write).
    """

    def __init__(self, budget: int) -> None:
        self.budget = budget
        self._items: OrderedDict[str, VectorIndex] = OrderedDict()
        self._sizes: dict[str, int] = {}
        self._total = 0

    def get(self, user_id: str) -> VectorIndex | None:
        return self._items.get(user_id)

    def put(self, user_id: str, index: VectorIndex) -> None:
        self.pop(user_id)
        self._items[user_id] = index
        self.touch(user_id)

    def touch(self, user_id: str) -> None:
        """Mark the user's index as used now and count its size again (a write may have grown it)."""
        index = self._items.get(user_id)
        if index is None:
            return
        self._items.move_to_end(user_id)
        size = index.nbytes
        self._total += size - self._sizes.get(user_id, 0)
        self._sizes[user_id] = size
        while self._total > self.budget and len(self._items) > 1:
            evicted, _ = self._items.popitem(last=False)
            self._total -= self._sizes.pop(evicted)
            logger.debug("index of user %r evicted from the cache", evicted)

    def pop(self, user_id: str) -> None:
        if self._items.pop(user_id, None) is not None:
            self._total -= self._sizes.pop(user_id)

    def clear(self) -> None:
        self._items.clear()
        self._sizes.clear()
        self._total = 0

    def __iter__(self) -> Iterator[str]:
        return iter(self._items)

    def __len__(self) -> int:
        return len(self._items)

    @property
    def nbytes(self) -> int:
        return self._total


def category_codes(memories: Sequence[Memory]) -> np.ndarray:
    return np.fromiter((_CATEGORY_CODE[m.category] for m in memories), dtype=np.int8, count=len(memories))


def rank(cosines: np.ndarray, rows_per_word: Sequence[np.ndarray] | None, lengths: np.ndarray, codes: np.ndarray,
         created: np.ndarray, top_k: int, category: str | None, scoring: Scoring | None,
         rare: Sequence[bool] = ()) -> list[tuple[int, float, float]]:
    """The ranking rule, for any set of memories given as arrays: the ``top_k`` positions by
    ``scoring`` (cosine alone without it), each with its cosine and its keyword score (BM25 over
    these memories for the words whose rows ``rows_per_word`` lists, scaled by ``scale_keywords``;
    ``rare`` flags the words ``_scoring.rare_words`` finds). Memories not of ``category`` (when given)
    are left out."""
    keywords = bm25(rows_per_word, lengths) if rows_per_word else None
    if keywords is not None and category is not None:
        keywords[codes != _CATEGORY_CODE[category]] = 0.0
    matched_rare = any(flag and len(rows) for flag, rows in zip(rare, rows_per_word or ()))
    scaled = scale_keywords(keywords, matched_rare) if keywords is not None else None
    order = cosines if scoring is None else scoring.combine(cosines, scaled, created)
    if category is not None:
        order = np.where(codes == _CATEGORY_CODE[category], order, -np.inf)
    return [(int(i), float(cosines[i]), float(scaled[i]) if scaled is not None else 0.0)
            for i in _best(order, top_k) if order[i] > -np.inf]


def _best(scores: np.ndarray, k: int) -> np.ndarray:
    """Positions of the ``k`` highest scores, highest first (ties keep row order)."""
    k = min(k, len(scores))
    top = np.argpartition(-scores, k - 1)[:k] if k < len(scores) else np.arange(len(scores))
    return top[np.argsort(-scores[top], kind="stable")]
