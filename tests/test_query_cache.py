"""A query searched twice within a minute is embedded once; other texts, embedders and old entries are not shared."""

import numpy as np

from headroom.memory import HashEmbedder, _query_cache, open_memory


class Counting(HashEmbedder):
    """The deterministic embedder, counting the texts it embeds (a unit test of the cache's logic)."""

    def __init__(self):
        super().__init__()
        self.texts = []

    def embed(self, texts):
        self.texts.extend(texts)
        return super().embed(texts)


def test_a_repeated_query_is_embedded_once_per_embedder(tmp_path, monkeypatch):
    embedder, other = Counting(), Counting()
    memory = open_memory("alice", str(tmp_path / "m.db"), embedder=embedder)
    memory.add("Lives in Oslo")
    embedder.texts.clear()
    first = memory.search("Where do I live?")
    assert memory.search("Where do I live?") == first and embedder.texts == ["Where do I live?"]
    memory.search("Where do I work?")
    assert embedder.texts == ["Where do I live?", "Where do I work?"]
    vector = _query_cache.embed_query(other, "Where do I live?")  # another embedder: its own cache
    assert other.texts == ["Where do I live?"] and not vector.flags.writeable
    clock = [1000.0]
    monkeypatch.setattr(_query_cache.time, "monotonic", lambda: clock[0])
    _query_cache.embed_query(other, "x")
    clock[0] += _query_cache.TTL_SECONDS + 1
    _query_cache.embed_query(other, "x")  # too old: embedded again
    assert other.texts.count("x") == 2
    memory.close()


def test_the_cache_is_bounded(monkeypatch):
    monkeypatch.setattr(_query_cache, "SIZE", 3)
    embedder = Counting()
    for text in ("a", "b", "c", "d", "a"):
        _query_cache.embed_query(embedder, text)
    assert embedder.texts == ["a", "b", "c", "d", "a"]  # "a" was the oldest of four: dropped
    assert np.array_equal(_query_cache.embed_query(embedder, "d"), embedder.embed(["d"])[0])
