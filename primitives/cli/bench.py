"""``memory-primitives bench inmemory|redis|ams|kv|sync|agent|feed|cluster|mcp``: speed and memory benchmarks."""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import tempfile
from collections.abc import Callable
from typing import Any

from rich.console import Console
from rich.table import Table

from primitives.cli.options import add_json, add_redis_url, deprecated_alias
from primitives.errors import InvalidInputError
from primitives.evaluation.bench import run_inmemory_bench
from primitives.tooling.localredis import LocalRedis

__all__ = ["add_parser"]


def add_parser(sub: Any) -> None:
    """Register ``bench inmemory|redis|ams|kv|sync|agent|feed|cluster|mcp``."""
    be = sub.add_parser("bench", help="speed and memory benchmarks")
    be_sub = be.add_subparsers(dest="target", required=True)
    im = be_sub.add_parser("inmemory", help="the in-process backend on synthetic memories")
    im.add_argument("--memories", type=int, default=100_000, help="records to add")
    im.add_argument("--queries", type=int, default=1000, help="searches to time")
    im.add_argument(
        "--baseline", action="store_true", help="also run the naive substring store side by side"
    )
    im.add_argument("--seed", type=int, default=0, help="workload seed")
    add_json(im)
    im.set_defaults(run=_run_inmemory)

    br = be_sub.add_parser("redis", help="the Redis backend vs the same calls made with redis-py")
    br.add_argument("--memories", type=int, default=100_000, help="records to add")
    br.add_argument("--queries", type=int, default=1000, help="searches to time")
    add_redis_url(br, "Redis URL (default: REDIS_URL, else a local server started for the run)")
    br.add_argument("--seed", type=int, default=0, help="workload seed")
    add_json(br)
    br.add_argument("--storage", action="store_true", help="compare hashes and JSON documents instead")
    br.set_defaults(run=_run_redis)

    ba = be_sub.add_parser("ams", help="the Agent Memory Server backend vs the same calls made with agent-memory-client")
    ba.add_argument("--ams-url", dest="ams_url", default=None, metavar="URL",
                    help="AMS base URL (default: AGENT_MEMORY_SERVER_URL, else a local one started for the run: Redis, embeddings, AMS)")
    deprecated_alias(ba, "--url", "--ams-url", "ams_url")
    ba.add_argument("--token", default=None, help="bearer token (default: AGENT_MEMORY_SERVER_TOKEN)")
    ba.add_argument("--memories", type=int, default=1000, help="records to add")
    ba.add_argument("--queries", type=int, default=100, help="recall steps and searches to time")
    ba.add_argument("--seed", type=int, default=0, help="workload seed")
    ba.add_argument("--no-auth", action="store_true", help="the local server without token auth (AMS's bcrypt check costs ~0.3 s a request)")
    add_json(ba)
    ba.set_defaults(run=_run_ams)

    bk = be_sub.add_parser("kv", help="the key-value store vs the same commands made with redis-py")
    add_redis_url(bk, "Redis URL (default: REDIS_URL, else a plain local server started for the run)")
    bk.add_argument("--ops", type=int, default=10_000, help="timed get and set pairs")
    add_json(bk)
    bk.set_defaults(run=_run_kv)

    bs = be_sub.add_parser("sync", help="export Redis -> DuckDB and import back: full, with vectors, incremental at two store sizes")
    add_redis_url(bs, "Redis URL (default: REDIS_URL, else a local server started for the run)")
    bs.add_argument("--memories", type=int, default=100_000, help="records of the full export and import")
    bs.add_argument("--dims", type=int, default=384, help="vector length of the second full export; 0 skips it")
    bs.add_argument("--small", type=int, default=10_000, help="smaller store of the incremental export")
    bs.add_argument("--large", type=int, default=500_000, help="larger store of the incremental export")
    bs.add_argument("--changes", type=int, default=1_000, help="records changed before the incremental export")
    bs.add_argument("--batch-size", type=int, default=5_000, help="rows per batch")
    add_json(bs)
    bs.set_defaults(run=_run_sync)

    bg = be_sub.add_parser("agent", help="the prompt context at scale and extraction's LLM calls, in process")
    bg.add_argument("--memories", type=int, default=100_000, help="records in the store")
    bg.add_argument("--queries", type=int, default=1000, help="context calls to time")
    bg.add_argument("--data", default=None, metavar="DIR",
                    help="directory of LoCoMo *.json files for the extraction workload (default: skip it)")
    deprecated_alias(bg, "--locomo", "--data", "data")
    bg.add_argument("--seed", type=int, default=0, help="workload seed")
    add_json(bg)
    bg.set_defaults(run=_run_agent)

    bf = be_sub.add_parser("feed", help="change feed: publish-to-receive latency and offline catch-up")
    add_redis_url(bf, "Redis URL (default: REDIS_URL, else a plain local server started for the run)")
    bf.add_argument("--rate", type=int, default=1000, help="events per second published")
    bf.add_argument("--seconds", type=float, default=10.0, help="length of the live phase")
    bf.add_argument("--catchup", type=int, default=10_000, help="events an offline reader catches up on")
    add_json(bf)
    bf.set_defaults(run=_run_feed)

    bc = be_sub.add_parser("cluster", help="the Redis backend sharded by tenant on a 3-master cluster vs one Redis")
    bc.add_argument("--memories", type=int, default=30_000, help="records")
    bc.add_argument("--tenants", type=int, default=30, help="namespaces the records are spread over")
    bc.add_argument("--queries", type=int, default=500, help="tenant searches to time on each store")
    bc.add_argument("--seed", type=int, default=0, help="workload seed")
    add_json(bc)
    bc.set_defaults(run=_run_cluster)

    # Built when run (the MCP SDK is an optional extra, and slow to import): `bench mcp --help`
    # reaches the real parser, mcp_parser().
    bm = be_sub.add_parser("mcp", help=_MCP_HELP, add_help=False, prefix_chars="\0")
    bm.add_argument("mcp_argv", nargs=argparse.REMAINDER, help=argparse.SUPPRESS)
    bm.set_defaults(run=_run_mcp)


