"""Finding, creating and opening the SQLite file: paths, permissions, WAL, and the checks that keep
the store away from files that are not its own. No schema, no queries of the store."""

from __future__ import annotations

import os
import sqlite3
import time
from pathlib import Path

from ._errors import ForeignDatabaseError, StorageError

__all__ = ["default_db_path", "create_file", "connect"]

_SQLITE_HEADER = b"SQLite format 3\x00"

def default_db_path() -> Path:
    """``$HEADROOM_MEMORY_DB``, else ``~/.headroom/memory.db``."""
    env = os.environ.get("HEADROOM_MEMORY_DB")
    return Path(env).expanduser() if env else Path.home() / ".headroom" / "memory.db"


def create_file(path_text: str) -> None:
    """Create the file (and its directory) readable by its owner only, unless it exists; refuse a
    directory or a file that is not an SQLite database."""
    path = Path(path_text)
    try:
        path.parent.mkdir(parents=True, exist_ok=True, mode=0o700)
    except OSError as exc:
        raise StorageError(f"cannot create the directory for {path}: {exc}") from exc
    try:
        fd = os.open(path, os.O_CREAT | os.O_EXCL | os.O_WRONLY, 0o600)
        os.close(fd)
    except FileExistsError:
        pass
    except OSError as exc:
        raise StorageError(f"cannot create {path}: {exc}") from exc
    if path.is_dir():
        raise StorageError(f"{path} is a directory, not a database file")
    try:
        with open(path, "rb") as handle:
            header = handle.read(len(_SQLITE_HEADER))
    except OSError as exc:
        raise StorageError(f"cannot read {path}: {exc}") from exc
    if header and header != _SQLITE_HEADER:
        raise StorageError(f"{path} is not an SQLite database; refusing to touch it")


def connect(path: str, busy_timeout: float) -> sqlite3.Connection:
    """A connection in autocommit mode (the store begins its own transactions), WAL, shared by threads
    under the store's lock; refuses a database of another application."""
    try:
        db = sqlite3.connect(path, timeout=busy_timeout, isolation_level=None, check_same_thread=False)
    except sqlite3.Error as exc:
        raise StorageError(f"cannot open {path}: {exc}") from exc
    try:
        tables = {r[0] for r in db.execute("SELECT name FROM sqlite_master WHERE type = 'table'")}
        if tables and "headroom_migrations" not in tables:
            raise ForeignDatabaseError(
                f"{path} is an SQLite database of another application "
                f"(tables: {', '.join(sorted(tables)[:5])}); refusing to touch it"
            )
        _set_wal(db)
        db.execute("PRAGMA synchronous = NORMAL")
        db.execute("PRAGMA foreign_keys = ON")
        # Forgotten memories are overwritten on disk, not left in free pages.
        db.execute("PRAGMA secure_delete = ON")
    except sqlite3.DatabaseError as exc:
        db.close()
        raise StorageError(f"{path} is corrupt or not a database: {exc}") from exc
    except Exception:
        db.close()
        raise
    return db


def _set_wal(db: sqlite3.Connection) -> None:
    # Switching to WAL takes an exclusive lock the busy handler does not always wait for.
    for attempt in range(50):
        try:
            db.execute("PRAGMA journal_mode = WAL")
            return
        except sqlite3.OperationalError as exc:
            if "locked" not in str(exc) or attempt == 49:
                raise
            time.sleep(0.05)
