"""The single Definitions object: assets, asset checks, resources and IO managers, jobs, schedules, sensors."""

import dagster as dg

from . import late_data
from .assets import people as people_assets
from .assets import scooters as scooter_assets
from .assets import service_requests as service_request_assets
from .checks import checks_for
from .resources import (
    LakeResource,
    lake_dir,
    local_search_url,
    postgres_from_env,
    source_from_env,
    warehouse_schema,
)
from .scooter_inbox import ScooterInboxResource, inbox_dir
from .sensors import scooter_inbox_job, scooter_inbox_sensor
from .storage.elasticsearch_store import ElasticsearchPartitionIOManager, elasticsearch_from_env
from .storage.file_store import FilePartitionIOManager
from .storage.postgres_store import PostgresPartitionIOManager
from .verification import verify_job

postgres = postgres_from_env()

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

assets = [
    people_assets.raw_people,
    people_assets.people,
    people_assets.people_search,
    service_request_assets.service_requests,
    service_request_assets.service_requests_search,
    service_request_assets.service_requests_daily_summary,
    scooter_assets.scooter_trips_rejected,
    scooter_assets.scooter_trips,
    scooter_assets.scooter_daily_summary,
]

defs = dg.Definitions(
    assets=assets,
    # Steps run inside the run's process: a day partition is small, and a subprocess per step (the default
    # multiprocess executor) costs seconds each. Scale out with the Celery executor (docs/operating.md).
    executor=dg.in_process_executor,
    asset_checks=checks_for(assets),
    jobs=[people_job, service_requests_job, scooter_inbox_job, verify_job],
    schedules=[
        # yesterday's partition, every day
        dg.build_schedule_from_partitioned_job(people_job, hour_of_day=1),
        dg.build_schedule_from_partitioned_job(service_requests_job, hour_of_day=2),
    ],
    sensors=[
        scooter_inbox_sensor,
        late_data.late_data_sensor,
        dg.AutomationConditionSensorDefinition(
            "follow_upstream",
            target=dg.AssetSelection.all(),
            default_status=dg.DefaultSensorStatus.RUNNING,
            minimum_interval_seconds=late_data.INTERVAL_SECONDS,
            description="Materializes downstream partitions whose upstream content (DataVersion) changed.",
        ),
    ],
    resources={
        "postgres": postgres,
        "source_db": source_from_env(),
        "lake_io": FilePartitionIOManager(postgres=postgres, lake=LakeResource(root=lake_dir())),
        "warehouse_io": PostgresPartitionIOManager(postgres=postgres, db_schema=warehouse_schema()),
        "search_io": ElasticsearchPartitionIOManager(
            postgres=postgres, es=elasticsearch_from_env(default_url=local_search_url() or "http://127.0.0.1:9200")
        ),
        "scooter_inbox": ScooterInboxResource(root=inbox_dir()),
    },
)
