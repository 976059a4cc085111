"""The memory API of one user: what ``client.memory`` is, and what ``open_memory`` returns.

It validates input, embeds, and hands rows to a store; it holds no state of its own beyond the user
id and the two objects it was given, so many of them can share one store and one embedder.
"""

from __future__ import annotations

import dataclasses
import logging
import os
import time
from datetime import datetime
from typing import Any, Callable, Iterable, Mapping

import numpy as np

from ._backends import embedder_for, open_store
from ._deferred import EXIT_WAIT_SECONDS, EmbeddingWorker
from ._embedders import Embedder
from ._errors import InvalidInputError, NotFoundError
from ._inject import message_text
from ._jobs import Job
from ._models import (
    CATEGORIES,
    MAX_TEXT_CHARS,
    SOURCES,
    Category,
    Memory,
    Source,
    is_encodable,
    new_id,
    utcnow,
    validate_category,
    validate_metadata,
    validate_text,
    validate_time,
    validate_user_id,
)
from ._query_cache import embed_query
from ._scoring import DEFAULT_SCORING, Scoring, content_words
from ._store import Store

__all__ = ["UserMemory", "open_memory", "MemoryInput"]


logger = logging.getLogger(__name__)

#: One item for ``add_many``: a text, or a mapping with ``text`` (or ``content``), ``category``, ``metadata``.
MemoryInput = str | Mapping[str, Any]
MAX_TOP_K = 1000

#: How long a search waits for this client's deferred embeddings before searching without them.
SEARCH_WAIT_SECONDS = 2.0


