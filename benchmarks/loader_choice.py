"""Which loader belongs behind the sync ``Warehouse`` seam? dlt vs plain SQL vs SQLAlchemy Core.

The sync feature copies memory records from Redis into a warehouse with LAST-WRITER-WINS: an incoming
row replaces the stored row with the same ``(namespace, id)`` only if ``incoming.updated_at >
stored.updated_at``, or they are equal and ``incoming.version > stored.version``. An older incoming
row must never overwrite a newer stored one, and the sync cursor commits atomically with its batch.

This script loads the same synthetic rows into the same kind of target with each approach, side by
side, and reports medians over several repetitions (the order of approaches alternates per rep):

``duckdb-sql``            (b) plain ``duckdb``: register a pyarrow Table, one transaction per batch:
                          ``INSERT INTO memories SELECT ... QUALIFY <newest per key> ON CONFLICT
                          (namespace, id) DO UPDATE SET ... WHERE <incoming is newer>`` + cursor upsert.
``sa-executemany``        (c) SQLAlchemy Core + duckdb-engine: ``postgresql.insert(...)
                          .on_conflict_do_update(..., where=<incoming is newer>)``, executemany per
                          batch (DuckDB runs executemany row by row).
``sa-multivalues``        (c') the same statement with ``.values([...])`` pages of 1,000 rows.
                          Both SQLAlchemy full loads are timed on the first ``--slow-rows`` rows
                          (default 5,000; the rest is filled untimed): read their rate.
``dlt-delete-insert``     (a) dlt, ``write_disposition={"disposition": "merge", "strategy":
                          "delete-insert"}``, ``primary_key=("namespace", "id")``, ``dedup_sort``
                          desc on ``updated_at``; cursor in dlt resource state.
``dlt-upsert``            (a) dlt, ``strategy="upsert"``.
``dlt-upsert-lwwfilter``  (a) dlt upsert plus a hand-written ``source_filter`` (a correlated
                          ``NOT EXISTS`` against the destination table) that drops staged rows that
                          are not newer than the stored row (and the run's rows deduplicated per
                          key in Python first): the only way found to get LWW from dlt.
``pg-sql``                (b) on PostgreSQL: psycopg binary ``COPY`` into a temp table, then ``INSERT ...
                          SELECT DISTINCT ON ... ON CONFLICT DO UPDATE ... WHERE <incoming is newer>``
                          + cursor upsert, one transaction per batch.
``dlt-pg-*``              (a) the dlt variants against PostgreSQL.

Before timing, every approach runs the LWW checks (:func:`lww_cases`): e.g. load v2 (updated_at=t2)
in one run, then v1 (t1 < t2) for the same key in a later run, and read back which one survived.

Measured per approach and data variant (no embeddings / 384-d float32 embeddings on every row):
full load of ``--rows`` rows into an empty table (records/s), incremental load of 1,000 changed rows
into that table, and a 10-row load into the existing table (fixed per-run overhead; for dlt also a
10-row first run into an empty destination).

Input form: each approach starts from the same Python rows (dicts with the canonical columns, the
embedding as float32 bytes as Redis stores vectors) and its time includes its own conversion
(pyarrow Table for dlt and duckdb, parameter dicts for SQLAlchemy, COPY rows for PostgreSQL).

Needs (in a throwaway virtualenv; the project's own environment is not used or touched)::

    python3.11 -m venv /tmp/dltvenv
    /tmp/dltvenv/bin/pip install "dlt[duckdb,postgres]" duckdb pyarrow sqlalchemy duckdb-engine \
        "psycopg[binary]"

PostgreSQL is optional: pass ``--pg-dsn`` (e.g. a throwaway local server; dlt insists on a password
in the DSN even when the server trusts the connection)::

    /tmp/dltvenv/bin/python benchmarks/loader_choice.py --rows 100000 \
        --pg-dsn postgresql://postgres:bench@127.0.0.1:55432/postgres

Other options: ``--reps`` (3), ``--batch-sizes`` (10000; e.g. ``5000,10000``), ``--variants``
(``plain,emb``), ``--approaches`` (comma list), ``--workdir`` (scratch files, deleted per run),
``--json-out`` (also write the JSON there), ``--skip-lww``. Prints a table, then JSON.
"""

from __future__ import annotations

import argparse
import array
import contextlib
import hashlib
import json
import os
import random
import shutil
import statistics
import sys
import tempfile
import time
from collections.abc import Callable, Iterator, Sequence
from datetime import datetime, timedelta, timezone
from pathlib import Path
from typing import Any

os.environ.setdefault("RUNTIME__DLTHUB_TELEMETRY", "false")  # no network calls from dlt
os.environ.setdefault("RUNTIME__LOG_LEVEL", "ERROR")

import duckdb  # noqa: E402
import pyarrow as pa  # noqa: E402

COLUMNS = (
    "namespace", "id", "user_id", "session_id", "memory_type", "text", "topics", "metadata",
    "embedding", "ttl", "created_at", "updated_at", "deleted_at", "version", "origin",
)
NON_KEY = [c for c in COLUMNS if c not in ("namespace", "id")]
DIMS = 384
TS = pa.timestamp("us", tz="UTC")
ARROW_SCHEMA = pa.schema([
    ("namespace", pa.string()), ("id", pa.string()), ("user_id", pa.string()),
    ("session_id", pa.string()), ("memory_type", pa.string()), ("text", pa.string()),
    ("topics", pa.string()), ("metadata", pa.string()), ("embedding", pa.list_(pa.float32())),
    ("ttl", pa.float64()), ("created_at", TS), ("updated_at", TS), ("deleted_at", TS),
    ("version", pa.string()), ("origin", pa.string()),
])
T0 = datetime(2026, 1, 1, tzinfo=timezone.utc)
EPOCH = datetime(1970, 1, 1, tzinfo=timezone.utc)
WORDS = ("memory agent user prefers dark mode coffee meeting tuesday project deadline budget "
         "travel paris report draft review python redis vector search cache session").split()

