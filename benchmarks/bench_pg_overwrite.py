"""PostgreSQL overwrite of one 1M-row day (10 mixed columns): the platform vs raw COPY vs DataFrame.to_sql.

    .venv/bin/python benchmarks/bench_pg_overwrite.py [--rows 1000000] [--repeat 3] [--to-sql-repeat 1]

One fresh database, the same in-memory frame for every path, interleaved repetitions, medians:

- idem: `publish_partitions` with the sink of `PostgresPartitionIOManager` (what its `handle_output` calls):
  coerce the frame, then fingerprint and audit it in a thread while the day is staged; partition lock, ledger
  lookup, stage (a fresh table, pipelined COPY of pyarrow CSV chunks, then PRIMARY KEY (partition_date, id) and
  the day's CHECK), verify by the COPY's row count, swap (DROP the day's partition of the LIST-partitioned
  table, ATTACH the staged one, rename), ledger row, COMMIT. A day of at least the sink's swap threshold
  (10,000 rows) is swapped; smaller days (--rows below it) are replaced in place, DELETE + COPY. Every
  repetition replaces the rows the previous one published (a warm-up publishes them first).
- raw COPY, CSV stream: what a careful user writes: the frame to Arrow once, `pyarrow.csv.write_csv` per
  100k-row slice, `cursor.copy(...).write`, COMMIT, into a plain unindexed table created (empty) outside the
  clock. The 0.9x target is read against this one: it is the fastest honest way to get a frame into PostgreSQL.
- raw COPY, write_row: the common psycopg idiom: `for row in frame.itertuples(): copy.write_row(row)`, same
  plain table.
- to_sql: `frame.to_sql(..., method=None, chunksize=10_000)` through SQLAlchemy + psycopg 3 (faster here than
  psycopg2), into a table it creates; 1M rows take tens of seconds, so it runs --to-sql-repeat times (default 1).

ratio = baseline time / idem time (>= 0.9 against raw COPY, >= 4 against to_sql).
"""

from __future__ import annotations

import argparse
import io
import statistics
import sys
import time
import uuid
from pathlib import Path

import pyarrow as pa
import pyarrow.csv as pa_csv
import psycopg
import sqlalchemy as sa
from psycopg import sql

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from benchmarks.common import (  # noqa: E402
    MIXED, fresh_database, frame_bytes, interleaved, load_average, machine, mixed_frame, plain_columns_sql,
    print_ratio, print_times,
)
from idem_platform.resources import PostgresResource  # noqa: E402
from idem_platform.storage.audit import AuditRules  # noqa: E402
from idem_platform.storage.partition_store import AssetTarget, publish_partitions  # noqa: E402
from idem_platform.storage.postgres_store import PostgresPartitionIOManager  # noqa: E402

