"""``RedisBackend(cluster=True)`` on a real 3-master Redis Cluster whose nodes run Redis 8.2 with
the Query Engine (``LocalRedisCluster(modules=True)``): the backend contract suite unchanged,
then what only a cluster shows: every key of a tenant in one hash slot whatever the namespace
(``{`` and ``}`` included), one index per primary, a namespace search answered by the tenant's
node alone, a search without namespace fanning out to every primary, changes merged over
tenants, a node SIGKILLed mid-batch, and a small differential run against the in-process oracle.
"""

from __future__ import annotations

import asyncio
import itertools
import os
from pathlib import Path

import pytest
from redis.crc import key_slot

from primitives.errors import BackendUnavailableError, ConfigurationError
from primitives.memory import InMemoryBackend, MemoryRecord, Message
from primitives.memory.changes import Tombstone
from primitives.memory.redis_backend import RedisBackend
from primitives.tooling.localcluster import LocalRedisCluster
from primitives.tooling.localredis import redis_command
from tests.contract import BackendContract
from tests.redis_server import _start

pytestmark = pytest.mark.integration

_prefixes = itertools.count()

#: Namespaces that would break a naive hash tag: braces first of all.
HOSTILE_NAMESPACES = [
    "{", "}", "{}", "}{", "{alice}", "a{b}c", "{{x}}", "alice", "alice ", "mallory,alice", "a:b", "*", "\x00",
    "ünïcødé 😀", "%7B", "@namespace:{x}", "\\", "-", "a" * 1024,
]


def fresh_prefix() -> str:
    return f"c{os.getpid()}-{next(_prefixes)}:"


def start_search_cluster(tmp: Path, node_timeout_ms: int = 5000) -> LocalRedisCluster:
    return _start(lambda: LocalRedisCluster(dir=tmp, modules=True, node_timeout_ms=node_timeout_ms), lambda c: c.start(),
                  "a Redis Cluster with the Query Engine")


@pytest.fixture(scope="module")
def search_cluster(tmp_path_factory: pytest.TempPathFactory):
    """A 3-master cluster of Redis 8.2 nodes, each with the Query Engine and JSON modules."""
    cluster = start_search_cluster(tmp_path_factory.mktemp("search-cluster"))
    try:
        yield cluster
    finally:
        cluster.stop()


@pytest.fixture
async def cluster_backend(search_cluster):
    backend = RedisBackend(search_cluster.url, prefix=fresh_prefix(), working_memory_size=10, cluster=True)
    yield backend
    await backend.drop()
    await backend.aclose()


class TestRedisClusterContract(BackendContract):
    @pytest.fixture
    async def backend(self, cluster_backend):
        return cluster_backend


# --- no server --------------------------------------------------------------------------------


@pytest.mark.parametrize("prefix", ["mem{x}:", "a}", "{"])
def test_a_brace_in_the_prefix_or_index_name_is_refused_on_a_cluster(prefix: str) -> None:
    with pytest.raises(ConfigurationError, match="hash-tag brace"):
        RedisBackend("redis://127.0.0.1:1", prefix=prefix, cluster=True)
    with pytest.raises(ConfigurationError, match="hash-tag brace"):
        RedisBackend("redis://127.0.0.1:1", index_name=prefix + "idx", cluster=True)
    RedisBackend("redis://127.0.0.1:1", prefix=prefix)  # a single Redis has no hash tags


