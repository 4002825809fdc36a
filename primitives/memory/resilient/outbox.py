"""A durable journal of writes (SQLite, stdlib), replayed to a backend that lost or missed them.

Every write through :class:`~primitives.memory.resilient.ResilientBackend` is journaled here
before it is attempted. An entry is *pending* until the primary backend acknowledged it, then
*acknowledged* and kept ``retain_seconds`` longer, because an acknowledged write can still be lost
by a server killed before it flushed to disk (Redis's ``appendfsync everysec`` loses up to a
second). After an outage both pending and retained entries are replayed, last writer wins by
``updated_at``, so replaying is idempotent and never overwrites a newer write.

The database uses WAL mode with ``synchronous=NORMAL``: a committed entry survives a crash of
this process (what "replays its outbox on the next start" needs); it may not survive a power loss.
"""

from __future__ import annotations

import json
import sqlite3
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

__all__ = ["Outbox", "OutboxEntry"]

_SCHEMA = """
CREATE TABLE IF NOT EXISTS outbox (
    seq INTEGER PRIMARY KEY AUTOINCREMENT,
    op TEXT NOT NULL CHECK (op IN ('upsert', 'delete', 'append')),
    key TEXT NOT NULL,
    payload TEXT NOT NULL,
    journaled_at REAL NOT NULL,
    acked_at REAL
);
CREATE INDEX IF NOT EXISTS outbox_pending ON outbox (acked_at);
"""


@dataclass(frozen=True, slots=True)
class OutboxEntry:
    """One journaled write: ``op`` is ``upsert`` (payload: a record dict), ``delete`` (payload:
    ``{"deleted_at": iso}``) or ``append`` (payload: ``{"messages": [...]}``); ``key`` is the
    record id or session id."""

    seq: int
    op: str
    key: str
    payload: dict[str, Any]
    acked: bool


class Outbox:
    """The journal at ``path`` (created with its directory if missing).

    Args:
        path: SQLite database file.
        retain_seconds: How long an acknowledged entry is kept for replay after an outage.
        clock: Seconds since the epoch (for ``journaled_at`` / ``acked_at``).
    """

    def __init__(
        self,
        path: str | Path,
        *,
        retain_seconds: float = 5.0,
        clock: Callable[[], float] = time.time,
    ) -> None:
        self.path = Path(path)
        self.path.parent.mkdir(parents=True, exist_ok=True)
        self.retain_seconds = retain_seconds
        self._clock = clock
        self._db = sqlite3.connect(self.path, isolation_level=None, check_same_thread=False)
        self._db.execute("PRAGMA journal_mode=WAL")
        self._db.execute("PRAGMA synchronous=NORMAL")
        self._db.executescript(_SCHEMA)

    def journal(self, entries: Sequence[tuple[str, str, dict[str, Any]]]) -> list[int]:
        """Append ``(op, key, payload)`` entries as pending, in one transaction; returns their
        sequence numbers (increasing)."""
        now = self._clock()
        rows = [(op, key, json.dumps(payload, ensure_ascii=False), now) for op, key, payload in entries]
        with self._db:
            self._db.execute("BEGIN IMMEDIATE")  # the write lock first: no other writer in between
            first = self._db.execute(
                "SELECT COALESCE((SELECT seq FROM sqlite_sequence WHERE name = 'outbox'), 0)"
            ).fetchone()[0]
            self._db.executemany(
                "INSERT INTO outbox (op, key, payload, journaled_at) VALUES (?, ?, ?, ?)", rows
            )
        # AUTOINCREMENT numbers one transaction's rows consecutively after the largest ever used
        return list(range(first + 1, first + 1 + len(rows)))

    def acknowledge(self, seqs: Sequence[int]) -> None:
        """Mark entries as written to the primary; older acknowledged entries past the retention
        window are purged in the same transaction."""
        if not seqs:
            return
        now = self._clock()
        with self._db:
            self._db.execute("BEGIN")
            self._db.executemany(
                "UPDATE outbox SET acked_at = ? WHERE seq = ? AND acked_at IS NULL",
                [(now, s) for s in seqs],
            )
            self._db.execute(
                "DELETE FROM outbox WHERE acked_at IS NOT NULL AND acked_at < ?",
                (now - self.retain_seconds,),
            )

    def discard(self, seqs: Sequence[int]) -> None:
        """Forget entries whose write was rejected for good (bad input), not for reachability."""
        if seqs:
            with self._db:
                self._db.execute("BEGIN")
                self._db.executemany("DELETE FROM outbox WHERE seq = ?", [(s,) for s in seqs])

    def replayable(self) -> list[OutboxEntry]:
        """Pending entries and acknowledged ones still within the retention window, oldest first."""
        cutoff = self._clock() - self.retain_seconds
        rows = self._db.execute(
            "SELECT seq, op, key, payload, acked_at FROM outbox "
            "WHERE acked_at IS NULL OR acked_at >= ? ORDER BY seq",
            (cutoff,),
        ).fetchall()
        return [OutboxEntry(seq, op, key, json.loads(payload), acked is not None) for seq, op, key, payload, acked in rows]

    def pending_count(self) -> int:
        """Entries not yet acknowledged by the primary (the backlog ``doctor`` reports)."""
        return int(self._db.execute("SELECT COUNT(*) FROM outbox WHERE acked_at IS NULL").fetchone()[0])

    def close(self) -> None:
        self._db.close()
