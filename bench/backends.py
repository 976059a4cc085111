"""SQLite and PostgreSQL side by side: search and add latency at a size, and 4 writer processes.

    .venv/bin/python bench/backends.py [--sizes 10000] [--samples 300] [--writers 4] [--adds 200]

For each backend: one user with ``size`` memories (random unit vectors: search cost depends on the
number of rows, not their content) and ``size`` more spread over 100 other users; then search
p50/p95 with the real local model embedding every query (the query cache cleared each time), add
p50 (one memory, embedded, through ``UserMemory.add``), and the adds per second of ``--writers``
processes adding ``--adds`` memories each to their own users, all at once. PostgreSQL runs on a
throwaway local server (bench/_postgres.py) with fsync on, its table analyzed after the fill;
SQLite on a file in a temporary directory.
"""

from __future__ import annotations

import argparse
import json
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

from headroom.memory import LocalEmbedder, Memory, open_memory
from headroom.memory import _query_cache as query_cache
from headroom.memory._models import new_id, utcnow

WORKER = str(Path(__file__).resolve().parents[1] / "tests" / "worker.py")
QUESTIONS = ["which city do I live in", "what do I like to eat", "my favourite programming language",
             "when is my dentist appointment", "what sport do I do", "who is my sister", "my budget for the trip",
             "the deploy process at work", "what music do I play", "where did I go on vacation"]


def fill(memory, user_id: str, n: int, dim: int, rng: np.random.Generator) -> None:
    now = utcnow()
    for start in range(0, n, 2000):
        count = min(2000, n - start)
        vectors = rng.standard_normal((count, dim)).astype(np.float32)
        vectors /= np.linalg.norm(vectors, axis=1, keepdims=True)
        rows = [Memory(new_id(), user_id, f"filler memory {user_id} {start + i} about work", "fact", now, now)
                for i in range(count)]
        memory.store.add(rows, vectors)
        print(f"\r  filling {user_id}: {start + count}/{n}", end="", file=sys.stderr, flush=True)


def pct(values: list[float], q: float) -> float:
    return float(np.percentile(values, q)) * 1000


def measure(where: str, size: int, samples: int, embedder: LocalEmbedder) -> dict:
    rng = np.random.default_rng(size)
    memory = open_memory("bench", where, embedder=embedder)
    started = time.perf_counter()
    fill(memory, "bench", size, embedder.dim, rng)
    for other in range(100):
        fill(memory, f"other{other}", size // 100, embedder.dim, rng)
    print(f"\r  filled in {time.perf_counter() - started:.0f} s" + " " * 30, file=sys.stderr)
    if where.startswith("postgresql://"):
        # Statistics, as autovacuum gathers them within a minute of a bulk load: without them the
        # planner reads the user's 10,000 index entries for every query word, even one no memory holds.
        with memory.store.transaction() as db:
            db.execute("ANALYZE memories")
    memory.search("warm up")  # loads the user's index
    searches = []
    for i in range(samples):
        query_cache.clear()
        t = time.perf_counter()
        memory.search(QUESTIONS[i % len(QUESTIONS)] + f" {i}", top_k=5)
        searches.append(time.perf_counter() - t)
    adds = []
    for i in range(min(samples, 200)):
        t = time.perf_counter()
        memory.add(f"Benchmark fact {i}: likes {QUESTIONS[i % len(QUESTIONS)]} number {i * 7919}")
        adds.append(time.perf_counter() - t)
    memory.close()
    return {"search_p50_ms": pct(searches, 50), "search_p95_ms": pct(searches, 95), "add_p50_ms": pct(adds, 50)}


def writers(where: str, count: int, adds: int) -> dict:
    """``count`` processes adding ``adds`` memories each (embedded with the real model), at once."""
    open_memory("warm", where).close()  # the schema exists before the clock starts
    started = time.perf_counter()
    procs = [subprocess.Popen([sys.executable, WORKER, "add-range", where, f"writer{i}", f"writer {i}", str(adds)],
                              stderr=subprocess.PIPE, text=True) for i in range(count)]
    for proc in procs:
        if proc.wait() != 0:
            raise SystemExit(proc.stderr.read() if proc.stderr else "a writer failed")
    seconds = time.perf_counter() - started
    with open_memory("writer0", where) as memory:
        stored = sum(memory.store.counts(f"writer{i}").get("fact", 0) for i in range(count))
    return {"writers": count, "adds": count * adds, "stored": stored, "seconds": seconds,
            "adds_per_s": count * adds / seconds}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--sizes", default="10000")
    parser.add_argument("--samples", type=int, default=300)
    parser.add_argument("--writers", type=int, default=4)
    parser.add_argument("--adds", type=int, default=200)
    parser.add_argument("--out", default="bench/out/backends.json")
    args = parser.parse_args()
    from _postgres import postgres

    embedder = LocalEmbedder()
    embedder.embed(["load"])
    results: dict = {}
    with tempfile.TemporaryDirectory() as tmp, postgres() as new_database:
        for size in map(int, args.sizes.split(",")):
            for backend in ("sqlite", "postgres"):
                where = str(Path(tmp) / f"{size}.db") if backend == "sqlite" else new_database()
                print(f"{backend}, {size:,} memories", file=sys.stderr)
                results[f"{backend} {size}"] = measure(where, size, args.samples, embedder)
        for backend in ("sqlite", "postgres"):
            where = str(Path(tmp) / "writers.db") if backend == "sqlite" else new_database()
            print(f"{backend}, {args.writers} writers", file=sys.stderr)
            results[f"{backend} writers"] = writers(where, args.writers, args.adds)
    print("\n| backend | memories (one user + as many across 100 others) | search p50 | search p95 | add p50 |")
    print("|---|---|---|---|---|")
    for key, r in results.items():
        if "search_p50_ms" in r:
            backend, size = key.split()
            print(f"| {backend} | {int(size):,} | {r['search_p50_ms']:.2f} ms | {r['search_p95_ms']:.2f} ms | "
                  f"{r['add_p50_ms']:.2f} ms |")
    print("\n| backend | writer processes | memories added | stored | seconds | adds/s |")
    print("|---|---|---|---|---|---|")
    for key, r in results.items():
        if "writers" in r:
            print(f"| {key.split()[0]} | {r['writers']} | {r['adds']} | {r['stored']} | {r['seconds']:.1f} | "
                  f"{r['adds_per_s']:.0f} |")
    Path(args.out).parent.mkdir(parents=True, exist_ok=True)
    Path(args.out).write_text(json.dumps(results, indent=2))


if __name__ == "__main__":
    main()
