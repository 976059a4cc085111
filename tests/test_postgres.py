"""What only the PostgreSQL backend has to prove: faults of a server, many processes starting at
once, the URL in the environment, and the same ranking as the SQLite file. Everything else runs
on both backends through the ``db_path`` fixture."""

import logging
import subprocess
import sys
import time
from pathlib import Path

import openai
import pytest

from headroom._scripted_server import ScriptedServer
from headroom.memory import ForeignDatabaseError, StorageError, open_memory, with_fast_memory
from headroom.memory._backends import open_store
from headroom.memory._postgres import PostgresStore
from headroom.memory._postgres_schema import MIGRATIONS

from .conftest import default_model
from .postgres import databases

WORKER = str(Path(__file__).with_name("worker.py"))


@pytest.fixture
def pg_url(postgres_server):
    yield from databases(postgres_server)


def test_a_server_down_and_back_fails_calls_typed_keeps_answers_and_recovers(postgres_server, pg_url, caplog,
                                                                              local_embedder):
    with ScriptedServer() as model:
        client = with_fast_memory(openai.OpenAI(base_url=model.base_url, api_key="x", max_retries=0),
                                  user_id="jane", db_path=pg_url, embedder=local_embedder)
        client.memory.add("Has a cat")
        postgres_server.pg_ctl("stop")
        try:
            with pytest.raises(StorageError):
                client.memory.add("Has a dog")
            with caplog.at_level(logging.WARNING, logger="headroom.memory"):
                reply = client.chat.completions.create(
                    model="m", messages=[{"role": "user", "content": "I prefer green tea."}])
            assert reply.choices[0].message.content == "Thanks, noted: Prefers green tea."
            assert any("could not store" in r.message for r in caplog.records)
        finally:
            postgres_server.pg_ctl("start")
        client.memory.add("Has a dog")  # the pool replaced its broken connections
        assert {m.text for m in client.memory.get_all()} == {"Has a cat", "Has a dog"}
        postgres_server.pg_ctl("restart")
        assert [m.text for m, _ in client.memory.search("pets", top_k=1)]  # a read retries on a fresh connection
        client.close()


def test_processes_starting_together_on_a_new_database_migrate_it_once(pg_url):
    workers = [subprocess.Popen([sys.executable, WORKER, "add", pg_url, f"user{i}", f"Fact of process {i}"],
                                stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True) for i in range(6)]
    for worker in workers:
        assert worker.wait(timeout=300) == 0, worker.stderr.read()
    store = open_store(pg_url, embedding_model=default_model(), embedding_dim=384)
    assert [u["user_id"] for u in store.users()] == [f"user{i}" for i in range(6)]
    assert store.query("SELECT COUNT(*) FROM headroom_migrations", ())[0][0] == len(MIGRATIONS)
    store.close()


def test_the_url_in_the_environment_and_its_password_kept_out_of_messages(pg_url, monkeypatch, local_embedder):
    monkeypatch.setenv("HEADROOM_MEMORY_DB", pg_url)
    with open_memory("alice", embedder=local_embedder) as memory:
        memory.add("Lives in Lisbon")
        assert memory.stats()["db_path"] == pg_url
    secret = pg_url.replace("postgres:@", "postgres:hunter2@").replace("/test_", "/nope_")
    with pytest.raises(StorageError) as caught:
        open_memory("alice", secret, embedder=local_embedder)
    assert "hunter2" not in str(caught.value) and "***" in str(caught.value)


def test_a_schema_of_another_application_is_left_alone(postgres_server, pg_url, local_embedder):
    import psycopg

    with psycopg.connect(pg_url, autocommit=True) as conn:
        conn.execute("CREATE SCHEMA headroom; CREATE TABLE headroom.orders (id int)")
    with pytest.raises(ForeignDatabaseError):
        open_memory("alice", pg_url, embedder=local_embedder)


def test_search_ranks_as_on_sqlite(pg_url, tmp_path, local_embedder):
    """The same memories and questions give the same order on both backends (one ranking code;
    the full-text side differs only in its stemmer)."""
    facts = ["Lives in Amsterdam with two cats", "Prefers Rust over Go for services", "Is allergic to peanuts",
             "Runs a marathon every spring", "Works as a nurse at night", "Learns Japanese on the train",
             "Drinks oat milk in coffee", "Visited Kyoto in 2019", "Plays bass in a jazz band",
             "Keeps bees on the roof"]
    questions = ["which city do I live in", "what programming language", "food allergies", "my running races",
                 "my job", "languages I study", "how do I take my coffee", "trips to Japan", "music", "hobbies"]
    orders = []
    for where in (str(tmp_path / "m.db"), pg_url):
        with open_memory("alice", where, embedder=local_embedder) as memory:
            memory.add_many(facts)
            orders.append([[m.text for m, _ in memory.search(q, top_k=5)] for q in questions])
    assert orders[0] == orders[1]


