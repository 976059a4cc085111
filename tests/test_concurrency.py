"""Several processes and threads on one file, with the real local model."""

import json
import subprocess
import sys
import threading
import time
from pathlib import Path

from headroom.memory import open_memory

WORKER = str(Path(__file__).with_name("worker.py"))


def run(*args: str) -> str:
    done = subprocess.run([sys.executable, WORKER, *args], capture_output=True, text=True, timeout=300)
    assert done.returncode == 0, done.stderr
    return done.stdout


def start(*args: str) -> subprocess.Popen:
    return subprocess.Popen([sys.executable, WORKER, *args], stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)


def test_child_writes_parent_reads_and_the_reverse(db_path, local_embedder):
    run("add", db_path, "alice", "Writes Haskell on weekends")
    with open_memory("alice", db_path, embedder=local_embedder) as memory:
        assert [m.text for m, _ in memory.search("functional programming hobby")] == ["Writes Haskell on weekends"]
        memory.add("Runs marathons")
    found = json.loads(run("search", db_path, "alice", "endurance sport", "1"))
    assert found[0][0] == "Runs marathons"


def test_another_process_add_and_clear_are_seen_by_the_next_search(db_path, local_embedder):
    with open_memory("alice", db_path, embedder=local_embedder) as memory:
        memory.add("Likes jazz")
        assert len(memory.search("music")) == 1  # index now cached in this process
        run("add", db_path, "alice", "Plays the saxophone")
        assert {m.text for m, _ in memory.search("music")} == {"Likes jazz", "Plays the saxophone"}
        memory.add("Owns a vinyl collection")  # our own write after a foreign one
        assert len(memory.search("music", top_k=10)) == 3
        assert run("clear", db_path, "alice").strip() == "3"
        assert memory.search("music") == []
        assert memory.stats()["total_chunks"] == 0


def test_two_processes_adding_500_each(db_path, local_embedder):
    with open_memory("alice", db_path, embedder=local_embedder) as memory:
        memory.search("warm the index")
        workers = [start("add-range", db_path, "alice", prefix, "500") for prefix in ("left", "right")]
        for worker in workers:
            _, err = worker.communicate(timeout=300)
            assert worker.returncode == 0, err
        texts = {m.text for m in memory.get_all()}
        assert len(texts) == 1000
        assert {f"left fact number {i}" for i in range(500)} <= texts
        assert memory.stats()["total_chunks"] == 1000
        assert len(memory.search("fact number", top_k=1000)) == 1000  # the stale index was reloaded


def test_eight_threads_search_add_and_clear_for_ten_seconds(db_path, local_embedder):
    memory = open_memory("alice", db_path, embedder=local_embedder)
    other = open_memory("bob", db_path, embedder=local_embedder)  # a second connection on the same file
    errors: list[BaseException] = []
    counts = {"search": 0, "add": 0, "clear": 0}
    stop = time.monotonic() + 10

    def work(kind: str, n: int) -> None:
        i = 0
        try:
            while time.monotonic() < stop:
                i += 1
                if kind == "search":
                    for m, score in memory.search(f"topic {i % 7}", top_k=5):
                        assert m.user_id == "alice" and -1.01 <= score <= 1.01
                elif kind == "add":
                    target = memory if n % 2 else other
                    target.add(f"thread {n} remembers item {i}", category="context")
                else:
                    memory.clear()
                    time.sleep(0.2)
                counts[kind] += 1
        except BaseException as exc:  # noqa: BLE001 - collected and asserted below
            errors.append(exc)

    kinds = ["search"] * 4 + ["add"] * 3 + ["clear"]
    threads = [threading.Thread(target=work, args=(k, n)) for n, k in enumerate(kinds)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert errors == []
    assert all(counts.values()), counts
    # After the storm the cache and the file agree.
    assert {m.id for m in memory.get_all()} == {m.id for m, _ in memory.search("item", top_k=1000)}
    assert all(m.user_id == "bob" for m in other.get_all())