@pytest.mark.parametrize("namespace", HOSTILE_NAMESPACES)
def test_the_cluster_layout_tags_every_key_with_the_namespace_and_splits_back(namespace: str) -> None:
    from primitives.memory.redis_backend.keys import KeyLayout, split_record_key, tenant_tag

    layout, single = KeyLayout("memory:", cluster=True), KeyLayout("memory:")
    tag = tenant_tag(namespace)
    assert tag.startswith("{") and tag.endswith("}") and "{" not in tag[1:-1] and "}" not in tag[1:-1] and len(tag) > 2
    keys = [layout.record(namespace, "a{b}"), layout.session(namespace, "}"), layout.skill(namespace, "{"),
            layout.change_log(namespace), layout.tombstones(namespace), layout.deleted_at(namespace)]
    for key in keys:  # the first {...} of every key is the tenant's tag: one slot
        start = key.index("{")
        assert key[start:key.index("}", start) + 1] == tag, key
        assert key_slot(key.encode()) == key_slot(tag.encode())
    assert split_record_key(layout.rec_prefix, layout.record(namespace, "a{b}")) == (namespace, "a{b}")
    # the layouts never read each other's keys; a single Redis's keys are unchanged
    assert split_record_key(single.rec_prefix, layout.record(namespace, "x")) is None
    assert split_record_key(layout.rec_prefix, single.record(namespace, "x")) is None
    assert single.record(namespace, "x").startswith("memory:rec:") and "{" not in single.record(namespace, "x")
    assert single.change_log(namespace) == "memory:changelog"


def test_memory_redis_cluster_selects_the_cluster_backend() -> None:
    from primitives.memory.record import DEFAULT_TTLS
    from primitives.memory.registry import BACKENDS, BackendSettings

    settings = BackendSettings(working_memory_size=5, default_ttls=DEFAULT_TTLS)
    env = {"REDIS_URL": "redis://127.0.0.1:1", "MEMORY_REDIS_CLUSTER": "1"}
    backend = BACKENDS["redis"].build(env, settings)
    assert backend.cluster is True and backend.spec.prefix == "memory:rec:{"
    plain = BACKENDS["redis"].build({"REDIS_URL": "redis://127.0.0.1:1"}, settings)
    assert plain.cluster is False and plain.spec.prefix == "memory:rec:"


# --- the cluster ------------------------------------------------------------------------------


def _search_calls(port: int) -> int:
    stats = redis_command(port, "INFO", "commandstats").decode()
    for line in stats.splitlines():
        if line.lower().startswith("cmdstat_ft.search:"):
            return int(line.split("calls=")[1].split(",")[0])
    return 0


async def test_each_tenant_has_its_own_index_and_records_spread_over_the_nodes(cluster_backend, search_cluster) -> None:
    backend = cluster_backend
    await backend.add([MemoryRecord(text=f"shared fact {i}", id=f"r{i}", namespace=f"tenant-{i}") for i in range(60)])
    indexes = backend._indexes
    per_node: dict[str, int] = {}
    for i in range(60):
        per_node[indexes.node_of(f"tenant-{i}").name] = per_node.get(indexes.node_of(f"tenant-{i}").name, 0) + 1
    assert len(per_node) == 3 and all(count > 0 for count in per_node.values()), per_node
    for node in indexes.primaries():  # each node holds the keys and the indexes of its own tenants
        keys = [k async for k in backend._client.scan_iter(match=f"{backend.prefix}rec:*", target_nodes=node)]
        names = await backend._client.execute_command("FT._LIST", target_nodes=node)
        assert len(keys) == per_node[node.name]
        assert sum(n.decode().startswith(f"{backend.prefix}idx:") for n in names) == per_node[node.name]
    health = await backend.health()
    assert health.ok and health.detail["records"] == 60
    assert await backend.count() == 60
    hits = (await backend.search("shared fact", limit=100)).hits
    assert len(hits) == 60 and len({h.record.namespace for h in hits}) == 60


@pytest.mark.parametrize("namespace", HOSTILE_NAMESPACES)
async def test_every_key_of_a_tenant_is_in_its_slot(cluster_backend, namespace: str) -> None:
    backend = cluster_backend
    await backend.add([MemoryRecord(text="tenant note", id=i, namespace=namespace) for i in ("x", "{y}", "}")])
    await backend.delete(["}"], namespace=namespace)
    await backend.append_messages("s{1}", [Message("user", "hi")], namespace=namespace)
    await backend.record_skill_execution("deploy{}", success=True, duration_s=1.0, namespace=namespace)
    layout = backend._layout
    slot = key_slot(layout.tenant_key(namespace).encode())
    keys = [layout.record(namespace, "x"), layout.record(namespace, "{y}"), layout.session(namespace, "s{1}"),
            layout.skill(namespace, "deploy{}"), layout.change_log(namespace), layout.tombstones(namespace),
            layout.deleted_at(namespace)]
    for key in keys:
        assert key_slot(key.encode()) == slot, key
        assert await backend._client.exists(key) == 1, key
    assert {(h.record.namespace, h.record.id) for h in (await backend.search("tenant note", filter={"namespace": namespace})).hits} \
        == {(namespace, "x"), (namespace, "{y}")}
    assert [m.content for m in await backend.get_messages("s{1}", namespace=namespace)] == ["hi"]
    assert (await backend.skill_stats("deploy{}", namespace=namespace)).executions == 1


