import os
from pathlib import Path
from typing import Iterator

import pytest

from headroom.memory import HashEmbedder, LocalEmbedder, open_memory

from .spec_examples import DOCS

os.environ.setdefault("HF_HUB_OFFLINE", "1")


def default_model() -> str:
    """The name the default settings give a new file on this machine: the int8 variant where it
    passes its check here, else fp32 (``LocalEmbedder``)."""
    return LocalEmbedder().name


@pytest.fixture(scope="session")
def local_embedder() -> LocalEmbedder:
    """The real all-MiniLM-L6-v2, loaded once for the whole run."""
    embedder = LocalEmbedder()
    embedder.embed(["warm up"])
    return embedder


#: The backends every store, API, wrapper, queue and concurrency test runs on; HEADROOM_TEST_BACKENDS
#: (comma-separated) narrows it for a quick local run. CI runs both.
BACKENDS = [b for b in os.environ.get("HEADROOM_TEST_BACKENDS", "sqlite,postgres").split(",") if b]


@pytest.fixture(scope="session")
def postgres_server():
    """One real PostgreSQL server with pgvector for the whole run (tests/postgres.py)."""
    from .postgres import TestServer

    server = TestServer()
    yield server
    server.stop()


@pytest.fixture(params=BACKENDS)
def db_path(request, tmp_path: Path) -> Iterator[str]:
    """Where a test's memory lives: an SQLite file, or a fresh database on the test PostgreSQL server."""
    if request.param == "sqlite":
        yield str(tmp_path / "memory.db")
        return
    from .postgres import databases

    yield from databases(request.getfixturevalue("postgres_server"))


@pytest.fixture
def sqlite_path(tmp_path: Path) -> str:
    """An SQLite file, for tests of what only the SQLite backend has (the file, its modes, FTS5)."""
    return str(tmp_path / "memory.db")


@pytest.fixture
def alice(db_path, local_embedder):
    with open_memory("alice", db_path, embedder=local_embedder) as memory:
        yield memory


@pytest.fixture
def hashed(db_path):
    """A memory on a cheap deterministic embedder, for tests of logic that need no meaning."""
    with open_memory("alice", db_path, embedder=HashEmbedder()) as memory:
        yield memory


@pytest.fixture(params=DOCS, ids=lambda path: path.stem)
def doc(request):
    """A document whose examples must run: the repository's guide, and the spec where it is present."""
    return request.param
