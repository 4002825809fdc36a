"""What each indexing choice of the in-process backend is worth on LoCoMo.

Runs :func:`~primitives.evaluation.locomo.evaluate_locomo` once per variant, each adding one
choice to the previous, from plain BM25 over the turn text to the default configuration.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from typing import Any

from primitives.evaluation.locomo import Conversation, evaluate_locomo
from primitives.memory.analysis import Analyzer
from primitives.memory.facade import Memory
from primitives.memory.inmemory import InMemoryBackend

__all__ = ["VARIANTS", "run_ablation"]

#: (name, InMemoryBackend keyword arguments), cumulative; the last is the default configuration.
VARIANTS: list[tuple[str, dict[str, Any]]] = [
    ("plain BM25 over the turn text", {"stop": (), "stem": False, "indexed_metadata": (), "index_dates": False}),
    ("+ Snowball stemming", {"stop": (), "stem": True, "indexed_metadata": (), "index_dates": False}),
    ("+ stop words", {"stem": True, "indexed_metadata": (), "index_dates": False}),
    ("+ speaker name", {"stem": True, "indexed_metadata": ("speaker",), "index_dates": False}),
    ("+ preceding turn (context)", {"stem": True, "indexed_metadata": ("speaker", "context"), "index_dates": False}),
    ("+ session date (default)", {}),
]


def _factory(options: dict[str, Any]) -> Callable[[], Memory]:
    opts = dict(options)
    analyzer_kwargs: dict[str, Any] = {}
    if "stop" in opts:
        analyzer_kwargs["stop_words"] = opts.pop("stop")
    if "stem" in opts:
        analyzer_kwargs["stem"] = opts.pop("stem")

    def make() -> Memory:
        return Memory(InMemoryBackend(analyzer=Analyzer(**analyzer_kwargs), **opts))

    return make


async def run_ablation(
    conversations: Sequence[Conversation], *, ks: Sequence[int] = (5, 10)
) -> list[dict[str, Any]]:
    """One row per variant: ``{"variant", "recall_at_k", "recall_at_k_by_category"}``."""
    rows = []
    for name, options in VARIANTS:
        report = await evaluate_locomo(conversations, _factory(options), ks=ks)
        rows.append(
            {
                "variant": name,
                "recall_at_k": report["recall_at_k"],
                "recall_at_k_by_category": report["recall_at_k_by_category"],
            }
        )
    return rows
