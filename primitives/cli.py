"""The ``memory-primitives`` command line: ``eval locomo`` and ``bench inmemory``."""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import sys
import tempfile
import uuid
from pathlib import Path
from collections.abc import Sequence
from typing import Any

from rich.console import Console
from rich.markup import escape
from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn
from rich.table import Table

from primitives.doctor import diagnose
from primitives.errors import PrimitivesError
from primitives.evaluation.ablation import run_ablation
from primitives.evaluation.bench import run_inmemory_bench
from primitives.evaluation.locomo import evaluate_locomo, load_conversations
from primitives.localredis import LocalRedis
from primitives.memory.facade import BACKEND_CHOICES, Memory

__all__ = ["main"]


def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="memory-primitives", description="Memory primitives for AI agents: evaluation and benchmarks."
    )
    sub = parser.add_subparsers(dest="command", required=True)

    ev = sub.add_parser("eval", help="measure retrieval quality on real conversations")
    ev_sub = ev.add_subparsers(dest="dataset", required=True)
    lo = ev_sub.add_parser("locomo", help="evidence recall@k on LoCoMo conversation files")
    lo.add_argument("--data", required=True, help="directory of LoCoMo *.json conversation files")
    lo.add_argument("--k", type=int, nargs="+", default=[5, 10], help="cut-offs (default: 5 10)")
    lo.add_argument(
        "--backend",
        choices=[c for c in BACKEND_CHOICES if c != "auto"],
        default=None,
        help="backend to fill (default: what Memory.from_env() gives)",
    )
    lo.add_argument("--json", action="store_true", help="print one JSON object instead of tables")
    lo.add_argument(
        "--ablation",
        action="store_true",
        help="in-process backend only: recall of each indexing choice, added one at a time",
    )

    be = sub.add_parser("bench", help="speed and memory benchmarks")
    be_sub = be.add_subparsers(dest="target", required=True)
    im = be_sub.add_parser("inmemory", help="the in-process backend on synthetic memories")
    im.add_argument("--memories", type=int, default=100_000, help="records to add (default 100000)")
    im.add_argument("--queries", type=int, default=1000, help="searches to time (default 1000)")
    im.add_argument(
        "--baseline", action="store_true", help="also run the naive substring store side by side"
    )
    im.add_argument("--seed", type=int, default=0, help="workload seed (default 0)")
    im.add_argument("--json", action="store_true", help="print one JSON object")

    br = be_sub.add_parser("redis", help="the Redis backend vs the same calls made with redis-py")
    br.add_argument("--memories", type=int, default=100_000, help="records to add (default 100000)")
    br.add_argument("--queries", type=int, default=1000, help="searches to time (default 1000)")
    br.add_argument("--url", default=None, help="Redis URL (default: REDIS_URL, else a local server started for the run)")
    br.add_argument("--seed", type=int, default=0, help="workload seed (default 0)")
    br.add_argument("--json", action="store_true", help="print one JSON object")
    br.add_argument("--storage", action="store_true", help="compare hashes and JSON documents instead")

    rd = sub.add_parser("redis", help="a local Redis with the Query Engine and JSON, no Docker")
    rd.add_argument("action", choices=["start", "stop", "status"])
    rd.add_argument("--port", type=int, default=6379, help="loopback port (default 6379)")
    rd.add_argument("--dir", default=".memory-primitives/redis", help="data, pid and log directory")
    rd.add_argument("--password", default=None, help="requirepass for the default user")

    dr = sub.add_parser("doctor", help="what is configured, what answers, and what to run next")
    dr.add_argument("--json", action="store_true", help="print one JSON object (for coding agents)")

    ix = sub.add_parser("index", help="the Redis search index")
    ix.add_argument("action", choices=["migrate"])
    ix.add_argument("--prefix", default=None, help="key prefix (default: MEMORY_REDIS_PREFIX or memory:)")
    return parser


def _print_locomo(report: dict[str, Any], console: Console) -> None:
    console.print(
        f"LoCoMo evidence recall on [bold]{report['backend']}[/]: {report['conversations']} "
        f"conversations, {report['turns']} turns, {report['questions']} questions "
        f"({report['questions_skipped']} without valid evidence skipped, "
        f"{report['malformed_evidence']} malformed evidence ids)"
    )
    ks = list(report["recall_at_k"])
    table = Table("category", "questions", *[f"recall@{k}" for k in ks])
    for cat, values in report["recall_at_k_by_category"].items():
        table.add_row(cat, str(report["questions_by_category"][cat]), *[f"{values[k]:.3f}" for k in ks])
    table.add_row(
        "[bold]all[/]", str(report["questions"]), *[f"[bold]{report['recall_at_k'][k]:.3f}[/]" for k in ks]
    )
    console.print(table)
    console.print(
        f"ingest {report['ingest_per_s']:.0f} turns/s; search p50 {report['search_ms']['p50']:.3f} ms, "
        f"p99 {report['search_ms']['p99']:.3f} ms"
    )


