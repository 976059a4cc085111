"""A correction the user states in words replaces the old note even when the model does not say so."""

import json

import openai
import pytest

from headroom._scripted_server import ScriptedServer, chat_completion
from headroom.memory import with_fast_memory, with_memory
from headroom.memory._corrections import new_values, replacements, revisions, taken_back
from headroom.memory._models import Memory, utcnow
from headroom.memory._parser import ExtractedMemory


def note(text, replaces=None):
    return ExtractedMemory(text, "fact", replaces)


def known(*texts):
    now = utcnow()
    return [Memory(f"{i:032x}", "u", text, "fact", now, now) for i, text in enumerate(texts, 1)]


def test_the_words_a_user_takes_back():
    # The three corrections of bench/conversations.py, and common ways of saying one.
    assert taken_back("Actually I moved to Amsterdam last month, not Rotterdam anymore.") == {"rotte"}
    assert taken_back("Correction: the race is in May, it got moved from April.") == {"april"}
    assert taken_back("I now use Polars instead of pandas, it's much faster.") == {"panda"}
    assert taken_back("I don't use Java anymore, Kotlin only now") == {"java"}
    assert taken_back("I no longer work at Google") == {"googl"}
    # "not" without a change, and "from" without a verb of change, take nothing back.
    for said in ("I'm not sure about Rust, but Go looks fine", "I'm from Spain", "Not bad, thanks!",
                 "Which is better, pandas or Polars?"):
        assert taken_back(said) == set(), said


def test_a_new_note_replaces_the_shown_note_holding_the_taken_back_word():
    shown = known("Lives in Rotterdam", "Uses a standing desk", "Prefers Python for backend work")
    said = "Actually I moved to Amsterdam last month, not Rotterdam anymore."
    assert replacements([note("Moved to Amsterdam"), note("Likes canals")], said, shown) == [shown[0].id, None]
    # A note that brings nothing new of the user's words replaces nothing ("Not in Rotterdam"
    # holds no new value), nor is an unrelated shown note touched.
    assert replacements([note("No longer lives in Rotterdam")], said, shown) == [None]
    said = "I don't use Java anymore, I use Kotlin now"
    java, desk = known("Uses Java at work", "Uses a standing desk")
    assert replacements([note("Uses Kotlin")], said, [desk, java]) == [java.id]
    # A shown note that says more than the corrected value stays live: replacing it would lose the rest.
    intro = known("I'm Maya, a backend engineer at a logistics company in Rotterdam")
    assert replacements([note("Moved to Amsterdam")], said, intro) == [None]
    race = known("Training for the Leeds half marathon in April")
    moved = "Correction: the race is in May, it got moved from April."
    assert replacements([note("The race is in May")], moved, race) == [None]
    assert replacements([note("The Leeds half marathon is in May, not April")], moved, race) == [race[0].id]
    # The model's own choice comes first, and one old note is replaced once.
    assert replacements([note("Uses a sit-stand desk now", "2"), note("Lives in Amsterdam")],
                        "Actually not Rotterdam anymore, Amsterdam", shown) == [shown[1].id, shown[0].id]
    assert replacements([note("Lives in Amsterdam"), note("Moved to Amsterdam")],
                        "Actually not Rotterdam anymore, Amsterdam", shown) == [shown[0].id, None]
    # Nothing taken back, nothing replaced.
    assert replacements([note("Moved to Amsterdam")], "I moved to Amsterdam", shown) == [None]
    # A number the model wrote for a note that shares nothing with the new one, in a message that
    # takes nothing back, is wrong: the old note is kept.
    race, lina = known("Training for the Leeds half marathon in April", "Has a daughter called Lina")
    assert replacements([note("My daughter Lina just turned 7.", "1"), note("Lina is 7", "2")],
                        "My daughter Lina just turned 7.", [race, lina]) == [None, lina.id]
    assert replacements([note("The race is in May", "1")], "Correction: moved from April", [race]) == [race.id]


def block(*texts):
    return "<memory>" + json.dumps({"memories": [{"content": t, "category": "fact"} for t in texts]}) + "</memory>"


