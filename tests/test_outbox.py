"""The durable outbox on real SQLite files: journal order, hostile strings, damaged and foreign
files (typed errors naming the file and a fix that works), poison rows to the dead-letter table,
statistics with a fake clock, read-only inspection, concurrent writers, and a writer killed with
SIGKILL mid-journal. No server, no timed assertions."""

from __future__ import annotations

import hashlib
import json
import os
import re
import signal
import sqlite3
import subprocess
import sys
import threading
from pathlib import Path

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from primitives.errors import InvalidInputError, OutboxCorruptError, OutboxError
from primitives.memory.resilient.outbox import SCHEMA_VERSION, Outbox, find_outboxes
from tests.conftest import FakeClock

REPO = Path(__file__).resolve().parents[1]
HOSTILE = [
    "",
    "a\x00b",
    "\x00",
    "ns:entity:id",
    "a|b/c\\d",
    "it's \"quoted\" `x`",
    "'; DROP TABLE outbox; --",
    "Zoë 🧠 日本語 \u202e",
    "line\nbreak\r\ttab",
    "%s %(x)s {0} ${HOME}",
    "\ufeffbom",
]


def fingerprint(path: Path) -> tuple[bytes, list[str]]:
    """The file's bytes and its directory listing: what an inspection must not change."""
    return hashlib.sha256(path.read_bytes()).digest(), sorted(os.listdir(path.parent))


def run_fix(fix: str) -> None:
    """Run the shell command at the start of an error's ``fix`` (before its explanation)."""
    command = re.match(r"(.*?) \(it is kept", fix)
    assert command, fix
    subprocess.run(["sh", "-c", command.group(1)], check=True)


def raw(path: Path) -> sqlite3.Connection:
    return sqlite3.connect(path, isolation_level=None)


def make_outbox_with(path: Path, n: int) -> None:
    outbox = Outbox(path)
    outbox.journal([("upsert", f"k{i}", {"text": "x" * 200, "i": i}) for i in range(n)])
    outbox.close()


# -- journal ------------------------------------------------------------------------------------


def test_journal_acknowledge_retain_purge_and_reopen(tmp_path: Path) -> None:
    clock = FakeClock(1000)
    path = tmp_path / "o.sqlite3"
    outbox = Outbox(path, retain_seconds=5, clock=clock)
    a, b, c = outbox.journal([("upsert", "a", {"x": 1}), ("delete", "b", {"deleted_at": "t"}), ("append", "s", {"messages": []})])
    assert (a, b, c) == (a, a + 1, a + 2)
    assert outbox.journal([]) == []
    outbox.acknowledge([a])
    assert [(e.key, e.acked) for e in outbox.replayable()] == [("a", True), ("b", False), ("s", False)]
    clock.advance(6)
    assert [e.key for e in outbox.replayable()] == ["b", "s"]
    outbox.discard([c])
    outbox.acknowledge([b])  # also purges a
    assert outbox.pending_count() == 0
    assert outbox.journal([("upsert", "d", {})]) == [c + 1]  # never reused
    outbox.close()
    outbox.close()  # idempotent
    with pytest.raises(OutboxError, match="closed"):
        outbox.pending_count()
    reopened = Outbox(path, retain_seconds=5, clock=clock)
    assert [e.key for e in reopened.replayable()] == ["b", "d"]
    reopened.close()


def test_new_outbox_has_meta_and_no_leftovers(tmp_path: Path) -> None:
    path = tmp_path / "deep" / "er" / "o.sqlite3"
    outbox = Outbox(path, identity="redis://localhost:6379/0#prefix=p", target="redis://localhost:6379/0", prefix="p")
    meta = outbox.meta
    assert meta["schema_version"] == str(SCHEMA_VERSION)
    assert (meta["identity"], meta["target"], meta["prefix"]) == ("redis://localhost:6379/0#prefix=p", "redis://localhost:6379/0", "p")
    assert meta["created_at"].endswith("+00:00")
    outbox.close()
    assert sorted(os.listdir(path.parent)) == ["o.sqlite3"]  # no temporary file, the WAL checkpointed


