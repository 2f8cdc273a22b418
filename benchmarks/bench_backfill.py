"""Backfill overhead: 365 daily partitions of a small asset in ONE `dagster asset materialize --partition-range` run.

    .venv/bin/python benchmarks/bench_backfill.py [--days 365] [--repeat 3] [--single-runs 8] [--rows-per-day 100]

The asset is `bench_readings` of benchmarks/backfill_defs.py (an `@idem_asset` on `PostgresPartitionIOManager`,
100 rows per day) run by the real command line on a migrated dagster-postgres instance in a temporary
DAGSTER_HOME, instance and warehouse in one fresh database (as the CLI tests do):

- range run: `dagster asset materialize -m benchmarks.backfill_defs --select bench_readings
  --partition-range 2025-01-01...2025-12-31`, --repeat times (each republishes every day), wall-clock of the
  whole command. The asset's own compute (its function body) is measured inside the run and logged to a file,
  so: overhead per partition = (wall - asset compute) / days (target <= 50 ms). It includes everything the
  user does not write: process start, definitions and instance loading, run creation, the platform's coerce,
  fingerprint, audit, write and ledger, and Dagster's planned/materialization events for every day.
- separate runs: 365 one-partition runs would take ~20 minutes, so --single-runs runs of
  `--partition <day>` are timed and the per-run figure is extrapolated to 365 (labelled as such; no target).
- where the range run's time goes (re-measured in this process, same database, same frame): what `idem_asset`
  does around the asset function (partition-key validation, coerce, fingerprint), `publish_partitions` of the
  365 days (validation again, audit, the write, ledger; 100-row days are below the sink's swap threshold, so
  each day is replaced in place, DELETE + COPY into its day partition, in transactions of 100 days), and the
  partition-key validation alone; the rest of the wall-clock time is Dagster's (process start, definitions,
  run creation, event storage). The CPU time of the dagster processes is printed too: unlike wall time it
  hardly moves when other jobs load the machine.
"""

from __future__ import annotations

import argparse
import datetime as dt
import json
import os
import statistics
import sys
import time
from pathlib import Path

import psycopg

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from benchmarks.common import dagster_instance, dagster_materialize, load_average, machine, print_ratio, print_report, print_times  # noqa: E402

FIRST_DAY = dt.date(2025, 1, 1)
TARGET_MS = 50.0


def materialize(env: dict[str, str], *partition_args: str) -> tuple[float, float]:
    """(wall seconds, CPU seconds of the dagster process and its step process) of one CLI run."""
    run = dagster_materialize(env, "benchmarks.backfill_defs", "bench_readings", *partition_args, timeout=600)
    return run.wall_s, run.cpu_s


def compute_seconds(log: Path, skip: int) -> list[float]:
    """The asset's own compute time of every call logged after the first `skip` lines."""
    lines = log.read_text().splitlines()[skip:] if log.exists() else []
    return [json.loads(line)["seconds"] for line in lines]


