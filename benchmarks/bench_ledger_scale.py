"""Ledger cost as work grows: every ledger read of the platform on a ledger of 10k rows vs one of 10M rows.

    .venv/bin/python benchmarks/bench_ledger_scale.py [--rows 10000 10000000] [--repeat 21] [--batch 50] [--explain]

Every write adds ledger rows, forever; what the platform reads from the ledger must not grow with it. Two fresh
databases each get a generated ledger, made by the server (`INSERT ... SELECT generate_series`) with the
platform's own table and then the platform's own `ensure_ledger`, so the indexes measured are the ones a
deployment has (the generator drops the non-key indexes while it inserts, clears the version comment, and lets
`ensure_ledger` build them, as a migration of an existing ledger would); then VACUUM ANALYZE (what autovacuum
does for a ledger that grew by writes) and a CHECKPOINT (so the measured paths do not share the disk with the
flush of the generated gigabytes).

The generated history: 1,000 assets (--assets), 3 sinks, 3 stores each (deployments sharing one ledger), 1,065 days
(--days), about 1% unconfirmed intents in the lake and search sinks. Both ledgers hold the same *recent* history
of the benchmark's real assets (the last 60 days of `orders` in PostgreSQL, `raw_orders` in the lake and
`service_requests` in PostgreSQL, in each of the 3 stores, the other two stores with other row counts); the rest
(older days of every asset, and the other assets) fills the ledger to --rows. So every query below reads the same
answer on both sides, and any difference is the cost of the history it should not read.

Measured in this process, medians: the writes interleaved repetition by repetition (each path, small then large);
the reads paired call by call (`paired`: the same read on the small and the large ledger one right after the
other, alternating which goes first, each call timed), so both sides of a ratio share the machine's moment:

- write: a one-day write of a real asset through the platform's write path as its IO manager calls it
  (`publish_partitions` + `recent_publishes`): `orders` (1,000 rows, PostgreSQL) and `raw_orders` (lake);
- `idem ledger orders --range A...B` (7 days), `idem ledger --range A...B` and `idem ledger` (no asset: the code
  location's 10 assets): the ledger reads behind the command (`cli.ledger_rows`);
- `idem verify` of one day: the ledger read (`verification.published_records`, an intent resolved from the sink);
- the late-data sensor's query (the last publish of 60 days of `service_requests`, in its sink and store);
- the `idem run` summary (what one run published of 7 days of 3 assets);
- the generated checks' ledger reads: the last 7 published days (a checks run without partitions) and
  `row_count_matches_upstream`'s upstream counts;
- the last 10 publishes of `orders` (`ledger.recent`: the `recent_publishes` metadata of every write, part of
  the write above too).

The query paths are timed on an open connection made as the platform makes its connections
(`PostgresResource.connect`, which never prepares a statement: every call is planned with its values), without
process start-up or connection set-up, which would hide the growth; --repeat rounds of --batch pairs of calls. ratio = median with the large ledger / median with the small one
(target <= 1.2). --explain prints the plan of each hot query on both ledgers.
"""

from __future__ import annotations

import argparse
import contextlib
import datetime as dt
import statistics
import sys
import tempfile
import time
import uuid
from collections.abc import Callable
from pathlib import Path

import psycopg
from psycopg import sql

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from benchmarks.common import (  # noqa: E402
    MIXED, fresh_database, interleaved, load_average, machine, mixed_frame, print_ratio, print_report,
)
from idem_platform import cli  # noqa: E402
from idem_platform.resources import META_SCHEMA, LakeResource, PostgresResource  # noqa: E402
from idem_platform.storage import ledger  # noqa: E402
from idem_platform.storage.audit import AuditRules  # noqa: E402
from idem_platform.storage.lake_store import LakePartitionIOManager  # noqa: E402
from idem_platform.storage.partition_store import (  # noqa: E402
    AssetTarget, publish_partitions, published_entries, recent_publishes,
)
from idem_platform.storage.postgres_store import PostgresPartitionIOManager  # noqa: E402

