"""Provable idempotency: compare what a partition would be, what was published, and what the sink holds now.

Three fingerprints per partition:

- **recomputed**: the asset recomputed through its own code path (upstream loaded by the real IO managers, the
  output coerced, fingerprinted and audited by the same `idem_asset`/`PartitionIOManager` code) but NOT
  published: the run carries the capture tag, which turns every platform IO manager into a dry run;
- **published**: the ledger's last fingerprint for the partition;
- **in sink**: the partition read back from its sink right now, fingerprinted.

Verdicts: `identical` (all three agree, exit 0), `differs` (a rerun would change the partition: rows added,
removed or changed by key, exit 1), `drifted` (the sink no longer holds what the ledger says was published:
someone changed it behind the pipeline's back, exit 2), `algorithm changed` (the ledger's fingerprint was made
by another fingerprint algorithm than this code's and does not match the sink's content under this one: drift
cannot be told from the algorithm change, so a rerun re-records it, exit 4). An error that prevents verifying
exits 3. Several partitions exit with the code of the most serious verdict: drifted, then algorithm changed,
then differs.

A ledger fingerprint made by another algorithm that still equals the sink's (the content holds no value the
two algorithms hash differently, e.g. no -0.0 for algorithms 1 and 2) is judged as usual.
"""


import uuid
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field

import dagster as dg
import numpy as np
import pandas as pd

from pydantic import Field

from .partitions import days_between, parse_range, validate_partition_keys
from .storage import dry_run, ledger
from .storage.fingerprint import ALGORITHM, PartitionDigest, partition_digests, row_hashes
from .storage.partition_store import KEY_METADATA, AssetTarget, PartitionIOManager, published_entries
from .storage.schema import PARTITION_COLUMN

EXIT_CODES = {"identical": 0, "differs": 1, "drifted": 2, "algorithm changed": 4}
SEVERITY = ("identical", "differs", "algorithm changed", "drifted")  # exit_code reports the most serious
EXAMPLES = 5
EMPTY_FINGERPRINT = "0" * 16


@dataclass
class PartitionVerdict:
    asset: str
    partition: str
    status: str
    recomputed: PartitionDigest
    published: PartitionDigest | None
    in_sink: PartitionDigest
    added: list[str] = field(default_factory=list)
    removed: list[str] = field(default_factory=list)
    changed: list[str] = field(default_factory=list)
    published_algorithm: str = ALGORITHM  # the fingerprint algorithm of the ledger's fingerprint

    def as_dict(self) -> dict:
        return {
            "asset": self.asset, "partition": self.partition, "status": self.status,
            "recomputed": self.recomputed.__dict__, "published": self.published and self.published.__dict__,
            "in_sink": self.in_sink.__dict__,
            "fingerprint_algorithm": {"published": self.published_algorithm, "now": ALGORITHM},
            "rows_added": len(self.added), "rows_removed": len(self.removed), "rows_changed": len(self.changed),
            "examples": {"added": self.added[:EXAMPLES], "removed": self.removed[:EXAMPLES], "changed": self.changed[:EXAMPLES]},
        }

    def describe(self) -> str:
        text = f"{self.asset} {self.partition}: {self.status}"
        if self.status == "drifted":
            pub = self.published.fingerprint if self.published else "nothing"
            text += f" (ledger says {pub}, sink holds {self.in_sink.fingerprint} in {self.in_sink.rows} rows)"
        if self.status == "algorithm changed":
            text = (
                f"{self.asset} {self.partition}: fingerprint algorithm changed: rerun to re-record (the ledger's "
                f"{self.published.fingerprint if self.published else 'nothing'} was made by algorithm "
                f"{self.published_algorithm}, this code's is {ALGORITHM}; the sink holds {self.in_sink.fingerprint} "
                f"in {self.in_sink.rows} rows under it)"
            )
        if self.added or self.removed or self.changed:
            text += f"; a rerun would add {len(self.added)}, remove {len(self.removed)}, change {len(self.changed)} rows"
            for label, keys in (("added", self.added), ("removed", self.removed), ("changed", self.changed)):
                if keys:
                    text += f"\n    {label} e.g. {', '.join(keys[:EXAMPLES])}"
        return text


