"""The code blocks of README.md and docs/*.md, and how tests/test_docs.py runs them.

Three parts:

* :func:`collect` reads every fenced block tagged ``python`` or ``bash`` / ``sh`` / ``shell`` /
  ``console`` (indented ones inside list items too) and the skip marker
  ``<!-- docs-test: skip (reason) -->`` on the line right before a fence.
* :func:`prepare` turns a file's blocks into what the runner executes: the ports the docs name
  (6379, 6380, 8000, 8100) become free loopback ports, the same ones throughout a file, so the run
  never meets a server this machine already runs; a ``pip install`` of this package is checked,
  not run (its extras must be declared in pyproject.toml and installed here: CI installed
  ``.[test]`` already, and reinstalling would change the environment under test).
* a synopsis line (``memory-primitives eval locomo --data DIR [--k 5 10] [--mode a|b]``) is not
  run but checked against the command's ``--help``: every option and every choice it names must
  be there.
* ``python tests/docs_blocks.py run SPEC`` runs one file's blocks in document order in one
  process: Python blocks in one namespace (top-level ``await`` allowed, one event loop), shell
  blocks with ``bash -euo pipefail`` whose exported variables reach the blocks after them.
  ``# prints: TEXT`` in a block (on its own line or after code) asserts that the block printed
  TEXT (``...`` matches anything). One JSON line per block goes to the results file.
"""

from __future__ import annotations

import ast
import asyncio
import inspect
import json
import os
import re
import shlex
import signal
import socket
import subprocess
import sys
import time
import traceback
from dataclasses import dataclass
from pathlib import Path

__all__ = ["Block", "collect", "command_spans", "doc_files", "prepare", "servers_started", "stop_servers",
           "usage_problems", "REPO"]

REPO = Path(__file__).resolve().parents[1]
RUN_TAGS = {"python": "python", "py": "python", "bash": "bash", "sh": "bash", "shell": "bash",
            "console": "bash"}
SKIP = re.compile(r"^\s*<!--\s*docs-test:\s*skip\s*(?:\((?P<reason>.*)\))?\s*-->\s*$")
FENCE = re.compile(r"^(?P<indent>\s*)(?P<fence>`{3,}|~{3,})\s*(?P<tag>[\w+-]*)\s*$")
#: Ports the docs name, and what listens there when the docs are followed.
DOC_PORTS = (6379, 6380, 8000, 8100)
PYTHON_TIMEOUT_S = 30.0
BASH_TIMEOUT_S = 150.0


@dataclass(frozen=True)
class Block:
    """One fenced block: ``path`` relative to the repository, ``line`` of the opening fence (1-based),
    ``lang`` ``"python"`` or ``"bash"``, ``text`` without the fence's indentation, ``skip`` the
    reason of a skip marker (``""`` when the marker gives none) or ``None``."""

    path: str
    line: int
    lang: str
    text: str
    skip: str | None

    @property
    def id(self) -> str:
        return f"{self.path}:{self.line}"


def doc_files(repo: Path = REPO) -> list[Path]:
    """README.md and every docs/*.md, in that order."""
    return [repo / "README.md", *sorted((repo / "docs").glob("*.md"))]


