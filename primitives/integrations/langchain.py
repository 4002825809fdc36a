"""LangChain adapters (``pip install 'memory-primitives[langchain]'``): a retriever over
:meth:`Memory.search <primitives.memory.Memory.search>` and a chat message history over this
package's session history (:class:`~primitives.store.BaseSessionHistory`: the Redis
``SessionHistory`` or the in-process ``InMemorySessionHistory``).

- :class:`MemoryRetriever`: ``query -> list[Document]``, best first; ``page_content`` is the
  memory's ``text``; ``metadata`` has ``id``, ``score`` (the backend's scale, higher is better),
  ``created_at`` and ``updated_at`` (ISO 8601 UTC), ``backend`` (what served the call),
  ``degraded``, ``user_id``, ``session_id``, ``namespace``, ``memory_type``, ``topics`` (a list)
  and ``metadata`` (the record's own, a dict). Scoped to one ``user_id`` (required unless the
  memory is ``single_user``) and one namespace.
- :class:`SessionChatMessageHistory`: LangChain messages kept in one session. Each is stored as
  ``{"role": message.type ("human", "ai", "system", "tool", ...), "content": message.text,
  "langchain": <the message's fields>}`` and read back equal to what was added; a stored message
  without the ``langchain`` fields (written by other code) is read by its role (``user`` and
  ``human`` as ``HumanMessage``, ``assistant`` and ``ai`` as ``AIMessage``, ``system``, ``tool``,
  any other role as ``ChatMessage``).

The async methods are the real ones; the sync ones (``invoke``, ``messages``, ``add_messages``,
``clear``) run them through :class:`~primitives.integrations._sync.LoopBridge` (from plain sync
code or a worker thread; inside a running event loop they raise ``SyncCallInEventLoopError``).
"""

from __future__ import annotations

import logging
from collections.abc import Mapping, Sequence
from typing import Any

from primitives.errors import (
    ConfigurationError,
    InvalidFilterError,
    InvalidInputTypeError,
)
from primitives.integrations._sync import LoopBridge, SyncCallInEventLoopError
from primitives.memory.facade import Memory
from primitives.memory.filters import check_mode, normalize_filter
from primitives.store.session import BaseSessionHistory, check_session_id
from primitives.validation import check_identifier, check_limit

try:
    from langchain_core.callbacks import AsyncCallbackManagerForRetrieverRun, CallbackManagerForRetrieverRun
    from langchain_core.chat_history import BaseChatMessageHistory
    from langchain_core.documents import Document
    from langchain_core.messages import (
        AIMessage,
        BaseMessage,
        ChatMessage,
        HumanMessage,
        SystemMessage,
        ToolMessage,
        message_to_dict,
        messages_from_dict,
    )
    from langchain_core.retrievers import BaseRetriever
    from pydantic import ConfigDict, PrivateAttr, ValidationError
except ImportError as exc:  # pragma: no cover - exercised without the extra
    raise ConfigurationError(
        "the LangChain adapters need langchain-core: python -m pip install 'memory-primitives[langchain]'"
    ) from exc

__all__ = ["MemoryRetriever", "SessionChatMessageHistory", "SyncCallInEventLoopError"]

logger = logging.getLogger(__name__)

#: Filter fields a retriever takes (``user_id`` and ``namespace`` are its scope, not a filter).
RETRIEVER_FILTER_FIELDS = ("session_id", "memory_type", "topics", "created_at")


