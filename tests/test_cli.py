"""The headroom-memory command on both backends with the real embedding model: click's runner for
each command, and a real subprocess for the whole export -> import round trip."""

import json
import os
import subprocess
import sys

import numpy as np
import pytest
from click.testing import CliRunner

from headroom.cli import main
from headroom.memory import open_memory
from headroom.memory._backends import open_store

from .conftest import default_model


def run(db, *args, code=0, stdin=None):
    result = CliRunner().invoke(main, ["--db", str(db), "--json", *args], input=stdin, catch_exceptions=False)
    assert result.exit_code == code, result.output
    return [json.loads(line) for line in result.stdout.splitlines() if line.startswith("{")]


@pytest.fixture
def db(db_path, local_embedder):
    """Two users' memories in the backend under test (an SQLite file or a PostgreSQL database)."""
    path = db_path
    alice = open_memory("alice", str(path), embedder=local_embedder)
    old = alice.add("Lives in Rotterdam", "fact")
    alice.add("Lives in Amsterdam", "fact", replaces=old.id, said_at="2026-03-01T10:00:00+00:00")
    alice.add("Prefers Rust over Go", "preference", metadata={"from": "chat"})
    open_memory("bob", str(path), embedder=local_embedder).add("Is vegetarian", "fact")
    alice.close()
    return path


def test_users_list_search_and_stats(db):
    assert [(u["user_id"], u["memories"]) for u in run(db, "users")] == [("alice", 2), ("bob", 1)]
    assert [m["text"] for m in run(db, "list", "-u", "alice")] == ["Lives in Amsterdam", "Prefers Rust over Go"]
    assert [m["text"] for m in run(db, "list", "-u", "alice", "--category", "preference")] == ["Prefers Rust over Go"]
    assert run(db, "list", "-u", "alice", "--since", "2099-01-01") == []
    (best, *_) = run(db, "search", "-u", "alice", "Which city do I live in?", "-k", "2")
    # "live": a keyword match, though a weak one (one word of two memories: scale_keywords)
    assert best["text"] == "Lives in Amsterdam" and 0 < best["cosine"] <= 1 and 0 < best["keyword"] < 1
    (hit, *rest) = run(db, "search", "-u", "alice", "Rust")  # the word itself: the only keyword match
    assert hit["text"] == "Prefers Rust over Go" and hit["keyword"] > 0 and all(r["keyword"] == 0 for r in rest)
    assert run(db, "stats")[0]["users"] == 2 and run(db, "stats")[0]["memories"] == 3
    assert run(db, "stats", "-u", "bob")[0]["fact"] == 1


def test_add_edit_history_delete_and_their_exit_codes(db):
    (added,) = run(db, "add", "-u", "bob", "Runs marathons", "--category", "context")
    (edited,) = run(db, "edit", added["id"], "Runs half marathons")
    assert edited["text"] == "Runs half marathons" and edited["user_id"] == "bob"
    (live,) = [m for m in run(db, "list", "-u", "alice") if m["text"] == "Lives in Amsterdam"]
    assert [v["text"] for v in run(db, "history", live["id"])] == ["Lives in Rotterdam", "Lives in Amsterdam"]
    assert run(db, "delete", added["id"]) == [{"deleted": added["id"], "user_id": "bob"}]
    run(db, "delete", added["id"], code=4)
    run(db, "edit", "no-such-id", "x", code=4)
    run(db, "add", "-u", "bob", "   ", code=1)  # the library's InvalidInputError
    run(db, "list", code=2)  # no --user


def test_forget_asks_unless_yes(db):
    run(db, "forget", "-u", "alice", stdin="n\n", code=1)  # declined: click aborts
    assert len(run(db, "list", "-u", "alice")) == 2
    assert run(db, "forget", "-u", "alice", "--yes")[0]["forgotten"] >= 2
    assert [u["user_id"] for u in run(db, "users")] == ["bob"]


def test_a_table_in_a_terminal(db):
    result = CliRunner().invoke(main, ["--db", str(db), "--table", "list", "-u", "alice"])
    assert result.exit_code == 0 and result.output.splitlines()[0].split() == ["id", "category", "text", "updated_at"]
    assert "Prefers Rust over Go" in result.output


