"""The ``memory-primitives`` command line.

One module per command group; each has ``add_parser(subparsers)`` that registers its commands
with ``set_defaults(run=handler)``, where ``handler(args, console) -> exit code``.
"""

from __future__ import annotations

import argparse
import json
from collections.abc import Sequence

from rich.console import Console
from rich.markup import escape

from primitives.cli import ams, bench, doctor, embeddings, evaluate, mcp, outbox, repair, servers, sync
from primitives.cli.options import CommandParser
from primitives.errors import PrimitivesError

__all__ = ["main"]

_GROUPS = (evaluate, bench, servers, doctor, outbox, repair, sync, embeddings, ams, mcp)


def _parser() -> argparse.ArgumentParser:
    parser = CommandParser(
        prog="memory-primitives",
        description="Memory primitives for AI agents: evaluation, benchmarks, diagnosis and local servers.\n"
        "Every command has its own --help (with its defaults) and --json (one JSON object on stdout).",
    )
    sub = parser.add_subparsers(dest="command", required=True)
    for group in _GROUPS:
        group.add_parser(sub)
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    """Run the command line; returns the exit code (0 success, 1 unhealthy or not running,
    2 bad input or configuration)."""
    args = _parser().parse_args(argv)
    as_json = bool(getattr(args, "json", False)) or "--json" in (getattr(args, "mcp_argv", None) or ())
    # commands and URLs stay on one line, copy-pasteable; with --json stdout carries only the JSON
    console = Console(soft_wrap=True, stderr=as_json)
    try:
        return int(args.run(args, console) or 0)
    except PrimitivesError as exc:
        Console(stderr=True, soft_wrap=True).print(f"[red]error:[/] {escape(str(exc))}")
        if as_json:
            print(json.dumps({"error": str(exc), "error_type": type(exc).__name__}))
        return 2
