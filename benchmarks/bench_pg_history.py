"""Overwrite cost must not grow with history: one 10k-row day replaced in a table of 10 days vs 1,000 days.

    .venv/bin/python benchmarks/bench_pg_history.py [--rows-per-day 10000] [--days 10 1000] [--repeat 15]

Two tables in the platform's layout, one with 10 and one with 1,000 days of 10k rows (10M rows, ~1.5 GB):
`PARTITION BY LIST (partition_date)`, one partition per day. The newest day is published through the
platform (`PostgresPartitionIOManager`'s sink, which creates the parent table with PRIMARY KEY
(partition_date, id) and the day's partition); the older days are made by the server exactly as the sink
lays a day out: per day a table `<asset>$p<yyyymmdd>` filled by `INSERT ... SELECT` (one day of rows is
generated once with generate_series into a temporary table and copied with each day's dates: copying is
twice as fast as generating), then its key `<asset>$p<yyyymmdd>$pkey` PRIMARY KEY (partition_date, id) and
`CHECK (partition_date = day)` named `idem_day`, attached `FOR VALUES IN (day)`, 100 days per transaction;
one ledger row per day; then VACUUM ANALYZE, so that autovacuum finds nothing left to do while the
overwrites are timed. The ANALYZE samples few rows (default_statistics_target 1 in the set-up session):
a full ANALYZE of 1,000 leaves takes about a minute here, and no statistics of the other days enter the
measured statements (the swap reads no other partition; the in-place DELETE, COPY and count are pruned to
the day's partition by its bound). The script checks that a generated partition has the same constraints,
key and bound as the one the platform made.

Then the newest day (the daily schedule's case) is overwritten through `publish_partitions` in both tables,
interleaved, --repeat times each, with two contents of the day in turn (so every overwrite replaces the day: the
same content again would be proven untouched and not rewritten):

- idem: the platform's sink as configured (by default every day is replaced in place: DELETE through the parent,
  COPY straight into the day's partition);
- idem swap: a second platform sink with `swap_min_rows=1`, so the same day of the same tables is staged and
  swapped in (the opt-in path, `IDEM_PG_SWAP_MIN_ROWS`).

ratio = median time with 1,000 days / median time with 10 days (target <= 1.2, for the platform's default
path); the swap's ratio is reported beside it, without a target.
"""

from __future__ import annotations

import argparse
import datetime as dt
import statistics
import sys
import time
import uuid
from pathlib import Path

import psycopg
from psycopg import sql

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from benchmarks.common import (  # noqa: E402
    MIXED, fresh_database, interleaved, load_average, machine, mixed_frame, print_ratio, print_report, print_times,
)
from idem_platform.resources import PostgresResource  # noqa: E402
from idem_platform.storage import ledger  # noqa: E402
from idem_platform.storage.audit import AuditRules  # noqa: E402
from idem_platform.storage.fingerprint import fingerprint  # noqa: E402
from idem_platform.storage.partition_store import AssetTarget, publish_partitions  # noqa: E402
from idem_platform.storage.postgres_store import PostgresPartitionIOManager, PostgresTableSink  # noqa: E402

NEWEST_DAY = "2026-01-05"
SCHEMA = "bench"
TARGET_RATIO = 1.2
DAYS_PER_TRANSACTION = 100  # as the sink: each new partition holds a few locks until COMMIT

STATISTICS_TARGET = 1  # of the set-up's ANALYZE (see above)

# One day of history, generated once per table: the same column types as MIXED, values varied per row.
HISTORY_DAY = """
    CREATE TEMPORARY TABLE history_day AS
    SELECT g AS id, 'name-' || mod(g * 7919, 50000) AS name, 'user' || g || '@example.com' AS email,
           'city-' || mod(g, 500) AS city, random() AS score, round((random() * 30 + 85)::numeric, 2)::float8 AS amount,
           mod(g, 2) = 0 AS active, date '1950-01-01' + mod(g * 31, 20000)::int AS born, mod(g, 86400) AS second,
           mod(g, 1000) AS visits
    FROM generate_series(0::bigint, {rows} - 1) g
"""
# ... copied into a day's table with that day's dates.
HISTORY_ROWS = """
    INSERT INTO {table} ({names})
    SELECT id, name, email, city, score, amount, active, born, {day}::timestamptz + second * interval '1 second',
           visits, {day}::date
    FROM history_day
"""


