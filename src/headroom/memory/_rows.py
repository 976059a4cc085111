"""How a memory is stored in a row of either database and read back: the column list, times,
metadata and blobs. Shared by every SQL backend (PostgreSQL stores vectors as pgvector, not blobs)."""

from __future__ import annotations

import json
import logging
from datetime import datetime, timezone

import numpy as np

from ._models import Memory

__all__ = ["COLUMNS", "SEARCHABLE", "row_to_memory", "blob", "vector_of"]

logger = logging.getLogger(__name__)

COLUMNS = "id, user_id, text, category, source, metadata, created_at, updated_at, superseded_by, superseded_at"
#: The rows a search of one user (``?``) may return: live, and embedded.
SEARCHABLE = "user_id = ? AND superseded_by IS NULL AND embedding IS NOT NULL"
_EARLIEST = datetime.min.replace(tzinfo=timezone.utc)
_LATEST = datetime.max.replace(tzinfo=timezone.utc)


def _to_time(value: float) -> datetime:
    """A stored time; one out of datetime's range (a row written before input was checked) is
    clamped rather than making every read of its user fail."""
    try:
        return datetime.fromtimestamp(value, timezone.utc)
    except (ValueError, OverflowError, OSError):
        return _LATEST if value > 0 else _EARLIEST


def _metadata(text: str) -> dict:
    if text == "{}":
        return {}  # most have none: reading is faster without json.loads
    try:
        value = json.loads(text)
    except ValueError:
        logger.warning("unreadable memory metadata ignored: %r", text[:80])
        return {}
    return value if isinstance(value, dict) else {}


def row_to_memory(row: tuple) -> Memory:
    """A memory from the ``COLUMNS`` of its row."""
    return Memory(
        id=row[0],
        user_id=row[1],
        text=row[2],
        category=row[3],
        source=row[4],
        metadata=_metadata(row[5]),
        created_at=_to_time(row[6]),
        updated_at=_to_time(row[7]),
        superseded_by=row[8],
        superseded_at=_to_time(row[9]) if row[9] is not None else None,
    )


def blob(vector: np.ndarray) -> bytes:
    """A vector as stored: little-endian float32."""
    return np.ascontiguousarray(vector, dtype="<f4").tobytes()


def vector_of(data: bytes) -> np.ndarray:
    return np.frombuffer(data, dtype="<f4").copy()
