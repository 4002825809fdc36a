"""The memory tools over the Model Context Protocol, on the official ``mcp`` SDK (2.x API).

Built on the SDK's low-level :class:`mcp.server.Server` so that the tools' arguments reach
``Memory`` exactly as the client sent them (``MCPServer``'s argument model would coerce
``"7"`` to ``7`` and parse the string ``"null"`` into ``None`` before the package's validation
saw them). Transports: stdio (:func:`serve_stdio`, for a client that starts the server) and
Streamable HTTP (:func:`serve_http`, with a bearer token, see :mod:`.auth`).

A tool that fails returns an MCP error result (``isError: true``) whose text is
``"<ErrorType>: <message>"`` of the package's typed error; a bug is not hidden as a tool
error (the SDK answers it with a JSON-RPC internal error).
"""

from __future__ import annotations

import json
import logging
from typing import Any

from primitives.errors import ConfigurationError, PrimitivesError
from primitives.integrations.mcp import DEFAULT_PORT, HTTP_PATH
from primitives.integrations.mcp.auth import StaticTokenVerifier, check_bind
from primitives.integrations.mcp.tools import TOOLS, call_tool
from primitives.memory.facade import Memory

try:
    import mcp_types as types
    from mcp.server import Server
    from mcp.server.auth.settings import AuthSettings
    from mcp.server.stdio import stdio_server
except ImportError as exc:  # pragma: no cover - exercised without the extra (tests/test_mcp_cli.py)
    raise ConfigurationError(
        "the MCP server needs the official MCP SDK: python -m pip install 'memory-primitives[mcp]'"
    ) from exc

__all__ = ["SERVER_NAME", "DEFAULT_PORT", "HTTP_PATH", "build_server", "http_app", "serve_stdio", "serve_http"]

logger = logging.getLogger(__name__)

#: The name the server gives clients.
SERVER_NAME = "memory-primitives"

_INSTRUCTIONS = (
    "Long-term memory for this user. Call recall (or memory_prompt) before answering, remember to store "
    "what is worth keeping, search_memory to look things up. Pass the same user_id on every call."
)


def _version() -> str:
    from importlib.metadata import PackageNotFoundError, version

    try:
        return version("memory-primitives")
    except PackageNotFoundError:  # pragma: no cover - a source checkout without metadata
        return "0"


def _tools() -> list[types.Tool]:
    return [
        types.Tool(
            name=t.name,
            description=t.description,
            input_schema=t.input_schema,
            output_schema=t.output_schema,
            annotations=types.ToolAnnotations(
                read_only_hint=t.read_only, destructive_hint=t.destructive, idempotent_hint=t.read_only or t.destructive,
                open_world_hint=False,
            ),
        )
        for t in TOOLS
    ]


def build_server(memory: Memory) -> Server[Any]:
    """An MCP server offering the memory tools over ``memory``
    (:data:`~primitives.integrations.mcp.tools.TOOLS`).

    The caller owns ``memory`` (close it after the server stops). Connect a client in process
    with ``mcp.Client(build_server(memory))``, or run it with :func:`serve_stdio` /
    :func:`serve_http`.

    Returns:
        The SDK's low-level ``Server``.
    """
    tools = _tools()

    async def list_tools(ctx: Any, params: Any) -> types.ListToolsResult:
        return types.ListToolsResult(tools=tools)

    async def call(ctx: Any, params: types.CallToolRequestParams) -> types.CallToolResult:
        try:
            result = await call_tool(memory, params.name, params.arguments)
        except (PrimitivesError, NotImplementedError) as exc:
            # the typed error's own words, for the model to read and correct
            message = f"{type(exc).__name__}: {exc}"
            logger.info("tool %r failed: %s", params.name, message)
            return types.CallToolResult(content=[types.TextContent(type="text", text=message)], is_error=True)
        text = json.dumps(result, ensure_ascii=False)
        return types.CallToolResult(content=[types.TextContent(type="text", text=text)], structured_content=result)

    return Server(
        SERVER_NAME,
        version=_version(),
        title="Memory primitives",
        description="Long-term and working memory for agents (remember, search, recall, prompt context).",
        instructions=_INSTRUCTIONS,
        on_list_tools=list_tools,
        on_call_tool=call,
    )


async def serve_stdio(memory: Memory) -> None:
    """Serve ``memory``'s tools on this process's stdin/stdout until stdin closes.

    Nothing else may write to stdout meanwhile (logs go to stderr).
    """
    server = build_server(memory)
    async with stdio_server() as (read_stream, write_stream):
        await server.run(read_stream, write_stream, server.create_initialization_options())


def http_app(memory: Memory, *, host: str = "127.0.0.1", port: int = DEFAULT_PORT, token: str | None = None) -> Any:
    """The Starlette app that serves ``memory``'s tools at ``HTTP_PATH`` (Streamable HTTP).

    With ``token``, every request must carry ``Authorization: Bearer <token>`` (else ``401``,
    from the SDK's bearer middleware, see :class:`~.auth.StaticTokenVerifier`). On a loopback
    ``host`` the SDK's DNS-rebinding protection accepts only loopback ``Host``/``Origin`` headers.

    Raises:
        ConfigurationError: ``host`` is not loopback and there is no ``token``.
    """
    check_bind(host, token)
    server = build_server(memory)
    if token is None:
        return server.streamable_http_app(streamable_http_path=HTTP_PATH, host=host)
    netloc = f"[{host}]" if ":" in host else host
    auth = AuthSettings(issuer_url=f"http://{netloc}:{port}", resource_server_url=None)
    return server.streamable_http_app(
        streamable_http_path=HTTP_PATH, host=host, auth=auth, token_verifier=StaticTokenVerifier(token)
    )


async def serve_http(
    memory: Memory, *, host: str = "127.0.0.1", port: int = DEFAULT_PORT, token: str | None = None,
    log_level: str = "warning",
) -> None:
    """Serve ``memory``'s tools over Streamable HTTP at ``http://host:port/mcp`` (uvicorn) until
    the process is interrupted. See :func:`http_app` for the token and the host check.

    Raises:
        ConfigurationError: ``host`` is not loopback and there is no ``token``.
        OSError: the address cannot be bound.
    """
    import uvicorn

    app = http_app(memory, host=host, port=port, token=token)
    config = uvicorn.Config(app, host=host, port=port, log_level=log_level, lifespan="on")
    await uvicorn.Server(config).serve()