async def test_hostile_namespaces_are_exact_tenants_against_the_oracle(cluster_backend) -> None:
    backend, oracle = cluster_backend, InMemoryBackend()
    batch = [MemoryRecord(text=f"secret note {i}", id=ns, user_id=ns, namespace=ns, topics=(ns,))
             for i, ns in enumerate(HOSTILE_NAMESPACES)]
    batch += [MemoryRecord(text="secret note of acme", id=ns, namespace="acme") for ns in HOSTILE_NAMESPACES]
    for store in (backend, oracle):
        await store.add(batch)

    async def ids(store, **flt) -> set[tuple[str, str]]:
        return {(h.record.namespace, h.record.id) for h in (await store.search("secret note", filter=flt, limit=1000)).hits}

    for ns in [*HOSTILE_NAMESPACES, "acme", "missing", "alice}"]:
        assert await ids(backend, namespace=ns) == await ids(oracle, namespace=ns), ns
        assert await backend.count({"namespace": ns}) == await oracle.count({"namespace": ns}), ns
        assert await ids(backend, user_id=ns) == await ids(oracle, user_id=ns), ns
    many = HOSTILE_NAMESPACES[:7]
    assert await ids(backend, namespace=many) == await ids(oracle, namespace=many)
    assert await ids(backend) == await ids(oracle)
    assert await backend.count() == await oracle.count() == len(batch)
    for record in batch:
        got = await backend.get(record.id, namespace=record.namespace)
        assert got is not None and (got.text, got.namespace, got.user_id) == (record.text, record.namespace, record.user_id)


async def test_a_namespace_search_asks_only_the_tenants_node_and_no_filter_asks_all(cluster_backend, search_cluster) -> None:
    backend = cluster_backend
    await backend.add([MemoryRecord(text="routing probe", id="p", namespace=f"route-{i}") for i in range(12)])
    indexes = backend._indexes
    port_of = {n.name: n.port for n in indexes.primaries()}
    target = indexes.node_of("route-3").name
    before = {name: _search_calls(port) for name, port in port_of.items()}
    hits = (await backend.search("routing probe", filter={"namespace": "route-3"})).hits
    after = {name: _search_calls(port) for name, port in port_of.items()}
    assert [(h.record.namespace, h.record.id) for h in hits] == [("route-3", "p")]
    assert {n: after[n] - before[n] for n in port_of} == {n: int(n == target) for n in port_of}
    before = after
    assert len((await backend.search("routing probe", limit=50)).hits) == 12
    after = {name: _search_calls(port) for name, port in port_of.items()}
    tenants_on = {n: sum(indexes.node_of(f"route-{i}").name == n for i in range(12)) for n in port_of}
    assert {n: after[n] - before[n] for n in port_of} == tenants_on  # one FT.SEARCH per tenant index


async def test_changes_merge_every_tenants_log_in_order(cluster_backend) -> None:
    backend = cluster_backend
    for i in range(9):
        await backend.add([MemoryRecord(text=f"change {i}", id=f"c{i}", namespace=f"chg-{i % 4}")])
    await backend.delete(["c0"], namespace="chg-0")
    entries = await backend.changes(limit=100)
    positions = [e.position for e in entries]
    assert positions == sorted(positions)
    assert {(e.position[1], e.position[2]) for e in entries} == {(f"chg-{i % 4}", f"c{i}") for i in range(9)}
    assert isinstance(next(e.change for e in entries if e.position[2] == "c0"), Tombstone)
    first = await backend.changes(limit=4)
    rest = await backend.changes(first[-1].position, limit=100)
    assert [e.position for e in first + rest] == positions


