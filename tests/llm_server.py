"""A real OpenAI-compatible chat server on loopback for the LLM tests, scriptable per test.

``POST /v1/chat/completions`` (Starlette on uvicorn, in a background thread with its own event
loop, on a free port of 127.0.0.1) answers each request with the next scripted :class:`Reply`:
an answer, an HTTP error with an OpenAI-style body, a body that is not JSON or not a chat
completion, a delay, or a connection dropped in the middle of the answer. Every request that
reaches the route is recorded (:class:`Received`) before it is answered, so a test can assert the
body sent, the headers and how many attempts were made. With no reply left it answers HTTP 500
"no scripted reply left". Any other path gets Starlette's plain 404.

    with running_chat_server() as server:
        server.script(error(500, "boom"), answer("hello"))
        ... OpenAIChatLLM(base_url=server.url, model="m") ...
        assert len(server.requests) == 2
"""

from __future__ import annotations

import asyncio
import json
import logging
import socket
import threading
import time
from collections import deque
from collections.abc import Iterator, Mapping
from contextlib import contextmanager
from dataclasses import dataclass, field
from typing import Any

from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import JSONResponse, Response
from starlette.routing import Route

__all__ = [
    "ChatServer",
    "Received",
    "Reply",
    "answer",
    "body",
    "closed_port_url",
    "drop",
    "error",
    "raw",
    "running_chat_server",
    "slow",
]

_MISSING: Any = object()
#: The longest scripted delay accepted: a test waits for it at shutdown at worst.
MAX_DELAY = 5.0


@dataclass(frozen=True)
class Reply:
    """One scripted answer. ``raw`` wins over ``json_body``, which wins over ``content``."""

    status: int = 200
    content: str | None = None
    json_body: Any = _MISSING
    raw: bytes | None = None
    finish_reason: str | None = "stop"
    delay: float = 0.0
    drop: bool = False
    headers: Mapping[str, str] = field(default_factory=dict)


def answer(content: str | None, *, finish_reason: str | None = "stop") -> Reply:
    """A chat completion whose ``choices[0].message.content`` is ``content`` (``None``: JSON null)."""
    return Reply(content=content, finish_reason=finish_reason)


def error(status: int, message: str, *, code: str | None = None, headers: Mapping[str, str] | None = None) -> Reply:
    """An OpenAI-style error body ``{"error": {"message", "type", "param", "code"}}``."""
    body = {"error": {"message": message, "type": "invalid_request_error", "param": None, "code": code}}
    return Reply(status=status, json_body=body, headers=dict(headers or {}))


def body(value: Any, *, status: int = 200) -> Reply:
    """``value`` as the JSON body, as it is (e.g. without ``choices``)."""
    return Reply(status=status, json_body=value)


def raw(data: bytes, *, status: int = 200, content_type: str = "text/html") -> Reply:
    """``data`` as the body, as it is (e.g. an HTML page that is not JSON)."""
    return Reply(status=status, raw=data, headers={"content-type": content_type})


def slow(seconds: float, content: str = "late") -> Reply:
    """An answer sent after ``seconds`` (at most :data:`MAX_DELAY`)."""
    if not 0 <= seconds <= MAX_DELAY:
        raise ValueError(f"delay must be in [0, {MAX_DELAY}] seconds")
    return Reply(content=content, delay=seconds)


def drop() -> Reply:
    """Headers of a 200 promising a body, then the connection is closed without the body."""
    return Reply(drop=True)


@dataclass(frozen=True)
class Received:
    """One request as the server saw it."""

    method: str
    path: str
    query: str
    headers: dict[str, str]  # lower-case names
    raw: bytes
    json: Any  # the parsed body, or None when it is not JSON
    client_port: int


class _Dropped(Exception):
    """Raised after the response started: uvicorn then closes the connection mid-answer."""


def _not_a_planned_drop(record: logging.LogRecord) -> bool:
    """Keeps uvicorn's "Exception in ASGI application" out of the log for planned drops only."""
    return not (record.exc_info and isinstance(record.exc_info[1], _Dropped))


class _DropResponse(Response):
    async def __call__(self, scope: Any, receive: Any, send: Any) -> None:
        await send({"type": "http.response.start", "status": 200, "headers": [
            (b"content-type", b"application/json"), (b"content-length", b"1000")]})
        await send({"type": "http.response.body", "body": b'{"choices": [', "more_body": True})
        raise _Dropped("connection dropped on purpose by the test server")


