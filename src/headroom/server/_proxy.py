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

import aiohttp
import anyio
from starlette.requests import Request
from starlette.responses import JSONResponse, Response, StreamingResponse

from headroom.memory import InvalidInputError
from headroom.memory._dialects import ANTHROPIC, OPENAI, OPENAI_JSON, Dialect
from headroom.memory._stream import AsyncMemoryStream

from ._config import OPT_OUT_HEADER, USER_HEADER, ServerConfig, user_of
from ._metrics import Metrics
from ._sse import DONE, RawEvent, decode, encode, lines
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
    length stays (else it would go chunked, which some servers cannot read)."""
    headers = {k: v for k, v in request.headers.items()
               if k not in _NOT_FORWARDED or (same_body and k == "content-length")}
    headers.setdefault("accept-encoding", "identity")  # else the client asks for gzip the caller did not
    return headers


def new_session(config: ServerConfig) -> aiohttp.ClientSession:
    """The one client to the upstream, pooled and kept alive. aiohttp rather than httpx: it is
    lighter per call on this hot path (bench/RESULTS.md, "The memory server"). Created on the
    server's event loop; nothing is added to what the caller sent but the host, and bodies come
    as the upstream sent them unless a call asks to decode."""
    return aiohttp.ClientSession(
        connector=aiohttp.TCPConnector(limit=200, limit_per_host=0),
        timeout=aiohttp.ClientTimeout(connect=config.timeout, sock_connect=10.0, sock_read=config.timeout),
        auto_decompress=False, skip_auto_headers=("User-Agent", "Content-Type", "Accept"), trust_env=True)


def _returned(response: aiohttp.ClientResponse, decoded: bool) -> dict[str, str]:
    """The upstream's headers for the caller; ``decoded``: the body is sent decoded, not as it came."""
    drop = _HOP | {"content-encoding"} if decoded else _HOP - {"content-length"}
    return {k: v for k, v in response.headers.items() if k.lower() not in drop}


class _Upstream:
    """The upstream's event stream as dicts, for ``AsyncMemoryStream``; ``[DONE]`` is held back so
    what the filter releases at the end still comes before it."""

    def __init__(self, response: aiohttp.ClientResponse) -> None:
        self.response = response
        self.named = False  # the upstream names its events (the Messages API)
        self.done = False

    def __aiter__(self) -> AsyncIterator[Any]:
        return self._items()

    async def _items(self) -> AsyncIterator[Any]:
        async for name, data in decode(lines(self.response.content.iter_any())):
            self.named = self.named or name is not None
            if isinstance(data, RawEvent) and data.data.strip() == DONE:
                self.done = True
                continue
            yield data

    async def close(self) -> None:
        self.response.release()  # back to the pool when read to the end, else the connection closes


