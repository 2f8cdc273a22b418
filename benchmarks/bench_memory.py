"""Peak memory (RSS) of one 1M-row partition overwrite, as a multiple of the DataFrame's in-memory size.

    .venv/bin/python benchmarks/bench_memory.py [--rows 1000000] [--repeat 2]

Each measurement is a fresh Python process (so nothing earlier in the run has grown its heap) that:

1. imports pandas, pyarrow, psycopg and the platform, connects once, and reads its RSS: the baseline;
2. builds the 10-column mixed frame (`frame.memory_usage(deep=True).sum()` is "the frame's size"), frees the
   construction temporaries (gc + malloc_trim) and resets the kernel's high-water mark (`/proc/self/clear_refs`),
   so the peak below belongs to the write, not to building the frame;
3. overwrites the day (the parent published a 1M-row day first, so it is a real replace: with the platform's
   sink a stage + swap, the digests and audit in a thread while the pipelined COPY stages the rows), then reads
   the high-water mark VmHWM (= `getrusage(RUSAGE_SELF).ru_maxrss`).

peak over baseline = VmHWM - baseline: the frame itself plus everything the write allocates; the target is
<= 2.5x the frame's size. The raw CSV-stream COPY of the same frame is measured the same way, beside it.
"""

from __future__ import annotations

import argparse
import io
import json
import statistics
import subprocess
import sys
import uuid
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from benchmarks.common import fresh_database, load_average, machine, print_ratio, print_report  # noqa: E402

DAY = "2026-01-05"
SCHEMA = "bench"
TARGET_RATIO = 2.5
PATHS = {
    "idem": "idem (PostgresPartitionIOManager)",
    "raw": "raw COPY, CSV stream (baseline)",
}


def child(path: str, dsn: str, rows: int) -> None:
    """One measurement; prints a JSON line."""
    import pyarrow as pa
    import pyarrow.csv as pa_csv
    import psycopg
    from psycopg import sql

    from benchmarks.common import (
        MIXED, frame_bytes, mixed_frame, peak_rss_bytes, release_free_memory, reset_peak_rss, rss_bytes,
    )
    from idem_platform.resources import PostgresResource
    from idem_platform.storage.audit import AuditRules
    from idem_platform.storage.partition_store import AssetTarget, publish_partitions
    from idem_platform.storage.postgres_store import PostgresPartitionIOManager

    postgres = PostgresResource(dsn=dsn)
    with psycopg.connect(dsn) as conn:
        conn.execute("SELECT 1")
    release_free_memory()
    baseline = rss_bytes()
    frame = mixed_frame(rows, DAY)
    size = frame_bytes(frame)
    release_free_memory()
    with_frame = rss_bytes()
    reset_peak_rss()
    if path == "idem":
        sink = PostgresPartitionIOManager(postgres=postgres, db_schema=SCHEMA).sink()
        publish_partitions(sink, postgres, AssetTarget("mixed", MIXED, AuditRules()), [DAY], frame, str(uuid.uuid4()))
    else:
        with psycopg.connect(dsn) as conn:
            table = sql.Identifier(SCHEMA, "plain_csv")
            conn.execute(sql.SQL("TRUNCATE {}").format(table))
            arrow = pa.Table.from_pandas(frame, preserve_index=False)
            options = pa_csv.WriteOptions(include_header=False, quoting_style="needed")
            with conn.cursor() as cur, cur.copy(sql.SQL("COPY {} FROM STDIN (FORMAT csv)").format(table)) as copy:
                for offset in range(0, arrow.num_rows, 100_000):
                    buf = io.BytesIO()
                    pa_csv.write_csv(arrow.slice(offset, 100_000), buf, options)
                    copy.write(buf.getvalue())
    peak = peak_rss_bytes()
    print(json.dumps({"baseline": baseline, "with_frame": with_frame, "peak": peak, "frame": size}))


def measure(path: str, dsn: str, rows: int) -> dict:
    done = subprocess.run(
        [sys.executable, "-W", "ignore", __file__, "--child", path, "--dsn", dsn, "--rows", str(rows)],
        capture_output=True, text=True, cwd=ROOT, timeout=600,
    )
    if done.returncode != 0:
        sys.stderr.write(done.stdout[-2000:] + done.stderr[-3000:])
        raise SystemExit(f"memory measurement of {path} failed")
    return json.loads(done.stdout.strip().splitlines()[-1])


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rows", type=int, default=1_000_000)
    parser.add_argument("--repeat", type=int, default=2)
    parser.add_argument("--child", choices=sorted(PATHS), help=argparse.SUPPRESS)
    parser.add_argument("--dsn", help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.child:
        child(args.child, args.dsn, args.rows)
        return 0

    import psycopg
    from psycopg import sql

    from benchmarks.common import MIXED, mixed_frame, plain_columns_sql
    from idem_platform.resources import PostgresResource
    from idem_platform.storage.audit import AuditRules
    from idem_platform.storage.partition_store import AssetTarget, publish_partitions
    from idem_platform.storage.postgres_store import PostgresPartitionIOManager

    print(f"{machine()}; {load_average()}", flush=True)
    paths = list(PATHS)
    results: dict[str, list[dict]] = {path: [] for path in paths}
    with fresh_database() as dsn:
        postgres = PostgresResource(dsn=dsn)
        frame = mixed_frame(args.rows, DAY)  # set-up: the day every measured write replaces
        publish_partitions(PostgresPartitionIOManager(postgres=postgres, db_schema=SCHEMA).sink(), postgres,
                           AssetTarget("mixed", MIXED, AuditRules()), [DAY], frame, "setup")
        del frame
        with psycopg.connect(dsn) as conn:
            conn.execute(sql.SQL("CREATE TABLE {} ({})").format(sql.Identifier(SCHEMA, "plain_csv"), plain_columns_sql(MIXED)))
        for _ in range(args.repeat):
            for path in paths:
                results[path].append(measure(path, dsn, args.rows))

    frame_mb = results["idem"][0]["frame"] / 1e6
    print(f"\nPeak RSS of one overwrite of {args.rows:,} rows (frame {frame_mb:.0f} MB by memory_usage(deep=True)); "
          f"{args.repeat} processes per path, medians; {load_average()}\n")
    print(f"{'path':<50} {'baseline MB':>11} {'+frame MB':>9} {'peak MB':>8} {'peak over baseline':>19} {'x frame':>8} {'write own MB':>12}")
    ratios = {}
    for path in paths:
        runs = results[path]
        over = statistics.median(r["peak"] - r["baseline"] for r in runs)
        own = statistics.median(r["peak"] - r["with_frame"] for r in runs)
        ratios[path] = over / runs[0]["frame"]
        print(f"{PATHS[path]:<50} {statistics.median(r['baseline'] for r in runs) / 1e6:>11.0f} "
              f"{statistics.median(r['with_frame'] - r['baseline'] for r in runs) / 1e6:>9.0f} "
              f"{statistics.median(r['peak'] for r in runs) / 1e6:>8.0f} {over / 1e6:>16.0f} MB {ratios[path]:>7.2f}x "
              f"{own / 1e6:>12.0f}")
    print()
    print_ratio(f"memory, overwrite of {args.rows:,} rows: idem peak RSS over baseline / frame size", ratios["idem"],
                f"<= {TARGET_RATIO}", ratios["idem"] <= TARGET_RATIO)
    print_report(f"memory, overwrite of {args.rows:,} rows: raw COPY (CSV stream) peak RSS over baseline / frame size",
                 f"{ratios['raw']:.2f}x")
    return 0


if __name__ == "__main__":
    sys.exit(main())