def collect(path: Path, repo: Path = REPO) -> tuple[list[Block], list[str]]:
    """The runnable blocks of one Markdown file, and the problems with its skip markers
    (a marker without a reason, or not right before a runnable fence)."""
    lines = path.read_text(encoding="utf-8").split("\n")
    rel = path.relative_to(repo).as_posix()
    blocks: list[Block] = []
    problems: list[str] = []
    i = 0
    while i < len(lines):
        line = lines[i]
        if "docs-test:" in re.sub(r"`[^`]*`", "", line):       # a marker, not prose quoting one
            marker = SKIP.match(line)
            nxt = FENCE.match(lines[i + 1]) if i + 1 < len(lines) else None
            if marker is None:
                problems.append(f"{rel}:{i + 1}: not a skip marker: {line.strip()!r} "
                                f"(the form is <!-- docs-test: skip (reason) -->)")
            elif not (marker.group("reason") or "").strip():
                problems.append(f"{rel}:{i + 1}: a skip marker without a reason")
            if nxt is None or nxt.group("tag").lower() not in RUN_TAGS:
                problems.append(f"{rel}:{i + 1}: a skip marker not right before a python/bash fence")
        m = FENCE.match(line)
        if m is None:
            i += 1
            continue
        indent, fence, tag = m.group("indent"), m.group("fence"), m.group("tag").lower()
        j = i + 1
        while j < len(lines):
            close = re.match(r"^\s*(`{3,}|~{3,})\s*$", lines[j])
            if close and close.group(1)[0] == fence[0] and len(close.group(1)) >= len(fence):
                break
            j += 1
        if tag in RUN_TAGS:
            body = [ln[len(indent):] if ln.startswith(indent) else ln.lstrip() for ln in lines[i + 1:j]]
            marker = SKIP.match(lines[i - 1]) if i > 0 else None
            skip = (marker.group("reason") or "").strip() if marker else None
            text = "\n".join(body)
            if RUN_TAGS[tag] == "bash" and tag == "console":
                text = "\n".join(ln[2:] for ln in body if ln.startswith("$ "))
            blocks.append(Block(rel, i + 1, RUN_TAGS[tag], text, skip))
        i = j + 1
    return blocks, problems


def command_spans(path: Path) -> list[tuple[int, str]]:
    """Every ``memory-primitives ...`` command in the file's inline code (`` `...` ``, tables
    included): ``(line, command)``, split at ``&&`` / ``;`` / `` | `` and without leading
    ``VAR=value`` assignments."""
    found = []
    for number, line in enumerate(path.read_text(encoding="utf-8").split("\n"), 1):
        for span in re.findall(r"`([^`]+)`", line):
            for part in re.split(r"\s+(?:&&|;)\s+|\s+\|\s+", span):
                part = re.sub(r"^(?:[A-Z_]+=\S*\s+)+", "", part.strip())
                if part.startswith("memory-primitives "):
                    found.append((number, part))
    return found


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


_PIP = re.compile(r"(?:\bpython3?\s+-m\s+)?\bpip\s+install\s+(?P<args>[^&;|#\n]*[^&;|#\n\s])")
#: A synopsis line: the command with optional parts in brackets (``[--k 5 10]``).
_SYNOPSIS = re.compile(r"^memory-primitives\s[^#]*\[--")
_PROGRAM_DEFAULT_PORT = [
    (re.compile(r"\bmemory-primitives\s+redis\s+(?:start|stop|status)\b"), 6379),
    (re.compile(r"\bmemory-primitives\s+ams\s+(?:start|stop|status)\b"), 8000),
    (re.compile(r"\bmemory-primitives\s+embeddings\s+serve\b"), 8100),
]


def prepare(block: Block, ports: dict[int, int]) -> str:
    """The text the runner executes for ``block``: ports mapped, install lines checked (see the
    module docstring). Commands that start a local server with their default port get that port
    (mapped) made explicit; an explicit ``--port`` later on the line still wins (argparse)."""
    text = block.text
    for doc_port, port in ports.items():
        text = re.sub(rf"(?<=127\.0\.0\.1:){doc_port}\b|(?<=localhost:){doc_port}\b"
                      rf"|(?<=--port ){doc_port}\b|(?<=--port=){doc_port}\b", str(port), text)
    if block.lang == "bash":
        for pattern, doc_port in _PROGRAM_DEFAULT_PORT:
            text = pattern.sub(lambda m, p=ports[doc_port]: f"{m.group(0)} --port {p}", text)
        checker = shlex.quote(str(Path(__file__).resolve()))
        text = _PIP.sub(lambda m: f"python {checker} check-install {m.group('args')}", text)
        text = "\n".join(f"python {checker} check-usage {shlex.quote(ln)}" if _SYNOPSIS.match(ln) else ln
                         for ln in text.split("\n"))
    return text


_START = re.compile(r"\bmemory-primitives\s+(?P<program>redis|ams)\s+start\b(?P<args>[^&;|#\n]*)")


