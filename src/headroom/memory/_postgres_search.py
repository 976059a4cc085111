"""Users too large to hold in a process: their searches run in PostgreSQL, on their own HNSW graph.

A user with more than ``PostgresStore.memory_rows`` searchable memories is never loaded into a
``VectorIndex`` (at a million memories that would be 1.5 GB per process and a long read). Instead
``DatabaseIndex`` stands in for the index, and answers in the database:

- ``nearest`` (the near-duplicate check of every write) asks for the closest memory.
- ``ranked_words`` gathers candidates, the ``CANDIDATES`` nearest by cosine (with pgvector's
  iterative scan in strict order, so a category filter cannot starve the result) plus every memory
  holding a rare query word (at most ``RARE_ROWS``: a common word ranks little anyway), with their
  cosines computed in the database, and ranks them with ``_index.rank``, the rule a small user's
  ``VectorIndex`` ranks by. Keyword statistics are the candidates' (a small user's are all its
  memories).

The nearest come from the user's own HNSW graph (a partial index, ``_postgres_graphs``), or, until
it is built, from an exact scan of the user's rows.

Writes patch nothing here: the rows are in the table already.
"""

from __future__ import annotations

import hashlib
import re
from typing import TYPE_CHECKING, Sequence

import numpy as np

from ._index import VectorIndex, category_codes, rank
from ._models import Memory
from ._rows import COLUMNS, SEARCHABLE, row_to_memory
from ._scoring import Scoring, rare_words, token_count

if TYPE_CHECKING:
    from ._postgres import PostgresStore

__all__ = ["DatabaseIndex", "count_searchable", "graph_name", "CANDIDATES", "RARE_ROWS"]

#: Nearest memories by cosine that a search of a large user ranks (more when ``top_k`` is larger).
CANDIDATES = 100
#: A query word found in more of the user's memories than this brings none of its own candidates.
RARE_ROWS = 100
#: A word the table's statistics count in more rows than this (of all users) is not looked up.
COMMON_ROWS = 5_000

_LEXEME = re.compile(r"'((?:[^']|'')*)'")


def graph_name(user_id: str) -> str:
    """The name of the index that is ``user_id``'s own graph (any user id makes a valid name)."""
    return "memories_vectors_" + hashlib.sha256(user_id.encode()).hexdigest()[:20]


