"""Real PostgreSQL servers for integration tests, started the way a user starts one
(:class:`primitives.tooling.localpostgres.LocalPostgres`): Debian's PostgreSQL binaries, a data
directory of the test's own, a free loopback port, ``fsync=off``.

As root the server runs as the ``postgres`` OS user, which cannot reach pytest's
``/tmp/pytest-of-root``; the data directory is then a fresh one in the system temporary directory,
removed afterwards (:func:`kept_data_dir`).

Under ``CI=true`` a server that cannot start fails the test run; elsewhere the tests that need it
are skipped with the reason (:func:`tests.redis_server.unavailable`).
"""

from __future__ import annotations

import shutil
import tempfile
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

from primitives.tooling.localpostgres import LocalPostgres, LocalPostgresError, can_serve_from
from tests.redis_server import unavailable

#: Another process may take a port between free_port() and the server's bind: try fresh ports.
_ATTEMPTS = 3


@contextmanager
def kept_data_dir(tmp: Path) -> Iterator[Path]:
    """A data directory that outlives one server (restart tests): ``tmp / "postgres"`` when the
    server's OS user can reach ``tmp``, else a fresh directory in the system temporary directory,
    removed on exit."""
    try:
        reachable = can_serve_from(tmp)
    except LocalPostgresError as exc:
        unavailable(f"PostgreSQL could not start: {exc}")
    if reachable:
        yield tmp / "postgres"
        return
    fallback = Path(tempfile.mkdtemp(prefix="memory-primitives-pgtest-"))
    try:
        yield fallback
    finally:
        shutil.rmtree(fallback, ignore_errors=True)


def start_postgres(dir: Path | None, **kwargs: object) -> LocalPostgres:
    """A started server on ``dir`` (``None``: a temporary one that ``stop()`` removes), with
    ``fsync=False`` unless given; a port clash retries on a fresh port."""
    options: dict = {"fsync": False, **kwargs}
    for attempt in range(_ATTEMPTS):
        server = LocalPostgres(dir=dir, **options)
        try:
            server.start()
            return server
        except LocalPostgresError as exc:
            if "already in use" in str(exc) and "port" not in options and attempt + 1 < _ATTEMPTS:
                continue
            unavailable(f"PostgreSQL could not start: {exc}")
    raise AssertionError("unreachable")


def running_postgres(tmp: Path, **kwargs: object) -> Iterator[LocalPostgres]:
    """Start a server with its data under ``tmp`` (see :func:`kept_data_dir`), yield it, stop it."""
    with kept_data_dir(tmp) as data:
        server = start_postgres(data, **kwargs)
        try:
            yield server
        finally:
            server.stop()
