"""An :class:`~primitives.llm.base.LLM` that calls an OpenAI-compatible ``POST {base_url}/chat/completions``.

Works with OpenAI (``https://api.openai.com/v1``), Ollama (``http://localhost:11434/v1``), vLLM,
LiteLLM's proxy and Gemini's OpenAI-compatible endpoint
(``https://generativelanguage.googleapis.com/v1beta/openai``). Built on ``httpx.AsyncClient``
(extra ``llm``), imported when the first client is made: this module imports without httpx.

Failures become typed errors (each an :class:`~primitives.errors.LLMError`, with ``model`` set)
that name the fix:

=========================================  ==================================================
what happened                              error raised
=========================================  ==================================================
connection refused or lost, DNS failure    :class:`~primitives.errors.LLMUnavailableError`
(after one retry)
no answer within ``timeout`` (after one    :class:`~primitives.errors.LLMTimeoutError`
retry)                                     (also an ``LLMUnavailableError``, a ``TimeoutError``)
HTTP 5xx or 429 (after one retry)          :class:`~primitives.errors.LLMUnavailableError`
HTTP 401 / 403                             :class:`~primitives.errors.AuthenticationFailedError`
                                           naming ``MEMORY_LLM_API_KEY``
HTTP 404                                   :class:`~primitives.errors.ConfigurationError`
                                           naming ``MEMORY_LLM_MODEL`` (the server has no such
                                           model) or ``MEMORY_LLM_URL`` (no such endpoint)
any other non-2xx                          :class:`~primitives.errors.LLMResponseError` quoting
                                           the server's ``error.message``
a 2xx whose body is not JSON, has no       :class:`~primitives.errors.LLMResponseError`
``choices[0].message.content`` string,
or whose content is empty
=========================================  ==================================================

The one retry goes out on a new connection outside the pool (a server that failed mid-request
can leave a pooled connection unusable); after a 5xx or 429 it waits the answer's
``Retry-After`` seconds (at most 5), else 0.25 s. A call can so take up to about twice
``timeout``. Messages name the URL without its credentials or query; the API key is never
logged nor put in a message (a server that echoes it back has it masked).
"""

from __future__ import annotations

import asyncio
import json
import logging
import math
from collections.abc import Mapping, Sequence
from typing import TYPE_CHECKING, Any, Final, Self
from urllib.parse import SplitResult, urlsplit

from primitives.errors import (
    AuthenticationFailedError,
    ConfigurationError,
    LLMError,
    LLMResponseError,
    LLMTimeoutError,
    LLMUnavailableError,
)
from primitives.llm.base import (
    DEFAULT_TIMEOUT,
    ChatMessage,
    check_messages,
    check_options,
)
from primitives.validation import (
    check_identifier,
    check_json_object,
    check_number,
    check_text,
)

if TYPE_CHECKING:
    import ssl

    import httpx

__all__ = ["INSTALL_HINT", "JSON_MODES", "OpenAIChatLLM"]

logger = logging.getLogger(__name__)

#: How JSON mode is asked for: ``"response_format"`` sends ``{"type": "json_object"}``;
#: ``"prompt"`` sends nothing (the prompt asks for JSON), for servers that refuse the field.
JSON_MODES: Final = ("response_format", "prompt")
#: What to install for this client.
INSTALL_HINT: Final = 'pip install "memory-primitives[llm]"'
#: Request keys the client owns: ``extra_body`` cannot set them.
_RESERVED: Final = frozenset(("model", "messages", "stream"))
#: Seconds waited before retrying a 5xx or 429 without ``Retry-After``, and the most waited with.
_RETRY_DELAY: Final = 0.25
_MAX_RETRY_WAIT: Final = 5.0
#: Error family of a bad constructor argument (value error, type error).
_CONFIG_ERRORS: Final = (ConfigurationError, ConfigurationError)
_URL_HINT: Final = "MEMORY_LLM_URL (the API's /v1 root, e.g. http://localhost:11434/v1 for Ollama)"