_MCP_HELP = "the MCP server: a search round trip over stdio and over HTTP vs Memory.search called directly"
_MCP_MODULE = "primitives.integrations.mcp.bench"


def mcp_parser() -> argparse.ArgumentParser:
    """The parser of ``bench mcp``, from ``primitives.integrations.mcp.bench.add_arguments``.

    Raises:
        ConfigurationError: the ``mcp`` extra (or that module) is not installed; the message
            names ``pip install 'memory-primitives[mcp]'``.
    """
    import importlib

    from primitives.cli.options import CommandParser
    from primitives.errors import ConfigurationError

    try:
        module = importlib.import_module(_MCP_MODULE)
    except ImportError as exc:
        raise ConfigurationError(f"bench mcp needs the mcp extra: pip install 'memory-primitives[mcp]' ({exc})") from None
    parser = CommandParser(prog="memory-primitives bench mcp", description=_MCP_HELP[:1].upper() + _MCP_HELP[1:] + ".")
    module.add_arguments(parser)
    if not any("--json" in a.option_strings for a in parser._actions):
        add_json(parser)
    parser.set_defaults(run=module.run)
    return parser


def _run_mcp(args: argparse.Namespace, console: Console) -> int:
    ns = mcp_parser().parse_args(args.mcp_argv)
    if getattr(ns, "json", False):
        console = Console(stderr=True, soft_wrap=True)  # stdout carries only the JSON object
    return int(ns.run(ns, console) or 0)


def on_redis(args: argparse.Namespace, run: Callable[[str], dict[str, Any]], *, modules: bool) -> dict[str, Any]:
    """``run(url)`` on ``--redis-url`` or ``REDIS_URL``; without either, on a local throw-away
    redis-server (with the Query Engine and JSON when ``modules``), stopped afterwards."""
    url = args.redis_url or os.environ.get("REDIS_URL")
    if url:
        return run(url)
    with tempfile.TemporaryDirectory(prefix="memory-primitives-bench-") as tmp:
        server = LocalRedis(dir=tmp, modules=modules, persistent=False)
        server.start()
        try:
            report = run(server.url)
        finally:
            server.stop()
    plain = "" if modules else "plain "
    report["server"] = f"local {plain}redis-server started for this run (no persistence)"
    return report


