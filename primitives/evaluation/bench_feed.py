"""``bench feed``: the Redis change feed's publish-to-receive latency and offline catch-up.

Two phases against one Redis, each feed on its own client (as two agents would be):

1. **Live latency.** One client publishes one event at a time at ``rate`` events/s (open loop:
   event ``i`` is due at ``i / rate`` s, late events are sent at once) for ``seconds``; a second
   client, subscribed in its own process, timestamps each event as its iterator yields it.
   Latency is arrival minus the moment just before the publish call (both
   ``time.perf_counter``, the system-wide monotonic clock on Linux). Reported: p50 / p99 / max
   in ms, the publish round trip, and the rate achieved.
2. **Offline catch-up.** The reader saves its position and goes away; ``catchup`` events are
   published (batches of 100); a new subscription from the saved position reads until it has
   them all. Reported: missing and duplicated events (by position, against what was published)
   and the time from the subscription's start to the last event.

With ``compare`` (the default) the live phase runs three publish paths in interleaved blocks
of one second (their order rotating), each to its own subscriber process, so that all see the
same machine load: ``current`` (this package's feed, reported as ``live``), ``previous`` (the
publish path before the live one-call path: :class:`_PreviousPath`) and ``pubsub_floor`` (a
plain ``PUBLISH`` of the same message, no stream, no script, received through the same
subscription code: what Redis pub/sub, the client library and the machine cost alone). Each
path also gets the server's microseconds per publish call (``INFO commandstats``, differences
over its blocks) and the publishing process's CPU time per publish (``time.process_time``,
syscalls included): both hold up on a busy machine, where the latency tail is the scheduler's.
The 1-minute load average (``os.getloadavg``) is reported before and after.
"""

from __future__ import annotations

import asyncio
import json
import multiprocessing
import os
import time
import uuid
from datetime import UTC, datetime
from typing import Any

from primitives.evaluation.locomo import percentile
from primitives.redis_connection import connect, redis_errors_mapped
from primitives.sync.feed import ChangeEvent
from primitives.sync.feed_redis import RedisChangeFeed

__all__ = ["run_feed_bench"]

_CATCHUP_BATCH = 100
_VARIANTS = ("current", "previous", "pubsub_floor")


class _PreviousPath(RedisChangeFeed):
    """The feed as every publish ran before the live path (``_send_one``): the registered
    ``Script`` object called inside ``redis_errors_mapped``, the general path batches over
    5,000 events and Cluster clients still take. Measured against, never used by the feed."""

    async def _send_one(self, batch: list[ChangeEvent]) -> list[str]:
        args = [*self._head, *(f for e in batch for f in e.fields())]
        async with redis_errors_mapped("the change feed's Redis", self.client):
            result = await self._script(keys=[self.key], args=args)
        return [p.decode() if isinstance(p, bytes) else str(p) for p in result]



def _event(i: int, origin: str) -> ChangeEvent:
    return ChangeEvent(f"bench-{i}", "upsert", "bench", None, "episodic", datetime.now(UTC), origin)


def _ms(values: list[float]) -> dict[str, float]:
    return {
        "p50": round(percentile(values, 50) * 1000, 3),
        "p99": round(percentile(values, 99) * 1000, 3),
        "max": round(max(values) * 1000, 3) if values else 0.0,
    }


def _receive(url: str, prefix: str, expected: int, channel: Any) -> None:
    """The second agent, in its own process: its own client; records when each event is
    yielded (``time.perf_counter``: CLOCK_MONOTONIC, the same clock in every process on Linux)
    and sends ``("ready", None)``, then ``("done", arrivals)`` or ``("error", message)``."""

    async def listen() -> dict[str, float]:
        arrivals: dict[str, float] = {}
        client = connect(url, decode_responses=True)
        feed = RedisChangeFeed(client, prefix=prefix)
        try:
            async with feed.subscribe() as sub:
                channel.send(("ready", None))
                async with asyncio.timeout(expected / 10 + 60):
                    async for event in sub:
                        if event.origin != "publisher":  # the unmeasured warm-up
                            continue
                        arrivals[event.id] = time.perf_counter()
                        if len(arrivals) == expected:
                            return arrivals
        finally:
            await client.aclose()
        return arrivals

    try:
        channel.send(("done", asyncio.run(listen())))
    except Exception as exc:  # reported by the parent
        channel.send(("error", f"{type(exc).__name__}: {exc}"))