class MemoryRetriever(BaseRetriever):
    """A LangChain retriever over :meth:`Memory.search <primitives.memory.Memory.search>`.

    Attributes:
        memory: The memory to search.
        user_id: Whose memories (an identifier); ``None`` only on a ``single_user`` memory.
        namespace: Which namespace (an identifier); ``None``: the memory's.
        limit: Documents returned at most, ``1..10000`` (default 4); ``invoke(query, limit=n)``
            overrides it for one call.
        mode: ``"keyword"``, ``"vector"``, ``"hybrid"`` or ``None`` (the backend's default);
            ``invoke(query, mode=...)`` overrides it.
        filter: Further restrictions: ``session_id``, ``memory_type``, ``topics`` (a str or a
            list: any of them) and ``created_at`` (``{"gte"|"gt"|"lte"|"lt": aware datetime}``).

    Raises (at construction; a field of the wrong type raises ``pydantic.ValidationError``):
        UnscopedAccessError: no ``user_id`` on a multi-user memory.
        InvalidInputError: a bad ``user_id``, ``namespace``, ``limit`` or ``mode``.
        InvalidFilterError: a filter field outside the ones above, or a bad value.
    """

    model_config = ConfigDict(arbitrary_types_allowed=True, strict=True)

    memory: Memory
    user_id: str | None = None
    namespace: str | None = None
    limit: int = 4
    mode: str | None = None
    filter: dict[str, Any] | None = None

    _bridge: LoopBridge = PrivateAttr(default_factory=LoopBridge)

    def __init__(self, **fields: Any) -> None:
        super().__init__(**fields)
        self._check()

    def _check(self) -> None:
        self.memory.require_scope(self.user_id, "a retriever")
        if self.user_id is not None:
            check_identifier(self.user_id, "user_id")
        if self.namespace is not None:
            check_identifier(self.namespace, "namespace")
        check_limit(self.limit)
        check_mode(self.mode)
        _check_retriever_filter(self.filter)

    def _get_relevant_documents(
        self,
        query: str,
        *,
        run_manager: CallbackManagerForRetrieverRun,
        limit: int | None = None,
        mode: str | None = None,
    ) -> list[Document]:
        return self._bridge.run(lambda: self._search(query, limit, mode), "invoke", "ainvoke")

    async def _aget_relevant_documents(
        self,
        query: str,
        *,
        run_manager: AsyncCallbackManagerForRetrieverRun,
        limit: int | None = None,
        mode: str | None = None,
    ) -> list[Document]:
        self._bridge.note_loop()
        return await self._search(query, limit, mode)

    async def _search(self, query: str, limit: int | None, mode: str | None) -> list[Document]:
        flt = dict(self.filter or {})
        result = await self.memory.search(
            query,
            user_id=self.user_id,
            namespace=self.namespace,
            limit=self.limit if limit is None else limit,
            mode=self.mode if mode is None else mode,
            session_id=flt.get("session_id"),
            memory_type=flt.get("memory_type"),
            topics=[flt["topics"]] if isinstance(flt.get("topics"), str) else flt.get("topics"),
            created_at=flt.get("created_at"),
        )
        docs = []
        for hit in result.hits:
            r = hit.record
            docs.append(
                Document(
                    id=r.id,
                    page_content=r.text,
                    metadata={
                        "id": r.id,
                        "score": hit.score,
                        "created_at": r.created_at.isoformat() if r.created_at else None,
                        "updated_at": r.updated_at.isoformat() if r.updated_at else None,
                        "backend": result.backend,
                        "degraded": result.degraded,
                        "user_id": r.user_id,
                        "session_id": r.session_id,
                        "namespace": r.namespace,
                        "memory_type": r.memory_type.value,
                        "topics": list(r.topics),
                        "metadata": _plain(r.metadata),
                    },
                )
            )
        return docs


def _plain(value: Any) -> Any:
    """A mutable deep copy of a record's read-only metadata."""
    if isinstance(value, Mapping):
        return {k: _plain(v) for k, v in value.items()}
    if isinstance(value, list):
        return [_plain(v) for v in value]
    return value


def _check_retriever_filter(filter: object) -> None:
    if filter is None:
        return
    if not isinstance(filter, Mapping):
        raise InvalidFilterError(f"filter must be a mapping, got {type(filter).__name__}")
    unknown = [k for k in filter if k not in RETRIEVER_FILTER_FIELDS]
    if unknown:
        raise InvalidFilterError(
            f"unknown retriever filter field {unknown[0]!r}; accepted: {', '.join(RETRIEVER_FILTER_FIELDS)} "
            "(user_id and namespace are the retriever's own fields)"
        )
    normalize_filter(filter)


# -- chat message history ---------------------------------------------------------------------------

_PLAIN_ROLES = {
    "human": HumanMessage, "user": HumanMessage,
    "ai": AIMessage, "assistant": AIMessage,
    "system": SystemMessage,
}


