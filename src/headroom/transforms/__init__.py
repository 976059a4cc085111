"""Transforms of a conversation before it is sent: ``RollingWindowTransform`` and token counting."""

from ._rolling import RollingWindowTransform
from ._tokens import TokenCounter, encoding_for_model

__all__ = ["RollingWindowTransform", "TokenCounter", "encoding_for_model"]
