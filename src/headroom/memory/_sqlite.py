"""The SQLite backend: one file, WAL, numbered migrations, FTS5, and the per-user vector index.

One connection per store, serialized by a lock, so any number of threads may share a store; write
transactions start with ``BEGIN IMMEDIATE``, so writers of all processes queue for the file. Other
connections (other processes, other stores) are noticed through ``PRAGMA data_version`` and the
per-user change counter of ``SQLStore``, and the affected index is reloaded before the next search.
"""

from __future__ import annotations

import logging
import os
import sqlite3
import stat
import time
from contextlib import contextmanager
from pathlib import Path
from typing import Any, Iterator, Sequence

import numpy as np

from ._errors import InvalidInputError, StorageError
from ._migrations import MIGRATIONS
from ._rows import blob
from ._sql_store import SQLStore, check, queue_check
from ._sqlite_file import connect, create_file, default_db_path

__all__ = ["SQLiteStore", "MIGRATIONS", "recorded_model"]  # MIGRATIONS re-exported from _migrations

logger = logging.getLogger(__name__)

_NO_KEYS = np.empty(0, dtype=np.int64)


def _phrase(word: str) -> str:
    """One word as an FTS5 string, so no query syntax leaks in."""
    return '"' + word.replace('"', '""') + '"'


