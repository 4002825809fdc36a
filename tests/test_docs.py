"""The documentation cannot drift from the code: every ``python`` and ``bash`` block of README.md and
docs/*.md runs, and a block that fails is a failing test named ``FILE:LINE``.

How a file runs (tests/docs_blocks.py has the details):

* in a fresh process, in a temporary directory laid out like the repository (every top-level entry
  linked, and ``../shared`` beside it as beside the checkout), so ``python examples/...`` and
  ``--data ../shared/data/locomo`` work as written and nothing is left in the checkout;
* blocks in document order: Python blocks share one namespace (later snippets use earlier names;
  top-level ``await`` runs in one event loop), shell blocks run with ``bash -euo pipefail`` and the
  variables they export reach the blocks after them; ``# prints: TEXT`` is checked;
* the environment is this one without any ``MEMORY_*``, ``REDIS_URL`` or ``AGENT_MEMORY_SERVER_*``
  setting (what the docs assume of a fresh shell) and with a private ``XDG_CACHE_HOME`` (outboxes);
* the ports the docs name become free loopback ports, the same throughout a file; the servers a
  block starts (``memory-primitives redis start``, ``ams start``, ``cmd &``) are stopped afterwards
  with the CLI's own stop commands, whatever happened;
* ``pip install`` of this package is checked (extras declared and installed), not run;
* a synopsis line (``memory-primitives CMD [--option X]``) is checked against the command's --help,
  and so is every ``memory-primitives ...`` in the prose and tables (test_inline_commands_match_help).

A block that cannot run here carries ``<!-- docs-test: skip (reason) -->`` on the line before its
fence; a marker without a reason fails, and skipped blocks must stay under a third of all blocks.
"""

from __future__ import annotations

import json
import os
import re
import shutil
import subprocess
import sys
import tempfile
import threading
import time
from concurrent.futures import Future, ThreadPoolExecutor
from dataclasses import asdict
from pathlib import Path

import pytest

from tests.docs_blocks import (DOC_PORTS, REPO, Block, collect, command_spans, doc_files, free_port, prepare,
                               servers_started, stop_servers, usage_problems)

FILE_TIMEOUT_S = 170.0
SKIP_BUDGET = 1 / 3
_COLLECTED = {path: collect(path) for path in doc_files()}
BLOCKS: list[Block] = [b for blocks, _ in _COLLECTED.values() for b in blocks]


def _base_env(cache: Path) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items()
           if not k.startswith(("MEMORY_", "AGENT_MEMORY_SERVER_", "PYTEST_"))
           and k not in ("REDIS_URL", "OPENAI_API_KEY")}
    # the Agent Memory Server's venv stays where it was installed; outboxes go to a private cache
    env["MEMORY_PRIMITIVES_CACHE"] = os.environ.get("MEMORY_PRIMITIVES_CACHE") or str(
        Path.home() / ".cache" / "memory-primitives")
    env["XDG_CACHE_HOME"] = str(cache)
    env["PATH"] = os.pathsep.join([str(Path(sys.executable).parent), env.get("PATH", "")])
    env["PYTHONUNBUFFERED"] = "1"
    return env


def _install_ams() -> None:
    """The docs' `ams start` installs the Agent Memory Server on first use (a few minutes, cached):
    done here, outside the file's time limit, as the AMS tests do (a no-op once installed)."""
    from primitives.tooling.localams import LocalAMS

    ams = LocalAMS(redis_url="redis://127.0.0.1:6379/0", embeddings_url="http://127.0.0.1:8100/v1")
    if not ams.installed():
        ams.install()


def _run_file(rel: str) -> dict[int, dict]:
    """Run one file's blocks (see the module docstring); results by line."""
    return _run_blocks([b for b in BLOCKS if b.path == rel])


