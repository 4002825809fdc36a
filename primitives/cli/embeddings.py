"""``memory-primitives embeddings serve|bench``: a local model behind an OpenAI-compatible API."""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import sys
from typing import Any

from rich.console import Console
from rich.markup import escape
from rich.table import Table

from primitives.cli.options import add_json, deprecated_alias
from primitives.errors import InvalidInputError

__all__ = ["add_parser"]

_LOOPBACK = ("127.0.0.1", "localhost", "::1")


def add_parser(sub: Any) -> None:
    """Register ``embeddings serve`` and ``embeddings bench``."""
    from primitives.embeddings.local import DEFAULT_LOCAL_MODEL
    from primitives.embeddings.server import DEFAULT_HOST, DEFAULT_MAX_BATCH, DEFAULT_PORT

    em = sub.add_parser("embeddings", help="a local embedding model behind an OpenAI-compatible /v1/embeddings")
    em_sub = em.add_subparsers(dest="action", required=True)
    sv = em_sub.add_parser("serve", help="serve the model on loopback (for the Agent Memory Server, LiteLLM, OpenAI clients)")
    sv.add_argument("--port", type=int, default=DEFAULT_PORT, help="TCP port (0 picks a free one)")
    sv.add_argument("--host", default=DEFAULT_HOST, help="interface (loopback: this machine only)")
    sv.add_argument("--model", default=DEFAULT_LOCAL_MODEL,
                    help="sentence-transformers model directory or installed model package")
    sv.add_argument("--device", default="cpu", help="torch device")
    sv.add_argument("--api-key", default=None,
                    help="require 'Authorization: Bearer KEY' (default: MEMORY_EMBEDDINGS_SERVE_API_KEY, else no key)")
    sv.add_argument("--max-batch", type=int, default=DEFAULT_MAX_BATCH,
                    help="most texts per request")
    sv.add_argument("--access-log", action="store_true", help="log one line per request")
    add_json(sv)
    sv.set_defaults(run=_run_serve)

    be = em_sub.add_parser("bench", help="server overhead per request vs the model's own encode time; cache effect")
    be.add_argument("--requests", type=int, default=300, help="timed requests of each kind")
    be.add_argument("--cache-texts", type=int, default=1000, help="texts re-ingested for the cache measure")
    deprecated_alias(be, "--texts", "--cache-texts", "cache_texts")
    be.add_argument("--model", default=DEFAULT_LOCAL_MODEL, help="model directory or package")
    be.add_argument("--in-process", action="store_true",
                    help="serve from a thread of the bench process instead of a child process (shares one GIL)")
    add_json(be)
    be.set_defaults(run=_run_bench)


def _local(model: str, device: str = "cpu") -> Any:
    from primitives.embeddings.local import SentenceTransformerEmbedder

    return SentenceTransformerEmbedder(model, device=device)


def _run_serve(args: argparse.Namespace, console: Console) -> int:
    if not 0 <= args.port <= 65535:
        raise InvalidInputError(f"--port must be 0..65535, got {args.port}")
    if args.max_batch < 1:
        raise InvalidInputError(f"--max-batch must be >= 1, got {args.max_batch}")
    args.api_key = args.api_key or os.environ.get("MEMORY_EMBEDDINGS_SERVE_API_KEY") or None
    embedder = _local(args.model, args.device)
    console.print(escape(f"loading {embedder.model} ({embedder.dims} dims) from {embedder.path} ..."))
    _flush()
    try:
        asyncio.run(_serve(embedder, args, console))
    except KeyboardInterrupt:
        pass
    return 0