def published_records(io_manager: PartitionIOManager, target: AssetTarget, days: Sequence[str]) -> dict[str, ledger.LedgerEntry]:
    """The ledger row of what each day publishes, an intent a crash left unconfirmed resolved from the sink."""
    sink = io_manager.sink()
    with io_manager.postgres.connect() as conn:
        return published_entries(sink, conn, target, days) if ledger.ledger_exists(conn) else {}


def published_digests(io_manager: PartitionIOManager, target: AssetTarget, days: Sequence[str]) -> dict[str, PartitionDigest]:
    """What the ledger says each day publishes (row count and fingerprint)."""
    return {d: PartitionDigest(e.row_count, e.fingerprint) for d, e in published_records(io_manager, target, days).items()}


def sink_frame(io_manager: PartitionIOManager, target: AssetTarget, days: Sequence[str]) -> pd.DataFrame:
    """What the sink holds now for `days` (a day the sink has no trace of reads as empty): one read of all the
    days; only if that fails (a day's file or index missing) day by day."""
    sink = io_manager.sink()
    try:
        return sink.read(target, list(days))
    except Exception:  # noqa: BLE001 - some day is missing: find which, below
        pass
    frames = []
    for day in days:
        try:
            frames.append(sink.read(target, [day]))
        except Exception:  # noqa: BLE001 - a missing table/file/index is "holds nothing"
            frames.append(target.decl.empty_frame())
    return pd.concat(frames, ignore_index=True)


def _keys(frame: pd.DataFrame, target: AssetTarget) -> pd.Series:
    parts = [frame[k].astype("string").fillna("<null>") for k in target.decl.key]
    out = parts[0]
    for p in parts[1:]:
        out = out + "|" + p
    return out


def diff_by_key(new: pd.DataFrame, old: pd.DataFrame, target: AssetTarget) -> tuple[list[str], list[str], list[str]]:
    """Keys added, removed and changed (same key, other content) going from `old` to `new`."""
    new_rows = pd.Series(row_hashes(new, target.decl), index=_keys(new, target).to_numpy())
    old_rows = pd.Series(row_hashes(old, target.decl), index=_keys(old, target).to_numpy())
    added = sorted(set(new_rows.index) - set(old_rows.index))
    removed = sorted(set(old_rows.index) - set(new_rows.index))
    common = new_rows.index.intersection(old_rows.index)
    new_c = new_rows[~new_rows.index.duplicated()].reindex(common)
    old_c = old_rows[~old_rows.index.duplicated()].reindex(common)
    changed = sorted(common[np.asarray(new_c.to_numpy() != old_c.to_numpy())].tolist())
    return added, removed, changed


Location = dg.Definitions | dg.RepositoryDefinition


def location_assets(location: Location) -> list[dg.AssetsDefinition | dg.SourceAsset]:
    """Every asset definition of a code location (a `Definitions`, or the repository a run executes in)."""
    if isinstance(location, dg.RepositoryDefinition):
        return list(location.assets_defs_by_key.values())
    return [a for a in location.assets or [] if isinstance(a, (dg.AssetsDefinition, dg.SourceAsset))]


def location_resources(location: Location) -> dict:
    if isinstance(location, dg.RepositoryDefinition):
        return dict(location.get_top_level_resources())
    return dict(location.resources or {})


def idem_asset_keys(location: Location) -> list[dg.AssetKey]:
    """The keys of the assets declared with `@idem_asset` in a code location."""
    return sorted(
        {key for a in location_assets(location) if isinstance(a, dg.AssetsDefinition)
         for key in a.keys if KEY_METADATA in a.specs_by_key[key].metadata},
        key=lambda k: k.to_user_string(),
    )


