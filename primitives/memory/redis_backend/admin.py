"""The parts of :class:`~primitives.memory.redis_backend.backend.RedisBackend` that are not
long-term memory: maintenance (``doctor``, ``repair``, ``index migrate``, ``drop``), working
memory and skill statistics, as mixins over its client, key layout and error mapping."""

from __future__ import annotations

from collections.abc import Callable, Sequence
from contextlib import AbstractAsyncContextManager
from typing import TYPE_CHECKING, Any

from primitives.memory.backend import DamagedRecord, DamageReport
from primitives.memory.record import MemoryType, Message
from primitives.memory.redis_backend import maintenance, migration, working
from primitives.memory.redis_backend import skills as redis_skills
from primitives.memory.skills import SkillStats
from primitives.validation import check_limit

if TYPE_CHECKING:
    from primitives.embeddings.base import Embedder
    from primitives.memory.redis_backend.keys import KeyLayout

__all__ = ["MaintenanceMethods", "SessionMethods"]


class MaintenanceMethods:
    """``migrate``, ``drop``, ``find_damaged``, ``repair`` and their reports, on ``_store``."""

    _store: maintenance.Store
    _ready: bool
    embedder: Embedder | None
    _errors: Callable[[], AbstractAsyncContextManager[None]]

    async def migrate(self) -> int:
        """Bring the store to this version's layout and index (:meth:`migrate_layout`); returns
        how many records were rewritten: converted from the previous layout, or, with an
        embedder, re-embedded (every record that decodes)."""
        return await self.migrate_index()

    async def migrate_index(self, *, batch_size: int = 256) -> int:
        """:meth:`migrate` in batches of ``batch_size`` keys."""
        report = await self.migrate_layout(batch_size=batch_size)
        return report.reembedded if self.embedder is not None else report.converted

    async def migrate_layout(self, *, batch_size: int = 256) -> migration.MigrationReport:
        """See :func:`~primitives.memory.redis_backend.migration.migrate` (what was converted,
        quarantined and re-embedded).

        Raises:
            BackendUnavailableError, AuthenticationFailedError, PermissionDeniedError: Redis
                cannot be used; ConfigurationError: it refused ``FT.CREATE``.
        """
        async with self._errors():
            report = await migration.migrate(self._store, batch_size=batch_size)
        self._ready = False
        return report

    async def drop(self) -> None:
        """See :func:`~primitives.memory.redis_backend.maintenance.drop`."""
        async with self._errors():
            await maintenance.drop(self._store)
        self._ready = False

    async def find_damaged(self, *, limit: int = 100) -> DamageReport:
        """Damaged records, keys of the wrong type and working-memory lists with damaged items,
        by an O(store) scan (:meth:`scan_damaged`); ``key`` is the Redis key.

        Raises:
            InvalidInputError: ``limit`` is not in ``1..MAX_LIMIT``.
        """
        check_limit(limit)
        scan = await self.scan_damaged(limit)
        return DamageReport(
            scanned=scan.scanned_records + scan.scanned_sessions,
            damaged=[DamagedRecord(d["key"], d["reason"]) for d in scan.first],
            complete=scan.damaged <= limit,
        )

    async def scan_damaged(self, limit: int = 20, *, batch_size: int = 200) -> maintenance.ScanReport:
        """See :func:`~primitives.memory.redis_backend.maintenance.scan`."""
        async with self._errors():
            return await maintenance.scan(self._store, limit=limit, batch_size=batch_size)

    async def repair(self) -> list[DamagedRecord]:
        """Move every damaged record, key of the wrong type and damaged working-memory item to
        ``{prefix}quarantine:`` (:meth:`quarantine`); returns them in scan order."""
        report = await self.quarantine()
        return [DamagedRecord(m["key"], m["reason"], m.get("moved_to")) for m in report.moved]

    async def quarantine(self, *, dry_run: bool = False, batch_size: int = 200) -> maintenance.RepairReport:
        """See :func:`~primitives.memory.redis_backend.maintenance.repair` (where each key went,
        and what a dry run would move)."""
        async with self._errors():
            return await maintenance.repair(self._store, dry_run=dry_run, batch_size=batch_size)


class SessionMethods:
    """Working memory and skill statistics, at the keys of ``_layout``."""

    _client: Any
    _layout: KeyLayout
    name: str
    working_memory_size: int
    default_ttls: dict[MemoryType, float]
    _errors: Callable[[], AbstractAsyncContextManager[None]]

    async def _append_messages(self, namespace: str, session_id: str, messages: Sequence[Message]) -> None:
        """One ``MULTI`` (:func:`~primitives.memory.redis_backend.working.append`)."""
        async with self._errors():
            await working.append(self._client, self._layout.session(namespace, session_id), messages,
                                 size=self.working_memory_size, ttl=self.default_ttls[MemoryType.WORKING])

    async def _get_messages(self, namespace: str, session_id: str, limit: int | None) -> list[Message]:
        async with self._errors():
            return await working.read(self._client, self._layout.session(namespace, session_id),
                                      limit or self.working_memory_size, self.name)

    async def _clear_session(self, namespace: str, session_id: str) -> None:
        async with self._errors():
            await working.clear(self._client, self._layout.session(namespace, session_id))

    async def _record_skill_execution(self, name: str, success: bool, duration_s: float, namespace: str) -> SkillStats:
        """One ``MULTI`` on the hash :meth:`~primitives.memory.redis_backend.keys.KeyLayout.skill`
        (kept ``default_ttls["skill"]`` seconds after the last execution)."""
        key = self._layout.skill(namespace, name)
        async with self._errors():
            return await redis_skills.record_execution(
                self._client, key, name, namespace, success, duration_s, self.default_ttls[MemoryType.SKILL],
                script=self._layout.cluster,
            )

    async def _skill_stats(self, name: str, namespace: str) -> SkillStats | None:
        async with self._errors():
            return await redis_skills.read_stats(
                self._client, self._layout.skill(namespace, name), name, namespace
            )
