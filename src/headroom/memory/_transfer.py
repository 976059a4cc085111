"""Copying memories between any two stores (``headroom-memory migrate``): only ``Store.dump`` and
``Store.load``, so it works for every pair of backends, SQLite and PostgreSQL alike.

Rows go over in batches, each one transaction on the target. A superseded row may point at a
successor written after it; such a row waits for the batch that brings its successor, so no
transaction holds a link to a row the target does not have yet. ``load`` skips what the target
has, so running a copy again adds nothing and an interrupted copy resumes where it stopped.
"""

from __future__ import annotations

from typing import Callable

import numpy as np

from ._models import Memory
from ._store import Store

__all__ = ["copy_memories"]

Row = tuple[Memory, "np.ndarray | None"]


def copy_memories(source: Store, target: Store, user_id: str | None = None, *, batch: int = 1000,
                  progress: Callable[[int], None] = lambda rows: None) -> tuple[int, int]:
    """Copy every row of ``user_id`` (or of every user), superseded ones, links, times and vectors
    included, from ``source`` to ``target``; returns ``(rows read, rows new in target)``.
    ``progress(n)`` is called after each batch with the rows it read."""
    read = added = 0
    pending: list[Row] = []
    seen: set[str] = set()  # ids of the current user's rows read so far
    held: list[Row] = []  # rows whose successor has not come yet
    current: str | None = None

    def flush(final: bool) -> None:
        nonlocal added, pending, held
        ready: list[Row] = []
        waiting: list[Row] = []
        for row in held + pending:
            link = row[0].superseded_by
            (ready if final or link is None or link in seen else waiting).append(row)
        added += target.load(ready) if ready else 0
        progress(len(pending))
        pending, held = [], waiting

    for memory, vector in source.dump(user_id):
        if memory.user_id != current:
            if pending or held:
                flush(final=True)  # a user's links never point at another user's rows
            current, seen = memory.user_id, set()
        seen.add(memory.id)
        pending.append((memory, vector))
        read += 1
        if len(pending) >= batch:
            flush(final=False)
    if pending or held:
        flush(final=True)
    return read, added
