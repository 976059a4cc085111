"""A million memories: one user with 1M, and 1M more across 1,000 users, in one database.

    .venv/bin/python bench/scale.py [--backend postgres|sqlite] [--big 1000000] [--users 1000]
                                    [--per-user 1000] [--queries 200] [--data DIR]

``--data DIR`` keeps the server's data (and the big user's vectors) in DIR, and a second run with
the same DIR measures again without loading.

Vectors are shaped like real ones: each row is a LoCoMo turn's embedding (the real local model)
plus noise, renormalized (cosine to its turn about 0.85), with the turn's text and a number; so
HNSW meets clusters, as with real memories, not uniform noise (its worst case). The rows are
loaded in bulk (PostgreSQL: COPY, the full-text index built after, as a bulk import would, then
the big user's own HNSW graph; SQLite: one transaction of INSERTs, FTS5 filled by its triggers).
Then, with
the real model embedding every question (LoCoMo's, query cache cleared):

- search p50/p95 of the 1M-memory user, and its vector recall@10 against an exact scan (numpy over
  all its vectors; vector-only scoring, so the two rank the same way). PostgreSQL searches it in
  the database (``_postgres_search``) on a graph of its own, which the run builds first as
  ``headroom-memory index`` would (with ``--no-graphs`` and none built before: exact scans);
  SQLite in its in-process index;
- search p50/p95 of random users among the 1,000 (in-process indexes, most loaded cold), and of a
  user with 10 memories in the 2M-row table;
- add p50 for the 1M-memory user (the near-duplicate check, then the insert).
"""

from __future__ import annotations

import argparse
import json
import shutil
import sys
import tempfile
import time
from contextlib import ExitStack
from pathlib import Path
from typing import Any, Callable

import numpy as np

from headroom.memory import LocalEmbedder, open_memory
from headroom.memory import _query_cache as query_cache
from headroom.memory._backends import recorded_model
from headroom.memory._models import new_id, normalize_text
from headroom.memory._postgres import PostgresStore
from headroom.memory._postgres_graphs import build_graphs
from headroom.memory._rows import blob
from headroom.memory._scoring import Scoring
from headroom.memory._sqlite import SQLiteStore

sys.path.insert(0, str(Path(__file__).resolve().parent))
from locomo import DATA  # noqa: E402

VECTOR_ONLY = Scoring(keyword_weight=0.0, recency_weight=0.0)


def turns_and_questions(embedder: LocalEmbedder) -> tuple[list[str], np.ndarray, list[str]]:
    samples = json.loads(DATA.read_text())
    texts, questions = [], []
    for sample in samples:
        conversation = sample["conversation"]
        for key, value in conversation.items():
            if key.startswith("session_") and isinstance(value, list):
                texts += [f"{t['speaker']}: {t['text']}" for t in value]
        questions += [q["question"] for q in sample["qa"] if q.get("category") in (1, 2, 3, 4)]
    vectors = np.concatenate([embedder.embed(texts[i:i + 256]) for i in range(0, len(texts), 256)])
    return texts, vectors.astype(np.float32), questions


def synthetic(centers: np.ndarray, n: int, rng: np.random.Generator) -> tuple[np.ndarray, np.ndarray]:
    """``n`` vectors, each a random center plus noise (cosine to it about 0.85), and their centers."""
    which = rng.integers(0, len(centers), n)
    noise = rng.standard_normal((n, centers.shape[1])).astype(np.float32) * np.float32(0.032)
    vectors = centers[which] + noise
    vectors /= np.linalg.norm(vectors, axis=1, keepdims=True)
    return vectors, which


def copy_rows(store: PostgresStore, user_id: str, texts: list[str], which: np.ndarray, vectors: np.ndarray) -> None:
    now = time.time()
    conn = store._connection()
    with conn.cursor() as cursor, cursor.copy(
            "COPY memories (id, user_id, text, norm_text, category, source, metadata, created_at, updated_at, "
            "embedding) FROM STDIN (FORMAT BINARY)") as copy:
        copy.set_types(["text"] * 7 + ["float8", "float8", "vector"])
        for i, (center, vector) in enumerate(zip(which, vectors)):
            text = f"{texts[center]} #{i}"
            copy.write_row((new_id(), user_id, text, normalize_text(text), "fact", "manual", "{}", now - i, now - i,
                            vector))
    conn.execute("INSERT INTO user_versions (user_id, version) VALUES (%s, 1) ON CONFLICT (user_id) DO UPDATE "
                 "SET version = user_versions.version + 1", (user_id,))


def timed(memory, questions: list[str]) -> tuple[list[float], list[list]]:
    seconds, results = [], []
    for q in questions:
        query_cache.clear()
        t = time.perf_counter()
        found = memory.search(q, top_k=10)
        seconds.append(time.perf_counter() - t)
        results.append(found)
    return seconds, results


