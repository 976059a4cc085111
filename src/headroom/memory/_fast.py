"""``with_fast_memory``: inline extraction around any OpenAI-compatible client.

``FastMemory`` is the core: ``before`` shapes a request (search, inject, instruct) and ``after``
cleans a reply and stores what it carried. The client classes below are thin shells that forward
everything else to the wrapped client untouched.
"""

from __future__ import annotations

import asyncio
import inspect
import logging
import os
import threading
import time
import warnings
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any, Callable, Mapping, overload

from ._aio import AsyncUserMemory
from ._api import UserMemory, open_memory
from ._clients import dialect_of, embeddings_client, is_async
from ._corrections import holding_taken_back, new_values, replacements, revisions
from ._dialects import ANTHROPIC, OPENAI, OPENAI_JSON, Dialect
from ._embedders import LOCAL_MODEL, Embedder, make_embedder
from ._errors import HeadroomMemoryError, InvalidInputError, MemoryBypassWarning
from ._grounding import from_user, tells_about_self
from ._inject import (
    DEFAULT_MIN_SCORE,
    append_to_message,
    latest_user_index,
    message_text,
    new_user_texts,
    prepend_to_message,
    user_texts,
)
from ._models import Memory
from ._parser import ExtractedMemory
from ._protocol import REMINDER, ParseResult, format_injection
from ._replay import BlockReplay
from ._store import Store
from ._stream import AsyncMemoryStream, MemoryStream

__all__ = ["with_fast_memory", "FastMemory", "MemoryClient", "AsyncMemoryClient", "Turn", "client_memory",
           "wrap_client", "with_holders"]

logger = logging.getLogger(__name__)


@dataclass
class Turn:
    """What one call remembers between shaping the request and handling the reply."""

    query: str | None = None
    injected: list[tuple[Memory, float]] = field(default_factory=list)
    instructed: bool = False
    said: list[str] = field(default_factory=list)  # the user's new messages in this turn
    heard: list[str] = field(default_factory=list)  # every user message the model is shown
    model: str | None = None
    #: The request without the memory instruction, to ask again when a model wrote only its block.
    plain: dict[str, Any] | None = None
    answered_empty: bool = False


