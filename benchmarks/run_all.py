"""`make bench`: every benchmark script in turn, then one summary of every ratio with its target.

    .venv/bin/python -m benchmarks.run_all [--budget-minutes 10] [SCRIPT ...]

Each script runs in its own process (its output streams through unchanged) and prints its own table; the
summary collects their `RATIO ...` lines (a measured ratio, its target, met / NOT met) and `REPORT ...` lines
(figures without a target), the machine, the load average and the total time against the budget. Exit code:
0 when every script ran (targets that are not met are reported, not failed: timings are no test), 1 when a
script failed.
"""

from __future__ import annotations

import argparse
import re
import subprocess
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from benchmarks.common import load_average, machine  # noqa: E402

FINGERPRINT_LINE = re.compile(r"ratio to target 1M rows/s\s+([\d.]+)x \((met|NOT met)\)")

# name -> script
SCRIPTS = {
    "fingerprint": "bench_fingerprint.py",
    "pg_overwrite": "bench_pg_overwrite.py",
    "pg_history": "bench_pg_history.py",
    "es_overwrite": "bench_es_overwrite.py",
    "es_range": "bench_es_range.py",
    "backfill": "bench_backfill.py",
    "run_overhead": "bench_run_overhead.py",
    "memory": "bench_memory.py",
    "verify": "bench_verify.py",
    "pg_read": "bench_pg_read.py",
}


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("scripts", nargs="*", metavar="SCRIPT", help=f"default: all of {', '.join(SCRIPTS)}")
    parser.add_argument("--budget-minutes", type=float, default=10.0)
    args = parser.parse_args()
    names = args.scripts or list(SCRIPTS)
    unknown = [name for name in names if name not in SCRIPTS]
    if unknown:
        parser.error(f"unknown script(s) {', '.join(unknown)}; choose from {', '.join(SCRIPTS)}")

    started = time.perf_counter()
    print(f"make bench: {machine()}; {load_average()}", flush=True)
    collected: list[str] = []
    elapsed: dict[str, float] = {}
    failed: list[str] = []
    for name in names:
        cmd = [sys.executable, "-W", "ignore", str(ROOT / "benchmarks" / SCRIPTS[name])]
        print(f"\n{'=' * 100}\n{name}: {' '.join(cmd[3:])}\n{'=' * 100}", flush=True)
        start = time.perf_counter()
        with subprocess.Popen(cmd, cwd=ROOT, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True, bufsize=1) as proc:
            for line in proc.stdout:
                sys.stdout.write(line)
                sys.stdout.flush()
                text = line.strip()
                if text.startswith(("RATIO ", "REPORT ")):
                    collected.append(f"[{name}] {text}")
                elif match := FINGERPRINT_LINE.match(text):  # bench_fingerprint.py's own table line
                    collected.append(f"[{name}] RATIO fingerprint rows/s / 1M rows/s = {match[1]} (target >= 1: {match[2]})")
        elapsed[name] = time.perf_counter() - start
        if proc.returncode != 0:
            failed.append(name)
            collected.append(f"[{name}] FAILED with exit code {proc.returncode}")

    total = time.perf_counter() - started
    print(f"\n{'=' * 100}\nSUMMARY ({machine()}; {load_average()})\n{'=' * 100}")
    for line in collected:
        print(line)
    print("\ntime per script: " + ", ".join(f"{name} {seconds:.0f} s" for name, seconds in elapsed.items()))
    within = total <= args.budget_minutes * 60
    print(f"total {total / 60:.1f} min (budget {args.budget_minutes:g} min: {'met' if within else 'NOT met'})")
    not_met = [line for line in collected if "NOT met" in line]
    print(f"{len([c for c in collected if ' RATIO ' in c]) - len(not_met)} targets met, {len(not_met)} not met"
          + (f"; failed scripts: {', '.join(failed)}" if failed else ""))
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())
