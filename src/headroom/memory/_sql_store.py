"""The memory's rules on any SQL database: ``SQLStore``, which the SQLite and PostgreSQL stores extend.

Everything a backend must agree on lives here once: the near-duplicate check inside the write
transaction, supersession links, history, embedding claims, and the per-user ``VectorIndex`` that
ranks a search. A subclass supplies the connection (``transaction``, ``query``), how a vector is
written and read, full-text matching, and the locks its database needs.

The statements are written once, with ``?`` placeholders and SQL both databases speak. Times are
POSIX seconds and metadata JSON text in both, so one ``row_to_memory`` reads either.

The cached index of a user is kept in step by a per-user change counter (``user_versions``): every
write bumps it in its transaction, and a search compares it with the index's before trusting it
(``_unchanged_elsewhere`` lets a backend skip that check while nothing else wrote). So any number
of processes, on any number of hosts, see each other's writes at once.
"""

from __future__ import annotations

import json
import logging
import os
import threading
import time
from contextlib import AbstractContextManager
from typing import Any, Iterator, Sequence

import numpy as np

from ._errors import EmbeddingModelMismatchError, InvalidInputError, NotFoundError
from ._index import IndexCache, VectorIndex
from ._jobs import Job
from ._models import Memory, new_id, normalize_text
from ._rows import COLUMNS as _COLUMNS
from ._rows import SEARCHABLE
from ._rows import row_to_memory as _row_to_memory
from ._scoring import Scoring, near_duplicate, rare_words
from ._sql_queue import SQLJobQueue, finish_job

__all__ = ["SQLStore", "check", "queue_check", "default_cache_bytes", "DEFAULT_INDEX_CACHE_MB"]

logger = logging.getLogger(__name__)

#: The default memory budget of a store's cached indexes (``$HEADROOM_INDEX_CACHE_MB`` overrides it):
#: at 384 dimensions about 30,000 memories, of one user or of many (bench/many_users.py).
DEFAULT_INDEX_CACHE_MB = 64


def default_cache_bytes() -> int:
    value = os.environ.get("HEADROOM_INDEX_CACHE_MB")
    try:
        return int(float(value) * 2**20) if value else DEFAULT_INDEX_CACHE_MB * 2**20
    except ValueError:
        raise InvalidInputError(f"HEADROOM_INDEX_CACHE_MB must be a number of megabytes, not {value!r}") from None