class _LLMAuthError(AuthenticationFailedError, LLMError):
    """The endpoint refused the API key: an authentication failure of the LLM seam."""


class _LLMConfigError(ConfigurationError, LLMError):
    """The endpoint says the configuration is wrong (no such model, no such path)."""


class OpenAIChatLLM:
    """Chat completions from an OpenAI-compatible ``/v1/chat/completions`` endpoint.

    Args:
        base_url: The API's ``/v1`` root (``http://localhost:11434/v1``,
            ``https://api.openai.com/v1``,
            ``https://generativelanguage.googleapis.com/v1beta/openai``); ``/chat/completions``
            is appended unless the URL already ends with it. ``http`` or ``https`` only.
        model: The model name sent with every request and recorded in provenance.
        api_key: Sent as ``Authorization: Bearer <api_key>`` (printable ASCII); ``None`` or
            ``""`` sends no header (Ollama, a local vLLM).
        timeout: Seconds allowed for each of connect, write, read and pool wait (finite, > 0;
            default 60). With the one retry a call can take about twice as long.
        json_mode: How ``complete(json_mode=True)`` asks for JSON: ``"response_format"`` (sends
            ``"response_format": {"type": "json_object"}``; OpenAI, Ollama, vLLM, LiteLLM,
            Gemini) or ``"prompt"`` (sends nothing: the prompt asks for JSON; for servers that
            refuse ``response_format``). Either way the answer comes back as text.
        extra_body: More JSON fields merged into every request body last, so they win over
            ``temperature``, ``max_tokens`` and ``response_format``; a ``None`` value removes
            that field (``{"temperature": None}`` for models that accept only their default,
            such as OpenAI's reasoning models). ``model``, ``messages`` and ``stream`` are
            refused.
        transport: An ``httpx.AsyncBaseTransport`` to send requests through (e.g.
            ``httpx.MockTransport`` in tests); the retry then reuses it.

    Attributes:
        model: The model name.

    Raises:
        ConfigurationError: httpx is not installed (the message says
            ``pip install "memory-primitives[llm]"``), ``base_url`` is not an ``http(s)://``
            URL, an empty ``model``, an ``api_key`` that is not printable ASCII, a ``timeout``
            that is not a finite number > 0, an unknown ``json_mode``, an ``extra_body`` that
            is not a JSON object or sets a reserved field, or a ``transport`` that is not an
            ``httpx.AsyncBaseTransport``.
    """

    def __init__(
        self,
        *,
        base_url: str,
        model: str,
        api_key: str | None = None,
        timeout: float = DEFAULT_TIMEOUT,
        json_mode: str = "response_format",
        extra_body: Mapping[str, Any] | None = None,
        transport: httpx.AsyncBaseTransport | None = None,
    ) -> None:
        httpx = import_httpx()
        self._url, self._shown_url, password = _endpoint(base_url, "base_url")
        try:
            httpx.URL(self._url)
        except httpx.InvalidURL as exc:
            raise ConfigurationError(f"base_url {self._shown_url!r} is not a valid URL: {exc}") from None
        self.model: str = check_identifier(model, "model", errors=_CONFIG_ERRORS)
        self._timeout = check_number(timeout, "timeout", minimum=0.0, exclusive_minimum=True, errors=_CONFIG_ERRORS)
        api_key = check_api_key(api_key, "api_key")
        if json_mode not in JSON_MODES:
            raise ConfigurationError(f"json_mode must be one of {', '.join(JSON_MODES)}; got {json_mode!r}")
        self._json_mode = json_mode
        extra = {} if extra_body is None else check_json_object(extra_body, "extra_body", errors=_CONFIG_ERRORS)
        reserved = sorted(_RESERVED.intersection(extra))
        if reserved:
            raise ConfigurationError(
                f"extra_body cannot set {', '.join(reserved)}: the client sets model and messages itself "
                "and reads one whole answer (no streaming)"
            )
        self._extra = extra
        if transport is not None and not isinstance(transport, httpx.AsyncBaseTransport):
            raise ConfigurationError(f"transport must be an httpx.AsyncBaseTransport, got {type(transport).__name__}")
        self._transport = transport
        # Masked in every message (a server may echo the key back); shorter strings are not secrets.
        self._secrets = [s for s in (api_key, password) if s and len(s) >= 4]
        self._headers = {
            "Accept": "application/json",
            "Content-Type": "application/json",
            "User-Agent": "memory-primitives",
        }
        if api_key:
            self._headers["Authorization"] = f"Bearer {api_key}"
        self._has_key = bool(api_key)
        self._client: httpx.AsyncClient | None = None
        self._client_loop: asyncio.AbstractEventLoop | None = None
        self._ssl: ssl.SSLContext | None = None

    @property
    def url(self) -> str:
        """The endpoint requests are posted to, without credentials or query (for messages)."""
        return self._shown_url

    @property
    def timeout(self) -> float:
        """Seconds allowed for each of connect, write, read and pool wait."""
        return self._timeout

    async def complete(
        self,
        messages: Sequence[ChatMessage],
        *,
        json_mode: bool = False,
        max_tokens: int | None = None,
        temperature: float = 0.0,
    ) -> str:
        """The model's answer: ``choices[0].message.content`` of one chat completion.

        Sends ``{"model", "messages", "temperature"}``, plus ``"max_tokens"`` when given and
        ``"response_format": {"type": "json_object"}`` when ``json_mode`` and the client's
        ``json_mode="response_format"``, then ``extra_body``.

        Args:
            messages: See :func:`~primitives.llm.base.check_messages`; sent exactly as given.
            json_mode: Ask for a JSON object (see the class's ``json_mode``); the answer is
                returned as text, unchecked (:func:`~primitives.llm.base.complete_json`
                parses and checks it).
            max_tokens: Most tokens to generate (``int`` >= 1); ``None``: the server's default.
            temperature: Sampling temperature in ``[0, 2]``; default ``0.0``.

        Returns:
            The answer text, non-empty.

        Raises:
            InvalidInputError: malformed ``messages`` or options (``InvalidInputTypeError`` for
                a wrong type).
            LLMTimeoutError: no answer within ``timeout``, also on the retry.
            LLMUnavailableError: the endpoint cannot be reached, or answered 5xx or 429, also
                on the retry.
            AuthenticationFailedError: HTTP 401 or 403 (also an ``LLMError``).
            ConfigurationError: HTTP 404: no such model or endpoint (also an ``LLMError``).
            LLMResponseError: any other non-2xx answer, or a 2xx body without a non-empty
                ``choices[0].message.content`` string.
        """
        checked = check_messages(messages)
        max_tokens, temperature, json_mode = check_options(max_tokens, temperature, json_mode)
        body: dict[str, Any] = {"model": self.model, "messages": checked, "temperature": temperature}
        if max_tokens is not None:
            body["max_tokens"] = max_tokens
        if json_mode and self._json_mode == "response_format":
            body["response_format"] = {"type": "json_object"}
        for key, value in self._extra.items():
            if value is None:
                body.pop(key, None)
            else:
                body[key] = value
        payload = json.dumps(body, ensure_ascii=False, allow_nan=False).encode("utf-8")
        response = await self._post(payload)
        if not response.is_success:
            raise self._error_for(response, json_mode)
        return self._parse(response)

    # --- HTTP ---------------------------------------------------------------------------------

    def _new_client(self, *, pooled: bool = True) -> httpx.AsyncClient:
        import httpx

        timeout = httpx.Timeout(self._timeout)
        if self._transport is not None:
            return httpx.AsyncClient(timeout=timeout, headers=self._headers, transport=self._transport)
        if self._ssl is None:  # loading the CA bundle takes ~0.1 s: once per client object
            self._ssl = httpx.create_ssl_context()
        limits = httpx.Limits() if pooled else httpx.Limits(max_keepalive_connections=0)
        return httpx.AsyncClient(timeout=timeout, headers=self._headers, limits=limits, verify=self._ssl)

    def _pooled_client(self) -> httpx.AsyncClient:
        # A pool's connections belong to the loop that opened them: a new loop gets a new pool.
        loop = asyncio.get_running_loop()
        if self._client is None or self._client_loop is not loop or self._client.is_closed:
            self._client = self._new_client()
            self._client_loop = loop
        return self._client

    async def _post(self, payload: bytes) -> httpx.Response:
        import httpx

        try:
            response = await self._pooled_client().post(self._url, content=payload)
        except httpx.TransportError as exc:  # refused, dropped, timed out
            reason = f"{type(exc).__name__}: {exc}" if str(exc) else type(exc).__name__
        except httpx.HTTPError as exc:  # a body that cannot be decoded, ...
            raise self._response_error(f"answered a body that cannot be read ({type(exc).__name__}: {exc})") from exc
        else:
            if response.status_code < 500 and response.status_code != 429:
                return response
            reason = f"HTTP {response.status_code}"
            await asyncio.sleep(_retry_wait(response))
        logger.info(
            "LLM request to %s failed (%s); retrying once on a new connection", self._shown_url, self._redact(reason)
        )
        return await self._retry(payload)

    async def _retry(self, payload: bytes) -> httpx.Response:
        import httpx

        try:
            if self._transport is not None:  # its connections are the transport's business
                return await self._pooled_client().post(self._url, content=payload)
            async with self._new_client(pooled=False) as fresh:
                return await fresh.post(self._url, content=payload, headers={"Connection": "close"})
        except httpx.TransportError as exc:
            raise self._unreachable(exc) from exc
        except httpx.HTTPError as exc:
            raise self._response_error(f"answered a body that cannot be read ({type(exc).__name__}: {exc})") from exc

    # --- errors -------------------------------------------------------------------------------

    def _redact(self, text: str) -> str:
        for secret in self._secrets:
            text = text.replace(secret, "***")
        return text

    def _response_error(self, what: str) -> LLMResponseError:
        return LLMResponseError(self._redact(f"the LLM endpoint {self._shown_url} {what}"), model=self.model)

    def _unreachable(self, exc: httpx.TransportError) -> LLMUnavailableError:
        import httpx

        if isinstance(exc, httpx.TimeoutException):
            return LLMTimeoutError(
                f"the LLM endpoint {self._shown_url} did not answer within {self._timeout:g} s "
                f"({type(exc).__name__}), also on a retry; is the server running and the model "
                f"{self.model!r} loaded? A slow model needs a larger MEMORY_LLM_TIMEOUT (seconds); "
                f"check {_URL_HINT}",
                model=self.model,
            )
        detail = self._redact(str(exc)) or "no detail"
        what = "cannot be reached" if isinstance(exc, httpx.ConnectError) else "closed the connection without an answer"
        return LLMUnavailableError(
            f"the LLM endpoint {self._shown_url} {what} ({type(exc).__name__}: {detail}), "
            f"also on a retry; is the server running? Check {_URL_HINT}",
            model=self.model,
        )

    def _error_for(self, response: httpx.Response, json_mode: bool) -> LLMError:
        status = response.status_code
        message, code = _server_error(response)
        said = self._redact(f"HTTP {status}: {message}")
        where = f"the LLM endpoint {self._shown_url}"
        if status in (401, 403):
            sent = "the API key sent" if self._has_key else "the request without an API key"
            return _LLMAuthError(
                f"{where} refused {sent} ({said}); set MEMORY_LLM_API_KEY to a key this server accepts",
                model=self.model,
            )
        if status == 404:
            if code == "model_not_found" or "model" in message.lower():
                return _LLMConfigError(
                    f"{where} has no model {self.model!r} ({said}); set MEMORY_LLM_MODEL to a model it "
                    "serves (GET <MEMORY_LLM_URL>/models lists them; for Ollama, `ollama pull <model>` first)",
                    model=self.model,
                )
            return _LLMConfigError(
                f"{where} does not exist ({said}); check {_URL_HINT}: it must be the root of an "
                "OpenAI-compatible API, to which /chat/completions is appended",
                model=self.model,
            )
        if status == 429:
            return LLMUnavailableError(
                f"{where} is rate limiting ({said}), also on a retry; lower the request rate or check "
                "the account's quota",
                model=self.model,
            )
        if status >= 500:
            return LLMUnavailableError(
                f"{where} failed ({said}), also on a retry; check that the server and the model "
                f"{self.model!r} are up",
                model=self.model,
            )
        hint = ""
        if json_mode and self._json_mode == "response_format" and "response_format" in message.lower():
            hint = "; this server refuses response_format: set MEMORY_LLM_JSON_MODE=prompt (json_mode='prompt')"
        elif status == 413 or "context" in message.lower():
            hint = "; the messages are too long for this model: send less text"
        elif 300 <= status < 400:
            hint = f"; a redirect (to {response.headers.get('location', '?')!r}): set {_URL_HINT} to the final URL"
        return LLMResponseError(f"{where} refused the request ({said}){self._redact(hint)}", model=self.model)

    def _parse(self, response: httpx.Response) -> str:
        try:
            body = response.json()
        except ValueError:
            raise self._response_error(
                f"answered HTTP {response.status_code} with a body that is not JSON ({_snippet(response)}); "
                f"check {_URL_HINT}: it must be an OpenAI-compatible API"
            ) from None
        choices = body.get("choices") if isinstance(body, dict) else None
        if not isinstance(choices, list) or not choices:
            raise self._response_error(
                f"answered without a non-empty 'choices' list ({_snippet(response)}); expected a chat completion"
            )
        first = choices[0]
        message = first.get("message") if isinstance(first, dict) else None
        content = message.get("content") if isinstance(message, dict) else None
        if not isinstance(content, str):
            refusal = message.get("refusal") if isinstance(message, dict) else None
            has_refusal = isinstance(refusal, str) and refusal
            why = f"the model refused: {refusal[:200]!r}" if has_refusal else _snippet(response)
            raise self._response_error(f"answered without a choices[0].message.content string ({why})")
        if not content.strip():
            finish = first.get("finish_reason")
            finish = finish[:40] if isinstance(finish, str) else None
            hint = (
                "; the model stopped at max_tokens before answering (a reasoning model spends tokens "
                "thinking first): raise max_tokens"
                if finish == "length" else ""
            )
            raise self._response_error(
                f"answered with an empty content ({content[:40]!r}, finish_reason {finish!r}){hint}"
            )
        return content

    # --- lifecycle ----------------------------------------------------------------------------

    async def aclose(self) -> None:
        """Close the connection pool (a later :meth:`complete` opens a new one)."""
        client, self._client = self._client, None
        loop, self._client_loop = self._client_loop, None
        if client is not None and loop is asyncio.get_running_loop():
            await client.aclose()

    async def __aenter__(self) -> Self:
        return self

    async def __aexit__(self, *exc_info: object) -> None:
        await self.aclose()

    def __repr__(self) -> str:
        return f"OpenAIChatLLM(url={self._shown_url!r}, model={self.model!r}, json_mode={self._json_mode!r})"


