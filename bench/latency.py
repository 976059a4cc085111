"""add / search latency of the memory API against its floor, for 100 to 100k memories of one user.

    .venv/bin/python bench/latency.py [--sizes 100,1000,10000,100000] [--samples 300] [--int8 | --fp32]

The floor of a search is the embedder on the query alone plus one numpy matrix product over the
same vectors (on one BLAS thread and in the column layout, as the index runs it); the floor of an add is one embedding plus one INSERT and COMMIT on a bare SQLite file.
Filler memories get random unit vectors (search cost depends on the matrix size, not its content);
every timed add and search embeds its text with the real local model.
"""

from __future__ import annotations

import argparse
import json
import sqlite3
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

from headroom.memory import LocalEmbedder, Memory, open_memory
from headroom.memory import _query_cache as query_cache
from headroom.memory._index import single_blas_thread
from headroom.memory._models import new_id, utcnow
from headroom.memory._scoring import DEFAULT_SCORING, Scoring

WORDS = ("python postgres billing deploy kafka react rust vacation dentist marathon budget kubernetes "
         "sister guitar sushi invoice tokyo migration onboarding review").split()


def sentence(rng: np.random.Generator, i: int) -> str:
    return f"{' '.join(rng.choice(WORDS, 6))} note {i}"


def fill(memory, n: int, dim: int, rng: np.random.Generator) -> None:
    now = utcnow()
    for start in range(0, n, 5000):
        count = min(5000, n - start)
        vectors = rng.standard_normal((count, dim)).astype(np.float32)
        vectors /= np.linalg.norm(vectors, axis=1, keepdims=True)
        rows = [Memory(new_id(), memory.user_id, f"filler memory {start + i}", "fact", now, now)
                for i in range(count)]
        memory.store.add(rows, vectors)
        print(f"\r  filling {start + count}/{n}", end="", file=sys.stderr, flush=True)
    print(file=sys.stderr)


def pct(values: list[float], q: float) -> float:
    return float(np.percentile(values, q)) * 1000


def bench_size(n: int, samples: int, embedder: LocalEmbedder, workdir: Path) -> dict:
    rng = np.random.default_rng(n)
    memory = open_memory("bench", str(workdir / f"bench-{n}.db"), embedder=embedder)
    fill(memory, n, embedder.dim, rng)
    rows = np.frombuffer(
        b"".join(r[0] for r in sqlite3.connect(memory.store.path).execute(
            "SELECT embedding FROM memories WHERE user_id = 'bench'")), dtype="<f4").reshape(n, -1)
    columns = np.ascontiguousarray(rows.T)  # the faster layout on one thread, as the index keeps it
    bare = sqlite3.connect(str(workdir / f"bare-{n}.db"), isolation_level=None)
    bare.execute("PRAGMA journal_mode = WAL")
    bare.execute("PRAGMA synchronous = NORMAL")
    bare.execute("CREATE TABLE t (id TEXT, text TEXT, embedding BLOB)")
    memory.search("warm up the index")
    vector_only, hybrid = Scoring(keyword_weight=0.0, recency_weight=0.0), DEFAULT_SCORING
    search, vector_search, search_floor, add, add_floor = [], [], [], [], []
    for i in range(samples):
        query = sentence(rng, i) + "?"
        t = time.perf_counter()
        q = embedder.embed([query])[0]
        with single_blas_thread():
            scores = q @ columns
        np.argpartition(-scores, 4)[:5]
        search_floor.append(time.perf_counter() - t)
        query_cache.clear()  # each search below embeds its query, as a new question does
        t = time.perf_counter()
        memory.search(query, top_k=5)
        search.append(time.perf_counter() - t)
        memory.scoring = vector_only
        query_cache.clear()
        t = time.perf_counter()
        memory.search(query, top_k=5)
        vector_search.append(time.perf_counter() - t)
        memory.scoring = hybrid
        text = sentence(rng, n + i)
        t = time.perf_counter()
        v = embedder.embed([text + " floor"])[0]
        bare.execute("BEGIN IMMEDIATE")
        bare.execute("INSERT INTO t VALUES (?, ?, ?)", (new_id(), text, v.tobytes()))
        bare.execute("COMMIT")
        add_floor.append(time.perf_counter() - t)
        t = time.perf_counter()
        memory.add(text)
        add.append(time.perf_counter() - t)
    memory.close()
    result = {
        "memories": n,
        "add_p50_ms": pct(add, 50), "add_floor_p50_ms": pct(add_floor, 50),
        "search_p50_ms": pct(search, 50), "search_p95_ms": pct(search, 95),
        "vector_search_p50_ms": pct(vector_search, 50),
        "search_floor_p50_ms": pct(search_floor, 50), "search_floor_p95_ms": pct(search_floor, 95),
    }
    result["add_ratio"] = result["add_p50_ms"] / result["add_floor_p50_ms"]
    result["search_ratio"] = result["search_p50_ms"] / result["search_floor_p50_ms"]
    result["vector_search_ratio"] = result["vector_search_p50_ms"] / result["search_floor_p50_ms"]
    return result


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--sizes", default="100,1000,10000,100000")
    parser.add_argument("--samples", type=int, default=300)
    variant = parser.add_mutually_exclusive_group()  # neither: the library's default (int8 where it passes its check)
    variant.add_argument("--int8", action="store_true", help="the model's int8 variant (LocalEmbedder(int8=True))")
    variant.add_argument("--fp32", action="store_true", help="the model in fp32 (LocalEmbedder(int8=False))")
    parser.add_argument("--out", default="bench/out/latency.json")
    args = parser.parse_args()
    embedder = LocalEmbedder(int8=True if args.int8 else False if args.fp32 else None)
    embedder.embed(["load the model"])
    print(f"embedder: {embedder.name} via {embedder.backend}", file=sys.stderr)
    results = []
    with tempfile.TemporaryDirectory() as tmp:
        for n in (int(s) for s in args.sizes.split(",")):
            print(f"{n} memories:", file=sys.stderr)
            results.append(bench_size(n, args.samples, embedder, Path(tmp)))
    header = ("memories", "add p50", "add floor", "add ratio", "search p50 (hybrid)", "search p95",
              "search floor p50", "hybrid / floor", "vector-only search p50", "vector-only / floor")
    print("| " + " | ".join(header) + " |")
    print("|" + "---|" * len(header))
    for r in results:
        print(f"| {r['memories']:,} | {r['add_p50_ms']:.2f} ms | {r['add_floor_p50_ms']:.2f} ms | "
              f"{r['add_ratio']:.2f}x | {r['search_p50_ms']:.2f} ms | {r['search_p95_ms']:.2f} ms | "
              f"{r['search_floor_p50_ms']:.2f} ms | {r['search_ratio']:.2f}x | "
              f"{r['vector_search_p50_ms']:.2f} ms | {r['vector_search_ratio']:.2f}x |")
    Path(args.out).parent.mkdir(parents=True, exist_ok=True)
    Path(args.out).write_text(json.dumps(results, indent=2))


if __name__ == "__main__":
    main()