def test_a_stated_correction_through_the_inline_wrapper(db_path, local_embedder):
    """The model writes the new fact without ``replaces`` (as small models do); the user's words
    take the old one back, so only the new one stays live, the old one kept in its history."""
    with ScriptedServer() as server:
        def reply(body):
            said = body["messages"][-1]["content"]
            if "Amsterdam" in said:
                return 200, chat_completion(body, ["Welcome to Amsterdam!" + block("Moved to Amsterdam")])
            return 200, chat_completion(body, ["Nice city." + block("Lives in Rotterdam")])
        server.handlers["/v1/chat/completions"] = reply
        client = with_fast_memory(openai.OpenAI(base_url=server.base_url, api_key="x"), user_id="jane",
                                  db_path=db_path, embedder=local_embedder)
        client.chat.completions.create(model="m", messages=[{"role": "user", "content": "I live in Rotterdam."}])
        client.memory.flush(10)
        answer = client.chat.completions.create(model="m", messages=[
            {"role": "user", "content": "Actually I moved to Amsterdam last month, not Rotterdam anymore."}])
        client.memory.flush(10)
    assert answer.choices[0].message.content == "Welcome to Amsterdam!"
    assert [m.text for m in client.memory.get_all()] == ["Moved to Amsterdam"]
    assert [m.text for m in client.memory.history(client.memory.get_all()[0].id)] == [
        "Lives in Rotterdam", "Moved to Amsterdam"]


def through_background(db_path, embedder, turns):
    """Each (user message, the note the extraction call writes for it) through ``with_memory``, in
    order; the user's live notes after the last."""
    with ScriptedServer() as server:
        def reply(body):
            if "long-term memory" not in str(body["messages"][0].get("content")):
                return 200, chat_completion(body, ["Sure."])
            return 200, chat_completion(body, [block(next(n for s, n in turns if s in body["messages"][-1]["content"]))])
        server.handlers["/v1/chat/completions"] = reply
        client = with_memory(openai.OpenAI(base_url=server.base_url, api_key="x"), user_id="jane",
                             db_path=db_path, embedder=embedder)
        for said, _ in turns:
            client.chat.completions.create(model="m", messages=[{"role": "user", "content": said}])
            assert client.memory.flush(30)
        live = sorted(m.text for m in client.memory.get_all())
        client.close()
    return live


def test_a_stated_correction_through_the_background_extractor(db_path, local_embedder):
    assert through_background(db_path, local_embedder, [
        ("I load the ward data with pandas.", "Loads the ward data with pandas"),
        ("I now use Polars instead of pandas, it's much faster.", "Loads the ward data with Polars"),
    ]) == ["Loads the ward data with Polars"]


def test_the_value_a_user_puts_in_place_of_the_one_taken_back():
    assert new_values("Actually I moved to Amsterdam last month, not Rotterdam anymore.") == {"rotte": "Amsterdam"}
    assert new_values("Correction: the race is in May, it got moved from April.") == {"april": "May"}
    assert new_values("I now use Polars instead of pandas, it's much faster.") == {"panda": "Polars"}
    assert new_values("I don't use Java anymore, Kotlin only now") == {"java": "Kotlin"}
    assert new_values("We switched from MySQL to PostgreSQL last year") == {"mysql": "PostgreSQL"}
    assert new_values("The standup moved from Monday to Thursday") == {"monda": "Thursday"}
    # Nothing in place of it, no change said outright, or two candidates of the same kind: no value.
    for said in ("I no longer work at Google", "I use Rust instead of Go for CLIs",
                 "Not Rotterdam anymore: Paris or Berlin, I haven't decided", "Which is better, pandas or Polars?"):
        assert new_values(said) == {}, said


def test_a_note_that_says_more_is_rewritten_with_the_new_value():
    maya, desk, about, negated, done = known(
        "Maya is a backend engineer at a logistics company in Rotterdam", "Uses a standing desk",
        "Rotterdam is rainy", "No longer lives in Rotterdam", "Moved to Amsterdam from Rotterdam")
    said = "Actually I moved to Amsterdam last month, not Rotterdam anymore."
    # Unrelated notes, notes about the old value itself, notes that take it back themselves and
    # notes already holding the new value are left as they are.
    assert revisions(said, [maya, desk, about, negated, done], [None]) == [
        {"text": "Maya is a backend engineer at a logistics company in Amsterdam", "category": "fact",
         "replaces": maya.id}]
    # A note replaced outright this turn is not rewritten as well.
    assert revisions(said, [maya], [maya.id]) == []
    race, = known("I'm training for the Leeds half marathon in April.")
    assert [r["text"] for r in revisions("Correction: the race is in May, it got moved from April.", [race], [])] == [
        "I'm training for the Leeds half marathon in May."]
    # Without a value in its place, nothing is rewritten.
    assert revisions("I no longer work at Google", known("Works at Google in Zurich"), []) == []


