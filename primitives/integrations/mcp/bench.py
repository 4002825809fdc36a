"""``memory-primitives bench mcp``: what MCP costs on a search, side by side in one run.

Three ways to run the same ``search_memory`` over the same records, each on the in-process
default backend (``MEMORY_BACKEND=inmemory``; the rest of the environment as given):

- ``direct``: ``Memory.search`` called in this process;
- ``stdio``: ``memory-primitives mcp serve`` as a subprocess, the SDK's stdio client;
- ``http``: the same command with ``--transport http`` on a free loopback port with a bearer
  token, the SDK's Streamable HTTP client.

Each server is filled through its own ``remember`` tool (the same texts, in the same order);
then the searches run interleaved (one query on each path in turn, after a warm-up), so load
changes hit all three alike. Reported: p50/p99 in milliseconds of each path and the ratios of
the MCP paths to the direct call, with the machine's load average.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import random
import secrets
import socket
import statistics
import subprocess
import sys
import time
from contextlib import AsyncExitStack
from typing import Any

from rich.console import Console

__all__ = ["add_arguments", "run"]

_WORDS = (
    "tea coffee hiking paris berlin guitar piano dog cat garden novel chess marathon sushi pasta yoga "
    "painting camping sister brother birthday concert museum river mountain beach winter summer school "
    "project deadline meeting doctor recipe bakery football tennis violin photography travel train"
).split()


def add_arguments(parser: argparse.ArgumentParser) -> None:
    """The options of ``bench mcp``: ``--memories``, ``--queries``, ``--users``, ``--seed``, ``--json``."""
    parser.add_argument("--memories", type=int, default=1000, help="records stored in each of the three stores")
    parser.add_argument("--queries", type=int, default=300, help="timed searches on each path")
    parser.add_argument("--users", type=int, default=10, help="users the records are spread over")
    parser.add_argument("--seed", type=int, default=0, help="workload seed")
    parser.add_argument("--json", action="store_true", help="print one JSON object on stdout")


def run(args: argparse.Namespace, console: Console) -> int:
    """Run the benchmark; prints a table (or, with ``--json``, one JSON object); returns 0.

    Raises:
        InvalidInputError: ``--memories``, ``--queries`` or ``--users`` is below 1.
        ConfigurationError: the ``mcp`` extra is missing.
    """
    from primitives.errors import InvalidInputError

    for name in ("memories", "queries", "users"):
        if getattr(args, name) < 1:
            raise InvalidInputError(f"--{name} must be >= 1, got {getattr(args, name)}")
    report = asyncio.run(_bench(args))
    if args.json:
        print(json.dumps(report, indent=2))
        return 0
    console.print(f"bench mcp: {report['memories']} memories, {report['queries']} searches per path, "
                  f"in-process backend; load {report['load_avg_1m']:.2f} on {report['cpus']} CPUs")
    for path in ("direct", "stdio", "http"):
        r = report["paths"][path]
        ratio = "" if path == "direct" else (f"  ({r['p50_ratio']:.1f}x / {r['p99_ratio']:.1f}x direct)")
        console.print(f"  {path:<6} search_memory p50 {r['p50_ms']:8.3f} ms  p99 {r['p99_ms']:8.3f} ms{ratio}")
    return 0


def _corpus(args: argparse.Namespace) -> tuple[list[tuple[str, str]], list[tuple[str, str]]]:
    rng = random.Random(args.seed)
    users = [f"user-{i}" for i in range(args.users)]
    records = [(" ".join(rng.choices(_WORDS, k=12)), rng.choice(users)) for _ in range(args.memories)]
    queries = [(" ".join(rng.choices(_WORDS, k=3)), rng.choice(users)) for _ in range(args.queries)]
    return records, queries


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def _pct(samples: list[float], q: float) -> float:
    ordered = sorted(samples)
    return ordered[min(len(ordered) - 1, int(round(q * (len(ordered) - 1))))]


async def _wait_http(port: int, proc: subprocess.Popen[bytes], timeout: float = 30.0) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            raise RuntimeError(f"the HTTP MCP server exited with {proc.returncode} before listening")
        try:
            _, writer = await asyncio.open_connection("127.0.0.1", port)
        except OSError:
            await asyncio.sleep(0.05)
            continue
        writer.close()
        await writer.wait_closed()
        return
    raise RuntimeError(f"the HTTP MCP server did not listen on port {port} within {timeout:.0f} s")


async def _bench(args: argparse.Namespace) -> dict[str, Any]:
    import httpx2
    from mcp import Client, StdioServerParameters
    from mcp.client.streamable_http import streamable_http_client

    from primitives.memory.facade import Memory

    env = {k: v for k, v in os.environ.items() if k not in ("REDIS_URL", "AGENT_MEMORY_SERVER_URL")}
    env.update(MEMORY_BACKEND="inmemory", MEMORY_CHANGE_FEED="0")
    token = secrets.token_urlsafe(32)
    port = _free_port()
    records, queries = _corpus(args)
    command = [sys.executable, "-m", "primitives.cli", "mcp", "serve"]
    http_proc = subprocess.Popen(
        [*command, "--transport", "http", "--port", str(port)],
        env={**env, "MEMORY_MCP_TOKEN": token}, stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL,
    )
    try:
        async with AsyncExitStack() as stack:
            memory = await stack.enter_async_context(Memory.from_env(env))
            stdio = await stack.enter_async_context(
                Client(StdioServerParameters(command=command[0], args=command[1:], env=env))
            )
            await _wait_http(port, http_proc)
            http_client = await stack.enter_async_context(
                httpx2.AsyncClient(headers={"Authorization": f"Bearer {token}"}, timeout=30.0)
            )
            http = await stack.enter_async_context(
                Client(streamable_http_client(f"http://127.0.0.1:{port}/mcp", http_client=http_client))
            )
            for text, user in records:
                await memory.remember(text, user_id=user)
                for client in (stdio, http):
                    result = await client.call_tool("remember", {"text": text, "user_id": user})
                    if result.is_error:
                        raise RuntimeError(f"remember failed: {result.content}")

            async def direct(q: str, u: str) -> int:
                return len((await memory.search(q, user_id=u, limit=10)).hits)

            def over(client: Any) -> Any:
                async def call(q: str, u: str) -> int:
                    result = await client.call_tool("search_memory", {"query": q, "user_id": u, "limit": 10})
                    if result.is_error:
                        raise RuntimeError(f"search_memory failed: {result.content}")
                    return len(result.structured_content["memories"])
                return call

            paths = {"direct": direct, "stdio": over(stdio), "http": over(http)}
            for q, u in queries[: min(20, len(queries))]:  # warm-up: imports, caches, connections
                for fn in paths.values():
                    await fn(q, u)
            samples: dict[str, list[float]] = {name: [] for name in paths}
            hits: dict[str, int] = {name: 0 for name in paths}
            for q, u in queries:
                for name, fn in paths.items():
                    t0 = time.perf_counter()
                    hits[name] += await fn(q, u)
                    samples[name].append((time.perf_counter() - t0) * 1000)
    finally:
        http_proc.terminate()
        try:
            http_proc.wait(timeout=10)
        except subprocess.TimeoutExpired:  # pragma: no cover
            http_proc.kill()
    base50, base99 = _pct(samples["direct"], 0.50), _pct(samples["direct"], 0.99)
    report_paths: dict[str, Any] = {}
    for name, s in samples.items():
        p50, p99 = _pct(s, 0.50), _pct(s, 0.99)
        report_paths[name] = {"p50_ms": round(p50, 4), "p99_ms": round(p99, 4), "mean_ms": round(statistics.fmean(s), 4),
                              "hits": hits[name]}
        if name != "direct":
            report_paths[name].update(p50_ratio=round(p50 / base50, 2), p99_ratio=round(p99 / base99, 2))
    return {
        "memories": args.memories, "queries": args.queries, "users": args.users, "seed": args.seed,
        "backend": memory.backend_name, "paths": report_paths,
        "load_avg_1m": os.getloadavg()[0], "cpus": os.cpu_count(),
    }
