"""Reading a day of the inbox: its files read once, split into rows, cleaned, validated, split in two.

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
3. **Clean** the text into typed values (`cleaning`); the junk and unknown columns dropped are reported in
   `ignored_columns`.
4. **Validate** the whole day with the declared rules (`validation`). Every failing row lands in `rejected` with
   every rule it broke; the others are `valid`.
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
import hashlib
import json
import os
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import NamedTuple

import pandas as pd

from idem_platform import parse_partition_key

from .cleaning import INPUT_COLUMNS, NULL_TOKENS, REQUIRED_COLUMNS, canonical_column, clean_text, typed_trips
from .inbox import INBOX_SUBDIR, MAX_REJECTED_SHARE, TRIP_DAYS, InboxFileError, day_files, manifest_digest, trips_dir
from .validation import (
    RAW_SCHEMA,
    RULE_CSV,
    RULE_FIELD_COUNT,
    RULE_FIELD_SIZE,
    RULE_ORDER,
    RULE_UTF8,
    TRIP_SCHEMA,
    rule_failures,
)

MAX_RAW_ROW_CHARS = 10_000

# ---------------------------------------------------------------------------------------------------------------
# Columns: what the two tables hold
# ---------------------------------------------------------------------------------------------------------------

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
        # O_NOFOLLOW: a file swapped for a symbolic link after it was listed is refused, not followed.
        with open(os.open(path, os.O_RDONLY | os.O_NOFOLLOW), "rb") as fh:
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

    failures = rule_failures(RAW_SCHEMA, text)
    for index, rules in rule_failures(TRIP_SCHEMA, typed).items():
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
                "rules": sorted(rules, key=lambda r: (RULE_ORDER.get(r, len(RULE_ORDER)), r)),
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