def ms(values: list[float], q: float) -> float:
    return float(np.percentile(values, q)) * 1000


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--backend", choices=["postgres", "sqlite"], default="postgres")
    parser.add_argument("--big", type=int, default=1_000_000)
    parser.add_argument("--users", type=int, default=1000)
    parser.add_argument("--per-user", type=int, default=1000)
    parser.add_argument("--queries", type=int, default=200)
    parser.add_argument("--data", default=None, help="keep (or reuse) the loaded database here")
    parser.add_argument("--no-graphs", action="store_true",
                        help="PostgreSQL: do not build the large user a graph of its own (one built before stays)")
    parser.add_argument("--out", default=None, help="default: bench/out/scale-BACKEND.json")
    args = parser.parse_args()
    from _postgres import postgres

    embedder = LocalEmbedder()
    texts, centers, questions = turns_and_questions(embedder)
    rng = np.random.default_rng(7)
    picked = rng.choice(len(questions), args.queries + 100, replace=False)
    # 100 other questions warm the server's caches first: figures are those of a server in use.
    warm, questions = [questions[i] for i in picked[args.queries:]], [questions[i] for i in picked[:args.queries]]
    report: dict = {"backend": args.backend, "big_user": args.big, "users": args.users, "per_user": args.per_user}
    data = Path(args.data or tempfile.mkdtemp(prefix="headroom-scale-"))
    data.mkdir(parents=True, exist_ok=True)
    loaded = data / f"{args.backend}-big-vectors.npy"
    with ExitStack() as stack:
        if args.backend == "postgres":
            database = stack.enter_context(postgres(directory=str(data / "postgres")))
            if loaded.exists():  # reused: embed with the variant it records (fp32 before int8 was the default)
                embedder = embedder.variant_for(recorded_model(database("scale")))
            opened: Callable[[], Any] = lambda: PostgresStore(  # noqa: E731
                database("scale"), embedding_model=embedder.name, embedding_dim=embedder.dim, auto_graphs=False)
        else:
            if loaded.exists():
                embedder = embedder.variant_for(recorded_model(str(data / "sqlite.db")))
            opened = lambda: SQLiteStore(  # noqa: E731
                str(data / "sqlite.db"), embedding_model=embedder.name, embedding_dim=embedder.dim)
        if loaded.exists():
            store, big_vectors = opened(), np.load(loaded)
            report.update(json.loads(loaded.with_suffix(".json").read_text()))
        else:
            if args.backend == "postgres":
                store, big_vectors = load_postgres(database, embedder, texts, centers, rng, args, report)
            else:
                store, big_vectors = load_sqlite(opened(), texts, centers, rng, args, report)
            np.save(loaded, big_vectors)
            loaded.with_suffix(".json").write_text(json.dumps(report))
        if args.backend == "postgres" and not args.no_graphs:
            started = time.perf_counter()
            built = build_graphs(store, store.memory_rows)  # as `headroom-memory index` does
            if any(now for _, _, now in built):
                report["graph_build_seconds"] = time.perf_counter() - started
                loaded.with_suffix(".json").write_text(json.dumps(report))
            print(f"graphs of their own: {built}", file=sys.stderr)
        report["own_graph"] = args.backend == "postgres" and store.has_graph("big")
        measure(store, embedder, big_vectors, warm, questions, rng, args, report)
    if not args.data:
        shutil.rmtree(data, ignore_errors=True)
    for key, value in report.items():
        print(f"{key}: {value:.3f}" if isinstance(value, float) else f"{key}: {value}")
    out = Path(args.out or f"bench/out/scale-{args.backend}.json")
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(json.dumps(report, indent=2))


def load_sqlite(store: SQLiteStore, texts, centers, rng, args, report) -> tuple[SQLiteStore, np.ndarray]:
    started = time.perf_counter()
    big_vectors = None
    for user, count in [("big", args.big)] + [(f"user{u:04d}", args.per_user) for u in range(args.users)] + [
            ("tiny", 10)]:
        vectors, which = synthetic(centers, count, rng)
        big_vectors = vectors if user == "big" else big_vectors
        now = time.time()
        with store.transaction() as db:
            db.executemany(
                "INSERT INTO memories (id, user_id, text, norm_text, category, source, metadata, created_at, "
                "updated_at, embedding) VALUES (?, ?, ?, ?, 'fact', 'manual', '{}', ?, ?, ?)",
                ((new_id(), user, f"{texts[c]} #{i}", normalize_text(f"{texts[c]} #{i}"), now - i, now - i, blob(v))
                 for i, (c, v) in enumerate(zip(which, vectors))))
            db.execute("INSERT INTO user_versions (user_id, version) VALUES (?, 1) ON CONFLICT (user_id) DO UPDATE "
                       "SET version = user_versions.version + 1", (user,))
        print(f"\r  loaded {user}", end="", file=sys.stderr, flush=True)
    report["load_seconds"] = time.perf_counter() - started
    print(f"\nloaded in {report['load_seconds']:.0f} s", file=sys.stderr)
    assert big_vectors is not None
    return store, big_vectors