def _run_blocks(blocks: list[Block], **options: float) -> dict[int, dict]:
    """Run the blocks of one file in order, in one runner process; results by line."""
    if any(b.skip is None and "memory-primitives ams start" in b.text for b in blocks):
        _install_ams()
    base = Path(tempfile.mkdtemp(prefix="docs-test-"))
    workdir = base / REPO.name
    workdir.mkdir()
    for entry in REPO.iterdir():
        if entry.name not in (".git", ".memory-primitives"):
            (workdir / entry.name).symlink_to(entry)
    if (REPO.parent / "shared").exists():
        (base / "shared").symlink_to(REPO.parent / "shared")
    ports = {p: free_port() for p in DOC_PORTS}
    texts = [prepare(b, ports) for b in blocks]
    pgid_file, results = base / "pgids", base / "results.jsonl"
    spec = {"cwd": str(workdir), "pgid_file": str(pgid_file), "results": str(results),
            "blocks": [{**asdict(b), "text": t} for b, t in zip(blocks, texts)], **options}
    (base / "spec.json").write_text(json.dumps(spec))
    env = _base_env(base / "cache")
    log = open(base / "runner.log", "wb")
    proc = subprocess.Popen([sys.executable, str(REPO / "tests" / "docs_blocks.py"), "run", str(base / "spec.json")],
                            cwd=workdir, env=env, stdout=log, stderr=subprocess.STDOUT, start_new_session=True)
    started = time.monotonic()
    try:
        proc.wait(timeout=FILE_TIMEOUT_S)
    except subprocess.TimeoutExpired:
        os.killpg(proc.pid, 9)
        proc.wait()
    finally:
        log.close()
        problems = stop_servers(servers_started([t for b, t in zip(blocks, texts) if b.skip is None]),
                                pgid_file, workdir, env)
    done = {}
    if results.exists():
        for line in results.read_text().splitlines():
            row = json.loads(line)
            done[row["line"]] = row
    runner_log = (base / "runner.log").read_text(errors="replace")[-3000:]
    for b in blocks:
        done.setdefault(b.line, {"status": "failed", "output": runner_log, "seconds": 0.0,
                                 "error": f"not reached: the file's run ended after {time.monotonic() - started:.0f} s "
                                          f"(limit {FILE_TIMEOUT_S:.0f} s, exit status {proc.returncode})"})
        if problems:
            done[b.line]["error"] += "\nservers not stopped: " + "; ".join(problems)
    shutil.rmtree(base, ignore_errors=True)
    return done


class _Runs:
    """Runs the selected files two at a time (this machine has two cores), each once."""

    def __init__(self, files: list[str]) -> None:
        self._pool = ThreadPoolExecutor(max_workers=2)
        self._lock = threading.Lock()
        self._futures: dict[str, Future] = {}
        for rel in files:
            self.submit(rel)

    def submit(self, rel: str) -> Future:
        with self._lock:
            if rel not in self._futures:
                self._futures[rel] = self._pool.submit(_run_file, rel)
            return self._futures[rel]

    def result(self, block: Block) -> dict:
        return self.submit(block.path).result()[block.line]

    def close(self) -> None:
        self._pool.shutdown(wait=True, cancel_futures=True)


@pytest.fixture(scope="module")
def runs(request: pytest.FixtureRequest):
    selected = [item.callspec.params["block"] for item in request.session.items
                if getattr(item, "callspec", None) is not None and item.originalname == "test_block"
                and item.module is request.module]
    files = list(dict.fromkeys(b.path for b in selected if b.skip is None))
    # the slowest files first, so the two workers end together
    slow = ("docs/upgrade.md", "README.md")
    files.sort(key=lambda f: f not in slow)
    r = _Runs(files)
    yield r
    r.close()


#: Files whose blocks start a server (a synopsis line, with ``[--option]``, starts nothing): integration tests.
_SERVER_FILES = {b.path for b in BLOCKS if b.skip is None and b.lang == "bash"
                 for line in b.text.split("\n") if "[--" not in line
                 and any(f"memory-primitives {s}" in line for s in ("redis start", "ams start", "embeddings serve"))}


@pytest.mark.parametrize("block", [pytest.param(b, id=b.id, marks=[pytest.mark.integration] * (b.path in _SERVER_FILES))
                                   for b in BLOCKS])
def test_block(block: Block, runs: _Runs) -> None:
    if block.skip is not None:
        pytest.skip(f"{block.id}: docs-test: skip ({block.skip})")
    result = runs.result(block)
    if result["status"] != "passed":
        pytest.fail(f"{block.id} ({block.lang}) failed after {result['seconds']} s:\n{result['error']}\n"
                    f"--- its output (last 4,000 characters):\n{result['output']}", pytrace=False)


def test_skip_markers_have_reasons_and_stay_within_budget(capsys: pytest.CaptureFixture[str]) -> None:
    problems = [p for _, found in _COLLECTED.values() for p in found]
    assert not problems, "\n".join(problems)
    skipped = [b for b in BLOCKS if b.skip is not None]
    with capsys.disabled():
        per_file = {}
        for b in BLOCKS:
            ran, skip = per_file.get(b.path, (0, 0))
            per_file[b.path] = (ran + (b.skip is None), skip + (b.skip is not None))
        print(f"\ndocs blocks: {len(BLOCKS)}, run {len(BLOCKS) - len(skipped)}, skipped {len(skipped)}")
        for path, (ran, skip) in per_file.items():
            print(f"  {path}: run {ran}, skipped {skip}")
        for b in skipped:
            print(f"  skipped {b.id}: {b.skip}")
    assert BLOCKS, "no python/bash block found in README.md and docs/*.md"
    assert len(skipped) < SKIP_BUDGET * len(BLOCKS), (
        f"{len(skipped)} of {len(BLOCKS)} blocks are skipped (budget: under a third): "
        + "; ".join(f"{b.id} ({b.skip})" for b in skipped))


