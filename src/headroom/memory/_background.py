"""``with_memory``: replies as written, memories extracted by a separate call in background threads.

After each call the turn is written to the queue in the memory file before ``create`` returns; worker
threads take jobs, ask the model (through the raw client) for a ``<memory>`` block, then embed and
store the memories in the transaction that removes the job. Failures are retried with backoff and
then kept as failed, visible in ``stats()`` and retryable; nothing is dropped.
"""

from __future__ import annotations

import logging
import os
import threading
import time
from typing import TYPE_CHECKING, Any, Callable, overload

from ._api import UserMemory
from ._clients import dialect_of, is_async, sync_twin
from ._corrections import replacements, revisions
from ._deferred import EXIT_WAIT_SECONDS, stop_at_exit
from ._dialects import ANTHROPIC, Dialect
from ._embedders import LOCAL_MODEL, Embedder
from ._errors import HeadroomMemoryError, InvalidInputError
from ._fast import (
    AsyncMemoryClient,
    FastMemory,
    MemoryClient,
    Turn,
    client_memory,
    with_holders,
    wrap_client,
)
from ._grounding import from_user
from ._inject import DEFAULT_MIN_SCORE
from ._jobs import Job, JobQueue, LeaseLost, RetryPolicy
from ._protocol import EXTRACTION_SCHEMA, extraction_prompt, parse_reply, reply_for_extraction
from ._store import Store

if TYPE_CHECKING:
    from ._fast import AsyncClient

__all__ = ["with_memory", "extraction_queue", "ExtractionWorker", "RetryPolicy", "run_job", "make_caller", "work_loop"]

logger = logging.getLogger(__name__)

#: Signature of the extraction call: (system, user text, model) -> the model's reply text.
Caller = Callable[[str, str, str], str]
KNOWN_MEMORIES = 10


#: An extraction reply is a short list of notes; a model caught in a repetition loop stops here.
EXTRACTION_MAX_TOKENS = 512
#: Structured output, for servers that support it (OpenAI, vLLM, llama.cpp): the reply is then a
#: valid ``{"memories": [...]}`` object, which the parser reads like a block.
STRUCTURED = {"type": "json_schema", "json_schema": {"name": "memories", "strict": False, "schema": EXTRACTION_SCHEMA}}
#: What an OpenAI-shaped extraction call asks for beyond the request itself: structured output, and
#: temperature 0 (copying what the user said is no place for sampling: at the server's default a
#: 1.5B model noted the assistant's "Happy birthday to her!" as the user's). A server that refuses
#: either (some reasoning models take no temperature) gets neither from then on.
EXTRACTION_OPTIONS: dict[str, Any] = {"response_format": STRUCTURED, "temperature": 0}


def make_caller(client: Any, dialect: Dialect) -> Caller:
    """One extraction request through a synchronous client of either API family."""
    if dialect is ANTHROPIC:
        def call(system: str, user: str, model: str) -> str:
            # No temperature: the Anthropic SDK's create no longer takes one (2.x; newer models sample their own way).
            message = client.messages.create(model=model, max_tokens=EXTRACTION_MAX_TOKENS, system=system,
                                             messages=[{"role": "user", "content": user}])
            return dialect.reply_text(message)
        return call
    extras = [EXTRACTION_OPTIONS]  # until the server refuses them once

    def call_chat(system: str, user: str, model: str) -> str:
        request: dict[str, Any] = {"model": model, "max_tokens": EXTRACTION_MAX_TOKENS, "messages": [
            {"role": "system", "content": system}, {"role": "user", "content": user}]}
        if extras[0]:
            try:
                return dialect.reply_text(client.chat.completions.create(**request, **extras[0]))
            except Exception as exc:
                if getattr(exc, "status_code", None) not in (400, 404, 415, 422, 501):
                    raise
                extras[0] = {}
                logger.info("the extraction server refused structured output or temperature 0 (%s); asking in "
                            "plain text", exc)
        return dialect.reply_text(client.chat.completions.create(**request))

    return call_chat


