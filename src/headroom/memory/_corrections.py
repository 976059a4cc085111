"""What a new note replaces, when the model does not say: a correction the user states in words.

Small models almost never fill in ``replaces`` (none of the corrections on the 1.5B model, in
bench/RESULTS.md "A real model"), so a correction left the old note live beside the new one
("Lives in Rotterdam" and "Moved to Amsterdam") and the next answer could use either. The user's
own words usually say what no longer holds, and the rule reads them:

- the user takes a word back: the first content word after "instead of", "rather than", "no
  longer", or "from" after a verb of change ("moved from April"); after "not", and before
  "anymore", only when the message also says that something changed (``_CHANGED``), since "not"
  alone is mostly "not sure";
- a note stored this turn replaces a note the model was shown that holds a taken-back word, when
  it brings a word of the user's message that the old note lacks (the new value: Amsterdam, May,
  Polars), and carries all the old note said but the taken-back word, give or take one word
  ("Lives in Rotterdam" -> "Moved to Amsterdam"). A note that says more ("I'm Maya, a backend
  engineer at a logistics company in Rotterdam") is not replaced, which would lose the rest: it is
  revised (below).

Each shown note is replaced at most once, by the new note sharing most words with it, and a
``replaces`` the model wrote comes first.

A shown note that says more keeps the rest but not the taken-back value: where the user's words
also give the value in its place, ``revisions`` rewrites the note with it ("... a logistics
company in Rotterdam" -> "... in Amsterdam"), stored as the note's next version (its history keeps
the old one). Besides the shown notes, the user's notes that hold the taken-back value are
looked up (``holding_taken_back``). The new value is read only from what the words say outright:
"Y instead of X", "moved from X to Y", "moved to Y" beside a single taken-back word, or the one
other word of the same kind (a month for a month, a number for a number, a name for a name: "the
race is in May, it got moved from April"). Without one, the note stays as it is.

Words are compared stemmed, as grounding does. Nothing here needs an embedding or I/O.
"""

from __future__ import annotations

import re
from typing import Callable, Sequence

from ._grounding import stem, word_stems
from ._models import Memory
from ._parser import ExtractedMemory
from ._protocol import resolve_replaces
from ._scoring import STOPWORDS, content_words

__all__ = ["holding_taken_back", "new_values", "replacements", "revisions", "taken_back"]

_CHANGE_VERB = (r"(?:moved|changed|switched|went|shifted|rescheduled|postponed|pushed|migrated|relocated|"
                r"transferred|upgraded|downgraded)")
#: A message that says something changed: "not X" and "X anymore" are read as taking X back only then.
_CHANGED = re.compile(rf"\b(?:actually|correction|anymore|any more|no longer|instead|now|{_CHANGE_VERB})\b",
                      re.IGNORECASE)
_AFTER = re.compile(rf"\b(?:instead of|rather than|no longer|{_CHANGE_VERB}(?: \w+)? from)\b([^,.;:!?\n]*)",
                    re.IGNORECASE)
_AFTER_NOT = re.compile(r"\bnot\b([^,.;:!?\n]*)", re.IGNORECASE)
_BEFORE_ANYMORE = re.compile(r"([^,.;:!?\n]*)\bany ?more\b", re.IGNORECASE)
#: Words between the cue and what is taken back: "no longer *work at* Google", "don't *use* Java anymore".
_FILLER = frozenset("use uses using used work works working worked live lives living lived like likes liking eat "
                    "eats eating drink drinks drinking go goes going play plays playing anymore more".split())


def _first(words: list[str]) -> list[str]:
    found = [w for w in words if w not in _FILLER]
    return found[:1]


def taken_back(said: str) -> set[str]:
    """The (stemmed) words the user says no longer hold, in ``said``."""
    return {stem(w) for w in _taken_back_words(said)}


def _taken_back_words(said: str) -> list[str]:
    words: list[str] = []
    for match in _AFTER.finditer(said):
        words += _first(content_words(match.group(1)))
    if _CHANGED.search(said):
        for match in _AFTER_NOT.finditer(said):
            words += _first(content_words(match.group(1)))
        for match in _BEFORE_ANYMORE.finditer(said):
            words += _first(list(reversed(content_words(match.group(1)))))
    return words


def replacements(notes: Sequence[ExtractedMemory], said: str, shown: Sequence[Memory]) -> list[str | None]:
    """For each note, what it replaces: its own ``replaces`` resolved against ``shown`` (the notes
    the model was shown), else a shown note the user's words in ``said`` take back, else None.
    A number the model wrote is believed only if the two notes share a word or the user takes back
    a word of the old one: the 1.5B model, asked for a number or null, gave "My daughter Lina just
    turned 7." the number of "Training for the Leeds half marathon in April", which it would have
    deleted."""
    chosen = [resolve_replaces(note.replaces, shown) for note in notes]
    back = taken_back(said)
    by_id = {m.id: m for m in shown}
    for i, note in enumerate(notes):
        old = by_id.get(chosen[i] or "")
        if old is not None and not word_stems(old.text) & (word_stems(note.text) | back):
            chosen[i] = None  # nothing in common and nothing taken back: the model's number is wrong
    if not back:
        return chosen
    theirs = word_stems(said) - back
    mine = [word_stems(note.text) for note in notes]
    taken = {value for value in chosen if value is not None}
    for old in shown:
        held = word_stems(old.text)
        if old.id in taken or not held & back:
            continue
        candidates = [i for i, words in enumerate(mine)
                      if chosen[i] is None and (words & theirs) - held and len(held - back - words) <= 1]
        if candidates:
            best = max(candidates, key=lambda i: len(mine[i] & held))
            chosen[best] = old.id
            taken.add(old.id)
    return chosen


