"""Which SDK a client is, and a synchronous twin of an async one: what the wrappers need to know
about a client before they wrap it. No I/O."""

from __future__ import annotations

import importlib
import inspect
from typing import Any

from ._dialects import ANTHROPIC, OPENAI, Dialect

__all__ = ["dialect_of", "is_async", "sync_twin", "embeddings_client"]


def _create_of(resource: Any) -> Any:
    create = getattr(resource, "create", None)
    return create if callable(create) else None


def dialect_of(client: Any) -> Dialect:
    """OpenAI-compatible (``chat.completions.create``) or Anthropic (``messages.create``)."""
    if _create_of(getattr(getattr(client, "chat", None), "completions", None)):
        return OPENAI
    if _create_of(getattr(client, "messages", None)):
        return ANTHROPIC
    raise TypeError(
        f"{type(client).__name__} is not an OpenAI-compatible client (no callable chat.completions.create) "
        "nor an Anthropic one (no callable messages.create)"
    )


def is_async(client: Any) -> bool:
    """SDKs decorate ``create``, so look beneath the decorators (and at the class's name)."""
    resource = client.messages if dialect_of(client) is ANTHROPIC else client.chat.completions
    create = resource.create
    return (inspect.iscoroutinefunction(inspect.unwrap(create)) or inspect.iscoroutinefunction(create)
            or type(client).__name__.startswith("Async"))


#: What a synchronous twin takes over from an async client: the constructor's parameter, and the
#: attributes where the SDKs keep it (openai, Azure OpenAI, anthropic).
_TWIN_SETTINGS = (
    ("api_key", ("api_key",)), ("auth_token", ("auth_token",)), ("organization", ("organization",)),
    ("project", ("project",)), ("base_url", ("base_url",)), ("timeout", ("timeout", "_timeout")),
    ("max_retries", ("max_retries",)), ("default_headers", ("_custom_headers",)),
    ("default_query", ("_custom_query",)), ("api_version", ("_api_version",)),
    ("azure_ad_token", ("_azure_ad_token",)),
)


def sync_twin(client: Any) -> Any:
    """A synchronous client of the same SDK and settings (key, endpoint, organization, headers,
    query, timeout, retries, Azure API version), for the worker threads of an async one.

    An async ``http_client`` cannot serve a synchronous client and an async token provider cannot
    be called from one: pass ``extraction_client=`` where those matter.
    """
    module = importlib.import_module(type(client).__module__)
    twin = getattr(module, type(client).__name__.removeprefix("Async"), None)
    if twin is None:
        raise TypeError(f"cannot find a synchronous twin of {type(client).__name__}; pass extraction_client=")
    accepted = inspect.signature(twin.__init__).parameters
    settings: dict[str, Any] = {}
    for parameter, places in _TWIN_SETTINGS:
        value = next((getattr(client, p) for p in places if getattr(client, p, None) is not None), None)
        if parameter in accepted and value is not None:
            settings[parameter] = value
    try:
        return twin(**settings)
    except Exception as exc:
        raise TypeError(f"cannot build a synchronous {twin.__name__} from the async client's settings ({exc}); "
                        "pass extraction_client=") from exc


def embeddings_client(client: Any) -> Any:
    """A synchronous client for ``embeddings.create``: the wrapped one or its twin; None if neither."""
    if is_async(client):
        try:
            client = sync_twin(client)
        except TypeError:
            return None
    create = getattr(getattr(client, "embeddings", None), "create", None)
    return client if callable(create) else None
