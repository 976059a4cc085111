"""The SQLite file itself: schema, migrations, permissions, FTS, model pinning, refusing bad files."""

import dataclasses
import os
import sqlite3
import stat

import numpy as np
import pytest

from headroom.memory import (
    EmbeddingModelMismatchError,
    ForeignDatabaseError,
    HashEmbedder,
    InvalidInputError,
    SQLiteStore,
    StorageError,
    default_db_path,
    open_memory,
)
from headroom.memory._backends import open_store
from headroom.memory._scoring import Scoring
from headroom.memory._sqlite import MIGRATIONS


def raw(path):
    return sqlite3.connect(path)


@pytest.fixture
def sqlite_hashed(sqlite_path):
    """A memory in an SQLite file, for what only the SQLite backend has: the file, WAL, FTS5."""
    with open_memory("alice", sqlite_path, embedder=HashEmbedder()) as memory:
        yield memory


def test_new_file_is_private_wal_and_migrated(sqlite_hashed, sqlite_path):
    sqlite_hashed.add("Plays the cello")
    assert stat.S_IMODE(os.stat(sqlite_path).st_mode) == 0o600
    db = raw(sqlite_path)
    assert db.execute("PRAGMA journal_mode").fetchone()[0] == "wal"
    applied = db.execute("SELECT version, name FROM headroom_migrations ORDER BY version").fetchall()
    assert applied == [(v, name) for v, name, _ in MIGRATIONS]
    assert dict(db.execute("SELECT key, value FROM headroom_meta")) == {
        "embedding_model": "hash-64", "embedding_dim": "64"}
    indexes = {r[0] for r in db.execute("SELECT name FROM sqlite_master WHERE type='index'")}
    assert "memories_user" in indexes


def test_reopening_applies_no_migration_twice(sqlite_path):
    for _ in range(3):
        open_memory("u", sqlite_path, embedder=HashEmbedder()).close()
    assert raw(sqlite_path).execute("SELECT COUNT(*) FROM headroom_migrations").fetchone()[0] == len(MIGRATIONS)


def test_vectors_are_little_endian_float32(sqlite_hashed, sqlite_path):
    m = sqlite_hashed.add("Rides a red bicycle")
    blob = raw(sqlite_path).execute("SELECT embedding FROM memories WHERE id = ?", (m.id,)).fetchone()[0]
    stored = np.frombuffer(blob, dtype="<f4")
    assert np.allclose(stored, HashEmbedder().embed(["Rides a red bicycle"])[0])


def test_fts_index_follows_add_update_delete_clear(sqlite_hashed, sqlite_path):
    def fts(word):
        return [r[0] for r in raw(sqlite_path).execute(
            "SELECT m.text FROM memories_fts f JOIN memories m ON m.pk = f.rowid "
            "WHERE memories_fts MATCH ? AND m.superseded_by IS NULL", (word,))]  # live rows
    m = sqlite_hashed.add("Collects vintage keyboards")
    assert fts("keyboard") == ["Collects vintage keyboards"]  # porter stemming
    sqlite_hashed.update(m.id, text="Collects vintage typewriters")
    assert fts("keyboards") == [] and fts("typewriters") == ["Collects vintage typewriters"]
    sqlite_hashed.delete(m.id)
    assert fts("typewriters") == []
    sqlite_hashed.add("Grows tomatoes")
    sqlite_hashed.clear()
    assert fts("tomatoes") == []


def test_another_embedding_model_is_refused(db_path):
    with open_memory("alice", db_path, embedder=HashEmbedder(64)) as memory:
        memory.add("Speaks Portuguese")
    with pytest.raises(EmbeddingModelMismatchError, match="hash-64"):
        open_memory("alice", db_path, embedder=HashEmbedder(32))
    with open_memory("alice", db_path, embedder=HashEmbedder(64)) as memory:
        assert [m.text for m in memory.get_all()] == ["Speaks Portuguese"]


def test_foreign_sqlite_file_is_refused_and_untouched(tmp_path):
    path = tmp_path / "app.db"
    db = raw(path)
    db.execute("CREATE TABLE orders (id INTEGER)")
    db.commit()
    db.close()
    before = path.read_bytes()
    with pytest.raises(ForeignDatabaseError):
        open_memory("alice", str(path), embedder=HashEmbedder())
    assert path.read_bytes() == before


def test_non_database_file_is_refused_and_untouched(tmp_path):
    path = tmp_path / "notes.db"
    path.write_text("my precious notes\n" * 100)
    with pytest.raises(StorageError, match="not an SQLite database"):
        open_memory("alice", str(path), embedder=HashEmbedder())
    assert path.read_text() == "my precious notes\n" * 100


def test_corrupt_database_is_a_storage_error(sqlite_path):
    with open_memory("alice", sqlite_path, embedder=HashEmbedder()) as memory:
        memory.add("Knows Rust")
    data = bytearray(open(sqlite_path, "rb").read())
    data[100:4096] = b"\xff" * (4096 - 100)  # keep the header, wreck the schema page
    for suffix in ("-wal", "-shm"):
        if os.path.exists(sqlite_path + suffix):
            os.remove(sqlite_path + suffix)
    open(sqlite_path, "wb").write(bytes(data))
    with pytest.raises(StorageError):
        open_memory("alice", sqlite_path, embedder=HashEmbedder())


