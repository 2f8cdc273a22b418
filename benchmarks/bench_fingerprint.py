"""Fingerprint throughput on a 1M-row, 10-column frame (target >= 1M rows/s), beside pandas' own row hashing.

    .venv/bin/python benchmarks/bench_fingerprint.py [--rows 1000000] [--repeat 5]
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

import pandas as pd

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from benchmarks.common import MIXED, machine, median_seconds, mixed_frame, print_table  # noqa: E402
from idem_platform.storage.fingerprint import fingerprint, partition_digests  # noqa: E402

TARGET_ROWS_PER_SECOND = 1_000_000


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--rows", type=int, default=1_000_000)
    parser.add_argument("--repeat", type=int, default=5)
    args = parser.parse_args()
    frame = mixed_frame(args.rows)
    ours = median_seconds(lambda: fingerprint(frame, MIXED), args.repeat)
    per_day = median_seconds(lambda: partition_digests(frame, MIXED, ["2026-01-05"]), args.repeat)
    pandas_rows = median_seconds(lambda: pd.util.hash_pandas_object(frame, index=False).sum(), args.repeat)
    rate = args.rows / ours
    print_table(
        f"fingerprint of {args.rows:,} rows x {len(frame.columns)} columns ({machine()})",
        [
            ("pandas hash_pandas_object (baseline)", f"{pandas_rows:.3f} s  {args.rows / pandas_rows:,.0f} rows/s"),
            ("idem fingerprint", f"{ours:.3f} s  {rate:,.0f} rows/s"),
            ("idem partition_digests (per day)", f"{per_day:.3f} s  {args.rows / per_day:,.0f} rows/s"),
            ("ratio to target 1M rows/s", f"{rate / TARGET_ROWS_PER_SECOND:.2f}x ({'met' if rate >= TARGET_ROWS_PER_SECOND else 'NOT met'})"),
            ("ratio to pandas row hashing", f"{pandas_rows / ours:.2f}x"),
        ],
    )


if __name__ == "__main__":
    main()
