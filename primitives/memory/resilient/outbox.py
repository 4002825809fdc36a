"""A durable journal of writes (SQLite, stdlib), replayed to a backend that lost or missed them.

Every write through :class:`~primitives.memory.resilient.ResilientBackend` is journaled here
before it is attempted. An entry is *pending* until the primary backend acknowledged it, then
*acknowledged* and kept ``retain_seconds`` longer, because an acknowledged write can still be lost
by a server killed before it flushed to disk (Redis's ``appendfsync everysec`` loses up to a
second). After an outage both pending and retained entries are replayed, last writer wins by
``updated_at``, so replaying is idempotent and never overwrites a newer write.

An entry that cannot be replayed (a payload that is not a JSON object, an unknown op, or one the
primary refuses) is moved to the ``dead_letter`` table with the reason, its raw payload text and
its times, and is never offered for replay again: one poison row never stops a replay nor makes
it repeat. ``memory-primitives outbox dead-letters`` shows them.

File layout (schema version :data:`SCHEMA_VERSION`): tables ``outbox`` (the journal),
``dead_letter`` and ``meta`` (``schema_version``, ``identity``, ``target`` URL without its
password, ``prefix``, ``created_at``). A new outbox is built whole under a temporary name and
hard-linked into place, so a file at the path is either a complete outbox or not ours: an empty,
foreign or damaged file raises :class:`~primitives.errors.OutboxCorruptError` and is never
overwritten. Files of schema version 1 (no ``dead_letter``/``meta``) are upgraded in place.

The database uses WAL mode with ``synchronous=NORMAL``: a committed entry survives a crash of
this process (what "replays its outbox on the next start" needs); it may not survive a power loss.
"""

from __future__ import annotations

import json
import logging
import os
import shlex
import sqlite3
import threading
import time
from collections.abc import Callable, Iterator, Mapping, Sequence
from contextlib import contextmanager, suppress
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from primitives.errors import InvalidInputError, InvalidInputTypeError, OutboxCorruptError, OutboxError
from primitives.memory.resilient import _outbox_file as _file
from primitives.memory.resilient._outbox_file import OPS, SCHEMA, SCHEMA_VERSION

__all__ = [
    "SCHEMA_VERSION",
    "DeadLetter",
    "Outbox",
    "OutboxEntry",
    "OutboxReport",
    "OutboxStats",
    "find_outboxes",
]

log = logging.getLogger(__name__)


@dataclass(frozen=True, slots=True)
class OutboxEntry:
    """One journaled write: ``op`` is ``upsert`` (payload: a record dict), ``delete`` (payload:
    ``{"namespace": ..., "deleted_at": iso}``) or ``append`` (payload: ``{"namespace": ...,
    "messages": [...]}``); ``key`` is the record id or session id; ``acked`` is whether the
    primary acknowledged it (a retained entry)."""

    seq: int
    op: str
    key: str
    payload: dict[str, Any]
    acked: bool


@dataclass(frozen=True, slots=True)
class OutboxStats:
    """Counts of one outbox at one moment (one read transaction).

    Attributes:
        pending: Entries the primary has not acknowledged.
        retained: Acknowledged entries still inside the retention window (replayed after an outage).
        dead_letter: Entries moved to the dead-letter table (never replayed automatically).
        stuck: Pending entries journaled more than ``stuck_after`` seconds ago.
        oldest_pending_age_s: Seconds since the oldest pending entry was journaled; ``None``
            when nothing is pending.
        stuck_after: The threshold used for ``stuck``, seconds.
    """

    pending: int
    retained: int
    dead_letter: int
    stuck: int
    oldest_pending_age_s: float | None
    stuck_after: float


@dataclass(frozen=True, slots=True)
class DeadLetter:
    """A journal entry that will not be replayed: ``payload`` is the raw text as journaled
    (bytes that are not UTF-8 shown with backslash escapes); times are seconds since the epoch;
    ``id`` orders dead letters (``seq`` is the entry's journal sequence number)."""

    id: int
    seq: int
    op: str
    key: str
    payload: str
    journaled_at: float | None
    failed_at: float
    reason: str


