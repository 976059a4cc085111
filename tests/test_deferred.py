"""Memories stored at once and embedded just after, by a background thread: nothing is lost."""

import sqlite3

from headroom.memory import open_memory

from .test_concurrency import run


def unembedded(db_path: str) -> int:
    return sqlite3.connect(db_path).execute("SELECT COUNT(*) FROM memories WHERE embedding IS NULL").fetchone()[0]


def test_deferred_memories_are_listed_at_once_and_found_by_the_next_search(alice):
    stored = alice.add_many(["Prefers Python for backend work", "Uses PostgreSQL"], source="inline",
                            defer_embedding=True)
    assert {m.text for m in alice.get_all()} == {"Prefers Python for backend work", "Uses PostgreSQL"}
    assert alice.search("which database", top_k=1)[0][0].id == stored[1].id  # read your own writes
    assert alice.flush(timeout=10) is True
    assert unembedded(alice.store.path) == 0


def test_a_crash_leaves_rows_the_next_process_embeds(db_path, local_embedder):
    run("add-deferred-crash", db_path, "alice", "Keeps bees", "Speaks Finnish")
    assert unembedded(db_path) == 2  # stored, never embedded: the process died first
    with open_memory("alice", db_path, embedder=local_embedder) as memory:
        assert memory.flush(timeout=30) is True
        assert memory.search("which language do I speak", top_k=1)[0][0].text == "Speaks Finnish"
    assert unembedded(db_path) == 0


def test_normal_exit_embeds_what_waits(db_path):
    run("add-deferred", db_path, "alice", "Climbs on weekends")
    assert unembedded(db_path) == 0


def test_close_embeds_what_waits(db_path, local_embedder):
    memory = open_memory("alice", db_path, embedder=local_embedder)
    memory.add_many([f"Deferred fact {i}" for i in range(100)], defer_embedding=True)
    memory.close()
    assert unembedded(db_path) == 0
