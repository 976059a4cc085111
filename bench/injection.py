"""Which searched memories to inject: precision and recall of injection rules, on LoCoMo and the suite.

    .venv/bin/python bench/injection.py [--conversations 10]

``with_fast_memory`` searches the user's memories for the latest message and injects the ``top_k``
(5) best that pass a rule. This measures candidate rules on what is really searched (a real memory
file, the real embedding model, the hybrid ranking), for two kinds of message:

- *needs a memory*: LoCoMo questions (categories 1-4) against the observations of their
  conversation (relevant: the observations of the question's evidence), and the questions of
  ``bench/conversations.py`` against the memories a good extraction makes of its users (relevant:
  those matching the turn's ``needs`` patterns);
- *needs none*: small talk (``SMALL_TALK``) against the suite's users and every LoCoMo
  conversation, and LoCoMo questions asked of another conversation's memories (other people:
  nothing there answers them, though their topics overlap).

For each rule: *hit*, the share of needing messages with at least one relevant memory injected;
*precision*, relevant injected over all injected for those messages; *quiet*, the share of
needing-none messages with nothing injected, and junk injected per such message. Speakers' names
become "the user" (as in ``bench/min_score.py``), so names do not inflate scores.
"""

from __future__ import annotations

import argparse
import json
import re
import sys
import tempfile
from dataclasses import dataclass
from pathlib import Path
from typing import Callable

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent))

from conversations import SUITE  # noqa: E402

from headroom.memory import LocalEmbedder, open_memory  # noqa: E402

DATA = Path(__file__).resolve().parents[1].parent / "shared" / "data" / "locomo" / "locomo10.json"
TOP_K = 5

#: What a good extraction stores from the suite's fact-bearing turns, as a model phrases memories.
SUITE_MEMORIES = {
    "maya": ["Is a backend engineer at a logistics company", "Lives in Amsterdam (moved from Rotterdam)",
             "Prefers Rust over Go", "Is migrating the routing service from a monolith to microservices",
             "Is allergic to peanuts", "Switched from VS Code to Neovim and loves it"],
    "omar": ["Teaches high-school chemistry in Leeds", "Is vegetarian; wants meat-free recipe ideas",
             "Is training for the Leeds half marathon in May", "Has a daughter, Lina, who is 7",
             "Prefers short answers with bullet points"],
    "priya": ["Is a data scientist working at a hospital in Leeds", "Uses Python every day and dislikes R",
              "Is building a readmission risk model for the cardiology ward", "Uses Polars instead of pandas",
              "Her manager is Dr. Evans", "Is taking next week off to visit her parents in Chennai"],
}


#: Messages that need no memory (thanks, greetings, chit-chat), asked of every user's memories.
SMALL_TALK = [
    "Thanks!", "thank you so much", "ok", "lol ok", "haha nice", "Cool, thanks!", "Good morning!", "hi there",
    "Hello!", "hey", "How are you today?", "Ok thanks, bye", "bye!", "see you tomorrow", "great, that works",
    "Perfect.", "got it", "makes sense", "sounds good", "nice one", "awesome", "yes please", "no thanks",
    "sure", "hmm", "wow", "never mind", "that's all for now", "you're the best", "good night",
    "Can you say that again?", "Could you make it shorter?", "Try again please", "What do you mean?",
    "Continue", "go on", "Please explain in more detail", "lol", ":)", "Thanks, that's helpful!",
]


@dataclass
class Hit:
    text: str
    cosine: float
    keyword: float  # the memory's keyword score over the query's best (0 to 1), as the ranking uses it
    relevant: bool


@dataclass
class Case:
    source: str
    query: str
    hits: list[Hit]
    needs: bool  # at least one memory is relevant to it


Rule = Callable[[list[Hit]], list[Hit]]


def rules() -> dict[str, Rule]:
    out: dict[str, Rule] = {}
    for floor in (0.15, 0.2, 0.21, 0.22, 0.23, 0.25, 0.3):
        out[f"cosine >= {floor:.2f}"] = lambda hits, f=floor: [h for h in hits if h.cosine >= f]
    for floor in (0.3, 0.4):
        out[f"cosine + 0.4 kw >= {floor:.2f}"] = lambda hits, f=floor: [h for h in hits if h.cosine + 0.4 * h.keyword >= f]
    for high, low in ((0.25, 0.1), (0.25, 0.2), (0.3, 0.15), (0.25, 0.22)):
        out[f"cosine >= {high:.2f}, or kw and >= {low:.2f}"] = (
            lambda hits, hi=high, lo=low: [h for h in hits if h.cosine >= hi or (h.keyword > 0 and h.cosine >= lo)])
    for low, gap in ((0.15, 0.1), (0.2, 0.1), (0.2, 0.15)):
        out[f"cosine >= max({low:.2f}, best - {gap:.2f})"] = (
            lambda hits, lo=low, g=gap: [h for h in hits if hits and h.cosine >= max(lo, max(x.cosine for x in hits) - g)])
    return out


def anonymize(text: str, sample: dict) -> str:
    for key in ("speaker_a", "speaker_b"):
        name = sample["conversation"][key]
        text = text.replace(f"{name}'s", "the user's").replace(name, "the user")
    return text


def searched(memory, query: str, relevant: Callable[[str], bool]) -> list[Hit]:
    """The top ``TOP_K`` as the library ranks them, each with its cosine and keyword score."""
    return [Hit(m.text, cosine, keyword, relevant(m.text)) for m, cosine, keyword in memory.explain(query, TOP_K)]


