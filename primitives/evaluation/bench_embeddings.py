"""Benchmark of ``embeddings serve``: what the HTTP server adds to the model's own encode time,
and what the embedding cache saves.

Run: ``memory-primitives embeddings bench [--requests N] [--texts N] [--in-process] [--json]``.

The server runs as its own process (``python -m primitives.cli embeddings serve --port 0``), as
the Agent Memory Server meets it. Per iteration, four single-text calls run in a rotating order,
each with a text not seen before (so nothing comes from a cache): the model's own
``SentenceTransformer.encode`` in this process (blocking); ``Embedder.embed`` (worker thread,
checks, normalisation); and a full ``POST /v1/embeddings`` over a keep-alive loopback
connection with httpx, with float and with base64 answers. The server overhead is each
iteration's HTTP time minus the same iteration's encode time (paired, so load changes on the
machine affect both); the target is <= 2 ms at p50. Every figure is wall-clock time on this
machine; compare runs, not machines.

``--in-process`` serves from a thread of this process instead: client and server then share one
GIL, and each request waits for the other side's Python code (several ms on 2 busy cores), which
is a property of that set-up, not of the server.

Wall-clock overhead on a busy machine is mostly waiting for a CPU. So the benchmark also sends
requests for one cached text (everything but the model) and reports the CPU time each one costs
the server process and the client, read from ``/proc`` and ``time.process_time``.
"""

from __future__ import annotations

import os
import statistics
import subprocess
import sys
import time
from collections.abc import Iterator
from contextlib import contextmanager
from typing import Any

import httpx

from primitives.embeddings.local import SentenceTransformerEmbedder
from primitives.embeddings.openai_http import OpenAIEmbedder
from primitives.embeddings.server import running_server
from primitives.errors import EmbedderUnavailableError

__all__ = ["run_embeddings_bench", "TARGET_OVERHEAD_MS", "summarize"]

#: The issue's target: the server adds at most this much to one short text's encode time.
TARGET_OVERHEAD_MS = 2.0
_KINDS = ("encode", "embed", "http", "http_base64")


def summarize(samples_ms: list[float]) -> dict[str, float]:
    """``{"p50", "p99", "mean"}`` of ``samples_ms`` (milliseconds; p99 by inclusive quantiles)."""
    if len(samples_ms) == 1:
        return {"p50": samples_ms[0], "p99": samples_ms[0], "mean": samples_ms[0]}
    cuts = statistics.quantiles(samples_ms, n=100, method="inclusive")
    return {"p50": statistics.median(samples_ms), "p99": cuts[98], "mean": statistics.fmean(samples_ms)}


def _text(i: int, kind: str) -> str:
    return f"note {i} ({kind}): the user said they go hiking near lake {i % 97} on weekends"


