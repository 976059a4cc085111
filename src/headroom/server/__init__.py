"""A memory server: any client of the OpenAI or Anthropic API gets memory by pointing its base URL
here (``headroom-memory serve --upstream URL``). Needs the ``[server]`` extra."""

from ._app import create_app
from ._config import ServerConfig, load_secret

__all__ = ["create_app", "ServerConfig", "load_secret"]
