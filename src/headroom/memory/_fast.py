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
from dataclasses import dataclass, field
from typing import Any, Mapping

from ._aio import AsyncUserMemory
from ._api import UserMemory, open_memory
from ._embedders import Embedder, LOCAL_MODEL
from ._errors import HeadroomMemoryError, InvalidInputError
from ._inject import (
    DEFAULT_MIN_SCORE,
    add_instruction,
    latest_user_index,
    message_text,
    prepend_to_message,
    wants_json,
)
from ._models import Memory
from ._protocol import INSTRUCTION, ExtractedMemory, format_injection, parse_reply
from ._store import Store
from ._stream import AsyncMemoryStream, MemoryStream

__all__ = ["with_fast_memory", "FastMemory", "MemoryClient", "AsyncMemoryClient", "Turn"]

logger = logging.getLogger(__name__)


@dataclass
class Turn:
    """What one call remembers between shaping the request and handling the reply."""

    query: str | None = None
    injected: list[tuple[Memory, float]] = field(default_factory=list)
    instructed: bool = False


class FastMemory:
    """Shape requests and handle replies for one user's memory."""

    def __init__(self, memory: UserMemory, *, top_k: int = 5, min_score: float = DEFAULT_MIN_SCORE,
                 instruct: bool = True) -> None:
        self.memory = memory
        self.top_k = top_k
        self.min_score = min_score
        self.instruct = instruct

    def retrieve(self, query: str) -> list[tuple[Memory, float]]:
        """The memories worth injecting for ``query``; a failing search injects nothing."""
        try:
            found = self.memory.search(query, top_k=self.top_k)
        except HeadroomMemoryError as exc:
            logger.warning("memory search failed; calling the model without memories: %s", exc)
            return []
        return [(m, score) for m, score in found if score >= self.min_score]

    def before(self, kwargs: Mapping[str, Any]) -> tuple[dict[str, Any], Turn]:
        """New keyword arguments for ``create``; the caller's objects are never changed."""
        out = dict(kwargs)
        messages = kwargs.get("messages")
        turn = Turn()
        if not isinstance(messages, (list, tuple)):
            return out, turn
        index = latest_user_index(messages)
        if index is not None:
            turn.query = message_text(messages[index]).strip() or None
        if turn.query:
            turn.injected = self.retrieve(turn.query)
        if turn.injected:
            messages = prepend_to_message(messages, index, format_injection(turn.injected))  # type: ignore[arg-type]
        if self.instruct and not wants_json(kwargs):
            messages = add_instruction(messages, INSTRUCTION)
            turn.instructed = True
        out["messages"] = list(messages)
        return out, turn

    def clean(self, response: Any, turn: Turn) -> list[ExtractedMemory]:
        """Strip the block from every choice in place; return the memories of the first choice."""
        if not turn.instructed:
            return []
        extracted: list[ExtractedMemory] = []
        for position, choice in enumerate(getattr(response, "choices", None) or []):
            message = getattr(choice, "message", None)
            content = getattr(message, "content", None)
            if not isinstance(content, str):
                continue  # tool calls, refusals: nothing to strip
            result = parse_reply(content)
            message.content = result.text
            for problem in result.problems:
                logger.warning("memory block: %s", problem)
            if position == 0 or getattr(choice, "index", None) == 0:
                extracted = extracted or result.memories
        return extracted

    def store(self, extracted: list[ExtractedMemory]) -> list[Memory]:
        """Store the extracted memories now and embed them in one batch just after; failures are logged."""
        if not extracted:
            return []
        try:
            return self.memory.add_many(
                [{"text": m.text, "category": m.category} for m in extracted], source="inline",
                defer_embedding=True,
            )
        except HeadroomMemoryError as exc:
            logger.error("could not store %d extracted memories: %s", len(extracted), exc)
            return []

    def after(self, response: Any, turn: Turn) -> Any:
        if not turn.instructed:
            return response
        self.store(self.clean(response, turn))
        return response


