"""A process writing through the LangGraph store (``MemoryStore.abatch`` and the sync ``batch``)
on a real Redis, SIGKILLed mid-batch: what a fresh store in a fresh loop reads afterwards.

The child (a real subprocess, :func:`_child_main`) runs planned batches of ``PutOp`` (puts and
deletes, hostile labels, keys and nested values) and prints ``ack N`` after batch ``N`` returns,
flushed before batch ``N + 1`` starts. The test kills it with SIGKILL once it has read a few acks
(a bounded wait on its stdout), drains the acks already in the pipe, and checks, per item:

- every acknowledged write is there, exactly as written (or superseded by a later batch);
- batch ``last ack + 1`` is the only one that can have been in flight, so each item is either its
  state after the last acknowledged batch or its state after that one batch: never half of a
  record, never an older value, never the value a later put of the same batch replaced;
- ``get`` never raises, and ``search``, ``list_namespaces``, the memory's own listing (``skipped``
  0) and the Redis keys under the record prefix all agree with what ``get`` sees.

Three rounds per entry point write on the same Redis keys, so each round starts from the state
the previous kill left. Then the contrast the docs give for the in-process default
(docs/in-memory-backend.md: "a restart forgets all memories").
"""

from __future__ import annotations

import os
import queue
import signal
import subprocess
import sys
import threading
from datetime import datetime, timezone
from pathlib import Path
from typing import Any

import pytest
from langgraph.store.base import GetOp, PutOp

from primitives.integrations import langgraph as lg_module
from primitives.integrations._langgraph_mapping import item_id, topic
from primitives.integrations.langgraph import LISTING_TERM, MemoryStore
from primitives.memory import Memory
from primitives.memory.redis_backend import RedisBackend
from primitives.memory.redis_backend.keys import record_key

REPO = Path(__file__).resolve().parents[1]
#: Longest wait for the child's next ack (it imports langgraph first; the machine may be loaded).
ACK_TIMEOUT = 120.0
#: Batches a child may run: far more than it reaches before the kill (it never finishes).
BATCHES_PER_ROUND = 100_000

# LangGraph refuses "." and NUL in labels (and "langgraph" as a put's root): everything else goes,
# with siblings ("a", "a*", "a|b") and a label long enough that ids and topics are hashed
NAMESPACES = [
    ("kill", "a:b", "{x}"), ("kill", "a|b"), ("kill", "*", " "), ("kill", "🦜", "e\u0301", "\t"),
    ("kill", "x" * 1_200), ("kill", '"', "\\", "lg[]"), ("kill", "@user:{alice} | -x*"), ("kill", "a*"),
    ("kill", "a"), ("}{", "\n"), ("ä", " a ", "ﬁ"), ("a|b",),
]
# keys have no such limits: separators, NUL, glob and query syntax, a key long enough to be hashed
KEYS = ["", " ", ".", "a.b", "\x00", "k\x00", ":", "|", "{", "}", "*", "{*}", "ключ", "🦜", LISTING_TERM,
        "x" * 2_000, "\t\n", '"]']
#: Items every batch overwrites (two of them) and one it writes twice (the first put must never show).
SHARED = [(NAMESPACES[i], KEYS[i + 2]) for i in range(5)]
#: Put by even batches, deleted by odd ones (a ``PutOp`` with ``value=None``).
CHURN = (("kill", "a:b", "{x}"), "churn.{*}\x00")
#: Items written once, by one batch each; each carries PAD two-byte characters, so one batch is
#: a pipeline of about 1 MiB that reaches Redis in many reads and a kill can cut it short.
WRITE_ONCE = 4
PAD = 2**17
#: The store's ``Memory`` namespace (an identifier; not the memory's default).
STORE_NAMESPACE = "lg-kill"

Op = tuple[tuple[str, ...], str, "dict[str, Any] | None", "list[str] | None"]


