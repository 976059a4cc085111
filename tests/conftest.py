import os
from pathlib import Path

import pytest

from headroom.memory import HashEmbedder, LocalEmbedder, open_memory

from .spec_examples import DOCS

os.environ.setdefault("HF_HUB_OFFLINE", "1")


@pytest.fixture(scope="session")
def local_embedder() -> LocalEmbedder:
    """The real all-MiniLM-L6-v2, loaded once for the whole run."""
    embedder = LocalEmbedder()
    embedder.embed(["warm up"])
    return embedder


@pytest.fixture
def db_path(tmp_path: Path) -> str:
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
