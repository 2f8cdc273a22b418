"""PostgreSQL table sink: one table per asset, `PARTITION BY LIST (partition_date)`, one table partition per day.

A day is replaced inside the transaction that holds its partition lock, in one of two ways chosen by its size:

- **swap** (opt-in: days of at least `IDEM_PG_SWAP_MIN_ROWS` rows; unset, never): COPY the day into a fresh staging
  table `<asset>$p<yyyymmdd>$s<run>` (no index yet: plain COPY speed), add its primary key in one sort and a
  `CHECK (partition_date = day)`; publish = `DROP` the day's old partition, `ATTACH` the staged table (the
  CHECK spares ATTACH a validation scan) and rename it `<asset>$p<yyyymmdd>`. Old rows leave by DROP TABLE,
  not row by row, and leave no vacuum debt: a 1M-row overwrite costs about what a plain COPY costs.
- **in place** (the default; with the swap opted in, smaller days): DELETE the day's rows and COPY the new ones through the parent table (a day
  seen for the first time gets its empty partition first). Cheaper than the swap's DDL for small days, which
  matters when one run backfills hundreds of them.

Either way readers see the old day until COMMIT, then the new one: never a mix, never a gap. The swap's DROP
takes an ACCESS EXCLUSIVE lock on the parent from the publish step to the COMMIT (milliseconds): it waits at
most `IDEM_PG_SWAP_LOCK_TIMEOUT_MS` per attempt for running readers, so new readers never queue behind it for
longer, and retries until `IDEM_PG_SWAP_WAIT_S`, then fails naming the asset and partition (nothing published).
REPEATABLE READ and SERIALIZABLE readers whose snapshot predates a swap see the swapped day as empty
(PostgreSQL's DDL is not MVCC-safe for them): that is why the swap is opt-in. In place, every reader at every
isolation level sees the old day or the new one.

The CSV for COPY is encoded by a producer thread while the server parses the previous chunk (pyarrow writes
it; nulls unquoted-empty, empty strings quoted), so client encoding and server parsing overlap.

Layout: a table this sink creates is partitioned. A plain table created before (or by hand) keeps working
with DELETE + COPY; the sink never converts a table on its own. Every identifier goes through
`psycopg.sql.Identifier`.

Names map one to one. An asset's table is its name; every other relation the sink makes is named
`<base>$<part>...`, where `<base>` is the asset's name (or, past 36 bytes, its first 27 bytes, `$` and 8 hex digits
of its SHA-1, keeping every name within PostgreSQL's 63 bytes) and each part is `pkey`, `p<yyyymmdd>` (a day) or
`s<run>` (staging): the table's key `<base>$pkey`, a day `<base>$p<yyyymmdd>` with key `<base>$p<yyyymmdd>$pkey`,
a staging table `<base>$p<yyyymmdd>$s<run>`. Dagster asset names match `^[A-Za-z0-9_]+$`, so no asset's table
can hold one of these names: assets `orders` and `orders_p20260105` coexist in one schema. (Why `$` rather than
partitions in a schema of their own: a second schema per asset schema is one more object to create, grant and
drop, and readers' `search_path` would show it; a character no asset name holds costs nothing.)

A day's partition is found by what it is, not by its name: a partition of the asset's table (`pg_inherits`) whose
bound is exactly that day (`FOR VALUES IN (day)`). The names this sink gives now and the `<asset>_p<yyyymmdd>`
of older versions are looked up first (a few catalog rows a day, whatever the history's length); every
partition's bound is read only for days not found so (a new day, a partition renamed by hand). So tables laid out
by older versions keep working: a swap replaces the old-named partition by `<base>$p<yyyymmdd>`, an in-place
write fills it where it is. Only a partition of the asset's own table is ever dropped, and an asset whose table
*is* an old-named day partition of another asset's table is refused, never written into (the message says how
to rename that partition).
"""

from __future__ import annotations

import hashlib
import io
import queue
import re
import threading
import time
from collections.abc import Iterator, Sequence
from dataclasses import dataclass, field
from typing import ClassVar

import numpy as np
import pandas as pd
import psycopg
import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.csv as pa_csv
from psycopg import sql

from .. import settings
from ..resources import META_SCHEMA, PostgresResource
from .audit import ValueLimit, string_bytes_over, strings_containing
from .faults import fault_point
from .fingerprint import PartitionDigest
from .ledger import LedgerEntry, lock_partitions
from .partition_store import AssetTarget, PartitionIOManager, PartitionSink, type_change_refused
from .schema import LOGICAL_TYPES, PARTITION_COLUMN, SchemaError, canonical_dtype

COPY_CHUNK_ROWS = 32_768  # ~5 MB of CSV for a 10-column row: small enough to keep a few in flight
COPY_QUEUE_CHUNKS = 2  # encoded chunks waiting for the connection (bounds the extra memory)

SWAP_WAIT_ENV = "IDEM_PG_SWAP_WAIT_S"
# A btree entry holds at most 2,704 bytes (PostgreSQL compresses some longer ones, depending on the content): the
# audit refuses keys above this many bytes, whatever their content, so the refusal never depends on compressibility.
KEY_BYTES_LIMIT = 2_600

