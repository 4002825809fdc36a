"""The outbox's file: its schema, how it is created whole and opened, and the errors that name
it and their fixes. Private to :mod:`primitives.memory.resilient.outbox`."""

from __future__ import annotations

import os
import secrets
import shlex
import sqlite3
from collections.abc import Mapping
from contextlib import suppress
from datetime import datetime, timezone
from pathlib import Path
from urllib.parse import quote

from primitives.errors import OutboxCorruptError, OutboxError

#: Version of the file layout this module writes (1: ``outbox`` only; 2: ``dead_letter``, ``meta``).
SCHEMA_VERSION = 2
OPS = ("upsert", "delete", "append")
_MAGIC = b"SQLite format 3\x00"
_COLUMNS = {"seq", "op", "key", "payload", "journaled_at", "acked_at"}
SCHEMA = (
    """CREATE TABLE IF NOT EXISTS outbox (
        seq INTEGER PRIMARY KEY AUTOINCREMENT,
        op TEXT NOT NULL CHECK (op IN ('upsert', 'delete', 'append')),
        key TEXT NOT NULL,
        payload TEXT NOT NULL,
        journaled_at REAL NOT NULL,
        acked_at REAL
    )""",
    "CREATE INDEX IF NOT EXISTS outbox_pending ON outbox (acked_at)",
    # no declared types: a damaged row's values are kept exactly as they were
    """CREATE TABLE IF NOT EXISTS dead_letter (
        id INTEGER PRIMARY KEY AUTOINCREMENT,
        seq INTEGER NOT NULL, op, key, payload, journaled_at,
        failed_at REAL NOT NULL,
        reason TEXT NOT NULL
    )""",
    "CREATE TABLE IF NOT EXISTS meta (name TEXT PRIMARY KEY, value TEXT NOT NULL)",
)


# -- opening -----------------------------------------------------------------------------------


def prepare_directory(path: Path) -> None:
    """Create ``path``'s directory (with its parents) unless it exists.

    Raises:
        OutboxCorruptError: ``path`` is a directory.
        OutboxError: the directory cannot be created (a file in the way, no permission).
    """
    if path.is_dir():
        raise not_a_file(path)
    parent = path.parent
    try:
        parent.mkdir(parents=True, exist_ok=True)
        if not parent.is_dir():
            raise NotADirectoryError(20, "Not a directory")
    except OSError as exc:
        blocker = next((p for p in (parent, *parent.parents) if os.path.lexists(p)), parent)
        if blocker.is_dir():
            fix = (f"make {shlex.quote(str(blocker))} writable for this user, or set MEMORY_OUTBOX_PATH "
                   "(or XDG_CACHE_HOME) to a writable location")
        else:
            fix = (f"a file is where a directory must be: mv {shlex.quote(str(blocker))} "
                   f"{shlex.quote(str(blocker) + '.moved')}, or set MEMORY_OUTBOX_PATH to a file in another directory")
        raise OutboxError(
            f"cannot create the outbox directory {parent} for {path}: {exc.strerror or exc}", path=str(path), fix=fix
        ) from exc