class FastMemory:
    """Shape requests and handle replies for one user's memory.

    Inline (``record=None``): the model is instructed and its reply's block is stripped and stored.
    Background: nothing is added to the request and the reply is left as it is but for echoes of
    the remembered context; ``record`` is called with the turn and the reply's text (to queue it
    for extraction).

    Inline with a ``fallback``: when the instructed model gave no note to read (no block at all, or
    one that held nothing readable: invalid JSON, the example copied), the turn goes to
    ``fallback`` as it would to ``record``, so a model that forgets the protocol does not lose what
    the user said. A block that says "nothing new" (``{"memories": []}``) is an answer, not a miss,
    unless the user stated something about themselves that turn (``tells_about_self``): the 1.5B
    model answered that way after repeating "I'm Priya, a data scientist ..." (bench/RESULTS.md).
    On such a turn, notes that grounding dropped, every one (inventions: "I love working with
    data"), count as none too.
    """

    def __init__(self, memory: UserMemory, *, top_k: int = 5, min_score: float = DEFAULT_MIN_SCORE,
                 record: Callable[[Turn, str], Any] | None = None,
                 fallback: Callable[[Turn, str], Any] | None = None, structured: bool = False) -> None:
        self.memory = memory
        self.structured = structured  # replies asked for as JSON (``_structured.py``)
        self.top_k = top_k
        self.min_score = min_score
        self.record = record
        self.fallback = fallback
        self.observed = Observations()
        self.replay = BlockReplay()
        memory.report_stats(self.observed.counts)

    def retrieve(self, query: str) -> list[tuple[Memory, float]]:
        """The memories worth injecting for ``query``; a failing search injects nothing."""
        try:
            found = self.memory.search(query, top_k=self.top_k)
        except HeadroomMemoryError as exc:
            logger.warning("memory search failed; calling the model without memories: %s", exc)
            return []
        return [(m, score) for m, score in found if score >= self.min_score]

    def before(self, kwargs: Mapping[str, Any], dialect: Dialect) -> tuple[dict[str, Any], Turn]:
        """New keyword arguments for ``create``; the caller's objects are never changed. If shaping
        fails for any reason, the request goes out as the caller wrote it."""
        try:
            return self._shape(kwargs, dialect)
        except Exception:
            logger.exception("could not add memory to the request; calling the model without it")
            return dict(kwargs), Turn()

    def _shape(self, kwargs: Mapping[str, Any], dialect: Dialect) -> tuple[dict[str, Any], Turn]:
        out = dict(kwargs)
        messages = kwargs.get("messages")
        turn = Turn()
        if not isinstance(messages, (list, tuple)):
            return out, turn
        turn.said = new_user_texts(messages)
        turn.heard = user_texts(messages)
        turn.model = kwargs.get("model")
        index = latest_user_index(messages)
        if index is not None:
            turn.query = message_text(messages[index]).strip() or None
        if turn.query:
            turn.injected = self.retrieve(turn.query)
        out["messages"] = list(messages)
        if turn.injected:
            out["messages"] = prepend_to_message(messages, index, format_injection(turn.injected))  # type: ignore[arg-type]
        plain = dict(out)
        turn.instructed = self.record is None and dialect.instruct(out, len(turn.injected))
        if turn.instructed:
            turn.plain = plain
        if turn.instructed and dialect.reminds:
            sent = self.replay.restore(out["messages"])  # earlier answers with their blocks
            if latest_user_index(sent) == len(sent) - 1:  # not after a tool result: mid-history
                sent = append_to_message(sent, len(sent) - 1, REMINDER)
            out["messages"] = sent
        return out, turn

    def store(self, result: ParseResult | None, turn: Turn) -> None:
        """Store what a reply's blocks held (``extract`` then ``write``), or hand the turn to the
        fallback."""
        write = self.handle(result, turn)
        if write is not None:
            write()

    def handle(self, result: ParseResult | None, turn: Turn) -> Callable[[], object] | None:
        """The write an instructed model's reply asks for, not yet run: its notes stored, or the
        turn handed to the fallback when the model gave no note to read; None if neither. A
        correction the user states (``_corrections.new_values``) revises the old notes even when
        the model noted nothing: here, or in the fallback's extraction."""
        extracted = self.extract(result, turn)
        if extracted:
            return lambda: self.write(extracted, turn)
        if result is None:
            return None
        said = "\n".join(turn.said)
        corrects = bool(new_values(said))  # the user's words alone revise the notes they correct
        revise = (lambda: self.write([], turn)) if corrects else None
        fallback = self.fallback
        if fallback is None:
            return revise
        told = corrects or tells_about_self(said)
        if not (told or (not result.memories and (result.blocks == 0 or result.problems))):
            return None  # notes that were all dropped count as none only when the user told something
        reply = result.text
        if not _worth_recording(turn, reply):
            return revise
        self.observed.note("extracted_apart")
        return lambda: self._record(turn, reply, fallback)  # the extraction revises too

    def extract(self, result: ParseResult | None, turn: Turn) -> list[ExtractedMemory]:
        """The notes of a reply's blocks worth storing; what the reply showed about the model (no
        block, a repaired one, an empty answer) is counted. Notes that are not the user's
        (``_grounding.from_user``, its rules without an embedder) are dropped. No I/O."""
        if result is None:
            return []
        self.observed.reply(result)
        turn.answered_empty = says_nothing(result.text) and bool(result.blocks or result.echoes)
        keep = from_user([m.text for m in result.memories], "\n".join(turn.said), result.text,
                         heard="\n".join(turn.heard))
        extracted = [m for m, mine in zip(result.memories, keep) if mine]
        self.replay.remember(result.text, extracted)
        return extracted

    def write(self, extracted: list[ExtractedMemory], turn: Turn) -> list[Memory]:
        """Store the notes now, and embed them in one batch just after. What each replaces (the
        note the turn showed that its ``replaces`` names, or that the user's words take back) is
        resolved here, and the user's notes that keep a taken-back value (shown, or found by a search
        for it) are rewritten with the new one (``_corrections.revisions``). Failures are logged,
        never raised."""
        shown = [m for m, _ in turn.injected]
        try:
            said = "\n".join(turn.said)
            replaced = replacements(extracted, said, shown)
            items = [{"text": m.text, "category": m.category, "replaces": old} for m, old in zip(extracted, replaced)]
            return self.memory.add_many(items + revisions(said, with_holders(shown, said, self.memory), replaced),
                                        source="inline", defer_embedding=True)
        except HeadroomMemoryError as exc:
            logger.error("could not store %d extracted memories: %s", len(extracted), exc)
        except Exception:
            logger.exception("could not store %d extracted memories", len(extracted))
        return []

    def after(self, response: Any, turn: Turn, dialect: Dialect) -> Any:
        """The caller's reply: cleaned and its memories stored (inline), or its turn recorded.
        Whatever goes wrong here is logged; the caller always gets the response."""
        write = self.settle(response, turn, dialect)
        if write is not None:
            write()
        return response

    def settle(self, response: Any, turn: Turn, dialect: Dialect) -> Callable[[], object] | None:
        """``after`` without its I/O: the reply is cleaned in place and the step that writes (stores
        its notes, or queues the turn) is returned, or None when there is nothing to write. The
        server runs this on its event loop and only the write in a worker thread."""
        try:
            if turn.instructed:
                return self.handle(dialect.clean(response), turn)
            record = self.record
            if record is not None:
                dialect.clean(response, blocks=False)  # echoes of the remembered context only
                reply = dialect.reply_text(response)
                return (lambda: self._record(turn, reply, record)) if _worth_recording(turn, reply) else None
        except Exception:
            logger.exception("could not handle the reply's memory; the reply is returned as it is")
        return None

    def ask_again(self, turn: Turn) -> dict[str, Any] | None:
        """The request to send again when the model wrote only its memory block (small models do):
        the same request without the instruction, so the caller still gets an answer."""
        if not turn.answered_empty or turn.plain is None:
            return None
        self.observed.note("asked_again")
        return turn.plain

    def again(self, response: Any, dialect: Dialect) -> Any:
        """The second answer, cleaned of anything block-like but not stored (it was not asked for)."""
        try:
            dialect.clean(response)
        except Exception:
            logger.exception("could not clean the second answer; returned as it is")
        return response

    def stream(self, response: Any, turn: Turn, dialect: Dialect, shell: type) -> Any:
        """The caller's stream, wrapped so its end is handled as ``after`` handles a whole reply."""
        if turn.instructed:
            return shell(response, dialect.stream_filter(), lambda f: self.store(f.result(), turn))
        record = self.record
        if record is not None:
            return shell(response, dialect.stream_filter(blocks=False), lambda f: self._record(turn, f.text(), record))
        return response

    def _record(self, turn: Turn, reply: str, record: Callable[[Turn, str], Any]) -> None:
        if not _worth_recording(turn, reply):
            return
        try:
            record(turn, reply)
        except HeadroomMemoryError as exc:
            logger.error("could not queue the turn for extraction: %s", exc)
        except Exception:
            logger.exception("could not queue the turn for extraction")


