"""The memory server as one ASGI app: the proxy, the memory REST API, health and metrics.

``create_app`` opens the store and the embedder once; every request shares them. Shutdown waits
for memories written but not yet embedded (at most ``EXIT_WAIT_SECONDS``), then closes the store.
"""

from __future__ import annotations

import contextlib
import logging
from typing import Any, AsyncIterator

import anyio
from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import JSONResponse, PlainTextResponse, Response
from starlette.routing import Route

from headroom.memory._backends import embedder_for, open_store
from headroom.memory._deferred import EXIT_WAIT_SECONDS
from headroom.memory._embedders import Embedder
from headroom.memory._store import Store

from ._background import Extraction
from ._config import ServerConfig, user_of
from ._mcp import memory_tools
from ._metrics import Metrics
from ._proxy import Proxy, new_session
from ._rest import memory_routes
from ._users import Users

__all__ = ["create_app"]

logger = logging.getLogger(__name__)


def create_app(config: ServerConfig, *, embedder: Embedder | None = None, store: Store | None = None) -> Starlette:
    """The server's app. ``embedder`` defaults to the local model; ``store`` to the one ``config.db``
    names."""
    embedder = embedder_for(config.db, store=store, embedder=embedder)
    store = store or open_store(config.db, embedding_model=embedder.name, embedding_dim=embedder.dim)
    metrics = Metrics()
    users = Users(store, embedder, config, metrics)
    proxy = Proxy(config, users, metrics)
    extraction = Extraction(users, config) if config.mode == "background" or config.fallback_extraction else None
    if extraction is not None:
        if config.mode == "background":
            users.record = extraction.record
        else:
            users.fallback = extraction.record
        metrics.queue_depth = extraction.depth

    async def healthz(request: Request) -> Response:
        try:
            await anyio.to_thread.run_sync(store.counts, "healthz")
        except Exception as exc:
            return JSONResponse({"status": "unhealthy", "error": type(exc).__name__}, 503)
        return JSONResponse({"status": "ok", "mode": config.mode})

    async def metrics_route(request: Request) -> Response:
        text = await anyio.to_thread.run_sync(metrics.render)  # the queue's depth is a database read
        return PlainTextResponse(text, media_type="text/plain; version=0.0.4")

    def memory_of(headers: Any) -> Any:
        user = user_of(headers or {}, config)
        if user is None:
            raise ValueError("send the API key you call models with (Authorization: Bearer ...)")
        return users.memory(user)

    mcp = memory_tools(memory_of)
    mcp_routes = mcp.streamable_http_app(streamable_http_path="/mcp", host=config.host).routes

    @contextlib.asynccontextmanager
    async def lifespan(app: Starlette) -> AsyncIterator[None]:
        logger.info("memory server in front of %s (%s mode)", config.upstream_root, config.mode)
        if extraction is not None:
            extraction.kick()  # take up what an earlier run left
        proxy.session = new_session(config)
        try:
            async with mcp.session_manager.run():
                yield
        finally:
            await proxy.session.close()
            if extraction is not None:
                await anyio.to_thread.run_sync(extraction.stop, EXIT_WAIT_SECONDS)
            if not await anyio.to_thread.run_sync(users.flush, EXIT_WAIT_SECONDS):
                logger.warning("some memories are not embedded yet; the next start embeds them")
            store.close()

    routes: list[Any] = [
        Route("/healthz", healthz, methods=["GET"]),
        Route("/metrics", metrics_route, methods=["GET"]),
        *memory_routes(config, users),
        *mcp_routes,
        Route("/v1/chat/completions", proxy.chat, methods=["POST"]),
        Route("/v1/messages", proxy.messages, methods=["POST"]),
        Route("/v1/{path:path}", proxy.passthrough, methods=["GET", "POST", "PUT", "PATCH", "DELETE"]),
    ]
    app = Starlette(routes=routes, lifespan=lifespan)
    app.state.users = users
    app.state.metrics = metrics
    return app