async def test_repair_and_migrate_work_per_node(cluster_backend) -> None:
    backend = cluster_backend
    await backend.add([MemoryRecord(text="sound record", id="ok", namespace="rep{1}"),
                       MemoryRecord(text="to be damaged", id="bad", namespace="rep}2")])
    key = backend._layout.record("rep}2", "bad")
    await backend._client.hset(key, "created_at_us", "not a number")
    report = await backend.find_damaged()
    assert [d.key for d in report.damaged] == [key]
    moved = await backend.repair()
    assert [m.key for m in moved] == [key]
    assert await backend.get("bad", namespace="rep}2") is None
    assert (await backend.find_damaged()).damaged == []
    assert await backend.migrate() == 0
    await asyncio.sleep(0.2)  # the re-created indexes re-index in the background
    assert [h.record.id for h in (await backend.search("sound record")).hits] == ["ok"]


async def test_a_node_killed_mid_batch_fails_typed_and_leaves_no_half_record(tmp_path: Path) -> None:
    cluster = start_search_cluster(tmp_path / "kill")
    backend = RedisBackend(cluster.url, prefix="kill:", cluster=True, socket_timeout=2.0)
    try:
        await backend.add([MemoryRecord(text="warm up", id="w")])
        indexes = backend._indexes
        victim = indexes.primaries()[0]
        node = next(n for n in cluster.nodes if n.port == victim.port)
        namespaces = [f"k-{i}" for i in range(60)]

        written = [0]
        started = asyncio.Event()

        async def write() -> None:  # bounded: far more rounds than run before the kill lands
            for round in range(400):
                await backend.add([MemoryRecord(text=f"batch {round} note " * 20, id=f"r{round}", namespace=ns)
                                   for ns in namespaces])
                written[0] = round + 1
                started.set()

        task = asyncio.create_task(write())
        await asyncio.wait_for(started.wait(), 60)  # killed mid-run, never before or after it
        node.kill()
        with pytest.raises(BackendUnavailableError):
            await task
        survivors = [ns for ns in namespaces if indexes.node_of(ns).name != victim.name]
        assert survivors
        for ns in survivors:  # whole records or none, never a half-written hash
            for round in range(written[0] + 1):
                got = await backend.get(f"r{round}", namespace=ns)
                assert got is None or got.text == f"batch {round} note " * 20
        with pytest.raises(BackendUnavailableError):
            await backend.search("note", filter={"namespace": next(ns for ns in namespaces if ns not in survivors)})
    finally:
        await backend.aclose()
        cluster.stop()