def with_holders(shown: list[Memory], said: str, memory: UserMemory) -> list[Memory]:
    """``shown`` and after them the user's other notes that hold a value ``said`` takes back
    (``_corrections.holding_taken_back``), for ``revisions``; a failing search adds none."""
    def search(query: str) -> list[Memory]:
        try:
            return [m for m, _ in memory.search(query, top_k=10)]
        except HeadroomMemoryError as exc:
            logger.warning("could not look up the notes a correction changes: %s", exc)
            return []

    ids = {m.id for m in shown}
    return shown + [m for m in holding_taken_back(said, search) if m.id not in ids]


def _worth_recording(turn: Turn, reply: str) -> bool:
    """A turn is queued for extraction when the user said something in it or the model answered."""
    return bool(turn.said or reply)


def says_nothing(text: str) -> bool:
    """True for a reply with no letter or digit left once its block is removed (``""``, ``"."``): a
    small model that wrote only its block often ends it with a full stop."""
    return not any(char.isalnum() for char in text)


class Observations:
    """How an instructed model follows the protocol, counted for ``stats()`` and warned about at most
    once a minute per kind (a model that never writes a block would otherwise flood the log)."""

    WARN_EVERY_SECONDS = 60.0
    MESSAGES = {
        "replies_without_block": "the model was asked for a memory block and wrote none",
        "repaired_blocks": "the model wrote a memory block in a near-miss format; recognised and stored",
        "echoed_context": "the model repeated the remembered context; removed from the reply",
        "empty_replies": "the reply was empty once its memory block was removed",
        "asked_again": "the model wrote only its memory block; asked again without the instruction",
        "extracted_apart": "the model gave no memory block to read; its turn was queued for extraction",
    }

    def __init__(self) -> None:
        self._counts = dict.fromkeys(self.MESSAGES, 0)
        self._warned: dict[str, float] = {}
        self._lock = threading.Lock()

    def counts(self) -> dict[str, int]:
        with self._lock:
            return dict(self._counts)

    def reply(self, result: ParseResult) -> None:
        if result.blocks == 0:
            self.note("replies_without_block")
        if result.repairs:
            self.note("repaired_blocks")
        if result.echoes:
            self.note("echoed_context")
        if says_nothing(result.text):
            self.note("empty_replies")

    def note(self, kind: str) -> None:
        now = time.monotonic()
        with self._lock:
            self._counts[kind] += 1
            count = self._counts[kind]
            due = now - self._warned.get(kind, -self.WARN_EVERY_SECONDS) >= self.WARN_EVERY_SECONDS
            if due:
                self._warned[kind] = now
        if due:
            logger.warning("%s (%d so far; stats() counts them as %s)", self.MESSAGES[kind], count, kind)


