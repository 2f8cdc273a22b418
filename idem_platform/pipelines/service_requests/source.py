"""The 311 source system: a `source.service_requests` table, a deterministic simulator, and windowed reads.

This stands in for the city's public 311 API so the pipeline can be tried anywhere. The simulator is
deterministic: `simulate(days, seed)` always writes the same requests for the same days and seed (rerunning it
changes nothing), and `update_requests(days, seed, at)` moves some of those days' requests along (status,
closed_at) and sets their `updated_at`, as a real system does long after the request was created.

Reads are bounded by the partition window and go through SQL functions, never through the table:

- `source.requests_created_between(start, end)`: the requests with `start <= created_at < end`;
- `source.latest_update_by_day(start, end)`: per UTC day of `created_at`, the last `updated_at`.

Both are SECURITY DEFINER, so a reader role can be granted EXECUTE on them and nothing on the table: an
unbounded query is then impossible, not merely absent (the tests do exactly that).
"""

from __future__ import annotations

import datetime as dt
import random
from collections.abc import Sequence

import psycopg
from psycopg.rows import dict_row

import dagster as dg

from idem_platform import PostgresResource, partition_seed, partition_window, settings

SCHEMA = "source"
CATEGORIES = ("Pothole", "Streetlight Out", "Graffiti", "Abandoned Vehicle", "Noise", "Tree Trim", "Rodent", "Water Leak")
OPEN_STATUSES = ("Open", "In Progress")
DEFAULT_PER_DAY = 200
STREETS = ("N State St", "W Madison St", "S Halsted St", "N Clark St", "W Division St", "E 63rd St", "S Ashland Ave")

MAX_LOOKBACK_DAYS = 1000

DDL = f"""
CREATE SCHEMA IF NOT EXISTS {SCHEMA};
CREATE TABLE IF NOT EXISTS {SCHEMA}.service_requests (
    request_id bigint PRIMARY KEY,
    created_at timestamptz NOT NULL,
    updated_at timestamptz NOT NULL,
    closed_at timestamptz,
    status text NOT NULL,
    category text NOT NULL,
    description text,
    address text,
    location text
);
CREATE INDEX IF NOT EXISTS service_requests_created_at ON {SCHEMA}.service_requests (created_at);
-- The readers are bounded: a finite window of at most one day (25 hours: a day of a DST timezone) for the
-- extract, at most MAX_LOOKBACK_DAYS for the late-data summary; anything else is refused, not served.
CREATE OR REPLACE FUNCTION {SCHEMA}.requests_created_between(window_start timestamptz, window_end timestamptz)
RETURNS SETOF {SCHEMA}.service_requests LANGUAGE plpgsql STABLE SECURITY DEFINER SET search_path = pg_catalog AS $$
BEGIN
    IF window_start IS NULL OR window_end IS NULL OR NOT isfinite(window_start) OR NOT isfinite(window_end)
       OR window_end <= window_start OR window_end - window_start > interval '25 hours' THEN
        RAISE EXCEPTION 'requests_created_between: a finite window of at most one day is required, got [%, %)',
            window_start, window_end USING ERRCODE = '22023';
    END IF;
    RETURN QUERY SELECT * FROM {SCHEMA}.service_requests WHERE created_at >= window_start AND created_at < window_end;
END
$$;
CREATE OR REPLACE FUNCTION {SCHEMA}.latest_update_by_day(window_start timestamptz, window_end timestamptz)
RETURNS TABLE (day date, latest_update timestamptz, requests bigint)
LANGUAGE plpgsql STABLE SECURITY DEFINER SET search_path = pg_catalog AS $$
BEGIN
    IF window_start IS NULL OR window_end IS NULL OR NOT isfinite(window_start) OR NOT isfinite(window_end)
       OR window_end <= window_start OR window_end - window_start > interval '{MAX_LOOKBACK_DAYS} days' THEN
        RAISE EXCEPTION 'latest_update_by_day: a finite window of at most {MAX_LOOKBACK_DAYS} days is required, got [%, %)',
            window_start, window_end USING ERRCODE = '22023';
    END IF;
    RETURN QUERY SELECT (s.created_at AT TIME ZONE 'UTC')::date, max(s.updated_at), count(*)
        FROM {SCHEMA}.service_requests s WHERE s.created_at >= window_start AND s.created_at < window_end GROUP BY 1;
END
$$;
-- Only their owner (the role that ran the simulator) and the roles it grants them to may call them:
--   GRANT EXECUTE ON FUNCTION source.requests_created_between(timestamptz, timestamptz) TO extracting_role;
REVOKE ALL ON FUNCTION {SCHEMA}.requests_created_between(timestamptz, timestamptz) FROM PUBLIC;
REVOKE ALL ON FUNCTION {SCHEMA}.latest_update_by_day(timestamptz, timestamptz) FROM PUBLIC;
"""


def ensure_source(conn: psycopg.Connection) -> None:
    with conn.cursor() as cur:
        cur.execute("SELECT pg_advisory_xact_lock(hashtextextended('idem:ddl:source', 0))")
        cur.execute(DDL)