def servers_started(texts: list[str]) -> list[list[str]]:
    """The stop commands for the servers that prepared shell blocks start
    (``memory-primitives redis|ams start``), with the same ``--port`` / ``--dir``."""
    stops = []
    for text in texts:
        for m in _START.finditer(text):
            args = shlex.split(m.group("args"))
            keep: list[str] = []
            for flag in ("--port", "--dir"):
                values = [args[k + 1] for k, a in enumerate(args[:-1]) if a == flag]
                values += [a.split("=", 1)[1] for a in args if a.startswith(flag + "=")]
                if values:
                    keep += [flag, values[-1]]
            stops.append(["memory-primitives", m.group("program"), "stop", *keep])
    return stops


def stop_servers(stops: list[list[str]], pgid_file: Path, cwd: Path, env: dict[str, str]) -> list[str]:
    """Stop what a file's blocks started: the CLI's own stop commands, then every process group a
    shell block left behind (``cmd &``). Returns what could not be stopped."""
    problems = []
    for cmd in stops:
        try:
            subprocess.run(cmd, cwd=cwd, env=env, capture_output=True, timeout=60)
        except (OSError, subprocess.TimeoutExpired) as exc:
            problems.append(f"{' '.join(cmd)}: {exc}")
    pgids = [int(x) for x in pgid_file.read_text().split()] if pgid_file.exists() else []
    for sig in (signal.SIGTERM, signal.SIGKILL):
        for pgid in pgids:
            try:
                os.killpg(pgid, sig)
            except (ProcessLookupError, PermissionError):
                pass
        if sig == signal.SIGTERM and pgids:
            time.sleep(0.5)
    return problems


# --------------------------------------------------------------------------- the runner process


def _prints_pattern(expected: str) -> re.Pattern[str]:
    parts = [re.escape(" ".join(p.split())) for p in expected.split("...")]
    return re.compile(r".*?".join(parts), re.S)


def _check_prints(text: str, output: str) -> None:
    """Every ``# prints: TEXT`` comment of a block (on its own line or after code) must match what
    the block printed, whitespace-insensitively, ``...`` matching anything."""
    for expected in re.findall(r"#\s*prints:\s*(.+?)\s*$", text, re.M):
        if not _prints_pattern(expected).search(" ".join(output.split())):
            raise AssertionError(f"the block says it prints {expected!r}; it did not")


def _run_bash(text: str, workdir: Path, pgid_file: Path, log: Path) -> None:
    envfile = workdir / ".docs-test-env"
    envfile.unlink(missing_ok=True)
    script = f"{text}\nenv -0 > {shlex.quote(str(envfile))}\n"
    with open(log, "wb") as out:
        proc = subprocess.Popen(["bash", "-euo", "pipefail", "-c", script], stdout=out, stderr=subprocess.STDOUT,
                                stdin=subprocess.DEVNULL, env=dict(os.environ), start_new_session=True)
        with open(pgid_file, "a") as f:
            f.write(f"{proc.pid}\n")
        try:
            code = proc.wait(timeout=BASH_TIMEOUT_S)
        except subprocess.TimeoutExpired:
            os.killpg(proc.pid, signal.SIGKILL)
            raise TimeoutError(f"the shell block ran over {BASH_TIMEOUT_S:.0f} s") from None
    output = log.read_text(errors="replace")
    if code != 0:
        raise RuntimeError(f"exit status {code}")
    deprecated = re.search(r"^.*\bis deprecated; use\b.*$", output, re.M)
    if deprecated:
        raise AssertionError(f"the block uses a deprecated spelling: {deprecated.group(0)}")
    _check_prints(text, output)
    env = dict(kv.split("=", 1) for kv in envfile.read_text().split("\0") if "=" in kv)
    for name in ("_", "SHLVL", "OLDPWD"):
        env.pop(name, None)
    os.environ.clear()
    os.environ.update(env)


def _run_python(block: dict, namespace: dict, loop: asyncio.AbstractEventLoop, timeout: float) -> None:
    source = "\n" * block["line"] + block["text"]          # tracebacks name the Markdown line
    code = compile(source, block["path"], "exec", flags=ast.PyCF_ALLOW_TOP_LEVEL_AWAIT, dont_inherit=True)
    asyncio.set_event_loop(loop)
    result = eval(code, namespace)  # noqa: S307 - the documentation's own code is what is tested
    if inspect.iscoroutine(result):
        loop.run_until_complete(asyncio.wait_for(result, timeout))