def find_asset(location: Location, asset: str) -> dg.AssetsDefinition:
    key = dg.AssetKey.from_user_string(asset)
    for assets_def in location_assets(location):
        if isinstance(assets_def, dg.AssetsDefinition) and key in assets_def.keys:
            return assets_def
    known = ", ".join(k.to_user_string() for k in idem_asset_keys(location)) or "none"
    raise KeyError(f"no asset {asset!r} in this code location (its idem assets: {known})")


def asset_days(location: Location, asset: str, partitions: Sequence[str] = (), partition_range: str = "") -> list[str]:
    """The days of `asset` that `partitions` or `partition_range` (`A...B` or `[A...B]`) name, validated against
    the asset's own partitions."""
    assets_def = find_asset(location, asset)
    if partition_range:
        first, last = parse_range(partition_range)
        return days_between(first, last, assets_def.partitions_def, asset=asset)
    days = sorted(set(partitions))
    validate_partition_keys(days, assets_def.partitions_def, asset=asset)
    return days


def recompute(location: Location, asset: str, days: Sequence[str], run_config: dict | None = None) -> pd.DataFrame:
    """The asset's frame for `days`, computed and audited by its own code path, not published."""
    assets_def = find_asset(location, asset)
    key = dg.AssetKey.from_user_string(asset)
    io_key = assets_def.get_io_manager_key_for_asset_key(key)
    resources = location_resources(location)
    if io_key not in resources:
        raise KeyError(f"asset {asset!r} writes through IO manager {io_key!r}, which this code location does not define")
    token = uuid.uuid4().hex
    tags = {dry_run.CAPTURE_TAG: token}
    partition = days[0] if len(days) == 1 else None
    if len(days) > 1:
        tags.update({"dagster/asset_partition_range_start": days[0], "dagster/asset_partition_range_end": days[-1]})
    run_config = {"loggers": {"console": {"config": {"log_level": "WARNING"}}}, **(run_config or {})}
    dg.materialize(
        location_assets(location),
        selection=dg.AssetSelection.assets(key).without_checks(),
        partition_key=partition, tags=tags, run_config=run_config, instance=dg.DagsterInstance.ephemeral(),
        # A repository's assets carry their resources already (binding them again is a conflict).
        resources=None if isinstance(location, dg.RepositoryDefinition) else resources,
    )
    return dry_run.take(token)


def verify_partitions(
    location: Location, asset: str, days: Sequence[str], run_config: dict | None = None,
    progress: Callable[[str], None] = lambda message: None,
) -> list[PartitionVerdict]:
    """Verify `days` of `asset` in a code location (a `Definitions` or the repository of the running job)."""
    days = sorted(days)
    assets_def = find_asset(location, asset)
    key = dg.AssetKey.from_user_string(asset)
    io_manager = _resolved_io_manager(location, assets_def.get_io_manager_key_for_asset_key(key))
    target = AssetTarget.from_metadata(key.to_user_string(), assets_def.specs_by_key[key].metadata)

    fresh = target.decl.coerce(recompute(location, asset, days, run_config))
    progress(f"idem verify: recomputed {len(fresh)} rows; reading {len(days)} day(s) from the {io_manager.sink().name} sink")
    now = sink_frame(io_manager, target, days)
    fresh_digests = partition_digests(fresh, target.decl, list(days))
    now_digests = partition_digests(now, target.decl, list(days))
    records = published_records(io_manager, target, days)
    published = {d: PartitionDigest(e.row_count, e.fingerprint) for d, e in records.items()}
    verdicts = []
    fresh_days, now_days = _day_keys(fresh), _day_keys(now)
    for day in days:
        pub = published.get(day)
        drifted = (pub.fingerprint if pub else EMPTY_FINGERPRINT) != now_digests[day].fingerprint
        differs = fresh_digests[day].fingerprint != now_digests[day].fingerprint
        algorithm = records[day].fingerprint_algo if day in records else ALGORITHM
        if drifted and algorithm != ALGORITHM:
            status = "algorithm changed"
        else:
            status = "drifted" if drifted else "differs" if differs else "identical"
        added, removed, changed = (
            diff_by_key(fresh[fresh_days == day], now[now_days == day], target) if differs else ([], [], [])
        )
        verdicts.append(PartitionVerdict(
            asset, day, status, fresh_digests[day], pub, now_digests[day], added, removed, changed, algorithm
        ))
    return verdicts


