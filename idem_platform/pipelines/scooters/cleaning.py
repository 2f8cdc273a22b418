"""Cleaning: the inbox's text -> typed values (the textbook's cleaning chapter).

Headers are matched case-insensitively with spaces and dashes as underscores (`Trip_ID`, `DURATION`,
`Start Lat`), with a few known aliases (`start_time`); the export's junk columns (`month`, `region_id`,
`trip_ledger_id`) and unknown extra columns are not read (`reading` reports them in `ignored_columns`). Values
are stripped, null tokens (`""`, `NaN`, `null`, `N/A`, ...) made missing, date strings parsed (UTC), `H:MM:SS`
duration strings turned into seconds, the trip distance computed from the coordinates. A value that does not
parse becomes missing here: the declared rules (`validation`) report it.
"""

from __future__ import annotations

import re

import numpy as np
import pandas as pd

# ---------------------------------------------------------------------------------------------------------------
# Columns: what the files carry
# ---------------------------------------------------------------------------------------------------------------

REQUIRED_COLUMNS = ("trip_id", "started_at", "ended_at", "start_lat", "start_lon", "end_lat", "end_lon")
OPTIONAL_COLUMNS = ("vehicle_id", "user_id", "duration", "start_location_name", "end_location_name")
INPUT_COLUMNS = REQUIRED_COLUMNS + OPTIONAL_COLUMNS
# Columns of the textbook's export that carry nothing the tables keep.
JUNK_COLUMNS = ("month", "region_id", "trip_ledger_id")
COLUMN_ALIASES = {
    "tripid": "trip_id",
    "vehicleid": "vehicle_id",
    "userid": "user_id",
    "start_time": "started_at",
    "end_time": "ended_at",
    "start_latitude": "start_lat",
    "start_longitude": "start_lon",
    "start_lng": "start_lon",
    "end_latitude": "end_lat",
    "end_longitude": "end_lon",
    "end_lng": "end_lon",
    "trip_duration": "duration",
}

NULL_TOKENS = frozenset({"", "na", "n/a", "#n/a", "nan", "null", "none", "nil"})
DATETIME_FORMATS = ("%m/%d/%Y %H:%M", "%m/%d/%Y %H:%M:%S", "ISO8601")
EARTH_RADIUS_KM = 6371.0088

# ---------------------------------------------------------------------------------------------------------------
# Cleaning: text -> typed values (the textbook's cleaning chapter)
# ---------------------------------------------------------------------------------------------------------------


def canonical_column(name: str) -> str:
    """`Trip_ID` -> `trip_id`, `Start Lat` -> `start_lat`, `start_time` -> `started_at`."""
    text = re.sub(r"[^0-9a-z]+", "_", name.replace("\ufeff", "").strip().lower()).strip("_")
    return COLUMN_ALIASES.get(text, text)


def clean_text(series: pd.Series) -> pd.Series:
    """Stripped text with the null tokens (`""`, `NaN`, `null`, `N/A`, ...) as missing values."""
    text = series.astype("string").str.strip()
    return text.mask(text.str.lower().isin(NULL_TOKENS))


def parse_datetimes(series: pd.Series) -> pd.Series:
    """UTC timestamps from `M/D/YYYY H:MM[:SS]` or ISO 8601 text (naive times are UTC); NaT where none fits."""
    parsed = pd.Series(pd.NaT, index=series.index, dtype="datetime64[us, UTC]")
    for fmt in DATETIME_FORMATS:
        todo = parsed.isna() & series.notna()
        if not todo.any():
            break
        attempt = pd.to_datetime(series[todo], format=fmt, errors="coerce", utc=True)
        parsed[todo] = attempt.astype("datetime64[us, UTC]")
    return parsed


_DURATION_HMS = re.compile(r"^(?:(?P<h>\d+):)?(?P<m>[0-5]?\d):(?P<s>[0-5]\d)$")


def parse_duration_seconds(series: pd.Series) -> pd.Series:
    """Seconds from `H:MM:SS`, `M:SS` or a plain number of seconds; missing where the text is none of those."""
    text = series.astype("string")
    parts = text.str.extract(_DURATION_HMS)
    clock = (
        pd.to_numeric(parts["h"], errors="coerce").fillna(0) * 3600
        + pd.to_numeric(parts["m"], errors="coerce") * 60
        + pd.to_numeric(parts["s"], errors="coerce")
    )
    plain = pd.to_numeric(text.where(text.str.fullmatch(r"\d+(?:\.\d+)?", na=False)), errors="coerce")
    seconds = clock.where(clock.notna(), plain)
    return seconds.round().astype("Int64")


def parse_numbers(series: pd.Series) -> pd.Series:
    return pd.Series(
        pd.to_numeric(series.astype("string"), errors="coerce").to_numpy(dtype="float64", na_value=np.nan),
        index=series.index,
    )


def haversine_km(lat1, lon1, lat2, lon2) -> pd.Series:
    """Great-circle distance in km, rounded to the metre (stable floats, stable fingerprints)."""
    lat1, lon1, lat2, lon2 = (np.radians(np.asarray(v, dtype="float64")) for v in (lat1, lon1, lat2, lon2))
    a = np.sin((lat2 - lat1) / 2) ** 2 + np.cos(lat1) * np.cos(lat2) * np.sin((lon2 - lon1) / 2) ** 2
    return np.round(2 * EARTH_RADIUS_KM * np.arcsin(np.sqrt(np.clip(a, 0, 1))), 3)


def typed_trips(text: pd.DataFrame) -> pd.DataFrame:
    """The cleaned text frame in the published types (unparseable values missing: the rules report them)."""
    started = parse_datetimes(text["started_at"])
    ended = parse_datetimes(text["ended_at"])
    duration = parse_duration_seconds(text["duration"])
    elapsed = ((ended - started).dt.total_seconds().round()).astype("Int64")
    duration = duration.where(text["duration"].notna(), elapsed.where(ended > started))
    coords = {c: parse_numbers(text[c]) for c in ("start_lat", "start_lon", "end_lat", "end_lon")}
    return pd.DataFrame(
        {
            "trip_id": text["trip_id"],
            "vehicle_id": text["vehicle_id"],
            "user_id": text["user_id"],
            "started_at": started,
            "ended_at": ended,
            "duration_seconds": duration,
            "start_location_name": text["start_location_name"],
            "end_location_name": text["end_location_name"],
            **coords,
            "distance_km": haversine_km(coords["start_lat"], coords["start_lon"], coords["end_lat"], coords["end_lon"]),
            "source_file": text["source_file"],
            "source_line": text["source_line"],
            "partition_date": text["partition_date"],
        },
        index=text.index,
    )
