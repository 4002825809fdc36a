"""``memory-primitives redis start|status|stop``, ``eval locomo --backend redis``,
``index migrate`` and ``bench redis|kv|feed`` against real servers."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import pytest

from primitives.cli import main
from primitives.tooling.localredis import free_port

pytestmark = pytest.mark.integration


def test_redis_start_status_stop(tmp_path: Path, capsys: pytest.CaptureFixture) -> None:
    port = str(free_port())
    args = ["--port", port, "--dir", str(tmp_path / "data")]
    try:
        assert main(["redis", "start", *args]) == 0
        out = capsys.readouterr().out
        assert f"export REDIS_URL=redis://127.0.0.1:{port}/0" in out
        assert main(["redis", "status", *args]) == 0
        assert "running" in capsys.readouterr().out
        assert list((tmp_path / "data").glob(f"appendonlydir-{port}"))  # persistence in --dir
        assert main(["redis", "start", *args]) == 2  # the port is taken: a typed error, exit 2
        assert "already answers" in capsys.readouterr().err
    finally:
        assert main(["redis", "stop", *args]) == 0
    assert main(["redis", "status", *args]) == 1


def test_eval_locomo_on_redis(locomo_dir: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch,
                              capsys: pytest.CaptureFixture) -> None:
    # Its own server: once, on the session's shared server after the other Redis tests, this
    # conversation's Redis recall@10 came out 0.714 instead of its usual 0.749 (not reproduced
    # in 25 runs on a fresh server; see docs/redis-backend.md on RediSearch score glitches).
    from tests.redis_server import start_or_fail

    server = start_or_fail(tmp_path / "redis")
    try:
        shutil.copy(locomo_dir / "26.json", tmp_path / "26.json")
        monkeypatch.setenv("REDIS_URL", server.url)
        assert main(["eval", "locomo", "--data", str(tmp_path), "--backend", "redis", "--json"]) == 0
        report = json.loads(capsys.readouterr().out)
    finally:
        server.stop()
    assert report["backend"] == "redis" and report["degraded_calls"] == 0
    assert report["turns"] == 419
    assert report["recall_at_k"]["10"] > 0.547  # above plain BM25
    assert main(["eval", "locomo", "--data", str(tmp_path), "--backend", "inmemory", "--json"]) == 0
    in_process = json.loads(capsys.readouterr().out)
    assert abs(report["recall_at_k"]["10"] - in_process["recall_at_k"]["10"]) <= 0.05


async def test_index_migrate_command(redis_server, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    import asyncio

    from primitives.memory import MemoryRecord
    from primitives.memory.redis_backend import RedisBackend

    backend = RedisBackend(redis_server.url, prefix="mig:")
    await backend.add([MemoryRecord(text="survives the migration", id="s")])
    await backend._client.execute_command("FT.DROPINDEX", "mig:idx")
    await backend._client.execute_command("FT.CREATE", "mig:idx", "ON", "HASH", "PREFIX", "1", "mig:rec:", "SCHEMA", "text", "TEXT")
    monkeypatch.setenv("REDIS_URL", redis_server.url)
    monkeypatch.setenv("MEMORY_OUTBOX_PATH", str(tmp_path / "o.sqlite3"))
    await asyncio.to_thread(main, ["index", "migrate", "--prefix", "mig:"])
    fresh = RedisBackend(redis_server.url, prefix="mig:")
    for _ in range(600):  # background re-indexing; slow on a loaded machine
        if (await fresh.search("survives")).hits:
            break
        await asyncio.sleep(0.05)
    assert [h.record.id for h in (await fresh.search("survives")).hits] == ["s"]
    await backend.aclose()
    await fresh.aclose()


def test_bench_redis_reports_both_sides(redis_server, capsys: pytest.CaptureFixture) -> None:
    assert main(["bench", "redis", "--redis-url", redis_server.url, "--memories", "1500", "--queries", "40", "--json"]) == 0
    report = json.loads(capsys.readouterr().out)
    assert report["memories"] == 1500 and report["hit_rate"] == 0.5
    for key in ("ingest_per_s", "ingest_per_s_backend", "ingest_per_s_redis_py", "recall_step_ms", "direct_ft_search_ms"):
        assert report[key] > 0, key
    assert report["recall_step_ratio"] == pytest.approx(report["recall_step_ms"] / report["direct_ft_search_ms"], rel=0.01)
    assert main(["bench", "redis", "--redis-url", redis_server.url, "--storage", "--memories", "500", "--queries", "20",
                 "--json"]) == 0
    storage = json.loads(capsys.readouterr().out)
    assert set(storage) >= {"hash", "json"} and storage["hash"]["writes_per_s"] > 0
    assert main(["bench", "redis", "--redis-url", redis_server.url, "--storage", "--memories", "300", "--queries", "10"]) == 0
    table = capsys.readouterr().out  # without --json: a table for people, not JSON
    assert "JSON documents" in table and "server bytes per record" in table and not table.lstrip().startswith("{")


def test_bench_redis_leaves_no_keys_behind(redis_server) -> None:
    import redis

    client = redis.Redis.from_url(redis_server.url, decode_responses=True)
    before = {k for k in client.scan_iter(match="bench-*", count=1000)} | {k for k in client.scan_iter(match="store-*", count=1000)}
    assert before == set()
    client.close()


def test_bench_kv_reports_ratios_and_one_round_trip(plain_redis_server, capsys: pytest.CaptureFixture) -> None:
    assert main(["bench", "kv", "--redis-url", plain_redis_server.url, "--ops", "50", "--json"]) == 0
    report = json.loads(capsys.readouterr().out)
    for op in ("get", "set", "mget_100"):
        assert report[op]["ratio_p50"] > 0 and report[op]["primitive_us"]["p50"] > 0
    assert report["mget_100"]["round_trips"] == 1
    assert main(["bench", "kv", "--redis-url", plain_redis_server.url, "--ops", "0"]) == 2


def test_bench_feed_reports_latency_and_an_exact_catch_up(plain_redis_server, capsys: pytest.CaptureFixture) -> None:
    args = ["bench", "feed", "--redis-url", plain_redis_server.url, "--rate", "200", "--seconds", "0.5", "--catchup", "300"]
    assert main([*args, "--json"]) == 0
    report = json.loads(capsys.readouterr().out)
    assert report["live"]["received"] == report["live"]["events"] > 0
    assert report["live"]["latency_ms"]["p99"] >= report["live"]["latency_ms"]["p50"] > 0
    assert (report["catchup"]["received"], report["catchup"]["missing"], report["catchup"]["duplicated"]) == (300, 0, 0)
