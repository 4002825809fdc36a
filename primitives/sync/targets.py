"""Which sync target a URL or name means: the one registry of targets.

=================================================  ===============================================
``--target`` / ``MEMORY_SYNC_TARGET``                 target
=================================================  ===============================================
(unset)                                             DuckDB file ``.memory-primitives/memories.duckdb``
``duckdb:///relative/or//absolute/path.duckdb``     :class:`~primitives.sync.duckdb_target.DuckDBWarehouse`
``postgresql://user:pass@host:port/db``             :class:`~primitives.sync.postgres_target.PostgresWarehouse`
``delta:///path/to/table``                          :class:`~primitives.sync.delta_target.DeltaWarehouse`
``datacloud://instance.host?connector=C&object=O``  :class:`~primitives.sync.datacloud_target.DataCloudWarehouse`
                                                    (token from ``MEMORY_SYNC_DATACLOUD_TOKEN``)
``snowflake://user@account/db/schema?warehouse=W``  :class:`~primitives.sync.snowflake_target.SnowflakeWarehouse`
                                                    (password from ``MEMORY_SYNC_SNOWFLAKE_PASSWORD``)
a name ``N``                                        the URL in ``MEMORY_SYNC_TARGET_<N>``
=================================================  ===============================================

Query options common to all: ``table`` (SQL targets), ``vectors=0`` (leave embeddings out).
A new target is one module and one entry in :data:`SCHEMES`.
"""

from __future__ import annotations

import os
import re
from collections.abc import Callable, Mapping
from pathlib import Path
from urllib.parse import parse_qs, urlsplit

from primitives.errors import ConfigurationError
from primitives.sync.warehouse import Warehouse

__all__ = ["DEFAULT_TARGET", "SCHEMES", "open_target", "resolve_target"]

#: Where the default target lives (relative to the working directory, like the outbox).
DEFAULT_TARGET = "duckdb:///.memory-primitives/memories.duckdb"
_NAME = re.compile(r"[A-Za-z][A-Za-z0-9_]{0,63}")


def _options(url: str) -> dict[str, str]:
    return {k: v[-1] for k, v in parse_qs(urlsplit(url).query).items()}


def _vectors(options: Mapping[str, str]) -> bool:
    return options.get("vectors", "1") not in ("0", "false", "no")


def _duckdb(url: str, env: Mapping[str, str]) -> Warehouse:
    from primitives.sync.duckdb_target import DuckDBWarehouse

    path = url[len("duckdb:///"):].split("?", 1)[0] if url.startswith("duckdb:///") else ""
    if not path:
        raise ConfigurationError(f"sync target {url!r}: expected duckdb:///path/to/file.duckdb")
    options = _options(url)
    return DuckDBWarehouse(Path(path), table=options.get("table", "memories"), vectors=_vectors(options))


def _postgres(url: str, env: Mapping[str, str]) -> Warehouse:
    try:
        from primitives.sync.postgres_target import PostgresWarehouse
    except ImportError as exc:
        raise ConfigurationError(f'PostgreSQL targets need psycopg: pip install "memory-primitives[sync-postgres]" ({exc})') from exc
    options = _options(url)
    base = url.split("?", 1)[0]
    return PostgresWarehouse(base, table=options.get("table", "memories"), vectors=_vectors(options))


def _delta(url: str, env: Mapping[str, str]) -> Warehouse:
    try:
        from primitives.sync.delta_target import DeltaWarehouse
    except ImportError as exc:
        raise ConfigurationError(f'Delta Lake targets need deltalake: pip install "memory-primitives[sync-delta]" ({exc})') from exc
    path = url[len("delta:///"):].split("?", 1)[0] if url.startswith("delta:///") else ""
    if not path:
        raise ConfigurationError(f"sync target {url!r}: expected delta:///path/to/table")
    return DeltaWarehouse(Path(path), vectors=_vectors(_options(url)))


