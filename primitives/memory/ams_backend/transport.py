"""How :class:`~primitives.memory.ams_backend.AgentMemoryServerBackend` talks to the Agent Memory
Server: agent-memory-client's ``MemoryAPIClient`` on an httpx pool built here (the client has no
auth option in 0.14), one retry on a new pool after a 5xx or a dropped connection, and AMS's
answers mapped to this package's errors, each naming the fix."""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable
from typing import Any, TypeVar
from urllib.parse import quote

import httpx
from agent_memory_client import MemoryAPIClient, MemoryClientConfig
from agent_memory_client import __version__ as client_version
from agent_memory_client.exceptions import MemoryNotFoundError, MemoryServerError

from primitives.errors import (
    AuthenticationFailedError,
    BackendUnavailableError,
    ConfigurationError,
    InvalidInputError,
    LongTermMemoryDisabledError,
    PrimitivesError,
)

__all__ = ["AMSTransport", "http_error", "path_id"]

T = TypeVar("T")
_RETRYABLE = (httpx.RemoteProtocolError, httpx.ReadError, httpx.WriteError)
_TOKEN_FIX = "make one on the server with: agent-memory token add --description memory-primitives"


def path_id(value: str) -> str:
    """``value`` percent-encoded as one URL path segment."""
    return quote(value, safe="")


def http_error(url: str, token: str | None, status: int, detail: str) -> PrimitivesError:
    """This package's error, naming the fix, for an AMS answer ``status`` with ``detail``:
    401/403 -> ``AuthenticationFailedError``; "Long-term memory is disabled" ->
    ``LongTermMemoryDisabledError``; 5xx -> ``BackendUnavailableError`` (the caller has retried);
    400/422 -> ``InvalidInputError``; anything else -> ``ConfigurationError`` (a wrong URL)."""
    where = f"the Agent Memory Server at {url}"
    if status in (401, 403):
        fix = (f"it needs a token: set AGENT_MEMORY_SERVER_TOKEN ({_TOKEN_FIX})" if token is None
               else f"AGENT_MEMORY_SERVER_TOKEN is not a valid token there; {_TOKEN_FIX}")
        return AuthenticationFailedError(f"{where} refused the request ({status} {detail}); {fix}")
    if "long-term memory is disabled" in detail.lower():
        return LongTermMemoryDisabledError(
            f"{where} has long-term memory disabled, so memories cannot be stored or searched "
            "there; restart it with LONG_TERM_MEMORY=true, or choose another backend "
            "(MEMORY_BACKEND=redis or inmemory)"
        )
    if status >= 500:
        return BackendUnavailableError(
            f"{where} answered HTTP {status} twice, the second time on a new connection ({detail}); "
            "check its log: its Redis or its embedding endpoint is failing"
        )
    if status in (400, 422):
        return InvalidInputError(f"{where} refused the request ({status}): {detail}")
    return ConfigurationError(f"{where} answered HTTP {status} ({detail}); is AGENT_MEMORY_SERVER_URL an AMS 0.15 API?")


