"""The in-process vector index: top-k search, scores of named ids, and the signature-filtered nearest match."""

from datetime import datetime, timezone

import numpy as np
import pytest

from headroom.memory._index import SIGNATURE_BITS, VectorIndex, max_distance, signatures
from headroom.memory._models import Memory
from headroom.memory._scoring import Scoring, bm25

NOW = datetime(2026, 1, 1, tzinfo=timezone.utc)
DIM = 384


def unit(rows: np.ndarray) -> np.ndarray:
    return (rows / np.linalg.norm(rows, axis=-1, keepdims=True)).astype(np.float32)


def at_cosine(base: np.ndarray, cosine: float, rng: np.random.Generator) -> np.ndarray:
    """A unit vector with exactly ``cosine`` to ``base`` (a random direction orthogonal to it)."""
    other = rng.standard_normal(base.shape[0])
    other -= (other @ base) * base
    other /= np.linalg.norm(other)
    return (cosine * base + np.sqrt(1 - cosine**2) * other).astype(np.float32)


def filled(n: int, rng: np.random.Generator) -> tuple[VectorIndex, np.ndarray]:
    vectors = unit(rng.standard_normal((n, DIM)))
    index = VectorIndex(DIM, 0)
    index.add([Memory(f"{i:032x}", "u", f"memory {i}", "fact", NOW, NOW) for i in range(n)], vectors,
              [1000 + i for i in range(n)])
    return index, vectors


def test_search_matches_brute_force():
    rng = np.random.default_rng(1)
    index, vectors = filled(500, rng)
    query = unit(rng.standard_normal(DIM))
    scores = vectors @ query
    top = index.search(query, 5)
    assert [int(m.id, 16) for m, _ in top] == list(np.argsort(-scores)[:5])
    assert [s for _, s in top] == pytest.approx(sorted(scores, reverse=True)[:5], abs=1e-5)


def test_bm25_uses_the_users_statistics_and_ignores_only_common_matches():
    lengths = np.array([3, 2, 5, 2] + [3] * 16, dtype=np.float32)
    rare, common = np.array([0, 3]), np.array([1, 2, 3])
    scores = bm25([rare, common], lengths)
    assert list(np.argsort(-scores)[:4]) == [3, 0, 1, 2]  # both words; rare; common, the shorter first
    assert (scores[4:] == 0).all()
    everywhere = np.arange(4, 20)  # in 80% of the memories: no keyword
    assert (bm25([everywhere], lengths) == 0).all()
    with_rare = bm25([everywhere, np.array([0, 4])], lengths)
    assert with_rare[4] > with_rare[0] > 0 and with_rare[5] == 0  # it still counts beside a real keyword


KEYWORDS_ONLY = Scoring(vector_weight=0.0, keyword_weight=1.0, recency_weight=0.0)


def test_search_ranks_every_row_by_the_scoring_and_returns_cosines():
    texts = ["rare word here", "common word", "common word again and again", "common rare"] + ["filler text here"] * 16
    index = VectorIndex(3, 0)
    vectors = unit(np.eye(3, dtype=np.float32)[[0, 1, 2, 0] + [1, 2] * 8] + 0.1)
    index.add([Memory(f"{i:032x}", "u", t, "fact", NOW, NOW) for i, t in enumerate(texts)], vectors,
              list(range(10, 30)))
    query = unit(np.array([0.0, 1.0, 0.0], dtype=np.float32))
    # "rare" is in rows 0 and 3, "common" in 1, 2 and 3; key 99 is not this index's (another user, say).
    matches = [np.array([10, 13, 99]), np.array([11, 12, 13])]
    top = index.search(query, 4, matches=matches, scoring=KEYWORDS_ONLY)
    assert [m.text for m, _ in top] == ["common rare", "rare word here", "common word", "common word again and again"]
    assert top[0][1] == pytest.approx(float(vectors[3] @ query), abs=1e-6)  # the cosine, whatever the rank
    by_meaning = index.search(query, 1, matches=matches)  # no scoring: cosine alone
    assert by_meaning[0][0].text in ("common word", "filler text here")
    mixed = index.search(query, 1, matches=matches, scoring=Scoring(recency_weight=0.0))
    assert mixed[0][0].text == "common word"  # close in meaning and holding a keyword
    assert index.search(query, 5, category="preference", matches=matches, scoring=KEYWORDS_ONLY) == []


