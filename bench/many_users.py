"""Many users in one process: what the per-user index cache holds, and what a cold user costs.

    .venv/bin/python bench/many_users.py [--users 2000] [--per-user 50]

Builds a file of ``--users`` users with ``--per-user`` memories each (random unit vectors, 384-d,
as all-MiniLM-L6-v2 gives), then, for each cache budget, a fresh child process searches every user
once and reports the growth of its resident memory, how many indexes it kept, and the cold search
time per user (load the user's rows + rank them; the query embedding is not included).
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

DIM = 384


def build(path: str, users: int, per_user: int) -> None:
    from headroom.memory import Memory, SQLiteStore
    from headroom.memory._models import new_id, utcnow

    store = SQLiteStore(path, embedding_model="bench-384", embedding_dim=DIM)
    rng = np.random.default_rng(1)
    now = utcnow()
    for u in range(users):
        memories = [Memory(new_id(), f"user-{u}", f"user {u} remembers fact {i} about topic {i * 7}", "fact", now, now)
                    for i in range(per_user)]
        vectors = rng.standard_normal((per_user, DIM)).astype(np.float32)
        store.add(memories, vectors / np.linalg.norm(vectors, axis=1, keepdims=True))
    store.close()


def _rss_mb() -> float:
    """Resident memory now (Linux), in MB."""
    for line in Path("/proc/self/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1]) / 1024
    raise RuntimeError("no VmRSS in /proc/self/status")


def serve(path: str, users: int, budget_mb: float) -> dict[str, float]:
    """In a child process: search every user once with a fixed query vector."""
    from headroom.memory import SQLiteStore

    store = SQLiteStore(path, embedding_model="bench-384", embedding_dim=DIM, index_cache_bytes=int(budget_mb * 2**20))
    query = np.random.default_rng(2).standard_normal(DIM).astype(np.float32)
    query /= np.linalg.norm(query)
    store.ranked("user-0", query, 5)  # warm the code paths
    before = _rss_mb()
    times = []
    for u in range(users):
        started = time.perf_counter()
        store.ranked(f"user-{u}", query, 5, words=["fact", "topic"])
        times.append(time.perf_counter() - started)
    after = _rss_mb()
    return {"budget_mb": budget_mb, "rss_growth_mb": round(after - before, 1), "cached_users": len(store._indexes),
            "cached_mb": round(store._indexes.nbytes / 2**20, 1),
            "cold_search_p50_ms": round(float(np.median(times)) * 1000, 3),
            "cold_search_p95_ms": round(float(np.percentile(times, 95)) * 1000, 3)}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--users", type=int, default=2000)
    parser.add_argument("--per-user", type=int, default=50)
    parser.add_argument("--serve", nargs=2, help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.serve:
        print(json.dumps(serve(args.serve[0], args.users, float(args.serve[1]))))
        return
    path = str(Path(tempfile.mkdtemp(prefix="headroom-users-")) / "users.db")
    started = time.perf_counter()
    build(path, args.users, args.per_user)
    print(f"built {args.users} users x {args.per_user} memories in {time.perf_counter() - started:.1f} s")
    print("| cache budget | RSS growth | indexes kept | cached | cold search p50 | p95 |")
    print("|---|---|---|---|---|---|")
    for budget in (64, 16, 100_000):
        out = subprocess.run([sys.executable, __file__, "--users", str(args.users), "--serve", path, str(budget)],
                             capture_output=True, text=True, check=True).stdout
        r = json.loads(out)
        label = "unbounded" if budget == 100_000 else f"{budget} MB"
        print(f"| {label} | {r['rss_growth_mb']} MB | {r['cached_users']} | {r['cached_mb']} MB | "
              f"{r['cold_search_p50_ms']} ms | {r['cold_search_p95_ms']} ms |")


if __name__ == "__main__":
    main()
