"""The proxy: chat calls get memory on their way to the upstream and back; every other ``/v1`` call
passes through untouched.

Requests and replies stay JSON dicts end to end, handled by the library's own code: ``FastMemory``
shapes the request and stores the reply's block, the dialects clean dicts as they clean SDK objects,
and a streamed reply runs through the same ``AsyncMemoryStream`` shell as ``AsyncOpenAI``'s does.
What the upstream says (status, headers, error bodies) reaches the caller unchanged.
"""

from __future__ import annotations

import json
import logging
import time
from typing import Any, AsyncIterator

import anyio
import httpx
from starlette.requests import Request
from starlette.responses import JSONResponse, Response, StreamingResponse

from headroom.memory import InvalidInputError
from headroom.memory._dialects import ANTHROPIC, OPENAI, Dialect
from headroom.memory._stream import AsyncMemoryStream

from ._config import OPT_OUT_HEADER, USER_HEADER, ServerConfig, user_of
from ._metrics import Metrics
from ._sse import DONE, RawEvent, decode, encode
from ._users import Users

__all__ = ["Proxy", "error_response"]

logger = logging.getLogger(__name__)

#: Headers that belong to one connection, or that the proxy sets itself.
_HOP = {"connection", "keep-alive", "proxy-authenticate", "proxy-authorization", "te", "trailer", "trailers",
        "transfer-encoding", "upgrade", "host", "content-length"}
_NOT_FORWARDED = _HOP | {USER_HEADER, OPT_OUT_HEADER}


def error_response(dialect: Dialect, status: int, message: str, kind: str = "proxy_error") -> JSONResponse:
    """An error in the shape the caller's SDK reads for its API."""
    if dialect is ANTHROPIC:
        return JSONResponse({"type": "error", "error": {"type": kind, "message": message}}, status)
    return JSONResponse({"error": {"message": message, "type": kind, "param": None, "code": None}}, status)


def _forwarded(request: Request, same_body: bool = False) -> dict[str, str]:
    """The caller's headers for the upstream; ``same_body``: the body goes up as it came, so its
    length stays (else httpx would send it chunked, which some servers cannot read)."""
    headers = {k: v for k, v in request.headers.items()
               if k not in _NOT_FORWARDED or (same_body and k == "content-length")}
    headers.setdefault("accept-encoding", "identity")  # else httpx asks for gzip the caller did not
    return headers


def _returned(response: httpx.Response, decoded: bool) -> dict[str, str]:
    """The upstream's headers for the caller; ``decoded``: the body is sent decoded, not as it came."""
    drop = _HOP | {"content-encoding"} if decoded else _HOP - {"content-length"}
    return {k: v for k, v in response.headers.items() if k.lower() not in drop}


class _Upstream:
    """The upstream's event stream as dicts, for ``AsyncMemoryStream``; ``[DONE]`` is held back so
    what the filter releases at the end still comes before it."""

    def __init__(self, response: httpx.Response) -> None:
        self.response = response
        self.named = False  # the upstream names its events (the Messages API)
        self.done = False

    def __aiter__(self) -> AsyncIterator[Any]:
        return self._items()

    async def _items(self) -> AsyncIterator[Any]:
        async for name, data in decode(self.response.aiter_lines()):
            self.named = self.named or name is not None
            if isinstance(data, RawEvent) and data.data.strip() == DONE:
                self.done = True
                continue
            yield data

    async def close(self) -> None:
        await self.response.aclose()


