"""The Dagster run path: the suite's content as an `@idem_asset`, materialized in-process by the real IO manager."""

from __future__ import annotations

from idem_platform.storage.schema import PARTITION_COLUMN
from idem_platform_tests.reliability.content import DECL, frame_for
from idem_platform_tests.reliability.stores import StoreSpec


def dagster_asset(spec: StoreSpec, io_manager_key: str, gen: str, rows_by_day: dict[str, int]):
    """The suite's content as an `@idem_asset` named `spec.asset`: materializing it runs the real IO manager path."""
    from idem_platform.declare import idem_asset

    columns = {c.name: c.type for c in DECL.columns if c.name != PARTITION_COLUMN}

    def compute(context):  # unannotated: this module has postponed annotations, Dagster would see a string
        return frame_for(gen, {d: rows_by_day[d] for d in context.partition_keys})

    return idem_asset(columns=columns, key=["id"], io_manager_key=io_manager_key, name=spec.asset)(compute)


def materialize(asset, resources: dict, days: list[str]):
    """One in-process Dagster run of `days` (a range run when several); never raises on a failed run."""
    import dagster as dg

    tags = None
    if len(days) > 1:
        tags = {"dagster/asset_partition_range_start": days[0], "dagster/asset_partition_range_end": days[-1]}
    return dg.materialize(
        [asset], partition_key=None if tags else days[0], tags=tags, resources=resources,
        instance=dg.DagsterInstance.ephemeral(), raise_on_error=False,
    )


def failure_message(result) -> str:
    return "\n".join(e.step_failure_data.error.to_string() for e in result.get_step_failure_events())