class ExtractionWorker:
    """Threads that drain one user's extraction jobs; ``kick``/``wait``/``stop`` like the embedder's."""

    def __init__(self, memory: UserMemory, queue: JobQueue, call: Caller, *, workers: int = 1,
                 policy: RetryPolicy = RetryPolicy(), model: str | None = None, min_score: float = DEFAULT_MIN_SCORE,
                 poll_seconds: float = 1.0) -> None:
        self.memory = memory
        self.queue = queue
        self._call = call
        self._workers = workers
        self.policy = policy
        self.model = model
        self.min_score = min_score
        self._poll = poll_seconds
        self._cond = threading.Condition()
        self._threads: list[threading.Thread] = []
        self._stopping = False
        self.last_model: str | None = None
        stop_at_exit(self, order=0)

    # -- control ------------------------------------------------------------------------------------

    def kick(self) -> None:
        with self._cond:
            self._stopping = False
            self._threads = [t for t in self._threads if t.is_alive()]
            while len(self._threads) < self._workers:
                thread = threading.Thread(target=self._run, daemon=True,
                                          name=f"headroom-extract-{self.memory.user_id}-{len(self._threads)}")
                self._threads.append(thread)
                thread.start()
            self._cond.notify_all()

    def wait(self, timeout: float | None = None) -> bool:
        """Wait until no job of this user is pending or running; True if none failed either."""
        deadline = None if timeout is None else time.monotonic() + timeout
        while True:
            counts = self.queue.counts(self.memory.user_id)
            if counts["pending"] == 0:
                return counts["failed"] == 0
            if deadline is not None and time.monotonic() >= deadline:
                return False
            with self._cond:
                self._cond.wait(0.02)

    def stop(self, timeout: float = EXIT_WAIT_SECONDS) -> None:
        """Drain for at most ``timeout`` seconds, then end the threads; unfinished jobs stay queued."""
        if any(t.is_alive() for t in self._threads):
            self.wait(timeout)
        with self._cond:
            self._stopping = True
            self._cond.notify_all()
        for thread in self._threads:
            thread.join(1.0)

    def stats(self) -> dict[str, int]:
        counts = self.queue.counts(self.memory.user_id)
        return {"pending_extractions": counts["pending"], "failed_extractions": counts["failed"]}

    def submit(self, said: list[str], reply: str, model: str | None = None) -> None:
        """Queue one turn for extraction (``model`` defaults to the last one the client called)."""
        if model:
            self.last_model = model
        self.queue.put(self.memory.user_id, {"said": said, "reply": reply, "model": model or self.last_model})
        self.kick()

    def retry_failed(self) -> int:
        count = self.queue.retry_failed(self.memory.user_id)
        if count:
            self.kick()
        return count

    # -- work ---------------------------------------------------------------------------------------

    def _run(self) -> None:
        work_loop(self._cond, lambda: self._stopping, lambda: self.queue.take(self.memory.user_id), self._process,
                  self._poll)

    def _process(self, job: Job) -> None:
        run_job(job, self.memory, self._call, self.queue, self.policy, self.model, self.min_score)


def work_loop(cond: threading.Condition, stopping: Callable[[], bool], take: Callable[[], Job | None],
              process: Callable[[Job], None], poll_seconds: float) -> None:
    """A worker thread's loop: take a due job and process it, else sleep until kicked through
    ``cond`` (or ``poll_seconds``, for retries that come due), until ``stopping()``."""
    while True:
        with cond:
            if stopping():
                return
        try:
            job = take()
        except HeadroomMemoryError as exc:
            logger.error("cannot read the extraction queue: %s", exc)
            job = None
        if job is None:
            with cond:
                if not stopping():
                    cond.wait(poll_seconds)
            continue
        process(job)
        with cond:
            cond.notify_all()


def known_memories(memory: UserMemory, said: list[str], min_score: float) -> list[Any]:
    """What the user already has about what they said: shown to the extraction call so a
    correction can name what it replaces."""
    query = " ".join(said).strip()
    if not query:
        return []
    try:
        found = memory.search(query[:2000], top_k=KNOWN_MEMORIES)
    except HeadroomMemoryError as exc:
        logger.warning("could not look up known memories for extraction: %s", exc)
        return []
    return [m for m, score in found if score >= min_score]


def run_job(job: Job, memory: UserMemory, call: Caller, queue: JobQueue, policy: RetryPolicy, model: str | None,
            min_score: float) -> None:
    """Extract one queued turn and store its memories in the transaction that removes the job;
    a failure is recorded on the job (retried with backoff, then kept as failed)."""
    said = [str(t) for t in job.payload.get("said") or []]
    reply = reply_for_extraction(str(job.payload.get("reply") or ""), "\n".join(said))
    model = model or job.payload.get("model")
    try:
        if not model:
            raise InvalidInputError("no model to extract with: pass extraction_model=")
        known = known_memories(memory, said, min_score)
        system, user = extraction_prompt(said, reply, known)
        answer = call(system, user, model)
        parsed = parse_reply(answer)
        for problem in parsed.problems:
            logger.warning("memory block from extraction: %s", problem)
        keep = from_user([m.text for m in parsed.memories], "\n".join(said), reply, memory.embedder,
                         remembered=[m.text for m in known])
        if not all(keep):
            logger.info("extraction proposed %d notes that are not the user's (questions, the reply's "
                        "words); dropped", keep.count(False))
        notes = [m for m, mine in zip(parsed.memories, keep) if mine]
        words = "\n".join(said)
        replaced = replacements(notes, words, known)
        items = [{"text": m.text, "category": m.category, "replaces": old} for m, old in zip(notes, replaced)]
        items += revisions(words, with_holders(known, words, memory), replaced)
        memory.add_many(items, source="background", done=job)
    except LeaseLost as exc:
        logger.info("%s", exc)
    except Exception as exc:  # the model's API, the embedder, the store: retried, then kept as failed
        error = f"{type(exc).__name__}: {exc}"
        if queue.fail(job, error, policy):
            logger.warning("extraction job %d failed (attempt %d), will retry: %s", job.id, job.attempts + 1, error)
        else:
            logger.error("extraction job %d failed %d times; kept as failed: %s", job.id, job.attempts + 1, error)