def create(path: Path, meta: Mapping[str, str]) -> None:
    """Build a complete outbox under a temporary name in ``path``'s directory, then hard-link it
    to ``path``; if another process created ``path`` meanwhile, keep theirs."""
    tmp = path.with_name(f".{path.name}.{os.getpid()}-{secrets.token_hex(4)}.tmp")
    try:
        db = sqlite3.connect(tmp, isolation_level=None)
        try:
            db.execute("PRAGMA journal_mode=WAL")
            db.execute("BEGIN")
            for statement in SCHEMA:
                db.execute(statement)
            db.executemany("INSERT INTO meta (name, value) VALUES (?, ?)", list(meta.items()))
            db.execute("COMMIT")
        finally:
            db.close()  # checkpoints the WAL into the file
        wal = Path(f"{path}-wal")
        if not os.path.lexists(path) and wal.exists() and wal.stat().st_size > 0:
            raise corrupt(path, f"is missing, but its write-ahead log {wal} is there (it may hold writes)", wal_only=True)
        try:
            os.link(tmp, path)
        except FileExistsError:
            pass  # another process created it first: use theirs
        except OSError:  # a filesystem without hard links
            if not os.path.lexists(path):
                os.replace(tmp, path)
    except (sqlite3.Error, OSError) as exc:
        if isinstance(exc, OutboxError):
            raise
        raise OutboxError(
            f"cannot create the outbox {path}: {exc}",
            path=str(path),
            fix=f"check that {shlex.quote(str(path.parent))} is writable and has free space, or set MEMORY_OUTBOX_PATH",
        ) from exc
    finally:
        for leftover in (tmp, Path(f"{tmp}-wal"), Path(f"{tmp}-shm")):
            with suppress(OSError):
                leftover.unlink()


def connect(path: Path, mode: str, timeout: float) -> sqlite3.Connection:
    """A connection to an existing file (``mode=rw`` or ``ro``: never creates it)."""
    check_header(path)
    uri = f"file:{quote(os.fsencode(path.absolute()))}?mode={mode}"
    try:
        return sqlite3.connect(uri, uri=True, isolation_level=None, check_same_thread=False, timeout=timeout)
    except sqlite3.Error as exc:
        raise OutboxError(
            f"cannot open the outbox {path}: {exc}",
            path=str(path),
            fix=f"check that {shlex.quote(str(path))} and its directory are readable and writable by this user",
        ) from exc


def check_header(path: Path) -> None:
    """Raise OutboxCorruptError unless the file starts like a SQLite database."""
    try:
        with open(path, "rb") as f:
            head = f.read(100)
    except IsADirectoryError:
        raise not_a_file(path) from None
    except OSError as exc:
        raise OutboxError(
            f"cannot read the outbox {path}: {exc.strerror or exc}",
            path=str(path),
            fix=f"make {shlex.quote(str(path))} readable and writable by this user",
        ) from exc
    if not head:
        raise corrupt(path, "is empty (0 bytes); this package never leaves an empty outbox, so it is not one of its outboxes")
    if not head.startswith(_MAGIC):
        raise corrupt(path, f"is not a SQLite database (it starts with {head[:16]!r})")
    if len(head) < 100:
        raise corrupt(path, f"is truncated ({len(head)} bytes, shorter than a SQLite header)")


def check(db: sqlite3.Connection, path: Path) -> set[str]:
    """``PRAGMA quick_check`` and the outbox table's columns; returns the table names.

    Raises:
        OutboxCorruptError: damaged, or not an outbox.
        sqlite3.Error: SQLite could not read it at all.
    """
    problems = [row[0] for row in db.execute("PRAGMA quick_check").fetchall()]
    if problems != ["ok"]:
        raise corrupt(path, f"is damaged (PRAGMA quick_check: {'; '.join(map(str, problems[:3]))})")
    tables = {row[0] for row in db.execute("SELECT name FROM sqlite_master WHERE type = 'table'")}
    if "outbox" not in tables:
        listed = ", ".join(sorted(tables)) or "none"
        quoted = shlex.quote(str(path))
        raise corrupt(
            path,
            f"is a SQLite database of another application (tables: {listed}), not an outbox",
            fix=f"set MEMORY_OUTBOX_PATH to another file; if {quoted} is not needed, {move_fix(path)}",
        )
    columns = {row[1] for row in db.execute("PRAGMA table_info(outbox)")}
    if not _COLUMNS <= columns:
        raise corrupt(path, f"has an outbox table without the columns {', '.join(sorted(_COLUMNS - columns))}")
    return tables


def version(meta: Mapping[str, str], path: Path) -> int:
    try:
        return int(meta.get("schema_version", "1"))
    except ValueError:
        raise corrupt(path, f"has an unreadable schema_version {meta['schema_version']!r}") from None


