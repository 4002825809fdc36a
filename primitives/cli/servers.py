"""``memory-primitives redis start|stop|status`` and ``index migrate``."""

from __future__ import annotations

import argparse
import asyncio
import os
from typing import Any

from rich.console import Console
from rich.markup import escape

from primitives.tooling.localredis import LocalRedis
from primitives.memory.facade import Memory

__all__ = ["add_parser"]


def add_parser(sub: Any) -> None:
    """Register ``redis`` and ``index``."""
    rd = sub.add_parser("redis", help="a local Redis with the Query Engine and JSON, no Docker")
    rd.add_argument("action", choices=["start", "stop", "status"])
    rd.add_argument("--port", type=int, default=6379, help="loopback port (default 6379)")
    rd.add_argument("--dir", default=".memory-primitives/redis", help="data, pid and log directory")
    rd.add_argument("--password", default=None, help="requirepass for the default user")
    rd.set_defaults(run=_run_redis)

    ix = sub.add_parser("index", help="the Redis search index")
    ix.add_argument("action", choices=["migrate"])
    ix.add_argument("--prefix", default=None, help="key prefix (default: MEMORY_REDIS_PREFIX or memory:)")
    ix.set_defaults(run=_run_index)


def _run_index(args: argparse.Namespace, console: Console) -> int:
    asyncio.run(_index(args, console))
    return 0


def _run_redis(args: argparse.Namespace, console: Console) -> int:
    report = _redis(args, console)
    return 0 if args.action != "status" or report["running"] else 1


def _redis(args: argparse.Namespace, console: Console) -> dict[str, Any]:
    server = LocalRedis(port=args.port, dir=args.dir, password=args.password)
    if args.action == "start":
        url = server.start(daemonize=True)
        console.print(escape(f"Redis with the Query Engine and JSON on 127.0.0.1:{server.port}, data in {server.dir}"))
        console.print(escape(f"export REDIS_URL={url}"))
        return {"running": True, "url": url, "dir": str(server.dir), "pid": server.pid()}
    if args.action == "stop":
        stopped = server.stop()
        console.print("stopped" if stopped else f"no Redis was running on port {server.port} (pid file {server.pidfile})")
        return {"stopped": stopped}
    running = server.running()
    console.print(escape(f"{'running' if running else 'not running'} on 127.0.0.1:{server.port}" + (f"; export REDIS_URL={server.url}" if running else "")))
    return {"running": running, "url": server.url if running else None, "pid": server.pid() if running else None}


async def _index(args: argparse.Namespace, console: Console) -> dict[str, Any]:
    env = dict(os.environ)
    if args.prefix:
        env["MEMORY_REDIS_PREFIX"] = args.prefix
    env["MEMORY_BACKEND"] = "redis"
    memory = Memory.from_env(env)
    try:
        rewritten = await memory.backend.migrate()
        health = await memory.health()
    finally:
        await memory.aclose()
    console.print(escape(f"index re-created, {rewritten} records rewritten; re-indexing in the background: {health.detail}"))
    return {"migrated": True, "rewritten": rewritten, **health.detail}