def _day_number(day: str) -> int:
    return (dt.date.fromisoformat(day) - dt.date(2000, 1, 1)).days


def _location(rng: random.Random) -> str:
    """Chicago-ish coordinates in the formats real exports mix; about 3% are unusable."""
    lat, lng = 41.64 + rng.random() * 0.38, -87.94 + rng.random() * 0.42
    roll = rng.random()
    if roll < 0.015:
        return ""
    if roll < 0.03:
        return "(0, 0)" if rng.random() < 0.5 else "unknown"
    if roll < 0.5:
        return f"({lat:.6f}, {lng:.6f})"
    return f"{lat:.6f},{lng:.6f}"


def requests_for_day(day: str, seed: int, per_day: int = DEFAULT_PER_DAY) -> list[tuple]:
    """The requests created on `day`: always the same for the same (day, seed). Includes the day's edges."""
    rng = random.Random(partition_seed("source.service_requests", day, str(seed)))
    start, _ = partition_window(day)
    rows = []
    for i in range(per_day):
        if i == 0:
            created = start  # exactly 00:00:00 belongs to this day
        elif i == 1:
            created = start + dt.timedelta(days=1, milliseconds=-1)  # 23:59:59.999 too
        else:
            created = start + dt.timedelta(microseconds=rng.randrange(86_400_000_000))
        category = rng.choice(CATEGORIES)
        rows.append((
            _day_number(day) * 100_000 + i, created, created, None, rng.choice(OPEN_STATUSES), category,
            f"{category} reported by resident #{rng.randrange(10_000)}",
            f"{rng.randrange(1, 12_000)} {rng.choice(STREETS)}", _location(rng),
        ))
    return rows


def simulate(conn: psycopg.Connection, days: Sequence[str], seed: int, per_day: int = DEFAULT_PER_DAY) -> int:
    """Create the requests of `days`; requests that already exist are left as they are (idempotent)."""
    ensure_source(conn)
    written = 0
    with conn.cursor() as cur:
        for day in days:
            cur.executemany(
                f"""INSERT INTO {SCHEMA}.service_requests (request_id, created_at, updated_at, closed_at, status,
                        category, description, address, location)
                    VALUES (%s, %s, %s, %s, %s, %s, %s, %s, %s) ON CONFLICT (request_id) DO NOTHING""",
                requests_for_day(day, seed, per_day),
            )
            written += per_day
    return written


def update_requests(
    conn: psycopg.Connection, days: Sequence[str], seed: int, at: dt.datetime | None = None, share: float = 0.1
) -> int:
    """Close a share of each day's open requests at `at` (default now), moving their `updated_at`."""
    at = at or dt.datetime.now(dt.timezone.utc)
    updated = 0
    with conn.cursor() as cur:
        for day in days:
            start, end = partition_window(day)
            cur.execute(
                f"""SELECT request_id FROM {SCHEMA}.service_requests
                    WHERE created_at >= %s AND created_at < %s AND closed_at IS NULL ORDER BY request_id""",
                (start, end),
            )
            ids = [r[0] for r in cur.fetchall()]
            rng = random.Random(partition_seed("source.updates", day, str(seed), at.isoformat()))
            chosen = rng.sample(ids, max(1, int(len(ids) * share))) if ids else []
            cur.execute(
                f"""UPDATE {SCHEMA}.service_requests SET status = 'Closed', closed_at = %s, updated_at = %s
                    WHERE request_id = ANY(%s)""",
                (at, at, chosen),
            )
            updated += cur.rowcount
    return updated


def read_window(conn: psycopg.Connection, day: str) -> list[dict]:
    """The requests created in the UTC window of `day`, through the bounded function."""
    start, end = partition_window(day)
    with conn.cursor(row_factory=dict_row) as cur:
        cur.execute(f"SELECT * FROM {SCHEMA}.requests_created_between(%s, %s)", (start, end))
        return cur.fetchall()


def latest_updates(conn: psycopg.Connection, first_day: str, last_day: str) -> dict[str, dt.datetime]:
    """Per created_at day in `[first_day, last_day]`, the last `updated_at` of its requests."""
    start, _ = partition_window(first_day)
    _, end = partition_window(last_day)
    with conn.cursor() as cur:
        cur.execute("SELECT to_regprocedure(%s) IS NOT NULL", (f"{SCHEMA}.latest_update_by_day(timestamptz,timestamptz)",))
        if not cur.fetchone()[0]:
            return {}  # no source system here yet (`idem simulate-311` creates it)
        cur.execute(f"SELECT day::text, latest_update FROM {SCHEMA}.latest_update_by_day(%s, %s)", (start, end))
        return dict(cur.fetchall())


def source_db() -> PostgresResource:
    """The source system: `IDEM_SOURCE_DSN` (as an EnvVar: the UI shows its name only), else the platform's server."""
    if settings.current().source_dsn:
        return PostgresResource(dsn=dg.EnvVar("IDEM_SOURCE_DSN"), application_name="idem_platform_source")
    return PostgresResource(application_name="idem_platform_source")