def fresh_meta(now: float) -> dict[str, str]:
    return {"schema_version": str(SCHEMA_VERSION), "created_at": iso(now)}


def iso(seconds: float) -> str:
    return datetime.fromtimestamp(seconds, timezone.utc).isoformat()


# -- errors ------------------------------------------------------------------------------------


def move_fix(path: Path, *, wal_only: bool = False) -> str:
    """``mv`` commands that set the file aside, with its ``-wal`` (and ``-shm``) when the log
    holds frames: they belong to it, and a new database must not start with them."""
    wal = Path(f"{path}-wal")
    suffixes = [] if wal_only else [""]
    if wal.exists() and wal.stat().st_size > 0:
        suffixes += ["-wal", "-shm"] if os.path.lexists(f"{path}-shm") else ["-wal"]
    moves = [f"mv {shlex.quote(f'{path}{s}')} {shlex.quote(f'{path}.damaged{s}')}" for s in suffixes]
    return " && ".join(moves) + " (it is kept for inspection), then start again; a new outbox is created"


def corrupt(path: Path, reason: str, *, wal_only: bool = False, fix: str | None = None) -> OutboxCorruptError:
    """The error for a file at ``path`` that is not a usable outbox; the fix moves it aside."""
    return OutboxCorruptError(
        f"outbox {path} {reason}",
        path=str(path),
        fix=fix or move_fix(path, wal_only=wal_only),
        reason=f"{path} {reason}",
    )


def not_a_file(path: Path) -> OutboxCorruptError:
    quoted = shlex.quote(str(path))
    reason = f"{path} is a directory, not an outbox file"
    return OutboxCorruptError(
        f"outbox {reason}",
        path=str(path),
        fix=f"set MEMORY_OUTBOX_PATH to a file (e.g. {shlex.quote(str(path / 'outbox.sqlite3'))}), or move the "
        f"directory aside: mv {quoted} {shlex.quote(str(path) + '.moved')}",
        reason=reason,
    )


def newer(path: Path, version: int) -> OutboxCorruptError:
    reason = f"{path} has schema version {version}; this version of memory-primitives reads up to {SCHEMA_VERSION}"
    fix = f"upgrade memory-primitives (python -m pip install -U memory-primitives), or {move_fix(path)}"
    return OutboxCorruptError(f"outbox {reason}", path=str(path), fix=fix, reason=reason)


def runtime_error(path: Path, action: str, exc: sqlite3.Error) -> OutboxError:
    """A sqlite3 error while using the outbox as an error naming the file and a fix for its
    kind (damaged, disk full, lock held, not writable, closed, I/O)."""
    name = getattr(exc, "sqlite_errorname", "") or ""
    message = f"outbox {path}: could not {action}: {exc}"
    if name.startswith(("SQLITE_CORRUPT", "SQLITE_NOTADB")):
        return OutboxCorruptError(message, path=str(path), fix=move_fix(path), reason=f"{path} is damaged ({exc})")
    quoted = shlex.quote(str(path))
    if name.startswith("SQLITE_FULL"):
        fix = f"free space on the filesystem of {shlex.quote(str(path.parent))} (df -h {shlex.quote(str(path.parent))})"
    elif name.startswith(("SQLITE_BUSY", "SQLITE_LOCKED")):
        fix = f"another process holds the outbox's write lock; find it with: fuser {quoted}"
    elif name.startswith(("SQLITE_READONLY", "SQLITE_PERM", "SQLITE_CANTOPEN")):
        fix = f"make {quoted} and its directory writable by this user"
    elif isinstance(exc, sqlite3.ProgrammingError):
        fix = "the Outbox was closed; open a new one"
    else:
        fix = f"check the disk and filesystem holding {quoted} (dmesg for I/O errors); if the file is damaged, {move_fix(path)}"
    return OutboxError(message, path=str(path), fix=fix)
