"""Hybrid ranking, supersede chains and history, near-duplicate merging, and time."""

import json
import logging
from datetime import datetime, timezone

import numpy as np
import openai
import pytest

from headroom._scripted_server import ScriptedServer, chat_completion
from headroom.memory import HashEmbedder, InvalidInputError, open_memory, with_fast_memory, with_memory
from headroom.memory._scoring import NEAR_DUPLICATE, Scoring, content_words

CORPUS = [
    "Lives in Lisbon near the river",
    "Zorblax is the name of the user's robot vacuum",
    "Prefers tea over coffee in the morning",
    "Works on the billing service at a fintech startup",
    "Has a sister who studies medicine",
    "Plays five-a-side football on Thursdays",
    "Is learning Portuguese with an app",
    "Keeps a sourdough starter in the fridge",
]


class FixedEmbedder:
    """Vectors chosen by hand, so cosines sit exactly where a test needs them."""

    name, dim = "fixed-3", 3

    def __init__(self):
        self.vectors = {}

    def at(self, text, cosine):
        self.vectors[text] = np.array([cosine, np.sqrt(max(0.0, 1 - cosine ** 2)), 0.0], dtype=np.float32)

    def embed(self, texts):
        return np.array([self.vectors.get(t, [0.0, 0.0, 1.0]) for t in texts], dtype=np.float32)


def test_hybrid_finds_what_either_side_alone_misses(db_path):
    # Hand-made vectors: the query's meaning is close to a paraphrase and to a distractor, while the
    # memory that shares its rare word is far from it in vector space.
    embedder = FixedEmbedder()
    embedder.vectors = {
        "Resides in Lisbon": np.array([1.0, 0.0, 0.0], dtype=np.float32),
        "Zorblax firmware needs an update": np.array([0.0, 0.0, 1.0], dtype=np.float32),
        "Likes sunny weather": np.array([0.8, 0.6, 0.0], dtype=np.float32),
        "Where does Zorblax live now?": np.array([0.9, 0.1, 0.42], dtype=np.float32) / np.linalg.norm([0.9, 0.1, 0.42]),
    }
    memory = open_memory("alice", db_path, embedder=embedder)
    memory.add_many(["Resides in Lisbon", "Zorblax firmware needs an update", "Likes sunny weather"])

    def top2(scoring):
        memory.scoring = scoring
        return {m.text for m, _ in memory.search("Where does Zorblax live now?", top_k=2)}

    by_meaning, by_words, hybrid = top2(Scoring(keyword_weight=0)), top2(Scoring(vector_weight=0)), top2(Scoring())
    assert "Zorblax firmware needs an update" not in by_meaning  # vectors alone miss the rare word
    assert "Resides in Lisbon" not in by_words  # words alone miss the paraphrase
    assert hybrid == {"Zorblax firmware needs an update", "Resides in Lisbon"}


@pytest.mark.parametrize("shared, wins", [("new", "paraphrase"), ("zorblax", "shared word")])
def test_one_shared_common_word_does_not_outrank_a_paraphrase_but_a_rare_one_does(db_path, shared, wins):
    """In a store of 20 memories, a common word the question shares with one memory ("new") is weak
    evidence: the paraphrase closer in meaning stays first. A word the model's vocabulary lacks
    ("zorblax") is strong evidence in any store: its memory comes first, as before."""
    embedder = FixedEmbedder()
    question = f"Which language should I pick for the {shared} API server?"
    paraphrase, other = "Prefers Go for backend services", f"Prefers PostgreSQL over MySQL for {shared} projects"
    embedder.at(question, 1.0)
    embedder.at(paraphrase, 0.5)
    embedder.at(other, 0.3)
    fillers = [f"Filler fact {chr(97 + i)} about gardening" for i in range(18)]  # cosine 0: [0, 0, 1]
    memory = open_memory("alice", db_path, embedder=embedder)
    memory.add_many([paraphrase, other, *fillers])
    first, _cosine, keyword = memory.explain(question, top_k=1)[0]
    assert first.text == (paraphrase if wins == "paraphrase" else other)
    if wins == "paraphrase":
        assert keyword == 0.0 and 0 < memory.explain(question, top_k=2)[1][2] < 0.5  # a share of the weight
    else:
        assert keyword == 1.0


def test_keyword_statistics_are_the_users_own(db_path):
    # "coffee" is in every memory of bob's but in one of alice's: for alice it is a rare word.
    bob = open_memory("bob", db_path, embedder=HashEmbedder())
    bob.add_many([f"coffee note {i}" for i in range(300)])
    alice = open_memory("alice", db_path, embedder=HashEmbedder())
    alice.add_many(["Drinks coffee with oat milk", "Owns a cat", "Takes notes in a paper notebook",
                    "Lives in Lisbon", "Plays chess on Sundays", "Has a sister"])
    alice.scoring = Scoring(vector_weight=0.0, keyword_weight=1.0, recency_weight=0.0)  # keywords alone
    assert {m.text for m, _ in alice.search("coffee notes", top_k=2)} == {
        "Drinks coffee with oat milk", "Takes notes in a paper notebook"}
    assert all(m.user_id == "bob" for m, _ in bob.search("coffee", top_k=10))