def history_days(days: int) -> list[str]:
    newest = dt.date.fromisoformat(NEWEST_DAY)
    return [(newest - dt.timedelta(days=n)).isoformat() for n in range(days - 1, 0, -1)]


def day_statements(sink: PostgresTableSink, target: AssetTarget, day: str) -> sql.Composed:
    """The day's partition as the sink makes it: table, rows, key + CHECK, ATTACH."""
    name = sink.day_partition(target, day)
    table, parent, literal = sql.Identifier(SCHEMA, name), sink.table(target), sql.Literal(day)
    key = sql.SQL(", ").join(sql.Identifier(k) for k in target.decl.partition_key)
    return sql.SQL("; ").join([
        sql.SQL("CREATE TABLE {} (LIKE {} INCLUDING DEFAULTS)").format(table, parent),
        sql.SQL(HISTORY_ROWS).format(
            table=table, names=sql.SQL(", ").join(sql.Identifier(n) for n in MIXED.names), day=literal),
        sql.SQL("ALTER TABLE {} ADD CONSTRAINT {} PRIMARY KEY ({}), ADD CONSTRAINT idem_day CHECK (partition_date = {}::date)").format(
            table, sql.Identifier(sink.key_name(name)), key, literal),
        sql.SQL("ALTER TABLE {} ATTACH PARTITION {} FOR VALUES IN ({})").format(parent, table, literal),
    ])


def layout(conn: psycopg.Connection, sink: PostgresTableSink, target: AssetTarget, day: str) -> list[tuple]:
    """A day partition's constraints, indexes and bound, with its name and day replaced by placeholders."""
    name = sink.day_partition(target, day)
    rows = conn.execute(
        """SELECT 'constraint', conname, pg_get_constraintdef(oid) FROM pg_constraint WHERE conrelid = %(t)s::regclass
           UNION ALL SELECT 'index', indexname, indexdef FROM pg_indexes WHERE schemaname = %(s)s AND tablename = %(n)s
           UNION ALL SELECT 'bound', c.relkind::text || c.relispartition::text, pg_get_expr(c.relpartbound, c.oid)
                     FROM pg_class c WHERE c.oid = %(t)s::regclass""",
        {"t": sql.Identifier(SCHEMA, name).as_string(conn), "s": SCHEMA, "n": name},
    ).fetchall()
    return sorted(tuple(str(v).replace(name, "<name>").replace(day, "<day>") for v in row) for row in rows)