@contextmanager
def server_process(model: str, *, startup_timeout: float = 180.0) -> Iterator[tuple[str, int]]:
    """``embeddings serve --port 0`` as a child process for a ``with`` block; yields its base URL
    and process id.

    Raises:
        EmbedderUnavailableError: the server exited or printed no URL within ``startup_timeout``.
    """
    command = [sys.executable, "-m", "primitives.cli", "embeddings", "serve", "--port", "0", "--model", model]
    process = subprocess.Popen(command, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
    try:
        assert process.stdout is not None
        deadline, lines = time.monotonic() + startup_timeout, []
        while time.monotonic() < deadline and (line := process.stdout.readline()):
            lines.append(line)
            if line.startswith("OPENAI_API_BASE="):
                break
        else:
            raise EmbedderUnavailableError(f"`{' '.join(command)}` printed no URL:\n{''.join(lines)}")
        yield line.split("=", 1)[1].strip(), process.pid
    finally:
        process.terminate()
        try:
            process.wait(timeout=30)
        except subprocess.TimeoutExpired:
            process.kill()
            process.wait()


@contextmanager
def _in_process(embedder: SentenceTransformerEmbedder) -> Iterator[tuple[str, int]]:
    with running_server(embedder) as url:
        yield url, os.getpid()


def _cpu_seconds(pid: int) -> float | None:
    """User + system CPU seconds of process ``pid`` so far (Linux ``/proc``; else ``None``)."""
    try:
        with open(f"/proc/{pid}/stat") as stat:
            fields = stat.read().rsplit(")", 1)[1].split()
    except OSError:
        return None
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")  # utime, stime


async def _cached_round_trips(client: httpx.AsyncClient, pid: int, count: int, in_process: bool) -> dict[str, Any]:
    """``count`` requests for one cached text: HTTP, validation and JSON without the model."""
    body = {"input": "a text the server has cached", "model": "m"}
    await client.post("/embeddings", json=body)
    server_cpu, client_cpu = _cpu_seconds(pid), time.process_time()
    samples = []
    for _ in range(count):
        start = time.perf_counter()
        response = await client.post("/embeddings", json=body)
        response.json()
        samples.append((time.perf_counter() - start) * 1000)
    client_cpu = time.process_time() - client_cpu
    after = _cpu_seconds(pid)
    report: dict[str, Any] = {"wall_ms": summarize(samples)}
    if in_process:
        report["cpu_ms_per_request"] = client_cpu / count * 1000  # client and server together
    else:
        report["client_cpu_ms_per_request"] = client_cpu / count * 1000
        if server_cpu is not None and after is not None:
            report["server_cpu_ms_per_request"] = (after - server_cpu) / count * 1000
    return report


async def _server_calls(client: httpx.AsyncClient, url: str) -> int:
    health = await client.get(url.removesuffix("/v1") + "/health")
    return int(health.json()["stats"]["model_calls"])


async def run_embeddings_bench(
    embedder: SentenceTransformerEmbedder,
    *,
    requests: int = 300,
    cache_texts: int = 1000,
    warmup: int = 20,
    in_process: bool = False,
) -> dict[str, Any]:
    """Measure server overhead per request and the cache effect (see the module docstring).

    Args:
        embedder: The local model (loaded here if it is not yet) for the in-process measures;
            the server process loads the same model directory.
        requests: Timed calls of each of the four kinds (>= 1).
        cache_texts: Distinct texts ingested twice for the cache measure (>= 1).
        warmup: Untimed calls of each kind first (the first encodes are slow).
        in_process: Serve ``embedder`` from a thread of this process instead of a child process.

    Returns:
        ``{"model", "dims", "requests", "server", "latency_ms": {kind: {"p50", "p99", "mean"}},
        "server_overhead_ms": {"p50", "p99", "p50_difference"}, "outside_embedder_ms": {"http",
        "http_base64": {"p50", "p99", "mean"}}, "cached_request": {"wall_ms", "client_cpu_ms_per_request",
        "server_cpu_ms_per_request"}, "target_overhead_ms",
        "server_model_calls_per_request", "cache": {...}}``; times in milliseconds unless the
        key ends in ``_s`` (seconds).

    Raises:
        EmbedderUnavailableError: the server process did not start.
    """
    await embedder.load()
    serving = _in_process(embedder) if in_process else server_process(str(embedder.path))
    with serving as (url, pid):
        async with httpx.AsyncClient(base_url=url, timeout=30.0) as client:

            async def call(kind: str, i: int) -> float:
                text = _text(i, kind)
                start = time.perf_counter()
                if kind == "encode":
                    embedder.encode([text])
                elif kind == "embed":
                    await embedder.embed([text])
                else:
                    body = {"input": text, "model": embedder.model}
                    if kind == "http_base64":
                        body["encoding_format"] = "base64"
                    response = await client.post("/embeddings", json=body)
                    response.raise_for_status()
                    response.json()
                    elapsed = (time.perf_counter() - start) * 1000
                    outside[kind].append(elapsed - float(response.headers["x-embed-time-ms"]))
                    return elapsed
                return (time.perf_counter() - start) * 1000

            outside: dict[str, list[float]] = {"http": [], "http_base64": []}

            for i in range(-warmup, 0):
                for kind in _KINDS:
                    await call(kind, i)
            samples: dict[str, list[float]] = {kind: [] for kind in _KINDS}
            for values in outside.values():
                values.clear()  # drop the warm-up
            calls_before = await _server_calls(client, url)
            for i in range(requests):
                for k in range(len(_KINDS)):
                    kind = _KINDS[(i + k) % len(_KINDS)]
                    samples[kind].append(await call(kind, i))
            server_calls = await _server_calls(client, url) - calls_before
            if in_process:
                server_calls -= requests  # the embed kind counts on the same embedder
            cached = await _cached_round_trips(client, pid, max(requests, 500), in_process)
            cache = await _cache_effect(embedder, client, url, cache_texts)
    paired = [h - e for h, e in zip(samples["http"], samples["encode"])]
    latency = {kind: summarize(values) for kind, values in samples.items()}
    return {
        "model": embedder.model,
        "dims": embedder.dims,
        "requests": requests,
        "server": f"{'in-process thread' if in_process else 'child process'} at {url}",
        "latency_ms": latency,
        "server_overhead_ms": {
            **{k: v for k, v in summarize(paired).items() if k != "mean"},
            "p50_difference": latency["http"]["p50"] - latency["encode"]["p50"],
        },
        # per request: response time minus the x-embed-time-ms the server spent in the embedder
        "outside_embedder_ms": {kind: summarize(values) for kind, values in outside.items()},
        # requests for a cached text: everything but the model, as wall and CPU time
        "cached_request": cached,
        "target_overhead_ms": TARGET_OVERHEAD_MS,
        # 1.0: every timed request reached the model (no cache hit, no coalescing)
        "server_model_calls_per_request": server_calls / (2 * requests),
        "cache": cache,
    }


async def _cache_effect(embedder: SentenceTransformerEmbedder, client: httpx.AsyncClient, url: str,
                        count: int) -> dict[str, Any]:
    """Ingest ``count`` distinct texts twice, in process and through the HTTP client."""
    texts = [f"memory {i}: a fact worth keeping about topic {i % 41}" for i in range(count)]
    stats = embedder.stats
    runs = []
    for _ in range(2):
        calls, start = stats.model_calls, time.perf_counter()
        await embedder.embed(texts)
        runs.append((stats.model_calls - calls, time.perf_counter() - start))
    remote_texts = [f"remote {text}" for text in texts]
    http = OpenAIEmbedder(url, embedder.model, embedder.dims)
    try:
        requests, server_calls = [], []
        for _ in range(2):
            sent, calls = http.stats.model_calls, await _server_calls(client, url)
            await http.embed(remote_texts)
            requests.append(http.stats.model_calls - sent)
            server_calls.append(await _server_calls(client, url) - calls)
    finally:
        await http.aclose()
    return {
        "texts": count,
        "first_model_calls": runs[0][0],
        "first_s": runs[0][1],
        "again_model_calls": runs[1][0],
        "again_s": runs[1][1],
        "http_first_requests": requests[0],
        "http_again_requests": requests[1],
        "server_model_calls_first": server_calls[0],
        "server_model_calls_again": server_calls[1],
    }
