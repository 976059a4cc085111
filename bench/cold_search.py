"""A cold user's search, with the query embedded beside the load of the user's rows, and without.

    .venv/bin/python bench/cold_search.py [--users 200] [--per-user 50,1000] [--backend sqlite|postgres]

Builds a store of ``--users`` users per size (random unit vectors under the local model's name:
the ranking is not judged, only its time), keeps only one user's index cached
(``$HEADROOM_INDEX_CACHE_MB=0``), and searches each user in turn through ``UserMemory.search``
with the real local model embedding every question (query cache cleared), so every search loads
its user cold. Each search runs once with the load handed to another thread while the query is
embedded (``Store.prefetch``, the default) and once with it done after, alternating call by call.
"""

from __future__ import annotations

import argparse
import os
import sys
import tempfile
import time
from contextlib import ExitStack
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent))

from paraphrases import QUESTIONS  # noqa: E402

from headroom.memory import LocalEmbedder, Memory, open_memory  # noqa: E402
from headroom.memory import _query_cache as query_cache  # noqa: E402
from headroom.memory._backends import open_store  # noqa: E402
from headroom.memory._models import new_id, utcnow  # noqa: E402


def build(store, users: int, per_user: int, rng: np.random.Generator) -> list[str]:
    now = utcnow()
    names = [f"u{per_user}-{u}" for u in range(users)]
    for name in names:
        memories = [Memory(new_id(), name, f"{name} remembers fact {i} about topic {i * 7}", "fact", now, now)
                    for i in range(per_user)]
        vectors = rng.standard_normal((per_user, store.embedding_dim)).astype(np.float32)
        store.add(memories, vectors / np.linalg.norm(vectors, axis=1, keepdims=True))
    return names


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--users", type=int, default=200)
    parser.add_argument("--per-user", default="50,1000")
    parser.add_argument("--backend", choices=["sqlite", "postgres"], default="sqlite")
    args = parser.parse_args()
    os.environ["HEADROOM_INDEX_CACHE_MB"] = "0"  # only the last user's index stays cached
    embedder = LocalEmbedder()
    embedder.embed(["warm up"])
    questions = [q for _, q, _ in QUESTIONS]
    rng = np.random.default_rng(3)
    with ExitStack() as stack:
        if args.backend == "postgres":
            from _postgres import postgres

            location = stack.enter_context(postgres())()
        else:
            location = str(Path(stack.enter_context(tempfile.TemporaryDirectory())) / "cold.db")
        store = open_store(location, embedding_model=embedder.name, embedding_dim=embedder.dim)
        prefetch = store.prefetch
        print(f"{args.backend}, {args.users} users per size, real MiniLM query embedding every search")
        print("| memories per user | cold search p50, load beside the embedding | p50, load after | saved |")
        print("|---|---|---|---|")
        for per_user in [int(n) for n in args.per_user.split(",")]:
            names = build(store, args.users, per_user, rng)
            memories = [open_memory(name, embedder=embedder, store=store) for name in names]
            times: dict[bool, list[float]] = {True: [], False: []}
            for i in range(2 * len(memories)):
                beside = i % 2 == 0
                store.prefetch = prefetch if beside else (lambda user_id: None)  # type: ignore[method-assign]
                query_cache.clear()
                started = time.perf_counter()
                memories[i // 2 if beside else (i // 2 + len(memories) // 2) % len(memories)].search(
                    questions[i % len(questions)])
                times[beside].append(time.perf_counter() - started)
            store.prefetch = prefetch  # type: ignore[method-assign]
            on, off = (float(np.median(times[k])) * 1000 for k in (True, False))
            print(f"| {per_user:,} | {on:.2f} ms | {off:.2f} ms | {off - on:.2f} ms |", flush=True)
        store.close()


if __name__ == "__main__":
    main()