DAY = "2026-01-05"
SCHEMA = "bench"
SLICE_ROWS = 100_000
TARGET_COPY = 0.9
TARGET_TO_SQL = 4.0


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rows", type=int, default=1_000_000)
    parser.add_argument("--repeat", type=int, default=3)
    parser.add_argument("--to-sql-repeat", type=int, default=1)
    parser.add_argument("--write-row-repeat", type=int, default=0,
                        help="repetitions of the write_row idiom (~6x slower than the platform; default 0: left out)")
    args = parser.parse_args()

    print(f"{machine()}; {load_average()}", flush=True)
    frame = mixed_frame(args.rows, DAY)
    print(f"frame: {len(frame):,} rows x {len(frame.columns)} columns, {frame_bytes(frame) / 1e6:.0f} MB in memory", flush=True)

    with fresh_database() as dsn:
        postgres = PostgresResource(dsn=dsn)
        sink = PostgresPartitionIOManager(postgres=postgres, db_schema=SCHEMA).sink()
        swap_min_rows = sink.swap_min_rows
        target = AssetTarget("mixed", MIXED, AuditRules())
        columns = plain_columns_sql(MIXED)
        engine = sa.create_engine(dsn.replace("postgresql://", "postgresql+psycopg://", 1))
        with psycopg.connect(dsn, autocommit=True) as conn:
            conn.execute(sql.SQL("CREATE SCHEMA IF NOT EXISTS {}").format(sql.Identifier(SCHEMA)))

        def idem() -> float:
            start = time.perf_counter()
            publish_partitions(sink, postgres, target, [DAY], frame, str(uuid.uuid4()))
            return time.perf_counter() - start

        def fresh_plain_table(conn: psycopg.Connection, name: str) -> sql.Identifier:
            table = sql.Identifier(SCHEMA, name)
            conn.execute(sql.SQL("DROP TABLE IF EXISTS {}").format(table))
            conn.execute(sql.SQL("CREATE TABLE {} ({})").format(table, columns))
            conn.commit()
            return table

        def raw_csv() -> float:
            with psycopg.connect(dsn) as conn:
                table = fresh_plain_table(conn, "plain_csv")
                start = time.perf_counter()
                arrow = pa.Table.from_pandas(frame, preserve_index=False)
                options = pa_csv.WriteOptions(include_header=False, quoting_style="needed")
                with conn.cursor() as cur, cur.copy(sql.SQL("COPY {} FROM STDIN (FORMAT csv)").format(table)) as copy:
                    for offset in range(0, arrow.num_rows, SLICE_ROWS):
                        buf = io.BytesIO()
                        pa_csv.write_csv(arrow.slice(offset, SLICE_ROWS), buf, options)
                        copy.write(buf.getvalue())
                conn.commit()
                return time.perf_counter() - start

        def raw_write_row() -> float:
            with psycopg.connect(dsn) as conn:
                table = fresh_plain_table(conn, "plain_rows")
                start = time.perf_counter()
                with conn.cursor() as cur, cur.copy(sql.SQL("COPY {} FROM STDIN").format(table)) as copy:
                    for row in frame.itertuples(index=False, name=None):
                        copy.write_row(row)
                conn.commit()
                return time.perf_counter() - start

        def to_sql() -> float:
            with psycopg.connect(dsn, autocommit=True) as conn:
                conn.execute(sql.SQL("DROP TABLE IF EXISTS {}").format(sql.Identifier(SCHEMA, "plain_to_sql")))
            start = time.perf_counter()
            frame.to_sql("plain_to_sql", engine, schema=SCHEMA, if_exists="fail", index=False, chunksize=10_000, method=None)
            return time.perf_counter() - start

        paths = {
            "idem (PostgresPartitionIOManager)": idem,
            "raw COPY, CSV stream": raw_csv,
            "raw COPY, write_row": raw_write_row,
            "to_sql (SQLAlchemy + psycopg)": to_sql,
        }
        if not args.write_row_repeat:
            del paths["raw COPY, write_row"]
        idem()  # warm-up: table, ledger, and the 1M rows every timed repetition replaces
        times = interleaved(paths, args.repeat, only={"to_sql (SQLAlchemy + psycopg)": args.to_sql_repeat,
                                                           "raw COPY, write_row": args.write_row_repeat})
        with psycopg.connect(dsn) as conn:  # every path loaded every row
            for name in ("mixed", "plain_csv", "plain_to_sql") + (("plain_rows",) if args.write_row_repeat else ()):
                loaded = conn.execute(sql.SQL("SELECT count(*) FROM {}").format(sql.Identifier(SCHEMA, name))).fetchone()[0]
                assert loaded == len(frame), (name, loaded, len(frame))
        engine.dispose()

    print(f"\nPostgreSQL overwrite of one day, {len(frame):,} rows; {args.repeat} repetitions "
          f"(to_sql: {args.to_sql_repeat}, write_row: {args.write_row_repeat}: 1M rows take them tens of seconds); {load_average()}\n")
    print_times(times, units=len(frame))
    how = "stage + swap" if len(frame) >= swap_min_rows else "in place (DELETE + COPY)"
    print(f"(idem replaced the day {how}: {len(frame):,} rows, the sink's swap threshold is {swap_min_rows:,})")
    med = {name: statistics.median(values) for name, values in times.items()}
    idem_s = med["idem (PostgresPartitionIOManager)"]
    print()
    copy_ratio = med["raw COPY, CSV stream"] / idem_s
    print_ratio(f"pg overwrite {len(frame):,} rows: raw COPY (CSV stream) / idem", copy_ratio, f">= {TARGET_COPY} [the target]", copy_ratio >= TARGET_COPY)
    if "raw COPY, write_row" in med:
        rows_ratio = med["raw COPY, write_row"] / idem_s
        print_ratio(f"pg overwrite {len(frame):,} rows: raw COPY (write_row) / idem", rows_ratio, f">= {TARGET_COPY}", rows_ratio >= TARGET_COPY)
    to_sql_ratio = med["to_sql (SQLAlchemy + psycopg)"] / idem_s
    print_ratio(f"pg overwrite {len(frame):,} rows: to_sql / idem", to_sql_ratio, f">= {TARGET_TO_SQL:g}", to_sql_ratio >= TARGET_TO_SQL)
    return 0


if __name__ == "__main__":
    sys.exit(main())
