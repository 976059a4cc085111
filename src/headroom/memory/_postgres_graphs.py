"""Graphs of their own for a PostgreSQL store's large users.

A user with more than ``PostgresStore.memory_rows`` memories is searched in the database
(``_postgres_search``). Its nearest memories come from an HNSW index of that user's rows alone (a
partial index, ``WHERE user_id = ...``): a graph shared by all users, searched with a user filter,
missed many of a large user's true nearest memories, and every write of every user paid for an
insert into it. Figures: bench/RESULTS.md, "A million memories". Smaller users never need a
graph: they are searched exactly in a process.

Building a graph reads all the user's rows and takes minutes at a million, so it never happens in
a request. The first process to find a large user without one builds it in a thread of its own
(``PostgresStore(auto_graphs=False)`` turns that off; ``headroom-memory index`` builds what is
missing by hand). Until it is built the user's searches scan its rows exactly: slower, never
wrong. Builds use ``CREATE INDEX CONCURRENTLY`` (writes go on meanwhile) under an advisory lock
(two hosts never build the same graph). An interrupted build leaves an invalid index, which the
next build drops first.
"""

from __future__ import annotations

import logging
import threading
import time
from typing import TYPE_CHECKING, Callable

from ._errors import StorageError
from ._postgres_schema import SCHEMA
from ._postgres_search import graph_name

if TYPE_CHECKING:
    from ._postgres import PostgresStore

__all__ = ["build_graph", "build_graphs", "build_in_background", "graph_status", "large_users", "memory_for",
           "valid_graphs", "GRAPH_M", "GRAPH_EF_CONSTRUCTION"]

logger = logging.getLogger(__name__)

#: Links per node and build-time candidate list of a user's graph. pgvector's defaults (16, 64)
#: reach far lower recall on a million clustered memories at the same search effort.
GRAPH_M = 32
GRAPH_EF_CONSTRUCTION = 128
#: The first advisory-lock key of a graph being built (the second is the user's, as for writes).
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


def graph_status(store: PostgresStore, min_memories: int) -> list[tuple[str, int, bool]]:
    """Each user with more than ``min_memories`` searchable memories, their count, and whether a
    valid graph of its own exists (read now, not from the store's cached list)."""
    have = valid_graphs(store)
    return [(user_id, count, graph_name(user_id) in have) for user_id, count in large_users(store, min_memories)]


def memory_for(store: PostgresStore, rows: int) -> str:
    """PostgreSQL's ``maintenance_work_mem`` for building a graph of ``rows`` vectors: room for the
    whole graph (vector and links per row), since a graph that does not fit is built far more
    slowly. At least 64 MB, the server's own default."""
    per_row = 4 * int(store.embedding_dim) + 2 * GRAPH_M * 10 + 64
    return f"{max(64, int(rows * per_row * 1.25) >> 20)}MB"


def build_graph(store: PostgresStore, user_id: str, work_memory: str | None = None) -> bool:
    """Build ``user_id``'s own graph if it has none; False if it had one or another process is
    building it now. ``work_memory``: PostgreSQL's ``maintenance_work_mem`` for the build (default:
    enough for the user's rows, ``memory_for``)."""
    psycopg = store._psycopg
    from psycopg import sql

    from ._postgres import _user_key  # here: _postgres imports this module

    name = graph_name(user_id)
    key = _user_key(user_id)
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
        if work_memory is None:
            (rows,) = conn.execute("SELECT count(*) FROM memories WHERE user_id = %s", (user_id,)).fetchone()
            work_memory = memory_for(store, int(rows))
        conn.execute(sql.SQL("SET maintenance_work_mem = {}").format(sql.Literal(work_memory)))
        started = time.monotonic()
        conn.execute(sql.SQL(
            "CREATE INDEX CONCURRENTLY {} ON memories USING hnsw (embedding vector_cosine_ops) "
            "WITH (m = {}, ef_construction = {}) WHERE user_id = {}").format(
                sql.Identifier(name), sql.Literal(GRAPH_M), sql.Literal(GRAPH_EF_CONSTRUCTION), sql.Literal(user_id)))
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
    for user_id, count, has in graph_status(store, min_memories):
        if has:
            done.append((user_id, count, False))
            continue
        if progress is not None:
            progress(user_id, count)
        done.append((user_id, count, build_graph(store, user_id)))
    return done


def build_in_background(store: PostgresStore, user_id: str) -> threading.Thread:
    """Build ``user_id``'s graph in a daemon thread; a failure is logged, and the next process (or
    this one, after ``forget_graphs``) tries again."""
    def build() -> None:
        try:
            build_graph(store, user_id)
        except Exception:
            logger.exception("building the graph of user %r failed; its searches stay exact scans", user_id)

    thread = threading.Thread(target=build, name=f"headroom-graph-{user_id[:20]}", daemon=True)
    thread.start()
    return thread
