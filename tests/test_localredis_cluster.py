"""The test servers themselves: the 3-master Redis Cluster (``LocalRedisCluster``) and the
TLS-capable ``LocalRedis``, against real processes."""

from __future__ import annotations

from pathlib import Path

import pytest
from redis.exceptions import MovedError

from primitives.errors import PrimitivesError
from primitives.tooling.localcluster import LocalRedisCluster, find_redis_cli
from primitives.tooling.localredis import LocalRedis, LocalRedisError, TLSConfig, redis_command, supports_tls
from primitives.redis_connection import connect, is_cluster

# --- no server -------------------------------------------------------------------------------


def test_a_cluster_needs_three_masters(tmp_path: Path) -> None:
    with pytest.raises(LocalRedisError, match="at least 3"):
        LocalRedisCluster(dir=tmp_path, masters=2)


def test_a_tls_only_server_needs_tls(tmp_path: Path) -> None:
    with pytest.raises(LocalRedisError, match="tls"):
        LocalRedis(dir=tmp_path, port=0)


def test_tls_needs_a_system_server_not_the_modules(tmp_path: Path) -> None:
    tls = TLSConfig(tmp_path / "c.pem", tmp_path / "k.pem", tmp_path / "ca.pem")
    with pytest.raises(LocalRedisError, match="modules=False"):
        LocalRedis(dir=tmp_path, tls=tls)
    assert issubclass(LocalRedisError, PrimitivesError)


def test_supports_tls_looks_for_openssl_in_the_binary(tmp_path: Path) -> None:
    with_tls, without = tmp_path / "with", tmp_path / "without"
    with_tls.write_bytes(b"\x7fELF...SSL_CTX_new\x00...")
    without.write_bytes(b"\x7fELF...Failed finding TLS support\x00")
    assert supports_tls(with_tls) is True
    assert supports_tls(without) is False
    assert supports_tls(tmp_path / "missing") is False


def test_a_tls_server_url_is_rediss_and_its_command_line_has_the_certificates(tmp_path: Path) -> None:
    tls = TLSConfig(tmp_path / "c.pem", tmp_path / "k.pem", tmp_path / "ca.pem", auth_clients="yes")
    server = LocalRedis(dir=tmp_path, port=0, modules=False, tls=tls, tls_port=7000, server="/bin/true")
    assert server.url == server.tls_url == "rediss://127.0.0.1:7000/0"
    cmd = server.command(daemonize=False)
    assert cmd[cmd.index("--port") + 1] == "0"
    assert cmd[cmd.index("--tls-port") + 1] == "7000"
    assert cmd[cmd.index("--tls-ca-cert-file") + 1] == str(tmp_path / "ca.pem")
    assert cmd[cmd.index("--tls-auth-clients") + 1] == "yes"
    with pytest.raises(LocalRedisError, match="no TLS port"):
        _ = LocalRedis(dir=tmp_path, modules=False).tls_url


# --- the session cluster ---------------------------------------------------------------------


@pytest.mark.integration
def test_every_node_reports_the_cluster_ok(redis_cluster: LocalRedisCluster) -> None:
    assert len(redis_cluster.ports) == 3 == len(set(redis_cluster.ports))
    assert redis_cluster.url == f"redis://127.0.0.1:{redis_cluster.ports[0]}"
    for port in redis_cluster.ports:
        info = redis_command(port, "CLUSTER", "INFO").decode()
        assert "cluster_state:ok" in info
        assert "cluster_slots_assigned:16384" in info
        assert "cluster_known_nodes:3" in info
    nodes_files = {node.dir / "nodes.conf" for node in redis_cluster.nodes}
    assert len(nodes_files) == 3 and all(f.is_file() for f in nodes_files)


@pytest.mark.integration
async def test_the_cluster_client_sees_three_masters_and_routes_keys_by_slot(redis_cluster) -> None:
    client = connect(redis_cluster.url, cluster=True)
    try:
        assert is_cluster(client)
        await client.initialize()
        primaries = client.get_primaries()
        assert sorted(node.port for node in primaries) == sorted(redis_cluster.ports)
        # one key per master, found by asking the client which node owns each slot
        by_port: dict[int, str] = {}
        i = 0
        while len(by_port) < 3:
            key = f"cluster-sanity:{i}"
            by_port.setdefault(client.get_node_from_key(key).port, key)
            i += 1
        for port, key in by_port.items():
            await client.set(key, f"on {port}")
        for port, key in by_port.items():
            # a plain connection to the owner serves the key; every other node answers MOVED
            node = connect(f"redis://127.0.0.1:{port}")
            try:
                assert await node.get(key) == f"on {port}".encode()
                for other_port, other_key in by_port.items():
                    if other_port != port:
                        with pytest.raises(MovedError) as moved:
                            await node.get(other_key)
                        assert moved.value.port == other_port
            finally:
                await node.aclose()
        assert await client.mget_nonatomic(list(by_port.values())) == [
            f"on {port}".encode() for port in by_port
        ]
        # keys sharing a hash tag share a slot, so a multi-key command on them is allowed
        await client.mset({"{tagged}:a": "1", "{tagged}:b": "2"})
        assert await client.mget("{tagged}:a", "{tagged}:b") == [b"1", b"2"]
    finally:
        await client.aclose()


@pytest.mark.integration
def test_a_cluster_stops_every_node(tmp_path: Path) -> None:
    from tests.redis_server import running_cluster

    started = running_cluster(tmp_path)
    cluster = next(started)
    nodes = list(cluster.nodes)
    assert cluster.running()
    started.close()  # the fixture's teardown
    assert not any(node.running() for node in nodes)
    assert all(node.process is None for node in nodes)
    assert cluster.nodes == [] and not cluster.running()


@pytest.mark.integration
def test_redis_cli_is_installed_beside_a_tls_capable_server() -> None:
    """What CI's apt-get step provides; under CI=true its absence fails here, not as a skip."""
    from tests.redis_server import unavailable

    try:
        cli = find_redis_cli()
    except LocalRedisError as exc:
        unavailable(str(exc))
    server = cli.parent / "redis-server"
    assert server.is_file() and supports_tls(server.resolve())


# --- the TLS server --------------------------------------------------------------------------


@pytest.mark.integration
def test_the_tls_server_has_no_plain_port_and_answers_over_tls(tls_redis_server) -> None:
    server = tls_redis_server.server
    assert server.port == 0
    assert tls_redis_server.url == f"rediss://127.0.0.1:{server.tls_port}/0"
    assert server.tls is not None
    assert redis_command(server.tls_port, "PING", tls=server.tls.client_context()) == b"+PONG"
    # the same port without TLS: the server drops the connection
    with pytest.raises(OSError):
        redis_command(server.tls_port, "PING", timeout=2.0)
