"""The code location the reliability suite's CLI runs load: the people pipeline across all three sinks.

    raw_people (lake file)  ->  people (PostgreSQL table)  ->  people_search (search index)

`raw_people` and `people` are the platform's own assets; `people_search` is the search copy of `people` that
DESIGN.md names (the same declared columns and key, published through `ElasticsearchPartitionIOManager`). One
`dagster asset materialize -m idem_platform_tests.reliability.defs` run therefore writes one partition into each
sink through the one Stage/Audit/Publish/Record path, so N concurrent runs exercise all three stores at once.

The in-process executor keeps each CLI run to one process (the multiprocess executor would start one per step
and make N=10 concurrent runs take minutes on a 2-core machine); the runs are still separate processes that
contend only through PostgreSQL, the lake directory and the search server.

No `from __future__ import annotations`: Dagster resolves the asset function's annotations.
"""

import dagster as dg
import pandas as pd

from idem_platform.assets import people as people_assets
from idem_platform.declare import idem_asset
from idem_platform.resources import LakeResource, lake_dir, postgres_from_env, warehouse_schema
from idem_platform.storage.elasticsearch_store import ElasticsearchPartitionIOManager, elasticsearch_from_env
from idem_platform.storage.file_store import FilePartitionIOManager
from idem_platform.storage.postgres_store import PostgresPartitionIOManager


@idem_asset(
    columns=people_assets.PEOPLE_COLUMNS,
    key=["person_id"],
    io_manager_key="search_io",
    group_name="people",
    description="People, searchable: the warehouse rows of each day as one search index per day.",
)
def people_search(context: dg.AssetExecutionContext, people: pd.DataFrame) -> pd.DataFrame:
    return people


postgres = postgres_from_env()

defs = dg.Definitions(
    assets=[people_assets.raw_people, people_assets.people, people_search],
    executor=dg.in_process_executor,
    resources={
        "postgres": postgres,
        "lake_io": FilePartitionIOManager(postgres=postgres, lake=LakeResource(root=lake_dir())),
        "warehouse_io": PostgresPartitionIOManager(postgres=postgres, db_schema=warehouse_schema()),
        # replicas=0: a single-node test server never allocates replicas; aliases move the same either way.
        "search_io": ElasticsearchPartitionIOManager(postgres=postgres, es=elasticsearch_from_env(), replicas=0),
    },
)
