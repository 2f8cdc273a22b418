"""The platform's example code location: three pipelines written only against the public API.

    dagster asset materialize -m idem_platform.definitions --select people --partition 2026-01-05

Each pipeline lives in `idem_platform/pipelines/` and imports nothing but `idem_platform`'s public names (a test
checks it): they are the proof that a code location of your own needs nothing more.
"""

import dagster as dg

from idem_platform import idem_definitions, settings
from idem_platform.pipelines import people
from idem_platform.pipelines.scooters import assets as scooters
from idem_platform.pipelines.scooters.inbox import ScooterInboxResource
from idem_platform.pipelines.scooters.sensor import scooter_inbox_job, scooter_inbox_sensor
from idem_platform.pipelines.service_requests import assets as service_requests
from idem_platform.pipelines.service_requests import source as service_requests_source
from idem_platform.pipelines.service_requests.late_data import late_data_sensor

people_job = dg.define_asset_job(
    "people_job",
    selection=dg.AssetSelection.groups("people"),
    description="Generate, clean, load and index one day (or a range) of people.",
)
service_requests_job = dg.define_asset_job(
    "service_requests_job",
    selection=dg.AssetSelection.groups("service_requests"),
    description="Extract one day of 311 requests from the source, load, index and summarize it.",
)

defs = idem_definitions(
    assets=[
        people.raw_people,
        people.people,
        people.people_search,
        service_requests.service_requests,
        service_requests.service_requests_search,
        service_requests.service_requests_daily_summary,
        scooters.scooter_trips_rejected,
        scooters.scooter_trips,
        scooters.scooter_daily_summary,
    ],
    jobs=[people_job, service_requests_job, scooter_inbox_job],
    schedules=[
        # yesterday's partition, every day. people needs nothing but itself: running as soon as a daemon runs
        # (`idem dev`). service_requests reads the 311 source system, which exists once `idem simulate-311` ran:
        # off until switched on (Automation -> the schedule), or it would fail every night on a fresh install.
        dg.build_schedule_from_partitioned_job(
            people_job, hour_of_day=1, default_status=dg.DefaultScheduleStatus.RUNNING
        ),
        dg.build_schedule_from_partitioned_job(
            service_requests_job, hour_of_day=2, default_status=dg.DefaultScheduleStatus.STOPPED
        ),
    ],
    sensors=[
        scooter_inbox_sensor,
        late_data_sensor,
        dg.AutomationConditionSensorDefinition(
            "follow_upstream",
            target=dg.AssetSelection.all(),
            default_status=dg.DefaultSensorStatus.RUNNING,
            minimum_interval_seconds=settings.current().late_data_interval,
            description="Materializes downstream partitions whose upstream content (DataVersion) changed.",
        ),
    ],
    resources={
        "source_db": service_requests_source.source_db(),
        "scooter_inbox": ScooterInboxResource(),
    },
)
