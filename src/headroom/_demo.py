"""``headroom-memory demo`` runs the spec's multi-turn example end to end; ``warmup`` prepares the
local embedding model so the first call of an application is fast. (The command is ``cli.py``.)"""

from __future__ import annotations

import os
import sys
import tempfile
import textwrap
import time
from typing import Any

__all__ = ["demo", "warmup"]

CONVERSATION_1 = "I'm a Python developer at a fintech startup. We use PostgreSQL."
CONVERSATION_2 = "What database should I use for my new project?"


def _say(text: str = "", indent: int = 0) -> None:
    pad = " " * indent
    for line in (text.splitlines() or [""]):
        print(textwrap.fill(line, 100, initial_indent=pad, subsequent_indent=pad) if line else "")
    sys.stdout.flush()


class _Recorder:
    """Sits between the memory wrapper and the SDK client: records what goes to the model and what
    it wrote, before the wrapper strips the block."""

    def __init__(self, client: Any, wire: list[dict[str, Any]]) -> None:
        self._client = client
        self._wire = wire
        self.chat = self
        self.completions = self

    def create(self, **kwargs: Any) -> Any:
        record: dict[str, Any] = {"sent": kwargs}
        self._wire.append(record)
        response = self._client.chat.completions.create(**kwargs)
        record["wrote"] = [choice.message.content for choice in response.choices]
        return response

    def close(self) -> None:
        self._client.close()


def _model_client(base_url: str | None, api_key: str | None, wire: list[dict[str, Any]]) -> Any:
    from openai import OpenAI

    return _Recorder(OpenAI(base_url=base_url, api_key=api_key), wire)


def _show_exchange(wire: dict[str, Any], answer: str) -> None:
    _say("What the model was sent:", 2)
    for message in wire["sent"]["messages"]:
        _say(f"[{message['role']}]", 4)
        _say(str(message["content"]), 6)
    _say("What the model wrote (raw):", 2)
    _say(str(wire.get("wrote", [""])[0]), 4)
    _say("What the caller gets (block stripped):", 2)
    _say(answer, 4)


def demo(base_url: str | None, model: str, db_path: str | None, user_id: str) -> int:
    from headroom.memory import with_fast_memory

    api_key = os.environ.get("OPENAI_API_KEY")
    explicit_url = base_url
    base_url = base_url or os.environ.get("OPENAI_BASE_URL")
    server = None
    if api_key or explicit_url:
        api_key = api_key or "not-needed"  # local OpenAI-compatible servers often take any key
        _say(f"Model: {model} at {base_url or 'the OpenAI API'}")
    else:
        from headroom._scripted_server import ScriptedServer

        server = ScriptedServer().start()
        base_url, api_key = server.base_url, "not-needed"
        _say("Model: a SCRIPTED STAND-IN for a model on " + base_url + " (rule-based, not an LLM).")
        _say("Set OPENAI_API_KEY (and optionally --base-url, --model) to talk to a real model.")
    workdir = None if db_path else tempfile.mkdtemp(prefix="headroom-demo-")
    db_path = db_path or os.path.join(workdir, "memory.db")  # type: ignore[arg-type]
    _say(f"Memory file: {db_path}\n")
    _say("Loading the local embedding model (the first run exports it to ONNX once, ~10 s)...")
    started = time.perf_counter()
    wire: list[dict[str, Any]] = []
    try:
        client = with_fast_memory(_model_client(base_url, api_key, wire), user_id=user_id, db_path=db_path)
        client.memory.search("warm up")
        _say(f"ready in {time.perf_counter() - started:.1f} s\n")

        _say("=== Conversation 1: the user shares context ===")
        _say(f"user: {CONVERSATION_1}", 2)
        response = client.chat.completions.create(
            model=model, messages=[{"role": "user", "content": CONVERSATION_1}])
        _show_exchange(wire[-1], response.choices[0].message.content)
        _say("Memories extracted and stored:", 2)
        for memory in client.memory.get_all():
            _say(f"[{memory.category}] {memory.text}  (id {memory.id[:8]}, source {memory.source})", 4)
        client.close()

        _say("\n=== Conversation 2: a brand-new client, a new session ===")
        client = with_fast_memory(_model_client(base_url, api_key, wire), user_id=user_id, db_path=db_path)
        _say(f"user: {CONVERSATION_2}", 2)
        _say("Retrieved from memory (cosine score; injected when >= the floor):", 2)
        floor = client._core.min_score
        for memory, score in client.memory.search(CONVERSATION_2, top_k=5):
            mark = "injected" if score >= floor else f"below {floor:.2f}, not injected"
            _say(f"{score:.3f}  [{memory.category}] {memory.text}  ({mark})", 4)
        response = client.chat.completions.create(
            model=model, messages=[{"role": "user", "content": CONVERSATION_2}])
        _show_exchange(wire[-1], response.choices[0].message.content)
        stats = client.memory.stats()
        _say(f"\nStats: {stats['total_chunks']} memories for {stats['user_id']} in {stats['db_path']} "
             f"({stats['embedding_model']})")
        client.close()
    finally:
        if server is not None:
            server.stop()
    return 0


def warmup() -> int:
    """Prepare the local embedding model (export to ONNX, build its int8 variant, check both), so the
    first call is fast."""
    from headroom.memory import EmbedderUnavailableError, LocalEmbedder
    from headroom.memory._local_model import onnx_cache_path

    path = onnx_cache_path()
    _say("Preparing the local embedding model (all-MiniLM-L6-v2)...")
    if not path.is_file():
        _say(f"exporting it to ONNX and building its int8 variant once, under {path.parent} (about 15 s)...")
    started = time.perf_counter()
    try:
        embedder = LocalEmbedder()
        embedder.embed(["warm up"])
    except EmbedderUnavailableError as exc:
        _say(f"the local model is not available here: {exc}")
        return 1
    _say(f"ready ({embedder.name}, {embedder.backend}) in {time.perf_counter() - started:.1f} s")
    return 0
