"""Embedding stored memories off the caller's thread.

A memory extracted from a reply is written at once without a vector (durable, listed), and this
worker embeds it a few milliseconds later. The row itself is the queue: whatever a process leaves
unembedded (a crash, a dead embedding service) is picked up by the next one that opens the file.
"""

from __future__ import annotations

import atexit
import logging
import threading
import weakref
from typing import Any

from ._embedders import Embedder
from ._errors import HeadroomMemoryError
from ._scoring import batch_twins, near_duplicate
from ._store import Store

__all__ = ["EmbeddingWorker", "EXIT_WAIT_SECONDS", "stop_at_exit"]

logger = logging.getLogger(__name__)

#: How long ``close()`` and interpreter exit wait for each background worker of a memory; what is
#: not done by then stays in the file (unembedded rows, queued jobs) for the next process.
EXIT_WAIT_SECONDS = 10.0
BATCH = 64

# Background workers to finish at interpreter exit, by order (extraction before embedding). A worker
# stays alive while its thread runs, so weak references lose nothing that still has work.
_AT_EXIT: "weakref.WeakKeyDictionary[Any, int]" = weakref.WeakKeyDictionary()


def stop_at_exit(worker: Any, order: int) -> None:
    _AT_EXIT[worker] = order


@atexit.register
def _drain_at_exit() -> None:
    for worker in sorted(list(_AT_EXIT.keys()), key=lambda w: _AT_EXIT.get(w, 0)):
        worker.stop(EXIT_WAIT_SECONDS)


class EmbeddingWorker:
    """One daemon thread per user memory; ``kick`` asks it to look for work, ``wait`` for it to finish."""

    def __init__(self, user_id: str, store: Store, embedder: Embedder, *, retry_delay: float = 0.5,
                 max_delay: float = 30.0) -> None:
        self.user_id = user_id
        self._store = store
        self._embedder = embedder
        self._retry_delay = retry_delay
        self._max_delay = max_delay
        self._cond = threading.Condition()
        self._requested = 0  # kicks asked for
        self._served = 0  # kicks whose work was fully done
        self._stopping = False
        self._failed = 0  # the last kick count an attempt failed for; waiting on it would only stall
        self._thread: threading.Thread | None = None
        stop_at_exit(self, order=1)

    def kick(self) -> None:
        with self._cond:
            self._requested += 1
            self._cond.notify_all()
            if self._thread is None or not self._thread.is_alive():
                self._stopping = False
                self._thread = threading.Thread(target=self._run, name=f"headroom-embed-{self.user_id}",
                                                daemon=True)
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
        while True:
            batch = self._store.unembedded(self.user_id, BATCH)
            if not batch:
                return True
            try:
                vectors = self._embedder.embed([m.text for m in batch])
                in_batch = batch_twins([m.text for m in batch], vectors)
                keep = []
                for i, memory in enumerate(batch):
                    first = in_batch[i]
                    twin = near_duplicate(self._store, self.user_id, memory.text, vectors[i]) if first is None \
                        else batch[first]
                    # It says what a memory of the user already says: merged, unless it replaced one.
                    if twin is not None and len(self._store.history(self.user_id, memory.id)) == 1:
                        logger.info("memory %s merged into its near duplicate %s", memory.id, twin.id)
                        self._store.delete(self.user_id, memory.id)
                    else:
                        keep.append(i)
                self._store.set_vectors([batch[i] for i in keep], vectors[keep])
            except HeadroomMemoryError as exc:
                logger.warning("could not embed %d stored memories of %r yet (kept, will retry): %s",
                               len(batch), self.user_id, exc)
                return False

    def _run(self) -> None:
        delay = self._retry_delay
        while True:
            with self._cond:
                self._cond.wait_for(lambda: self._requested > self._served or self._stopping)
                if self._requested == self._served:
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
                        return  # the rows stay in the file for the next process
                    self._cond.wait(delay)
                    delay = min(delay * 2, self._max_delay)
