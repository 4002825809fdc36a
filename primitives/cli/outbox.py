"""``memory-primitives outbox list|replay|dead-letters``: the durable outboxes on this machine.

An outbox (:mod:`primitives.memory.resilient.outbox`) journals every write made through a
resilient Redis or Agent Memory Server memory; entries stay pending while the store is
unreachable and are replayed when it answers again. These commands show every outbox whatever
its store (``list``), replay one into its store (``replay``) and show the entries that could not
be replayed (``dead-letters``).
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
from collections.abc import Mapping
from datetime import datetime, timezone
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

from rich.console import Console
from rich.markup import escape

from primitives.cli.options import add_json
from primitives.errors import BackendUnavailableError, ConfigurationError, OutboxError
from primitives.memory.facade import Memory
from primitives.memory.registry import BACKENDS, choose_backend
from primitives.memory.resilient.identity import outbox_identity, outbox_path, redact_url
from primitives.memory.resilient.outbox import Outbox, OutboxReport
from primitives.tooling.doctor import dead_letters_command, describe_outbox, outbox_reports, redact

__all__ = ["add_parser", "replay_env"]

#: The variable that holds each server backend's key prefix (the URL variable is the registry's
#: ``selected_by``).
_PREFIX_VARIABLES = {"redis": "MEMORY_REDIS_PREFIX", "ams": "MEMORY_AMS_PREFIX"}
#: Variables that carry a backend's credentials besides its URL.
_CREDENTIAL_VARIABLES = {"redis": (), "ams": ("AGENT_MEMORY_SERVER_TOKEN",)}
#: Characters of a dead letter's payload shown (the rest is counted).
_PAYLOAD_SHOWN = 200
_MOVE_ASIDE = "memory-primitives doctor   # names the command that sets the file aside"


def add_parser(sub: Any) -> None:
    """Register ``outbox list``, ``outbox replay`` and ``outbox dead-letters``."""
    group = sub.add_parser(
        "outbox",
        help="the durable outboxes of writes made while Redis or the Agent Memory Server was unreachable",
        description=(
            "Every resilient Redis or Agent Memory Server memory journals its writes in an outbox file "
            "(one per store: XDG_CACHE_HOME/memory-primitives/outbox-*.sqlite3, or MEMORY_OUTBOX_PATH); "
            "entries stay pending while the store is unreachable and replay when it answers again."
        ),
    )
    commands = group.add_subparsers(dest="outbox_command", required=True)

    ls = commands.add_parser("list", help="every outbox on this machine: store, pending, dead letters, stuck, damage")
    add_json(ls)
    ls.set_defaults(run=_run_list)

    rp = commands.add_parser(
        "replay",
        help="replay an outbox's pending writes into its store",
        description=(
            "Connect to the store the outbox belongs to (recorded in the outbox; the environment's "
            "REDIS_URL or AGENT_MEMORY_SERVER_URL and token are used when they name the same store, for "
            "their credentials) and replay its pending and retained writes, last writer wins. Exit 0 "
            "when nothing is left pending, 1 when writes still wait (store unreachable), 2 on a "
            "configuration or outbox error."
        ),
    )
    rp.add_argument("--path", default=None,
                    help="the outbox file (default: MEMORY_OUTBOX_PATH, else the configured store's outbox)")
    rp.add_argument("--url", default=None,
                    help="the store's URL (Redis or Agent Memory Server, whichever the outbox journals for); "
                    "needed for an outbox of the first format, which does not record it")
    rp.add_argument("--prefix", default=None,
                    help="the store's key prefix; needed with --url for an outbox of the first format")
    add_json(rp)
    rp.set_defaults(run=_run_replay)

    dl = commands.add_parser("dead-letters", help="the journaled writes that could not be replayed, with why")
    dl.add_argument("--path", required=True, help="the outbox file")
    dl.add_argument("--limit", type=_positive_int, default=20, help="how many to show, oldest first")
    add_json(dl)
    dl.set_defaults(run=_run_dead_letters)


def _positive_int(text: str) -> int:
    try:
        value = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"{text!r} is not a whole number") from None
    if value < 1:
        raise argparse.ArgumentTypeError(f"must be >= 1, got {value}")
    return value


# -- list --------------------------------------------------------------------------------------


def _run_list(args: argparse.Namespace, console: Console) -> int:
    env = dict(os.environ)
    described = [describe_outbox(r, env) for r in outbox_reports(env)]
    if args.json:
        print(json.dumps({"outboxes": described}, indent=2))
        return 0
    if not described:
        console.print("no outboxes on this machine")
        return 0
    for entry in described:
        console.print(f"[bold]{escape(entry['path'])}[/]")
        if entry["damage"] is not None:
            console.print(f"  [red]damaged:[/] {escape(entry['damage'])}")
            console.print(f"  [bold]fix:[/] {escape(str(entry['fix']))}")
            continue
        target = entry["target"] or "unknown (an outbox of the first format: give --url and --prefix to replay it)"
        console.print(escape(f"  store: {target}  prefix: {entry['prefix']!r}"))
        console.print(escape(f"  pending: {entry['pending']}  stuck: {entry['stuck']}  dead letters: {entry['dead_letter']}  "
                             f"retained: {entry['retained']}"))
        if entry["pending"]:
            console.print(f"  [bold]replay:[/] {escape(entry['replay'])}")
        if entry["dead_letter"]:
            console.print(f"  [bold]dead letters:[/] {escape(dead_letters_command(Path(entry['path'])))}")
    return 0


# -- replay ------------------------------------------------------------------------------------


def _run_replay(args: argparse.Namespace, console: Console) -> int:
    result = asyncio.run(replay(dict(os.environ), path=args.path, url=args.url, prefix=args.prefix))
    if args.json:
        print(json.dumps(result, indent=2))
    else:
        console.print(escape(f"outbox {result['path']} -> {result['target']} (prefix {result['prefix']!r})"))
        console.print(escape(f"replayed: {result['replayed']}  still pending: {result['pending']}  "
                             f"dead letters: {result['dead_letter']} ({result['new_dead_letters']} new)"))
        if result.get("error"):
            console.print(f"[red]not replayed:[/] {escape(result['error'])}")
        if result["dead_letter"]:
            console.print(f"[bold]dead letters:[/] {escape(dead_letters_command(Path(result['path'])))}")
    return 0 if result["pending"] == 0 else 1


def _resolve_path(env: Mapping[str, str], path: str | None, url: str | None, prefix: str | None) -> Path:
    """``--path``, else ``MEMORY_OUTBOX_PATH``, else the outbox of ``--url``/``--prefix`` or of the
    configured store."""
    if path:
        return Path(path).expanduser()
    if url:
        choice = "ams" if urlsplit(url).scheme.lower() in ("http", "https") else "redis"
        return outbox_path(env, url, prefix if prefix is not None else _default_prefix(choice, env, url))
    spec = choose_backend(env)
    if spec.target is None and not env.get("MEMORY_OUTBOX_PATH"):
        raise ConfigurationError(
            "no outbox named: give --path (memory-primitives outbox list shows them), or --url and --prefix, "
            "or configure REDIS_URL / AGENT_MEMORY_SERVER_URL"
        )
    if spec.target is None:
        return Path(env["MEMORY_OUTBOX_PATH"]).expanduser()
    return outbox_path(env, *spec.target(env))


def _default_prefix(choice: str, env: Mapping[str, str], url: str) -> str:
    spec = BACKENDS[choice]
    assert spec.target is not None and spec.selected_by is not None
    return spec.target({**env, spec.selected_by: url})[1]


def replay_env(env: Mapping[str, str], report: OutboxReport, *, url: str | None = None, prefix: str | None = None) -> dict[str, str]:
    """The environment under which :meth:`Memory.from_env` builds the store an outbox belongs
    to, with that outbox as its journal.

    The store is the outbox's recorded one (``meta``: target URL without password and prefix),
    or ``url``/``prefix`` (which must name the same store when the outbox records one). The
    environment's own URL (``REDIS_URL`` or ``AGENT_MEMORY_SERVER_URL``) is used instead, for
    its credentials, when it names the same server and database (same
    :func:`~primitives.memory.resilient.identity.outbox_identity`); otherwise the
    environment's credentials for that backend (password, ``AGENT_MEMORY_SERVER_TOKEN``) are
    not sent to this store. Sets ``MEMORY_BACKEND``, ``MEMORY_OUTBOX_PATH``, the URL and prefix
    variables, ``MEMORY_RESILIENT=1`` and ``MEMORY_CHANGE_FEED=0`` (a replay announces nothing).

    Raises:
        ConfigurationError: the store is not known (an outbox of the first format without
            ``url`` and ``prefix``), or ``url``/``prefix`` name another store than the outbox's.
    """
    url = url or report.target
    prefix = prefix if prefix is not None else report.prefix
    if not url or prefix is None:
        raise ConfigurationError(
            f"outbox {report.path} does not record its store (an outbox of the first format): give the store's "
            f"URL and key prefix: memory-primitives outbox replay --path {report.path} --url URL --prefix PREFIX"
        )
    identity = outbox_identity(url, prefix)
    if report.identity and report.identity != identity:
        raise ConfigurationError(
            f"--url/--prefix name {identity!r}, but outbox {report.path} belongs to {report.identity!r} "
            f"({report.target}); replay it into its own store (leave out --url and --prefix)"
        )
    choice = "ams" if identity.startswith("ams://") else "redis"
    spec = BACKENDS[choice]
    assert spec.target is not None and spec.selected_by is not None
    url_variable, prefix_variable = spec.selected_by, _PREFIX_VARIABLES[choice]
    out = dict(env)
    own_url = (env.get(url_variable) or "").strip()
    same_server = False
    if own_url:
        try:
            same_server = outbox_identity(own_url, prefix) == identity
        except ConfigurationError:
            same_server = False
    if same_server and urlsplit(url).password is None:
        url = own_url  # same store: its credentials
    elif not same_server:
        for variable in _CREDENTIAL_VARIABLES[choice]:
            out.pop(variable, None)  # another server's token is never sent here
    out.update(MEMORY_BACKEND=choice, MEMORY_OUTBOX_PATH=str(report.path), MEMORY_RESILIENT="1", MEMORY_CHANGE_FEED="0")
    out[url_variable] = url
    out.pop(prefix_variable, None)
    if spec.target(out)[1] != prefix:  # the registry's default prefix is not this store's
        out[prefix_variable] = prefix
    if outbox_identity(*spec.target(out)) != identity:  # pragma: no cover - the registry changed
        raise ConfigurationError(f"cannot describe the store {identity!r} of outbox {report.path} to the registry")
    return out


async def replay(env: Mapping[str, str], *, path: str | None = None, url: str | None = None,
                 prefix: str | None = None) -> dict[str, Any]:
    """Replay one outbox into its store (see :func:`replay_env`) with
    :meth:`~primitives.memory.resilient.ResilientBackend.replay`.

    The store's health is checked first: an unreachable store is not replayed to (``error``
    says why; the entries stay pending), and a store that refuses this configuration (wrong
    password, ACL, no Query Engine) raises instead of replaying, because its refusals would
    move every entry to the dead letters.

    Returns:
        ``path``, ``target`` (URL without password), ``prefix``, ``replayed`` (entries sent),
        ``pending`` (still waiting), ``dead_letter`` (total) and ``new_dead_letters`` (moved by
        this replay), ``error`` (why nothing was replayed, or ``None``).

    Raises:
        OutboxError: no outbox at the path, the file is damaged, or it belongs to another store.
        ConfigurationError: as :func:`replay_env`; the store refuses the configuration.
    """
    where = _resolve_path(env, path, url, prefix)
    report = Outbox.inspect(where)
    if not report.exists:
        raise OutboxError(f"no outbox at {where}", path=str(where),
                          fix="memory-primitives outbox list   # shows every outbox on this machine")
    if report.damage is not None:
        raise OutboxError(f"outbox {where} cannot be used: {report.damage}", path=str(where), fix=report.fix or _MOVE_ASIDE)
    memory = Memory.from_env(replay_env(env, report, url=url, prefix=prefix))
    try:
        backend = memory.backend
        outbox = getattr(backend, "outbox", None)
        if outbox is None or not hasattr(backend, "replay"):  # pragma: no cover - MEMORY_RESILIENT=1 is set
            raise ConfigurationError("the store was not built with its outbox (MEMORY_RESILIENT is off)")
        before = outbox.stats()
        result: dict[str, Any] = {
            "path": str(outbox.path),
            "target": redact(outbox.meta.get("target") or url or ""),
            "prefix": outbox.meta.get("prefix", prefix),
            "replayed": 0,
            "error": None,
        }
        health = await backend.health()  # the store's health (and the outbox's counts); replays nothing
        detail = health.detail
        writable = health.ok or (detail.get("auth") == "ok" and detail.get("long_term_memory") is True)
        if not writable and detail.get("error_type") not in (None, BackendUnavailableError.__name__):
            raise ConfigurationError(
                f"{result['target']} refused this configuration, so nothing was replayed (its refusals would "
                f"set every entry aside as a dead letter): {detail.get('error')}"
            )
        if writable:
            result["replayed"] = await backend.replay()
        else:
            result["error"] = f"{result['target']} is unreachable: {detail.get('error')}"
        after = outbox.stats()
        pending = after.pending
        if pending and result["error"] is None:
            result["error"] = f"{result['target']} stopped answering during the replay; run the command again"
        result.update(pending=pending, dead_letter=after.dead_letter,
                      new_dead_letters=after.dead_letter - before.dead_letter)
        return result
    finally:
        await memory.aclose()


# -- dead letters ------------------------------------------------------------------------------


def _run_dead_letters(args: argparse.Namespace, console: Console) -> int:
    path = Path(args.path).expanduser()
    report = Outbox.inspect(path, dead_letter_limit=args.limit)
    if not report.exists:
        raise OutboxError(f"no outbox at {path}", path=str(path),
                          fix="memory-primitives outbox list   # shows every outbox on this machine")
    if report.damage is not None:
        raise OutboxError(f"outbox {path} cannot be read: {report.damage}", path=str(path), fix=report.fix or _MOVE_ASIDE)
    total = report.stats.dead_letter if report.stats else 0
    letters = [
        {
            "id": d.id,
            "seq": d.seq,
            "op": d.op,
            "key": d.key,
            "reason": d.reason,
            "journaled_at": _iso(d.journaled_at),
            "failed_at": _iso(d.failed_at),
            "payload": d.payload[:_PAYLOAD_SHOWN],
            "payload_chars": len(d.payload),
        }
        for d in report.dead_letters
    ]
    if args.json:
        print(json.dumps({"path": str(path), "target": report.target and redact_url(report.target),
                          "prefix": report.prefix, "dead_letter": total, "shown": letters}, indent=2))
        return 0
    if not total:
        console.print(escape(f"no dead letters in {path}"))
        return 0
    shown = f" (the first {len(letters)})" if len(letters) < total else ""
    console.print(escape(f"{total} dead letters in {path}{shown}; they are never replayed:"))
    for d in letters:
        more = f"... ({d['payload_chars']} chars)" if d["payload_chars"] > _PAYLOAD_SHOWN else ""
        console.print(escape(f"  #{d['id']} {d['op']} {d['key']!r} at {d['failed_at']}: {d['reason']}"))
        console.print(escape(f"      payload: {d['payload']}{more}"))
    return 0


def _iso(seconds: float | None) -> str | None:
    return None if seconds is None else datetime.fromtimestamp(seconds, timezone.utc).isoformat()
