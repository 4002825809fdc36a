"""Machinery of the differential test (``tests/test_differential.py``): the in-process backend is
the oracle; a backend under test gets the same random operations and must show the same results.

What is compared after each operation (docs/testing.md explains why each relaxation exists):

- return values of writes (``delete``, ``put_if_newer``, ``delete_if_older`` counts), exactly;
- ``get``: the whole record, exactly, except ``embedding`` where the backend documents it keeps
  none (AMS), and timestamps the backend stamps itself (``updated_at`` of an ``add``, a
  ``created_at`` that was not given): those must be present, in UTC, and within
  :attr:`BackendSpec.clock_tolerance` seconds of the oracle's;
- ``count``, exactly, for any filter;
- ``search`` (keyword): every hit must match the filter (else a *leak*) and exist in the oracle
  (else a *ghost*); when everything the oracle matches fits in ``limit``, the set of
  ``(namespace, id)`` must be identical; otherwise the backend returns exactly ``limit`` hits,
  all among the oracle's matches. Order and scores are compared only where the engine is the
  oracle's own (:attr:`BackendSpec.exact_ranking`): BM25STD is not our BM25;
- working memory: messages (role, content, metadata, explicit ``created_at``) per session and
  namespace, with and without ``limit``;
- bad input: the same exception class on both, and nothing changed.

Identifiers come from one pool that mixes plain words with hostile ones (separators, whitespace,
control characters, unicode, RediSearch syntax, 1,024-character values) and "alice" with its
near-duplicates, so that collisions between tenants are likely; a "twin" step copies a stored
record with one identifier turned into a near-duplicate (:data:`NEAR_MUTATIONS`) and checks at once
that a filter on either value sees only its own record. Each mistake class this has to catch was
planted in a throw-away subclass of the in-process backend and found (docs/testing.md).
"""

from __future__ import annotations

import asyncio
import dataclasses
import math
import time
from collections import defaultdict
from collections.abc import Awaitable, Callable
from datetime import datetime, timedelta
from typing import Any
from hypothesis import strategies as st
from hypothesis.stateful import RuleBasedStateMachine, invariant, precondition, rule
from primitives.errors import PrimitivesError
from primitives.memory import MemoryBackend, MemoryRecord
from primitives.memory.analysis import ENGLISH_STOP_WORDS as STOP_WORDS
from primitives.memory.inmemory import InMemoryBackend
from primitives.validation import MAX_LIMIT
from tests.differential_compare import (  # noqa: F401 - re-exported for the tests
    BackendSpec,
    Disagreement,
    Key,
    Leak,
    Outcome,
    Stamps,
    TALLIES,
    _WORD,
    assert_same_messages,
    assert_same_record,
    bad_calls,
    key_of,
    matches,
    normalised,
)
from tests.differential_strategies import (  # noqa: F401 - re-exported for the tests
    AVOID,
    Flavour,
    LWW_OFFSETS,
    LWW_TTLS,
    MEMORY_TYPES,
    NEAR_ALICE,
    NEAR_MUTATIONS,
    UTC,
    VOCAB,
    ZONES,
    away_from_expiry,
    effective_ttl,
    env_int,
    explicit_datetimes,
    identifiers,
    ids,
    messages,
    namespaces,
    near_duplicate,
    queries,
    records,
    sessions,
    time_ranges,
)


