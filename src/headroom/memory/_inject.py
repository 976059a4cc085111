"""Shaping a chat request: find the query, inject remembered context, add the instruction.

Pure functions over OpenAI-style ``messages``. They never mutate the caller's list or dicts: a
changed message is a shallow copy, and every other message is passed on as the same object, so the
bytes the provider sees for earlier turns stay identical and its prompt cache keeps working.
"""

from __future__ import annotations

from typing import Any, Mapping, Sequence

__all__ = ["DEFAULT_MIN_SCORE", "latest_user_index", "new_user_texts", "user_texts", "message_text", "prepend_to_message",
           "append_to_message", "add_instruction", "with_text_after", "wants_json"]

#: Memories whose cosine similarity to the latest message is below this are not injected. Chosen
#: with ``bench/injection.py`` (figures in bench/RESULTS.md): on the real-model suite's questions and
#: LoCoMo it keeps terse relevant memories ("Any snacks I should avoid?" / "Is allergic to peanuts")
#: that a higher floor drops, while small talk against a few memories still injects nothing.
DEFAULT_MIN_SCORE = 0.22


def message_text(message: Mapping[str, Any]) -> str:
    """The text of a message whose content is a string or a list of parts."""
    content = message.get("content")
    if isinstance(content, str):
        return content
    if isinstance(content, Sequence):
        return "\n".join(
            part.get("text", "") for part in content
            if isinstance(part, Mapping) and part.get("type") == "text" and isinstance(part.get("text"), str)
        )
    return ""


def new_user_texts(messages: Sequence[Any]) -> list[str]:
    """The texts of the user messages since the last assistant message: what this turn said."""
    texts: list[str] = []
    for message in reversed(messages):
        if not isinstance(message, Mapping) or message.get("role") == "assistant":
            break
        if message.get("role") == "user" and message_text(message).strip():
            texts.append(message_text(message).strip())
    return texts[::-1]


def user_texts(messages: Sequence[Any]) -> list[str]:
    """The texts of every user message: what the user said in the whole conversation sent."""
    return [text for m in messages if isinstance(m, Mapping) and m.get("role") == "user"
            and (text := message_text(m).strip())]


def latest_user_index(messages: Sequence[Any]) -> int | None:
    for i in range(len(messages) - 1, -1, -1):
        message = messages[i]
        if isinstance(message, Mapping) and message.get("role") == "user":
            return i
    return None


def _with_text_before(content: Any, text: str) -> Any:
    if isinstance(content, str):
        return text + content
    if isinstance(content, Sequence):
        return [{"type": "text", "text": text}, *content]
    return text


def with_text_after(content: Any, text: str) -> Any:
    if isinstance(content, str):
        return f"{content}\n\n{text}" if content else text
    if isinstance(content, Sequence):
        return [*content, {"type": "text", "text": text}]
    return text


def prepend_to_message(messages: Sequence[Any], index: int, text: str) -> list[Any]:
    """A new list in which message ``index`` starts with ``text``."""
    out = list(messages)
    out[index] = {**messages[index], "content": _with_text_before(messages[index].get("content"), text)}
    return out


def append_to_message(messages: Sequence[Any], index: int, text: str) -> list[Any]:
    """A new list in which message ``index`` ends with ``text``."""
    out = list(messages)
    out[index] = {**messages[index], "content": with_text_after(messages[index].get("content"), text)}
    return out


def add_instruction(messages: Sequence[Any], instruction: str) -> list[Any]:
    """Append ``instruction`` to the first system (or developer) message, or start with a new one."""
    out = list(messages)
    for i, message in enumerate(messages):
        if isinstance(message, Mapping) and message.get("role") in ("system", "developer"):
            out[i] = {**message, "content": with_text_after(message.get("content"), instruction)}
            return out
    return [{"role": "system", "content": instruction}, *out]


def wants_json(kwargs: Mapping[str, Any]) -> bool:
    """True when the caller asked for JSON output, where an appended block would break the JSON."""
    response_format = kwargs.get("response_format")
    if isinstance(response_format, Mapping):
        return response_format.get("type") in ("json_object", "json_schema")
    return response_format is not None and not isinstance(response_format, str)