def test_export_then_import_is_lossless_and_idempotent(db, tmp_path):
    env = {**os.environ, "HF_HUB_OFFLINE": "1"}
    target = tmp_path / "copy.db"
    exported = subprocess.run([sys.executable, "-m", "headroom.cli", "--db", str(db), "export"],
                              capture_output=True, text=True, timeout=120, env=env)
    assert exported.returncode == 0, exported.stderr
    lines = exported.stdout.splitlines()
    assert json.loads(lines[0])["embedding_model"] == default_model() and len(lines) == 5  # header + 4 rows
    (tmp_path / "e.jsonl").write_text(exported.stdout)
    for new in (4, 0):  # the second import finds every row there
        done = subprocess.run([sys.executable, "-m", "headroom.cli", "--db", str(target), "import",
                               str(tmp_path / "e.jsonl")], capture_output=True, text=True, timeout=120, env=env)
        assert done.returncode == 0, done.stderr
        assert json.loads(done.stdout.splitlines()[-1]) == {"rows": 4, "new": new, "re_embedded": False}
        assert "imported 4 rows" in done.stderr
    source, copy = (open_store(str(p), embedding_model=default_model(), embedding_dim=384) for p in (db, target))
    before, after = list(source.dump()), list(copy.dump())
    assert [m for m, _ in before] == [m for m, _ in after]  # ids, texts, times, sources, links, metadata
    assert all(np.array_equal(a, b) for (_, a), (_, b) in zip(before, after))
    source.close()
    copy.close()


def test_import_into_another_model_embeds_again_and_refuses_what_is_no_export(db, tmp_path):
    exported = CliRunner().invoke(main, ["--db", str(db), "export"]).stdout
    header, *rows = exported.splitlines()
    foreign = json.dumps({**json.loads(header), "embedding_model": "text-embedding-3-small", "embedding_dim": 1536})
    source = tmp_path / "foreign.jsonl"
    source.write_text("\n".join([foreign, *rows]) + "\n")
    (report,) = run(tmp_path / "other.db", "import", str(source))
    assert report == {"rows": 4, "new": 4, "re_embedded": True}
    (best, *_) = run(tmp_path / "other.db", "search", "-u", "bob", "any food I avoid?")
    assert best["text"] == "Is vegetarian"
    (tmp_path / "junk.jsonl").write_text('{"not": "an export"}\n')
    run(tmp_path / "other.db", "import", str(tmp_path / "junk.jsonl"), code=1)


def test_prune_keeps_the_newest_and_dry_run_deletes_nothing(db):
    would = run(db, "prune", "-u", "alice", "--keep-latest", "1", "--dry-run")
    assert [r["action"] for r in would] == ["would delete"] and len(run(db, "list", "-u", "alice")) == 2
    assert run(db, "prune", "-u", "alice", "--older-than", "30d") == []  # nothing is that old
    (gone,) = run(db, "prune", "-u", "alice", "--older-than", "0s", "--keep-latest", "1")
    assert [m["id"] for m in run(db, "list", "-u", "alice")] != [gone["id"]] and len(run(db, "list", "-u", "alice")) == 1
    run(db, "prune", "-u", "alice", code=2)
    run(db, "prune", "-u", "alice", "--older-than", "soon", code=2)


def test_doctor_says_what_is_wrong_and_retry_failed_puts_jobs_back(db):
    from headroom.memory import RetryPolicy

    assert all(c["ok"] for c in run(db, "doctor"))
    store = open_store(str(db), embedding_model=default_model(), embedding_dim=384)
    queue = store.extraction_queue()
    queue.put("bob", {"said": ["hi"], "reply": "hello"})
    queue.fail(queue.take("bob"), "model down", RetryPolicy(max_attempts=1))
    checks = {c["check"]: c for c in run(db, "doctor", code=1)}
    assert not checks["extraction queue"]["ok"] and "1 failed" in checks["extraction queue"]["detail"]
    assert checks["schema"]["ok"] and checks["vectors"]["ok"]
    assert run(db, "retry-failed") == [{"user_id": "bob", "requeued": 1}]
    assert all(c["ok"] for c in run(db, "doctor"))
    store.close()


