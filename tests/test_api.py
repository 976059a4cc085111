"""The memory API of one user, on real SQLite files and the real local model."""

import pytest

from headroom.memory import (
    MAX_TEXT_CHARS,
    InvalidInputError,
    Memory,
    NotFoundError,
    open_memory,
)

from .conftest import default_model


def test_spec_memory_api_example(db_path, local_embedder):
    # The spec's "Memory API" section, on the memory API alone.
    memory = open_memory("alice", db_path, embedder=local_embedder)
    memory.add("User prefers Python for backend services", category="preference")
    memory.add("User is a senior engineer", category="fact")
    results = memory.search("python preferences", top_k=5)
    assert results[0][0].text == "User prefers Python for backend services"
    assert all(-1.0 <= score <= 1.0 for _, score in results)  # cosine; the order also weighs keywords
    assert len(memory.get_all()) == 2
    stats = memory.stats()
    assert stats["total_chunks"] == 2
    assert stats["by_category"] == {"preference": 1, "fact": 1, "context": 0}
    assert stats["embedding_model"] == default_model() and stats["db_path"] == db_path
    assert memory.clear() == 2
    assert memory.get_all() == [] and memory.stats()["total_chunks"] == 0


def test_search_ranks_by_meaning(alice):
    alice.add("Prefers dark mode in every editor", "preference")
    alice.add("Works at a fintech startup in Berlin", "fact")
    alice.add("Is migrating the billing service to microservices", "context")
    top = {q: alice.search(q, top_k=1)[0][0].text for q in (
        "which company does the user work for", "what theme does the user like", "what is the user moving to microservices")}
    assert top["which company does the user work for"].startswith("Works at")
    assert top["what theme does the user like"].startswith("Prefers dark")
    assert top["what is the user moving to microservices"].startswith("Is migrating")


def test_record_fields(alice):
    m = alice.add("  Uses PostgreSQL  ", "fact", metadata={"origin": "chat", "n": 1})
    assert isinstance(m, Memory)
    assert m.text == "Uses PostgreSQL" and m.user_id == "alice" and m.source == "manual"
    assert m.created_at.tzinfo is not None and m.created_at == m.updated_at
    got = alice.get(m.id)
    assert got == m
    with pytest.raises(Exception):
        m.text = "changed"  # frozen


def test_category_filter(alice):
    alice.add("Likes async/await", "preference")
    alice.add("Working on auth", "context")
    assert [m.text for m in alice.get_all(category="context")] == ["Working on auth"]
    hits = alice.search("async", category="context")
    assert [m.text for m, _ in hits] == ["Working on auth"]


def test_same_text_is_not_stored_twice(alice):
    first = alice.add("I prefer Python for backend work", "preference")
    again = alice.add("  i PREFER python   for backend\nwork ", "preference")
    assert again.id == first.id
    batch = alice.add_many(["Uses PostgreSQL", "uses postgresql", "I prefer python for backend work"])
    assert batch[0].id == batch[1].id and batch[2].id == first.id
    assert len(alice.get_all()) == 2


def test_update_reembeds_and_keeps_id(alice):
    m = alice.add("Lives in Paris", "fact")
    alice.add("Enjoys hiking", "preference")
    changed = alice.update(m.id, text="Lives in Tokyo", category="context")
    assert changed.id == m.id and changed.text == "Lives in Tokyo" and changed.category == "context"
    assert changed.updated_at > m.updated_at and changed.created_at == m.created_at
    assert alice.search("Which city in Japan?", top_k=1)[0][0].id == m.id
    assert alice.get(m.id).text == "Lives in Tokyo"


def test_delete(alice):
    a = alice.add("Owns a cat named Miso")
    b = alice.add("Drinks green tea")
    assert alice.delete(a.id) is True
    assert alice.delete(a.id) is False
    assert [m.id for m, _ in alice.search("pets", top_k=5)] == [b.id]
    with pytest.raises(NotFoundError):
        alice.get(a.id)


def test_isolation_between_two_users_in_one_file(db_path, local_embedder):
    alice = open_memory("alice", db_path, embedder=local_embedder)
    bob = open_memory("bob", db_path, embedder=local_embedder)
    a = alice.add("Alice is allergic to peanuts")
    b = bob.add("Bob is allergic to shellfish")
    same_text = bob.add("Alice is allergic to peanuts")  # bob may hold the same text as his own
    assert same_text.id != a.id and same_text.user_id == "bob"
    assert {m.id for m, _ in alice.search("allergy", top_k=10)} == {a.id}
    assert {m.user_id for m, _ in bob.search("allergy", top_k=10)} == {"bob"}
    assert alice.stats()["total_chunks"] == 1 and bob.stats()["total_chunks"] == 2
    # No call for bob reads, changes or deletes alice's memory.
    with pytest.raises(NotFoundError):
        bob.get(a.id)
    with pytest.raises(NotFoundError):
        bob.update(a.id, text="hijacked")
    assert bob.delete(a.id) is False
    assert bob.clear() == 2
    assert [m.id for m in alice.get_all()] == [a.id] and alice.get(a.id).text == "Alice is allergic to peanuts"
    assert b.id not in {m.id for m in alice.get_all()}


@pytest.mark.parametrize(
    "call",
    [
        lambda m: m.add(""),
        lambda m: m.add("   \n "),
        lambda m: m.add(None),
        lambda m: m.add(42),
        lambda m: m.add("x" * (MAX_TEXT_CHARS + 1)),
        lambda m: m.add("fine", category="opinion"),
        lambda m: m.add("fine", metadata={"when": object()}),
        lambda m: m.add("fine", metadata=["not", "a", "dict"]),
        lambda m: m.add_many(["fine", ""]),
        lambda m: m.search(""),
        lambda m: m.search("q", top_k=0),
        lambda m: m.search("q", top_k=True),
        lambda m: m.search("q", category="opinion"),
        lambda m: m.get_all(category="opinion"),
        lambda m: m.update(m.get_all()[0].id, text=""),
        lambda m: m.update(m.get_all()[0].id, category="nope"),
    ],
)
def test_bad_input_is_typed_and_loses_nothing(hashed, call):
    kept = hashed.add("Keeps bees on the roof", "fact")
    with pytest.raises(InvalidInputError):
        call(hashed)
    assert hashed.get_all() == [kept]
    assert isinstance(InvalidInputError("x"), ValueError)


@pytest.mark.parametrize("user_id", ["", "   ", None, 7, "u" * 300])
def test_bad_user_id(db_path, user_id):
    with pytest.raises(InvalidInputError):
        open_memory(user_id, db_path)


def test_update_to_a_text_the_user_already_has_is_refused(hashed):
    a = hashed.add("Uses vim")
    b = hashed.add("Uses emacs")
    with pytest.raises(InvalidInputError):
        hashed.update(b.id, text="uses VIM")
    assert {m.text for m in hashed.get_all()} == {"Uses vim", "Uses emacs"}
    assert hashed.get(a.id).text == "Uses vim"


def test_add_many_categories_and_content_synonym(hashed):
    stored = hashed.add_many(
        [{"content": "Prefers tabs", "category": "preference"}, {"text": "On call this week", "category": "context"}],
        source="inline",
    )
    assert [(m.text, m.category, m.source) for m in stored] == [
        ("Prefers tabs", "preference", "inline"), ("On call this week", "context", "inline")]
