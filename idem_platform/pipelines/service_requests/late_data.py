"""The late-data sensor: re-materialize exactly the past days whose source rows changed after their publish.

Each tick compares, per UTC day of `created_at` within the look-back window, the source's last `updated_at`
with the time the ledger says `service_requests` last published that day. A day whose source changed later
(or that was never published) gets a run request for that one partition, with `run_key` =
(day, last updated_at): the same change never requests work twice, a later change requests it once more.
Downstream partitions follow by declarative automation, only if the day's content (fingerprint) changed.

"Last published" means published by *this* deployment: the ledger may be shared by deployments (code locations)
that write `service_requests` into other stores (another warehouse schema). The sensor reads the publishes of the
sink and store that its own `warehouse_io` resource writes the asset to (the IO manager the asset names), taken
from that resource rather than spelled out, so a deployment configured with another schema reads its own; an
other deployment's later publish of a day neither hides this one's staleness nor stands in for a day this
deployment never published. It takes the ledger's server from the same IO manager: the ledger it records into.

Note on Dagster's run_key semantics: any earlier run with the key, even a failed one, blocks the request; a
failed day is retried by the next source change, the daily schedule, or by hand.
"""

import datetime as dt

import dagster as dg

from idem_platform import PostgresPartitionIOManager, PostgresResource, published_partitions, settings

from . import source
from .assets import service_requests

ASSET = "service_requests"


def last_published(warehouse_io: PostgresPartitionIOManager, days: list[str]) -> dict[str, dt.datetime]:
    """When this deployment last published each of `days` of `service_requests`: in the sink and store its IO
    manager writes it to (see the module's docstring)."""
    store = warehouse_io.store_of(service_requests)
    published = published_partitions(warehouse_io.postgres, ASSET, days, warehouse_io.sink().name, store)
    return {day: entry.published_at for day, entry in published.items()}


def days_to_refresh(
    source_db: PostgresResource, warehouse_io: PostgresPartitionIOManager, today: dt.date | None = None
) -> dict[str, dt.datetime]:
    """{day: source's last updated_at} for every day whose source changed after its last publish."""
    partitions_def = service_requests.partitions_def
    first_valid, last_valid = partitions_def.get_first_partition_key(), partitions_def.get_last_partition_key()
    if first_valid is None:
        return {}
    lookback = settings.current().late_data_lookback_days
    last = min(dt.date.fromisoformat(last_valid), (today or dt.datetime.now(dt.timezone.utc).date()) - dt.timedelta(days=1))
    first = max(dt.date.fromisoformat(first_valid), last - dt.timedelta(days=lookback - 1))
    if last < first:
        return {}
    with source_db.connect() as conn:
        source_updates = source.latest_updates(conn, first.isoformat(), last.isoformat())
    published = last_published(warehouse_io, sorted(source_updates))
    return {
        day: updated
        for day, updated in sorted(source_updates.items())
        if day not in published or updated > published[day]
    }


@dg.sensor(
    name="service_requests_late_data",
    asset_selection=[ASSET],
    minimum_interval_seconds=settings.current().late_data_interval,
    default_status=dg.DefaultSensorStatus.RUNNING,
    description="Requests a service_requests partition whenever its source rows changed after its last publish.",
)
def late_data_sensor(
    context: dg.SensorEvaluationContext, source_db: PostgresResource,
    warehouse_io: dg.ResourceParam[PostgresPartitionIOManager],
):
    changed = days_to_refresh(source_db, warehouse_io)
    if not changed:
        return dg.SkipReason("every published day is up to date with the source")
    for day, updated in changed.items():
        context.log.info(f"{ASSET} {day}: source changed at {updated.isoformat()}, after its last publish")
        yield dg.RunRequest(partition_key=day, run_key=f"{ASSET}:{day}:{updated.isoformat()}")
