"""Lake file sink: one Parquet file per (asset, day), replaced with `os.replace`.

- stage: write each day's rows to a temp file beside its target (`.<day>.<run id>.<pid>.tmp`), fsync it.
  Temp files that crashed writes of the same day left behind are removed first (the partition lock is held,
  so no live writer owns them).
- verify: the staged file's row count (from its Parquet footer) equals the frame's.
- publish: `os.replace` every temp file onto its target, then fsync the directory: a reader opens the old file or
  the new one, never a partial one.
- discard: remove the temp files.

A day with no rows is published as an empty file carrying the schema, so its old rows disappear.
Parquet keeps the canonical dtypes, so reading back gives the same frame and the same fingerprint.
"""

from __future__ import annotations

import os
from collections.abc import Sequence
from pathlib import Path

import pandas as pd
import pyarrow.parquet as pq

from ..resources import LakeResource
from .faults import fault_point
from .partition_store import AssetTarget, PartitionIOManager, PartitionSink
from .schema import PARTITION_COLUMN

SUFFIX = ".parquet"


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

    def orphans(self, target: AssetTarget, day: str) -> list[Path]:
        """Temp files of crashed writes of this day."""
        return sorted(self.lake.asset_dir(target.asset).glob(f".{day}.*.tmp"))

    def stage(self, conn, target, days, frame, run_id) -> dict[str, Path]:
        day_keys = frame[PARTITION_COLUMN].dt.strftime("%Y-%m-%d")
        staged: dict[str, Path] = {}
        try:
            for day in days:
                for orphan in self.orphans(target, day):
                    orphan.unlink(missing_ok=True)
                temp = self.path(target, day).with_name(f".{day}.{run_id[:8]}.{os.getpid()}.tmp")
                staged[day] = temp
                day_frame = frame[day_keys == day].reset_index(drop=True)
                with open(temp, "wb") as fh:
                    day_frame.to_parquet(fh, index=False)
                    fault_point(self.name, "mid_stage", target.asset)  # written, not yet fsynced
                    fh.flush()
                    os.fsync(fh.fileno())
        except BaseException:
            self.discard(target, staged)
            raise
        return staged

    def verify_staged(self, conn, target, staged, digests) -> None:
        for day, temp in staged.items():
            rows = pq.ParquetFile(temp).metadata.num_rows
            if rows != digests[day].rows:
                raise RuntimeError(f"asset {target.asset!r} day {day}: staged file has {rows} rows, expected {digests[day].rows}")

    def publish(self, conn, target, staged) -> None:
        for day, temp in staged.items():
            os.replace(temp, self.path(target, day))
        _fsync_dir(self.lake.asset_dir(target.asset))

    def discard(self, target, staged) -> None:
        for temp in staged.values():
            Path(temp).unlink(missing_ok=True)

    def read(self, target: AssetTarget, days: Sequence[str]) -> pd.DataFrame:
        frames = []
        for day in days:
            path = self.path(target, day)
            if not path.exists():
                raise FileNotFoundError(f"asset {target.asset!r} day {day}: lake file {path} is missing")
            # One descriptor for the whole read: a concurrent os.replace then cannot mix two files' bytes.
            with open(path, "rb") as fh:
                frames.append(pd.read_parquet(fh))
        frame = pd.concat(frames, ignore_index=True) if frames else target.decl.empty_frame()
        return target.decl.coerce(frame, what=f"lake files of {target.asset!r}")


class LakePartitionIOManager(PartitionIOManager):
    """Daily partitions of an asset as Parquet files under the lake root (IDEM_LAKE_DIR)."""

    lake: LakeResource

    def sink(self) -> LakeSink:
        return LakeSink(self.lake)
