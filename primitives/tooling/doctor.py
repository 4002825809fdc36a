"""``memory-primitives doctor``: what is configured, what actually answers, and the next command
to run for each problem. Written for a person and for a coding agent alike (``--json``)."""

from __future__ import annotations

import os
from collections.abc import Mapping
from dataclasses import replace
from typing import Any
from urllib.parse import urlsplit, urlunsplit

from primitives.errors import ConfigurationError
from primitives.memory.facade import Memory
from primitives.memory.outbox import Outbox

__all__ = ["diagnose", "redact"]


def redact(url: str) -> str:
    """``url`` with its password replaced by ``***``."""
    parts = urlsplit(url)
    if parts.password is None:
        return url
    netloc = parts.netloc.replace(f":{parts.password}@", ":***@", 1)
    return urlunsplit(parts._replace(netloc=netloc))


def _start_command(url: str) -> str:
    parts = urlsplit(url)
    port = parts.port or 6379
    if parts.hostname in ("127.0.0.1", "localhost", "::1"):
        return f"memory-primitives redis start --port {port}   # a local Redis with the Query Engine, at the REDIS_URL you configured"
    return (f"check that the Redis at {parts.hostname}:{port} is running and reachable, or run a local one: "
            f"memory-primitives redis start --port {port} && export REDIS_URL=redis://127.0.0.1:{port}/0")


def _problem(report: dict[str, Any], problem: str, fix: str) -> None:
    report["problems"].append({"problem": problem, "fix": fix})


async def diagnose(env: Mapping[str, str] | None = None) -> dict[str, Any]:
    """Check the configuration ``Memory.from_env(env)`` describes, without writing anything
    (except, for the Agent Memory Server, one probe record written, indexed and deleted: the
    only way to see over HTTP that it embeds and indexes).

    Returns:
        A JSON-ready dict: ``configured`` (backend name), ``healthy`` (the configured backend
        answers and can search), ``serving`` (who would serve a call now: the configured backend,
        or ``"in-memory"`` as the degraded fallback), ``ams`` (for the Agent Memory Server:
        ``url``, ``reachable``, ``server_version``, ``token``, ``auth``, ``long_term_memory``,
        ``vector_search``, ``embedding_dims``, ``indexing_ms`` or ``indexing_error``), ``redis`` (``url`` without password,
        ``reachable``, ``version``, ``query_engine``, ``json``, ``index`` with ``exists``,
        ``records``, ``schema_matches``, ``schema_problems``), ``outbox`` (``path``, ``pending``)
        and ``problems``: a list of ``{"problem", "fix"}`` where ``fix`` is the exact command to
        run next.
    """
    env = dict(os.environ if env is None else env)
    report: dict[str, Any] = {"configured": None, "healthy": False, "serving": None, "problems": []}
    try:
        memory = Memory.from_env(env)
    except ConfigurationError as exc:
        report["configured"] = env.get("MEMORY_BACKEND") or "auto"
        if isinstance(exc.__cause__, ImportError):
            extra = "ams" if "agent-memory-client" in str(exc) else "redis"
            fix = f"python -m pip install 'memory-primitives[{extra}]'"
        else:
            fix = "fix the variable named above, then: memory-primitives doctor"
        _problem(report, str(exc), fix)
        return report
    report["configured"] = memory.backend_name
    try:
        await _diagnose_embeddings(memory, report)
        if memory.backend_name == "in-memory":
            report["healthy"] = (await memory.health()).ok
            report["serving"] = "in-memory"
            report["upgrade"] = (
                "memories live in this process only; for a shared, durable store: "
                "memory-primitives redis start, then export the REDIS_URL it prints"
            )
            return report
        if memory.backend_name == "agent-memory-server":
            await _diagnose_ams(memory, report)
            return report
        await _diagnose_redis(memory, env, report)
    finally:
        await memory.aclose()
    return report


