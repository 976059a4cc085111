"""Whether a note a model proposes (in its reply's block, or as background extraction) is
something the user said.

A model is shown the whole turn, and small ones note the assistant's side of it as the user's
facts ("Rust is known for performance, safety, and concurrency", "You're welcome!"), turn the
user's question into a note ("When is my race?"), or answer a question with an invented fact and
note it ("Where do I work?" -> "Works at Google"). Rules, checked on what the model proposes
before anything is stored; "the user's words" means more than half of a note's content words
(stemmed) appear in what the user said this turn:

- a question is not a fact, nor is a note about the chat rather than the user ("Thanks", "user
  said 'haha nice'", "User greeted with a good morning message");
- a note with almost none of its words in anything the user said in the conversation (less than
  ``INVENTED_BELOW`` of them) is the model's invention, not the user's fact: small models write
  a career for a user who gave only a job title ("Hi, I'm a backend engineer" -> "Developed a new
  API for the company's mobile app"), or note their own refusal ("I'm sorry, I can't assist");
- on a turn where the user only asked questions, a note must be almost all in the user's words
  (``ASKED_WORDS``): an answer to a question is not something the user said, nor is the question
  restated (both modes: it needs no embedding);
- with an embedder (background extraction, off the caller's path): a note closer in meaning to
  the assistant's reply than to the user's message (by more than ``ASSISTANT_MARGIN`` cosine) came
  from the reply, unless it is in the user's words: an assistant that repeats the user's fact
  ("Your manager is Dr. Evans.") does not take it away.

Measured on a real model's extractions in bench/RESULTS.md ("A real model").
"""

from __future__ import annotations

import re
from typing import Sequence

import numpy as np

from ._embedders import Embedder
from ._scoring import content_words

__all__ = ["ASKED_WORDS", "ASSISTANT_MARGIN", "INVENTED_BELOW", "USER_WORDS", "from_user", "stem",
           "tells_about_self", "user_share", "word_stems"]

ASSISTANT_MARGIN = 0.1
#: The share of a note's content words found in the user's words above which it is theirs.
USER_WORDS = 0.5
#: On a turn of questions only, the share of a note's words that must be the user's: a question
#: carries a fact only in passing ("my trip to Japan next week"), and a note that restates the
#: question with a word or two of the answer ("Idea for a lab demo for my class: Sodium Hydroxide
#: Reactivity") is not one.
ASKED_WORDS = 0.75
#: Below this share of its words in anything the user said, a note is invented.
INVENTED_BELOW = 0.25
_SUFFIXES = ("ing", "ed", "es", "s")
_DIGIT = re.compile(r"(?<!\w)(?<!\d[.,])\d(?!\w|[.,]\d)")  # "7" and "7." but not "7.5" or "v7"
_PLEASANTRY = (r"(?:thanks|thank you|you'?re welcome|hello|hi|hey|good (?:morning|afternoon|evening|night)|bye|"
               r"goodbye|ok(?:ay)?|lol|haha|nice|cool|great|awesome|wow|yes|yeah|sure|no worries)")
#: Notes about the conversation itself: pleasantries, alone or strung together ("Haha nice", from
#: "haha nice" on the 1.5B model), and the user's words reported as words.
_ABOUT_THE_CHAT = re.compile(
    rf"^\W*(?:(?:the )?user (?:greeted|thanked|said\s*[:'\"\u201c])|(?:{_PLEASANTRY}\b\W*)+$)", re.IGNORECASE)


_FIRST_PERSON = re.compile(r"\b(?:i|i'm|im|i've|i'd|i'll|my|me|mine|we|we're|our|us)\b", re.IGNORECASE)
_SENTENCE = re.compile(r"(?<=[.!?])\s+|\n")


def tells_about_self(said: str) -> bool:
    """Whether the user's words state something about them: a sentence that is not a question, in
    the first person, with two or more content words besides pleasantries ("I'm Priya, a data
    scientist" does; "Thanks, I'll try that" and "How are you?" do not)."""
    for sentence in _SENTENCE.split(said):
        sentence = sentence.strip()
        if sentence and not sentence.endswith("?") and _FIRST_PERSON.search(sentence):
            words = [w for w in content_words(sentence) if not re.fullmatch(_PLEASANTRY, w)]
            if len(words) >= 2:
                return True
    return False


def stem(word: str) -> str:
    """A word without a common suffix, cut to five letters: "works" and "work", "preferring" and
    "prefer", "snacks" and "snack" meet (a crude stemmer is enough to compare two short texts)."""
    for suffix in _SUFFIXES:
        if word.endswith(suffix) and len(word) - len(suffix) >= 3:
            word = word[: -len(suffix)]
            break
    return word[:5]


def word_stems(text: str, limit: int = 64) -> set[str]:
    """The stemmed content words of ``text``, as a set (no numbers): what two texts share."""
    return {stem(word) for word in content_words(text, limit=limit)}


def _stems(text: str) -> list[str]:
    # Numbers count, one digit too (content words are two characters or more): "Lina turned 7
    # years old" is the user's "Lina just turned 7" by its name and its number.
    return [stem(word) for word in content_words(text, limit=64)] + list(dict.fromkeys(_DIGIT.findall(text)))


def user_share(memory: str, said: str) -> float:
    """The share of ``memory``'s content words that the user's words hold (1.0 for none at all)."""
    words = _stems(memory)
    if not words:
        return 1.0
    theirs = set(_stems(said))
    return sum(word in theirs for word in words) / len(words)


def _asks_only(said: str) -> bool:
    lines = [line.strip() for line in said.splitlines() if line.strip()]
    return bool(lines) and all(line.endswith("?") for line in lines)


def from_user(memories: Sequence[str], said: str, reply: str, embedder: Embedder | None = None,
              heard: str | None = None, remembered: Sequence[str] = ()) -> list[bool]:
    """For each proposed note, whether it may be stored as something the user said (``said``: the
    user's messages of the turn, one per line; ``reply``: the assistant's answer; ``heard``: all
    the user's messages the model was shown, when more than ``said``; ``remembered``: the user's
    notes the model was shown, whose words are the user's too when a note restates one, as a
    correction does: "The Leeds half marathon is in May, not April")."""
    everything = heard if heard is not None else said
    keep = [not text.rstrip().endswith("?") and not _ABOUT_THE_CHAT.search(text)
            and user_share(text, everything) >= INVENTED_BELOW for text in memories]
    if _asks_only(said):
        keep = [k and user_share(text, said) >= ASKED_WORDS for k, text in zip(keep, memories)]
    if embedder is None or not any(keep) or not reply.strip() or not said.strip():
        return keep
    vectors = np.asarray(embedder.embed([*memories, said, reply]), dtype=np.float32)
    vectors /= np.maximum(np.linalg.norm(vectors, axis=1, keepdims=True), 1e-12)
    user, assistant = vectors[-2], vectors[-1]
    theirs = "\n".join([said, *remembered])
    for i, text in enumerate(memories):
        if keep[i] and float(vectors[i] @ assistant) > float(vectors[i] @ user) + ASSISTANT_MARGIN:
            keep[i] = user_share(text, theirs) > USER_WORDS
    return keep
