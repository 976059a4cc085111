"""Recall on paraphrased questions over short memories: hybrid ranking against vector-only.

    .venv/bin/python bench/paraphrase.py [--locomo] [--embedding-model DIR] [--int8 | --fp32]

The set is ``bench/paraphrases.py``: 5 users, 100 short memories in the three categories, and 150
questions worded the way people ask them. They share few words with the memory that answers them,
use pronouns, or state a need indirectly ("Is a satay stir-fry OK for me?" for a peanut allergy).
Each question is searched in its user's memories through the public API, with the real embedding
model. The bench prints hit@1, hit@3 and hit@5 (the answering memory among the first k) for each
ranking. It also prints the injection floor's share: how often the answering memory is injected
under ``DEFAULT_MIN_SCORE``. ``--locomo`` also runs bench/locomo.py's evaluation.
"""

from __future__ import annotations

import argparse
import subprocess
import sys
import tempfile
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))

from paraphrases import MEMORIES, QUESTIONS  # noqa: E402

from headroom.memory import LocalEmbedder, open_memory  # noqa: E402
from headroom.memory._inject import DEFAULT_MIN_SCORE  # noqa: E402
from headroom.memory._scoring import DEFAULT_SCORING, Scoring  # noqa: E402

RANKINGS = {"vector only": Scoring(keyword_weight=0.0, recency_weight=0.0), "hybrid (default)": DEFAULT_SCORING}


def evaluate(db: str, embedder: LocalEmbedder, scoring: Scoring) -> dict[str, float]:
    memories, ids = {}, {}
    for user, items in MEMORIES.items():
        memory = open_memory(f"para-{user}", db, embedder=embedder)
        memory.scoring = scoring
        stored = memory.add_many([{"text": text, "category": category} for category, text in items])
        memories[user], ids[user] = memory, [m.id for m in stored]
    hits = {1: 0, 3: 0, 5: 0}
    injected = 0
    misses = []
    for user, question, answer in QUESTIONS:
        found = memories[user].search(question, top_k=5)
        ranked = [m.id for m, _ in found]
        target = ids[user][answer]
        for k in hits:
            hits[k] += target in ranked[:k]
        injected += any(m.id == target and score >= DEFAULT_MIN_SCORE for m, score in found)
        if target not in ranked[:3]:
            misses.append((question, MEMORIES[user][answer][1], found[0][0].text if found else ""))
    for memory in memories.values():
        memory.close()
    n = len(QUESTIONS)
    return {**{f"hit@{k}": v / n for k, v in hits.items()}, "injected": injected / n, "misses": misses}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--locomo", action="store_true", help="also run bench/locomo.py")
    parser.add_argument("--misses", action="store_true", help="print the questions missed at 3")
    parser.add_argument("--embedding-model", default=None,
                        help="a local sentence-transformers directory (default: the installed MiniLM)")
    variant = parser.add_mutually_exclusive_group()  # neither: the library's default (int8 where it passes its check)
    variant.add_argument("--int8", action="store_true", help="the model's int8 variant (LocalEmbedder(int8=True))")
    variant.add_argument("--fp32", action="store_true", help="the model in fp32 (LocalEmbedder(int8=False))")
    args = parser.parse_args()
    embedder = LocalEmbedder(path=args.embedding_model, int8=True if args.int8 else False if args.fp32 else None)
    print(f"embedding model: {embedder.name}")
    print(f"{sum(len(v) for v in MEMORIES.values())} memories of {len(MEMORIES)} users, {len(QUESTIONS)} questions")
    print("| ranking | hit@1 | hit@3 | hit@5 | answer injected (top 5, cosine >= floor) |")
    print("|---|---|---|---|---|")
    results = {}
    for name, scoring in RANKINGS.items():
        with tempfile.TemporaryDirectory() as tmp:
            results[name] = r = evaluate(str(Path(tmp) / "p.db"), embedder, scoring)
        print(f"| {name} | {r['hit@1']:.3f} | {r['hit@3']:.3f} | {r['hit@5']:.3f} | {r['injected']:.3f} |")
    if args.misses:
        for name, r in results.items():
            print(f"\nmissed at 3, {name}:")
            for question, answer, first in r["misses"]:
                print(f"  {question!r} -> wanted {answer!r}, first {first!r}")
    if args.locomo:
        more = (["--embedding-model", args.embedding_model] if args.embedding_model else []) + (
            ["--int8"] if args.int8 else ["--fp32"] if args.fp32 else [])
        subprocess.run([sys.executable, str(Path(__file__).with_name("locomo.py")), *more], check=True)


if __name__ == "__main__":
    main()