def _print_bench(report: dict[str, Any], console: Console) -> None:
    table = Table("measure", "in-memory backend", *(["naive store"] if "baseline" in report else []))
    base = report.get("baseline")

    def row(name: str, ours: str, theirs: str | None = None) -> None:
        table.add_row(name, ours, *([theirs or "-"] if base else []))

    row("memories", str(report["memories"]))
    row("add, µs per record", f"{report['add_us']:.1f}", f"{base['add_us']:.1f}" if base else None)
    row("add one record, µs", f"{report['add_one_us']:.1f}")
    row(
        "search p50 / p99, ms",
        f"{report['search_ms']['p50']:.3f} / {report['search_ms']['p99']:.3f}",
        f"{base['search_ms']['p50']:.1f} / {base['search_ms']['p99']:.1f}" if base else None,
    )
    row("queries with a hit", f"{report['hit_rate']:.0%}", f"{base['hit_rate']:.0%}" if base else None)
    row("resident memory added, MB", f"{report['rss_mb']:.1f}", f"{base['rss_mb']:.1f}" if base else None)
    row("pipeline overhead, µs per execute", f"{report['pipeline_overhead_us']:.1f}")
    console.print(table)
    if base:
        console.print(f"search p50 speed-up over the naive store: {report['search_p50_speedup']}x")


def _print_ablation(report: dict[str, Any], console: Console) -> None:
    ks = list(report["variants"][0]["recall_at_k"])
    table = Table("in-process indexing (cumulative)", *[f"recall@{k}" for k in ks])
    for row in report["variants"]:
        table.add_row(row["variant"], *[f"{row['recall_at_k'][k]:.3f}" for k in ks])
    console.print(table)


async def _eval_locomo(args: argparse.Namespace, console: Console) -> dict[str, Any]:
    conversations = load_conversations(args.data)
    if args.ablation:
        return {"variants": await run_ablation(conversations, ks=args.k)}
    env = dict(os.environ)
    if args.backend:
        env["MEMORY_BACKEND"] = args.backend
    # A fresh store: its own key prefix and outbox, deleted afterwards (no-ops in process).
    env["MEMORY_REDIS_PREFIX"] = f"eval-{uuid.uuid4().hex[:12]}:"
    with tempfile.TemporaryDirectory(prefix="memory-primitives-eval-") as tmp:
        env["MEMORY_OUTBOX_PATH"] = str(Path(tmp) / "outbox.sqlite3")
        probe = Memory.from_env(env)  # fail on bad configuration before any work
        try:
            return await _run_locomo(args, env, conversations)
        finally:
            store = getattr(probe.backend, "primary", probe.backend)
            drop = getattr(store, "drop", None)
            if drop is not None:
                await drop()
            await probe.aclose()


async def _run_locomo(args: argparse.Namespace, env: dict[str, str], conversations: list[Any]) -> dict[str, Any]:
    total = sum(len(c.turns) + len(c.questions) for c in conversations)
    with Progress(
        TextColumn("[progress.description]{task.description}"),
        BarColumn(),
        MofNCompleteColumn(),
        TimeElapsedColumn(),
        console=Console(stderr=True),
        transient=True,
        disable=args.json and not sys.stderr.isatty(),
    ) as progress:
        task = progress.add_task("LoCoMo turns and questions", total=total)
        return await evaluate_locomo(
            conversations,
            lambda: Memory.from_env(env),
            ks=args.k,
            progress=lambda n: progress.advance(task, n),
        )


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
        await getattr(memory.backend, "primary", memory.backend).migrate_index()
        health = await memory.health()
    finally:
        await memory.aclose()
    console.print(escape(f"index re-created; records re-indexing in the background: {health.detail}"))
    return {"migrated": True, **health.detail}