def _value(batch: int, slot: object, pad: int = 0) -> dict[str, Any]:
    """A value that says which write it is, nested, with hostile strings and exact numbers."""
    value: dict[str, Any] = {
        "batch": batch,
        "slot": slot,
        "text": f"batch {batch} slot {slot} @user:{{x}} | -y* \x00 🦜",
        "nested": {"deep": [batch, 2.5, None, True, {"k.with.dots": "a\x00b", "list": [[{"n": -batch}]]}]},
        "big": 2**62 - batch,
    }
    if pad:
        value["pad"] = {"lines": [f"{batch}.{slot}:" + "ä" * (pad // 8)] * 8}
    return value


def planned_batch(batch: int) -> list[Op]:
    """The puts of batch ``batch``, in order: ``(namespace, key, value, index)``; a ``value`` of
    None deletes; ``index`` is the put's ``index`` (None: the store's, every string and number)."""
    first = SHARED[batch % len(SHARED)]
    ops: list[Op] = [(*first, _value(batch, "superseded"), None)]
    for j in range(WRITE_ONCE):
        key = f"{KEYS[(batch * WRITE_ONCE + j) % len(KEYS)]}#{batch}.{j}"
        ops.append((NAMESPACES[(batch + j) % len(NAMESPACES)], key, _value(batch, j, PAD), ["text", "nested"]))
    ops.append((*SHARED[(batch + 1) % len(SHARED)], _value(batch, "shared"), None))
    ops.append((*CHURN, _value(batch, "churn") if batch % 2 == 0 else None, None))
    ops.append((*first, _value(batch, "final"), None))  # the last put of an item in a batch wins
    return ops


def _child_main() -> None:
    """Run in the child: ``argv`` = mode (``abatch``, ``batch``, ``inmemory``), Redis URL, key
    prefix, first batch number. Prints ``ack N`` after each batch and never stops by itself."""
    import asyncio

    mode, url, prefix, start = sys.argv[1], sys.argv[2], sys.argv[3], int(sys.argv[4])
    batches = range(start, start + BATCHES_PER_ROUND)

    def ops(batch: int) -> list[PutOp]:
        return [PutOp(ns, key, value, index=index) for ns, key, value, index in planned_batch(batch)]

    def ack(batch: int) -> None:
        sys.stdout.write(f"ack {batch}\n")
        sys.stdout.flush()

    if mode == "batch":  # the sync entry point, from plain sync code (the bridge's private loop)
        store = MemoryStore(Memory(RedisBackend(url, prefix=prefix)), namespace=STORE_NAMESPACE)
        for batch in batches:
            store.batch(ops(batch))
            ack(batch)
        return

    async def run() -> None:
        if mode == "inmemory":  # the default: Memory.from_env() with no server configured
            store = MemoryStore()
            assert store.memory.backend_name == "in-memory"
        else:
            store = MemoryStore(Memory(RedisBackend(url, prefix=prefix)), namespace=STORE_NAMESPACE)
        for batch in batches:
            await store.abatch(ops(batch))
            ack(batch)

    asyncio.run(run())


def _run_and_kill(mode: str, url: str, prefix: str, start: int, kill_after: int, tmp: Path, *,
                  mid_write: bool = False) -> int:
    """Start a child, SIGKILL it once it acknowledged ``kill_after`` batches (with ``mid_write``:
    and the first padded item of the next batch is in Redis, so the kill lands inside that batch's
    writes or just after them); the last batch it acknowledged (acks still in the pipe when it died
    included)."""
    env = {k: v for k, v in os.environ.items() if not k.startswith(("REDIS_", "AGENT_MEMORY_", "MEMORY_"))}
    env["PYTHONPATH"] = os.pathsep.join([str(REPO), env.get("PYTHONPATH", "")]).rstrip(os.pathsep)
    stderr_path = tmp / f"child-{mode}-{start}.stderr"
    code = "from tests.test_langgraph_kill import _child_main; _child_main()"
    with stderr_path.open("w") as stderr:
        child = subprocess.Popen(
            [sys.executable, "-c", code, mode, url, prefix, str(start)],
            stdout=subprocess.PIPE, stderr=stderr, text=True, cwd=REPO, env=env,
        )
    lines: queue.Queue[str | None] = queue.Queue()

    def pump() -> None:
        assert child.stdout is not None
        for line in child.stdout:
            lines.put(line)
        lines.put(None)

    reader = threading.Thread(target=pump, daemon=True)
    reader.start()
    acked: list[int] = []
    try:
        while len(acked) < kill_after:
            try:
                line = lines.get(timeout=ACK_TIMEOUT)
            except queue.Empty:
                pytest.fail(f"no ack from the {mode} child in {ACK_TIMEOUT:g} s: {stderr_path.read_text()[-3000:]}")
            if line is None:
                pytest.fail(f"the {mode} child exited ({child.wait()}): {stderr_path.read_text()[-3000:]}")
            acked.append(int(line.split()[1]))
        if mid_write:
            _wait_for_first_write(url, prefix, acked[-1] + 1, child, stderr_path)
        child.send_signal(signal.SIGKILL)  # while it keeps writing
    finally:
        if child.poll() is None:
            child.kill()
        child.wait()
        reader.join(timeout=ACK_TIMEOUT)
    assert child.returncode == -signal.SIGKILL, stderr_path.read_text()[-3000:]
    while (line := lines.get_nowait()) is not None:  # acks written before it died count too
        acked.append(int(line.split()[1]))
    assert acked == list(range(start, start + len(acked)))
    return acked[-1]


def _wait_for_first_write(url: str, prefix: str, batch: int, child: subprocess.Popen, stderr_path: Path) -> None:
    """Poll Redis (bounded by ACK_TIMEOUT) until batch ``batch``'s first padded item is stored."""
    import time

    import redis

    ns, key, *_ = planned_batch(batch)[1]
    record = record_key(f"{prefix}rec:", STORE_NAMESPACE, item_id(ns, key))
    client = redis.Redis.from_url(url)
    try:
        deadline = time.monotonic() + ACK_TIMEOUT
        while not client.exists(record):
            if child.poll() is not None:
                pytest.fail(f"the child exited ({child.returncode}): {stderr_path.read_text()[-3000:]}")
            if time.monotonic() > deadline:
                pytest.fail(f"batch {batch}'s first item was not written in {ACK_TIMEOUT:g} s")
    finally:
        client.close()


Allowed = dict[tuple[tuple[str, ...], str], list[dict[str, Any] | None]]


def _apply(allowed: Allowed, batch: int, *, in_flight: bool) -> None:
    """What may be stored per item after ``batch``: exactly its state after it, or (for the batch
    in flight at the kill) either the state before or the state after."""
    final: dict[tuple[tuple[str, ...], str], dict[str, Any] | None] = {}
    for ns, key, value, _ in planned_batch(batch):
        final[(ns, key)] = value
    for item, value in final.items():
        before = allowed.get(item, [None])
        allowed[item] = [*before, value] if in_flight else [value]


async def _check(store: MemoryStore, allowed: Allowed, redis_url: str, prefix: str, since: datetime,
                 reports: list[tuple]) -> dict[tuple[tuple[str, ...], str], dict[str, Any] | None]:
    """Every claim of the module doc against ``store`` (a fresh store on a fresh loop); what each
    planned item holds now (``None``: absent)."""
    items = list(allowed)
    got = await store.abatch([GetOp(ns, key) for ns, key in items])  # never raises
    now = datetime.now(timezone.utc)
    present = {}
    for (ns, key), item in zip(items, got):
        value = None if item is None else item.value
        assert value in allowed[(ns, key)], (ns[:3], key[:40], value, allowed[(ns, key)])
        if item is not None:
            assert (item.namespace, item.key) == (ns, key)
            assert since <= item.created_at <= item.updated_at <= now
            present[(ns, key)] = item
    # each value's metadata is its own write's: one batch, one updated_at (abatch stamps its puts
    # with one time), later batches later; an item put once was created then
    stamps: dict[int, set[datetime]] = {}
    for item in present.values():
        stamps.setdefault(item.value["batch"], set()).add(item.updated_at)
        if isinstance(item.value["slot"], int):
            assert item.created_at == item.updated_at
    assert all(len(times) == 1 for times in stamps.values()), stamps
    in_order = [min(stamps[batch]) for batch in sorted(stamps)]
    assert in_order == sorted(in_order)
    # search and list_namespaces agree with get: every namespace, every root, and ("kill", "*")
    prefixes = {(), ("kill", "*")} | {ns[:1] for ns in NAMESPACES} | set(NAMESPACES)
    for prefix_ in sorted(prefixes):
        found = await store.asearch(prefix_, limit=10_000)
        expected = {k: v for k, v in present.items() if k[0][: len(prefix_)] == prefix_}
        assert {(i.namespace, i.key): (i.value, i.created_at, i.updated_at) for i in found} == {
            k: (v.value, v.created_at, v.updated_at) for k, v in expected.items()}
        # a listing's prefix takes "*" as a wildcard label (LangGraph's rule); a search's is literal
        wild = {k[0] for k in present if len(k[0]) >= len(prefix_) and all(
            p in ("*", n) for n, p in zip(k[0], prefix_))}
        assert await store.alist_namespaces(prefix=prefix_ or None, limit=1_000) == sorted(wild)
    # beneath the store: the memory lists the same records and skipped none; Redis holds no others
    listed = await store.memory.search(LISTING_TERM, namespace=store.namespace, topics=[topic(())], limit=10_000,
                                       mode="keyword")
    assert listed.skipped == 0
    assert sorted(h.record.id for h in listed.hits) == sorted(item_id(*k) for k in present)
    import redis.asyncio as aioredis

    client = aioredis.from_url(redis_url)
    try:
        pattern = record_key(f"{prefix}rec:", store.namespace, "") + "*"
        keys = [k async for k in client.scan_iter(match=pattern, count=1_000)]
    finally:
        await client.aclose()
    assert len(keys) == len(present)
    assert reports == []  # no damaged record was skipped by a search or listing
    return {k: (present[k].value if k in present else None) for k in items}


@pytest.mark.integration
@pytest.mark.parametrize("mode", ["abatch", "batch"])
async def test_a_store_killed_mid_batch_keeps_every_acknowledged_put_and_no_half_item(
    mode: str, redis_server, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    reports: list[tuple] = []
    monkeypatch.setattr(lg_module, "report_corrupt", lambda *args: reports.append(args))
    prefix = f"lgkill{os.getpid()}-{mode}:"
    since = datetime.now(timezone.utc)
    allowed: Allowed = {}
    cleanup = RedisBackend(redis_server.url, prefix=prefix)
    try:
        # right after an ack (the next batch is being built), then twice once the next batch's
        # first padded item is in Redis (the kill cuts its pipeline, or falls between its puts
        # and its delete, or just after it)
        for round_, (kill_after, mid_write) in enumerate([(2, False), (4, True), (7, True)]):
            start = 1_000 * round_
            last = _run_and_kill(mode, redis_server.url, prefix, start, kill_after, tmp_path, mid_write=mid_write)
            for batch in range(start, last + 1):
                _apply(allowed, batch, in_flight=False)
            _apply(allowed, last + 1, in_flight=True)
            backend = RedisBackend(redis_server.url, prefix=prefix)  # a fresh store, this process's loop
            try:
                store = MemoryStore(Memory(backend), namespace=STORE_NAMESPACE)
                seen = await _check(store, allowed, redis_server.url, prefix, since, reports)
            finally:
                await backend.aclose()
            # the next round starts from what this kill left: an item changes only when written again
            allowed = {item: [value] for item, value in seen.items()}
    finally:
        await cleanup.drop()
        await cleanup.aclose()


def test_the_in_process_default_forgets_everything_when_killed(tmp_path: Path) -> None:
    """docs/in-memory-backend.md: "The process holds everything: a restart forgets all memories"."""
    import asyncio

    last = _run_and_kill("inmemory", "redis://unused", "unused:", 0, 3, tmp_path)
    assert last >= 2  # it did acknowledge its puts, in its own process
    clean = {k: v for k, v in os.environ.items() if not k.startswith(("REDIS_", "AGENT_MEMORY_", "MEMORY_"))}

    async def fresh() -> None:
        store = MemoryStore(Memory.from_env(clean))
        assert store.memory.backend_name == "in-memory"
        ops = [GetOp(ns, key) for b in range(last + 1) for ns, key, *_ in planned_batch(b)]
        assert await store.abatch(ops) == [None] * len(ops)
        assert await store.asearch((), limit=1_000) == [] and await store.alist_namespaces() == []
        await store.memory.aclose()

    asyncio.run(fresh())
