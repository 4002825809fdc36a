"""The memory tools the MCP server offers: their schemas and what each does with a ``Memory``.

Nothing here imports the ``mcp`` SDK, so the tools are plain async functions over
:class:`~primitives.memory.facade.Memory` (:func:`call_tool`) and JSON schemas
(:data:`TOOLS`); :mod:`primitives.integrations.mcp.server` puts them on the wire.

Arguments reach ``Memory``'s public methods exactly as the client sent them: the package's own
validation (``primitives.validation``, ``MemoryRecord``) is the only check of their values, so a
bad value raises the same typed error here as from Python, and nothing is stored. Checked here:
the argument *names* (an unknown or missing argument is an
:class:`~primitives.errors.InvalidInputError`): a misspelt ``userid`` must never turn into a
call without a user; and the scope, with ``primitives.validation.check_identifier``: ``user_id``
and ``namespace`` are each one identifier (a list would reach a search filter and read several
users or namespaces at once; ``""`` would answer "not found" instead of an error).

Scope: every tool works in one namespace (``namespace``, else the memory's) and for one
``user_id``, required unless the memory is single-user (``MEMORY_SINGLE_USER=1``): an unscoped
call raises :class:`~primitives.errors.UnscopedAccessError`. ``get_memory`` and
``delete_memory`` of a record that belongs to another user (or another namespace) answer as if it
did not exist. Working memory is kept per ``(namespace, session_id)`` as everywhere in the
package (messages have no owner): give tenants their own namespaces, or session ids they cannot
guess.

Every result is a JSON object with ``backend`` (what served the call: the configured backend, or
``"in-memory"`` when the resilient fallback did) and ``degraded`` (``True`` when the fallback
served it).
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable, Mapping
from dataclasses import dataclass, field
from typing import Any

from primitives.errors import InvalidInputError
from primitives.memory.facade import Memory
from primitives.memory.record import MemoryRecord
from primitives.memory.resilient import BreakerState, ResilientBackend
from primitives.validation import check_identifier

__all__ = ["ToolSpec", "TOOLS", "TOOL_NAMES", "call_tool"]

# -- schemas -------------------------------------------------------------------------------------

_ID = {"type": "string", "description": "1 to 1,024 characters, not only whitespace; kept exactly"}
_USER = {**_ID, "description": "whose memories (required unless the server's memory is single-user); " + _ID["description"]}
_NAMESPACE = {**_ID, "description": "a hard partition (tenant, app); the server's MEMORY_NAMESPACE when omitted"}
_SESSION = {**_ID, "description": "the conversation"}
_TOPICS = {"type": "array", "items": {"type": "string"}, "description": "tags; a search matches any of them, each exactly"}
_MEMORY_TYPE = {"type": "string", "description": "working, episodic (default), semantic or skill"}
_MODE = {"type": "string", "description": "keyword, vector or hybrid; the backend's default when omitted"}
_QUERY = {"type": "string", "description": "what to look for, in plain words"}

_SERVED = {
    "backend": {"type": "string", "description": "what served the call: in-memory, redis or agent-memory-server"},
    "degraded": {"type": "boolean", "description": "true when the fallback served it (the configured backend was down)"},
}
_RECORD = {
    "type": "object",
    "description": "a stored memory: id, text, user_id, session_id, namespace, memory_type, topics, metadata, "
                   "created_at, updated_at (ISO 8601, UTC), ttl (seconds)",
    "properties": {"id": {"type": "string"}, "text": {"type": "string"}},
    "required": ["id", "text"],
}
_HIT = {
    "type": "object",
    "description": "a search hit: id, text, score (higher is better, comparable within one result), metadata, "
                   "memory_type, namespace, user_id, session_id, topics, created_at",
    "properties": {"id": {"type": "string"}, "text": {"type": "string"}, "score": {"type": "number"}},
    "required": ["id", "text", "score"],
}
_MESSAGE = {
    "type": "object",
    "description": "a working-memory message: role, content, created_at, metadata",
    "properties": {"role": {"type": "string"}, "content": {"type": "string"}},
    "required": ["role", "content"],
}


def _input(properties: dict[str, Any], required: tuple[str, ...] = ()) -> dict[str, Any]:
    return {"type": "object", "properties": properties, "required": list(required), "additionalProperties": False}


def _output(properties: dict[str, Any]) -> dict[str, Any]:
    props = {**properties, **_SERVED}
    return {"type": "object", "properties": props, "required": list(props)}


# -- the tools -----------------------------------------------------------------------------------

Handler = Callable[[Memory, dict[str, Any]], Awaitable[dict[str, Any]]]


@dataclass(frozen=True)
class ToolSpec:
    """One tool: what a client lists (name, description, schemas, hints) and its handler.

    Attributes:
        name: The tool's name.
        description: What it does, for the model that calls it.
        input_schema: JSON Schema of its arguments (``additionalProperties: false``).
        output_schema: JSON Schema of its structured result.
        handler: ``async (memory, arguments) -> dict``; raises the package's typed errors.
        read_only: It changes nothing.
        destructive: It deletes.
    """

    name: str
    description: str
    input_schema: dict[str, Any]
    output_schema: dict[str, Any]
    handler: Handler = field(repr=False)
    read_only: bool = True
    destructive: bool = False


def _served(memory: Memory) -> dict[str, Any]:
    """``backend``/``degraded`` of a call that returns no :class:`SearchResult`: the resilient
    wrapper's breaker opens on the first failed primary call and closes on the next success, so
    its state right after the call says who served it (a concurrent call that changes it in
    between can only make this report the other outcome of that same moment)."""
    backend = memory.backend
    if isinstance(backend, ResilientBackend) and backend.breaker.state is not BreakerState.CLOSED:
        return {"backend": backend.fallback.name, "degraded": True}
    return {"backend": memory.backend_name, "degraded": False}


def _scope(memory: Memory, a: dict[str, Any], tool: str) -> None:
    """A per-user call's scope: ``user_id`` required unless the memory is single-user
    (``UnscopedAccessError``); ``user_id`` and ``namespace`` each one identifier
    (``InvalidInputTypeError`` for a non-string, ``InvalidInputError`` for ``""`` or an overlong
    one): a list would reach a filter and read several users or namespaces."""
    memory.require_scope(a.get("user_id"), tool)
    for name in ("user_id", "namespace"):
        if name in a:
            check_identifier(a[name], name)


def _record(record: MemoryRecord) -> dict[str, Any]:
    out = record.to_dict()
    del out["embedding"]  # hundreds of floats a model cannot use
    return out


async def _remember(memory: Memory, a: dict[str, Any]) -> dict[str, Any]:
    memory.require_scope(a.get("user_id"), "remember")
    record = await memory.remember(
        a["text"], user_id=a.get("user_id"), session_id=a.get("session_id"), namespace=a.get("namespace"),
        memory_type=a.get("memory_type", "episodic"), topics=a.get("topics", ()),
        metadata=a.get("metadata"), ttl=a.get("ttl"),
    )
    return {"memory": _record(record), **_served(memory)}


async def _search(memory: Memory, a: dict[str, Any]) -> dict[str, Any]:
    _scope(memory, a, "search_memory")
    result = await memory.search(
        a["query"], user_id=a.get("user_id"), session_id=a.get("session_id"), namespace=a.get("namespace"),
        memory_type=a.get("memory_type"), topics=a.get("topics"),
        limit=a.get("limit", 10), mode=a.get("mode"),
    )
    return {"memories": [h.to_dict() for h in result.hits], "skipped": result.skipped,
            "backend": result.backend, "degraded": result.degraded}


async def _recall(memory: Memory, a: dict[str, Any]) -> dict[str, Any]:
    _scope(memory, a, "recall")
    recall = await memory.recall(
        a["query"], session_id=a.get("session_id"), user_id=a.get("user_id"), namespace=a.get("namespace"),
        limit=a.get("limit", 5), mode=a.get("mode"),
    )
    return {
        "working_memory": [m.to_dict() for m in recall.working_memory],
        "relevant_memories": [h.to_dict() for h in recall.hits],
        "skipped": recall.skipped, "backend": recall.backend, "degraded": recall.degraded,
    }


async def _owned(memory: Memory, a: dict[str, Any], tool: str) -> MemoryRecord | None:
    """The record ``id`` of the namespace when it belongs to ``user_id`` (any, on a
    single-user memory called without one); ``None`` otherwise, as for a missing record."""
    _scope(memory, a, tool)  # user_id is only compared below: "" or 7 must be refused, not "not found"
    user_id = a.get("user_id")
    record = await memory.get(a["id"], namespace=a.get("namespace"))
    if record is None or (user_id is not None and record.user_id != user_id):
        return None
    return record


async def _get(memory: Memory, a: dict[str, Any]) -> dict[str, Any]:
    record = await _owned(memory, a, "get_memory")
    return {"found": record is not None, "memory": None if record is None else _record(record), **_served(memory)}


async def _delete(memory: Memory, a: dict[str, Any]) -> dict[str, Any]:
    record = await _owned(memory, a, "delete_memory")
    deleted = record is not None and await memory.delete([record.id], namespace=record.namespace) > 0
    return {"deleted": deleted, "id": a["id"], **_served(memory)}


async def _prompt(memory: Memory, a: dict[str, Any]) -> dict[str, Any]:
    _scope(memory, a, "memory_prompt")
    built = await memory.context(
        a["query"], session_id=a.get("session_id"), user_id=a.get("user_id"), namespace=a.get("namespace"),
        budget_tokens=a.get("budget_tokens", 1000), mode=a.get("mode"),
    )
    return built.to_dict()


_SCOPE = {"user_id": _USER, "namespace": _NAMESPACE}

TOOLS: tuple[ToolSpec, ...] = (
    ToolSpec(
        "remember",
        "Store one long-term memory (a fact, preference, event) for a user and return it as stored, with its id.",
        _input({"text": {"type": "string", "description": "what to remember"}, **_SCOPE, "session_id": _SESSION,
                "memory_type": _MEMORY_TYPE, "topics": _TOPICS,
                "metadata": {"type": "object", "description": "a JSON object of extra facts"},
                "ttl": {"type": "number", "description": "lifetime in seconds (the memory type's default when omitted)"}},
               ("text",)),
        _output({"memory": _RECORD}),
        _remember, read_only=False,
    ),
    ToolSpec(
        "search_memory",
        "Find a user's long-term memories relevant to a query, best first. Filters: session_id, memory_type "
        "(one or a list), topics (any of them).",
        _input({"query": _QUERY, **_SCOPE, "session_id": _SESSION,
                "memory_type": {"anyOf": [_MEMORY_TYPE, {"type": "array", "items": {"type": "string"}}],
                                "description": "one memory type or a list (any of them)"},
                "topics": _TOPICS, "limit": {"type": "integer", "description": "hits to return, 1..10000 (default 10)"},
                "mode": _MODE},
               ("query",)),
        _output({"memories": {"type": "array", "items": _HIT},
                 "skipped": {"type": "integer", "description": "damaged stored records left out"}}),
        _search,
    ),
    ToolSpec(
        "recall",
        "What to know before answering: the session's recent messages (oldest first) and the user's long-term "
        "memories relevant to the query (best first).",
        _input({"query": _QUERY, **_SCOPE, "session_id": {**_SESSION, "description": "whose recent messages to include"},
                "limit": {"type": "integer", "description": "long-term hits, 1..10000 (default 5)"}, "mode": _MODE},
               ("query",)),
        _output({"working_memory": {"type": "array", "items": _MESSAGE},
                 "relevant_memories": {"type": "array", "items": _HIT},
                 "skipped": {"type": "integer", "description": "damaged stored records left out"}}),
        _recall,
    ),
    ToolSpec(
        "get_memory",
        "One memory by id. found is false when it does not exist or belongs to another user or namespace.",
        _input({"id": {**_ID, "description": "the memory's id (from remember or a search)"}, **_SCOPE}, ("id",)),
        _output({"found": {"type": "boolean"}, "memory": {"anyOf": [_RECORD, {"type": "null"}]}}),
        _get,
    ),
    ToolSpec(
        "delete_memory",
        "Forget one memory by id. deleted is false when it does not exist or belongs to another user or namespace.",
        _input({"id": {**_ID, "description": "the memory's id"}, **_SCOPE}, ("id",)),
        _output({"deleted": {"type": "boolean"}, "id": {"type": "string"}}),
        _delete, read_only=False, destructive=True,
    ),
    ToolSpec(
        "memory_prompt",
        "A prompt block of what memory knows about the query (facts, episodes, skills, recent messages) that fits "
        "in budget_tokens (cl100k_base tokens), ready to paste into a system prompt.",
        _input({"query": _QUERY, **_SCOPE, "session_id": {**_SESSION, "description": "whose recent messages to include"},
                "budget_tokens": {"type": "integer", "description": "maximum tokens of text, >= 1 (default 1000)"},
                "mode": _MODE},
               ("query",)),
        _output({"text": {"type": "string"}, "tokens": {"type": "integer"}, "budget_tokens": {"type": "integer"},
                 "items": {"type": "array", "items": {"type": "object"}},
                 "dropped": {"type": "array", "items": {"type": "object"}},
                 "cached": {"type": "boolean"}}),
        _prompt,
    ),
)

TOOL_NAMES: tuple[str, ...] = tuple(t.name for t in TOOLS)
_BY_NAME: Mapping[str, ToolSpec] = {t.name: t for t in TOOLS}


def _arguments(spec: ToolSpec, arguments: Mapping[str, Any] | None) -> dict[str, Any]:
    """The call's arguments by name, values untouched; a JSON ``null`` is an omitted argument."""
    accepted = spec.input_schema["properties"]
    given = dict(arguments or {})
    unknown = sorted(k for k in given if k not in accepted)
    if unknown:
        raise InvalidInputError(
            f"{spec.name} takes no argument {', '.join(map(repr, unknown))}; it takes {', '.join(accepted)}"
        )
    args = {k: v for k, v in given.items() if v is not None}
    missing = [k for k in spec.input_schema["required"] if k not in args]
    if missing:
        raise InvalidInputError(f"{spec.name} needs {', '.join(map(repr, missing))}")
    return args


async def call_tool(memory: Memory, name: str, arguments: Mapping[str, Any] | None) -> dict[str, Any]:
    """Run tool ``name`` over ``memory``.

    Args:
        memory: The memory to serve.
        name: One of :data:`TOOL_NAMES`.
        arguments: The call's arguments (a JSON object; ``None`` is ``{}``).

    Returns:
        The tool's JSON-ready result (see each tool's output schema in :data:`TOOLS`).

    Raises:
        InvalidInputError: an unknown tool, an unknown argument, a missing required one, or (from
            ``Memory``) a value it does not accept; ``InvalidRecordError`` for a field of a record.
        UnscopedAccessError: no ``user_id`` on a multi-user memory.
        BackendUnavailableError: the backend is down and no fallback serves it.
        NotImplementedError: the backend lacks the capability (its message names what to use).
    """
    spec = _BY_NAME.get(name) if isinstance(name, str) else None
    if spec is None:
        raise InvalidInputError(f"unknown tool {name!r}; the tools are {', '.join(TOOL_NAMES)}")
    return await spec.handler(memory, _arguments(spec, arguments))
