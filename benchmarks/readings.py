"""The rows every run-overhead benchmark writes: `rows_per_day` sensor readings per day, the same days giving the
same rows for the same `IDEM_BENCH_CONTENT` (another value: other values in every row, as a backfill of new data
writes). Imports nothing of the platform, so the bare Dagster baseline (`overhead_bare_defs.py`) loads no more
than it needs."""

import argparse
import datetime as dt
import os

import numpy as np
import pandas as pd

ROWS_PER_DAY = int(os.environ.get("IDEM_BENCH_ROWS_PER_DAY", "100"))
COMPUTE_LOG_ENV = "IDEM_BENCH_COMPUTE_LOG"
CONTENT_ENV = "IDEM_BENCH_CONTENT"

READING_COLUMNS = {
    "reading_id": "int", "sensor": "string", "value": "float", "ok": "bool", "read_at": "timestamp",
}


def day_readings(day: str, rows_per_day: int = ROWS_PER_DAY) -> pd.DataFrame:
    """One day's readings (with `partition_date`)."""
    rng = np.random.default_rng([int(day.replace("-", "")), int(os.environ.get(CONTENT_ENV, "0"))])
    return pd.DataFrame({
        "reading_id": np.arange(rows_per_day),
        "sensor": [f"sensor-{n}" for n in rng.integers(0, 50, rows_per_day)],
        "value": rng.normal(20, 5, rows_per_day),
        "ok": rng.random(rows_per_day) < 0.95,
        "read_at": pd.Timestamp(day, tz="UTC") + pd.to_timedelta(rng.integers(0, 86_400, rows_per_day), "s"),
        "partition_date": day,
    })


def daily_readings(days: list[str], rows_per_day: int = ROWS_PER_DAY) -> pd.DataFrame:
    """`rows_per_day` readings for each day."""
    return pd.concat([day_readings(day, rows_per_day) for day in days], ignore_index=True)


def readings_parser(doc: str, days: int = 365) -> argparse.ArgumentParser:
    """The options every readings benchmark takes (--days, --rows-per-day, --repeat); add more, then parse."""
    parser = argparse.ArgumentParser(description=doc.splitlines()[0])
    parser.add_argument("--days", type=int, default=days)
    parser.add_argument("--rows-per-day", type=int, default=1000)
    parser.add_argument("--repeat", type=int, default=3)
    return parser


def days_from(first: dt.date, count: int) -> list[str]:
    """`count` consecutive days from `first`, as partition keys."""
    return [(first + dt.timedelta(days=n)).isoformat() for n in range(count)]
