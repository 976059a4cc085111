"""Retrieval recall on LoCoMo: every turn stored as a memory, every question searched.

    .venv/bin/python bench/locomo.py [--conversations 10] [--postgres] [--embedding-model DIR] [--int8 | --fp32] [--out bench/out/locomo.json]

``--postgres`` stores them in a PostgreSQL database (a throwaway server, bench/_postgres.py) instead
of an SQLite file.

Each conversation is one user; each turn one memory, "<speaker> (<session date>): <text>", with its
dia_id in the metadata. For each question of categories 1-4, a hit at k is a retrieved memory whose
dia_id is in the evidence (recall@k); recall_all@10 needs all the evidence in the top 10.
"""

from __future__ import annotations

import argparse
import json
import re
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

from headroom.memory import LocalEmbedder, open_memory
from headroom.memory import _query_cache as query_cache
from headroom.memory._scoring import DEFAULT_SCORING, Scoring

DATA = Path(__file__).resolve().parents[1].parent / "shared" / "data" / "locomo" / "locomo10.json"
CATEGORIES = {1: "multi-hop", 2: "temporal", 3: "open-domain", 4: "single-hop"}
_DIA = re.compile(r"^D(\d+):(\d+)$")


def evidence_ids(raw: list) -> set[str]:
    """The README's quirks: "D30:05" is D30:5, "D8:6; D9:17" is two, and what still fails is skipped."""
    ids = set()
    for entry in raw:
        for part in str(entry).split(";"):
            match = _DIA.match(part.strip())
            if match:
                ids.add(f"D{int(match.group(1))}:{int(match.group(2))}")
    return ids


def turns(sample: dict) -> list[dict]:
    conv = sample["conversation"]
    sessions = sorted((k for k in conv if re.fullmatch(r"session_\d+", k)), key=lambda k: int(k.split("_")[1]))
    out = []
    for key in sessions:
        date = conv.get(f"{key}_date_time", "")
        for turn in conv[key]:
            out.append({"text": f"{turn['speaker']} ({date}): {turn['text']}", "category": "fact",
                        "metadata": {"dia_id": turn["dia_id"]}})
    return out


def progress(done: int, total: int, label: str) -> None:
    width = 30
    filled = int(width * done / max(total, 1))
    print(f"\r{label} [{'#' * filled}{'.' * (width - filled)}] {done}/{total}", end="", file=sys.stderr, flush=True)
    if done == total:
        print(file=sys.stderr)


def evaluate(memories: dict[str, object], samples: list[dict], scoring: Scoring) -> dict:
    hits: dict[int, dict[str, list[float]]] = {c: {"r5": [], "r10": [], "all10": []} for c in CATEGORIES}
    latencies: list[float] = []
    for sample in samples:
        memory = memories[sample["sample_id"]]
        memory.scoring = scoring
        questions = [q for q in sample["qa"] if q.get("category") in CATEGORIES and evidence_ids(q["evidence"])]
        for i, q in enumerate(questions, 1):
            t = time.perf_counter()
            found = memory.search(q["question"], top_k=10)
            latencies.append(time.perf_counter() - t)
            got = [m.metadata.get("dia_id") for m, _ in found]
            evidence = evidence_ids(q["evidence"])
            row = hits[q["category"]]
            row["r5"].append(float(bool(evidence & set(got[:5]))))
            row["r10"].append(float(bool(evidence & set(got[:10]))))
            row["all10"].append(float(evidence <= set(got[:10])))
            if i % 50 == 0 or i == len(questions):
                progress(i, len(questions), f"search {sample['sample_id']}")
    every: dict[str, list[float]] = {"r5": [], "r10": [], "all10": []}
    table = []
    for c, name in CATEGORIES.items():
        for key in every:
            every[key] += hits[c][key]
        table.append({"category": c, "name": name, "questions": len(hits[c]["r5"]),
                      **{key: float(np.mean(v)) for key, v in hits[c].items()}})
    return {"scoring": scoring.__dict__, "categories": table, "hits_at_5": every["r5"],
            "overall": {key: float(np.mean(v)) for key, v in every.items()}, "questions": len(every["r5"]),
            "search_p50_ms": float(np.percentile(latencies, 50)) * 1000,
            "search_p95_ms": float(np.percentile(latencies, 95)) * 1000}


def print_table(label: str, result: dict) -> None:
    print(f"\n{label}\n")
    print("| category | questions | recall@5 | recall@10 | recall_all@10 |")
    print("|---|---|---|---|---|")
    for row in result["categories"]:
        print(f"| {row['category']} {row['name']} | {row['questions']} | {row['r5']:.3f} | {row['r10']:.3f} | "
              f"{row['all10']:.3f} |")
    o = result["overall"]
    print(f"| all | {result['questions']} | {o['r5']:.3f} | {o['r10']:.3f} | {o['all10']:.3f} |")
    print(f"\nsearch p50 {result['search_p50_ms']:.2f} ms, p95 {result['search_p95_ms']:.2f} ms")


def print_kept(vector: dict, hybrid: dict) -> None:
    """What the words add must not cost what the vectors found: count both ways, question by question."""
    pairs = list(zip(vector["hits_at_5"], hybrid["hits_at_5"]))
    found = sum(1 for v, _ in pairs if v)
    kept = sum(1 for v, h in pairs if v and h)
    gained = sum(1 for v, h in pairs if h and not v)
    print(f"\nof the {found} questions vector-only answers in its top 5, hybrid answers {kept} ({kept / found:.1%}); "
          f"it answers {gained} that vector-only misses")


