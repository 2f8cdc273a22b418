"""The scooter-trips inbox: files by day, read once, cleaned with pandas, validated with pandera.

    IDEM_INBOX_DIR/scooter_trips/<YYYY-MM-DD>.csv            one file for the day, or several:
    IDEM_INBOX_DIR/scooter_trips/<YYYY-MM-DD>__<part>.csv    every file of a day makes its partition

`<part>` is letters, digits, `.`, `_` or `-` (`2026-01-05__morning.csv`, `2026-01-05__export-2.csv`). Names that
start with `.` or `~`, or end in `.tmp`/`.part`/`.partial`/`.crdownload`, are uploads in progress and are not
read: write a file under such a name and rename it into place when it is complete. Times in the files are UTC
(`M/D/YYYY H:MM[:SS]` as in the textbook's export, or ISO 8601 with or without an offset).

`read_inbox_day(inbox_dir, day)` is the one function the assets (and the tests) read the inbox through. It is
pure in the sense that matters for idempotency: the same files give the same rows, in the same order, in any
process. It returns `InboxDay(valid, rejected, files, ...)`:

1. **Read once.** Each file of the day is read into memory in one go and hashed from those bytes (the sha256 the
   sensor keys its runs on). Its identity (inode, size, mtime) is taken before and after the read and again once
   the whole day is parsed: a file replaced or rewritten while the day was read fails the run
   (rule "files unchanged while being read"); the sensor requests a run for the new content.
2. **Split into rows** with the standard `csv` module (strict quoting), one physical line at a time, so every row
   keeps its raw text and its line number. A row that is not valid UTF-8, not well-formed CSV, or that has another
   number of fields than the header is quarantined with that rule alone (its fields may be misaligned).
3. **Clean** (the textbook's cleaning chapter): headers matched case-insensitively with spaces and dashes as
   underscores (`Trip_ID`, `DURATION`, `Start Lat`), a few known aliases (`start_time`), the export's junk
   columns (`month`, `region_id`, `trip_ledger_id`) and unknown extra columns dropped (and reported in
   `ignored_columns`), values stripped, null tokens (`""`, `NaN`, `null`, `N/A`, ...) made missing, date strings
   parsed, `H:MM:SS` duration strings turned into seconds, the trip distance computed from the coordinates.
4. **Validate** the whole day with two declared pandera schemas: `RAW_SCHEMA` on the cleaned text (required
   fields, parseable types, lengths) and `TRIP_SCHEMA` on the typed rows (coordinate and duration ranges, end
   after start, start on the file's day, trip id unique within the day across all its files: the first
   occurrence in file-name then line order is kept). Every failing row lands in `rejected` with every rule it
   broke; the others are `valid`.
5. **File-level rules** raise `InboxFileError` naming file, day and rule, and nothing of the day is returned: an
   empty file, a header without data rows, another delimiter, a file that is not UTF-8 text, a missing required
   column, duplicate column names, a file that changed while it was read, or more than `max_rejected_share`
   (default 10%) of a file's data lines rejected. Counting lines rather than rows makes a quote left open that
   swallows the rest of the file count for every line it swallowed.

Row order, rule order and the quarantine key (file name, line number) are deterministic, so a rerun publishes
the same trips and the same quarantine rows, and replaces both partitions rather than adding to them.
"""

from __future__ import annotations

import codecs
import csv
import datetime as dt
import hashlib
import json
import os
import re
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import NamedTuple

import dagster as dg
import numpy as np
import pandas as pd
import pandera.pandas as pa

from idem_platform import InvalidPartitionKey, daily_partitions, parse_partition_key, settings, valid_range

# The days of every scooter asset and of the inbox job (defaults from settings: IDEM_PARTITIONS_START, UTC).
TRIP_DAYS = daily_partitions()
INBOX_SUBDIR = "scooter_trips"
MAX_REJECTED_SHARE = 0.10
MAX_RAW_ROW_CHARS = 10_000
DEFAULT_SETTLE_SECONDS = 2.0

FILE_NAME = re.compile(r"^(?P<day>[^_]+?)(?:__(?P<part>[A-Za-z0-9][A-Za-z0-9._-]*))?\.csv$")
DAY_FORM = re.compile(r"^\d{4}-\d{2}-\d{2}$")
IN_PROGRESS_PREFIXES = (".", "~")
IN_PROGRESS_SUFFIXES = (".tmp", ".part", ".partial", ".crdownload")

