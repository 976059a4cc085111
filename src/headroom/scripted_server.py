"""A scripted OpenAI-compatible HTTP server on 127.0.0.1, for tests and the offline demo.

It is a stand-in for a model, not a model: replies come from Python callables the caller supplies.
Every request is recorded so tests can assert on exactly what the SDK sent over the wire.
"""

from __future__ import annotations

import hashlib
import json
import threading
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any, Callable

import numpy as np

__all__ = ["ScriptedServer", "RecordedRequest", "hash_vector"]

Handler = Callable[[dict[str, Any]], tuple[int, dict[str, Any]]]


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


@dataclass
class ScriptedServer:
    """Routes ``POST /v1/<path>`` to a handler; by default it answers embeddings deterministically."""

    embedding_dim: int = 1536
    handlers: dict[str, Handler] = field(default_factory=dict)
    requests: list[RecordedRequest] = field(default_factory=list)

    def __post_init__(self) -> None:
        self.handlers.setdefault("/v1/embeddings", lambda body: _embeddings(body, self.embedding_dim))
        self._lock = threading.Lock()
        server = self

        class _Handler(BaseHTTPRequestHandler):
            def do_POST(self) -> None:  # noqa: N802 - http.server's naming
                length = int(self.headers.get("Content-Length") or 0)
                raw = self.rfile.read(length) if length else b""
                try:
                    body = json.loads(raw or b"{}")
                except ValueError:
                    body = {"_raw": raw.decode(errors="replace")}
                with server._lock:
                    server.requests.append(RecordedRequest("POST", self.path, dict(self.headers), body))
                handler = server.handlers.get(self.path)
                if handler is None:
                    status, payload = 404, {"error": {"message": f"no route {self.path}", "type": "not_found"}}
                else:
                    status, payload = handler(body)
                data = json.dumps(payload).encode()
                self.send_response(status)
                self.send_header("Content-Type", "application/json")
                self.send_header("Content-Length", str(len(data)))
                self.end_headers()
                self.wfile.write(data)

            def log_message(self, format: str, *args: Any) -> None:  # keep test output clean
                pass

        self._httpd = ThreadingHTTPServer(("127.0.0.1", 0), _Handler)
        self._httpd.daemon_threads = True
        self._thread: threading.Thread | None = None

    @property
    def base_url(self) -> str:
        host, port = self._httpd.server_address[:2]
        return f"http://{host}:{port}/v1"

    def start(self) -> "ScriptedServer":
        self._thread = threading.Thread(target=self._httpd.serve_forever, name="scripted-server", daemon=True)
        self._thread.start()
        return self

    def stop(self) -> None:
        self._httpd.shutdown()
        self._httpd.server_close()

    def __enter__(self) -> "ScriptedServer":
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.stop()
