"""A scripted OpenAI-compatible HTTP server on 127.0.0.1: a test double for the tests, the benchmarks
and the offline demo (private; not part of the API).

It is a stand-in for a model, not a model: replies come from Python callables the caller supplies.
Every request is recorded so tests can assert on exactly what the SDK sent over the wire.
"""

from __future__ import annotations

import contextlib
import hashlib
import json
import re
import socket
import threading
import time
import uuid
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any, Callable

import numpy as np

from headroom.memory._protocol import REMINDER

__all__ = ["ScriptedServer", "RecordedRequest", "EventStream", "hash_vector", "chat_completion",
           "chat_chunks", "rule_based_reply", "anthropic_message", "anthropic_events", "as_chat"]

#: A handler answers a request body with ``(status, payload)`` or ``(status, payload, headers)``.
Handler = Callable[[dict[str, Any]], Any]


@dataclass
class RecordedRequest:
    method: str
    path: str
    headers: dict[str, str]
    body: dict[str, Any]


def hash_vector(text: str, dim: int) -> list[float]:
    """A deterministic pseudo-embedding: the same text always gives the same unit vector."""
    seed = int.from_bytes(hashlib.sha256(text.encode()).digest()[:8], "little")
    vector = np.random.default_rng(seed).standard_normal(dim)
    return (vector / np.linalg.norm(vector)).tolist()


def _embeddings(body: dict[str, Any], dim: int) -> tuple[int, dict[str, Any]]:
    inputs = body.get("input")
    inputs = [inputs] if isinstance(inputs, str) else list(inputs or [])
    data = [{"object": "embedding", "index": i, "embedding": hash_vector(str(t), dim)} for i, t in enumerate(inputs)]
    usage = {"prompt_tokens": len(inputs), "total_tokens": len(inputs)}
    return 200, {"object": "list", "data": data, "model": body.get("model", ""), "usage": usage}


def chat_completion(body: dict[str, Any], replies: list[Any]) -> dict[str, Any]:
    """A chat.completion object with one choice per reply (a string, or a message dict)."""
    choices: list[dict[str, Any]] = []
    for i, reply in enumerate(replies):
        message: dict[str, Any] = {"role": "assistant", "content": reply} if isinstance(reply, str) else {
            "role": "assistant", "content": None, **reply}
        finish = "tool_calls" if message.get("tool_calls") else "stop"
        choices.append({"index": i, "message": message, "finish_reason": finish, "logprobs": None})
    prompt = sum(len(str(m.get("content", "")).split()) for m in body.get("messages", []))
    completion = sum(len(str(c["message"].get("content") or "").split()) for c in choices)
    return {
        "id": f"chatcmpl-{uuid.uuid4().hex[:12]}",
        "object": "chat.completion",
        "created": int(time.time()),
        "model": body.get("model", "scripted"),
        "choices": choices,
        "usage": {"prompt_tokens": prompt, "completion_tokens": completion, "total_tokens": prompt + completion},
    }


@dataclass
class EventStream:
    """A server-sent event reply: each event's data is sent as JSON (or as is, for ``[DONE]``); an
    event given as ``(name, data)`` also gets an ``event:`` line, as the Messages API sends."""

    events: list[Any]
    delay: float = 0.0  # seconds before each event


def chat_chunks(body: dict[str, Any], reply: str, size: int, fail_after: int | None = None,
                finish: bool = True) -> EventStream:
    """A streamed chat completion of ``reply`` in pieces of ``size`` characters (one choice);
    ``finish=False`` leaves out the chunk with ``finish_reason``, as some servers do."""
    base = {"id": f"chatcmpl-{uuid.uuid4().hex[:12]}", "object": "chat.completion.chunk",
            "created": int(time.time()), "model": body.get("model", "scripted")}

    def chunk(delta: dict[str, Any], finish: str | None = None) -> dict[str, Any]:
        return {**base, "choices": [{"index": 0, "delta": delta, "finish_reason": finish, "logprobs": None}]}

    events: list[Any] = [chunk({"role": "assistant", "content": ""})]
    for n, start in enumerate(range(0, len(reply), max(size, 1))):
        if fail_after is not None and n == fail_after:
            events.append({"error": {"message": "scripted failure mid-stream", "type": "server_error"}})
            return EventStream(events)
        events.append(chunk({"content": reply[start:start + size]}))
    if finish:
        events.append(chunk({}, "stop"))
    if (body.get("stream_options") or {}).get("include_usage"):
        words = len(reply.split())
        events.append({**base, "choices": [], "usage": {"prompt_tokens": 1, "completion_tokens": words,
                                                        "total_tokens": words + 1}})
    events.append("[DONE]")
    return EventStream(events)