def test_a_paraphrase_is_found_with_the_real_model(db_path, local_embedder):
    memory = open_memory("alice", db_path, embedder=local_embedder)
    memory.add_many(CORPUS)
    (hit, score), = memory.search("In which city is their home?", top_k=1)
    assert hit.text == "Lives in Lisbon near the river"
    words = content_words("In which city is their home?")
    assert all(len(keys) == 0 for keys in memory.store._matches("alice", words, len(CORPUS)))  # no word in common


def test_near_duplicate_merge_at_and_around_the_threshold(db_path):
    embedder = FixedEmbedder()
    embedder.at("Is vegetarian", 1.0)
    embedder.at("Is a vegetarian", NEAR_DUPLICATE + 1e-4)
    embedder.at("Is vegetarian at home", NEAR_DUPLICATE)
    embedder.at("Is mostly vegetarian", NEAR_DUPLICATE - 1e-3)
    embedder.at("Has 2 vegetarian kids", NEAR_DUPLICATE + 1e-3)
    embedder.at("Vegetarian is", NEAR_DUPLICATE + 1e-3)
    memory = open_memory("alice", db_path, embedder=embedder)
    first = memory.add("Is vegetarian")
    assert memory.add("Is a vegetarian").id == first.id  # just above: merged
    assert memory.add("Is vegetarian at home").id == first.id  # exactly at: merged
    assert memory.add("Is mostly vegetarian").id != first.id  # just below: stored
    assert memory.add("Has 2 vegetarian kids").id != first.id  # numbers differ: never merged
    assert memory.add("Vegetarian is").id != first.id  # the same words in another order: never merged
    assert len(memory.get_all()) == 4


def test_a_preference_turned_around_is_not_merged_into_the_old_one(db_path, local_embedder):
    memory = open_memory("alice", db_path, embedder=local_embedder)
    old = memory.add("Prefers Rust over Go")
    new = memory.add("Prefers Go over Rust")  # cosine 0.977 with the real model: above the merge line
    assert new.id != old.id and {m.text for m in memory.get_all()} == {"Prefers Rust over Go", "Prefers Go over Rust"}
    assert memory.add("prefers rust over go").id == old.id  # the same text still is the same memory


def test_a_value_changed_is_not_merged_into_the_old_one(db_path, local_embedder):
    memory = open_memory("omar", db_path, embedder=local_embedder)
    old = memory.add("I'm training for the Leeds half marathon in April.")
    new = memory.add("I'm training for the Leeds half marathon in May.")  # close in meaning, another month
    assert new.id != old.id
    revised = memory.add("I'm training for the York half marathon in May.", replaces=new.id)
    assert revised.id != new.id and memory.get(new.id).superseded_by == revised.id
    assert memory.add("I'm training for the york half marathon in May").id == revised.id  # a name's case: the same


@pytest.mark.parametrize("defer", [False, True])
def test_near_duplicates_within_one_batch_are_stored_once(db_path, defer):
    embedder = FixedEmbedder()
    embedder.at("Is vegetarian", 1.0)
    embedder.at("Is a vegetarian", NEAR_DUPLICATE + 1e-3)
    embedder.at("Has 2 vegetarian kids", NEAR_DUPLICATE + 2e-3)
    embedder.at("Is mostly vegetarian", NEAR_DUPLICATE - 0.05)
    memory = open_memory("alice", db_path, embedder=embedder)
    batch = ["Is vegetarian", "Is a vegetarian", "Has 2 vegetarian kids", "Is mostly vegetarian"]
    first, twin, numbers, apart = memory.add_many(batch, defer_embedding=defer)
    memory.flush()
    assert {m.text for m in memory.get_all()} == {"Is vegetarian", "Has 2 vegetarian kids", "Is mostly vegetarian"}
    if not defer:  # stored at once: the batch answers with the memory that stays
        assert twin.id == first.id and len({first.id, numbers.id, apart.id}) == 3


def test_supersede_chain_and_history(db_path, local_embedder):
    memory = open_memory("alice", db_path, embedder=local_embedder)
    a = memory.add("Works at Google", said_at="2024-01-10T09:00:00Z")
    b = memory.add("Works at Anthropic", replaces=a.ref)
    c = memory.add("Works at a robotics startup", replaces=b.id)
    assert [m.id for m in memory.get_all()] == [c.id]
    assert [m.id for m, _ in memory.search("where does the user work", top_k=5)] == [c.id]
    chain = memory.history(b.id)
    assert [m.id for m in chain] == [a.id, b.id, c.id]
    assert chain[0].superseded_by == b.id and chain[1].superseded_by == c.id and chain[2].superseded_by is None
    assert chain[0].superseded_at <= chain[1].superseded_at
    assert chain[0].created_at == datetime(2024, 1, 10, 9, tzinfo=timezone.utc)
    assert memory.get(a.id).superseded_by == b.id  # kept, linked
    with pytest.raises(InvalidInputError):
        memory.update(a.id, text="Works at Yahoo")