# ---------------------------------------------------------------------------------------------------------------
# Columns: what the files carry, and what the two tables hold
# ---------------------------------------------------------------------------------------------------------------

REQUIRED_COLUMNS = ("trip_id", "started_at", "ended_at", "start_lat", "start_lon", "end_lat", "end_lon")
OPTIONAL_COLUMNS = ("vehicle_id", "user_id", "duration", "start_location_name", "end_location_name")
INPUT_COLUMNS = REQUIRED_COLUMNS + OPTIONAL_COLUMNS
# Columns of the textbook's export that carry nothing the tables keep.
JUNK_COLUMNS = ("month", "region_id", "trip_ledger_id")
COLUMN_ALIASES = {
    "tripid": "trip_id",
    "vehicleid": "vehicle_id",
    "userid": "user_id",
    "start_time": "started_at",
    "end_time": "ended_at",
    "start_latitude": "start_lat",
    "start_longitude": "start_lon",
    "start_lng": "start_lon",
    "end_latitude": "end_lat",
    "end_longitude": "end_lon",
    "end_lng": "end_lon",
    "trip_duration": "duration",
}

TRIP_COLUMNS = {
    "trip_id": "string",
    "vehicle_id": "string",
    "user_id": "string",
    "started_at": "timestamp",
    "ended_at": "timestamp",
    "duration_seconds": "int",
    "start_location_name": "string",
    "end_location_name": "string",
    "start_lat": "float",
    "start_lon": "float",
    "end_lat": "float",
    "end_lon": "float",
    "distance_km": "float",
    "source_file": "string",
    "source_line": "int",
}

REJECTED_COLUMNS = {
    "source_file": "string",
    "source_line": "int",
    "trip_id": "string",
    "failed_rules": "string",
    "rule_count": "int",
    "raw_row": "string",
    "raw_row_truncated": "bool",
    "file_sha256": "string",
}

NULL_TOKENS = frozenset({"", "na", "n/a", "#n/a", "nan", "null", "none", "nil"})
DATETIME_FORMATS = ("%m/%d/%Y %H:%M", "%m/%d/%Y %H:%M:%S", "ISO8601")
EARTH_RADIUS_KM = 6371.0088

# ---------------------------------------------------------------------------------------------------------------
# Errors
# ---------------------------------------------------------------------------------------------------------------


class InboxError(Exception):
    """Something about the inbox that stops a day from being published."""


class InboxNameError(InboxError):
    """A file in the inbox whose name does not address a day partition."""

    def __init__(self, name: str, rule: str, detail: str):
        self.name, self.rule, self.detail = name, rule, detail
        super().__init__(
            f"inbox file {name!r}: rule {rule!r} failed: {detail}. It is not read for any partition; rename it "
            f"to <YYYY-MM-DD>.csv or <YYYY-MM-DD>__<part>.csv (a day in the partitions)"
        )


class InboxFileError(InboxError):
    """A file-level rule failed: nothing of the day is published, the published partition is unchanged."""

    def __init__(self, file: str, day: str, rule: str, detail: str):
        self.file, self.day, self.rule, self.detail = file, day, rule, detail
        super().__init__(
            f"inbox file {file!r} for day {day}: rule {rule!r} failed: {detail}. Nothing was published for "
            f"{day}; the previously published partitions are unchanged. Fix or replace the file: the inbox "
            "sensor runs the day again when its content changes"
        )


# ---------------------------------------------------------------------------------------------------------------
# Where the inbox is
# ---------------------------------------------------------------------------------------------------------------


def inbox_dir() -> str:
    """`IDEM_INBOX_DIR`, or `<state dir>/inbox`."""
    return settings.current().inbox_dir


class ScooterInboxResource(dg.ConfigurableResource):
    """The inbox the scooter assets and the inbox sensor read (`<root>/scooter_trips/<day>[__<part>].csv`)."""

    root: str = ""  # empty: IDEM_INBOX_DIR, else <state dir>/inbox (read when used)
    max_rejected_share: float = MAX_REJECTED_SHARE
    settle_seconds: float = DEFAULT_SETTLE_SECONDS

    def inbox_root(self) -> str:
        return self.root or inbox_dir()

    def trips_dir(self) -> Path:
        return trips_dir(self.inbox_root())


