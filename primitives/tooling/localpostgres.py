"""Run a PostgreSQL server on loopback, without Docker: for tests and a first try of sync.

The binaries come from the OS (Debian/Ubuntu: ``apt-get install -y --no-install-recommends
postgresql``), found under the newest ``/usr/lib/postgresql/<version>/bin`` (or ``bin_dir``).
A server is one data directory: ``initdb`` fills it the first time (bootstrap superuser
``postgres``), ``pg_ctl`` starts and stops it. It listens on ``127.0.0.1`` only; its unix socket is
in the data directory (mode 0700), where the owner connects without a password for setup; TCP
clients need a password (``scram-sha-256``). Each :meth:`LocalPostgres.start` sets the login role's
password and creates its database when missing, so :attr:`LocalPostgres.url` always works.

PostgreSQL refuses to run as root: when this process is root, every PostgreSQL binary runs as the
``postgres`` OS user (created by the Debian package), which must own the data directory (it is
chowned) and be able to reach it (``/root`` and pytest's ``/tmp/pytest-of-root`` are not reachable;
see :func:`can_serve_from`).
"""

from __future__ import annotations

import os
import pwd
import re
import secrets
import shutil
import signal
import subprocess
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path

from primitives.errors import PrimitivesError
from primitives.tooling.localredis import free_port

__all__ = [
    "LocalPostgres",
    "LocalPostgresError",
    "PostgresBinaries",
    "can_serve_from",
    "find_postgres",
    "server_os_user",
]

_INSTALL_HINT = "apt-get update && apt-get install -y --no-install-recommends postgresql"
#: Where Debian/Ubuntu put each major version's server binaries.
_SYSTEM_ROOT = Path("/usr/lib/postgresql")
_BINARIES = ("initdb", "pg_ctl", "postgres", "psql")
#: The config file each start writes into the data directory (included by ``postgresql.conf``).
_CONF = "local-postgres.conf"
#: Linux's ``sun_path`` holds 108 bytes, with the terminating NUL.
_MAX_SOCKET_PATH = 107


class LocalPostgresError(PrimitivesError, RuntimeError):
    """No usable PostgreSQL binaries, or the server did not start; the message says what to do."""


@dataclass(frozen=True, slots=True)
class PostgresBinaries:
    """The directory holding ``initdb``, ``pg_ctl``, ``postgres`` and ``psql``."""

    bin_dir: Path

    def __getitem__(self, name: str) -> str:
        return str(self.bin_dir / name)


def _version_key(path: Path) -> tuple[int, ...]:  # ".../15/bin" -> (15,), ".../9.6/bin" -> (9, 6)
    return tuple(int(part) for part in re.findall(r"\d+", path.parent.name)) or (-1,)


def find_postgres(bin_dir: str | os.PathLike[str] | None = None) -> PostgresBinaries:
    """Locate the server binaries: ``bin_dir`` if given, else the newest
    ``/usr/lib/postgresql/<version>/bin``, else the directory of ``initdb`` on ``PATH``.

    Raises:
        LocalPostgresError: a binary is missing; the message gives the install command.
    """
    if bin_dir is not None:
        candidates = [Path(bin_dir)]
    else:
        candidates = sorted(_SYSTEM_ROOT.glob("*/bin"), key=_version_key, reverse=True)
        on_path = shutil.which("initdb")
        if on_path:
            candidates.append(Path(on_path).parent)
    for candidate in candidates:
        if all(os.access(candidate / name, os.X_OK) for name in _BINARIES):
            return PostgresBinaries(candidate)
    where = ", ".join(str(c) for c in candidates) or f"{_SYSTEM_ROOT}/*/bin and PATH"
    raise LocalPostgresError(
        f"no PostgreSQL server binaries ({', '.join(_BINARIES)}) in {where}; install them with: {_INSTALL_HINT}"
    )


def server_os_user() -> pwd.struct_passwd | None:
    """The OS user PostgreSQL runs as: ``postgres`` when this process is root, else ``None``
    (this process's own user).

    Raises:
        LocalPostgresError: root, and there is no ``postgres`` user.
    """
    if os.geteuid() != 0:
        return None
    try:
        return pwd.getpwnam("postgres")
    except KeyError:
        raise LocalPostgresError(
            "PostgreSQL refuses to run as root and there is no 'postgres' OS user to run it as; "
            f"install the server ({_INSTALL_HINT}) or run as a non-root user"
        ) from None