class DatabaseIndex(VectorIndex):
    """The stand-in for a large user's ``VectorIndex`` (see the module doc): it holds no rows, and
    its searches are ``ranked_words`` (the words, not their matches: those may be most of a million)."""

    def __init__(self, store: PostgresStore, user_id: str, version: int, rows: int) -> None:
        super().__init__(store.embedding_dim, version)
        self.store = store
        self.user_id = user_id
        self.rows = rows  # searchable memories when the user was last counted

    def __len__(self) -> int:
        return self.rows

    @property
    def nbytes(self) -> int:
        return 0  # holds nothing: never pushes a small user's index out of the cache

    def add(self, memories: Sequence[Memory], vectors: np.ndarray, keys: Sequence[int]) -> None:
        pass

    def replace(self, memory: Memory, vector: np.ndarray | None, key: int) -> None:
        pass

    def remove(self, memory_id: str) -> None:
        pass

    def nearest(self, query: np.ndarray, min_score: float) -> tuple[Memory, float] | None:
        vector = self.store._encode(query)
        rows = self.store.query(
            f"SELECT {COLUMNS}, 1 - (embedding <=> ?) FROM memories WHERE {SEARCHABLE} ORDER BY embedding <=> ? LIMIT 1",
            (vector, self.user_id, vector))
        if not rows or np.float32(rows[0][-1]) < np.float32(min_score):
            return None
        return row_to_memory(rows[0][:-1]), float(rows[0][-1])

    def ranked(self, query: np.ndarray, top_k: int, category: str | None = None, matches: Sequence[np.ndarray] = (),
               scoring: Scoring | None = None, rare: Sequence[bool] = ()) -> list[tuple[Memory, float, float]]:
        raise TypeError("a large user's search takes its words: ranked_words")

    def ranked_words(self, query: np.ndarray, top_k: int, category: str | None, words: Sequence[str],
                     scoring: Scoring | None) -> list[tuple[Memory, float, float]]:
        if top_k <= 0:
            return []
        vector = self.store._encode(query)
        only = " AND category = ?" if category is not None else ""
        kind = (category,) if category is not None else ()
        # The database computes the cosines: a candidate's vector never leaves it.
        found = {row[-2]: row for row in self.store.query(
            f"SELECT {COLUMNS}, pk, 1 - (embedding <=> ?) FROM memories WHERE {SEARCHABLE}{only} "
            "ORDER BY embedding <=> ? LIMIT ?", (vector, self.user_id, *kind, vector, max(CANDIDATES, 4 * top_k)))}
        matches = self._word_rows(words)  # None for a common word
        rare = {int(k) for keys in matches if keys is not None for k in keys} - set(found)
        if rare:
            found.update((row[-2], row) for row in self.store.query(
                f"SELECT {COLUMNS}, pk, 1 - (embedding <=> ?) FROM memories WHERE pk = ANY(?)", (vector, sorted(rare))))
        if not found:
            return []
        common = [i for i, keys in enumerate(matches) if keys is None]
        if common:
            for i, keys_of_word in zip(common, self._holding(list(found), [words[i] for i in common])):
                matches[i] = keys_of_word
        position = {key: i for i, key in enumerate(found)}
        rows = list(found.values())
        memories = [row_to_memory(r[:-2]) for r in rows]
        per_word = [np.asarray([position[k] for k in keys if k in position], dtype=np.intp) for keys in matches
                    if keys is not None]
        flags = [flag for flag, keys in zip(rare_words(words), matches) if keys is not None]
        ranked = rank(np.asarray([r[-1] for r in rows], dtype=np.float32), per_word or None,
                      np.asarray([token_count(m.text) for m in memories], dtype=np.float32), category_codes(memories),
                      np.asarray([m.created_at.timestamp() for m in memories]), top_k, category, scoring, flags)
        return [(memories[i], cosine, keyword) for i, cosine, keyword in ranked]

    def _word_rows(self, words: Sequence[str]) -> list[list[int] | None]:
        """For each word, the keys of the user's memories holding it, or None for a common word:
        one the table's statistics count in more than ``COMMON_ROWS`` rows (any user's), or one
        this user has in more than ``RARE_ROWS`` memories. Looking up a common word would read
        its whole posting list (or scan the table); only rare ones are looked up."""
        if not words:
            return []
        (stems,) = self.store.query("SELECT " + ", ".join(["plainto_tsquery('english', ?)::text"] * len(words)),
                                    tuple(words))
        common = self.store.common_lexemes(COMMON_ROWS)
        result: list[list[int] | None] = []
        rare: list[int] = []
        for i, stem in enumerate(stems):
            lexemes = _LEXEME.findall(stem or "")
            if not lexemes:
                result.append([])  # a stop word: in no memory's words
            elif any(lexeme in common for lexeme in lexemes):
                result.append(None)
            else:
                result.append([])
                rare.append(i)
        if rare:
            one = (f"(SELECT array_agg(pk) FROM (SELECT pk FROM memories WHERE {SEARCHABLE} "
                   "AND words @@ plainto_tsquery('english', ?) LIMIT ?) AS rows_of_word)")
            (row,) = self.store.query("SELECT " + ", ".join([one] * len(rare)),
                                      tuple(v for i in rare for v in (self.user_id, words[i], RARE_ROWS + 1)))
            for i, keys in zip(rare, row):
                result[i] = None if keys is not None and len(keys) > RARE_ROWS else keys or []
        return result

    def _holding(self, keys: list[int], words: Sequence[str]) -> list[list[int]]:
        """For each common word, which of the candidates hold it (one statement)."""
        one = "(SELECT array_agg(pk) FROM memories WHERE pk = ANY(?) AND words @@ plainto_tsquery('english', ?))"
        (row,) = self.store.query("SELECT " + ", ".join([one] * len(words)), tuple(v for w in words for v in (keys, w)))
        return [found or [] for found in row]


def count_searchable(store: PostgresStore, user_id: str, limit: int) -> int:
    """The user's searchable memories, counted up to ``limit + 1`` (enough to tell large from small)."""
    rows = store.query(f"SELECT count(*) FROM (SELECT 1 FROM memories WHERE {SEARCHABLE} LIMIT ?) AS found",
                       (user_id, limit + 1))
    return int(rows[0][0])