def trips_dir(root: str | os.PathLike) -> Path:
    return Path(root) / INBOX_SUBDIR


# ---------------------------------------------------------------------------------------------------------------
# File names
# ---------------------------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class InboxName:
    name: str
    day: str
    part: str | None


def in_progress(name: str) -> bool:
    """A name an upload in progress uses (read once it is renamed into place)."""
    return name.startswith(IN_PROGRESS_PREFIXES) or name.lower().endswith(IN_PROGRESS_SUFFIXES)


def parse_inbox_name(name: str) -> InboxName:
    """The day (and part) a file name addresses; `InboxNameError` for a name that is not a day partition."""
    match = FILE_NAME.match(name)
    if not match or not DAY_FORM.match(match["day"]):
        raise InboxNameError(
            name, "file name is <YYYY-MM-DD>[__<part>].csv",
            "the name does not start with a day in YYYY-MM-DD form followed by .csv or __<part>.csv",
        )
    day = match["day"]
    try:
        parse_partition_key(day, partitions_def=TRIP_DAYS)
    except InvalidPartitionKey:
        first, last = valid_range(TRIP_DAYS)
        try:
            dt.date.fromisoformat(day)
        except ValueError:
            raise InboxNameError(name, "file name is a day", f"{day} is not a calendar day") from None
        raise InboxNameError(
            name, "day within the partitions",
            f"day {day} is outside the partitions {first} .. {last}"
            + (" (a day becomes a partition once it is complete, in UTC)" if day > last else ""),
        ) from None
    return InboxName(name, day, match["part"])


def day_files(root: str | os.PathLike, day: str) -> list[Path]:
    """Every file of `day` in the inbox, in name order (`<day>.csv` first, then the parts)."""
    directory = trips_dir(root)
    if not directory.is_dir():
        return []
    found = []
    for path in directory.iterdir():
        if not path.is_file() or in_progress(path.name):
            continue
        match = FILE_NAME.match(path.name)
        if match and match["day"] == day:
            found.append(path)
    return sorted(found, key=lambda p: p.name)


def manifest_digest(files: Mapping[str, str]) -> str:
    """The sha256 of a day's inputs: its file names with the sha256 of their content, in name order."""
    text = "\n".join(f"{name}\t{sha}" for name, sha in sorted(files.items()))
    return hashlib.sha256(text.encode()).hexdigest()


# ---------------------------------------------------------------------------------------------------------------
# Reading: bytes once, then rows with their raw text and line numbers
# ---------------------------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class InboxFile:
    path: Path
    name: str
    day: str
    data: bytes
    sha256: str
    identity: tuple


def _identity(st: os.stat_result) -> tuple:
    return (st.st_dev, st.st_ino, st.st_size, st.st_mtime_ns)


def _read_file(path: Path, day: str) -> InboxFile:
    """The file's bytes, read once, with their sha256 and the file's identity while they were read."""
    try:
        with open(path, "rb") as fh:
            before = os.fstat(fh.fileno())
            data = fh.read()
            after = os.fstat(fh.fileno())
    except FileNotFoundError:
        raise InboxFileError(
            path.name, day, "files unchanged while being read", "the file disappeared before it could be read"
        ) from None
    except OSError as exc:
        raise InboxFileError(path.name, day, "file is readable", f"{type(exc).__name__}: {exc}") from None
    if _identity(before) != _identity(after) or len(data) != after.st_size:
        raise InboxFileError(path.name, day, "files unchanged while being read", "the file was written to while it was read")
    return InboxFile(path, path.name, day, data, hashlib.sha256(data).hexdigest(), _identity(after))


