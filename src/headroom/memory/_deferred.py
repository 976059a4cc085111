"""Embedding stored memories off the caller's thread.

A memory extracted from a reply is written at once without a vector (durable, listed), and a
worker embeds it a few milliseconds later. The rows themselves are the queue: whatever a process
leaves unembedded (a crash, a dead embedding service) is picked up by the next one that opens the
file. There is one worker per store, serving every user of it; workers of other stores and other
processes on the same file share the rows through short claims (``Store.claim_unembedded``), and
``Store.settle_vectors`` checks every row again in the transaction that stores its vector, so two
workers never lose or duplicate a memory whatever their timing.
"""

from __future__ import annotations

import atexit
import logging
import threading
import weakref
from typing import Any

from ._embedders import Embedder
from ._store import Store

__all__ = ["EmbeddingWorker", "EXIT_WAIT_SECONDS", "stop_at_exit"]

logger = logging.getLogger(__name__)

#: How long ``close()`` and interpreter exit wait for each background worker of a memory; what is
#: not done by then stays in the file (unembedded rows, queued jobs) for the next process.
EXIT_WAIT_SECONDS = 10.0
BATCH = 64
#: How long a worker holds the rows it is embedding before another may take them.
CLAIM_SECONDS = 60.0
#: How long an idle worker thread lives before it ends (a kick starts a new one).
IDLE_SECONDS = 5.0
#: How often a worker looks again at rows another worker has claimed.
OTHERS_POLL_SECONDS = 0.02

# Background workers to finish at interpreter exit, by order (extraction before embedding). A worker
# stays alive while its thread runs, so weak references lose nothing that still has work.
_AT_EXIT: "weakref.WeakKeyDictionary[Any, int]" = weakref.WeakKeyDictionary()
# The embedding worker of each store, by id(store). A worker holds its store (so the id is not reused
# while it lives) and is held by the memory objects on that store and by its running thread.
_WORKERS: "weakref.WeakValueDictionary[int, EmbeddingWorker]" = weakref.WeakValueDictionary()
_WORKERS_LOCK = threading.Lock()


def stop_at_exit(worker: Any, order: int) -> None:
    _AT_EXIT[worker] = order


@atexit.register
def _drain_at_exit() -> None:
    for worker in sorted(list(_AT_EXIT.keys()), key=lambda w: _AT_EXIT.get(w, 0)):
        worker.stop(EXIT_WAIT_SECONDS)


class EmbeddingWorker:
    """One daemon thread per store; ``kick`` asks it to embed what waits, ``wait`` for that to be done."""

    def __init__(self, store: Store, embedder: Embedder, *, retry_delay: float = 0.5, max_delay: float = 30.0,
                 claim_seconds: float = CLAIM_SECONDS) -> None:
        self._store = store
        self._embedder = embedder
        self._retry_delay = retry_delay
        self._max_delay = max_delay
        self._claim_seconds = claim_seconds
        self._cond = threading.Condition()
        self._requested = 0  # kicks asked for
        self._served = 0  # kicks whose work was fully done
        self._stopping = False
        self._failed = 0  # the last kick count an attempt failed for; waiting on it would only stall
        self._thread: threading.Thread | None = None
        stop_at_exit(self, order=1)

    @classmethod
    def of(cls, store: Store, embedder: Embedder) -> "EmbeddingWorker":
        """The worker of ``store``, made on first use: every memory object on one store shares it."""
        with _WORKERS_LOCK:
            worker = _WORKERS.get(id(store))
            if worker is None:
                worker = _WORKERS[id(store)] = cls(store, embedder)
            return worker

    def kick(self) -> None:
        with self._cond:
            self._requested += 1
            self._stopping = False
            self._cond.notify_all()
            if self._thread is None or not self._thread.is_alive():
                self._thread = threading.Thread(target=self._run, name="headroom-embed", daemon=True)
                self._thread.start()

    @property
    def failing(self) -> bool:
        """The last attempt failed and nothing has succeeded since."""
        return self._failed > self._served

    def wait(self, timeout: float | None = None) -> bool:
        """Wait until every kick so far is served; False on timeout or when an attempt at it failed."""
        with self._cond:
            target = self._requested
            self._cond.wait_for(lambda: self._served >= target or self._failed >= target, timeout)
            return self._served >= target

    def stop(self, timeout: float = EXIT_WAIT_SECONDS) -> None:
        """Finish what is queued (bounded by ``timeout``), then end the thread."""
        with self._cond:
            self._stopping = True
            self._cond.notify_all()
            thread = self._thread
        if thread is not None:
            thread.join(timeout)

    def _drain(self) -> bool:
        """Embed every row that was waiting when called; True when none of them waits any more."""
        store = self._store
        batch: list[Any] = []
        try:
            mark = store.write_mark()
            while True:
                batch = store.claim_unembedded(mark, BATCH, self._claim_seconds)
                if batch:
                    self._embed(store, batch)
                    continue
                if not store.unembedded_count(mark):
                    return True
                with self._cond:  # rows another worker holds: wait for it, or for its claim to lapse
                    if self._stopping:
                        return False
                    self._cond.wait(OTHERS_POLL_SECONDS)
        except Exception as exc:  # the embedder, the disk: the rows stay in the file, tried again later
            logger.warning("could not embed %d stored memories yet (kept, will retry): %s: %s",
                           len(batch), type(exc).__name__, exc)
            return False

    def _embed(self, store: Store, batch: list[Any]) -> None:
        try:
            vectors = self._embedder.embed([m.text for m in batch])
        except BaseException:
            try:
                store.release_claims(batch)
            except Exception as exc:  # the claims lapse by themselves
                logger.debug("could not release embedding claims: %s", exc)
            raise
        store.settle_vectors(batch, vectors)

    def _run(self) -> None:
        delay = self._retry_delay
        while True:
            with self._cond:
                if not self._cond.wait_for(lambda: self._requested > self._served or self._stopping, IDLE_SECONDS):
                    self._thread = None  # idle: the next kick starts a new thread
                    return
                if self._requested == self._served:
                    self._thread = None
                    return  # stopping, nothing left
                target = self._requested
            ok = self._drain()
            with self._cond:
                if ok:
                    self._served = target
                    delay = self._retry_delay
                else:
                    self._failed = target
                self._cond.notify_all()
                if not ok:
                    if self._stopping:
                        self._thread = None
                        return  # the rows stay in the file for the next process
                    self._cond.wait(delay)
                    delay = min(delay * 2, self._max_delay)
