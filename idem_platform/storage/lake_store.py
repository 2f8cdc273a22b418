"""Lake file sink: one Parquet file per (asset, day), replaced with `os.replace`.

- stage: write each day's rows to a temp file beside its target (`.<day>.<run id>.<pid>.tmp`), fsync it. The file
  carries its version token (`idem.version` in the Parquet footer's key-value metadata): the ledger's intent names
  it, and a reader of the file can tell which write it came from. Temp files that crashed writes of the same day
  left behind are removed first (the partition lock is held, so no live writer owns them). The version of the
  file live now is noted: the publish's condition.
- verify: the staged file's row count (from its Parquet footer) equals the frame's.
- publish: a compare-and-swap. Under an exclusive `flock` on the asset's directory (held only for the swap, so
  writers of other days wait milliseconds), every target must still hold the version noted at stage, else
  `StalePublish` and nothing moves; then `os.replace` every temp file onto its target and fsync the directory: a
  reader opens the old file or the new one, never a partial one. `flock` serializes processes on one host and on
  file systems that implement it across hosts (NFSv4 with lock support); on others the check is best effort.
- discard: remove the temp files.

A day with no rows is published as an empty file carrying the schema, so its old rows disappear.
Parquet keeps the canonical dtypes, so reading back gives the same frame and the same fingerprint.

Schema evolution, as in the other sinks: every day is a file of its own, written with the columns declared then.
- prepare: the types the asset ever declared are recorded in `<asset dir>/_idem_schema.json` (for a lake written
  before that file existed: read from the newest day's file); a declared type that differs from the recorded
  one is refused with the same message as in PostgreSQL and the index. Dropped columns stay recorded, so a
  column dropped and declared again with another type is refused too.
- read: a file without a column declared since (nullable) reads it as nulls; a column of a file that is no
  longer declared is left out. A missing NOT NULL column (a key added since) is an error naming the day.
- a key change needs no migration here: each day is replaced whole and the audit checks the new key on every
  write; days written before the change are checked by the `unique_key` asset check.
"""

from __future__ import annotations

import fcntl
import json
import os
import secrets
from collections.abc import Sequence
from contextlib import contextmanager
from pathlib import Path

import pandas as pd
import pyarrow as pa
import pyarrow.parquet as pq

from ..resources import LakeResource
from .faults import fault_point
from .partition_store import (
    AssetTarget,
    PartitionIOManager,
    PartitionSink,
    StagedVersions,
    StalePublish,
    type_change_refused,
)
from .schema import PARTITION_COLUMN, SchemaError

SUFFIX = ".parquet"
VERSION_KEY = b"idem.version"
SCHEMA_FILE = "_idem_schema.json"  # {"columns": {name: logical type}}: every type the asset ever declared


def file_version(path: Path) -> str | None:
    """The version token of a published file (None: no file). A file written before tokens existed (or by hand)
    gets one from its identity on disk, which `os.replace` by anyone else changes."""
    try:
        metadata = pq.read_metadata(path).metadata or {}
    except FileNotFoundError:
        return None
    except (OSError, pa.ArrowInvalid):  # not Parquet: someone else's file
        metadata = {}
    token = metadata.get(VERSION_KEY)
    if token:
        return token.decode()
    st = path.stat()
    return f"file:{st.st_ino}:{st.st_mtime_ns}:{st.st_size}"


def logical_type(arrow_type: pa.DataType) -> str | None:
    """The declared type a Parquet column of the platform was written from (None: not one of them)."""
    if pa.types.is_string(arrow_type) or pa.types.is_large_string(arrow_type):
        return "string"
    if pa.types.is_integer(arrow_type):
        return "int"
    if pa.types.is_floating(arrow_type):
        return "float"
    if pa.types.is_boolean(arrow_type):
        return "bool"
    if pa.types.is_timestamp(arrow_type):
        return "timestamp" if arrow_type.tz else "date"
    if pa.types.is_date(arrow_type):
        return "date"
    return None


@contextmanager
def _directory_lock(path: Path):
    fd = os.open(path, os.O_RDONLY)
    try:
        fcntl.flock(fd, fcntl.LOCK_EX)
        yield
    finally:
        os.close(fd)  # releases the flock