VALUE_LIMITS = (
    ValueLimit(
        "postgres: text without NUL characters", strings_containing("\x00"),
        "PostgreSQL text cannot hold the NUL character (U+0000); remove or replace it in the asset",
    ),
    ValueLimit(
        f"postgres: a key of at most {KEY_BYTES_LIMIT:,} bytes", string_bytes_over(KEY_BYTES_LIMIT, key_only=True),
        f"PostgreSQL's primary key index (btree) cannot hold a key this long (key values above {KEY_BYTES_LIMIT:,} "
        "UTF-8 bytes are refused); key the rows by a shorter column or a hash of this one",
    ),
)

# information_schema.columns.data_type of each declared PostgreSQL type
_INFO_SCHEMA_TYPES = {
    "text": "text",
    "bigint": "bigint",
    "double precision": "double precision",
    "boolean": "boolean",
    "date": "date",
    "timestamptz": "timestamp with time zone",
}


_LOGICAL_OF_INFO_SCHEMA = {
    _INFO_SCHEMA_TYPES[t.postgres]: name for name, t in LOGICAL_TYPES.items()
}


def _arrow_dtypes() -> dict:
    """Arrow types read from PostgreSQL and the pandas dtypes they become: nullable ones, so NULLs never turn a
    bigint into float64 (the rest, dates and timestamps, `TableDeclaration.coerce` brings to the canonical unit)."""
    return {pa.int64(): pd.Int64Dtype(), pa.bool_(): pd.BooleanDtype(), pa.string(): canonical_dtype("string"),
            pa.large_string(): canonical_dtype("string")}


# A ledger row's `version` for this sink: the publishing transaction's id (see `untouched_since_publish`).
XID_VERSION = "xid:"


class StagingMismatch(RuntimeError):
    pass


class SwapLockTimeout(RuntimeError):
    """The day's partition could not be swapped in: readers or writers kept the table locked too long."""


def csv_parts(frame: pd.DataFrame, lengths: Sequence[int], chunk_rows: int | None = None) -> Iterator[tuple[int, bytes]]:
    """The frame as COPY-ready CSV (nulls unquoted-empty, empty strings quoted), cut into parts of `lengths`
    consecutive rows: (part index, CSV bytes) chunk by chunk, in order. The frame goes to Arrow one chunk of
    `chunk_rows` (default COPY_CHUNK_ROWS) at a time and each part is a zero-copy slice of it: 365 parts of
    1,000 rows encode as fast as one of 365,000 (converting each day's rows on their own costs ~2x)."""
    chunk_rows = chunk_rows or COPY_CHUNK_ROWS
    options = pa_csv.WriteOptions(include_header=False, quoting_style="needed")
    ends = np.cumsum(lengths)
    part = 0
    for start in range(0, len(frame), chunk_rows):
        table = _zoned_as_utc_text(pa.Table.from_pandas(frame.iloc[start : start + chunk_rows], preserve_index=False))
        at, stop = start, start + table.num_rows
        while at < stop:
            while ends[part] <= at:  # parts of no rows
                part += 1
            until = min(stop, int(ends[part]))
            buf = io.BytesIO()
            pa_csv.write_csv(table.slice(at - start, until - at), buf, options)
            yield part, buf.getvalue()
            at = until


def _zoned_as_utc_text(table: pa.Table) -> pa.Table:
    """Timestamps with a time zone as text: the UTC wall time and `+00`. Arrow's CSV writer formats a zoned
    timestamp through the time zone database value by value: 0.4 s for 365,000 values, twenty times the rest of
    the row. Arrow keeps a zoned timestamp's values in UTC, so the cast to a naive one is the UTC wall time, which
    Arrow formats quickly; with the explicit offset PostgreSQL reads the same instant whatever the session's
    TimeZone. (A string column is quoted, as Arrow quotes every string; a null stays unquoted-empty: NULL.)"""
    for i, field in enumerate(table.schema):
        if pa.types.is_timestamp(field.type) and field.type.tz is not None:
            wall = table.column(i).cast(pa.timestamp(field.type.unit)).cast(pa.string())
            table = table.set_column(i, field.name, pc.binary_join_element_wise(wall, "+00", ""))
    return table


def copy_parts(cur: psycopg.Cursor, statements: Sequence[sql.Composable], frame: pd.DataFrame,
               lengths: Sequence[int], asset: str) -> list[int]:
    """COPY consecutive parts of the frame, `lengths[i]` rows by `statements[i]` (each day straight into its own
    partition), as CSV encoded by one producer thread a chunk ahead of the server; the row count each COPY
    reports. A failed COPY stops the producer; an encoding error is raised here."""
    chunks: queue.Queue = queue.Queue(maxsize=COPY_QUEUE_CHUNKS)
    stop = threading.Event()

    def produce() -> None:
        try:
            for item in csv_parts(frame, lengths):
                while not stop.is_set():
                    try:
                        chunks.put(item, timeout=0.1)
                        break
                    except queue.Full:
                        continue
                if stop.is_set():
                    return
            chunks.put(None)
        except BaseException as exc:  # handed to the writer, which raises it
            chunks.put(exc)

    def next_chunk():
        item = chunks.get()
        if isinstance(item, BaseException):
            raise item
        return item

    producer = threading.Thread(target=produce, name="idem-csv-encoder", daemon=True)
    producer.start()
    counts = []
    try:
        item = next_chunk()
        for part, statement in enumerate(statements):
            with cur.copy(statement) as copy:
                while item is not None and item[0] == part:
                    copy.write(item[1])
                    fault_point("postgres", "mid_stage", asset)
                    item = next_chunk()
            counts.append(cur.rowcount)
    finally:
        stop.set()
        producer.join()
    return counts