TARGET_RATIO = 1.2
SCHEMA = "bench"
SINKS = ("postgres", "lake", "elasticsearch")
STORES = 3
LAST_DAY = dt.date(2026, 1, 4)
WINDOW = 60  # days of recent history the real assets have in both ledgers (the late-data sensor's look-back)
WRITE_DAY = LAST_DAY.isoformat()
WEEK = [(LAST_DAY - dt.timedelta(days=n)).isoformat() for n in range(6, -1, -1)]
VERIFY_DAY = WEEK[-2]
LOCATION_ASSETS = 10  # `idem ledger` without an asset: the code location's assets (the real ones + generated)
# `idem ledger --limit`: as many newest rows as the small ledger holds for the location too (the real assets'
# 60 recent days), so both sides list the same rows (the command's default, 1,000, is reached only by a longer history)
LEDGER_LIMIT = 500
DAY_ROWS = 1_000

ORDERS, RAW_ORDERS, SERVICE_REQUESTS = "orders", "raw_orders", "service_requests"


class Side:
    """One database with its generated ledger and the real assets' IO managers."""

    def __init__(self, dsn: str, lake_root: str, rows: int, stack: contextlib.ExitStack):
        self.dsn, self.rows = dsn, rows
        self.postgres = PostgresResource(dsn=dsn)
        self.warehouse = PostgresPartitionIOManager(postgres=self.postgres, db_schema=SCHEMA)
        self.lake = LakePartitionIOManager(postgres=self.postgres, lake=LakeResource(root=lake_root))
        self.orders = AssetTarget(ORDERS, MIXED, AuditRules())
        self.raw_orders = AssetTarget(RAW_ORDERS, MIXED, AuditRules())
        self.requests = AssetTarget(SERVICE_REQUESTS, MIXED, AuditRules())
        self.conn = stack.enter_context(self.postgres.connect(autocommit=True))  # as the platform connects
        self.size = ""

    def real_assets(self) -> list[tuple[str, str, str]]:
        """(asset, sink, this deployment's store) of the benchmark's real assets."""
        pg, lake = self.warehouse.sink(), self.lake.sink()
        return [(ORDERS, pg.name, pg.store(self.orders)), (RAW_ORDERS, lake.name, lake.store(self.raw_orders)),
                (SERVICE_REQUESTS, pg.name, pg.store(self.requests))]


# ------------------------------------------------------------------------------------------------ generation

ASSETS_TABLE = """
    CREATE TEMPORARY TABLE bench_assets (a int PRIMARY KEY, asset text NOT NULL, sink text NOT NULL,
                                         stores text[] NOT NULL, rows_by_store int[] NOT NULL)
"""
# Older history: every asset (real ones included), in its 3 stores, days before the window, rewritten in rounds.
FILLER = """
    INSERT INTO {ledger} (asset, partition, sink, store, location, run_id, row_count, fingerprint,
                          previous_fingerprint, changed, published_at, version, confirmed, fingerprint_algo)
    SELECT b.asset, d.day, b.sink, b.stores[x.k + 1], b.stores[x.k + 1] || '?partition_date=' || d.day,
           'run-' || (g / 997), b.rows_by_store[x.k + 1] + (g %% 7), substr(md5(g::text), 1, 16),
           substr(md5((g - 1)::text), 1, 16), g %% 3 = 0,
           timestamptz '2023-01-01' + g * interval '8 seconds',
           CASE WHEN b.sink <> 'postgres' THEN 'v' || g END,
           b.sink = 'postgres' OR g %% 97 <> 0, '2'
    FROM generate_series(0::bigint, %(n)s - 1) g
    CROSS JOIN LATERAL (SELECT (g %% %(assets)s)::int AS a, ((g / %(assets)s) %% {stores})::int AS k,
                               ((g / (%(assets)s * {stores})) %% %(old_days)s)::int AS day_index) x
    JOIN bench_assets b ON b.a = x.a
    CROSS JOIN LATERAL (SELECT to_char(%(first)s::date + x.day_index, 'YYYY-MM-DD') AS day) d
"""
# The recent window of the real assets: the same rows in both ledgers (one publish per store and day; the lake's
# last day also has an unconfirmed intent newer than it, which readers resolve from the file).
RECENT = """
    INSERT INTO {ledger} (asset, partition, sink, store, location, run_id, row_count, fingerprint,
                          previous_fingerprint, changed, published_at, version, confirmed, fingerprint_algo)
    SELECT b.asset, to_char(%(start)s::date + i, 'YYYY-MM-DD'), b.sink, b.stores[k + 1],
           b.stores[k + 1] || '?partition_date=' || to_char(%(start)s::date + i, 'YYYY-MM-DD'),
           'run-recent-' || i, b.rows_by_store[k + 1], substr(md5(b.asset || i || k), 1, 16), NULL, true,
           timestamptz '2026-01-01' + i * interval '1 minute', CASE WHEN b.sink <> 'postgres' THEN 'v-recent-' || i END,
           true, '2'
    FROM bench_assets b, generate_series(0, %(window)s - 1) i, generate_series(0, {stores} - 1) k
    WHERE b.a < %(real)s
    ORDER BY i, b.a, k
"""


