"""bench_run_overhead.py's platform side: a user's code location written against the public API only.

    dagster asset materialize -m benchmarks.overhead_platform_defs --select readings --partition DAY

`readings` is a per-day `@idem_asset` on the PostgreSQL sink; `idem_definitions` adds what every code location of
the platform gets (its resources, the generated checks, `verify_job`, `recheck_job`, the drift schedule).
"""

import pandas as pd

from benchmarks.readings import READING_COLUMNS, day_readings
from idem_platform import WAREHOUSE_IO, idem_asset, idem_definitions


@idem_asset(columns=READING_COLUMNS, key=["reading_id"], io_manager_key=WAREHOUSE_IO, start="2024-01-01")
def readings(context, day: str) -> pd.DataFrame:
    """Sensor readings of one day."""
    return day_readings(day)


defs = idem_definitions(assets=[readings])
