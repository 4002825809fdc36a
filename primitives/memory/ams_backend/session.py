"""Working memory on the Agent Memory Server (AMS 0.15.2): seam messages <-> AMS session JSON.
Pure functions, no I/O.

- **Sessions.** Working memory ``(namespace, session_id)`` is the AMS session whose id is
  :func:`~primitives.memory.ams_backend.codec.ams_id` of the pair (the same injective derivation
  as record ids), stored without an AMS ``namespace`` or ``user_id``. AMS's own namespace is not
  used for it: AMS joins namespace, user and session into one Redis key with ``:``, which is
  not injective (``("a:b", "c")`` and ``("a", "b:c")`` share a key).
- **A message's extras** travel in its AMS message id, which the client chooses: a ULID, then,
  when there is anything to carry, ``".mp1."`` + base64url(JSON object) with ``m`` (its
  metadata; AMS messages have none), ``c`` (its exact content when blank: AMS refuses blank
  content, so :data:`~primitives.memory.ams_backend.codec.BLANK_PLACEHOLDER` is stored) and
  ``t`` (its exact ``created_at`` in microseconds when it lies more than a minute ahead: AMS
  refuses a message more than 300 s in the future, so "now" is stored). So each message is
  whole in itself and a damaged one costs only itself.
- Messages are sent with ``discrete_memory_extracted: "t"``: an AMS with discrete memory
  extraction on would otherwise run its LLM over every turn and write what it extracts into
  long-term memory.
"""

from __future__ import annotations

import base64
import json
from collections.abc import Mapping, Sequence
from datetime import datetime, timedelta, timezone
from typing import Any

from primitives.errors import CorruptRecordError, PrimitivesError
from primitives.memory.ams_backend.codec import BLANK_PLACEHOLDER, corrupt, unb64
from primitives.memory.ams_backend.mapping import parse_time
from primitives.memory.record import Message
from primitives.validation import check_json_object

__all__ = ["EXTRAS_MARK", "appended", "is_ours", "message_from_ams", "message_to_ams", "session_messages"]

#: Separates a message's ULID from its extras in its AMS message id.
EXTRAS_MARK = ".mp1."
#: How far ahead of now a message's ``created_at`` is sent as it is (AMS allows 300 s).
_AHEAD = timedelta(seconds=60)
_EPOCH = datetime(1970, 1, 1, tzinfo=timezone.utc)


def _micros(dt: datetime) -> int:
    delta = dt - _EPOCH
    return (delta.days * 86400 + delta.seconds) * 1_000_000 + delta.microseconds


def message_to_ams(message: Message, id: str, now: datetime) -> dict[str, Any]:
    """AMS ``MemoryMessage`` JSON for ``message``, its AMS id ``id`` (a ULID) plus its extras;
    ``created_at`` defaults to ``now``."""
    extras: dict[str, Any] = {}
    if message.metadata:
        extras["m"] = dict(message.metadata)
    content = message.content
    if not content.strip():
        extras["c"] = content
        content = BLANK_PLACEHOLDER
    created = message.created_at or now
    sent = created
    if created > now + _AHEAD:
        extras["t"] = _micros(created)
        sent = now
    if extras:
        raw = json.dumps(extras, ensure_ascii=False, separators=(",", ":")).encode()
        id += EXTRAS_MARK + base64.urlsafe_b64encode(raw).decode().rstrip("=")
    return {
        "id": id,
        "role": message.role,
        "content": content,
        "created_at": sent.astimezone(timezone.utc).isoformat(),
        "discrete_memory_extracted": "t",
    }


def _extras(mid: str) -> dict[str, Any]:
    if EXTRAS_MARK not in mid:
        return {}
    body = mid.split(EXTRAS_MARK, 1)[1]
    try:
        extras = json.loads(unb64(body))
    except (ValueError, UnicodeDecodeError, RecursionError) as exc:
        raise ValueError(f"its extras do not decode ({type(exc).__name__})") from None
    if not isinstance(extras, dict):
        raise ValueError("its extras are not an object")
    if "c" in extras and (not isinstance(extras["c"], str) or extras["c"].strip()):
        raise ValueError("its carried content is not a blank string")
    if "t" in extras and (not isinstance(extras["t"], int) or isinstance(extras["t"], bool)):
        raise ValueError("its carried created_at is not integer microseconds")
    return extras


def message_from_ams(data: Any, session: str) -> Message:
    """The seam ``Message`` for an AMS message JSON object of session ``session``.

    Raises:
        CorruptRecordError: it does not decode exactly (``key`` is ``session + "#" + its id``).
    """
    mid = data.get("id") if isinstance(data, dict) else None
    key = f"{session}#{mid if isinstance(mid, str) else '?'}"
    try:
        if not isinstance(data, dict) or not isinstance(mid, str):
            raise ValueError("it is not a message object with a string id")
        extras = _extras(mid)
        content = data.get("content")
        if "c" in extras:
            if content != BLANK_PLACEHOLDER:
                raise ValueError("it carries a blank content but its content is not the placeholder")
            content = extras["c"]
        created = parse_time(data.get("created_at"))
        if "t" in extras:
            created = _EPOCH + timedelta(microseconds=extras["t"])
        metadata = check_json_object(extras["m"], "its metadata") if "m" in extras else {}
        return Message(data.get("role"), content, created, metadata)  # type: ignore[arg-type]
    except (ValueError, TypeError, OverflowError, PrimitivesError) as exc:
        if isinstance(exc, CorruptRecordError):
            raise
        raise corrupt(key, str(exc)) from None


def is_ours(memory: Any, session: str) -> bool:
    """Whether a session read back is the one asked for: AMS answers a missing key with a
    session of the same id under another namespace or user (its key index), and matches
    session ids case-insensitively there."""
    return (isinstance(memory, dict) and memory.get("session_id") == session
            and not memory.get("namespace") and not memory.get("user_id"))


def session_messages(memory: Mapping[str, Any], session: str) -> tuple[list[Message], list[CorruptRecordError]]:
    """The messages of an AMS working-memory JSON object, oldest first, and the damaged ones
    left out (one error each, naming the message)."""
    messages: list[Message] = []
    damaged: list[CorruptRecordError] = []
    items = memory.get("messages")
    for item in items if isinstance(items, list) else ():
        try:
            messages.append(message_from_ams(item, session))
        except CorruptRecordError as exc:
            damaged.append(exc)
    return messages, damaged


def appended(
    memory: Mapping[str, Any],
    messages: Sequence[Message],
    ids: Sequence[str],
    now: datetime,
    size: int,
    ttl: float | None,
) -> dict[str, Any]:
    """The ``PUT /v1/working-memory/{session}`` body that appends ``messages`` (AMS ids ``ids``)
    to ``memory`` (the session's JSON; ``{}`` for a new one): its last ``size`` messages (the
    stored ones passed on unchanged), its ``memories``, ``data`` and ``context`` kept, and
    ``ttl_seconds`` from ``ttl`` (seconds; ``None`` or infinite: none)."""
    kept = [m for m in memory.get("messages") or () if isinstance(m, dict)]
    kept.extend(message_to_ams(message, mid, now) for message, mid in zip(messages, ids))
    data = memory.get("data")
    return {
        "messages": kept[-size:],
        "memories": list(memory.get("memories") or []),
        "data": data if isinstance(data, dict) else {},
        "context": memory.get("context"),
        "ttl_seconds": None if ttl is None or ttl == float("inf") else max(1, int(ttl)),
    }
