"""Shared fixtures. No fixture here starts a server: unit tests run anywhere."""

from __future__ import annotations

import os
from pathlib import Path

import pytest

from primitives.errors import PrimitivesError

#: The LoCoMo files shipped beside the project (``../shared/data/locomo``); override with LOCOMO_DATA.
LOCOMO_DIR = Path(
    os.environ.get("LOCOMO_DATA", Path(__file__).resolve().parents[2] / "shared" / "data" / "locomo")
)


class FakeClock:
    """A clock for expiry tests: seconds since the epoch, moved only by :meth:`advance`."""

    def __init__(self, start: float = 1_700_000_000.0) -> None:
        self.now = start

    def __call__(self) -> float:
        return self.now

    def advance(self, seconds: float) -> None:
        self.now += seconds


@pytest.fixture
def clock() -> FakeClock:
    return FakeClock()


@pytest.fixture
def locomo_dir() -> Path:
    if not LOCOMO_DIR.is_dir():
        if os.environ.get("CI") == "true":
            pytest.fail(f"LoCoMo data not found at {LOCOMO_DIR} (set LOCOMO_DATA)")
        pytest.skip(f"LoCoMo data not found at {LOCOMO_DIR}")
    return LOCOMO_DIR


@pytest.fixture(scope="session")
def redis_server(tmp_path_factory: pytest.TempPathFactory):
    """A Redis with the Query Engine and JSON for the whole test session."""
    from tests.redis_server import running

    yield from running(tmp_path_factory.mktemp("redis-stack"))


@pytest.fixture(scope="session")
def plain_redis_server(tmp_path_factory: pytest.TempPathFactory):
    """A Redis without modules: what plain Redis 7 or a managed service without search gives."""
    from tests.redis_server import running

    yield from running(tmp_path_factory.mktemp("redis-plain"), modules=False)


@pytest.fixture(scope="session")
def redis_cluster(tmp_path_factory: pytest.TempPathFactory):
    """A real 3-master Redis Cluster on loopback (Debian's redis-server 7.0, formed by
    ``redis-cli --cluster create``): ``.url`` is ``redis://127.0.0.1:PORT`` of one node, ``.ports``
    the nodes' ports; ``connect(redis_cluster.url, cluster=True)`` makes a client."""
    from tests.redis_server import running_cluster

    yield from running_cluster(tmp_path_factory.mktemp("redis-cluster"))


@pytest.fixture(scope="session")
def tls_redis_server(tmp_path_factory: pytest.TempPathFactory):
    """A TLS-only Redis (Debian's redis-server 7.0) with a CA and certificates made by trustme:
    ``.url`` is ``rediss://127.0.0.1:TLSPORT/0``, ``.ca_file`` the CA's PEM
    (``connect(url, ssl_ca_certs=ca_file)``), ``.client_cert_file``/``.client_key_file`` a client
    certificate from the same CA."""
    from tests.redis_server import running_tls

    yield from running_tls(tmp_path_factory.mktemp("redis-tls"))


@pytest.fixture(scope="session")
def acl_redis_server(tmp_path_factory: pytest.TempPathFactory):
    """A plain Redis whose default user has a password, only for ACL tests (they may empty it):
    ``.url`` (the default user), ``.port``, ``.admin_password``, ``.user_url(user, password)``."""
    from tests.redis_server import running_acl

    yield from running_acl(tmp_path_factory.mktemp("redis-acl"))


@pytest.fixture(scope="session")
def postgres_server(tmp_path_factory: pytest.TempPathFactory):
    """A real PostgreSQL (Debian's, run as the ``postgres`` OS user when tests run as root) on a
    free loopback port with ``fsync=off`` for the whole session
    (``primitives.tooling.localpostgres.LocalPostgres``): ``.url`` is
    ``postgresql://primitives:PASSWORD@127.0.0.1:PORT/primitives``; that role owns the database."""
    from tests.postgres_server import running_postgres

    yield from running_postgres(tmp_path_factory.mktemp("postgres"))


@pytest.fixture(scope="session")
def ams_server(tmp_path_factory: pytest.TempPathFactory):
    """A real Agent Memory Server 0.15.2 with token auth on, its own Redis and the local MiniLM
    embeddings endpoint (``tests.ams_server.AMSStack``: ``url``, ``token``, ``redis_url``, ...).
    The first use installs AMS's venv into the cache (a few minutes)."""
    from tests.ams_server import running

    yield from running(tmp_path_factory.mktemp("ams"))


@pytest.fixture(scope="session")
def ams_server_no_ltm(ams_server):
    """A second AMS on the same Redis and token, started with long-term memory disabled."""
    return ams_server.start_another(long_term_memory=False)


@pytest.fixture(scope="session")
def local_embedder():
    """The packaged all-MiniLM-L6-v2 model (384 dims), loaded once for the session."""
    try:
        from primitives.embeddings.local import SentenceTransformerEmbedder

        embedder = SentenceTransformerEmbedder()
        embedder.encode(["load the model once"])
    except (ImportError, OSError, PrimitivesError) as exc:
        if os.environ.get("CI") == "true":
            pytest.fail(f"the local embedding model cannot load: {exc}")
        pytest.skip(f"the local embedding model cannot load: {exc}")
    return embedder


@pytest.fixture
async def redis_client(plain_redis_server):
    """A redis-py asyncio client (bytes responses) on ``plain_redis_server``, closed after the test."""
    from primitives.redis_connection import connect

    client = connect(plain_redis_server.url)
    yield client
    await client.aclose()


@pytest.fixture
async def cluster_client(redis_cluster):
    """A fresh redis-py asyncio cluster client on ``redis_cluster``, closed after the test. Not
    initialised on purpose: the primitives initialise it themselves (see
    ``primitives.redis_connection.initialize_cluster``)."""
    from primitives.redis_connection import connect

    client = connect(redis_cluster.url, cluster=True)
    yield client
    await client.aclose()
