"""An OpenAI-compatible embeddings endpoint serving any :class:`Embedder` (extra ``serve``).

Routes (Starlette on uvicorn):

- ``POST /v1/embeddings``: request ``{"input": str | list[str], "model": str,
  "encoding_format"?: "float" | "base64", "dimensions"?: int, "user"?: str}``; answer
  ``{"object": "list", "data": [{"object": "embedding", "index": i, "embedding": ...}],
  "model": <served model>, "usage": {"prompt_tokens": n, "total_tokens": n}}`` with ``data`` in
  input order. ``embedding`` is a list of ``dims`` floats (L2 norm 1), or for ``"base64"`` the
  base64 of those values as little-endian float32 (what the OpenAI Python SDK asks for by default).
  The header ``x-embed-time-ms`` gives the wall-clock milliseconds the request spent in the
  embedder (model, cache, waiting for a batch in progress): the rest of the response time is
  HTTP, validation, JSON and the network.
- ``GET /v1/models``: the one served model. ``GET /health``: ``{"status": "ok", "model", "dims",
  "stats": {"model_calls", "texts_embedded", "cache_hits"}}`` (counters since start; never needs
  the API key, so a supervisor can poll it).

Any ``model`` name is accepted and the answer names the model actually served, so LiteLLM's
``openai/<anything>`` works; ``dimensions`` must equal the served dims. Token-id inputs are
refused. Bad input gets HTTP 400 with OpenAI's error body ``{"error": {"message", "type":
"invalid_request_error", "param", "code"}}``; a wrong or missing bearer token gets 401 with
``code`` ``"invalid_api_key"``. ``usage`` counts are estimated (one token per 4 characters,
OpenAI's rule of thumb) unless a ``count_tokens`` function is given.

Encoding runs where the embedder runs it (the local model: a worker thread), so the event loop
keeps answering. Small requests (<= 64 texts) that arrive while the model is busy with others
are embedded together in the next call (no request waits when the model is idle). Texts already embedded are served
from the embedder's cache.
"""

from __future__ import annotations

import asyncio
import base64
import hmac
import json
import socket
import sys
import threading
import time
from array import array
from collections.abc import Callable, Iterator, Sequence
from contextlib import contextmanager
from typing import TYPE_CHECKING, Any

from primitives.embeddings.base import Embedder, check_api_key
from primitives.errors import ConfigurationError, EmbedderUnavailableError, InvalidInputError
from primitives.validation import check_int

if TYPE_CHECKING:
    from starlette.applications import Starlette
    from starlette.requests import Request
    from starlette.responses import JSONResponse, Response

__all__ = [
    "create_app",
    "serve",
    "running_server",
    "base_url",
    "DEFAULT_HOST",
    "DEFAULT_PORT",
    "DEFAULT_MAX_BATCH",
    "DEFAULT_MAX_TEXT_CHARS",
    "DEFAULT_MAX_BODY_BYTES",
]

DEFAULT_HOST = "127.0.0.1"
#: Not 8000: the Agent Memory Server, the usual client, listens there by default.
DEFAULT_PORT = 8100
#: Most texts in one request; OpenAI's own limit.
DEFAULT_MAX_BATCH = 2048
#: Longest text accepted, in characters: about twice OpenAI's 8,192-token input limit at ~4
#: characters a token. (MiniLM reads only the first 256 word pieces; longer text is truncated.)
DEFAULT_MAX_TEXT_CHARS = 65_536
#: Largest request body accepted (413 beyond it).
DEFAULT_MAX_BODY_BYTES = 64 * 1024 * 1024
#: Seconds an idle keep-alive connection stays open: longer than the 5 s after which httpx (the
#: OpenAI SDK, LiteLLM) stops reusing one, so a client never reuses a connection being closed.
_KEEP_ALIVE = 15


class _BadRequest(Exception):
    def __init__(self, message: str, param: str | None, code: str | None, status: int = 400) -> None:
        super().__init__(message)
        self.message, self.param, self.code, self.status = message, param, code, status


def _error(status: int, message: str, *, param: str | None = None, code: str | None = None,
           kind: str = "invalid_request_error", headers: dict[str, str] | None = None) -> JSONResponse:
    from starlette.responses import JSONResponse

    body = {"error": {"message": message, "type": kind, "param": param, "code": code}}
    return JSONResponse(body, status_code=status, headers=headers)


