"""PROTOTYPE, benchmarks only (not the platform): the PostgreSQL sink as "stage a table, swap the partition".

Measured beside the platform by `bench_pg_overwrite.py --prototype`, `bench_pg_history.py --prototype` and
`bench_memory.py --prototype` to size the change recommended in docs/benchmarks.md. Nothing in idem_platform
imports it.

Why: the platform's overwrite is `DELETE` the day + `COPY` into the table that carries the primary key. On a
1M-row day that costs the server ~2.5x a plain COPY: the DELETE, one B-tree insertion per row, and for every
row a uniqueness check that meets the deleted row of the same key and must visit the heap to see it is dead.
A fresh, unindexed staging table takes the COPY at plain speed, the key index is then built in one sort, and
the old day leaves by `DROP TABLE` instead of row by row.

    prepare  the asset's table is `PARTITION BY LIST (partition_date)` with the same columns and primary key
    stage    per day: CREATE TABLE <asset>_p<yyyymmdd>_<run> (LIKE <asset>) in the locked transaction, COPY the
             day's rows (CSV encoded by a producer thread while the server parses the previous chunk),
             ADD PRIMARY KEY, ADD CHECK (partition_date = day) so ATTACH needs no validation scan
    verify   the COPY's row count per day: the staging table was created in this transaction, nobody else can
             see or write it, so the count COPY reports is the table's count
    publish  per day: DETACH + DROP the old day partition (`<asset>_p<yyyymmdd>`: one fixed name per day, found
             with to_regclass, never by listing the partitions), ATTACH the staged one and RENAME it to that
             name; the COMMIT that writes the ledger rows makes it visible. DETACH takes ACCESS EXCLUSIVE on
             the parent for the few milliseconds between it and the COMMIT; set `lock_timeout` and retry so a
             long-running reader delays the swap instead of queueing every new reader behind it.
    discard  the rollback drops the staging tables

`proto_lean_write.publish_partitions_proto(..., overlap=True)` adds the other half: the frame's digests and
audit run in a thread while these rows are staged.
"""

from __future__ import annotations

import queue
import re
import threading

import pandas as pd
import psycopg
from psycopg import sql

from idem_platform.storage.partition_store import AssetTarget
from idem_platform.storage.postgres_store import PostgresTableSink, StagingMismatch, csv_chunks
from idem_platform.storage.schema import PARTITION_COLUMN

PIPELINE_CHUNKS = 2  # encoded chunks waiting for the connection: bounds the extra memory to ~3 chunks
PIPELINE_CHUNK_ROWS = 32_768  # ~5 MB of CSV per chunk for the 10-column frame: small enough to keep 3 in flight


def copy_pipelined(cur: psycopg.Cursor, statement: sql.Composable, frame: pd.DataFrame) -> int:
    """COPY the frame as CSV: a producer thread encodes chunk n+1 while the server parses chunk n.
    Returns the row count the server reports."""
    chunks: queue.Queue = queue.Queue(maxsize=PIPELINE_CHUNKS)
    stop = threading.Event()

    def produce() -> None:
        try:
            for chunk in csv_chunks(frame, PIPELINE_CHUNK_ROWS):
                while not stop.is_set():
                    try:
                        chunks.put(chunk, timeout=0.1)
                        break
                    except queue.Full:
                        continue
                if stop.is_set():
                    return
            chunks.put(None)
        except BaseException as exc:  # handed to the writer, which raises it
            chunks.put(exc)

    producer = threading.Thread(target=produce, name="idem-csv-encoder", daemon=True)
    producer.start()
    try:
        with cur.copy(statement) as copy:
            while (item := chunks.get()) is not None:
                if isinstance(item, BaseException):
                    raise item
                copy.write(item)
    finally:
        stop.set()
        producer.join()
    return cur.rowcount


