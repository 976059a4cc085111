"""Memories as JSON: the one encoding the CLI's output, its export and the server's API share."""

from __future__ import annotations

import base64
from typing import Any

from ._models import Memory

__all__ = ["memory_json", "export_row", "EXPORT_FORMAT"]

#: The version of the export's rows (the first line of an export names it).
EXPORT_FORMAT = 1


def memory_json(memory: Memory) -> dict[str, Any]:
    """What a memory is shown as: its fields, times as POSIX seconds."""
    return {"id": memory.id, "user_id": memory.user_id, "category": memory.category, "text": memory.text,
            "source": memory.source, "created_at": memory.created_at.timestamp(),
            "updated_at": memory.updated_at.timestamp(), "superseded_by": memory.superseded_by}


def export_row(memory: Memory, vector: Any) -> dict[str, Any]:
    """One row of an export: everything, the vector as base64 little-endian float32."""
    row = memory_json(memory)
    row.update(metadata=dict(memory.metadata),
               superseded_at=memory.superseded_at.timestamp() if memory.superseded_at else None,
               vector=None if vector is None else base64.b64encode(vector.astype("<f4").tobytes()).decode())
    return row