#: Requests of at most this many texts are coalesced; larger ones (bulk ingestion) go to the
#: embedder on their own, so a one-text query never waits behind a 2,048-text batch.
_COALESCE_MAX_TEXTS = 64


class _Coalescer:
    """Joins the texts of small requests that arrive while the model is busy into one embed call.

    A request that finds no coalesced call running starts at once (no added wait); small
    requests arriving during that call are embedded together next, up to ``max_texts`` texts a
    call. With 16 concurrent single-text clients this doubled throughput and cut median latency
    by a third (measured with all-MiniLM-L6-v2 on 2 CPU cores): one ``encode`` of n texts costs
    far less than n encodes competing for the same cores. The price: a small request whose texts
    are cached still waits for the call in progress (at most ``max_texts`` texts).
    """

    def __init__(self, embedder: Embedder, max_texts: int = _COALESCE_MAX_TEXTS) -> None:
        self._embedder = embedder
        self._max_texts = max_texts
        self._pending: list[tuple[list[str], asyncio.Future[list[tuple[float, ...]]]]] = []
        self._worker: asyncio.Task[None] | None = None

    async def embed(self, texts: list[str]) -> list[tuple[float, ...]]:
        if len(texts) > self._max_texts:
            return await self._embedder.embed_tuples(texts)
        future: asyncio.Future[list[tuple[float, ...]]] = asyncio.get_running_loop().create_future()
        self._pending.append((texts, future))
        if self._worker is None or self._worker.done():
            self._worker = asyncio.create_task(self._drain())
        return await future

    async def _drain(self) -> None:
        while self._pending:
            group, count = [], 0
            while self._pending and (not group or count + len(self._pending[0][0]) <= self._max_texts):
                group.append(self._pending.pop(0))
                count += len(group[-1][0])
            try:
                vectors = await self._embedder.embed_tuples([t for texts, _ in group for t in texts])
            except Exception as exc:  # delivered to every request of the group
                for _, future in group:
                    if not future.done():
                        future.set_exception(exc)
                continue
            except BaseException:  # cancelled (shutdown): nobody will answer the waiting requests
                for _, future in group + self._pending:
                    future.cancel()
                self._pending.clear()
                raise
            start = 0
            for texts, future in group:
                if not future.done():  # done: the client went away
                    future.set_result(vectors[start : start + len(texts)])
                start += len(texts)


