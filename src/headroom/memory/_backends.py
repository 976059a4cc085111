"""Which backend a ``db_path`` names: a ``postgresql://`` URL is PostgreSQL, anything else an SQLite file.

The one place that chooses; ``open_memory``, the wrappers and the CLI all come through here, so
``$HEADROOM_MEMORY_DB`` or a ``db_path`` argument may be either, anywhere a path is accepted.
"""

from __future__ import annotations

import os

from ._store import Store

__all__ = ["open_store", "is_postgres_url", "location_of"]


def is_postgres_url(location: object) -> bool:
    return isinstance(location, str) and location.startswith(("postgresql://", "postgres://"))


def location_of(db_path: str | os.PathLike[str] | None) -> str | os.PathLike[str] | None:
    """``db_path``, else ``$HEADROOM_MEMORY_DB`` (None: the SQLite default, ``~/.headroom/memory.db``)."""
    if db_path is None or (isinstance(db_path, str) and not db_path):
        return os.environ.get("HEADROOM_MEMORY_DB") or None
    return db_path


def open_store(db_path: str | os.PathLike[str] | None, *, embedding_model: str, embedding_dim: int) -> Store:
    """The store ``db_path`` (or ``$HEADROOM_MEMORY_DB``) names, created and migrated if new."""
    location = location_of(db_path)
    if is_postgres_url(location):
        from ._postgres import postgres_store  # psycopg is imported only for PostgreSQL

        return postgres_store(str(location), embedding_model=embedding_model, embedding_dim=embedding_dim)
    from ._sqlite import SQLiteStore

    return SQLiteStore(location, embedding_model=embedding_model, embedding_dim=embedding_dim)
