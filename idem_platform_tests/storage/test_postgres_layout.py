"""The PostgreSQL sink's table layout against a real server: day partitions, stage + swap for large days,
in-place DELETE + COPY for small ones, plain tables made before partitioning, lock timeouts, long ranges."""

import threading
import time

import numpy as np
import pandas as pd
import psycopg
import pytest

from idem_platform.partitions import days_between
from idem_platform.resources import PostgresResource
from idem_platform.storage import ledger
from idem_platform.storage.audit import AuditError, AuditRules
from idem_platform.storage.fingerprint import partition_digests
from idem_platform.storage.partition_store import AssetTarget, publish_partitions
from idem_platform.storage.postgres_store import PostgresTableSink, SwapLockTimeout
from idem_platform.storage.schema import TableDeclaration

SCHEMA = "wh"
DAY = "2026-01-05"
DECL = TableDeclaration.build({"id": "int", "label": "string", "score": "float", "at": "timestamp"}, ["id"])
TARGET = AssetTarget("events", DECL, AuditRules())


def frame(rows_by_day: dict[str, int], label: str = "a") -> pd.DataFrame:
    parts = [
        pd.DataFrame({
            "id": np.arange(n), "label": [f"{label}-{i}" if i % 5 else None for i in range(n)], "score": np.arange(n) / 3,
            "at": pd.Timestamp(day, tz="UTC") + pd.to_timedelta(np.arange(n), "s"), "partition_date": day,
        })
        for day, n in rows_by_day.items()
    ]
    return DECL.coerce(pd.concat(parts, ignore_index=True))


def write(postgres, rows_by_day, label="a", run_id="run-1", **sink_options):
    sink = PostgresTableSink(postgres, SCHEMA, **sink_options)
    return publish_partitions(sink, postgres, TARGET, sorted(rows_by_day), frame(rows_by_day, label), run_id)


def table_state(dsn) -> dict[str, tuple[int, set[str]]]:
    """Per day: row count and the labels' generations, read the way a user would (SQL on the parent table)."""
    with psycopg.connect(dsn) as conn:
        rows = conn.execute(
            "SELECT partition_date::text, count(*), array_agg(DISTINCT split_part(label, '-', 1)) FILTER (WHERE label IS NOT NULL)"
            " FROM wh.events GROUP BY 1"
        ).fetchall()
    return {day: (n, set(gens or [])) for day, n, gens in rows}


def relations(dsn) -> dict[str, str]:
    with psycopg.connect(dsn) as conn:
        rows = conn.execute(
            "SELECT c.relname, c.relkind FROM pg_class c WHERE c.relnamespace = 'wh'::regnamespace"
        ).fetchall()
    return dict(rows)


def read_fingerprints(postgres, days):
    back = PostgresTableSink(postgres, SCHEMA).read(TARGET, days)
    return {d: v.fingerprint for d, v in partition_digests(back, DECL, days).items()}


def test_new_table_is_partitioned_by_day_and_large_days_are_swapped(postgres, pg_dsn):
    first = write(postgres, {DAY: 300}, "a", swap_min_rows=100)
    assert relations(pg_dsn) == {
        "events": "p", "events$pkey": "I", "events$p20260105": "r", "events$p20260105$pkey": "i",
    }
    second = write(postgres, {DAY: 250}, "b", run_id="run-2", swap_min_rows=100)
    assert table_state(pg_dsn) == {DAY: (250, {"b"})}
    assert set(relations(pg_dsn)) == {"events", "events$pkey", "events$p20260105", "events$p20260105$pkey"}  # no staging table left
    assert second[0].fingerprint == read_fingerprints(postgres, [DAY])[DAY] != first[0].fingerprint
    with psycopg.connect(pg_dsn) as conn:  # the day partition carries the key and its bound
        constraints = dict(conn.execute(
            """SELECT conname, contype FROM pg_constraint WHERE conrelid = 'wh."events$p20260105"'::regclass""").fetchall())
    assert constraints == {"events$p20260105$pkey": "p", "idem_day": "c"}


def test_small_days_are_written_in_place_and_paths_can_alternate(postgres, pg_dsn):
    days = ["2026-01-05", "2026-01-06", "2026-01-07"]
    write(postgres, {d: 20 for d in days}, "a", swap_min_rows=100)  # new days: empty partitions first, then COPY
    assert table_state(pg_dsn) == {d: (20, {"a"}) for d in days}
    write(postgres, {days[0]: 150, days[1]: 30, days[2]: 0}, "b", run_id="run-2", swap_min_rows=100)  # one swap, two in place
    assert table_state(pg_dsn) == {days[0]: (150, {"b"}), days[1]: (30, {"b"})}
    write(postgres, {days[0]: 10, days[1]: 200, days[2]: 5}, "c", run_id="run-3", swap_min_rows=100)
    assert table_state(pg_dsn) == {days[0]: (10, {"c"}), days[1]: (200, {"c"}), days[2]: (5, {"c"})}
    assert {n for n, k in relations(pg_dsn).items() if k == "r"} == {f"events$p{d.replace('-', '')}" for d in days}
    with psycopg.connect(pg_dsn) as conn:
        entries = ledger.history(conn, "events")
    assert [e.row_count for e in entries[-3:]] == [10, 200, 5]
    assert {e.partition: e.fingerprint for e in entries[-3:]} == read_fingerprints(postgres, days)