def generate(side: Side, assets: int, days: int) -> float:
    """The side's ledger (see the module docstring); returns the seconds it took."""
    started = time.perf_counter()
    conn = side.conn
    ledger.ensure_ledger(conn)  # the platform's table, then only the primary key while rows go in
    indexes = conn.execute(
        """SELECT i.relname FROM pg_index x JOIN pg_class i ON i.oid = x.indexrelid
           WHERE x.indrelid = %s::regclass AND NOT x.indisprimary""", (f"{META_SCHEMA}.ledger",)).fetchall()
    for (name,) in indexes:
        conn.execute(sql.SQL("DROP INDEX {}").format(sql.Identifier(META_SCHEMA, name)))
    conn.execute(sql.SQL("COMMENT ON TABLE {} IS NULL").format(ledger.LEDGER))
    real = side.real_assets()
    with conn.transaction():
        conn.execute(ASSETS_TABLE)
        rows = []
        for a in range(assets):
            if a < len(real):
                asset, sink, store = real[a]
            else:
                asset, sink, store = f"gen/asset_{a:04d}", SINKS[a % len(SINKS)], f"{SCHEMA}.asset_{a:04d}"
            stores = [store] + [f"other_{k}.{store}" for k in range(1, STORES)]
            rows.append((a, asset, sink, stores, [DAY_ROWS + 100 * k for k in range(STORES)]))
        with conn.cursor() as cur:
            cur.executemany("INSERT INTO bench_assets VALUES (%s, %s, %s, %s, %s)", rows)
        recent = len(real) * WINDOW * STORES
        old_days = days - WINDOW
        first = LAST_DAY - dt.timedelta(days=days - 1)
        conn.execute(sql.SQL(FILLER).format(ledger=ledger.LEDGER, stores=sql.Literal(STORES)),
                     {"n": max(side.rows - recent, 0), "assets": assets, "old_days": old_days, "first": first})
        conn.execute(sql.SQL(RECENT).format(ledger=ledger.LEDGER, stores=sql.Literal(STORES)),
                     {"start": LAST_DAY - dt.timedelta(days=WINDOW - 1), "window": WINDOW, "real": len(real)})
        # The lake's last day: an intent newer than its confirmed row, left by a crash (its version is not live).
        conn.execute(
            sql.SQL("""INSERT INTO {} (asset, partition, sink, store, location, run_id, row_count, fingerprint,
                                       changed, version, confirmed)
                       VALUES (%s, %s, 'lake', %s, 'crashed', 'run-crashed', 1, 'f', true, 'v-crashed', false)""")
            .format(ledger.LEDGER), (RAW_ORDERS, WRITE_DAY, real[1][2]))
        conn.execute("DROP TABLE bench_assets")
    conn.execute("SET maintenance_work_mem = '512MB'")
    ledger.ensure_ledger(conn)  # the platform's indexes, built as its migration builds them
    conn.execute("RESET maintenance_work_mem")
    conn.execute(sql.SQL("VACUUM ANALYZE {}").format(ledger.LEDGER))
    with contextlib.suppress(psycopg.errors.InsufficientPrivilege):  # superuser or pg_checkpoint only
        conn.execute("CHECKPOINT")  # the generated GBs are flushed now, not while the paths are timed
    count = conn.execute(sql.SQL("SELECT count(*) FROM {}").format(ledger.LEDGER)).fetchone()[0]
    size = conn.execute("SELECT pg_size_pretty(pg_total_relation_size(%s::regclass))", (f"{META_SCHEMA}.ledger",)).fetchone()[0]
    side.size = f"{count:,} rows, {size} with indexes"
    return time.perf_counter() - started


# ---------------------------------------------------------------------------------------------------- paths


def location_assets(side: Side) -> list[str]:
    return [asset for asset, _, _ in side.real_assets()] + [
        f"gen/asset_{a:04d}" for a in range(3, LOCATION_ASSETS)]


