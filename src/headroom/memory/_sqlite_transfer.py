"""Whole-file operations of the SQLite backend, for the CLI and for moving data: the users in a
file, every row of a user (superseded ones and vectors included), and loading such rows back.

``dump`` gives a user's rows together, and ``load`` takes them together: a superseded row's
successor may come before or after it. ``load`` is idempotent: a row whose id the file has is
skipped, and so is a live row whose text the user already has under another id (the file's rule:
one live memory per text). Rows keep their ids,
times, sources and supersession links, so an export loaded into an empty file is the same memory.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Iterator, Sequence

import numpy as np

from ._models import Memory
from ._sqlite_rows import COLUMNS, row_to_memory, vector_of

if TYPE_CHECKING:
    from ._sqlite import SQLiteStore

__all__ = ["users", "dump", "load", "health", "UserSummary"]

UserSummary = dict  # {"user_id": str, "memories": int (live), "last_write": float (POSIX seconds)}
_BATCH = 500


def users(store: SQLiteStore) -> list[UserSummary]:
    """Every user with a row in the file: live memories and the time of the last write, by id."""
    rows = store.query(
        "SELECT user_id, SUM(superseded_by IS NULL), MAX(MAX(updated_at), COALESCE(MAX(superseded_at), 0)) "
        "FROM memories GROUP BY user_id ORDER BY user_id", ())
    return [{"user_id": u, "memories": int(n or 0), "last_write": float(t)} for u, n, t in rows]


def dump(store: SQLiteStore, user_id: str | None = None) -> Iterator[tuple[Memory, np.ndarray | None]]:
    """Every row (of ``user_id``, or of every user), user by user and oldest first, with its vector
    if it has one. Read in batches, so a large file is never held in memory at once."""
    names = [user_id] if user_id is not None else [u for (u,) in store.query(
        "SELECT DISTINCT user_id FROM memories ORDER BY user_id", ())]
    for name in names:
        last = 0
        while True:
            rows = store.query(f"SELECT pk, {COLUMNS}, embedding FROM memories WHERE user_id = ? AND pk > ? "
                               f"ORDER BY pk LIMIT {_BATCH}", (name, last))
            if not rows:
                break
            for row in rows:
                yield row_to_memory(row[1:-1]), None if row[-1] is None else vector_of(row[-1])
            last = rows[-1][0]


def load(store: SQLiteStore, rows: Sequence[tuple[Memory, np.ndarray | None]]) -> int:
    """Insert the rows the file does not have yet, in one transaction; returns how many were new.
    A vector must have the store's dimension (else the row is stored without one, to be embedded).
    A superseded row's successor must be in the file or in ``rows`` (links are checked at commit,
    so their order does not matter): load a user's rows together."""
    added = 0
    touched: set[str] = set()
    with store.transaction() as db:
        db.execute("PRAGMA defer_foreign_keys = ON")  # ends with the transaction
        for memory, vector in rows:
            if vector is not None and len(vector) != store.embedding_dim:
                vector = None
            if db.execute("SELECT 1 FROM memories WHERE id = ?", (memory.id,)).fetchone() or (
                    memory.superseded_by is None and store._same_text(db, memory) is not None):
                continue
            store._insert_row(db, memory, vector)  # with its supersession link, if it has one
            added += 1
            touched.add(memory.user_id)
        for user_id in touched:
            store._bump(db, user_id)  # a cached index of these users is stale now: reloaded on next use
    return added


def health(store: SQLiteStore) -> list[dict]:
    """Checks of the file, each ``{"check", "ok", "detail"}``: SQLite's integrity, the schema, the
    full-text index against the rows, rows waiting for vectors, the extraction queue, file modes."""
    import os
    import stat

    from ._migrations import MIGRATIONS

    def one(name: str, ok: bool, detail: str) -> dict:
        return {"check": name, "ok": bool(ok), "detail": detail}

    integrity = store.query("PRAGMA integrity_check", ())[0][0]
    applied = store.query("SELECT MAX(version) FROM headroom_migrations", ())[0][0] or 0
    rows = store.query("SELECT COUNT(*) FROM memories", ())[0][0]
    indexed = store.query("SELECT COUNT(*) FROM memories_fts", ())[0][0]
    lost = store.query("SELECT COUNT(*) FROM memories m WHERE NOT EXISTS "
                       "(SELECT 1 FROM memories_fts f WHERE f.rowid = m.pk)", ())[0][0]
    waiting = store.unembedded_count()
    bad_vectors = store.query("SELECT COUNT(*) FROM memories WHERE embedding IS NOT NULL AND length(embedding) != ?",
                              (4 * store.embedding_dim,))[0][0]
    jobs = dict(store.query("SELECT status, COUNT(*) FROM extraction_jobs GROUP BY status", ()))
    mode = stat.S_IMODE(os.stat(store.path).st_mode)
    return [
        one("integrity", integrity == "ok", integrity),
        one("schema", applied == len(MIGRATIONS), f"migration {applied} of {len(MIGRATIONS)}"),
        one("embedding model", True, f"{store.embedding_model} ({store.embedding_dim} dimensions)"),
        one("full-text index", indexed == rows and not lost, f"{indexed} entries for {rows} rows, {lost} rows missing"),
        one("vectors", not bad_vectors, f"{bad_vectors} of the wrong size; {waiting} rows waiting to be embedded"),
        one("extraction queue", not jobs.get("failed"), f"{jobs.get('pending', 0)} pending, "
            f"{jobs.get('running', 0)} running, {jobs.get('failed', 0)} failed (retry-failed puts them back)"),
        one("file mode", not mode & 0o077, f"{mode:04o} (owner only expected)"),
    ]