def _snowflake(url: str, env: Mapping[str, str]) -> Warehouse:
    try:
        from primitives.sync.snowflake_target import SnowflakeWarehouse
    except ImportError as exc:
        raise ConfigurationError(f'Snowflake targets need the connector: pip install "memory-primitives[sync-snowflake]" ({exc})') from exc
    parts = urlsplit(url)
    path = [p for p in parts.path.split("/") if p]
    if not parts.username or not parts.hostname or not path:
        raise ConfigurationError(
            f"sync target {url!r}: expected snowflake://USER@ACCOUNT/DATABASE[/SCHEMA]?warehouse=W&role=R&table=T "
            "with the password in MEMORY_SYNC_SNOWFLAKE_PASSWORD"
        )
    options = _options(url)
    return SnowflakeWarehouse(
        account=parts.hostname, user=parts.username, password=env.get("MEMORY_SYNC_SNOWFLAKE_PASSWORD") or parts.password,
        database=path[0], schema=path[1] if len(path) > 1 else "PUBLIC", warehouse=options.get("warehouse"),
        role=options.get("role"), table=options.get("table", "MEMORIES"), vectors=_vectors(options),
    )


def _datacloud(url: str, env: Mapping[str, str]) -> Warehouse:
    try:
        from primitives.sync.datacloud_target import DataCloudWarehouse
    except ImportError as exc:
        raise ConfigurationError(f'Data Cloud targets need httpx: pip install "memory-primitives[sync-datacloud]" ({exc})') from exc
    parts = urlsplit(url)
    options = _options(url)
    token = env.get("MEMORY_SYNC_DATACLOUD_TOKEN", "")
    if not token or "connector" not in options or "object" not in options:
        raise ConfigurationError(
            "a Data Cloud target needs datacloud://INSTANCE_HOST?connector=C&object=O and the access token in "
            "MEMORY_SYNC_DATACLOUD_TOKEN (see docs/sync.md)"
        )
    scheme = "http" if options.get("insecure") == "1" else "https"
    return DataCloudWarehouse(
        f"{scheme}://{parts.netloc}", token=token, connector=options["connector"], object_name=options["object"],
    )


#: URL scheme -> factory. The one place a new target is registered.
SCHEMES: dict[str, Callable[[str, Mapping[str, str]], Warehouse]] = {
    "duckdb": _duckdb,
    "postgresql": _postgres,
    "postgres": _postgres,
    "delta": _delta,
    "datacloud": _datacloud,
    "snowflake": _snowflake,
}


def resolve_target(target: str | None, env: Mapping[str, str] | None = None) -> str:
    """The URL ``target`` means: itself when it is a URL, ``MEMORY_SYNC_TARGET_<NAME>`` for a
    name, ``MEMORY_SYNC_TARGET`` or :data:`DEFAULT_TARGET` when ``None``.

    Raises:
        ConfigurationError: a name with no such variable, or an unknown scheme.
    """
    env = os.environ if env is None else env
    if not target:
        target = env.get("MEMORY_SYNC_TARGET") or DEFAULT_TARGET
    if "://" not in target:
        if not _NAME.fullmatch(target):
            raise ConfigurationError(f"sync target {target!r} is neither a URL nor a name (letters, digits, _)")
        url = env.get(f"MEMORY_SYNC_TARGET_{target.upper()}")
        if not url:
            raise ConfigurationError(f"no sync target named {target!r}: set MEMORY_SYNC_TARGET_{target.upper()} to its URL")
        target = url
    scheme = target.split("://", 1)[0].lower()
    if scheme not in SCHEMES:
        raise ConfigurationError(f"unknown sync target scheme {scheme!r}; use one of {', '.join(sorted(SCHEMES))}")
    return target


def open_target(target: str | None = None, env: Mapping[str, str] | None = None) -> Warehouse:
    """A (not yet opened) target for ``target`` (see :func:`resolve_target`); call ``open()``
    or use it as an async context manager.

    Raises:
        ConfigurationError: see :func:`resolve_target`; a missing optional package.
    """
    env = os.environ if env is None else env
    url = resolve_target(target, env)
    return SCHEMES[url.split("://", 1)[0].lower()](url, env)
