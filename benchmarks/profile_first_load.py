"""A range's first load (a backfill into days that have no partition yet): what the new partitions cost, and what
writing the range's transactions two at a time saves when each makes its partitions first, on its own.

    .venv/bin/python benchmarks/profile_first_load.py [--days 365] [--rows-per-day 1000] [--repeat 5]

Diagnostic, not part of `make bench` (section 6 of docs/benchmarks.md). One database; every measurement writes a
fresh schema, so every day is new; interleaved (the order alternates each repetition), medians:

- DDL of the new partitions alone, with the sink's own statements (CREATE, key and bound, ATTACH: three per day),
  in transactions of IDEM_PG_DAYS_PER_TRANSACTION days: sent one statement at a time vs each transaction's
  statements as one string (what `_ensure_day_partitions` sends);
- `publish_partitions` of the whole range (the platform's write: digests, audit, partitions, DELETE + COPY,
  ledger) with IDEM_PG_PARALLEL_TRANSACTIONS=1 (each transaction makes its days' partitions, one transaction
  after another) vs 2 (two transactions at once, each one's new partitions made just before it in a short
  transaction of their own, while the other writes).
"""

from __future__ import annotations

import datetime as dt
import logging
import os
import statistics
import sys
import time
from pathlib import Path

import psycopg
from psycopg import sql

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from benchmarks.common import fresh_database, load_average, machine, print_times  # noqa: E402
from benchmarks.readings import READING_COLUMNS, daily_readings, days_from, readings_parser  # noqa: E402
from idem_platform import settings  # noqa: E402
from idem_platform.resources import PostgresResource  # noqa: E402
from idem_platform.storage.audit import AuditRules  # noqa: E402
from idem_platform.storage.partition_store import AssetTarget, publish_partitions  # noqa: E402
from idem_platform.storage.postgres_store import PostgresTableSink  # noqa: E402
from idem_platform.storage.schema import TableDeclaration  # noqa: E402

DECL = TableDeclaration.build(READING_COLUMNS, ["reading_id"])
TARGET = AssetTarget("readings", DECL, AuditRules())


def new_schema(dsn: str, name: str) -> None:
    with psycopg.connect(dsn, autocommit=True) as conn:
        conn.execute(sql.SQL("CREATE SCHEMA {}").format(sql.Identifier(name)))
        conn.execute("CHECKPOINT")


def partition_ddl(postgres: PostgresResource, schema: str, days: list[str], one_string: bool) -> float:
    """Seconds to give each day an empty partition of a new table, with the sink's statements."""
    sink = PostgresTableSink(postgres, schema)
    with postgres.connect() as conn:
        sink.prepare(conn, TARGET)  # the partitioned table, off the clock
        conn.commit()
        columns = sink._column_definitions(conn.cursor(), TARGET)
        conn.commit()
        step = sink.max_days_per_transaction or len(days)
        start = time.perf_counter()
        for first in range(0, len(days), step):
            statements = []
            for day in days[first : first + step]:
                name = sink.day_partition(TARGET, day)
                statements += [sink._create_day_table_sql(TARGET, name, columns),
                               sink._day_constraints_sql(TARGET, day, name), sink._attach_sql(TARGET, day, name)]
            with conn.cursor() as cur:
                if one_string:
                    cur.execute(sql.SQL("; ").join(statements))
                else:
                    for statement in statements:
                        cur.execute(statement)
            conn.commit()
        return time.perf_counter() - start


def first_load(postgres: PostgresResource, schema: str, days: list[str], frame, parallel: int) -> float:
    os.environ["IDEM_PG_PARALLEL_TRANSACTIONS"] = str(parallel)
    start = time.perf_counter()
    publish_partitions(PostgresTableSink(postgres, schema), postgres, TARGET, days, frame.copy(), f"run-{schema}")
    return time.perf_counter() - start


def main() -> int:
    parser = readings_parser(__doc__)
    parser.set_defaults(repeat=5)
    args = parser.parse_args()
    logging.disable(logging.INFO)
    days = days_from(dt.date(2025, 1, 1), args.days)
    frame = DECL.coerce(daily_readings(days, args.rows_per_day))
    print(f"{machine()}; {load_average()}\n{len(frame):,} rows, {len(days)} new days, "
          f"{settings.current().pg_days_per_transaction} days per transaction", flush=True)
    paths = {
        "partition DDL, one statement at a time": lambda s: partition_ddl(postgres, s, days, one_string=False),
        "partition DDL, one string per transaction": lambda s: partition_ddl(postgres, s, days, one_string=True),
        "first load, transactions one after another": lambda s: first_load(postgres, s, days, frame, 1),
        "first load, partitions first, two at once": lambda s: first_load(postgres, s, days, frame, 2),
    }
    times: dict[str, list[float]] = {label: [] for label in paths}
    with fresh_database("idem_prof_first_load") as dsn:
        postgres = PostgresResource(dsn=dsn)
        for round_ in range(args.repeat):
            for n, (label, path) in enumerate(paths.items() if round_ % 2 == 0 else reversed(paths.items())):
                schema = f"r{round_}_{n}"
                new_schema(dsn, schema)
                times[label].append(path(schema))
    print(f"\n{args.repeat} repetitions, interleaved; {load_average()}\n")
    print_times(times)
    one_by_one, one_string = (statistics.median(times[k]) for k in list(paths)[:2])
    sequential, concurrent = (statistics.median(times[k]) for k in list(paths)[2:])
    print(f"\n  partition DDL: one string / one statement at a time = {one_string / one_by_one:.2f}")
    print(f"  first load: partitions first, two at once / one after another = {concurrent / sequential:.2f}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
