"""The extraction queue (``_jobs.JobQueue``) in the memory's own database, any ``SQLStore``.

A running job whose owner died on this host, or whose lease lapsed, is taken again by the next
worker of the same user. ``SQLStore.add(..., done=job)`` removes a job in the transaction that
stores its memories (``finish_job`` below). On a database with row locks (PostgreSQL) a worker
skips the jobs another worker is taking at that moment (``FOR UPDATE SKIP LOCKED``) instead of
waiting for them.
"""

from __future__ import annotations

import json
import os
import socket
import time
import uuid
from typing import TYPE_CHECKING, Any

from ._jobs import Job, LeaseLost, RetryPolicy

if TYPE_CHECKING:
    from ._sql_store import SQLStore

__all__ = ["SQLJobQueue", "finish_job"]


def _alive_elsewhere(owner: str | None) -> bool:
    """False when the owner was a process on this host that no longer exists."""
    if not owner:
        return False
    host, _, rest = owner.partition(":")
    pid = rest.partition(":")[0]
    if host != socket.gethostname() or not pid.isdigit():
        return True  # cannot tell from here: wait for the lease to lapse
    if int(pid) == os.getpid():
        return True
    try:
        os.kill(int(pid), 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True


def finish_job(db: Any, job: Job) -> None:
    """Remove ``job`` inside the caller's transaction; LeaseLost if its lease is no longer ``job.owner``'s."""
    gone = db.execute("DELETE FROM extraction_jobs WHERE id = ? AND lease_owner = ?", (job.id, job.owner)).rowcount
    if not gone:
        raise LeaseLost(f"extraction job {job.id} was taken by another worker")


class SQLJobQueue:
    """``JobQueue`` on the store's database and connection (its transactions, its lock)."""

    def __init__(self, store: SQLStore, *, lease_seconds: float = 600.0) -> None:
        self.store = store
        self.lease_seconds = lease_seconds

    def put(self, user_id: str, payload: dict[str, Any]) -> int:
        now = time.time()
        with self.store.transaction() as db:
            return int(db.execute(
                "INSERT INTO extraction_jobs (user_id, payload, created_at, next_attempt_at) VALUES (?, ?, ?, ?) "
                "RETURNING id",
                (user_id, json.dumps(payload), now, now),
            ).fetchone()[0])

    def take(self, user_id: str | None) -> Job | None:
        """The oldest job of this user (None: of any user) that is due, or was left running by a
        dead or late owner."""
        now = time.time()
        owner = f"{socket.gethostname()}:{os.getpid()}:{uuid.uuid4().hex[:8]}"
        whose, args = ("user_id = ? AND ", (user_id, now)) if user_id is not None else ("", (now,))
        with self.store.transaction() as db:
            rows = db.execute(
                "SELECT id, user_id, payload, attempts, status, lease_owner, lease_until FROM extraction_jobs "
                f"WHERE {whose}status != 'failed' AND next_attempt_at <= ? ORDER BY id" + self.store.row_lock,
                args,
            ).fetchall()
            for job_id, job_user, payload, attempts, status, lease_owner, lease_until in rows:
                if status == "running" and lease_until > now and _alive_elsewhere(lease_owner):
                    continue
                db.execute(
                    "UPDATE extraction_jobs SET status = 'running', lease_owner = ?, lease_until = ? WHERE id = ?",
                    (owner, now + self.lease_seconds, job_id),
                )
                return Job(job_id, job_user, json.loads(payload), attempts, owner)
        return None

    def fail(self, job: Job, error: str, policy: RetryPolicy) -> bool:
        """Record a failed attempt; True if the job will be tried again, False if it is now failed."""
        attempts = job.attempts + 1
        retry = attempts < policy.max_attempts
        with self.store.transaction() as db:
            db.execute(
                "UPDATE extraction_jobs SET attempts = ?, last_error = ?, status = ?, next_attempt_at = ?, "
                "lease_owner = NULL, lease_until = NULL WHERE id = ? AND lease_owner = ?",
                (attempts, error[:2000], "pending" if retry else "failed",
                 time.time() + (policy.delay(attempts) if retry else 0), job.id, job.owner),
            )
        return retry

    def retry_failed(self, user_id: str) -> int:
        """Put this user's failed jobs back in the queue with a fresh count of attempts."""
        with self.store.transaction() as db:
            return db.execute(
                "UPDATE extraction_jobs SET status = 'pending', attempts = 0, next_attempt_at = ? "
                "WHERE user_id = ? AND status = 'failed'",
                (time.time(), user_id),
            ).rowcount

    def counts(self, user_id: str | None) -> dict[str, int]:
        whose, args = ("WHERE user_id = ? ", (user_id,)) if user_id is not None else ("", ())
        rows = self.store.query(f"SELECT status, COUNT(*) FROM extraction_jobs {whose}GROUP BY status", args)
        found = {status: int(n) for status, n in rows}
        return {"pending": found.get("pending", 0) + found.get("running", 0), "failed": found.get("failed", 0)}

    def failed_users(self) -> list[str]:
        return [u for (u,) in self.store.query(
            "SELECT DISTINCT user_id FROM extraction_jobs WHERE status = 'failed' ORDER BY user_id", ())]