def fill_history(dsn: str, sink: PostgresTableSink, target: AssetTarget, days: int, rows: int) -> None:
    """Add `days - 1` older day partitions of `rows` rows each (server-side) and their ledger rows."""
    older = history_days(days)
    with psycopg.connect(dsn, autocommit=True) as conn:
        # set-up only: no wait for the WAL flush at each commit (VACUUM ANALYZE commits once per partition)
        conn.execute("SET synchronous_commit = off")
        conn.execute(sql.SQL(HISTORY_DAY).format(rows=sql.Literal(rows)))
        for start in range(0, len(older), DAYS_PER_TRANSACTION):
            with conn.transaction():  # one round trip per batch: the statements of all its days
                conn.execute(sql.SQL("; ").join(
                    day_statements(sink, target, day) for day in older[start : start + DAYS_PER_TRANSACTION]))
        conn.execute("DROP TABLE history_day")
        with conn.transaction():
            ledger.record(conn, [
                ledger.LedgerEntry(
                    asset=target.asset, partition=day, sink=sink.name, location=sink.location(target, day),
                    run_id="history", row_count=rows, fingerprint="0" * 16, previous_fingerprint=None,
                    store=sink.store(target),
                )
                for day in older
            ])
        conn.execute(sql.SQL("SET default_statistics_target = {}").format(sql.Literal(STATISTICS_TARGET)))
        conn.execute(sql.SQL("VACUUM ANALYZE {}").format(sink.table(target)))
        partitions = conn.execute(
            "SELECT count(*) FROM pg_inherits WHERE inhparent = %s::regclass", (sink.table(target).as_string(conn),)
        ).fetchone()[0]
        assert partitions == days, (target.asset, partitions, days)
        if older:  # a generated day looks exactly like the day the platform published
            made, generated = layout(conn, sink, target, NEWEST_DAY), layout(conn, sink, target, older[-1])
            assert made == generated, f"history layout differs from the platform's:\n{made}\n{generated}"


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rows-per-day", type=int, default=10_000)
    parser.add_argument("--days", type=int, nargs=2, default=[10, 1000], metavar=("SMALL", "LARGE"))
    parser.add_argument("--repeat", type=int, default=15)
    args = parser.parse_args()
    small, large = args.days

    print(f"{machine()}; {load_average()}", flush=True)
    # two contents of the day, in turn: every timed overwrite really replaces the day (the same content again
    # would be proven untouched and not rewritten)
    frames = [mixed_frame(args.rows_per_day, NEWEST_DAY, seed=seed) for seed in (7, 8)]
    expected = [fingerprint(f, MIXED) for f in frames]
    frame = frames[0]

    with fresh_database() as dsn:
        postgres = PostgresResource(dsn=dsn)
        platform_sink = PostgresPartitionIOManager(postgres=postgres, db_schema=SCHEMA).sink()
        swap_sink = PostgresTableSink(postgres, SCHEMA, swap_min_rows=1)
        threshold = platform_sink.swap_min_rows
        how = "stage + swap" if threshold is not None and len(frame) >= threshold else "in place"
        print(f"idem: the platform's sink as configured (swap threshold {threshold if threshold is None else f'{threshold:,}'}): "
              f"a {len(frame):,}-row day is replaced {how}; idem swap: swap_min_rows=1 (the opt-in path)", flush=True)
        paths, sizes = {}, {}
        targets = {days: AssetTarget(f"hist_{days}", MIXED, AuditRules()) for days in (small, large)}
        for days, target in targets.items():
            started = time.perf_counter()
            publish_partitions(platform_sink, postgres, target, [NEWEST_DAY], frame, "setup")  # parent + newest day
            fill_history(dsn, platform_sink, target, days, args.rows_per_day)
            count = days * args.rows_per_day
            with psycopg.connect(dsn) as conn:
                size = conn.execute(
                    """SELECT pg_size_pretty(pg_total_relation_size(%(t)s::regclass) + coalesce(
                           (SELECT sum(pg_total_relation_size(inhrelid)) FROM pg_inherits WHERE inhparent = %(t)s::regclass), 0))""",
                    {"t": f'"{SCHEMA}"."{target.asset}"'},
                ).fetchone()[0]
            sizes[f"{days} days"] = f"{count:,} rows in {days} day partitions, {size}, set up in {time.perf_counter() - started:.1f} s"
            print(f"{days} days ({count:,} rows, {size}) ready in {time.perf_counter() - started:.1f} s", flush=True)
        turns: dict[str, int] = {}

        for label, sink in (("idem", platform_sink), ("idem swap", swap_sink)):
            for days, target in targets.items():
                def overwrite(sink=sink, target=target) -> float:
                    turns[target.asset] = turns.get(target.asset, 0) + 1  # per table: the other content than before
                    new = turns[target.asset] % 2
                    start = time.perf_counter()
                    entries = publish_partitions(sink, postgres, target, [NEWEST_DAY], frames[new], str(uuid.uuid4()))
                    elapsed = time.perf_counter() - start
                    assert entries[0].fingerprint == expected[new] and entries[0].row_count == len(frame)
                    assert entries[0].changed, "the overwrite was skipped as identical: it must replace the day"
                    return elapsed

                overwrite()  # warm-up
                paths[f"{label}, {days} days"] = overwrite
        times = interleaved(paths, args.repeat)

    print(f"\nOverwrite of the newest day ({len(frame):,} rows) vs history; {args.repeat} repetitions, interleaved; {load_average()}\n")
    for name, text in sizes.items():
        print(f"  {name}: {text}")
    print()
    print_times(times, units=len(frame))
    med = {name: statistics.median(values) for name, values in times.items()}
    print()
    ratio = med[f"idem, {large} days"] / med[f"idem, {small} days"]
    print_ratio(f"pg overwrite of one day: {large} days / {small} days of history", ratio, f"<= {TARGET_RATIO}", ratio <= TARGET_RATIO)
    swapped = med[f"idem swap, {large} days"] / med[f"idem swap, {small} days"]

    def ms(label: str, days: int) -> str:
        return f"{med[f'{label}, {days} days'] * 1000:.0f} ms"

    print_report(
        f"pg overwrite of one day, stage + swap (opt-in): {large} days / {small} days of history",
        f"{swapped:.2f} (swap: {ms('idem swap', small)} with {small} days, {ms('idem swap', large)} with {large}; "
        f"the default path, {how}: {ms('idem', small)} with {small} days, {ms('idem', large)} with {large})",
    )
    return 0


if __name__ == "__main__":
    sys.exit(main())
