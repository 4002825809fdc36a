"""The memory tools over the Model Context Protocol (``pip install 'memory-primitives[mcp]'``).

``memory-primitives mcp serve`` runs the server (docs/mcp.md). In Python::

    from mcp import Client
    from primitives.integrations.mcp import build_server
    from primitives.memory import Memory

    async with Memory.from_env() as memory, Client(build_server(memory)) as client:
        result = await client.call_tool("remember", {"text": "likes tea", "user_id": "alice"})

Importing this package needs nothing beyond the core install; its names load the SDK on first
use and raise ``ConfigurationError`` naming the extra when it is missing.
"""

from __future__ import annotations

from typing import Any

__all__ = [
    "build_server", "http_app", "serve_stdio", "serve_http", "TOOLS", "TOOL_NAMES", "call_tool", "DEFAULT_PORT", "HTTP_PATH",
]

#: ``memory-primitives mcp serve --transport http`` listens on this port unless told otherwise.
DEFAULT_PORT = 8848
#: Path of the Streamable HTTP endpoint: ``http://HOST:PORT/mcp``.
HTTP_PATH = "/mcp"

_FROM = {
    "build_server": "server", "http_app": "server", "serve_stdio": "server", "serve_http": "server",
    "TOOLS": "tools", "TOOL_NAMES": "tools", "call_tool": "tools",
}


def __getattr__(name: str) -> Any:
    module = _FROM.get(name)
    if module is None:
        raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
    import importlib

    return getattr(importlib.import_module(f"{__name__}.{module}"), name)
