"""The ledger's reads: the same answers as before they were made flat, and plans that never scan the ledger.

Each read is compared with what the platform computed before (the whole history of the asset, or of the days, read
into Python and filtered there) on a ledger with several assets, sinks, stores, rewrites and unconfirmed intents.
Then each hot query, captured as the platform sends it, is explained on a ledger of a few hundred thousand
generated rows: it must use the ledger's indexes (no Seq Scan of `idem.ledger`); the assertion is on the plan, never
on time (benchmarks/bench_ledger_scale.py measures the time).

The `row_count_matches_upstream` check reads the upstream's count in the upstream's own sink and store, the
late-data sensor its own store's publishes, the `idem run` summary its own run's: two deployments sharing one
ledger must not read each other's.
"""

import json
import random

import dagster as dg
import psycopg
import pytest
from psycopg import sql

from idem_platform import cli
from idem_platform.checks import checks_for
from idem_platform.pipelines.people import people, raw_people
from idem_platform.resources import LakeResource, PostgresResource
from idem_platform.storage import ledger
from idem_platform.storage.lake_store import LakePartitionIOManager
from idem_platform.storage.postgres_store import PostgresPartitionIOManager

ASSETS = ("orders", "sales/orders", "orders_p2026", "people")
SINKS = ("postgres", "lake", "elasticsearch")
STORES = ("warehouse.orders", "other.orders")
DAYS = [f"2026-01-{d:02d}" for d in range(1, 11)]


def entry(asset, day, sink, store, n) -> ledger.LedgerEntry:
    return ledger.LedgerEntry(
        asset=asset, partition=day, sink=sink, location=f"{store}/{day}", run_id=f"run-{n}", row_count=n,
        fingerprint=f"fp-{n}", previous_fingerprint=None, store=store, version=None if sink == "postgres" else f"v{n}",
    )


@pytest.fixture
def mixed_ledger(postgres):
    """Several assets, sinks and stores, days rewritten in shuffled order, confirmed rows and intents."""
    rng = random.Random(18)
    rows = [(a, d, s, st) for a in ASSETS for d in DAYS for s in SINKS for st in STORES for _ in range(rng.randint(0, 3))]
    rng.shuffle(rows)
    with postgres.connect() as conn:
        ledger.ensure_ledger(conn)
        for n, (asset, day, sink, store) in enumerate(rows):
            if sink != "postgres" and n % 5 == 0:
                ledger.record_intents(conn, [entry(asset, day, sink, store, n)])
            else:
                ledger.record(conn, [entry(asset, day, sink, store, n)])
        conn.commit()
    return postgres


def test_latest_entries_as_before(mixed_ledger):
    with mixed_ledger.connect() as conn:
        for asset in ASSETS:
            for sink in (None, *SINKS):
                days = DAYS[2:7]
                before = {}
                for e in ledger.history(conn, asset=asset, days=days):
                    if sink is None or e.sink == sink:
                        before[e.partition] = e
                assert ledger.latest_entries(conn, asset, days, sink) == before
                for store in STORES:  # ... and in one store: the rows of the other store are not there
                    in_store = {}
                    for e in ledger.history(conn, asset=asset, days=days):
                        if (sink is None or e.sink == sink) and e.store == store:
                            in_store[e.partition] = e
                    assert ledger.latest_entries(conn, asset, days, sink, store) == in_store


def test_latest_confirmed_and_pending_intents_as_before(mixed_ledger):
    with mixed_ledger.connect() as conn:
        everything = ledger.history(conn, intents=True)
        for asset in ASSETS:
            for sink in SINKS:
                for store in STORES:
                    mine = [e for e in everything if (e.asset, e.sink, e.store) == (asset, sink, store)]
                    confirmed = {e.partition: e for e in mine if e.confirmed}
                    assert ledger.latest_confirmed(conn, asset, sink, DAYS, store) == confirmed
                    pending = {}
                    for e in reversed(mine):
                        last = confirmed.get(e.partition)
                        if not e.confirmed and (last is None or e.id > last.id):
                            pending.setdefault(e.partition, []).append(e)
                    assert ledger.pending_intents(conn, asset, sink, DAYS, store) == pending
                    assert ledger.last_partitions(conn, asset, sink, store, 3) == sorted(confirmed)[-3:]


def test_idem_ledger_and_run_summary_as_before(mixed_ledger):
    names = ["orders", "sales/orders"]
    days = DAYS[3:6]
    with mixed_ledger.connect() as conn:
        everything = ledger.history(conn)
        for only_days in (days, None):
            before = [e for e in (ledger.history(conn, days=only_days)) if e.asset in set(names)]
            assert cli.ledger_rows(conn, names, only_days) == before
            for limit in (1, 7, 10_000):
                assert cli.ledger_rows(conn, names, only_days, limit) == before[-limit:]
        assert cli.ledger_rows(conn, [], None, 5) == []
        # the summary: the last row the run wrote of each (day, asset, sink), in the assets' order
        for run_id in {e.run_id for e in everything if e.partition in days and e.asset in names}:
            latest = {}
            for e in everything:
                if e.partition in days and e.asset in names and e.run_id == run_id:
                    latest[(e.partition, e.asset, e.sink)] = e
            rows, run = cli.summary_rows(conn, names, days, run_id)
            assert rows == sorted(latest.values(), key=lambda e: (e.partition, names.index(e.asset), e.sink))
            assert run == run_id


