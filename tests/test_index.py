"""The in-process vector index: top-k search, scores of named ids, and the signature-filtered nearest match."""

from datetime import datetime, timezone

import numpy as np
import pytest

from headroom.memory._index import SIGNATURE_BITS, VectorIndex, max_distance, signatures
from headroom.memory._models import Memory

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
    by_meaning, by_words = index.search(query, 5)
    assert [int(c.memory.id, 16) for c in by_meaning] == list(np.argsort(-scores)[:5])
    assert [c.cosine for c in by_meaning] == pytest.approx(sorted(scores, reverse=True)[:5], abs=1e-5)
    assert by_words == []


def test_keyword_ranking_is_bm25_over_the_users_rows_with_cosines():
    texts = ["rare word here", "common word", "common word again and again", "common rare"] + ["filler text here"] * 16
    index = VectorIndex(3, 0)
    vectors = unit(np.eye(3, dtype=np.float32)[[0, 1, 2, 0] + [1, 2] * 8] + 0.1)
    memories = [Memory(f"{i:032x}", "u", t, "fact", NOW, NOW) for i, t in enumerate(texts)]
    index.add(memories, vectors, list(range(10, 30)))
    query = unit(np.array([1.0, 0.0, 0.0], dtype=np.float32))
    # "rare" is in rows 0 and 3, "common" in 1, 2 and 3; key 99 is not this index's (another user, say).
    _, by_words = index.search(query, 5, matches=[np.array([10, 13, 99]), np.array([11, 12, 13])])
    assert [c.memory.text for c in by_words] == ["common rare", "rare word here", "common word",
                                             "common word again and again"]
    assert by_words[0].cosine == pytest.approx(float(vectors[3] @ query), abs=1e-6)
    assert by_words[0].keyword == 1.0 and 0 < by_words[-1].keyword < by_words[-2].keyword < 1.0
    _, only_long = index.search(query, 5, matches=[np.array([11, 12])])
    assert [c.memory.text for c in only_long] == ["common word", "common word again and again"]  # shorter first
    _, none = index.search(query, 5, category="preference", matches=[np.array([10, 13])])
    assert none == []
    # A word in more than COMMON_WORD_SHARE of the user's memories is no keyword: it would rank them all.
    _, everywhere = index.search(query, 5, matches=[np.arange(10, 30)])
    assert everywhere == []
    # Beside a real keyword it still counts: "rare" rows, the one with "filler" too first.
    _, both = index.search(query, 5, matches=[np.arange(14, 30), np.array([10, 14])])
    assert [c.memory.text for c in both] == ["filler text here", "rare word here"]


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
    memory = index.search(vectors[5], 1)[0][0].memory
    index.replace(memory, moved, 1005)
    assert index.nearest(vectors[5], 0.95) is None
    assert index.nearest(moved, 0.95)[0].id == memory.id
    index.remove(f"{0:032x}")  # the last row moves into row 0: its signature must move with it
    assert index.nearest(vectors[99], 0.95)[0].id == f"{99:032x}"
    assert index.nearest(vectors[0], 0.95) is None
    assert [c.memory.id for c in index.search(vectors[99], 3, matches=[np.array([1000, 1099])])[1]] == [f"{99:032x}"]