def _format(exc: BaseException, path: str) -> str:
    """The traceback from the block's own frame on (the runner's frames say nothing about the docs)."""
    tb = exc.__traceback__
    while tb is not None and tb.tb_frame.f_code.co_filename != path:
        tb = tb.tb_next
    return "".join(traceback.format_exception(type(exc), exc, tb or exc.__traceback__))


def run(spec_path: str) -> None:
    """Run one file's prepared blocks (see the module docstring); one JSON line per block."""
    spec = json.loads(Path(spec_path).read_text())
    workdir, pgid_file, results = Path(spec["cwd"]), Path(spec["pgid_file"]), Path(spec["results"])
    os.chdir(workdir)
    namespace: dict = {"__name__": "__docs__"}
    loop = asyncio.new_event_loop()
    try:
        for n, block in enumerate(spec["blocks"]):
            started = time.monotonic()
            log = workdir / f".docs-test-{n}.log"
            status, error = "passed", ""
            if block["skip"] is not None:
                status = "skipped"
            else:
                try:
                    if block["lang"] == "python":
                        with open(log, "w") as out:
                            sys.stdout.flush()
                            saved = os.dup(1), os.dup(2)
                            os.dup2(out.fileno(), 1)
                            os.dup2(out.fileno(), 2)
                            try:
                                _run_python(block, namespace, loop, spec.get("python_timeout_s", PYTHON_TIMEOUT_S))
                                sys.stdout.flush()
                                _check_prints(block["text"], log.read_text(errors="replace"))
                            finally:
                                sys.stdout.flush()
                                sys.stderr.flush()
                                os.dup2(saved[0], 1)
                                os.dup2(saved[1], 2)
                                os.close(saved[0])
                                os.close(saved[1])
                    else:
                        _run_bash(block["text"], workdir, pgid_file, log)
                except BaseException as exc:  # noqa: BLE001 - reported per block; the next blocks run
                    status = "failed"
                    if isinstance(exc, (RuntimeError, TimeoutError, AssertionError)) and (
                            block["lang"] == "bash" or "the block says it prints" in str(exc)):
                        error = f"{exc}"
                    else:
                        error = _format(exc, block["path"])
                    if isinstance(exc, KeyboardInterrupt):
                        raise
            output = log.read_text(errors="replace")[-4000:] if log.exists() else ""
            with open(results, "a") as f:
                f.write(json.dumps({"line": block["line"], "status": status, "error": error, "output": output,
                                    "seconds": round(time.monotonic() - started, 2)}) + "\n")
    finally:
        pending = [t for t in asyncio.all_tasks(loop) if not t.done()]
        for task in pending:
            task.cancel()
        if pending:
            loop.run_until_complete(asyncio.gather(*pending, return_exceptions=True))
        loop.run_until_complete(loop.shutdown_asyncgens())
        loop.close()


# --------------------------------------------------------------------------- install lines