@dataclass(frozen=True, slots=True)
class OutboxReport:
    """What :meth:`Outbox.inspect` found in a file, read-only.

    Attributes:
        path: The file.
        exists: Whether anything is at ``path``.
        meta: The ``meta`` table (``schema_version``, ``identity``, ``target``, ``prefix``,
            ``created_at``); empty for a version-1 outbox or a damaged file.
        stats: Counts, or ``None`` when the file is missing or damaged.
        damage: What is wrong with the file, or ``None`` when it is a readable outbox.
        fix: The command that fixes ``damage``, or ``None``.
        dead_letters: Up to the requested number of dead letters, oldest first.
    """

    path: Path
    exists: bool
    meta: Mapping[str, str] = field(default_factory=dict)
    stats: OutboxStats | None = None
    damage: str | None = None
    fix: str | None = None
    dead_letters: tuple[DeadLetter, ...] = ()

    @property
    def identity(self) -> str | None:
        return self.meta.get("identity") or None

    @property
    def target(self) -> str | None:
        return self.meta.get("target") or None

    @property
    def prefix(self) -> str | None:
        return self.meta.get("prefix")


class Outbox:
    """The journal at ``path``, created (with its directory) when nothing is there.

    Args:
        path: SQLite database file.
        retain_seconds: How long an acknowledged entry is kept for replay after an outage.
        clock: Seconds since the epoch (``journaled_at``, ``acked_at``, ``failed_at``, ages).
        stuck_after: A pending entry older than this many seconds counts as ``stuck`` in
            :meth:`stats` (default 300).
        identity: The store's :func:`~primitives.memory.resilient.identity.outbox_identity`.
            Written to ``meta`` when missing; an outbox whose ``meta`` names another identity
            is refused (its entries belong to another store).
        target: The store's URL without password, written to ``meta`` when missing (what
            ``memory-primitives outbox replay`` connects to).
        prefix: The store's key prefix, written to ``meta`` when missing.
        timeout: Seconds to wait for another connection's write lock before failing.

    Raises:
        OutboxCorruptError: a file is at ``path`` that is not a usable outbox (see the module
            docstring); the message names the file and how to move it aside.
        OutboxError: the directory cannot be created, the file cannot be opened, or its
            ``meta`` names another store.
    """

    def __init__(
        self,
        path: str | Path,
        *,
        retain_seconds: float = 5.0,
        clock: Callable[[], float] = time.time,
        stuck_after: float = 300.0,
        identity: str | None = None,
        target: str | None = None,
        prefix: str | None = None,
        timeout: float = 10.0,
    ) -> None:
        self.path = Path(path)
        self.retain_seconds = retain_seconds
        self.stuck_after = stuck_after
        self._clock = clock
        self._lock = threading.RLock()
        _file.prepare_directory(self.path)
        wanted = {"identity": identity, "target": target, "prefix": prefix}
        if not os.path.lexists(self.path):
            _file.create(self.path, {**_file.fresh_meta(clock()), **{k: v for k, v in wanted.items() if v is not None}})
        self._db = _file.connect(self.path, "rw", timeout)
        try:
            self._adopt(_file.check(self._db, self.path), wanted)
        except sqlite3.Error as exc:
            self._db.close()
            raise _file.runtime_error(self.path, "open the outbox", exc) from exc
        except BaseException:
            self._db.close()
            raise

    # -- writing -------------------------------------------------------------------------------

    def journal(self, entries: Sequence[tuple[str, str, dict[str, Any]]]) -> list[int]:
        """Append ``(op, key, payload)`` entries as pending, in one transaction.

        Args:
            entries: ``op`` in ``upsert``/``delete``/``append``; ``key`` a ``str``; ``payload``
                a JSON-serialisable dict.

        Returns:
            Their sequence numbers, consecutive and increasing, in the order given; every
            number is larger than any number ever returned before on this file (AUTOINCREMENT),
            whichever process journaled it.

        Raises:
            InvalidInputError: an unknown op, a key that is not a ``str``
                (:class:`~primitives.errors.InvalidInputTypeError`), or a key or payload with a
                lone surrogate (UTF-8 cannot store it); nothing was journaled.
            TypeError, ValueError: a payload JSON cannot encode (a value of another type, a
                cycle); nothing was journaled.
            OutboxError: SQLite failed (disk full, I/O error, lock timeout); nothing was journaled.
        """
        rows = []
        for op, key, payload in entries:
            if op not in OPS:
                raise InvalidInputError(f"outbox op must be one of {', '.join(OPS)}, got {op!r}")
            if not isinstance(key, str):
                raise InvalidInputTypeError(f"outbox key must be a str, got {type(key).__name__}")
            text = json.dumps(payload, ensure_ascii=False)
            for value in (key, text):
                if not value.isascii():
                    try:
                        value.encode("utf-8")
                    except UnicodeEncodeError:
                        raise InvalidInputError(f"outbox entry {key!r} has a lone surrogate; UTF-8 cannot store it") from None
            rows.append((op, key, text))
        if not rows:
            return []
        now = self._clock()
        with self._writing("journal a write") as db:  # BEGIN IMMEDIATE: no other writer in between
            db.executemany(
                "INSERT INTO outbox (op, key, payload, journaled_at) VALUES (?, ?, ?, ?)",
                [(*row, now) for row in rows],
            )
            last = db.execute("SELECT seq FROM sqlite_sequence WHERE name = 'outbox'").fetchone()[0]
        # AUTOINCREMENT numbers one transaction's rows consecutively after the largest ever used
        return list(range(last - len(rows) + 1, last + 1))

    def acknowledge(self, seqs: Sequence[int]) -> None:
        """Mark entries as written to the primary; acknowledged entries older than the retention
        window are purged in the same transaction. Unknown or already acknowledged seqs are
        ignored.

        Raises:
            OutboxError: SQLite failed; nothing changed.
        """
        if not seqs:
            return
        now = self._clock()
        with self._writing("acknowledge writes") as db:
            db.executemany("UPDATE outbox SET acked_at = ? WHERE seq = ? AND acked_at IS NULL", [(now, s) for s in seqs])
            db.execute("DELETE FROM outbox WHERE acked_at IS NOT NULL AND acked_at < ?", (now - self.retain_seconds,))

    def discard(self, seqs: Sequence[int]) -> None:
        """Forget entries whose write was rejected for good (bad input), not for reachability.

        Raises:
            OutboxError: SQLite failed; nothing changed.
        """
        if seqs:
            with self._writing("discard writes") as db:
                db.executemany("DELETE FROM outbox WHERE seq = ?", [(s,) for s in seqs])

    def dead_letter(self, items: Sequence[tuple[int, str]]) -> int:
        """Move entries, by ``(seq, reason)``, from the journal to the dead-letter table, in one
        transaction; the raw payload and ``journaled_at`` are copied as stored, ``failed_at`` is
        now. Seqs no longer in the journal are ignored.

        Returns:
            How many entries were moved.

        Raises:
            OutboxError: SQLite failed; nothing moved.
        """
        if not items:
            return 0
        now, moved = self._clock(), 0
        with self._writing("move entries to the dead-letter table") as db:
            for seq, reason in items:
                reason = str(reason).encode("utf-8", "backslashreplace").decode("utf-8")
                cursor = db.execute(
                    "INSERT INTO dead_letter (seq, op, key, payload, journaled_at, failed_at, reason) "
                    "SELECT seq, op, key, payload, journaled_at, ?, ? FROM outbox WHERE seq = ?",
                    (now, reason, seq),
                )
                if cursor.rowcount > 0:
                    db.execute("DELETE FROM outbox WHERE seq = ?", (seq,))
                    moved += 1
        if moved:
            # debug only: the replay that moved them says how many in its one line
            log.debug("outbox %s: %d entries moved to the dead-letter table", self.path, moved)
        return moved

    # -- reading -------------------------------------------------------------------------------

    def replayable(self) -> list[OutboxEntry]:
        """Pending entries and acknowledged ones still within the retention window, oldest first
        (by seq).

        A row that cannot be an entry (op unknown, key or payload not UTF-8 text, payload not a
        JSON object, ``acked_at`` not a time) is moved to the dead-letter table with the reason
        and left out: this read writes when, and only when, it finds such a row. If that move
        fails, the row is still left out (and logged); the move is tried again next time.

        Raises:
            OutboxError: SQLite could not read the journal (I/O error, corruption found).
        """
        cutoff = self._clock() - self.retain_seconds
        with self._reading("read the journal") as db:
            rows = db.execute(
                "SELECT seq, CAST(op AS BLOB), typeof(key), CAST(key AS BLOB), typeof(payload), "
                "CAST(payload AS BLOB), acked_at FROM outbox WHERE acked_at IS NULL OR acked_at >= ? ORDER BY seq",
                (cutoff,),
            ).fetchall()
        entries: list[OutboxEntry] = []
        poison: list[tuple[int, str]] = []
        for row in rows:
            entry = _entry(row)
            if isinstance(entry, str):
                poison.append((row[0], entry))
            else:
                entries.append(entry)
        if poison:
            try:
                self.dead_letter(poison)
            except OutboxError as exc:
                log.error("outbox %s: %d unreadable entries left out of the replay: %s", self.path, len(poison), exc)
        return entries

    def pending_count(self) -> int:
        """Entries not yet acknowledged by the primary (the backlog).

        Raises:
            OutboxError: SQLite failed.
        """
        with self._reading("count pending writes") as db:
            return int(db.execute("SELECT COUNT(*) FROM outbox WHERE acked_at IS NULL").fetchone()[0])

    def stats(self) -> OutboxStats:
        """Pending, retained, dead-letter and stuck counts, read in one transaction.

        Raises:
            OutboxError: SQLite failed.
        """
        with self._reading("read statistics") as db:
            return _stats(db, self._clock(), self.retain_seconds, self.stuck_after, dead_letter_table=True)

    def dead_letters(self, limit: int | None = None) -> list[DeadLetter]:
        """Dead letters, oldest first, at most ``limit`` (all when ``None``).

        Raises:
            OutboxError: SQLite failed.
        """
        with self._reading("read dead letters") as db:
            return _dead_letters(db, limit)

    @property
    def meta(self) -> dict[str, str]:
        """The ``meta`` table as a dict (see the module docstring).

        Raises:
            OutboxError: SQLite failed.
        """
        with self._reading("read meta") as db:
            return dict(db.execute("SELECT name, value FROM meta").fetchall())

    def close(self) -> None:
        """Close the connection (idempotent). Later calls raise :class:`OutboxError`."""
        with self._lock:
            self._db.close()

    # -- inspection (read-only) ----------------------------------------------------------------

    @staticmethod
    def inspect(
        path: str | Path,
        *,
        retain_seconds: float = 5.0,
        stuck_after: float = 300.0,
        clock: Callable[[], float] = time.time,
        dead_letter_limit: int = 0,
    ) -> OutboxReport:
        """Read an outbox without creating, upgrading or changing it (no dead-lettering either).

        A missing file gives ``exists=False``; a file that is not a usable outbox gives
        ``damage`` and ``fix``; otherwise ``meta``, ``stats`` and up to ``dead_letter_limit``
        dead letters. When no ``-wal`` file is beside it (no writer has it open), the file is
        opened ``immutable`` so that not even SQLite's ``-shm`` index is created.

        Never raises for the file's content or state: every problem is in ``damage``.
        """
        path = Path(path)
        if not os.path.lexists(path):
            return OutboxReport(path, exists=False)
        db: sqlite3.Connection | None = None
        try:
            if path.is_dir():
                raise _file.not_a_file(path)
            immutable = not os.path.exists(f"{path}-wal")
            db = _file.connect(path, "ro&immutable=1" if immutable else "ro", timeout=2.0)
            tables = _file.check(db, path)
            version = 1
            meta: dict[str, str] = {}
            if "meta" in tables:
                meta = dict(db.execute("SELECT name, value FROM meta").fetchall())
                version = _file.version(meta, path)
            if version > SCHEMA_VERSION:
                raise _file.newer(path, version)
            db.execute("BEGIN")
            stats = _stats(db, clock(), retain_seconds, stuck_after, dead_letter_table="dead_letter" in tables)
            letters = _dead_letters(db, dead_letter_limit) if dead_letter_limit and "dead_letter" in tables else []
            db.execute("COMMIT")
            return OutboxReport(path, True, meta, stats, dead_letters=tuple(letters))
        except OutboxCorruptError as exc:
            return OutboxReport(path, True, damage=exc.reason, fix=exc.fix)
        except OutboxError as exc:
            return OutboxReport(path, True, damage=str(exc).split(". Fix: ")[0], fix=exc.fix)
        except sqlite3.Error as exc:
            error = _file.runtime_error(path, "read the outbox", exc)
            reason = error.reason if isinstance(error, OutboxCorruptError) else str(exc)
            return OutboxReport(path, True, damage=reason, fix=error.fix)
        finally:
            if db is not None:
                db.close()

    # -- internals -----------------------------------------------------------------------------

    def _adopt(self, tables: set[str], wanted: Mapping[str, str | None]) -> None:
        """Refuse a newer outbox or another store's; only then switch to WAL, upgrade a
        version-1 file and fill in missing ``meta`` (a refused file is left as it was)."""
        meta = dict(self._db.execute("SELECT name, value FROM meta").fetchall()) if "meta" in tables else {}
        version = _file.version(meta, self.path) if meta else 1
        if version > SCHEMA_VERSION:
            raise _file.newer(self.path, version)
        identity = wanted.get("identity")
        if identity and meta.get("identity") and meta["identity"] != identity:
            quoted = shlex.quote(str(self.path))
            raise OutboxError(
                f"outbox {self.path} belongs to {meta['identity']!r} ({meta.get('target') or 'unknown target'}), "
                f"not to {identity!r}; replaying it here would write another store's entries",
                path=str(self.path),
                fix=f"give this store its own MEMORY_OUTBOX_PATH (or unset it), or replay that outbox "
                f"first: memory-primitives outbox replay --path {quoted}",
            )
        self._db.execute("PRAGMA journal_mode=WAL")
        self._db.execute("PRAGMA synchronous=NORMAL")
        missing = {k: v for k, v in wanted.items() if v is not None and k not in meta}
        if version < SCHEMA_VERSION:
            missing.update(schema_version=str(SCHEMA_VERSION), upgraded_at=_file.iso(self._clock()))
        if not missing and {"dead_letter", "meta"} <= tables:
            return
        with self._writing("upgrade the outbox") as db:
            for statement in SCHEMA:
                db.execute(statement)
            db.executemany("INSERT OR REPLACE INTO meta (name, value) VALUES (?, ?)", list(missing.items()))

    @contextmanager
    def _writing(self, action: str) -> Iterator[sqlite3.Connection]:
        """A ``BEGIN IMMEDIATE`` transaction (the write lock first, so no other writer commits
        between its reads and writes); rolled back on any error; sqlite3 errors as OutboxError."""
        with self._lock:
            try:
                self._db.execute("BEGIN IMMEDIATE")
                try:
                    yield self._db
                    self._db.execute("COMMIT")
                except BaseException:
                    if self._db.in_transaction:
                        with suppress(sqlite3.Error):
                            self._db.execute("ROLLBACK")
                    raise
            except sqlite3.Error as exc:
                raise _file.runtime_error(self.path, action, exc) from exc

    @contextmanager
    def _reading(self, action: str) -> Iterator[sqlite3.Connection]:
        """A read transaction (one snapshot); sqlite3 errors as OutboxError."""
        with self._lock:
            try:
                self._db.execute("BEGIN")
                try:
                    yield self._db
                finally:
                    if self._db.in_transaction:
                        self._db.execute("COMMIT")
            except sqlite3.Error as exc:
                raise _file.runtime_error(self.path, action, exc) from exc


