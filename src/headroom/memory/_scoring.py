"""How search ranks memories: vector similarity plus keyword (BM25) relevance, plus recency.

All the weights live here. SQLite's FTS5 index (porter stemmer) finds which memories hold a query
word; ``bm25`` below scores them with the user's own statistics, in the same pass as the vectors.
A memory's rank is its cosine plus a weighted keyword score (BM25 scaled so the query's best match
is 1, when that match is strong: ``scale_keywords``), measured on LoCoMo and on paraphrased
questions in ``bench/RESULTS.md``. The score a search returns stays the cosine
similarity (what ``min_score`` thresholds are chosen on); only the order uses the keywords.
"""

from __future__ import annotations

import math
import re
import time
from dataclasses import dataclass
from functools import lru_cache
from typing import Callable, Sequence

import numpy as np

from ._models import Memory

__all__ = ["Scoring", "DEFAULT_SCORING", "content_words", "token_count", "bm25", "scale_keywords", "STOPWORDS",
           "NEAR_DUPLICATE", "near_duplicate", "FULL_KEYWORD_MATCH", "rare_words"]

#: A new memory whose embedding has at least this cosine with one the user has is that memory, not
#: a new one: rewordings ("Is vegetarian" / "Is a vegetarian" 0.988) score above it, different facts
#: below ("Prefers Python" / "Prefers Go" 0.41, "Lives in Paris" / "Lives in Tokyo" 0.52). Texts
#: whose numbers differ ("Prefers tool 4 5" / "Prefers tool 5 4" scores 0.998), or whose shared
#: words come in another order ("Prefers Rust over Go" / "Prefers Go over Rust" 0.977), are never
#: merged: the embedding barely sees either, and either can turn a fact around.
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


def token_count(text: str) -> int:
    """Words in ``text`` as the full-text index counts them (runs of letters and digits)."""
    return len(_WORD.findall(text))


#: BM25's term-frequency saturation and length normalization: k1 as usual (FTS5, Lucene); b below
#: the usual 0.75, because a long memory is not a padded one (LoCoMo recall@5 0.659 -> 0.665).
BM25_K1 = 1.2
BM25_B = 0.5
#: A word found in more than this share of a user's memories, and in more than ``COMMON_WORD_ROWS``
#: of them, is not a keyword for that user: a memory holding only such words is no keyword hit. It
#: would match a large part of them equally ("use" stems to "us", in every "let us ..."), and as
#: the query's best keyword match each would get the full keyword weight. Beside a real keyword it
#: still adds its (small) BM25 weight.
COMMON_WORD_SHARE = 0.3
COMMON_WORD_ROWS = 10


def bm25(rows_per_word: Sequence[np.ndarray], lengths: np.ndarray) -> np.ndarray:
    """BM25 of every memory of one user: ``rows_per_word`` holds, for each query word, the rows
    whose text has it; ``lengths`` the word count of every row.

    Statistics are the user's own (a word in half of this user's memories weighs little, however
    rare it is in the file), and a word counts once per memory: memories are a sentence or two.
    """
    n = len(lengths)
    scores = np.zeros(n, dtype=np.float32)
    average = float(lengths.mean()) if n else 1.0
    most = max(COMMON_WORD_SHARE * n, COMMON_WORD_ROWS)
    keyword = np.zeros(n, dtype=bool)
    for rows in rows_per_word:
        if len(rows):
            keyword[rows] |= len(rows) <= most
            idf = math.log(1.0 + (n - len(rows) + 0.5) / (len(rows) + 0.5))
            scores[rows] += idf * (BM25_K1 + 1) / (1 + BM25_K1 * (1 - BM25_B + BM25_B * lengths[rows] / average))
    scores[~keyword] = 0.0
    return scores


#: The BM25 at which the best keyword match gets the full keyword weight; a weaker best match gets
#: its share of it. About two rare words of a few hundred memories, or one word in one memory of
#: thousands. A word shared with one of 20 memories scores about 2.6: in a small store that is weak
#: evidence, and at full weight a common word ("new", "project") put the memory that merely shared
#: it above a paraphrase's (bench/RESULTS.md, "Paraphrased questions", session 14).
FULL_KEYWORD_MATCH = 8.0


