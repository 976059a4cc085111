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
  engineer at a logistics company in Rotterdam") is left live: replacing it would lose the rest,
  and rewriting it is a model's job.

Each shown note is replaced at most once, by the new note sharing most words with it, and a
``replaces`` the model wrote comes first. Words are compared stemmed, as grounding does. Nothing
here needs an embedding or I/O.
"""

from __future__ import annotations

import re
from typing import Sequence

from ._grounding import stem, word_stems
from ._models import Memory
from ._parser import ExtractedMemory
from ._protocol import resolve_replaces
from ._scoring import content_words

__all__ = ["replacements", "taken_back"]

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
    words: list[str] = []
    for match in _AFTER.finditer(said):
        words += _first(content_words(match.group(1)))
    if _CHANGED.search(said):
        for match in _AFTER_NOT.finditer(said):
            words += _first(content_words(match.group(1)))
        for match in _BEFORE_ANYMORE.finditer(said):
            words += _first(list(reversed(content_words(match.group(1)))))
    return {stem(w) for w in words}


def replacements(notes: Sequence[ExtractedMemory], said: str, shown: Sequence[Memory]) -> list[str | None]:
    """For each note, what it replaces: its own ``replaces`` resolved against ``shown`` (the notes
    the model was shown), else a shown note the user's words in ``said`` take back, else None."""
    chosen = [resolve_replaces(note.replaces, shown) for note in notes]
    back = taken_back(said)
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
