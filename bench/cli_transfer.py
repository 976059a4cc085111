"""Time to export and import memories with the headroom-memory command, as real subprocesses.

    .venv/bin/python bench/cli_transfer.py [--rows 100000] [--users 100]

A file of ``--rows`` memories over ``--users`` users is made directly (random unit vectors of the
local model's dimension, so making it embeds nothing), then ``headroom-memory export`` writes it to
JSON lines and ``headroom-memory import`` loads that into an empty file (vectors carried: same
model), twice (the second finds every row there). Prints seconds and rows per second for each.
"""

from __future__ import annotations

import argparse
import os
import subprocess
import sys
import tempfile
import time
from datetime import datetime, timedelta, timezone
from pathlib import Path

import numpy as np

from headroom.memory import Memory, SQLiteStore

MODEL, DIM = "all-MiniLM-L6-v2", 384


def make(path: str, rows: int, users: int) -> None:
    store = SQLiteStore(path, embedding_model=MODEL, embedding_dim=DIM)
    rng = np.random.default_rng(0)
    start = datetime(2026, 1, 1, tzinfo=timezone.utc)
    per_user = rows // users
    for u in range(users):
        vectors = rng.standard_normal((per_user, DIM)).astype(np.float32)
        vectors /= np.linalg.norm(vectors, axis=1, keepdims=True)
        batch = []
        for i in range(per_user):
            when = start + timedelta(minutes=i)
            batch.append((Memory(id=f"u{u}m{i}", user_id=f"user-{u}", text=f"Memory {i} of user {u}: likes item {i * 7}",
                                 category="fact", created_at=when, updated_at=when), vectors[i]))
        store.load(batch)
    store.close()


def timed(args: list[str]) -> float:
    env = {**os.environ, "HF_HUB_OFFLINE": "1"}
    started = time.perf_counter()
    done = subprocess.run([sys.executable, "-m", "headroom.cli", *args], capture_output=True, text=True, env=env)
    seconds = time.perf_counter() - started
    if done.returncode != 0:
        raise SystemExit(done.stderr)
    return seconds


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--rows", type=int, default=100_000)
    parser.add_argument("--users", type=int, default=100)
    args = parser.parse_args()
    with tempfile.TemporaryDirectory() as tmp:
        source, target, dump = (str(Path(tmp) / name) for name in ("source.db", "target.db", "export.jsonl"))
        started = time.perf_counter()
        make(source, args.rows, args.users)
        print(f"made {args.rows} memories over {args.users} users in {time.perf_counter() - started:.1f} s")
        seconds = timed(["--db", source, "export", "-o", dump])
        print(f"export: {seconds:.1f} s, {args.rows / seconds:,.0f} rows/s, {os.path.getsize(dump) / 1e6:.0f} MB")
        for label in ("import into an empty file", "import again (every row there)"):
            seconds = timed(["--db", target, "import", dump])
            print(f"{label}: {seconds:.1f} s, {args.rows / seconds:,.0f} rows/s")


if __name__ == "__main__":
    main()
