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
"""

from __future__ import annotations

import asyncio
import multiprocessing
import time
import uuid
from datetime import UTC, datetime
from typing import Any

from primitives.evaluation.locomo import percentile
from primitives.redis_connection import connect
from primitives.sync.feed import ChangeEvent
from primitives.sync.feed_redis import RedisChangeFeed

__all__ = ["run_feed_bench"]

_CATCHUP_BATCH = 100


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


async def _live(url: str, prefix: str, rate: int, seconds: float) -> dict[str, Any]:
    count = max(1, int(rate * seconds))
    context = multiprocessing.get_context("spawn")
    parent, child = context.Pipe()
    receiver = context.Process(target=_receive, args=(url, prefix, count, child), daemon=True)
    receiver.start()
    try:
        await asyncio.to_thread(_expect, parent, "ready", 60)
        client = connect(url, decode_responses=True)
        feed = RedisChangeFeed(client, prefix=prefix)
        sent: dict[str, float] = {}
        publish_s: list[float] = []
        try:
            await feed.publish([_event(-1, "warm-up")])  # loads the script; not measured
            start = time.perf_counter()
            for i in range(count):
                delay = start + i / rate - time.perf_counter()
                if delay > 0:
                    await asyncio.sleep(delay)
                event = _event(i, "publisher")
                before = time.perf_counter()
                sent[event.id] = before
                await feed.publish([event])
                publish_s.append(time.perf_counter() - before)
            elapsed = time.perf_counter() - start
        finally:
            await client.aclose()
        arrivals = await asyncio.to_thread(_expect, parent, "done", count / 10 + 120)
    finally:
        receiver.join(10)
        if receiver.is_alive():
            receiver.terminate()
    latencies = [arrivals[k] - sent[k] for k in sent if k in arrivals]
    return {
        "events": count,
        "received": len(latencies),
        "rate_target": rate,
        "rate_achieved": round(count / elapsed, 1),
        "latency_ms": _ms(latencies),
        "publish_round_trip_ms": _ms(publish_s),
    }


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


async def run_feed_bench(url: str, *, rate: int = 1000, seconds: float = 5.0, catchup: int = 10_000) -> dict[str, Any]:
    """Both phases against ``url`` under a throw-away key prefix (its stream deleted afterwards).

    Returns:
        ``{"redis_version", "live": {events, received, rate_target, rate_achieved, latency_ms:
        {p50, p99, max}, publish_round_trip_ms: {...}}, "catchup": {events, received, missing,
        duplicated, in_order, seconds, events_per_s}}``.
    """
    prefix = f"bench-feed-{uuid.uuid4().hex[:8]}:"
    client = connect(url, decode_responses=True)
    try:
        version = (await client.info("server")).get("redis_version")
        report: dict[str, Any] = {"redis_version": version}
        report["live"] = await _live(url, prefix, rate, seconds)
        report["catchup"] = await _catch_up(url, f"{prefix}catchup:", catchup)
    finally:
        await client.delete(f"{prefix}changes", f"{prefix}catchup:changes")
        await client.aclose()
    return report
