"""Persistent memory for LLM applications.

``open_memory(user_id)`` gives the memory API of one user on its own; the client wrappers build on
it. Everything public is listed in ``__all__``; modules starting with ``_`` are private.
"""

from ._aio import AsyncUserMemory
from ._api import MemoryInput, UserMemory, open_memory
from ._background import with_memory
from ._embedders import Embedder, HashEmbedder, LocalEmbedder, OpenAIEmbedder
from ._errors import (
    EmbedderUnavailableError,
    EmbeddingError,
    EmbeddingModelMismatchError,
    ForeignDatabaseError,
    HeadroomMemoryError,
    InvalidInputError,
    MemoryBypassWarning,
    NotFoundError,
    StorageError,
)
from ._fast import AsyncMemoryClient, MemoryClient, with_fast_memory
from ._jobs import Job, JobQueue, LeaseLost, RetryPolicy
from ._models import CATEGORIES, MAX_TEXT_CHARS, Category, Memory, Source
from ._sqlite import SQLiteStore
from ._sqlite_file import default_db_path
from ._store import Store
from ._stream import AsyncMemoryStream, MemoryStream

__all__ = [
    "CATEGORIES",
    "MAX_TEXT_CHARS",
    "Category",
    "Embedder",
    "EmbedderUnavailableError",
    "EmbeddingError",
    "EmbeddingModelMismatchError",
    "ForeignDatabaseError",
    "HashEmbedder",
    "HeadroomMemoryError",
    "InvalidInputError",
    "LocalEmbedder",
    "Memory",
    "MemoryBypassWarning",
    "MemoryInput",
    "NotFoundError",
    "OpenAIEmbedder",
    "SQLiteStore",
    "Source",
    "StorageError",
    "Store",
    "UserMemory",
    "default_db_path",
    "open_memory",
    "with_fast_memory",
    "with_memory",
    "RetryPolicy",
    "Job",
    "JobQueue",
    "LeaseLost",
    "MemoryClient",
    "AsyncMemoryClient",
    "AsyncUserMemory",
    "MemoryStream",
    "AsyncMemoryStream",
]