def query_paths(side: Side) -> dict[str, Callable[[], object]]:
    """The ledger reads, each on the side's open connection (what the named command or component runs)."""
    conn = side.conn
    lake_sink, pg_sink = side.lake.sink(), side.warehouse.sink()
    names = location_assets(side)
    return {
        "idem ledger ASSET --range": lambda: cli.ledger_rows(conn, [ORDERS], WEEK),
        "idem ledger --range": lambda: cli.ledger_rows(conn, names, WEEK),
        "idem ledger --limit": lambda: cli.ledger_rows(conn, names, None, LEDGER_LIMIT),
        "idem verify (lake)": lambda: published_entries(lake_sink, conn, side.raw_orders, [WRITE_DAY]),
        "idem verify (postgres)": lambda: published_entries(pg_sink, conn, side.orders, [VERIFY_DAY]),
        "late-data sensor query": lambda: ledger.latest_entries(
            conn, SERVICE_REQUESTS, late_data_days(), pg_sink.name, pg_sink.store(side.requests)),
        "idem run summary": lambda: cli.summary_rows(conn, [RAW_ORDERS, ORDERS, SERVICE_REQUESTS], WEEK, "run-recent-0"),
        "checks: last published days": lambda: ledger.last_partitions(
            conn, ORDERS, pg_sink.name, pg_sink.store(side.orders), len(WEEK)),
        "checks: upstream row counts": lambda: published_entries(lake_sink, conn, side.raw_orders, WEEK),
        "recent publishes (every write's metadata)": lambda: ledger.recent(
            conn, ORDERS, pg_sink.name, pg_sink.store(side.orders), 10),
    }


def late_data_days() -> list[str]:
    return [(LAST_DAY - dt.timedelta(days=n)).isoformat() for n in range(WINDOW - 1, -1, -1)]


def write_paths(side: Side) -> dict[str, Callable[[], object]]:
    frame = mixed_frame(DAY_ROWS, WRITE_DAY)

    def write(io_manager, target):
        def run():
            entries = publish_partitions(io_manager.sink(), side.postgres, target, [WRITE_DAY], frame.copy(),
                                         str(uuid.uuid4()))
            recent_publishes(side.postgres, entries[-1], _quiet)
        return run

    return {"write postgres (1 day)": write(side.warehouse, side.orders),
            "write lake (1 day)": write(side.lake, side.raw_orders)}


class _Quiet:
    def info(self, *_): ...
    def warning(self, *_): ...
    def debug(self, *_): ...


_quiet = _Quiet()


def paired(reads: dict[str, tuple[Callable[[], object], Callable[[], object]]], sides: tuple[str, str], repeat: int,
           batch: int) -> dict[str, list[float]]:
    """Each read on both ledgers call by call, alternating which goes first, every call timed on its own: the
    small and the large ledger's calls of a read run milliseconds apart, under the same load, so what the
    machine does meanwhile (other processes, the server's background work) falls on both alike. Timed in
    batches, path after path, the sub-millisecond reads moved by +-30% from run to run. `repeat` rounds of
    `batch` pairs per read; '<read>, <side>' -> seconds of every call."""
    times: dict[str, list[float]] = {f"{name}, {side}": [] for name in reads for side in sides}
    clock = time.perf_counter
    for round_ in range(repeat):
        for name, fns in reads.items():
            out = [times[f"{name}, {side}"] for side in sides]
            for call in range(batch):
                order = (0, 1) if (round_ + call) % 2 == 0 else (1, 0)
                for i in order:
                    start = clock()
                    fns[i]()
                    out[i].append(clock() - start)
    return times


def timed(fn: Callable[[], object], batch: int) -> Callable[[], float]:
    """Seconds per call of `fn`, timed over a batch of calls."""
    def run() -> float:
        start = time.perf_counter()
        for _ in range(batch):
            fn()
        return (time.perf_counter() - start) / batch
    return run


def print_ms(times: dict[str, list[float]]) -> None:
    """One line per path: repetitions, median, min, max, in milliseconds (the reads take fractions of one)."""
    width = max(len(name) for name in times)
    print(f"{'path':<{width}}  {'n':>2} {'median ms':>10} {'min ms':>9} {'max ms':>9}")
    for name, values in times.items():
        print(f"{name:<{width}}  {len(values):>2} {statistics.median(values) * 1000:>10.3f} "
              f"{min(values) * 1000:>9.3f} {max(values) * 1000:>9.3f}")


