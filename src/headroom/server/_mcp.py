"""Memory as MCP tools (the official ``mcp`` SDK): remember, recall, forget, list_memories.

One tool set serves both transports. Over stdio (``headroom-memory mcp --user U``) the user is the
one the MCP client's configuration names. Over streamable HTTP (``/mcp`` on the memory server) it is
found as the proxy finds it: a keyed hash of the caller's API key, or ``X-Memory-User`` when trusted.

No ``from __future__ import annotations`` here: the SDK reads the tools' annotations at run time,
and ``Context`` is imported inside ``memory_tools`` (the SDK is an optional extra).
"""


from typing import Any, Callable, Mapping, Optional

import anyio

from headroom.memory import HeadroomMemoryError, UserMemory
from headroom.memory._models import Category
from headroom.memory._wire import memory_json

__all__ = ["memory_tools"]

INSTRUCTIONS = ("Long-term memory of the user. Call recall before answering anything that may depend on "
                "what the user said earlier; call remember when the user states a lasting fact, preference "
                "or ongoing context about themselves.")


def _shown(memory: Any) -> dict[str, Any]:
    row = memory_json(memory)
    return {k: row[k] for k in ("id", "text", "category", "updated_at")}


def memory_tools(memory_of: Callable[[Mapping[str, str] | None], UserMemory], *, name: str = "headroom-memory") -> Any:
    """An ``MCPServer`` with the memory tools. ``memory_of`` gets the HTTP request's headers (None
    over stdio) and returns the memory of the user they speak for."""
    from mcp.server.mcpserver import Context, MCPServer

    server: Any = MCPServer(name, instructions=INSTRUCTIONS, log_level="WARNING")

    def headers(ctx: Any) -> Mapping[str, str] | None:
        return getattr(getattr(ctx.request_context, "request", None), "headers", None)

    async def call(ctx: Any, function: Callable[[UserMemory], Any]) -> Any:
        """``function`` on the caller's memory, in a worker thread (opening it reads the database)."""
        who = headers(ctx)
        try:
            return await anyio.to_thread.run_sync(lambda: function(memory_of(who)))
        except HeadroomMemoryError as exc:  # the model sees a tool error it can act on
            raise ValueError(f"{type(exc).__name__}: {exc}") from exc

    @server.tool()
    async def remember(text: str, ctx: Context, category: Category = "fact") -> dict[str, Any]:
        """Store a lasting fact, preference or ongoing context the user stated about themselves."""
        return _shown(await call(ctx, lambda mine: mine.add(text, category)))

    @server.tool()
    async def recall(query: str, ctx: Context, top_k: int = 5) -> list[dict[str, Any]]:
        """The user's memories most relevant to query, best first, each with its similarity score."""
        found = await call(ctx, lambda mine: mine.search(query, top_k))
        return [{**_shown(m), "score": round(score, 4)} for m, score in found]

    @server.tool()
    async def forget(memory_id: str, ctx: Context) -> dict[str, Any]:
        """Delete one memory by its id (as recall or list_memories show it)."""
        return {"deleted": await call(ctx, lambda mine: mine.delete(memory_id)), "id": memory_id}

    @server.tool()
    async def list_memories(ctx: Context, category: Optional[Category] = None) -> list[dict[str, Any]]:
        """Every memory of the user, oldest first; category narrows it."""
        return [_shown(m) for m in await call(ctx, lambda mine: mine.get_all(category))]

    return server