def import_httpx() -> Any:
    """The ``httpx`` module.

    Raises:
        ConfigurationError: httpx is not installed; the message says what to install.
    """
    try:
        import httpx
    except ImportError as exc:
        raise ConfigurationError(f"the OpenAI-compatible LLM client needs httpx: {INSTALL_HINT} ({exc})") from exc
    return httpx


def check_api_key(api_key: object, name: str) -> str | None:
    """``api_key`` when it is ``None`` or a ``str`` of printable ASCII (an HTTP header value);
    ``""`` means none.

    Raises:
        ConfigurationError: a non-``str``, or a key with a non-ASCII or control character (the
            message does not quote the key).
    """
    if api_key is None:
        return None
    if not isinstance(api_key, str):
        raise ConfigurationError(f"{name} must be a str, got {type(api_key).__name__}")
    if not (api_key.isascii() and api_key.isprintable()):
        raise ConfigurationError(f"{name} must be printable ASCII (it is sent as an HTTP header value)")
    return api_key.strip() or None


def check_base_url(base_url: object, name: str) -> SplitResult:
    """``base_url`` split into its parts when it is an ``http(s)://`` URL with a host.

    Raises:
        ConfigurationError: anything else; the message shows the URL without credentials.
    """
    text = check_text(base_url, name, errors=_CONFIG_ERRORS).strip()
    try:
        parts = urlsplit(text)
        parts.port  # noqa: B018  # raises ValueError for a port that is not a number in range
    except ValueError:
        parts = None
    if parts is None or parts.scheme.lower() not in ("http", "https") or not parts.hostname:
        raise ConfigurationError(
            f"{name} must be an http(s):// URL of an OpenAI-compatible API's /v1 root, such as "
            f"http://localhost:11434/v1 or https://api.openai.com/v1; got {_without_credentials(text)!r}"
        )
    return parts


