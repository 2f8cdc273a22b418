"""The source table `peer_src.flights` that the in-database tools (dbt, SQLMesh) read, loaded from the same
per-day Parquet files the others read: a day is reloaded as DELETE of its rows + COPY (CSV written by Arrow),
in one transaction. Its time counts in those tools' end-to-end times and is reported on its own.
"""

from __future__ import annotations

import io
import time
from pathlib import Path

import psycopg
import pyarrow.csv as pacsv
import pyarrow.parquet as pq

from benchmarks.peers.data import COLUMNS, PG_TYPES, day_file

TABLE = "peer_src.flights"


def create(dsn: str) -> None:
    columns = ", ".join(f"{name} {PG_TYPES[kind]}" for name, kind in COLUMNS.items())
    with psycopg.connect(dsn, autocommit=True) as conn:
        conn.execute("CREATE SCHEMA IF NOT EXISTS peer_src")
        conn.execute(f"CREATE TABLE IF NOT EXISTS {TABLE} ({columns})")
        conn.execute(f"CREATE INDEX IF NOT EXISTS flights_day ON {TABLE} (flight_day)")


def load_days(dsn: str, source: Path, days: list[str]) -> float:
    """Replace the source table's rows of `days` by the files' rows; seconds taken."""
    start = time.perf_counter()
    names = ", ".join(COLUMNS)
    with psycopg.connect(dsn) as conn:
        conn.execute(f"DELETE FROM {TABLE} WHERE flight_day = ANY(%s::date[])", (days,))
        with conn.cursor().copy(f"COPY {TABLE} ({names}) FROM STDIN (FORMAT csv)") as copy:
            for day in days:
                table = pq.read_table(day_file(source, day))
                if table.num_rows == 0:
                    continue
                buffer = io.BytesIO()
                pacsv.write_csv(table, buffer, pacsv.WriteOptions(include_header=False))
                copy.write(buffer.getvalue())
        conn.commit()
    with psycopg.connect(dsn, autocommit=True) as conn:
        conn.execute(f"ANALYZE {TABLE}")
    return time.perf_counter() - start