class _Proxy:
    """Forwards every attribute it does not define to the object it wraps."""

    def __init__(self, wrapped: Any) -> None:
        self._wrapped = wrapped

    def __getattr__(self, name: str) -> Any:
        return getattr(self._wrapped, name)


#: Ways to call a model that do not go through ``create``: they reach the SDK without memory.
BYPASSING = ("with_raw_response", "with_streaming_response", "parse", "stream")


class _Create(_Proxy):
    """``chat.completions`` or ``messages`` with memory around ``create``."""

    def __init__(self, resource: Any, core: FastMemory, dialect: Dialect) -> None:
        super().__init__(resource)
        self._core = core
        self._dialect = dialect

    def __getattr__(self, name: str) -> Any:
        if name in BYPASSING:
            warnings.warn(f"{name} bypasses headroom memory: nothing is injected or stored for these calls. "
                          "Use create() for memory, or client.wrapped to bypass it explicitly.",
                          MemoryBypassWarning, stacklevel=2)
        return getattr(self._wrapped, name)

    def create(self, **kwargs: Any) -> Any:
        request, turn = self._core.before(kwargs, self._dialect)
        response = self._wrapped.create(**request)
        if request.get("stream"):
            return self._core.stream(response, turn, self._dialect, MemoryStream)
        response = self._core.after(response, turn, self._dialect)
        again = self._core.ask_again(turn)
        if again is not None:
            response = self._core.again(self._wrapped.create(**again), self._dialect)
        return response


