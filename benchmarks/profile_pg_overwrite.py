"""Where a 1M-row PostgreSQL overwrite spends its time: client steps of the platform, and the server's share.

    .venv/bin/python benchmarks/profile_pg_overwrite.py [--rows 1000000] [--repeat 3]

Diagnostic, not part of `make bench`. Two parts, medians of --repeat overwrites:

1. The platform's `publish_partitions` (PostgresPartitionIOManager's sink), timed step by step from outside
   (wrappers around the platform's functions and `psycopg.Connection.commit`; nothing in idem_platform is
   changed), for both ways the sink replaces a day, alternately on two tables:
   - stage + swap (the sink as configured; a day of at least its swap threshold, 10,000 rows by default):
     coerce; the digests and the audit in their thread (overlapped with the stage); stage = CREATE the staging
     table, pipelined COPY (the CSV encoding runs in a producer thread, overlapped with the COPY), ADD PRIMARY
     KEY + CHECK; the wait for the audit thread; verify (the COPY's row count); publish (the swap: DROP the
     old day partition, ATTACH the staged table, RENAME it and its key); commits; the rest (connect, DDL check,
     lock, ledger).
   - in place (a second sink whose swap threshold is above --rows): DELETE the day through the parent, then
     the pipelined COPY into it; verify = a count of the day.
2. The server's share alone: the same CSV bytes, encoded once beforehand, COPYed into a plain table (the raw
   baseline's server side) / an empty table with the primary key / the platform's partitioned table with the
   sink's own statements, staged and swapped / in place (DELETE + COPY through the parent).
"""

from __future__ import annotations

import argparse
import statistics
import sys
import threading
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
from idem_platform.storage.schema import TableDeclaration  # noqa: E402

DAY = "2026-01-05"
SCHEMA = "bench"
STEPS: dict[str, float] = defaultdict(float)
_LOCK = threading.Lock()
_STAGE_END: list[float] = []

# (step, what it covers): printed in this order; indented steps are part of the one above them
ORDER = [
    ("coerce", "coerce (TableDeclaration.coerce, main thread)"),
    ("digests", "  fingerprint (partition_digests, audit thread, overlapped)"),
    ("audit", "  audit_frame (audit thread, overlapped)"),
    ("stage", "stage"),
    ("create", "  CREATE staging table"),
    ("ensure", "  day partition present? (in place)"),
    ("delete", "  DELETE of the day (in place)"),
    ("copy", "  COPY, pipelined"),
    ("encode", "    CSV encoding (producer thread, overlapped with the COPY)"),
    ("constraints", "  ADD PRIMARY KEY + CHECK"),
    ("wait", "wait for the audit thread after the stage"),
    ("verify", "verify_staged"),
    ("publish", "publish (swap: DROP, ATTACH, RENAME)"),
    ("commit", "commits (prepare's and the final COMMIT)"),
    ("rest", "the rest (connect, DDL check, lock, ledger)"),
    ("total", "total"),
]
TOP_LEVEL = ("coerce", "stage", "wait", "verify", "publish", "commit")


def add(name: str, seconds: float) -> None:
    with _LOCK:
        STEPS[name] += seconds


def timed(name: str, fn):
    def wrapper(*args, **kwargs):
        start = time.perf_counter()
        try:
            return fn(*args, **kwargs)
        finally:
            add(name, time.perf_counter() - start)
    return wrapper


def instrument() -> None:
    TableDeclaration.coerce = timed("coerce", TableDeclaration.coerce)
    partition_store.partition_digests = timed("digests", partition_store.partition_digests)
    partition_store.audit_frame = timed("audit", partition_store.audit_frame)

    stage = timed("stage", PostgresTableSink.stage)

    def stage_and_mark(*args, **kwargs):
        try:
            return stage(*args, **kwargs)
        finally:
            _STAGE_END.append(time.perf_counter())

    PostgresTableSink.stage = stage_and_mark
    verify = timed("verify", PostgresTableSink.verify_staged)

    def verify_after_wait(*args, **kwargs):  # between stage and verify: fault points and the audit's result()
        if _STAGE_END:
            add("wait", time.perf_counter() - _STAGE_END.pop())
        return verify(*args, **kwargs)

    PostgresTableSink.verify_staged = verify_after_wait
    PostgresTableSink.publish = timed("publish", PostgresTableSink.publish)
    PostgresTableSink._create_day_table = timed("create", PostgresTableSink._create_day_table)
    PostgresTableSink._ensure_day_partitions = timed("ensure", PostgresTableSink._ensure_day_partitions)
    PostgresTableSink._delete_days = timed("delete", PostgresTableSink._delete_days)
    PostgresTableSink._add_day_constraints = timed("constraints", PostgresTableSink._add_day_constraints)
    postgres_store.copy_parts = timed("copy", postgres_store.copy_parts)
    original_parts = postgres_store.csv_parts

    def csv_parts(*args, **kwargs):
        chunks = original_parts(*args, **kwargs)
        while True:
            start = time.perf_counter()
            try:
                chunk = next(chunks)
            except StopIteration:
                return
            finally:
                add("encode", time.perf_counter() - start)
            yield chunk

    postgres_store.csv_parts = csv_parts
    psycopg.Connection.commit = timed("commit", psycopg.Connection.commit)


