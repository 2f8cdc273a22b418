"""The scooter-trips inbox: where it is, what its files are called, and which files make a day.

    IDEM_INBOX_DIR/scooter_trips/<YYYY-MM-DD>.csv            one file for the day, or several:
    IDEM_INBOX_DIR/scooter_trips/<YYYY-MM-DD>__<part>.csv    every file of a day makes its partition

`<part>` is letters, digits, `.`, `_` or `-` (`2026-01-05__morning.csv`, `2026-01-05__export-2.csv`). Names that
start with `.` or `~`, or end in `.tmp`/`.part`/`.partial`/`.crdownload`, are uploads in progress and are not
read: write a file under such a name and rename it into place when it is complete. Times in the files are UTC
(`M/D/YYYY H:MM[:SS]` as in the textbook's export, or ISO 8601 with or without an offset).

A day of the inbox goes from files to published rows in four steps, one module each:

- `inbox` (this module): the resource the assets and the sensor read the inbox through, the inbox directory,
  the file names and the day each addresses, the files of a day and their manifest digest, and the errors that
  stop a day from being published.
- `reading`: `read_inbox_day`, the one function the assets (and the tests) read the inbox through: each file
  read once, split into rows with their raw text and line numbers, cleaned, validated, split into valid and
  rejected.
- `cleaning`: text -> typed values (the textbook's cleaning chapter).
- `validation`: the declared row rules, as pandera schemas.
"""

from __future__ import annotations

import datetime as dt
import hashlib
import os
import re
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path

import dagster as dg

from idem_platform import InvalidPartitionKey, daily_partitions, parse_partition_key, settings, valid_range

# The days of every scooter asset and of the inbox job (defaults from settings: IDEM_PARTITIONS_START, UTC).
TRIP_DAYS = daily_partitions()
INBOX_SUBDIR = "scooter_trips"
MAX_REJECTED_SHARE = 0.10
DEFAULT_SETTLE_SECONDS = 2.0

FILE_NAME = re.compile(r"^(?P<day>[^_]+?)(?:__(?P<part>[A-Za-z0-9][A-Za-z0-9._-]*))?\.csv$")
DAY_FORM = re.compile(r"^\d{4}-\d{2}-\d{2}$")
IN_PROGRESS_PREFIXES = (".", "~")
IN_PROGRESS_SUFFIXES = (".tmp", ".part", ".partial", ".crdownload")

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
        if path.is_symlink() or not path.is_file() or in_progress(path.name):  # regular files only
            continue
        match = FILE_NAME.match(path.name)
        if match and match["day"] == day:
            found.append(path)
    return sorted(found, key=lambda p: p.name)


def manifest_digest(files: Mapping[str, str]) -> str:
    """The sha256 of a day's inputs: its file names with the sha256 of their content, in name order."""
    text = "\n".join(f"{name}\t{sha}" for name, sha in sorted(files.items()))
    return hashlib.sha256(text.encode()).hexdigest()
