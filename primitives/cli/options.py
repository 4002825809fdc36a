"""The command line's argparse plumbing: one parser class for every command, help that shows
defaults, ``--json``, and deprecated option spellings.

Every parser of the tree is a :class:`CommandParser` (``add_subparsers`` builds children of the
parent's class), so every command and action gets :class:`HelpFormatter` and, when it is given
only a ``help=`` line, that line as its own ``--help`` description.
"""

from __future__ import annotations

import argparse
import re
import sys
import textwrap
from collections.abc import Sequence
from typing import Any

__all__ = ["CommandParser", "HelpFormatter", "add_json", "add_redis_url", "deprecated_alias", "shown_default"]


def shown_default(value: Any) -> str | None:
    """How an option's default is written in ``--help``, or ``None`` when it is not shown
    (``None``, ``False`` and suppressed defaults: the help text says what unset means)."""
    if value is None or value is False or value is argparse.SUPPRESS:
        return None
    if isinstance(value, (list, tuple)):
        return " ".join(str(v) for v in value)
    return str(value)


class HelpFormatter(argparse.RawDescriptionHelpFormatter):
    """Descriptions kept as written (paragraphs, tables), and ``(default: X)`` after every
    option whose default is a value (not ``None``/``False``) and whose help does not already
    say ``default``."""

    def _split_lines(self, text: str, width: int) -> list[str]:
        # paths and commands (".memory-primitives/redis") are not broken at their hyphens
        return textwrap.wrap(re.sub(r"\s+", " ", text).strip(), width, break_on_hyphens=False, break_long_words=False)

    def _get_help_string(self, action: argparse.Action) -> str:
        text = action.help or ""
        shown = shown_default(action.default)
        if shown is None or "default" in text or not (action.option_strings or action.nargs in ("?", "*")):
            return text
        return f"{text} (default: {shown.replace('%', '%%')})"


class _Commands(argparse._SubParsersAction):  # the documented way to customise add_parser: register()
    """``add_parser(name, help=...)``: the one-line ``help`` also becomes the command's
    ``--help`` description when none is given."""

    def add_parser(self, name: str, **kwargs: Any) -> argparse.ArgumentParser:
        if kwargs.get("help") and not kwargs.get("description"):
            text = str(kwargs["help"])
            kwargs["description"] = text[:1].upper() + text[1:] + ("" if text.endswith(".") else ".")
        return super().add_parser(name, **kwargs)


class CommandParser(argparse.ArgumentParser):
    """An ``ArgumentParser`` whose help shows defaults (:class:`HelpFormatter`) and whose
    sub-commands, built by ``add_subparsers``, are ``CommandParser`` too."""

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        kwargs.setdefault("formatter_class", HelpFormatter)
        super().__init__(*args, **kwargs)
        self.register("action", "parsers", _Commands)


def add_json(parser: argparse.ArgumentParser) -> None:
    """``--json``: print exactly one JSON object on stdout (human lines go to stderr)."""
    parser.add_argument("--json", action="store_true", help="print one JSON object on stdout (for scripts and coding agents)")


class _Deprecated(argparse.Action):
    """Stores like the new option and prints a one-line notice on stderr."""

    def __init__(self, option_strings: Sequence[str], dest: str, new: str = "", **kwargs: Any) -> None:
        self.new = new
        super().__init__(option_strings, dest, **kwargs)

    def __call__(self, parser: argparse.ArgumentParser, namespace: argparse.Namespace, values: Any,
                 option_string: str | None = None) -> None:
        print(f"{parser.prog}: {option_string} is deprecated; use {self.new}", file=sys.stderr)
        setattr(namespace, self.dest, values)


def deprecated_alias(parser: argparse.ArgumentParser, old: str, new: str, dest: str) -> None:
    """Accept ``old`` (one value) as a hidden spelling of ``new``: it sets ``dest`` and prints
    ``... OLD is deprecated; use NEW`` on stderr. Not shown in ``--help``."""
    parser.add_argument(old, dest=dest, action=_Deprecated, new=new, default=argparse.SUPPRESS, help=argparse.SUPPRESS)


def add_redis_url(parser: argparse.ArgumentParser, help: str, *, old_url: bool = True) -> None:
    """``--redis-url URL`` (the one name for a Redis URL, after ``REDIS_URL``); ``old_url``: the
    deprecated ``--url`` spelling (of the ``bench`` commands) still accepted."""
    parser.add_argument("--redis-url", dest="redis_url", default=None, metavar="URL", help=help)
    if old_url:
        deprecated_alias(parser, "--url", "--redis-url", "redis_url")
