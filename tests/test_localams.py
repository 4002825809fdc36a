"""LocalAMS: the pinned install set, the install cache and its lock, and a real Agent Memory Server
0.15.2 with token auth (health, refused credentials, a long-term memory created and found,
long-term memory disabled, a failed start)."""

from __future__ import annotations

import json
import re
import threading
import time
import uuid
from pathlib import Path

import httpx
import pytest

from primitives.cli import main
from primitives.errors import BackendUnavailableError, ConfigurationError
from primitives.tooling.localams import AMS_VERSION, CONSTRAINTS, LocalAMS, _locked, default_cache_dir
from primitives.tooling.localredis import free_port

_PIN = re.compile(r"^([A-Za-z0-9][A-Za-z0-9._-]*)==([0-9][0-9A-Za-z.+!-]*)$")


def _fake_installed(cache: Path) -> LocalAMS:
    """A cache dir that looks installed (marker + executable), without installing anything."""
    ams = LocalAMS(redis_url="redis://127.0.0.1:1/0", embeddings_url="http://127.0.0.1:1/v1", cache_dir=cache)
    ams.executable.parent.mkdir(parents=True)
    ams.executable.write_text("#!/bin/sh\n")
    ams.marker.write_text(json.dumps({"fingerprint": LocalAMS.fingerprint()}))
    return ams


def test_constraints_pin_every_package_exactly_with_a_reason_and_no_torch() -> None:
    lines = CONSTRAINTS.read_text().splitlines()
    pins = {}
    for i, line in enumerate(lines):
        if not line or line.startswith("#"):
            continue
        match = _PIN.match(line)
        assert match, f"not an exact pin: {line!r}"
        assert lines[i - 1].startswith(f"# {match[1]}:"), f"no reason line above {line!r}"
        pins[match[1].lower()] = match[2]
    assert pins["agent-memory-client"] == "0.14.0"  # the newest on PyPI; AMS asks for >=0.14.1
    assert pins["mcp"].startswith("1.") and pins["redisvl"].startswith("0.12.")
    assert not any(name.startswith(("torch", "nvidia-", "triton")) for name in pins)
    assert "agent-memory-server" not in pins  # installed with --no-deps, version from the code
    assert len(pins) == 102