# The LWW predicate, written once for SQL dialects that name the stored row after its table.
LWW_WHERE = ("excluded.updated_at > {t}.updated_at OR (excluded.updated_at = {t}.updated_at "
             "AND excluded.version > {t}.version)")


# ----------------------------------------------------------------------------------------- data


def version_of(row: dict[str, Any]) -> str:
    """SHA-256 hex of the row's content: the LWW tiebreak (stands in for the project's row_version)."""
    doc = {k: (row[k].hex() if isinstance(row[k], bytes) else
               row[k].isoformat() if isinstance(row[k], datetime) else row[k])
           for k in COLUMNS if k not in ("version", "origin")}
    return hashlib.sha256(json.dumps(doc, sort_keys=True).encode()).hexdigest()


def random_embeddings(n: int, seed: int) -> list[bytes]:
    """``n`` float32 vectors of DIMS in [0, 1), as little-endian bytes, built without numpy."""
    import pyarrow.compute as pc

    raw = random.Random(seed).randbytes(n * DIMS * 2)
    u16 = pa.Array.from_buffers(pa.uint16(), n * DIMS, [None, pa.py_buffer(raw)])
    f32 = pc.cast(pc.divide(pc.cast(u16, pa.float32()), pa.scalar(65536.0, pa.float32())),
                  pa.float32())
    buf = f32.buffers()[1].to_pybytes()[: n * DIMS * 4]
    step = DIMS * 4
    return [buf[i * step:(i + 1) * step] for i in range(n)]


def make_rows(n: int, with_embeddings: bool, seed: int = 7) -> list[dict[str, Any]]:
    """``n`` distinct records over 20 namespaces; text ~200 chars; updated_at spread over a day."""
    rng = random.Random(seed)
    embs = random_embeddings(n, seed) if with_embeddings else [None] * n
    rows = []
    for i in range(n):
        words = []
        while sum(len(w) + 1 for w in words) < 200:
            words.append(rng.choice(WORDS))
        created = T0 + timedelta(microseconds=rng.randrange(86_400_000_000))
        row = {
            "namespace": f"ns-{i % 20}",
            "id": f"mem-{i:08d}",
            "user_id": f"user-{i % 1000}",
            "session_id": f"sess-{i % 5000}",
            "memory_type": ("working", "episodic", "semantic", "skill")[i % 4],
            "text": " ".join(words)[:200],
            "topics": json.dumps(rng.sample(WORDS, 3)),
            "metadata": json.dumps({"source": "bench", "n": i, "score": rng.random()}),
            "embedding": embs[i],
            "ttl": None if i % 3 else 3600.0,
            "created_at": created,
            "updated_at": created + timedelta(seconds=rng.randrange(3600)),
            "deleted_at": None,
            "origin": "redis:bench",
        }
        row["version"] = version_of(row)
        rows.append(row)
    return rows


