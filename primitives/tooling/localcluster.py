"""A real Redis Cluster on loopback ports, for tests and local trials: ``masters`` plain
``redis-server`` processes with ``--cluster-enabled yes``, formed by ``redis-cli --cluster create``.

``redis-cli`` comes from the system (Debian/Ubuntu: ``apt-get install redis-tools``; no PyPI
package ships it). The servers run the ``redis-server`` beside that ``redis-cli`` when there is
one, so the cluster runs one Redis version throughout.
"""

from __future__ import annotations

import os
import shutil
import subprocess
import time
from pathlib import Path

from primitives.tooling.localredis import LocalRedis, LocalRedisError, find_redis, free_port, redis_command

__all__ = ["LocalRedisCluster", "find_redis_cli"]

_CLI_INSTALL_HINT = (
    "redis-cli is needed to form a cluster; on Debian/Ubuntu: "
    "apt-get install -y --no-install-recommends redis-server redis-tools"
)
#: Redis Cluster's hash slot count (https://redis.io/docs/latest/operate/oss_and_stack/reference/cluster-spec/).
CLUSTER_SLOTS = 16384


def find_redis_cli() -> Path:
    """``redis-cli`` on ``PATH`` (or in ``/usr/bin``).

    Raises:
        LocalRedisError: there is none; the message gives the install command.
    """
    found = shutil.which("redis-cli") or shutil.which("redis-cli", path="/usr/bin:/usr/local/bin")
    if not found:
        raise LocalRedisError(f"no redis-cli found; {_CLI_INSTALL_HINT}")
    return Path(found)


def _distinct_free_ports(count: int) -> list[int]:
    """``count`` different ports that were free a moment ago."""
    ports: list[int] = []
    while len(ports) < count:
        port = free_port()
        if port not in ports:
            ports.append(port)
    return ports


class LocalRedisCluster:
    """A Redis Cluster of ``masters`` masters (no replicas) on ``127.0.0.1``.

    Each node has its own directory under ``dir``, its own ``nodes.conf`` and an explicit
    cluster bus port (``cluster-port``, Redis 7.0+), so a client port near 65535 is no problem
    (the default bus port is the client port + 10000).

    Args:
        dir: Working directory; one ``node-<port>`` folder per node is created in it.
        masters: Number of masters; Redis Cluster needs at least 3.
        node_timeout_ms: ``cluster-node-timeout`` in milliseconds.
        modules: Run the packaged Redis 8.2 with the Query Engine and JSON modules
            (:func:`~primitives.tooling.localredis.find_redis`) instead of the system Redis;
            each node then has its own RediSearch, which indexes that node's keys only.

    Attributes:
        nodes: The :class:`LocalRedis` of every node, in the order of :attr:`ports`.
    """

    def __init__(
        self, *, dir: str | os.PathLike[str], masters: int = 3, node_timeout_ms: int = 5000, modules: bool = False
    ) -> None:
        if masters < 3:
            raise LocalRedisError("a Redis Cluster needs at least 3 masters")
        self.dir = Path(dir).resolve()
        self.masters = masters
        self.node_timeout_ms = node_timeout_ms
        self.modules = modules
        self.nodes: list[LocalRedis] = []

    @property
    def ports(self) -> list[int]:
        """Client ports of the nodes."""
        return [node.port for node in self.nodes]

    @property
    def url(self) -> str:
        """``redis://127.0.0.1:PORT`` of the first node; ``connect(url, cluster=True)`` discovers
        the others."""
        if not self.nodes:
            raise LocalRedisError("the cluster is not started")
        return f"redis://127.0.0.1:{self.nodes[0].port}"

    @property
    def urls(self) -> list[str]:
        """``redis://`` URL of every node."""
        return [f"redis://127.0.0.1:{port}" for port in self.ports]

    def start(self, timeout: float = 60.0) -> str:
        """Start the nodes (in parallel), form the cluster and wait until every node reports
        ``cluster_state:ok`` with all 16384 slots assigned and knows every other node; returns
        :attr:`url`.

        Raises:
            LocalRedisError: no ``redis-cli`` or ``redis-server``, a node did not start,
                ``redis-cli --cluster create`` failed, or the cluster was not ``ok`` within
                ``timeout`` seconds. Every node started is stopped first.
        """
        cli = find_redis_cli()
        sibling = cli.parent / "redis-server"
        if self.modules:
            server = find_redis(modules=True).server
        else:
            server = sibling if sibling.is_file() else find_redis(modules=False).server
        self.dir.mkdir(parents=True, exist_ok=True)
        ports = _distinct_free_ports(2 * self.masters)
        deadline = time.monotonic() + timeout
        try:
            for port, bus_port in zip(ports[: self.masters], ports[self.masters :]):
                node_dir = self.dir / f"node-{port}"
                node = LocalRedis(
                    port=port,
                    dir=node_dir,
                    modules=self.modules,
                    persistent=False,
                    server=server,
                    args=[
                        "--cluster-enabled", "yes",
                        "--cluster-config-file", str(node_dir / "nodes.conf"),
                        "--cluster-port", str(bus_port),
                        "--cluster-node-timeout", str(self.node_timeout_ms),
                    ],
                )
                self.nodes.append(node)
                node.start(wait=False)
            for node in self.nodes:
                node.wait_ready(timeout=max(1.0, deadline - time.monotonic()))
            self._create(cli, deadline)
            self._wait_ok(deadline)
        except BaseException:
            self.stop()
            raise
        return self.url

    def _create(self, cli: Path, deadline: float) -> None:
        cmd = [str(cli), "--cluster", "create", *(f"127.0.0.1:{p}" for p in self.ports)]
        cmd += ["--cluster-replicas", "0", "--cluster-yes"]
        try:
            done = subprocess.run(
                cmd,
                capture_output=True,
                text=True,
                timeout=max(1.0, deadline - time.monotonic()),
                check=False,
            )
        except subprocess.TimeoutExpired as exc:
            raise LocalRedisError(f"redis-cli --cluster create did not finish: {exc}") from exc
        if done.returncode != 0:
            tail = " | ".join((done.stdout + done.stderr).strip().splitlines()[-5:])
            raise LocalRedisError(f"redis-cli --cluster create failed ({done.returncode}): {tail}")

    def _info(self, port: int) -> dict[str, str]:
        reply = redis_command(port, "CLUSTER", "INFO").decode(errors="replace")
        return dict(line.split(":", 1) for line in reply.splitlines() if ":" in line)

    def _wait_ok(self, deadline: float) -> None:
        last: dict[int, dict[str, str]] = {}
        while True:
            ready = True
            for port in self.ports:
                try:
                    info = last[port] = self._info(port)
                except OSError:
                    ready = False
                    continue
                ready = ready and (
                    info.get("cluster_state") == "ok"
                    and info.get("cluster_slots_assigned") == str(CLUSTER_SLOTS)
                    and info.get("cluster_slots_ok") == str(CLUSTER_SLOTS)
                    and info.get("cluster_known_nodes") == str(self.masters)
                )
            if ready:
                return
            if time.monotonic() > deadline:
                states = {p: (i.get("cluster_state"), i.get("cluster_known_nodes")) for p, i in last.items()}
                raise LocalRedisError(f"the cluster was not ok in time: (state, known nodes) by port {states}")
            time.sleep(0.1)

    def running(self) -> bool:
        """Every node answers PING."""
        return bool(self.nodes) and all(node.running() for node in self.nodes)

    def stop(self) -> None:
        """Stop every node (SIGTERM, then wait); the nodes' files stay in :attr:`dir`."""
        for node in self.nodes:
            node.stop()
        self.nodes = []