def check_sizes(args: argparse.Namespace) -> None:
    """Raise ``InvalidInputError`` unless ``--memories`` and ``--queries`` are >= 1."""
    if args.memories < 1 or args.queries < 1:
        raise InvalidInputError("--memories and --queries must be >= 1")


def _run_inmemory(args: argparse.Namespace, console: Console) -> int:
    check_sizes(args)
    report = asyncio.run(
        run_inmemory_bench(args.memories, queries=args.queries, baseline=args.baseline, seed=args.seed)
    )
    if args.json:
        print(json.dumps(report, indent=2))
    else:
        _print_bench(report, console)
    return 0


def _run_agent(args: argparse.Namespace, console: Console) -> int:
    from primitives.evaluation.bench_agent import run_agent_bench
    from primitives.evaluation.locomo import load_conversations

    check_sizes(args)
    conversations = load_conversations(args.data) if args.data else None
    report = asyncio.run(run_agent_bench(args.memories, queries=args.queries, seed=args.seed, locomo=conversations))
    if args.json:
        print(json.dumps(report, indent=2))
        return 0
    table = Table("measure", "value")
    ctx = report["context"]
    table.add_row("memories", str(ctx["memories"]))
    table.add_row("context p50 / p99, ms (uncached)", f"{ctx['context_ms']['uncached']['p50']:.3f} / {ctx['context_ms']['uncached']['p99']:.3f}")
    table.add_row("context p50 / p99, ms (cached)", f"{ctx['context_ms']['cached']['p50']:.4f} / {ctx['context_ms']['cached']['p99']:.4f}")
    table.add_row("one search p50 / p99, ms", f"{ctx['search_ms']['p50']:.3f} / {ctx['search_ms']['p99']:.3f}")
    if "extraction" in report:
        ex = report["extraction"]
        table.add_row("extraction batches / LLM calls", f"{ex['batches']} / {ex['llm_calls']}")
        table.add_row("LLM calls per batch", f"{ex['llm_calls_per_batch']:.2f}")
    console.print(table)
    return 0


def _run_redis(args: argparse.Namespace, console: Console) -> int:
    check_sizes(args)
    report = _bench_redis(args)
    if args.json:
        print(json.dumps(report, indent=2))
    elif args.storage:
        _print_storage(report, console)
    else:
        _print_bench_redis(report, console)
    return 0


def _print_storage(report: dict[str, Any], console: Console) -> None:
    table = Table("measure", "hashes", "JSON documents")
    hashes, docs = report["hash"], report["json"]
    table.add_row("memories", str(report["memories"]), str(report["memories"]))
    table.add_row("writes/s", f"{hashes['writes_per_s']:.0f}", f"{docs['writes_per_s']:.0f}")
    table.add_row("FT.SEARCH p50, ms", f"{hashes['search_p50_ms']:.3f}", f"{docs['search_p50_ms']:.3f}")
    table.add_row("server bytes per record", f"{hashes['server_bytes_per_record']:.0f}",
                  f"{docs['server_bytes_per_record']:.0f}")
    console.print(table)


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


def _bench_redis(args: argparse.Namespace) -> dict[str, Any]:
    from primitives.evaluation.bench_redis import compare_storage, run_redis_bench

    def run(url: str) -> dict[str, Any]:
        if args.storage:
            return asyncio.run(compare_storage(url, args.memories, queries=args.queries, seed=args.seed))
        return asyncio.run(run_redis_bench(url, args.memories, queries=args.queries, seed=args.seed))

    return on_redis(args, run, modules=True)


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


