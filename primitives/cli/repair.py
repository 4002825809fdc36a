"""``memory-primitives repair``: move damaged Redis records and working-memory items to quarantine."""

from __future__ import annotations

import argparse
import asyncio
import json
import os
from typing import Any

from rich.console import Console
from rich.markup import escape

from primitives.cli.options import add_json
from primitives.memory.facade import Memory
from primitives.validation import MAX_LIMIT

__all__ = ["add_parser"]


def add_parser(sub: Any) -> None:
    """Register ``repair``."""
    rp = sub.add_parser(
        "repair",
        help="move damaged records and working-memory items to quarantine (nothing is deleted)",
        description=(
            "Find every stored record and working-memory message that cannot be decoded (what "
            "`memory-primitives doctor` reports) and move it to the store's quarantine space. On Redis "
            "(REDIS_URL): PREFIXquarantine:MS:KEY, outside the index, expiry removed, a list keeping its good "
            "messages; why and when in the stream PREFIXquarantine:log. Records of the previous layout are "
            "left for `memory-primitives index migrate`."
        ),
    )
    rp.add_argument("--prefix", default=None, help="key prefix (default: MEMORY_REDIS_PREFIX or memory:)")
    rp.add_argument("--dry-run", action="store_true", help="only list what would be moved")
    add_json(rp)
    rp.set_defaults(run=_run)


def _run(args: argparse.Namespace, console: Console) -> int:
    report = asyncio.run(_repair(args))
    if args.json:
        print(json.dumps(report, indent=2))
        return 0
    entries = report["moved"]
    where = f"{report['prefix']!r}" if report["prefix"] else f"the {report['backend']} store"
    if not entries:
        console.print(escape(f"nothing to repair in {where}: every record and working-memory list decodes"))
        return 0
    verb = "would move" if report["dry_run"] else "moved"
    more = "" if report["complete"] else f" (the first {len(entries)}; there are more)"
    console.print(escape(f"{verb} {len(entries)} damaged keys{more} from {where} to quarantine:"))
    for entry in entries:
        to = f" -> {entry['moved_to']}" if entry.get("moved_to") else ""
        console.print(escape(f"  {entry['key']}{to}: {entry['reason']}"))
    if report["dry_run"]:
        console.print("run without --dry-run to move them (nothing is deleted)")
    elif report["backend"] == "redis":
        console.print(escape(f"kept under {report['prefix']}quarantine:; why and when: "
                             f"redis-cli XRANGE {report['prefix']}quarantine:log - +"))
    return 0


async def _repair(args: argparse.Namespace) -> dict[str, Any]:
    env = dict(os.environ)
    if args.prefix:
        env["MEMORY_REDIS_PREFIX"] = args.prefix
    env["MEMORY_RESILIENT"] = "0"  # maintenance talks to the store itself: no fallback, no outbox
    memory = Memory.from_env(env)
    try:
        backend = memory.backend
        if args.dry_run:
            found = await backend.find_damaged(limit=MAX_LIMIT)
            damaged, complete = found.damaged, found.complete
        else:
            damaged, complete = await backend.repair(), True
    finally:
        await memory.aclose()
    return {
        "backend": memory.backend_name,
        "prefix": getattr(backend, "prefix", None),
        "dry_run": args.dry_run,
        "complete": complete,
        "moved": [{"key": d.key, "reason": d.reason, "moved_to": d.moved_to} for d in damaged],
    }
