"""The wrapper's own time per call, beside its floor (one query embedding plus one search).

    .venv/bin/python bench/wrapper.py [--sizes 1000,10000] [--samples 300]

Streaming: time to the first visible token through the wrapper and through the bare SDK, and the
stream filter's cost per chunk (measured on the SDK's own chunk objects, no network).

Each sample makes the same request through the bare openai SDK and through ``with_fast_memory``,
both to one scripted server on 127.0.0.1; the wrapper's own time is the difference. Replies end with
an empty ``<memory>`` block (most turns carry nothing new); a second row has one new memory in every
reply: it is written before ``create`` returns and embedded by a background thread right after
(each sample waits for that, untimed, before the next).
"""

from __future__ import annotations

import argparse
import json
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
import openai

from headroom._scripted_server import ScriptedServer
from headroom.memory import LocalEmbedder, open_memory, with_fast_memory
from headroom.memory import _query_cache as query_cache

sys.path.insert(0, str(Path(__file__).parent))
from latency import fill, sentence  # noqa: E402


def compare(n: int, samples: int, seed: int, db: str, reply, timed, embedder: LocalEmbedder,
            stream_chunk_size: int = 4) -> tuple[list[float], list[float]]:
    """Per sample: ``timed`` through the wrapper minus through the bare SDK (same scripted server),
    and the floor, one search with no embedding waiting (the wait is untimed)."""
    rng = np.random.default_rng(seed)
    filler = open_memory("bench", db, embedder=embedder)
    fill(filler, n, embedder.dim, rng)
    filler.close()
    with ScriptedServer(stream_chunk_size=stream_chunk_size) as server:
        server.script_chat(reply)
        bare = openai.OpenAI(base_url=server.base_url, api_key="x")
        wrapped = with_fast_memory(openai.OpenAI(base_url=server.base_url, api_key="x"), "bench", db,
                                   embedder=embedder)
        wrapped.memory.search("warm up")
        own, floor = [], []
        for i in range(samples):
            messages = [{"role": "user", "content": sentence(rng, i) + "?"}]
            t = time.perf_counter()
            timed(bare, messages)
            t_bare = time.perf_counter() - t
            t = time.perf_counter()
            timed(wrapped, messages)
            own.append(time.perf_counter() - t - t_bare)
            wrapped.memory.flush()
            query_cache.clear()  # the floor embeds the message, as the wrapped call did
            t = time.perf_counter()
            wrapped.memory.search(messages[0]["content"], top_k=5)
            floor.append(time.perf_counter() - t)
        wrapped.close()
    return own, floor


def p(values: list[float], q: float) -> float:
    return float(np.percentile(values, q)) * 1000


def run(n: int, samples: int, new_memory: bool, embedder: LocalEmbedder, workdir: Path) -> dict:
    counter = iter(range(10**9))

    def reply(body: dict) -> str:
        items = [{"content": f"Prefers option {next(counter)}", "category": "preference"}] if new_memory else []
        return "Here is my answer.\n<memory>" + json.dumps({"memories": items}) + "</memory>"

    def call(client, messages) -> None:  # type: ignore[no-untyped-def]
        client.chat.completions.create(model="m", messages=messages)

    own, floor = compare(n, samples, n, str(workdir / f"wrapper-{n}-{new_memory}.db"), reply, call, embedder)
    return {"memories": n, "new_memory_per_reply": new_memory, "own_p50_ms": p(own, 50),
            "own_p95_ms": p(own, 95), "floor_p50_ms": p(floor, 50), "floor_p95_ms": p(floor, 95)}


def first_token(client, messages) -> None:  # type: ignore[no-untyped-def]
    stream = client.chat.completions.create(model="m", messages=messages, stream=True)
    for chunk in stream:
        if chunk.choices and chunk.choices[0].delta.content:
            break
    stream.close()