def _run_ams(args: argparse.Namespace, console: Console) -> int:
    from primitives.evaluation.bench_ams import local_ams_stack, run_ams_bench

    check_sizes(args)
    url = args.ams_url or os.environ.get("AGENT_MEMORY_SERVER_URL")
    token = args.token or os.environ.get("AGENT_MEMORY_SERVER_TOKEN")

    def run(url: str, token: str | None) -> dict[str, Any]:
        return asyncio.run(run_ams_bench(url, token, memories=args.memories, queries=args.queries, seed=args.seed))

    if url:
        report = run(url, token)
    else:
        with local_ams_stack(token_auth=not args.no_auth) as (local_url, local_token):
            report = run(local_url, local_token)
        auth = "off" if args.no_auth else "on"
        report["server"] = f"local Agent Memory Server started for this run (token auth {auth}, MiniLM embeddings, own Redis)"
    if args.json:
        print(json.dumps(report, indent=2))
    else:
        _print_bench_ams(report, console)
    return 0


def _print_bench_ams(report: dict[str, Any], console: Console) -> None:
    from rich.markup import escape

    table = Table("measure", "value")
    create = report["create"]
    table.add_row("server", escape(f"AMS {report.get('server_version')}, token auth {'on' if report['token_auth'] else 'off'}"))
    table.add_row("memories / queries", f"{report['memories']} / {report['queries']}")
    table.add_row("create via AgentMemoryServerBackend (until indexed), records/s", f"{create['backend_records_per_s']}")
    table.add_row("create via agent-memory-client: acknowledged / searchable, records/s",
                  f"{create['client_ack_records_per_s']} / {create['client_until_searchable_records_per_s']}")
    table.add_row("add one record via the backend (until searchable), p50 / p99 ms",
                  f"{report['add_one_ms']['p50']} / {report['add_one_ms']['p99']}")
    table.add_row("index lag, ack to readable, p50 / p99 ms", f"{report['index_lag_ms']['p50']} / {report['index_lag_ms']['p99']}")
    table.add_row("request without / with auth, p50 ms",
                  f"{report['request_ms']['no_auth_health']} / {report['request_ms']['authenticated_get']}")
    table.add_row("recall step / direct client calls, ms",
                  f"{report['recall_step_ms']} / {report['direct_recall_ms']} = {report['recall_step_ratio']:.3f}x")
    table.add_row("working-memory get / direct, ms",
                  f"{report['working_memory_get_ms']} / {report['direct_working_memory_get_ms']} = {report['working_memory_ratio']:.3f}x")
    for mode, ms in report["search_ms"].items():
        table.add_row(f"search {mode} p50 / p99, ms", f"{ms['p50']} / {ms['p99']}")
    table.add_row("keyword queries with a hit", f"{report['hit_rate']:.0%}")
    console.print(table)


def _run_kv(args: argparse.Namespace, console: Console) -> int:
    from primitives.evaluation.bench_kv import run_kv_bench

    if args.ops < 1:
        raise InvalidInputError("--ops must be >= 1")
    report = on_redis(args, lambda url: asyncio.run(run_kv_bench(url, ops=args.ops)), modules=False)
    if args.json:
        print(json.dumps(report, indent=2))
        return 0
    table = Table("op", "primitive p50 / mean, µs", "redis-py p50 / mean, µs", "ratio p50 / mean")
    for op in ("get", "set", "mget_100"):
        r = report[op]
        ours, raw = r["primitive_us"], r["redis_py_us"]
        table.add_row(op, f"{ours['p50']} / {ours['mean']}", f"{raw['p50']} / {raw['mean']}",
                      f"{r['ratio_p50']} / {r['ratio_mean']}x")
    console.print(table)
    console.print(f"mget of 100 keys: {report['mget_100']['round_trips']} round trip(s) "
                  f"({report['mget_100']['server_commands_for_one_call']}); Redis {report['redis_version']}, "
                  f"value {report['value_bytes']} bytes, {report['ops']} pairs per op")
    return 0


