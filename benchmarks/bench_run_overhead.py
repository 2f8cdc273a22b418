"""The platform's own share of a run: a one-day and a 365-day run of an `@idem_asset` (checks included) vs a bare
`@dg.asset` that writes the same rows with plain COPY, by the same command line on the same Dagster instance.

    .venv/bin/python benchmarks/bench_run_overhead.py [--days 365] [--rows-per-day 1000] [--repeat 3]
                                                     [--event-batch-size N]

- platform: `dagster asset materialize -m benchmarks.overhead_platform_defs --select readings` (a per-day
  `@idem_asset` in a code location made by `idem_definitions`, public API only): the run materializes the day(s)
  AND runs the generated checks (`fingerprint_matches_ledger`), as `--select` of an asset does.
- bare: `dagster asset materialize -m benchmarks.overhead_bare_defs --select bare_readings` (DELETE the run's days
  + pyarrow CSV COPY into a plain keyed table, one transaction; single-run backfill policy and the in-process
  executor, as the platform's).
- Both on one migrated dagster-postgres instance written by the platform (`services.DAGSTER_YAML`, its pooled
  event log included), one fresh database; the same environment, including Dagster's event batching
  (`DAGSTER_EVENT_BATCH_SIZE`), which the platform turns on for its code locations (`IDEM_EVENT_BATCH_SIZE`,
  1000) and so the bare side gets too (`--event-batch-size 0`: both one event at a time, Dagster's default);
  interleaved, wall clock of the whole command, medians; before every run the server is settled off the clock
  (`settle_server`: VACUUM, CHECKPOINT), so no run pays for the previous one's dead rows and WAL.
- Three kinds of run, each repetition: one day with new content; the 365 days with new content (every row of every
  day differs from what the table holds: a backfill of new data); and the same 365 days again with the same
  content (an identical rerun: a retry, a backfill re-run over an unchanged source). The platform does not rewrite
  a day that already holds the content and that nobody wrote since its publish; the bare asset rewrites it.

Where the time goes, per side (medians, from the run's own event log, plus the imports measured apart):
start-up (process start, imports, definitions, instance, run creation: until the run's first step starts), the
asset step, the check steps, and the end (the last step to the process exit).

ratio = platform time / bare time: target <= 1.3 for one day, <= 1.15 for the range (printed for both kinds of
range run).
"""

from __future__ import annotations

import datetime as dt
import statistics
import subprocess
import sys
import time
from pathlib import Path

import psycopg

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from benchmarks.common import (  # noqa: E402
    dagster_instance, dagster_materialize, load_average, machine, print_ratio, print_report, print_times, settle_server,
)
from benchmarks.readings import CONTENT_ENV, days_from, readings_parser  # noqa: E402

FIRST_DAY = dt.date(2025, 1, 1)
TARGETS = {"one day": 1.3, "range": 1.15, "range again": 1.15}
# What each kind of run writes: IDEM_BENCH_CONTENT by repetition (benchmarks/readings.py). "range again" writes
# what "range" wrote just before it in the same repetition: an identical rerun.
CONTENT = {"one day": lambda r: 10_000 + r, "range": lambda r: r + 1, "range again": lambda r: r + 1}
LABELS = {"one day": "one-day run, new content", "range": "{days}-day range run, new content",
          "range again": "{days}-day range run, identical rerun"}
SIDES = {"platform": ("benchmarks.overhead_platform_defs", "readings"),
         "bare": ("benchmarks.overhead_bare_defs", "bare_readings")}
PHASES = ("start-up", "asset step", "check steps", "end", "events")


def materialize(env: dict[str, str], side: str, *partition_args: str, content: int = 0) -> tuple[float, float]:
    """(wall seconds of the command, epoch seconds it started); `content` picks the rows (benchmarks/readings.py)."""
    run = dagster_materialize({**env, CONTENT_ENV: str(content)}, *SIDES[side], *partition_args)
    return run.wall_s, run.started


def phases(dsn: str, started: float, wall: float) -> dict[str, float]:
    """Start-up, asset step, check steps and end of the latest run, from its event log."""
    with psycopg.connect(dsn) as conn:
        run_id = conn.execute("SELECT run_id FROM runs ORDER BY create_timestamp DESC LIMIT 1").fetchone()[0]
        rows = conn.execute(
            """SELECT step_key, dagster_event_type, extract(epoch FROM timestamp)::float8 FROM event_logs
               WHERE run_id = %s AND dagster_event_type IN ('STEP_START', 'STEP_SUCCESS', 'STEP_FAILURE')""",
            (run_id,),
        ).fetchall()
        events = conn.execute("SELECT count(*) FROM event_logs WHERE run_id = %s", (run_id,)).fetchone()[0]
    steps: dict[str, dict[str, float]] = {}
    for step, kind, at in rows:
        steps.setdefault(step, {})["start" if kind == "STEP_START" else "end"] = at
    asset = [s for s in steps if not s.endswith(("_fingerprint_matches_ledger", "_unique_key", "_row_count_matches_upstream"))]
    checks = [s for s in steps if s not in asset]
    first = min(s["start"] for s in steps.values())
    last = max(s["end"] for s in steps.values())
    # Timestamps are the server's clock in UTC without zone: align on the process start by the asset step's
    # duration only (durations need no common clock); start-up = first step start - command start.
    offset = _clock_offset(dsn)
    out = {
        "start-up": first + offset - started,
        "asset step": sum(steps[s]["end"] - steps[s]["start"] for s in asset),
        "check steps": sum(steps[s]["end"] - steps[s]["start"] for s in checks),
    }
    out["end"] = wall - out["start-up"] - (last - first)
    out["events"] = events  # what the run wrote to the event log (Dagster stores them one by one by default)
    return out