def _day_keys(frame: pd.DataFrame) -> np.ndarray:
    """Each row's day as `YYYY-MM-DD`, computed once (not once per day of a long range)."""
    return frame[PARTITION_COLUMN].dt.strftime("%Y-%m-%d").to_numpy()


def _resolved_io_manager(location: Location, io_key: str) -> PartitionIOManager:
    """The IO manager with its EnvVars resolved, as a run would see it."""
    with dg.build_resources({io_key: location_resources(location)[io_key]}) as resources:
        return getattr(resources, io_key)


def exit_code(verdicts: Sequence[PartitionVerdict]) -> int:
    worst = max((SEVERITY.index(v.status) for v in verdicts), default=0)
    return EXIT_CODES[SEVERITY[worst]]


class VerifyConfig(dg.Config):
    asset: str = Field(description="the asset to verify, as the catalog names it: `people`, `sales/orders`")
    partitions: list[str] = Field(
        default=[], description="days to verify, YYYY-MM-DD, e.g. [\"2026-01-05\"]; or give partition_range"
    )
    partition_range: str = Field(
        default="",
        description="or a range of days, both ends included: `A...B` (as `idem verify --range`) or `[A...B]` (as "
        "Dagster's launch dialog writes it), e.g. 2026-01-01...2026-01-07",
    )


@dg.op(
    out=dg.Out(dg.Nothing),
    description="Recompute partitions without publishing and compare with the ledger and the sink (idem verify).",
)
def verify_partitions_op(context: dg.OpExecutionContext, config: VerifyConfig):
    # The code location this job was loaded from: verify_job verifies that location's assets, whichever it is.
    from .check_records import log_evaluations, unverified_evaluations, verdict_evaluations

    location = context.repository_def
    days = asset_days(location, config.asset, config.partitions, config.partition_range)
    if not days:
        raise dg.Failure("give `partitions` or `partition_range`")
    try:
        verdicts = verify_partitions(location, config.asset, days)
    except Exception as exc:  # noqa: BLE001 - recorded on the asset as "could not verify", with its cause
        cause = str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
        log_evaluations(context, unverified_evaluations(context.instance, config.asset, days, cause))
        raise dg.Failure(description=f"could not verify {config.asset} {_days_span(days)}: {cause}") from exc
    log_evaluations(context, verdict_evaluations(context.instance, verdicts))  # each day's verdict, on the drift check
    for verdict in verdicts:
        context.log.info(verdict.describe())
    report = {"verdicts": dg.MetadataValue.json([v.as_dict() for v in verdicts]),
              **{status: sum(v.status == status for v in verdicts) for status in SEVERITY}}
    bad = [v for v in verdicts if v.status in ("drifted", "algorithm changed")]
    if bad:
        raise dg.Failure(
            description=f"{len(bad)} of {len(verdicts)} partitions drifted from what was published: "
            + ", ".join(f"{v.partition} {v.status}" for v in bad[:10]), metadata=report,
        )
    differs = [v.partition for v in verdicts if v.status == "differs"]
    if differs:
        context.log.warning(f"{len(differs)} partition(s) would change on a rerun (the source changed): {differs[:10]}")
    return dg.Output(None, metadata=report)


def _days_span(days: Sequence[str]) -> str:
    return days[0] if len(days) == 1 else f"{days[0]}...{days[-1]}"


@dg.job(description="Verify published partitions of one asset (launch from the UI with asset and partitions in the config).")
def verify_job():
    verify_partitions_op()
