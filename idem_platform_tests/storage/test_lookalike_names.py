"""Names map one to one in PostgreSQL: asset `orders` next to asset `orders_p20260105` (issue 15, names).

`orders_p20260105` is a valid Dagster asset name and was the name of `orders`'s day partition: each write took
the other's table for its own (a DROP, a write into it, or a refusal). Now the sink's own relations carry a `$`
(`orders$p20260105`), which no asset name holds, and a day's partition is found by its bound among the table's
partitions (`pg_inherits`). Each test runs on both write paths, chosen the way users choose them
(`IDEM_PG_SWAP_MIN_ROWS`), in a database of its own (the `pg_dsn` fixture)."""

import hashlib

import psycopg
import pytest

from idem_platform.storage import ledger
from idem_platform.storage.audit import AuditRules
from idem_platform.storage.fingerprint import partition_digests
from idem_platform.storage.partition_store import AssetTarget, publish_partitions
from idem_platform.storage.postgres_store import PostgresTableSink
from idem_platform.storage.schema import SchemaError

from .test_postgres_layout import DECL, SCHEMA, frame

DAY, NEXT_DAY = "2026-01-05", "2026-01-06"
ORDERS = AssetTarget("orders", DECL, AuditRules())
LOOKALIKE = AssetTarget("orders_p20260105", DECL, AuditRules())
PATHS = ["swap", "in_place"]


def publish(postgres, monkeypatch, target, rows_by_day, label, path, run_id):
    """Publish through a sink configured as users configure it: IDEM_PG_SWAP_MIN_ROWS set (swap) or unset."""
    if path == "swap":
        monkeypatch.setenv("IDEM_PG_SWAP_MIN_ROWS", "1")
    else:
        monkeypatch.delenv("IDEM_PG_SWAP_MIN_ROWS", raising=False)
    sink = PostgresTableSink(postgres, SCHEMA)
    assert sink.swap_min_rows == (1 if path == "swap" else None)
    return publish_partitions(sink, postgres, target, sorted(rows_by_day), frame(rows_by_day, label), run_id)


def state(dsn, table) -> dict[str, tuple[int, int, set[str]]]:
    """Per day of a table: rows, distinct ids and the labels' generations, read with SQL on the asset's table."""
    with psycopg.connect(dsn) as conn:
        rows = conn.execute(
            f'SELECT partition_date::text, count(*), count(DISTINCT id), array_agg(DISTINCT split_part(label, \'-\', 1))'
            f' FILTER (WHERE label IS NOT NULL) FROM wh."{table}" GROUP BY 1'
        ).fetchall()
    return {day: (n, ids, set(gens or [])) for day, n, ids, gens in rows}


def partitions(dsn, table) -> dict[str, str]:
    """Name -> bound of each partition of a table."""
    with psycopg.connect(dsn) as conn:
        return dict(conn.execute(
            "SELECT c.relname, pg_get_expr(c.relpartbound, c.oid) FROM pg_inherits i JOIN pg_class c ON c.oid = i.inhrelid"
            " WHERE i.inhparent = to_regclass(%s)", (f'wh."{table}"',)
        ).fetchall())


def relation_ids(dsn, table) -> dict[str, int]:
    """The oid of a table and of each of its partitions: a dropped and re-created table gets new ones."""
    with psycopg.connect(dsn) as conn:
        return dict(conn.execute(
            "SELECT c.relname, c.oid::int FROM pg_class c WHERE c.oid = to_regclass(%s)"
            " UNION ALL SELECT c.relname, c.oid::int FROM pg_inherits i JOIN pg_class c ON c.oid = i.inhrelid"
            " WHERE i.inhparent = to_regclass(%s)", (f'wh."{table}"', f'wh."{table}"')
        ).fetchall())


def reads_back(postgres, target, days, rows_by_day, label):
    back = PostgresTableSink(postgres, SCHEMA).read(target, days)
    expected = frame(rows_by_day, label)
    assert back.to_dict("records") == expected.to_dict("records")
    with postgres.connect() as conn:
        latest = {e.partition: e.fingerprint for e in ledger.history(conn, target.asset)}
    assert {d: v.fingerprint for d, v in partition_digests(back, DECL, days).items()} == {d: latest[d] for d in days}