def speed(samples: list[dict], embedder: LocalEmbedder, workdir: Path, size: int = 10_000, queries: int = 300) -> dict:
    """Search p50 at ``size`` memories of one user (LoCoMo turns, repeated with a suffix to reach it),
    vector-only and hybrid interleaved on the same questions."""
    items = [it for s in samples for it in turns(s)]
    while len(items) < size:
        items += [{**it, "text": f"{it['text']} (again {len(items)})"} for it in items[: size - len(items)]]
    memory = open_memory("speed", str(workdir / "speed.db"), embedder=embedder)
    for start in range(0, size, 512):
        memory.add_many(items[start:start + 512])
        progress(min(start + 512, size), size, f"speed corpus of {size}")
    questions = [q["question"] for s in samples for q in s["qa"]][:queries]
    vector_only, hybrid = Scoring(keyword_weight=0.0, recency_weight=0.0), DEFAULT_SCORING
    memory.search("warm up")
    times: dict[str, list[float]] = {"vector": [], "hybrid": []}
    for q in questions:
        for name, scoring in (("vector", vector_only), ("hybrid", hybrid)):
            memory.scoring = scoring
            query_cache.clear()  # both rankings embed the question, as a new question does
            t = time.perf_counter()
            memory.search(q, top_k=5)
            times[name].append(time.perf_counter() - t)
    memory.close()
    p50 = {name: float(np.median(v)) * 1000 for name, v in times.items()}
    return {"memories": size, "vector_p50_ms": p50["vector"], "hybrid_p50_ms": p50["hybrid"],
            "ratio": p50["hybrid"] / p50["vector"]}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--conversations", type=int, default=10)
    parser.add_argument("--sweep", action="store_true", help="also try other keyword weights")
    parser.add_argument("--speed-only", action="store_true", help="only the search speed at 10k memories")
    parser.add_argument("--postgres", action="store_true", help="on PostgreSQL instead of an SQLite file")
    parser.add_argument("--embedding-model", default=None,
                        help="a local sentence-transformers directory (default: the installed MiniLM)")
    variant = parser.add_mutually_exclusive_group()  # neither: the library's default (int8 where it passes its check)
    variant.add_argument("--int8", action="store_true", help="the model's int8 variant (LocalEmbedder(int8=True))")
    variant.add_argument("--fp32", action="store_true", help="the model in fp32 (LocalEmbedder(int8=False))")
    parser.add_argument("--out", default="bench/out/locomo.json")
    args = parser.parse_args()
    if args.postgres:
        from _postgres import postgres

        with postgres() as new_database:
            run(args, new_database())
    else:
        run(args, None)


def run(args: argparse.Namespace, url: str | None) -> None:
    samples = json.loads(DATA.read_text())[: args.conversations]
    embedder = LocalEmbedder(path=args.embedding_model, int8=True if args.int8 else False if args.fp32 else None)
    embedder.embed(["load"])
    if args.speed_only:
        with tempfile.TemporaryDirectory() as tmp:
            fast = speed(samples, embedder, Path(tmp))
        print(f"at {fast['memories']:,} memories of one user: search p50 vector-only {fast['vector_p50_ms']:.2f} ms, "
              f"hybrid {fast['hybrid_p50_ms']:.2f} ms ({fast['ratio']:.2f}x)")
        return
    configs = {"vector only (baseline)": Scoring(keyword_weight=0.0, recency_weight=0.0),
               "hybrid (default)": DEFAULT_SCORING}
    if args.sweep:
        for w in (0.2, 0.3, 0.5, 0.6, 0.8):
            configs[f"keyword_weight={w}"] = Scoring(keyword_weight=w)
    results = {}
    with tempfile.TemporaryDirectory() as tmp:
        db = url or str(Path(tmp) / "locomo.db")
        memories = {}
        t = time.perf_counter()
        for n, sample in enumerate(samples, 1):
            memory = open_memory(sample["sample_id"], db, embedder=embedder)
            items = turns(sample)
            for start in range(0, len(items), 256):
                memory.add_many(items[start:start + 256])
                progress(min(start + 256, len(items)), len(items), f"ingest {sample['sample_id']} ({n}/{len(samples)})")
            memories[sample["sample_id"]] = memory
        ingest = time.perf_counter() - t
        for label, scoring in configs.items():
            results[label] = evaluate(memories, samples, scoring)
        for memory in memories.values():
            memory.close()
        fast = speed(samples, embedder, Path(tmp))
    for label in ("vector only (baseline)", "hybrid (default)"):
        print_table(label, results[label])
    print_kept(results["vector only (baseline)"], results["hybrid (default)"])
    if args.sweep:
        print("\n| ranking | recall@5 | recall@10 | recall_all@10 | search p50 |")
        print("|---|---|---|---|---|")
        for label, r in results.items():
            o = r["overall"]
            print(f"| {label} | {o['r5']:.3f} | {o['r10']:.3f} | {o['all10']:.3f} | {r['search_p50_ms']:.2f} ms |")
    print(f"\nat {fast['memories']:,} memories of one user: search p50 vector-only {fast['vector_p50_ms']:.2f} ms, "
          f"hybrid {fast['hybrid_p50_ms']:.2f} ms ({fast['ratio']:.2f}x)")
    turns_total = sum(len(turns(s)) for s in samples)
    print(f"\ningest {ingest:.1f} s for {turns_total} turns ({turns_total / ingest:.0f} turns/s)")
    Path(args.out).parent.mkdir(parents=True, exist_ok=True)
    Path(args.out).write_text(json.dumps({"results": results, "ingest_seconds": ingest, "speed": fast}, indent=2))


if __name__ == "__main__":
    main()