def test_directory_that_cannot_be_created(tmp_path):
    blocker = tmp_path / "file"
    blocker.write_text("x")
    with pytest.raises(StorageError, match="directory"):
        open_memory("alice", str(blocker / "sub" / "memory.db"), embedder=HashEmbedder())


def test_missing_directories_are_created(tmp_path):
    path = tmp_path / "a" / "b" / "memory.db"
    with open_memory("alice", str(path), embedder=HashEmbedder()) as memory:
        memory.add("Has two kids")
    assert path.is_file()


def test_default_location_and_env_override(tmp_path, monkeypatch):
    monkeypatch.setenv("HOME", str(tmp_path))
    monkeypatch.delenv("HEADROOM_MEMORY_DB", raising=False)
    assert default_db_path() == tmp_path / ".headroom" / "memory.db"
    with open_memory("alice", embedder=HashEmbedder()) as memory:
        assert memory.stats()["db_path"] == str(tmp_path / ".headroom" / "memory.db")
    assert stat.S_IMODE(os.stat(tmp_path / ".headroom").st_mode) == 0o700
    monkeypatch.setenv("HEADROOM_MEMORY_DB", str(tmp_path / "env.db"))
    with open_memory("alice", embedder=HashEmbedder()) as memory:
        assert memory.stats()["db_path"] == str(tmp_path / "env.db")
    with open_memory("alice", str(tmp_path / "arg.db"), embedder=HashEmbedder()) as memory:
        assert memory.stats()["db_path"] == str(tmp_path / "arg.db")


def test_a_url_is_not_taken_for_a_file_name(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    with pytest.raises(InvalidInputError, match="not a URL"):
        SQLiteStore("postgresql://u@/db?host=/tmp", embedding_model="hash-64", embedding_dim=64)
    assert list(tmp_path.iterdir()) == []


def test_a_batch_that_fails_midway_stores_nothing(db_path):
    store = open_store(db_path, embedding_model="hash-64", embedding_dim=64)
    memory = open_memory("alice", embedder=HashEmbedder(), store=store)
    kept = memory.add("Has a garden")
    memory.search("garden")  # the index is loaded and must stay in step
    good = dataclasses.replace(kept, id="good", text="Has a shed")
    bad = dataclasses.replace(kept, id="bad", text="Has a pond", category="opinion")  # bypasses validation
    vectors = HashEmbedder().embed(["Has a shed", "Has a pond"])
    with pytest.raises(StorageError, match="(?i)check constraint") as failed:
        store.add([good, bad], vectors)
    assert "pond" not in str(failed.value)  # the failing row's text does not reach the log
    assert [m.id for m in memory.get_all()] == [kept.id]
    assert [m.id for m, _ in memory.search("shed", top_k=5)] == [kept.id]


def test_keyword_search_is_per_user_even_when_others_crowd_the_file(db_path):
    bob = open_memory("bob", db_path, embedder=HashEmbedder())
    bob.add_many([f"coffee note number {i}" for i in range(300)])
    alice = open_memory("alice", db_path, embedder=HashEmbedder())
    mine = alice.add("Drinks coffee with oat milk", category="preference")
    alice.add("Owns a bicycle")
    alice.scoring = bob.scoring = Scoring(vector_weight=0.0, keyword_weight=1.0, recency_weight=0.0)  # keywords
    assert [m.id for m, _ in alice.search("coffee", top_k=1)] == [mine.id]
    assert [m.text for m, _ in alice.search("coffee", top_k=5, category="fact")] == ["Owns a bicycle"]
    assert all(m.user_id == "bob" for m, _ in bob.search("coffee", top_k=10))


def test_index_cache_is_bounded_in_bytes_and_reloads_what_it_dropped(tmp_path, monkeypatch):
    from headroom.memory import HashEmbedder, InvalidInputError, SQLiteStore, open_memory

    embedder = HashEmbedder(384)
    store = SQLiteStore(str(tmp_path / "lru.db"), embedding_model=embedder.name, embedding_dim=384,
                        index_cache_bytes=500_000)
    users = [open_memory(f"user{u}", store=store, embedder=embedder) for u in range(40)]
    for u, memory in enumerate(users):
        memory.add_many([f"user {u} keeps fact {i}" for i in range(40)])
    for u, memory in enumerate(users):
        assert memory.search(f"user {u} keeps fact 7", top_k=1)[0][0].text == f"user {u} keeps fact 7"
        assert store._indexes.nbytes <= 500_000 and len(store._indexes) < 40
    assert users[0].search("user 0 keeps fact 3", top_k=1)[0][0].text == "user 0 keeps fact 3"  # reloaded
    big = open_memory("big", store=store, embedder=embedder)
    big.add_many([f"big fact {i}" for i in range(400)])  # alone over the budget: still cached while in use
    assert big.search("big fact 12", top_k=1)[0][0].text == "big fact 12"
    assert list(store._indexes) == ["big"]
    monkeypatch.setenv("HEADROOM_INDEX_CACHE_MB", "lots")
    with pytest.raises(InvalidInputError, match="HEADROOM_INDEX_CACHE_MB"):
        SQLiteStore(str(tmp_path / "other.db"), embedding_model=embedder.name, embedding_dim=384)
    store.close()
