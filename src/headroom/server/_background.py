"""Background mode: each turn is queued in the store, and one pool of threads extracts every user's
turns with a separate call to the upstream, as ``with_memory`` does for one client.

The queue is the library's (``Store.extraction_queue()``): durable, leased, retried with backoff,
the job removed in the transaction that stores its memories. Several server processes or hosts on
one database share it. The extraction call uses the server's own upstream key
(``$HEADROOM_UPSTREAM_API_KEY``): a caller's key is never written to the queue.
"""

from __future__ import annotations

import logging
import threading
import time

from headroom.memory import HeadroomMemoryError
from headroom.memory._background import Caller, make_caller, run_job, work_loop
from headroom.memory._dialects import ANTHROPIC, OPENAI
from headroom.memory._fast import Turn
from headroom.memory._jobs import Job, RetryPolicy

from ._config import ServerConfig
from ._users import Users

__all__ = ["Extraction"]

logger = logging.getLogger(__name__)


class Extraction:
    def __init__(self, users: Users, config: ServerConfig, *, workers: int = 2, poll_seconds: float = 1.0,
                 policy: RetryPolicy = RetryPolicy()) -> None:
        self.users = users
        self.config = config
        self.queue = users.store.extraction_queue()
        self.policy = policy
        self._workers = workers
        self._poll = poll_seconds
        self._callers: dict[str, Caller] = {}
        self._cond = threading.Condition()
        self._threads: list[threading.Thread] = []
        self._stopping = False

    def record(self, user_id: str, dialect: str, turn: Turn, reply: str) -> None:
        """Queue one turn (durably, before the reply reaches the caller) and wake a worker."""
        self.queue.put(user_id, {"said": turn.said, "reply": reply, "model": turn.model, "dialect": dialect})
        self.kick()

    def depth(self) -> int:
        return self.queue.counts(None)["pending"]

    def kick(self) -> None:
        with self._cond:
            if self._stopping:
                return
            self._threads = [t for t in self._threads if t.is_alive()]
            while len(self._threads) < self._workers:
                thread = threading.Thread(target=self._run, daemon=True, name=f"headroom-server-extract-{len(self._threads)}")
                self._threads.append(thread)
                thread.start()
            self._cond.notify_all()

    def stop(self, timeout: float) -> None:
        """Drain the queue for at most ``timeout`` seconds, then end the threads; what is left stays
        queued for the next start (or another host)."""
        deadline = time.monotonic() + timeout
        while self._threads and time.monotonic() < deadline:
            try:
                if self.depth() == 0:
                    break
            except HeadroomMemoryError:
                break
            time.sleep(0.05)
        with self._cond:
            self._stopping = True
            self._cond.notify_all()
        for thread in self._threads:
            thread.join(max(deadline - time.monotonic(), 1.0))

    def _caller(self, dialect: str) -> Caller:
        caller = self._callers.get(dialect)
        if caller is None:
            key = self.config.extraction_key or "not-set"
            if dialect == ANTHROPIC.name:
                import anthropic

                caller = make_caller(anthropic.Anthropic(base_url=self.config.upstream_root, api_key=key), ANTHROPIC)
            else:
                import openai

                caller = make_caller(openai.OpenAI(base_url=self.config.upstream_root + "/v1", api_key=key), OPENAI)
            self._callers[dialect] = caller
        return caller

    def _run(self) -> None:
        work_loop(self._cond, lambda: self._stopping, lambda: self.queue.take(None), self._process, self._poll)

    def _process(self, job: Job) -> None:
        caller = self._caller(str(job.payload.get("dialect") or OPENAI.name))
        run_job(job, self.users.memory(job.user_id), caller, self.queue, self.policy, None, self.config.min_score)