async def test_surviving_nodes_answer_when_the_client_reinitialises_with_the_first_listed_primary_down(tmp_path: Path) -> None:
    """redis-py 8.1 (re)initialises a cluster client by sending ``COMMAND`` to the first primary
    it lists (the owner of slot 0 until a failure reorders them). While that node is down (before
    ``cluster-node-timeout``, 30 s here, marks it failed), every command of the client then failed,
    also to the nodes that answer: a survivor's read after a node was killed mid-batch (CI run of
    stop 18). redis-py re-initialises after ``CLUSTERDOWN``, after every few ``MOVED`` replies, and
    after ``aclose()``, which is what this test does. Both the memory backend and a client started
    fresh while the node is down (key-value store) serve the survivors; the dead node's keys fail
    typed (see ``initialize_cluster``)."""
    from primitives.redis_connection import connect
    from primitives.store.kv_redis import RedisKeyValueStore

    cluster = start_search_cluster(tmp_path / "first-primary", node_timeout_ms=30_000)
    backend = RedisBackend(cluster.url, prefix="dflt:", cluster=True, socket_timeout=2.0)
    namespaces = [f"d-{i}" for i in range(30)]
    fresh = None
    try:
        await backend.add([MemoryRecord(text=f"note {ns}", id="r", namespace=ns) for ns in namespaces])
        client = backend._indexes.client
        first = client.nodes_manager.slots_cache[0][0]
        assert client.get_primaries()[0].name == first.name
        kv = RedisKeyValueStore(client, namespace="kv")
        ids = [str(i) for i in range(30)]
        for id in ids:
            await kv.set("e", id, {"n": id})
        kv_lost = [id for id in ids if client.get_node_from_key(kv.keys.key("kv", "e", id)).name == first.name]
        lost = [ns for ns in namespaces if backend._indexes.node_of(ns).name == first.name]
        survivors = [ns for ns in namespaces if ns not in lost]
        assert lost and survivors and kv_lost and len(kv_lost) < len(ids)
        live_url = next(url for url in cluster.urls if not url.endswith(f":{first.port}"))

        next(n for n in cluster.nodes if n.port == first.port).kill()
        await client.aclose()  # the next command re-initialises, with the dead node listed first
        for ns in survivors:
            got = await backend.get("r", namespace=ns)
            assert got is not None and got.text == f"note {ns}"
        assert [h.record.id for h in (await backend.search("note", filter={"namespace": survivors[0]})).hits] == ["r"]
        with pytest.raises(BackendUnavailableError):
            await backend.get("r", namespace=lost[0])

        fresh = connect(live_url, cluster=True, socket_timeout=2.0)
        kv_fresh = RedisKeyValueStore(fresh, namespace="kv")
        for id in ids:
            if id in kv_lost:
                with pytest.raises(BackendUnavailableError):
                    await kv_fresh.get("e", id)
            else:
                assert await kv_fresh.get("e", id) == {"n": id}
                await kv_fresh.set("e", id, {"n": id, "again": True})
                assert await kv_fresh.get("e", id) == {"n": id, "again": True}
    finally:
        if fresh is not None:
            await fresh.aclose()
        await backend.aclose()
        cluster.stop()


async def test_a_cluster_that_goes_down_costs_no_memory_and_fails_typed(tmp_path: Path) -> None:
    """Every node killed: redis-py raises ``RedisClusterException`` ("cannot be connected"), not a
    ``RedisError``, and a cluster whose surviving nodes have marked a dead primary failed answers
    ``CLUSTERDOWN`` (a ``ResponseError``). Both are outages: ``BackendUnavailableError``, so the
    resilient wrapper serves and journals as on one Redis (both propagated untyped before, and a
    memory call failed instead of falling back)."""
    from primitives.memory.resilient import ResilientBackend
    from primitives.memory.resilient.breaker import CircuitBreaker
    from primitives.memory.resilient.outbox import Outbox

    cluster = start_search_cluster(tmp_path / "down", node_timeout_ms=1000)
    plain = RedisBackend(cluster.url, prefix="down:", cluster=True, socket_timeout=2.0)
    backend = ResilientBackend(RedisBackend(cluster.url, prefix="down:", cluster=True, socket_timeout=2.0),
                               outbox=Outbox(tmp_path / "outbox.sqlite3"), breaker=CircuitBreaker(reset_timeout=0.2))
    try:
        namespaces = [f"n-{i}" for i in range(12)]
        await backend.add([MemoryRecord(text=f"kept {ns}", id="r", namespace=ns) for ns in namespaces])
        # `plain` has its own client, so it sees CLUSTERDOWN itself, not the wrapper's open breaker
        assert (await plain.get("r", namespace=namespaces[0])).text == f"kept {namespaces[0]}"
        victim = backend.primary._indexes.primaries()[0]
        next(n for n in cluster.nodes if n.port == victim.port).kill()
        survivor = next(ns for ns in namespaces if plain._indexes.node_of(ns).name != victim.name)
        survivor_port = plain._indexes.node_of(survivor).port
        for _ in range(600):  # bounded: the survivors mark the node failed after ~1-3 s
            if b"cluster_state:fail" in redis_command(survivor_port, "CLUSTER", "INFO"):
                break
            await asyncio.sleep(0.05)
        else:
            raise AssertionError("the surviving nodes never marked the dead primary failed")
        # whether redis-py's own retries end on the CLUSTERDOWN reply or on the dead node, typed
        with pytest.raises(BackendUnavailableError, match="cluster is down|unreachable"):
            await plain.get("r", namespace=survivor)
        await backend.add([MemoryRecord(text="written while a primary is down", id="d", namespace=survivor)])
        assert backend.outbox.pending_count() == 1

        for node in cluster.nodes:
            node.kill()
        with pytest.raises(BackendUnavailableError, match="unreachable"):
            await plain.get("r", namespace=survivor)
        await backend.add([MemoryRecord(text="written while the cluster is down", id="w", namespace=survivor)])
        assert backend.outbox.pending_count() == 2
        found = await backend.search("written while", filter={"namespace": survivor})
        assert found.degraded and {h.record.id for h in found.hits} == {"d", "w"}
    finally:
        await plain.aclose()
        await backend.aclose()
        cluster.stop()