def _clock_offset(dsn: str) -> float:
    """Local epoch - the event log's epoch for the same instant (the event log stores naive UTC)."""
    with psycopg.connect(dsn) as conn:
        server = conn.execute("SELECT extract(epoch FROM (now() AT TIME ZONE 'UTC'))::float8").fetchone()[0]
    return time.time() - server


def import_seconds(env: dict[str, str], module: str, repeat: int = 3) -> float:
    """Median time of a fresh interpreter importing the code location module (what every run loads)."""
    times = []
    for _ in range(repeat):
        start = time.perf_counter()
        subprocess.run([sys.executable, "-c", f"import {module}"], env=env, cwd=ROOT, check=True)
        times.append(time.perf_counter() - start)
    return statistics.median(times)


def main() -> int:
    parser = readings_parser(__doc__)
    parser.add_argument("--event-batch-size", type=int, default=None,
                        help="DAGSTER_EVENT_BATCH_SIZE for both sides (default: what the platform sets, "
                             "IDEM_EVENT_BATCH_SIZE; 0: Dagster's default, one event at a time)")
    args = parser.parse_args()
    days = days_from(FIRST_DAY, args.days)
    whole = ("--partition-range", f"{days[0]}...{days[-1]}")
    runs = {"one day": ("--partition", days[len(days) // 2]), "range": whole, "range again": whole}

    from idem_platform import settings

    batch = args.event_batch_size if args.event_batch_size is not None else settings.current().event_batch_size
    print(f"{machine()}; {load_average()}", flush=True)
    with dagster_instance("idem_bench_overhead", IDEM_BENCH_ROWS_PER_DAY=str(args.rows_per_day)) as (dsn, env, _):
        # The platform turns Dagster's event batching on for its code locations; the bare side gets it too.
        env["DAGSTER_EVENT_BATCH_SIZE"] = str(batch)
        env["IDEM_EVENT_BATCH_SIZE"] = str(batch)
        for side in SIDES:  # first runs create the tables and the ledger; every timed run then rewrites the days
            materialize(env, side, *whole)

        wall = {(run, side): [] for run in runs for side in SIDES}
        split = {(run, side): {p: [] for p in PHASES} for run in runs for side in SIDES}
        for round_ in range(args.repeat):
            for run, partition_args in runs.items():
                for side in (SIDES if round_ % 2 == 0 else reversed(SIDES)):
                    settle_server(dsn)  # the previous run's dead rows and WAL, cleaned off the clock for either side
                    seconds, started = materialize(env, side, *partition_args, content=CONTENT[run](round_))
                    wall[(run, side)].append(seconds)
                    for phase, value in phases(dsn, started, seconds).items():
                        split[(run, side)][phase].append(value)
            print(f"  round {round_ + 1}: " + ", ".join(f"{r} {s} {wall[(r, s)][-1]:.1f} s" for r, s in wall), flush=True)
        imports = {side: import_seconds(env, SIDES[side][0]) for side in SIDES}
        with psycopg.connect(dsn) as conn:  # both sides hold every day's rows, once
            for table in ("warehouse.readings", "bare.readings"):
                count = conn.execute(f"SELECT count(*) FROM {table}").fetchone()[0]
                assert count == args.days * args.rows_per_day, (table, count)

    print(f"\nRuns of {args.rows_per_day:,} rows per day; {args.repeat} repetitions, interleaved; "
          f"DAGSTER_EVENT_BATCH_SIZE={batch or 'unset (0)'} on both sides; {load_average()}\n")
    print_times({f"{run}, {side}": values for (run, side), values in wall.items()})
    print("\nwhere the time goes (medians, s; start-up = process start to the first step, from the run's event log; "
          "events: how many the run stored):")
    print(f"  {'':<22}" + "".join(f"{p:>13}" for p in PHASES))
    for (run, side), figures in split.items():
        print(f"  {run + ', ' + side:<22}" + "".join(f"{statistics.median(figures[p]):>13.{0 if p == 'events' else 2}f}" for p in PHASES))
    print(f"  importing the code location module in a fresh interpreter: "
          + ", ".join(f"{side} {seconds:.2f} s" for side, seconds in imports.items()))
    print()
    for run in runs:
        ratio = statistics.median(wall[(run, "platform")]) / statistics.median(wall[(run, "bare")])
        label = LABELS[run].format(days=args.days)
        print_ratio(f"run overhead: {label}, platform (checks included) / bare dagster asset + COPY", ratio,
                    f"<= {TARGETS[run]}", ratio <= TARGETS[run])
    extra = {run: statistics.median(wall[(run, "platform")]) - statistics.median(wall[(run, "bare")]) for run in runs}
    print_report("run overhead: the platform's extra seconds", ", ".join(f"{run} {s:+.2f} s" for run, s in extra.items()))
    return 0


if __name__ == "__main__":
    sys.exit(main())