@pytest.mark.parametrize("key", HOSTILE)
def test_hostile_keys_and_payloads_round_trip(tmp_path: Path, key: str) -> None:
    payload = {key: key, "list": HOSTILE, "nested": {"k": [key, 1.5, None, True]}}
    outbox = Outbox(tmp_path / "o.sqlite3")
    [seq] = outbox.journal([("upsert", key, payload)])
    outbox.close()
    [entry] = Outbox(tmp_path / "o.sqlite3").replayable()
    assert (entry.seq, entry.op, entry.key, entry.payload) == (seq, "upsert", key, payload)


@settings(max_examples=60, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(entries=st.lists(st.tuples(st.sampled_from(["upsert", "delete", "append"]), st.text(), st.dictionaries(st.text(), st.text() | st.integers() | st.none())), max_size=8))
def test_any_unicode_round_trips_in_order(tmp_path_factory: pytest.TempPathFactory, entries: list) -> None:
    outbox = Outbox(tmp_path_factory.mktemp("prop") / "o.sqlite3")
    seqs = outbox.journal(entries)
    got = outbox.replayable()
    assert [(e.seq, e.op, e.key, e.payload) for e in got] == [(s, *entry) for s, entry in zip(seqs, entries)]
    assert outbox.stats().dead_letter == 0
    outbox.close()


def test_unstorable_entries_are_refused_before_anything_is_journaled(tmp_path: Path) -> None:
    outbox = Outbox(tmp_path / "o.sqlite3")
    with pytest.raises(InvalidInputError, match="surrogate"):
        outbox.journal([("upsert", "ok", {}), ("upsert", "bad\ud800", {})])
    with pytest.raises(InvalidInputError, match="surrogate"):
        outbox.journal([("upsert", "ok", {"t": "\udfff"})])
    with pytest.raises(InvalidInputError, match="op"):
        outbox.journal([("merge", "ok", {})])
    with pytest.raises(TypeError):
        outbox.journal([("upsert", 7, {})])  # type: ignore[list-item]
    assert outbox.pending_count() == 0
    outbox.close()


def test_concurrent_journaling_from_two_outboxes_on_one_file(tmp_path: Path) -> None:
    path = tmp_path / "o.sqlite3"
    writers = [Outbox(path), Outbox(path)]
    returned: list[list[list[int]]] = [[], []]

    def write(n: int) -> None:
        for i in range(150):
            returned[n].append(writers[n].journal([("upsert", f"w{n}-{i}-{j}", {"n": n, "i": i, "j": j}) for j in range(4)]))

    threads = [threading.Thread(target=write, args=(n,)) for n in (0, 1)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    entries = writers[0].replayable()
    assert len(entries) == 2 * 150 * 4
    by_seq = {e.seq: e for e in entries}
    for n in (0, 1):
        for i, seqs in enumerate(returned[n]):
            assert seqs == list(range(seqs[0], seqs[0] + 4))  # one batch, consecutive
            assert [by_seq[s].key for s in seqs] == [f"w{n}-{i}-{j}" for j in range(4)]
        flat = [s for batch in returned[n] for s in batch]
        assert flat == sorted(flat)  # one writer's batches in the order it made them
    for w in writers:
        w.close()


def test_concurrent_creation_makes_one_complete_outbox(tmp_path: Path) -> None:
    path = tmp_path / "new" / "o.sqlite3"
    made: list[Outbox] = []
    errors: list[BaseException] = []
    barrier = threading.Barrier(8)

    def create() -> None:
        barrier.wait()
        try:
            made.append(Outbox(path))
        except BaseException as exc:  # noqa: BLE001 - collected and asserted below
            errors.append(exc)

    threads = [threading.Thread(target=create) for _ in range(8)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert errors == [] and len(made) == 8
    made[0].journal([("upsert", "a", {})])
    assert all(o.pending_count() == 1 for o in made)
    for o in made:
        o.close()
    assert sorted(os.listdir(path.parent)) == ["o.sqlite3"]


_KILLED_WRITER = """
import sys
from primitives.memory.resilient.outbox import Outbox
outbox = Outbox(sys.argv[1])
i = 0
while True:
    seqs = outbox.journal([("upsert", f"k{i}-{j}", {"i": i, "j": j, "text": "x" * 500}) for j in range(3)])
    print(*seqs, flush=True)
    i += 1
"""


def test_writer_killed_mid_journal_loses_no_committed_entry(tmp_path: Path) -> None:
    path = tmp_path / "o.sqlite3"
    proc = subprocess.Popen(
        [sys.executable, "-c", _KILLED_WRITER, str(path)],
        stdout=subprocess.PIPE,
        text=True,
        cwd=REPO,
        env={**os.environ, "PYTHONPATH": str(REPO)},
    )
    committed: list[int] = []
    assert proc.stdout is not None
    for line in proc.stdout:
        committed += [int(s) for s in line.split()]
        if len(committed) >= 3 * 400:
            break
    proc.send_signal(signal.SIGKILL)  # while it keeps journaling
    proc.wait()
    assert proc.returncode == -signal.SIGKILL
    outbox = Outbox(path)  # opens (quick_check passes) after the crash
    seqs = [e.seq for e in outbox.replayable()]
    assert set(committed) <= set(seqs)
    assert seqs == sorted(seqs) and len(seqs) % 3 == 0  # whole batches only
    assert outbox.stats().dead_letter == 0
    outbox.close()


# -- runtime failures ---------------------------------------------------------------------------


def test_disk_full_is_an_outbox_error_and_journals_nothing(tmp_path: Path) -> None:
    outbox = Outbox(tmp_path / "o.sqlite3")
    outbox.journal([("upsert", "before", {})])
    pages = outbox._db.execute("PRAGMA page_count").fetchone()[0]
    outbox._db.execute(f"PRAGMA max_page_count = {pages}")  # what a full disk looks like to SQLite
    with pytest.raises(OutboxError) as caught:
        outbox.journal([("upsert", f"k{i}", {"text": "x" * 4000}) for i in range(50)])
    assert str(tmp_path / "o.sqlite3") in str(caught.value) and "free space" in caught.value.fix
    assert [e.key for e in outbox.replayable()] == ["before"]
    outbox._db.execute("PRAGMA max_page_count = 1073741823")
    outbox.journal([("upsert", "after", {})])  # usable again
    assert [e.key for e in outbox.replayable()] == ["before", "after"]
    outbox.close()


def test_lock_held_by_another_writer_is_an_outbox_error(tmp_path: Path) -> None:
    path = tmp_path / "o.sqlite3"
    outbox = Outbox(path, timeout=0.05)
    other = raw(path)
    other.execute("BEGIN IMMEDIATE")
    with pytest.raises(OutboxError) as caught:
        outbox.journal([("upsert", "a", {})])
    assert "fuser" in caught.value.fix and caught.value.path == str(path)
    other.execute("ROLLBACK")
    assert outbox.journal([("upsert", "a", {})])
    other.close()
    outbox.close()


# -- damaged, foreign and misplaced files -------------------------------------------------------


def _zero_length(path: Path) -> None:
    path.write_bytes(b"")


def _junk(path: Path) -> None:
    path.write_bytes(bytes(range(256)) * 40)


def _short_header(path: Path) -> None:
    make_outbox_with(path, 1)
    path.write_bytes(path.read_bytes()[:50])


def _truncated_to_one_page(path: Path) -> None:
    make_outbox_with(path, 300)
    path.write_bytes(path.read_bytes()[:4096])


def _truncated_to_half(path: Path) -> None:
    make_outbox_with(path, 300)
    data = path.read_bytes()
    path.write_bytes(data[: len(data) // 2])


def _other_application(path: Path) -> None:
    db = raw(path)
    db.execute("CREATE TABLE users (id INTEGER PRIMARY KEY, name TEXT)")
    db.execute("INSERT INTO users (name) VALUES ('alice')")
    db.close()


def _outbox_without_columns(path: Path) -> None:
    db = raw(path)
    db.execute("CREATE TABLE outbox (seq INTEGER PRIMARY KEY, body TEXT)")
    db.close()


def _newer_schema(path: Path) -> None:
    make_outbox_with(path, 1)
    db = raw(path)
    db.execute("UPDATE meta SET value = ? WHERE name = 'schema_version'", (str(SCHEMA_VERSION + 1),))
    db.close()


DAMAGE = {
    "zero-length": (_zero_length, "empty"),
    "junk": (_junk, "not a SQLite database"),
    "short header": (_short_header, "truncated"),
    "truncated to one page": (_truncated_to_one_page, "damaged|cannot be read"),
    "truncated to half": (_truncated_to_half, "damaged|cannot be read"),
    "another application's database": (_other_application, "another application"),
    "outbox table of another shape": (_outbox_without_columns, "without the columns"),
    "newer schema": (_newer_schema, "schema version"),
}


@pytest.mark.parametrize("name", DAMAGE)
def test_damaged_file_raises_a_typed_error_and_is_left_as_it_was(tmp_path: Path, name: str) -> None:
    damage, reason = DAMAGE[name]
    path = tmp_path / "outbox-0123456789abcdef.sqlite3"
    damage(path)
    before = fingerprint(path)
    with pytest.raises(OutboxCorruptError) as caught:
        Outbox(path)
    error = caught.value
    assert isinstance(error, OutboxError) and isinstance(error, OSError)
    assert error.path == str(path) and str(path) in str(error) and re.search(reason, error.reason)
    assert "mv " in error.fix and "Fix: " in str(error)
    assert not isinstance(error.__cause__, sqlite3.Error) or error.__cause__ is not error
    assert fingerprint(path) == before  # not overwritten, not switched to WAL, no new files

    report = Outbox.inspect(path)
    assert report.exists and report.stats is None and re.search(reason, report.damage or "")
    assert report.fix == error.fix
    assert fingerprint(path) == before
    [listed] = find_outboxes(tmp_path)
    assert listed.damage == report.damage


@pytest.mark.parametrize("name", ["zero-length", "junk", "truncated to half"])
def test_the_fix_of_a_damaged_file_works_and_keeps_it(tmp_path: Path, name: str) -> None:
    path = tmp_path / "o utbox's.sqlite3"  # the fix quotes the path for the shell
    DAMAGE[name][0](path)
    before = path.read_bytes()
    with pytest.raises(OutboxCorruptError) as caught:
        Outbox(path)
    run_fix(caught.value.fix)
    assert (tmp_path / "o utbox's.sqlite3.damaged").read_bytes() == before
    outbox = Outbox(path)
    assert outbox.pending_count() == 0
    outbox.close()


def test_directory_in_place_of_the_file(tmp_path: Path) -> None:
    path = tmp_path / "o.sqlite3"
    path.mkdir()
    with pytest.raises(OutboxCorruptError, match="is a directory") as caught:
        Outbox(path)
    assert caught.value.path == str(path) and "MEMORY_OUTBOX_PATH" in caught.value.fix
    assert "is a directory" in (Outbox.inspect(path).damage or "")
    assert path.is_dir() and list(path.iterdir()) == []


def test_file_in_place_of_the_directory(tmp_path: Path) -> None:
    blocker = tmp_path / "cache"
    blocker.write_text("not a directory")
    for path in (blocker / "o.sqlite3", blocker / "memory-primitives" / "o.sqlite3"):
        with pytest.raises(OutboxError) as caught:
            Outbox(path)
        assert not isinstance(caught.value, (FileExistsError, FileNotFoundError, NotADirectoryError))
        assert caught.value.path == str(path) and str(path) in str(caught.value)
        assert f"mv {blocker}" in caught.value.fix
    assert blocker.read_text() == "not a directory"
    assert find_outboxes(tmp_path / "missing") == []
    with pytest.raises(OutboxError, match="cannot list"):
        find_outboxes(blocker)


def test_write_ahead_log_without_its_database_is_refused(tmp_path: Path) -> None:
    path = tmp_path / "o.sqlite3"
    Path(f"{path}-wal").write_bytes(b"frames that may hold writes")
    with pytest.raises(OutboxCorruptError, match="write-ahead log") as caught:
        Outbox(path)
    assert not path.exists() and f"mv {path}-wal" in caught.value.fix
    assert sorted(os.listdir(tmp_path)) == ["o.sqlite3-wal"]


def test_an_outbox_of_another_store_is_refused(tmp_path: Path) -> None:
    path = tmp_path / "o.sqlite3"
    Outbox(path, identity="redis://localhost:6379/0#prefix=a", target="redis://localhost:6379/0").close()
    with pytest.raises(OutboxError, match="belongs to") as caught:
        Outbox(path, identity="redis://localhost:6379/0#prefix=b")
    assert "outbox replay --path" in caught.value.fix
    Outbox(path, identity="redis://localhost:6379/0#prefix=a").close()  # its own store
    Outbox(path).close()  # no identity given: no check


def test_version_1_outbox_is_upgraded_in_place_and_keeps_its_entries(tmp_path: Path) -> None:
    path = tmp_path / "o.sqlite3"
    db = raw(path)
    db.execute("PRAGMA journal_mode=WAL")
    db.execute(
        "CREATE TABLE outbox (seq INTEGER PRIMARY KEY AUTOINCREMENT, op TEXT NOT NULL CHECK (op IN "
        "('upsert', 'delete', 'append')), key TEXT NOT NULL, payload TEXT NOT NULL, journaled_at REAL NOT NULL, acked_at REAL)"
    )
    db.execute("INSERT INTO outbox (op, key, payload, journaled_at) VALUES ('upsert', 'old', '{\"a\": 1}', 5)")
    db.close()
    report = Outbox.inspect(path)
    assert report.damage is None and report.meta == {} and report.stats and report.stats.pending == 1
    outbox = Outbox(path, identity="id", target="redis://h:1/0", prefix="p")
    assert [e.key for e in outbox.replayable()] == ["old"]
    assert outbox.meta["schema_version"] == str(SCHEMA_VERSION) and outbox.meta["identity"] == "id"
    assert outbox.stats().dead_letter == 0
    outbox.close()


# -- poison rows ---------------------------------------------------------------------------------


def test_poison_rows_go_to_the_dead_letter_table_and_the_rest_replays(tmp_path: Path) -> None:
    clock = FakeClock(1000)
    path = tmp_path / "o.sqlite3"
    outbox = Outbox(path, clock=clock)
    outbox.journal([("upsert", "good-1", {"n": 1})])
    db = raw(path)
    insert = "INSERT INTO outbox (op, key, payload, journaled_at) VALUES (?, ?, ?, 990)"
    db.execute(insert, ("upsert", "not-json", "{'single': quotes}"))
    db.execute(insert, ("delete", "array", "[1, 2]"))
    db.execute(insert, ("append", "string", '"just text"'))
    db.execute(insert, ("upsert", "deep", "[" * 100_000 + "]" * 100_000))
    db.execute(insert, ("upsert", "bad-utf8", b'{"t": "\xff"}'))
    db.execute(insert, ("upsert", b"key-\xfe", "{}"))
    db.execute("PRAGMA ignore_check_constraints = ON")
    db.execute(insert, ("merge", "unknown-op", "{}"))
    db.close()
    outbox.journal([("delete", "good-2", {"deleted_at": "2024-01-01T00:00:00+00:00"})])
    assert outbox.pending_count() == 9

    entries = outbox.replayable()
    assert [e.key for e in entries] == ["good-1", "good-2"]
    stats = outbox.stats()
    assert (stats.pending, stats.dead_letter) == (2, 7)
    letters = {d.key: d for d in outbox.dead_letters()}
    assert set(letters) == {"not-json", "array", "string", "deep", "bad-utf8", "key-\\xfe", "unknown-op"}
    assert "not JSON" in letters["not-json"].reason and letters["not-json"].payload == "{'single': quotes}"
    assert "list, not an object" in letters["array"].reason
    assert "str, not an object" in letters["string"].reason
    assert "UTF-8" in letters["bad-utf8"].reason and letters["bad-utf8"].payload == '{"t": "\\xff"}'
    assert "UTF-8" in letters["key-\\xfe"].reason
    assert "unknown op 'merge'" in letters["unknown-op"].reason and letters["unknown-op"].op == "merge"
    assert all(d.journaled_at == 990 and d.failed_at == 1000 for d in letters.values())

    assert [e.key for e in outbox.replayable()] == ["good-1", "good-2"]  # nothing moves twice
    assert outbox.stats().dead_letter == 7
    assert len(outbox.dead_letters(limit=3)) == 3
    outbox.close()


def test_dead_letter_moves_rows_by_seq_atomically(tmp_path: Path) -> None:
    clock = FakeClock(50)
    outbox = Outbox(tmp_path / "o.sqlite3", clock=clock)
    a, b, c = outbox.journal([("upsert", "a", {"x": 1}), ("upsert", "b", {"x": 2}), ("upsert", "c", {"x": 3})])
    outbox.acknowledge([b])
    clock.advance(1)
    assert outbox.dead_letter([]) == 0
    assert outbox.dead_letter([(a, "refused by redis: RecordTooLargeError: too big"), (b, "x\ud800"), (999, "gone")]) == 2
    assert [e.key for e in outbox.replayable()] == ["c"]
    letters = outbox.dead_letters()
    assert [(d.seq, d.key, d.payload, d.journaled_at, d.failed_at) for d in letters] == [
        (a, "a", '{"x": 1}', 50, 51),
        (b, "b", '{"x": 2}', 50, 51),
    ]
    assert letters[0].reason.startswith("refused by redis") and letters[1].reason == "x\\ud800"
    assert outbox.dead_letter([(a, "again")]) == 0  # already moved
    outbox.close()


def test_stats_with_an_injected_clock(tmp_path: Path) -> None:
    clock = FakeClock(10_000)
    outbox = Outbox(tmp_path / "o.sqlite3", clock=clock, retain_seconds=5, stuck_after=300)
    empty = outbox.stats()
    assert (empty.pending, empty.retained, empty.dead_letter, empty.stuck, empty.oldest_pending_age_s) == (0, 0, 0, 0, None)
    first = outbox.journal([("upsert", "a", {}), ("upsert", "b", {})])
    clock.advance(200)
    [third] = outbox.journal([("upsert", "c", {})])
    outbox.acknowledge([first[1]])
    outbox.dead_letter([(third, "test")])
    s = outbox.stats()
    assert (s.pending, s.retained, s.dead_letter, s.stuck, s.oldest_pending_age_s) == (1, 1, 1, 0, 200)
    clock.advance(101)  # "a" is now 301 s old; "b"'s acknowledgement is out of the retention window
    s = outbox.stats()
    assert (s.pending, s.retained, s.stuck, s.oldest_pending_age_s, s.stuck_after) == (1, 0, 1, 301, 300)
    outbox.close()


# -- inspection ---------------------------------------------------------------------------------


def test_inspect_reads_without_creating_or_changing_anything(tmp_path: Path) -> None:
    missing = tmp_path / "nothing.sqlite3"
    report = Outbox.inspect(missing)
    assert not report.exists and report.damage is None and report.stats is None
    assert not missing.exists()

    path = tmp_path / "outbox-aaaaaaaaaaaaaaaa.sqlite3"
    clock = FakeClock(100)
    outbox = Outbox(path, clock=clock, identity="id-a", target="redis://localhost:6379/0", prefix="p:")
    seq, bad = outbox.journal([("upsert", "a", {}), ("upsert", "b", {})])
    outbox.dead_letter([(bad, "test")])
    outbox.close()
    db = raw(path)
    db.execute("INSERT INTO outbox (op, key, payload, journaled_at) VALUES ('upsert', 'poison', 'nope', 100)")
    db.close()
    before = fingerprint(path)
    clock.advance(1000)
    report = Outbox.inspect(path, clock=clock, dead_letter_limit=10)
    assert fingerprint(path) == before  # no -wal/-shm, no dead-lettering, no upgrade
    assert report.damage is None and report.identity == "id-a" and report.target == "redis://localhost:6379/0"
    assert report.prefix == "p:"
    assert report.stats is not None and (report.stats.pending, report.stats.dead_letter, report.stats.stuck) == (2, 1, 2)
    assert [d.reason for d in report.dead_letters] == ["test"]

    (tmp_path / "unrelated.sqlite3").write_bytes(b"")
    (tmp_path / "outbox-bbbbbbbbbbbbbbbb.sqlite3").write_bytes(b"junk" * 100)
    reports = find_outboxes(tmp_path, clock=clock)
    assert [r.path.name for r in reports] == ["outbox-aaaaaaaaaaaaaaaa.sqlite3", "outbox-bbbbbbbbbbbbbbbb.sqlite3"]
    assert reports[0].damage is None and reports[1].damage and "mv " in (reports[1].fix or "")


def test_inspect_sees_entries_of_a_writer_that_has_the_file_open(tmp_path: Path) -> None:
    path = tmp_path / "o.sqlite3"
    outbox = Outbox(path)
    outbox.journal([("upsert", "a", {}), ("upsert", "b", {})])  # still in the -wal file
    report = Outbox.inspect(path)
    assert report.damage is None and report.stats is not None and report.stats.pending == 2
    outbox.close()


# -- with the resilient wrapper (in-process primary, no server) ---------------------------------


async def test_replay_goes_past_poison_rows_once_and_health_reports_them(tmp_path: Path) -> None:
    from primitives.errors import BackendUnavailableError
    from primitives.memory import MemoryRecord
    from primitives.memory.inmemory import InMemoryBackend
    from primitives.memory.resilient import CircuitBreaker, ResilientBackend

    class Flaky(InMemoryBackend):
        down = True
        put_calls = 0

        async def _add(self, records):  # type: ignore[no-untyped-def]
            if self.down:
                raise BackendUnavailableError("down")
            return await super()._add(records)

        async def _put_if_newer(self, records):  # type: ignore[no-untyped-def]
            self.put_calls += 1
            return await super()._put_if_newer(records)

        async def _search(self, *args):  # type: ignore[no-untyped-def]
            if self.down:
                raise BackendUnavailableError("down")
            return await super()._search(*args)

    breaker_clock = FakeClock(0)
    primary = Flaky()
    outbox = Outbox(tmp_path / "o.sqlite3", retain_seconds=3600)
    backend = ResilientBackend(primary, outbox=outbox, breaker=CircuitBreaker(reset_timeout=1, max_reset_timeout=1, clock=breaker_clock))
    for i in range(52):
        await backend.add([MemoryRecord(id=f"r{i}", text=f"hello {i}", user_id="u")])
    assert outbox.pending_count() == 52
    db = raw(tmp_path / "o.sqlite3")
    db.execute("UPDATE outbox SET payload = '{not json' WHERE key = 'r10'")
    db.execute(
        "INSERT INTO outbox (op, key, payload, journaled_at) VALUES "
        "('delete', 'x', '{\"namespace\": \"default\", \"deleted_at\": \"not a date\"}', 1)"
    )
    db.close()

    primary.down = False
    breaker_clock.advance(2)
    for _ in range(20):
        await backend.search("hello", filter={"user_id": "u"})
        if backend._replay_task is not None:
            await backend._replay_task
    assert await primary.count() == 51
    assert primary.put_calls == 1  # one batch, once: nothing re-sent per call
    assert sorted(d.key for d in outbox.dead_letters()) == ["r10", "x"]
    detail = (await backend.health()).detail
    assert (detail["outbox_pending"], detail["outbox_dead_letter"], detail["outbox_stuck"]) == (0, 2, 0)
    await backend.aclose()


@pytest.mark.parametrize("refusal", ["configuration", "permission"])
async def test_a_store_that_refuses_the_configuration_keeps_every_entry_pending(tmp_path: Path, refusal: str) -> None:
    """A refusal of the configuration (wrong credentials, schema, dims, an ACL) is not a refusal
    of one entry: nothing goes to the dead letters, the replay stops once (not on every call),
    and a later replay, once the store accepts again, sends everything."""
    from primitives.errors import BackendUnavailableError, ConfigurationError, PermissionDeniedError
    from primitives.memory import MemoryRecord
    from primitives.memory.inmemory import InMemoryBackend
    from primitives.memory.resilient import CircuitBreaker, ResilientBackend

    class Refusing(InMemoryBackend):
        down = True
        refuse = True
        put_calls = 0

        async def _add(self, records):  # type: ignore[no-untyped-def]
            if self.down:
                raise BackendUnavailableError("down")
            return await super()._add(records)

        async def _put_if_newer(self, records):  # type: ignore[no-untyped-def]
            self.put_calls += 1
            if self.refuse:
                raise (ConfigurationError("index schema differs") if refusal == "configuration"
                       else PermissionDeniedError("NOPERM"))
            return await super()._put_if_newer(records)

    clock = FakeClock(0)
    primary = Refusing()
    outbox = Outbox(tmp_path / "o.sqlite3", retain_seconds=3600)
    backend = ResilientBackend(primary, outbox=outbox, breaker=CircuitBreaker(reset_timeout=1, max_reset_timeout=1, clock=clock))
    await backend.add([MemoryRecord(id=f"r{i}", text=f"hello {i}") for i in range(10)])
    assert outbox.pending_count() == 10
    primary.down = False
    clock.advance(2)
    for _ in range(20):
        await backend.count()
        if backend._replay_task is not None:
            await backend._replay_task
    assert primary.put_calls == 1
    assert outbox.pending_count() == 10 and outbox.stats().dead_letter == 0
    primary.refuse = False
    assert await backend.replay() == 10
    assert outbox.pending_count() == 0 and await primary.count() == 10
    await backend.aclose()
