"""One contract every sync target (:class:`primitives.sync.warehouse.Warehouse`) passes.

A target's test module subclasses :class:`WarehouseContract` and provides an async
``make_target`` fixture that yields a fresh, opened target (and, for reopening, a ``reopen``
callable returning a new object on the same storage). Hostile strings go in every field.
"""

from __future__ import annotations

import math
from datetime import datetime, timedelta, timezone

import pytest

from primitives.errors import InvalidInputError
from primitives.sync.rows import Cursor, RejectedRow, SyncRow, row_from_mapping

T0 = datetime(2026, 1, 1, tzinfo=timezone.utc)

HOSTILE = [
    "plain", "a,b", "a b", " lead", "trail ", "tab\tx", "nl\nx", "nul\x00x", "é", "日本語", "emoji 🧠",
    "*", "@user_id:{x}", "'; DROP TABLE memories; --", '"quoted"', "back\\slash", "%_like", "{}", "[]",
    "\u200b", "\U0010ffff", "a" * 1000,
]


def make_row(ns: str, id: str, second: float, text: str = "t", **kw) -> SyncRow:
    fields = dict(
        namespace=ns, id=id, text=text, created_at=T0,
        updated_at=T0 + timedelta(seconds=second),
    )
    fields.update(kw)
    return SyncRow(**fields)


def full_row(i: int, s: str) -> SyncRow:
    """A row with every column set, ``s`` in every string field."""
    return SyncRow(
        namespace=s, id=f"{s}-{i}", text=f"{s} text {i}", user_id=s, session_id=s,
        memory_type=("working", "episodic", "semantic", "skill")[i % 4],
        topics=(s, s, "t2"), metadata={s: [s, 1, 2.5, None, True, {"n": {"x": -0.0}}]},
        embedding=(0.5, -1.25, 3.0), ttl=(None, math.inf, 3600.0, 0.5)[i % 4],
        created_at=T0 + timedelta(microseconds=i), updated_at=T0 + timedelta(seconds=1, microseconds=7 * i),
        origin="store-a",
    )