@pytest.mark.parametrize("lookalike_path", PATHS)
@pytest.mark.parametrize("orders_path", PATHS)
def test_orders_then_orders_p20260105_both_publish_and_keep_their_rows(pg_dsn, postgres, monkeypatch, orders_path,
                                                                       lookalike_path):
    publish(postgres, monkeypatch, ORDERS, {DAY: 30}, "orders", orders_path, "run-1")
    publish(postgres, monkeypatch, LOOKALIKE, {DAY: 20}, "lookalike", lookalike_path, "run-2")
    assert state(pg_dsn, "orders") == {DAY: (30, 30, {"orders"})}
    assert state(pg_dsn, "orders_p20260105") == {DAY: (20, 20, {"lookalike"})}
    assert partitions(pg_dsn, "orders") == {"orders$p20260105": "FOR VALUES IN ('2026-01-05')"}
    assert partitions(pg_dsn, "orders_p20260105") == {"orders_p20260105$p20260105": "FOR VALUES IN ('2026-01-05')"}
    reads_back(postgres, ORDERS, [DAY], {DAY: 30}, "orders")
    reads_back(postgres, LOOKALIKE, [DAY], {DAY: 20}, "lookalike")


@pytest.mark.parametrize("orders_path", PATHS)
@pytest.mark.parametrize("lookalike_path", PATHS)
def test_orders_p20260105_then_orders_both_publish_and_keep_their_rows(pg_dsn, postgres, monkeypatch, lookalike_path,
                                                                       orders_path):
    publish(postgres, monkeypatch, LOOKALIKE, {DAY: 20}, "lookalike", lookalike_path, "run-1")
    publish(postgres, monkeypatch, ORDERS, {DAY: 30, NEXT_DAY: 4}, "orders", orders_path, "run-2")
    assert state(pg_dsn, "orders_p20260105") == {DAY: (20, 20, {"lookalike"})}
    assert state(pg_dsn, "orders") == {DAY: (30, 30, {"orders"}), NEXT_DAY: (4, 4, {"orders"})}
    reads_back(postgres, LOOKALIKE, [DAY], {DAY: 20}, "lookalike")
    reads_back(postgres, ORDERS, [DAY, NEXT_DAY], {DAY: 30, NEXT_DAY: 4}, "orders")


@pytest.mark.parametrize("path", PATHS)
def test_rewriting_orders_neither_drops_nor_changes_orders_p20260105(pg_dsn, postgres, monkeypatch, path):
    publish(postgres, monkeypatch, ORDERS, {DAY: 30}, "orders", path, "run-1")
    publish(postgres, monkeypatch, LOOKALIKE, {DAY: 20}, "lookalike", path, "run-2")
    before = relation_ids(pg_dsn, "orders_p20260105")
    orders_before = relation_ids(pg_dsn, "orders")
    with psycopg.connect(pg_dsn) as conn:  # the lookalike's rows as stored: a rewrite of them changes their xmin
        stored = conn.execute("SELECT xmin::text, id FROM wh.orders_p20260105 ORDER BY id").fetchall()
    for run, (other_path, rows) in enumerate([(path, 25), (PATHS[path == "swap"], 12)], start=3):  # both paths
        publish(postgres, monkeypatch, ORDERS, {DAY: rows}, f"rewrite{run}", other_path, f"run-{run}")
        assert state(pg_dsn, "orders") == {DAY: (rows, rows, {f"rewrite{run}"})}
        if run == 3:  # the path asked for was taken: a swap replaces the day's partition, in place keeps it
            kept = relation_ids(pg_dsn, "orders")["orders$p20260105"] == orders_before["orders$p20260105"]
            assert kept == (path == "in_place")
    assert relation_ids(pg_dsn, "orders_p20260105") == before  # neither dropped nor re-created
    with psycopg.connect(pg_dsn) as conn:
        assert conn.execute("SELECT xmin::text, id FROM wh.orders_p20260105 ORDER BY id").fetchall() == stored
    assert state(pg_dsn, "orders_p20260105") == {DAY: (20, 20, {"lookalike"})}


