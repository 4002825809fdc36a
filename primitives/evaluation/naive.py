"""The naive store of the original design, kept only as the benchmark's side-by-side baseline.

An ``OrderedDict`` LRU of ``maxsize`` items whose search is a substring scan,
``query.lower() in str(item).lower()``, newest first. It finds nothing for a natural-language
question (the whole question is never a substring of a memory); that is the point of measuring it.
"""

from __future__ import annotations

from collections import OrderedDict
from typing import Any

__all__ = ["NaiveStore"]


class NaiveStore:
    """``add(key, item)`` / ``search(query, limit)``; LRU eviction beyond ``maxsize``."""

    def __init__(self, maxsize: int) -> None:
        self.maxsize = maxsize
        self._items: OrderedDict[str, Any] = OrderedDict()

    def add(self, key: str, item: Any) -> None:
        self._items[key] = item
        self._items.move_to_end(key)
        if len(self._items) > self.maxsize:
            self._items.popitem(last=False)

    def search(self, query: str, limit: int = 10) -> list[Any]:
        needle = query.lower()
        hits = []
        for item in reversed(self._items.values()):
            if needle in str(item).lower():
                hits.append(item)
                if len(hits) == limit:
                    break
        return hits