def _verify_unchanged(root: str | os.PathLike, day: str, files: Sequence[InboxFile]) -> None:
    """Every file read is still there, as read, and no file of the day appeared meanwhile."""
    now = {p.name for p in day_files(root, day)}
    for file in files:
        try:
            current = _identity(os.stat(file.path))
        except FileNotFoundError:
            current = None
        if current != file.identity:
            what = "removed" if current is None else "replaced or rewritten"
            raise InboxFileError(
                file.name, day, "files unchanged while being read",
                f"the file was {what} while the day was being read (read sha256 {file.sha256[:12]})",
            )
    appeared = sorted(now - {f.name for f in files})
    if appeared:
        raise InboxFileError(
            appeared[0], day, "files unchanged while being read", "the file appeared while the day was being read"
        )


@dataclass
class _Record:
    file: InboxFile
    start_line: int
    end_line: int
    fields: list[str] | None
    raw: str
    structural: list[str] = field(default_factory=list)
    trip_id: str | None = None  # for a structurally broken row: the trip id where its field would be, if any


def _best_effort(fields: list[str] | None, position: int) -> str | None:
    """A value of a row whose fields may be misaligned (only to help find the row; never published)."""
    if not fields or position >= len(fields):
        return None
    value = fields[position].strip()
    return None if value.lower() in NULL_TOKENS or len(value) > 64 else value


RULE_UTF8 = "row is valid UTF-8"
RULE_CSV = "row is well-formed CSV"
RULE_FIELD_SIZE = f"every field at most {csv.field_size_limit():,} characters"
RULE_FIELD_COUNT = "row has as many fields as the header"


def _decode_lines(file: InboxFile) -> tuple[list[str], list[bool]]:
    data = file.data
    for bom, encoding in ((codecs.BOM_UTF32_LE, "UTF-32"), (codecs.BOM_UTF32_BE, "UTF-32"),
                          (codecs.BOM_UTF16_LE, "UTF-16"), (codecs.BOM_UTF16_BE, "UTF-16")):
        if data.startswith(bom):
            raise InboxFileError(file.name, file.day, "UTF-8 text",
                                 f"the file is {encoding} (it starts with a {encoding} byte-order mark); save it as UTF-8")
    if data.startswith(codecs.BOM_UTF8):
        data = data[len(codecs.BOM_UTF8):]
    nul = data.find(b"\x00")
    if nul >= 0:
        raise InboxFileError(file.name, file.day, "UTF-8 text",
                             f"the file contains NUL bytes (first at byte {nul}): it is binary or UTF-16, "
                             "not a UTF-8 CSV file")
    lines, decoded = [], []
    for raw in data.splitlines(keepends=True):
        try:
            lines.append(raw.decode("utf-8"))
            decoded.append(True)
        except UnicodeDecodeError:
            lines.append(raw.decode("utf-8", "backslashreplace"))
            decoded.append(False)
    return lines, decoded


def _blank(fields: list[str]) -> bool:
    return not fields or (len(fields) == 1 and not fields[0].strip())


def canonical_column(name: str) -> str:
    """`Trip_ID` -> `trip_id`, `Start Lat` -> `start_lat`, `start_time` -> `started_at`."""
    text = re.sub(r"[^0-9a-z]+", "_", name.replace("\ufeff", "").strip().lower()).strip("_")
    return COLUMN_ALIASES.get(text, text)


