"""Where a 1M-row PostgreSQL overwrite spends its time: client steps of the platform, and server-side variants.

    .venv/bin/python benchmarks/profile_pg_overwrite.py [--rows 1000000] [--repeat 3]

Diagnostic, not part of `make bench`. Two parts, medians of --repeat overwrites:

1. The platform's `publish_partitions` (PostgresPartitionIOManager's sink), timed step by step from outside
   (wrappers around the platform's functions and psycopg's `Cursor.execute`; nothing in idem_platform is
   changed): coerce + digests, audit, DELETE, CSV encoding (time inside `csv_chunks`), the rest of the COPY
   (waiting for the server), the verify count, ledger and commit.
2. The server's share alone: the same CSV bytes, encoded once beforehand, COPYed into
   a plain table / an empty table with the primary key / the platform's table after DELETE (the platform's
   overwrite) / the same with a non-unique index / a fresh staging table + ADD PRIMARY KEY + CHECK, then
   swapped into a LIST-partitioned table (the prototype in proto_postgres_swap.py).
"""

from __future__ import annotations

import argparse
import statistics
import sys
import time
import uuid
from collections import defaultdict
from pathlib import Path

import psycopg
from psycopg import sql

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from benchmarks.common import MIXED, fresh_database, load_average, machine, mixed_frame, plain_columns_sql  # noqa: E402
from idem_platform.resources import PostgresResource  # noqa: E402
from idem_platform.storage import partition_store, postgres_store  # noqa: E402
from idem_platform.storage.audit import AuditRules  # noqa: E402
from idem_platform.storage.partition_store import AssetTarget, publish_partitions  # noqa: E402
from idem_platform.storage.postgres_store import PostgresPartitionIOManager, PostgresTableSink  # noqa: E402

DAY = "2026-01-05"
SCHEMA = "bench"
STEPS: dict[str, float] = defaultdict(float)


def timed(name: str, fn):
    def wrapper(*args, **kwargs):
        start = time.perf_counter()
        try:
            return fn(*args, **kwargs)
        finally:
            STEPS[name] += time.perf_counter() - start
    return wrapper


