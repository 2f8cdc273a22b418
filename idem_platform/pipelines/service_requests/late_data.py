"""The late-data sensor: re-materialize exactly the past days whose source rows changed after their publish.

Each tick compares, per UTC day of `created_at` within the look-back window, the source's last `updated_at`
with the time the ledger says `service_requests` last published that day. A day whose source changed later
(or that was never published) gets a run request for that one partition, with `run_key` =
(day, last updated_at): the same change never requests work twice, a later change requests it once more.
Downstream partitions follow by declarative automation, only if the day's content (fingerprint) changed.

Note on Dagster's run_key semantics: any earlier run with the key, even a failed one, blocks the request; a
failed day is retried by the next source change, the daily schedule, or by hand.
"""

import datetime as dt

import dagster as dg

from idem_platform import PostgresResource, published_partitions, settings

from . import source
from .assets import service_requests

ASSET = "service_requests"


def last_published(postgres: PostgresResource, asset: str, days: list[str]) -> dict[str, dt.datetime]:
    return {day: entry.published_at for day, entry in published_partitions(postgres, asset, days, "postgres").items()}


def days_to_refresh(source_db: PostgresResource, postgres: PostgresResource, today: dt.date | None = None) -> dict[str, dt.datetime]:
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
    published = last_published(postgres, ASSET, sorted(source_updates))
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
def late_data_sensor(context: dg.SensorEvaluationContext, source_db: PostgresResource, postgres: PostgresResource):
    changed = days_to_refresh(source_db, postgres)
    if not changed:
        return dg.SkipReason("every published day is up to date with the source")
    for day, updated in changed.items():
        context.log.info(f"{ASSET} {day}: source changed at {updated.isoformat()}, after its last publish")
        yield dg.RunRequest(partition_key=day, run_key=f"{ASSET}:{day}:{updated.isoformat()}")