def _encode(message: object) -> dict[str, Any]:
    if not isinstance(message, BaseMessage):
        raise InvalidInputTypeError(f"messages must be LangChain BaseMessage objects, got {type(message).__name__}")
    data = message_to_dict(message)
    return {"role": data["type"], "content": message.text, "langchain": data["data"]}


def _decode(stored: Mapping[str, Any], session_id: str) -> BaseMessage | None:
    """The LangChain message a stored one holds; ``None`` (logged) when it cannot be one."""
    role, content, fields = stored.get("role"), stored.get("content"), stored.get("langchain")
    if isinstance(role, str) and isinstance(fields, dict):
        try:
            return messages_from_dict([{"type": role, "data": fields}])[0]
        except (ValueError, TypeError, KeyError, ValidationError) as exc:
            logger.warning("session %r: a message's langchain fields cannot be read (%s); reading it by role",
                           session_id, exc)
    if not isinstance(role, str) or not role or not isinstance(content, str):
        logger.warning("session %r: skipped a stored message without a str role and content: %.80r", session_id, stored)
        return None
    if role in _PLAIN_ROLES:
        return _PLAIN_ROLES[role](content=content)
    if role == "tool":
        call_id = stored.get("tool_call_id")
        return ToolMessage(content=content, tool_call_id=call_id if isinstance(call_id, str) else "")
    return ChatMessage(role=role, content=content)


class SessionChatMessageHistory(BaseChatMessageHistory):
    """LangChain's ``BaseChatMessageHistory`` over one session of a
    :class:`~primitives.store.BaseSessionHistory`.

    Messages read back oldest first and equal to the ones added (type, content, ids, tool calls,
    ``additional_kwargs``...), the last ``max_messages`` of the history kept; the session's sliding
    ttl is the history's (refreshed by reads and appends).

    Args:
        history: Where the messages live (``SessionHistory(redis_client)`` or
            ``InMemorySessionHistory()``); its ``namespace`` separates applications.
        session_id: The conversation (any non-empty str that UTF-8 can encode).

    Raises:
        InvalidInputTypeError: ``history`` is not a ``BaseSessionHistory``.
        InvalidKeyError: ``session_id`` is empty, not a str, or has a lone surrogate.
    """

    def __init__(self, history: BaseSessionHistory, session_id: str) -> None:
        if not isinstance(history, BaseSessionHistory):
            raise InvalidInputTypeError(f"history must be a BaseSessionHistory, got {type(history).__name__}")
        self.history = history
        self.session_id = check_session_id(session_id)
        self._bridge = LoopBridge()

    async def aget_messages(self) -> list[BaseMessage]:
        """The session's messages, oldest first; a stored message that is no message is skipped
        (logged).

        Raises:
            CorruptValueError: a stored entry is not JSON (the history's own check).
        """
        self._bridge.note_loop()
        stored = await self.history.read(self.session_id)
        return [m for m in (_decode(s, self.session_id) for s in stored) if m is not None]

    @property
    def messages(self) -> list[BaseMessage]:  # type: ignore[override]
        """:meth:`aget_messages` for sync callers."""
        return self._bridge.run(self.aget_messages, "messages", "aget_messages")

    async def aadd_messages(self, messages: Sequence[BaseMessage]) -> None:
        """Append ``messages`` in order, in one atomic append.

        Raises:
            InvalidInputTypeError: an item is not a ``BaseMessage``; nothing is written.
            SerializationError: a message holds something JSON cannot (an object in
                ``additional_kwargs``); nothing is written.
        """
        self._bridge.note_loop()
        encoded = [_encode(m) for m in messages]
        if encoded:
            await self.history.append(self.session_id, encoded)

    def add_messages(self, messages: Sequence[BaseMessage]) -> None:
        """:meth:`aadd_messages` for sync callers."""
        batch = list(messages)
        self._bridge.run(lambda: self.aadd_messages(batch), "add_messages", "aadd_messages")

    async def aclear(self) -> None:
        """Delete the session's messages."""
        self._bridge.note_loop()
        await self.history.clear(self.session_id)

    def clear(self) -> None:
        """:meth:`aclear` for sync callers."""
        self._bridge.run(self.aclear, "clear", "aclear")