def _estimate_tokens(texts: Sequence[str]) -> int:
    return sum(max(1, -(-len(text) // 4)) for text in texts)


def _base64(vector: Sequence[float]) -> str:
    values = array("f", vector)
    if sys.byteorder == "big":
        values.byteswap()
    return base64.b64encode(values.tobytes()).decode("ascii")


def create_app(
    embedder: Embedder,
    *,
    api_key: str | None = None,
    max_batch: int = DEFAULT_MAX_BATCH,
    max_text_chars: int = DEFAULT_MAX_TEXT_CHARS,
    max_body_bytes: int = DEFAULT_MAX_BODY_BYTES,
    count_tokens: Callable[[Sequence[str]], int] | None = None,
) -> Starlette:
    """The ASGI app serving ``embedder`` (see the module docstring for routes and bodies).

    Args:
        embedder: Answers every request; not closed by the app.
        api_key: When set (printable ASCII), ``/v1/*`` needs ``Authorization: Bearer <api_key>``
            (401 otherwise).
        max_batch: Most ``input`` items per request (an int >= 1).
        max_text_chars: Longest ``input`` text, in characters (an int >= 1).
        max_body_bytes: Largest request body in bytes (an int >= 1; 413 beyond it).
        count_tokens: Returns the token count reported in ``usage`` for a request's texts
            (default: an estimate of one token per 4 characters).

    Raises:
        InvalidInputError: a limit is not an int >= 1, or ``api_key`` is not printable ASCII
            (an ``InvalidInputTypeError``, also a ``TypeError``, for a wrong type).
        EmbedderUnavailableError: Starlette is not installed (the message gives the pip command).
    """
    try:
        from starlette.applications import Starlette
        from starlette.exceptions import HTTPException
        from starlette.responses import JSONResponse
        from starlette.routing import Route
    except ImportError as exc:
        raise EmbedderUnavailableError(f'the embeddings server needs Starlette and uvicorn: pip install "memory-primitives[serve]" ({exc})') from exc
    check_int(max_batch, "max_batch", minimum=1)
    check_int(max_text_chars, "max_text_chars", minimum=1)
    check_int(max_body_bytes, "max_body_bytes", minimum=1)
    api_key = check_api_key(api_key)
    tokens = count_tokens or _estimate_tokens
    coalescer = _Coalescer(embedder)
    expected_auth = f"Bearer {api_key}".encode() if api_key else None
    created = int(time.time())

    def refused(request: Request) -> JSONResponse | None:
        if expected_auth is None:
            return None
        given = request.headers.get("authorization", "")
        if not given:
            return _error(401, "You didn't provide an API key. Send it as 'Authorization: Bearer <key>' "
                          "(the OpenAI SDK and LiteLLM send OPENAI_API_KEY that way).", code="invalid_api_key",
                          headers={"WWW-Authenticate": "Bearer"})
        scheme, _, token = given.partition(" ")
        if not hmac.compare_digest(f"{scheme.capitalize()} {token.strip()}".encode(), expected_auth):
            return _error(401, "Incorrect API key provided. Use the key given to `memory-primitives "
                          "embeddings serve --api-key` (or MEMORY_EMBEDDINGS_SERVE_API_KEY).",
                          code="invalid_api_key", headers={"WWW-Authenticate": "Bearer"})
        return None

    async def read_json(request: Request) -> Any:
        media_type = request.headers.get("content-type", "").split(";")[0].strip().lower()
        if media_type != "application/json":
            raise _BadRequest(f"Content-Type must be application/json, got {media_type or 'none'!r}",
                              None, "invalid_content_type")
        declared = request.headers.get("content-length", "")
        if declared.isdigit() and int(declared) > max_body_bytes:
            raise _BadRequest(f"the request body has {declared} bytes; at most {max_body_bytes} are "
                              "accepted: send fewer texts per request", None, "request_too_large", 413)
        chunks, size = [], 0
        async for chunk in request.stream():
            size += len(chunk)
            if size > max_body_bytes:
                raise _BadRequest(f"the request body is larger than {max_body_bytes} bytes: send fewer "
                                  "texts per request", None, "request_too_large", 413)
            chunks.append(chunk)
        try:
            return json.loads(b"".join(chunks))
        except (ValueError, UnicodeDecodeError) as exc:
            raise _BadRequest(f"We could not parse the JSON body of your request: {exc}", None,
                              "invalid_json") from None

    def parse(body: Any) -> tuple[list[str], str]:
        if not isinstance(body, dict):
            raise _BadRequest(f"the request body must be a JSON object, got {type(body).__name__}", None, "invalid_type")
        model = body.get("model")
        if not isinstance(model, str) or not model:
            raise _BadRequest("you must provide a model parameter (a non-empty string)", "model",
                              "missing_required_parameter" if model is None else "invalid_type")
        encoding = body.get("encoding_format")
        if encoding not in (None, "float", "base64"):
            raise _BadRequest(f"encoding_format must be 'float' or 'base64', got {encoding!r}",
                              "encoding_format", "invalid_value")
        dims = body.get("dimensions")
        if dims is not None and (isinstance(dims, bool) or not isinstance(dims, int)):
            raise _BadRequest(f"dimensions must be an integer, got {dims!r}", "dimensions", "invalid_type")
        if dims is not None and dims != embedder.dims:
            raise _BadRequest(f"this server's model {embedder.model} makes {embedder.dims}-dimensional "
                              f"vectors and cannot change their size; omit dimensions or send "
                              f"{embedder.dims} (got {dims})", "dimensions", "unsupported_dimensions")
        user = body.get("user")
        if user is not None and not isinstance(user, str):
            raise _BadRequest(f"user must be a string, got {type(user).__name__}", "user", "invalid_type")
        return check_input(body.get("input")), encoding or "float"

    def check_input(raw: Any) -> list[str]:
        if raw is None:
            raise _BadRequest("'input' is a required property: a string or a list of strings", "input",
                              "missing_required_parameter")
        texts = [raw] if isinstance(raw, str) else raw
        if not isinstance(texts, list):
            raise _BadRequest(f"input must be a string or a list of strings, got {type(raw).__name__}",
                              "input", "invalid_type")
        if not texts:
            raise _BadRequest("input is an empty list; send at least one string", "input", "empty_input")
        if all(isinstance(t, int) and not isinstance(t, bool) for t in texts) or all(
                isinstance(t, list) for t in texts):
            raise _BadRequest("input as token ids (arrays of integers) is not supported by this "
                              "server; send the text as strings", "input", "unsupported_input")
        if len(texts) > max_batch:
            raise _BadRequest(f"input has {len(texts)} items; at most {max_batch} are accepted per "
                              "request (--max-batch): split the request", "input", "too_many_inputs")
        for i, text in enumerate(texts):
            where = "input" if isinstance(raw, str) else f"input[{i}]"
            if not isinstance(text, str):
                raise _BadRequest(f"{where} must be a string, got {type(text).__name__}", "input", "invalid_type")
            if not text.strip():
                raise _BadRequest(f"{where} is an empty string; there is nothing to embed", "input", "empty_input")
            if len(text) > max_text_chars:
                raise _BadRequest(f"{where} has {len(text)} characters; at most {max_text_chars} are "
                                  "accepted: split the text", "input", "input_too_long")
        return texts

    async def embeddings(request: Request) -> Response:
        denied = refused(request)
        if denied is not None:
            return denied
        try:
            texts, encoding = parse(await read_json(request))
        except _BadRequest as bad:
            return _error(bad.status, bad.message, param=bad.param, code=bad.code)
        started = time.perf_counter()
        try:
            vectors = await coalescer.embed(texts)
        except EmbedderUnavailableError as exc:
            return _error(503, f"the model is unavailable: {exc}", kind="server_error", code="model_unavailable")
        except InvalidInputError as exc:
            return _error(400, str(exc), param="input", code="invalid_input")
        encode = _base64 if encoding == "base64" else list
        data = [{"object": "embedding", "index": i, "embedding": encode(v)} for i, v in enumerate(vectors)]
        count = tokens(texts)
        return JSONResponse({"object": "list", "data": data, "model": embedder.model,
                             "usage": {"prompt_tokens": count, "total_tokens": count}},
                            headers={"x-embed-time-ms": f"{(time.perf_counter() - started) * 1000:.3f}"})

    async def models(request: Request) -> Response:
        denied = refused(request)
        if denied is not None:
            return denied
        return JSONResponse({"object": "list", "data": [
            {"id": embedder.model, "object": "model", "created": created, "owned_by": "memory-primitives"}]})

    async def health(request: Request) -> Response:
        stats = embedder.stats
        return JSONResponse({"status": "ok", "model": embedder.model, "dims": embedder.dims, "stats": {
            "model_calls": stats.model_calls, "texts_embedded": stats.texts_embedded, "cache_hits": stats.cache_hits}})

    async def http_error(request: Request, exc: Exception) -> Response:
        assert isinstance(exc, HTTPException)
        if exc.status_code == 404:
            message = f"unknown path {request.url.path}; embeddings are at POST /v1/embeddings"
        else:
            message = f"{request.method} is not allowed on {request.url.path}; {exc.detail}"
        return _error(exc.status_code, message, code="not_found" if exc.status_code == 404 else None,
                      headers=exc.headers)

    async def server_error(request: Request, exc: Exception) -> Response:
        return _error(500, f"the server failed: {type(exc).__name__}: {exc}", kind="server_error")

    return Starlette(
        routes=[
            Route("/v1/embeddings", embeddings, methods=["POST"]),
            Route("/v1/models", models, methods=["GET"]),
            Route("/health", health, methods=["GET"]),
        ],
        exception_handlers={HTTPException: http_error, Exception: server_error},
    )


def _listen(host: str, port: int) -> socket.socket:
    family = socket.AF_INET6 if ":" in host else socket.AF_INET
    # proto=IPPROTO_TCP matters: asyncio sets TCP_NODELAY only on sockets that say they are TCP,
    # and without it every keep-alive response waits ~40 ms for a delayed ACK (Nagle).
    sock = socket.socket(family, socket.SOCK_STREAM, socket.IPPROTO_TCP)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    try:
        sock.bind((host, port))
    except OSError as exc:
        sock.close()
        raise ConfigurationError(f"cannot listen on {host}:{port} ({exc.strerror or exc}); choose another --port") from exc
    sock.set_inheritable(True)
    return sock


def base_url(host: str, port: int) -> str:
    """``http://host:port/v1``: the value for ``OPENAI_API_BASE`` / ``MEMORY_EMBEDDINGS_URL``."""
    shown = "127.0.0.1" if host in ("", "0.0.0.0") else f"[{host}]" if ":" in host else host
    return f"http://{shown}:{port}/v1"


async def serve(
    embedder: Embedder,
    *,
    host: str = DEFAULT_HOST,
    port: int = DEFAULT_PORT,
    api_key: str | None = None,
    max_batch: int = DEFAULT_MAX_BATCH,
    max_text_chars: int = DEFAULT_MAX_TEXT_CHARS,
    max_body_bytes: int = DEFAULT_MAX_BODY_BYTES,
    log_level: str = "warning",
    access_log: bool = False,
    ready: Callable[[str], object] | None = None,
) -> None:
    """Serve ``embedder`` with uvicorn until SIGINT or SIGTERM (or until cancelled).

    Args:
        embedder: Answers every request; load it first so the first request is not slow.
        host: Interface to listen on (default loopback only).
        port: TCP port; 0 picks a free one (``ready`` receives the real one).
        api_key, max_batch, max_text_chars, max_body_bytes: See :func:`create_app`.
        log_level: uvicorn's log level (``"warning"``: only problems).
        access_log: Log one line per request.
        ready: Called with the base URL (``http://host:port/v1``) once requests are accepted.

    Raises:
        ConfigurationError: the address cannot be bound (port in use, unknown host).
        EmbedderUnavailableError: Starlette or uvicorn is not installed.
    """
    app = create_app(embedder, api_key=api_key, max_batch=max_batch, max_text_chars=max_text_chars,
                     max_body_bytes=max_body_bytes)
    try:
        import uvicorn
    except ImportError as exc:
        raise EmbedderUnavailableError(f'the embeddings server needs uvicorn: pip install "memory-primitives[serve]" ({exc})') from exc
    sock = _listen(host, port)
    config = uvicorn.Config(app, log_level=log_level, access_log=access_log, lifespan="off",
                            timeout_keep_alive=_KEEP_ALIVE)
    server = uvicorn.Server(config)
    task = asyncio.create_task(server.serve(sockets=[sock]))
    try:
        while not server.started and not task.done():
            await asyncio.sleep(0.01)
        if server.started and ready is not None:
            ready(base_url(host, sock.getsockname()[1]))
        await asyncio.shield(task)  # cancelling serve() shuts the server down gracefully below
    finally:
        if not task.done():
            server.should_exit = True
            await asyncio.shield(task)
        sock.close()


@contextmanager
def running_server(embedder: Embedder, *, host: str = DEFAULT_HOST, port: int = 0,
                   startup_timeout: float = 10.0, **options: Any) -> Iterator[str]:
    """Serve ``embedder`` from a background thread (its own event loop) for a ``with`` block.

    Yields the base URL (``http://127.0.0.1:<port>/v1``); on exit the server shuts down and the
    thread ends. For tests and benchmarks; ``options`` go to :func:`serve`. The embedder is used
    from the server's loop only while the block runs, so share it with the caller's loop only
    for texts the server is not embedding at the same time.

    Raises:
        ConfigurationError: the address cannot be bound.
        TimeoutError: the server did not start within ``startup_timeout`` seconds.
    """
    started = threading.Event()
    state: dict[str, Any] = {}

    async def main() -> None:
        state["loop"], state["task"] = asyncio.get_running_loop(), asyncio.current_task()
        await serve(embedder, host=host, port=port, ready=lambda url: (state.update(url=url), started.set()), **options)

    def run() -> None:
        try:
            asyncio.run(main())
        except asyncio.CancelledError:
            pass
        except BaseException as exc:  # handed to the caller's thread below
            state["error"] = exc
        finally:
            started.set()

    thread = threading.Thread(target=run, name="embeddings-server", daemon=True)
    thread.start()
    started.wait(startup_timeout)
    if "error" in state:
        thread.join()
        raise state["error"]
    try:
        if "url" not in state:
            raise TimeoutError(f"the embeddings server did not start within {startup_timeout} s")
        yield state["url"]
    finally:
        state["loop"].call_soon_threadsafe(state["task"].cancel)
        thread.join()