class _AsyncCreate(_Create):
    """The async twin: the memory work runs in a thread, off the event loop."""

    async def create(self, **kwargs: Any) -> Any:
        request, turn = await asyncio.to_thread(self._core.before, kwargs, self._dialect)
        response = await self._wrapped.create(**request)
        if request.get("stream"):
            return self._core.stream(response, turn, self._dialect, AsyncMemoryStream)
        response = await asyncio.to_thread(self._core.after, response, turn, self._dialect)
        again = self._core.ask_again(turn)
        if again is not None:
            response = self._core.again(await self._wrapped.create(**again), self._dialect)
        return response


class _Chat(_Proxy):
    def __init__(self, chat: Any, completions: Any) -> None:
        super().__init__(chat)
        self.completions = completions


class _ClientBase(_Proxy):
    _create: type[_Create] = _Create

    def __init__(self, client: Any, core: FastMemory, *, owns_memory: bool = True) -> None:
        super().__init__(client)
        self._core = core
        self._owns_memory = owns_memory
        if dialect_of(client) is ANTHROPIC:
            self.messages = self._create(client.messages, core, ANTHROPIC)
        else:
            dialect = OPENAI_JSON if core.structured else OPENAI
            self.chat = _Chat(client.chat, self._create(client.chat.completions, core, dialect))

    @property
    def wrapped(self) -> Any:
        """The client underneath, for calls that should bypass memory."""
        return self._wrapped

    def with_options(self, **options: Any) -> Any:
        """The wrapped client's ``with_options``, still with memory."""
        return type(self)(self._wrapped.with_options(**options), self._core, owns_memory=False)

    def __repr__(self) -> str:
        return f"{type(self).__name__}({self._wrapped!r}, user_id={self._core.memory.user_id!r})"


class MemoryClient(_ClientBase):
    """Behaves like the wrapped client; ``chat.completions.create`` gains memory, ``memory`` is the API."""

    def __init__(self, client: Any, core: FastMemory, *, owns_memory: bool = True) -> None:
        super().__init__(client, core, owns_memory=owns_memory)
        self.memory = core.memory

    def close(self) -> None:
        try:
            close = getattr(self._wrapped, "close", None)
            if callable(close):
                close()
        finally:
            if self._owns_memory:
                self._core.memory.close()

    def __enter__(self) -> "MemoryClient":
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()


class AsyncMemoryClient(_ClientBase):
    """The async twin: ``await chat.completions.create(...)``; ``memory`` has awaitable methods."""

    _create = _AsyncCreate

    def __init__(self, client: Any, core: FastMemory, *, owns_memory: bool = True) -> None:
        super().__init__(client, core, owns_memory=owns_memory)
        self.memory = AsyncUserMemory(core.memory)

    async def close(self) -> None:
        try:
            close = getattr(self._wrapped, "close", None)
            if callable(close):
                result = close()
                if inspect.isawaitable(result):
                    await result
        finally:
            if self._owns_memory:
                await asyncio.to_thread(self._core.memory.close)

    async def __aenter__(self) -> "AsyncMemoryClient":
        return self

    async def __aexit__(self, *exc: object) -> None:
        await self.close()


def client_memory(
    client: Any,
    user_id: str,
    db_path: str | os.PathLike[str] | None,
    top_k: int,
    use_local_embeddings: bool,
    embedding_model: str,
    embedder: Embedder | None,
    store: Store | None,
) -> UserMemory:
    """Check the client and the options, and open the user's memory (what both wrappers share)."""
    dialect_of(client)  # a clear TypeError now rather than an AttributeError on the first call
    if isinstance(top_k, bool) or not isinstance(top_k, int) or not 1 <= top_k <= 100:
        raise InvalidInputError("top_k must be an integer from 1 to 100")
    if embedder is None and not use_local_embeddings:
        embedder = make_embedder(False, embedding_model, client=embeddings_client(client))
    return open_memory(user_id, db_path, embedder=embedder, use_local_embeddings=use_local_embeddings,
                       embedding_model=embedding_model, store=store)