class _Proxy:
    """Forwards every attribute it does not define to the object it wraps."""

    def __init__(self, wrapped: Any) -> None:
        self._wrapped = wrapped

    def __getattr__(self, name: str) -> Any:
        return getattr(self._wrapped, name)


class _Completions(_Proxy):
    def __init__(self, completions: Any, core: FastMemory) -> None:
        super().__init__(completions)
        self._core = core

    def create(self, **kwargs: Any) -> Any:
        request, turn = self._core.before(kwargs)
        response = self._wrapped.create(**request)
        if turn.instructed and request.get("stream"):
            return MemoryStream(response, self._core.store)
        return self._core.after(response, turn)


class _AsyncCompletions(_Proxy):
    def __init__(self, completions: Any, core: FastMemory) -> None:
        super().__init__(completions)
        self._core = core

    async def create(self, **kwargs: Any) -> Any:
        request, turn = await asyncio.to_thread(self._core.before, kwargs)
        response = await self._wrapped.create(**request)
        if turn.instructed and request.get("stream"):
            return AsyncMemoryStream(response, self._core.store)
        return await asyncio.to_thread(self._core.after, response, turn)


class _Chat(_Proxy):
    def __init__(self, chat: Any, completions: Any) -> None:
        super().__init__(chat)
        self.completions = completions


class _ClientBase(_Proxy):
    def __init__(self, client: Any, core: FastMemory, *, owns_memory: bool = True) -> None:
        super().__init__(client)
        self._core = core
        self._owns_memory = owns_memory

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
        self.chat = _Chat(client.chat, _Completions(client.chat.completions, core))
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

    def __init__(self, client: Any, core: FastMemory, *, owns_memory: bool = True) -> None:
        super().__init__(client, core, owns_memory=owns_memory)
        self.chat = _Chat(client.chat, _AsyncCompletions(client.chat.completions, core))
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


def _check_client(client: Any) -> None:
    create = getattr(getattr(getattr(client, "chat", None), "completions", None), "create", None)
    if not callable(create):
        raise TypeError(
            f"{type(client).__name__} is not an OpenAI-compatible client: it has no callable "
            "chat.completions.create"
        )


def _is_async(client: Any) -> bool:
    """SDKs decorate ``create``, so look beneath the decorators (and at the class's name)."""
    create = client.chat.completions.create
    return (inspect.iscoroutinefunction(inspect.unwrap(create)) or inspect.iscoroutinefunction(create)
            or type(client).__name__.startswith("Async"))


def _embeddings_client(client: Any) -> Any:
    """The wrapped client when it can serve ``embeddings.create`` synchronously, else None."""
    create = getattr(getattr(client, "embeddings", None), "create", None)
    if callable(create) and not _is_async(client):
        return client
    return None


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
) -> MemoryClient | AsyncMemoryClient:
    """Give an OpenAI-compatible client memory, extracted inline from its own replies.

    Before each ``chat.completions.create`` the user's relevant memories (score >= ``min_score``,
    at most ``top_k``) are put before the latest user message and the model is asked to end its
    reply with a ``<memory>`` block; the block is stripped from what the caller gets and its
    memories are stored before ``create`` returns (embedded just after). An async client
    (``AsyncOpenAI``) gives an ``AsyncMemoryClient``; ``stream=True`` gives a stream with the block
    removed as it passes.
    """
    _check_client(client)
    if isinstance(top_k, bool) or not isinstance(top_k, int) or not 1 <= top_k <= 100:
        raise InvalidInputError("top_k must be an integer from 1 to 100")
    if embedder is None and not use_local_embeddings:
        from ._embedders import make_embedder

        embedder = make_embedder(False, embedding_model, client=_embeddings_client(client))
    memory = open_memory(user_id, db_path, embedder=embedder, use_local_embeddings=use_local_embeddings,
                         embedding_model=embedding_model, store=store)
    core = FastMemory(memory, top_k=top_k, min_score=min_score)
    return AsyncMemoryClient(client, core) if _is_async(client) else MemoryClient(client, core)