def instrument() -> None:
    partition_store.digests_of = timed("coerce + fingerprint (digests_of)", partition_store.digests_of)
    partition_store.audit_frame = timed("audit_frame", partition_store.audit_frame)
    PostgresTableSink.stage = timed("stage (DELETE + COPY)", PostgresTableSink.stage)
    PostgresTableSink.verify_staged = timed("verify_staged (count per day)", PostgresTableSink.verify_staged)
    original_chunks = postgres_store.csv_chunks

    def csv_chunks(*args, **kwargs):
        chunks = original_chunks(*args, **kwargs)
        while True:
            start = time.perf_counter()
            try:
                chunk = next(chunks)
            except StopIteration:
                return
            finally:
                STEPS["  CSV encoding (client)"] += time.perf_counter() - start
            yield chunk

    postgres_store.csv_chunks = csv_chunks
    original_execute = psycopg.Cursor.execute

    def execute(self, query, *args, **kwargs):
        text = query.as_string(self.connection) if isinstance(query, sql.Composable) else str(query)
        if text.lstrip().upper().startswith("DELETE"):
            return timed("  DELETE of the day", original_execute)(self, query, *args, **kwargs)
        return original_execute(self, query, *args, **kwargs)

    psycopg.Cursor.execute = execute


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rows", type=int, default=1_000_000)
    parser.add_argument("--repeat", type=int, default=3)
    args = parser.parse_args()
    print(f"{machine()}; {load_average()}", flush=True)
    frame = mixed_frame(args.rows, DAY)

    with fresh_database() as dsn:
        postgres = PostgresResource(dsn=dsn)
        sink = PostgresPartitionIOManager(postgres=postgres, db_schema=SCHEMA).sink()
        target = AssetTarget("mixed", MIXED, AuditRules())
        publish_partitions(sink, postgres, target, [DAY], frame, "setup")
        instrument()
        runs: dict[str, list[float]] = defaultdict(list)
        for _ in range(args.repeat):
            STEPS.clear()
            start = time.perf_counter()
            publish_partitions(sink, postgres, target, [DAY], frame, str(uuid.uuid4()))
            total = time.perf_counter() - start
            for name, seconds in STEPS.items():
                runs[name].append(seconds)
            runs["  COPY: waiting for the server"].append(
                STEPS["stage (DELETE + COPY)"] - STEPS["  DELETE of the day"] - STEPS["  CSV encoding (client)"])
            runs["the rest (connect, DDL check, lock, ledger, commit)"].append(
                total - sum(v for k, v in STEPS.items() if not k.startswith("  ")))
            runs["total"].append(total)
        order = ["coerce + fingerprint (digests_of)", "audit_frame", "stage (DELETE + COPY)", "  DELETE of the day",
                 "  CSV encoding (client)", "  COPY: waiting for the server", "verify_staged (count per day)",
                 "the rest (connect, DDL check, lock, ledger, commit)", "total"]
        print(f"\n1. the platform's overwrite of {len(frame):,} rows, step by step (medians of {args.repeat}); {load_average()}\n")
        for name in order:
            print(f"  {name:<55} {statistics.median(runs[name]):7.3f} s")

        chunks = list(postgres_store.csv_chunks(frame))
        columns = plain_columns_sql(MIXED)
        key = sql.SQL("(partition_date, id)")
        server: dict[str, list[float]] = defaultdict(list)
        with psycopg.connect(dsn) as conn:
            def table(name):
                return sql.Identifier(SCHEMA, name)

            def copy_into(name):
                with conn.cursor() as cur, cur.copy(sql.SQL("COPY {} FROM STDIN (FORMAT csv)").format(table(name))) as copy:
                    for chunk in chunks:
                        copy.write(chunk)

            conn.execute(sql.SQL("CREATE TABLE {} ({}, PRIMARY KEY {})").format(table("pk_empty"), columns, key))
            conn.execute(sql.SQL("CREATE TABLE {} ({}, PRIMARY KEY {})").format(table("pk_overwrite"), columns, key))
            conn.execute(sql.SQL("CREATE TABLE {} ({})").format(table("nonunique"), columns))
            conn.execute(sql.SQL("CREATE INDEX ON {} {}").format(table("nonunique"), key))
            conn.execute(sql.SQL("CREATE TABLE {} ({}, PRIMARY KEY {}) PARTITION BY LIST (partition_date)").format(table("parted"), columns, key))
            conn.execute(sql.SQL("CREATE TABLE {} PARTITION OF {} FOR VALUES IN ({})").format(table("parted_day"), table("parted"), sql.Literal(DAY)))
            copy_into("pk_overwrite"), copy_into("nonunique"), copy_into("parted")
            conn.commit()
            for rep in range(args.repeat):
                conn.execute(sql.SQL("DROP TABLE IF EXISTS {}").format(table("plain")))
                conn.execute(sql.SQL("CREATE TABLE {} ({})").format(table("plain"), columns))
                conn.execute(sql.SQL("TRUNCATE {}").format(table("pk_empty")))
                conn.commit()
                start = time.perf_counter()
                copy_into("plain")
                conn.commit()
                server["COPY into a plain table (the raw baseline's server side)"].append(time.perf_counter() - start)
                start = time.perf_counter()
                copy_into("pk_empty")
                conn.commit()
                server["COPY into an empty table with the primary key"].append(time.perf_counter() - start)
                for name, label in (("pk_overwrite", "DELETE + COPY, primary key (the platform's overwrite)"),
                                    ("nonunique", "DELETE + COPY, non-unique index on the same columns")):
                    start = time.perf_counter()
                    conn.execute(sql.SQL("DELETE FROM {} WHERE partition_date = %s").format(table(name)), (DAY,))
                    copy_into(name)
                    conn.commit()
                    server[label].append(time.perf_counter() - start)
                stage = f"parted_stage_{rep}"
                start = time.perf_counter()
                conn.execute(sql.SQL("CREATE TABLE {} (LIKE {} INCLUDING DEFAULTS)").format(table(stage), table("parted")))
                copy_into(stage)
                conn.execute(sql.SQL("ALTER TABLE {} ADD PRIMARY KEY {}, ADD CHECK (partition_date = {}::date)").format(
                    table(stage), key, sql.Literal(DAY)))
                swap = time.perf_counter()
                conn.execute(sql.SQL("ALTER TABLE {} DETACH PARTITION {}").format(table("parted"), table("parted_day")))
                conn.execute(sql.SQL("DROP TABLE {}").format(table("parted_day")))
                conn.execute(sql.SQL("ALTER TABLE {} ATTACH PARTITION {} FOR VALUES IN ({})").format(
                    table("parted"), table(stage), sql.Literal(DAY)))
                conn.execute(sql.SQL("ALTER TABLE {} RENAME TO {}").format(table(stage), sql.Identifier("parted_day")))
                conn.commit()
                server["stage table: COPY + ADD PRIMARY KEY + CHECK, then swap"].append(time.perf_counter() - start)
                server["  of which the swap (DETACH, DROP, ATTACH, RENAME, COMMIT)"].append(time.perf_counter() - swap)
        print(f"\n2. the server's share: the same CSV bytes (encoded beforehand) COPYed {args.repeat} times; {load_average()}\n")
        for name, values in server.items():
            print(f"  {name:<62} {statistics.median(values):7.3f} s")
    return 0


if __name__ == "__main__":
    sys.exit(main())
