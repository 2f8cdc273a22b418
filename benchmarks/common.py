"""Shared helpers for the side-by-side benchmark scripts: frames, timing, the printed table."""

from __future__ import annotations

import platform
import statistics
import time
from collections.abc import Callable

import numpy as np
import pandas as pd

from idem_platform.storage.schema import TableDeclaration

MIXED_COLUMNS = {
    "id": "int", "name": "string", "email": "string", "city": "string", "score": "float", "amount": "float",
    "active": "bool", "born": "date", "seen_at": "timestamp", "visits": "int",
}
MIXED = TableDeclaration.build(MIXED_COLUMNS, key=["id"])


def mixed_frame(rows: int, day: str = "2026-01-05", seed: int = 7) -> pd.DataFrame:
    """`rows` rows of 10 mixed-type columns (plus partition_date), in the declared dtypes."""
    rng = np.random.default_rng(seed)
    ids = np.arange(rows)
    return MIXED.coerce(pd.DataFrame({
        "id": ids,
        "name": pd.Series(rng.integers(0, 50_000, rows)).map("name-{}".format),
        "email": pd.Series(ids).map("user{}@example.com".format),
        "city": pd.Series(rng.integers(0, 500, rows)).map("city-{}".format),
        "score": rng.random(rows), "amount": rng.normal(100, 15, rows).round(2),
        "active": rng.random(rows) < 0.5,
        "born": pd.Timestamp("1950-01-01") + pd.to_timedelta(rng.integers(0, 20_000, rows), "D"),
        "seen_at": pd.Timestamp(day, tz="UTC") + pd.to_timedelta(rng.integers(0, 86_400_000_000, rows), "us"),
        "visits": rng.integers(0, 1000, rows),
        "partition_date": day,
    }))


def median_seconds(fn: Callable[[], object], repeat: int = 3) -> float:
    times = []
    for _ in range(repeat):
        start = time.perf_counter()
        fn()
        times.append(time.perf_counter() - start)
    return statistics.median(times)


def machine() -> str:
    import os

    return f"{platform.machine()}, {os.cpu_count()} cores, Python {platform.python_version()}, pandas {pd.__version__}"


def print_table(title: str, rows: list[tuple[str, str]]) -> None:
    print(f"\n{title}\n" + "-" * len(title))
    width = max(len(k) for k, _ in rows)
    for key, value in rows:
        print(f"{key:<{width}}  {value}")