async def _diagnose_embeddings(memory: Memory, report: dict[str, Any]) -> None:
    """``report["embeddings"]``: the embedder the in-process or Redis backend uses (``None``:
    keyword search only). An HTTP endpoint is probed with one short text; a local model is not
    loaded (seconds of work) but its files were found when it was configured. For Redis, the
    model and dims the store was embedded with are compared with the embedder's."""
    from primitives.errors import PrimitivesError

    store = getattr(memory.backend, "primary", memory.backend)
    embedder = getattr(store, "embedder", None)
    if embedder is None:
        report["embeddings"] = None
        return
    info: dict[str, Any] = {"model": embedder.model, "dims": embedder.dims, "kind": type(embedder).__name__}
    report["embeddings"] = info
    base_url = getattr(embedder, "url", None)  # OpenAIEmbedder: the /embeddings endpoint
    if base_url is not None:
        info["url"] = redact(str(base_url))
        try:
            await embedder.embed(["memory-primitives doctor probe"])
            info["reachable"] = True
        except PrimitivesError as exc:
            info["reachable"] = False
            _problem(report, f"the embedding endpoint does not work: {exc}",
                     "memory-primitives embeddings serve --port 8100   # then export MEMORY_EMBEDDINGS_URL=http://127.0.0.1:8100/v1")
    meta_key = getattr(store, "_meta_key", None)
    if meta_key is not None:
        try:
            stored = await store._client.hgetall(meta_key())
        except Exception:  # noqa: BLE001 - reachability is reported by the Redis section
            return
        if stored:
            info["store_model"], info["store_dims"] = stored.get("model"), stored.get("dims")
            if stored.get("model") != embedder.model or stored.get("dims") != str(embedder.dims):
                _problem(report, f"the store was embedded with {stored.get('model')} ({stored.get('dims')} dims), "
                                 f"the embedder is {embedder.model} ({embedder.dims} dims)",
                         f"memory-primitives index migrate --prefix {store.prefix}   # re-embeds every record, keeps them")


async def _diagnose_redis(memory: Memory, env: Mapping[str, str], report: dict[str, Any]) -> None:
    from redis import exceptions as redis_errors

    backend = memory.backend
    redis_backend = getattr(backend, "primary", backend)
    url = env.get("REDIS_URL", "")
    info: dict[str, Any] = {"url": redact(url), "reachable": False}
    report["redis"] = info
    outbox: Outbox | None = getattr(backend, "outbox", None)
    if outbox is not None:
        report["outbox"] = {"path": str(outbox.path), "pending": outbox.pending_count()}
    client = redis_backend._client
    try:
        server = await client.info("server")
    except redis_errors.AuthenticationError as exc:
        _problem(report, f"Redis refused the credentials: {exc}", "put the right password in REDIS_URL: export REDIS_URL=redis://:PASSWORD@HOST:PORT/0")
    except redis_errors.ResponseError as exc:
        if "NOAUTH" in str(exc):
            _problem(report, "Redis needs a password", "export REDIS_URL=redis://:PASSWORD@HOST:PORT/0")
        else:
            _problem(report, f"Redis answered with an error: {exc}", "memory-primitives doctor --json, and check the server's log")
    except (redis_errors.ConnectionError, redis_errors.TimeoutError, OSError) as exc:
        _problem(report, f"Redis at {redact(url)} is unreachable: {exc}", _start_command(url))
    else:
        info["reachable"] = True
        info["version"] = server.get("redis_version")
        info["query_engine"] = await _probe(client, "FT._LIST")
        info["json"] = await _probe(client, "JSON.GET", "memory-primitives:doctor:probe")
        if not info["query_engine"]:
            _problem(report, "this Redis has no Query Engine (FT.* commands unknown): memories cannot be searched",
                     "memory-primitives redis start --port 6380 && export REDIS_URL=redis://127.0.0.1:6380/0   # a local Redis 8 with the Query Engine")
        else:
            index = await redis_backend.index_info()
            if index is None:
                info["index"] = {"name": redis_backend.spec.name, "exists": False}
                report["notes"] = ["the index is created on first use"]
            else:
                problems = redis_backend.spec.differences(index)
                info["index"] = {
                    "name": redis_backend.spec.name,
                    "exists": True,
                    "records": int(index.get("num_docs", 0)),
                    "indexing": str(index.get("indexing", "0")) == "1",
                    "schema_matches": not problems,
                    "schema_problems": problems,
                }
                if problems:
                    _problem(report, f"index {redis_backend.spec.name} has another schema: {'; '.join(problems)}",
                             f"memory-primitives index migrate --prefix {redis_backend.prefix}   # keeps every record")
        if not info["json"]:
            info["json_note"] = "JSON module absent: not needed by this version (records are hashes)"
    report["healthy"] = info["reachable"] and bool(info.get("query_engine")) and info.get("index", {}).get("schema_matches", True)
    report["serving"] = memory.backend_name if report["healthy"] else "in-memory (degraded fallback)"
    await _outbox_backlog(report, backend, outbox, healthy=report["healthy"], server="Redis")


