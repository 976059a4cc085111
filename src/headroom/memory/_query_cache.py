"""Query embeddings kept for a short while, so a query searched twice is embedded once.

The same text is often searched twice within seconds: ``with_fast_memory`` searches the user's
message, a block-only reply is asked again with the same message, and background extraction looks
up the notes that message already matches. Embedding the query is nearly all of a search's time
(bench/RESULTS.md), so each embedder gets a small cache: at most ``SIZE`` texts, each for at most
``TTL_SECONDS``. A query embedding does not depend on what is stored, so a cached one is never stale
for search; the bound keeps memory small and the window keeps a changed embedder from serving old
vectors for long.
"""

from __future__ import annotations

import threading
import time
import weakref
from collections import OrderedDict
from typing import Any

import numpy as np

__all__ = ["embed_query", "clear", "SIZE", "TTL_SECONDS"]

SIZE = 256
TTL_SECONDS = 60.0

_CACHES: "weakref.WeakKeyDictionary[Any, _Cache]" = weakref.WeakKeyDictionary()
_LOCK = threading.Lock()


class _Cache:
    def __init__(self) -> None:
        self.entries: OrderedDict[str, tuple[float, np.ndarray]] = OrderedDict()
        self.lock = threading.Lock()

    def get(self, text: str, now: float) -> np.ndarray | None:
        with self.lock:
            found = self.entries.get(text)
            if found is None or now - found[0] > TTL_SECONDS:
                return None
            self.entries.move_to_end(text)
            return found[1]

    def put(self, text: str, vector: np.ndarray, now: float) -> None:
        with self.lock:
            self.entries[text] = (now, vector)
            self.entries.move_to_end(text)
            while len(self.entries) > SIZE:
                self.entries.popitem(last=False)


def _cache_of(embedder: Any) -> _Cache | None:
    with _LOCK:
        try:
            cache = _CACHES.get(embedder)
            if cache is None:
                cache = _CACHES[embedder] = _Cache()
        except TypeError:  # an embedder that cannot be weakly referenced: not cached
            return None
    return cache


def embed_query(embedder: Any, text: str) -> np.ndarray:
    """``embedder``'s vector for ``text``, from the cache when it was embedded in the last minute.
    The vector is read-only: a caller that changes it would change it for the next one."""
    cache = _cache_of(embedder)
    now = time.monotonic()
    if cache is not None:
        found = cache.get(text, now)
        if found is not None:
            return found
    vector = np.array(embedder.embed([text])[0], dtype=np.float32)
    vector.setflags(write=False)
    if cache is not None:
        cache.put(text, vector, now)
    return vector


def clear() -> None:
    """Forget every cached query (benchmarks that time a search's own embedding call this first)."""
    with _LOCK:
        caches = list(_CACHES.values())
    for cache in caches:
        with cache.lock:
            cache.entries.clear()