def test_a_plain_table_made_before_partitioning_keeps_delete_and_copy(postgres, pg_dsn):
    with psycopg.connect(pg_dsn) as conn:
        conn.execute("CREATE SCHEMA wh")
        conn.execute(
            "CREATE TABLE wh.events (id bigint NOT NULL, label text, score double precision, at timestamptz,"
            " partition_date date NOT NULL, PRIMARY KEY (partition_date, id))"
        )
    write(postgres, {DAY: 300}, "a", swap_min_rows=100)
    write(postgres, {DAY: 200, "2026-01-06": 50}, "b", run_id="run-2", swap_min_rows=100)
    assert table_state(pg_dsn) == {DAY: (200, {"b"}), "2026-01-06": (50, {"b"})}
    assert relations(pg_dsn) == {"events": "r", "events_pkey": "i"}  # never converted behind the user's back


def test_duplicate_keys_in_a_swapped_day_fail_the_audit_and_publish_nothing(postgres, pg_dsn):
    write(postgres, {DAY: 200}, "a", swap_min_rows=100)
    bad = frame({DAY: 200}, "b")
    bad.loc[7, "id"] = 3
    sink = PostgresTableSink(postgres, SCHEMA, swap_min_rows=100)
    with pytest.raises(AuditError, match=r"events.*2026-01-05.*unique key"):
        publish_partitions(sink, postgres, TARGET, [DAY], bad, "run-bad")
    assert table_state(pg_dsn) == {DAY: (200, {"a"})}
    assert set(relations(pg_dsn)) == {"events", "events$pkey", "events$p20260105", "events$p20260105$pkey"}
    with psycopg.connect(pg_dsn) as conn:
        assert [e.run_id for e in ledger.history(conn, "events")] == ["run-1"]


def test_a_reader_holding_the_table_delays_the_swap_then_it_publishes(postgres, pg_dsn):
    write(postgres, {DAY: 200}, "a", swap_min_rows=100)
    reader = psycopg.connect(pg_dsn)
    reader.execute("SELECT count(*) FROM wh.events")  # an open transaction holding ACCESS SHARE on the table
    release = threading.Timer(1.5, reader.commit)
    release.start()
    started = time.monotonic()
    try:
        write(postgres, {DAY: 150}, "b", run_id="run-2", swap_min_rows=100, lock_timeout_ms=100, swap_wait_s=30)
    finally:
        release.join()
        reader.close()
    assert time.monotonic() - started >= 1.4  # it waited for the reader (retrying), not failed
    assert table_state(pg_dsn) == {DAY: (150, {"b"})}


def test_a_swap_that_cannot_get_the_lock_fails_naming_asset_and_partition_and_keeps_the_old_day(postgres, pg_dsn):
    write(postgres, {DAY: 200}, "a", swap_min_rows=100)
    with psycopg.connect(pg_dsn) as reader:
        reader.execute("SELECT count(*) FROM wh.events")
        with pytest.raises(SwapLockTimeout, match=r"asset 'events', partition 2026-01-05.*wh\.events.*nothing was published"):
            write(postgres, {DAY: 150}, "b", run_id="run-2", swap_min_rows=100, lock_timeout_ms=100, swap_wait_s=0.5)
        # readers were never queued behind the waiting swap for longer than one lock_timeout attempt
        assert reader.execute("SELECT count(*) FROM wh.events").fetchone()[0] == 200
    assert table_state(pg_dsn) == {DAY: (200, {"a"})}
    assert set(relations(pg_dsn)) == {"events", "events$pkey", "events$p20260105", "events$p20260105$pkey"}
    with psycopg.connect(pg_dsn) as conn:
        assert [e.run_id for e in ledger.history(conn, "events")] == ["run-1"]
    write(postgres, {DAY: 150}, "b", run_id="run-3", swap_min_rows=100)  # a rerun repairs
    assert table_state(pg_dsn) == {DAY: (150, {"b"})}