async def _outbox_backlog(report: dict[str, Any], backend: Any, outbox: Outbox | None, *, healthy: bool, server: str) -> None:
    """Replay the outbox now when the server is healthy; report what still waits as a problem."""
    if outbox is None or not outbox.pending_count():
        return
    if healthy:
        report["outbox"]["replayed_now"] = await backend.replay()
        report["outbox"]["pending"] = outbox.pending_count()
    pending = report["outbox"]["pending"]
    if pending:
        _problem(report, f"{pending} writes made while {server} was unreachable wait in the outbox ({outbox.path})",
                 f"bring {server} back (see above); the backlog replays by itself on the next call, or run: memory-primitives doctor")


async def _probe(client: Any, *command: str) -> bool:
    """Whether the server knows ``command`` (an unknown-command error means no)."""
    from redis import exceptions as redis_errors

    try:
        await client.execute_command(*command)
    except redis_errors.ResponseError as exc:
        return "unknown command" not in str(exc).lower()
    return True


async def _diagnose_ams(memory: Memory, report: dict[str, Any]) -> None:
    """The Agent Memory Server: reachable, version, token, long-term memory, vector search
    (which needs AMS's embedding endpoint and an index of its model's dims), outbox backlog."""
    from primitives.errors import AuthenticationFailedError, LongTermMemoryDisabledError

    backend = memory.backend
    ams = getattr(backend, "primary", backend)
    health = await ams.health()
    detail = health.detail
    url = detail.get("url", "")
    info = {key: detail.get(key) for key in ("url", "reachable", "server_version", "auth", "long_term_memory", "vector_search")}
    info["token"] = "set" if getattr(ams, "token", None) else "not set"
    info["embedding_dims"] = "not published by AMS over HTTP; checked by indexing a probe record (indexing_ms)"
    report["ams"] = info
    outbox: Outbox | None = getattr(backend, "outbox", None)
    if outbox is not None:
        report["outbox"] = {"path": str(outbox.path), "pending": outbox.pending_count()}
    error_type = detail.get("error_type")
    if not detail.get("reachable"):
        _problem(report, f"the Agent Memory Server at {url} is unreachable: {detail.get('error')}",
                 "memory-primitives ams start --port PORT   # a local one (then export AGENT_MEMORY_SERVER_URL=http://127.0.0.1:PORT), "
                 "or set AGENT_MEMORY_SERVER_URL to where yours runs")
    elif error_type == AuthenticationFailedError.__name__:
        why = "it needs a token and none is set" if info["token"] == "not set" else "AGENT_MEMORY_SERVER_TOKEN is not valid there"
        _problem(report, f"the Agent Memory Server at {url} refused the request: {why}",
                 "export AGENT_MEMORY_SERVER_TOKEN=TOKEN   # make one on the server: agent-memory token add --description memory-primitives")
    elif error_type == LongTermMemoryDisabledError.__name__:
        _problem(report, f"the Agent Memory Server at {url} has long-term memory disabled: memories cannot be stored or searched",
                 "restart it with LONG_TERM_MEMORY=true (memory-primitives ams start without --no-long-term-memory), or export MEMORY_BACKEND=redis")
    elif detail.get("vector_search") is False or (health.ok and not await _probe_indexing(ams, info)):
        _problem(report, f"the Agent Memory Server at {url} cannot embed and index memories: {info.get('indexing_error') or detail.get('error')}",
                 "check its log: its embedding endpoint (EMBEDDING_MODEL, OPENAI_API_BASE) must answer, and "
                 "REDISVL_VECTOR_DIMENSIONS must equal that model's dims (384 for MiniLM); after changing dims: agent-memory rebuild-index")
        health = replace(health, ok=False)
    elif not health.ok:
        _problem(report, f"the Agent Memory Server at {url} is not healthy: {detail.get('error')}", "check its log, then: memory-primitives doctor")
    version = info.get("server_version")
    if version and not str(version).startswith("0.15."):
        report["notes"] = [f"this backend is written and tested against AMS 0.15.2; the server is {version}"]
    report["healthy"] = health.ok
    if health.ok:
        report["serving"] = memory.backend_name
    elif outbox is not None and error_type == "BackendUnavailableError":
        report["serving"] = "in-memory (degraded fallback)"
    await _outbox_backlog(report, backend, outbox, healthy=health.ok, server="the Agent Memory Server")


async def _probe_indexing(ams: Any, info: dict[str, Any]) -> bool:
    """Write, wait for and delete one probe record (``probe_indexing``): the only way to see
    over HTTP that AMS embeds and indexes, e.g. that its model's dims match its index."""
    from primitives.errors import PrimitivesError

    try:
        info["indexing_ms"] = round(await ams.probe_indexing() * 1e3, 1)
    except PrimitivesError as exc:
        info["indexing_error"] = str(exc)
        return False
    return True