def find_outboxes(directory: str | Path, **inspect_args: Any) -> list[OutboxReport]:
    """:meth:`Outbox.inspect` of every ``outbox-*.sqlite3`` in ``directory`` (the per-store
    outboxes of :func:`~primitives.memory.resilient.identity.outbox_dir`), sorted by path;
    ``[]`` when the directory does not exist. Keyword arguments go to :meth:`Outbox.inspect`
    (``retain_seconds``, ``stuck_after``, ``clock``, ``dead_letter_limit``).

    Raises:
        OutboxError: ``directory`` exists but is not a directory or cannot be listed.
    """
    directory = Path(directory)
    if not os.path.lexists(directory):
        return []
    try:
        if not directory.is_dir():
            raise NotADirectoryError(20, "Not a directory")
        paths = sorted(p for p in directory.iterdir() if p.name.startswith("outbox-") and p.name.endswith(".sqlite3"))
    except OSError as exc:
        raise OutboxError(
            f"cannot list the outbox directory {directory}: {exc.strerror or exc}",
            path=str(directory),
            fix=f"make {shlex.quote(str(directory))} a readable directory, or move what is there aside",
        ) from exc
    return [Outbox.inspect(p, **inspect_args) for p in paths]


# -- rows --------------------------------------------------------------------------------------


