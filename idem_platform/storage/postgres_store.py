"""PostgreSQL table sink: a day partition is replaced by DELETE + COPY inside the locked transaction.

- prepare: `CREATE TABLE IF NOT EXISTS` from the declared columns with `PRIMARY KEY (partition_date, key...)`
  (that index also serves the per-day DELETE, so overwrite cost does not grow with history); a newly declared
  column is added as nullable; a declared type that differs from the table's is an error naming both.
- stage: DELETE the days' rows and COPY the new rows, streamed as CSV in chunks (pyarrow writes them), in the
  transaction that holds the partition lock. Readers keep seeing the old rows (MVCC) until COMMIT.
- verify: per-day row counts as the table now sees them equal the frame's.
- publish: nothing to do: the COMMIT that also writes the ledger rows is the atomic step.
- discard: nothing to do: the rollback drops the stage.

Every identifier goes through `psycopg.sql.Identifier`.
"""

from __future__ import annotations

import io
from collections.abc import Iterator, Sequence

import pandas as pd
import psycopg
import pyarrow as pa
import pyarrow.csv as pa_csv
from psycopg import sql

from ..resources import PostgresResource, warehouse_schema
from .faults import fault_point
from .fingerprint import PartitionDigest
from .partition_store import AssetTarget, PartitionIOManager, PartitionSink
from .schema import PARTITION_COLUMN, SchemaError

COPY_CHUNK_ROWS = 100_000

# information_schema.columns.data_type of each declared PostgreSQL type
_INFO_SCHEMA_TYPES = {
    "text": "text",
    "bigint": "bigint",
    "double precision": "double precision",
    "boolean": "boolean",
    "date": "date",
    "timestamptz": "timestamp with time zone",
}


class StagingMismatch(RuntimeError):
    pass


def csv_chunks(frame: pd.DataFrame, chunk_rows: int = COPY_CHUNK_ROWS) -> Iterator[bytes]:
    """The frame as COPY-ready CSV, chunk by chunk: nulls unquoted-empty, empty strings quoted."""
    options = pa_csv.WriteOptions(include_header=False, quoting_style="needed")
    for start in range(0, len(frame), chunk_rows):
        table = pa.Table.from_pandas(frame.iloc[start : start + chunk_rows], preserve_index=False)
        buf = io.BytesIO()
        pa_csv.write_csv(table, buf, options)
        yield buf.getvalue()


class PostgresTableSink(PartitionSink):
    name = "postgres"

    def __init__(self, postgres: PostgresResource, schema: str):
        self.postgres, self.schema = postgres, schema

    def table(self, target: AssetTarget) -> sql.Identifier:
        return sql.Identifier(self.schema, target.asset)

    def location(self, target: AssetTarget, day: str) -> str:
        return f"{self.store(target)}?{PARTITION_COLUMN}={day}"

    def store(self, target: AssetTarget) -> str:
        return f"{self.schema}.{target.asset}"

    def prepare(self, conn: psycopg.Connection, target: AssetTarget) -> None:
        decl = target.decl
        with conn.cursor() as cur:
            cur.execute("SELECT pg_advisory_xact_lock(hashtextextended(%s, 0))", (f"idem:ddl:{self.schema}.{target.asset}",))
            cur.execute(sql.SQL("CREATE SCHEMA IF NOT EXISTS {}").format(sql.Identifier(self.schema)))
            cur.execute(
                "SELECT column_name, data_type FROM information_schema.columns WHERE table_schema = %s AND table_name = %s",
                (self.schema, target.asset),
            )
            existing = dict(cur.fetchall())
            if not existing:
                columns = [
                    sql.SQL("{} {}{}").format(
                        sql.Identifier(c.name), sql.SQL(c.logical.postgres), sql.SQL("" if c.nullable else " NOT NULL")
                    )
                    for c in decl.columns
                ]
                key = sql.SQL(", ").join(sql.Identifier(k) for k in decl.partition_key)
                cur.execute(
                    sql.SQL("CREATE TABLE {} ({}, PRIMARY KEY ({}))").format(
                        self.table(target), sql.SQL(", ").join(columns), key
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
                    raise SchemaError(
                        f"asset {target.asset!r}: column {col.name!r} is {existing[col.name]} in table "
                        f"{self.schema}.{target.asset} but declared {col.type} ({expected}); migrate the table "
                        "or declare a new column: types are never changed implicitly"
                    )

    def stage(self, conn, target, days, frame, run_id):
        names = sql.SQL(", ").join(sql.Identifier(n) for n in target.decl.names)
        with conn.cursor() as cur:
            cur.execute(
                sql.SQL("DELETE FROM {} WHERE {} = ANY(%s::date[])").format(
                    self.table(target), sql.Identifier(PARTITION_COLUMN)
                ),
                (list(days),),
            )
            with cur.copy(sql.SQL("COPY {} ({}) FROM STDIN (FORMAT csv)").format(self.table(target), names)) as copy:
                for chunk in csv_chunks(frame):
                    copy.write(chunk)
                    fault_point(self.name, "mid_stage", target.asset)
        return list(days)

    def verify_staged(self, conn, target, staged, digests: dict[str, PartitionDigest]) -> None:
        with conn.cursor() as cur:
            cur.execute(
                sql.SQL("SELECT {p}::text, count(*) FROM {t} WHERE {p} = ANY(%s::date[]) GROUP BY 1").format(
                    p=sql.Identifier(PARTITION_COLUMN), t=self.table(target)
                ),
                (staged,),
            )
            counts = dict(cur.fetchall())
        wrong = {d: (counts.get(d, 0), digests[d].rows) for d in staged if counts.get(d, 0) != digests[d].rows}
        if wrong:
            raise StagingMismatch(f"asset {target.asset!r}: staged row counts differ from the frame: {wrong}")

    def publish(self, conn, target, staged) -> None:
        """The COMMIT of the caller's transaction publishes."""

    def discard(self, target, staged) -> None:
        """The rollback of the caller's transaction discards."""

    def read(self, target: AssetTarget, days: Sequence[str]) -> pd.DataFrame:
        names = target.decl.names
        query = sql.SQL("SELECT {} FROM {} WHERE {} = ANY(%s::date[]) ORDER BY {}").format(
            sql.SQL(", ").join(sql.Identifier(n) for n in names),
            self.table(target),
            sql.Identifier(PARTITION_COLUMN),
            sql.SQL(", ").join(sql.Identifier(k) for k in target.decl.partition_key),
        )
        with self.postgres.connect() as conn, conn.cursor() as cur:
            cur.execute(query, (list(days),))
            rows = cur.fetchall()
        return target.decl.coerce(pd.DataFrame.from_records(rows, columns=names), what=f"table {self.schema}.{target.asset}")


class PostgresPartitionIOManager(PartitionIOManager):
    """Daily partitions of an asset as rows of `<schema>.<asset>` (schema default: IDEM_PG_SCHEMA or `warehouse`)."""

    db_schema: str = ""

    def sink(self) -> PostgresTableSink:
        return PostgresTableSink(self.postgres, self.db_schema or warehouse_schema())
