"""What a memory server is told at start, and who each request speaks for.

The memory user of a request is, by default, a keyed hash of the caller's API key (HMAC-SHA256 with
the server's secret): nobody reads another's memories by sending a header, and the key itself is
never stored. ``X-Memory-User`` is honoured only with ``trust_user_header`` (behind a gateway that
sets it and strips the caller's). ``X-Memory: off`` opts a request out of memory.
"""

from __future__ import annotations

import hashlib
import hmac
import logging
import os
import secrets
from dataclasses import dataclass
from pathlib import Path
from typing import Literal, Mapping

from headroom.memory._inject import DEFAULT_MIN_SCORE
from headroom.memory._models import validate_user_id

__all__ = ["ServerConfig", "user_of", "load_secret", "OPT_OUT_HEADER", "USER_HEADER"]

logger = logging.getLogger(__name__)

USER_HEADER = "x-memory-user"
OPT_OUT_HEADER = "x-memory"


@dataclass(frozen=True)
class ServerConfig:
    upstream: str  # the upstream API's base URL, with or without its trailing /v1
    secret: bytes  # keys the hash from API key to memory user
    db: str | None = None  # SQLite file or postgresql:// URL (None: $HEADROOM_MEMORY_DB or the default file)
    mode: Literal["fast", "background"] = "fast"
    trust_user_header: bool = False
    admin_token: str | None = None  # bearer token of the memory REST API; None: the API is off
    top_k: int = 5
    min_score: float = DEFAULT_MIN_SCORE  # the injection floor, the library's by default
    max_users: int = 10_000  # users whose per-user state (protocol counters, replayed blocks) is kept
    timeout: float = 600.0  # seconds to wait for the upstream's reply
    extraction_key: str | None = None  # background mode and fallback: the server's own key for extraction calls
    fallback_extraction: bool = False  # fast mode: a reply with no note to read is extracted apart
    structured_output: bool = False  # fast mode: chat completions asked for as JSON under a schema (``_structured``)
    host: str = "127.0.0.1"  # where the server listens: MCP's DNS-rebinding guard allows only this host

    @property
    def upstream_root(self) -> str:
        """The upstream URL that ``/v1/...`` paths are appended to."""
        root = self.upstream.rstrip("/")
        return root[: -len("/v1")] if root.endswith("/v1") else root


def load_secret(path: str | os.PathLike[str] | None = None) -> bytes:
    """``$HEADROOM_SERVER_SECRET``, else the secret file (made on first use, mode 0600). Every host of
    one deployment must share it: a new secret gives every API key a new, empty memory."""
    env = os.environ.get("HEADROOM_SERVER_SECRET")
    if env:
        return env.encode()
    file = Path(path) if path else Path.home() / ".headroom" / "server-secret"
    if not file.exists():
        file.parent.mkdir(parents=True, exist_ok=True, mode=0o700)
        descriptor = os.open(file, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
        with os.fdopen(descriptor, "w") as out:
            out.write(secrets.token_hex(32))
        logger.info("made a new server secret in %s", file)
    return file.read_text().strip().encode()


def api_key_of(headers: Mapping[str, str]) -> str | None:
    """The caller's key: ``Authorization: Bearer K`` (OpenAI) or ``x-api-key: K`` (Anthropic)."""
    auth = headers.get("authorization", "")
    if auth[:7].lower() == "bearer " and auth[7:].strip():
        return auth[7:].strip()
    return headers.get("x-api-key") or None


def user_of(headers: Mapping[str, str], config: ServerConfig) -> str | None:
    """The memory user a request speaks for; None when it opted out or carries no identity."""
    if headers.get(OPT_OUT_HEADER, "").strip().lower() in ("off", "0", "false", "no"):
        return None
    if config.trust_user_header and headers.get(USER_HEADER):
        return validate_user_id(headers[USER_HEADER])  # InvalidInputError: the caller gets a 400
    key = api_key_of(headers)
    if key is None:
        return None
    return "key-" + hmac.new(config.secret, key.encode(), hashlib.sha256).hexdigest()[:32]