def _split_records(file: InboxFile) -> tuple[list[str], list[str], list[_Record]]:
    """(header as found, canonical header, data records) of one file; file-level problems raise InboxFileError."""
    lines, decoded = _decode_lines(file)
    if not "".join(lines).strip():
        raise InboxFileError(
            file.name, file.day, "file is not empty", f"the file has {len(file.data)} bytes and no header row"
        )
    reader = csv.reader(iter(lines), strict=True)
    records: list[_Record] = []
    previous = 0
    while True:
        try:
            fields, error = next(reader), None
        except StopIteration:
            break
        except csv.Error as exc:
            fields, error = None, str(exc)
        start, end = previous + 1, reader.line_num
        previous = end
        if error is None and _blank(fields):
            continue
        raw = "".join(lines[start - 1 : end])
        raw = raw[:-2] if raw.endswith("\r\n") else raw.rstrip("\r\n") if raw.endswith(("\r", "\n")) else raw
        record = _Record(file, start, end, fields, raw)
        if not all(decoded[start - 1 : end]):
            record.structural.append(RULE_UTF8)
        if error is not None:
            record.structural.append(RULE_FIELD_SIZE if error.startswith("field larger than field limit") else RULE_CSV)
        records.append(record)
    header, data = records[0], records[1:]
    if header.structural or header.fields is None:
        raise InboxFileError(file.name, file.day, "readable header row",
                             f"line {header.start_line} breaks {', '.join(header.structural)}: {header.raw[:200]!r}")
    names = [canonical_column(n) for n in header.fields]
    if len(names) == 1:
        found = [d for d in (";", "\t", "|") if d in header.fields[0]]
        if found:
            raise InboxFileError(
                file.name, file.day, "comma-separated values",
                f"the header is one column containing {found[0]!r}: the file looks {found[0]!r}-separated; "
                "save it with commas as separators",
            )
    seen: dict[str, str] = {}
    for original, name in zip(header.fields, names):
        if name and name in seen:
            raise InboxFileError(file.name, file.day, "unique column names",
                                 f"columns {seen[name]!r} and {original!r} both mean {name!r}")
        seen[name] = original
    missing = [c for c in REQUIRED_COLUMNS if c not in seen]
    if missing:
        raise InboxFileError(
            file.name, file.day, "required columns present",
            f"missing {', '.join(missing)}; the header has {', '.join(repr(h) for h in header.fields)} "
            "(names match case-insensitively, with spaces and dashes read as underscores)",
        )
    if not data:
        raise InboxFileError(file.name, file.day, "at least one data row", "the file has a header row and no data rows")
    for record in data:
        if record.fields is not None and len(record.fields) != len(names):
            record.structural.append(RULE_FIELD_COUNT)
    return header.fields, names, data


# ---------------------------------------------------------------------------------------------------------------
# Cleaning: text -> typed values (the textbook's cleaning chapter)
# ---------------------------------------------------------------------------------------------------------------


def clean_text(series: pd.Series) -> pd.Series:
    """Stripped text with the null tokens (`""`, `NaN`, `null`, `N/A`, ...) as missing values."""
    text = series.astype("string").str.strip()
    return text.mask(text.str.lower().isin(NULL_TOKENS))


def parse_datetimes(series: pd.Series) -> pd.Series:
    """UTC timestamps from `M/D/YYYY H:MM[:SS]` or ISO 8601 text (naive times are UTC); NaT where none fits."""
    parsed = pd.Series(pd.NaT, index=series.index, dtype="datetime64[us, UTC]")
    for fmt in DATETIME_FORMATS:
        todo = parsed.isna() & series.notna()
        if not todo.any():
            break
        attempt = pd.to_datetime(series[todo], format=fmt, errors="coerce", utc=True)
        parsed[todo] = attempt.astype("datetime64[us, UTC]")
    return parsed


_DURATION_HMS = re.compile(r"^(?:(?P<h>\d+):)?(?P<m>[0-5]?\d):(?P<s>[0-5]\d)$")


def parse_duration_seconds(series: pd.Series) -> pd.Series:
    """Seconds from `H:MM:SS`, `M:SS` or a plain number of seconds; missing where the text is none of those."""
    text = series.astype("string")
    parts = text.str.extract(_DURATION_HMS)
    clock = (
        pd.to_numeric(parts["h"], errors="coerce").fillna(0) * 3600
        + pd.to_numeric(parts["m"], errors="coerce") * 60
        + pd.to_numeric(parts["s"], errors="coerce")
    )
    plain = pd.to_numeric(text.where(text.str.fullmatch(r"\d+(?:\.\d+)?", na=False)), errors="coerce")
    seconds = clock.where(clock.notna(), plain)
    return seconds.round().astype("Int64")


def parse_numbers(series: pd.Series) -> pd.Series:
    return pd.Series(
        pd.to_numeric(series.astype("string"), errors="coerce").to_numpy(dtype="float64", na_value=np.nan),
        index=series.index,
    )


def haversine_km(lat1, lon1, lat2, lon2) -> pd.Series:
    """Great-circle distance in km, rounded to the metre (stable floats, stable fingerprints)."""
    lat1, lon1, lat2, lon2 = (np.radians(np.asarray(v, dtype="float64")) for v in (lat1, lon1, lat2, lon2))
    a = np.sin((lat2 - lat1) / 2) ** 2 + np.cos(lat1) * np.cos(lat2) * np.sin((lon2 - lon1) / 2) ** 2
    return np.round(2 * EARTH_RADIUS_KM * np.arcsin(np.sqrt(np.clip(a, 0, 1))), 3)