def explain(side: Side) -> None:
    """The plan of each hot query on the side's ledger (psycopg's statements, captured from the paths above)."""
    captured: list[tuple[str, object]] = []

    class Capture(psycopg.Cursor):
        def execute(self, query, params=None, **kwargs):
            text = query.as_string(self.connection) if isinstance(query, sql.Composable) else query
            if "ledger" in str(text) and str(text).lstrip().upper().startswith(("SELECT", "WITH")):
                captured.append((text, params))
            return super().execute(query, params, **kwargs)

    with psycopg.connect(side.dsn, autocommit=True, cursor_factory=Capture) as conn:
        probe = Side.__new__(Side)
        probe.__dict__.update(side.__dict__, conn=conn)
        for name, fn in query_paths(probe).items():
            captured.clear()
            fn()
            print(f"\n--- {name}")
            for text, params in captured:
                plan = side.conn.execute(sql.SQL("EXPLAIN (ANALYZE, BUFFERS, COSTS OFF) ") + sql.SQL(text), params).fetchall()
                print("\n".join(f"    {line}" for (line,) in plan))


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rows", type=int, nargs=2, default=[10_000, 10_000_000], metavar=("SMALL", "LARGE"))
    parser.add_argument("--assets", type=int, default=1_000)
    parser.add_argument("--days", type=int, default=1_065)
    parser.add_argument("--repeat", type=int, default=21)
    parser.add_argument("--batch", type=int, default=50, help="calls per timed query repetition")
    parser.add_argument("--write-repeat", type=int, default=15)
    parser.add_argument("--explain", action="store_true", help="print the plans of the hot queries (both ledgers)")
    args = parser.parse_args()
    small, large = args.rows

    print(f"{machine()}; {load_average()}", flush=True)
    with contextlib.ExitStack() as stack:
        sides: dict[int, Side] = {}
        for rows in (small, large):
            dsn = stack.enter_context(fresh_database("idem_bench_ledger"))
            lake_root = stack.enter_context(tempfile.TemporaryDirectory())
            side = sides[rows] = Side(dsn, lake_root, rows, stack)
            seconds = generate(side, args.assets, args.days)
            print(f"ledger of {rows:,} generated: {side.size}, in {seconds:.1f} s", flush=True)

        paths: dict[str, Callable[[], float]] = {}
        labels: list[str] = []
        for rows, side in sides.items():
            for name, fn in write_paths(side).items():
                fn()  # warm-up (and the first write of the day)
                paths[f"{name}, {rows:,}"] = timed(fn, 1)
                labels.append(name) if rows == small else None
        writes = interleaved(paths, args.write_repeat)
        reads = {rows: query_paths(side) for rows, side in sides.items()}
        for fns in reads.values():
            for fn in fns.values():
                fn()  # warm-up: the pages the query reads are cached on both sides
        labels += list(reads[small])
        queries = paired({name: (reads[small][name], reads[large][name]) for name in reads[small]},
                         (f"{small:,}", f"{large:,}"), args.repeat, args.batch)
        if args.explain:
            for rows, side in sides.items():
                print(f"\n===== plans on the ledger of {rows:,} rows", flush=True)
                explain(side)

    times = {**writes, **queries}
    print(f"\nLedger reads and writes, {small:,} vs {large:,} ledger rows ({args.assets:,} assets, {len(SINKS)} sinks, "
          f"{STORES} stores, {args.days:,} days); writes {args.write_repeat} repetitions, interleaved; reads "
          f"{args.repeat} x {args.batch} calls per ledger, paired call by call; {load_average()}\n")
    for rows, side in sides.items():
        print(f"  {rows:,}: {side.size}")
    print()
    print_ms(times)
    med = {name: statistics.median(values) for name, values in times.items()}
    print()
    worst = 0.0
    for name in labels:
        ratio = med[f"{name}, {large:,}"] / med[f"{name}, {small:,}"]
        worst = max(worst, ratio)
        print_ratio(f"ledger {name}: {large:,} / {small:,} rows", ratio, f"<= {TARGET_RATIO}", ratio <= TARGET_RATIO)
    for name in labels:
        print_report(f"ledger {name}", f"{med[f'{name}, {small:,}'] * 1000:.3f} ms with {small:,} rows, "
                                       f"{med[f'{name}, {large:,}'] * 1000:.3f} ms with {large:,}")
    print_report("ledger worst ratio", f"{worst:.2f}; {load_average()}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