class UserMemory:
    """Search, add and manage the memories of one user."""

    def __init__(self, user_id: str, store: Store, embedder: Embedder, *, owns_store: bool = False,
                 scoring: Scoring = DEFAULT_SCORING) -> None:
        self.user_id = validate_user_id(user_id)
        self.store = store
        self.embedder = embedder
        self.scoring = scoring
        self._owns_store = owns_store
        self._embedding = EmbeddingWorker.of(store, embedder)  # shared by every memory on this store
        self._background: list[Any] = [self._embedding]  # each has kick(), wait(timeout), stop(timeout)
        self._reporters: list[Callable[[], Mapping[str, Any]]] = []
        if store.unembedded_count():  # left by an earlier process
            self._embedding.kick()

    def report_stats(self, report: Callable[[], Mapping[str, Any]]) -> None:
        """Add counters of a wrapper to what ``stats()`` returns."""
        self._reporters.append(report)

    def attach_worker(self, worker: Any) -> None:
        """Add a background worker (``kick``/``wait``/``stop``) that ``flush`` and ``close`` wait for;
        it runs before the embedding worker, whose work it may create."""
        self._background.insert(0, worker)

    # -- reading ----------------------------------------------------------------------------------

    def search(self, query: str, top_k: int = 5, category: Category | None = None) -> list[tuple[Memory, float]]:
        """The ``top_k`` memories best matching ``query``, best first, each with its cosine similarity.

        Ranked by meaning and by words together (see ``_scoring.py``), so a paraphrase and an exact
        name both find their memory.
        """
        return [(m, cosine) for m, cosine, _ in self.explain(query, top_k, category)]

    def explain(self, query: str, top_k: int = 5, category: Category | None = None) -> list[tuple[Memory, float, float]]:
        """As ``search``, each memory with why it ranks there: its cosine similarity and its keyword
        score (BM25 over the user's memories from 0 to 1: the query's best match is 1 when it is a
        strong one, see ``_scoring.scale_keywords``)."""
        if not isinstance(query, str) or not query.strip():
            raise InvalidInputError("search query must be a non-empty string")
        if not is_encodable(query):
            raise InvalidInputError("search query holds a lone surrogate; it is not valid Unicode text")
        if isinstance(top_k, bool) or not isinstance(top_k, int) or not 1 <= top_k <= MAX_TOP_K:
            raise InvalidInputError(f"top_k must be an integer from 1 to {MAX_TOP_K}")
        if category is not None:
            validate_category(category)
        vector = embed_query(self.embedder, query)
        self._embedding.wait(SEARCH_WAIT_SECONDS)  # read your own writes: deferred vectors land first
        words = content_words(query) if self.scoring.keyword_weight else []
        return self.store.ranked(self.user_id, vector, top_k, category, words, self.scoring)

    def get(self, memory_id: str) -> Memory:
        memory = self.store.get(self.user_id, memory_id)
        if memory is None:
            raise NotFoundError(f"no memory {memory_id!r} for user {self.user_id!r}")
        return memory

    def get_all(self, category: Category | None = None) -> list[Memory]:
        """Every live memory of this user, oldest first."""
        if category is not None:
            validate_category(category)
        return self.store.list_memories(self.user_id, category)

    def stats(self) -> dict[str, Any]:
        counts = self.store.counts(self.user_id)
        total = sum(counts.values())
        extra: dict[str, Any] = {}
        for worker in self._background:
            extra.update(getattr(worker, "stats", dict)())
        for report in self._reporters:
            extra.update(report())
        return extra | {
            "user_id": self.user_id,
            "total_memories": total,
            "total_chunks": total,  # the name headroom-ai's users already read
            "by_category": {name: counts.get(name, 0) for name in CATEGORIES},
            "db_path": self.store.path,
            "embedding_model": self.embedder.name,
            "embedding_dim": self.embedder.dim,
        }

    # -- writing ----------------------------------------------------------------------------------

    def add(
        self,
        text: str,
        category: Category | None = "fact",
        metadata: Mapping[str, Any] | None = None,
        *,
        source: Source = "manual",
        replaces: str | None = None,
        said_at: datetime | str | float | None = None,
    ) -> Memory:
        """Store one memory; a text the user already has returns the existing memory instead.

        ``replaces`` (an id or a short ``m1a2b3c`` reference) marks an older memory as superseded by
        this one; ``said_at`` is when it was said (default: now).
        """
        item = {"text": text, "category": category, "metadata": metadata, "replaces": replaces, "said_at": said_at}
        return self.add_many([item], source=source)[0]

    def add_many(self, items: Iterable[MemoryInput], *, source: Source = "manual",
                 defer_embedding: bool = False, done: Job | None = None) -> list[Memory]:
        """Store several memories with one embedding batch and one transaction.

        Every item is validated before anything is embedded or written, so one bad item stores none.
        A text the user already has, or a near duplicate of one of its memories or of an earlier
        item (``_scoring.near_duplicate``, applied by the store), returns that memory instead of a
        copy. An item's
        ``replaces`` supersedes the memory it names, if this user has it (otherwise a warning).
        With ``defer_embedding=True`` they are written at once and embedded by a background thread
        a few milliseconds later: listed at once, searchable once embedded (``flush`` waits).
        ``done``: the extraction job the items came from, removed in the transaction that stores
        them (``Store.add``).
        """
        if source not in SOURCES:
            raise InvalidInputError(f"unknown source {source!r}")
        drafts = [self._draft(item, source) for item in items]
        results: list[Memory | None] = [self.store.find_text(self.user_id, d.text) for d, _ in drafts]
        todo = [i for i, found in enumerate(results) if found is None]
        vectors = None if defer_embedding or not todo else self.embedder.embed([drafts[i][0].text for i in todo])
        plain: list[int] = []  # positions in todo of the items that replace nothing
        for position, i in enumerate(todo):
            draft, ref = drafts[i]
            old = self.resolve(ref) if ref else None
            if ref and old is None:
                logger.warning("memory %r says it replaces %r, which user %r does not have; stored as new",
                               draft.text[:80], ref, self.user_id)
            if old is not None:
                results[i] = self.store.supersede(old.id, draft, None if vectors is None else vectors[position])
            else:
                plain.append(position)
        if plain or done is not None:
            rows = None if vectors is None else vectors[plain]
            stored = self.store.add([drafts[todo[p]][0] for p in plain], rows, done=done)
            for position, memory in zip(plain, stored):
                results[todo[position]] = memory
        if defer_embedding and todo:
            self._embedding.kick()
        return [m for m in results if m is not None]

    def _draft(self, item: MemoryInput, source: Source) -> tuple[Memory, str | None]:
        if isinstance(item, str):
            item = {"text": item}
        if not isinstance(item, Mapping):
            raise InvalidInputError(f"a memory must be a string or a mapping, not {type(item).__name__}")
        now = utcnow()
        replaces = item.get("replaces")
        if replaces is not None and not isinstance(replaces, str):
            raise InvalidInputError("replaces must be a memory id or reference string")
        memory = Memory(
            id=new_id(),
            user_id=self.user_id,
            text=validate_text(item.get("text", item.get("content"))),
            category=validate_category("fact" if item.get("category") is None else item.get("category")),
            created_at=validate_time(item.get("said_at"), now),
            updated_at=now,
            source=source,
            metadata=validate_metadata(item.get("metadata")),
        )
        return memory, replaces

    def resolve(self, ref: str) -> Memory | None:
        """This user's live memory named by ``ref``: its id, or ``m`` and at least six hex digits of it."""
        return self.store.resolve(self.user_id, ref)

    def history(self, memory_id: str) -> list[Memory]:
        """Every version of a memory, oldest first: what it replaced, what replaced it, with times."""
        versions = self.store.history(self.user_id, memory_id)
        if not versions:
            raise NotFoundError(f"no memory {memory_id!r} for user {self.user_id!r}")
        return versions

    def update(self, memory_id: str, text: str | None = None, category: Category | None = None,
               metadata: Mapping[str, Any] | None = None) -> Memory:
        """Change a memory's text, category or metadata; a new text is embedded again."""
        current = self.get(memory_id)
        if current.superseded_by is not None:
            raise InvalidInputError(f"memory {memory_id!r} was superseded by {current.superseded_by!r}; update that one")
        changes: dict[str, Any] = {"updated_at": utcnow()}
        vector: np.ndarray | None = None
        if text is not None:
            changes["text"] = validate_text(text)
            vector = self.embedder.embed([changes["text"]])[0]
        if category is not None:
            changes["category"] = validate_category(category)
        if metadata is not None:
            changes["metadata"] = validate_metadata(metadata)
        return self.store.update(dataclasses.replace(current, **changes), vector)

    def delete(self, memory_id: str) -> bool:
        """Remove one memory; False when this user has no memory with that id."""
        return self.store.delete(self.user_id, memory_id)

    def clear(self) -> int:
        """Remove every memory of this user; returns how many were removed."""
        return self.store.clear(self.user_id)

    # -- lifetime ---------------------------------------------------------------------------------

    def flush(self, timeout: float | None = None) -> bool:
        """Wait until this user's background work is done (queued extractions, memories waiting for
        their vectors); False if ``timeout`` ran out or the work is failing for now."""
        deadline = None if timeout is None else time.monotonic() + timeout
        done = True
        for worker in self._background:
            worker.kick()  # also picks up work other processes left behind
            left = None if deadline is None else max(0.0, deadline - time.monotonic())
            done = worker.wait(left) and done
        return done

    def remember(self, messages: Iterable[Mapping[str, Any]]) -> int:
        """Keep what a list of chat messages said, e.g. the messages a rolling window dropped.

        With a background extractor (``with_memory``) they are queued for extraction as one turn;
        otherwise the user's messages are stored as they are (category ``context``). Returns how
        many turns were queued or memories stored.
        """
        said, replies = [], []
        for message in messages:
            text = message_text(message).strip()
            if text and message.get("role") == "user":
                said.append(text)
            elif text and message.get("role") == "assistant":
                replies.append(text)
        for worker in self._background:
            if hasattr(worker, "submit") and (said or replies):
                worker.submit(said, "\n\n".join(replies))
                return 1
        pieces = [text[i:i + MAX_TEXT_CHARS] for text in said for i in range(0, len(text), MAX_TEXT_CHARS)]
        items = [{"text": p, "category": "context", "metadata": {"origin": "remember"}} for p in pieces if p.strip()]
        return len(self.add_many(items, defer_embedding=True)) if items else 0

    def retry_failed(self) -> int:
        """Queue this user's failed background extractions again; returns how many."""
        return sum(worker.retry_failed() for worker in self._background if hasattr(worker, "retry_failed"))

    def _stop_background(self, timeout: float) -> None:
        for worker in self._background:
            if worker is self._embedding and not self._owns_store:
                worker.wait(timeout)  # it serves the store's other users too: leave it running
            else:
                worker.stop(timeout)

    def close(self) -> None:
        """Finish background work (at most ``EXIT_WAIT_SECONDS`` per worker), then close our store."""
        self._stop_background(EXIT_WAIT_SECONDS)
        if self._owns_store:
            self.store.close()

    def __enter__(self) -> "UserMemory":
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def __repr__(self) -> str:
        return f"UserMemory(user_id={self.user_id!r}, db_path={self.store.path!r}, embedder={self.embedder.name!r})"


def open_memory(
    user_id: str,
    db_path: str | os.PathLike[str] | None = None,
    *,
    embedder: Embedder | None = None,
    use_local_embeddings: bool = True,
    embedding_model: str | None = None,
    store: Store | None = None,
) -> UserMemory:
    """The memory of ``user_id``, on its own, without any LLM client.

    ``db_path`` (an SQLite file, or a ``postgresql://`` URL for PostgreSQL) defaults to
    ``$HEADROOM_MEMORY_DB`` or ``~/.headroom/memory.db``. Pass ``embedder=``
    (any object with ``name``, ``dim`` and ``embed``) or ``store=`` to supply your own.
    """
    validate_user_id(user_id)
    embedder = embedder_for(db_path, use_local_embeddings, embedding_model, store=store, embedder=embedder)
    owns = store is None
    if store is None:
        store = open_store(db_path, embedding_model=embedder.name, embedding_dim=embedder.dim)
    return UserMemory(user_id, store, embedder, owns_store=owns)



