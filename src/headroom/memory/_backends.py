"""Which backend a ``db_path`` names: a ``postgresql://`` URL is PostgreSQL, anything else an SQLite file.

The one place that chooses; ``open_memory``, the wrappers and the CLI all come through here, so
``$HEADROOM_MEMORY_DB`` or a ``db_path`` argument may be either, anywhere a path is accepted.
"""

from __future__ import annotations

import logging
import os
from typing import Any

from ._embedders import Embedder, LocalEmbedder, make_embedder
from ._store import Store

logger = logging.getLogger(__name__)

__all__ = ["open_store", "is_postgres_url", "location_of", "recorded_model", "embedder_for"]


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


def recorded_model(db_path: str | os.PathLike[str] | None) -> str | None:
    """The embedding model the store at ``db_path`` records, read without creating or migrating
    anything; None for a store that does not exist yet or cannot be read (opening it will say why).

    The default local model follows it: a file embedded by the int8 variant keeps it."""
    location = location_of(db_path)
    try:
        if is_postgres_url(location):
            from ._postgres import recorded_model as in_database

            return in_database(str(location))
        from ._sqlite import recorded_model as in_file

        return in_file(location)
    except Exception as exc:  # unreadable or not ours: opening the store reports it properly
        logger.debug("cannot read the embedding model of %s: %s", location, exc)
        return None


def embedder_for(db_path: str | os.PathLike[str] | None, use_local_embeddings: bool = True,
                 embedding_model: str | None = None, client: Any = None, store: Store | None = None,
                 embedder: Embedder | None = None) -> Embedder:
    """The embedder for the store at ``db_path`` (or ``store``, open already): ``embedder`` if given,
    else ``make_embedder``'s choice. A ``LocalEmbedder`` left to choose its variant (the default)
    takes the one the store recorded, so an fp32 file stays fp32 and an int8 file int8."""
    if embedder is None:
        embedder = make_embedder(use_local_embeddings, embedding_model, client)
    if isinstance(embedder, LocalEmbedder) and embedder.follows_store:
        embedder = embedder.variant_for(store.embedding_model if store is not None else recorded_model(db_path))
    return embedder