def _expect(channel: Any, kind: str, timeout: float) -> Any:
    if not channel.poll(timeout):
        raise TimeoutError(f"the receiving process sent nothing within {timeout} s")
    got, value = channel.recv()
    if got == "error":
        raise RuntimeError(f"the receiving process failed: {value}")
    if got != kind:
        raise RuntimeError(f"the receiving process sent {got!r}, expected {kind!r}")
    return value


def _load() -> float:
    """The 1-minute load average."""
    return round(os.getloadavg()[0], 2)


async def _server_usec(client: Any) -> dict[str, tuple[int, float]]:
    """``{command: (calls, usec)}`` for EVALSHA and PUBLISH from ``INFO commandstats``."""
    stats = await client.info("commandstats")
    out = {}
    for command in ("evalsha", "publish"):
        entry = stats.get(f"cmdstat_{command}") or {}
        out[command] = (int(entry.get("calls", 0)), float(entry.get("usec", 0)))
    return out


def _publisher(variant: str, client: Any, prefix: str) -> tuple[Any, str]:
    """``(publish(event) -> awaitable, the command it runs on the server)`` for a variant."""
    feed = (_PreviousPath if variant == "previous" else RedisChangeFeed)(client, prefix=prefix)
    if variant in ("current", "previous"):
        return (lambda event: feed.publish([event])), "evalsha"
    counter = iter(range(1, 2**62))  # pubsub_floor: positions that only grow, no stream
    return (lambda event: client.publish(feed.channel, json.dumps([[f"{next(counter)}-0", *event.fields()]]))), "publish"


async def _live(url: str, prefix: str, rate: int, seconds: float, variants: tuple[str, ...]) -> dict[str, Any]:
    """Each variant publishes ``rate * seconds`` events at ``rate``, in blocks of one second
    interleaved with the other variants' (order rotating), to its own subscriber process."""
    count = max(1, int(rate * seconds))
    blocks = [min(rate, count - start) for start in range(0, count, rate)]
    context = multiprocessing.get_context("spawn")
    receivers: dict[str, tuple[Any, Any]] = {}
    for variant in variants:
        parent, child = context.Pipe()
        process = context.Process(target=_receive, args=(url, f"{prefix}{variant}:", count, child), daemon=True)
        process.start()
        receivers[variant] = (process, parent)
    try:
        for _, parent in receivers.values():
            await asyncio.to_thread(_expect, parent, "ready", 60)
        client = connect(url, decode_responses=True)
        sent: dict[str, dict[str, float]] = {v: {} for v in variants}
        publish_s: dict[str, list[float]] = {v: [] for v in variants}
        busy: dict[str, float] = dict.fromkeys(variants, 0.0)
        cpu: dict[str, float] = dict.fromkeys(variants, 0.0)
        server: dict[str, list[float]] = {v: [0, 0.0] for v in variants}
        try:
            publishers = {v: _publisher(v, client, f"{prefix}{v}:") for v in variants}
            for variant, (publish, _) in publishers.items():
                await publish(_event(-1, "warm-up"))  # loads the script; not measured
            done = 0
            for b, size in enumerate(blocks):
                for k in range(len(variants)):
                    variant = variants[(b + k) % len(variants)]
                    publish, command = publishers[variant]
                    before_stats = await _server_usec(client)
                    start = time.perf_counter()
                    for i in range(done, done + size):
                        delay = start + (i - done) / rate - time.perf_counter()
                        if delay > 0:
                            await asyncio.sleep(delay)
                        event = _event(i, "publisher")
                        cpu_before = time.process_time()
                        before = time.perf_counter()
                        sent[variant][event.id] = before
                        await publish(event)
                        publish_s[variant].append(time.perf_counter() - before)
                        cpu[variant] += time.process_time() - cpu_before
                    busy[variant] += time.perf_counter() - start
                    after_stats = await _server_usec(client)
                    server[variant][0] += after_stats[command][0] - before_stats[command][0]
                    server[variant][1] += after_stats[command][1] - before_stats[command][1]
                done += size
        finally:
            await client.aclose()
        arrivals = {v: await asyncio.to_thread(_expect, parent, "done", count / 10 + 120)
                    for v, (_, parent) in receivers.items()}
    finally:
        for process, _ in receivers.values():
            process.join(10)
            if process.is_alive():
                process.terminate()
    out: dict[str, Any] = {}
    for variant in variants:
        latencies = [arrivals[variant][k] - t for k, t in sent[variant].items() if k in arrivals[variant]]
        calls, usec = server[variant]
        out[variant] = {
            "events": count,
            "received": len(latencies),
            "rate_target": rate,
            "rate_achieved": round(count / busy[variant], 1),
            "latency_ms": _ms(latencies),
            "publish_round_trip_ms": _ms(publish_s[variant]),
            "server_us_per_publish": round(usec / calls, 2) if calls else None,
            "client_cpu_us_per_publish": round(cpu[variant] / count * 1e6, 1),
        }
    return out