def scale_keywords(scores: np.ndarray, rare_match: bool = False) -> np.ndarray | None:
    """BM25 scores as keyword scores from 0 to 1 (None when nothing matched): over the best of
    them, or over ``FULL_KEYWORD_MATCH`` when the best is weaker, unless ``rare_match`` (some
    memory holds a word that ``rare_words`` flags: a name or a term like "Zorblax" is strong
    evidence in a store of three memories too)."""
    best = float(scores.max()) if len(scores) else 0.0
    if best <= 0:
        return None
    return scores / np.float32(best if rare_match else max(best, FULL_KEYWORD_MATCH))


def rare_words(words: Sequence[str]) -> list[bool]:
    """For each word, whether it is missing from the local embedding model's vocabulary: the ~20,000
    whole words of its WordPiece vocabulary are common English, so a word it has to split ("zorblax",
    "2023", a typo) is rare in any store, however small. Without the local model every word counts as
    rare, which keeps the keyword scaling as it was before ``FULL_KEYWORD_MATCH``."""
    vocabulary = _vocabulary()
    return [vocabulary is None or word not in vocabulary for word in words]


@lru_cache(maxsize=1)
def _vocabulary() -> frozenset[str] | None:
    from ._errors import EmbedderUnavailableError
    from ._local_model import model_dir

    try:
        return frozenset((model_dir() / "vocab.txt").read_text(encoding="utf-8").split())
    except (EmbedderUnavailableError, OSError):  # no local model (OpenAI embeddings only): no way to tell
        return None


@dataclass(frozen=True)
class Scoring:
    """Weights of the ranking: ``vector_weight * cosine + keyword_weight * keyword + recency``,
    where ``keyword`` is a memory's BM25 for the query's words over the best such score, or over
    ``FULL_KEYWORD_MATCH`` if that is larger and no rare word matched (0 to 1: ``scale_keywords``).

    ``keyword_weight=0`` gives pure vector search. Adding scores (rather than fusing ranks) keeps how
    strong each match is: a strong best keyword match gets the full keyword weight, a memory sharing
    one common word with the question a little, and a paraphrase the words miss keeps its cosine.
    """

    vector_weight: float = 1.0
    keyword_weight: float = 0.4
    #: A small boost for recent memories: ``recency_weight * 0.5 ** (age_days / half_life_days)``.
    recency_weight: float = 0.002
    half_life_days: float = 30.0

    def combine(self, cosines: np.ndarray, keywords: np.ndarray | None, created: np.ndarray) -> np.ndarray:
        """The rank score of every memory (higher is better); ``created`` is POSIX seconds."""
        score = self.vector_weight * cosines
        if keywords is not None and self.keyword_weight:
            score = score + self.keyword_weight * keywords
        if self.recency_weight:
            age_days = np.maximum(time.time() - created, 0.0) / 86400
            score = score + self.recency_weight * np.exp2(-age_days / self.half_life_days)
        return score


DEFAULT_SCORING = Scoring()


def near_duplicate(nearest: Callable[[np.ndarray, float], "tuple[Memory, float] | None"], text: str,
                   vector: np.ndarray) -> Memory | None:
    """The memory that says the same as ``text``, by the one rule every write path uses: the closest
    memory (``nearest(vector, NEAR_DUPLICATE)``, cosine >= ``NEAR_DUPLICATE``) with the same numbers,
    the same names and its shared words in the same order."""
    best = nearest(vector, NEAR_DUPLICATE)
    if best is None:
        return None
    other = best[0].text
    if _NUMBER.findall(other) == _NUMBER.findall(text) and _same_names(other, text) and _same_order(other, text):
        return best[0]
    return None


_TOKEN = re.compile(r"[A-Za-z][A-Za-z0-9'-]*")


def _same_names(a: str, b: str) -> bool:
    """Whether each capitalised word of one text (not its first: a name, a place, a month) is a
    word of the other too. "Training for the Leeds half marathon in April" and "... in May" are
    close enough in meaning to merge, but one value took the other's place."""
    tokens_a, tokens_b = _TOKEN.findall(a), _TOKEN.findall(b)
    words_a, words_b = {t.lower() for t in tokens_a}, {t.lower() for t in tokens_b}
    names_a = {t.lower() for t in tokens_a[1:] if t[0].isupper() and t.lower() not in STOPWORDS}
    names_b = {t.lower() for t in tokens_b[1:] if t[0].isupper() and t.lower() not in STOPWORDS}
    return names_a <= words_b and names_b <= words_a


def _same_order(a: str, b: str) -> bool:
    """Whether the content words two texts share come in the same order in both."""
    words_a, words_b = content_words(a, limit=64), content_words(b, limit=64)
    shared = set(words_a) & set(words_b)
    return [w for w in words_a if w in shared] == [w for w in words_b if w in shared]
