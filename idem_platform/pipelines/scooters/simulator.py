"""`idem simulate-scooters`: realistic scooter-trip exports dropped into the inbox.

The files look like the e-scooter export the textbook's cleaning chapter starts from: mixed-case headers
(`Trip_ID`, `DURATION`, `Start_Lat`), junk columns (`month`, `region_id`, `trip_ledger_id`), dates as
`M/D/YYYY H:MM` strings (some rows in ISO 8601), durations as `H:MM:SS` strings, quoted street addresses with
commas, and start/end coordinates. With `--bad-share` (default 2%) some rows carry the defects real exports have
(end before start, coordinates out of range, text in a numeric column, a missing or repeated trip id, an
impossible date); the pipeline quarantines exactly those rows.

Everything is seeded from (day, part): the same arguments write the same bytes, so dropping a generated file
again is a no-op for the inbox sensor (same sha256) and a different `--trips` or `--bad-share` is a correction.
Files are written under a temporary name and renamed into place, the way any producer should write to the inbox.

    idem simulate-scooters --day 2026-01-05
    idem simulate-scooters --days 7 --trips 2000 --parts 2
    idem simulate-scooters --range 2026-01-01...2026-01-31 --bad-share 0 --inbox /data/inbox
"""

from __future__ import annotations

import argparse
import csv
import datetime as dt
import hashlib
import io
import math
import os
import random
import sys
from collections.abc import Sequence
from pathlib import Path

import idem_platform as partitions
from idem_platform import partition_seed

from .inbox import TRIP_DAYS, inbox_dir, trips_dir

# The export's header, as found: the textbook's columns plus coordinates, in mixed case.
HEADER = (
    "month", "Trip_ID", "region_id", "Vehicle_ID", "started_at", "ended_at", "DURATION",
    "start_location_name", "end_location_name", "Start_Lat", "Start_Lon", "END_LAT", "End_Lon",
    "user_id", "trip_ledger_id",
)

# Albuquerque, where the textbook's data comes from.
CENTER_LAT, CENTER_LON = 35.0844, -106.6504
STREETS = (
    "Central Ave NE", "Central Ave SW", "Roma Ave NE", "Lomas Blvd NE", "Rio Grande Blvd NW", "4th St NW",
    "Gold Ave SW", "Silver Ave SE", "Girard Blvd NE", "University Blvd NE", "Tijeras Ave NE", "Copper Ave NW",
    "Mountain Rd NW", "Yale Blvd SE", "Broadway Blvd SE", "Marquette Ave NW",
)
ZIPS = ("87102", "87104", "87106", "87108", "87110")
DEFECTS = (
    "end_before_start", "lat_out_of_range", "text_in_number", "missing_trip_id", "duplicate_trip_id", "impossible_date",
)


def _trip_id(day: str, part: str | None, i: int) -> str:
    digest = hashlib.sha256(f"scooter_trips|{day}|{part or ''}|{i}".encode()).digest()
    return str(10**12 + int.from_bytes(digest[:5], "big"))


def _address(rng: random.Random) -> str:
    return f"{rng.randrange(100, 4000)} {rng.choice(STREETS)}, Albuquerque, NM {rng.choice(ZIPS)}, USA"


def _clock(seconds: int) -> str:
    return f"{seconds // 3600}:{seconds % 3600 // 60:02d}:{seconds % 60:02d}"


def _textbook_time(t: dt.datetime) -> str:
    return f"{t.month}/{t.day}/{t.year} {t.hour}:{t.minute:02d}"


def simulate_rows(day: str, trips: int = 500, *, part: str | None = None, bad_share: float = 0.02) -> list[dict[str, str]]:
    """The rows of one export file for `day` (values as text, keys as in HEADER); seeded by (day, part)."""
    start, _ = partitions.partition_window(day)
    rng = random.Random(partition_seed("scooter_trips", day, part or ""))
    rows = []
    for i in range(trips):
        began = start + dt.timedelta(seconds=rng.randrange(86_400 - 60))
        seconds = int(min(3 * 3600, max(60, rng.lognormvariate(math.log(480), 0.6))))
        ended = began + dt.timedelta(seconds=seconds)
        lat = CENTER_LAT + rng.uniform(-0.05, 0.05)
        lon = CENTER_LON + rng.uniform(-0.06, 0.06)
        km = seconds / 3600 * rng.uniform(6, 16)
        bearing = rng.uniform(0, 2 * math.pi)
        end_lat = lat + km / 111.0 * math.cos(bearing)
        end_lon = lon + km / (111.0 * math.cos(math.radians(lat))) * math.sin(bearing)
        iso = rng.random() < 0.2
        rows.append(
            {
                "month": began.strftime("%B"),
                "Trip_ID": _trip_id(day, part, i),
                "region_id": "202",
                "Vehicle_ID": str(rng.randrange(1000, 1300)),
                "started_at": began.strftime("%Y-%m-%dT%H:%M:%SZ") if iso else _textbook_time(began),
                "ended_at": ended.strftime("%Y-%m-%dT%H:%M:%SZ") if iso else _textbook_time(ended),
                "DURATION": _clock(seconds),
                "start_location_name": _address(rng),
                "end_location_name": _address(rng),
                "Start_Lat": f"{lat:.6f}",
                "Start_Lon": f"{lon:.6f}",
                "END_LAT": f"{end_lat:.6f}",
                "End_Lon": f"{end_lon:.6f}",
                "user_id": str(rng.randrange(10_000_000, 10_050_000)),
                "trip_ledger_id": str(rng.randrange(1_000_000, 2_000_000)),
            }
        )
    bad = [i for i in range(1, trips) if rng.random() < bad_share]
    for n, i in enumerate(bad):
        _spoil(rows, i, DEFECTS[n % len(DEFECTS)])
    return rows