def _endpoint(base_url: object, name: str) -> tuple[str, str, str | None]:
    """``(url to post to, that URL without credentials or query, the URL's password)``."""
    parts = check_base_url(base_url, name)
    path = parts.path.rstrip("/")
    if not path.endswith("/chat/completions"):
        path += "/chat/completions"
    url = parts._replace(path=path, fragment="").geturl()
    host = parts.hostname or ""
    shown_host = f"[{host}]" if ":" in host else host
    port = f":{parts.port}" if parts.port is not None else ""
    shown = f"{parts.scheme.lower()}://{shown_host}{port}{path}"
    return url, shown, parts.password


def _without_credentials(text: str) -> str:
    scheme, sep, rest = text.partition("://")
    if not sep:
        return text[:200]
    authority, slash, tail = rest.partition("/")
    return f"{scheme}://{authority.rpartition('@')[2]}{slash}{tail.partition('?')[0]}"[:200]


def _retry_wait(response: httpx.Response) -> float:
    """Seconds to wait before retrying a 5xx or 429: ``Retry-After`` (seconds, at most
    :data:`_MAX_RETRY_WAIT`) when given as a number, else :data:`_RETRY_DELAY`."""
    raw = response.headers.get("retry-after", "")
    try:
        seconds = float(raw)
    except ValueError:
        return _RETRY_DELAY
    return min(seconds, _MAX_RETRY_WAIT) if math.isfinite(seconds) and seconds >= 0 else _RETRY_DELAY


def _server_error(response: httpx.Response) -> tuple[str, str]:
    """``(message, code)`` of an error body: OpenAI's ``{"error": {"message", "code"}}``,
    Ollama's ``{"error": "..."}``, FastAPI's ``{"detail": "..."}``; else an excerpt of the body."""
    try:
        body = response.json()
    except ValueError:
        return _snippet(response), ""
    if isinstance(body, list) and len(body) == 1:  # Gemini wraps its error in a list
        body = body[0]
    if isinstance(body, dict):
        error = body.get("error")
        if isinstance(error, dict) and isinstance(error.get("message"), str):
            code = error.get("code")
            return error["message"][:1000], code if isinstance(code, str) else ""
        for value in (error, body.get("detail"), body.get("message")):
            if isinstance(value, str):
                return value[:1000], ""
    return _snippet(response), ""


def _snippet(response: httpx.Response) -> str:
    try:
        text = response.text.strip()
    except (UnicodeDecodeError, LookupError):
        return "a body that is not text"
    return repr(text[:200]) + ("..." if len(text) > 200 else "") if text else "an empty body"
