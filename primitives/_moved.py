"""Modules that moved, importable from where they were.

The three backends' internals moved into their own subpackages of ``primitives.memory`` and the
local-server launchers and ``doctor`` into ``primitives.tooling``. Code written against the old
paths (``from primitives.localredis import LocalRedis``) keeps working: a finder on
``sys.meta_path`` answers an old name with the module at its new place (the same module object,
loaded lazily, so an optional extra is still only imported when used).
"""

from __future__ import annotations

import importlib
import importlib.abc
import importlib.machinery
import importlib.util
import sys
from types import ModuleType

__all__ = ["MOVED", "install"]

#: Old dotted name -> new dotted name.
MOVED: dict[str, str] = {
    "primitives.localredis": "primitives.tooling.localredis",
    "primitives.localams": "primitives.tooling.localams",
    "primitives.localcluster": "primitives.tooling.localcluster",
    "primitives.doctor": "primitives.tooling.doctor",
    "primitives.memory.index": "primitives.memory.inmemory.index",
    "primitives.memory.vectors": "primitives.memory.inmemory.vectors",
    "primitives.memory.redis_query": "primitives.memory.redis_backend.query",
    "primitives.memory.redis_schema": "primitives.memory.redis_backend.schema",
    "primitives.memory.redis_skills": "primitives.memory.redis_backend.skills",
    "primitives.memory.ams_mapping": "primitives.memory.ams_backend.mapping",
    "primitives.memory.ams_transport": "primitives.memory.ams_backend.transport",
    "primitives.memory.outbox": "primitives.memory.resilient.outbox",
    "primitives.memory.breaker": "primitives.memory.resilient.breaker",
}


class _MovedFinder(importlib.abc.MetaPathFinder, importlib.abc.Loader):
    def find_spec(self, fullname: str, path: object = None, target: object = None) -> importlib.machinery.ModuleSpec | None:
        if fullname not in MOVED:
            return None
        return importlib.util.spec_from_loader(fullname, self)

    def create_module(self, spec: importlib.machinery.ModuleSpec) -> ModuleType:
        return importlib.import_module(MOVED[spec.name])

    def exec_module(self, module: ModuleType) -> None:
        """Nothing to run: the module at the new place is already loaded."""


def install() -> None:
    """Put the finder on ``sys.meta_path`` (once)."""
    if not any(isinstance(f, _MovedFinder) for f in sys.meta_path):
        sys.meta_path.append(_MovedFinder())