def load_postgres(database, embedder, texts, centers, rng, args, report) -> tuple[PostgresStore, np.ndarray]:
    """A new database ("scale") with the big user, the many users and a tiny one, indexes built after."""
    database()  # the template copy exists
    url = database("postgres")
    import psycopg

    with psycopg.connect(url, autocommit=True) as conn:
        conn.execute("DROP DATABASE IF EXISTS scale")
        conn.execute("CREATE DATABASE scale TEMPLATE headroom_template")
    store = PostgresStore(database("scale"), embedding_model=embedder.name, embedding_dim=embedder.dim,
                          auto_graphs=False)  # the big user's graph is built after the load, in main()
    conn = store._connection()
    conn.execute("DROP INDEX memories_words")  # rebuilt after the load
    started = time.perf_counter()
    big_vectors, which = synthetic(centers, args.big, rng)
    copy_rows(store, "big", texts, which, big_vectors)
    for u in range(args.users):
        vectors, which = synthetic(centers, args.per_user, rng)
        copy_rows(store, f"user{u:04d}", texts, which, vectors)
        print(f"\r  loaded user {u + 1}/{args.users}", end="", file=sys.stderr, flush=True)
    vectors, which = synthetic(centers, 10, rng)
    copy_rows(store, "tiny", texts, which, vectors)
    report["load_seconds"] = time.perf_counter() - started
    print(f"\nloaded {args.big + args.users * args.per_user + 10:,} rows in {report['load_seconds']:.0f} s",
          file=sys.stderr)
    started = time.perf_counter()
    conn.execute("CREATE INDEX memories_words ON memories USING gin (words) WITH (fastupdate = off)")
    conn.execute("VACUUM ANALYZE memories")
    report["gin_build_seconds"] = time.perf_counter() - started
    print(f"full-text index and ANALYZE in {report['gin_build_seconds']:.0f} s", file=sys.stderr)
    return store, big_vectors


def measure(store, embedder, big_vectors, warm, questions, rng, args, report) -> None:
    big = open_memory("big", embedder=embedder, store=store)
    timed(big, warm)
    seconds, _ = timed(big, questions)
    report["big_search_p50_ms"], report["big_search_p95_ms"] = ms(seconds, 50), ms(seconds, 95)
    default, big.scoring = big.scoring, VECTOR_ONLY
    _, found = timed(big, questions)
    big.scoring = default
    ids = store.query("SELECT id FROM memories WHERE user_id = 'big' ORDER BY pk", ())
    position = {row[0]: i for i, row in enumerate(ids)}
    hits = near = 0
    for q, result in zip(questions, found):
        cosines = big_vectors @ embedder.embed([q])[0]
        exact = np.argsort(-cosines)[:10]
        got = [position[m.id] for m, _ in result]
        hits += len(set(exact.tolist()) & set(got))
        # As ann-benchmarks counts: a result as close as the 10th true neighbour (to 0.001) is one.
        near += sum(cosines[g] >= cosines[exact[-1]] - 1e-3 for g in got)
    report["big_vector_recall_at_10"] = hits / (10 * len(questions))
    report["big_vector_recall_at_10_ties"] = near / (10 * len(questions))
    adds, added = [], []
    for i in range(50):
        t = time.perf_counter()
        added.append(big.add(f"Benchmark fact {i}: {questions[i % len(questions)]} {i * 7919}"))
        adds.append(time.perf_counter() - t)
    report["big_add_p50_ms"] = ms(adds, 50)
    for memory in added:  # the database stays as loaded, for the next run
        big.delete(memory.id)

    people = [open_memory(f"user{u:04d}", embedder=embedder, store=store) for u in rng.choice(args.users, 50)]
    seconds = []
    for i, q in enumerate(questions):
        query_cache.clear()
        t = time.perf_counter()
        people[i % len(people)].search(q, top_k=10)
        seconds.append(time.perf_counter() - t)
    report["users_search_p50_ms"], report["users_search_p95_ms"] = ms(seconds, 50), ms(seconds, 95)
    tiny = open_memory("tiny", embedder=embedder, store=store)
    seconds, _ = timed(tiny, questions)
    report["tiny_search_p50_ms"] = ms(seconds, 50)
    store.close()


if __name__ == "__main__":
    main()
