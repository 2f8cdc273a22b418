"""What the day partitions cost the server in a 365-day rewrite: DELETE + COPY of the same rows into a plain
table vs the LIST-partitioned table the platform writes (one partition per day), with and without the key.

    .venv/bin/python benchmarks/profile_partitioned_copy.py [--days 365] [--rows-per-day 1000] [--repeat 3]

Diagnostic, not part of `make bench` (section 6 of docs/benchmarks.md explains the 365-day gap with it). The
CSV is encoded once beforehand (the platform's own `csv_parts`), so only the server and the wire are timed.
Every path is one transaction: DELETE of the days' rows (all rows are rewritten, as in a backfill of new data),
then the COPY, then COMMIT; interleaved, medians:

- plain, key: one table with PRIMARY KEY (partition_date, reading_id), one COPY (the bare baseline's table);
- partitioned, key, through the parent: one COPY into the parent, PostgreSQL routes each row (the platform
  before 2026-12-03);
- partitioned, key, into each partition: one COPY per day straight into its partition (the platform now);
- the same three without the key, to tell the index's share from the partitions' own.
"""

from __future__ import annotations

import datetime as dt
import statistics
import sys
import time
from pathlib import Path

import psycopg
from psycopg import sql

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from benchmarks.common import fresh_database, load_average, machine, print_times  # noqa: E402
from benchmarks.readings import READING_COLUMNS, daily_readings, days_from, readings_parser  # noqa: E402
from idem_platform.storage.postgres_store import csv_parts  # noqa: E402
from idem_platform.storage.schema import LOGICAL_TYPES, PARTITION_COLUMN  # noqa: E402

NAMES = [*READING_COLUMNS, PARTITION_COLUMN]
COLUMNS = sql.SQL(", ").join(
    [sql.SQL("{} {}").format(sql.Identifier(n), sql.SQL(LOGICAL_TYPES[t].postgres)) for n, t in READING_COLUMNS.items()]
    + [sql.SQL("{} date NOT NULL").format(sql.Identifier(PARTITION_COLUMN))]
)
KEY = sql.SQL(", PRIMARY KEY ({}, reading_id)").format(sql.Identifier(PARTITION_COLUMN))


def create(conn: psycopg.Connection, days: list[str], keyed: bool) -> dict[str, sql.Composable]:
    """The plain and the partitioned table (with or without the key); their names."""
    suffix = "key" if keyed else "nokey"
    plain, parted = sql.Identifier(f"plain_{suffix}"), sql.Identifier(f"parted_{suffix}")
    key = KEY if keyed else sql.SQL("")
    conn.execute(sql.SQL("CREATE TABLE {} ({}{})").format(plain, COLUMNS, key))
    conn.execute(sql.SQL("CREATE TABLE {} ({}{}) PARTITION BY LIST ({})").format(parted, COLUMNS, key,
                                                                                sql.Identifier(PARTITION_COLUMN)))
    for day in days:
        conn.execute(sql.SQL("CREATE TABLE {} PARTITION OF {} FOR VALUES IN ({})").format(
            sql.Identifier(f"parted_{suffix}_{day}"), parted, sql.Literal(day)))
    return {"plain": plain, "parted": parted, "prefix": f"parted_{suffix}_"}


def rewrite(dsn: str, days: list[str], delete_from: sql.Composable, targets: list[sql.Composable],
            chunks: list[list[bytes]]) -> float:
    """One transaction: DELETE the days, COPY each target its chunks, COMMIT; seconds."""
    copy = sql.SQL("COPY {} ({}) FROM STDIN (FORMAT csv)")
    names = sql.SQL(", ").join(sql.Identifier(n) for n in NAMES)
    with psycopg.connect(dsn) as conn:
        start = time.perf_counter()
        conn.execute(sql.SQL("DELETE FROM {} WHERE {} = ANY(%s::date[])").format(
            delete_from, sql.Identifier(PARTITION_COLUMN)), (days,))
        with conn.cursor() as cur:
            for target, parts in zip(targets, chunks, strict=True):
                with cur.copy(copy.format(target, names)) as out:
                    for chunk in parts:
                        out.write(chunk)
        conn.commit()
        return time.perf_counter() - start


def main() -> int:
    args = readings_parser(__doc__).parse_args()
    days = days_from(dt.date(2025, 1, 1), args.days)
    frame = daily_readings(days, args.rows_per_day)  # ordered by day
    by_day: list[list[bytes]] = [[] for _ in days]
    for part, chunk in csv_parts(frame, [args.rows_per_day] * len(days)):
        by_day[part].append(chunk)
    whole = [chunk for parts in by_day for chunk in parts]
    print(f"{machine()}; {load_average()}\n{len(frame):,} rows, {len(days)} days", flush=True)

    with fresh_database("idem_prof_parted") as dsn:
        with psycopg.connect(dsn, autocommit=True) as conn:
            tables = {keyed: create(conn, days, keyed) for keyed in (True, False)}
        paths = {}
        for keyed, t in tables.items():
            label = "key" if keyed else "no key"
            parts = [sql.Identifier(f"{t['prefix']}{day}") for day in days]
            paths[f"plain, {label}"] = lambda t=t: rewrite(dsn, days, t["plain"], [t["plain"]], [whole])
            paths[f"partitioned, {label}, through the parent"] = (
                lambda t=t: rewrite(dsn, days, t["parted"], [t["parted"]], [whole]))
            paths[f"partitioned, {label}, into each partition"] = (
                lambda t=t, parts=parts: rewrite(dsn, days, t["parted"], parts, by_day))
        for path in paths.values():  # load every table once: the timed runs rewrite rows that are there
            path()
        times = {label: [] for label in paths}
        for round_ in range(args.repeat):
            for label, path in (paths.items() if round_ % 2 == 0 else reversed(paths.items())):
                times[label].append(path())
    print(f"\nDELETE + COPY + COMMIT of {len(frame):,} rows; {args.repeat} repetitions, interleaved; {load_average()}\n")
    print_times(times)
    plain = statistics.median(times["plain, key"])
    for label, values in times.items():
        print(f"  {label:<45} {statistics.median(values) / plain:5.2f}x plain, key")
    return 0


if __name__ == "__main__":
    sys.exit(main())