def _run(
    cmd: list[str], user: pwd.struct_passwd | None, *, input: str | None = None, timeout: float = 60.0
) -> subprocess.CompletedProcess[str]:
    """Run ``cmd`` as ``user`` (``None``: as this process), from ``/`` (root's cwd may be
    unreachable for ``user``), without ``PG*`` variables (``PGHOST``, ``PGOPTIONS``, ... would
    redirect the tools); output captured as text."""
    env = {k: v for k, v in os.environ.items() if not k.startswith("PG")}
    identity: dict = {}
    if user is not None:
        env.update(HOME=user.pw_dir, USER=user.pw_name, LOGNAME=user.pw_name)
        groups = os.getgrouplist(user.pw_name, user.pw_gid)
        identity = dict(user=user.pw_uid, group=user.pw_gid, extra_groups=groups)
    return subprocess.run(cmd, input=input, capture_output=True, text=True, timeout=timeout, cwd="/", env=env,
                          check=False, **identity)  # fmt: skip


def can_serve_from(path: str | os.PathLike[str]) -> bool:
    """The server's OS user can reach ``path`` (an existing directory): always when this process is
    not root; as root, ``postgres`` needs search permission on it and every parent.

    Raises:
        LocalPostgresError: root, and there is no ``postgres`` user.
    """
    user = server_os_user()
    if user is None:
        return True
    return _run(["test", "-x", str(Path(path).resolve())], user, timeout=10).returncode == 0


def _attached(shmid: str) -> bool:
    """A System V shared memory segment ``shmid`` exists and a process is attached to it."""
    for row in Path("/proc/sysvipc/shm").read_text().splitlines()[1:]:
        cols = row.split()
        if len(cols) > 6 and cols[1] == shmid:
            return cols[6] != "0"
    return False


def _literal(value: str) -> str:
    """``value`` as an SQL (or ``postgresql.conf``) string literal; ``standard_conforming_strings``
    is on since 9.1, so only quotes are doubled."""
    if "\0" in value:
        raise LocalPostgresError("user, password and database must not contain NUL characters")
    return "'" + value.replace("'", "''") + "'"


