"""Benchmark-only code location for bench_backfill.py: one small daily asset on the platform's PostgreSQL sink.

    dagster asset materialize -m benchmarks.backfill_defs --select bench_readings --partition-range A...B

`bench_readings` is an `@idem_asset` like the project's own (daily partitions, single-run backfill policy,
declared columns and key, fingerprint as data version) with a cheap, deterministic compute: ROWS_PER_DAY rows
per day from numpy. Its own compute time (the body of the function only: what a user writes) is appended as
one JSON line per call to the file named by IDEM_BENCH_COMPUTE_LOG, so the benchmark can subtract exactly
what the asset itself spent from the run's wall-clock time. Everything else in the run is platform overhead:
process start, definitions and instance loading, coerce + fingerprint + audit, the write, the ledger,
Dagster's events and per-partition metadata.
"""

import json
import os
import time

import dagster as dg
import pandas as pd

from benchmarks.readings import COMPUTE_LOG_ENV, READING_COLUMNS, daily_readings

from idem_platform.declare import idem_asset
from idem_platform.resources import PostgresResource
from idem_platform.storage.postgres_store import PostgresPartitionIOManager

SCHEMA = "bench"


@idem_asset(columns=READING_COLUMNS, key=["reading_id"], io_manager_key="warehouse_io", group_name="bench")
def bench_readings(context: dg.AssetExecutionContext) -> pd.DataFrame:
    """A small daily asset: ROWS_PER_DAY sensor readings per day."""
    start = time.perf_counter()
    frame = daily_readings(list(context.partition_keys))
    elapsed = time.perf_counter() - start
    log = os.environ.get(COMPUTE_LOG_ENV)
    if log:
        with open(log, "a") as out:
            out.write(json.dumps({"run_id": context.run_id, "days": len(context.partition_keys), "seconds": elapsed}) + "\n")
    return frame


defs = dg.Definitions(
    assets=[bench_readings],
    resources={"warehouse_io": PostgresPartitionIOManager(postgres=PostgresResource(), db_schema=SCHEMA)},
)