def check_install(args: list[str]) -> None:
    """Check a documented ``pip install`` of this package instead of running it: every extra it
    names is declared in pyproject.toml and its requirements are installed here. Exits non-zero
    with the reason otherwise (including for any other package: such a block is a skip)."""
    import tomllib
    from importlib.metadata import PackageNotFoundError, version

    from packaging.requirements import Requirement

    project = tomllib.loads((REPO / "pyproject.toml").read_text())["project"]
    extras: dict[str, list[str]] = project.get("optional-dependencies", {})
    name = project["name"]
    targets = [a for a in args if a not in ("-e", "--editable", "-U", "--upgrade", "--no-deps")]
    if not targets:
        sys.exit("pip install with nothing to install")
    wanted: list[str] = []
    for target in targets:
        m = re.fullmatch(rf"(?:\.|{re.escape(name)})(?:\[(?P<extras>[\w,-]*)\])?", target)
        if m is None:
            sys.exit(f"not this package: {target!r} (a block installing other software needs a skip marker)")
        wanted += [e for e in (m.group("extras") or "").split(",") if e]
    checked: set[str] = set()
    missing: list[str] = []

    def need(extra: str) -> None:
        if extra in checked:
            return
        checked.add(extra)
        if extra not in extras:
            sys.exit(f"{name} has no extra {extra!r}; declared: {', '.join(sorted(extras))}")
        for raw in extras[extra]:
            req = Requirement(raw)
            if req.name == name:
                for sub in req.extras:
                    need(sub)
                continue
            try:
                have = version(req.name)
            except PackageNotFoundError:
                missing.append(f"{raw} (not installed)")
                continue
            if req.specifier and not req.specifier.contains(have, prereleases=True):
                missing.append(f"{raw} (installed {have})")

    for requirement in project.get("dependencies", []):
        req = Requirement(requirement)
        try:
            version(req.name)
        except PackageNotFoundError:
            missing.append(f"{requirement} (not installed)")
    for extra in wanted:
        need(extra)
    if missing:
        sys.exit("declared but not installed here: " + "; ".join(missing))
    print(f"checked, not run: pip install {' '.join(args)} (extras {sorted(checked) or 'none'} declared and installed)")


def command_help(words: list[str]) -> str | None:
    """``memory-primitives WORDS --help`` as text (from the parser, in process), or ``None`` when
    WORDS is not a command. A command that hands its arguments on (``bench mcp``) is asked in a
    subprocess."""
    import argparse

    from primitives.cli import _parser

    parser = _parser()
    for word in words[1:]:
        subs = [a for a in parser._actions if isinstance(a, argparse._SubParsersAction)]
        if not subs or word not in subs[0].choices:
            return None
        parser = subs[0].choices[word]
    text = parser.format_help()
    if any(a.nargs == argparse.REMAINDER for a in parser._actions):
        done = subprocess.run([*words, "--help"], capture_output=True, text=True, timeout=60)
        text += done.stdout
    return text


def usage_problems(line: str) -> list[str]:
    """What a synopsis (``memory-primitives eval locomo --data DIR [--k 5 10] [--mode a|b]``; an
    ``a|b`` action means each of them) names that the command's ``--help`` does not show: every
    ``--option`` and every choice of an ``a|b|c`` alternative must appear in the help of at least
    one of the commands meant."""
    code = line.split(" #", 1)[0].replace("\\|", "|")
    words = code.replace("[", " [ ").replace("]", " ] ").split()
    commands: list[list[str]] = [[]]
    rest = 0
    for rest, word in enumerate(words):
        if not re.fullmatch(r"[a-z][\w-]*(\|[a-z][\w-]*)*", word) or word.isupper():
            break
        commands = [c + [alt] for c in commands for alt in word.split("|")]
    else:
        rest = len(words)
    helps = []
    for command in commands:
        text = command_help(command)
        if text is None:
            return [f"{' '.join(command)} is not a command"]
        helps.append(text)
    known = set()
    for text in helps:
        known |= set(re.findall(r"--[\w-]+|[\w.-]+", text))
    tail = " ".join(words[rest:])
    named = set(re.findall(r"--[\w-]+", tail))
    for alt in re.findall(r"(?<![\w.-])[\w.-]+(?:\|[\w.-]+)+", tail):
        named |= set(alt.split("|"))
    return [f"{' '.join(commands[0][:2])}... --help does not show {n}" for n in sorted(named - known)]


def check_usage(line: str) -> None:
    """Check a synopsis line against the command's own ``--help`` (:func:`usage_problems`)."""
    problems = usage_problems(line)
    if problems:
        sys.exit("; ".join(problems) + " (the docs name it)")
    print(f"checked against --help: {line}")


if __name__ == "__main__":
    if sys.argv[1] == "run":
        run(sys.argv[2])
    elif sys.argv[1] == "check-usage":
        check_usage(sys.argv[2])
    elif sys.argv[1] == "check-install":
        check_install([a for arg in sys.argv[2:] for a in [arg.strip("'\"")]])
    else:
        sys.exit(f"usage: {sys.argv[0]} run SPEC | check-install ARGS...")
