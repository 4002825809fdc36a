"""Memory moving between places.

- The change feed that lets several agents share memory: every write and delete through
  ``Memory`` becomes a :class:`ChangeEvent` on Redis pub/sub (low-latency notification) and a
  capped Redis Stream (catch-up from a position), or on the in-process twin.
- Sync with a data cloud (extra ``sync``): export a store's changes to a warehouse or lake and
  import them back, incrementally, resumably, last writer wins (:mod:`primitives.sync.engine`,
  the :class:`Warehouse` seam, targets in :mod:`primitives.sync.targets`; docs/sync.md).

``RedisChangeFeed`` (extra ``redis``) and the targets are imported lazily, so this package imports
without redis-py or DuckDB.
"""

from __future__ import annotations

from typing import Any

from primitives.sync.feed import (
    LATEST,
    START,
    ChangeEvent,
    ChangeFeed,
    ChangeSubscription,
    InMemoryChangeFeed,
)
from primitives.sync.engine import ApplyCounts, ChangeSource, ExportReport, ImportReport, export_changes, import_changes, sync_status
from primitives.sync.rows import ColumnMap, Cursor, RejectedRow, SyncRow
from primitives.sync.targets import open_target
from primitives.sync.warehouse import Warehouse, WarehouseStats

__all__ = [
    "LATEST",
    "START",
    "ApplyCounts",
    "ChangeEvent",
    "ChangeFeed",
    "ChangeSource",
    "ChangeSubscription",
    "ColumnMap",
    "Cursor",
    "DataCloudWarehouse",
    "DeltaWarehouse",
    "DuckDBWarehouse",
    "ExportReport",
    "ImportReport",
    "InMemoryChangeFeed",
    "PostgresWarehouse",
    "RedisChangeFeed",
    "RejectedRow",
    "SnowflakeWarehouse",
    "SyncRow",
    "Warehouse",
    "WarehouseStats",
    "export_changes",
    "import_changes",
    "open_target",
    "sync_status",
]

_LAZY = {
    "RedisChangeFeed": "primitives.sync.feed_redis",
    "DuckDBWarehouse": "primitives.sync.duckdb_target",
    "PostgresWarehouse": "primitives.sync.postgres_target",
    "DeltaWarehouse": "primitives.sync.delta_target",
    "DataCloudWarehouse": "primitives.sync.datacloud_target",
    "SnowflakeWarehouse": "primitives.sync.snowflake_target",
}


def __getattr__(name: str) -> Any:
    module = _LAZY.get(name)
    if module is None:
        raise AttributeError(name)
    import importlib

    return getattr(importlib.import_module(module), name)