def test_readme_test_command_is_what_ci_runs() -> None:
    """The README's second set-up command (skipped above: it is this test suite) is .ci/run's."""
    readme = (REPO / "README.md").read_text()
    ci = (REPO / ".ci" / "run").read_text().strip().splitlines()[-1].strip()
    commands = [b.text.strip() for b in BLOCKS if b.path == "README.md" and b.lang == "bash"]
    assert ci in commands, f".ci/run runs {ci!r}; the README's commands are {commands}"
    assert "python -m pytest" in ci and ci in readme


def test_inline_commands_match_help() -> None:
    """Every `memory-primitives ...` in the prose and tables (the command table of the README, the
    fixes in docs/upgrade.md) names only options and choices its --help shows (a renamed option's
    old spelling still parses, hidden, so running it would not catch the drift)."""
    problems = [f"{path.relative_to(REPO)}:{line}: {problem}"
                for path in doc_files() for line, command in command_spans(path)
                for problem in usage_problems(command)]
    assert not problems, "\n".join(problems)


def test_backend_names_match_the_registry() -> None:
    """Where the docs list the values of ``MEMORY_BACKEND`` (a settings-table row) or of the output's
    ``memory_backend`` (README), every registered backend is there (primitives/memory/registry.py)."""
    from primitives.memory.registry import BACKEND_CHOICES, BACKENDS

    rows = [(path.relative_to(REPO), line) for path in doc_files()
            for line in path.read_text().split("\n") if line.startswith("| `MEMORY_BACKEND`")]
    assert rows, "no settings row for MEMORY_BACKEND found"
    for where, row in rows:
        missing = [c for c in BACKEND_CHOICES if f"`{c}`" not in row]
        assert not missing, f"{where}: the MEMORY_BACKEND row misses {missing}: {row}"
    readme = " ".join((REPO / "README.md").read_text().split())
    listed = readme[readme.index("`memory_backend` (the backend that actually served the call"):][:300]
    missing = [spec.name for spec in BACKENDS.values() if f'`"{spec.name}"`' not in listed]
    assert not missing, f"README's memory_backend values miss {missing}: {listed}"


def test_the_runner_reports_what_fails(tmp_path: Path) -> None:
    """The harness itself: a raising snippet, a failing command, a wrong `# prints:`, a hanging
    top-level await and a skip marker without a reason are each caught; names and exports carry
    over to later blocks; the next block still runs after a failure."""
    page = tmp_path / "page.md"
    page.write_text("\n".join([
        "```python", "x = 41", "```",
        "```python", "import asyncio", "await asyncio.sleep(0)", "assert x + 1 == 42", "```",
        "```python", "raise ValueError('documented wrongly')", "```",
        "```bash", "false", "```",
        "```bash", "echo hello", "# prints: goodbye", "```",
        "```bash", "export DOCS_TEST_PROBE=carried", "echo one ... two", "# prints: one ... two", "```",
        "```python", "import os", "assert os.environ['DOCS_TEST_PROBE'] == 'carried'", "```",
        "```python", "await asyncio.sleep(60)", "```",
        "```python", "print({'a': 1})  # prints: {'a': 2}", "```",
        "<!-- docs-test: skip -->", "```bash", "true", "```",
        "",
    ]))
    blocks, problems = collect(page, repo=tmp_path)
    assert [p.split(": ", 1)[1] for p in problems] == ["a skip marker without a reason"]
    results = _run_blocks([b for b in blocks if b.skip is None], python_timeout_s=1.0)
    assert [results[b.line]["status"] for b in blocks if b.skip is None] == [
        "passed", "passed", "failed", "failed", "failed", "passed", "passed", "failed", "failed"]
    assert "TimeoutError" in results[blocks[-3].line]["error"]
    assert "{'a': 2}" in results[blocks[-2].line]["error"]
    assert "documented wrongly" in results[9]["error"] and 'File "page.md", line 10' in results[9]["error"]
    assert "exit status 1" in results[12]["error"] and "goodbye" in results[15]["error"]


def test_every_extra_is_documented() -> None:
    """docs/quickstart.md's table of extras names every extra pyproject.toml declares, and no other."""
    import tomllib

    declared = set(tomllib.loads((REPO / "pyproject.toml").read_text())["project"]["optional-dependencies"])
    text = (REPO / "docs" / "quickstart.md").read_text()
    table = text[text.index("| extra | for |"):].split("\n\n", 1)[0]
    listed = {name for row in table.split("\n")[2:] for name in re.findall(r"`([\w-]+)`", row.split("|")[1])}
    assert listed == declared, f"documented, not declared: {listed - declared}; declared, not documented: {declared - listed}"


def test_walks_every_doc_file() -> None:
    """README.md and every docs/*.md are walked, the helpers' pages included."""
    names = {p.relative_to(REPO).as_posix() for p in doc_files()}
    assert "README.md" in names and {p.relative_to(REPO).as_posix() for p in (REPO / "docs").glob("*.md")} <= names