def logged_calls(log: Path) -> int:
    return len(log.read_text().splitlines()) if log.exists() else 0


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--days", type=int, default=365)
    parser.add_argument("--repeat", type=int, default=3)
    parser.add_argument("--single-runs", type=int, default=3)
    parser.add_argument("--rows-per-day", type=int, default=100)
    args = parser.parse_args()
    days = [(FIRST_DAY + dt.timedelta(days=n)).isoformat() for n in range(args.days)]
    span = f"{days[0]}...{days[-1]}"

    print(f"{machine()}; {load_average()}", flush=True)
    with dagster_instance("idem_bench_backfill", IDEM_BENCH_ROWS_PER_DAY=str(args.rows_per_day)) as (dsn, env, tmp):
        log = tmp / "compute.jsonl"
        env["IDEM_BENCH_COMPUTE_LOG"] = str(log)

        # The platform's own parts of a range run, re-measured in this process after each run (same load).
        os.environ["IDEM_PG_DSN"] = dsn
        from benchmarks.backfill_defs import READING_COLUMNS, SCHEMA, daily_readings
        from idem_platform.partitions import validate_partition_keys
        from idem_platform.resources import PostgresResource
        from idem_platform.storage.audit import AuditRules
        from idem_platform.storage.fingerprint import combine, partition_digests
        from idem_platform.storage.partition_store import AssetTarget, publish_partitions
        from idem_platform.storage.postgres_store import PostgresTableSink
        from idem_platform.storage.schema import TableDeclaration

        decl = TableDeclaration.build(READING_COLUMNS, ["reading_id"])
        target = AssetTarget("bench_readings", decl, AuditRules())
        sink = PostgresTableSink(PostgresResource(dsn=dsn), SCHEMA)
        raw = daily_readings(days, args.rows_per_day)
        frame = decl.coerce(raw)

        runs: dict[str, dict[str, list[float]]] = {
            kind: {"wall": [], "cpu": [], "compute": []}
            for kind in ("range", "single")
        }
        parts: dict[str, list[float]] = {"wrapper": [], "write": [], "validate": []}

        def run(kind: str, run_env: dict[str, str], *partition_args: str) -> None:
            before = logged_calls(log)
            wall, cpu = materialize(run_env, *partition_args)
            runs[kind]["wall"].append(wall)
            runs[kind]["cpu"].append(cpu)
            runs[kind]["compute"].append(sum(compute_seconds(log, before)))

        for _ in range(args.repeat):
            run("range", env, "--partition-range", span)
            print(f"  range run: {runs['range']['wall'][-1]:.1f} s", flush=True)
            start = time.perf_counter()  # what idem_asset does around the asset function
            validate_partition_keys(days)
            combine(list(partition_digests(decl.coerce(raw), decl, days).values()))
            parts["wrapper"].append(time.perf_counter() - start)
            start = time.perf_counter()
            publish_partitions(sink, PostgresResource(dsn=dsn), target, days, frame, "in-process")
            parts["write"].append(time.perf_counter() - start)
            start = time.perf_counter()
            validate_partition_keys(days)
            parts["validate"].append(time.perf_counter() - start)
        for day in days[: args.single_runs]:
            run("single", env, "--partition", day)

        with psycopg.connect(dsn) as conn:
            published = conn.execute(
                "SELECT count(DISTINCT partition) FROM idem.ledger WHERE asset = 'bench_readings'"
            ).fetchone()[0]
        assert published == len(days), (published, len(days))

    med = {kind: {k: statistics.median(v) for k, v in figures.items()} for kind, figures in runs.items()}
    wall, compute, cpu = med["range"]["wall"], med["range"]["compute"], med["range"]["cpu"]
    single_wall, single_own = med["single"]["wall"], med["single"]["compute"]
    wrapper, write, validate = (statistics.median(parts[k]) for k in ("wrapper", "write", "validate"))
    per_partition_ms = (wall - compute) / len(days) * 1000
    marginal_ms = ((wall - compute) - (single_wall - single_own)) / (len(days) - 1) * 1000

    print(f"\nBackfill of {len(days)} daily partitions x {args.rows_per_day} rows (bench_readings, PostgreSQL sink); "
          f"{load_average()}\n")
    table = {
        f"range run ({len(days)} days), wall": runs["range"]["wall"],
        "range run, CPU of the dagster processes": runs["range"]["cpu"],
        "range run, asset's own compute": runs["range"]["compute"],
    }
    table["single-day run, wall"] = runs["single"]["wall"]
    table["single-day run, asset's own compute"] = runs["single"]["compute"]
    print_times(table)
    print(f"\nwhere a range run's {wall:.1f} s go (medians; the platform's parts re-measured in this process after each run):")
    rows = [
        ("asset's own compute (measured inside the run)", compute),
        ("idem_asset around it: validate keys, coerce, fingerprint", wrapper),
        (f"publish_partitions of {len(days)} days: validate keys, audit, write in place, ledger", write),
        ("the rest: process start, definitions, run creation, Dagster events", wall - compute - wrapper - write),
        ("  within the two platform parts: partition-key validation, twice", 2 * validate),
        ("fixed cost of one run (single-day run minus its compute)", single_wall - single_own),
    ]
    for name, seconds in rows:
        print(f"  {name:<80} {seconds:6.2f} s")
    print()
    print_ratio(
        f"backfill {len(days)} partitions in one run: overhead per partition, ms", per_partition_ms,
        f"<= {TARGET_MS:g} ms", per_partition_ms <= TARGET_MS,
    )
    print_report(
        "backfill: CPU overhead per partition (less sensitive to other load)",
        f"{(cpu - compute) / len(days) * 1000:.1f} ms ((dagster processes' CPU - asset compute) / {len(days)})",
    )
    print_report(
        "backfill: marginal overhead per extra partition in a range run",
        f"{marginal_ms:.1f} ms ((range overhead - single-run overhead) / {len(days) - 1})",
    )
    print_report(
        f"backfill: {len(days)} separate runs",
        f"{single_wall:.2f} s per run (median of {len(runs['single']['wall'])} measured) -> "
        f"{single_wall * len(days) / 60:.1f} min EXTRAPOLATED for {len(days)} runs, vs {wall:.1f} s measured "
        f"for one range run ({single_wall * len(days) / wall:.0f}x)",
    )
    return 0


if __name__ == "__main__":
    sys.exit(main())