async def _serve(embedder: Any, args: argparse.Namespace, console: Console) -> None:
    from primitives.embeddings.server import serve

    await embedder.load()
    await asyncio.to_thread(embedder.encode, ["warm up"])  # first encode is slow; not cached

    def ready(url: str) -> None:
        name, dims = embedder.model, embedder.dims
        auth = "bearer token required" if args.api_key else "no API key needed"
        console.print(escape(f"serving {name} ({dims} dims) at {url}/embeddings ({auth}); Ctrl+C stops"))
        console.print(escape(f"OPENAI_API_BASE={url}"))
        console.print(escape(f"export MEMORY_EMBEDDINGS_URL={url} MEMORY_EMBEDDINGS_MODEL={name} MEMORY_EMBEDDINGS_DIMS={dims}"))
        console.print(escape(f"Agent Memory Server: EMBEDDING_MODEL=openai/{name} OPENAI_API_BASE={url} "
                             f"REDISVL_VECTOR_DIMENSIONS={dims} OPENAI_API_KEY={'<the key>' if args.api_key else 'unused'}"))
        if args.host not in _LOOPBACK and not args.api_key:
            console.print("[yellow]warning:[/] listening beyond this machine without --api-key: anyone who can reach it can use it")
        if args.json:  # one object on stdout once it answers; the server then runs until Ctrl+C
            print(json.dumps({"serving": True, "url": url, "endpoint": f"{url}/embeddings", "model": name, "dims": dims,
                              "api_key_required": bool(args.api_key),
                              "env": {"MEMORY_EMBEDDINGS_URL": url, "MEMORY_EMBEDDINGS_MODEL": name,
                                      "MEMORY_EMBEDDINGS_DIMS": str(dims)}}))
        _flush()

    await serve(embedder, host=args.host, port=args.port, api_key=args.api_key, max_batch=args.max_batch,
                access_log=args.access_log, ready=ready)


def _run_bench(args: argparse.Namespace, console: Console) -> int:
    from primitives.evaluation.bench_embeddings import run_embeddings_bench

    if args.requests < 1 or args.cache_texts < 1:
        raise InvalidInputError("--requests and --cache-texts must be >= 1")
    report = asyncio.run(run_embeddings_bench(_local(args.model), requests=args.requests, cache_texts=args.cache_texts,
                                              in_process=args.in_process))
    if args.json:
        print(json.dumps(report, indent=2))
    else:
        _print_bench(report, console)
    return 0


def _print_bench(report: dict[str, Any], console: Console) -> None:
    lat = report["latency_ms"]
    table = Table("one short text, ms", "p50", "p99", "mean")
    labels = {"encode": "model encode (SentenceTransformer.encode)", "embed": "Embedder.embed (thread hop, checks)",
              "http": "HTTP POST /v1/embeddings (float)", "http_base64": "HTTP POST /v1/embeddings (base64)"}
    for key, label in labels.items():
        table.add_row(label, *(f"{lat[key][s]:.2f}" for s in ("p50", "p99", "mean")))
    console.print(table)
    ov = report["server_overhead_ms"]
    verdict = "[green]met[/]" if ov["p50"] <= report["target_overhead_ms"] else "[red]missed[/]"
    console.print(f"server overhead (paired HTTP - encode): p50 {ov['p50']:.2f} ms, p99 {ov['p99']:.2f} ms, "
                  f"p50(HTTP) - p50(encode) {ov['p50_difference']:.2f} ms; target <= {report['target_overhead_ms']} ms: {verdict}")
    out = report["outside_embedder_ms"]
    console.print(f"time outside the embedder per request (response time - x-embed-time-ms): float p50 {out['http']['p50']:.2f} ms "
                  f"p99 {out['http']['p99']:.2f} ms; base64 p50 {out['http_base64']['p50']:.2f} ms p99 {out['http_base64']['p99']:.2f} ms")
    cached = report["cached_request"]
    cpu = ", ".join(f"{k.removesuffix('_ms_per_request').replace('_', ' ')} {v:.2f} ms" for k, v in cached.items() if k != "wall_ms")
    console.print(f"a request for a cached text (no model): wall p50 {cached['wall_ms']['p50']:.2f} ms "
                  f"p99 {cached['wall_ms']['p99']:.2f} ms; per request {cpu}")
    c = report["cache"]
    console.print(escape(f"cache: {c['texts']} texts; first ingest {c['first_model_calls']} model calls in {c['first_s']:.2f} s, "
                         f"re-ingest {c['again_model_calls']} model calls in {c['again_s'] * 1000:.1f} ms; "
                         f"over HTTP: first {c['http_first_requests']} requests ({c['server_model_calls_first']} model calls "
                         f"in the server), again {c['http_again_requests']} requests ({c['server_model_calls_again']})"))
    console.print(escape(f"model {report['model']} ({report['dims']} dims), {report['requests']} requests of each kind, "
                         f"interleaved; server: {report['server']}; server model calls per timed request "
                         f"{report['server_model_calls_per_request']:.2f}"))


def _flush() -> None:
    sys.stdout.flush()  # a supervising process reads these lines through a pipe