def typed_trips(text: pd.DataFrame) -> pd.DataFrame:
    """The cleaned text frame in the published types (unparseable values missing: the rules report them)."""
    started = parse_datetimes(text["started_at"])
    ended = parse_datetimes(text["ended_at"])
    duration = parse_duration_seconds(text["duration"])
    elapsed = ((ended - started).dt.total_seconds().round()).astype("Int64")
    duration = duration.where(text["duration"].notna(), elapsed.where(ended > started))
    coords = {c: parse_numbers(text[c]) for c in ("start_lat", "start_lon", "end_lat", "end_lon")}
    return pd.DataFrame(
        {
            "trip_id": text["trip_id"],
            "vehicle_id": text["vehicle_id"],
            "user_id": text["user_id"],
            "started_at": started,
            "ended_at": ended,
            "duration_seconds": duration,
            "start_location_name": text["start_location_name"],
            "end_location_name": text["end_location_name"],
            **coords,
            "distance_km": haversine_km(coords["start_lat"], coords["start_lon"], coords["end_lat"], coords["end_lon"]),
            "source_file": text["source_file"],
            "source_line": text["source_line"],
            "partition_date": text["partition_date"],
        },
        index=text.index,
    )


# ---------------------------------------------------------------------------------------------------------------
# Validation: the declared rules, as pandera schemas
# ---------------------------------------------------------------------------------------------------------------


def _parses(parser):
    return lambda s: parser(s).notna()


def _text_length(column: str, most: int) -> pa.Check:
    return pa.Check.str_length(max_value=most, error=f"{column} has at most {most} characters")


RAW_SCHEMA = pa.DataFrameSchema(
    {
        "trip_id": pa.Column(nullable=False, checks=_text_length("trip_id", 64)),
        "vehicle_id": pa.Column(nullable=True, checks=_text_length("vehicle_id", 64)),
        "user_id": pa.Column(nullable=True, checks=_text_length("user_id", 64)),
        **{
            c: pa.Column(nullable=False, checks=pa.Check(_parses(parse_datetimes), error=f"{c} is a date-time"))
            for c in ("started_at", "ended_at")
        },
        "duration": pa.Column(
            nullable=True, checks=pa.Check(_parses(parse_duration_seconds), error="duration is H:MM:SS or seconds")
        ),
        **{
            c: pa.Column(nullable=False, checks=pa.Check(_parses(parse_numbers), error=f"{c} is a number"))
            for c in ("start_lat", "start_lon", "end_lat", "end_lon")
        },
        "start_location_name": pa.Column(nullable=True, checks=_text_length("start_location_name", 500)),
        "end_location_name": pa.Column(nullable=True, checks=_text_length("end_location_name", 500)),
    },
    name="scooter trip text",
)


def _ends_after_start(df: pd.DataFrame) -> pd.Series:
    return ~(df["ended_at"] <= df["started_at"])


def _starts_on_file_day(df: pd.DataFrame) -> pd.Series:
    day = pd.to_datetime(df["partition_date"], utc=True)
    return df["started_at"].isna() | (df["started_at"].dt.floor("D") == day)


TRIP_SCHEMA = pa.DataFrameSchema(
    {
        "trip_id": pa.Column("string", nullable=True, unique=True, report_duplicates="exclude_first"),
        "started_at": pa.Column("datetime64[us, UTC]", nullable=True),
        "ended_at": pa.Column("datetime64[us, UTC]", nullable=True),
        "duration_seconds": pa.Column(
            "Int64", nullable=True, checks=pa.Check.in_range(1, 86_400, error="duration between 1 second and 24 hours")
        ),
        **{
            c: pa.Column(
                "float64", nullable=True, checks=pa.Check.in_range(-lim, lim, error=f"{c} between -{lim} and {lim}")
            )
            for c, lim in (("start_lat", 90), ("start_lon", 180), ("end_lat", 90), ("end_lon", 180))
        },
    },
    checks=[
        pa.Check(_ends_after_start, error="ended_at after started_at"),
        pa.Check(_starts_on_file_day, error="started_at on the file's day (UTC)"),
    ],
    name="scooter trip",
)

