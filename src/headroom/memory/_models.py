"""The model of one memory, and the validation every way in shares."""

from __future__ import annotations

import json
import re
import uuid
from dataclasses import dataclass, field
from datetime import datetime, timezone
from typing import Any, Literal, Mapping

from ._errors import InvalidInputError

__all__ = [
    "Memory",
    "Category",
    "Source",
    "CATEGORIES",
    "SOURCES",
    "MAX_TEXT_CHARS",
    "normalize_text",
    "validate_text",
    "is_encodable",
    "validate_category",
    "validate_user_id",
    "validate_metadata",
    "validate_time",
    "new_id",
    "utcnow",
]

Category = Literal["preference", "fact", "context"]
Source = Literal["manual", "inline", "background"]
CATEGORIES: tuple[str, ...] = ("preference", "fact", "context")
SOURCES: tuple[str, ...] = ("manual", "inline", "background")

#: A memory is a fact, not a document: longer texts are rejected rather than silently cut.
MAX_TEXT_CHARS = 4000
MAX_USER_ID_CHARS = 256

_SPACE = re.compile(r"\s+")


@dataclass(frozen=True)
class Memory:
    """One remembered fact about one user. Immutable: changes go through the store."""

    id: str
    user_id: str
    text: str
    category: Category
    created_at: datetime
    updated_at: datetime
    source: Source = "manual"
    metadata: Mapping[str, Any] = field(default_factory=dict)
    #: Id of the memory that replaced this one, and when, once it has been superseded.
    superseded_by: str | None = None
    superseded_at: datetime | None = None

    @property
    def ref(self) -> str:
        """The short reference shown to a model (``m`` and six hex digits of the id)."""
        return f"m{self.id[:6]}"


def normalize_text(text: str) -> str:
    """The key under which two texts count as the same memory: case and white space folded."""
    return _SPACE.sub(" ", text).strip().casefold()


def is_encodable(text: str) -> bool:
    """False for a string holding a lone surrogate (``"\\ud800"``): not text UTF-8 can store."""
    try:
        text.encode("utf-8")
    except UnicodeEncodeError:
        return False
    return True


def validate_text(text: object) -> str:
    if not isinstance(text, str):
        raise InvalidInputError(f"memory text must be a string, not {type(text).__name__}")
    if not is_encodable(text):
        raise InvalidInputError("memory text holds a lone surrogate; it is not valid Unicode text")
    stripped = text.strip()
    if not stripped:
        raise InvalidInputError("memory text is empty")
    if len(stripped) > MAX_TEXT_CHARS:
        raise InvalidInputError(
            f"memory text is {len(stripped)} characters; the limit is {MAX_TEXT_CHARS}"
        )
    return stripped


def validate_category(category: object) -> Category:
    if category not in CATEGORIES:
        raise InvalidInputError(
            f"unknown category {category!r}; expected one of {', '.join(CATEGORIES)}"
        )
    return category  # type: ignore[return-value]


def validate_user_id(user_id: object) -> str:
    if not isinstance(user_id, str) or not user_id.strip():
        raise InvalidInputError("user_id must be a non-empty string")
    if not is_encodable(user_id):
        raise InvalidInputError("user_id holds a lone surrogate; it is not valid Unicode text")
    if len(user_id) > MAX_USER_ID_CHARS:
        raise InvalidInputError(f"user_id is longer than {MAX_USER_ID_CHARS} characters")
    return user_id


def validate_metadata(metadata: object) -> dict[str, Any]:
    if metadata is None:
        return {}
    if not isinstance(metadata, Mapping):
        raise InvalidInputError("metadata must be a dict")
    try:
        # Round-trip so what is stored is exactly what will be read back.
        return json.loads(json.dumps(dict(metadata)))
    except (TypeError, ValueError) as exc:
        raise InvalidInputError(f"metadata must be JSON-serializable: {exc}") from None


def validate_time(value: object, default: datetime) -> datetime:
    """When something was said: a datetime (naive means UTC), an ISO 8601 string, or epoch seconds."""
    if value is None:
        return default
    try:
        if isinstance(value, datetime):
            moment = value
        elif isinstance(value, (int, float)) and not isinstance(value, bool):
            moment = datetime.fromtimestamp(float(value), timezone.utc)
        elif isinstance(value, str):
            moment = datetime.fromisoformat(value.strip().replace("Z", "+00:00"))
        else:
            raise TypeError(type(value).__name__)
        moment = moment if moment.tzinfo else moment.replace(tzinfo=timezone.utc)
        # What is stored is POSIX seconds, read back in UTC: both ways must work, for every read later.
        datetime.fromtimestamp(moment.timestamp(), timezone.utc)
    except (TypeError, ValueError, OverflowError, OSError) as exc:
        raise InvalidInputError(f"said_at must be a datetime, an ISO 8601 string or epoch seconds "
                                f"from year 1 to 9999 in UTC: {exc}") from None
    return moment


def new_id() -> str:
    return uuid.uuid4().hex


def utcnow() -> datetime:
    return datetime.now(timezone.utc)