def _spoil(rows: list[dict[str, str]], i: int, defect: str) -> None:
    row = rows[i]
    if defect == "end_before_start":
        row["started_at"], row["ended_at"] = row["ended_at"], row["started_at"]
    elif defect == "lat_out_of_range":
        row["Start_Lat"] = f"{float(row['Start_Lat']) + 100:.6f}"
    elif defect == "text_in_number":
        row["End_Lon"] = "unknown"
    elif defect == "missing_trip_id":
        row["Trip_ID"] = ""
    elif defect == "duplicate_trip_id":
        row["Trip_ID"] = rows[i - 1]["Trip_ID"]
    elif defect == "impossible_date":
        row["started_at"] = "2/30/2026 10:00"


def render_csv(rows: Sequence[dict[str, str]], header: Sequence[str] = HEADER) -> bytes:
    buf = io.StringIO()
    writer = csv.writer(buf, lineterminator="\n")
    writer.writerow(header)
    for row in rows:
        writer.writerow([row.get(name, "") for name in header])
    return buf.getvalue().encode("utf-8")


def inbox_file_name(day: str, part: str | None = None) -> str:
    return f"{day}.csv" if not part else f"{day}__{part}.csv"


def write_inbox_file(root: str | os.PathLike, name: str, data: bytes) -> Path:
    """Write `data` as inbox file `name`: to a temporary name first, then renamed into place."""
    directory = trips_dir(root)
    directory.mkdir(parents=True, exist_ok=True)
    target = directory / name
    temp = directory / f".{name}.{os.getpid()}.tmp"
    with open(temp, "wb") as fh:
        fh.write(data)
        fh.flush()
        os.fsync(fh.fileno())
    os.replace(temp, target)
    return target


def simulate_day(
    root: str | os.PathLike, day: str, trips: int = 500, *, parts: int = 1, bad_share: float = 0.02
) -> list[Path]:
    """Write the export files of `day` (`<day>.csv`, or `<day>__part1.csv`.. when parts > 1)."""
    partitions.parse_partition_key(day, partitions_def=TRIP_DAYS)
    names = [None] if parts <= 1 else [f"part{n}" for n in range(1, parts + 1)]
    per_part = max(1, trips // len(names))
    return [
        write_inbox_file(
            root, inbox_file_name(day, part), render_csv(simulate_rows(day, per_part, part=part, bad_share=bad_share))
        )
        for part in names
    ]


def _days(args: argparse.Namespace) -> list[str]:
    if args.day:
        partitions.parse_partition_key(args.day, partitions_def=TRIP_DAYS)
        return [args.day]
    if args.range:
        first, last = partitions.parse_range(args.range)
        return partitions.days_between(first, last, TRIP_DAYS)
    return partitions.last_n_days(args.days)


def cmd_simulate_scooters(args: argparse.Namespace) -> int:
    root = args.inbox or inbox_dir()
    if not 0 <= args.bad_share < 1:
        raise RuntimeError(f"--bad-share must be in [0, 1), got {args.bad_share}")
    for day in _days(args):
        for path in simulate_day(root, day, args.trips, parts=args.parts, bad_share=args.bad_share):
            digest = hashlib.sha256(path.read_bytes()).hexdigest()
            print(f"{path}  sha256 {digest[:16]}")
    return 0


def add_simulate_scooters_parser(subparsers) -> argparse.ArgumentParser:
    """Register `simulate-scooters` on the `idem` command line (cli.build_parser's subparsers)."""
    sim = subparsers.add_parser(
        "simulate-scooters",
        help="write realistic scooter-trip CSV exports into the inbox (IDEM_INBOX_DIR/scooter_trips)",
        description=__doc__,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    group = sim.add_mutually_exclusive_group()
    group.add_argument("--day", help="one day, YYYY-MM-DD")
    group.add_argument("--range", help="days A...B (or [A...B]), inclusive")
    group.add_argument("--days", type=int, default=1, help="the last N complete days (default 1: yesterday)")
    sim.add_argument("--trips", type=int, default=500, help="trips per day (default 500)")
    sim.add_argument("--parts", type=int, default=1, help="files per day, named <day>__partN.csv (default 1: <day>.csv)")
    sim.add_argument("--bad-share", type=float, default=0.02, help="share of rows with a defect (default 0.02)")
    sim.add_argument("--inbox", help="inbox root (default IDEM_INBOX_DIR or <state dir>/inbox)")
    sim.set_defaults(func=cmd_simulate_scooters)
    return sim


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="idem")
    add_simulate_scooters_parser(parser.add_subparsers(dest="command", required=True))
    args = parser.parse_args(["simulate-scooters", *(sys.argv[1:] if argv is None else argv)])
    try:
        return args.func(args)
    except (partitions.InvalidPartitionKey, RuntimeError) as exc:
        print(f"idem: {exc}", file=sys.stderr)
        return 2


if __name__ == "__main__":
    sys.exit(main())