def test_a_later_publish_in_another_store_is_not_this_deployments(postgres):
    """A shared ledger: this deployment (store `warehouse.orders`, run `run-mine`) published two days; another
    deployment (`other.orders`, `run-other`) published the first of them again later, and a third day this
    deployment never published. Read by store, the first day is still this deployment's publish and the third is
    absent; the summary of this deployment's run shows its own rows only."""
    mine, other = "warehouse.orders", "other.orders"
    days = DAYS[:3]

    def publish(day, store, run_id, n):
        ledger.record(conn, [ledger.LedgerEntry(
            asset="orders", partition=day, sink="postgres", location=f"{store}?partition_date={day}", run_id=run_id,
            row_count=n, fingerprint=f"fp-{n}", previous_fingerprint=None, store=store)])

    with postgres.connect() as conn:
        ledger.ensure_ledger(conn)
        publish(days[0], mine, "run-mine", 1)
        publish(days[1], mine, "run-mine", 2)
        publish(days[0], other, "run-other", 3)
        publish(days[2], other, "run-other", 4)
        conn.commit()
        ours = ledger.latest_entries(conn, "orders", days, "postgres", mine)
        assert {d: (e.store, e.run_id, e.row_count) for d, e in ours.items()} == {
            days[0]: (mine, "run-mine", 1), days[1]: (mine, "run-mine", 2)}
        # without a store, as before: the newest publish in any store
        assert ledger.latest_entries(conn, "orders", days, "postgres")[days[0]].store == other
        rows, run = cli.summary_rows(conn, ["orders"], days, "run-mine")
        assert [(e.partition, e.store, e.row_count) for e in rows] == [(days[0], mine, 1), (days[1], mine, 2)]
        assert run == "run-mine"


def test_recent_as_before(mixed_ledger):
    with mixed_ledger.connect() as conn:
        everything = ledger.history(conn)
        mine = [e for e in everything if (e.asset, e.sink, e.store) == ("orders", "lake", "warehouse.orders")]
        assert ledger.recent(conn, "orders", "lake", "warehouse.orders", 4) == mine[::-1][:4]


# ------------------------------------------------------------------------------------------------- plans

GENERATED = 300_000


@pytest.fixture
def large_ledger(postgres):
    """GENERATED rows of 200 assets, 3 sinks, 2 stores, 250 days (made by the server), analyzed."""
    with postgres.connect() as conn:
        ledger.ensure_ledger(conn)
        conn.execute(
            sql.SQL(
                """INSERT INTO {} (asset, partition, sink, store, location, run_id, row_count, fingerprint, changed,
                                   version, confirmed)
                   SELECT 'asset_' || (g %% 200), to_char(date '2025-01-01' + ((g / 1200) %% 365)::int, 'YYYY-MM-DD'),
                          (ARRAY['postgres', 'lake', 'elasticsearch'])[1 + (g / 200) %% 3], 'store_' || ((g / 600) %% 2),
                          'somewhere', 'run-' || (g / 1000), 10, md5(g::text), true, 'v' || g, g %% 50 <> 0
                   FROM generate_series(0, %s - 1) g"""
            ).format(ledger.LEDGER),
            (GENERATED,),
        )
        conn.commit()
        conn.autocommit = True
        conn.execute(sql.SQL("VACUUM ANALYZE {}").format(ledger.LEDGER))
    return postgres


class Capture(psycopg.Cursor):
    """Records every SELECT on the ledger the platform sends (text and parameters), to explain it."""

    statements: list = []

    def execute(self, query, params=None, **kwargs):
        text = query.as_string(self.connection) if isinstance(query, sql.Composable) else query
        if "ledger" in text and text.lstrip().upper().startswith("SELECT") and "pg_class" not in text \
                and "to_regclass" not in text:
            Capture.statements.append((text, params))
        return super().execute(query, params, **kwargs)


def plan_nodes(plan: dict):
    yield plan
    for child in plan.get("Plans", []):
        yield from plan_nodes(child)