def profile_platform(dsn: str, frame, repeat: int) -> dict[str, dict[str, list[float]]]:
    postgres = PostgresResource(dsn=dsn)
    swap_sink = PostgresPartitionIOManager(postgres=postgres, db_schema=SCHEMA).sink()
    in_place_sink = PostgresTableSink(postgres, SCHEMA, swap_min_rows=len(frame) + 1)
    paths = {}
    for label, sink, asset in (
        ("stage + swap" if len(frame) >= swap_sink.swap_min_rows else "in place (the sink's default)", swap_sink, "mixed"),
        ("in place", in_place_sink, "mixed_in_place"),
    ):
        target = AssetTarget(asset, MIXED, AuditRules())
        publish_partitions(sink, postgres, target, [DAY], frame, "setup")  # every timed write is an overwrite
        paths[label] = (sink, target)
    instrument()
    runs: dict[str, dict[str, list[float]]] = {label: defaultdict(list) for label in paths}
    for _ in range(repeat):
        for label, (sink, target) in paths.items():
            STEPS.clear()
            start = time.perf_counter()
            publish_partitions(sink, postgres, target, [DAY], frame, str(uuid.uuid4()))
            total = time.perf_counter() - start
            steps = dict(STEPS)
            steps["rest"] = total - sum(steps.get(k, 0.0) for k in TOP_LEVEL)
            steps["total"] = total
            for name, _ in ORDER:
                runs[label][name].append(steps.get(name, 0.0))
    return runs


def profile_server(dsn: str, frame, repeat: int) -> dict[str, list[float]]:
    chunks = [chunk for _, chunk in postgres_store.csv_parts(frame, [len(frame)])]
    sink = PostgresTableSink(PostgresResource(dsn=dsn), SCHEMA)
    target = AssetTarget("server_parted", MIXED, AuditRules())
    columns = plain_columns_sql(MIXED)
    names = sql.SQL(", ").join(sql.Identifier(n) for n in MIXED.names)
    server: dict[str, list[float]] = defaultdict(list)
    with psycopg.connect(dsn) as conn, conn.cursor() as cur:
        def table(name):
            return sql.Identifier(SCHEMA, name)

        def copy_into(ident):
            with cur.copy(sql.SQL("COPY {} ({}) FROM STDIN (FORMAT csv)").format(ident, names)) as copy:
                for chunk in chunks:
                    copy.write(chunk)

        sink.prepare(conn, target)  # the platform's parent table, then its day partition
        sink._ensure_day_partitions(cur, target, [DAY])
        copy_into(sink.table(target))
        cur.execute(sql.SQL("CREATE TABLE {} ({}, PRIMARY KEY (partition_date, id))").format(table("pk_empty"), columns))
        conn.commit()
        for rep in range(repeat):
            cur.execute(sql.SQL("DROP TABLE IF EXISTS {}").format(table("plain")))
            cur.execute(sql.SQL("CREATE TABLE {} ({})").format(table("plain"), columns))
            cur.execute(sql.SQL("TRUNCATE {}").format(table("pk_empty")))
            conn.commit()
            start = time.perf_counter()
            copy_into(table("plain"))
            conn.commit()
            server["COPY into a plain table (the raw baseline's server side)"].append(time.perf_counter() - start)
            start = time.perf_counter()
            copy_into(table("pk_empty"))
            conn.commit()
            server["COPY into an empty table with the primary key"].append(time.perf_counter() - start)

            stage = sink.stage_name(target, DAY, f"r{rep}")
            start = time.perf_counter()
            sink._create_day_table(cur, target, DAY, stage)
            copy_into(table(stage))
            keyed = time.perf_counter()
            sink._add_day_constraints(cur, target, DAY, stage)
            swap = time.perf_counter()
            sink._swap_days(cur, target, {DAY: stage})
            conn.commit()
            end = time.perf_counter()
            server["stage + swap (the sink's statements)"].append(end - start)
            server["  CREATE + COPY into the staging table"].append(keyed - start)
            server["  ADD PRIMARY KEY + CHECK"].append(swap - keyed)
            server["  swap (DROP, ATTACH, RENAME x2) + COMMIT"].append(end - swap)

            start = time.perf_counter()
            sink._delete_days(cur, target, [DAY])
            copy_into(sink.table(target))
            conn.commit()
            server["in place: DELETE + COPY through the parent (after a swap)"].append(time.perf_counter() - start)
    return server


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rows", type=int, default=1_000_000)
    parser.add_argument("--repeat", type=int, default=3)
    args = parser.parse_args()
    print(f"{machine()}; {load_average()}", flush=True)
    frame = mixed_frame(args.rows, DAY)

    with fresh_database() as dsn:
        server = profile_server(dsn, frame, args.repeat)  # before instrument(): no wrapper in its clock
        runs = profile_platform(dsn, frame, args.repeat)

    labels = list(runs)
    print(f"\n1. the platform's overwrite of {len(frame):,} rows, step by step (medians of {args.repeat}, seconds); "
          f"{load_average()}\n")
    print(f"  {'step':<62}" + "".join(f" {label:>14}" for label in labels))
    for name, text in ORDER:
        values = [statistics.median(runs[label][name]) for label in labels]
        if any(values):
            print(f"  {text:<62}" + "".join(f" {value:>14.3f}" for value in values))

    print(f"\n2. the server's share: the same CSV bytes (encoded beforehand) COPYed {args.repeat} times; {load_average()}\n")
    for name, values in server.items():
        print(f"  {name:<62} {statistics.median(values):7.3f} s")
    return 0


if __name__ == "__main__":
    sys.exit(main())