def copy_frame(cur: psycopg.Cursor, statement: sql.Composable, frame: pd.DataFrame, asset: str) -> int:
    """COPY the whole frame by one statement (`copy_parts` with one part); the row count COPY reports."""
    return copy_parts(cur, [statement], frame, [len(frame)], asset)[0]


@dataclass
class StagedDays:
    """What `stage` left in the open transaction: days written in place, days staged for the swap (staging table
    name and the row count its COPY reported), and for days COPYed straight into their partitions, the partition
    and the row count its COPY reported (`verify_staged` then checks the partition is still the day's, instead of
    counting the rows back)."""

    in_place: list[str] = field(default_factory=list)
    swapped: dict[str, tuple[str, int]] = field(default_factory=dict)
    copied: dict[str, tuple[sql.Identifier, int]] = field(default_factory=dict)


def _day_rows(frame: pd.DataFrame, days: Sequence[str]) -> dict[str, np.ndarray | None]:
    """Row positions of each day (None: every row of the frame belongs to the only day)."""
    if len(days) == 1:
        return {days[0]: None}
    positions = frame.groupby(frame[PARTITION_COLUMN].to_numpy(), sort=False).indices
    by_day = {pd.Timestamp(value).strftime("%Y-%m-%d"): rows for value, rows in positions.items()}
    empty = np.empty(0, dtype=np.intp)
    return {day: by_day.get(day, empty) for day in days}


def _rows_of(frame: pd.DataFrame, positions: list[np.ndarray | None]) -> pd.DataFrame:
    if any(p is None for p in positions):
        return frame
    return frame.take(np.concatenate(positions)) if positions else frame.iloc[:0]