class Proxy:
    """The chat routes and the pass-through. ``session`` is set when the server starts (an aiohttp
    session belongs to the event loop that made it)."""

    def __init__(self, config: ServerConfig, users: Users, metrics: Metrics) -> None:
        self.config = config
        self.users = users
        self.metrics = metrics
        self.session: aiohttp.ClientSession | None = None

    def _url(self, request: Request) -> str:
        query = request.url.query
        return self.config.upstream_root + request.url.path + (f"?{query}" if query else "")

    async def chat(self, request: Request) -> Response:
        return await self._model_call(request, OPENAI_JSON if self.config.structured_output else OPENAI,
                                      "chat.completions")

    async def messages(self, request: Request) -> Response:
        return await self._model_call(request, ANTHROPIC, "messages")

    async def _send(self, method: str, url: str, headers: dict[str, str], body: Any, route: str, dialect: Dialect,
                    *, read: bool = True, decoded: bool = True) -> tuple[aiohttp.ClientResponse, bytes] | Response:
        """The upstream's response and its body (left unread unless ``read``), or an error response
        when it cannot be reached in time. ``decoded``: a compressed body is uncompressed."""
        assert self.session is not None, "the server has not started"
        started = time.perf_counter()
        try:
            response = await self.session.request(method, url, headers=headers, data=body, auto_decompress=decoded)
            content = await response.read() if read else b""
        except TimeoutError:  # before ClientError: aiohttp's timeouts are both
            self.metrics.request(route, 504)
            return error_response(dialect, 504, "the upstream did not answer in time", "upstream_timeout")
        except aiohttp.ClientError as exc:
            self.metrics.request(route, 502)
            logger.warning("upstream unreachable: %s", type(exc).__name__)
            return error_response(dialect, 502, f"the upstream cannot be reached ({type(exc).__name__})",
                                  "upstream_unreachable")
        self.metrics.upstream(route, time.perf_counter() - started)
        self.metrics.request(route, response.status)
        return response, content

    async def _model_call(self, request: Request, dialect: Dialect, route: str) -> Response:
        raw = await request.body()
        try:
            body = json.loads(raw)
            user = user_of(request.headers, self.config)
        except InvalidInputError as exc:
            self.metrics.request(route, 400)
            return error_response(dialect, 400, f"{USER_HEADER}: {exc}", "invalid_request_error")
        except ValueError:
            body, user = None, None  # not JSON: the upstream says what is wrong with it
        if not isinstance(body, dict) or user is None:
            return await self.passthrough(request, raw, route)

        def shape() -> tuple[Any, dict[str, Any], Any]:  # a user new to this process is a database read
            core = self.users.core(user, dialect.name)
            return (core, *core.before(body, dialect))

        core, shaped, turn = await anyio.to_thread.run_sync(shape)
        url, headers = self._url(request), _forwarded(request)
        headers["content-type"] = "application/json"
        if shaped.get("stream"):
            return await self._stream(url, headers, _dumps(shaped), route, dialect, core, turn)
        sent = await self._send("POST", url, headers, _dumps(shaped), route, dialect)
        if isinstance(sent, Response):
            return sent
        response, content = sent
        reply = _json(content)
        if response.status != 200 or reply is None:
            return Response(content, response.status, _returned(response, True))
        write = core.settle(reply, turn, dialect)  # cleaning is quick; only a write leaves the event loop
        if write is not None:
            await anyio.to_thread.run_sync(write)
        again = core.ask_again(turn)
        if again is not None:
            second = await self._send("POST", url, headers, _dumps(again), route, dialect)
            second_reply = None if isinstance(second, Response) else _json(second[1])
            if not isinstance(second, Response) and second[0].status == 200 and second_reply is not None:
                reply, response = core.again(second_reply, dialect), second[0]
        return Response(_dumps(reply), response.status, _returned(response, True), "application/json")

    async def _stream(self, url: str, headers: dict[str, str], body: bytes, route: str, dialect: Dialect,
                      core: Any, turn: Any) -> Response:
        sent = await self._send("POST", url, headers, body, route, dialect, read=False)
        if isinstance(sent, Response):
            return sent
        response = sent[0]
        if response.status != 200 or "text/event-stream" not in response.headers.get("content-type", ""):
            try:  # an error, not a stream: passed on whole
                content = await response.read()
            except (TimeoutError, aiohttp.ClientError) as exc:
                logger.warning("upstream's error body lost: %s", type(exc).__name__)
                return error_response(dialect, 502, "the upstream's answer broke off", "upstream_unreachable")
            finally:
                response.release()
            return Response(content, response.status, _returned(response, True))
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
        content: Any = body
        if body is None and ("content-length" in request.headers or "transfer-encoding" in request.headers):
            content = request.stream()
        sent = await self._send(request.method, self._url(request), _forwarded(request, True), content, route,
                                ANTHROPIC if route == "messages" else OPENAI, read=False, decoded=False)
        if isinstance(sent, Response):
            return sent
        response = sent[0]

        async def chunks() -> AsyncIterator[bytes]:
            try:
                async for chunk in response.content.iter_any():
                    yield chunk
            finally:
                response.release()

        return StreamingResponse(chunks(), response.status, _returned(response, False))


def _dumps(data: Any) -> bytes:
    return json.dumps(data, ensure_ascii=False, separators=(",", ":")).encode()


def _json(content: bytes) -> dict[str, Any] | None:
    try:
        data = json.loads(content)
    except ValueError:
        return None
    return data if isinstance(data, dict) else None