def anthropic_message(body: dict[str, Any], reply: str) -> dict[str, Any]:
    """A Messages API ``message`` object with one text block."""
    return {
        "id": f"msg_{uuid.uuid4().hex[:12]}", "type": "message", "role": "assistant",
        "model": body.get("model", "scripted"), "content": [{"type": "text", "text": reply}],
        "stop_reason": "end_turn", "stop_sequence": None,
        "usage": {"input_tokens": 1, "output_tokens": len(reply.split())},
    }


def anthropic_events(body: dict[str, Any], reply: str, size: int, fail_after: int | None = None,
                     finish: bool = True) -> EventStream:
    """A streamed Messages API reply of ``reply`` in ``text_delta`` pieces of ``size`` characters."""
    message = {**anthropic_message(body, ""), "content": [], "stop_reason": None}
    events: list[Any] = [
        ("message_start", {"type": "message_start", "message": message}),
        ("content_block_start", {"type": "content_block_start", "index": 0,
                                 "content_block": {"type": "text", "text": ""}}),
    ]
    for n, start in enumerate(range(0, len(reply), max(size, 1))):
        if fail_after is not None and n == fail_after:
            events.append(("error", {"type": "error", "error": {"type": "overloaded_error",
                                                                 "message": "scripted failure mid-stream"}}))
            return EventStream(events)
        events.append(("content_block_delta", {"type": "content_block_delta", "index": 0,
                                               "delta": {"type": "text_delta", "text": reply[start:start + size]}}))
    if finish:
        events.append(("content_block_stop", {"type": "content_block_stop", "index": 0}))
    events += [
        ("message_delta", {"type": "message_delta", "delta": {"stop_reason": "end_turn", "stop_sequence": None},
                           "usage": {"output_tokens": len(reply.split())}}),
        ("message_stop", {"type": "message_stop"}),
    ]
    return EventStream(events)


def as_chat(body: dict[str, Any]) -> dict[str, Any]:
    """A Messages API request seen as a chat completion request (system parameter first)."""
    system = body.get("system")
    head = [{"role": "system", "content": system}] if system else []
    return {**body, "messages": head + list(body.get("messages") or [])}


# What the rule-based stand-in "hears" in a user message: (pattern, memory template, category).
_RULES = [
    (re.compile(r"\bI(?:'m| am) an? ([^.,;!?\n]+?)(?: at ([^.,;!?\n]+))?[.,;!?]", re.I), "category-fact"),
    (re.compile(r"\bI (?:prefer|like|love) ([^.,;!?\n]+)", re.I), "Prefers {0}"),
    (re.compile(r"\bwe use ([^.,;!?\n]+)", re.I), "Uses {0}"),
    (re.compile(r"\bI(?:'m| am) (?:working on|migrating|building) ([^.,;!?\n]+)", re.I), "Working on {0}"),
]


# "[1] 2026-11-24, fact: Uses PostgreSQL" -> "Uses PostgreSQL"
_REMEMBERED = re.compile(r"^\[\d+\] [\d-]+, \w+: ")


def _hear(text: str) -> list[dict[str, str]]:
    heard: list[dict[str, str]] = []
    for pattern, template in _RULES:
        for match in pattern.finditer(text):
            if template == "category-fact":
                what, where = match.group(1).strip(), match.group(2)
                if what.lower().startswith(("working", "migrating", "building")):
                    continue
                heard.append({"content": f"Is a {what}", "category": "fact"})
                if where:
                    heard.append({"content": f"Works at {where.strip()}", "category": "fact"})
            elif template.startswith("Prefers"):
                heard.append({"content": template.format(match.group(1).strip()), "category": "preference"})
            elif template.startswith("Working"):
                heard.append({"content": template.format(match.group(1).strip()), "category": "context"})
            else:
                heard.append({"content": template.format(match.group(1).strip()), "category": "fact"})
    return heard


def _text(content: Any) -> str:
    if isinstance(content, str):
        return content
    if isinstance(content, list):
        return "\n".join(p.get("text", "") for p in content if isinstance(p, dict) and p.get("type") == "text")
    return ""