class Proxy:
    def __init__(self, config: ServerConfig, users: Users, metrics: Metrics, client: httpx.AsyncClient) -> None:
        self.config = config
        self.users = users
        self.metrics = metrics
        self.client = client

    def _url(self, request: Request) -> str:
        query = request.url.query
        return self.config.upstream_root + request.url.path + (f"?{query}" if query else "")

    async def chat(self, request: Request) -> Response:
        return await self._model_call(request, OPENAI, "chat.completions")

    async def messages(self, request: Request) -> Response:
        return await self._model_call(request, ANTHROPIC, "messages")

    async def _send(self, request: httpx.Request, route: str, dialect: Dialect,
                    stream: bool = False) -> httpx.Response | Response:
        """The upstream's response, or an error response when it cannot be reached in time."""
        started = time.perf_counter()
        try:
            response = await self.client.send(request, stream=stream)
        except httpx.TimeoutException:
            self.metrics.request(route, 504)
            return error_response(dialect, 504, "the upstream did not answer in time", "upstream_timeout")
        except httpx.HTTPError as exc:
            self.metrics.request(route, 502)
            logger.warning("upstream unreachable: %s", type(exc).__name__)
            return error_response(dialect, 502, f"the upstream cannot be reached ({type(exc).__name__})",
                                  "upstream_unreachable")
        self.metrics.upstream(route, time.perf_counter() - started)
        self.metrics.request(route, response.status_code)
        return response

    async def _model_call(self, request: Request, dialect: Dialect, route: str) -> Response:
        raw = await request.body()
        try:
            body = json.loads(raw)
            user = user_of(request.headers, self.config)
        except InvalidInputError as exc:
            return error_response(dialect, 400, f"{USER_HEADER}: {exc}", "invalid_request_error")
        except ValueError:
            body, user = None, None  # not JSON: the upstream says what is wrong with it
        if not isinstance(body, dict) or user is None:
            return await self.passthrough(request, raw, route)

        def shape() -> tuple[Any, dict[str, Any], Any]:  # a user new to this process is a database read
            core = self.users.core(user, dialect.name)
            return (core, *core.before(body, dialect))

        core, shaped, turn = await anyio.to_thread.run_sync(shape)
        headers = _forwarded(request)
        sent = self.client.build_request("POST", self._url(request), headers=headers, json=shaped)
        if shaped.get("stream"):
            return await self._stream(sent, route, dialect, core, turn)
        response = await self._send(sent, route, dialect)
        if not isinstance(response, httpx.Response):
            return response
        reply = _json(response)
        if response.status_code != 200 or reply is None:
            return Response(response.content, response.status_code, _returned(response, True))
        reply = await anyio.to_thread.run_sync(core.after, reply, turn, dialect)
        again = core.ask_again(turn)
        if again is not None:
            second = await self._send(self.client.build_request("POST", self._url(request), headers=headers,
                                                                json=again), route, dialect)
            second_reply = _json(second) if isinstance(second, httpx.Response) else None
            if isinstance(second, httpx.Response) and second.status_code == 200 and second_reply is not None:
                reply, response = core.again(second_reply, dialect), second
        return JSONResponse(reply, response.status_code, _returned(response, True))

    async def _stream(self, sent: httpx.Request, route: str, dialect: Dialect, core: Any, turn: Any) -> Response:
        response = await self._send(sent, route, dialect, stream=True)
        if not isinstance(response, httpx.Response):
            return response
        if response.status_code != 200 or "text/event-stream" not in response.headers.get("content-type", ""):
            content = await response.aread()
            await response.aclose()
            return Response(content, response.status_code, _returned(response, True))
        upstream = _Upstream(response)
        shell = core.stream(upstream, turn, dialect, AsyncMemoryStream)

        async def events() -> AsyncIterator[bytes]:
            try:
                async for item in shell:
                    yield encode(item, upstream.named)
                if upstream.done:
                    yield f"data: {DONE}\n\n".encode()
            finally:  # the caller may have gone: close upstream and store what arrived complete
                with anyio.CancelScope(shield=True):
                    await shell.close()

        return StreamingResponse(events(), 200, _returned(response, True))

    async def passthrough(self, request: Request, body: bytes | None = None, route: str = "other") -> Response:
        """Any other call, as it came: body and reply streamed through unchanged."""
        content: Any = body if body is not None else request.stream()
        sent = self.client.build_request(request.method, self._url(request), headers=_forwarded(request, True),
                                         content=content)
        response = await self._send(sent, route, ANTHROPIC if route == "messages" else OPENAI, stream=True)
        if not isinstance(response, httpx.Response):
            return response

        async def chunks() -> AsyncIterator[bytes]:
            try:
                async for chunk in response.aiter_raw():
                    yield chunk
            finally:
                with anyio.CancelScope(shield=True):
                    await response.aclose()

        return StreamingResponse(chunks(), response.status_code, _returned(response, False))


def _json(response: httpx.Response) -> dict[str, Any] | None:
    try:
        data = response.json()
    except ValueError:
        return None
    return data if isinstance(data, dict) else None