def test_cache_dir_follows_the_environment(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    monkeypatch.setenv("MEMORY_PRIMITIVES_CACHE", str(tmp_path))
    assert default_cache_dir() == tmp_path / f"ams-{AMS_VERSION}"
    monkeypatch.delenv("MEMORY_PRIMITIVES_CACHE")
    assert default_cache_dir() == Path.home() / ".cache" / "memory-primitives" / f"ams-{AMS_VERSION}"


def test_a_venv_is_reused_only_with_the_same_fingerprint(tmp_path: Path) -> None:
    ams = _fake_installed(tmp_path / "cache")
    assert ams.installed()
    assert ams.install() == 0.0  # reused: nothing run
    ams.marker.write_text(json.dumps({"fingerprint": "0" * 64}))  # built from other constraints
    assert not ams.installed()
    ams.marker.write_text("not json")
    assert not ams.installed()


def test_a_second_installer_waits_for_the_first(tmp_path: Path) -> None:
    ams = _fake_installed(tmp_path / "cache")
    result: list[float] = []
    with _locked(ams.cache_dir / "install.lock"):  # another process is installing
        worker = threading.Thread(target=lambda: result.append(ams.install()))
        worker.start()
        time.sleep(0.5)
        assert worker.is_alive() and not result  # blocked on the lock
    worker.join(timeout=10)
    assert result == [0.0]  # then finds the finished venv and reuses it


def test_start_and_token_need_an_installed_venv(tmp_path: Path) -> None:
    ams = LocalAMS(redis_url="redis://127.0.0.1:1/0", embeddings_url="http://127.0.0.1:1/v1", cache_dir=tmp_path)
    with pytest.raises(ConfigurationError, match="ams install"):
        ams.start()
    with pytest.raises(ConfigurationError, match="ams install"):
        ams.create_token()


def test_status_of_a_server_that_is_not_running(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["ams", "status", "--port", str(free_port()), "--dir", str(tmp_path)]) == 1
    assert "not running" in capsys.readouterr().out


def _search(url: str, token: str, body: dict) -> httpx.Response:
    return httpx.post(f"{url}/v1/long-term-memory/search", json=body, headers={"Authorization": f"Bearer {token}"},
                      timeout=30)


@pytest.mark.integration
def test_health_answers_without_a_token(ams_server) -> None:
    resp = httpx.get(f"{ams_server.url}/v1/health", timeout=10)
    assert resp.status_code == 200 and isinstance(resp.json()["now"], int)
    assert ams_server.ams.running()


@pytest.mark.integration
@pytest.mark.parametrize(("headers", "detail"), [
    ({}, "Missing authorization header"),
    ({"Authorization": "Bearer not-the-token"}, "Invalid token"),
])
def test_requests_without_the_token_are_refused(ams_server, headers: dict, detail: str) -> None:
    resp = httpx.post(f"{ams_server.url}/v1/long-term-memory/search", json={"text": "anything"}, headers=headers,
                      timeout=30)
    assert resp.status_code == 401
    assert resp.json() == {"detail": detail}


@pytest.mark.integration
def test_a_long_term_memory_is_created_and_found(ams_server) -> None:
    memory_id, namespace = f"m-{uuid.uuid4().hex}", f"ns-{uuid.uuid4().hex[:8]}"
    created = httpx.post(f"{ams_server.url}/v1/long-term-memory/", headers={"Authorization": f"Bearer {ams_server.token}"},
                         json={"memories": [{"id": memory_id, "text": "Caroline paints sunsets over the lake",
                                             "user_id": "caroline", "namespace": namespace, "memory_type": "semantic"}],
                               "deduplicate": False}, timeout=30)
    assert created.status_code == 200 and created.json() == {"status": "ok"}
    found: list[dict] = []
    deadline = time.monotonic() + 30  # the create returns before indexing ends
    while not found and time.monotonic() < deadline:
        resp = _search(ams_server.url, ams_server.token,
                       {"text": "what does Caroline paint?", "namespace": {"eq": namespace}, "limit": 5})
        assert resp.status_code == 200, resp.text
        found = [m for m in resp.json()["memories"] if m["id"] == memory_id]
        time.sleep(0.2)
    assert found, "the memory was not searchable within 30 s"
    assert found[0]["text"] == "Caroline paints sunsets over the lake"
    assert found[0]["namespace"] == namespace and found[0]["user_id"] == "caroline"
    assert 0.0 < found[0]["score"] <= 1.0  # 1 - cosine distance: the 384-dims MiniLM vectors were used


@pytest.mark.integration
def test_long_term_memory_disabled_answers_400(ams_server, ams_server_no_ltm) -> None:
    assert ams_server_no_ltm.running()
    for resp in (
        httpx.post(f"{ams_server_no_ltm.url}/v1/long-term-memory/", headers={"Authorization": f"Bearer {ams_server.token}"},
                   json={"memories": [{"id": "x1", "text": "anything"}], "deduplicate": False}, timeout=30),
        _search(ams_server_no_ltm.url, ams_server.token, {"text": "anything"}),
    ):
        assert resp.status_code == 400
        assert resp.json() == {"detail": "Long-term memory is disabled"}


@pytest.mark.integration
def test_a_start_that_fails_raises_with_the_log_tail(ams_server, tmp_path: Path) -> None:
    no_redis = f"redis://127.0.0.1:{free_port()}/0"  # nothing listens there
    ams = LocalAMS(redis_url=no_redis, embeddings_url=ams_server.embeddings_url, run_dir=tmp_path)
    with pytest.raises(BackendUnavailableError, match=r"exited with .*\|"):
        ams.start(timeout=90)
    assert not ams.running() and ams.pid() is None


@pytest.mark.integration
def test_cli_start_status_stop(ams_server, tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    port = str(free_port())
    common = ["--port", port, "--dir", str(tmp_path), "--redis-url", ams_server.redis_url,
              "--embeddings-url", ams_server.embeddings_url]
    assert main(["ams", "start", *common]) == 0
    try:
        out = capsys.readouterr().out
        token = re.search(r"AGENT_MEMORY_SERVER_TOKEN=(\S+)", out)[1]
        assert f"AGENT_MEMORY_SERVER_URL=http://127.0.0.1:{port}" in out
        assert main(["ams", "status", *common]) == 0
        assert token in capsys.readouterr().out
        ok = _search(f"http://127.0.0.1:{port}", token, {"text": "anything"})
        assert ok.status_code == 200
    finally:
        assert main(["ams", "stop", *common]) == 0
    assert "stopped" in capsys.readouterr().out
    assert main(["ams", "status", *common]) == 1


def test_start_waits_for_an_embeddings_endpoint_that_is_still_loading(tmp_path: Path) -> None:
    """``embeddings serve & ams start``: the model takes seconds to load, so start polls the
    endpoint for ``embeddings_wait`` seconds before giving up."""
    import socket

    ams = _fake_installed(tmp_path / "cache")
    port = free_port()
    ams.embeddings_url = f"http://127.0.0.1:{port}/v1"
    ams.port = free_port()
    ams.run_dir = tmp_path / "run"
    with pytest.raises(BackendUnavailableError, match=r"no embeddings endpoint answers .*waited 0\.3 s"):
        ams.start(timeout=5, embeddings_wait=0.3)
    ams.executable.chmod(0o755)  # a fake AMS that exits at once: start gets past the endpoint wait
    listener = socket.socket()

    def open_later() -> None:
        time.sleep(0.6)
        listener.bind(("127.0.0.1", port))
        listener.listen()

    opener = threading.Thread(target=open_later)
    opener.start()
    try:
        with pytest.raises(BackendUnavailableError, match="exited") as raised:
            ams.start(timeout=5, embeddings_wait=10)
        assert "embeddings endpoint" not in str(raised.value)
    finally:
        opener.join()
        listener.close()