FACTS = ["Lives in Amsterdam with two cats", "Prefers Rust over Go for services", "Is allergic to peanuts",
         "Runs a marathon every spring", "Works as a nurse at night", "Learns Japanese on the train",
         "Drinks oat milk in coffee", "Visited Kyoto in 2019", "Plays bass in a jazz band", "Keeps bees on the roof",
         "Has a sister called Mira", "Dislikes horror films", "Owns a 1987 Volvo", "Reads science fiction"]
QUESTIONS = ["which city do I live in", "what programming language", "food allergies", "my running races",
             "my job", "languages I study", "coffee", "trips to Japan", "music", "Volvo", "Mira"]


def test_a_user_too_large_for_a_process_is_searched_in_the_database_with_the_same_results(pg_url, local_embedder):
    """Over ``memory_rows`` searchable memories, search and the near-duplicate check run on HNSW in
    the database (``_postgres_search``); the results are those of the in-process index."""
    results = {}
    for memory_rows in (50_000, 5):  # in a process; in the database
        store = PostgresStore(pg_url, embedding_model=local_embedder.name, embedding_dim=local_embedder.dim,
                              memory_rows=memory_rows, auto_graphs=False)  # no graph: exact scans
        with open_memory("alice", embedder=local_embedder, store=store) as memory:
            if memory_rows == 50_000:
                memory.add_many(FACTS[:8])
                memory.add_many([{"content": text, "category": "preference"} for text in FACTS[8:]])
            results[memory_rows] = [[(m.text, round(s, 4)) for m, s in memory.search(q, top_k=3)] for q in QUESTIONS]
            results[memory_rows].append([m.text for m, _ in memory.search("music", category="preference")])
            if memory_rows == 5:
                assert type(store._index("alice")).__name__ == "DatabaseIndex"
                assert memory.add("Lives in Amsterdam with 2 cats").text == "Lives in Amsterdam with 2 cats"
                assert memory.add("Is allergic to peanuts.").text == "Is allergic to peanuts"  # same text
                twin = memory.add("Plays the bass in a jazz band")  # a near duplicate, found by HNSW
                assert twin.text == "Plays bass in a jazz band"
                memory.delete(memory.search("bees", top_k=1)[0][0].id)
                assert "Keeps bees on the roof" not in [m.text for m, _ in memory.search("bees", top_k=5)]
        store.close()
    assert results[5] == results[50_000]


def test_a_large_user_with_a_graph_of_its_own_is_searched_on_it_with_the_same_results(pg_url, local_embedder):
    """``build_graphs`` gives each large user an HNSW index of its own rows; that user's searches run
    on it, rank as the in-process index does, and see rows written after the build."""
    import psycopg

    from headroom.memory._postgres import _user_key
    from headroom.memory._postgres_graphs import build_graph, build_graphs
    from headroom.memory._postgres_search import graph_name

    def store_of(memory_rows):
        return PostgresStore(pg_url, embedding_model=local_embedder.name, embedding_dim=local_embedder.dim,
                             memory_rows=memory_rows, auto_graphs=False)

    small, large = store_of(50_000), store_of(5)
    with open_memory("alice", embedder=local_embedder, store=small) as memory:
        memory.add_many(FACTS)
        open_memory("bob", embedder=local_embedder, store=small).add_many(FACTS[:3])  # under the size
        expected = [[(m.text, round(s, 4)) for m, s in memory.search(q, top_k=3)] for q in QUESTIONS]
    assert not large.has_graph("alice")
    assert "1 users" in {c["check"]: c for c in large.health()}["graphs"]["detail"]  # doctor says so
    assert build_graphs(large, 5) == [("alice", len(FACTS), True)]
    assert {c["check"]: c for c in large.health()}["graphs"]["ok"]
    assert build_graphs(large, 5) == [("alice", len(FACTS), False)]  # only what is missing
    assert large.has_graph("alice") and not large.has_graph("bob")
    with psycopg.connect(pg_url) as conn:  # a table this small is read whole unless that is ruled out
        conn.execute("SET search_path TO headroom, public; SET enable_seqscan = off; SET enable_sort = off")
        plan = conn.execute("EXPLAIN SELECT pk FROM memories WHERE user_id = 'alice' ORDER BY embedding <=> %s "
                            "LIMIT 5", ("[" + ",".join(["1"] * local_embedder.dim) + "]",)).fetchall()
    assert graph_name("alice") in "\n".join(row[0] for row in plan)
    with open_memory("alice", embedder=local_embedder, store=large) as memory:
        assert [[(m.text, round(s, 4)) for m, s in memory.search(q, top_k=3)] for q in QUESTIONS] == expected
        assert memory.add("Plays the bass in a jazz band").text == "Plays bass in a jazz band"  # near duplicate
        memory.add("Collects vintage fountain pens")
        assert memory.search("fountain pens", top_k=1)[0][0].text == "Collects vintage fountain pens"
    # Another process building the same graph holds its lock: this one leaves it alone.
    other = psycopg.connect(pg_url, autocommit=True)
    other.execute("SELECT pg_advisory_lock(%s, %s)", (0x48524E, _user_key("carol")))
    open_memory("carol", embedder=local_embedder, store=small).add_many(FACTS[:7])
    assert build_graph(large, "carol") is False and not large.has_graph("carol")
    other.close()
    assert build_graph(large, "carol") is True
    assert large.has_graph("carol")
    # A build cut short leaves an invalid index behind (here: one that failed on duplicates); the next
    # build drops it and builds the graph.
    open_memory("erin", embedder=local_embedder, store=small).add_many(FACTS[:6])
    with pytest.raises(psycopg.errors.UniqueViolation), psycopg.connect(pg_url, autocommit=True) as conn:
        conn.execute(f"CREATE UNIQUE INDEX CONCURRENTLY {graph_name('erin')} ON headroom.memories (category)")
    large.forget_graphs()
    assert not large.has_graph("erin")
    assert build_graph(large, "erin") is True and large.has_graph("erin")
    small.close()
    large.close()


