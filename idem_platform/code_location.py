"""`idem_definitions`: a whole code location from a list of `@idem_asset`s, wired the way the platform expects.

    defs = idem_definitions(assets=[orders, orders_search], schedules=[...], sensors=[...])

returns a `dg.Definitions` with:

- the platform's IO managers and resources, found from settings when they are used (not when the code location
  loads): `warehouse_io` (PostgreSQL tables), `lake_io` (Parquet files), `search_io` (Elasticsearch indices),
  `postgres` (the server that holds the ledger and the partition locks). Resources you pass are added, and
  replace the platform's of the same key;
- the generated asset checks of every `@idem_asset` (`fingerprint_matches_ledger`, `row_count_matches_upstream`,
  and `unique_key` where the sink does not enforce the key: the lake), plus the checks you pass;
- `verify_job` (recompute without publishing and compare, from the UI), `recheck_job` (the checks alone, for the
  days picked in the UI) and `drift_check_schedule` (re-checks the recent days every day; `rechecks`), plus your
  jobs and schedules;
- the in-process executor (a day partition is small and a subprocess per step costs seconds; pass
  `executor=` to scale out, e.g. dagster-celery's);
- Dagster's event batching for range runs (`IDEM_EVENT_BATCH_SIZE`, `settings.apply_dagster_defaults`);
- everything else you pass (schedules, sensors, ...) as it is.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from typing import Any

import dagster as dg

from . import settings
from .checks import checks_for
from .declare import DeclarationError
from .rechecks import recheck_jobs_and_schedules
from .resources import LakeResource, PostgresResource
from .storage.elasticsearch_store import ElasticsearchPartitionIOManager
from .storage.lake_store import LakePartitionIOManager
from .storage.partition_store import KEY_METADATA, AssetTarget, PartitionIOManager
from .storage.postgres_store import PostgresPartitionIOManager
from .storage.search_client import ElasticsearchResource
from .verification import verify_job

WAREHOUSE_IO = "warehouse_io"
LAKE_IO = "lake_io"
SEARCH_IO = "search_io"
POSTGRES = "postgres"


def platform_resources() -> dict[str, Any]:
    """The platform's resources, each finding its server from settings when used."""
    postgres = PostgresResource()
    return {
        POSTGRES: postgres,
        WAREHOUSE_IO: PostgresPartitionIOManager(postgres=postgres),
        LAKE_IO: LakePartitionIOManager(postgres=postgres, lake=LakeResource()),
        SEARCH_IO: ElasticsearchPartitionIOManager(postgres=postgres, es=ElasticsearchResource()),
    }


def idem_definitions(
    *,
    assets: Iterable[dg.AssetsDefinition | dg.SourceAsset | dg.AssetSpec] = (),
    asset_checks: Iterable[dg.AssetChecksDefinition] = (),
    jobs: Iterable[Any] = (),
    schedules: Iterable[Any] = (),
    sensors: Iterable[Any] = (),
    resources: Mapping[str, Any] | None = None,
    executor: Any = None,
    **definitions_kwargs,
) -> dg.Definitions:
    """A `dg.Definitions` with the platform's resources, generated checks, `verify_job` and executor."""
    settings.apply_dagster_defaults()
    assets = list(assets)
    resources = {**platform_resources(), **(resources or {})}
    refuse_shared_containers(assets, resources)
    recheck_jobs, drift_schedules = recheck_jobs_and_schedules(assets)
    return dg.Definitions(
        assets=assets,
        asset_checks=[*checks_for(assets, resources), *asset_checks],
        jobs=[*jobs, verify_job, *recheck_jobs],
        schedules=[*schedules, *drift_schedules],
        sensors=list(sensors),
        resources=resources,
        executor=executor or dg.in_process_executor,
        **definitions_kwargs,
    )


def refuse_shared_containers(assets: Iterable[Any], resources: Mapping[str, Any]) -> None:
    """Two assets of the code location that their IO managers would write into one table or one index (keys
    whose prefixes join to the same schema, `a_b/x` and `a/b/x`; search keys that differ only by case) would
    replace each other's days: each asset's partition locks and ledger rows are its own, so nothing else stops
    them. Refused when the code location loads, naming both assets and the container."""
    by_io_manager: dict[str, tuple[PartitionIOManager, list[AssetTarget]]] = {}
    for assets_def in assets:
        if not isinstance(assets_def, dg.AssetsDefinition):
            continue
        for key in assets_def.keys:
            metadata = assets_def.specs_by_key[key].metadata
            io_key = assets_def.get_io_manager_key_for_asset_key(key)
            if KEY_METADATA in metadata and isinstance(resources.get(io_key), PartitionIOManager):
                by_io_manager.setdefault(io_key, (resources[io_key], []))[1].append(
                    AssetTarget.from_metadata(key.to_user_string(), metadata))
    owners: dict[tuple[str, str], str] = {}
    for io_manager, targets in by_io_manager.values():
        server = io_manager.server_of()
        for target, container in zip(targets, io_manager.containers_of(targets), strict=True):
            other = container and owners.setdefault((server, container), target.asset)
            if other and other != target.asset:
                raise DeclarationError(
                    f"assets {other!r} and {target.asset!r} would both be written to {container}: each would "
                    "replace the other's days. Give one of them another name or key prefix, or another IO manager "
                    "(e.g. another db_schema)"
                )