def _run_feed(args: argparse.Namespace, console: Console) -> int:
    from primitives.evaluation.bench_feed import run_feed_bench

    if args.rate < 1 or args.catchup < 1 or not args.seconds > 0:
        raise InvalidInputError("--rate and --catchup must be >= 1 and --seconds > 0")

    def run(url: str) -> dict[str, Any]:
        return asyncio.run(run_feed_bench(url, rate=args.rate, seconds=args.seconds, catchup=args.catchup))

    report = on_redis(args, run, modules=False)
    if args.json:
        print(json.dumps(report, indent=2))
        return 0
    live, catchup = report["live"], report["catchup"]
    table = Table("measure", "value")
    table.add_row("events published / received", f"{live['events']} / {live['received']}")
    table.add_row("rate target / achieved, events/s", f"{live['rate_target']} / {live['rate_achieved']}")
    lat = live["latency_ms"]
    table.add_row("publish-to-receive p50 / p99 / max, ms", f"{lat['p50']} / {lat['p99']} / {lat['max']}")
    rt = live["publish_round_trip_ms"]
    table.add_row("publish round trip p50 / p99 / max, ms", f"{rt['p50']} / {rt['p99']} / {rt['max']}")
    table.add_row("offline catch-up: events / missing / duplicated",
                  f"{catchup['events']} / {catchup['missing']} / {catchup['duplicated']}")
    table.add_row("offline catch-up time, s (events/s)", f"{catchup['seconds']} ({catchup['events_per_s']})")
    console.print(table)
    console.print(f"Redis {report['redis_version']}")
    return 0


def _run_cluster(args: argparse.Namespace, console: Console) -> int:
    from primitives.evaluation.bench_cluster import run_local_cluster_bench

    if min(args.memories, args.tenants, args.queries) < 1 or args.tenants > args.memories:
        raise InvalidInputError("--memories, --tenants and --queries must be >= 1 (tenants <= memories)")
    report = run_local_cluster_bench(memories=args.memories, tenants=args.tenants, queries=args.queries, seed=args.seed)
    if args.json:
        print(json.dumps(report, indent=2))
        return 0
    table = Table("measure", "one Redis", "cluster", "cluster / one")
    for node, spread in report["records_per_node"].items():
        table.add_row(f"records (tenants) on {node}", "", f"{spread['records']} ({spread['tenants']})", "")
    ingest = report["ingest_per_s"]
    table.add_row("ingest, records/s", str(ingest["single"]), str(ingest["cluster"]), f"{ingest['cluster'] / ingest['single']:.2f}")
    for label, key in (("tenant search p50 / p99, ms", "tenant_search_ms"), ("cross-tenant search p50 / p99, ms", "cross_tenant_search_ms")):
        r = report[key]
        table.add_row(label, f"{r['single']['p50']} / {r['single']['p99']}", f"{r['cluster']['p50']} / {r['cluster']['p99']}",
                      str(r["ratio_p50"]))
    console.print(table)
    console.print(f"{report['memories']} memories, {report['tenants']} tenants, Redis {report['redis_version']}, "
                  f"load {report['load_avg_1m']}")
    return 0


def _run_sync(args: argparse.Namespace, console: Console) -> int:
    from primitives.evaluation.bench_sync import main_sync

    if min(args.memories, args.small, args.large, args.changes) < 1 or args.dims < 0 or args.changes > min(args.small, args.large):
        raise InvalidInputError("--memories, --small, --large, --changes must be >= 1 (changes <= both stores), --dims >= 0")
    if not 1 <= args.batch_size <= 10_000:
        raise InvalidInputError("--batch-size must be 1..10000")

    def run(url: str) -> dict[str, Any]:
        return main_sync(url, memories=args.memories, dims=args.dims, small=args.small, large=args.large,
                         changes=args.changes, batch_size=args.batch_size)

    report = on_redis(args, run, modules=True)
    if args.json:
        print(json.dumps(report, indent=2))
        return 0
    table = Table("measure", "records", "seconds", "records/s")
    for name, key in (("full export Redis -> DuckDB", "full_export"), ("full export with vectors", "full_export_vectors"),
                      ("import DuckDB -> empty Redis", "import")):
        if key in report:
            r = report[key]
            table.add_row(name, str(r["records"]), str(r["seconds"]), str(r["records_per_s"]))
    for size in ("small", "large"):
        r = report["incremental"][size]
        table.add_row(f"incremental: {r['changes']} changes in a store of {r['store_records']}: read / export",
                      str(r["changes"]), f"{r['read_seconds']} / {r['seconds']}", "")
    console.print(table)
    console.print(f"incremental large/small ratio: read {report['incremental_read_ratio']}, export {report['incremental_ratio']}")
    return 0