def test_doctor_checks_the_files_integrity_and_mode(sqlite_path, local_embedder):
    open_memory("alice", sqlite_path, embedder=local_embedder).close()
    os.chmod(sqlite_path, 0o644)
    checks = {c["check"]: c for c in run(sqlite_path, "doctor", code=1)}
    assert not checks["file mode"]["ok"] and checks["integrity"]["ok"] and checks["full-text index"]["ok"]
    os.chmod(sqlite_path, 0o600)
    assert all(c["ok"] for c in run(sqlite_path, "doctor"))


@pytest.mark.parametrize("args", [
    ["users"], ["list", "-u", "alice"], ["search", "-u", "alice", "city"], ["add", "-u", "carol", "Likes jazz"],
    ["stats"], ["history", "MEMORY"], ["edit", "MEMORY", "Lives in Utrecht"], ["prune", "-u", "bob", "--older-than", "0s"],
    ["doctor"], ["retry-failed"], ["export", "-u", "bob"], ["delete", "MEMORY"], ["forget", "-u", "bob", "--yes"],
], ids=lambda a: a[0])
def test_every_command_as_a_real_subprocess(db, args):
    live = [m for m in run(db, "list", "-u", "alice") if m["text"] == "Lives in Amsterdam"][0]["id"]
    args = [live if a == "MEMORY" else a for a in args]
    done = subprocess.run([sys.executable, "-m", "headroom.cli", "--db", str(db), *args], capture_output=True,
                          text=True, timeout=120, env={**os.environ, "HF_HUB_OFFLINE": "1"})
    assert done.returncode == 0, done.stderr
    assert all(json.loads(line) for line in done.stdout.splitlines())  # piped: JSON lines
    assert done.stdout.strip() or args == ["retry-failed"]  # nothing failed: nothing to say


def test_index_builds_the_graphs_of_large_users_once_and_only_on_postgresql(db):
    if not str(db).startswith("postgresql://"):
        run(db, "index", code=1)  # SQLite searches every user exactly: nothing to build
        return
    assert run(db, "index") == []  # no user is large
    assert run(db, "index", "--min-memories", "1") == [{"user_id": "alice", "memories": 2, "built": True}]
    assert run(db, "index", "--min-memories", "1") == [{"user_id": "alice", "memories": 2, "built": False}]
    store = open_store(str(db), embedding_model=default_model(), embedding_dim=384)
    assert store.has_graph("alice") and not store.has_graph("bob")
    store.close()


def test_migrate_copies_everything_to_the_other_backend_and_back(db, tmp_path, postgres_server):
    """SQLite -> PostgreSQL -> SQLite (or the reverse): ids, texts, times, links, metadata and vectors
    arrive unchanged; a second run adds nothing; --user copies one user."""
    from .postgres import databases

    pg = databases(postgres_server)
    other = next(pg) if not str(db).startswith("postgresql://") else str(tmp_path / "other.db")
    back = str(tmp_path / "back.db") if other.startswith("postgresql://") else next(pg)
    assert run(db, "migrate", "--from", str(db), "--to", other) == [{"rows": 4, "new": 4}]
    assert run(db, "migrate", "--from", str(db), "--to", other) == [{"rows": 4, "new": 0}]
    assert run(db, "migrate", "--from", other, "--to", back, "--user", "bob") == [{"rows": 1, "new": 1}]
    assert run(db, "migrate", "--from", other, "--to", back) == [{"rows": 4, "new": 3}]
    stores = [open_store(str(p), embedding_model=default_model(), embedding_dim=384) for p in (db, other, back)]
    dumps = [list(store.dump()) for store in stores]
    for dump in dumps[1:]:
        assert [m for m, _ in dump] == [m for m, _ in dumps[0]]
        assert all(np.array_equal(a, b) for (_, a), (_, b) in zip(dump, dumps[0]))
    (hit, *_) = stores[2].ranked("alice", dumps[0][1][1], 1)  # searchable there, not just stored
    assert hit[0].text == dumps[0][1][0].text
    for store in stores:
        store.close()
    pg.close()
