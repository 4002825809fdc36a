"""``memory-primitives doctor``: what is configured, what answers, what to run next."""

from __future__ import annotations

import argparse
import asyncio
import json
from typing import Any

from rich.console import Console
from rich.markup import escape

from primitives.tooling.doctor import diagnose

__all__ = ["add_parser"]


def add_parser(sub: Any) -> None:
    """Register ``doctor``."""
    dr = sub.add_parser(
        "doctor",
        help="what is configured, what answers, and what to run next (exit 0 when healthy with no problem, else 1)",
    )
    dr.add_argument("--json", action="store_true", help="print one JSON object (for coding agents)")
    dr.set_defaults(run=_run)


def _run(args: argparse.Namespace, console: Console) -> int:
    report = asyncio.run(diagnose())
    if args.json:
        print(json.dumps(report, indent=2))
    else:
        _print_doctor(report, console)
    return 0 if report["healthy"] and not report["problems"] else 1


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
    for box in report.get("outboxes") or ():
        figures = ", ".join(f"{box.get(k)} {k.replace('_', ' ')}" for k in ("pending", "dead_letter", "stuck") if box.get(k) is not None)
        state = f"damaged: {box['damage']}" if box.get("damage") else figures
        console.print(escape(f"outbox {box.get('path')} -> {box.get('target') or 'unknown target'}: {state}"))
    if "upgrade" in report:
        console.print(f"upgrade: {escape(report['upgrade'])}")
    for p in report["problems"]:
        console.print(f"[red]problem:[/] {escape(p['problem'])}\n  [bold]next:[/] {escape(p['fix'])}")