@pytest.mark.parametrize("deleted", [False, True])
def test_a_words_keys_find_their_rows_before_and_after_a_delete_moves_one(deleted):
    """Keys map to rows by binary search while they ascend with the rows, and by lookup once a
    delete has moved the last row into a hole; keys of other users' rows are dropped either way."""
    rng = np.random.default_rng(4)
    index, _ = filled(50, rng)
    index.add([Memory(f"{99:032x}", "u", "late", "fact", NOW, NOW)], unit(rng.standard_normal((1, DIM))), [5000])
    if deleted:
        index.remove(f"{3:032x}")  # row 50 (key 5000) moves into row 3
    keys = np.array([999, 1000, 1004, 1049, 1050, 5000, 7000])  # 999, 1050 and 7000 are not this index's
    rows = index._rows(keys)
    assert sorted(index._keys[r] for r in rows) == [1000, 1004, 1049, 5000]
    assert (index._ascending_keys is False) == deleted
    assert len(index._rows(np.array([], dtype=np.int64))) == 0


def test_signatures_are_the_same_in_every_index():
    vectors = unit(np.random.default_rng(2).standard_normal((3, DIM)))
    assert signatures(vectors).shape == (SIGNATURE_BITS // 64, 3)
    assert np.array_equal(signatures(vectors), signatures(vectors.copy()))


def test_max_distance_grows_as_the_threshold_falls():
    assert max_distance(1.0) == 0
    assert 0 < max_distance(0.99) < max_distance(0.95) < max_distance(0.8) < SIGNATURE_BITS


@pytest.mark.parametrize("cosine", [0.95001, 0.96, 0.98, 1.0])  # 0.95 itself rounds either way in float32
def test_nearest_never_misses_a_planted_near_duplicate(cosine):
    rng = np.random.default_rng(int(cosine * 100))
    index, vectors = filled(2000, rng)
    for row in rng.choice(2000, 300, replace=False):
        query = at_cosine(vectors[row], cosine, rng)
        found = index.nearest(query, 0.95)
        best = int(np.argmax(vectors @ query))
        assert found is not None and int(found[0].id, 16) == best
        assert found[1] == pytest.approx(float(vectors[best] @ query), abs=1e-5)


def test_nearest_finds_nothing_below_the_threshold():
    rng = np.random.default_rng(3)
    index, vectors = filled(2000, rng)
    for row in range(50):
        assert index.nearest(at_cosine(vectors[row], 0.93, rng), 0.95) is None
    assert index.nearest(unit(rng.standard_normal(DIM)), 0.95) is None


def test_nearest_follows_replace_and_remove():
    rng = np.random.default_rng(4)
    index, vectors = filled(100, rng)
    moved = unit(rng.standard_normal(DIM))
    memory = index.search(vectors[5], 1)[0][0]
    index.replace(memory, moved, 1005)
    assert index.nearest(vectors[5], 0.95) is None
    assert index.nearest(moved, 0.95)[0].id == memory.id
    index.remove(f"{0:032x}")  # the last row moves into row 0: its signature must move with it
    assert index.nearest(vectors[99], 0.95)[0].id == f"{99:032x}"
    assert index.nearest(vectors[0], 0.95) is None
    assert index.search(vectors[99], 1, matches=[np.array([1000, 1099])], scoring=KEYWORDS_ONLY)[0][0].id == f"{99:032x}"
