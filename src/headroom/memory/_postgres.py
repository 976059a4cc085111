"""The PostgreSQL backend: memory that several hosts share, on PostgreSQL with pgvector.

``PostgresStore`` is an ``SQLStore``: the same statements, rules and per-user index as the SQLite
file, so search ranks alike on both. What PostgreSQL needs besides:

- Its tables live in their own schema (``headroom``) of the database the URL names; the schema is
  created and migrated on first use, under an advisory lock, so any number of processes may start
  at once (``_postgres_schema.py``).
- Writers of one user are serialized by a transaction-scoped advisory lock on that user (SQLite
  serializes all writers with its file lock), so the near-duplicate check of one writer sees what
  another just committed. Locks are taken in a fixed order: two writers cannot deadlock.
- Nothing in a process can go stale: a search compares its cached index's counter with the user's
  row in ``user_versions`` (one indexed read) before trusting it.
- Connections come from a pool (psycopg_pool). One that broke (the server restarted) fails its
  call with ``StorageError`` and is replaced; the next call gets a fresh one.

Install with ``pip install 'headroom-memory[postgres]'``; psycopg is imported only here.
"""

from __future__ import annotations

import logging
import os
import re
import time
import zlib
from contextlib import contextmanager
from functools import lru_cache
from typing import Any, Iterator, Sequence

import numpy as np

from ._errors import ForeignDatabaseError, StorageError
from ._postgres_schema import MIGRATIONS
from ._sql_store import SQLStore, check, queue_check
from ._sqlite_file import default_cache_bytes

__all__ = ["PostgresStore", "postgres_store"]

logger = logging.getLogger(__name__)

SCHEMA = "headroom"
#: The first key of every advisory lock this package takes (the second names what is locked).
_LOCK_SPACE = 0x48524D  # "HRM"
_MIGRATION_LOCK = 0
_NO_KEYS = np.empty(0, dtype=np.int64)


def _redacted(url: str) -> str:
    """The URL without its password, for messages and ``stats()``."""
    return re.sub(r"^(postgres(?:ql)?://[^:/@]*):[^@]+@", r"\1:***@", url)


@lru_cache(maxsize=256)
def _pg(sql: str) -> str:
    """A statement written for SQLStore (``?`` placeholders) in psycopg's style (``%s``)."""
    return sql.replace("%", "%%").replace("?", "%s")


def _user_key(user_id: str) -> int:
    """The advisory-lock key of a user: a signed 32-bit hash (two users may share one; that only
    serializes them)."""
    value = zlib.crc32(user_id.encode())
    return value - 2**32 if value >= 2**31 else value


class _Transaction:
    """The connection of an open transaction, speaking SQLStore's ``?`` statements."""

    def __init__(self, conn: Any) -> None:
        self.conn = conn

    def execute(self, sql: str, params: Sequence[Any] = ()) -> Any:
        return self.conn.execute(_pg(sql), params, binary=True)

    def executemany(self, sql: str, rows: Sequence[Sequence[Any]]) -> None:
        with self.conn.cursor() as cursor:
            cursor.executemany(_pg(sql), rows)


def _modules() -> tuple[Any, Any, Any]:
    try:
        import psycopg
        import psycopg_pool
        from pgvector.psycopg import register_vector
    except ImportError as exc:  # pragma: no cover - depends on the installed extras
        raise StorageError(
            "a postgresql:// db_path needs the postgres extra: pip install 'headroom-memory[postgres]'"
        ) from exc
    return psycopg, psycopg_pool, register_vector