RULE_UNIQUE = "trip_id unique within the day"


def _declared_rules() -> list[str]:
    rules = [RULE_UTF8, RULE_CSV, RULE_FIELD_SIZE, RULE_FIELD_COUNT]
    for schema in (RAW_SCHEMA, TRIP_SCHEMA):
        for name, column in schema.columns.items():
            if not column.nullable:
                rules.append(f"{name} is required")
            rules.extend(check.error for check in column.checks)
            if column.unique:
                rules.append(RULE_UNIQUE)
        rules.extend(check.error for check in schema.checks)
    return rules


DECLARED_RULES: tuple[str, ...] = tuple(_declared_rules())
_RULE_ORDER = {rule: i for i, rule in enumerate(DECLARED_RULES)}


def _rule_failures(schema: pa.DataFrameSchema, frame: pd.DataFrame) -> dict[int, set[str]]:
    """Row index -> the rules of `schema` the row breaks (pandera, lazily: every failure, not the first)."""
    try:
        schema.validate(frame, lazy=True)
        return {}
    except pa.errors.SchemaErrors as exc:
        cases = exc.failure_cases
    failures: dict[int, set[str]] = {}
    for column, check, index in cases[["column", "check", "index"]].itertuples(index=False):
        if index is None or pd.isna(index):
            raise RuntimeError(f"schema {schema.name!r} does not fit the frame it validates: {column} {check}")
        if check == "not_nullable":
            rule = f"{column} is required"
        elif check == "field_uniqueness":
            rule = RULE_UNIQUE
        else:
            rule = check
        failures.setdefault(int(index), set()).add(rule)
    return failures


# ---------------------------------------------------------------------------------------------------------------
# The day
# ---------------------------------------------------------------------------------------------------------------


class InboxDay(NamedTuple):
    """One day of the inbox: rows to publish, rows to quarantine, and what was read."""

    valid: pd.DataFrame
    rejected: pd.DataFrame
    files: dict[str, str]  # file name -> sha256 of the bytes read
    ignored_columns: dict[str, list[str]]  # file name -> header columns dropped (junk or unknown)
    rows_read: dict[str, int]  # file name -> data rows

    @property
    def manifest(self) -> str:
        return manifest_digest(self.files)


def _truncate(raw: str) -> tuple[str, bool]:
    if len(raw) <= MAX_RAW_ROW_CHARS:
        return raw, False
    return raw[:MAX_RAW_ROW_CHARS] + f"... [truncated: the row has {len(raw)} characters]", True