async def _catch_up(url: str, prefix: str, events: int) -> dict[str, Any]:
    writer_client = connect(url, decode_responses=True)
    reader_client = connect(url, decode_responses=True)
    writer = RedisChangeFeed(writer_client, prefix=prefix)
    reader = RedisChangeFeed(reader_client, prefix=prefix)
    try:
        saved = await reader.last_position()  # the reader's position when it went offline
        sent: list[str] = []
        for start in range(0, events, _CATCHUP_BATCH):
            batch = [_event(i, "writer") for i in range(start, min(start + _CATCHUP_BATCH, events))]
            sent += await writer.publish(batch)
        received: list[str] = []
        began = time.perf_counter()
        async with reader.subscribe(after=saved) as sub:
            async with asyncio.timeout(events / 100 + 60):
                while len(received) < events:
                    received += [e.position for e in await sub.next_batch(1000)]
        seconds = time.perf_counter() - began
    finally:
        await writer_client.aclose()
        await reader_client.aclose()
    return {
        "events": events,
        "received": len(received),
        "missing": len(set(sent) - set(received)),
        "duplicated": len(received) - len(set(received)),
        "in_order": received == sent,
        "seconds": round(seconds, 3),
        "events_per_s": round(events / seconds) if seconds else None,
    }


async def run_feed_bench(
    url: str, *, rate: int = 1000, seconds: float = 5.0, catchup: int = 10_000, compare: bool = True
) -> dict[str, Any]:
    """Both phases against ``url`` under a throw-away key prefix (its streams deleted afterwards).

    Args:
        compare: Also run the ``previous`` path and the ``pubsub_floor`` in interleaved blocks
            (see the module docstring); the live phase then takes three times ``seconds``.

    Returns:
        ``{"redis_version", "load_1min": {"before", "after"}, "live": {events, received,
        rate_target, rate_achieved, latency_ms: {p50, p99, max}, publish_round_trip_ms: {...},
        server_us_per_publish, client_cpu_us_per_publish}, "compare": {"previous": {...}, "pubsub_floor": {...}} (with
        ``compare``), "catchup": {events, received, missing, duplicated, in_order, seconds,
        events_per_s}}``; times in ms unless named otherwise.
    """
    prefix = f"bench-feed-{uuid.uuid4().hex[:8]}:"
    variants = _VARIANTS if compare else _VARIANTS[:1]
    client = connect(url, decode_responses=True)
    try:
        version = (await client.info("server")).get("redis_version")
        report: dict[str, Any] = {"redis_version": version, "load_1min": {"before": _load()}}
        live = await _live(url, prefix, rate, seconds, variants)
        report["live"] = live.pop("current")
        if compare:
            report["compare"] = live
        report["catchup"] = await _catch_up(url, f"{prefix}catchup:", catchup)
        report["load_1min"]["after"] = _load()
    finally:
        await client.delete(*(f"{prefix}{v}:changes" for v in _VARIANTS), f"{prefix}catchup:changes")
        await client.aclose()
    return report