def rule_based_reply(body: dict[str, Any]) -> str:
    """A stand-in for a model, by rules: it answers from remembered context and, when the system
    message asks for a ``<memory>`` block (or the request for a reply schema), reports what it
    heard the user say about themselves."""
    messages = body.get("messages") or []
    users = [m for m in messages if m.get("role") == "user"]
    said = _text(users[-1].get("content")) if users else ""
    remembered: list[str] = []
    context = re.search(r"<remembered_context>(.*?)</remembered_context>", said, re.S)
    if context:
        remembered = [_REMEMBERED.sub("", line) for line in context.group(1).splitlines() if _REMEMBERED.match(line)]
        said = said[context.end():].strip()
    said = said.replace(REMINDER, "").strip()  # the protocol's own words are not the user's
    heard = _hear(said)
    if remembered:
        answer = "Given what I remember about you (" + "; ".join(remembered) + "), I'd build on that."
    elif heard:
        answer = "Thanks, noted: " + "; ".join(h["content"] for h in heard) + "."
    else:
        answer = f"You said: {said[:200]}" if said else "Hello! How can I help?"
    schema = ((body.get("response_format") or {}).get("json_schema") or {}).get("schema")
    if schema and "answer" in schema.get("properties", {}):  # held to the schema of ``structured_output``
        item = schema["properties"]["memories"]["items"]
        memories = [{**h, **({"replaces": None} if "replaces" in item["required"] else {})} for h in heard]
        return json.dumps({"memories": memories, "answer": answer})  # in the schema's order
    system = " ".join(_text(m.get("content")) for m in messages if m.get("role") in ("system", "developer"))
    if "<memory>" in system:
        answer += "\n\n<memory>" + json.dumps({"memories": heard}) + "</memory>"
    return answer


class _Server(ThreadingHTTPServer):
    request_queue_size = 128  # the default of 5 resets connections under 50 concurrent clients

    def __init__(self, *args: Any) -> None:
        super().__init__(*args)
        self.connections: set[socket.socket] = set()

    def finish_request(self, request: Any, client_address: Any) -> None:
        self.connections.add(request)
        try:
            super().finish_request(request, client_address)
        finally:
            self.connections.discard(request)

    def close_connections(self) -> None:
        """Ends connections kept alive, so a stopped server answers nothing more."""
        for connection in list(self.connections):
            with contextlib.suppress(OSError):
                connection.shutdown(socket.SHUT_RDWR)


