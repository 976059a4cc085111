"""The storage protocol: what the memory API needs from a backend.

Every method is scoped by ``user_id``; a backend must never let one user's call see, count or change
another user's rows. Vectors arrive already normalized, as float32 rows.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any, Iterator, Protocol, Sequence

import numpy as np

from ._jobs import Job, JobQueue
from ._models import Memory

if TYPE_CHECKING:
    from ._scoring import Scoring

__all__ = ["Store"]


class Store(Protocol):
    path: str
    embedding_model: str
    embedding_dim: int

    def add(self, memories: Sequence[Memory], vectors: np.ndarray | None, *, done: Job | None = None) -> list[Memory]:
        """Store new memories; a text the user already has, or a near duplicate of one of its
        searchable memories (``_scoring.near_duplicate``), returns that memory instead.

        With ``vectors=None`` the memories are stored unembedded: listed, not yet searchable.
        ``done`` is the extraction job (of ``extraction_queue()``) they came from: it is removed in
        the same transaction, and ``LeaseLost`` (nothing stored) if another worker holds it now.
        """
        ...

    def extraction_queue(self) -> JobQueue:
        """The durable queue of turns waiting for background extraction, on this backend."""
        ...

    def write_mark(self) -> int:
        """A position in the order of writes: every row written so far is at or before it."""
        ...

    def unembedded_count(self, mark: int | None = None) -> int:
        """Live memories (any user) written at or before ``mark`` that still have no vector."""
        ...

    def claim_unembedded(self, mark: int, limit: int, lease_seconds: float) -> list[Memory]:
        """Up to ``limit`` waiting memories (any user) at or before ``mark`` that no other worker
        holds, now held by the caller for ``lease_seconds``."""
        ...

    def release_claims(self, memories: Sequence[Memory]) -> None:
        """Give claimed memories back without vectors (their embedding failed)."""
        ...

    def settle_vectors(self, memories: Sequence[Memory], vectors: np.ndarray) -> int:
        """In one transaction, give each memory still waiting its vector, or merge it into the user's
        near duplicate; memories no longer waiting are left alone. Returns how many got vectors."""
        ...

    def find_text(self, user_id: str, text: str) -> Memory | None:
        """The user's live memory with the same text after case and white-space folding."""
        ...

    def get(self, user_id: str, memory_id: str) -> Memory | None: ...

    def supersede(self, old_id: str, memory: Memory, vector: np.ndarray | None) -> Memory:
        """Store ``memory`` as the successor of the user's live memory ``old_id`` (kept, linked)."""
        ...

    def resolve(self, user_id: str, ref: str) -> Memory | None:
        """The user's live memory named by an id or a short ``m1a2b3c`` reference."""
        ...

    def history(self, user_id: str, memory_id: str) -> list[Memory]:
        """Every linked version of a memory, oldest first."""
        ...

    def list_memories(self, user_id: str, category: str | None = None) -> list[Memory]: ...

    def update(self, memory: Memory, vector: np.ndarray | None) -> Memory:
        """Replace text/category/metadata of an existing memory (and its vector, when given)."""
        ...

    def delete(self, user_id: str, memory_id: str) -> bool: ...

    def clear(self, user_id: str) -> int: ...

    def health(self) -> list[dict[str, Any]]:
        """Checks of the backend, each ``{"check": name, "ok": bool, "detail": text}``."""
        ...

    def owner(self, memory_id: str) -> str | None:
        """The user a memory id belongs to (for tools that hold only the id, such as the CLI)."""
        ...

    def users(self) -> list[dict[str, Any]]:
        """Every user with a row: ``{"user_id", "memories" (live), "rows" (all), "last_write" (POSIX seconds)}``."""
        ...

    def dump(self, user_id: str | None = None) -> Iterator[tuple[Memory, np.ndarray | None]]:
        """Every row of ``user_id`` (or of every user), superseded ones included, oldest first,
        each with its vector (None while waiting for one)."""
        ...

    def load(self, rows: Sequence[tuple[Memory, np.ndarray | None]]) -> int:
        """Insert the rows this backend does not have (by id; a live text the user has under another
        id is skipped too), keeping ids, times and links; returns how many were new."""
        ...

    def ranked(self, user_id: str, query: np.ndarray, top_k: int, category: str | None = None,
               words: Sequence[str] = (), scoring: Scoring | None = None) -> list[tuple[Memory, float, float]]:
        """The user's ``top_k`` searchable live memories ranked by ``scoring`` (cosine to ``query``
        and full-text relevance to ``words``; cosine alone without it), each with its cosine and its
        keyword score (0 to 1): why it ranks there."""
        ...

    def counts(self, user_id: str) -> dict[str, int]:
        """Live memories per category."""
        ...

    def close(self) -> None: ...
