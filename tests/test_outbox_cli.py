"""``memory-primitives outbox list|replay|dead-letters`` on real outbox files, then end to end on
real Redis 8.2 servers: a writer SIGKILLed while Redis was down is replayed by a new writer
whatever spelling of the URL it is given, and nothing is ever re-sent in a loop."""

from __future__ import annotations

import asyncio
import json
import os
import shlex
import shutil
import signal
import socket
import sqlite3
import subprocess
import sys
import textwrap
import time
from datetime import datetime, timezone
from pathlib import Path

import pytest

from primitives.cli import main
from primitives.cli.outbox import replay_env
from primitives.errors import ConfigurationError
from primitives.memory.record import MemoryRecord, with_timestamps
from primitives.memory.resilient.identity import outbox_dir, outbox_identity, outbox_path, redact_url
from primitives.memory.resilient.outbox import Outbox
from primitives.tooling.localredis import free_port, redis_command

ROOT = Path(__file__).resolve().parents[1]


# -- outbox files ------------------------------------------------------------------------------


def record_dict(i: int, *, text: str | None = None, user: str = "alice") -> dict:
    now = datetime.now(timezone.utc)
    record = MemoryRecord(text=text or f"memory number {i}", id=f"r{i:05d}", user_id=user)
    return with_timestamps(record, now, now).to_dict()


def make_outbox(env: dict[str, str], url: str, prefix: str, *, pending: int = 0, poison: int = 0,
                acked: int = 0, path: Path | None = None) -> Path:
    """An outbox of the store ``url``/``prefix`` at its per-store path (or ``path``) with
    ``pending`` upserts, ``acked`` acknowledged ones and ``poison`` rows moved to the dead
    letters (a payload that is not JSON, as a damaged journal has)."""
    path = path or outbox_path(env, url, prefix)
    box = Outbox(path, identity=outbox_identity(url, prefix), target=redact_url(url), prefix=prefix)
    seqs = box.journal([("upsert", f"r{i:05d}", record_dict(i)) for i in range(pending + acked)])
    box.acknowledge(seqs[pending:])
    box.close()
    if poison:
        insert_poison(path, poison)
        box = Outbox(path)
        box.replayable()  # finds the poison rows: moved to the dead letters
        box.close()
    return path


def insert_poison(path: Path, n: int, *, start: int = 0) -> None:
    db = sqlite3.connect(path)
    with db:
        db.executemany(
            "INSERT INTO outbox (op, key, payload, journaled_at) VALUES ('upsert', ?, ?, ?)",
            [(f"poison{start + i}", '{"text": "cut off' + "x" * 300, time.time()) for i in range(n)],
        )
    db.close()


def make_v1_outbox(path: Path, pending: int) -> Path:
    """An outbox of the first format: the journal table only, no meta (its store unrecorded)."""
    path.parent.mkdir(parents=True, exist_ok=True)
    db = sqlite3.connect(path)
    with db:
        db.execute("CREATE TABLE outbox (seq INTEGER PRIMARY KEY AUTOINCREMENT, op TEXT NOT NULL, key TEXT NOT NULL, "
                   "payload TEXT NOT NULL, journaled_at REAL NOT NULL, acked_at REAL)")
        db.executemany("INSERT INTO outbox (op, key, payload, journaled_at) VALUES ('upsert', ?, ?, ?)",
                       [(f"r{i:05d}", json.dumps(record_dict(i)), time.time()) for i in range(pending)])
    db.close()
    return path


