"""Fusion for hybrid search: keyword and vector result lists merged into one ranking.

Two methods: :func:`convex_combination` of min-max normalised scores (the default of hybrid
search, after Bruch, Gai & Ingber, "An Analysis of Fusion Functions for Hybrid Retrieval", ACM
TOIS 2023, who find it beats RRF; it measured better on LoCoMo too, also on conversations left
out of the tuning: ``eval locomo --cross-validate``, docs/evaluation.md) and
:func:`reciprocal_rank_fusion`.
"""

from __future__ import annotations

from collections.abc import Hashable, Sequence
from typing import TypeVar

__all__ = ["RRF_K", "convex_combination", "reciprocal_rank_fusion"]

K = TypeVar("K", bound=Hashable)

#: The rank constant of reciprocal-rank fusion. 60 is the value of Cormack, Clarke & Buettcher,
#: "Reciprocal Rank Fusion outperforms Condorcet and individual Rank Learning Methods", SIGIR 2009.
RRF_K = 60


def reciprocal_rank_fusion(
    rankings: Sequence[Sequence[K]],
    *,
    weights: Sequence[float] | None = None,
    k: float = RRF_K,
    limit: int | None = None,
) -> list[tuple[K, float]]:
    """Fuse ranked lists: ``score(d) = sum_i weights[i] / (k + rank_i(d))``, ranks from 1.

    A key missing from a list contributes nothing for it. Ties keep the order of first
    appearance (earlier lists first, then by rank).

    Args:
        rankings: Lists of keys, each best first, without repeats.
        weights: One weight per list (default all 1.0).
        k: Rank constant, > 0 (default :data:`RRF_K`).
        limit: Keep the best ``limit`` (default all).

    Returns:
        ``(key, fused score)`` pairs, best first.

    Raises:
        ValueError: ``weights`` has another length than ``rankings``, or ``k <= 0``.
    """
    if weights is None:
        weights = [1.0] * len(rankings)
    if len(weights) != len(rankings):
        raise ValueError(f"{len(weights)} weights for {len(rankings)} rankings")
    if not k > 0:
        raise ValueError(f"k must be > 0, got {k!r}")
    scores: dict[K, float] = {}
    for ranking, weight in zip(rankings, weights):
        for rank, key in enumerate(ranking, start=1):
            scores[key] = scores.get(key, 0.0) + weight / (k + rank)
    fused = sorted(scores.items(), key=lambda item: item[1], reverse=True)
    return fused if limit is None else fused[:limit]


def convex_combination(
    rankings: Sequence[Sequence[tuple[K, float]]],
    weights: Sequence[float],
    *,
    limit: int | None = None,
) -> list[tuple[K, float]]:
    """Fuse scored lists: ``score(d) = sum_i weights[i] * minmax_i(score_i(d))``.

    Each list's scores are min-max normalised to ``[0, 1]`` over that list (a list whose scores
    are all equal gives 1.0 to each); a key missing from a list gets 0 for it. Ties keep the
    order of first appearance.

    Args:
        rankings: Lists of ``(key, score)``, each best first (higher score is better).
        weights: One weight per list, e.g. ``(0.7, 0.3)``.
        limit: Keep the best ``limit`` (default all).

    Returns:
        ``(key, fused score)`` pairs, best first; fused scores lie in ``[0, sum(weights)]``.

    Raises:
        ValueError: ``weights`` has another length than ``rankings``.
    """
    if len(weights) != len(rankings):
        raise ValueError(f"{len(weights)} weights for {len(rankings)} rankings")
    scores: dict[K, float] = {}
    for ranking, weight in zip(rankings, weights):
        if not ranking:
            continue
        values = [score for _, score in ranking]
        high, low = max(values), min(values)
        span = high - low
        for key, score in ranking:
            unit = (score - low) / span if span > 0 else 1.0
            scores[key] = scores.get(key, 0.0) + weight * unit
    fused = sorted(scores.items(), key=lambda item: item[1], reverse=True)
    return fused if limit is None else fused[:limit]
