"""Real Redis servers for integration tests, started the way ``memory-primitives redis start``
starts one (:class:`primitives.localredis.LocalRedis`), on free loopback ports.

Under ``CI=true`` a server that cannot start fails the test run; elsewhere the tests that need it
are skipped with the reason.
"""

from __future__ import annotations

import os
from collections.abc import Iterator
from pathlib import Path

import pytest

from primitives.localredis import LocalRedis, LocalRedisError


def start_or_fail(tmp: Path, **kwargs: object) -> LocalRedis:
    options: dict = {"persistent": False, **kwargs}
    server = LocalRedis(dir=tmp, **options)
    try:
        server.start()
    except LocalRedisError as exc:
        if os.environ.get("CI") == "true":
            pytest.fail(f"Redis could not start under CI=true: {exc}")
        pytest.skip(f"Redis could not start: {exc}")
    return server


def running(tmp: Path, **kwargs: object) -> Iterator[LocalRedis]:
    server = start_or_fail(tmp, **kwargs)
    try:
        yield server
    finally:
        server.stop()