def test_a_note_that_says_more_is_revised_through_both_wrappers(db_path, local_embedder):
    """The old note keeps what it said besides the corrected value; its history keeps the old text."""
    intro = "Maya is a backend engineer at a logistics company in Rotterdam"
    with ScriptedServer() as server:
        def reply(body):
            said = body["messages"][-1]["content"]
            if "Amsterdam" in said:
                return 200, chat_completion(body, ["Welcome to Amsterdam!" + block("Moved to Amsterdam last month")])
            return 200, chat_completion(body, ["Hi Maya." + block(intro)])
        server.handlers["/v1/chat/completions"] = reply
        client = with_fast_memory(openai.OpenAI(base_url=server.base_url, api_key="x"), user_id="maya",
                                  db_path=db_path, embedder=local_embedder)
        client.chat.completions.create(model="m", messages=[
            {"role": "user", "content": "Hi! I'm Maya, a backend engineer at a logistics company in Rotterdam."}])
        client.memory.flush(10)
        client.chat.completions.create(model="m", messages=[
            {"role": "user", "content": "Actually I moved to Amsterdam last month, not Rotterdam anymore."}])
        client.memory.flush(10)
    live = {m.text: m for m in client.memory.get_all()}
    assert set(live) == {"Moved to Amsterdam last month",
                         "Maya is a backend engineer at a logistics company in Amsterdam"}
    revised = live["Maya is a backend engineer at a logistics company in Amsterdam"]
    assert [m.text for m in client.memory.history(revised.id)] == [intro, revised.text]


def test_a_revision_through_the_background_extractor(db_path, local_embedder):
    assert through_background(db_path, local_embedder, [
        ("I use Python and pandas every day.", "Uses Python and pandas every day"),
        ("I now use Polars instead of pandas, it's much faster.", "Switched to Polars"),
    ]) == ["Switched to Polars", "Uses Python and Polars every day"]


def test_a_note_the_turn_did_not_show_is_revised_too(db_path, local_embedder):
    """The old value's note scored under the injection floor, so the model was not shown it; the
    user's words still take its value back, and a search for the taken-back word finds it."""
    with ScriptedServer() as server:
        server.handlers["/v1/chat/completions"] = lambda body: (200, chat_completion(body, [
            "Good luck!" + block("The race is in May")]))
        client = with_fast_memory(openai.OpenAI(base_url=server.base_url, api_key="x"), user_id="omar",
                                  db_path=db_path, embedder=local_embedder, min_score=0.99)
        old = client.memory.add("I'm training for the Leeds half marathon in April.")
        client.memory.add("Teaches chemistry in April and May")  # holds the new value already: left
        client.chat.completions.create(model="m", messages=[
            {"role": "user", "content": "Correction: the race is in May, it got moved from April."}])
        assert "remembered_context" not in json.dumps(server.requests[-1].body)  # nothing was shown
        client.memory.flush(10)
        live = sorted(m.text for m in client.memory.get_all())
        assert live == ["I'm training for the Leeds half marathon in May.", "Teaches chemistry in April and May",
                        "The race is in May"]
        assert client.memory.get(old.id).superseded_by is not None
        client.close()


def test_a_revision_close_in_meaning_still_replaces_the_old_note(db_path, local_embedder):
    """"... in April" and "... in May" are near duplicates by cosine (0.98); the revision must not
    be merged back into the note it corrects (background extraction embeds before it writes)."""
    assert through_background(db_path, local_embedder, [
        ("I'm training for the Leeds half marathon in April.", "I'm training for the Leeds half marathon in April."),
        ("Correction: the race is in May, it got moved from April.", "The race is in May, it got moved from April."),
    ]) == ["I'm training for the Leeds half marathon in May.", "The race is in May, it got moved from April."]


@pytest.mark.parametrize("fallback", [False, True])
def test_a_stated_correction_revises_even_when_the_model_notes_nothing(db_path, local_embedder, fallback):
    with ScriptedServer() as server:
        def reply(body):
            if "long-term memory" in str(body["messages"][0].get("content")):
                return 200, chat_completion(body, ['{"memories": []}'])  # the extraction notes nothing either
            return 200, chat_completion(body, ['Good luck! <memory>{"memories": []}</memory>'])
        server.handlers["/v1/chat/completions"] = reply
        client = with_fast_memory(openai.OpenAI(base_url=server.base_url, api_key="x"), user_id="omar",
                                  db_path=db_path, embedder=local_embedder, fallback_extraction=fallback)
        client.memory.add("I'm training for the Leeds half marathon in April.")
        answer = client.chat.completions.create(model="m", messages=[
            {"role": "user", "content": "Correction: the race is in May, it got moved from April."}])
        assert client.memory.flush(30)
        assert answer.choices[0].message.content == "Good luck!"
        assert [m.text for m in client.memory.get_all()] == ["I'm training for the Leeds half marathon in May."]
        client.close()