def suite_cases(db: str, embedder) -> list[Case]:
    cases = []
    for user in SUITE:
        memory = open_memory(f"suite-{user.user_id}", db, embedder=embedder)
        memory.add_many([{"text": t, "category": "fact"} for t in SUITE_MEMORIES[user.user_id]])
        for session in user.sessions:
            for turn in session:
                if turn.kind == "question" and turn.needs:
                    match = lambda text, t=turn: any(re.search(p, text, re.I) for p in t.needs)  # noqa: E731
                    cases.append(Case("suite", turn.text, searched(memory, turn.text, match), True))
        for text in SMALL_TALK:
            cases.append(Case("suite", text, searched(memory, text, lambda _: False), False))
        memory.close()
    return cases


def locomo_cases(db: str, embedder, conversations: int) -> list[Case]:
    samples = json.loads(DATA.read_text())[:conversations]
    memories, dia_of = [], []
    for i, sample in enumerate(samples):
        memory = open_memory(f"locomo-{i}", db, embedder=embedder)
        items = [(anonymize(text, sample), str(dia)) for session in sample["observation"].values()
                 for facts in session.values() for text, dia in facts if isinstance(text, str)]
        memory.add_many([{"text": t, "category": "fact"} for t, _ in items])
        dia_of.append({memory_text: dia for memory_text, dia in items})
        memories.append(memory)
        print(f"\rLoCoMo conversations stored: {i + 1}/{len(samples)}", end="", file=sys.stderr)
    print(file=sys.stderr)
    cases = []
    for i, sample in enumerate(samples):
        qa = [q for q in sample["qa"] if q.get("category") in (1, 2, 3, 4) and q.get("evidence")]
        for q in qa:
            evidence = set(q["evidence"])
            query = anonymize(q["question"], sample)
            cases.append(Case("locomo", query, searched(memories[i], query, lambda t: dia_of[i].get(t) in evidence),
                              True))
        other = memories[(i + 1) % len(samples)]
        for q in qa[:50]:  # another conversation's people: nothing of this one is relevant
            query = anonymize(q["question"], sample)
            cases.append(Case("locomo-other", query, searched(other, query, lambda _: False), False))
        for text in SMALL_TALK:
            cases.append(Case("locomo-smalltalk", text, searched(memories[i], text, lambda _: False), False))
        print(f"\rLoCoMo conversations searched: {i + 1}/{len(samples)}", end="", file=sys.stderr)
    print(file=sys.stderr)
    for memory in memories:
        memory.close()
    return cases


def measure(cases: list[Case], rule: Rule) -> dict[str, float]:
    needing = [c for c in cases if c.needs]
    quiet = [c for c in cases if not c.needs]
    kept = [rule(c.hits) for c in needing]
    injected = sum(len(k) for k in kept)
    junk = [len(rule(c.hits)) for c in quiet]
    return {
        "hit": float(np.mean([any(h.relevant for h in k) for k in kept])) if needing else float("nan"),
        "precision": sum(h.relevant for k in kept for h in k) / injected if injected else float("nan"),
        "quiet": float(np.mean([n == 0 for n in junk])) if quiet else float("nan"),
        "junk": float(np.mean(junk)) if quiet else float("nan"),
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--conversations", type=int, default=10)
    args = parser.parse_args()
    embedder = LocalEmbedder()
    with tempfile.TemporaryDirectory() as tmp:
        cases = suite_cases(str(Path(tmp) / "suite.db"), embedder)
        if DATA.exists():
            cases += locomo_cases(str(Path(tmp) / "locomo.db"), embedder, args.conversations)
        else:
            print(f"{DATA} not found: the suite only", file=sys.stderr)
    sets = {name: [c for c in cases if c.source == name] for name in ("suite", "locomo", "locomo-smalltalk",
                                                                       "locomo-other")}
    print(f"suite: {sum(c.needs for c in sets['suite'])} questions, {sum(not c.needs for c in sets['suite'])} "
          f"small talk; LoCoMo: {len(sets['locomo'])} questions, {len(sets['locomo-smalltalk'])} small talk, "
          f"{len(sets['locomo-other'])} asked of other people")
    print("| rule | suite hit | suite precision | suite small talk quiet | LoCoMo hit | LoCoMo precision "
          "| LoCoMo small talk quiet (junk per message) | LoCoMo other people quiet (junk) |")
    print("|---|---|---|---|---|---|---|---|")
    for name, rule in rules().items():
        s, m = measure(sets["suite"], rule), measure(sets["locomo"], rule)
        t, o = measure(sets["locomo-smalltalk"], rule), measure(sets["locomo-other"], rule)
        print(f"| {name} | {s['hit']:.3f} | {s['precision']:.3f} | {s['quiet']:.3f} | {m['hit']:.3f} | "
              f"{m['precision']:.3f} | {t['quiet']:.3f} ({t['junk']:.2f}) | {o['quiet']:.3f} ({o['junk']:.2f}) |")
    misses = [c for c in sets["suite"] if c.needs]
    print("\nsuite questions, best relevant memory (cosine, keyword):")
    for c in misses:
        rel = [h for h in c.hits if h.relevant]
        print(f"  {c.query!r}: " + (f"{rel[0].text!r} {rel[0].cosine:.3f} {rel[0].keyword:.2f}" if rel else "not in top 5"))
    for name in ("suite", "locomo-smalltalk"):
        best = np.array([c.hits[0].cosine for c in sets[name] if not c.needs and c.hits])
        print(f"{name}: best cosine of a small-talk message, percentiles 50/90/99/max: "
              f"{np.percentile(best, [50, 90, 99, 100]).round(3).tolist()}")


if __name__ == "__main__":
    main()
