"""Graphs of their own for a PostgreSQL store's largest users.

A user with more than ``PostgresStore.memory_rows`` memories is searched in the database on HNSW
(``_postgres_search``). The shared graph holds every user's rows, and a search keeps only the
user's: at a million memories among millions, that filter makes HNSW miss many of the true
nearest. A graph of the user's own (a partial HNSW index, ``WHERE user_id = ...``) has no filter
to pass and finds nearly all of them. Figures: bench/RESULTS.md, "A million memories".

The graph indexes the vectors in half precision (``halfvec``): half the size, and an expression the
shared graph does not index, so a query ordered by it can only run on the user's graph (the
planner's cost estimates alone preferred the shared one). Candidates are then scored by their
exact cosines.

Building one reads all the user's rows and takes minutes at a million, so it is never done in the
middle of a request: ``headroom-memory index`` (or ``build_graphs``) builds those missing, with
``CREATE INDEX CONCURRENTLY`` (writes go on meanwhile) under an advisory lock (two hosts never build
the same one). An interrupted build leaves an invalid index, which the next build drops first.
"""

from __future__ import annotations

import logging
import time
import zlib
from typing import TYPE_CHECKING, Callable

from ._errors import StorageError
from ._postgres_schema import SCHEMA
from ._postgres_search import graph_name

if TYPE_CHECKING:
    from ._postgres import PostgresStore

__all__ = ["build_graph", "build_graphs", "large_users", "valid_graphs", "GRAPH_M", "GRAPH_EF_CONSTRUCTION"]

logger = logging.getLogger(__name__)

#: Links per node and build-time candidate list of a user's graph. pgvector's defaults (16, 64)
#: reach far lower recall on a million clustered memories at the same search effort.
GRAPH_M = 32
GRAPH_EF_CONSTRUCTION = 128
#: The first advisory-lock key of a graph being built (the second is the user's hash).
_BUILD_SPACE = 0x48524E


def valid_graphs(store: PostgresStore) -> frozenset[str]:
    """The names of the users' graphs that exist and are valid (finished building)."""
    rows = store.query(
        "SELECT c.relname FROM pg_index i JOIN pg_class c ON c.oid = i.indexrelid "
        "WHERE i.indrelid = 'memories'::regclass AND i.indisvalid AND c.relname LIKE 'memories\\_vectors\\_%'", ())
    return frozenset(r[0] for r in rows)


def large_users(store: PostgresStore, min_memories: int) -> list[tuple[str, int]]:
    """Users with more than ``min_memories`` searchable memories, largest first (reads the table)."""
    rows = store.query(
        "SELECT user_id, count(*) FROM memories WHERE superseded_by IS NULL AND embedding IS NOT NULL "
        "GROUP BY user_id HAVING count(*) > ? ORDER BY count(*) DESC, user_id", (min_memories,))
    return [(str(user), int(count)) for user, count in rows]


def build_graph(store: PostgresStore, user_id: str, work_memory: str = "1GB") -> bool:
    """Build ``user_id``'s own graph if it has none; False if it had one or another process is
    building it now. ``work_memory`` is PostgreSQL's ``maintenance_work_mem`` for the build: a
    graph that does not fit is built far more slowly."""
    psycopg = store._psycopg
    from psycopg import sql

    name = graph_name(user_id)
    key = zlib.crc32(user_id.encode()) - 2**31
    dim = int(store.embedding_dim)
    conn = store._connect()  # its own session: CONCURRENTLY runs outside any transaction
    try:
        conn.execute(f"SET search_path TO {SCHEMA}, {store._vector_schema}")
        if not conn.execute("SELECT pg_try_advisory_lock(%s, %s)", (_BUILD_SPACE, key)).fetchone()[0]:
            logger.info("another process is building the graph of user %r", user_id)
            return False
        state = conn.execute("SELECT i.indisvalid FROM pg_index i JOIN pg_class c ON c.oid = i.indexrelid "
                             "WHERE c.relname = %s", (name,)).fetchone()
        if state is not None and state[0]:
            return False
        if state is not None:
            logger.warning("dropping the unfinished graph of user %r (an earlier build was interrupted)", user_id)
            conn.execute(sql.SQL("DROP INDEX CONCURRENTLY IF EXISTS {}").format(sql.Identifier(name)))
        conn.execute(sql.SQL("SET maintenance_work_mem = {}").format(sql.Literal(work_memory)))
        started = time.monotonic()
        conn.execute(sql.SQL(
            "CREATE INDEX CONCURRENTLY {} ON memories USING hnsw ((embedding::halfvec({})) halfvec_cosine_ops) "
            "WITH (m = {}, ef_construction = {}) WHERE user_id = {}").format(
                sql.Identifier(name), sql.Literal(dim), sql.Literal(GRAPH_M), sql.Literal(GRAPH_EF_CONSTRUCTION),
                sql.Literal(user_id)))
        logger.info("built the graph of user %r in %.0f s", user_id, time.monotonic() - started)
        store.forget_graphs()
        return True
    except psycopg.Error as exc:
        raise StorageError(f"cannot build the graph of user {user_id!r} in {store.path}: {exc}") from exc
    finally:
        conn.close()  # ends the session, and its advisory lock with it


def build_graphs(store: PostgresStore, min_memories: int,
                 progress: Callable[[str, int], None] | None = None) -> list[tuple[str, int, bool]]:
    """Build the graph of every user with more than ``min_memories`` searchable memories that has
    none; returns (user, memories, built now) for each such user. ``progress(user, memories)`` is
    called before each build."""
    done = []
    have = valid_graphs(store)
    for user_id, count in large_users(store, min_memories):
        if graph_name(user_id) in have:
            done.append((user_id, count, False))
            continue
        if progress is not None:
            progress(user_id, count)
        done.append((user_id, count, build_graph(store, user_id)))
    return done