class LocalPostgres:
    """A PostgreSQL server on ``127.0.0.1:port`` serving data directory ``dir``.

    Args:
        dir: The data directory; created if missing, initialised by the first :meth:`start` and
            kept by :meth:`stop` (a later server on the same ``dir`` finds the data). ``None``:
            a fresh directory under the system temporary directory that :meth:`stop` removes.
        port: TCP port; a free one when ``None``.
        user: The login role in :attr:`url` (created when missing; it owns ``database``).
        password: Its password, set at every start; a random one (32 hex characters) when ``None``.
        database: The database in :attr:`url`, created when missing.
        fsync: ``False`` runs with ``fsync=off`` (and ``initdb --no-sync``): faster, for tests;
            data survives a server crash but not a machine crash.
        bin_dir: The directory with ``initdb``, ``pg_ctl``, ``postgres`` and ``psql`` (see
            :func:`find_postgres`).

    Raises:
        LocalPostgresError: an empty ``user``, ``password`` or ``database``.
    """

    def __init__(
        self,
        *,
        dir: str | os.PathLike[str] | None = None,
        port: int | None = None,
        user: str = "primitives",
        password: str | None = None,
        database: str = "primitives",
        fsync: bool = True,
        bin_dir: str | os.PathLike[str] | None = None,
    ) -> None:
        self.temporary = dir is None
        base = Path(tempfile.gettempdir()) / f"memory-primitives-postgres-{secrets.token_hex(6)}"
        self.dir = base if dir is None else Path(dir).resolve()
        self.port = free_port() if port is None else port
        self.user = user
        self.password = secrets.token_hex(16) if password is None else password
        self.database = database
        self.fsync = fsync
        self.bin_dir = bin_dir
        for name, value in (("user", user), ("password", self.password), ("database", database)):
            if not value:
                raise LocalPostgresError(f"{name} must not be empty")

    @property
    def url(self) -> str:
        """``postgresql://USER:PASSWORD@127.0.0.1:PORT/DATABASE`` (parts percent-encoded)."""
        from urllib.parse import quote

        user, password, db = (quote(part, safe="") for part in (self.user, self.password, self.database))
        return f"postgresql://{user}:{password}@127.0.0.1:{self.port}/{db}"

    @property
    def logfile(self) -> Path:
        """The server's log (``pg_ctl -l``), inside the data directory."""
        return self.dir / "postgres.log"

    def _log_tail(self, lines: int = 8) -> str:
        try:
            return " | ".join(self.logfile.read_text(errors="replace").splitlines()[-lines:])
        except OSError:
            return "(no log)"

    def _prepare_dir(self, user: pwd.struct_passwd | None) -> None:
        self.dir.mkdir(parents=True, exist_ok=True, mode=0o700)
        if user is None:
            return
        if self.dir.stat().st_uid != user.pw_uid:
            for path in [self.dir, *self.dir.rglob("*")]:
                os.lchown(path, user.pw_uid, user.pw_gid)
        if not can_serve_from(self.dir):
            raise LocalPostgresError(
                f"PostgreSQL runs as the 'postgres' OS user (this process is root) and that user cannot "
                f"reach {self.dir}; pick a directory it can reach (e.g. under {tempfile.gettempdir()}, "
                f"or dir=None for a temporary one) or run as a non-root user"
            )

    def _initdb(self, bins: PostgresBinaries, user: pwd.struct_passwd | None) -> None:
        cmd = [bins["initdb"], "-D", str(self.dir), "-U", "postgres", "-E", "UTF8", "--no-locale",
               "--auth-local=trust", "--auth-host=scram-sha-256"]  # fmt: skip
        if not self.fsync:
            cmd.append("--no-sync")
        done = _run(cmd, user, timeout=120)
        if done.returncode != 0:
            tail = " | ".join((done.stderr or done.stdout).strip().splitlines()[-5:])
            raise LocalPostgresError(f"initdb {self.dir} failed: {tail}")
        with (self.dir / "postgresql.conf").open("a") as conf:
            conf.write(f"\ninclude_if_exists = '{_CONF}'\n")

    def _write_conf(self, user: pwd.struct_passwd | None) -> None:
        path = self.dir / _CONF
        path.write_text(
            "# written by memory-primitives' LocalPostgres at every start\n"
            f"port = {self.port}\n"
            "listen_addresses = '127.0.0.1'\n"
            f"unix_socket_directories = {_literal(str(self.dir))}\n"
            "unix_socket_permissions = 0700\n"
            f"fsync = {'on' if self.fsync else 'off'}\n"
        )
        if user is not None:
            os.chown(path, user.pw_uid, user.pw_gid)

    def start(self, *, timeout: float = 30.0) -> str:
        """Initialise ``dir`` if new, start the server, wait until it accepts connections, then
        set the role's password and create its database when missing; returns :attr:`url`.

        A data directory left by a killed server (stale ``postmaster.pid``) starts: PostgreSQL
        removes the stale lock and replays its write-ahead log.

        Raises:
            LocalPostgresError: no binaries; as root, no ``postgres`` user or a ``dir`` it cannot
                reach; a server already runs on ``dir``; the port is already in use; ``initdb``
                failed; or the server did not accept connections within ``timeout`` seconds (the
                log's last lines are in the message).
        """
        bins = find_postgres(self.bin_dir)
        user = server_os_user()
        socket_path = self.dir / f".s.PGSQL.{self.port}"
        if len(os.fsencode(socket_path)) > _MAX_SOCKET_PATH:
            raise LocalPostgresError(f"{self.dir} is too long for a unix socket path; pick a shorter dir")
        self._prepare_dir(user)
        if not (self.dir / "PG_VERSION").exists():
            self._initdb(bins, user)
        elif self.pid() is not None:
            raise LocalPostgresError(f"a server already runs on {self.dir} (pid {self.pid()}); stop it first")
        deadline = time.monotonic() + timeout
        self._clear_stale_lock(deadline)
        self._write_conf(user)
        while True:
            remaining = max(1, int(deadline - time.monotonic()))
            cmd = [bins["pg_ctl"], "start", "-w", "-t", str(remaining), "-D", str(self.dir), "-l", str(self.logfile)]
            done = _run(cmd, user, timeout=remaining + 30)
            if done.returncode == 0:
                break
            tail = self._log_tail()
            # After a SIGKILL the old server's children hold its shared memory for a moment.
            if "shared memory block is still in use" in tail and time.monotonic() < deadline:
                time.sleep(0.2)
                continue
            self.stop()
            if "already in use" in tail:
                raise LocalPostgresError(f"port {self.port} is already in use; pick another port: {tail}")
            raise LocalPostgresError(f"PostgreSQL on port {self.port} did not start: {tail}")
        self._ensure_role_and_database(bins, user)
        return self.url

    def _clear_stale_lock(self, deadline: float) -> None:
        """Remove the ``postmaster.pid`` of a dead server once no process uses its shared memory.

        PostgreSQL removes a stale lock itself, unless its pid is a zombie (a killed server whose
        parent, often a container's init, never reaps it): ``kill(pid, 0)`` still succeeds and it
        refuses to start. Left to PostgreSQL when ``/proc/sysvipc/shm`` cannot be read.

        Raises:
            LocalPostgresError: the old server's processes still hold its shared memory at
                ``deadline``.
        """
        lock = self.dir / "postmaster.pid"
        try:
            lines = lock.read_text().splitlines()
            Path("/proc/sysvipc/shm").read_text()
        except OSError:
            return
        shmid = lines[6].split()[1] if len(lines) > 6 and len(lines[6].split()) == 2 else None
        while shmid is not None and _attached(shmid) and time.monotonic() < deadline:
            time.sleep(0.1)
        if shmid is not None and _attached(shmid):
            raise LocalPostgresError(f"processes of a killed server still use {self.dir}'s shared memory "
                                     f"(shmid {shmid}); end them (ipcs -mp shows their pids)")  # fmt: skip
        lock.unlink(missing_ok=True)

    def _ensure_role_and_database(self, bins: PostgresBinaries, user: pwd.struct_passwd | None) -> None:
        role, password, db = _literal(self.user), _literal(self.password), _literal(self.database)
        script = f"""
SELECT format('CREATE ROLE %I LOGIN', {role}) WHERE NOT EXISTS (SELECT FROM pg_roles WHERE rolname = {role})\\gexec
SELECT format('ALTER ROLE %I WITH LOGIN PASSWORD %L', {role}, {password})\\gexec
SELECT format('CREATE DATABASE %I OWNER %I', {db}, {role})
 WHERE NOT EXISTS (SELECT FROM pg_database WHERE datname = {db})\\gexec
"""
        cmd = [bins["psql"], "-X", "-q", "-v", "ON_ERROR_STOP=1", "-h", str(self.dir), "-p", str(self.port),
               "-U", "postgres", "-d", "postgres", "-f", "-"]  # fmt: skip
        done = _run(cmd, user, input=script, timeout=60)
        if done.returncode != 0:
            raise LocalPostgresError(f"could not set up role {self.user!r} and database {self.database!r}: "
                                     f"{done.stderr.strip()}")  # fmt: skip

    def pid(self) -> int | None:
        """The postmaster's process id from ``postmaster.pid`` when that process is alive, else
        ``None``."""
        try:
            pid = int((self.dir / "postmaster.pid").read_text().split("\n", 1)[0])
            os.kill(pid, 0)
        except (OSError, ValueError):
            return None
        try:  # a zombie (killed, not yet reaped) or a reused pid is not this server
            stat = Path(f"/proc/{pid}/stat").read_text()
        except OSError:
            return pid
        name, state = stat[stat.index("(") + 1 : stat.rindex(")")], stat[stat.rindex(")") + 2 :][:1]
        return pid if name.startswith("postgres") and state != "Z" else None

    def running(self) -> bool:
        """The server accepts connections on ``127.0.0.1:port`` (``pg_isready``)."""
        try:
            bins = find_postgres(self.bin_dir)
        except LocalPostgresError:
            return False
        ready = bins.bin_dir / "pg_isready"
        if not ready.exists():
            return self.pid() is not None
        cmd = [str(ready), "-q", "-h", "127.0.0.1", "-p", str(self.port), "-t", "2"]
        return _run(cmd, None, timeout=10).returncode == 0

    def kill(self) -> None:
        """SIGKILL the postmaster (no shutdown checkpoint, ``postmaster.pid`` left behind): for
        crash tests. Its children notice and exit on their own."""
        pid = self.pid()
        if pid is None:
            return
        try:
            os.kill(pid, signal.SIGKILL)
        except ProcessLookupError:
            return
        deadline = time.monotonic() + 10
        while time.monotonic() < deadline and self.pid() == pid:
            time.sleep(0.05)

    def stop(self, timeout: float = 30.0) -> bool:
        """Stop the server (``pg_ctl stop -m fast``: clients are disconnected, a checkpoint is
        written) and wait for it; a temporary ``dir`` is then removed. ``False`` when no server
        was running."""
        was_running = self.pid() is not None
        if was_running:
            bins = find_postgres(self.bin_dir)
            cmd = [bins["pg_ctl"], "stop", "-m", "fast", "-w", "-t", str(int(timeout)), "-D", str(self.dir)]
            if _run(cmd, server_os_user(), timeout=timeout + 30).returncode != 0:
                self.kill()
        if self.temporary:
            shutil.rmtree(self.dir, ignore_errors=True)
        return was_running