@overload
def with_memory(client: AsyncClient, user_id: str, db_path: str | os.PathLike[str] | None = ..., top_k: int = ...,
                use_local_embeddings: bool = ..., embedding_model: str = ..., *, min_score: float = ...,
                embedder: Embedder | None = ..., store: Store | None = ..., extraction_model: str | None = ...,
                extraction_client: Any = ..., workers: int = ..., retry: RetryPolicy = ...) -> AsyncMemoryClient: ...
@overload
def with_memory(client: Any, user_id: str, db_path: str | os.PathLike[str] | None = ..., top_k: int = ...,
                use_local_embeddings: bool = ..., embedding_model: str = ..., *, min_score: float = ...,
                embedder: Embedder | None = ..., store: Store | None = ..., extraction_model: str | None = ...,
                extraction_client: Any = ..., workers: int = ..., retry: RetryPolicy = ...) -> MemoryClient: ...
def with_memory(
    client: Any,
    user_id: str,
    db_path: str | os.PathLike[str] | None = None,
    top_k: int = 5,
    use_local_embeddings: bool = True,
    embedding_model: str = LOCAL_MODEL,
    *,
    min_score: float = DEFAULT_MIN_SCORE,
    embedder: Embedder | None = None,
    store: Store | None = None,
    extraction_model: str | None = None,
    extraction_client: Any = None,
    workers: int = 1,
    retry: RetryPolicy = RetryPolicy(),
) -> MemoryClient | AsyncMemoryClient:
    """Give a client memory extracted by a separate call in the background.

    Memories are injected as ``with_fast_memory`` does, but the request gets no instruction and the
    reply comes back as the model wrote it, less any repeat of the injected context. Each turn is queued in the memory file before
    ``create`` returns; ``workers`` threads extract with ``extraction_model`` (default: the call's
    own model) through ``extraction_client`` (default: the same client, or its synchronous twin).
    ``client.memory.flush()`` waits for the queue; ``close()`` and interpreter exit drain it for at
    most ``EXIT_WAIT_SECONDS``, and what is left is taken up by the next process.
    """
    if isinstance(workers, bool) or not isinstance(workers, int) or workers < 1:  # before the memory is opened
        raise InvalidInputError("workers must be a positive integer")
    memory = client_memory(client, user_id, db_path, top_k, use_local_embeddings, embedding_model, embedder, store)
    record = extraction_queue(memory, client, extraction_client=extraction_client, extraction_model=extraction_model,
                              workers=workers, retry=retry, min_score=min_score)
    return wrap_client(client, FastMemory(memory, top_k=top_k, min_score=min_score, record=record))


def extraction_queue(memory: UserMemory, client: Any, *, extraction_client: Any = None,
                     extraction_model: str | None = None, workers: int = 1, retry: RetryPolicy = RetryPolicy(),
                     min_score: float = DEFAULT_MIN_SCORE) -> Callable[[Turn, str], None]:
    """Start ``memory``'s ``workers`` extraction threads (a positive integer, checked by the wrapper)
    and return what queues a turn for them: ``record`` of ``with_memory``, or ``fallback`` of
    ``with_fast_memory``. Jobs an earlier process left are taken up now."""
    dialect = dialect_of(client)
    if extraction_client is None:
        extraction_client = sync_twin(client) if is_async(client) else client
    worker = ExtractionWorker(memory, memory.store.extraction_queue(), make_caller(extraction_client, dialect),
                              workers=workers, policy=retry, model=extraction_model, min_score=min_score)
    memory.attach_worker(worker)

    def record(turn: Turn, reply: str) -> None:
        worker.submit(turn.said, reply, turn.model)

    worker.kick()
    return record