def old_layout(dsn, day_partition="orders_p20260105", rows=40):
    """`orders` as older versions laid it out, made by hand with the statements they ran: the table's key named
    by PostgreSQL (`orders_pkey`), the day's partition `orders_p20260105` with key `orders_p20260105_pkey` and
    the `idem_day` CHECK, attached FOR VALUES IN (day); `rows` rows of generation `old`."""
    with psycopg.connect(dsn) as conn:
        conn.execute("CREATE SCHEMA wh")
        conn.execute(
            "CREATE TABLE wh.orders (id bigint NOT NULL, label text, score double precision, at timestamptz,"
            " partition_date date NOT NULL, PRIMARY KEY (partition_date, id)) PARTITION BY LIST (partition_date)"
        )
        conn.execute(
            f'CREATE TABLE wh."{day_partition}" (id bigint NOT NULL, label text, score double precision, at timestamptz,'
            " partition_date date NOT NULL)"
        )
        conn.execute(
            f'ALTER TABLE wh."{day_partition}" ADD CONSTRAINT "{day_partition}_pkey" PRIMARY KEY (partition_date, id),'
            f" ADD CONSTRAINT idem_day CHECK (partition_date = '{DAY}'::date)"
        )
        conn.execute(f"ALTER TABLE wh.orders ATTACH PARTITION wh.\"{day_partition}\" FOR VALUES IN ('{DAY}')")
        conn.execute(
            "INSERT INTO wh.orders SELECT i, 'old-' || i, i / 3.0, %s::timestamptz, %s FROM generate_series(0, %s - 1) i",
            (DAY, DAY, rows),
        )


@pytest.mark.parametrize("old_name", ["orders_p20260105", "renamed_by_hand"])
@pytest.mark.parametrize("path", PATHS)
def test_an_old_layout_is_rewritten_correctly(pg_dsn, postgres, monkeypatch, path, old_name):
    """The old partition is found by its bound (whatever its name) and replaced: no duplicate rows, no second
    partition of the day; a swap gives it the new name, in place fills it where it is."""
    old_layout(pg_dsn, old_name)
    old_oid = relation_ids(pg_dsn, "orders")[old_name]
    publish(postgres, monkeypatch, ORDERS, {DAY: 25, NEXT_DAY: 6}, "new", path, "run-1")
    assert state(pg_dsn, "orders") == {DAY: (25, 25, {"new"}), NEXT_DAY: (6, 6, {"new"})}
    day_table = "orders$p20260105" if path == "swap" else old_name
    assert partitions(pg_dsn, "orders") == {
        day_table: "FOR VALUES IN ('2026-01-05')", "orders$p20260106": "FOR VALUES IN ('2026-01-06')",
    }
    assert (relation_ids(pg_dsn, "orders")[day_table] == old_oid) == (path == "in_place")
    reads_back(postgres, ORDERS, [DAY, NEXT_DAY], {DAY: 25, NEXT_DAY: 6}, "new")
    publish(postgres, monkeypatch, ORDERS, {DAY: 9}, "again", PATHS[path == "swap"], "run-2")  # then the other path
    assert state(pg_dsn, "orders") == {DAY: (9, 9, {"again"}), NEXT_DAY: (6, 6, {"new"})}
    assert len(partitions(pg_dsn, "orders")) == 2


def test_an_asset_whose_table_is_an_old_named_partition_is_refused_until_it_is_renamed(pg_dsn, postgres, monkeypatch):
    """Old layout: `orders_p20260105` *is* `orders`'s partition. Writing the asset of that name would write into
    `orders`: it is refused, naming both and the way out; after the rename it names, both coexist."""
    old_layout(pg_dsn)
    with pytest.raises(SchemaError) as refused:
        publish(postgres, monkeypatch, LOOKALIKE, {DAY: 3}, "lookalike", "in_place", "run-1")
    message = str(refused.value)
    assert "'orders_p20260105'" in message and "of wh.orders" in message and "nothing was written" in message
    assert state(pg_dsn, "orders") == {DAY: (40, 40, {"old"})}
    rename = message[message.index("ALTER TABLE"):message.index(":", message.index("RENAME TO"))]
    assert rename == 'ALTER TABLE "wh"."orders_p20260105" RENAME TO "orders$p20260105"'
    with psycopg.connect(pg_dsn) as conn:
        conn.execute(rename)
    publish(postgres, monkeypatch, LOOKALIKE, {DAY: 3}, "lookalike", "in_place", "run-2")
    publish(postgres, monkeypatch, ORDERS, {DAY: 8}, "orders", "swap", "run-3")
    assert state(pg_dsn, "orders_p20260105") == {DAY: (3, 3, {"lookalike"})}
    assert state(pg_dsn, "orders") == {DAY: (8, 8, {"orders"})}