class SQLiteStore(SQLStore):
    """Memories of many users in one SQLite file, for one embedding model."""

    def __init__(
        self,
        path: str | os.PathLike[str] | None,
        *,
        embedding_model: str,
        embedding_dim: int,
        busy_timeout: float = 30.0,
        index_cache_bytes: int | None = None,
    ) -> None:
        if path is not None and "\x00" in os.fspath(path):
            raise InvalidInputError("db_path holds a NUL character")
        if isinstance(path, str) and "://" in path:
            # A URL taken for a file name would create directories named after it, silently.
            raise InvalidInputError("SQLiteStore takes a file path, not a URL; open_store() chooses the backend")
        super().__init__(embedding_model=embedding_model, embedding_dim=embedding_dim,
                         index_cache_bytes=index_cache_bytes)
        self.path = str(Path(path).expanduser() if path is not None else default_db_path())
        create_file(self.path)
        self._db = connect(self.path, busy_timeout)
        try:
            self._migrate()
            self._check_model()
            self._data_version = self._db.execute("PRAGMA data_version").fetchone()[0]
        except sqlite3.DatabaseError as exc:
            self._db.close()
            raise StorageError(f"cannot use {self.path}: {exc}") from exc
        except Exception:
            self._db.close()
            raise

    @contextmanager
    def transaction(self) -> Iterator[sqlite3.Connection]:
        """One write transaction, taken up front so concurrent writers queue instead of failing.

        SQLite errors inside become ``StorageError``; any error rolls back. For the store and its
        extraction queue, not for callers.
        """
        with self._lock:
            try:
                self._db.execute("BEGIN IMMEDIATE")
            except sqlite3.Error as exc:
                raise StorageError(f"cannot write to {self.path}: {exc}") from exc
            try:
                yield self._db
            except sqlite3.Error as exc:
                self._rollback()
                raise StorageError(f"write to {self.path} failed: {exc}") from exc
            except BaseException:
                self._rollback()
                raise
            try:
                self._db.execute("COMMIT")
            except sqlite3.Error as exc:
                self._rollback()
                raise StorageError(f"cannot commit to {self.path}: {exc}") from exc

    def _rollback(self) -> None:
        """Undo the open transaction, if SQLite has not already (it rolls back by itself on some
        errors, a full disk among them); the error the caller sees is the one that caused it."""
        self._indexes.clear()  # an index may have been patched for the write that did not happen
        if self._db.in_transaction:
            try:
                self._db.execute("ROLLBACK")
            except sqlite3.Error as exc:
                logger.warning("rollback on %s failed: %s", self.path, exc)

    def query(self, sql: str, params: tuple) -> list[tuple]:
        with self._lock:
            try:
                return self._db.execute(sql, params).fetchall()
            except sqlite3.Error as exc:
                raise StorageError(f"cannot read {self.path}: {exc}") from exc

    def _migrate(self) -> None:
        with self.transaction() as db:
            db.execute(
                "CREATE TABLE IF NOT EXISTS headroom_migrations "
                "(version INTEGER PRIMARY KEY, name TEXT NOT NULL, applied_at REAL NOT NULL)"
            )
        applied = {r[0] for r in self._db.execute("SELECT version FROM headroom_migrations")}
        for version, name, migrate in MIGRATIONS:
            if version in applied:
                continue
            with self.transaction() as db:
                # Another process may have applied it while we waited for the write lock.
                if db.execute("SELECT 1 FROM headroom_migrations WHERE version = ?", (version,)).fetchone():
                    continue
                migrate(db)
                db.execute(
                    "INSERT INTO headroom_migrations (version, name, applied_at) VALUES (?, ?, ?)",
                    (version, name, time.time()),
                )
                logger.info("applied migration %d (%s) to %s", version, name, self.path)

    def close(self) -> None:
        with self._lock:
            self._db.close()
            self._indexes.clear()

    # -- what SQLStore asks of a backend ------------------------------------------------------------

    def _unchanged_elsewhere(self) -> bool:
        data_version = self.query("PRAGMA data_version", ())[0][0]
        if data_version == self._data_version:
            return True
        self._data_version = data_version  # another connection committed since we looked
        return False

    def _encode(self, vector: np.ndarray) -> bytes:
        return blob(vector)

    def _decode(self, values: Sequence[Any]) -> np.ndarray:
        return np.frombuffer(b"".join(values), dtype="<f4").reshape(len(values), -1).copy()

    def _defer_links(self, db: sqlite3.Connection) -> None:
        db.execute("PRAGMA defer_foreign_keys = ON")  # ends with the transaction

    def _matches(self, user_id: str, words: Sequence[str], user_rows: int) -> list[np.ndarray]:
        """For each word, the keys of the rows that hold it: one statement, a list of keys per word.

        Narrowed to the user's rows in FTS5 (with the user's token) only when they are under half of
        the file: at 10k memories of one user the token made the statement 0.67 ms instead of 0.23.
        Rows of other users that remain are not in the user's index, which drops them.
        """
        # max(pk) stands for the number of rows (a lookup, where count(*) read all 2M rows of the
        # scale benchmark, 20-50 ms a search); deleted rows only make it larger.
        narrow = user_rows < (self.query("SELECT max(pk) FROM memories", ())[0][0] or 0) / 2
        prefix = f'user_key : "u{user_id.encode().hex().upper()}" AND ' if narrow else ""
        one = "(SELECT group_concat(rowid) FROM memories_fts WHERE memories_fts MATCH ?)"
        (row,) = self.query("SELECT " + ", ".join([one] * len(words)),
                            tuple(f"{prefix}text : {_phrase(w)}" for w in words))
        return [np.fromstring(keys, dtype=np.int64, sep=",") if keys else _NO_KEYS for keys in row]

    def health(self) -> list[dict[str, Any]]:
        """Checks of the file, each ``{"check", "ok", "detail"}``: SQLite's integrity, the schema, the
        full-text index against the rows, rows waiting for vectors, the extraction queue, file modes."""
        integrity = self.query("PRAGMA integrity_check", ())[0][0]
        applied = self.query("SELECT MAX(version) FROM headroom_migrations", ())[0][0] or 0
        rows = self.query("SELECT COUNT(*) FROM memories", ())[0][0]
        indexed = self.query("SELECT COUNT(*) FROM memories_fts", ())[0][0]
        lost = self.query("SELECT COUNT(*) FROM memories m WHERE NOT EXISTS "
                          "(SELECT 1 FROM memories_fts f WHERE f.rowid = m.pk)", ())[0][0]
        bad_vectors = self.query("SELECT COUNT(*) FROM memories WHERE embedding IS NOT NULL AND length(embedding) != ?",
                                 (4 * self.embedding_dim,))[0][0]
        mode = stat.S_IMODE(os.stat(self.path).st_mode)
        return [
            check("integrity", integrity == "ok", integrity),
            check("schema", applied == len(MIGRATIONS), f"migration {applied} of {len(MIGRATIONS)}"),
            check("embedding model", True, f"{self.embedding_model} ({self.embedding_dim} dimensions)"),
            check("full-text index", indexed == rows and not lost,
                   f"{indexed} entries for {rows} rows, {lost} rows missing"),
            check("vectors", not bad_vectors,
                   f"{bad_vectors} of the wrong size; {self.unembedded_count()} rows waiting to be embedded"),
            queue_check(self),
            check("file mode", not mode & 0o077, f"{mode:04o} (owner only expected)"),
        ]


def recorded_model(path: str | os.PathLike[str] | None) -> str | None:
    """The embedding model the file at ``path`` records (None if there is no such file or it holds
    no memory yet), read-only: nothing is created or migrated."""
    where = Path(path).expanduser() if path is not None else Path(default_db_path())
    if not where.is_file():
        return None
    db = sqlite3.connect(where.resolve().as_uri() + "?mode=ro", uri=True)
    try:
        if not db.execute("SELECT 1 FROM sqlite_master WHERE name = 'headroom_meta'").fetchone():
            return None
        row = db.execute("SELECT value FROM headroom_meta WHERE key = 'embedding_model'").fetchone()
    finally:
        db.close()
    return str(row[0]) if row else None