class SQLStore:
    """Memories of many users in one SQL database, for one embedding model (see the module doc)."""

    path: str
    #: Appended to the queue's SELECT of due jobs: a database with row locks skips rows others hold.
    row_lock = ""

    def __init__(self, *, embedding_model: str, embedding_dim: int, index_cache_bytes: int | None) -> None:
        self.embedding_model = embedding_model
        self.embedding_dim = embedding_dim
        self._lock = threading.RLock()  # one transaction at a time per store, and the index cache
        self._indexes = IndexCache(index_cache_bytes if index_cache_bytes is not None else default_cache_bytes())
        self._verified: set[str] = set()  # users whose index was checked since others last wrote

    # -- what a backend supplies ------------------------------------------------------------------

    def transaction(self) -> AbstractContextManager[Any]:
        """One write transaction under the store's lock, yielding an object with ``execute(sql,
        params)`` (a cursor back) and ``executemany``. Database errors become ``StorageError``; any
        error rolls back (and must clear ``self._indexes``: an index may have been patched)."""
        raise NotImplementedError

    def query(self, sql: str, params: tuple) -> list[tuple]:
        """Rows of one statement, inside the open transaction if this thread has one."""
        raise NotImplementedError

    def _encode(self, vector: np.ndarray) -> Any:
        """A vector as the database stores it."""
        raise NotImplementedError

    def _decode(self, values: Sequence[Any]) -> np.ndarray:
        """Stored vectors as an ``(n, dim)`` float32 matrix."""
        raise NotImplementedError

    def _matches(self, user_id: str, words: Sequence[str], user_rows: int) -> list[np.ndarray]:
        """For each word, the keys (``pk``) of the rows that hold it (stemmed); rows of other users
        may be among them (the user's index drops them)."""
        raise NotImplementedError

    def _unchanged_elsewhere(self) -> bool:
        """True when no other connection can have written since the last call (so indexes checked
        since then are still current); False makes every search check its user's counter."""
        return False

    def _lock_users(self, db: Any, user_ids: Sequence[str]) -> None:
        """Serialize writers of these users until the transaction ends (a database whose write
        transactions are not already serialized must override this)."""

    def _defer_links(self, db: Any) -> None:
        """Check supersession links at commit instead of at each row (for ``load``)."""

    def health(self) -> list[dict[str, Any]]:
        raise NotImplementedError

    def close(self) -> None:
        raise NotImplementedError

    # -- set-up -----------------------------------------------------------------------------------

    def extraction_queue(self) -> SQLJobQueue:
        """The queue of turns waiting for background extraction, in this database."""
        return SQLJobQueue(self)

    def _check_model(self) -> None:
        with self.transaction() as db:
            # The first store to open a new database names its model. A process starting at the same
            # moment finds it named: a plain INSERT would fail there on PostgreSQL, where this
            # transaction does not hold the database alone as SQLite's does.
            db.executemany(
                "INSERT INTO headroom_meta (key, value) VALUES (?, ?) ON CONFLICT (key) DO NOTHING",
                [("embedding_model", self.embedding_model), ("embedding_dim", str(self.embedding_dim))],
            )
            rows = dict(db.execute("SELECT key, value FROM headroom_meta WHERE key IN (?, ?)",
                                   ("embedding_model", "embedding_dim")).fetchall())
        if rows.get("embedding_model") != self.embedding_model or rows.get("embedding_dim") != str(
            self.embedding_dim
        ):
            raise EmbeddingModelMismatchError(
                f"{self.path} holds vectors of {rows.get('embedding_model')} "
                f"({rows.get('embedding_dim')} dimensions); it cannot be used with {self.embedding_model} "
                f"({self.embedding_dim}). Use another db_path or the same embedding model."
            )

    # -- the per-user index -----------------------------------------------------------------------

    def _bump(self, db: Any, user_id: str) -> int:
        return db.execute(
            "INSERT INTO user_versions (user_id, version) VALUES (?, 1) "
            "ON CONFLICT (user_id) DO UPDATE SET version = user_versions.version + 1 RETURNING version",
            (user_id,),
        ).fetchone()[0]

    def _bumped(self, db: Any, user_id: str, index: VectorIndex | None = None) -> VectorIndex | None:
        """Count a write of the user's; returns the index to patch for it: ``index`` (current within
        this transaction), or the cached one if it was current just before, else None."""
        version = self._bump(db, user_id)
        if index is None:
            return self._index_after_write(user_id, version)
        index.version = version
        self._indexes.touch(user_id)  # it may have grown: count it again against the cache budget
        return index

    def _index_in(self, indexes: dict[str, VectorIndex], user_id: str) -> VectorIndex:
        """The user's current index, looked up once per write transaction (``indexes`` keeps it:
        an empty index is falsy, so ``get() or`` would look it up again for every row)."""
        index = indexes.get(user_id)
        if index is None:
            index = indexes[user_id] = self._index(user_id)
        return index

    def _index_after_write(self, user_id: str, version: int) -> VectorIndex | None:
        """The user's index if it may be patched in place: it was current just before this write."""
        index = self._indexes.get(user_id)
        if index is not None and index.version == version - 1:
            index.version = version
            return index
        self._indexes.pop(user_id)  # someone else wrote in between: reload on next search
        return None

    def _index(self, user_id: str) -> VectorIndex:
        if not self._unchanged_elsewhere():
            self._verified.clear()
        index = self._indexes.get(user_id)
        if index is not None and user_id not in self._verified and self._version(user_id) != index.version:
            index = None
        if index is None:
            index = self._load_index(user_id)
            self._indexes.put(user_id, index)
        else:
            self._indexes.touch(user_id)
        self._verified.add(user_id)
        return index

    def _version(self, user_id: str) -> int:
        rows = self.query("SELECT version FROM user_versions WHERE user_id = ?", (user_id,))
        return int(rows[0][0]) if rows else 0

    def _load_index(self, user_id: str) -> VectorIndex:
        # The counter is read before the rows: a write committed in between makes the index look
        # older than it is (reloaded once more), never newer.
        version = self._version(user_id)
        rows = self.query(
            f"SELECT {_COLUMNS}, pk, embedding FROM memories WHERE {SEARCHABLE}",
            (user_id,),
        )
        index = VectorIndex(self.embedding_dim, version)
        if rows:
            index.add([_row_to_memory(r) for r in rows], self._decode([r[-1] for r in rows]), [r[-2] for r in rows])
        logger.debug("loaded %d vectors of user %r from %s", len(rows), user_id, self.path)
        return index

    # -- the Store protocol -----------------------------------------------------------------------

    def find_text(self, user_id: str, text: str) -> Memory | None:
        rows = self.query(
            f"SELECT {_COLUMNS} FROM memories WHERE user_id = ? AND norm_text = ? AND superseded_by IS NULL",
            (user_id, normalize_text(text)),
        )
        return _row_to_memory(rows[0]) if rows else None

    def get(self, user_id: str, memory_id: str) -> Memory | None:
        rows = self.query(f"SELECT {_COLUMNS} FROM memories WHERE user_id = ? AND id = ?", (user_id, memory_id))
        return _row_to_memory(rows[0]) if rows else None

    def list_memories(self, user_id: str, category: str | None = None) -> list[Memory]:
        sql = f"SELECT {_COLUMNS} FROM memories WHERE user_id = ? AND superseded_by IS NULL"
        params: tuple = (user_id,)
        if category is not None:
            sql += " AND category = ?"
            params += (category,)
        return [_row_to_memory(r) for r in self.query(sql + " ORDER BY created_at, pk", params)]

    def add(self, memories: Sequence[Memory], vectors: np.ndarray | None, *, done: Job | None = None) -> list[Memory]:
        """Store new memories in one transaction; each gives the memory stored, or the one it is.

        A text the user already has (case and white space folded) gives that memory; so does a
        near duplicate (``near_duplicate``) of a searchable memory or of an earlier item of the batch.
        The check runs inside the write transaction, so two writers cannot both store one fact.
        ``done``: the extraction job these memories came from, removed in the same transaction.
        """
        rows = vectors if vectors is not None else [None] * len(memories)
        with self.transaction() as db:
            self._lock_users(db, [m.user_id for m in memories])
            if done is not None:
                finish_job(db, done)  # in the same transaction, or not at all
            result: list[Memory] = []
            indexes: dict[str, VectorIndex] = {}
            touched: set[str] = set()
            for memory, vector in zip(memories, rows):
                existing = self._same_text(db, memory)
                if existing is None and vector is not None:
                    index = self._index_in(indexes, memory.user_id)
                    existing = near_duplicate(index.nearest, memory.text, vector)
                if existing is not None:
                    result.append(existing)
                    continue
                key = self._insert_row(db, memory, vector)
                if vector is not None:
                    indexes[memory.user_id].add([memory], np.asarray([vector], dtype=np.float32), [key])
                touched.add(memory.user_id)
                result.append(memory)
            for user in touched:
                self._bumped(db, user, indexes.get(user))
        return result

    def _same_text(self, db: Any, memory: Memory) -> Memory | None:
        row = db.execute(
            f"SELECT {_COLUMNS} FROM memories WHERE user_id = ? AND norm_text = ? AND superseded_by IS NULL",
            (memory.user_id, normalize_text(memory.text)),
        ).fetchone()
        return None if row is None else _row_to_memory(row)

    def _insert_row(self, db: Any, memory: Memory, vector: np.ndarray | None) -> int:
        """Insert one row (with its supersession link, if it has one); returns its key (``pk``)."""
        return int(db.execute(
            "INSERT INTO memories (id, user_id, text, norm_text, category, source, metadata, "
            "created_at, updated_at, superseded_by, superseded_at, embedding) VALUES (?,?,?,?,?,?,?,?,?,?,?,?) "
            "RETURNING pk",
            (memory.id, memory.user_id, memory.text, normalize_text(memory.text), memory.category, memory.source,
             json.dumps(dict(memory.metadata)), memory.created_at.timestamp(), memory.updated_at.timestamp(),
             memory.superseded_by, memory.superseded_at.timestamp() if memory.superseded_at else None,
             None if vector is None else self._encode(vector)),
        ).fetchone()[0])

    def supersede(self, old_id: str, memory: Memory, vector: np.ndarray | None) -> Memory:
        """Store ``memory`` (or find the user's memory with its text) as the successor of ``old_id``.

        The old memory is kept, linked to its successor, and no longer searched or listed. A
        successor that is a near duplicate of the old memory itself changes nothing and gives it.
        """
        now = time.time()
        with self.transaction() as db:
            self._lock_users(db, [memory.user_id])
            live = db.execute(f"SELECT {_COLUMNS} FROM memories WHERE user_id = ? AND id = ? AND superseded_by IS NULL",
                              (memory.user_id, old_id)).fetchone()
            if live is None:
                raise NotFoundError(f"no live memory {old_id!r} for user {memory.user_id!r}")
            index = self._index(memory.user_id)
            if vector is not None:
                twin = near_duplicate(index.nearest, memory.text, vector)
                if twin is not None and twin.id == old_id:
                    return twin
            successor = self._same_text(db, memory)
            if successor is None:
                successor = memory
                key = self._insert_row(db, memory, vector)
                if vector is not None:
                    index.add([memory], np.asarray([vector], dtype=np.float32), [key])
            if successor.id != old_id:
                db.execute("UPDATE memories SET superseded_by = ?, superseded_at = ? WHERE id = ?",
                           (successor.id, now, old_id))
                index.remove(old_id)
            self._bumped(db, memory.user_id, index)
        return successor

    def resolve(self, user_id: str, ref: str) -> Memory | None:
        """The user's live memory whose id is ``ref`` or starts with its hex digits (``m1a2b3c``)."""
        ref = ref.strip().strip("[]").lower()
        prefix = ref[1:] if ref.startswith("m") and len(ref) > 1 else ref
        if len(prefix) < 6 or not all(c in "0123456789abcdef" for c in prefix):
            return None
        rows = self.query(
            f"SELECT {_COLUMNS} FROM memories WHERE user_id = ? AND id >= ? AND id < ? AND superseded_by IS NULL "
            "LIMIT 2", (user_id, prefix, prefix + "g"))
        return _row_to_memory(rows[0]) if len(rows) == 1 else None

    def history(self, user_id: str, memory_id: str) -> list[Memory]:
        """Every version linked to ``memory_id`` (predecessors and successors), oldest first."""
        rows = self.query(
            # One recursive step follows a link either way (PostgreSQL allows only one such step).
            "WITH RECURSIVE chain(id) AS (SELECT id FROM memories WHERE id = ? UNION "
            "SELECT CASE WHEN m.superseded_by = c.id THEN m.id ELSE m.superseded_by END FROM memories m "
            "JOIN chain c ON m.superseded_by = c.id OR (m.id = c.id AND m.superseded_by IS NOT NULL)) "
            f"SELECT {_COLUMNS} FROM memories WHERE user_id = ? AND id IN (SELECT id FROM chain) "
            "ORDER BY superseded_at IS NULL, superseded_at, created_at",
            (memory_id, user_id),
        )
        return [_row_to_memory(r) for r in rows]

    # -- memories waiting for their vectors ---------------------------------------------------------

    def write_mark(self) -> int:
        """A position in the order of writes: every row written so far is at or before it."""
        return int(self.query("SELECT coalesce(max(pk), 0) FROM memories", ())[0][0])

    def unembedded_count(self, mark: int | None = None) -> int:
        """Live memories, of any user, written at or before ``mark`` and still without a vector."""
        return int(self.query("SELECT count(*) FROM memories WHERE embedding IS NULL AND superseded_by IS NULL "
                              "AND pk <= ?", (2**62 if mark is None else mark,))[0][0])

    def claim_unembedded(self, mark: int, limit: int, lease_seconds: float) -> list[Memory]:
        """Claim, for ``lease_seconds``, up to ``limit`` waiting memories (any user) no one else holds.

        A claim only keeps two workers from embedding the same rows; correctness does not rest on
        it (``settle_vectors`` checks every row again), so a worker that dies just lets it lapse.
        """
        now = time.time()
        with self.transaction() as db:
            rows = db.execute(
                "UPDATE memories SET embed_claim = ? WHERE pk IN (SELECT pk FROM memories WHERE embedding IS NULL "
                "AND superseded_by IS NULL AND pk <= ? AND coalesce(embed_claim, 0) < ? ORDER BY pk LIMIT ?) "
                f"RETURNING pk, {_COLUMNS}",
                (now + lease_seconds, mark, now, limit),
            ).fetchall()
        # Oldest first (RETURNING keeps no order in PostgreSQL): of two near duplicates, the first stays.
        return [_row_to_memory(r[1:]) for r in sorted(rows, key=lambda r: r[0])]

    def release_claims(self, memories: Sequence[Memory]) -> None:
        """Give claimed memories back (their embedding failed), for the next attempt of any worker."""
        with self.transaction() as db:
            db.executemany("UPDATE memories SET embed_claim = NULL WHERE id = ? AND embedding IS NULL",
                           [(m.id,) for m in memories])

    def settle_vectors(self, memories: Sequence[Memory], vectors: np.ndarray) -> int:
        """Give waiting memories their vectors, or merge them into a near duplicate, in one transaction.

        Each memory is checked again inside the transaction: one already embedded (by another
        worker), changed or gone is left alone, so no worker ever merges a memory into itself or
        into a copy of itself. A near duplicate (``near_duplicate``) of a searchable memory of its
        user is removed in favour of that memory, unless it replaced an older one. Returns how many
        memories got their vectors.
        """
        stored = 0
        with self.transaction() as db:
            self._lock_users(db, [m.user_id for m in memories])
            indexes: dict[str, VectorIndex] = {}
            for memory, vector in zip(memories, vectors):
                row = db.execute(
                    "SELECT pk FROM memories WHERE user_id = ? AND id = ? AND text = ? AND embedding IS NULL "
                    "AND superseded_by IS NULL", (memory.user_id, memory.id, memory.text)).fetchone()
                if row is None:
                    continue
                index = self._index_in(indexes, memory.user_id)
                twin = near_duplicate(index.nearest, memory.text, vector)
                replaced = db.execute("SELECT 1 FROM memories WHERE superseded_by = ? LIMIT 1", (memory.id,)).fetchone()
                if twin is not None and twin.id != memory.id and replaced is None:
                    logger.info("memory %s merged into its near duplicate %s", memory.id, twin.id)
                    db.execute("DELETE FROM memories WHERE pk = ?", (row[0],))
                    continue
                db.execute("UPDATE memories SET embedding = ?, embed_claim = NULL WHERE pk = ?",
                           (self._encode(vector), row[0]))
                index.add([memory], np.asarray([vector], dtype=np.float32), [row[0]])
                stored += 1
            for user, index in indexes.items():
                self._bumped(db, user, index)
        return stored

    def update(self, memory: Memory, vector: np.ndarray | None) -> Memory:
        norm = normalize_text(memory.text)
        with self.transaction() as db:
            self._lock_users(db, [memory.user_id])
            clash = db.execute(
                "SELECT id FROM memories WHERE user_id = ? AND norm_text = ? AND id != ? AND superseded_by IS NULL",
                (memory.user_id, norm, memory.id),
            ).fetchone()
            if clash is not None:
                raise InvalidInputError(f"memory {clash[0]} already has this text")
            # The version being replaced is kept as a superseded copy, so history() shows it.
            db.execute(
                "INSERT INTO memories (id, user_id, text, norm_text, category, source, metadata, created_at, "
                "updated_at, superseded_by, superseded_at, embedding) SELECT ?, user_id, text, norm_text, category, "
                "source, metadata, created_at, updated_at, id, ?, embedding FROM memories "
                "WHERE user_id = ? AND id = ? AND superseded_by IS NULL",
                (new_id(), memory.updated_at.timestamp(), memory.user_id, memory.id),
            )
            sets = "text = ?, norm_text = ?, category = ?, metadata = ?, updated_at = ?"
            params: list = [memory.text, norm, memory.category, json.dumps(dict(memory.metadata)),
                            memory.updated_at.timestamp()]
            if vector is not None:
                sets += ", embedding = ?"
                params.append(self._encode(vector))
            changed = db.execute(
                f"UPDATE memories SET {sets} WHERE user_id = ? AND id = ? AND superseded_by IS NULL RETURNING pk",
                (*params, memory.user_id, memory.id),
            ).fetchone()
            if not changed:
                raise NotFoundError(f"no live memory {memory.id!r} for user {memory.user_id!r}")
            index = self._bumped(db, memory.user_id)
            if index is not None:
                index.replace(memory, vector, changed[0])
        return memory

    def delete(self, user_id: str, memory_id: str) -> bool:
        """Remove a memory with the earlier versions it replaced (its history goes with it)."""
        with self.transaction() as db:
            self._lock_users(db, [user_id])
            gone = db.execute(
                "DELETE FROM memories WHERE user_id = ? AND id IN (WITH RECURSIVE chain(id) AS "
                "(SELECT id FROM memories WHERE id = ? UNION SELECT m.id FROM memories m JOIN chain c ON m.superseded_by = c.id) "
                "SELECT id FROM chain)",
                (user_id, memory_id),
            ).rowcount
            if gone:
                index = self._bumped(db, user_id)
                if index is not None:
                    index.remove(memory_id)
        return bool(gone)

    def clear(self, user_id: str) -> int:
        """Forget the user: every memory and earlier version (with their full-text entries) and
        every queued or failed extraction job, in one transaction. Returns how many live memories
        were removed."""
        with self.transaction() as db:
            self._lock_users(db, [user_id])
            (live,) = db.execute("SELECT count(*) FROM memories WHERE user_id = ? AND superseded_by IS NULL",
                                 (user_id,)).fetchone()
            db.execute("DELETE FROM memories WHERE user_id = ?", (user_id,))
            db.execute("DELETE FROM extraction_jobs WHERE user_id = ?", (user_id,))
            self._indexes.put(user_id, VectorIndex(self.embedding_dim, self._bump(db, user_id)))
        return int(live)

    def ranked(self, user_id: str, query: np.ndarray, top_k: int, category: str | None = None,
               words: Sequence[str] = (), scoring: Scoring | None = None) -> list[tuple[Memory, float, float]]:
        """The user's ``top_k`` best memories by ``scoring`` (full-text search finds the rows holding
        each of ``words``, stemmed; the index scores them), each with its cosine and keyword score."""
        with self._lock:
            return self._rank(self._index(user_id), user_id, query, top_k, category, words, scoring)

    def _rank(self, index: VectorIndex, user_id: str, query: np.ndarray, top_k: int, category: str | None,
              words: Sequence[str], scoring: Scoring | None) -> list[tuple[Memory, float, float]]:
        """Rank with the user's index (a backend may search some users elsewhere)."""
        matches = self._matches(user_id, words, len(index)) if words else []
        return index.ranked(np.asarray(query, dtype=np.float32), top_k, category, matches, scoring, rare_words(words))

    def owner(self, memory_id: str) -> str | None:
        found = self.query("SELECT user_id FROM memories WHERE id = ?", (memory_id,))
        return found[0][0] if found else None

    def counts(self, user_id: str) -> dict[str, int]:
        rows = self.query(
            "SELECT category, COUNT(*) FROM memories WHERE user_id = ? AND superseded_by IS NULL GROUP BY category",
            (user_id,),
        )
        return {category: int(n) for category, n in rows}

    # -- whole-database operations ----------------------------------------------------------------

    def users(self) -> list[dict[str, Any]]:
        """Every user with a row: live memories, all rows (earlier versions too) and the time of the
        last write, by id."""
        rows = self.query(
            "SELECT user_id, SUM(CASE WHEN superseded_by IS NULL THEN 1 ELSE 0 END), COUNT(*), MAX(updated_at), "
            "MAX(superseded_at) FROM memories GROUP BY user_id ORDER BY user_id", ())
        return [{"user_id": u, "memories": int(n or 0), "rows": int(r), "last_write": float(max(t, s or 0))}
                for u, n, r, t, s in rows]

    def dump(self, user_id: str | None = None, batch: int = 500) -> Iterator[tuple[Memory, np.ndarray | None]]:
        """Every row (of ``user_id``, or of every user), user by user and oldest first, with its vector
        if it has one. Read in batches, so a large database is never held in memory at once."""
        names = [user_id] if user_id is not None else [u for (u,) in self.query(
            "SELECT DISTINCT user_id FROM memories ORDER BY user_id", ())]
        for name in names:
            last = 0
            while True:
                rows = self.query(f"SELECT pk, {_COLUMNS}, embedding FROM memories WHERE user_id = ? AND pk > ? "
                                  f"ORDER BY pk LIMIT {int(batch)}", (name, last))
                if not rows:
                    break
                for row in rows:
                    yield _row_to_memory(row[1:-1]), None if row[-1] is None else self._decode([row[-1]])[0]
                last = rows[-1][0]

    def load(self, rows: Sequence[tuple[Memory, np.ndarray | None]]) -> int:
        """Insert the rows this database does not have yet, in one transaction; returns how many were new.

        A row whose id is here is skipped, and so is a live row whose text its user has under
        another id (one live memory per text), so loading twice adds nothing. Rows keep ids, times,
        sources and links. A vector must have the store's dimension (else the row is stored without
        one, to be embedded). A superseded row's successor must be here or in ``rows`` (links are
        checked at commit, so their order does not matter): load a user's rows together.
        """
        added = 0
        touched: set[str] = set()
        with self.transaction() as db:
            self._lock_users(db, [memory.user_id for memory, _ in rows])
            self._defer_links(db)
            for memory, vector in rows:
                if vector is not None and len(vector) != self.embedding_dim:
                    vector = None
                if db.execute("SELECT 1 FROM memories WHERE id = ?", (memory.id,)).fetchone() or (
                        memory.superseded_by is None and self._same_text(db, memory) is not None):
                    continue
                self._insert_row(db, memory, vector)
                added += 1
                touched.add(memory.user_id)
            for user_id in touched:
                self._bump(db, user_id)  # a cached index of these users is stale now: reloaded on next use
        return added


def check(name: str, ok: bool, detail: str) -> dict[str, Any]:
    """One entry of ``health()``."""
    return {"check": name, "ok": bool(ok), "detail": detail}


def queue_check(store: SQLStore) -> dict[str, Any]:
    """The health check of the extraction queue, the same on every backend."""
    jobs = {status: int(n) for status, n in store.query("SELECT status, COUNT(*) FROM extraction_jobs GROUP BY status",
                                                        ())}
    return check("extraction queue", not jobs.get("failed"), f"{jobs.get('pending', 0)} pending, "
                 f"{jobs.get('running', 0)} running, {jobs.get('failed', 0)} failed (retry-failed puts them back)")
