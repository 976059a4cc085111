"""with_memory: time the queue write adds to the caller's call, and extraction throughput.

    .venv/bin/python bench/background.py [--samples 300] [--turns 200]

The queue write is timed where it happens, inside ``create``; beside it, the wrapper's whole own time
(bare SDK call vs wrapped call, same scripted server). Throughput: ``--turns`` turns queued, then
drained by 1, 2 and 4 workers against a scripted server that answers each extraction in 50 ms.
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

from headroom._scripted_server import ScriptedServer, chat_completion, rule_based_reply
from headroom.memory import LocalEmbedder, with_memory
from headroom.memory._sql_queue import SQLJobQueue as JobQueue


def pct(values: list[float], q: float) -> float:
    return float(np.percentile(values, q)) * 1000


def queue_write(samples: int, embedder: LocalEmbedder, workdir: Path) -> dict:
    writes: list[float] = []
    original = JobQueue.put

    def timed_put(self, user_id, payload):  # type: ignore[no-untyped-def]
        t = time.perf_counter()
        try:
            return original(self, user_id, payload)
        finally:
            writes.append(time.perf_counter() - t)

    JobQueue.put = timed_put  # type: ignore[method-assign]
    try:
        with ScriptedServer() as server:
            bare = openai.OpenAI(base_url=server.base_url, api_key="x")
            client = with_memory(openai.OpenAI(base_url=server.base_url, api_key="x"), "bench",
                                 str(workdir / "queue.db"), embedder=embedder)
            client.memory.search("warm up")
            own = []
            for i in range(samples):
                messages = [{"role": "user", "content": f"I prefer option {i} for this."}]
                t = time.perf_counter()
                bare.chat.completions.create(model="m", messages=messages)
                t_bare = time.perf_counter() - t
                t = time.perf_counter()
                client.chat.completions.create(model="m", messages=messages)
                own.append(time.perf_counter() - t - t_bare)
            client.memory.flush(timeout=120)
            client.close()
    finally:
        JobQueue.put = original  # type: ignore[method-assign]
    return {"queue_write_p50_ms": pct(writes, 50), "queue_write_p95_ms": pct(writes, 95),
            "wrapper_own_p50_ms": pct(own, 50), "wrapper_own_p95_ms": pct(own, 95)}


def throughput(turns: int, workers: int, embedder: LocalEmbedder, workdir: Path) -> dict:
    def slow(body: dict) -> tuple[int, dict]:
        if "You keep long-term memory" in str(body["messages"][0].get("content")):
            time.sleep(0.05)
        return 200, chat_completion(body, [rule_based_reply(body)])

    with ScriptedServer() as server:
        server.handlers["/v1/chat/completions"] = slow
        db = str(workdir / f"throughput-{workers}.db")
        client = with_memory(openai.OpenAI(base_url=server.base_url, api_key="x"), "bench", db,
                             embedder=embedder, workers=workers)
        queue = client.memory.store.extraction_queue()
        for i in range(turns):  # queued directly, so the drain alone is timed
            queue.put("bench", {"said": [f"We use tool number {i}."], "reply": "Noted.", "model": "m"})
        t = time.perf_counter()
        done = client.memory.flush(timeout=600)
        elapsed = time.perf_counter() - t
        stored = client.memory.stats()["total_chunks"]
        client.close()
    return {"workers": workers, "turns": turns, "seconds": elapsed, "turns_per_second": turns / elapsed,
            "per_worker": turns / elapsed / workers, "all_done": done, "stored": stored}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--samples", type=int, default=300)
    parser.add_argument("--turns", type=int, default=200)
    parser.add_argument("--out", default="bench/out/background.json")
    args = parser.parse_args()
    embedder = LocalEmbedder()
    embedder.embed(["load"])
    with tempfile.TemporaryDirectory() as tmp:
        print("queue write...", file=sys.stderr)
        write = queue_write(args.samples, embedder, Path(tmp))
        runs = []
        for workers in (1, 2, 4):
            print(f"throughput, {workers} workers...", file=sys.stderr)
            runs.append(throughput(args.turns, workers, embedder, Path(tmp)))
    print("| queue write p50 | p95 | wrapper own time p50 | p95 |")
    print("|---|---|---|---|")
    print(f"| {write['queue_write_p50_ms']:.2f} ms | {write['queue_write_p95_ms']:.2f} ms | "
          f"{write['wrapper_own_p50_ms']:.2f} ms | {write['wrapper_own_p95_ms']:.2f} ms |")
    print("\n| workers | turns | seconds | turns/s | turns/s per worker | all extracted |")
    print("|---|---|---|---|---|---|")
    for r in runs:
        print(f"| {r['workers']} | {r['turns']} | {r['seconds']:.1f} | {r['turns_per_second']:.1f} | "
              f"{r['per_worker']:.1f} | {r['all_done'] and r['stored'] == r['turns']} |")
    Path(args.out).parent.mkdir(parents=True, exist_ok=True)
    Path(args.out).write_text(json.dumps({"queue_write": write, "throughput": runs}, indent=2))


if __name__ == "__main__":
    main()