#: The async clients of the SDKs, for type checkers: wrapping one gives an ``AsyncMemoryClient``.
if TYPE_CHECKING:
    from anthropic import AsyncAnthropic
    from openai import AsyncOpenAI

    AsyncClient = AsyncOpenAI | AsyncAnthropic


def wrap_client(client: Any, core: FastMemory) -> MemoryClient | AsyncMemoryClient:
    return AsyncMemoryClient(client, core) if is_async(client) else MemoryClient(client, core)


@overload
def with_fast_memory(client: AsyncClient, user_id: str, db_path: str | os.PathLike[str] | None = ..., top_k: int = ...,
                     use_local_embeddings: bool = ..., embedding_model: str = ..., *, min_score: float = ...,
                     embedder: Embedder | None = ..., store: Store | None = ..., fallback_extraction: bool = ...,
                     extraction_client: Any = ..., extraction_model: str | None = ...,
                     structured_output: bool = ...) -> AsyncMemoryClient: ...
@overload
def with_fast_memory(client: Any, user_id: str, db_path: str | os.PathLike[str] | None = ..., top_k: int = ...,
                     use_local_embeddings: bool = ..., embedding_model: str = ..., *, min_score: float = ...,
                     embedder: Embedder | None = ..., store: Store | None = ..., fallback_extraction: bool = ...,
                     extraction_client: Any = ..., extraction_model: str | None = ...,
                     structured_output: bool = ...) -> MemoryClient: ...
def with_fast_memory(
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
    fallback_extraction: bool = False,
    extraction_client: Any = None,
    extraction_model: str | None = None,
    structured_output: bool = False,
) -> MemoryClient | AsyncMemoryClient:
    """Give an OpenAI-compatible client memory, extracted inline from its own replies.

    Before each ``chat.completions.create`` the user's relevant memories (score >= ``min_score``,
    at most ``top_k``) are put before the latest user message and the model is asked to end its
    reply with a ``<memory>`` block; the block is stripped from what the caller gets and its
    memories are stored before ``create`` returns (embedded just after). An async client
    (``AsyncOpenAI``) gives an ``AsyncMemoryClient``; ``stream=True`` gives a stream with the block
    removed as it passes.

    With ``fallback_extraction=True``, a turn whose reply gave no note to read (small models often
    forget the block) is queued for a separate extraction call in a background thread, as
    ``with_memory`` does, through ``extraction_client`` with ``extraction_model`` (defaults: the
    same client, or its synchronous twin, and the call's own model). It costs a second call only
    on such turns; ``client.memory.flush()`` waits for them.

    With ``structured_output=True`` (OpenAI-compatible servers that take ``response_format``
    ``json_schema``: OpenAI, vLLM, llama.cpp) the reply is asked for as JSON, the answer and the
    memories in two required fields, so a model cannot forget the memories; the caller still gets
    the answer alone, as text or as a stream of it. A request with tools asks for the block
    instead; one with a ``response_format`` of its own is not instructed.
    """
    if structured_output and dialect_of(client) is ANTHROPIC:
        raise InvalidInputError("structured_output needs an OpenAI-compatible client (response_format json_schema)")
    memory = client_memory(client, user_id, db_path, top_k, use_local_embeddings, embedding_model, embedder, store)
    fallback = None
    if fallback_extraction:
        from ._background import extraction_queue  # it builds on this module

        try:
            fallback = extraction_queue(memory, client, extraction_client=extraction_client,
                                        extraction_model=extraction_model, min_score=min_score)
        except BaseException:
            memory.close()
            raise
    return wrap_client(client, FastMemory(memory, top_k=top_k, min_score=min_score, fallback=fallback,
                                          structured=structured_output))