@dataclass
class ScriptedServer:
    """Routes ``POST /v1/<path>`` to a handler; by default it answers embeddings deterministically."""

    embedding_dim: int = 1536
    handlers: dict[str, Handler] = field(default_factory=dict)
    requests: list[RecordedRequest] = field(default_factory=list)
    #: Streamed replies: characters per chunk, seconds before each chunk, and a chunk to fail at.
    stream_chunk_size: int = 4
    stream_delay: float = 0.0
    stream_fail_after: int | None = None
    #: False: streams end without saying so (no ``finish_reason`` chunk, no ``content_block_stop``).
    stream_finish: bool = True
    #: True: HTTP/1.1 with connections kept alive, as real model servers do (the proxy benchmark);
    #: False: one connection per request, HTTP/1.0.
    keep_alive: bool = False

    def __post_init__(self) -> None:
        self.handlers.setdefault("/v1/embeddings", lambda body: _embeddings(body, self.embedding_dim))
        self.script_chat(rule_based_reply)
        self.script_messages(lambda body: rule_based_reply(as_chat(body)))
        self._lock = threading.Lock()
        server = self

        class _Handler(BaseHTTPRequestHandler):
            protocol_version = "HTTP/1.1" if self.keep_alive else "HTTP/1.0"
            disable_nagle_algorithm = self.keep_alive  # else headers and body wait on delayed ACKs

            def do_GET(self) -> None:  # noqa: N802 - http.server's naming
                path = self.path.partition("?")[0]
                with server._lock:
                    server.requests.append(RecordedRequest("GET", path, dict(self.headers), {}))
                handler = server.handlers.get("GET " + path)
                self._send_json(*(handler({}) if handler else (404, {"error": {"message": "no route"}})))

            def do_POST(self) -> None:  # noqa: N802 - http.server's naming
                length = int(self.headers.get("Content-Length") or 0)
                raw = self.rfile.read(length) if length else b""
                try:
                    body = json.loads(raw or b"{}")
                except ValueError:
                    body = {"_raw": raw.decode(errors="replace")}
                # Groq's SDK puts the OpenAI-compatible API under /openai/v1; Azure OpenAI under
                # /openai/deployments/<name>/..., with the API version in the query.
                path = self.path.partition("?")[0].removeprefix("/openai")
                if path.startswith("/deployments/"):
                    path = "/v1/" + path.split("/", 3)[3]
                with server._lock:
                    server.requests.append(RecordedRequest("POST", path, dict(self.headers), body))
                handler = server.handlers.get(path)
                if handler is None:
                    status, payload = 404, {"error": {"message": f"no route {self.path}", "type": "not_found"}}
                else:
                    status, payload, *extra = handler(body)
                if isinstance(payload, EventStream):
                    self._send_events(payload)
                    return
                self._send_json(status, payload, *extra)

            def _send_json(self, status: int, payload: Any, headers: dict[str, str] | None = None) -> None:
                data = json.dumps(payload).encode()
                try:
                    self.send_response(status)
                    self.send_header("Content-Type", "application/json")
                    self.send_header("Content-Length", str(len(data)))
                    for name, value in (headers or {}).items():
                        self.send_header(name, value)
                    self.end_headers()
                    self.wfile.write(data)
                except (BrokenPipeError, ConnectionResetError):
                    pass  # the client went away (a killed process, a timeout)

            def _send_events(self, stream: EventStream) -> None:
                self.send_response(200)
                self.send_header("Content-Type", "text/event-stream")
                self.send_header("Cache-Control", "no-cache")
                self.send_header("Connection", "close")  # a stream ends when its connection does
                self.end_headers()
                try:
                    for event in stream.events:
                        if stream.delay:
                            time.sleep(stream.delay)
                        name, event = event if isinstance(event, tuple) else (None, event)
                        data = event if isinstance(event, str) else json.dumps(event)
                        head = f"event: {name}\n" if name else ""
                        self.wfile.write(f"{head}data: {data}\n\n".encode())
                        self.wfile.flush()
                except (BrokenPipeError, ConnectionResetError):
                    pass  # the client stopped reading

            def log_message(self, format: str, *args: Any) -> None:  # keep test output clean
                pass

        self._httpd = _Server(("127.0.0.1", 0), _Handler)
        self._httpd.daemon_threads = True
        self._thread: threading.Thread | None = None

    @property
    def base_url(self) -> str:
        host, port = self._httpd.server_address[:2]
        return f"http://{host!s}:{port}/v1"

    def script_chat(self, reply: Callable[[dict[str, Any]], Any]) -> None:
        """Answer chat completions with ``reply(body)``: a string, a message dict, or a list (one per choice)."""

        def handle(body: dict[str, Any]) -> tuple[int, Any]:
            result = reply(body)
            if body.get("stream"):
                text = result[0] if isinstance(result, list) else result
                stream = chat_chunks(body, text, self.stream_chunk_size, self.stream_fail_after, self.stream_finish)
                stream.delay = self.stream_delay
                return 200, stream
            if not isinstance(result, list):
                result = [result] * int(body.get("n") or 1)
            return 200, chat_completion(body, result)

        self.handlers["/v1/chat/completions"] = handle

    def script_messages(self, reply: Callable[[dict[str, Any]], str]) -> None:
        """Answer Messages API requests (``/v1/messages``) with the text ``reply(body)``."""

        def handle(body: dict[str, Any]) -> tuple[int, Any]:
            text = reply(body)
            if body.get("stream"):
                stream = anthropic_events(body, text, self.stream_chunk_size, self.stream_fail_after,
                                          self.stream_finish)
                stream.delay = self.stream_delay
                return 200, stream
            return 200, anthropic_message(body, text)

        self.handlers["/v1/messages"] = handle

    def chat_requests(self) -> list[dict[str, Any]]:
        """Bodies of the chat completion requests received so far."""
        return [r.body for r in self.requests if r.path == "/v1/chat/completions"]

    def start(self) -> "ScriptedServer":
        self._thread = threading.Thread(target=self._httpd.serve_forever, name="scripted-server", daemon=True)
        self._thread.start()
        return self

    def stop(self) -> None:
        self._httpd.shutdown()
        self._httpd.close_connections()
        self._httpd.server_close()

    def __enter__(self) -> "ScriptedServer":
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.stop()
