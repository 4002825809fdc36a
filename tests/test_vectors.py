"""VectorIndex (exact cosine, tag filters) and the fusion functions: pure logic, no model."""

from __future__ import annotations

import math

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from primitives.errors import DimensionMismatchError
from primitives.memory.fusion import convex_combination, reciprocal_rank_fusion
from primitives.memory.inmemory.vectors import VectorIndex


def unit(*xs: float) -> list[float]:
    n = math.sqrt(sum(x * x for x in xs))
    return [x / n for x in xs]


def test_search_orders_by_cosine_and_respects_filters() -> None:
    index = VectorIndex(3)
    index.add("a", unit(1, 0, 0), {"namespace": ("n1",)})
    index.add("b", unit(1, 1, 0), {"namespace": ("n1",), "topics": ("x", "y")})
    index.add("c", unit(0, 1, 0), {"namespace": ("n2",)})
    got = index.search(unit(1, 0.1, 0), limit=3)
    assert [k for k, _ in got] == ["a", "b", "c"]
    assert got[0][1] == pytest.approx(unit(1, 0.1, 0)[0], rel=1e-6)
    assert [k for k, _ in index.search(unit(0, 1, 0), tag_filter={"namespace": ("n1",)})] == ["b", "a"]
    assert [k for k, _ in index.search(unit(0, 1, 0), tag_filter={"topics": ("y", "zz")})] == ["b"]
    assert index.search(unit(0, 1, 0), tag_filter={"namespace": ("nope",)}) == []
    assert index.search(unit(0, 1, 0), tag_filter={"namespace": ("n1",), "topics": ("x",)})[0][0] == "b"


def test_replace_remove_and_row_reuse() -> None:
    index = VectorIndex(2)
    index.add("a", unit(1, 0), {"namespace": ("n",)})
    index.add("a", unit(0, 1), {"namespace": ("m",)})  # replace: new vector and tags
    assert len(index) == 1
    assert index.vector("a") == pytest.approx(unit(0, 1))
    assert index.search(unit(1, 0), tag_filter={"namespace": ("n",)}) == []
    assert index.remove("a") and not index.remove("a")
    assert index.search(unit(1, 0)) == []
    index.add("b", unit(1, 0), {})
    assert [k for k, _ in index.search(unit(1, 0))] == ["b"]


def test_dims_checked() -> None:
    index = VectorIndex(3)
    with pytest.raises(DimensionMismatchError, match="2 floats.*dims=3"):
        index.add("a", [1.0, 0.0], {})
    with pytest.raises(DimensionMismatchError):
        index.search([1.0, 0.0, 0.0, 0.0])


@settings(max_examples=40, deadline=None)
@given(
    st.lists(st.tuples(st.integers(0, 30), st.sampled_from(["n1", "n2"])), min_size=1, max_size=200),
    st.integers(1, 15),
    st.sampled_from([None, "n1", "n2"]),
)
def test_matches_brute_force(ops: list[tuple[int, str]], limit: int, namespace: str | None) -> None:
    """Adds (some replacing, some removed) over a growing matrix give the same top-k as a
    brute-force cosine over the live vectors."""
    rng = np.random.default_rng(len(ops))
    index = VectorIndex(8)
    live: dict[str, tuple[np.ndarray, str]] = {}
    for i, (key_no, ns) in enumerate(ops):
        key = f"k{key_no}"
        if i % 7 == 3 and key in live:
            index.remove(key)
            del live[key]
            continue
        v = rng.normal(size=8).astype(np.float32)
        v /= np.linalg.norm(v)
        index.add(key, v.tolist(), {"namespace": (ns,)})
        live[key] = (v, ns)
    q = rng.normal(size=8).astype(np.float32)
    q /= np.linalg.norm(q)
    flt = {"namespace": (namespace,)} if namespace else None
    got = index.search(q.tolist(), tag_filter=flt, limit=limit)
    expected = sorted(
        ((float(v @ q), k) for k, (v, ns) in live.items() if namespace in (None, ns)), reverse=True
    )[:limit]
    assert [round(s, 5) for _, s in got] == [round(s, 5) for s, _ in expected]
    assert len(index) == len(live)


def test_reciprocal_rank_fusion() -> None:
    fused = reciprocal_rank_fusion([["a", "b", "c"], ["c", "a"]], k=60)
    assert [k for k, _ in fused] == ["a", "c", "b"]
    assert fused[0][1] == pytest.approx(1 / 61 + 1 / 62)
    weighted = reciprocal_rank_fusion([["a", "b"], ["b"]], weights=[1.0, 0.0], limit=1)
    assert weighted == [("a", pytest.approx(1 / 61))]
    with pytest.raises(ValueError):
        reciprocal_rank_fusion([["a"]], weights=[1.0, 2.0])


def test_convex_combination_normalises_each_list() -> None:
    keyword = [("a", 12.0), ("b", 6.0), ("c", 2.0)]  # BM25: unbounded
    vector = [("c", 0.9), ("d", 0.5)]  # cosine
    fused = dict(convex_combination([keyword, vector], [0.7, 0.3]))
    assert fused["a"] == pytest.approx(0.7)  # top keyword, absent from vector
    assert fused["b"] == pytest.approx(0.7 * 0.4)
    assert fused["c"] == pytest.approx(0.3)  # bottom keyword (0) + top vector
    assert fused["d"] == pytest.approx(0.0)
    assert [k for k, _ in convex_combination([keyword, vector], [0.7, 0.3], limit=2)] == ["a", "c"]
    assert convex_combination([[("x", 3.0)], []], [0.5, 0.5]) == [("x", 0.5)]
