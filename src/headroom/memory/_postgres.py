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
- One connection per store, like the SQLite backend's: the store's lock serializes its statements
  anyway (so a pool would keep one connection busy and the rest idle). A connection that broke
  (the server restarted or went away) fails its call with ``StorageError`` and is replaced on the
  next call, at once; a read on it is tried once more on a fresh one, since a read changes nothing.

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
from ._index import VectorIndex
from ._models import Memory
from ._postgres_graphs import build_in_background, graph_status, valid_graphs
from ._postgres_schema import MIGRATIONS, SCHEMA
from ._postgres_search import DatabaseIndex, count_searchable, graph_name
from ._scoring import Scoring
from ._sql_store import SQLStore, check, queue_check

__all__ = ["PostgresStore", "postgres_store", "recorded_model"]

logger = logging.getLogger(__name__)

#: The first key of the advisory locks of migrations and writes (the second names what is locked);
#: a graph's build takes its own (``_postgres_graphs``), so it never holds up its user's writes.
_LOCK_SPACE = 0x48524D  # "HRM"
_MIGRATION_LOCK = 0
_NO_KEYS = np.empty(0, dtype=np.int64)
#: A user with more searchable memories than this is searched in the database (``_postgres_search``)
#: instead of in a per-process index (at 384 dimensions about 1.5 KB a memory: 75 MB here).
MEMORY_ROWS = 50_000
#: How long a user counted as large stays so before it is counted again.
RECOUNT_SECONDS = 60.0
#: How long the table's word statistics are used before they are read again.
STATISTICS_SECONDS = 600.0
#: Candidates HNSW gathers per step of its iterative scan (pgvector's hnsw.ef_search);
#: ``$HEADROOM_PG_EF_SEARCH`` overrides it (more: better recall, slower searches of large users).
EF_SEARCH = 1000
#: A load of at least this many new rows may gather the planner's statistics (``load``).
ANALYZE_ROWS = 1_000
#: A user with at most this many memories has its rows tested for a query word one by one (``_matches``).
FILTER_ROWS = 5_000


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


def _modules() -> tuple[Any, Any]:
    try:
        import psycopg
        from pgvector.psycopg import register_vector
    except ImportError as exc:  # pragma: no cover - depends on the installed extras
        raise StorageError(
            "a postgresql:// db_path needs the postgres extra: pip install 'headroom-memory[postgres]'"
        ) from exc
    return psycopg, register_vector


def _ef_search() -> int:
    value = os.environ.get("HEADROOM_PG_EF_SEARCH", "")
    return int(value) if value.isdigit() and 1 <= int(value) <= 1000 else EF_SEARCH


@lru_cache(maxsize=1)
def _raw_vectors(psycopg: Any) -> type:
    """A loader of pgvector's binary ``vector`` as plain bytes: decoding a whole result at once in
    numpy is many times faster than one ``pgvector.Vector`` per row."""
    from psycopg.adapt import Loader

    class RawVector(Loader):
        format = psycopg.pq.Format.BINARY

        def load(self, data: Any) -> bytes:
            return bytes(data)

    return RawVector


def _reason(exc: Exception) -> str:
    """What went wrong, without the server's DETAIL line: for a failed row it quotes the row, and
    a memory's text must not reach the log through an error message."""
    primary = getattr(getattr(exc, "diag", None), "message_primary", None)
    return primary or str(exc).split("\nDETAIL:")[0]