class PostgresTableSink(PartitionSink):
    name = "postgres"
    audit_during_stage = True  # staging is a rollback away from nothing: let the audit run alongside the COPY
    publishes_in_transaction = True  # the COMMIT that publishes also writes the ledger row
    value_limits = VALUE_LIMITS

    def __init__(
        self,
        postgres: PostgresResource,
        schema: str,
        *,
        swap_min_rows: int | None = None,
        days_per_transaction: int | None = None,
        lock_timeout_ms: int | None = None,
        swap_wait_s: float | None = None,
    ):
        config = settings.current()
        self.postgres, self.schema = postgres, schema
        self.swap_min_rows = swap_min_rows if swap_min_rows is not None else config.pg_swap_min_rows
        # Each day of a write holds a few relation locks until COMMIT; PostgreSQL's shared lock table holds about
        # 64 x max_connections of them. Longer ranges publish in transactions of this many days (each day atomic).
        self.max_days_per_transaction = days_per_transaction or config.pg_days_per_transaction or None
        self.parallel_transactions = config.pg_parallel_transactions
        self.lock_timeout_ms = lock_timeout_ms or config.pg_swap_lock_timeout_ms
        self.swap_wait_s = swap_wait_s if swap_wait_s is not None else config.pg_swap_wait_s

    # -- names -------------------------------------------------------------------------------------------

    def schema_of(self, target: AssetTarget) -> str:
        """The sink's schema, or the asset key's prefix (`sales/orders` -> schema `sales`), as Dagster's database
        IO managers do: assets with the same name under different prefixes get different tables."""
        if not target.prefix:
            return self.schema
        schema = "_".join(target.prefix)
        if schema in ("public", "information_schema", META_SCHEMA) or schema.startswith("pg_"):
            raise SchemaError(f"asset {target.asset!r}: its key prefix names schema {schema!r}, which the platform "
                              "does not write to (PostgreSQL's own, or the ledger's); choose another prefix")
        return schema

    def table(self, target: AssetTarget) -> sql.Identifier:
        return sql.Identifier(self.schema_of(target), target.name)

    def location(self, target: AssetTarget, day: str) -> str:
        return f"{self.store(target)}?{PARTITION_COLUMN}={day}"

    def store(self, target: AssetTarget) -> str:
        return f"{self.schema_of(target)}.{target.name}"

    @staticmethod
    def _base(asset: str) -> str:
        """The asset's name as a prefix of at most 36 bytes (a hash replaces the tail of a longer one), so that
        `<base>$p<yyyymmdd>$s<run>$pkey` fits PostgreSQL's 63-byte identifiers. A shortened base holds a `$`:
        it is never another asset's name."""
        if len(asset.encode()) <= 36:
            return asset
        digest = hashlib.sha1(asset.encode()).hexdigest()[:8]
        return asset.encode()[:27].decode(errors="ignore") + "$" + digest

    @staticmethod
    def key_name(relation: str) -> str:
        """The name of a relation's primary key (and its index)."""
        return f"{relation}$pkey"

    def day_partition(self, target: AssetTarget, day: str) -> str:
        """The name the sink gives a day's partition (an existing one is found by its bound: `_day_partitions`)."""
        return f"{self._base(target.name)}$p{day.replace('-', '')}"

    def stage_name(self, target: AssetTarget, day: str, run_id: str) -> str:
        run = re.sub(r"[^a-z0-9]", "", run_id.lower())[:8]
        return f"{self.day_partition(target, day)}$s{run}"

    def _legacy_day_partition(self, target: AssetTarget, day: str) -> str:
        """The name older versions gave a day's partition: `<asset>_p<yyyymmdd>` (a look-up hint, never trusted)."""
        name = target.name
        if len(name.encode()) > 36:
            name = name.encode()[:27].decode(errors="ignore") + "_" + hashlib.sha1(name.encode()).hexdigest()[:8]
        return f"{name}_p{day.replace('-', '')}"

    # -- container ---------------------------------------------------------------------------------------

    def prepare(self, conn: psycopg.Connection, target: AssetTarget) -> None:
        decl = target.decl
        with conn.cursor() as cur:
            cur.execute("SELECT pg_advisory_xact_lock(hashtextextended(%s, 0))", (f"idem:ddl:{self.store(target)}",))
            cur.execute(sql.SQL("CREATE SCHEMA IF NOT EXISTS {}").format(sql.Identifier(self.schema_of(target))))
            cur.execute(
                "SELECT column_name, data_type FROM information_schema.columns WHERE table_schema = %s AND table_name = %s",
                (self.schema_of(target), target.name),
            )
            existing = dict(cur.fetchall())
            self._refuse_a_taken_name(cur, target)
            if not existing:
                columns = [
                    sql.SQL("{} {}{}").format(
                        sql.Identifier(c.name), sql.SQL(c.logical.postgres), sql.SQL("" if c.nullable else " NOT NULL")
                    )
                    for c in decl.columns
                ]
                key = sql.SQL(", ").join(sql.Identifier(k) for k in decl.partition_key)
                cur.execute(
                    sql.SQL("CREATE TABLE {} ({}, CONSTRAINT {} PRIMARY KEY ({})) PARTITION BY LIST ({})").format(
                        self.table(target), sql.SQL(", ").join(columns), sql.Identifier(self.key_name(self._base(target.name))),
                        key, sql.Identifier(PARTITION_COLUMN),
                    )
                )
                return
            for col in decl.columns:
                expected = _INFO_SCHEMA_TYPES[col.logical.postgres]
                if col.name not in existing:
                    cur.execute(
                        sql.SQL("ALTER TABLE {} ADD COLUMN {} {}").format(
                            self.table(target), sql.Identifier(col.name), sql.SQL(col.logical.postgres)
                        )
                    )
                elif existing[col.name] != expected:
                    old = _LOGICAL_OF_INFO_SCHEMA.get(existing[col.name], existing[col.name])
                    raise type_change_refused(target.asset, col.name, old, col.type, f"table {self.store(target)}")
            self._refuse_a_key_change(cur, target)

    def _refuse_a_key_change(self, cur: psycopg.Cursor, target: AssetTarget) -> None:
        """The table's primary key must be the declared one: rows the new key allows would fail as a raw
        `UniqueViolation`. A changed key is refused, with the statement that migrates the table."""
        cur.execute(
            """SELECT c.conname, array_agg(a.attname::text ORDER BY k.ord)
               FROM pg_constraint c CROSS JOIN LATERAL unnest(c.conkey) WITH ORDINALITY AS k(attnum, ord)
               JOIN pg_attribute a ON a.attrelid = c.conrelid AND a.attnum = k.attnum
               WHERE c.conrelid = to_regclass(%s) AND c.contype = 'p' GROUP BY c.conname""",
            (self.table(target).as_string(cur),),
        )
        row = cur.fetchone()
        declared = list(target.decl.partition_key)
        if row is None or set(row[1]) == set(declared):
            return
        name, old = row
        migrate = sql.SQL("ALTER TABLE {} DROP CONSTRAINT {}, ADD PRIMARY KEY ({})").format(
            self.table(target), sql.Identifier(name), sql.SQL(", ").join(sql.Identifier(k) for k in declared)
        ).as_string(cur)
        raise SchemaError(
            f"asset {target.asset!r}: key changed from ({', '.join(old)}) to ({', '.join(declared)}); table "
            f"{self.store(target)} has primary key ({', '.join(old)}). Keys are never changed implicitly: declare "
            f"the old key again, or migrate the table once ({migrate}; it fails if published rows repeat the new key)"
        )

    def _refuse_a_taken_name(self, cur: psycopg.Cursor, target: AssetTarget) -> None:
        """The asset's table name must be its own: not cut short by PostgreSQL, not a day partition of another
        asset's table (as older versions named them), not another relation's index. Nothing is written otherwise."""
        if len(target.name.encode()) > 63:
            raise SchemaError(
                f"asset {target.asset!r}: its name is {len(target.name.encode())} bytes and PostgreSQL cuts table names "
                "at 63, so two such assets would share a table; nothing was written. Give the asset a shorter name"
            )
        cur.execute(
            """SELECT c.relkind, i.inhparent::regclass::text, p.relname, pg_get_expr(c.relpartbound, c.oid),
                      x.indrelid::regclass::text
               FROM pg_class c LEFT JOIN pg_inherits i ON i.inhrelid = c.oid LEFT JOIN pg_class p ON p.oid = i.inhparent
               LEFT JOIN pg_index x ON x.indexrelid = c.oid WHERE c.oid = to_regclass(%s)""",
            (self.table(target).as_string(cur),),
        )
        row = cur.fetchone()
        if row is None:
            return
        kind, parent, parent_name, bound, indexed = row
        if parent:  # e.g. asset `orders_p20260105` and the old-named day partition of asset `orders`
            day = re.fullmatch(r"FOR VALUES IN \('(\d{4})-(\d{2})-(\d{2})'\)", bound or "")
            way_out = (
                f"rename that partition (ALTER TABLE {self.table(target).as_string(cur)} RENAME TO "
                f"{sql.Identifier(f'{self._base(parent_name)}$p{day[1]}{day[2]}{day[3]}').as_string(cur)}: "
                "the platform finds day partitions by their bound, not their name), "
                if day else ""
            )
            raise SchemaError(
                f"asset {target.asset!r}: its table {self.store(target)} is a day partition ({bound}) of {parent}, "
                "another asset's table (older versions named day partitions `<asset>_p<yyyymmdd>`); nothing was "
                f"written. Either {way_out}or give this asset a key prefix, or rename it"
            )
        if kind not in ("r", "p"):
            what = f"the index {self.store(target)} of {indexed}" if indexed else f"relation {self.store(target)} (kind {kind})"
            raise SchemaError(
                f"asset {target.asset!r}: its table name is taken by {what}; nothing was written. Rename that "
                "relation (older versions named a table's key `<table>_pkey`), or give this asset a key prefix"
            )

    def concurrent_transactions(self, target: AssetTarget, days: Sequence[str]) -> int:
        """IDEM_PG_PARALLEL_TRANSACTIONS when none of the range's transactions runs DDL on the table while it
        writes: the table is prepared (created or evolved) here, once; no day is swapped; and each transaction's
        new days get their empty partitions before it, in a short transaction of their own (`create_partitions`).
        Else 1: an ATTACH, or a swap's DROP, inside a transaction would queue the others behind its whole write
        (up to IDEM_PG_LOCK_WAIT_S)."""
        if self.parallel_transactions < 2 or self.swap_min_rows is not None:
            return 1
        with self.postgres.connect() as conn:
            self.prepare(conn, target)
            conn.commit()
            if not self.partitioned(conn, target):
                return 1
        return self.parallel_transactions

    def create_partitions(self, conn: psycopg.Connection, target: AssetTarget, days: Sequence[str]) -> None:
        """An empty partition for each of `days` that has none, committed before the days' write (a first load of
        a range: a backfill). Under the days' partition locks, so that no other writer of those days is between
        its lookup and its own ATTACH; then the ATTACHes wait at most IDEM_PG_LOCK_WAIT_S for the table's SHARE
        UPDATE EXCLUSIVE lock, which the range's other transactions do not hold while they write (they only ATTACH
        here, each in its own short transaction): while one transaction writes its days, the next makes its
        partitions. Readers see no change (a day with no partition and a day with an empty one both have no rows);
        a refused audit leaves the empty partitions, as harmless."""
        with conn.cursor() as cur:
            missing = sorted(set(days) - set(self._day_partitions(cur, target, days)))
        if missing:
            lock_partitions(conn, target.asset, missing)
            conn.execute("SELECT set_config('lock_timeout', %s, true)",
                         (f"{int(settings.current().pg_lock_wait_s * 1000)}ms",))
            with conn.cursor() as cur:
                self._ensure_day_partitions(cur, target, missing)  # looks again, under the locks
        conn.commit()

    def partitioned(self, conn: psycopg.Connection, target: AssetTarget) -> bool:
        row = conn.execute(
            "SELECT c.relkind FROM pg_class c WHERE c.oid = to_regclass(%s)",
            (self.table(target).as_string(conn),),
        ).fetchone()
        return row is not None and row[0] == "p"

    # -- the four verbs ------------------------------------------------------------------------------------

    def stage(self, conn, target, days, frame, run_id) -> StagedDays:
        names = sql.SQL(", ").join(sql.Identifier(n) for n in target.decl.names)
        copy_into = lambda table: sql.SQL("COPY {} ({}) FROM STDIN (FORMAT csv)").format(table, names)  # noqa: E731
        staged = StagedDays()
        with conn.cursor() as cur:
            if not self.partitioned(conn, target):  # a plain table made before partitioning: DELETE + COPY
                self._delete_days(cur, target, days)
                copy_frame(cur, copy_into(self.table(target)), frame, target.asset)
                staged.in_place = list(days)
                return staged
            rows = _day_rows(frame, days)
            count = lambda day: len(frame) if rows[day] is None else len(rows[day])  # noqa: E731
            # One way per transaction: in place takes locks on the parent from the stage on, while a swap must
            # hold none until its publish asks for the exclusive one; a transaction doing both could deadlock
            # with another doing both. So a batch with any large day swaps all its days.
            swap_all = self.swap_min_rows is not None and any(count(d) >= self.swap_min_rows for d in days)
            staged.in_place = [] if swap_all else list(days)
            if staged.in_place:
                partitions = self._ensure_day_partitions(cur, target, staged.in_place)
                self._delete_days(cur, target, staged.in_place)
                # Each day's rows straight into its partition: routing 365 days' rows through the parent cost
                # the server ~2x the COPY itself. The days' partition locks keep other writers from swapping
                # these partitions; one detached by hand since the lookup is refused here (from the DELETE on,
                # its lock on the parent keeps a plain DETACH out), one detached CONCURRENTLY by `verify_staged`.
                self._refuse_detached(conn, target, {d: partitions[d] for d in staged.in_place})
                with_rows = [d for d in staged.in_place if count(d)]
                copied = copy_parts(
                    cur, [copy_into(partitions[d]) for d in with_rows],
                    _rows_of(frame, [rows[d] for d in with_rows]), [count(d) for d in with_rows], target.asset,
                )
                staged.copied = {d: (partitions[d], 0) for d in staged.in_place}
                staged.copied.update({d: (partitions[d], n) for d, n in zip(with_rows, copied, strict=True)})
            columns = self._column_definitions(cur, target) if swap_all else None
            for day in (d for d in days if swap_all):
                stage = self.stage_name(target, day, run_id)
                self._create_day_table(cur, target, day, stage, columns)
                day_frame = frame if rows[day] is None else frame.take(rows[day])
                copied = copy_frame(cur, copy_into(sql.Identifier(self.schema_of(target), stage)), day_frame, target.asset)
                self._add_day_constraints(cur, target, day, stage)
                staged.swapped[day] = (stage, copied)
        return staged

    def transaction_version(self, conn: psycopg.Connection) -> str | None:
        """`xid:<n>`: the publishing transaction's id, which every row it writes carries as `xmin`."""
        return f"{XID_VERSION}{conn.execute('SELECT pg_current_xact_id()').fetchone()[0]}"

    def untouched_since_publish(self, target: AssetTarget, published: dict[str, LedgerEntry]) -> set[str]:
        """The days whose rows are all, and only, the ones their publishing transaction wrote: as many rows as the
        ledger recorded and every row's `xmin` that transaction's id (an UPDATE or INSERT by anyone else makes
        rows with another `xmin`, a DELETE lowers the count). One server-side scan of the days, instead of
        reading them back and hashing them. Freezing keeps `xmin` (PostgreSQL >= 9.4); a table rewritten by
        other means (dump and restore, pg_repack) gives new ids, so its days are read back once, as before.
        Reads the committed rows, on its own connection (the writer's transaction is busy staging)."""
        days = [d for d, e in published.items() if e.version and e.version.startswith(XID_VERSION)]
        if not days:
            return set()
        xids = [str(int(published[d].version[len(XID_VERSION):]) % 2**32) for d in days]  # xmin is 32 bits
        with self.postgres.connect(autocommit=True) as conn:
            rows = conn.execute(
                sql.SQL(
                    """SELECT v.day::text, count(t.{p}), count(t.{p}) FILTER (WHERE t.xmin::text <> v.xid)
                       FROM unnest(%s::date[], %s::text[]) AS v(day, xid) LEFT JOIN {t} t ON t.{p} = v.day
                       GROUP BY v.day"""
                ).format(p=sql.Identifier(PARTITION_COLUMN), t=self.table(target)),
                (days, xids),
            ).fetchall()
        return {day for day, count, foreign in rows if foreign == 0 and count == published[day].row_count}

    def verify_staged(self, conn, target, staged: StagedDays, digests: dict[str, PartitionDigest]) -> None:
        counts = {day: copied for day, (_, copied) in staged.swapped.items()}  # this transaction made those tables
        if staged.copied:
            self._refuse_detached(conn, target, {day: partition for day, (partition, _) in staged.copied.items()})
            counts.update({day: copied for day, (_, copied) in staged.copied.items()})
        if counted := [d for d in staged.in_place if d not in staged.copied]:  # a plain table: count the rows
            with conn.cursor() as cur:
                cur.execute(
                    sql.SQL("SELECT {p}::text, count(*) FROM {t} WHERE {p} = ANY(%s::date[]) GROUP BY 1").format(
                        p=sql.Identifier(PARTITION_COLUMN), t=self.table(target)
                    ),
                    (counted,),
                )
                found = dict(cur.fetchall())
            counts.update({day: found.get(day, 0) for day in counted})
        wrong = {d: (counts[d], digests[d].rows) for d in counts if counts[d] != digests[d].rows}
        if wrong:
            raise StagingMismatch(
                f"asset {target.asset!r}: staged row counts (table, frame) differ: {wrong}; nothing was published"
            )

    def _refuse_detached(self, conn: psycopg.Connection, target: AssetTarget, partitions: dict[str, sql.Identifier]) -> None:
        """The partitions the days were COPYed into are still partitions of the asset's table, none being detached
        (`DETACH ... CONCURRENTLY` marks it pending first). The COPY's own row counts are then the days' rows: the
        DELETE through the parent removed every older row of the days, the COPY added these, and from the DELETE
        on, this transaction's locks keep a plain DETACH out until COMMIT. Counting the days back instead read
        every new and deleted row of them again (0.8 s for a 1M-row day). Rows another session adds to these days
        in the meantime are drift: the next rerun's proof (`untouched_since_publish`) sees them and rewrites."""
        pending = "AND NOT i.inhdetachpending" if conn.info.server_version >= 140000 else ""
        with conn.cursor() as cur:
            cur.execute(
                f"""SELECT d.day FROM unnest(%s::text[], %s::text[]) AS d(day, partition)
                    JOIN pg_inherits i ON i.inhrelid = to_regclass(d.partition) AND i.inhparent = to_regclass(%s)
                    {pending}""",
                (list(partitions), [p.as_string(cur) for p in partitions.values()], self.table(target).as_string(cur)),
            )
            attached = {day for (day,) in cur.fetchall()}
        if detached := sorted(set(partitions) - attached):
            raise StagingMismatch(
                f"asset {target.asset!r}, partition {', '.join(detached)}: the day's partition of table "
                f"{self.store(target)} was detached by another session during the write; nothing was published, "
                f"rerun the partition"
            )

    def publish(self, conn, target, staged: StagedDays) -> None:
        """Swap the staged days in; the COMMIT of the caller's transaction publishes them with the rest."""
        if not staged.swapped:
            return
        deadline = time.monotonic() + self.swap_wait_s
        previous = conn.execute("SHOW lock_timeout").fetchone()[0]
        attempt = 0
        while True:
            try:
                with conn.transaction():  # a savepoint: a lock timeout undoes this attempt only
                    conn.execute("SELECT set_config('lock_timeout', %s, true)", (f"{self.lock_timeout_ms}ms",))
                    with conn.cursor() as cur:
                        self._swap_days(cur, target, {day: stage for day, (stage, _) in staged.swapped.items()})
                break
            except psycopg.errors.LockNotAvailable:
                attempt += 1
                if time.monotonic() >= deadline:
                    raise SwapLockTimeout(
                        f"asset {target.asset!r}, partition {', '.join(staged.swapped)}: could not lock table "
                        f"{self.store(target)} to swap the new partition in within {self.swap_wait_s:g} s "
                        f"({attempt} attempts of {self.lock_timeout_ms} ms): long-running transactions hold it "
                        f"(see pg_locks / pg_stat_activity); nothing was published, rerun the partition "
                        f"(or raise {SWAP_WAIT_ENV})"
                    ) from None
                time.sleep(min(0.05 * attempt, 1.0))
        conn.execute("SELECT set_config('lock_timeout', %s, true)", (previous,))

    def discard(self, target, staged) -> None:
        """The rollback of the caller's transaction drops the staging tables and the in-place rows."""

    def read(self, target: AssetTarget, days: Sequence[str]) -> pd.DataFrame:
        """The rows of `days`, read as Arrow columns (ADBC: binary COPY, typed), never as Python records: a bigint
        with NULLs stays an exact Int64 (not float64), and a year's rows load at columnar speed."""
        decl = target.decl
        query = sql.SQL("SELECT {} FROM {} WHERE {} = ANY({}::date[]) ORDER BY {}").format(
            sql.SQL(", ").join(sql.Identifier(n) for n in decl.names),
            self.table(target),
            sql.Identifier(PARTITION_COLUMN),
            sql.Literal(list(days)),
            sql.SQL(", ").join(sql.Identifier(k) for k in decl.partition_key),
        )
        with self.postgres.connect_arrow() as conn, conn.cursor() as cur:
            cur.execute(query.as_string())
            table = cur.fetch_arrow_table()
        frame = table.to_pandas(types_mapper=_arrow_dtypes().get, date_as_object=False)
        return decl.coerce(frame, what=f"table {self.store(target)}")

    # -- statements ----------------------------------------------------------------------------------------

    def _delete_days(self, cur: psycopg.Cursor, target: AssetTarget, days: Sequence[str]) -> None:
        cur.execute(
            sql.SQL("DELETE FROM {} WHERE {} = ANY(%s::date[])").format(self.table(target), sql.Identifier(PARTITION_COLUMN)),
            (list(days),),
        )

    def _column_definitions(self, cur: psycopg.Cursor, target: AssetTarget) -> sql.Composable:
        """The asset table's columns (names, types, NOT NULL, defaults) as a CREATE TABLE column list, read from
        the catalog: `CREATE TABLE ... (LIKE parent)` would hold a lock on the parent until COMMIT, and two
        writers of different days holding it while both wait for the swap's exclusive lock deadlock. Reading
        pg_attribute locks nothing. Read once per stage, however many day tables it makes."""
        cur.execute(
            """SELECT a.attname, format_type(a.atttypid, a.atttypmod), a.attnotnull, pg_get_expr(d.adbin, d.adrelid)
               FROM pg_attribute a LEFT JOIN pg_attrdef d ON d.adrelid = a.attrelid AND d.adnum = a.attnum
               WHERE a.attrelid = to_regclass(%s) AND a.attnum > 0 AND NOT a.attisdropped ORDER BY a.attnum""",
            (self.table(target).as_string(cur),),
        )
        return sql.SQL(", ").join(
            sql.SQL("{} {}{}{}").format(
                sql.Identifier(col), sql.SQL(type_), sql.SQL(" NOT NULL" if not_null else ""),
                sql.SQL(f" DEFAULT {default}") if default else sql.SQL(""),
            )
            for col, type_, not_null, default in cur.fetchall()
        )

    def _create_day_table(self, cur: psycopg.Cursor, target: AssetTarget, day: str, name: str,
                          columns: sql.Composable | None = None) -> None:
        """A table shaped like the asset's (`_column_definitions`, read here unless given)."""
        columns = columns if columns is not None else self._column_definitions(cur, target)
        cur.execute(self._create_day_table_sql(target, name, columns))

    def _create_day_table_sql(self, target: AssetTarget, name: str, columns: sql.Composable) -> sql.Composable:
        return sql.SQL("CREATE TABLE {} ({})").format(sql.Identifier(self.schema_of(target), name), columns)

    def _add_day_constraints(self, cur: psycopg.Cursor, target: AssetTarget, day: str, name: str) -> None:
        """The key (built in one sort over the loaded rows) and the bound that lets ATTACH skip its scan."""
        cur.execute(self._day_constraints_sql(target, day, name))

    def _day_constraints_sql(self, target: AssetTarget, day: str, name: str) -> sql.Composable:
        return sql.SQL("ALTER TABLE {} ADD CONSTRAINT {} PRIMARY KEY ({}), ADD CONSTRAINT idem_day CHECK ({} = {}::date)").format(
            sql.Identifier(self.schema_of(target), name),
            sql.Identifier(self.key_name(name)),
            sql.SQL(", ").join(sql.Identifier(k) for k in target.decl.partition_key),
            sql.Identifier(PARTITION_COLUMN),
            sql.Literal(day),
        )

    def _day_partitions(self, cur: psycopg.Cursor, target: AssetTarget, days: Sequence[str]) -> dict[str, sql.Identifier]:
        """The partition of each day that has one: a partition of the asset's table (`pg_inherits`) whose bound is
        exactly that day, whatever its name. The names the sink gives (now and before) are looked at first: a day
        already published costs a few catalog rows, however long the history. Only for days not found so (a new
        day, a partition renamed by hand) is every partition's bound read (about 15 ms for 1,000 days, once per
        transaction). Reads the catalog only: no lock on the table (a swap must hold none before its publish)."""
        parent = self.table(target).as_string(cur)
        bound_is_day = "pg_get_expr(c.relpartbound, c.oid) = format('FOR VALUES IN (%%L)', d.day::date)"
        hints = [(d, n) for d in days for n in (self.day_partition(target, d), self._legacy_day_partition(target, d))]
        cur.execute(
            f"""SELECT d.day, n.nspname, c.relname
                FROM unnest(%s::text[], %s::text[]) AS d(day, name)
                JOIN pg_namespace n ON n.nspname = %s
                JOIN pg_class c ON c.relnamespace = n.oid AND c.relname = d.name
                JOIN pg_inherits i ON i.inhrelid = c.oid AND i.inhparent = to_regclass(%s)
                WHERE {bound_is_day}""",
            ([d for d, _ in hints], [n for _, n in hints], self.schema_of(target), parent),
        )
        found = {day: sql.Identifier(schema, name) for day, schema, name in cur.fetchall()}
        if missing := [d for d in days if d not in found]:
            cur.execute(
                f"""WITH c AS MATERIALIZED (
                        SELECT c.oid, c.relname, c.relnamespace, c.relpartbound FROM pg_inherits i
                        JOIN pg_class c ON c.oid = i.inhrelid WHERE i.inhparent = to_regclass(%s))
                    SELECT d.day, n.nspname, c.relname FROM unnest(%s::text[]) AS d(day)
                    JOIN c ON {bound_is_day} JOIN pg_namespace n ON n.oid = c.relnamespace""",
                (parent, missing),
            )
            found.update({day: sql.Identifier(schema, name) for day, schema, name in cur.fetchall()})
        return found

    def _ensure_day_partitions(self, cur: psycopg.Cursor, target: AssetTarget, days: Sequence[str]) -> dict[str, sql.Identifier]:
        """Give every day that has none an empty partition (ATTACH takes SHARE UPDATE EXCLUSIVE: readers go on);
        each day's partition. The new partitions' statements (CREATE, key and bound, ATTACH: three per day) go to
        the server as one string, in one round trip (`benchmarks/profile_first_load.py`: 365 new days 0.5-0.9x
        the time of one statement at a time)."""
        partitions = self._day_partitions(cur, target, days)
        missing = [d for d in days if d not in partitions]
        if not missing:
            return partitions
        columns = self._column_definitions(cur, target)
        statements = []
        for day in missing:
            name = self.day_partition(target, day)
            statements += [self._create_day_table_sql(target, name, columns), self._day_constraints_sql(target, day, name),
                           self._attach_sql(target, day, name)]
            partitions[day] = sql.Identifier(self.schema_of(target), name)
        cur.execute(sql.SQL("; ").join(statements))  # no parameters: psycopg sends it as one simple query
        return partitions

    def _attach(self, cur: psycopg.Cursor, target: AssetTarget, day: str, name: str) -> None:
        cur.execute(self._attach_sql(target, day, name))

    def _attach_sql(self, target: AssetTarget, day: str, name: str) -> sql.Composable:
        return sql.SQL("ALTER TABLE {} ATTACH PARTITION {} FOR VALUES IN ({})").format(
            self.table(target), sql.Identifier(self.schema_of(target), name), sql.Literal(day)
        )

    def _swap_days(self, cur: psycopg.Cursor, target: AssetTarget, stages: dict[str, str]) -> None:
        """Each day's staged table becomes its partition: DROP the day's partition (found by `_day_partitions`, so
        only a partition of this asset's table, old name or new), ATTACH the staged table, give it the day's name."""
        published = self._day_partitions(cur, target, list(stages))
        schema = self.schema_of(target)
        for day, stage in stages.items():
            if day in published:
                cur.execute(sql.SQL("DROP TABLE {}").format(published[day]))
            self._attach(cur, target, day, stage)
            name = self.day_partition(target, day)
            cur.execute(sql.SQL("ALTER TABLE {} RENAME TO {}").format(sql.Identifier(schema, stage), sql.Identifier(name)))
            cur.execute(
                sql.SQL("ALTER INDEX {} RENAME TO {}").format(
                    sql.Identifier(schema, self.key_name(stage)), sql.Identifier(self.key_name(name))
                )
            )


class PostgresPartitionIOManager(PartitionIOManager):
    """Daily partitions of an asset as rows of `<schema>.<asset>` (schema default: IDEM_PG_SCHEMA or `warehouse`)."""

    enforces_key: ClassVar[bool] = True  # one row per key by construction: no `unique_key` check

    db_schema: str = ""

    def sink(self) -> PostgresTableSink:
        return PostgresTableSink(self.postgres, self.db_schema or settings.current().pg_schema)

    def containers_of(self, targets: Sequence[AssetTarget]) -> list[str | None]:
        sink = self.sink()
        return [f"PostgreSQL table {sink.store(target)}" for target in targets]