@pytest.mark.parametrize("path", PATHS)
def test_a_swap_of_an_old_layout_frees_the_old_name_for_the_asset_of_that_name(pg_dsn, postgres, monkeypatch, path):
    old_layout(pg_dsn)
    publish(postgres, monkeypatch, ORDERS, {DAY: 5}, "orders", "swap", "run-1")  # renames the day's partition
    publish(postgres, monkeypatch, LOOKALIKE, {DAY: 3}, "lookalike", path, "run-2")
    publish(postgres, monkeypatch, ORDERS, {DAY: 7}, "orders", path, "run-3")
    assert state(pg_dsn, "orders") == {DAY: (7, 7, {"orders"})}
    assert state(pg_dsn, "orders_p20260105") == {DAY: (3, 3, {"lookalike"})}


@pytest.mark.parametrize("path", PATHS)
def test_an_asset_named_like_another_tables_key_coexists_with_it(pg_dsn, postgres, monkeypatch, path):
    """PostgreSQL named a table's key `<table>_pkey`, which is also a valid asset name (its CREATE TABLE failed)."""
    publish(postgres, monkeypatch, ORDERS, {DAY: 4}, "orders", path, "run-1")
    publish(postgres, monkeypatch, AssetTarget("orders_pkey", DECL, AuditRules()), {DAY: 2}, "key", path, "run-2")
    assert state(pg_dsn, "orders") == {DAY: (4, 4, {"orders"})}
    assert state(pg_dsn, "orders_pkey") == {DAY: (2, 2, {"key"})}


def test_an_asset_named_like_an_old_tables_key_is_refused_with_a_way_out(pg_dsn, postgres, monkeypatch):
    old_layout(pg_dsn)
    with pytest.raises(SchemaError, match=r"'orders_pkey'.*taken by the index wh\.orders_pkey of wh\.orders.*nothing was written"):
        publish(postgres, monkeypatch, AssetTarget("orders_pkey", DECL, AuditRules()), {DAY: 2}, "key", "in_place", "r")


@pytest.mark.parametrize("path", PATHS)
def test_a_long_asset_name_and_the_name_its_partitions_were_once_cut_to_coexist(pg_dsn, postgres, monkeypatch, path):
    """Past 36 bytes an asset's name is cut and hashed in its partitions' names; the cut name used to be a valid
    asset name whose own partitions then had the same names."""
    long = AssetTarget("orders_of_the_northern_region_by_day", DECL, AuditRules())  # 36 bytes: not cut
    longer = AssetTarget("orders_of_the_northern_region_by_day_x", DECL, AuditRules())  # 38 bytes: cut
    cut_as_before = longer.name[:27] + "_" + hashlib.sha1(longer.name.encode()).hexdigest()[:8]  # older versions' cut
    assert len(cut_as_before.encode()) == 36
    shadow = AssetTarget(cut_as_before, DECL, AuditRules())
    for n, target in enumerate((long, longer, shadow), start=2):
        publish(postgres, monkeypatch, target, {DAY: n}, f"gen{n}", path, f"run-{n}")
    for n, target in enumerate((long, longer, shadow), start=2):
        assert state(pg_dsn, target.name) == {DAY: (n, n, {f"gen{n}"})}
        reads_back(postgres, target, [DAY], {DAY: n}, f"gen{n}")


def test_a_name_postgres_would_cut_is_refused(pg_dsn, postgres, monkeypatch):
    """PostgreSQL cuts identifiers at 63 bytes: two such assets would share one table."""
    name = "orders_" + "x" * 60
    with pytest.raises(SchemaError, match=r"67 bytes.*63.*nothing was written"):
        publish(postgres, monkeypatch, AssetTarget(name, DECL, AuditRules()), {DAY: 2}, "a", "in_place", "r")
