"""bench_run_overhead.py's baseline: the same rows written by a bare `@dg.asset` with plain COPY.

    dagster asset materialize -m benchmarks.overhead_bare_defs --select bare_readings --partition DAY

What a careful Dagster user writes without the platform: daily partitions with a single-run backfill policy
(a range is one run, as the platform's), the in-process executor (as `idem_definitions`), and in the asset body
one transaction per run: DELETE the run's days, COPY the new rows (pyarrow CSV, 100k-row slices, zoned timestamps
as UTC text as the platform writes them) into a plain table keyed like the platform's, COMMIT. It gets the platform's tricks where they are Dagster's (the same
instance, dagster-postgres) and has none of its guarantees (no lock between concurrent runs of a day, no audit,
no ledger, no checks).
"""

import io
import os

import dagster as dg
import pandas as pd
import psycopg
import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.csv as pa_csv
from psycopg import sql

from benchmarks.readings import day_readings

TABLE = sql.Identifier("bare", "readings")
SLICE_ROWS = 100_000


@dg.asset(
    partitions_def=dg.DailyPartitionsDefinition(start_date="2024-01-01"),
    backfill_policy=dg.BackfillPolicy.single_run(),
)
def bare_readings(context: dg.AssetExecutionContext) -> dg.MaterializeResult:
    """Sensor readings of the run's days, replaced with DELETE + COPY in one transaction."""
    days = list(context.partition_keys)
    frame = pd.concat([day_readings(day) for day in days], ignore_index=True)
    arrow = pa.Table.from_pandas(frame, preserve_index=False)
    # The platform's trick (postgres_store._zoned_as_utc_text), so the baseline has it too: Arrow's CSV writer
    # formats a zoned timestamp through the time zone database, value by value; the UTC wall time with "+00" is
    # the same instant for PostgreSQL and twenty times faster to write.
    for i, field in enumerate(arrow.schema):
        if pa.types.is_timestamp(field.type) and field.type.tz is not None:
            wall = arrow.column(i).cast(pa.timestamp(field.type.unit)).cast(pa.string())
            arrow = arrow.set_column(i, field.name, pc.binary_join_element_wise(wall, "+00", ""))
    options = pa_csv.WriteOptions(include_header=False, quoting_style="needed")
    with psycopg.connect(os.environ["IDEM_PG_DSN"]) as conn, conn.cursor() as cur:
        cur.execute("CREATE SCHEMA IF NOT EXISTS bare")
        cur.execute(sql.SQL(
            """CREATE TABLE IF NOT EXISTS {} (reading_id bigint, sensor text, value double precision, ok boolean,
               read_at timestamptz, partition_date date, PRIMARY KEY (partition_date, reading_id))"""
        ).format(TABLE))
        cur.execute(sql.SQL("DELETE FROM {} WHERE partition_date = ANY(%s::date[])").format(TABLE), (days,))
        columns = sql.SQL(", ").join(map(sql.Identifier, frame.columns))
        with cur.copy(sql.SQL("COPY {} ({}) FROM STDIN (FORMAT csv)").format(TABLE, columns)) as copy:
            for offset in range(0, arrow.num_rows, SLICE_ROWS):
                buf = io.BytesIO()
                pa_csv.write_csv(arrow.slice(offset, SLICE_ROWS), buf, options)
                copy.write(buf.getvalue())
    return dg.MaterializeResult(metadata={"rows": len(frame)})


defs = dg.Definitions(assets=[bare_readings], executor=dg.in_process_executor)
