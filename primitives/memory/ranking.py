"""Optional ranking signals on top of relevance: recency and importance.

The score of a hit becomes (after Park et al., "Generative Agents: Interactive Simulacra of Human
Behavior", UIST 2023, section 4.1, where retrieval sums min-max normalised relevance, recency and
importance)::

    final = relevance / max_relevance                      # in [0, 1] within the result
          + recency_weight * 0.5 ** (age_seconds / half_life_seconds)
          + importance_weight * importance                  # metadata["importance"], 0.5 if absent

``age_seconds`` is ``now - created_at`` (never negative). The paper decays recency by 0.995 per
game hour with weights of 1; here the half-life and weights are parameters, both off by default:
measured on LoCoMo (``memory-primitives eval locomo --recency-half-life ...``), see
docs/agent-memory.md for the figures that decided the default.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime

from primitives.memory.record import SearchHit
from primitives.validation import check_number

__all__ = ["RankingSignals", "rerank"]


@dataclass(frozen=True, slots=True)
class RankingSignals:
    """Weights of the signals added to normalised relevance (see the module docstring).

    Attributes:
        recency_half_life_s: Seconds after which the recency term halves (``> 0``).
        recency_weight: Weight of recency, ``>= 0`` (0: off).
        importance_weight: Weight of ``metadata["importance"]``, ``>= 0`` (0: off).
        now: The time ages are measured from (default: the time of the search).

    Raises:
        InvalidInputError: a value out of range.
    """

    recency_half_life_s: float = 30 * 86400.0
    recency_weight: float = 0.0
    importance_weight: float = 0.0
    now: datetime | None = None

    def __post_init__(self) -> None:
        check_number(self.recency_half_life_s, "recency_half_life_s", minimum=0.0, exclusive_minimum=True)
        check_number(self.recency_weight, "recency_weight", minimum=0.0)
        check_number(self.importance_weight, "importance_weight", minimum=0.0)

    @property
    def active(self) -> bool:
        return self.recency_weight > 0 or self.importance_weight > 0


def _importance(hit: SearchHit) -> float:
    value = hit.record.metadata.get("importance") if hit.record.metadata else None
    if isinstance(value, (int, float)) and not isinstance(value, bool) and 0.0 <= value <= 1.0:
        return float(value)
    return 0.5


def rerank(hits: list[SearchHit], signals: RankingSignals, now: datetime) -> list[SearchHit]:
    """``hits`` with the combined score, best first (ties keep the relevance order)."""
    if not hits or not signals.active:
        return hits
    top = max((h.score for h in hits), default=0.0)
    scale = 1.0 / top if top > 0 else 0.0
    when = signals.now or now
    out = []
    for h in hits:
        score = h.score * scale
        if signals.recency_weight and h.record.created_at is not None:
            age = max(0.0, (when - h.record.created_at).total_seconds())
            score += signals.recency_weight * 0.5 ** (age / signals.recency_half_life_s)
        if signals.importance_weight:
            score += signals.importance_weight * _importance(h)
        out.append(SearchHit(h.record, score))
    order = sorted(range(len(out)), key=lambda i: -out[i].score)
    return [out[i] for i in order]
