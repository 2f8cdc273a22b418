"""The 311 service-requests pipeline: a bounded daily extract from the source system, the warehouse, the search
index and a daily summary.

`service_requests` reads exactly the UTC window `[day, next day)` of the source by `created_at` (through the
source's windowed function, never the table), so a rerun reflects the source as it is now. Requests the source
updates later are picked up by re-materializing their day: the late-data sensor (sensors_311.py) requests it,
and the downstream assets follow by declarative automation, only when the upstream's content (DataVersion =
fingerprint) actually changed.
"""

import dagster as dg
import pandas as pd

from idem_platform import PostgresResource, follows_upstream_content, idem_asset

from . import source

REQUEST_COLUMNS = {
    "request_id": "int",
    "created_at": "timestamp",
    "updated_at": "timestamp",
    "closed_at": "timestamp",
    "status": "string",
    "category": "string",
    "description": "string",
    "address": "string",
    "lat": "float",
    "lng": "float",
    "location_valid": "bool",
}

SUMMARY_COLUMNS = {"category": "string", "status": "string", "requests": "int"}

_LOCATION = r"^\(?\s*(?P<lat>-?\d+(?:\.\d+)?)\s*,\s*(?P<lng>-?\d+(?:\.\d+)?)\s*\)?$"



def split_location(location: pd.Series) -> pd.DataFrame:
    """`"lat,lng"` or `"(lat, lng)"` text into floats; anything else, (0, 0) or out-of-range is invalid (NaN)."""
    parts = location.astype("string").str.strip().str.extract(_LOCATION)
    lat = pd.to_numeric(parts["lat"], errors="coerce").astype("float64")
    lng = pd.to_numeric(parts["lng"], errors="coerce").astype("float64")
    valid = lat.between(-90, 90) & lng.between(-180, 180) & ~((lat == 0) & (lng == 0))
    return pd.DataFrame({"lat": lat.where(valid), "lng": lng.where(valid), "location_valid": valid.astype(bool)})


def clean_requests(rows: list[dict], day: str) -> pd.DataFrame:
    frame = pd.DataFrame.from_records(rows, columns=["request_id", "created_at", "updated_at", "closed_at", "status",
                                                     "category", "description", "address", "location"])
    location = split_location(frame["location"])
    return pd.concat([frame.drop(columns=["location"]), location], axis=1).assign(partition_date=day)


@idem_asset(
    columns=REQUEST_COLUMNS,
    key=["request_id"],
    io_manager_key="warehouse_io",
    group_name="service_requests",
    kinds={"postgres"},
    description="311 requests created each UTC day, extracted by window from the source system, typed, "
    "coordinates split and validated.",
)
def service_requests(context: dg.AssetExecutionContext, source_db: PostgresResource, day: str) -> pd.DataFrame:
    with source_db.connect() as conn:
        rows = source.read_window(conn, day)
    context.log.info(f"service_requests {day}: {len(rows)} requests in the source window")
    return clean_requests(rows, day)


@idem_asset(
    columns=REQUEST_COLUMNS,
    key=["request_id"],
    io_manager_key="search_io",
    same_rows_as="service_requests",
    group_name="service_requests",
    kinds={"elasticsearch"},
    automation_condition=follows_upstream_content(),
    description="311 requests of each day in the search index (one physical index per day, behind aliases).",
)
def service_requests_search(context: dg.AssetExecutionContext, service_requests: pd.DataFrame) -> pd.DataFrame:
    return service_requests


@idem_asset(
    columns=SUMMARY_COLUMNS,
    key=["category", "status"],
    io_manager_key="warehouse_io",
    group_name="service_requests",
    kinds={"postgres"},
    automation_condition=follows_upstream_content(),
    description="Requests per category and status, per day.",
)
def service_requests_daily_summary(context: dg.AssetExecutionContext, service_requests: pd.DataFrame) -> pd.DataFrame:
    counts = service_requests.groupby(["partition_date", "category", "status"], as_index=False).size()
    return counts.rename(columns={"size": "requests"})
