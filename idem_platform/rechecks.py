"""Re-checking published days without re-materializing them: `recheck_job` and `drift_check_schedule`.

- `recheck_job`: the generated checks of every `@idem_asset` (drift, row counts, keys) and nothing else,
  partitioned like the assets: launch it from the UI with the partition picker (one day, or a range as a
  backfill) and each day's checks are evaluated against what the sinks hold now, recorded per day on the assets.
  Assets whose days differ (their own start, end or timezone) get one such job per set of days:
  `recheck_job` for the largest set, `recheck_job_2`, ... for the others.
- `drift_check_schedule`: runs `recheck_job` for the last IDEM_RECHECK_DAYS days at IDEM_DRIFT_CHECK_CRON
  (default 05:00 every day); running by default, so `idem dev` and any deployment with a daemon watch for drift
  without anyone switching it on.
"""

from __future__ import annotations

from collections.abc import Iterable

import dagster as dg

from . import settings
from .storage.partition_store import KEY_METADATA

JOB = "recheck_job"
SCHEDULE = "drift_check_schedule"


def _idem_assets(assets: Iterable[object]) -> list[dg.AssetsDefinition]:
    return [a for a in assets if isinstance(a, dg.AssetsDefinition) and a.partitions_def is not None
            and KEY_METADATA in a.specs_by_key[a.key].metadata]


def recheck_jobs_and_schedules(assets: Iterable[object]) -> tuple[list, list[dg.ScheduleDefinition]]:
    groups: dict[object, list[dg.AssetsDefinition]] = {}
    for assets_def in _idem_assets(assets):
        groups.setdefault(assets_def.partitions_def, []).append(assets_def)
    config = settings.current()
    jobs, schedules = [], []
    for i, (partitions_def, group) in enumerate(sorted(groups.items(), key=lambda g: -len(g[1])), start=1):
        suffix = "" if i == 1 else f"_{i}"
        names = ", ".join(a.key.to_user_string() for a in group)
        job = dg.define_asset_job(
            f"{JOB}{suffix}",
            selection=dg.AssetSelection.checks_for_assets(*group),
            # Dagster infers an asset job's partitions from the assets it materializes, and ignores
            # `partitions_def` when there are none (checks only): the job would be unpartitioned, with no
            # partition picker in the UI and the schedule's partitioned run requests refused. A partitioned
            # config (no run config of its own) is what makes the job partitioned.
            config=dg.PartitionedConfig(partitions_def=partitions_def, run_config_for_partition_key_fn=_no_config),
            description=f"Re-check published days of {names} without re-materializing them: pick the days; each "
            "day's checks (drift against the ledger, row counts, keys) are recorded on the asset.",
        )
        jobs.append(job)
        schedules.append(_drift_schedule(f"{SCHEDULE}{suffix}", job, partitions_def, config.drift_check_cron,
                                         config.recheck_days))
    return jobs, schedules


def _no_config(partition_key: str) -> dict:
    return {}


def _drift_schedule(name: str, job, partitions_def: dg.PartitionsDefinition, cron: str, days: int):
    @dg.schedule(
        name=name, job=job, cron_schedule=cron, default_status=dg.DefaultScheduleStatus.RUNNING,
        description=f"Re-checks the last {days} days (IDEM_RECHECK_DAYS) for drift: a day whose sink no longer "
        "holds what the ledger recorded turns its check red on the asset.",
    )
    def drift_check(context: dg.ScheduleEvaluationContext):
        keys = partitions_def.get_partition_keys(current_time=context.scheduled_execution_time)[-days:]
        stamp = context.scheduled_execution_time.strftime("%Y%m%dT%H%M") if context.scheduled_execution_time else ""
        return [dg.RunRequest(partition_key=day, run_key=f"{name}:{stamp}:{day}") for day in keys]

    return drift_check
