"""Differential test of the MCP tools: the same random sequence of tool calls, sent with the
official SDK client (in process, as ``tests/test_mcp.py``'s ``served()``), to a server over the
in-process backend (the oracle) and to one over a real Redis, must show the same results.

Compared after each call (``tests/differential.py`` says why each relaxation exists):

- ``isError`` and the error's type (the ``"<ErrorType>: "`` prefix of its text);
- ``found`` / ``deleted`` flags, and each against the model (so a cross-tenant ``get_memory`` /
  ``delete_memory`` must answer "not found" on *both*, asserted directly);
- records, exactly (:func:`~tests.differential_compare.canon`: ``1`` is not ``1.0``), except the
  ids each server generates (mapped), ``backend``, scores, and the stamped ``created_at`` /
  ``updated_at`` (present, UTC, within ``TOLERANCE`` seconds, and equal to each other on both or
  on neither);
- ``search_memory`` / ``recall`` hits: each in the caller's tenant and matching the filters (else
  a :class:`~tests.differential_compare.Leak`), each a stored record; the *set* of ids when
  everything the oracle matches fits in ``limit``, else exactly ``limit`` of the oracle's matches
  (Redis's BM25STD is not our BM25, so order and scores are not compared);
- ``memory_prompt``: every line in the caller's tenant; the candidates (and, when nothing was
  dropped, the lines) when each memory type has at most ``limit_per_type`` matches;
- bad input (wrong types, unknown or missing arguments, limits out of range, unknown modes,
  unscoped calls): an error of the same type on both, and the stores unchanged.

Tenants: three users, two namespaces, session ids and topics drawn per example from
``test_mcp.HOSTILE`` and the differential identifier pool; texts, queries and metadata from the
differential strategies. Most searches aim at a stored record (its tenant, its words, its own or
another filter value); a "crowd" of one tenant's records is searched at once with ``limit`` 1 and
2. Working memory (no tool writes it) is appended straight to both memories. Vector and hybrid
modes are compared as errors only: neither server has an embedder.

Budget: ``MCP_DIFFERENTIAL_EXAMPLES`` (default 30: about 10-15 s here) examples of at most
``MCP_DIFFERENTIAL_STEPS`` (default 20) steps. Under ``CI=true`` Hypothesis's CI profile makes the
run deterministic; without it each run draws new sequences.
"""

from __future__ import annotations

import asyncio
import collections
import math
from datetime import datetime
from typing import Any, ClassVar

import pytest
from hypothesis import HealthCheck, settings
from hypothesis import strategies as st
from hypothesis.stateful import RuleBasedStateMachine, initialize, invariant, rule, run_state_machine_as_test

from primitives.memory import MemoryRecord, Message
from primitives.validation import MAX_IDENTIFIER_CHARS, MAX_LIMIT
from tests.differential_compare import (
    Disagreement,
    Leak,
    _WORD,
    assert_same_messages,
    assert_same_time,
    canon,
    matches,
    normalised,
)
from tests.differential_strategies import (
    INVALID_IDENTIFIERS,
    MEMORY_TYPES,
    VOCAB,
    env_int,
    identifiers,
    messages,
    metadata,
    namespaces,
    queries,
    sessions,
    texts,
)
from tests.test_mcp import BACKENDS, HOSTILE, call, error, served

EXAMPLES = env_int("MCP_DIFFERENTIAL_EXAMPLES", 30)
STEPS = env_int("MCP_DIFFERENTIAL_STEPS", 20)
#: Seconds between the two servers' "now" stamps of the same call.
TOLERANCE = 30.0
#: ``Memory.context``'s default: candidates considered per memory type.
LIMIT_PER_TYPE = 3
#: The context sections of the memory types (working memory records are in none).
SECTIONS = {"semantic": "facts", "episodic": "episodes", "skill": "skills"}

TALLY: collections.Counter[str] = collections.Counter()

# -- strategies (built on the differential ones) -----------------------------------------------------

_hostile = st.sampled_from(HOSTILE)
_user = st.one_of(_hostile, identifiers())
_namespace = st.one_of(st.none(), _hostile, namespaces())  # None: the server's namespace, "default"
_session = st.one_of(_hostile, sessions())
_topic = st.one_of(_hostile, identifiers())
_text = st.one_of(texts(), _hostile)
_query = st.one_of(queries(), _hostile)
_limit = st.one_of(st.none(), st.sampled_from([1, 1, 2, 2, 3, 5, 10, 50, MAX_LIMIT]))
# no embedder on either side: "vector" and "hybrid" must fail the same way on both
_mode = st.sampled_from([None, None, "keyword", "keyword", "vector", "hybrid"])
_ttl = st.sampled_from([None, None, 3600, 7200.0, 7200.5, 365 * 86400.0])