class PostgresStore(SQLStore):
    """Memories of many users in one PostgreSQL database (schema ``headroom``), for one embedding model."""

    row_lock = " FOR UPDATE SKIP LOCKED"

    def __init__(
        self,
        url: str,
        *,
        embedding_model: str,
        embedding_dim: int,
        connect_timeout: float = 5.0,
        index_cache_bytes: int | None = None,
        memory_rows: int = MEMORY_ROWS,
        auto_graphs: bool | None = None,
    ) -> None:
        super().__init__(embedding_model=embedding_model, embedding_dim=embedding_dim,
                         index_cache_bytes=index_cache_bytes)
        self.url = url
        self.path = _redacted(url)
        self._psycopg, self._register_vector = _modules()
        self._timeout = connect_timeout
        self._conn: Any = None
        self._tx: _Transaction | None = None
        self.memory_rows = memory_rows
        # Build a large user's graph when first found without one (default: unless $HEADROOM_PG_AUTO_GRAPHS is 0).
        self.auto_graphs = os.environ.get("HEADROOM_PG_AUTO_GRAPHS", "1") != "0" if auto_graphs is None else auto_graphs
        self._large: dict[str, tuple[int, float]] = {}  # user -> (searchable rows, when counted)
        self._common: dict[int, tuple[frozenset[str], float]] = {}  # common_lexemes(rows), when read
        self._graphs: tuple[frozenset[str], float] | None = None  # valid users' graphs, when read
        self._unindexed: set[str] = set()  # large users already warned about: they have no graph
        self._migrate()
        try:
            self._check_model()
        except BaseException:
            self.close()
            raise

    # -- the connection ---------------------------------------------------------------------------

    def _connect(self) -> Any:
        try:
            return self._psycopg.connect(self.url, autocommit=True, connect_timeout=max(1, int(self._timeout)))
        except self._psycopg.Error as exc:
            raise StorageError(f"cannot connect to {self.path}: {exc}") from exc

    def _connection(self) -> Any:
        """The store's connection, a new one if there is none yet or the last one broke."""
        conn = self._conn
        if conn is not None and not conn.closed and not conn.broken:
            return conn
        if conn is not None:
            conn.close()
            logger.info("connection to %s was lost; connecting again", self.path)
        self._conn = None
        conn = self._connect()
        try:
            self._configure(conn)
        except self._psycopg.Error as exc:
            conn.close()
            raise StorageError(f"cannot set up a connection to {self.path}: {exc}") from exc
        self._conn = conn
        return conn

    def _configure(self, conn: Any) -> None:
        """A new connection: our schema first on the search path; numpy arrays sent as vectors
        (pgvector's dumper), vectors read back in their raw binary form (``_decode``)."""
        conn.execute(f"SET search_path TO {SCHEMA}, {self._vector_schema}")
        # A plan for the parameters at hand, every time: one generic plan for any user_id sorted a
        # million-memory user's rows instead of walking HNSW (250 ms), or scanned the table for a
        # rare word. Statements are still parsed once.
        conn.execute("SET plan_cache_mode = force_custom_plan")
        # Large users' searches filter HNSW's results by user: the iterative scan keeps going, in
        # exact order, until enough rows pass (pgvector 0.8; an older one ignores the setting).
        conn.execute(f"SET hnsw.ef_search = {_ef_search()}")
        conn.execute("SET hnsw.iterative_scan = strict_order")
        self._register_vector(conn)
        oid = conn.execute("SELECT 'vector'::regtype::oid").fetchone()[0]
        conn.adapters.register_loader(oid, _raw_vectors(self._psycopg))

    @contextmanager
    def transaction(self) -> Iterator[_Transaction]:
        """One transaction, under the store's lock. Database errors become ``StorageError``; any
        error rolls back and drops the cached indexes (one may have been patched for the write
        that did not happen)."""
        with self._lock:
            if self._tx is not None:
                raise RuntimeError("transactions of a store do not nest")
            try:
                conn = self._connection()
                with conn.transaction():
                    self._tx = _Transaction(conn)
                    try:
                        yield self._tx
                    finally:
                        self._tx = None
            except self._psycopg.Error as exc:
                self._indexes.clear()
                raise StorageError(f"write to {self.path} failed: {_reason(exc)}") from exc
            except BaseException:
                self._indexes.clear()
                raise

    def query(self, sql: str, params: tuple) -> list[tuple]:
        """Rows of one read; a read on a connection that broke (the server restarted since it was
        last used) is tried once more on a fresh one: reads change nothing, so that is safe."""
        with self._lock:
            if self._tx is not None:
                return list(self._tx.execute(sql, params).fetchall())
            for attempt in (1, 2):
                conn = self._connection()
                try:
                    return list(conn.execute(_pg(sql), params, binary=True).fetchall())
                except self._psycopg.OperationalError as exc:
                    if attempt == 1 and conn.broken:
                        logger.info("connection to %s broke (%s); reading again on a new one", self.path, exc)
                        continue
                    raise StorageError(f"cannot read {self.path}: {_reason(exc)}") from exc
                except self._psycopg.Error as exc:
                    raise StorageError(f"cannot read {self.path}: {_reason(exc)}") from exc
            raise AssertionError("unreachable")

    def close(self) -> None:
        with self._lock:
            if self._conn is not None:
                self._conn.close()
                self._conn = None
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

    def _load_index(self, user_id: str) -> VectorIndex:
        """The user's index; for a user with more than ``memory_rows`` searchable memories, a
        ``DatabaseIndex`` that searches the database instead of loading them all."""
        known = self._large.get(user_id)
        if known is None or time.monotonic() - known[1] > RECOUNT_SECONDS:
            rows = count_searchable(self, user_id, self.memory_rows)
            known = (rows, time.monotonic())
            if rows > self.memory_rows:
                self._large[user_id] = known
            else:
                self._large.pop(user_id, None)
        if known[0] > self.memory_rows:
            if not self.has_graph(user_id) and user_id not in self._unindexed:
                self._unindexed.add(user_id)  # once per process, until the list of graphs is read again
                logger.warning("user %r has over %d memories and no graph of its own in %s yet: its searches "
                               "scan its rows%s", user_id, self.memory_rows, self.path,
                               " while one is built" if self.auto_graphs else "; run headroom-memory index")
                if self.auto_graphs:
                    build_in_background(self, user_id)
            return DatabaseIndex(self, user_id, self._version(user_id), known[0])
        return super()._load_index(user_id)

    def has_graph(self, user_id: str) -> bool:
        """Whether the user has a valid graph of its own (``_postgres_graphs``); the list of graphs
        is read at most every ``RECOUNT_SECONDS``, so one built by another host is used soon after."""
        known = self._graphs
        if known is None or time.monotonic() - known[1] > RECOUNT_SECONDS:
            known = self._graphs = (valid_graphs(self), time.monotonic())
        return graph_name(user_id) in known[0]

    def forget_graphs(self) -> None:
        """Read the list of users' graphs again at the next search (one was just built)."""
        self._graphs = None
        self._unindexed.clear()

    def common_lexemes(self, rows: int) -> frozenset[str]:
        """The full-text lexemes PostgreSQL's statistics count in more than ``rows`` memories (of all
        users), read at most every ``STATISTICS_SECONDS`` (statistics move slowly: ANALYZE)."""
        cached = self._common.get(rows)
        if cached is not None and time.monotonic() - cached[1] < STATISTICS_SECONDS:
            return cached[0]
        found = self.query(
            "SELECT coalesce(array_agg(lexeme), '{}') FROM (SELECT unnest(most_common_elems::text::text[]) AS "
            "lexeme, unnest(most_common_elem_freqs) AS share FROM pg_stats WHERE schemaname = ? AND "
            "tablename = 'memories' AND attname = 'words') AS elements WHERE lexeme IS NOT NULL AND share * "
            "(SELECT greatest(reltuples, 0) FROM pg_class WHERE oid = 'memories'::regclass) > ?",
            (SCHEMA, rows))
        lexemes = frozenset(found[0][0]) if found else frozenset()
        self._common[rows] = (lexemes, time.monotonic())
        return lexemes

    def _rank(self, index: VectorIndex, user_id: str, query: np.ndarray, top_k: int, category: str | None,
              words: Sequence[str], scoring: Scoring | None) -> list[tuple[Memory, float, float]]:
        if isinstance(index, DatabaseIndex):
            return index.ranked_words(np.asarray(query, dtype=np.float32), top_k, category, words, scoring)
        return super()._rank(index, user_id, query, top_k, category, words, scoring)

    def _lock_users(self, db: _Transaction, user_ids: Sequence[str]) -> None:
        for key in sorted({_user_key(u) for u in user_ids}):  # one order for every writer: no deadlock
            db.execute("SELECT pg_advisory_xact_lock(?, ?)", (_LOCK_SPACE, key))

    def _defer_links(self, db: _Transaction) -> None:
        db.execute("SET CONSTRAINTS ALL DEFERRED")

    def _encode(self, vector: np.ndarray) -> np.ndarray:
        return np.ascontiguousarray(vector, dtype=np.float32)

    def _decode(self, values: Sequence[Any]) -> np.ndarray:
        """Vectors in pgvector's binary form (a 4-byte header, then big-endian float32s), decoded
        together: the header reads as one more float per row, dropped."""
        rows = np.frombuffer(b"".join(values), dtype=">f4").reshape(len(values), self.embedding_dim + 1)
        return rows[:, 1:].astype(np.float32)

    def load(self, rows: Sequence[tuple[Memory, np.ndarray | None]]) -> int:
        """As ``SQLStore.load``; a load that grew the table by a tenth or more (an import, a
        ``migrate``) gathers the planner's statistics at once instead of within autovacuum's next
        minute: without them, a search reads its user's whole index for every query word."""
        added = super().load(rows)
        if added >= ANALYZE_ROWS:
            known = self.query("SELECT greatest(reltuples, 0) FROM pg_class WHERE oid = 'memories'::regclass", ())
            if added >= 0.1 * float(known[0][0]):
                with self.transaction() as db:
                    db.execute("ANALYZE memories")
        return added

    def _matches(self, user_id: str, words: Sequence[str], user_rows: int) -> list[np.ndarray]:
        """For each word, the keys of the user's rows whose text holds it (English stemming).

        A user of up to ``FILTER_ROWS`` memories has them read through the user index and tested one
        by one (``coalesce`` keeps the planner off the full-text index): intersecting with a common
        word's rows across all users costs more, 25 ms for a word in 124k of 2M rows against 1 ms.
        """
        test = "coalesce(words @@ plainto_tsquery('english', ?), false)" if user_rows <= FILTER_ROWS else \
            "words @@ plainto_tsquery('english', ?)"
        one = f"(SELECT array_agg(pk) FROM memories WHERE user_id = ? AND {test})"
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
        bare = [user for user, _, has in graph_status(self, self.memory_rows) if not has]
        return [
            check("server", True, f"PostgreSQL {version} at {self.path}"),
            check("pgvector", bool(vector), f"version {vector[0][0]}" if vector else "not installed"),
            check("schema", applied == len(MIGRATIONS), f"migration {applied} of {len(MIGRATIONS)} in {SCHEMA!r}"),
            check("embedding model", True, f"{self.embedding_model} ({self.embedding_dim} dimensions)"),
            check("vectors", not bad, f"{bad} of the wrong size; {self.unembedded_count()} rows waiting to be embedded"),
            check("graphs", not bare, f"{len(bare)} users with over {self.memory_rows:,} memories have no graph of "
                  "their own: run headroom-memory index" if bare else "every large user has a graph of its own"),
            queue_check(self),
        ]


def postgres_store(url: str, *, embedding_model: str, embedding_dim: int) -> PostgresStore:
    """A ``PostgresStore`` for ``url``."""
    return PostgresStore(url, embedding_model=embedding_model, embedding_dim=embedding_dim)


def recorded_model(url: str) -> str | None:
    """The embedding model the database at ``url`` records (None if it holds no memory yet),
    read on a connection of its own without creating anything."""
    psycopg, _ = _modules()
    with psycopg.connect(url, connect_timeout=10) as db:
        if db.execute(f"SELECT to_regclass('{SCHEMA}.headroom_meta') IS NOT NULL").fetchone() != (True,):
            return None
        row = db.execute(f"SELECT value FROM {SCHEMA}.headroom_meta WHERE key = 'embedding_model'").fetchone()
    return str(row[0]) if row else None
