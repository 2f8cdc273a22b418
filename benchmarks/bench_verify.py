"""Verifying a year must not cost more than writing it: `idem verify` of 365 days x ~1,000 rows vs their range run.

    .venv/bin/python benchmarks/bench_verify.py [--days 365] [--rows-per-day 1000] [--repeat 3]

The asset is `bench_readings` of benchmarks/backfill_defs.py (an `@idem_asset` on the PostgreSQL sink), in a fresh
database. Each round, interleaved:

- write: one range run of the days (`dg.materialize` with the partition-range tags, as `dagster asset materialize
  --partition-range` runs it in process): compute, coerce, fingerprint, audit, publish, ledger;
- verify: `verify_partitions` of the same days (what `idem verify --range` and `verify_job` run): the asset
  recomputed through its own code path without publishing, the sink read back, fingerprinted, compared with the
  ledger; its parts (recompute, sink read, ledger read) are timed separately in the same round.

ratio = median verify / median write (target <= 1.0).
"""

from __future__ import annotations

import datetime as dt
import os
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from benchmarks.common import fresh_database, load_average, machine, print_ratio, print_report, print_times  # noqa: E402
from benchmarks.readings import days_from, readings_parser  # noqa: E402


def main() -> int:
    args = readings_parser(__doc__).parse_args()
    os.environ["IDEM_BENCH_ROWS_PER_DAY"] = str(args.rows_per_day)
    days = days_from(dt.date(2025, 1, 1), args.days)

    with fresh_database("idem_bench_verify") as dsn:
        os.environ["IDEM_PG_DSN"] = dsn
        import dagster as dg

        from benchmarks import backfill_defs
        from idem_platform import verify_partitions
        from idem_platform.storage.partition_store import AssetTarget
        from idem_platform.verification import published_digests, recompute, sink_frame

        defs = backfill_defs.defs
        asset = backfill_defs.bench_readings
        tags = {"dagster/asset_partition_range_start": days[0], "dagster/asset_partition_range_end": days[-1]}
        quiet = {"loggers": {"console": {"config": {"log_level": "WARNING"}}}}
        io_manager = defs.resources["warehouse_io"]
        target = AssetTarget.from_metadata("bench_readings", asset.specs_by_key[asset.key].metadata)

        def write() -> float:
            start = time.perf_counter()
            result = dg.materialize([asset], tags=tags, resources=defs.resources, run_config=quiet,
                                    instance=dg.DagsterInstance.ephemeral())
            assert result.success
            return time.perf_counter() - start

        parts: dict[str, list[float]] = {"recompute": [], "sink read": [], "ledger read": []}

        def verify() -> float:
            start = time.perf_counter()
            verdicts = verify_partitions(defs, "bench_readings", days)
            elapsed = time.perf_counter() - start
            assert {v.status for v in verdicts} == {"identical"}, {v.status for v in verdicts}
            for label, fn in (("recompute", lambda: recompute(defs, "bench_readings", days)),
                              ("sink read", lambda: sink_frame(io_manager, target, days)),
                              ("ledger read", lambda: published_digests(io_manager, target, days))):
                t0 = time.perf_counter()
                fn()
                parts[label].append(time.perf_counter() - t0)
            return elapsed

        print(f"bench_verify: {machine()}; {load_average()}")
        print(f"{args.days} days x {args.rows_per_day} rows ({args.days * args.rows_per_day} rows), {args.repeat} rounds")
        write()  # the first publish creates the table and every day; the rounds then rewrite them
        times: dict[str, list[float]] = {"write (range run)": [], "verify": []}
        for _ in range(args.repeat):
            times["write (range run)"].append(write())
            times["verify"].append(verify())
        print_times({**times, **{f"  verify part: {k}": v for k, v in parts.items()}}, units=args.days * args.rows_per_day)
        import statistics

        ratio = statistics.median(times["verify"]) / statistics.median(times["write (range run)"])
        print_report("verify parts (median s)", ", ".join(f"{k} {statistics.median(v):.2f}" for k, v in parts.items()))
        print_ratio("verify / write of a year", ratio, "<= 1.0", ratio <= 1.0)
    return 0


if __name__ == "__main__":
    sys.exit(main())
