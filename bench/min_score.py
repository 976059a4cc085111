"""Choose the minimum score for injecting a memory, on LoCoMo observations.

    .venv/bin/python bench/min_score.py

LoCoMo's per-session observations are short facts about a person, much like the memories a model
extracts. For each question (categories 1-4) it compares the scores of *relevant* memories (observations
drawn from the question's evidence) with those of *unrelated* ones (20 random observations of
another conversation, about other people), and the best of all ~600 unrelated ones. A floor should
drop unrelated memories while keeping relevant ones. Speakers' names are replaced by "the
user" in questions and facts, as in real memories ("Prefers Python"), so names do not inflate scores.
"""

from __future__ import annotations

import json
import sys
from pathlib import Path

import numpy as np

from headroom.memory import LocalEmbedder

DATA = Path(__file__).resolve().parents[1].parent / "shared" / "data" / "locomo" / "locomo10.json"


def anonymize(text: str, sample: dict) -> str:
    """Memories say "the user", not a name: names shared by question and fact would inflate scores."""
    for key in ("speaker_a", "speaker_b"):
        name = sample["conversation"][key]
        text = text.replace(f"{name}'s", "the user's").replace(name, "the user")
    return text


def observations(sample: dict) -> list[tuple[str, str]]:
    out = []
    for session in sample["observation"].values():
        for facts in session.values():
            out.extend((anonymize(text, sample), str(dia)) for text, dia in facts if isinstance(text, str))
    return out


def main() -> None:
    samples = json.loads(DATA.read_text())
    embedder = LocalEmbedder()
    obs = [observations(s) for s in samples]
    vectors = []
    for i, items in enumerate(obs):
        vectors.append(embedder.embed([t for t, _ in items]))
        print(f"\rembedding observations {i + 1}/{len(obs)}", end="", file=sys.stderr)
    print(file=sys.stderr)
    rng = np.random.default_rng(0)
    relevant, unrelated, unrelated_best = [], [], []
    for i, sample in enumerate(samples):
        other = (i + 1) % len(samples)
        qa = [q for q in sample["qa"] if q.get("category") in (1, 2, 3, 4) and q.get("evidence")]
        queries = embedder.embed([anonymize(q["question"], sample) for q in qa])
        dia = [d for _, d in obs[i]]
        for q, qv in zip(qa, queries):
            evidence = set(q["evidence"])
            rows = [j for j, d in enumerate(dia) if d in evidence]
            relevant.extend((vectors[i][rows] @ qv).tolist())
            picks = rng.choice(len(vectors[other]), size=20, replace=False)
            unrelated.extend((vectors[other][picks] @ qv).tolist())
            unrelated_best.append(float(np.max(vectors[other] @ qv)))
    rel, unr, best = np.array(relevant), np.array(unrelated), np.array(unrelated_best)
    print(f"relevant pairs: {len(rel)}; unrelated pairs: {len(unr)}; questions: {len(best)}")
    print("| floor | relevant pairs kept | unrelated pairs dropped | best unrelated of ~600 dropped |")
    print("|---|---|---|---|")
    for floor in (0.1, 0.15, 0.2, 0.25, 0.3, 0.35, 0.4, 0.45):
        print(f"| {floor:.2f} | {np.mean(rel >= floor):.1%} | {np.mean(unr < floor):.1%} | {np.mean(best < floor):.1%} |")
    print("relevant pair percentiles 10/25/50:", np.percentile(rel, [10, 25, 50]).round(3))
    print("unrelated pair percentiles 50/90/99:", np.percentile(unr, [50, 90, 99]).round(3))


if __name__ == "__main__":
    main()
