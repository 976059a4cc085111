"""A throwaway PostgreSQL server with pgvector for benchmarks (the one the tests use, tests/postgres.py):
``with postgres() as new_database: url = new_database()``."""

from __future__ import annotations

import sys
from contextlib import contextmanager
from pathlib import Path
from typing import Callable, Iterator

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from tests.postgres import TestServer  # noqa: E402


@contextmanager
def postgres(durable: bool = True, directory: str | None = None) -> Iterator[Callable[..., str]]:
    """A server for the benchmark's run; ``durable`` turns fsync back on (the tests run without it),
    so write figures are those of a real server. With ``directory`` its data is kept there (and
    reused if there already)."""
    server = TestServer(directory)
    if durable:
        # fsync on, and memory as a server of its own would have (4 GB of shared buffers: the default
        # 128 MB holds a tenth of a million memories' rows and HNSW graph).
        server.server.psql("ALTER SYSTEM SET fsync = on; ALTER SYSTEM SET synchronous_commit = on; "
                           "ALTER SYSTEM SET full_page_writes = on; ALTER SYSTEM SET shared_buffers = '4GB'; "
                           "ALTER SYSTEM SET effective_cache_size = '16GB';")
        server.pg_ctl("restart")
    try:
        yield lambda name=None: server.url(name) if name else server.url(server.new_database())
    finally:
        server.stop()