def read_inbox_day(
    inbox_root: str | os.PathLike, day: str, *, max_rejected_share: float = MAX_REJECTED_SHARE
) -> InboxDay:
    """Read, clean and validate every inbox file of `day` (see the module docstring)."""
    parse_partition_key(day, partitions_def=TRIP_DAYS)
    paths = day_files(inbox_root, day)
    if not paths:
        raise InboxFileError(
            f"{INBOX_SUBDIR}/{day}.csv", day, "an inbox file for the day",
            f"no file {day}.csv or {day}__<part>.csv in {trips_dir(inbox_root)}",
        )
    files = [_read_file(path, day) for path in paths]

    text_rows: list[dict] = []
    structural: list[_Record] = []
    ignored: dict[str, list[str]] = {}
    rows_read: dict[str, int] = {}
    lines_of: dict[str, int] = {}
    for file in files:
        found, names, records = _split_records(file)
        ignored[file.name] = [orig for orig, name in zip(found, names) if name not in INPUT_COLUMNS]
        rows_read[file.name] = len(records)
        lines_of[file.name] = sum(r.end_line - r.start_line + 1 for r in records)
        positions = {n: i for i, n in enumerate(names) if n in INPUT_COLUMNS}
        for record in records:
            if record.structural:
                record.trip_id = _best_effort(record.fields, positions["trip_id"])
                structural.append(record)
                continue
            row = {c: record.fields[positions[c]] if c in positions else None for c in INPUT_COLUMNS}
            row.update(source_file=file.name, source_line=record.start_line, _lines=record.end_line - record.start_line + 1,
                       _raw=record.raw, _sha=file.sha256)
            text_rows.append(row)
    _verify_unchanged(inbox_root, day, files)

    meta_columns = ["source_file", "source_line", "_lines", "_raw", "_sha"]
    frame = pd.DataFrame.from_records(text_rows, columns=[*INPUT_COLUMNS, *meta_columns])
    frame = frame.reset_index(drop=True)
    text = pd.DataFrame({c: clean_text(frame[c]) for c in INPUT_COLUMNS}, index=frame.index)
    text["source_file"] = frame["source_file"].astype("string")
    text["source_line"] = frame["source_line"].astype("Int64")
    text["partition_date"] = day
    typed = typed_trips(text)

    failures = _rule_failures(RAW_SCHEMA, text)
    for index, rules in _rule_failures(TRIP_SCHEMA, typed).items():
        failures.setdefault(index, set()).update(rules)

    rejected_records = [
        {
            "source_file": record.file.name,
            "source_line": record.start_line,
            "trip_id": record.trip_id,
            "rules": record.structural,
            "raw": record.raw,
            "lines": record.end_line - record.start_line + 1,
            "sha": record.file.sha256,
        }
        for record in structural
    ]
    for index, rules in failures.items():
        rejected_records.append(
            {
                "source_file": frame.at[index, "source_file"],
                "source_line": int(frame.at[index, "source_line"]),
                "trip_id": text.at[index, "trip_id"],
                "rules": sorted(rules, key=lambda r: (_RULE_ORDER.get(r, len(_RULE_ORDER)), r)),
                "raw": frame.at[index, "_raw"],
                "lines": int(frame.at[index, "_lines"]),
                "sha": frame.at[index, "_sha"],
            }
        )
    rejected_records.sort(key=lambda r: (r["source_file"], r["source_line"]))

    _check_rejected_share(files, day, lines_of, rejected_records, max_rejected_share)

    valid = typed.drop(index=list(failures)).reset_index(drop=True)
    rejected = _rejected_frame(rejected_records, day)
    return InboxDay(valid, rejected, {f.name: f.sha256 for f in files}, ignored, rows_read)


def _check_rejected_share(files, day, lines_of, rejected_records, max_share: float) -> None:
    for file in files:
        mine = [r for r in rejected_records if r["source_file"] == file.name]
        bad_lines = sum(r["lines"] for r in mine)
        total = lines_of[file.name]
        if total and bad_lines / total > max_share:
            counts: dict[str, int] = {}
            for r in mine:
                for rule in r["rules"]:
                    counts[rule] = counts.get(rule, 0) + 1
            top = ", ".join(f"{rule!r} x{n}" for rule, n in sorted(counts.items(), key=lambda kv: (-kv[1], kv[0]))[:5])
            examples = "; ".join(f"line {r['source_line']}: {', '.join(r['rules'])}" for r in mine[:3])
            raise InboxFileError(
                file.name, day, f"at most {max_share:.0%} of rows rejected",
                f"{bad_lines} of {total} data lines ({bad_lines / total:.1%}) break row rules ({top}), e.g. {examples}",
            )


def _rejected_frame(records: Sequence[dict], day: str) -> pd.DataFrame:
    raws = [_truncate(r["raw"]) for r in records]
    return pd.DataFrame(
        {
            "source_file": [r["source_file"] for r in records],
            "source_line": [r["source_line"] for r in records],
            "trip_id": pd.array([r["trip_id"] for r in records], dtype="string"),
            "failed_rules": [json.dumps(list(r["rules"])) for r in records],
            "rule_count": [len(r["rules"]) for r in records],
            "raw_row": [raw for raw, _ in raws],
            "raw_row_truncated": [truncated for _, truncated in raws],
            "file_sha256": [r["sha"] for r in records],
            "partition_date": [day] * len(records),
        },
        columns=[*REJECTED_COLUMNS, "partition_date"],
    )


def read_inbox_days(
    inbox_root: str | os.PathLike, days: Iterable[str], *, max_rejected_share: float = MAX_REJECTED_SHARE
) -> dict[str, InboxDay]:
    """`read_inbox_day` for each day (a range run); the first file-level error raises."""
    return {day: read_inbox_day(inbox_root, day, max_rejected_share=max_rejected_share) for day in days}