def test_update_keeps_the_old_version(db_path, local_embedder):
    memory = open_memory("alice", db_path, embedder=local_embedder)
    m = memory.add("Lives in Paris")
    memory.update(m.id, text="Lives in Tokyo")
    versions = memory.history(m.id)
    assert [v.text for v in versions] == ["Lives in Paris", "Lives in Tokyo"]
    assert versions[-1].id == m.id and versions[0].superseded_by == m.id
    assert [x.text for x in memory.get_all()] == ["Lives in Tokyo"]
    assert memory.delete(m.id) is True and memory.store.history("alice", versions[0].id) == []


def test_hostile_or_missing_replaces_is_ignored_with_a_warning(db_path, local_embedder, caplog):
    alice = open_memory("alice", db_path, embedder=local_embedder)
    bob = open_memory("bob", db_path, embedder=local_embedder)
    secret = alice.add("Alice's door code is private")
    with caplog.at_level(logging.WARNING, logger="headroom.memory"):
        hijack = bob.add("Bob likes chess", replaces=secret.ref)
        ghost = bob.add("Bob likes go", replaces="m000000")
    assert alice.get(secret.id).superseded_by is None and [m.id for m in alice.get_all()] == [secret.id]
    assert {m.id for m in bob.get_all()} == {hijack.id, ghost.id}
    assert sum("does not have" in r.message for r in caplog.records) == 2


def reply_replacing(ref_of):
    """A scripted model that answers and says its new fact replaces the remembered one."""
    def reply(body):
        text = json.dumps(body["messages"])
        if "Works at Google" not in text:
            return 200, chat_completion(body, ['Noted.<memory>{"memories": [{"content": "Works at Google"}]}</memory>'])
        ref = ref_of(text)
        return 200, chat_completion(body, [
            'Congrats!<memory>{"memories": [{"content": "Works at Anthropic", "category": "fact", '
            f'"replaces": "{ref}"}}]}}</memory>'])
    return reply


def find_ref(text):
    import re
    return re.search(r"\[(\d+)\] [\d-]+, fact: Works at Google", text).group(1)


def test_replaces_through_the_inline_wrapper(db_path, local_embedder):
    with ScriptedServer() as server:
        server.handlers["/v1/chat/completions"] = reply_replacing(find_ref)
        client = with_fast_memory(openai.OpenAI(base_url=server.base_url, api_key="x"), user_id="jane",
                                  db_path=db_path)
        client.chat.completions.create(model="m", messages=[{"role": "user", "content": "I work at Google."}])
        client.memory.flush(10)
        client.chat.completions.create(model="m", messages=[{"role": "user", "content": "Where do I work? I moved."}])
        client.memory.flush(10)
    assert [m.text for m in client.memory.get_all()] == ["Works at Anthropic"]
    assert [m.text for m in client.memory.history(client.memory.get_all()[0].id)] == [
        "Works at Google", "Works at Anthropic"]


def test_replaces_through_the_background_extractor(db_path, local_embedder):
    with ScriptedServer() as server:
        def reply(body):
            system = str(body["messages"][0].get("content"))
            if "long-term memory" not in system:
                return 200, chat_completion(body, ["Sure."])
            if "Works at Google" not in system:
                return 200, chat_completion(body, ['<memory>{"memories": [{"content": "Works at Google"}]}</memory>'])
            return 200, chat_completion(body, ['<memory>{"memories": [{"content": "Works at Anthropic", '
                                               f'"replaces": "{find_ref(system)}"}}]}}</memory>'])
        server.handlers["/v1/chat/completions"] = reply
        client = with_memory(openai.OpenAI(base_url=server.base_url, api_key="x"), user_id="jane",
                             db_path=db_path)
        client.chat.completions.create(model="m", messages=[{"role": "user", "content": "I work at Google."}])
        assert client.memory.flush(30)
        client.chat.completions.create(model="m", messages=[{"role": "user", "content": "I work at Google no more."}])
        assert client.memory.flush(30)
        assert [m.text for m in client.memory.get_all()] == ["Works at Anthropic"]
        assert len(client.memory.history(client.memory.get_all()[0].id)) == 2
        client.close()


def test_said_at_shows_in_results_and_injection(db_path, local_embedder):
    with ScriptedServer() as server:
        client = with_fast_memory(openai.OpenAI(base_url=server.base_url, api_key="x"), user_id="jane",
                                  db_path=db_path)
        client.memory.add("Went hiking in the Alps", category="context", said_at=datetime(2023, 5, 8, 13, 56))
        (hit, _), = client.memory.search("hiking trip", top_k=1)
        assert hit.created_at == datetime(2023, 5, 8, 13, 56, tzinfo=timezone.utc)
        client.chat.completions.create(model="m", messages=[{"role": "user", "content": "Where did I go hiking?"}])
        assert "[1] 2023-05-08, context: Went hiking in the Alps" in server.chat_requests()[-1]["messages"][-1]["content"]
    with pytest.raises(InvalidInputError):
        client.memory.add("Bad time", said_at="last tuesday")