def _bench_redis(args: argparse.Namespace) -> dict[str, Any]:
    from primitives.evaluation.bench_redis import compare_storage, run_redis_bench

    def run(url: str) -> dict[str, Any]:
        if args.storage:
            return asyncio.run(compare_storage(url, args.memories, queries=args.queries, seed=args.seed))
        return asyncio.run(run_redis_bench(url, args.memories, queries=args.queries, seed=args.seed))

    url = args.url or os.environ.get("REDIS_URL")
    if url:
        return run(url)
    with tempfile.TemporaryDirectory(prefix="memory-primitives-bench-") as tmp:
        server = LocalRedis(dir=tmp, persistent=False)
        server.start()
        try:
            report = run(server.url)
        finally:
            server.stop()
    report["server"] = "local redis-server started for this run (no persistence)"
    return report


def _print_bench_redis(report: dict[str, Any], console: Console) -> None:
    table = Table("measure", "value")
    table.add_row("memories", str(report["memories"]))
    table.add_row("ingest via Memory (resilient), records/s", f"{report['ingest_per_s']:.0f}")
    table.add_row("ingest via RedisBackend, records/s", f"{report['ingest_per_s_backend']:.0f}")
    table.add_row("ingest via raw redis-py pipelines, records/s", f"{report['ingest_per_s_redis_py']:.0f}")
    table.add_row("search p50 / p99, ms", f"{report['search_ms']['p50']:.3f} / {report['search_ms']['p99']:.3f}")
    table.add_row("queries with a hit", f"{report['hit_rate']:.0%}")
    table.add_row("MemoryPrimitive recall step / raw FT.SEARCH, ms",
                  f"{report['recall_step_ms']:.3f} / {report['direct_ft_search_ms']:.3f} = {report['recall_step_ratio']:.2f}x")
    table.add_row("MemoryPrimitive recall step / redis-py ft().search(), ms",
                  f"{report['recall_step_ms']:.3f} / {report['redis_py_search_api_ms']:.3f} = "
                  f"{report['recall_step_ratio_vs_search_api']:.2f}x")
    console.print(table)


def _print_doctor(report: dict[str, Any], console: Console) -> None:
    status = "[green]healthy[/]" if report["healthy"] else "[red]not healthy[/]"
    console.print(f"configured backend: [bold]{escape(str(report['configured']))}[/] ({status}); serving now: {escape(str(report['serving']))}")
    redis_info = report.get("redis")
    if redis_info:
        console.print(f"redis: {escape(redis_info['url'])} reachable={redis_info['reachable']} version={redis_info.get('version')} "
                      f"query_engine={redis_info.get('query_engine')} json={redis_info.get('json')}")
        if "index" in redis_info:
            console.print(f"index: {escape(str(redis_info['index']))}")
    if "outbox" in report:
        console.print(escape(f"outbox: {report['outbox']['pending']} pending at {report['outbox']['path']}"))
    if "upgrade" in report:
        console.print(f"upgrade: {escape(report['upgrade'])}")
    for p in report["problems"]:
        console.print(f"[red]problem:[/] {escape(p['problem'])}\n  [bold]next:[/] {escape(p['fix'])}")


def main(argv: Sequence[str] | None = None) -> int:
    """Run the command line; returns the exit code (0 success, 2 bad input or configuration)."""
    args = _parser().parse_args(argv)
    console = Console(soft_wrap=True)  # commands and URLs stay on one line, copy-pasteable
    try:
        if args.command == "eval":
            report = asyncio.run(_eval_locomo(args, console))
            printer = _print_ablation if args.ablation else _print_locomo
        elif args.command == "redis":
            report = _redis(args, Console(stderr=True) if getattr(args, "json", False) else console)
            return 0 if args.action != "status" or report["running"] else 1
        elif args.command == "bench" and args.target == "redis" and args.storage:
            report = _bench_redis(args)
            print(json.dumps(report, indent=2))
            return 0
        elif args.command == "doctor":
            report = asyncio.run(diagnose())
            if args.json:
                print(json.dumps(report, indent=2))
            else:
                _print_doctor(report, console)
            return 0 if report["healthy"] else 1
        elif args.command == "index":
            report = asyncio.run(_index(args, console))
            return 0
        else:
            if args.memories < 1 or args.queries < 1:
                raise PrimitivesError("--memories and --queries must be >= 1")
            if args.target == "redis":
                report = _bench_redis(args)
                printer = _print_bench_redis
            else:
                report = asyncio.run(
                    run_inmemory_bench(args.memories, queries=args.queries, baseline=args.baseline, seed=args.seed)
                )
                printer = _print_bench
    except PrimitivesError as exc:
        Console(stderr=True).print(f"[red]error:[/] {escape(str(exc))}")
        return 2
    if args.json:
        print(json.dumps(report, indent=2))
    else:
        printer(report, console)
    return 0


if __name__ == "__main__":
    sys.exit(main())
