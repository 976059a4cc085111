"""Memories stored at once and embedded just after, by a background thread: nothing is lost."""

import threading

from headroom.memory import open_memory
from headroom.memory._backends import open_store

from .conftest import default_model
from .test_concurrency import run, start


def unembedded(db_path: str) -> int:
    """Rows of any user still waiting for a vector, read through a store of their own backend."""
    store = open_store(db_path, embedding_model=default_model(), embedding_dim=384)
    try:
        return store.unembedded_count()
    finally:
        store.close()


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


def test_two_handles_embedding_one_users_rows_lose_nothing(db_path, local_embedder):
    """Both workers see the same waiting rows; neither may take a row for its own near duplicate."""
    first = open_memory("alice", db_path, embedder=local_embedder)
    second = open_memory("alice", db_path, embedder=local_embedder)
    acknowledged = []
    for r in range(8):
        acknowledged += first.add_many([f"Round {r} brings item {i}" for i in range(6)], source="inline",
                                       defer_embedding=True)
        flushes = [threading.Thread(target=m.flush, args=(30,)) for m in (first, second)]
        for thread in flushes:
            thread.start()
        for thread in flushes:
            thread.join()
    assert len({m.id for m in acknowledged}) == 48
    for memory in (first, second):
        assert {m.id for m in memory.get_all()} == {m.id for m in acknowledged}
        assert len(memory.search("round item", top_k=100)) == 48
    assert unembedded(db_path) == 0
    first.close()
    second.close()


def test_two_processes_embedding_one_users_rows_lose_nothing(db_path, local_embedder):
    sides = ("left 1", "right 2")
    workers = [start("add-deferred-rounds", db_path, "alice", side, "20") for side in sides]
    for worker in workers:
        _, err = worker.communicate(timeout=300)
        assert worker.returncode == 0, err
    with open_memory("alice", db_path, embedder=local_embedder) as memory:
        texts = [m.text for m in memory.get_all()]
    expected = {f"{side} round {r} item {i}" for side in sides for r in range(20) for i in range(5)}
    assert len(texts) == len(set(texts)) == 200
    assert set(texts) == expected
    assert unembedded(db_path) == 0