def run_stream(n: int, samples: int, embedder: LocalEmbedder, workdir: Path) -> dict:
    reply = "Here is a longer answer that streams in small pieces. " * 4 + "\n<memory>" + json.dumps(
        {"memories": []}) + "</memory>"
    extra, floor = compare(n, samples, n + 1, str(workdir / f"stream-{n}.db"), lambda body: reply, first_token,
                           embedder)
    return {"memories": n, "ttft_extra_p50_ms": p(extra, 50), "ttft_extra_p95_ms": p(extra, 95),
            "floor_p50_ms": p(floor, 50)}


def filter_cost(rounds: int = 200) -> float:
    """Microseconds per chunk for the stream filter over a real reply cut in 4-character pieces."""
    from openai.types.chat import ChatCompletionChunk

    from headroom._scripted_server import chat_chunks
    from headroom.memory._dialects import ChunkFilter

    reply = "A streamed answer of moderate length, with some text. " * 8 + '<memory>{"memories": [' \
        '{"content": "Prefers short answers", "category": "preference"}]}</memory>'
    events = [e for e in chat_chunks({"model": "m"}, reply, 4).events if isinstance(e, dict)]
    total, count = 0.0, 0
    for _ in range(rounds):
        chunks = [ChatCompletionChunk.model_validate(e) for e in events]
        chunk_filter = ChunkFilter()
        t = time.perf_counter()
        for chunk in chunks:
            chunk_filter.process(chunk)
        chunk_filter.memories()
        total += time.perf_counter() - t
        count += len(chunks)
    return total / count * 1e6


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--sizes", default="1000,10000")
    parser.add_argument("--samples", type=int, default=300)
    parser.add_argument("--out", default="bench/out/wrapper.json")
    args = parser.parse_args()
    embedder = LocalEmbedder()
    embedder.embed(["load"])
    results = []
    with tempfile.TemporaryDirectory() as tmp:
        for n in (int(s) for s in args.sizes.split(",")):
            for new_memory in (False, True):
                print(f"{n} memories, new memory per reply: {new_memory}", file=sys.stderr)
                results.append(run(n, args.samples, new_memory, embedder, Path(tmp)))
    print("| memories | reply carries | wrapper own p50 | own p95 | floor p50 | floor p95 | p50 - floor |")
    print("|---|---|---|---|---|---|---|")
    for r in results:
        carries = "1 new memory" if r["new_memory_per_reply"] else "empty block"
        print(f"| {r['memories']:,} | {carries} | {r['own_p50_ms']:.2f} ms | {r['own_p95_ms']:.2f} ms | "
              f"{r['floor_p50_ms']:.2f} ms | {r['floor_p95_ms']:.2f} ms | {r['own_p50_ms'] - r['floor_p50_ms']:+.2f} ms |")
    streams = []
    with tempfile.TemporaryDirectory() as tmp:
        for n in (int(s) for s in args.sizes.split(",")):
            print(f"{n} memories, streaming", file=sys.stderr)
            streams.append(run_stream(n, args.samples, embedder, Path(tmp)))
    print("\n| memories | first token: wrapper - bare, p50 | p95 | floor p50 (search) | p50 - floor |")
    print("|---|---|---|---|---|")
    for r in streams:
        print(f"| {r['memories']:,} | {r['ttft_extra_p50_ms']:.2f} ms | {r['ttft_extra_p95_ms']:.2f} ms | "
              f"{r['floor_p50_ms']:.2f} ms | {r['ttft_extra_p50_ms'] - r['floor_p50_ms']:+.2f} ms |")
    per_chunk = filter_cost()
    print(f"\nstream filter: {per_chunk:.2f} us per chunk (4-character chunks of a real reply)")
    Path(args.out).parent.mkdir(parents=True, exist_ok=True)
    Path(args.out).write_text(json.dumps({"calls": results, "streams": streams, "filter_us_per_chunk": per_chunk},
                                         indent=2))


if __name__ == "__main__":
    main()
