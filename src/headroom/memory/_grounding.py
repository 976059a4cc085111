"""Whether a memory that background extraction proposes is something the user said.

An extraction model is shown the whole turn, and small ones note the assistant's side of it as the
user's facts ("Rust is known for performance, safety, and concurrency", "You're welcome!") or turn
the user's question into a note ("When is my race?"). Two rules, checked on what the model
proposes before anything is stored:

- a question is not a fact;
- a memory closer in meaning to the assistant's reply than to the user's words (by more than
  ``ASSISTANT_MARGIN`` cosine) came from the reply, unless most of its words are the user's own:
  an assistant that repeats the user's fact ("Your manager is Dr. Evans.") does not take it away.

Measured on a real model's extractions in bench/RESULTS.md ("A real model").
"""

from __future__ import annotations

from typing import Sequence

import numpy as np

from ._embedders import Embedder
from ._scoring import content_words

__all__ = ["ASSISTANT_MARGIN", "USER_WORDS", "from_user"]

ASSISTANT_MARGIN = 0.1
#: The share of a memory's content words found in the user's words above which it is theirs.
USER_WORDS = 0.8


def _stems(text: str) -> list[str]:
    """Content words cut to five letters: "preferring" and "prefer", "scientist" and "science" meet."""
    return [word[:5] for word in content_words(text, limit=64)]


def user_share(memory: str, said: str) -> float:
    """The share of ``memory``'s content words that the user's words hold (1.0 for none at all)."""
    words = _stems(memory)
    if not words:
        return 1.0
    theirs = set(_stems(said))
    return sum(word in theirs for word in words) / len(words)


def from_user(memories: Sequence[str], said: str, reply: str, embedder: Embedder) -> list[bool]:
    """For each proposed memory text, whether it may be stored as something the user said."""
    if not memories:
        return []
    keep = [not text.rstrip().endswith("?") for text in memories]
    if not reply.strip() or not said.strip():
        return keep
    vectors = np.asarray(embedder.embed([*memories, said, reply]), dtype=np.float32)
    vectors /= np.maximum(np.linalg.norm(vectors, axis=1, keepdims=True), 1e-12)
    user, assistant = vectors[-2], vectors[-1]
    for i, text in enumerate(memories):
        if keep[i] and float(vectors[i] @ assistant) > float(vectors[i] @ user) + ASSISTANT_MARGIN:
            keep[i] = user_share(text, said) >= USER_WORDS
    return keep