_INSTEAD = re.compile(r"([^,.;:!?\n]*)\b(?:instead of|rather than)\b([^,.;:!?\n]*)", re.IGNORECASE)
_FROM_TO = re.compile(rf"\b{_CHANGE_VERB}(?: \w+)? from\b([^,.;:!?\n]*?)\b(?:to|into)\b([^,.;:!?\n]*)", re.IGNORECASE)
_CHANGED_TO = re.compile(rf"\b{_CHANGE_VERB}(?: \w+)? (?:to|into)\b([^,.;:!?\n]*)", re.IGNORECASE)
#: A change said outright: "Y instead of X" alone may be a plain preference ("I use Rust instead
#: of Go for CLIs"), not a correction of what a note says, so a revision needs one of these too.
_REVISES = re.compile(rf"\b(?:actually|correction|anymore|any more|no longer|not|now|{_CHANGE_VERB})\b",
                      re.IGNORECASE)
#: A note that itself takes something back ("No longer in Rotterdam") is not rewritten.
_NEGATED = re.compile(r"\b(?:not|no longer|instead of|rather than|anymore|any more)\b", re.IGNORECASE)
_TOKEN = re.compile(r"[A-Za-z0-9][A-Za-z0-9'-]*")
_SENTENCE_START = re.compile(r"(?:^|[.!?\n]\s*)$")
_MONTHS = frozenset("january february march april may june july august september october november december".split())
_DAYS = frozenset("monday tuesday wednesday thursday friday saturday sunday".split())


def _kind(token: str, first: bool) -> str | None:
    """What sort of value ``token`` is, where that is plain from the word: a month, a day, a
    number, or a name (capitalised, not at a sentence's start); None for any other word."""
    lower = token.lower()
    if lower in _MONTHS and token[0].isupper():
        return "month"
    if lower in _DAYS:
        return "day"
    if token.isdigit():
        return "number"
    if token[0].isupper() and not first and lower not in STOPWORDS:
        return "name"
    return None


def _tokens(said: str) -> list[tuple[str, str | None]]:
    return [(m.group(0), _kind(m.group(0), bool(_SENTENCE_START.search(said[: m.start()]))))
            for m in _TOKEN.finditer(said)]


def _as_written(word: str, said: str) -> str:
    for token in _TOKEN.findall(said):
        if token.lower() == word:
            return token
    return word


def new_values(said: str) -> dict[str, str]:
    """For each word the user takes back in ``said`` (stemmed, as ``taken_back`` gives it), the
    word they put in its place, as they wrote it, where their words say so outright."""
    back = taken_back(said)
    if not back or not _REVISES.search(said):
        return {}
    values: dict[str, str] = {}
    for match in _INSTEAD.finditer(said):
        before = [w for w in content_words(match.group(1)) if w not in _FILLER]
        after = _first(content_words(match.group(2)))
        if before and after:
            values[stem(after[0])] = before[-1]
    for match in _FROM_TO.finditer(said):
        old, new = _first(content_words(match.group(1))), _first(content_words(match.group(2)))
        if old and new:
            values[stem(old[0])] = new[0]
    left = [word for word in back if word not in values]
    if len(left) == 1:
        moved_to = [w for match in _CHANGED_TO.finditer(said) for w in _first(content_words(match.group(1)))]
        tokens = _tokens(said)
        kinds = {kind for token, kind in tokens if stem(token.lower()) == left[0]} - {None}
        alike = {token.lower() for token, kind in tokens if kind in kinds and stem(token.lower()) != left[0]}
        if moved_to and stem(moved_to[0]) not in back:
            values[left[0]] = moved_to[0]
        elif len(alike) == 1:
            values[left[0]] = alike.pop()
    return {old: _as_written(new, said) for old, new in values.items() if old in back and stem(new) != old}


def holding_taken_back(said: str, search: Callable[[str], Sequence[Memory]]) -> list[Memory]:
    """The user's notes that hold a value ``said`` takes back and gives a new one for, found by
    ``search`` (the user's memory search, given the taken-back words): a note the turn did not
    show (its cosine to the message under the injection floor) may hold the old value too. Only
    the search is I/O, and it runs only when ``said`` is such a correction."""
    values = new_values(said)
    if not values:
        return []
    words = [word for word in _taken_back_words(said) if stem(word) in values]
    return [m for m in search(" ".join(dict.fromkeys(words))) if word_stems(m.text) & values.keys()]


def revisions(said: str, shown: Sequence[Memory], replaced: Sequence[str | None]) -> list[dict[str, str | None]]:
    """Memory inputs that rewrite the shown notes holding a value the user takes back in ``said``
    with the value they give in its place (``new_values``): the old note's text with each such
    word swapped, its category, and ``replaces`` its id. Left as they are: notes already
    ``replaced`` this turn, notes that hold the new value already, notes that take something back
    themselves, and notes about the taken-back thing (it is their first word: "Pandas is slow" is
    no more true of Polars)."""
    values = new_values(said)
    if not values:
        return []
    out: list[dict[str, str | None]] = []
    for old in shown:
        held = word_stems(old.text)
        if old.id in replaced or not held & values.keys() or _NEGATED.search(old.text):
            continue
        if any(stem(new.lower()) in held for old_word, new in values.items() if old_word in held):
            continue
        first = content_words(old.text, limit=1)
        if first and stem(first[0]) in values:
            continue
        text = _TOKEN.sub(lambda m: values.get(stem(m.group(0).lower()), m.group(0)), old.text)
        out.append({"text": text, "category": old.category, "replaces": old.id})
    return out
