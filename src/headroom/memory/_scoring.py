"""How search ranks memories: vector similarity and keyword (FTS5 BM25) ranks fused, plus recency.

All the weights live here. Reciprocal rank fusion adds ``weight / (RRF_K + rank)`` from each list a
memory appears in (rank 1 is best), so neither scale (cosine, BM25) has to be calibrated against the
other; a memory found by both lists beats one found by either. Measured on LoCoMo in
``bench/RESULTS.md``. The score a search returns stays the cosine similarity (what ``min_score``
thresholds are chosen on); only the order comes from the fusion.
"""

from __future__ import annotations

import math
import re
import time
from dataclasses import dataclass
from typing import Sequence

import numpy as np

from ._models import Memory
from ._store import Store

__all__ = ["Scoring", "DEFAULT_SCORING", "content_words", "STOPWORDS", "NEAR_DUPLICATE", "near_duplicate"]

#: A new memory whose embedding has at least this cosine with one the user has is that memory, not
#: a new one: rewordings ("Is vegetarian" / "Is a vegetarian" 0.988) score above it, different facts
#: below ("Prefers Python" / "Prefers Go" 0.41, "Lives in Paris" / "Lives in Tokyo" 0.52), and texts
#: whose numbers differ are never merged ("Prefers tool 4 5" / "Prefers tool 5 4" scores 0.998).
NEAR_DUPLICATE = 0.95
_NUMBER = re.compile(r"\d+(?:[.,]\d+)*")

STOPWORDS = frozenset(
    "a about above after again against all am an and any are as at be because been before being below "
    "between both but by can could did do does doing down during each few for from further had has have "
    "having he her here hers herself him himself his how i if in into is it its itself just me more most "
    "my myself no nor not now of off on once only or other our ours ourselves out over own same she "
    "should so some such than that the their theirs them themselves then there these they this those "
    "through to too under until up very was we were what when where which while who whom why will with "
    "would you your yours yourself yourselves s t don didn doesn isn wasn weren ll ve re d m".split()
)
_WORD = re.compile(r"[^\W_]+", re.UNICODE)


def content_words(text: str, limit: int = 32) -> list[str]:
    """The distinct words of ``text`` a keyword search looks for: lower-cased, stop words dropped."""
    words: list[str] = []
    for word in _WORD.findall(text.lower()):
        if len(word) > 1 and word not in STOPWORDS and word not in words:
            words.append(word)
    return words[:limit]


@dataclass(frozen=True)
class Scoring:
    """Weights of the fused ranking. ``keyword_weight=0`` gives pure vector search."""

    vector_weight: float = 1.0
    keyword_weight: float = 1.5
    rrf_k: float = 5.0
    #: A small boost for recent memories: ``recency_weight * 0.5 ** (age_days / half_life_days)``.
    recency_weight: float = 0.002
    half_life_days: float = 30.0
    #: How many candidates each list contributes before fusion.
    candidates: int = 50
    #: A query word found in more than this share of the file's memories, and in more than
    #: ``common_word_rows`` of them, is left out of the keyword query (the rarest word is always
    #: kept). Such a word ranks little under BM25 (its IDF is low) but makes the query score every
    #: row it matches: at 10k LoCoMo turns, leaving out words above 5% took the FTS5 query from 1.75
    #: to 0.71 ms (bench/RESULTS.md has its effect on recall). Below a few hundred rows a word
    #: costs little, and in a small store every word is "common".
    common_word_share: float = 0.05
    common_word_rows: int = 200

    def keywords(self, store: Store, text: str) -> list[str]:
        """The words of ``text`` to search for in ``store``'s full-text index."""
        words = content_words(text)
        if len(words) < 2 or self.common_word_share >= 1:
            return words
        counts, total = store.word_counts(words)
        most = max(self.common_word_share * total, self.common_word_rows)
        kept = [w for w, n in zip(words, counts) if n <= most]
        return kept or [min(zip(counts, words))[1]]

    def fuse(self, vector_ids: list[str], keyword_ids: list[str], ages_days: dict[str, float]) -> list[str]:
        """Ids best first."""
        score: dict[str, float] = {}
        for weight, ranked in ((self.vector_weight, vector_ids), (self.keyword_weight, keyword_ids)):
            if weight:
                for rank, memory_id in enumerate(ranked, 1):
                    score[memory_id] = score.get(memory_id, 0.0) + weight / (self.rrf_k + rank)
        if self.recency_weight:
            for memory_id in score:
                age = max(ages_days.get(memory_id, 0.0), 0.0)
                score[memory_id] += self.recency_weight * math.pow(0.5, age / self.half_life_days)
        return sorted(score, key=lambda memory_id: -score[memory_id])

    def rank(self, vector_hits: Sequence[tuple[Memory, float]], keyword_hits: Sequence[tuple[Memory, float]],
             top_k: int) -> list[tuple[Memory, float]]:
        """The fused top ``top_k`` of two candidate lists of ``(memory, cosine)``, best first."""
        found = {m.id: (m, cosine) for m, cosine in [*keyword_hits, *vector_hits]}
        now = time.time()
        ages = {i: (now - m.created_at.timestamp()) / 86400 for i, (m, _) in found.items()}
        order = self.fuse([m.id for m, _ in vector_hits], [m.id for m, _ in keyword_hits], ages)
        return [found[i] for i in order[:top_k]]


DEFAULT_SCORING = Scoring()


def near_duplicate(store: Store, user_id: str, text: str, vector: np.ndarray) -> Memory | None:
    """The user's memory that says the same as ``text``: cosine >= ``NEAR_DUPLICATE`` and the same numbers."""
    best = store.nearest(user_id, vector, NEAR_DUPLICATE)
    if best is not None and _NUMBER.findall(best[0].text) == _NUMBER.findall(text):
        return best[0]
    return None
