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
def postgres(durable: bool = True) -> Iterator[Callable[[], str]]:
    """A server for the benchmark's run; ``durable`` turns fsync back on (the tests run without it),
    so write figures are those of a real server."""
    server = TestServer()
    if durable:
        server.server.psql("ALTER SYSTEM SET fsync = on; ALTER SYSTEM SET synchronous_commit = on; "
                           "ALTER SYSTEM SET full_page_writes = on; SELECT pg_reload_conf();")
    try:
        yield lambda: server.url(server.new_database())
    finally:
        server.stop()
