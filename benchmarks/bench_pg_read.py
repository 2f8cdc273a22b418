"""Reading a year back from PostgreSQL: the typed, columnar read (ADBC) vs the Python-records read it replaced.

    .venv/bin/python -m benchmarks.bench_pg_read [--days 365] [--rows-per-day 1000] [--repeat 5]

A table of `--days` days x `--rows-per-day` rows of 10 mixed-type columns is published through the platform
(`publish_partitions`, the PostgreSQL sink). Then the whole year is read back, interleaved, `--repeat` times:

- records: the read before issue 16, kept here as the baseline: `cursor.fetchall()` of Python tuples,
  `DataFrame.from_records`, `TableDeclaration.coerce` (a bigint with NULLs went through float64 there);
- arrow: `PostgresTableSink.read`, ADBC (binary COPY into Arrow columns), then the same `coerce`.

Both return equal frames (checked). ratio = arrow median / records median (target <= 1.0); also printed: one
day read the same two ways (what a downstream daily load or a one-day verify reads).
"""

from __future__ import annotations

import argparse
import statistics
import sys
from pathlib import Path

import pandas as pd
from psycopg import sql

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from benchmarks.common import MIXED, fresh_database, interleaved, load_average, machine, mixed_frame, print_ratio, print_times, stopwatch  # noqa: E402
from idem_platform.partitions import days_between  # noqa: E402
from idem_platform.resources import PostgresResource  # noqa: E402
from idem_platform.storage.audit import AuditRules  # noqa: E402
from idem_platform.storage.partition_store import AssetTarget, publish_partitions  # noqa: E402
from idem_platform.storage.postgres_store import PostgresTableSink  # noqa: E402
from idem_platform.storage.schema import PARTITION_COLUMN  # noqa: E402


def records_read(sink: PostgresTableSink, target: AssetTarget, days: list[str]) -> pd.DataFrame:
    """The read before issue 16 (Python records), verbatim."""
    names = target.decl.names
    query = sql.SQL("SELECT {} FROM {} WHERE {} = ANY(%s::date[]) ORDER BY {}").format(
        sql.SQL(", ").join(sql.Identifier(n) for n in names), sink.table(target), sql.Identifier(PARTITION_COLUMN),
        sql.SQL(", ").join(sql.Identifier(k) for k in target.decl.partition_key),
    )
    with sink.postgres.connect() as conn, conn.cursor() as cur:
        cur.execute(query, (list(days),))
        rows = cur.fetchall()
    return target.decl.coerce(pd.DataFrame.from_records(rows, columns=names), what="table")


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--days", type=int, default=365)
    parser.add_argument("--rows-per-day", type=int, default=1000)
    parser.add_argument("--repeat", type=int, default=5)
    args = parser.parse_args()
    days = days_between("2025-01-01", str(pd.Timestamp("2025-01-01") + pd.Timedelta(days=args.days - 1))[:10])
    print(f"{machine()}; {load_average()}")
    with fresh_database("idem_bench_read") as dsn:
        postgres = PostgresResource(dsn=dsn)
        sink = PostgresTableSink(postgres, "warehouse")
        target = AssetTarget("bench_read", MIXED, AuditRules())
        frame = pd.concat([mixed_frame(args.rows_per_day, day, seed=i) for i, day in enumerate(days)], ignore_index=True)
        frame["visits"] = frame["visits"].mask(frame["id"] % 7 == 0)  # NULLs in a bigint column
        publish_partitions(sink, postgres, target, days, frame, "bench")
        pd.testing.assert_frame_equal(sink.read(target, days), records_read(sink, target, days), check_exact=True)
        rows = len(frame)
        print(f"\n{args.days} days x {args.rows_per_day} rows ({rows:,} rows, 11 columns), whole range per read")
        year = interleaved(
            {"records": lambda: stopwatch(lambda: records_read(sink, target, days)),
             "arrow": lambda: stopwatch(lambda: sink.read(target, days))},
            args.repeat,
        )
        print_times(year, rows)
        print(f"\none day ({args.rows_per_day} rows), per read")
        one = interleaved(
            {"records": lambda: stopwatch(lambda: records_read(sink, target, days[-1:])),
             "arrow": lambda: stopwatch(lambda: sink.read(target, days[-1:]))},
            args.repeat * 4,
        )
        print_times(one, args.rows_per_day)
    ratio = statistics.median(year["arrow"]) / statistics.median(year["records"])
    print_ratio("pg_read arrow/records (365 days)", ratio, "<= 1.0", ratio <= 1.0)
    return 0


if __name__ == "__main__":
    sys.exit(main())
