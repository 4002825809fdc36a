"""Skill execution statistics: how often a skill ran, how often it succeeded, how long it took.

A *skill* memory (``memory_type="skill"``) says how to do something; its statistics say how well
that went. Each execution is recorded with :meth:`Memory.record_skill_execution` and folded into
running totals (executions, successes, total duration), so the success rate and mean duration
are exact ratios of those totals, updated atomically under concurrency by every backend
(one ``MULTI`` of ``HINCRBY``/``HINCRBYFLOAT`` on Redis; no ``await`` between read and write in
process). Statistics live as long as skill memories do: ``default_ttls["skill"]`` seconds
(180 days by default) after the last recorded execution.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from datetime import UTC, datetime

from cachetools import TTLCache

from primitives.validation import check_bool, check_identifier, check_number
from primitives.memory.record import DEFAULT_NAMESPACE

__all__ = [
    "SkillStats",
    "InMemorySkillLedger",
    "check_skill_execution",
    "check_skill_name",
    "stats_from_metadata",
    "stats_from_totals",
]


@dataclass(frozen=True, slots=True)
class SkillStats:
    """Running statistics of one skill in one namespace.

    Attributes:
        name: The skill's name (as recorded).
        namespace: Its namespace.
        executions: Executions recorded, ``>= 1``.
        successes: Of those, how many succeeded.
        total_duration_s: Sum of the recorded durations, in seconds.
        last_executed_at: UTC time the last execution was recorded.
    """

    name: str
    namespace: str
    executions: int
    successes: int
    total_duration_s: float
    last_executed_at: datetime

    @property
    def failures(self) -> int:
        """Executions that did not succeed."""
        return self.executions - self.successes

    @property
    def success_rate(self) -> float:
        """``successes / executions``, in ``[0, 1]``."""
        return self.successes / self.executions

    @property
    def mean_duration_s(self) -> float:
        """``total_duration_s / executions``, in seconds."""
        return self.total_duration_s / self.executions

    def to_dict(self) -> dict[str, object]:
        """A JSON-ready dict of every field and derived figure."""
        return {
            "name": self.name,
            "namespace": self.namespace,
            "executions": self.executions,
            "successes": self.successes,
            "failures": self.failures,
            "success_rate": self.success_rate,
            "total_duration_s": self.total_duration_s,
            "mean_duration_s": self.mean_duration_s,
            "last_executed_at": self.last_executed_at.isoformat(),
        }


def check_skill_name(name: object) -> str:
    """Return ``name`` if it is an identifier (:func:`~primitives.validation.check_identifier`:
    1 to 1,024 characters, not only whitespace; any characters, kept exactly).

    Raises:
        InvalidInputError: otherwise (also a ``TypeError`` for a non-``str``).
    """
    return check_identifier(name, "skill name")


def check_skill_execution(name: object, success: object, duration_s: object) -> float:
    """Validate one execution; returns ``duration_s`` as a float.

    Raises:
        InvalidInputError: ``name`` is not an identifier, ``success`` not a ``bool``, or
            ``duration_s`` not a finite number ``>= 0`` (seconds).
    """
    check_skill_name(name)
    check_bool(success, "success")
    return check_number(duration_s, "duration_s", minimum=0)


def stats_from_totals(name: str, namespace: str, totals: Mapping[str, object]) -> SkillStats:
    """A :class:`SkillStats` from stored totals (``executions``, ``successes``,
    ``total_duration_s``, ``last_executed_at`` as epoch seconds), as kept by every backend."""
    return SkillStats(
        name=name,
        namespace=namespace,
        executions=int(totals["executions"]),  # type: ignore[call-overload]
        successes=int(totals.get("successes") or 0),  # type: ignore[call-overload]
        total_duration_s=float(totals.get("total_duration_s") or 0.0),  # type: ignore[arg-type]
        last_executed_at=datetime.fromtimestamp(float(totals["last_executed_at"]), UTC),  # type: ignore[arg-type]
    )


class InMemorySkillLedger:
    """The in-process statistics of :class:`~primitives.memory.inmemory.InMemoryBackend`:
    a ``cachetools.TTLCache`` of totals per ``(namespace, name)``, each kept ``ttl`` seconds after
    its last execution (the cache re-arms an entry's expiry on every write).

    Each call runs without awaiting, so concurrent tasks on one event loop never lose an update.

    Args:
        ttl: Seconds statistics outlive their last execution (``math.inf``: forever).
        maxsize: Skills kept; the least recently recorded is dropped past it.
        clock: Seconds since the epoch.
    """

    def __init__(self, *, ttl: float, maxsize: int = 100_000, clock: Callable[[], float]) -> None:
        self._clock = clock
        self._totals: TTLCache[tuple[str, str], dict[str, float]] = TTLCache(maxsize, ttl, timer=clock)

    def record(self, name: str, success: bool, duration_s: float, namespace: str = DEFAULT_NAMESPACE) -> SkillStats:
        """Fold one execution into the totals and return them (validated by the caller)."""
        key = (namespace, name)
        totals = self._totals.get(key) or {"executions": 0, "successes": 0, "total_duration_s": 0.0}
        totals = {
            "executions": totals["executions"] + 1,
            "successes": totals["successes"] + (1 if success else 0),
            "total_duration_s": totals["total_duration_s"] + duration_s,
            "last_executed_at": self._clock(),
        }
        self._totals[key] = totals  # re-arms the entry's expiry
        return stats_from_totals(name, namespace, totals)

    def stats(self, name: str, namespace: str = DEFAULT_NAMESPACE) -> SkillStats | None:
        """The totals of ``name`` in ``namespace``, or ``None`` when none are recorded (or they
        expired)."""
        totals = self._totals.get((namespace, name))
        return None if totals is None else stats_from_totals(name, namespace, totals)


def stats_from_metadata(name: str, namespace: str, metadata: Mapping[str, object], at: datetime) -> SkillStats | None:
    """A :class:`SkillStats` from totals kept on a skill record's metadata (``executions``,
    ``successes``, ``total_duration_s``), for a backend without atomic counters (the Agent Memory
    Server), or ``None`` before the first execution. Damaged values read as none: a count that
    is not an ``int >= 0`` as 0, ``successes`` capped at ``executions``, a duration that is not a
    finite number ``>= 0`` as 0; ``at`` is taken as the last execution's time."""

    def count(key: str) -> int:
        v = metadata.get(key)
        return v if isinstance(v, int) and not isinstance(v, bool) and v >= 0 else 0

    executions = count("executions")
    if executions == 0:
        return None
    duration = metadata.get("total_duration_s")
    total = float(duration) if isinstance(duration, (int, float)) and not isinstance(duration, bool) else 0.0
    if not (math.isfinite(total) and total >= 0):
        total = 0.0
    return SkillStats(name, namespace, executions, min(count("successes"), executions), total, at)
