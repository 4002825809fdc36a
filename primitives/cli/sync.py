"""``memory-primitives sync export|import|status``: memories to and from a warehouse or lake.

The store is what ``Memory.from_env()`` describes (in process, or Redis when ``REDIS_URL`` is
set); the target is ``--target`` (a URL or a configured name, :mod:`primitives.sync.targets`),
else ``MEMORY_SYNC_TARGET``, else a DuckDB file under ``.memory-primitives/``.
"""

from __future__ import annotations

import argparse
import asyncio
import json
from datetime import datetime
from typing import Any

from rich.console import Console
from rich.markup import escape
from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn

from primitives.cli.options import add_json
from primitives.errors import InvalidInputError
from primitives.memory.datasync import StoreSource
from primitives.memory.facade import Memory
from primitives.sync.engine import export_changes, import_changes, sync_status
from primitives.sync.targets import open_target

__all__ = ["add_parser"]


def _since(text: str) -> datetime:
    try:
        at = datetime.fromisoformat(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"not an ISO 8601 timestamp with a zone: {text!r}") from None
    if at.tzinfo is None:
        raise argparse.ArgumentTypeError(f"give a time zone, e.g. {text}+00:00")
    return at


_ABOUT = """\
The store is what Memory.from_env() describes (in process, or Redis when REDIS_URL is set); the
target is --target (a URL such as duckdb:///path or postgresql://..., or a configured name), else
MEMORY_SYNC_TARGET, else the DuckDB file .memory-primitives/memories.duckdb. Incremental (a cursor
per direction), idempotent, last writer wins by updated_at; deletes travel as tombstones."""


def add_parser(sub: Any) -> None:
    """Register ``sync export``, ``sync import`` and ``sync status``."""
    group = sub.add_parser(
        "sync",
        help="export memories to a warehouse or lake and import them back (incremental, last writer wins)",
        description=_ABOUT,
    )
    commands = group.add_subparsers(dest="sync_command", required=True)
    for name, helptext, run in (
        ("export", "send the store's changes since the last export to the target", _run_export),
        ("import", "apply the target's rows since the last import to the store", _run_import),
        ("status", "each direction's cursor, lag (records and seconds), last run and rejected rows", _run_status),
    ):
        cmd = commands.add_parser(name, help=helptext, description=f"{helptext[:1].upper()}{helptext[1:]}.\n\n{_ABOUT}")
        cmd.add_argument("--target", help="URL or configured name (default: MEMORY_SYNC_TARGET, else .memory-primitives/memories.duckdb)")
        add_json(cmd)
        if name != "status":
            cmd.add_argument("--since", type=_since, help="start at this time (ISO 8601 with zone) instead of the saved cursor")
            cmd.add_argument("--dry-run", action="store_true", help="report what would move, write nothing")
            cmd.add_argument("--batch-size", type=int, default=5_000, help="rows per committed batch (1..10000)")
        if name == "import":
            cmd.add_argument("--include-own", action="store_true", help="also apply rows this store exported (restore an emptied store)")
        cmd.set_defaults(run=run)


async def _with(args: argparse.Namespace, work: Any) -> Any:
    memory = Memory.from_env()
    try:
        source = StoreSource(memory.backend)
        async with open_target(args.target) as target:
            return await work(source, target)
    finally:
        await memory.aclose()


def _progress(console: Console, enabled: bool) -> Progress:
    return Progress(
        TextColumn("{task.description}"), BarColumn(), MofNCompleteColumn(), TimeElapsedColumn(),
        console=console, disable=not enabled, transient=True,
    )


def _run_transfer(args: argparse.Namespace, console: Console, direction: str) -> int:
    if not 1 <= args.batch_size <= 10_000:
        raise InvalidInputError(f"--batch-size must be 1..10000, got {args.batch_size}")

    async def work(source: StoreSource, target: Any) -> Any:
        with _progress(console, not args.json) as bar:
            task = bar.add_task(f"{direction} {escape(target.url)}", total=None)
            options = dict(batch_size=args.batch_size, since=args.since, dry_run=args.dry_run,
                           progress=lambda n: bar.advance(task, n))
            if direction == "export":
                return await export_changes(source, target, **options)
            return await import_changes(target, source, include_own=args.include_own, **options)

    report = asyncio.run(_with(args, work))
    data = report.to_dict()
    if args.json:
        print(json.dumps(data, indent=2))
        return 0
    verb = "would move" if args.dry_run else "moved"
    if direction == "export":
        console.print(
            f"export {verb} {report.read} changes ({report.tombstones} deletes) in {report.batches} batches, "
            f"{report.written} written (newer than the target's), {report.seconds} s"
        )
    else:
        console.print(
            f"import {verb} {report.read} rows in {report.batches} batches: {report.written} written, "
            f"{report.deleted} deleted, {report.skipped} older or expired, {report.own} this store's own, "
            f"{report.rejected} rejected, {report.seconds} s"
        )
        for reason in report.reasons[:5]:
            console.print(f"  rejected: {escape(reason)}")
        if report.rejected:
            console.print("  the rejected rows and their reasons are in the target's sync_rejected table")
    return 0


def _run_export(args: argparse.Namespace, console: Console) -> int:
    return _run_transfer(args, console, "export")


def _run_import(args: argparse.Namespace, console: Console) -> int:
    return _run_transfer(args, console, "import")


def _run_status(args: argparse.Namespace, console: Console) -> int:
    status = asyncio.run(_with(args, sync_status))
    if args.json:
        print(json.dumps(status, indent=2, default=str))
        return 0
    console.print(f"store  {escape(status['source'])}\ntarget {escape(status['target'])}")
    for direction in ("export", "import"):
        entry = status[direction]
        cursor = entry["cursor"]
        where = f"after {cursor['updated_at']}" if cursor else "never run"
        capped = "+" if entry["lag_records_capped"] else ""
        line = f"{direction}: {where}; behind by {entry['lag_records']}{capped} records, {entry['lag_seconds']} s"
        if entry.get("last_run"):
            line += f"; last run {entry['last_run']['at']}"
        console.print(escape(line))
    console.print(f"target holds {status['target_rows']} records, {status['target_tombstones']} tombstones; "
                  f"{status['rejected']} rejected rows")
    return 0