class DifferentialMachine(RuleBasedStateMachine):
    """Runs every operation on the oracle and on :attr:`spec`'s backend; see the module docstring."""

    spec: BackendSpec  # set by :func:`machine_for`

    def __init__(self) -> None:
        super().__init__()
        self.tally = TALLIES[self.spec.name]
        self.tally.examples += 1
        self.loop = asyncio.new_event_loop()
        self.oracle = InMemoryBackend(working_memory_size=self.spec.working_memory_size)
        self.subject: MemoryBackend | None = None
        self.subject = self.run(self.spec.make())
        self.stamps: dict[Key, Stamps] = {}
        self.touched: set[Key] = set()
        self.sessions: set[tuple[str, str]] = set()
        self.seen: dict[str, set[str]] = defaultdict(set)
        self.clean = True  # no step failed (the final comparison runs only then)

    # -- plumbing --------------------------------------------------------------------------------

    def run(self, coro: Awaitable[Any]) -> Any:
        return self.loop.run_until_complete(coro)  # type: ignore[arg-type]

    async def _outcome(self, call: Callable[[MemoryBackend], Awaitable[Any]], backend: MemoryBackend) -> Outcome:
        try:
            return await call(backend), None
        except (PrimitivesError, ValueError, TypeError, NotImplementedError) as exc:
            return None, exc

    def both(self, what: str, call: Callable[[MemoryBackend], Awaitable[Any]]) -> tuple[Any, Any]:
        """Run ``call`` on the oracle and on the backend; an exception on one must be the same
        class on the other. Returns both results (``(None, None)`` after equal exceptions)."""
        assert self.subject is not None
        o, o_exc = self.run(self._outcome(call, self.oracle))
        s, s_exc = self.run(self._outcome(call, self.subject))
        self.tally.calls += 1
        if o_exc is not None or s_exc is not None:
            if type(o_exc) is not type(s_exc):
                raise Disagreement(
                    f"{what}: oracle {'returned ' + repr(o) if o_exc is None else 'raised ' + _exc(o_exc)}, "
                    f"backend {'returned ' + repr(s) if s_exc is None else 'raised ' + _exc(s_exc)}"
                )
            self.tally.refused += 1  # both refused a generated operation the same way
            return None, None
        return o, s

    def peek(self, key: Key) -> MemoryRecord | None:
        """The oracle's stored record (no side effect that matters: the oracle is unbounded here)."""
        return self.oracle._records.get(key)

    def step(self, rule_name: str) -> None:
        """Count a step; the machine is unclean until the invariant after it passes (so a failed
        step skips the final comparison and its own disagreement is the one reported)."""
        self.tally.steps += 1
        self.tally.rules[rule_name] += 1
        self.clean = False

    def note(self, record: MemoryRecord) -> None:
        for name in ("user_id", "session_id", "namespace"):
            value = getattr(record, name)
            if value is not None:
                self.seen[name].add(value)
        self.seen["topics"].update(record.topics)

    def prune(self) -> None:
        for key in list(self.stamps):
            if self.peek(key) is None:
                del self.stamps[key]

    def compare_get(self, key: Key) -> None:
        namespace, id = key
        o, s = self.both(f"get({id!r}, namespace={namespace!r})", lambda b: b.get(id, namespace=namespace))
        assert_same_record(f"get({id!r}, namespace={namespace!r})", o, s, self.stamps.get(key),
                           keeps_embedding=self.spec.keeps_embedding, tolerance=self.spec.clock_tolerance)

    # -- long-term writes --------------------------------------------------------------------------

    @rule(data=st.data())
    def add(self, data: st.DataObject) -> None:
        batch = data.draw(st.lists(records(self.spec.flavour), min_size=1, max_size=3), label="records")
        self._add(batch, "add")

    @rule(data=st.data())
    def add_crowd(self, data: st.DataObject) -> None:
        """Several records of one tenant (namespace, user) with overlapping words, so that more
        records match a search than its ``limit``."""
        tenant = data.draw(st.tuples(namespaces(), st.one_of(st.none(), identifiers())), label="(namespace, user_id)")
        batch = data.draw(st.lists(records(self.spec.flavour), min_size=3, max_size=8), label="records")
        text = st.lists(st.sampled_from(VOCAB[:8]), min_size=1, max_size=4).map(" ".join)
        batch = [dataclasses.replace(r, namespace=tenant[0], user_id=tenant[1], text=data.draw(text, label=f"text {i}"))
                 for i, r in enumerate(batch)]
        self._add(batch, "add_crowd")

    @precondition(lambda self: bool(self.stamps))
    @rule(data=st.data())
    def add_twin(self, data: st.DataObject) -> None:
        """A copy of a stored record (same text, so searches find both) whose id, user, session,
        namespace or a topic is a near-duplicate of the original's: a filter on either value must
        never show the other record."""
        record = self.peek(data.draw(st.sampled_from(sorted(self.stamps)), label="key"))
        if record is None:
            return
        field_name = data.draw(st.sampled_from(["id", "user_id", "session_id", "namespace", "topics"]), label="field")
        mutation = data.draw(st.sampled_from(sorted(NEAR_MUTATIONS)), label="mutation")
        if field_name == "topics":
            if not record.topics:
                return
            twin_value = near_duplicate(record.topics[0], mutation)
            change = {"topics": (twin_value, *record.topics[1:])} if twin_value else None
        else:
            value = getattr(record, field_name)
            twin_value = near_duplicate(value, mutation) if value is not None else None
            change = {field_name: twin_value} if twin_value else None
        if change is None:
            return
        if field_name not in ("id", "namespace"):
            change["id"] = data.draw(ids(), label="twin id")
        twin = dataclasses.replace(record, created_at=None, updated_at=None, embedding=record.embedding, **change)
        self._add([twin], "add_twin")
        # at once: a filter on either value (and a get of either id) sees only its own record
        words = [w for w in _WORD.findall(record.text) if w.casefold() not in STOP_WORDS][:3]
        query = " ".join(words) or "apple"
        for side in (record, twin):
            if field_name == "id":
                self.compare_get(key_of(side))
                continue
            value = side.topics[0] if field_name == "topics" else getattr(side, field_name)
            for flt in ({field_name: value}, {field_name: [value], "namespace": side.namespace}):
                self.compare_search(query, flt, 10)
                self.compare_count(flt)

    @precondition(lambda self: bool(self.stamps))
    @rule(data=st.data())
    def upsert_existing(self, data: st.DataObject) -> None:
        """Replace stored records by ``(namespace, id)``: ``created_at`` is kept (even when given)."""
        keys = data.draw(st.lists(st.sampled_from(sorted(self.stamps)), min_size=1, max_size=2), label="keys")
        batch = [data.draw(records(self.spec.flavour, (ns, id)), label=f"record {ns!r}/{id!r}")
                 for ns, id in keys]
        self._add(batch, "upsert_existing")

    def _add(self, batch: list[MemoryRecord], rule_name: str) -> None:
        self.step(rule_name)
        exists = {key_of(r) for r in batch if self.peek(key_of(r)) is not None}
        o, s = self.both("add", lambda b: b.add(list(batch)))
        if o is None:  # refused by both, the same way
            return
        for record in batch:
            key = key_of(record)
            self.touched.add(key)
            self.note(record)
            if key in exists:
                self.stamps[key] = Stamps(self.stamps.get(key, Stamps(False, False)).created_explicit, False)
            else:
                self.stamps[key] = Stamps(record.created_at is not None, False)
                exists.add(key)
        assert len(s) == len(o), f"add returned {len(s)} records for {len(o)}"
        for i, (o_rec, s_rec) in enumerate(zip(o, s)):
            # within one batch a later copy of the same key keeps the first one's created_at
            assert_same_record(f"add() returned record {i}", o_rec, s_rec, self.stamps[key_of(o_rec)],
                               keeps_embedding=self.spec.keeps_embedding, tolerance=self.spec.clock_tolerance)
        for key in {key_of(r) for r in batch}:
            self.compare_get(key)

    @rule(data=st.data())
    def delete(self, data: st.DataObject) -> None:
        self.step("delete")
        known = sorted(self.touched)
        namespace = data.draw(st.one_of(st.sampled_from([k[0] for k in known]) if known else namespaces(), namespaces()),
                              label="namespace")
        mine = [id for ns, id in known if ns == namespace]
        id_strategy = st.one_of(st.sampled_from(mine), ids()) if mine else ids()
        chosen = data.draw(st.lists(id_strategy, min_size=0, max_size=4), label="ids")
        o, s = self.both(f"delete({chosen!r}, namespace={namespace!r})",
                         lambda b: b.delete(list(chosen), namespace=namespace))
        if o is not None and o != s:
            raise Disagreement(f"delete({chosen!r}, namespace={namespace!r}): oracle deleted {o}, backend {s}")
        self.prune()
        for id in dict.fromkeys(chosen):
            self.compare_get((namespace, id))

    @rule(data=st.data())
    def put_if_newer(self, data: st.DataObject) -> None:
        self.step("put_if_newer")
        now = time.time()
        known = sorted(self.touched)
        n = data.draw(st.integers(1, 3), label="batch size")
        batch = []
        for i in range(n):
            if known and data.draw(st.booleans(), label=f"existing key {i}"):
                ns, id = data.draw(st.sampled_from(known), label=f"key {i}")
                base = records(self.spec.flavour, (ns, id))
            else:
                base = records(self.spec.flavour)
            record = data.draw(base, label=f"record {i}")
            offset = data.draw(st.sampled_from(LWW_OFFSETS), label=f"updated_at offset {i}")
            jitter = data.draw(st.integers(0, 59_999_999), label=f"jitter us {i}")
            updated = datetime.fromtimestamp(now + offset, UTC).replace(microsecond=0) + timedelta(microseconds=jitter)
            if known and data.draw(st.integers(0, 4), label=f"same updated_at {i}") == 0:
                # exactly the stored version's updated_at (when the test gave it): rewritten
                exact = [k for k in known if self.stamps.get(k, Stamps(False, False)).updated_explicit]
                if exact:
                    key = data.draw(st.sampled_from(exact), label=f"equal to {i}")
                    stored = self.peek(key)
                    if stored is not None:
                        record = data.draw(records(self.spec.flavour, key), label=f"record {i}")
                        updated = stored.updated_at  # type: ignore[assignment]
            created = data.draw(st.one_of(st.just(updated), explicit_datetimes()), label=f"created_at {i}")
            ttl = data.draw(st.sampled_from(LWW_TTLS), label=f"ttl {i}")
            record = dataclasses.replace(record, created_at=created, updated_at=updated, ttl=ttl)
            record = away_from_expiry(record, now)
            if "D3" in AVOID and (self.peek(key_of(record)) is not None or key_of(record) in {key_of(r) for r in batch}):
                # D3: a newer but expired version deletes the stored one in process, not on Redis
                if record.updated_at.timestamp() + effective_ttl(record) < now:  # type: ignore[union-attr]
                    record = dataclasses.replace(record, ttl=math.inf)
            batch.append(record)
        o, s = self.both("put_if_newer", lambda b: b.put_if_newer(list(batch)))
        if o is not None and o != s:
            raise Disagreement(f"put_if_newer: oracle wrote {o}, backend {s}")
        for record in batch:
            key = key_of(record)
            self.touched.add(key)
            self.note(record)
            stored = self.peek(key)
            if stored is not None and any(stored is r for r in batch):
                self.stamps[key] = Stamps(True, True)
        self.prune()
        for key in {key_of(r) for r in batch}:
            self.compare_get(key)

    @precondition(lambda self: bool(self.touched))
    @rule(data=st.data())
    def delete_if_older(self, data: st.DataObject) -> None:
        self.step("delete_if_older")
        now = time.time()
        exact_keys = sorted(k for k, v in self.stamps.items() if v.updated_explicit)
        if exact_keys and data.draw(st.booleans(), label="at a known updated_at"):
            namespace = data.draw(st.sampled_from(exact_keys), label="key")[0]
        else:
            namespace = data.draw(st.sampled_from(sorted({k[0] for k in self.touched})), label="namespace")
        mine = sorted(id for ns, id in self.touched if ns == namespace)
        deletions: dict[str, datetime] = {}
        for i in range(data.draw(st.integers(1, 3), label="size")):
            id = data.draw(st.one_of(st.sampled_from(mine), ids()), label=f"id {i}")
            stored = self.peek((namespace, id))
            stamps = self.stamps.get((namespace, id))
            exact = stored is not None and stamps is not None and stamps.updated_explicit
            if exact and data.draw(st.booleans(), label=f"equal {i}"):
                assert stored is not None
                at = stored.updated_at  # the stored version's time, or 1 µs either side of it
                assert at is not None
                at = at + timedelta(microseconds=data.draw(st.sampled_from([-1, 0, 0, 1]), label=f"us {i}"))
            else:
                offset = data.draw(st.sampled_from([-365 * 86400, -86400, -600, 600, 86400]), label=f"offset {i}")
                at = datetime.fromtimestamp(now + offset, UTC)
            deletions[id] = at.astimezone(data.draw(st.sampled_from(ZONES), label=f"zone {i}"))
        o, s = self.both(f"delete_if_older({deletions!r}, namespace={namespace!r})",
                         lambda b: b.delete_if_older(dict(deletions), namespace=namespace))
        if o is not None and o != s:
            raise Disagreement(f"delete_if_older({deletions!r}, namespace={namespace!r}): oracle deleted {o}, backend {s}")
        self.prune()
        for id in deletions:
            self.compare_get((namespace, id))

    # -- long-term reads ---------------------------------------------------------------------------

    def _filters(self, data: st.DataObject) -> dict[str, Any] | None:
        if data.draw(st.integers(0, 5), label="no filter") == 0:
            return None
        fields = data.draw(st.sets(st.sampled_from(["user_id", "session_id", "namespace", "memory_type", "topics"]),
                                   min_size=1, max_size=3), label="fields")
        flt: dict[str, Any] = {}
        for name in sorted(fields):
            if name == "memory_type":
                value = st.sampled_from(MEMORY_TYPES)
            else:
                seen = sorted(self.seen[name])
                value = st.one_of(st.sampled_from(seen), identifiers()) if seen else identifiers()
            flt[name] = data.draw(st.one_of(value, st.lists(value, min_size=1, max_size=3)), label=f"filter {name}")
        if data.draw(st.integers(0, 3), label="created_at range") == 0:
            flt["created_at"] = data.draw(time_ranges(self._anchors()), label="filter created_at")
        return flt

    def _anchors(self) -> list[datetime]:
        """The exact ``created_at`` of stored records whose ``created_at`` the test gave (a
        stamped one differs between the oracle and the backend by their clocks)."""
        out = []
        for key, stamps in sorted(self.stamps.items()):
            record = self.peek(key)
            if stamps.created_explicit and record is not None and record.created_at is not None:
                out.append(record.created_at)
        return out

    @rule(data=st.data())
    def get(self, data: st.DataObject) -> None:
        self.step("get")
        known = sorted(self.touched)
        anywhere = st.tuples(namespaces(), ids())
        key = data.draw(st.one_of(st.sampled_from(known), anywhere) if known else anywhere, label="key")
        self.compare_get(key)

    @rule(data=st.data())
    def count(self, data: st.DataObject) -> None:
        self.step("count")
        self.compare_count(self._filters(data))

    def compare_count(self, flt: dict[str, Any] | None) -> None:
        o, s = self.both(f"count({flt!r})", lambda b: b.count(flt))
        if o is not None and o != s:
            if s > o:
                self.tally.leaks += 1
                raise Leak(f"LEAK? count({flt!r}): oracle {o}, backend {s}")
            raise Disagreement(f"count({flt!r}): oracle {o}, backend {s}")

    @rule(data=st.data())
    def search(self, data: st.DataObject) -> None:
        self.step("search")
        query = data.draw(queries(), label="query")
        flt = self._filters(data)
        limit = data.draw(st.sampled_from([1, 2, 3, 5, 10, 50]), label="limit")
        self.compare_search(query, flt, limit)

    def _filter_of(self, data: st.DataObject, record: MemoryRecord) -> dict[str, Any]:
        """A filter that ``record`` matches: some of its own fields, each alone or in a list with
        another value seen in the store."""
        own: dict[str, str] = {"namespace": record.namespace, "memory_type": record.memory_type.value}
        if record.user_id is not None:
            own["user_id"] = record.user_id
        if record.session_id is not None:
            own["session_id"] = record.session_id
        if record.topics:
            own["topics"] = data.draw(st.sampled_from(record.topics), label="topic")
        fields = data.draw(st.sets(st.sampled_from(sorted(own)), min_size=1, max_size=3), label="fields")
        flt: dict[str, Any] = {}
        for name in sorted(fields):
            others = sorted(self.seen[name]) if name != "memory_type" else MEMORY_TYPES
            if others and data.draw(st.booleans(), label=f"list {name}"):
                flt[name] = [own[name], data.draw(st.sampled_from(others), label=f"other {name}")]
            else:
                flt[name] = own[name]
        stamps = self.stamps.get(key_of(record))
        if stamps is not None and stamps.created_explicit and data.draw(st.booleans(), label="range on it"):
            # a range with the record's own created_at as an inclusive or exclusive bound
            at = record.created_at.astimezone(data.draw(st.sampled_from(ZONES), label="zone"))  # type: ignore[union-attr]
            op = data.draw(st.sampled_from(["gte", "gt", "lte", "lt"]), label="bound")
            flt["created_at"] = {op: at}
        return flt

    @precondition(lambda self: bool(self.stamps))
    @rule(data=st.data())
    def search_stored(self, data: st.DataObject) -> None:
        """A search aimed at a stored record: words of its text, a filter of its own fields, a
        small limit (so more records may match than fit)."""
        self.step("search_stored")
        record = self.peek(data.draw(st.sampled_from(sorted(self.stamps)), label="key"))
        if record is None:
            return
        words = [w for w in _WORD.findall(record.text) if w.casefold() not in STOP_WORDS] or VOCAB
        query = " ".join(data.draw(st.lists(st.sampled_from(words), min_size=1, max_size=2), label="words"))
        flt = self._filter_of(data, record) if data.draw(st.booleans(), label="filtered") else None
        self.compare_search(query, flt, data.draw(st.sampled_from([1, 1, 2, 3, 10]), label="limit"))

    @precondition(lambda self: bool(self.stamps))
    @rule(data=st.data())
    def count_stored(self, data: st.DataObject) -> None:
        self.step("count_stored")
        record = self.peek(data.draw(st.sampled_from(sorted(self.stamps)), label="key"))
        if record is None:
            return
        self.compare_count(self._filter_of(data, record))

    def compare_search(self, query: str, flt: dict[str, Any] | None, limit: int) -> None:
        assert self.subject is not None
        what = f"search({query!r}, filter={flt!r}, limit={limit})"
        o, s = self.both(what, lambda b: b.search(query, filter=flt, limit=limit, mode="keyword"))
        if o is None:
            return
        self.tally.searches += 1
        full = self.run(self.oracle.search(query, filter=flt, limit=MAX_LIMIT, mode="keyword"))
        norm = normalised(flt)
        matching = {key_of(h.record) for h in full.hits}
        got = [key_of(h.record) for h in s.hits]
        for hit in s.hits:
            stored = self.peek(key_of(hit.record))
            if not matches(hit.record, norm) or (stored is not None and not matches(stored, norm)):
                self.tally.leaks += 1
                raise Leak(f"LEAK: {what} returned {key_of(hit.record)!r} ({hit.record!r}) outside the filter")
            if stored is None:
                self.tally.ghosts += 1
                raise Disagreement(f"{what} returned {key_of(hit.record)!r}, which the oracle does not hold")
        if len(set(got)) != len(got):
            raise Disagreement(f"{what}: the backend returned a record twice: {got!r}")
        if s.backend != self.subject.name or s.degraded or s.skipped:
            raise Disagreement(f"{what}: backend={s.backend!r} degraded={s.degraded} skipped={s.skipped}")
        if len(matching) <= limit:
            self.tally.full_membership += 1
            if set(got) != matching:
                raise Disagreement(
                    f"{what}: everything matching fits in limit; oracle found {sorted(matching)!r}, backend "
                    f"{sorted(got)!r} (missing {sorted(matching - set(got))!r}, extra {sorted(set(got) - matching)!r})"
                )
        else:
            extra = set(got) - matching
            if extra or len(got) != limit:
                raise Disagreement(f"{what}: {len(matching)} records match; backend returned {len(got)} hits, "
                                   f"{sorted(extra)!r} of them not matching")
        scores = [h.score for h in s.hits]
        if any(not math.isfinite(x) for x in scores) or scores != sorted(scores, reverse=True):
            raise Disagreement(f"{what}: scores are not best first: {scores!r}")
        if self.spec.exact_ranking:
            ranked = [(key_of(h.record), h.score) for h in o.hits]
            if ranked != [(key_of(h.record), h.score) for h in s.hits]:
                theirs = [(key_of(h.record), h.score) for h in s.hits]
                raise Disagreement(f"{what}: ranking differs: oracle {ranked!r}, backend {theirs!r}")
        for hit in s.hits:
            key = key_of(hit.record)
            assert_same_record(f"{what} hit {key!r}", self.peek(key), hit.record, self.stamps.get(key),
                               keeps_embedding=self.spec.keeps_embedding and self.spec.hits_carry_embedding,
                               tolerance=self.spec.clock_tolerance)

    # -- working memory ------------------------------------------------------------------------------

    def _session(self, data: st.DataObject) -> tuple[str, str]:
        known = sorted(self.sessions)
        pair = st.tuples(namespaces(), sessions())
        return data.draw(st.one_of(st.sampled_from(known), pair) if known else pair, label="(namespace, session)")

    @precondition(lambda self: self.spec.working_memory)
    @rule(data=st.data())
    def append_messages(self, data: st.DataObject) -> None:
        self.step("append_messages")
        namespace, session = self._session(data)
        one = messages(allow_empty=self.spec.flavour.allow_empty_text)
        batch = data.draw(st.lists(one, min_size=1, max_size=3), label="messages")
        self.sessions.add((namespace, session))
        self.both(f"append_messages({session!r}, namespace={namespace!r})",
                  lambda b: b.append_messages(session, list(batch), namespace=namespace))
        self.compare_messages(namespace, session, None)

    @precondition(lambda self: self.spec.working_memory)
    @rule(data=st.data())
    def get_messages(self, data: st.DataObject) -> None:
        self.step("get_messages")
        namespace, session = self._session(data)
        limit = data.draw(st.sampled_from([None, 1, 2, 3, 5, 10]), label="limit")
        self.compare_messages(namespace, session, limit)

    @precondition(lambda self: self.spec.working_memory)
    @rule(data=st.data())
    def clear_session(self, data: st.DataObject) -> None:
        self.step("clear_session")
        namespace, session = self._session(data)
        self.both(f"clear_session({session!r}, namespace={namespace!r})",
                  lambda b: b.clear_session(session, namespace=namespace))
        self.compare_messages(namespace, session, None)

    def compare_messages(self, namespace: str, session: str, limit: int | None) -> None:
        what = f"get_messages({session!r}, limit={limit}, namespace={namespace!r})"
        o, s = self.both(what, lambda b: b.get_messages(session, limit, namespace=namespace))
        if o is not None or s is not None:
            assert_same_messages(what, o, s, self.spec.clock_tolerance)

    # -- bad input -----------------------------------------------------------------------------------

    @rule(data=st.data())
    def bad_input(self, data: st.DataObject) -> None:
        self.step("bad_input")
        self.tally.bad_inputs += 1
        call = data.draw(bad_calls(self.spec), label="bad call")
        before = self.both("count() before", lambda b: b.count())
        assert self.subject is not None
        o = self.run(self._outcome(call.call, self.oracle))
        s = self.run(self._outcome(call.call, self.subject))
        self.tally.calls += 1
        for who, (_, exc) in (("oracle", o), ("backend", s)):
            if exc is None:
                raise Disagreement(f"{call}: the {who} accepted it")
            if not isinstance(exc, PrimitivesError) or not isinstance(exc, (ValueError, TypeError)):
                raise Disagreement(f"{call}: the {who} raised {_exc(exc)}, not a typed PrimitivesError")
        if type(o[1]) is not type(s[1]):
            raise Disagreement(f"{call}: oracle raised {_exc(o[1])}, backend {_exc(s[1])}")  # type: ignore[arg-type]
        after = self.both("count() after", lambda b: b.count())
        if after != before:
            raise Disagreement(f"{call} changed the store: count (oracle, backend) {before} -> {after}")

    # -- every step and at the end ---------------------------------------------------------------------

    @invariant()
    def same_total(self) -> None:
        if self.spec.check_every_step and self.subject is not None:
            o, s = self.both("count()", lambda b: b.count())
            if o != s:
                raise Disagreement(f"count(): oracle {o}, backend {s}")
        self.clean = True

    def check_all(self) -> None:
        """Every record and session the sequence touched, and every namespace's count."""
        for key in sorted(self.touched):
            self.compare_get(key)
        for namespace in sorted({k[0] for k in self.touched}):
            o, s = self.both("count", lambda b: b.count({"namespace": namespace}))
            if o != s:
                raise Disagreement(f"count({{'namespace': {namespace!r}}}): oracle {o}, backend {s}")
        if self.spec.working_memory:
            for namespace, session in sorted(self.sessions):
                self.compare_messages(namespace, session, None)
        if self.spec.final_check is not None and self.subject is not None:
            self.spec.final_check(self.subject)

    def teardown(self) -> None:
        try:
            if self.subject is not None and self.clean:
                self.check_all()
        finally:
            try:
                if self.subject is not None:
                    self.run(self.spec.close(self.subject))
                self.run(self.oracle.aclose())
            finally:
                self.loop.close()


def _exc(exc: BaseException) -> str:
    return f"{type(exc).__name__}({str(exc)[:200]!r})"


def machine_for(spec: BackendSpec) -> type[DifferentialMachine]:
    """A state machine class for ``spec``."""
    return type(f"Differential_{spec.name.replace('-', '_')}", (DifferentialMachine,), {"spec": spec})
