"""``memory-primitives doctor``: what is configured, what answers, what to run next."""

from __future__ import annotations

import argparse
import asyncio
import json
from typing import Any

from rich.console import Console
from rich.markup import escape

from primitives.cli.options import add_json
from primitives.tooling.doctor import diagnose

__all__ = ["add_parser"]


_DESCRIPTION = """\
Check the memory that Memory.from_env() builds from THIS shell's environment (MEMORY_BACKEND,
REDIS_URL, AGENT_MEMORY_SERVER_URL, MEMORY_EMBEDDINGS*): the backend and whether it answers, who
serves a memory call now (the store; the in-process fallback only while it is unreachable; nothing
when it refuses the configuration: no Query Engine, another schema or embedder, credentials), the
embedder, the index, damaged records, and every outbox on this machine, each problem with the exact
command to run next. A program that sets its own variables (e.g. MEMORY_EMBEDDINGS=local) is
checked with them: MEMORY_EMBEDDINGS=local memory-primitives doctor. It writes only to replay this
store's outbox once the store answers again, and on the Agent Memory Server one probe record
(deleted). Exit 0 when healthy with no problem, else 1."""


def add_parser(sub: Any) -> None:
    """Register ``doctor``."""
    dr = sub.add_parser(
        "doctor",
        help="what is configured, what answers, and what to run next (exit 0 when healthy with no problem, else 1)",
        description=_DESCRIPTION,
    )
    add_json(dr)
    dr.set_defaults(run=_run)


def _run(args: argparse.Namespace, console: Console) -> int:
    report = asyncio.run(diagnose())
    if args.json:
        print(json.dumps(report, indent=2))
    else:
        _print_doctor(report, console)
    return 0 if report["healthy"] and not report["problems"] else 1


#: Sections of the report printed as an indented tree, in this order, under these titles.
_SECTIONS = (("embeddings", "embeddings (the embedder)"), ("redis", "redis"), ("ams", "ams (Agent Memory Server)"),
             ("outbox", "outbox (of this store)"))


# why there is no embedder in this process, by configured backend
_NO_EMBEDDER = {
    "agent-memory-server": " in this process (the Agent Memory Server embeds on its side: see its vector search line)",
    None: " (keyword search only; MEMORY_EMBEDDINGS=local adds vector and hybrid search)",
}


def _print_doctor(report: dict[str, Any], console: Console) -> None:
    """Everything ``--json`` holds, for people: a status line, each section as an indented
    tree (labels are the JSON keys with spaces), every outbox, then the problems with their fix."""
    status = "[green]healthy[/]" if report["healthy"] else "[red]not healthy[/]"
    serving = report.get("serving") or "nothing (the configuration is refused; see the problems below)"
    console.print(f"configured backend: [bold]{escape(str(report['configured']))}[/] ({status}); "
                  f"serving now: {escape(str(serving))}")
    for key, title in _SECTIONS:
        if key not in report:
            continue
        value = report[key]
        if value is None:
            console.print(f"[bold]{title}:[/] none" + (_NO_EMBEDDER.get(report["configured"], _NO_EMBEDDER[None])
                                                         if key == "embeddings" else ""))
            continue
        console.print(f"[bold]{title}:[/]")
        _tree(console, value, "  ")
    outboxes = report.get("outboxes")
    if outboxes is not None:
        console.print(f"[bold]outboxes on this machine:[/] {len(outboxes) or 'none'}")
        for box in outboxes:
            console.print(f"  [bold]{escape(str(box.get('path')))}[/]")
            _tree(console, {k: v for k, v in box.items() if k != "path"}, "    ")
    for key in ("upgrade", "notes"):
        if key in report:
            value = report[key]
            console.print(f"[bold]{key}:[/] {escape(_value(value))}")
    console.print(f"[bold]problems (each with its fix, the command to run next):[/] {len(report['problems']) or 'none'}")
    for p in report["problems"]:
        console.print(f"[red]problem:[/] {escape(p['problem'])}\n  [bold]next:[/] {escape(p['fix'])}")


def _tree(console: Console, data: dict[str, Any], pad: str) -> None:
    for key, value in data.items():
        label = key.replace("_", " ")
        if isinstance(value, dict):
            console.print(f"{pad}{escape(label)}:" + ("" if value else " none"))
            _tree(console, value, pad + "  ")
        elif isinstance(value, list) and value and all(isinstance(v, dict) for v in value):
            console.print(f"{pad}{escape(label)}:")
            for item in value:
                console.print(escape(f"{pad}  - " + "; ".join(f"{k.replace('_', ' ')}: {_value(v)}" for k, v in item.items())))
        else:
            console.print(escape(f"{pad}{label}: {_value(value)}"))


def _value(value: Any) -> str:
    if value is True:
        return "yes"
    if value is False:
        return "no"
    if value is None:
        return "none"
    if isinstance(value, list):
        return "; ".join(_value(v) for v in value) if value else "none"
    return str(value)
