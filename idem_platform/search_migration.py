"""`idem search-migrate`: move the days an earlier version published as one index per day into the year indices.

The earlier search layout created one physical index per (asset, day, write); a deployment backfilled for a few
years holds thousands of shards and hits Elasticsearch's `cluster.max_shards_per_node`. Those days keep reading
(the day alias and the read alias still point at them) and the next write of a day moves it. This command moves
every such day now, by the platform's own write path: the day's documents are read back and republished, so each
batch is locked, staged into its period index, counted, published in one conditional `_aliases` request (the
day alias and the read alias leave the old index as they arrive in the new one) and recorded in the ledger with
the same fingerprint (`changed=false`); the old index is then deleted. A day rewritten by someone else
meanwhile is left as that write published it (it is in its period index already).
"""

from __future__ import annotations

import uuid
from collections.abc import Callable
from dataclasses import dataclass

import dagster as dg

from .storage.elasticsearch_store import ElasticsearchIndexSink, ElasticsearchPartitionIOManager, VersionMoved
from .storage.partition_store import AssetTarget, publish_partitions
from .verification import Location, _resolved_io_manager, find_asset, idem_asset_keys

DAYS_PER_BATCH = 31


@dataclass
class Migrated:
    asset: str
    days: int  # days moved into their period index by this command
    skipped: int  # days another write moved meanwhile
    indices_before: int  # physical indices of the asset before, and after
    indices_after: int

    def describe(self) -> str:
        skipped = f", {self.skipped} rewritten by another write meanwhile" if self.skipped else ""
        return (f"{self.asset}: moved {self.days} day(s) into period indices{skipped}; "
                f"physical indices {self.indices_before} -> {self.indices_after}")


def search_assets(location: Location) -> list[str]:
    """The idem assets of a code location that write through a search IO manager."""
    found = []
    for key in idem_asset_keys(location):
        assets_def = find_asset(location, key.to_user_string())
        io_manager = _resolved_io_manager(location, assets_def.get_io_manager_key_for_asset_key(key))
        if isinstance(io_manager, ElasticsearchPartitionIOManager):
            found.append(key.to_user_string())
    return found


def migrate_asset(location: Location, asset: str, progress: Callable[[str], None] = lambda message: None) -> Migrated:
    assets_def = find_asset(location, asset)
    key = dg.AssetKey.from_user_string(asset)
    io_manager = _resolved_io_manager(location, assets_def.get_io_manager_key_for_asset_key(key))
    if not isinstance(io_manager, ElasticsearchPartitionIOManager):
        raise KeyError(f"asset {asset!r} does not write to a search index ({type(io_manager).__name__})")
    target = AssetTarget.from_metadata(key.to_user_string(), assets_def.specs_by_key[key].metadata)
    sink = io_manager.sink()
    layout = sink.layout(target)
    before = len(layout.indices)
    old = sorted(day for day, indices in layout.earlier_layout_indices(sorted(layout.days)).items() if indices)
    run_id = f"migrate-{uuid.uuid4()}"
    moved = skipped = 0
    for start in range(0, len(old), DAYS_PER_BATCH):
        batch = old[start:start + DAYS_PER_BATCH]
        moved_batch, skipped_batch = _migrate_batch(sink, io_manager, target, batch, run_id)
        moved, skipped = moved + moved_batch, skipped + skipped_batch
        progress(f"idem search-migrate: {asset}: {moved + skipped} of {len(old)} day(s)")
    return Migrated(asset, moved, skipped, before, len(sink.layout(target).indices))


def _migrate_batch(sink: ElasticsearchIndexSink, io_manager, target: AssetTarget, wanted: list[str], run_id: str):
    """Republish `wanted` as read, on condition that under the partition lock each day still publishes the version
    read (`pinned_versions`). Returns (moved, rewritten by another write meanwhile)."""
    for _ in range(3):
        layout = sink.layout(target)
        days = [d for d in wanted if layout.earlier_layout_indices([d])[d]]
        if not days:
            return 0, len(wanted)
        frame = sink.read(target, days)
        pinned = ElasticsearchIndexSink(sink.es, replicas=sink.replicas, period=sink.period,
                                        pinned_versions={day: layout.version(day) for day in days})
        try:
            publish_partitions(pinned, io_manager.postgres, target, days, frame, run_id)
            return len(days), len(wanted) - len(days)
        except VersionMoved:  # a day was rewritten between the read and the lock: read again
            continue
    raise RuntimeError(f"asset {target.asset!r}: days of {wanted[0]}..{wanted[-1]} kept changing while being "
                       "migrated; run the command again")
