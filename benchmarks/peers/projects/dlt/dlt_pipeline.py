"""dlt pipeline of `make bench-peers`: the per-day Parquet source files of [start, end] into PostgreSQL.

    python dlt_pipeline.py --start 2013-01-01 --end 2013-12-31

The documented set-up for day batches that are reloaded whole (dlt's merge loading, `delete-insert`):
write_disposition merge with `merge_key` on the day column: every row of a day present in the load is deleted,
then the load's rows are inserted, in one transaction. No `primary_key`: with both keys dlt deletes
`WHERE EXISTS (... d.flight_id = s.flight_id OR d.flight_day = s.flight_day)`, which PostgreSQL can only run as
a nested loop (a 365-day rerun was still deleting after 4 minutes on this machine), and the day key alone
already replaces the day. Rows are yielded as Arrow tables, one per day.
Connection: PEERS_DLT_DSN; pipelines dir: PEERS_DLT_PIPELINES_DIR.
"""

import argparse
import datetime as dt
import os
from pathlib import Path

import dlt
import pyarrow.parquet as pq


def days(start: str, end: str) -> list[str]:
    first, last = dt.date.fromisoformat(start), dt.date.fromisoformat(end)
    return [(first + dt.timedelta(days=n)).isoformat() for n in range((last - first).days + 1)]


@dlt.resource(
    name="flights",
    write_disposition={"disposition": "merge", "strategy": "delete-insert"},
    merge_key="flight_day",
)
def flights(source_dir: str, start: str, end: str):
    for day in days(start, end):
        yield pq.read_table(Path(source_dir) / f"{day}.parquet")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--start", required=True)
    parser.add_argument("--end", required=True)
    parser.add_argument("--source-dir", default=os.environ.get("PEERS_SOURCE_DIR"))
    args = parser.parse_args()
    pipeline = dlt.pipeline(
        pipeline_name="peers_flights",
        destination=dlt.destinations.postgres(credentials=os.environ["PEERS_DLT_DSN"]),
        dataset_name="peer_dlt",
        pipelines_dir=os.environ.get("PEERS_DLT_PIPELINES_DIR"),
    )
    info = pipeline.run(flights(args.source_dir, args.start, args.end))
    info.raise_on_failed_jobs()
    print(info)


if __name__ == "__main__":
    main()
