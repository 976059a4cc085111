"""The memory server running for a test: uvicorn in a thread on 127.0.0.1, in front of a scripted upstream."""

from __future__ import annotations

import socket
import threading
import time
from typing import Any

import uvicorn

from headroom.server import ServerConfig, create_app


class RunningServer:
    def __init__(self, config: ServerConfig, **app_options: Any) -> None:
        self.app = create_app(config, **app_options)
        self._socket = socket.socket()
        self._socket.bind(("127.0.0.1", 0))
        self.port = self._socket.getsockname()[1]
        self._server = uvicorn.Server(uvicorn.Config(self.app, log_level="warning", lifespan="on",
                                                    server_header=False, date_header=False))
        self._thread = threading.Thread(target=self._server.run, kwargs={"sockets": [self._socket]}, daemon=True)

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def __enter__(self) -> "RunningServer":
        self._thread.start()
        deadline = time.monotonic() + 30
        while not self._server.started:
            if time.monotonic() > deadline or not self._thread.is_alive():
                raise RuntimeError("the memory server did not start")
            time.sleep(0.01)
        return self

    def __exit__(self, *exc: object) -> None:
        self._server.should_exit = True
        self._thread.join(30)
        self._socket.close()