def test_a_long_range_publishes_in_bounded_transactions(postgres, pg_dsn):
    """400 new days in one write: per-day partitions would exhaust PostgreSQL's lock table in one transaction
    (64 x max_connections locks); the sink publishes 100 days per transaction."""
    days = days_between("2025-01-01", "2026-02-04")
    assert len(days) == 400
    entries = write(postgres, {d: 3 for d in days}, "a")
    assert len(entries) == 400 and {e.row_count for e in entries} == {3}
    state = table_state(pg_dsn)
    assert len(state) == 400 and all(v == (3, {"a"}) for v in state.values())
    with psycopg.connect(pg_dsn) as conn:
        runs = conn.execute("SELECT count(DISTINCT xmin::text) FROM wh.events").fetchone()[0]
    assert runs == 4  # four transactions of 100 days each


def transactions_by_days(dsn) -> list[list[str]]:
    """The days each transaction wrote (rows grouped by the transaction that inserted them), in day order."""
    with psycopg.connect(dsn) as conn:
        rows = conn.execute("SELECT xmin::text, array_agg(DISTINCT partition_date::text ORDER BY partition_date::text)"
                            " FROM wh.events GROUP BY 1").fetchall()
    return sorted(days for _, days in rows)


def test_a_long_ranges_transactions_are_even_so_those_run_at_once_end_together(postgres, pg_dsn, monkeypatch):
    """10 days, at most 4 per transaction. One transaction after another (IDEM_PG_PARALLEL_TRANSACTIONS=1): 3
    of 4, 3 and 3 days (not 4, 4, 2). Two at a time: 4 of 3, 3, 2, 2 (a multiple of 2, so neither connection is
    left alone with a last batch), for a first load too (its partitions made first); 3 at a time: 4, 3, 3.
    Every transaction holds consecutive days and never more than the bound."""
    days = days_between("2026-02-01", "2026-02-10")
    monkeypatch.setenv("IDEM_PG_PARALLEL_TRANSACTIONS", "1")
    write(postgres, {d: 3 for d in days}, "a", days_per_transaction=4)
    assert [len(t) for t in transactions_by_days(pg_dsn)] == [4, 3, 3]
    monkeypatch.setenv("IDEM_PG_PARALLEL_TRANSACTIONS", "2")
    write(postgres, {d: 4 for d in days}, "b", run_id="run-2", days_per_transaction=4)
    assert [len(t) for t in transactions_by_days(pg_dsn)] == [3, 3, 2, 2]
    monkeypatch.setenv("IDEM_PG_PARALLEL_TRANSACTIONS", "3")
    write(postgres, {d: 5 for d in days}, "c", run_id="run-3", days_per_transaction=4)
    batches = transactions_by_days(pg_dsn)
    assert [len(t) for t in batches] == [4, 3, 3]
    assert [d for t in batches for d in t] == days
    assert table_state(pg_dsn) == {d: (5, {"c"}) for d in days}


def test_a_long_first_load_makes_its_partitions_first_then_writes_two_transactions_at_once(postgres, pg_dsn):
    """A first load of 10 new days (a backfill), at most 4 per transaction: the days' empty partitions are
    created up front (committed before any row is written), so the rows are written as in a rewrite, two
    transactions at once, each writing only rows: 4 transactions of 3, 3, 2, 2 days, none of which made a
    partition (every partition's catalog row is older than every row of the data)."""
    write(postgres, {"2026-01-31": 2}, "seed")  # the table exists, partitioned
    days = days_between("2026-02-01", "2026-02-10")
    write(postgres, {d: 3 for d in days}, "a", run_id="run-2", days_per_transaction=4)
    assert table_state(pg_dsn) == {"2026-01-31": (2, {"seed"}), **{d: (3, {"a"}) for d in days}}
    assert [len(t) for t in transactions_by_days(pg_dsn) if t[0] in days] == [3, 3, 2, 2]
    with psycopg.connect(pg_dsn) as conn:
        made_with_rows = conn.execute(
            """SELECT count(*) FROM pg_inherits i JOIN pg_class c ON c.oid = i.inhrelid
               WHERE i.inhparent = 'wh.events'::regclass
                 AND c.xmin::text IN (SELECT DISTINCT xmin::text FROM wh.events WHERE partition_date >= '2026-02-01')"""
        ).fetchone()[0]
    assert made_with_rows == 0


def test_long_asset_names_get_distinct_partition_names_within_postgres_limits(postgres):
    sink = PostgresTableSink(postgres, SCHEMA)
    a = AssetTarget("x" * 50 + "_first", DECL, AuditRules())
    b = AssetTarget("x" * 50 + "_second", DECL, AuditRules())
    names = {sink.day_partition(t, DAY) for t in (a, b)} | {sink.stage_name(t, DAY, "0f3c9a2e-1111") for t in (a, b)}
    assert len(names) == 4
    assert all(len(sink.key_name(n).encode()) <= 63 for n in names)