def _fsync_dir(path: Path) -> None:
    fd = os.open(path, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


class LakeSink(PartitionSink):
    name = "lake"

    def __init__(self, lake: LakeResource):
        self.lake = lake

    def path(self, target: AssetTarget, day: str) -> Path:
        return self.lake.asset_dir(target.asset) / f"{day}{SUFFIX}"

    def location(self, target: AssetTarget, day: str) -> str:
        return str(self.path(target, day))

    def store(self, target: AssetTarget) -> str:
        return str(self.lake.asset_dir(target.asset))

    def prepare(self, conn, target: AssetTarget) -> None:
        """Refuse a changed column type; record the declared types (see the module's docstring)."""
        directory = self.lake.asset_dir(target.asset)
        declared = {c.name: c.type for c in target.decl.columns}
        with _directory_lock(directory):
            recorded = self._recorded_types(directory)
            for name, new in declared.items():
                old = recorded.get(name)
                if old is not None and old != new:
                    raise type_change_refused(target.asset, name, old, new, f"the lake ({directory})")
            if {**recorded, **declared} != recorded:
                temp = directory / f".{SCHEMA_FILE}.{os.getpid()}.tmp"
                temp.write_text(json.dumps({"columns": {**recorded, **declared}}, indent=1, sort_keys=True))
                os.replace(temp, directory / SCHEMA_FILE)

    @staticmethod
    def _recorded_types(directory: Path) -> dict[str, str]:
        try:
            return dict(json.loads((directory / SCHEMA_FILE).read_text())["columns"])
        except FileNotFoundError:
            pass
        days = sorted(directory.glob(f"????-??-??{SUFFIX}"))
        if not days:
            return {}
        try:
            schema = pq.read_schema(days[-1])
        except (OSError, pa.ArrowInvalid):
            return {}
        return {f.name: t for f in schema if (t := logical_type(f.type)) is not None}

    def orphans(self, target: AssetTarget, day: str) -> list[Path]:
        """Temp files of crashed writes of this day."""
        return sorted(self.lake.asset_dir(target.asset).glob(f".{day}.*.tmp"))

    def versions(self, target: AssetTarget, days: Sequence[str]) -> dict[str, str | None]:
        return {day: file_version(self.path(target, day)) for day in days}

    def stage(self, conn, target, days, frame, run_id) -> StagedVersions:
        day_keys = frame[PARTITION_COLUMN].dt.strftime("%Y-%m-%d")
        staged = StagedVersions(where={}, versions={}, expected=self.versions(target, days))
        try:
            for day in days:
                for orphan in self.orphans(target, day):
                    orphan.unlink(missing_ok=True)
                version = f"{run_id}.{secrets.token_hex(4)}"
                temp = self.path(target, day).with_name(f".{day}.{run_id[:8]}.{os.getpid()}.tmp")
                staged.where[day], staged.versions[day] = temp, version
                table = pa.Table.from_pandas(frame[day_keys == day].reset_index(drop=True), preserve_index=False)
                table = table.replace_schema_metadata({**(table.schema.metadata or {}), VERSION_KEY: version.encode()})
                with open(temp, "wb") as fh:
                    pq.write_table(table, fh)
                    fault_point(self.name, "mid_stage", target.asset)  # written, not yet fsynced
                    fh.flush()
                    os.fsync(fh.fileno())
        except BaseException:
            self.discard(target, staged)
            raise
        return staged

    def verify_staged(self, conn, target, staged, digests) -> None:
        for day, temp in staged.where.items():
            rows = pq.ParquetFile(temp).metadata.num_rows
            if rows != digests[day].rows:
                raise RuntimeError(f"asset {target.asset!r} day {day}: staged file has {rows} rows, expected {digests[day].rows}")

    def publish(self, conn, target, staged: StagedVersions) -> None:
        directory = self.lake.asset_dir(target.asset)
        with _directory_lock(directory):
            now = self.versions(target, list(staged.where))
            moved = {day: (staged.expected[day], now[day]) for day in staged.where if now[day] != staged.expected[day]}
            # a newer writer of the day removes this one's temp files as orphans
            moved |= {day: "staged file removed" for day, temp in staged.where.items() if not temp.exists()}
            if moved:
                raise StalePublish(
                    f"asset {target.asset!r}: another writer replaced day(s) {', '.join(sorted(moved))} in the lake "
                    f"since this write took the partition lock (expected, found: {moved}); nothing was published"
                )
            for day, temp in staged.where.items():
                os.replace(temp, self.path(target, day))
            _fsync_dir(directory)

    def discard(self, target, staged: StagedVersions | None) -> None:
        for temp in (staged.where.values() if staged else ()):
            Path(temp).unlink(missing_ok=True)

    def read(self, target: AssetTarget, days: Sequence[str]) -> pd.DataFrame:
        frames = []
        for day in days:
            path = self.path(target, day)
            if not path.exists():
                raise FileNotFoundError(f"asset {target.asset!r} day {day}: lake file {path} is missing")
            # One descriptor for the whole read: a concurrent os.replace then cannot mix two files' bytes.
            with open(path, "rb") as fh:
                present = set(pq.read_schema(fh).names)
                fh.seek(0)
                columns = [n for n in target.decl.names if n in present]
                frames.append(_with_declared_columns(pd.read_parquet(fh, columns=columns), target, day, path))
        frame = pd.concat(frames, ignore_index=True) if frames else target.decl.empty_frame()
        return target.decl.coerce(frame, what=f"lake files of {target.asset!r}")


def _with_declared_columns(frame: pd.DataFrame, target: AssetTarget, day: str, path: Path) -> pd.DataFrame:
    """A day's file as the asset declares its columns now: a nullable column declared since reads as nulls."""
    missing = [c for c in target.decl.columns if c.name not in frame.columns]
    required = [c.name for c in missing if not c.nullable]
    if required:
        raise SchemaError(
            f"asset {target.asset!r} day {day}: lake file {path} has no column(s) {required}, declared NOT NULL "
            "since it was written; rematerialize the day"
        )
    if not missing:
        return frame
    return frame.assign(**{c.name: pd.Series([None] * len(frame), dtype=object) for c in missing})


class LakePartitionIOManager(PartitionIOManager):
    """Daily partitions of an asset as Parquet files under the lake root (IDEM_LAKE_DIR)."""

    lake: LakeResource

    def sink(self) -> LakeSink:
        return LakeSink(self.lake)