def test_the_first_process_to_find_a_large_user_without_a_graph_builds_one(pg_url, local_embedder, caplog):
    with open_memory("dave", pg_url, embedder=local_embedder) as writer:
        writer.add_many(FACTS)
    store = PostgresStore(pg_url, embedding_model=local_embedder.name, embedding_dim=local_embedder.dim,
                          memory_rows=5)
    with open_memory("dave", embedder=local_embedder, store=store) as memory, caplog.at_level(logging.WARNING):
        assert memory.search("coffee", top_k=1)[0][0].text == "Drinks oat milk in coffee"  # an exact scan
        assert "no graph of its own" in caplog.text
        deadline = time.monotonic() + 60
        while not store.has_graph("dave") and time.monotonic() < deadline:
            time.sleep(0.2)
            store.forget_graphs()
        assert store.has_graph("dave")
        assert memory.search("coffee", top_k=1)[0][0].text == "Drinks oat milk in coffee"
    store.close()


def test_a_bulk_load_gathers_the_planners_statistics(pg_url):
    """An import or ``migrate`` of many rows analyzes the table at once (``PostgresStore.load``);
    a small one leaves it to autovacuum."""
    import numpy as np

    from headroom.memory import Memory
    from headroom.memory._models import new_id, utcnow

    store = PostgresStore(pg_url, embedding_model="test-hash", embedding_dim=8)
    analyzed = "SELECT coalesce(analyze_count, 0) FROM pg_stat_user_tables WHERE relname = 'memories'"
    now = utcnow()
    vectors = np.eye(8, dtype=np.float32)
    rows = [(Memory(new_id(), "alice", f"imported fact {i}", "fact", now, now), vectors[i % 8]) for i in range(1500)]
    assert store.load(rows[:10]) == 10
    assert store.query(analyzed, ())[0][0] == 0  # a few rows: autovacuum's business
    assert store.load(rows[10:]) == 1490
    assert store.query(analyzed, ())[0][0] >= 1
    store.close()


def test_word_lookups_agree_whichever_index_finds_them(pg_url, local_embedder):
    """A small user's rows are tested one by one, a larger user's found through the full-text index:
    the same rows either way, stemmed alike ("runs" finds "Runs", "marathons" finds "marathon")."""
    with open_memory("alice", pg_url, embedder=local_embedder) as memory:
        memory.add_many(FACTS)
        open_memory("bob", embedder=local_embedder, store=memory.store).add("Runs marathons in Japan")
        words = ["runs", "marathons", "japan", "bees", "nothing"]
        small, large = (memory.store._matches("alice", words, rows) for rows in (10, 10**6))
        assert [sorted(k.tolist()) for k in small] == [sorted(k.tolist()) for k in large]
        texts = {m.id: m.text for m in memory.get_all()}
        keys = {int(r[0]): texts[r[1]] for r in memory.store.query("SELECT pk, id FROM memories WHERE user_id = ?",
                                                                     ("alice",))}
        assert [sorted(keys[k] for k in found.tolist()) for found in small] == [
            ["Runs a marathon every spring"], ["Runs a marathon every spring"],
            [], ["Keeps bees on the roof"], []]  # "japan" is not "japanes"; bob's marathon is not alice's
