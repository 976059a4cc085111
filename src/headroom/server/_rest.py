"""The memory REST API under ``/v1/memory``: what ``UserMemory`` does, over HTTP, for an admin.

Every route but ``whoami`` needs ``Authorization: Bearer <admin token>``; without a token set at
start the API answers 403. Errors are JSON ``{"error": {"type", "message"}}``, the library's error
types mapped to statuses: bad input 400, not found 404, storage or embedding failures 503.
``whoami`` tells a caller which memory user its own API key speaks for (a hash; never the key).
"""

from __future__ import annotations

import hmac
import itertools
import json
from typing import Any, AsyncIterator, Callable

import anyio
from starlette.requests import Request
from starlette.responses import JSONResponse, Response, StreamingResponse
from starlette.routing import Route

from headroom.memory import (
    EmbeddingError,
    HeadroomMemoryError,
    InvalidInputError,
    NotFoundError,
    StorageError,
)
from headroom.memory._models import validate_user_id
from headroom.memory._wire import EXPORT_FORMAT, export_row, memory_json

from ._config import ServerConfig, user_of
from ._users import Users

__all__ = ["memory_routes"]

_EXPORT_BATCH = 500

_STATUS: list[tuple[type[Exception], int]] = [
    (NotFoundError, 404), (InvalidInputError, 400), (StorageError, 503), (EmbeddingError, 503),
    (HeadroomMemoryError, 400),
]


def _error(status: int, kind: str, message: str) -> JSONResponse:
    return JSONResponse({"error": {"type": kind, "message": message}}, status)


def memory_routes(config: ServerConfig, users: Users) -> list[Route]:
    def admin(handler: Callable[[Request], Any]) -> Callable[[Request], Any]:
        async def guarded(request: Request) -> Response:
            if not config.admin_token:
                return _error(403, "forbidden", "the memory API is off: start the server with an admin token")
            given = request.headers.get("authorization", "")
            if not hmac.compare_digest(given.encode(), f"Bearer {config.admin_token}".encode()):
                return _error(401, "unauthorized", "the memory API needs the admin bearer token")
            try:
                return await handler(request)
            except HeadroomMemoryError as exc:
                status = next(code for kind, code in _STATUS if isinstance(exc, kind))
                return _error(status, type(exc).__name__, str(exc))
            except json.JSONDecodeError:
                return _error(400, "InvalidInputError", "the body is not JSON")
        return guarded

    def run(function: Callable[..., Any], *args: Any) -> Any:
        return anyio.to_thread.run_sync(function, *args)

    def memory(request: Request) -> Any:
        return users.memory(request.path_params["user"])

    async def body(request: Request) -> dict[str, Any]:
        data = await request.json()
        if not isinstance(data, dict):
            raise InvalidInputError("the body must be a JSON object")
        return data

    async def whoami(request: Request) -> Response:
        try:
            user = user_of(request.headers, config)
        except InvalidInputError as exc:
            return _error(400, "InvalidInputError", str(exc))
        if user is None:
            return _error(401, "unauthorized", "send the API key you call models with")
        return JSONResponse({"user_id": user})

    async def list_users(request: Request) -> Response:
        return JSONResponse({"users": await run(users.store.users)})

    async def list_memories(request: Request) -> Response:
        found = await run(lambda: memory(request).get_all(request.query_params.get("category")))
        return JSONResponse({"memories": [memory_json(m) for m in found]})

    async def add(request: Request) -> Response:
        data = await body(request)
        text = data.get("text", data.get("content"))
        added = await run(lambda: memory(request).add(text, data.get("category", "fact"), data.get("metadata")))
        return JSONResponse(memory_json(added), 201)

    async def search(request: Request) -> Response:
        data = await body(request)
        found = await run(lambda: memory(request).search(data.get("query"), data.get("top_k", 5),
                                                          data.get("category")))
        return JSONResponse({"results": [{**memory_json(m), "score": round(s, 6)} for m, s in found]})

    async def get(request: Request) -> Response:
        return JSONResponse(memory_json(await run(lambda: memory(request).get(request.path_params["id"]))))

    async def delete(request: Request) -> Response:
        if not await run(lambda: memory(request).delete(request.path_params["id"])):
            raise NotFoundError(f"no memory {request.path_params['id']!r} for user {request.path_params['user']!r}")
        return JSONResponse({"deleted": request.path_params["id"]})

    async def history(request: Request) -> Response:
        versions = await run(lambda: memory(request).history(request.path_params["id"]))
        return JSONResponse({"versions": [memory_json(m) for m in versions]})

    async def stats(request: Request) -> Response:
        found = await run(lambda: memory(request).stats())
        return JSONResponse({k: v for k, v in found.items() if k != "db_path"})  # no server paths or URLs

    async def export(request: Request) -> Response:
        user = validate_user_id(request.path_params["user"])
        rows = users.store.dump(user)  # read in batches, each in a worker thread: a user may hold millions

        async def lines() -> AsyncIterator[bytes]:
            yield (json.dumps({"headroom_export": EXPORT_FORMAT, "embedding_model": users.store.embedding_model,
                               "embedding_dim": users.store.embedding_dim}) + "\n").encode()
            while batch := await run(lambda: list(itertools.islice(rows, _EXPORT_BATCH))):
                yield b"".join((json.dumps(export_row(m, vector), ensure_ascii=False) + "\n").encode()
                               for m, vector in batch)

        return StreamingResponse(lines(), media_type="application/x-ndjson")

    async def forget(request: Request) -> Response:
        return JSONResponse({"deleted": await run(lambda: memory(request).clear())})

    base = "/v1/memory/users/{user}"
    return [
        Route("/v1/memory/whoami", whoami, methods=["GET"]),
        Route("/v1/memory/users", admin(list_users), methods=["GET"]),
        Route(base, admin(forget), methods=["DELETE"]),
        Route(base + "/memories", admin(list_memories), methods=["GET"]),
        Route(base + "/memories", admin(add), methods=["POST"]),
        Route(base + "/search", admin(search), methods=["POST"]),
        Route(base + "/stats", admin(stats), methods=["GET"]),
        Route(base + "/export", admin(export), methods=["GET"]),
        Route(base + "/memories/{id}", admin(get), methods=["GET"]),
        Route(base + "/memories/{id}", admin(delete), methods=["DELETE"]),
        Route(base + "/memories/{id}/history", admin(history), methods=["GET"]),
    ]