class AMSTransport:
    """One AMS connection: ``api`` (a ``MemoryAPIClient``) and ``http`` (its httpx client).

    Args:
        url: AMS base URL.
        token: Bearer token sent on every request, or ``None``.
        timeout: Seconds per request.
        connect_timeout: Seconds per connection attempt (an unreachable server fails fast).
    """

    def __init__(self, url: str, token: str | None, *, timeout: float, connect_timeout: float) -> None:
        self.url = url
        self.token = token
        self.timeout = timeout
        self.connect_timeout = connect_timeout
        self.api = MemoryAPIClient(MemoryClientConfig(base_url=url, timeout=timeout))
        self.api._client = self._new_http()  # replaces the client's own (no auth, no connect timeout)
        self._retired: set[httpx.AsyncClient] = set()

    def _new_http(self) -> httpx.AsyncClient:
        headers = {"User-Agent": f"memory-primitives agent-memory-client/{client_version}",
                   "X-Client-Version": client_version}
        if self.token:
            headers["Authorization"] = f"Bearer {self.token}"
        return httpx.AsyncClient(base_url=self.url, headers=headers,
                                 timeout=httpx.Timeout(self.timeout, connect=self.connect_timeout))

    @property
    def http(self) -> httpx.AsyncClient:
        """The httpx client the API client sends with now."""
        return self.api._client

    def _renew_pool(self, used: httpx.AsyncClient) -> None:
        """Swap in a new connection pool unless another call already replaced ``used``; the old
        pool is closed once no request can still be using it (after ``timeout`` + 1 s)."""
        if self.api._client is not used:
            return
        loop = asyncio.get_running_loop()
        self.api._client = self._new_http()
        self._retired.add(used)

        def close() -> None:
            if used in self._retired:
                self._retired.discard(used)
                loop.create_task(used.aclose())

        loop.call_later(self.timeout + 1.0, close)

    def error(self, status: int, detail: str) -> PrimitivesError:
        """:func:`http_error` for this server and token."""
        return http_error(self.url, self.token, status, detail)

    async def call(self, call: Callable[[], Awaitable[T]], *, missing_ok: bool = False) -> T:
        """Run one request (``call`` builds it on the current pool), retried once on a new pool
        after a 5xx or a dropped connection (a 500 can leave a keep-alive connection unusable;
        every request the backend sends is idempotent). A 404 is re-raised as
        ``MemoryNotFoundError`` when ``missing_ok``, else it means a wrong URL.

        Raises:
            BackendUnavailableError: refused, timed out, dropped twice, or a 5xx twice.
            AuthenticationFailedError, LongTermMemoryDisabledError, InvalidInputError,
            ConfigurationError: see :func:`http_error`.
        """
        for attempt in (1, 2):
            used = self.api._client
            try:
                return await call()
            except MemoryNotFoundError as exc:
                if missing_ok:
                    raise
                raise self.error(404, str(exc)) from exc
            except MemoryServerError as exc:
                status = exc.status_code or 0
                if status >= 500 and attempt == 1:
                    self._renew_pool(used)
                    continue
                raise self.error(status, str(exc)) from exc
            except _RETRYABLE as exc:
                if attempt == 1:
                    self._renew_pool(used)
                    continue
                raise BackendUnavailableError(
                    f"the Agent Memory Server at {self.url} dropped the connection twice, the second "
                    f"time on a new connection ({type(exc).__name__}: {exc}); check that it is running"
                ) from exc
            except httpx.TransportError as exc:
                raise BackendUnavailableError(
                    f"the Agent Memory Server at {self.url} is unreachable ({type(exc).__name__}: {exc}); "
                    "start it (agent-memory api --port PORT) or set AGENT_MEMORY_SERVER_URL to where it runs"
                ) from exc
        raise AssertionError("unreachable")  # pragma: no cover

    async def raw(self, method: str, path: str, **kwargs: Any) -> Any:
        """One request on the client's pool; the JSON answer, ``None`` on 404. Use inside
        :meth:`call`. (The backend sends every request this way, so its answers are plain
        JSON that the mapping checks itself, rather than the client's pydantic models, which
        raise their own validation errors on a record they do not expect.)

        Raises:
            MemoryServerError: any other status >= 400.
            ConfigurationError: a 2xx answer that is not JSON (not an AMS API).
        """
        response = await self.http.request(method, path, **kwargs)
        if response.status_code == 404:
            return None
        if response.status_code >= 400:
            try:
                body = response.json()
                detail = str(body.get("detail", response.text) if isinstance(body, dict) else body)
            except ValueError:
                detail = response.text
            raise MemoryServerError(detail[:2000], response.status_code)
        try:
            return response.json()
        except ValueError:
            raise ConfigurationError(
                f"the server at {self.url} answered {method} {path[:80]} with HTTP {response.status_code} "
                f"and a body that is not JSON ({response.text[:80]!r}); is AGENT_MEMORY_SERVER_URL an AMS 0.15 API?"
            ) from None

    async def aclose(self) -> None:
        """Close the current and any retired pool."""
        for client in list(self._retired):
            await client.aclose()
        self._retired.clear()
        await self.api.close()
