"""Who may call the HTTP server: one bearer token from ``MEMORY_MCP_TOKEN``, checked in constant time.

The token is checked by the SDK's own bearer middleware (``mcp.server.auth``) through
:class:`StaticTokenVerifier`: a request without ``Authorization: Bearer <token>``, or with another
token, gets ``401`` and never reaches a tool. Without a token the server binds only a loopback
address (:func:`check_bind`): anything else would hand every memory to the network.
"""

from __future__ import annotations

import hmac
import ipaddress
import os
from collections.abc import Mapping

from primitives.errors import ConfigurationError

try:
    from mcp.server.auth.provider import AccessToken
except ImportError as exc:  # pragma: no cover - exercised without the extra (tests/test_mcp_cli.py)
    raise ConfigurationError(
        "the MCP server needs the official MCP SDK: python -m pip install 'memory-primitives[mcp]'"
    ) from exc

__all__ = ["TOKEN_ENV", "MIN_TOKEN_CHARS", "StaticTokenVerifier", "token_from_env", "is_loopback", "check_bind"]

#: The variable that holds the bearer token.
TOKEN_ENV = "MEMORY_MCP_TOKEN"
#: Shortest token accepted (a guessable token is refused at start, not found out later).
MIN_TOKEN_CHARS = 16
_MAKE_ONE = "python -c 'import secrets; print(secrets.token_urlsafe(32))'"


def token_from_env(env: Mapping[str, str] | None = None) -> str | None:
    """The bearer token in ``MEMORY_MCP_TOKEN`` (surrounding whitespace removed), or ``None``
    when it is unset or empty.

    Raises:
        ConfigurationError: the token is shorter than :data:`MIN_TOKEN_CHARS` characters or is
            not printable ASCII (an HTTP header carries it).
    """
    raw = ((os.environ if env is None else env).get(TOKEN_ENV) or "").strip()
    if not raw:
        return None
    if len(raw) < MIN_TOKEN_CHARS or not (raw.isascii() and raw.isprintable()) or " " in raw:
        raise ConfigurationError(
            f"{TOKEN_ENV} must be at least {MIN_TOKEN_CHARS} printable ASCII characters without spaces; "
            f"make one with: {_MAKE_ONE}"
        )
    return raw


def is_loopback(host: str) -> bool:
    """Whether ``host`` names only this machine: ``localhost`` or a loopback IP (127.0.0.0/8, ::1)."""
    if host.strip().lower() == "localhost":
        return True
    try:
        return ipaddress.ip_address(host.strip().strip("[]")).is_loopback
    except ValueError:
        return False


def check_bind(host: str, token: str | None) -> None:
    """Refuse to serve HTTP on a non-loopback ``host`` without a token.

    Raises:
        ConfigurationError: ``host`` is not loopback and ``token`` is ``None``.
    """
    if token is None and not is_loopback(host):
        raise ConfigurationError(
            f"refusing to serve memory on {host} without a bearer token: set {TOKEN_ENV} "
            f"(make one with: {_MAKE_ONE}) or bind 127.0.0.1"
        )


class StaticTokenVerifier:
    """The SDK's ``TokenVerifier`` for one shared secret.

    Args:
        token: The accepted bearer token.
    """

    def __init__(self, token: str) -> None:
        self._token = token.encode()

    async def verify_token(self, token: str) -> AccessToken | None:
        """An ``AccessToken`` for the client when ``token`` is the configured one (compared with
        :func:`hmac.compare_digest`, in time independent of where they differ), else ``None``."""
        if not hmac.compare_digest(token.encode("utf-8", "surrogatepass"), self._token):
            return None
        return AccessToken(token="", client_id="memory-primitives-mcp", scopes=[])