def _entry(row: tuple[Any, ...]) -> OutboxEntry | str:
    """An OutboxEntry from a raw row, or the reason it cannot be one."""
    seq, op_raw, key_type, key_raw, payload_type, payload_raw, acked_at = row
    op = (op_raw or b"").decode("utf-8", "backslashreplace")
    if op not in OPS:
        return f"unknown op {op!r}"
    if key_type not in ("text", "blob"):
        return f"key is {key_type}, not text"
    if payload_type not in ("text", "blob"):
        return f"payload is {payload_type}, not text"
    if acked_at is not None and not isinstance(acked_at, (int, float)):
        return f"acked_at {acked_at!r} is not a time"
    try:
        key = key_raw.decode("utf-8")
        payload = json.loads(payload_raw.decode("utf-8"))
    except UnicodeDecodeError as exc:
        return f"not valid UTF-8: {exc}"
    except (ValueError, RecursionError) as exc:
        return f"payload is not JSON: {exc}"
    if not isinstance(payload, dict):
        return f"payload is a JSON {type(payload).__name__}, not an object"
    return OutboxEntry(seq, op, key, payload, acked_at is not None)


def _stats(db: sqlite3.Connection, now: float, retain: float, stuck_after: float, *, dead_letter_table: bool) -> OutboxStats:
    pending, retained, stuck, oldest = db.execute(
        "SELECT COALESCE(SUM(acked_at IS NULL), 0), "
        "COALESCE(SUM(acked_at IS NOT NULL AND acked_at >= :cutoff), 0), "
        "COALESCE(SUM(acked_at IS NULL AND journaled_at < :stuck), 0), "
        "MIN(CASE WHEN acked_at IS NULL AND typeof(journaled_at) IN ('real', 'integer') THEN journaled_at END) "
        "FROM outbox",
        {"cutoff": now - retain, "stuck": now - stuck_after},
    ).fetchone()
    dead = db.execute("SELECT COUNT(*) FROM dead_letter").fetchone()[0] if dead_letter_table else 0
    age = None if oldest is None else max(0.0, now - float(oldest))
    return OutboxStats(int(pending), int(retained), int(dead), int(stuck), age, stuck_after)


def _dead_letters(db: sqlite3.Connection, limit: int | None) -> list[DeadLetter]:
    rows = db.execute(
        "SELECT id, seq, CAST(op AS BLOB), CAST(key AS BLOB), CAST(payload AS BLOB), journaled_at, failed_at, reason "
        "FROM dead_letter ORDER BY id LIMIT ?",
        (-1 if limit is None else limit,),
    ).fetchall()

    def text(raw: bytes | None) -> str:
        return (raw or b"").decode("utf-8", "backslashreplace")

    return [
        DeadLetter(
            id, seq, text(op), text(key), text(payload),
            journaled if isinstance(journaled, (int, float)) else None, float(failed), str(reason),
        )
        for id, seq, op, key, payload, journaled, failed, reason in rows
    ]