@pytest.fixture
def cache(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> dict[str, str]:
    """An environment whose outbox directory is empty and private to the test (also set in
    ``os.environ``, which the CLI reads)."""
    for name in ("REDIS_URL", "AGENT_MEMORY_SERVER_URL", "AGENT_MEMORY_SERVER_TOKEN", "MEMORY_OUTBOX_PATH",
                 "MEMORY_BACKEND", "MEMORY_REDIS_PREFIX", "MEMORY_AMS_PREFIX"):
        monkeypatch.delenv(name, raising=False)
    env = {"XDG_CACHE_HOME": str(tmp_path / "cache")}
    monkeypatch.setenv("XDG_CACHE_HOME", env["XDG_CACHE_HOME"])
    monkeypatch.setenv("COLUMNS", "1000")  # main() prints errors on a console that wraps at its width
    return env


def run_json(capsys: pytest.CaptureFixture, *argv: str) -> tuple[int, dict]:
    code = main([*argv, "--json"])
    return code, json.loads(capsys.readouterr().out)


def test_list_shows_every_outbox_whatever_its_store(cache, tmp_path, monkeypatch, capsys) -> None:
    a = make_outbox(cache, "redis://:secret@10.0.0.5:6379/0", "memory:", pending=3, acked=2)
    b = make_outbox(cache, "redis://localhost:6390/2", "other:", poison=2)
    c = make_outbox(cache, "http://ams.internal:8000", "ams", pending=1)
    damaged = outbox_dir(cache) / "outbox-0000000000000000.sqlite3"
    damaged.write_bytes(b"this is not a database at all" * 10)
    v1 = make_v1_outbox(outbox_dir(cache) / "outbox-1111111111111111.sqlite3", pending=4)
    elsewhere = make_outbox(cache, "redis://127.0.0.1:7000", "x:", pending=1, path=tmp_path / "mine.sqlite3")
    monkeypatch.setenv("MEMORY_OUTBOX_PATH", str(elsewhere))

    code, out = run_json(capsys, "outbox", "list")
    assert code == 0
    by_path = {o["path"]: o for o in out["outboxes"]}
    assert set(by_path) == {str(p) for p in (a, b, c, damaged, v1, elsewhere)}
    assert by_path[str(a)] | {"oldest_pending_age_s": None} == by_path[str(a)] | {
        "target": "redis://10.0.0.5:6379/0", "prefix": "memory:", "pending": 3, "retained": 2, "dead_letter": 0,
        "stuck": 0, "damage": None, "oldest_pending_age_s": None,
        "replay": f"memory-primitives outbox replay --path {a}",
    }
    assert "secret" not in json.dumps(out)  # never a password
    assert (by_path[str(b)]["pending"], by_path[str(b)]["dead_letter"]) == (0, 2)
    assert by_path[str(c)]["target"] == "http://ams.internal:8000" and by_path[str(c)]["identity"].startswith("ams://")
    assert by_path[str(damaged)]["damage"] and by_path[str(damaged)]["fix"].startswith(f"mv {damaged} ")
    assert by_path[str(damaged)]["pending"] is None and by_path[str(damaged)]["replay"] is None
    assert by_path[str(v1)]["target"] is None and by_path[str(v1)]["pending"] == 4
    assert by_path[str(v1)]["replay"] == f"memory-primitives outbox replay --path {v1} --url URL --prefix PREFIX"
    assert by_path[str(elsewhere)]["target"] == "redis://127.0.0.1:7000" and by_path[str(elsewhere)]["pending"] == 1

    assert main(["outbox", "list"]) == 0
    text = capsys.readouterr().out
    assert f"replay: memory-primitives outbox replay --path {a}" in text
    assert f"dead letters: memory-primitives outbox dead-letters --path {b}" in text
    assert "damaged:" in text and f"fix: mv {damaged}" in text
    assert not os.path.exists(f"{damaged}.damaged")  # list changes nothing


def test_list_with_no_outboxes(cache, capsys) -> None:
    assert run_json(capsys, "outbox", "list") == (0, {"outboxes": []})
    assert main(["outbox", "list"]) == 0
    assert "no outboxes" in capsys.readouterr().out


def test_an_old_outbox_of_the_configured_store_gets_its_url_in_the_command(cache, monkeypatch, capsys) -> None:
    url = "redis://127.0.0.1:6391/0"
    v1 = make_v1_outbox(outbox_path(cache, url, "memory:"), pending=2)
    monkeypatch.setenv("REDIS_URL", url)
    _, out = run_json(capsys, "outbox", "list")
    (entry,) = out["outboxes"]
    assert entry["recorded_target"] is False and entry["target"] == url and entry["prefix"] == "memory:"
    assert entry["replay"] == f"memory-primitives outbox replay --path {v1} --url {url} --prefix memory:"


def test_dead_letters_lists_reason_op_key_and_truncated_payload(cache, capsys) -> None:
    path = make_outbox(cache, "redis://localhost:6390/0", "m:", pending=1, poison=3)
    code, out = run_json(capsys, "outbox", "dead-letters", "--path", str(path), "--limit", "2")
    assert code == 0 and out["dead_letter"] == 3 and len(out["shown"]) == 2
    first = out["shown"][0]
    assert (first["op"], first["key"]) == ("upsert", "poison0")
    assert "not JSON" in first["reason"]
    assert first["payload"].startswith('{"text": "cut off') and len(first["payload"]) == 200
    assert first["payload_chars"] == len('{"text": "cut off') + 300
    assert main(["outbox", "dead-letters", "--path", str(path)]) == 0
    text = capsys.readouterr().out
    assert "3 dead letters" in text and "poison2" in text and "payload:" in text and "(317 chars)" in text
    clean = make_outbox(cache, "redis://localhost:6390/0", "clean:", pending=1)
    assert main(["outbox", "dead-letters", "--path", str(clean)]) == 0
    assert "no dead letters" in capsys.readouterr().out


def test_dead_letters_of_a_missing_or_damaged_file_is_an_error(cache, tmp_path, capsys) -> None:
    assert main(["outbox", "dead-letters", "--path", str(tmp_path / "nothing.sqlite3")]) == 2
    assert "no outbox at" in capsys.readouterr().err
    bad = tmp_path / "bad.sqlite3"
    bad.write_bytes(b"")
    assert main(["outbox", "dead-letters", "--path", str(bad)]) == 2
    err = capsys.readouterr().err
    assert "is empty" in err and "mv " in err
    assert bad.read_bytes() == b""  # left as it was


def test_replay_of_an_old_outbox_needs_url_and_prefix(cache, tmp_path, capsys) -> None:
    v1 = make_v1_outbox(tmp_path / "old.sqlite3", pending=2)
    assert main(["outbox", "replay", "--path", str(v1)]) == 2
    err = capsys.readouterr().err
    assert "does not record its store" in err and "--url URL --prefix PREFIX" in err
    assert Outbox.inspect(v1).meta == {}  # not opened, not upgraded


def test_replay_refuses_a_url_of_another_store(cache, capsys) -> None:
    path = make_outbox(cache, "redis://localhost:6390/0", "m:", pending=1)
    assert main(["outbox", "replay", "--path", str(path), "--url", "redis://localhost:6391/0"]) == 2
    assert "belongs to 'redis://localhost:6390/0#prefix=m%3A'" in capsys.readouterr().err
    assert Outbox.inspect(path).stats.pending == 1


def test_replay_to_an_unreachable_store_keeps_every_entry(cache, monkeypatch, capsys) -> None:
    port = free_port()
    path = make_outbox(cache, f"redis://127.0.0.1:{port}/0", "m:", pending=5)
    monkeypatch.setenv("MEMORY_REDIS_CONNECT_TIMEOUT", "0.5")
    code, out = run_json(capsys, "outbox", "replay", "--path", str(path))
    assert code == 1
    assert (out["replayed"], out["pending"], out["dead_letter"], out["new_dead_letters"]) == (0, 5, 0, 0)
    assert "unreachable" in out["error"]
    assert Outbox.inspect(path).stats.pending == 5


def test_stuck_entries_are_counted_and_named(cache, capsys) -> None:
    from primitives.tooling.doctor import diagnose

    url = "redis://10.1.2.3:6379/0"
    path = outbox_path(cache, url, "memory:")
    box = Outbox(path, identity=outbox_identity(url, "memory:"), target=url, prefix="memory:",
                 clock=lambda: time.time() - 3600)  # journaled an hour ago
    box.journal([("upsert", "r00001", record_dict(1)), ("upsert", "r00002", record_dict(2))])
    box.close()
    _, out = run_json(capsys, "outbox", "list")
    (entry,) = out["outboxes"]
    assert (entry["pending"], entry["stuck"], entry["stuck_after_s"]) == (2, 2, 300.0)
    assert entry["oldest_pending_age_s"] >= 3600
    report = asyncio.run(diagnose({**cache, "MEMORY_BACKEND": "inmemory"}))
    (problem,) = report["problems"]
    assert "2 pending for more than 300 s" in problem["problem"] and problem["fix"] == entry["replay"]


def test_replay_without_an_outbox_named_is_an_error(cache, capsys) -> None:
    assert main(["outbox", "replay"]) == 2
    assert "give --path" in capsys.readouterr().err


def test_replay_env_takes_credentials_only_from_the_same_store(tmp_path) -> None:
    path = make_outbox({"XDG_CACHE_HOME": str(tmp_path)}, "redis://127.0.0.1:6390/0", "memory:", pending=1)
    report = Outbox.inspect(path)
    same = replay_env({"REDIS_URL": "redis://:pw@localhost:6390", "KEEP": "1"}, report)
    assert same["REDIS_URL"] == "redis://:pw@localhost:6390"  # same server and db: its password
    assert (same["MEMORY_BACKEND"], same["MEMORY_OUTBOX_PATH"], same["KEEP"]) == ("redis", str(path), "1")
    assert "MEMORY_REDIS_PREFIX" not in same  # memory: is the registry's default
    other = replay_env({"REDIS_URL": "redis://:pw@localhost:6390/1", "MEMORY_REDIS_PREFIX": "z:"}, report)
    assert other["REDIS_URL"] == "redis://127.0.0.1:6390/0"  # another db: the recorded URL, no password
    assert "MEMORY_REDIS_PREFIX" not in other  # the environment's z: is not this store's

    ams = Outbox.inspect(make_outbox({"XDG_CACHE_HOME": str(tmp_path)}, "http://ams.internal:8000", "team-a", pending=1))
    env = {"AGENT_MEMORY_SERVER_URL": "http://other:8000", "AGENT_MEMORY_SERVER_TOKEN": "t0ken", "REDIS_URL": "redis://x"}
    built = replay_env(env, ams)
    assert built["AGENT_MEMORY_SERVER_URL"] == "http://ams.internal:8000" and built["MEMORY_AMS_PREFIX"] == "team-a"
    assert "AGENT_MEMORY_SERVER_TOKEN" not in built  # another server's token is never sent
    assert built["MEMORY_BACKEND"] == "ams" and built["MEMORY_CHANGE_FEED"] == "0"
    mine = replay_env({**env, "AGENT_MEMORY_SERVER_URL": "http://AMS.internal:8000/"}, ams)
    assert mine["AGENT_MEMORY_SERVER_TOKEN"] == "t0ken"
    with pytest.raises(ConfigurationError, match="belongs to"):
        replay_env({}, ams, url="http://ams.internal:8000", prefix="team-b")


def test_doctor_in_process_lists_outboxes_of_earlier_runs(cache, tmp_path) -> None:
    from primitives.tooling.doctor import diagnose

    a = make_outbox(cache, "redis://10.0.0.5:6379/0", "memory:", pending=3)
    b = make_outbox(cache, "http://ams.internal:8000", "ams", poison=1)
    damaged = outbox_dir(cache) / "outbox-2222222222222222.sqlite3"
    damaged.write_bytes(b"SQLite format 3\x00" + b"\x00" * 50)
    report = asyncio.run(diagnose({**cache, "MEMORY_BACKEND": "inmemory"}))
    assert report["configured"] == "in-memory"
    assert {o["path"] for o in report["outboxes"]} == {str(a), str(b), str(damaged)}
    fixes = {p["fix"] for p in report["problems"]}
    assert f"memory-primitives outbox replay --path {a}" in fixes
    assert f"memory-primitives outbox dead-letters --path {b}   # each entry's reason and payload" in fixes
    assert any(f.startswith(f"mv {damaged} {damaged}.damaged") for f in fixes)
    assert any("3 writes for redis://10.0.0.5:6379/0 (prefix 'memory:') wait in the outbox" in p["problem"]
               for p in report["problems"])
    assert report["healthy"] is True  # the in-process store itself is fine


# -- real Redis ----------------------------------------------------------------------------------


def ipv6_loopback() -> bool:
    try:
        with socket.socket(socket.AF_INET6, socket.SOCK_STREAM) as s:
            s.bind(("::1", 0))
        return True
    except OSError:
        return False


def count_records(port: int, prefix: str) -> tuple[int, int]:
    """(keys under ``{prefix}rec:``, distinct ones), counted with SCAN through redis-py."""
    import redis

    client = redis.Redis(host="127.0.0.1", port=port)
    try:
        keys = list(client.scan_iter(match=f"{prefix}rec:*", count=1000))
    finally:
        client.close()
    return len(keys), len(set(keys))


WRITER = textwrap.dedent("""
    import asyncio, sys
    from primitives.memory import Memory

    async def main(n):
        memory = Memory.from_env()
        for i in range(n):
            await memory.remember(f"degraded write number {i}", id=f"w{i:04d}", user_id=f"u{i % 5}")
        health = await memory.health()
        print("wrote", n, "pending", health.detail.get("outbox_pending"), flush=True)
        await asyncio.sleep(3600)  # killed here with SIGKILL: no aclose, no replay

    asyncio.run(main(int(sys.argv[1])))
""")


def run_writer_and_kill(env: dict[str, str], n: int, log: Path) -> str:
    """A writer process that makes ``n`` writes through ``Memory.from_env()`` and is SIGKILLed
    once it says it wrote them; returns its line. Its warnings go to ``log``."""
    with open(log, "w") as errors:
        process = subprocess.Popen([sys.executable, "-c", WRITER, str(n)], env={**os.environ, **env, "PYTHONPATH": str(ROOT)},
                                   stdout=subprocess.PIPE, stderr=errors, text=True)
        try:
            line = process.stdout.readline()
        finally:
            process.send_signal(signal.SIGKILL)
            process.wait()
    assert line.startswith("wrote"), log.read_text()[-3000:]
    return line


def command_line(argv: list[str], env: dict[str, str]) -> tuple[int, str]:
    """Run a ``memory-primitives ...`` command line in its own process; (exit code, stdout)."""
    assert argv[0] == "memory-primitives"
    clean = {k: v for k, v in os.environ.items() if not k.startswith(("REDIS_", "MEMORY_", "AGENT_MEMORY_"))}
    done = subprocess.run([sys.executable, "-m", "primitives.cli", *argv[1:]], capture_output=True, text=True,
                          env={**clean, **env, "PYTHONPATH": str(ROOT), "COLUMNS": "1000"}, timeout=600)
    assert done.returncode == 0 or not done.stderr.startswith("Traceback"), done.stderr
    return done.returncode, done.stdout


def snapshot(path: Path, to: Path) -> None:
    """A consistent copy of an outbox a killed process left (with its write-ahead log)."""
    src, dst = sqlite3.connect(path), sqlite3.connect(to)
    src.backup(dst)
    src.close()
    dst.close()


def restore(snap: Path, path: Path) -> None:
    for suffix in ("-wal", "-shm"):
        Path(f"{path}{suffix}").unlink(missing_ok=True)
    shutil.copy(snap, path)


async def wait_replayed(memory, timeout: float = 120.0) -> None:
    """Until the memory's outbox has nothing pending (the replay runs in the background)."""
    deadline = time.monotonic() + timeout
    while memory.backend.outbox.pending_count():
        if time.monotonic() > deadline:
            raise AssertionError(f"{memory.backend.outbox.pending_count()} writes still pending")
        await asyncio.sleep(0.05)


@pytest.fixture
def e2e_redis(tmp_path: Path):
    """A Redis 8.2 of this test alone (stopping it disturbs no other test), on 127.0.0.1 and, when
    this machine has IPv6 loopback, on ::1 too."""
    from tests.redis_server import start_or_fail

    args = ["--bind", "127.0.0.1", "::1"] if ipv6_loopback() else []
    server = start_or_fail(tmp_path / "redis", persistent=True, args=args)
    yield server
    server.stop()


@pytest.mark.integration
async def test_a_writer_killed_while_redis_was_down_is_replayed_whatever_the_url_spelling(e2e_redis, cache, tmp_path, capsys) -> None:
    port, prefix, n = e2e_redis.port, "e2e:", 500
    base = {**cache, "MEMORY_REDIS_PREFIX": prefix, "MEMORY_REDIS_CONNECT_TIMEOUT": "0.5"}
    e2e_redis.stop()
    line = run_writer_and_kill({**base, "REDIS_URL": f"redis://127.0.0.1:{port}/0"}, n, tmp_path / "writer.log")
    assert line.split() == ["wrote", str(n), "pending", str(n)]  # degraded: every write journaled
    path = outbox_path(base, f"redis://127.0.0.1:{port}/0", prefix)
    assert Outbox.inspect(path).stats.pending == n
    snap = tmp_path / "snapshot.sqlite3"
    snapshot(path, snap)

    spellings = [f"redis://localhost:{port}", f"redis://127.0.0.1:{port}"]
    if ipv6_loopback():
        spellings.append(f"redis://[::1]:{port}")
    else:
        print("\nno IPv6 loopback on this machine: the [::1] spelling is not tried")
    from primitives.memory import Memory

    e2e_redis.start()
    replayed: dict[str, int] = {}
    for url in spellings:
        redis_command(port, "FLUSHALL")
        restore(snap, path)
        memory = Memory.from_env({**base, "REDIS_URL": url})
        assert memory.backend.outbox.path == path  # the same outbox, however the URL is spelled
        await memory.count()  # the first call that reaches Redis starts the replay
        await wait_replayed(memory)
        assert count_records(port, prefix) == (n, n)  # all there, none twice
        assert await memory.count() == n
        assert (await memory.get("w0499")).text == "degraded write number 499"
        await memory.aclose()
        replayed[url] = count_records(port, prefix)[1]

    # the same through the command line, and through what doctor prints
    redis_command(port, "FLUSHALL")
    restore(snap, path)
    code, stdout = command_line(["memory-primitives", "outbox", "replay", "--path", str(path), "--json"], base)
    out = json.loads(stdout)
    assert code == 0 and (out["replayed"], out["pending"], out["dead_letter"]) == (n, 0, 0)
    assert out["target"] == f"redis://127.0.0.1:{port}/0"
    assert count_records(port, prefix) == (n, n)
    replayed["outbox replay --path"] = count_records(port, prefix)[1]

    from primitives.tooling.doctor import diagnose

    redis_command(port, "FLUSHALL")
    restore(snap, path)
    report = await diagnose({**cache, "MEMORY_BACKEND": "inmemory"})
    (entry,) = report["outboxes"]
    assert entry["pending"] == n and entry["target"] == f"redis://127.0.0.1:{port}/0"
    (problem,) = [p for p in report["problems"] if str(path) in p["problem"]]
    assert problem["fix"] == entry["replay"] == f"memory-primitives outbox replay --path {path}"
    assert command_line(shlex.split(problem["fix"]), cache)[0] == 0  # the printed command, run as printed
    assert count_records(port, prefix) == (n, n)
    replayed["doctor's command"] = count_records(port, prefix)[1]
    after = await diagnose({**cache, "MEMORY_BACKEND": "inmemory"})
    assert after["outboxes"][0]["pending"] == 0 and after["problems"] == []
    print(f"\nwrites replayed (of {n}): " + ", ".join(f"{k}: {v}" for k, v in replayed.items()))


def script_calls(port: int) -> int:
    """Server-side script calls so far (``INFO commandstats``: EVALSHA, EVAL, FCALL and their
    read-only variants)."""
    import redis

    client = redis.Redis(host="127.0.0.1", port=port)
    try:
        stats = client.info("commandstats")
    finally:
        client.close()
    return sum(v["calls"] for k, v in stats.items() if k.split("|")[0].removeprefix("cmdstat_") in
               ("evalsha", "eval", "evalsha_ro", "eval_ro", "fcall", "fcall_ro"))


@pytest.mark.integration
async def test_poison_rows_are_set_aside_once_and_nothing_is_resent_in_a_loop(e2e_redis, cache, capsys) -> None:
    """2,000 journaled entries, among them a payload that is not JSON and a delete whose date is
    not a date; the store answers again and 20 searches go through the memory: one replay, each
    good entry sent once (counted at the primary and as server-side script calls), the two bad
    ones in the dead letters, which doctor and ``outbox dead-letters`` show."""
    from primitives.memory import Memory
    from primitives.tooling.doctor import diagnose

    port, prefix, n = e2e_redis.port, "loop:", 2_000
    good = n - 2
    url = f"redis://127.0.0.1:{port}/0"
    env = {**cache, "REDIS_URL": url, "MEMORY_REDIS_PREFIX": prefix, "MEMORY_REDIS_CONNECT_TIMEOUT": "0.5"}
    path = outbox_path(env, url, prefix)
    box = Outbox(path, identity=outbox_identity(url, prefix), target=url, prefix=prefix)
    box.journal([("upsert", f"r{i:05d}", record_dict(i)) for i in range(n // 2)])
    box.close()
    insert_poison(path, 1)  # a payload that is not JSON
    db = sqlite3.connect(path)
    with db:  # a delete whose date is not a date
        db.execute("INSERT INTO outbox (op, key, payload, journaled_at) VALUES ('delete', 'r00001', ?, ?)",
                   (json.dumps({"namespace": "default", "deleted_at": "yesterday-ish"}), time.time()))
    db.close()
    box = Outbox(path)
    box.journal([("upsert", f"r{i:05d}", record_dict(i)) for i in range(n // 2, good)])
    assert box.pending_count() == n
    box.close()

    memory = Memory.from_env(env)
    backend = memory.backend
    replays, sent = [], []
    real_replay, real_put = backend.replay, backend.primary.put_if_newer

    async def counted_replay() -> int:
        replays.append(1)
        return await real_replay()

    async def counted_put(records):
        sent.extend(r.id for r in records)
        return await real_put(records)

    backend.replay = counted_replay
    backend.primary.put_if_newer = counted_put
    calls_before = script_calls(port)
    for i in range(20):  # the first one reaches Redis and starts the replay in the background
        await memory.search(f"memory number {i}", user_id="alice")
    await wait_replayed(memory)
    for i in range(20):  # and 20 more once it is done
        await memory.search(f"memory number {i}", user_id="alice")
    calls = script_calls(port) - calls_before
    stats = backend.outbox.stats()
    await memory.aclose()
    assert len(replays) == 1
    assert len(sent) == len(set(sent)) == good
    assert calls == good  # one EVALSHA per replayed record, none from the searches
    assert (stats.pending, stats.dead_letter) == (0, 2)
    assert count_records(port, prefix) == (good, good)

    letters = Outbox.inspect(path, dead_letter_limit=10).dead_letters
    assert {(d.op, d.key) for d in letters} == {("upsert", "poison0"), ("delete", "r00001")}
    report = await diagnose(env)
    (entry,) = [o for o in report["outboxes"] if o["path"] == str(path)]
    assert (entry["pending"], entry["dead_letter"]) == (0, 2)
    assert any(p["fix"].startswith(f"memory-primitives outbox dead-letters --path {path}") for p in report["problems"])
    code, out = run_json(capsys, "outbox", "dead-letters", "--path", str(path))
    assert code == 0 and {d["key"] for d in out["shown"]} == {"poison0", "r00001"}
    assert any("yesterday-ish" in d["reason"] for d in out["shown"])
    print(f"\nreplays: {len(replays)}; records sent: {len(sent)} ({len(set(sent))} distinct); "
          f"server-side script calls from recovery through 40 searches: {calls} (one replay of {good} records)")


@pytest.mark.integration
def test_replay_uses_the_environments_password_for_the_same_store_and_never_dead_letters_a_refusal(tmp_path, cache, monkeypatch, capsys) -> None:
    """The outbox records its store without the password; ``REDIS_URL`` names the same server
    (another spelling) with the password. A wrong password replays nothing and sets nothing
    aside (a refusal is not a poison row); the right one replays everything."""
    from tests.redis_server import start_or_fail

    server = start_or_fail(tmp_path / "pw", password="right-horse")
    try:
        url = f"redis://:right-horse@127.0.0.1:{server.port}/0"
        path = outbox_path(cache, url, "pw:")
        box = Outbox(path, identity=outbox_identity(url, "pw:"), target=redact_url(url), prefix="pw:")
        box.journal([("upsert", f"r{i:05d}", record_dict(i)) for i in range(50)])
        box.close()
        assert "right-horse" not in json.dumps(Outbox.inspect(path).meta)
        monkeypatch.setenv("MEMORY_REDIS_PREFIX", "pw:")
        monkeypatch.setenv("REDIS_URL", f"redis://:wrong@localhost:{server.port}")
        assert main(["outbox", "replay", "--path", str(path)]) == 2
        assert "refused" in capsys.readouterr().err
        stats = Outbox.inspect(path).stats
        assert (stats.pending, stats.dead_letter) == (50, 0)
        monkeypatch.setenv("REDIS_URL", f"redis://:right-horse@localhost:{server.port}")
        code, out = run_json(capsys, "outbox", "replay", "--path", str(path))
        assert code == 0 and (out["replayed"], out["pending"], out["dead_letter"]) == (50, 0, 0)
        assert "right-horse" not in out["target"]
        import redis

        client = redis.Redis(host="127.0.0.1", port=server.port, password="right-horse")
        assert len(list(client.scan_iter(match="pw:rec:*"))) == 50
        client.close()
    finally:
        server.stop()
