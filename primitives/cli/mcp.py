"""``memory-primitives mcp serve``: the memory tools for MCP clients (Claude Code, Claude Desktop, Cursor).

The ``mcp`` SDK is imported only when the command runs, so the rest of the command line works on
the core install; without it ``mcp serve`` prints the one-line fix and exits 2.
"""

from __future__ import annotations

import argparse
import asyncio
import json
from typing import Any

from rich.console import Console
from rich.markup import escape

from primitives.errors import InvalidInputError
from primitives.integrations.mcp import DEFAULT_PORT, HTTP_PATH

__all__ = ["add_parser"]

_DESCRIPTION = f"""\
Serve the memory tools (remember, search_memory, recall, get_memory, delete_memory,
memory_prompt) over the Model Context Protocol, on the memory Memory.from_env() describes
(in-process by default; REDIS_URL or AGENT_MEMORY_SERVER_URL for a persistent one).

stdio: for a client that starts the server itself (Claude Code, Claude Desktop, Cursor);
stdout carries the protocol and logs go to stderr; it exits when stdin closes.
http: Streamable HTTP at http://HOST:PORT{HTTP_PATH}; with MEMORY_MCP_TOKEN set every request
needs 'Authorization: Bearer <token>' (else 401); without one it binds only a loopback address.

Needs the mcp extra: pip install 'memory-primitives[mcp]'. Configuration snippets: docs/mcp.md."""


def add_parser(sub: Any) -> None:
    """Register ``mcp serve``."""
    group = sub.add_parser(
        "mcp",
        help="serve the memory tools over the Model Context Protocol (mcp serve)",
        description=_DESCRIPTION,
    )
    actions = group.add_subparsers(dest="mcp_command", required=True, metavar="ACTION")
    sv = actions.add_parser(
        "serve",
        help="run the MCP server (stdio by default)",
        description=_DESCRIPTION,
    )
    sv.add_argument("--transport", choices=("stdio", "http"), default="stdio", help="stdio or Streamable HTTP")
    sv.add_argument("--host", default="127.0.0.1",
                    help="address to bind for http (a non-loopback one needs MEMORY_MCP_TOKEN)")
    sv.add_argument("--port", type=int, default=DEFAULT_PORT, help="TCP port for http")
    sv.add_argument("--json", action="store_true",
                    help="http: print the endpoint as one JSON object on stdout before serving (stdio: stdout carries only the protocol)")
    sv.set_defaults(run=_serve)


def _serve(args: argparse.Namespace, console: Console) -> int:
    # imported here: these need the mcp extra, and raise ConfigurationError naming it when it is missing
    from primitives.integrations.mcp.auth import check_bind, token_from_env
    from primitives.integrations.mcp.server import serve_http, serve_stdio
    from primitives.memory.facade import Memory

    if args.transport == "stdio":
        async def stdio() -> None:
            async with Memory.from_env() as memory:
                await serve_stdio(memory)

        asyncio.run(stdio())
        return 0

    if not 1 <= args.port <= 65535:
        raise InvalidInputError(f"--port must be 1..65535, got {args.port}")
    token = token_from_env()
    check_bind(args.host, token)
    netloc = f"[{args.host}]" if ":" in args.host else args.host
    url = f"http://{netloc}:{args.port}{HTTP_PATH}"
    if args.json:
        print(json.dumps({"transport": "http", "url": url, "auth": "bearer" if token else "none"}), flush=True)
    else:
        auth = "bearer token from MEMORY_MCP_TOKEN required" if token else "no token: loopback only (set MEMORY_MCP_TOKEN)"
        console.print(f"MCP server: {escape(url)} ({auth}); Ctrl-C stops it")

    async def http() -> None:
        async with Memory.from_env() as memory:
            await serve_http(memory, host=args.host, port=args.port, token=token)

    try:
        asyncio.run(http())
    except KeyboardInterrupt:  # pragma: no cover - uvicorn handles SIGINT itself
        pass
    return 0