#: JSON values that no identifier argument accepts (bytes cannot travel as JSON).
_BAD_IDENTIFIERS = [v for v in INVALID_IDENTIFIERS if v is not None and not isinstance(v, bytes)] + [{"a": 1}, True]
_BAD_TEXT = [5, 1.5, True, ["t"], {"t": 1}, "bad \ud800 surrogate"]
_BAD_LIMITS = [0, -1, -(10**6), MAX_LIMIT + 1, 10**30, True, False, "5", 2.5, [5]]
_BAD_MODES = ["fuzzy", "", "KEYWORD", " keyword", "keyword\x00", 1, True, ["keyword"]]
_BAD_TYPES = ["bogus", "", "EPISODIC", ["episodic", "dream"], [], 5, [5]]
_BAD_TOPICS = ["drinks", [""], ["ok", " "], [5], ["ok", None], {"a": "b"}, 5]
_BAD_METADATA = ["x", [1], 5, True]
_BAD_TTL = [-1, -0.5, "60", [60]]
_BAD_BUDGETS = [0, -1, "5", True, 2.5]
_UNKNOWN_NAMES = ["userid", "user", "filter", "ids", "text ", "Query", "", "__proto__", "user_id\x00", "k"]

_TOOL_ARGS = {
    "remember": {"text", "user_id", "namespace", "session_id", "memory_type", "topics", "metadata", "ttl"},
    "search_memory": {"query", "user_id", "namespace", "session_id", "memory_type", "topics", "limit", "mode"},
    "recall": {"query", "user_id", "namespace", "session_id", "limit", "mode"},
    "get_memory": {"id", "user_id", "namespace"},
    "delete_memory": {"id", "user_id", "namespace"},
    "memory_prompt": {"query", "user_id", "namespace", "session_id", "budget_tokens", "mode"},
}
_BAD_VALUES: dict[str, list[Any]] = {
    "text": _BAD_TEXT, "query": _BAD_TEXT, "id": _BAD_IDENTIFIERS, "user_id": _BAD_IDENTIFIERS,
    "namespace": _BAD_IDENTIFIERS, "session_id": _BAD_IDENTIFIERS, "memory_type": _BAD_TYPES, "topics": _BAD_TOPICS,
    "metadata": _BAD_METADATA, "ttl": _BAD_TTL, "limit": _BAD_LIMITS, "mode": _BAD_MODES, "budget_tokens": _BAD_BUDGETS,
}


def _filter_value(tool: str, name: str, value: Any) -> bool:
    """Whether ``value`` is a valid search filter value: one value or a list of them
    (``normalize_filter``), so ``session_id=["s1"]`` and ``topics="drinks"`` are accepted by
    ``search_memory`` (``user_id`` and ``namespace`` are the scope: one identifier each)."""
    if tool != "search_memory":
        return False
    if name == "session_id":
        return isinstance(value, list) and all(isinstance(v, str) and v.strip() for v in value)
    return name == "topics" and isinstance(value, str) and value.strip() != ""


_REQUIRED = {"remember": "text", "search_memory": "query", "recall": "query", "get_memory": "id",
             "delete_memory": "id", "memory_prompt": "query"}


# -- one side: a memory and the SDK client connected to a server over it -----------------------------


class Side:
    """``served(backend)`` held open by one task of ``loop`` (the client's task group is entered
    and left in that task); calls run as other tasks of the same loop."""

    def __init__(self, loop: asyncio.AbstractEventLoop, backend: str, request: pytest.FixtureRequest | None) -> None:
        self.loop = loop
        self.stop = asyncio.Event()
        self.ready = asyncio.Event()
        self.task = loop.create_task(self._hold(backend, request))
        waiter = loop.create_task(self.ready.wait())
        loop.run_until_complete(asyncio.wait({self.task, waiter}, return_when=asyncio.FIRST_COMPLETED))
        if self.task.done():
            waiter.cancel()
            self.task.result()  # raises why it could not start

    async def _hold(self, backend: str, request: pytest.FixtureRequest | None) -> None:
        async with served(backend, request) as (memory, client):
            self.memory, self.client = memory, client
            self.ready.set()
            await self.stop.wait()

    def close(self) -> None:
        self.stop.set()
        self.loop.run_until_complete(self.task)

    def run(self, coro: Any) -> Any:
        return self.loop.run_until_complete(coro)

    def call(self, tool: str, args: dict[str, Any]) -> tuple[str | None, dict[str, Any] | None]:
        """``(error type, None)`` for an MCP error result (``"JSON-RPC <Type>"`` when the SDK
        raised: a bug the server did not turn into a tool error), else ``(None, result)``."""
        try:
            result = self.run(self.client.call_tool(tool, args))
        except Exception as exc:  # a protocol-level failure: compared like an error result
            return f"JSON-RPC {type(exc).__name__}: {exc}", None
        if result.is_error:
            return result.content[0].text.split(":", 1)[0], None
        return None, result.structured_content

    def count(self) -> int:
        return self.run(self.memory.backend.count())


