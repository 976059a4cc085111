"""headroom: persistent memory for LLM applications. See ``headroom.memory``."""

__version__ = "0.1.0"
__all__ = ["__version__"]