DAYS_2025 = [f"2025-06-{d:02d}" for d in range(1, 31)]
HOT = {
    "latest_confirmed (previous fingerprint of a write)": lambda c: ledger.latest_confirmed(c, "asset_7", "lake", DAYS_2025[:1], "store_1"),
    "pending_intents (lake and index writes, verify)": lambda c: ledger.pending_intents(c, "asset_7", "lake", DAYS_2025, "store_1"),
    "latest_entries (late-data sensor)": lambda c: ledger.latest_entries(c, "asset_7", DAYS_2025, "postgres"),
    "latest_entries in one store (late-data sensor)": lambda c: ledger.latest_entries(c, "asset_7", DAYS_2025, "postgres", "store_1"),
    "latest_entries in any sink (published_partitions)": lambda c: ledger.latest_entries(c, "asset_7", DAYS_2025),
    "idem run summary": lambda c: cli.summary_rows(c, ["asset_7", "asset_8", "asset_9"], DAYS_2025[:7], "run-150"),
    "idem ledger --range": lambda c: cli.ledger_rows(c, ["asset_7", "asset_8"], DAYS_2025[:7]),
    "idem ledger ASSET": lambda c: cli.ledger_rows(c, ["asset_7"], None, 100),
    "idem ledger": lambda c: cli.ledger_rows(c, [f"asset_{n}" for n in range(20)], None, 100),
    "last published days (checks)": lambda c: ledger.last_partitions(c, "asset_7", "lake", "store_1", 7),
    "recent publishes (metadata of every write)": lambda c: ledger.recent(c, "asset_7", "lake", "store_1", 10),
}


@pytest.mark.parametrize("name", list(HOT))
def test_hot_queries_use_an_index(large_ledger, name):
    Capture.statements = []
    with psycopg.connect(large_ledger.dsn, cursor_factory=Capture) as conn:
        HOT[name](conn)
    assert Capture.statements, f"{name}: no ledger query captured"
    with psycopg.connect(large_ledger.dsn) as conn:
        for text, params in Capture.statements:
            [(plan,)] = conn.execute(sql.SQL("EXPLAIN (FORMAT JSON) ") + sql.SQL(text), params).fetchall()
            nodes = list(plan_nodes((plan if isinstance(plan, list) else json.loads(plan))[0]["Plan"]))
            scans = [n["Node Type"] for n in nodes if n.get("Relation Name") == "ledger"]
            indexes = {n["Index Name"] for n in nodes if "Index Name" in n}
            assert scans, f"{name}: no scan of the ledger in {plan}"
            assert "Seq Scan" not in scans, f"{name}: {text}\n{json.dumps(plan, indent=1)}"
            assert indexes and indexes <= set(ledger.LEDGER_INDEXES), f"{name}: {indexes}"
            if name in EXACT:
                assert indexes == {EXACT[name]}, f"{name}: {indexes}"


def test_the_plans_asserted_are_the_plans_that_run_however_often_a_connection_reads(large_ledger):
    """A long-lived connection (a sensor in the daemon, a CLI loop) runs the same read again and again: prepared,
    the server could switch it to one generic plan chosen without the values, which the plans above never saw."""
    with large_ledger.connect(autocommit=True) as conn:
        for _ in range(12):
            for read in HOT.values():
                read(conn)
        assert conn.execute("SELECT count(*) FROM pg_prepared_statements").fetchone()[0] == 0


# Where the planner's estimate could pick another index (it takes asset, sink and store for independent), the one
# that serves the query exactly must be the one used.
EXACT = {
    "recent publishes (metadata of every write)": "ledger_by_asset",
    "latest_confirmed (previous fingerprint of a write)": "ledger_by_day",
    "last published days (checks)": "ledger_by_day",
    "latest_entries in one store (late-data sensor)": "ledger_by_day",
    "idem run summary": "ledger_by_day",
}


# ---------------------------------------------------------------------------- checks on a shared ledger


def deployment(postgres: PostgresResource, schema: str, lake_root: str) -> dict:
    return {
        "postgres": postgres,
        "lake_io": LakePartitionIOManager(postgres=postgres, lake=LakeResource(root=lake_root)),
        "warehouse_io": PostgresPartitionIOManager(postgres=postgres, db_schema=schema),
    }


def test_row_count_check_reads_the_upstream_of_its_own_deployment(postgres, tmp_path):
    """Two deployments (warehouse schemas and lake roots) share one ledger. The other deployment's raw day has
    900 rows, written last; this deployment's people day has 1,000, as its own raw day: the check passes."""
    day, assets = "2026-01-05", [raw_people, people]
    mine = deployment(postgres, "warehouse", str(tmp_path / "lake_a"))
    other = deployment(postgres, "warehouse_b", str(tmp_path / "lake_b"))

    def run(resources, rows, selection=None):
        with dg.instance_for_test() as instance:
            result = dg.materialize(
                [*assets, *checks_for(assets)], selection=selection, partition_key=day, resources=resources,
                instance=instance, run_config={"ops": {"raw_people": {"config": {"rows_per_day": rows}}}},
            )
        return {(e.asset_key.path[-1], e.check_name): e.passed for e in result.get_asset_check_evaluations()}

    assert run(mine, 1000)[("people", "row_count_matches_upstream")] is True
    assert run(other, 900)[("people", "row_count_matches_upstream")] is True
    with dg.instance_for_test() as instance:  # only the checks of this deployment, after the other one wrote
        result = dg.materialize(
            [*assets, *checks_for(assets)], selection=dg.AssetSelection.checks_for_assets(people),
            tags={"dagster/partition": day}, resources=mine, instance=instance,
        )
    [evaluation] = [e for e in result.get_asset_check_evaluations() if e.check_name == "row_count_matches_upstream"]
    assert evaluation.passed, evaluation.metadata
    assert evaluation.metadata["raw_people"].value == 1000