def changed_rows(base: list[dict[str, Any]], count: int, bump: timedelta, tag: str) -> list[dict]:
    """``count`` rows of ``base`` (spread evenly) with new text and ``updated_at + bump``."""
    step = max(1, len(base) // count)
    out = []
    for row in base[::step][:count]:
        new = dict(row, text=f"{tag} " + row["text"][len(tag) + 1:],
                   updated_at=row["updated_at"] + bump)
        new["version"] = version_of(new)
        out.append(new)
    return out


def embedding_array(blobs: Sequence[bytes | None]) -> pa.Array:
    """float32 bytes (or None) -> ``list<float32>`` without a Python float per element."""
    offsets = [0]
    parts = []
    mask = []
    for b in blobs:
        if b is None:
            offsets.append(offsets[-1])
            mask.append(True)
        else:
            parts.append(b)
            offsets.append(offsets[-1] + len(b) // 4)
            mask.append(False)
    values = pa.Array.from_buffers(pa.float32(), offsets[-1], [None, pa.py_buffer(b"".join(parts))])
    return pa.ListArray.from_arrays(pa.array(offsets, pa.int32()), values, mask=pa.array(mask))


def to_arrow(rows: Sequence[dict[str, Any]]) -> pa.Table:
    arrays = []
    for field in ARROW_SCHEMA:
        if field.name == "embedding":
            arrays.append(embedding_array([r["embedding"] for r in rows]))
        else:
            arrays.append(pa.array([r[field.name] for r in rows], field.type))
    return pa.Table.from_arrays(arrays, schema=ARROW_SCHEMA)


def floats(blob: bytes | None) -> list[float] | None:
    if blob is None:
        return None
    a = array.array("f")
    a.frombytes(blob)
    return a.tolist()


def micros(at: datetime) -> int:
    d = at - EPOCH
    return (d.days * 86_400 + d.seconds) * 1_000_000 + d.microseconds


def cursor_text(rows: Sequence[dict[str, Any]]) -> str:
    """The batch's last keyset position, as the project's Cursor.to_text writes it."""
    last = max(rows, key=lambda r: (r["updated_at"], r["namespace"], r["id"]))
    return json.dumps([micros(last["updated_at"]), last["namespace"], last["id"]])


def batches(rows: Sequence[dict], size: int) -> Iterator[Sequence[dict]]:
    for i in range(0, len(rows), size):
        yield rows[i:i + size]


# ---------------------------------------------------------------------------------- approaches


class Loader:
    """One approach against one target. ``load`` is one sync run; each batch commits with its cursor."""

    name = ""
    target = "duckdb"

    def open(self, workdir: Path, tag: str) -> None:
        raise NotImplementedError

    def load(self, rows: Sequence[dict], batch_size: int) -> None:
        raise NotImplementedError

    def get(self, namespace: str, id: str) -> tuple | None:
        """(updated_at, version, text) of the stored row."""
        return self.query_one(
            f"SELECT updated_at, version, text FROM {self.table} WHERE namespace = '{namespace}' "
            f"AND id = '{id}'")

    def stats(self) -> tuple:
        """(rows, rows whose text starts with 'changed', distinct keys)."""
        return self.query_one(
            f"SELECT count(*), count(*) FILTER (WHERE text LIKE 'changed%'), "
            f"count(DISTINCT (namespace, id)) FROM {self.table}")

    def cursor(self) -> str | None:
        raise NotImplementedError

    def query_one(self, sql: str) -> tuple | None:
        raise NotImplementedError

    def close(self) -> None:
        pass

    table = "memories"


def duckdb_ddl(table: str = "memories") -> str:
    return f"""
        CREATE TABLE IF NOT EXISTS {table} (
            namespace VARCHAR NOT NULL, id VARCHAR NOT NULL, user_id VARCHAR, session_id VARCHAR,
            memory_type VARCHAR, text VARCHAR, topics VARCHAR, metadata VARCHAR,
            embedding FLOAT[], ttl DOUBLE, created_at TIMESTAMPTZ, updated_at TIMESTAMPTZ NOT NULL,
            deleted_at TIMESTAMPTZ, version VARCHAR NOT NULL, origin VARCHAR,
            PRIMARY KEY (namespace, id));
        CREATE TABLE IF NOT EXISTS sync_state (
            name VARCHAR PRIMARY KEY, cursor VARCHAR NOT NULL, committed_at TIMESTAMPTZ NOT NULL);
    """


def duckdb_upsert_sql(source: str = "batch") -> str:
    cols = ", ".join(COLUMNS)
    sets = ", ".join(f"{c} = excluded.{c}" for c in NON_KEY)
    # QUALIFY keeps the newest row per key in the batch: DuckDB (like PostgreSQL) checks ON
    # CONFLICT against the table as it was before the statement, so two rows for one key in one
    # statement are not ordered by LWW (verified on DuckDB 2.0: the second, newer one is dropped).
    return f"""
        INSERT INTO memories ({cols})
        SELECT {cols} FROM {source}
        QUALIFY row_number() OVER (PARTITION BY namespace, id
                                   ORDER BY updated_at DESC, version DESC) = 1
        ON CONFLICT (namespace, id) DO UPDATE SET {sets}
        WHERE {LWW_WHERE.format(t='memories')}
    """


def arrow_of(relation: Any) -> pa.Table:
    """A DuckDB result as a pyarrow Table (``to_arrow_table`` on 2.x, ``fetch_arrow_table`` before)."""
    fn = getattr(relation, "to_arrow_table", None) or relation.fetch_arrow_table
    return fn()


class DuckdbSql(Loader):
    """(b) plain duckdb: arrow batch + INSERT ... ON CONFLICT DO UPDATE ... WHERE, cursor in same tx."""

    name = "duckdb-sql"

    def open(self, workdir: Path, tag: str) -> None:
        self.path = workdir / f"{tag}.duckdb"
        self.con = duckdb.connect(str(self.path))
        self.con.execute(duckdb_ddl())
        self.upsert = duckdb_upsert_sql()
        self.state = """
            INSERT INTO sync_state VALUES ('redis', ?, now())
            ON CONFLICT (name) DO UPDATE SET cursor = excluded.cursor,
                committed_at = excluded.committed_at
        """

    def load(self, rows: Sequence[dict], batch_size: int) -> None:
        for chunk in batches(rows, batch_size):
            tbl = to_arrow(chunk)
            self.con.execute("BEGIN")
            try:
                self.con.register("batch", tbl)
                self.con.execute(self.upsert)
                self.con.execute(self.state, [cursor_text(chunk)])
                self.con.execute("COMMIT")
            except BaseException:
                self.con.execute("ROLLBACK")
                raise
            finally:
                self.con.unregister("batch")

    def cursor(self) -> str | None:
        r = self.query_one("SELECT cursor FROM sync_state WHERE name = 'redis'")
        return r and r[0]

    def query_one(self, sql: str) -> tuple | None:
        return self.con.execute(sql).fetchone()

    def close(self) -> None:
        self.con.close()


class SqlAlchemyDuckdb(Loader):
    """(c) SQLAlchemy Core on duckdb-engine: postgresql.insert().on_conflict_do_update(where=...)."""

    name = "sa-executemany"
    multivalues = False
    page = 1000

    def open(self, workdir: Path, tag: str) -> None:
        import sqlalchemy as sa
        from sqlalchemy.dialects.postgresql import insert as pg_insert

        self.sa = sa
        self.pg_insert = pg_insert
        self.path = workdir / f"{tag}.duckdb"
        self.engine = sa.create_engine(f"duckdb:///{self.path}")
        md = sa.MetaData()
        tz = sa.TIMESTAMP(timezone=True)
        self.t = sa.Table(
            "memories", md,
            sa.Column("namespace", sa.Text, primary_key=True), sa.Column("id", sa.Text, primary_key=True),
            *(sa.Column(c, sa.Text) for c in ("user_id", "session_id", "memory_type", "text",
                                               "topics", "metadata")),
            sa.Column("embedding", sa.ARRAY(sa.Float)), sa.Column("ttl", sa.Float),
            sa.Column("created_at", tz), sa.Column("updated_at", tz, nullable=False),
            sa.Column("deleted_at", tz), sa.Column("version", sa.Text, nullable=False),
            sa.Column("origin", sa.Text),
        )
        self.state_t = sa.Table(
            "sync_state", md, sa.Column("name", sa.Text, primary_key=True),
            sa.Column("cursor", sa.Text, nullable=False), sa.Column("committed_at", tz, nullable=False))
        md.create_all(self.engine)
        ins = pg_insert(self.t)
        self.stmt = self._upsert(ins)
        sins = pg_insert(self.state_t)
        self.state_stmt = sins.on_conflict_do_update(
            index_elements=["name"],
            set_={"cursor": sins.excluded.cursor, "committed_at": sins.excluded.committed_at})

    def _upsert(self, ins):  # type: ignore[no-untyped-def]
        sa, ex, t = self.sa, ins.excluded, self.t
        return ins.on_conflict_do_update(
            index_elements=["namespace", "id"],
            set_={c: ex[c] for c in NON_KEY},
            where=sa.or_(ex.updated_at > t.c.updated_at,
                         sa.and_(ex.updated_at == t.c.updated_at, ex.version > t.c.version)))

    @staticmethod
    def _params(chunk: Sequence[dict]) -> list[dict]:
        # newest per key only, so a batch never holds one key twice (see DuckdbSql.upsert)
        return [dict(r, embedding=floats(r["embedding"])) for r in newest_per_key(chunk)]

    def load(self, rows: Sequence[dict], batch_size: int) -> None:
        for chunk in batches(rows, batch_size):
            params = self._params(chunk)
            with self.engine.begin() as conn:
                if self.multivalues:
                    for i in range(0, len(params), self.page):
                        conn.execute(self._upsert(self.pg_insert(self.t).values(params[i:i + self.page])))
                else:
                    conn.execute(self.stmt, params)
                conn.execute(self.state_stmt, {"name": "redis", "cursor": cursor_text(chunk),
                                               "committed_at": datetime.now(timezone.utc)})

    def fast_fill(self, rows: Sequence[dict], batch_size: int) -> None:
        """Untimed bulk fill through the engine's DuckDB connection (arrow + the same upsert)."""
        raw = self.engine.raw_connection()
        try:
            con = raw.driver_connection
            for chunk in batches(rows, batch_size):
                con.register("batch", to_arrow(chunk))
                con.execute(duckdb_upsert_sql())
                con.unregister("batch")
            raw.commit()
        finally:
            raw.close()

    def cursor(self) -> str | None:
        r = self.query_one("SELECT cursor FROM sync_state WHERE name = 'redis'")
        return r and r[0]

    def query_one(self, sql: str) -> tuple | None:
        with self.engine.connect() as conn:
            return conn.exec_driver_sql(sql).fetchone()

    def close(self) -> None:
        self.engine.dispose()


class SqlAlchemyMultiValues(SqlAlchemyDuckdb):
    name = "sa-multivalues"
    multivalues = True


class PgVec:
    """A float32 vector as PostgreSQL's binary ``float4[]`` (what binary COPY sends), built from
    the little-endian bytes Redis holds without a Python float per element."""

    __slots__ = ("data",)
    _LEN4 = int.from_bytes(b"\x00\x00\x00\x04", "little")  # each element: int32 length 4

    def __init__(self, data: bytes) -> None:
        self.data = data

    @classmethod
    def of(cls, blob: bytes | None) -> PgVec | None:
        if blob is None:
            return None
        import struct

        n = len(blob) // 4
        words = array.array("I")
        words.frombytes(blob)
        words.byteswap()  # float32 big-endian
        out = array.array("I", [cls._LEN4]) * (2 * n)
        out[1::2] = words
        # ndim 1, no nulls, element oid 700 (float4), dim n, lower bound 1
        return cls(struct.pack("!iiiii", 1, 0, 700, n, 1) + out.tobytes())


class PostgresSql(Loader):
    """(b) on PostgreSQL: COPY into a temp table, INSERT ... ON CONFLICT DO UPDATE ... WHERE, cursor."""

    name = "pg-sql"
    target = "postgres"

    def __init__(self, dsn: str) -> None:
        self.dsn = dsn

    def open(self, workdir: Path, tag: str) -> None:
        import psycopg
        from psycopg.adapt import Dumper
        from psycopg.pq import Format

        self.schema = tag.replace("-", "_")
        self.table = f"{self.schema}.memories"
        self.con = psycopg.connect(self.dsn)

        class VecDumper(Dumper):  # the bytes are already PostgreSQL's binary float4[] form
            format = Format.BINARY
            oid = self.con.adapters.types["float4[]"].oid

            def dump(self, obj: PgVec) -> bytes:
                return obj.data

        self.con.adapters.register_dumper(PgVec, VecDumper)
        with self.con.transaction():
            self.con.execute(f"DROP SCHEMA IF EXISTS {self.schema} CASCADE")
            self.con.execute(f"CREATE SCHEMA {self.schema}")
            self.con.execute(f"""
                CREATE TABLE {self.table} (
                    namespace TEXT NOT NULL, id TEXT NOT NULL, user_id TEXT, session_id TEXT,
                    memory_type TEXT, text TEXT, topics TEXT, metadata TEXT, embedding REAL[],
                    ttl DOUBLE PRECISION, created_at TIMESTAMPTZ, updated_at TIMESTAMPTZ NOT NULL,
                    deleted_at TIMESTAMPTZ, version TEXT NOT NULL, origin TEXT,
                    PRIMARY KEY (namespace, id))""")
            self.con.execute(f"""
                CREATE TABLE {self.schema}.sync_state (
                    name TEXT PRIMARY KEY, cursor TEXT NOT NULL, committed_at TIMESTAMPTZ NOT NULL)""")
            self.con.execute(f"CREATE TEMP TABLE stage (LIKE {self.table}) ON COMMIT DELETE ROWS")
        cols = ", ".join(COLUMNS)
        sets = ", ".join(f"{c} = excluded.{c}" for c in NON_KEY)
        self.copy = f"COPY stage ({cols}) FROM STDIN (FORMAT BINARY)"
        self.upsert = f"""
            INSERT INTO {self.table} AS m ({cols})
            SELECT DISTINCT ON (namespace, id) {cols} FROM stage
            ORDER BY namespace, id, updated_at DESC, version DESC
            ON CONFLICT (namespace, id) DO UPDATE SET {sets}
            WHERE {LWW_WHERE.format(t='m')}"""
        self.state = f"""
            INSERT INTO {self.schema}.sync_state VALUES ('redis', %s, now())
            ON CONFLICT (name) DO UPDATE SET cursor = excluded.cursor,
                committed_at = excluded.committed_at"""

    def load(self, rows: Sequence[dict], batch_size: int) -> None:
        for chunk in batches(rows, batch_size):
            with self.con.transaction():
                with self.con.cursor() as cur:
                    with cur.copy(self.copy) as cp:
                        for r in chunk:
                            cp.write_row([PgVec.of(r[c]) if c == "embedding" else r[c]
                                          for c in COLUMNS])
                    cur.execute(self.upsert)
                    cur.execute(self.state, [cursor_text(chunk)])

    def cursor(self) -> str | None:
        r = self.query_one(f"SELECT cursor FROM {self.schema}.sync_state WHERE name = 'redis'")
        return r and r[0]

    def stats(self) -> tuple:
        return self.query_one(
            f"SELECT count(*), count(*) FILTER (WHERE text LIKE 'changed%'), "
            f"count(DISTINCT (namespace, id)) FROM {self.table}")

    def query_one(self, sql: str) -> tuple | None:
        with self.con.transaction():
            return self.con.execute(sql).fetchone()

    def close(self) -> None:
        with contextlib.suppress(Exception):
            with self.con.transaction():
                self.con.execute(f"DROP SCHEMA IF EXISTS {self.schema} CASCADE")
        self.con.close()


def lww_filter(dataset: str, table: str = "memories") -> str:
    """A dlt ``source_filter`` that keeps only staged rows newer than the stored row.

    dlt applies ``source_filter`` as ``SELECT * FROM <staging table> WHERE <filter>`` (upsert) or
    against an aliased staging table (delete-insert), and has no placeholder for the destination
    table, so the qualified name is written in by hand. The stored columns are renamed in a derived
    table so the bare names (``namespace``, ``updated_at``...) bind to the staged row whatever
    alias dlt gives it.
    """
    return (
        f'NOT EXISTS (SELECT 1 FROM (SELECT "namespace" AS _ns, "id" AS _id, "updated_at" AS _u, '
        f'"version" AS _v FROM "{dataset}"."{table}") AS _cur '
        f'WHERE _ns = "namespace" AND _id = "id" '
        f'AND (_u > "updated_at" OR (_u = "updated_at" AND _v >= "version")))'
    )


def newest_per_key(rows: Sequence[dict]) -> list[dict]:
    """Keep the LWW winner per (namespace, id): upsert needs a unique key in the whole run."""
    best: dict[tuple, dict] = {}
    for r in rows:
        k = (r["namespace"], r["id"])
        if k not in best or (r["updated_at"], r["version"]) > (best[k]["updated_at"],
                                                               best[k]["version"]):
            best[k] = r
    return list(best.values())


class DltLoader(Loader):
    """(a) dlt pipeline, write_disposition merge, primary_key (namespace, id), arrow batches."""

    def __init__(self, name: str, strategy: str, *, dedup_sort: bool = False,
                 lww: bool = False, skip_unchanged: bool = False, pg_dsn: str | None = None,
                 dedup_in_python: bool = False) -> None:
        self.name = name
        self.dedup_in_python = dedup_in_python
        self.strategy = strategy
        self.dedup_sort = dedup_sort
        self.lww = lww
        self.skip_unchanged = skip_unchanged
        self.pg_dsn = pg_dsn
        self.target = "postgres" if pg_dsn else "duckdb"

    def open(self, workdir: Path, tag: str) -> None:
        import dlt

        self.dlt = dlt
        self.tag = tag.replace("-", "_")
        self.dataset = self.tag if self.pg_dsn else "mem"
        self.table = f"{self.dataset}.memories"
        if self.pg_dsn:
            dest = dlt.destinations.postgres(credentials=self.pg_dsn)
        else:
            self.path = workdir / f"{tag}.duckdb"
            dest = dlt.destinations.duckdb(str(self.path))
        self.pipeline = dlt.pipeline(
            pipeline_name=self.tag, destination=dest, dataset_name=self.dataset,
            pipelines_dir=str(workdir / "dlt_pipelines"), progress=None)
        wd: dict[str, Any] = {"disposition": "merge", "strategy": self.strategy}
        if self.lww:
            wd["source_filter"] = lww_filter(self.dataset)
        if self.skip_unchanged:
            wd["skip_unchanged_rows"] = True
            wd["row_version_column_name"] = "version"
        self.write_disposition = wd
        self.columns: dict[str, Any] = {}
        if self.dedup_sort:
            self.columns["updated_at"] = {"dedup_sort": "desc"}

    def load(self, rows: Sequence[dict], batch_size: int) -> None:
        dlt = self.dlt
        if self.dedup_in_python:
            rows = newest_per_key(rows)

        def gen() -> Iterator[pa.Table]:
            for chunk in batches(rows, batch_size):
                tbl = to_arrow(chunk)
                if self.pg_dsn:
                    # dlt loads arrow into postgres through CSV, which cannot hold a list column
                    # ("Unsupported Type:list<element: float>"): send the vector as JSON text
                    con = duckdb.connect()
                    con.register("t", tbl)
                    tbl = arrow_of(con.sql(
                        "SELECT * REPLACE (to_json(embedding)::VARCHAR AS embedding) FROM t"))
                    con.close()
                yield tbl
                # resource state travels in the same load package as the data
                dlt.current.resource_state()["cursor"] = cursor_text(chunk)

        res = dlt.resource(gen(), name="memories", write_disposition=self.write_disposition,
                           primary_key=("namespace", "id"), columns=self.columns or None)
        info = self.pipeline.run(res)
        info.raise_on_failed_jobs()

    def cursor(self) -> str | None:
        st = self.pipeline.state.get("sources", {})
        for src in st.values():
            c = src.get("resources", {}).get("memories", {}).get("cursor")
            if c:
                return c
        return None

    def query_one(self, sql: str) -> tuple | None:
        with self.pipeline.sql_client() as client:
            with client.execute_query(sql) as cur:
                return cur.fetchone()

    def stats(self) -> tuple:
        return self.query_one(
            f"SELECT count(*), count(*) FILTER (WHERE text LIKE 'changed%'), "
            f"count(DISTINCT (namespace, id)) FROM {self.table}")

    def close(self) -> None:
        if self.pg_dsn:
            with contextlib.suppress(Exception):
                with self.pipeline.sql_client() as client:
                    for ds in (self.dataset, f"{self.dataset}_staging"):
                        client.execute_sql(f"DROP SCHEMA IF EXISTS {ds} CASCADE")


def make_approaches(pg_dsn: str | None) -> dict[str, Callable[[], Loader]]:
    a: dict[str, Callable[[], Loader]] = {
        "duckdb-sql": DuckdbSql,
        "sa-executemany": SqlAlchemyDuckdb,
        "sa-multivalues": SqlAlchemyMultiValues,
        "dlt-delete-insert": lambda: DltLoader("dlt-delete-insert", "delete-insert", dedup_sort=True),
        "dlt-upsert": lambda: DltLoader("dlt-upsert", "upsert"),
        "dlt-upsert-lwwfilter": lambda: DltLoader(
            "dlt-upsert-lwwfilter", "upsert", lww=True, dedup_in_python=True),
    }
    if pg_dsn:
        a["pg-sql"] = lambda: PostgresSql(pg_dsn)
        a["dlt-pg-delete-insert"] = lambda: DltLoader(
            "dlt-pg-delete-insert", "delete-insert", dedup_sort=True, pg_dsn=pg_dsn)
        a["dlt-pg-upsert"] = lambda: DltLoader("dlt-pg-upsert", "upsert", pg_dsn=pg_dsn)
        a["dlt-pg-upsert-lwwfilter"] = lambda: DltLoader(
            "dlt-pg-upsert-lwwfilter", "upsert", lww=True, pg_dsn=pg_dsn, dedup_in_python=True)
    return a


# Variants checked for LWW only (not timed): what the other dlt knobs do.
def lww_only_approaches(pg_dsn: str | None) -> dict[str, Callable[[], Loader]]:
    a: dict[str, Callable[[], Loader]] = {
        "dlt-upsert+python-dedup(no filter)": lambda: DltLoader(
            "dlt-upsert-dd", "upsert", dedup_in_python=True),
        "dlt-delete-insert(no dedup_sort)": lambda: DltLoader("dlt-di-plain", "delete-insert"),
        "dlt-upsert+skip_unchanged_rows(version)": lambda: DltLoader(
            "dlt-upsert-skip", "upsert", skip_unchanged=True),
        "dlt-delete-insert+lwwfilter": lambda: DltLoader(
            "dlt-di-lww", "delete-insert", dedup_sort=True, lww=True),
    }
    if pg_dsn:
        a["dlt-pg-delete-insert+lwwfilter"] = lambda: DltLoader(
            "dlt-pg-di-lww", "delete-insert", dedup_sort=True, lww=True, pg_dsn=pg_dsn)
    return a


# ----------------------------------------------------------------------------------------- LWW


def lww_row(label: str, updated_at: datetime, version: str) -> dict[str, Any]:
    return {"namespace": "ns-lww", "id": "k1", "user_id": None, "session_id": None,
            "memory_type": "semantic", "text": label, "topics": "[]", "metadata": "{}",
            "embedding": None, "ttl": None, "created_at": T0, "updated_at": updated_at,
            "deleted_at": None, "version": version, "origin": "redis:lww"}


def lww_cases() -> list[tuple[str, list[list[dict]], str]]:
    """(case, runs (each a list of rows loaded in one sync run), label that must survive)."""
    t1, t2 = T0 + timedelta(seconds=10), T0 + timedelta(seconds=20)
    lo, hi = "0" * 64, "f" * 64
    return [
        ("v2 then older v1 (10 s older, higher version)",
         [[lww_row("v2", t2, lo)], [lww_row("v1", t1, hi)]], "v2"),
        ("v2 then older v1 (1 us older)",
         [[lww_row("v2", t1 + timedelta(microseconds=1), lo)], [lww_row("v1", t1, hi)]], "v2"),
        ("v1 then newer v2 (sanity)", [[lww_row("v1", t1, hi)], [lww_row("v2", t2, lo)]], "v2"),
        ("tie on updated_at, higher version first",
         [[lww_row("vHigh", t1, hi)], [lww_row("vLow", t1, lo)]], "vHigh"),
        ("one batch holds [v2, v1] for the key",
         [[lww_row("v2", t2, hi), lww_row("v1", t1, hi)]], "v2"),
        ("one batch holds [v1, v2] for the key",
         [[lww_row("v1", t1, hi), lww_row("v2", t2, hi)]], "v2"),
    ]


def run_lww(factory: Callable[[], Loader], workdir: Path, label: str) -> list[dict[str, Any]]:
    out = []
    for i, (case, runs, want) in enumerate(lww_cases()):
        loader = factory()
        tag = f"lww_{abs(hash(label)) % 10**8}_{i}"
        res: dict[str, Any] = {"case": case, "want": want}
        try:
            loader.open(workdir, tag)
            for rows in runs:
                loader.load(rows, 10_000)
            got = loader.get("ns-lww", "k1")
            res["got"] = got[2] if got else None
            res["stored_updated_at"] = str(got[0]) if got else None
            res["ok"] = res["got"] == want
        except Exception as e:  # noqa: BLE001 - report what the approach does
            res["got"] = None
            res["error"] = f"{type(e).__name__}: {str(e).splitlines()[0][:200]}"
            res["ok"] = False
        finally:
            with contextlib.suppress(Exception):
                loader.close()
        out.append(res)
    return out


# ------------------------------------------------------------------------------------- timing


def timed(fn: Callable[[], Any]) -> float:
    t = time.perf_counter()
    fn()
    return time.perf_counter() - t


def bench_one(factory: Callable[[], Loader], workdir: Path, tag: str, base: list[dict],
              changes: list[dict], tinies: list[list[dict]], batch_size: int,
              slow_rows: int) -> dict[str, Any]:
    loader = factory()
    r: dict[str, Any] = {}
    try:
        if isinstance(loader, DltLoader):
            # first run into an empty destination: schema creation + state tables
            probe = factory()
            probe.open(workdir, tag + "_first")
            r["first_10_s"] = timed(lambda: probe.load(tinies[0], batch_size))
            probe.close()
        loader.open(workdir, tag)
        if isinstance(loader, SqlAlchemyDuckdb):
            # SQLAlchemy binds every value in Python (executemany even runs row by row in
            # DuckDB): time a prefix, fill the rest untimed so the incremental load meets 100k rows
            timed_rows = base[:slow_rows]
            r["full_rows"] = len(timed_rows)
            r["full_s"] = timed(lambda: loader.load(timed_rows, batch_size))
            loader.fast_fill(base[slow_rows:], batch_size)
        else:
            r["full_rows"] = len(base)
            r["full_s"] = timed(lambda: loader.load(base, batch_size))
        r["incr_s"] = timed(lambda: loader.load(changes, batch_size))
        n, changed, distinct = loader.stats()
        cursor = loader.cursor()
        r["check"] = {"rows": n, "changed": changed, "distinct_keys": distinct, "cursor": cursor}
        r["ok"] = (n == len(base) == distinct and changed == len(changes)
                   and cursor == cursor_text(changes))
        tiny_times = [timed(lambda rows=rows: loader.load(rows, batch_size)) for rows in tinies[1:]]
        r["tiny_10_s"] = statistics.median(tiny_times)
    except Exception as e:  # noqa: BLE001
        r["error"] = f"{type(e).__name__}: {str(e).splitlines()[0][:300]}"
    finally:
        with contextlib.suppress(Exception):
            loader.close()
    return r


def fmt(x: float | None, nd: int = 2) -> str:
    return "-" if x is None else f"{x:,.{nd}f}"


def main(argv: Sequence[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--rows", type=int, default=100_000)
    p.add_argument("--changes", type=int, default=1_000)
    p.add_argument("--reps", type=int, default=3)
    p.add_argument("--batch-sizes", default="10000")
    p.add_argument("--variants", default="plain,emb", help="plain (no embeddings), emb (384-d)")
    p.add_argument("--approaches", default="", help="comma list; default all available")
    p.add_argument("--slow-rows", type=int, default=5_000,
                   help="rows timed in the SQLAlchemy full loads (the rest is filled untimed)")
    p.add_argument("--pg-dsn", default=None)
    p.add_argument("--workdir", default=None)
    p.add_argument("--json-out", default=None)
    p.add_argument("--skip-lww", action="store_true")
    args = p.parse_args(argv)

    approaches = make_approaches(args.pg_dsn)
    if args.approaches:
        approaches = {k: v for k, v in approaches.items() if k in args.approaches.split(",")}
    workroot = Path(args.workdir or tempfile.mkdtemp(prefix="loader_choice_"))
    workroot.mkdir(parents=True, exist_ok=True)
    import dlt
    import sqlalchemy

    result: dict[str, Any] = {
        "versions": {"python": sys.version.split()[0], "dlt": dlt.__version__,
                     "duckdb": duckdb.__version__, "pyarrow": pa.__version__,
                     "sqlalchemy": sqlalchemy.__version__},
        "args": vars(args), "cpus": os.cpu_count(), "lww": {}, "runs": [],
    }

    if not args.skip_lww:
        checks = dict(approaches)
        checks.update(lww_only_approaches(args.pg_dsn))
        for name, factory in checks.items():
            wd = workroot / "lww"
            wd.mkdir(exist_ok=True)
            result["lww"][name] = run_lww(factory, wd, name)
            shutil.rmtree(wd, ignore_errors=True)
            verdict = ", ".join(
                f"{c['case']}: {c['got'] if 'error' not in c else 'ERROR ' + c['error'][:80]}"
                f"{'' if c['ok'] else ' (WRONG)'}" for c in result["lww"][name])
            print(f"[lww] {name}: {verdict}", flush=True)

    names = list(approaches)
    for variant in args.variants.split(","):
        base = make_rows(args.rows, variant == "emb")
        changes = changed_rows(base, args.changes, timedelta(hours=2), "changed")
        tinies = [changed_rows(base, 10, timedelta(hours=3, seconds=k), f"tiny{k}")
                  for k in range(6)]
        for bs in map(int, args.batch_sizes.split(",")):
            for rep in range(args.reps):
                order = names if rep % 2 == 0 else names[::-1]
                for name in order:
                    wd = workroot / f"{variant}_{bs}_{rep}_{name}"
                    wd.mkdir(parents=True, exist_ok=True)
                    r = bench_one(approaches[name], wd, f"b_{name}_{rep}".replace("-", "_"), base,
                                  changes, tinies, bs, args.slow_rows)
                    shutil.rmtree(wd, ignore_errors=True)
                    r.update(approach=name, target=approaches[name]().target, variant=variant,
                             batch_size=bs, rep=rep)
                    result["runs"].append(r)
                    print(f"[run] {variant} bs={bs} rep={rep} {name}: "
                          + ", ".join(f"{k}={fmt(v) if isinstance(v, float) else v}"
                                      for k, v in r.items() if k not in ("approach", "variant",
                                                                         "batch_size", "rep")),
                          flush=True)

    # medians
    summary = []
    keys = sorted({(r["variant"], r["batch_size"], r["approach"]) for r in result["runs"]},
                  key=lambda k: (k[0], k[1], names.index(k[2])))
    for variant, bs, name in keys:
        rs = [r for r in result["runs"]
              if (r["variant"], r["batch_size"], r["approach"]) == (variant, bs, name)
              and "error" not in r]
        errs = [r["error"] for r in result["runs"]
                if (r["variant"], r["batch_size"], r["approach"]) == (variant, bs, name)
                and "error" in r]

        def med(k: str) -> float | None:
            v = [r[k] for r in rs if k in r]
            return statistics.median(v) if v else None

        full_s, incr_s = med("full_s"), med("incr_s")
        rows = rs[0]["full_rows"] if rs else None
        summary.append({
            "variant": variant, "batch_size": bs, "approach": name,
            "target": approaches[name]().target, "n": len(rs), "full_rows": rows,
            "full_s": full_s, "full_rps": rows / full_s if full_s else None,
            "incr_s": incr_s, "incr_rps": args.changes / incr_s if incr_s else None,
            "tiny_10_s": med("tiny_10_s"), "first_10_s": med("first_10_s"),
            "all_checks_ok": all(r.get("ok") for r in rs) and not errs, "errors": errs[:1],
        })
    result["summary"] = summary

    print()
    hdr = (f"{'variant':7} {'bs':>6} {'approach':24} {'rows':>7} {'full s':>8} {'full rec/s':>11} "
           f"{'incr1k s':>9} {'incr rec/s':>10} {'10-row s':>9} {'1st 10 s':>9} ok")
    print(hdr)
    print("-" * len(hdr))
    for s in summary:
        print(f"{s['variant']:7} {s['batch_size']:>6} {s['approach']:24} "
              f"{s['full_rows'] or 0:>7} {fmt(s['full_s']):>8} {fmt(s['full_rps'], 0):>11} "
              f"{fmt(s['incr_s'], 3):>9} {fmt(s['incr_rps'], 0):>10} {fmt(s['tiny_10_s'], 3):>9} "
              f"{fmt(s['first_10_s'], 3):>9} {'yes' if s['all_checks_ok'] else 'NO ' + str(s['errors'])}")
    print()
    if result["lww"]:
        print("LWW (stored label after the runs; want in brackets):")
        for name, cases in result["lww"].items():
            print(f"  {name}")
            for c in cases:
                got = c["got"] if "error" not in c else "ERROR " + c["error"][:120]
                print(f"    {'ok   ' if c['ok'] else 'WRONG'} {c['case']}: {got} [{c['want']}]")
    print()
    text = json.dumps(result, indent=1, default=str)
    print(text)
    if args.json_out:
        Path(args.json_out).write_text(text)
    if not args.workdir:
        shutil.rmtree(workroot, ignore_errors=True)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