def _short(value: Any) -> str:
    text = repr(value)
    return text if len(text) <= 300 else text[:300] + "..."


def _stamp(value: str | None) -> datetime | None:
    return None if value is None else datetime.fromisoformat(value)


# -- the machine ---------------------------------------------------------------------------------------


class MCPDifferential(RuleBasedStateMachine):
    """The oracle (in-process) and the subject (Redis) servers get every call; see the module docstring."""

    request: ClassVar[pytest.FixtureRequest]

    def __init__(self) -> None:
        super().__init__()
        TALLY["examples"] += 1
        self.loop = asyncio.new_event_loop()
        self.sides: list[Side] = []
        try:
            self.o = self._side("inmemory")
            self.s = self._side("redis")
        except BaseException:
            self._close()
            raise
        self.model: dict[str, dict[str, Any]] = {}  # oracle id -> the record as the oracle stored it
        self.o2s: dict[str, str] = {}
        self.s2o: dict[str, str] = {}
        self.clean = True

    def _side(self, backend: str) -> Side:
        side = Side(self.loop, backend, self.request if backend == "redis" else None)
        self.sides.append(side)
        return side

    @initialize(data=st.data())
    def tenants(self, data: st.DataObject) -> None:
        """Three users, two namespaces (``None``: the server's), two sessions, three topics."""
        self.users = data.draw(st.lists(_user, min_size=3, max_size=3, unique=True), label="users")
        self.namespaces = data.draw(st.lists(_namespace, min_size=2, max_size=2, unique_by=lambda n: n or "default"),
                                    label="namespaces")
        self.sessions = data.draw(st.lists(_session, min_size=2, max_size=2, unique=True), label="sessions")
        self.topics = data.draw(st.lists(_topic, min_size=3, max_size=3, unique=True), label="topics")
        for _ in range(data.draw(st.integers(1, 4), label="records to start with")):
            self._remember(data)  # so that get/delete/search have own and cross-tenant targets

    # -- plumbing ------------------------------------------------------------------------------------

    def both(self, tool: str, args: dict[str, Any], s_args: dict[str, Any] | None = None
             ) -> tuple[dict[str, Any] | None, dict[str, Any] | None]:
        """The call on both servers (``s_args``: the subject's, when ids differ); an error on one
        must be an error of the same type on the other. ``(None, None)`` after equal errors."""
        o_err, o = self.o.call(tool, args)
        s_err, s = self.s.call(tool, args if s_args is None else s_args)
        TALLY["calls"] += 1
        if o_err is not None or s_err is not None:
            if o_err != s_err or o_err.startswith("JSON-RPC"):  # a protocol failure is a bug, even on both
                raise Disagreement(f"{tool}({_short(args)}): oracle {o_err or 'returned ' + _short(o)}, "
                                   f"redis {s_err or 'returned ' + _short(s)}")
            TALLY[f"refused by both ({o_err})"] += 1
            return None, None
        assert o is not None and s is not None
        for who, out in (("oracle", o), ("redis", s)):
            if out.get("degraded") is not False:
                raise Disagreement(f"{tool}({_short(args)}): the {who} says degraded: {_short(out)}")
        return o, s

    def step(self, name: str) -> None:
        TALLY["steps"] += 1
        TALLY[name] += 1
        self.clean = False

    def scope(self, data: st.DataObject) -> tuple[str, str | None]:
        return (data.draw(st.sampled_from(self.users), label="user_id"),
                data.draw(st.sampled_from(self.namespaces), label="namespace"))

    @staticmethod
    def args(**values: Any) -> dict[str, Any]:
        """The call's arguments, an omitted one (``None``) left out."""
        return {k: v for k, v in values.items() if v is not None}

    def to_oracle(self, sid: str) -> str:
        return self.s2o.get(sid, sid)

    def to_subject(self, oid: str) -> str:
        return self.o2s.get(oid, oid)

    def compare_record(self, what: str, o: dict[str, Any], s: dict[str, Any]) -> None:
        """Two record (or hit) dicts: every field exactly, the subject's id mapped, stamps close."""
        volatile = {"backend", "score", "created_at", "updated_at", "id"}
        o_fields = {k: v for k, v in o.items() if k not in volatile}
        s_fields = {k: v for k, v in s.items() if k not in volatile}
        if canon(o_fields) != canon(s_fields) or o["id"] != self.to_oracle(s["id"]) or set(o) != set(s):
            diff = {k: (o.get(k), s.get(k)) for k in (set(o) | set(s)) - volatile if canon(o.get(k)) != canon(s.get(k))}
            raise Disagreement(f"{what}: fields differ (oracle, redis): {_short(diff)}; ids {o['id']!r} {s['id']!r}")
        for name in ("created_at", "updated_at"):
            if name in o:
                assert_same_time(f"{what} {name}", _stamp(o[name]), _stamp(s[name]), False, TOLERANCE)
        if "updated_at" in o and (o["created_at"] == o["updated_at"]) != (s["created_at"] == s["updated_at"]):
            raise Disagreement(f"{what}: created_at == updated_at on one side only: oracle {o['created_at']} "
                               f"{o['updated_at']}, redis {s['created_at']} {s['updated_at']}")

    def owned(self, user: str, namespace: str | None) -> list[str]:
        """The caller's record ids, in the order they were stored (not sorted: ids are random
        UUIDs, and what is drawn from this list must not depend on them)."""
        return [i for i, r in self.model.items() if r["user_id"] == user and r["namespace"] == (namespace or "default")]

    def target(self, data: st.DataObject, user: str, namespace: str | None) -> tuple[str, str]:
        """An id to get or delete: the caller's own, another tenant's, or one nobody has."""
        own = self.owned(user, namespace)
        others = [i for i in self.model if i not in own]
        ids = {"random": st.one_of(_hostile, identifiers()), "own": st.sampled_from(own or ["-"]),
               "cross-tenant": st.sampled_from(others or ["-"])}
        kinds = ["random"] + ["own"] * 2 * bool(own) + ["cross-tenant"] * 2 * bool(others)
        kind = data.draw(st.sampled_from(kinds), label="target")
        return kind, data.draw(ids[kind], label=f"{kind} id")

    # -- writes ---------------------------------------------------------------------------------------

    @rule(data=st.data())
    def remember(self, data: st.DataObject) -> None:
        self.step("remember")
        self._remember(data)

    @rule(data=st.data())
    def remember_crowd(self, data: st.DataObject) -> None:
        """Several records of one tenant with overlapping words, so that more records match a
        search than its ``limit`` (as ``add_crowd`` in tests/differential.py)."""
        self.step("remember_crowd")
        scope = self.scope(data)
        words = st.lists(st.sampled_from(VOCAB[:6]), min_size=1, max_size=4).map(" ".join)
        texts = [data.draw(words, label="text") for _ in range(data.draw(st.integers(3, 6), label="records"))]
        for text in texts:
            self._remember(data, scope, text)
        # at once: the crowd's most common word, with fewer hits allowed than records match
        word = collections.Counter(w for t in texts for w in set(t.split())).most_common(1)[0][0]
        for limit in (1, 2):
            self.compare_search(self.args(query=word, user_id=scope[0], namespace=scope[1], limit=limit, mode="keyword"))

    def _remember(self, data: st.DataObject, scope: tuple[str, str | None] | None = None, text: str | None = None) -> None:
        user, namespace = scope or self.scope(data)
        args = self.args(
            text=text if text is not None else data.draw(_text, label="text"), user_id=user, namespace=namespace,
            session_id=data.draw(st.one_of(st.none(), st.sampled_from(self.sessions), _session), label="session_id"),
            memory_type=data.draw(st.one_of(st.none(), st.sampled_from(MEMORY_TYPES)), label="memory_type"),
            topics=data.draw(st.one_of(st.none(), st.lists(st.one_of(st.sampled_from(self.topics), _topic), max_size=3)),
                             label="topics"),
            metadata=data.draw(st.one_of(st.none(), metadata()), label="metadata"),
            ttl=data.draw(_ttl, label="ttl"),
        )
        o, s = self.both("remember", args)
        if o is None or s is None:
            return
        oid, sid = o["memory"]["id"], s["memory"]["id"]
        self.o2s[oid], self.s2o[sid] = sid, oid
        self.compare_record(f"remember({_short(args)})", o["memory"], s["memory"])
        self.model[oid] = o["memory"]

    @rule(data=st.data())
    def append_messages(self, data: st.DataObject) -> None:
        """Working memory for ``recall`` and ``memory_prompt`` (no tool writes it: straight to both memories)."""
        self.step("append_messages")
        namespace = data.draw(st.sampled_from(self.namespaces), label="namespace")
        session = data.draw(st.sampled_from(self.sessions), label="session_id")
        batch = data.draw(st.lists(messages(), min_size=1, max_size=3), label="messages")
        for side in (self.o, self.s):
            side.run(side.memory.append_messages(session, list(batch), namespace=namespace))

    @rule(data=st.data())
    def delete_memory(self, data: st.DataObject) -> None:
        self.step("delete_memory")
        user, namespace = self.scope(data)
        kind, oid = self.target(data, user, namespace)
        args = self.args(id=oid, user_id=user, namespace=namespace)
        o, s = self.both("delete_memory", args, {**args, "id": self.to_subject(oid)})
        expected = oid in self.owned(user, namespace)
        if o is None or s is None:
            raise Disagreement(f"delete_memory({_short(args)}) refused by both")
        if (o["deleted"], s["deleted"]) != (expected, expected):
            leak = Leak if kind == "cross-tenant" and s["deleted"] else Disagreement
            raise leak(f"delete_memory({_short(args)}) [{kind}]: deleted oracle {o['deleted']}, redis {s['deleted']}, "
                       f"expected {expected}")
        if (o["id"], self.to_oracle(s["id"])) != (oid, oid):
            raise Disagreement(f"delete_memory({_short(args)}): id echoed oracle {o['id']!r}, redis {s['id']!r}")
        if expected:
            del self.model[oid]
        TALLY[f"delete {kind}"] += 1

    # -- reads -----------------------------------------------------------------------------------------

    @rule(data=st.data())
    def get_memory(self, data: st.DataObject) -> None:
        self.step("get_memory")
        user, namespace = self.scope(data)
        kind, oid = self.target(data, user, namespace)
        self.compare_get(kind, oid, user, namespace)

    def compare_get(self, kind: str, oid: str, user: str, namespace: str | None) -> None:
        args = self.args(id=oid, user_id=user, namespace=namespace)
        o, s = self.both("get_memory", args, {**args, "id": self.to_subject(oid)})
        expected = oid in self.owned(user, namespace)
        if o is None or s is None:
            raise Disagreement(f"get_memory({_short(args)}) refused by both")
        if (o["found"], s["found"]) != (expected, expected):
            leak = Leak if kind == "cross-tenant" and s["found"] else Disagreement
            raise leak(f"get_memory({_short(args)}) [{kind}]: found oracle {o['found']}, redis {s['found']}, "
                       f"expected {expected}")
        if expected:
            self.compare_record(f"get_memory({_short(args)})", o["memory"], s["memory"])
            if canon(o["memory"]) != canon(self.model[oid]):
                raise Disagreement(f"get_memory({_short(args)}): the oracle changed the record: {_short(o['memory'])}")
        elif o["memory"] is not None or s["memory"] is not None:
            raise Disagreement(f"get_memory({_short(args)}): not found, yet a memory: {_short((o, s))}")
        TALLY[f"get {kind}"] += 1

    def query(self, data: st.DataObject) -> tuple[str, str, str | None, dict[str, Any]]:
        """``(query, user_id, namespace, record)``: any of them (``record`` empty), or aimed at
        a stored record (its tenant, words of its text), so that searches find something."""
        if self.model and data.draw(st.integers(0, 3), label="aimed at a stored record unless 0"):
            record = self.model[data.draw(st.sampled_from(list(self.model)), label="record")]
            words = _WORD.findall(record["text"]) or VOCAB
            query = data.draw(st.lists(st.sampled_from(words), min_size=1, max_size=3).map(" ".join), label="query")
            return query, record["user_id"], record["namespace"], record
        query = data.draw(st.one_of(_query, st.lists(st.sampled_from(VOCAB[:6]), min_size=1, max_size=2).map(" ".join)),
                          label="query")
        return (query, *self.scope(data), {})

    def filter_value(self, data: st.DataObject, name: str, own: Any, other: st.SearchStrategy[Any]) -> Any:
        """A filter value: none (most often), the aimed-at record's own (when it has one), or ``other``."""
        pick = data.draw(st.sampled_from(["none", "none", "own", "other"]), label=f"{name} from")
        if pick == "own" and own:
            return own
        return data.draw(other, label=name) if pick == "other" else None

    @rule(data=st.data())
    def search_memory(self, data: st.DataObject) -> None:
        self.step("search_memory")
        query, user, namespace, record = self.query(data)
        memory_type = st.sampled_from(MEMORY_TYPES)
        args = self.args(
            query=query, user_id=user, namespace=namespace,
            session_id=self.filter_value(data, "session_id", record.get("session_id"),
                                         st.one_of(st.sampled_from(self.sessions), _session)),
            memory_type=self.filter_value(data, "memory_type", record.get("memory_type"),
                                          st.one_of(memory_type, st.lists(memory_type, min_size=1, max_size=3))),
            topics=self.filter_value(data, "topics", record.get("topics", [])[:1],
                                     st.lists(st.one_of(st.sampled_from(self.topics), _topic), min_size=1, max_size=3)),
            limit=data.draw(_limit, label="limit"), mode=data.draw(_mode, label="mode"),
        )
        self.compare_search(args)

    def compare_search(self, args: dict[str, Any]) -> None:
        o, s = self.both("search_memory", args)
        if o is None or s is None:
            return
        self.compare_hits("search_memory", args, o["memories"], s["memories"], args.get("limit", 10))
        if (o["skipped"], s["skipped"]) != (0, 0):
            raise Disagreement(f"search_memory({_short(args)}): skipped oracle {o['skipped']}, redis {s['skipped']}")

    @rule(data=st.data())
    def recall(self, data: st.DataObject) -> None:
        self.step("recall")
        query, user, namespace, _ = self.query(data)
        args = self.args(
            query=query, user_id=user, namespace=namespace,
            session_id=data.draw(st.one_of(st.none(), st.sampled_from(self.sessions), _session), label="session_id"),
            limit=data.draw(_limit, label="limit"), mode=data.draw(_mode, label="mode"),
        )
        o, s = self.both("recall", args)
        if o is None or s is None:
            return
        what = f"recall({_short(args)})"
        assert_same_messages(what, [Message.from_dict(m) for m in o["working_memory"]],
                             [Message.from_dict(m) for m in s["working_memory"]], TOLERANCE)
        self.compare_hits("recall", {k: v for k, v in args.items() if k != "session_id"},
                          o["relevant_memories"], s["relevant_memories"], args.get("limit", 5))

    def compare_hits(self, tool: str, args: dict[str, Any], o_hits: list[dict[str, Any]], s_hits: list[dict[str, Any]],
                     limit: int) -> None:
        what = f"{tool}({_short(args)})"
        TALLY["searches"] += 1
        user, namespace = args["user_id"], args.get("namespace") or "default"
        flt = normalised({"user_id": user, "namespace": namespace, **{k: args[k] for k in
                                                                     ("session_id", "memory_type", "topics") if k in args}})
        got = [self.to_oracle(h["id"]) for h in s_hits]
        for hit, oid in zip(s_hits, got):
            # the tenant, asserted directly (not only as equality with the oracle)
            if hit["user_id"] != user or hit["namespace"] != namespace or not matches(MemoryRecord.from_dict(hit), flt):
                TALLY["leaks"] += 1
                raise Leak(f"LEAK: {what} returned {_short(hit)} outside the caller's tenant or filters")
            stored = self.model.get(oid)
            if stored is None:
                raise Disagreement(f"{what} returned {hit['id']!r}, which the oracle does not hold")
            if stored["user_id"] != user or stored["namespace"] != namespace:
                TALLY["leaks"] += 1
                raise Leak(f"LEAK: {what} returned {oid!r} of {stored['user_id']!r} in {stored['namespace']!r}")
            self.compare_record(f"{what} hit {oid!r}", {k: stored[k] for k in hit if k != "score"},
                                {k: v for k, v in hit.items() if k != "score"})
        for hit in o_hits:  # the oracle is held to the same rule
            if hit["user_id"] != user or hit["namespace"] != namespace:
                raise Leak(f"LEAK (oracle): {what} returned {_short(hit)}")
        if len(set(got)) != len(got):
            raise Disagreement(f"{what}: redis returned a record twice: {got!r}")
        # everything the oracle matches: the same search with the largest limit
        full_args = {**args, "limit": MAX_LIMIT}
        err, full = self.o.call("search_memory", full_args)
        assert err is None and full is not None, (full_args, err)
        matching = {h["id"] for h in full["memories"]}
        oracle_ids = {h["id"] for h in o_hits}
        if len(matching) <= limit:
            TALLY["searches: full membership"] += 1
            if set(got) != matching or oracle_ids != matching:
                raise Disagreement(f"{what}: everything matching fits in limit; matching {sorted(matching)!r}, "
                                   f"oracle {sorted(oracle_ids)!r}, redis {sorted(got)!r}")
        elif TALLY.update(["searches: more matches than limit"]) or len(got) != limit or not set(got) <= matching:
            raise Disagreement(f"{what}: {len(matching)} records match; redis returned {len(got)} hits, "
                               f"{sorted(set(got) - matching)!r} of them not matching")
        scores = [h["score"] for h in s_hits]
        if any(not math.isfinite(x) for x in scores) or scores != sorted(scores, reverse=True):
            raise Disagreement(f"{what}: scores are not best first: {scores!r}")

    @rule(data=st.data())
    def memory_prompt(self, data: st.DataObject) -> None:
        self.step("memory_prompt")
        query, user, namespace, _ = self.query(data)
        args = self.args(
            query=query, user_id=user, namespace=namespace,
            session_id=data.draw(st.one_of(st.none(), st.sampled_from(self.sessions), _session), label="session_id"),
            budget_tokens=data.draw(st.sampled_from([None, 1, 5, 50, 1000, 100_000]), label="budget_tokens"),
            mode=data.draw(_mode, label="mode"),
        )
        o, s = self.both("memory_prompt", args)
        if o is None or s is None:
            return
        what = f"memory_prompt({_short(args)})"
        ns = namespace or "default"
        for who, out in (("oracle", o), ("redis", s)):
            if out["tokens"] > out["budget_tokens"]:
                raise Disagreement(f"{what}: the {who} used {out['tokens']} tokens of {out['budget_tokens']}")
            for item in out["items"] + out["dropped"]:
                if item["id"] is None:
                    continue
                stored = self.model.get(item["id"] if who == "oracle" else self.to_oracle(item["id"]))
                if stored is None or stored["user_id"] != user or stored["namespace"] != ns:
                    TALLY["leaks"] += 1
                    raise Leak(f"LEAK: {what}: the {who} shows {_short(item)} (stored: {_short(stored)})")
        if (o["budget_tokens"], o["cached"]) != (s["budget_tokens"], s["cached"]):
            raise Disagreement(f"{what}: budget/cached oracle {(o['budget_tokens'], o['cached'])}, "
                               f"redis {(s['budget_tokens'], s['cached'])}")
        # the ranking differs (BM25STD), so which candidates a type keeps may differ: compare them
        # only when every match of each type is a candidate
        per_type: collections.Counter[str] = collections.Counter()
        err, full = self.o.call("search_memory", self.args(query=args["query"], user_id=user, namespace=namespace,
                                                           limit=MAX_LIMIT, mode=args.get("mode")))
        assert err is None and full is not None
        per_type.update(h["memory_type"] for h in full["memories"])
        if any(n > LIMIT_PER_TYPE for t, n in per_type.items() if t in SECTIONS):
            return
        TALLY["prompts compared"] += 1

        # a skill without a name in its metadata is named by its id, which each server made up
        renamed = [(i["id"], self.to_oracle(i["id"])) for i in s["items"] + s["dropped"] if i["id"] is not None]

        def oracle_ids(text: str) -> str:
            for sid, oid in renamed:
                text = text.replace(sid, oid)
            return text

        def lines(items: list[dict[str, Any]], side: str) -> list[tuple[Any, ...]]:
            ids = (lambda i: i) if side == "oracle" else self.to_oracle
            line = (lambda t: t) if side == "oracle" else oracle_ids
            return sorted((i["section"], None if i["id"] is None else ids(i["id"]), line(i["line"])) for i in items)

        o_all, s_all = lines(o["items"] + o["dropped"], "oracle"), lines(s["items"] + s["dropped"], "redis")
        if o_all != s_all:
            raise Disagreement(f"{what}: candidates differ: oracle {_short(o_all)}, redis {_short(s_all)}")
        if not o["dropped"] and not s["dropped"]:
            if lines(o["items"], "oracle") != lines(s["items"], "redis") or \
                    sorted(o["text"].splitlines()) != sorted(oracle_ids(s["text"]).splitlines()):
                raise Disagreement(f"{what}: texts differ: oracle {o['text']!r}, redis {s['text']!r}")

    # -- bad input ---------------------------------------------------------------------------------------

    @rule(data=st.data())
    def bad_input(self, data: st.DataObject) -> None:
        """A call every server must refuse the same way, storing nothing."""
        self.step("bad_input")
        tool = data.draw(st.sampled_from(sorted(_TOOL_ARGS)), label="tool")
        user, namespace = self.scope(data)
        args: dict[str, Any] = self.args(user_id=user, namespace=namespace)
        args[_REQUIRED[tool]] = data.draw(_text, label="required value") if tool != "get_memory" else "r1"
        if tool == "delete_memory":
            args["id"] = "r1"
        how = data.draw(st.sampled_from(["value", "value", "value", "unknown name", "missing", "unscoped", "tool"]),
                        label="how")
        if how == "value":
            name = data.draw(st.sampled_from(sorted(_TOOL_ARGS[tool] & set(_BAD_VALUES))), label="argument")
            args[name] = data.draw(st.sampled_from([v for v in _BAD_VALUES[name] if not _filter_value(tool, name, v)]),
                                   label="bad value")
        elif how == "unknown name":
            args[data.draw(st.sampled_from(_UNKNOWN_NAMES), label="unknown name")] = data.draw(_user, label="value")
        elif how == "missing":
            del args[_REQUIRED[tool]]
        elif how == "unscoped":
            del args["user_id"]
        else:
            tool = data.draw(st.sampled_from(["no_such_tool", "Remember", "remember ", "search", ""]), label="bad tool")
        TALLY["bad inputs"] += 1
        before = (self.o.count(), self.s.count())
        o_err, o = self.o.call(tool, args)
        s_err, s = self.s.call(tool, args)
        TALLY["calls"] += 1
        if o_err is None or s_err is None:
            raise Disagreement(f"{tool}({_short(args)}) [{how}]: accepted: oracle {_short(o_err or o)}, "
                               f"redis {_short(s_err or s)}")
        if o_err != s_err or o_err.startswith("JSON-RPC"):
            raise Disagreement(f"{tool}({_short(args)}) [{how}]: oracle {o_err}, redis {s_err}")
        after = (self.o.count(), self.s.count())
        if after != before:
            raise Disagreement(f"{tool}({_short(args)}) [{how}] changed the stores: counts {before} -> {after}")

    # -- every step and at the end --------------------------------------------------------------------------

    @invariant()
    def same_count(self) -> None:
        counts = (self.o.count(), self.s.count())
        if counts != (len(self.model), len(self.model)):
            raise Disagreement(f"count (oracle, redis) {counts}, the model holds {len(self.model)}")
        self.clean = True

    def teardown(self) -> None:
        try:
            if self.clean and hasattr(self, "users"):
                for oid, record in sorted(self.model.items()):
                    self.compare_get("own", oid, record["user_id"],
                                     None if record["namespace"] == "default" else record["namespace"])
        finally:
            self._close()

    def _close(self) -> None:
        try:
            for side in self.sides:
                side.close()
        finally:
            self.loop.close()


