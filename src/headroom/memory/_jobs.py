"""The extraction queue's protocol: what ``with_memory``'s workers need from a backend.

A turn waiting for background extraction is a ``Job``. A worker ``take``s one under a lease (its
owner names host, process and a random token); the job leaves the queue only in the transaction
that stores its memories (``Store.add(..., done=job)``), so a crash between the two loses nothing
and stores nothing twice. A failing job is tried again with backoff (``RetryPolicy``), then kept
as failed until ``retry_failed``. Nothing here names a database: the SQLite queue lives in
``_sql_queue.py``, in the memory's own database.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Protocol

from ._errors import StorageError

__all__ = ["Job", "JobQueue", "RetryPolicy", "LeaseLost"]


class LeaseLost(StorageError):
    """The job was taken by another worker after this one's lease lapsed; its result is dropped."""


@dataclass(frozen=True)
class RetryPolicy:
    """How often and how patiently a failing extraction is tried before it is kept as failed."""

    max_attempts: int = 5
    base_delay: float = 1.0
    max_delay: float = 60.0

    def delay(self, attempts: int) -> float:
        return min(self.max_delay, self.base_delay * 2 ** max(attempts - 1, 0))


@dataclass(frozen=True)
class Job:
    id: int
    user_id: str
    payload: dict[str, Any]
    attempts: int
    owner: str  # who holds the lease: only this owner may finish or fail the job


class JobQueue(Protocol):
    def put(self, user_id: str, payload: dict[str, Any]) -> int:
        """Queue a turn (a JSON-able payload) durably; returns the job's id."""
        ...

    def take(self, user_id: str | None) -> Job | None:
        """The oldest job of this user (None: of any user, for a pool serving many) that is due,
        or was left running by a dead or late owner, now leased to the caller."""
        ...

    def fail(self, job: Job, error: str, policy: RetryPolicy) -> bool:
        """Record a failed attempt; True if the job will be tried again, False if it is now failed."""
        ...

    def retry_failed(self, user_id: str) -> int:
        """Put this user's failed jobs back in the queue with a fresh count of attempts."""
        ...

    def counts(self, user_id: str | None) -> dict[str, int]:
        """``{"pending": queued or running, "failed": kept as failed}`` for this user (None: all)."""
        ...

    def failed_users(self) -> list[str]:
        """The users with jobs kept as failed."""
        ...
