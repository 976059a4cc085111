"""The SQLite schema as ordered migrations: each is a function, applied with its record in one
transaction by the SQLite store. Never edit a migration that has shipped; add the next one."""

from __future__ import annotations

import sqlite3
from typing import Callable

__all__ = ["MIGRATIONS"]


def _m001_initial(db: sqlite3.Connection) -> None:
    db.execute("CREATE TABLE headroom_meta (key TEXT PRIMARY KEY, value TEXT NOT NULL)")
    db.execute(
        """CREATE TABLE memories (
            pk INTEGER PRIMARY KEY,
            id TEXT NOT NULL UNIQUE,
            user_id TEXT NOT NULL,
            text TEXT NOT NULL,
            norm_text TEXT NOT NULL,
            category TEXT NOT NULL CHECK (category IN ('preference', 'fact', 'context')),
            source TEXT NOT NULL,
            metadata TEXT NOT NULL DEFAULT '{}',
            created_at REAL NOT NULL,
            updated_at REAL NOT NULL,
            superseded_by TEXT REFERENCES memories(id),
            superseded_at REAL,
            embedding BLOB,  -- NULL while the memory waits for its embedding (stored, not yet searchable)
            -- One full-text token naming the user, so a keyword search matches only that user's rows.
            user_key TEXT GENERATED ALWAYS AS ('u' || hex(user_id)) VIRTUAL
        )"""
    )
    db.execute("CREATE INDEX memories_user ON memories (user_id, created_at)")
    db.execute("CREATE INDEX memories_successor ON memories (superseded_by) WHERE superseded_by IS NOT NULL")
    db.execute(
        "CREATE UNIQUE INDEX memories_user_text ON memories (user_id, norm_text) "
        "WHERE superseded_by IS NULL"
    )
    # Memories waiting for a vector, found without touching the others' blobs.
    db.execute("CREATE INDEX memories_unembedded ON memories (user_id, pk) WHERE embedding IS NULL")
    # One counter per user, bumped by every write, so a cached index knows when it is stale.
    db.execute("CREATE TABLE user_versions (user_id TEXT PRIMARY KEY, version INTEGER NOT NULL) WITHOUT ROWID")
    db.execute(
        "CREATE VIRTUAL TABLE memories_fts USING fts5("
        "text, user_key, content='memories', content_rowid='pk', tokenize='porter unicode61')"
    )
    db.execute(
        "CREATE TRIGGER memories_fts_insert AFTER INSERT ON memories BEGIN "
        "INSERT INTO memories_fts (rowid, text, user_key) VALUES (new.pk, new.text, new.user_key); END"
    )
    db.execute(
        "CREATE TRIGGER memories_fts_delete AFTER DELETE ON memories BEGIN "
        "INSERT INTO memories_fts (memories_fts, rowid, text, user_key) "
        "VALUES ('delete', old.pk, old.text, old.user_key); END"
    )
    db.execute(
        "CREATE TRIGGER memories_fts_update AFTER UPDATE OF text ON memories BEGIN "
        "INSERT INTO memories_fts (memories_fts, rowid, text, user_key) "
        "VALUES ('delete', old.pk, old.text, old.user_key); "
        "INSERT INTO memories_fts (rowid, text, user_key) VALUES (new.pk, new.text, new.user_key); END"
    )


def _m002_extraction_jobs(db: sqlite3.Connection) -> None:
    # Turns waiting for background extraction. A job is deleted only in the transaction that stores
    # its memories; a running job whose lease lapsed (or whose process died) is taken again.
    db.execute(
        """CREATE TABLE extraction_jobs (
            id INTEGER PRIMARY KEY,
            user_id TEXT NOT NULL,
            payload TEXT NOT NULL,
            status TEXT NOT NULL DEFAULT 'pending' CHECK (status IN ('pending', 'running', 'failed')),
            attempts INTEGER NOT NULL DEFAULT 0,
            last_error TEXT,
            created_at REAL NOT NULL,
            next_attempt_at REAL NOT NULL,
            lease_owner TEXT,
            lease_until REAL
        )"""
    )
    db.execute("CREATE INDEX extraction_jobs_user ON extraction_jobs (user_id, status, next_attempt_at)")


def _m003_embedding_claims(db: sqlite3.Connection) -> None:
    # A worker about to embed a row claims it until this time (POSIX seconds), so two handles or two
    # processes do not embed one row twice; a claim that lapses (a dead worker) is taken again.
    db.execute("ALTER TABLE memories ADD COLUMN embed_claim REAL")


MIGRATIONS: list[tuple[int, str, Callable[[sqlite3.Connection], None]]] = [
    (1, "initial schema", _m001_initial),
    (2, "extraction jobs", _m002_extraction_jobs),
    (3, "embedding claims", _m003_embedding_claims),
]