class ChatServer:
    """The scripted server's state, shared between the test's thread and the server's.

    Attributes:
        url: The ``/v1`` root (``http://127.0.0.1:<port>/v1``); empty until started.
        api_key: When set, a request whose ``Authorization`` is not ``Bearer <api_key>`` gets
            a 401 (recorded, no scripted reply used) whose message echoes the key it received.
    """

    def __init__(self) -> None:
        self.url = ""
        self.api_key: str | None = None
        self._replies: deque[Reply] = deque()
        self._requests: list[Received] = []
        self._lock = threading.Lock()
        self._count = 0

    # --- the test's side ----------------------------------------------------------------------

    def script(self, *replies: Reply) -> None:
        """Queue ``replies``, answered in order, one per request."""
        with self._lock:
            self._replies.extend(replies)

    def reset(self) -> None:
        """Forget the queued replies, the recorded requests and ``api_key``."""
        with self._lock:
            self._replies.clear()
            self._requests.clear()
            self.api_key = None

    @property
    def requests(self) -> list[Received]:
        """A copy of the recorded requests, oldest first."""
        with self._lock:
            return list(self._requests)

    @property
    def bodies(self) -> list[Any]:
        """The parsed JSON bodies of the recorded requests."""
        return [r.json for r in self.requests]

    @property
    def left(self) -> int:
        """Scripted replies not used yet."""
        with self._lock:
            return len(self._replies)

    # --- the server's side --------------------------------------------------------------------

    def app(self) -> Starlette:
        async def completions(request: Request) -> Response:
            data = await request.body()
            try:
                parsed = json.loads(data)
            except ValueError:
                parsed = None
            received = Received(
                method=request.method,
                path=request.url.path,
                query=request.url.query,
                headers={k.lower(): v for k, v in request.headers.items()},
                raw=data,
                json=parsed,
                client_port=request.client.port if request.client else -1,
            )
            with self._lock:
                self._requests.append(received)
                key = self.api_key
                reply = None if key is not None and received.headers.get("authorization") != f"Bearer {key}" else (
                    self._replies.popleft() if self._replies else Reply(status=-1))
                self._count += 1
                number = self._count
            if reply is None:
                sent = received.headers.get("authorization", "").removeprefix("Bearer ")
                return JSONResponse({"error": {"message": f"Incorrect API key provided: {sent}", "type":
                                               "invalid_request_error", "param": None, "code": "invalid_api_key"}},
                                    status_code=401)
            if reply.status == -1:
                return JSONResponse({"error": {"message": "no scripted reply left", "type": "server_error",
                                               "param": None, "code": None}}, status_code=500)
            if reply.delay:
                await asyncio.sleep(reply.delay)
            if reply.drop:
                return _DropResponse()
            headers = dict(reply.headers)
            if reply.raw is not None:
                return Response(reply.raw, status_code=reply.status, headers=headers)
            if reply.json_body is not _MISSING:
                return JSONResponse(reply.json_body, status_code=reply.status, headers=headers)
            model = parsed.get("model", "") if isinstance(parsed, dict) else ""
            completion = {
                "id": f"chatcmpl-test-{number}",
                "object": "chat.completion",
                "created": int(time.time()),
                "model": model,
                "choices": [{"index": 0, "message": {"role": "assistant", "content": reply.content},
                             "finish_reason": reply.finish_reason}],
                "usage": {"prompt_tokens": 1, "completion_tokens": 1, "total_tokens": 2},
            }
            return JSONResponse(completion, status_code=reply.status, headers=headers)

        return Starlette(routes=[Route("/v1/chat/completions", completions, methods=["POST"])])


@contextmanager
def running_chat_server(*, startup_timeout: float = 10.0) -> Iterator[ChatServer]:
    """Run a :class:`ChatServer` on a free loopback port from a background thread (its own event
    loop) for a ``with`` block; on exit the server shuts down (in-flight requests get at most
    1 s) and the thread ends.

    Raises:
        TimeoutError: the server did not start within ``startup_timeout`` seconds.
    """
    import uvicorn

    uvicorn_log = logging.getLogger("uvicorn.error")
    if _not_a_planned_drop not in uvicorn_log.filters:
        uvicorn_log.addFilter(_not_a_planned_drop)
    server = ChatServer()
    started = threading.Event()
    state: dict[str, Any] = {}

    async def main() -> None:
        state["loop"], state["task"] = asyncio.get_running_loop(), asyncio.current_task()
        sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM, socket.IPPROTO_TCP)
        sock.bind(("127.0.0.1", 0))
        config = uvicorn.Config(server.app(), log_config=None, log_level="warning", access_log=False,
                                lifespan="off", timeout_graceful_shutdown=1)
        uv = uvicorn.Server(config)
        task = asyncio.create_task(uv.serve(sockets=[sock]))
        try:
            for _ in range(int(startup_timeout / 0.01)):
                if uv.started or task.done():
                    break
                await asyncio.sleep(0.01)
            if uv.started:
                server.url = f"http://127.0.0.1:{sock.getsockname()[1]}/v1"
                started.set()
            await asyncio.shield(task)
        finally:
            if not task.done():
                uv.should_exit = True
                await asyncio.shield(task)
            sock.close()

    def run() -> None:
        try:
            asyncio.run(main())
        except asyncio.CancelledError:
            pass
        except BaseException as exc:  # noqa: BLE001  # handed to the caller's thread below
            state["error"] = exc
        finally:
            started.set()

    thread = threading.Thread(target=run, name="llm-test-server", daemon=True)
    thread.start()
    started.wait(startup_timeout)
    if "error" in state:
        thread.join()
        raise state["error"]
    try:
        if not server.url:
            raise TimeoutError(f"the LLM test server did not start within {startup_timeout} s")
        yield server
    finally:
        state["loop"].call_soon_threadsafe(state["task"].cancel)
        thread.join(10)


def closed_port_url() -> str:
    """A ``/v1`` root on a loopback port nothing listens on (connections are refused)."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind(("127.0.0.1", 0))
        port = sock.getsockname()[1]
    return f"http://127.0.0.1:{port}/v1"
