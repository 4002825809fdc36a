"""Every command of ``memory-primitives`` explains itself: its own ``--help`` (its description, not
its parent's), every default shown, ``--json`` on every command; renamed options still work."""

from __future__ import annotations

import argparse

import pytest

from primitives.cli import _parser, main
from primitives.cli.options import shown_default


def _leaves(parser: argparse.ArgumentParser, path: tuple[str, ...] = (), parent: str | None = None):
    """``(path, parser, parent's description)`` of every command that runs (no sub-commands)."""
    groups = [a for a in parser._actions if isinstance(a, argparse._SubParsersAction)]
    if not groups:
        yield path, parser, parent
        return
    for group in groups:
        for name, child in group.choices.items():
            yield from _leaves(child, (*path, name), parser.description)


def _real(path: tuple[str, ...], parser: argparse.ArgumentParser) -> argparse.ArgumentParser:
    """``bench mcp`` builds its parser when run (the mcp extra is imported lazily)."""
    if path == ("bench", "mcp"):
        from primitives.cli.bench import mcp_parser

        return mcp_parser()
    return parser


LEAVES = list(_leaves(_parser()))
#: Every leaf (``mcp serve``, ``bench mcp``, ...) whose module may be missing on a checkout that
#: predates it is still listed: the tree is what ``_parser()`` builds here.
IDS = [" ".join(path) for path, _, _ in LEAVES]


def test_the_tree_has_every_command() -> None:
    assert {"redis start", "redis stop", "redis status", "ams install", "ams start", "ams stop", "ams status",
            "index migrate", "doctor", "repair", "eval locomo", "outbox replay", "sync export", "embeddings serve",
            "bench redis", "bench kv", "bench mcp"} <= set(IDS)


def _squash(text: str) -> str:
    return " ".join(text.split())


@pytest.mark.parametrize(("path", "parser", "parent"), LEAVES, ids=IDS)
def test_every_command_has_its_own_help_with_its_defaults(path, parser, parent, capsys: pytest.CaptureFixture,
                                                          monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("COLUMNS", "100")
    real = _real(path, parser)
    with pytest.raises(SystemExit) as info:
        main([*path, "--help"])
    assert info.value.code == 0
    out = _squash(capsys.readouterr().out)
    assert out.startswith(f"usage: memory-primitives {' '.join(path)}")
    assert real.description and _squash(real.description) in out
    # the usage line above proves the help is the command's own parser's, not its group's
    formatter = real._get_formatter()
    options = [a for a in real._actions if a.option_strings and a.help != argparse.SUPPRESS]
    assert any(a.option_strings == ["--json"] for a in options), "every command takes --json"
    for action in options:
        assert action.help, f"{action.option_strings} has no help"
        text = _squash(formatter._expand_help(action))
        assert text in out
        shown = shown_default(action.default)
        if shown is not None:
            assert shown in text, f"{' '.join(path)} {action.option_strings[0]}: default {shown!r} not shown in {text!r}"


def test_redis_start_help_names_the_extra_and_the_default_dir(capsys: pytest.CaptureFixture,
                                                              monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("COLUMNS", "100")
    with pytest.raises(SystemExit):
        main(["redis", "start", "--help"])
    out = _squash(capsys.readouterr().out)
    assert "(default: .memory-primitives/redis)" in out and "pip install 'memory-primitives[redis-local]'" in out


@pytest.mark.parametrize(("argv", "dest", "value", "new"), [
    (["bench", "kv", "--url", "redis://h:1/0"], "redis_url", "redis://h:1/0", "--redis-url"),
    (["bench", "redis", "--url", "redis://h:1/0"], "redis_url", "redis://h:1/0", "--redis-url"),
    (["bench", "feed", "--url", "redis://h:1/0"], "redis_url", "redis://h:1/0", "--redis-url"),
    (["bench", "sync", "--url", "redis://h:1/0"], "redis_url", "redis://h:1/0", "--redis-url"),
    (["bench", "ams", "--url", "http://h:1"], "ams_url", "http://h:1", "--ams-url"),
    (["bench", "agent", "--locomo", "d"], "data", "d", "--data"),
    (["embeddings", "bench", "--texts", "7"], "cache_texts", "7", "--cache-texts"),
])
def test_old_option_names_still_work_with_a_notice(argv, dest, value, new, capsys: pytest.CaptureFixture) -> None:
    args = _parser().parse_args(argv)
    assert str(getattr(args, dest)) == value
    err = capsys.readouterr().err
    assert f"{argv[2]} is deprecated; use {new}" in err and len(err.splitlines()) == 1
    fresh = _parser().parse_args([*argv[:2], new, value])
    assert str(getattr(fresh, dest)) == value and not capsys.readouterr().err


def test_one_name_for_the_redis_url() -> None:
    """Every option that takes a Redis URL is --redis-url (like REDIS_URL); none is shown as --url."""
    for path, parser, _ in LEAVES:
        shown = {s for a in parser._actions if a.help != argparse.SUPPRESS for s in a.option_strings}
        if "--redis-url" in shown or path[0] in ("bench",) and path[-1] in ("redis", "kv", "sync", "feed"):
            assert "--redis-url" in shown and "--url" not in shown, path
