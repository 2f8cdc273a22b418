"""The platform's code location for `make bench-peers`: the per-day source files as one `@idem_asset`.

    dagster asset materialize -m benchmarks.peers.platform_defs --select flights --partition-range A...B

Only public names of idem_platform. The function takes a `day` parameter: the platform calls it once per day
of the run and fills `partition_date`; a day whose source file has no rows publishes an empty day.
Source folder: PEERS_SOURCE_DIR; schema: IDEM_PG_SCHEMA (set by benchmarks/peers/platform_tool.py).
"""

import os
from pathlib import Path

import pandas as pd
import pyarrow.parquet as pq

from idem_platform import idem_asset, idem_definitions

from benchmarks.peers.data import BIG_DAY, COLUMNS, YEAR_FIRST


@idem_asset(columns=COLUMNS, key=["flight_id"], io_manager_key="warehouse_io", start=YEAR_FIRST, end=BIG_DAY,
            timezone="UTC")
def flights(context, day: str) -> pd.DataFrame:
    """The day's rows of the source, as they are."""
    return pq.read_table(Path(os.environ["PEERS_SOURCE_DIR"]) / f"{day}.parquet").to_pandas()


defs = idem_definitions(assets=[flights])
