"""``RollingWindowTransform``: keep the newest messages that fit a token budget, never a broken turn.

Messages are handled in units: an assistant message that calls tools forms one unit with the tool
messages answering it, so a kept window never holds a tool result without its call nor a call
without its results. The kept history is always a suffix of the conversation's units that starts
with a user message, plus every system message. What is dropped can be handed to memory
(``on_drop``), so facts survive the truncation.
"""

from __future__ import annotations

import hashlib
import json
import logging
from dataclasses import dataclass
from typing import Any, Callable, Mapping, Sequence

from ._tokens import REPLY_PRIMING, TokenCounter

__all__ = ["RollingWindowTransform"]

logger = logging.getLogger(__name__)

Message = Mapping[str, Any]
_SYSTEM_ROLES = ("system", "developer")


@dataclass
class _Unit:
    indexes: list[int]
    starts_with_user: bool
    tokens: int | None = None  # counted only when the window reaches this far back


def _units(messages: Sequence[Message]) -> list[_Unit]:
    """Non-system messages grouped: a tool-calling assistant message with the tool results it awaits."""
    units: list[_Unit] = []
    open_calls: set[Any] = set()
    for i, message in enumerate(messages):
        role = message.get("role")
        if role in _SYSTEM_ROLES:
            continue
        if role == "tool" and units and message.get("tool_call_id") in open_calls:
            units[-1].indexes.append(i)
            open_calls.discard(message.get("tool_call_id"))
            continue
        calls = message.get("tool_calls") or []
        open_calls = {c.get("id") for c in calls if isinstance(c, Mapping)} if role == "assistant" else set()
        units.append(_Unit([i], role == "user"))
    return units


def _digest(message: Message) -> str:
    return hashlib.sha1(json.dumps(message, sort_keys=True, default=str).encode()).hexdigest()


class RollingWindowTransform:
    """Trim a conversation to ``max_tokens`` (as ``model`` counts them), newest first.

    - ``reserve_for_reply``: tokens kept free for the model's answer.
    - ``keep_first_user``: also keep the first user message (often the task) when it fits.
    - ``on_drop``: called with the messages a call to ``apply`` removed that were not handed over
      before, e.g. ``client.memory.remember`` so memory keeps what the window forgets.
    """

    def __init__(self, max_tokens: int, *, model: str | None = "gpt-4o", reserve_for_reply: int = 0,
                 keep_first_user: bool = False, on_drop: Callable[[list[Message]], Any] | None = None,
                 counter: TokenCounter | None = None) -> None:
        if isinstance(max_tokens, bool) or not isinstance(max_tokens, int) or max_tokens <= 0:
            raise ValueError("max_tokens must be a positive integer")
        if reserve_for_reply < 0 or reserve_for_reply >= max_tokens:
            raise ValueError("reserve_for_reply must be at least 0 and less than max_tokens")
        self.max_tokens = max_tokens
        self.reserve_for_reply = reserve_for_reply
        self.keep_first_user = keep_first_user
        self.on_drop = on_drop
        self.counter = counter or TokenCounter(model)
        self.last_dropped: list[Message] = []
        self._handed: set[str] = set()

    def apply(self, messages: Sequence[Message]) -> list[Message]:
        """A new list with the kept messages, in their order; the input is not changed."""
        messages = list(messages)
        budget = self.max_tokens - self.reserve_for_reply - REPLY_PRIMING
        budget -= sum(self.counter.count_message(m) for m in messages if m.get("role") in _SYSTEM_ROLES)
        units = _units(messages)

        def tokens(unit: _Unit) -> int:
            if unit.tokens is None:
                unit.tokens = sum(self.counter.count_message(messages[i]) for i in unit.indexes)
            return unit.tokens

        first_user = next((u for u in units if u.starts_with_user), None) if self.keep_first_user else None
        if first_user is not None:
            budget -= tokens(first_user)
        latest_user = max((n for n, u in enumerate(units) if u.starts_with_user), default=None)

        start = len(units)  # the kept suffix is units[start:]
        used = 0
        while start > 0:
            cost = 0 if units[start - 1] is first_user else tokens(units[start - 1])  # reserved above
            if used + cost > budget:
                break
            start -= 1
            used += cost
        if latest_user is not None and start > latest_user:
            logger.warning("the latest user message and what follows it need %d tokens, more than the %d "
                           "available; kept anyway", sum(tokens(u) for u in units[latest_user:]), budget)
            start = latest_user
        while start < len(units) and not units[start].starts_with_user and (
                latest_user is None or start < latest_user):
            start += 1  # never begin the kept history with an orphaned assistant or tool message

        kept = {i for u in units[start:] for i in u.indexes}
        if first_user is not None and (start >= len(units) or units[start] is not first_user):
            kept.update(first_user.indexes)
        out = [m for i, m in enumerate(messages) if m.get("role") in _SYSTEM_ROLES or i in kept]
        self.last_dropped = [m for i, m in enumerate(messages) if m.get("role") not in _SYSTEM_ROLES and i not in kept]
        self._hand_over(self.last_dropped)
        return out

    def _hand_over(self, dropped: list[Message]) -> None:
        if self.on_drop is None:
            return
        fresh = [m for m in dropped if _digest(m) not in self._handed]
        if not fresh:
            return
        try:
            self.on_drop(fresh)
        except Exception:  # memory must never break the call that trims the conversation
            logger.exception("on_drop failed; %d dropped messages were not handed to memory", len(fresh))
            return
        self._handed.update(_digest(m) for m in fresh)