class WarehouseContract:
    """Subclass with a ``target`` async fixture yielding an opened target, and set
    ``vectors = False`` for targets that cannot hold vectors."""

    vectors = True

    def _expect(self, row: SyncRow) -> SyncRow:
        if self.vectors:
            return row
        return SyncRow(**{**_fields(row), "embedding": None, "origin": row.origin})

    async def test_round_trip_hostile_every_field(self, target):
        rows = [full_row(i, s) for i, s in enumerate(HOSTILE)]
        assert await target.upsert(rows) == len(rows)
        raw = await target.changes_after(None, 1000)
        back = [row_from_mapping(r) for r in raw]
        want = sorted((self._expect(r) for r in rows), key=SyncRow.sort_key)
        assert [(b.namespace, b.id) for b in back] == [(w.namespace, w.id) for w in want]
        for b, w in zip(back, want):
            assert _fields(b) == _fields(w), (b, w)
            assert b.origin == w.origin

    async def test_older_never_overwrites_newer(self, target):
        new = make_row("n", "x", 10, "new")
        old = make_row("n", "x", 5, "old")
        assert await target.upsert([new]) == 1
        assert await target.upsert([old]) == 0
        assert await target.upsert([new]) == 0  # re-sending is harmless
        [raw] = await target.changes_after(None, 10)
        assert raw["text"] == "new"

    async def test_tie_broken_by_version_deterministically(self, target):
        a = make_row("n", "x", 5, "aaa")
        b = make_row("n", "x", 5, "bbb")
        winner = a if a.version > b.version else b
        loser = b if winner is a else a
        await target.upsert([loser])
        assert await target.upsert([winner]) == 1
        assert await target.upsert([loser]) == 0
        [raw] = await target.changes_after(None, 10)
        assert raw["text"] == winner.text

    async def test_a_delete_wins_a_tie_with_a_write(self, target):
        live = make_row("n", "x", 5, "live")
        dead = make_row("n", "x", 5, "", deleted_at=T0 + timedelta(seconds=5))
        assert dead.wins_over(live) and not live.wins_over(dead)
        await target.upsert([dead])
        assert await target.upsert([live]) == 0
        [raw] = await target.changes_after(None, 10)
        assert row_from_mapping(raw).is_tombstone

    async def test_batch_with_two_versions_of_one_key(self, target):
        rows = [make_row("n", "x", 3, "v3"), make_row("n", "x", 9, "v9"), make_row("n", "x", 1, "v1")]
        assert await target.upsert(rows) == 1
        [raw] = await target.changes_after(None, 10)
        assert raw["text"] == "v9"

    async def test_tombstone_replaces_and_is_replaced(self, target):
        live = make_row("n", "x", 1, "live")
        dead = make_row("n", "x", 2, "", deleted_at=T0 + timedelta(seconds=2))
        again = make_row("n", "x", 3, "again")
        await target.upsert([live])
        assert await target.upsert([dead]) == 1
        [raw] = await target.changes_after(None, 10)
        assert row_from_mapping(raw).is_tombstone
        stats = await target.stats()
        assert (stats.rows, stats.tombstones) == (0, 1)
        assert await target.upsert([again]) == 1
        [raw] = await target.changes_after(None, 10)
        assert not row_from_mapping(raw).is_tombstone and raw["text"] == "again"

    async def test_keyset_pages_cover_every_row_once_in_order(self, target):
        rows = [make_row(f"ns{i % 3}", f"id{i:03d}", i // 7) for i in range(95)]
        await target.upsert(rows)
        seen, cursor = [], None
        while True:
            page = await target.changes_after(cursor, 10)
            if not page:
                break
            got = [row_from_mapping(r) for r in page]
            seen += got
            cursor = got[-1].cursor()
        assert [r.sort_key() for r in seen] == sorted(r.sort_key() for r in rows)

    async def test_namespaces_are_separate_keys(self, target):
        await target.upsert([make_row("a", "x", 1, "in a"), make_row("b", "x", 1, "in b")])
        raw = await target.changes_after(None, 10)
        assert sorted((r["namespace"], r["text"]) for r in raw) == [("a", "in a"), ("b", "in b")]

    async def test_state_commits_with_rows_and_reads_back(self, target):
        assert await target.get_state("export:store") is None
        await target.upsert([make_row("n", "x", 1)], state={"export:store": Cursor(T0, "n", "x").to_text()})
        assert Cursor.from_text(await target.get_state("export:store")) == Cursor(T0, "n", "x")
        await target.set_state("export:store", "second")
        assert await target.get_state("export:store") == "second"

    async def test_rejected_rows_are_kept(self, target):
        at = T0 + timedelta(days=1)
        await target.reject([RejectedRow("import", "n\x00", None, "id is missing", '{"x": 1}', at)])
        [r] = await target.rejected(10)
        assert (r.source, r.namespace, r.id, r.reason, r.raw) == ("import", "n\x00", None, "id is missing", '{"x": 1}')
        assert (await target.stats()).rejected == 1

    async def test_bad_arguments_are_refused_before_any_write(self, target):
        with pytest.raises(InvalidInputError):
            await target.upsert([{"id": "x"}])  # type: ignore[list-item]
        with pytest.raises(InvalidInputError):
            await target.upsert(None)  # type: ignore[arg-type]
        with pytest.raises(InvalidInputError):
            await target.changes_after(None, 0)
        with pytest.raises(InvalidInputError):
            await target.upsert([make_row("n", "x", 1)], state={"": "x"})
        assert await target.changes_after(None, 10) == []


def _fields(row: SyncRow) -> dict:
    return {
        "namespace": row.namespace, "id": row.id, "user_id": row.user_id, "session_id": row.session_id,
        "memory_type": row.memory_type, "text": row.text, "topics": row.topics, "metadata": dict(row.metadata),
        "embedding": row.embedding, "ttl": row.ttl, "created_at": row.created_at, "updated_at": row.updated_at,
        "deleted_at": row.deleted_at,
    }