class PostgresStore(SQLStore):
    """Memories of many users in one PostgreSQL database (schema ``headroom``), for one embedding model."""

    row_lock = " FOR UPDATE SKIP LOCKED"

    def __init__(
        self,
        url: str,
        *,
        embedding_model: str,
        embedding_dim: int,
        pool_size: int = 4,
        connect_timeout: float = 5.0,
        index_cache_bytes: int | None = None,
    ) -> None:
        super().__init__(embedding_model=embedding_model, embedding_dim=embedding_dim,
                         index_cache_bytes=index_cache_bytes if index_cache_bytes is not None else default_cache_bytes())
        self.url = url
        self.path = _redacted(url)
        self._psycopg, pool_module, self._register_vector = _modules()
        self._timeout = connect_timeout
        self._tx: _Transaction | None = None
        self._migrate()
        self._pool = pool_module.ConnectionPool(
            url, min_size=1, max_size=pool_size, kwargs={"autocommit": True, "connect_timeout": int(connect_timeout)},
            configure=self._configure, timeout=connect_timeout, open=False, name="headroom-memory")
        try:
            self._pool.open(wait=True, timeout=connect_timeout)
            self._check_model()
        except Exception as exc:
            self._pool.close()
            if isinstance(exc, StorageError):
                raise
            raise StorageError(f"cannot use {self.path}: {exc}") from exc

    # -- connections ------------------------------------------------------------------------------

    def _connect(self) -> Any:
        try:
            return self._psycopg.connect(self.url, autocommit=True, connect_timeout=int(self._timeout))
        except self._psycopg.Error as exc:
            raise StorageError(f"cannot connect to {self.path}: {exc}") from exc

    def _configure(self, conn: Any) -> None:
        """Every pooled connection: our schema first on the search path, vectors as numpy arrays."""
        conn.execute(f"SET search_path TO {SCHEMA}, {self._vector_schema}")
        self._register_vector(conn)

    @contextmanager
    def transaction(self) -> Iterator[_Transaction]:
        """One transaction on a pooled connection, under the store's lock. Database and pool errors
        become ``StorageError``; any error rolls back and drops the cached indexes (one may have
        been patched for the write that did not happen)."""
        with self._lock:
            if self._tx is not None:
                raise RuntimeError("transactions of a store do not nest")
            try:
                with self._pool.connection() as conn, conn.transaction():
                    self._tx = _Transaction(conn)
                    try:
                        yield self._tx
                    finally:
                        self._tx = None
            except self._psycopg.Error as exc:
                self._indexes.clear()
                raise StorageError(f"write to {self.path} failed: {exc}") from exc
            except BaseException as exc:
                self._indexes.clear()
                if type(exc).__module__.startswith("psycopg_pool"):
                    raise StorageError(f"no connection to {self.path}: {exc}") from exc
                raise

    def query(self, sql: str, params: tuple) -> list[tuple]:
        """Rows of one read; a read on a connection that broke (the server restarted since it was
        last used) is tried once more on a fresh one: reads change nothing, so that is safe."""
        with self._lock:
            if self._tx is not None:
                return list(self._tx.execute(sql, params).fetchall())
            for attempt in (1, 2):
                conn = None
                try:
                    with self._pool.connection() as conn:
                        return list(conn.execute(_pg(sql), params, binary=True).fetchall())
                except self._psycopg.OperationalError as exc:
                    if attempt == 1 and conn is not None and conn.broken:
                        logger.info("connection to %s broke (%s); reading again on a new one", self.path, exc)
                        continue
                    raise StorageError(f"cannot read {self.path}: {exc}") from exc
                except self._psycopg.Error as exc:
                    raise StorageError(f"cannot read {self.path}: {exc}") from exc
                except Exception as exc:
                    if type(exc).__module__.startswith("psycopg_pool"):
                        raise StorageError(f"no connection to {self.path}: {exc}") from exc
                    raise
            raise AssertionError("unreachable")

    def close(self) -> None:
        with self._lock:
            self._pool.close()
            self._indexes.clear()

    # -- schema -----------------------------------------------------------------------------------

    def _migrate(self) -> None:
        """Create the schema and apply missing migrations, one transaction each, while holding an
        advisory lock: processes starting together take turns, and each finds the others' work."""
        conn = self._connect()
        try:
            conn.execute("SELECT pg_advisory_lock(%s, %s)", (_LOCK_SPACE, _MIGRATION_LOCK))
            self._vector_schema = self._ensure_vector(conn)
            conn.execute(f"CREATE SCHEMA IF NOT EXISTS {SCHEMA}")
            conn.execute(f"SET search_path TO {SCHEMA}, {self._vector_schema}")
            tables = {r[0] for r in conn.execute(
                "SELECT tablename FROM pg_tables WHERE schemaname = %s", (SCHEMA,))}
            if tables and "headroom_migrations" not in tables:
                raise ForeignDatabaseError(f"schema {SCHEMA!r} of {self.path} belongs to another application "
                                           f"(tables: {', '.join(sorted(tables)[:5])}); refusing to touch it")
            conn.execute("CREATE TABLE IF NOT EXISTS headroom_migrations "
                         "(version INTEGER PRIMARY KEY, name TEXT NOT NULL, applied_at DOUBLE PRECISION NOT NULL)")
            applied = {r[0] for r in conn.execute("SELECT version FROM headroom_migrations")}
            for version, name, migrate in MIGRATIONS:
                if version in applied:
                    continue
                with conn.transaction():
                    migrate(conn, self.embedding_dim)
                    conn.execute("INSERT INTO headroom_migrations (version, name, applied_at) VALUES (%s, %s, %s)",
                                 (version, name, time.time()))
                logger.info("applied migration %d (%s) to %s", version, name, self.path)
        except self._psycopg.Error as exc:
            raise StorageError(f"cannot set up {self.path}: {exc}") from exc
        finally:
            conn.close()  # ends the session, and its advisory lock with it

    def _ensure_vector(self, conn: Any) -> str:
        """The schema holding pgvector's types, creating the extension if it is not there yet."""
        row = conn.execute("SELECT extnamespace::regnamespace::text FROM pg_extension WHERE extname = 'vector'").fetchone()
        if row is None:
            try:
                conn.execute("CREATE EXTENSION IF NOT EXISTS vector")
            except self._psycopg.Error as exc:
                raise StorageError(f"{self.path} has no pgvector and cannot create it ({exc}); run "
                                   "CREATE EXTENSION vector in that database as its owner") from exc
            row = conn.execute("SELECT extnamespace::regnamespace::text FROM pg_extension "
                               "WHERE extname = 'vector'").fetchone()
        return str(row[0])

    # -- what SQLStore asks of a backend ------------------------------------------------------------

    def _lock_users(self, db: _Transaction, user_ids: Sequence[str]) -> None:
        for key in sorted({_user_key(u) for u in user_ids}):  # one order for every writer: no deadlock
            db.execute("SELECT pg_advisory_xact_lock(?, ?)", (_LOCK_SPACE, key))

    def _defer_links(self, db: _Transaction) -> None:
        db.execute("SET CONSTRAINTS ALL DEFERRED")

    def _encode(self, vector: np.ndarray) -> np.ndarray:
        return np.ascontiguousarray(vector, dtype=np.float32)

    def _decode(self, values: Sequence[Any]) -> np.ndarray:
        if not len(values):
            return np.empty((0, self.embedding_dim), dtype=np.float32)
        return np.stack([v.to_numpy() for v in values]).astype(np.float32, copy=False)  # pgvector's Vector

    def _matches(self, user_id: str, words: Sequence[str], user_rows: int) -> list[np.ndarray]:
        """For each word, the keys of the user's rows whose text holds it (English stemming)."""
        one = ("(SELECT array_agg(pk) FROM memories WHERE user_id = ? "
               "AND words @@ plainto_tsquery('english', ?))")
        (row,) = self.query("SELECT " + ", ".join([one] * len(words)),
                            tuple(v for w in words for v in (user_id, w)))
        return [np.asarray(keys, dtype=np.int64) if keys else _NO_KEYS for keys in row]

    def health(self) -> list[dict[str, Any]]:
        """Checks of the database: the server, pgvector, the schema, the vectors, the extraction queue."""
        version = self.query("SHOW server_version", ())[0][0]
        vector = self.query("SELECT extversion FROM pg_extension WHERE extname = 'vector'", ())
        applied = self.query("SELECT MAX(version) FROM headroom_migrations", ())[0][0] or 0
        bad = self.query("SELECT COUNT(*) FROM memories WHERE embedding IS NOT NULL AND vector_dims(embedding) != ?",
                         (self.embedding_dim,))[0][0]
        return [
            check("server", True, f"PostgreSQL {version} at {self.path}"),
            check("pgvector", bool(vector), f"version {vector[0][0]}" if vector else "not installed"),
            check("schema", applied == len(MIGRATIONS), f"migration {applied} of {len(MIGRATIONS)} in {SCHEMA!r}"),
            check("embedding model", True, f"{self.embedding_model} ({self.embedding_dim} dimensions)"),
            check("vectors", not bad, f"{bad} of the wrong size; {self.unembedded_count()} rows waiting to be embedded"),
            queue_check(self),
        ]


def postgres_store(url: str, *, embedding_model: str, embedding_dim: int) -> PostgresStore:
    """A ``PostgresStore`` for ``url``, with the pool size of ``$HEADROOM_PG_POOL`` (default 4)."""
    size = os.environ.get("HEADROOM_PG_POOL", "4")
    return PostgresStore(url, embedding_model=embedding_model, embedding_dim=embedding_dim,
                         pool_size=max(1, int(size)) if size.isdigit() else 4)