async def test_differential_against_the_in_process_oracle(search_cluster) -> None:
    from tests.differential import BackendSpec, machine_for
    from tests.test_differential import WORKING_MEMORY_SIZE, _close, _run

    async def make() -> RedisBackend:
        return RedisBackend(search_cluster.url, prefix=fresh_prefix(), working_memory_size=WORKING_MEMORY_SIZE,
                            cluster=True)

    spec = BackendSpec("redis-cluster", make, _close, working_memory_size=WORKING_MEMORY_SIZE)
    assert machine_for(spec)
    await asyncio.to_thread(_run, spec, int(os.environ.get("DIFFERENTIAL_CLUSTER_EXAMPLES", "15")), 15)


@pytest.mark.parametrize("mode", ["vector", "hybrid", "keyword"])
async def test_vector_and_hybrid_search_match_one_redis_per_tenant_and_fan_out(search_cluster, redis_server, mode: str) -> None:
    """Per tenant the cluster answers exactly as one Redis holding only that tenant; across
    tenants, vector scores (cosine) merge exactly, so the fan-out equals one Redis's ranking."""
    from tests.test_redis_corruption import HashEmbedder

    texts = ["red apple pie", "green apple tart", "blue river boat", "red river fish", "apple boat trip",
             "green fish soup", "blue apple jam", "river apple cake"]
    tenants = ["t{1}", "t}2", "t3"]
    batch = [MemoryRecord(text=t, id=f"{i}", namespace=ns) for ns in tenants for i, t in enumerate(texts)]
    cluster = RedisBackend(search_cluster.url, prefix=fresh_prefix(), cluster=True, embedder=HashEmbedder())
    one = RedisBackend(redis_server.url, prefix=fresh_prefix(), embedder=HashEmbedder())
    try:
        await cluster.add(batch)
        for ns in tenants:
            alone = RedisBackend(redis_server.url, prefix=fresh_prefix(), embedder=HashEmbedder())
            await alone.add([r for r in batch if r.namespace == ns])
            got = await cluster.search("apple river", filter={"namespace": ns}, mode=mode, limit=len(texts))
            want = await alone.search("apple river", filter={"namespace": ns}, mode=mode, limit=len(texts))
            if mode == "vector":  # same scores; equal scores may come in either order
                assert sorted((round(h.score, 4), h.record.id) for h in got.hits) == sorted((round(h.score, 4), h.record.id) for h in want.hits)
            else:  # the same records (RediSearch's BM25STD with a TAG clause varies: docs/redis-backend.md)
                assert {h.record.id for h in got.hits} == {h.record.id for h in want.hits}
            await alone.drop()
            await alone.aclose()
        fanned = await cluster.search("apple river", mode=mode, limit=24)
        assert {(h.record.namespace, h.record.id) for h in fanned.hits} <= {(r.namespace, r.id) for r in batch}
        if mode == "vector":
            await one.add(batch)
            want = await one.search("apple river", mode="vector", limit=24)
            assert sorted(round(h.score, 4) for h in fanned.hits) == sorted(round(h.score, 4) for h in want.hits)
    finally:
        for backend in (cluster, one):
            await backend.drop()
            await backend.aclose()