class SwapPostgresTableSink(PostgresTableSink):
    """A day partition is a table of its own, replaced by stage + swap (see the module docstring)."""

    def prepare(self, conn: psycopg.Connection, target: AssetTarget) -> None:
        with conn.cursor() as cur:
            cur.execute("SELECT pg_advisory_xact_lock(hashtextextended(%s, 0))", (f"idem:ddl:{self.schema}.{target.asset}",))
            cur.execute(sql.SQL("CREATE SCHEMA IF NOT EXISTS {}").format(sql.Identifier(self.schema)))
            cur.execute("SELECT to_regclass(%s) IS NULL", (f'"{self.schema}"."{target.asset}"',))
            if cur.fetchone()[0]:
                decl = target.decl
                columns = [
                    sql.SQL("{} {}{}").format(
                        sql.Identifier(c.name), sql.SQL(c.logical.postgres), sql.SQL("" if c.nullable else " NOT NULL")
                    )
                    for c in decl.columns
                ]
                cur.execute(
                    sql.SQL("CREATE TABLE {} ({}, PRIMARY KEY ({})) PARTITION BY LIST ({})").format(
                        self.table(target),
                        sql.SQL(", ").join(columns),
                        sql.SQL(", ").join(sql.Identifier(k) for k in decl.partition_key),
                        sql.Identifier(PARTITION_COLUMN),
                    )
                )
        super().prepare(conn, target)  # the table exists now: only the column checks and additions run

    def stage_name(self, target: AssetTarget, day: str, run_id: str) -> str:
        run = re.sub(r"[^a-z0-9]", "", run_id.lower())[:8] or "run"
        return f"{target.asset[:40]}_p{day.replace('-', '')}_{run}"

    def stage(self, conn, target, days, frame, run_id) -> dict[str, tuple[str, int]]:
        names = sql.SQL(", ").join(sql.Identifier(n) for n in target.decl.names)
        key = sql.SQL(", ").join(sql.Identifier(k) for k in target.decl.partition_key)
        if len(days) == 1:
            rows_of = {days[0]: frame}
        else:
            positions = frame.groupby(frame[PARTITION_COLUMN].dt.strftime("%Y-%m-%d"), sort=False).indices
            rows_of = {day: frame.take(positions[day]) if day in positions else frame.iloc[:0] for day in days}
        staged: dict[str, tuple[str, int]] = {}
        with conn.cursor() as cur:
            for day in days:
                stage = sql.Identifier(self.schema, self.stage_name(target, day, run_id))
                cur.execute(sql.SQL("CREATE TABLE {} (LIKE {} INCLUDING DEFAULTS)").format(stage, self.table(target)))
                copied = copy_pipelined(cur, sql.SQL("COPY {} ({}) FROM STDIN (FORMAT csv)").format(stage, names), rows_of[day])
                cur.execute(
                    sql.SQL("ALTER TABLE {} ADD PRIMARY KEY ({}), ADD CHECK ({} = {}::date)").format(
                        stage, key, sql.Identifier(PARTITION_COLUMN), sql.Literal(day)
                    )
                )
                staged[day] = (self.stage_name(target, day, run_id), copied)
        return staged

    def verify_staged(self, conn, target, staged, digests) -> None:
        wrong = {day: (copied, digests[day].rows) for day, (_, copied) in staged.items() if copied != digests[day].rows}
        if wrong:
            raise StagingMismatch(f"asset {target.asset!r}: staged row counts differ from the frame: {wrong}")

    def day_partition(self, target: AssetTarget, day: str) -> str:
        """The published table of a day: one fixed name per day, so finding it never lists the partitions."""
        return f"{target.asset[:40]}_p{day.replace('-', '')}"

    def publish(self, conn, target, staged) -> None:
        with conn.cursor() as cur:
            for day, (stage, _) in staged.items():
                published = sql.Identifier(self.schema, self.day_partition(target, day))
                cur.execute("SELECT to_regclass(%s) IS NOT NULL", (f'"{self.schema}"."{self.day_partition(target, day)}"',))
                if cur.fetchone()[0]:
                    cur.execute(sql.SQL("ALTER TABLE {} DETACH PARTITION {}").format(self.table(target), published))
                    cur.execute(sql.SQL("DROP TABLE {}").format(published))
                cur.execute(
                    sql.SQL("ALTER TABLE {} ATTACH PARTITION {} FOR VALUES IN ({})").format(
                        self.table(target), sql.Identifier(self.schema, stage), sql.Literal(day)
                    )
                )
                cur.execute(sql.SQL("ALTER TABLE {} RENAME TO {}").format(
                    sql.Identifier(self.schema, stage), sql.Identifier(self.day_partition(target, day))))


class PipelinedPostgresTableSink(PostgresTableSink):
    """The platform's DELETE + COPY sink with only the COPY pipelined (no change to the table layout)."""

    def stage(self, conn, target, days, frame, run_id):
        names = sql.SQL(", ").join(sql.Identifier(n) for n in target.decl.names)
        with conn.cursor() as cur:
            cur.execute(
                sql.SQL("DELETE FROM {} WHERE {} = ANY(%s::date[])").format(self.table(target), sql.Identifier(PARTITION_COLUMN)),
                (list(days),),
            )
            copy_pipelined(cur, sql.SQL("COPY {} ({}) FROM STDIN (FORMAT csv)").format(self.table(target), names), frame)
        return list(days)
