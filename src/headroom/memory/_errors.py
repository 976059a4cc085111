"""One exception hierarchy for everything headroom.memory raises on purpose.

Catch ``HeadroomMemoryError`` to catch them all. Input errors also subclass ``ValueError`` so code
written against plain Python conventions keeps working.
"""

from __future__ import annotations

__all__ = [
    "HeadroomMemoryError",
    "InvalidInputError",
    "StorageError",
    "ForeignDatabaseError",
    "EmbeddingModelMismatchError",
    "EmbeddingError",
    "EmbedderUnavailableError",
    "NotFoundError",
    "MemoryBypassWarning",
]


class HeadroomMemoryError(Exception):
    """Base class of every error raised by headroom.memory."""


class InvalidInputError(HeadroomMemoryError, ValueError):
    """An argument was rejected before anything was written (empty text, unknown category, ...)."""


class NotFoundError(HeadroomMemoryError, KeyError):
    """No memory with that id exists for this user."""

    def __str__(self) -> str:  # KeyError quotes its message; keep it readable.
        return str(self.args[0]) if self.args else "not found"


class StorageError(HeadroomMemoryError):
    """The database file could not be created, opened or written."""


class ForeignDatabaseError(StorageError):
    """The file is an SQLite database, but not one of ours; it is left untouched."""


class EmbeddingModelMismatchError(StorageError):
    """The file was built with another embedding model; mixing vector spaces would corrupt search."""


class EmbeddingError(HeadroomMemoryError):
    """The embedding model failed to produce vectors (dead service, bad response)."""


class EmbedderUnavailableError(EmbeddingError):
    """The embedding model cannot be loaded here (missing optional dependency or weights)."""


class MemoryBypassWarning(UserWarning):
    """A call of a wrapped client that reaches the model without memory (``with_raw_response``,
    ``with_streaming_response``, ``parse``, ``stream``): nothing is injected or stored for it."""
