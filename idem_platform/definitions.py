"""The single Definitions object: assets, asset checks, resources and IO managers, jobs, schedules."""

from __future__ import annotations

import dagster as dg

from .assets import people as people_assets
from .assets import scooters as scooter_assets
from .checks import checks_for
from .resources import LakeResource, lake_dir, postgres_from_env, warehouse_schema
from .storage.file_store import FilePartitionIOManager
from .storage.postgres_store import PostgresPartitionIOManager
from .scooter_inbox import ScooterInboxResource, inbox_dir
from .sensors import scooter_inbox_job, scooter_inbox_sensor
from .verification import verify_job

postgres = postgres_from_env()

people_job = dg.define_asset_job(
    "people_job",
    selection=dg.AssetSelection.groups("people"),
    description="Generate, clean and load one day (or a range) of people.",
)

assets = [
    people_assets.raw_people,
    people_assets.people,
    scooter_assets.scooter_trips_rejected,
    scooter_assets.scooter_trips,
    scooter_assets.scooter_daily_summary,
]

defs = dg.Definitions(
    assets=assets,
    asset_checks=checks_for(assets),
    jobs=[people_job, scooter_inbox_job, verify_job],
    sensors=[scooter_inbox_sensor],
    schedules=[dg.build_schedule_from_partitioned_job(people_job, hour_of_day=1)],
    resources={
        "postgres": postgres,
        "lake_io": FilePartitionIOManager(postgres=postgres, lake=LakeResource(root=lake_dir())),
        "warehouse_io": PostgresPartitionIOManager(postgres=postgres, db_schema=warehouse_schema()),
        "scooter_inbox": ScooterInboxResource(root=inbox_dir()),
    },
)