@pytest.fixture(scope="module", autouse=True)
def _report(request: pytest.FixtureRequest):
    """Print what the runs executed, after the module (visible without ``-s``)."""
    yield
    if TALLY:
        line = "MCP differential (oracle: in-process): " + ", ".join(f"{k} {v}" for k, v in sorted(TALLY.items()))
        capture = request.config.pluginmanager.get_plugin("capturemanager")
        reporter = request.config.pluginmanager.get_plugin("terminalreporter")
        if capture is None or reporter is None:
            print(line)
            return
        with capture.global_and_fixture_disabled():
            reporter.write_line("")
            reporter.write_line(line)


@pytest.mark.integration
def test_mcp_tools_on_redis_show_what_they_show_in_process(redis_server, request: pytest.FixtureRequest) -> None:
    machine = type("MCPDifferentialRedis", (MCPDifferential,), {"request": request})
    run_state_machine_as_test(machine, settings=settings(
        max_examples=EXAMPLES, stateful_step_count=STEPS, deadline=None, print_blob=True,
        suppress_health_check=[HealthCheck.too_slow, HealthCheck.filter_too_much, HealthCheck.data_too_large],
    ))


# -- found by this test, kept as its minimal reproductions ---------------------------------------------


@pytest.mark.parametrize("backend", BACKENDS)
@pytest.mark.parametrize("tool", ["search_memory", "recall", "memory_prompt", "get_memory", "delete_memory"])
async def test_a_scope_that_is_not_one_identifier_is_refused(
    backend: str, tool: str, request: pytest.FixtureRequest
) -> None:
    """Found by the ``bad_input`` step, the same on both backends (fixed in ``tools._scope``):
    ``get_memory``/``delete_memory`` only compared ``user_id`` with the record's owner, so
    ``user_id=""`` (or ``7``) answered "not found" instead of an error; ``search_memory`` and
    ``recall`` passed ``user_id``/``namespace`` to a filter, which takes a list, so
    ``user_id=["alice", "bob"]`` read both users' memories in one call."""
    async with served(backend, request) as (memory, client):
        ids = [(await call(client, "remember", text="pineapple plan", user_id=u, namespace=ns))["memory"]["id"]
               for u in ("alice", "bob") for ns in ("default", "other")]
        target = {"id": ids[0]} if tool in ("get_memory", "delete_memory") else {"query": "pineapple plan"}
        for name in ("user_id", "namespace"):
            for value in ("", "   ", 7, ["alice"], ["alice", "bob"], ["default", "other"], {"a": 1},
                          "x" * (MAX_IDENTIFIER_CHARS + 1)):
                args = {"user_id": "alice", **target, name: value}
                text = await error(client, tool, **args)
                expected = "InvalidInputError" if isinstance(value, str) else "InvalidInputTypeError"
                assert text.startswith(f"{expected}: {name} "), (args, text)
        assert await memory.count() == 2 and await memory.count(namespace="other") == 2
