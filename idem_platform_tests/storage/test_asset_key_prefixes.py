"""Names map one to one: `sales/orders` and `marketing/orders` keep their own rows in every sink and the ledger.

The threat: a second team's asset of the same name under another prefix (a valid, common Dagster layout) used to
share the first one's table, lake folder, index and ledger key, and reading one returned the other's rows."""

import dagster as dg
import pandas as pd
import pytest

from idem_platform import idem_asset
from idem_platform.storage import ledger
from idem_platform.storage.elasticsearch_store import ElasticsearchPartitionIOManager
from idem_platform.storage.partition_store import AssetTarget

DAY = "2026-01-05"


def orders_of(team: str, io_manager_key: str, rows: int) -> dg.AssetsDefinition:
    @idem_asset(name="orders", key_prefix=[team], columns={"id": "int", "team": "string"}, key=["id"],
                io_manager_key=io_manager_key, start="2026-01-01", end="2026-01-31")
    def orders(context, day: str) -> pd.DataFrame:
        return pd.DataFrame({"id": range(rows), "team": team})

    @idem_asset(name="order_count", key_prefix=[team], columns={"n": "int", "teams": "string"}, key=["n"],
                io_manager_key=io_manager_key, start="2026-01-01", end="2026-01-31",
                ins={"orders": dg.AssetIn(key=dg.AssetKey([team, "orders"]))})
    def order_count(context, day: str, orders: pd.DataFrame) -> pd.DataFrame:
        return pd.DataFrame({"n": [len(orders)], "teams": [",".join(sorted(set(orders["team"])))]})

    return [orders, order_count]


@pytest.mark.parametrize("io_manager_key", ["warehouse_io", "lake_io", "search_io"])
def test_same_name_under_two_prefixes_keeps_two_assets(store_resources, postgres, es, io_manager_key):
    resources = {**store_resources, "search_io": ElasticsearchPartitionIOManager(postgres=postgres, es=es)}
    sales, marketing = orders_of("sales", io_manager_key, 3), orders_of("marketing", io_manager_key, 5)
    dg.materialize([*sales, *marketing], partition_key=DAY, resources=resources)
    with postgres.connect() as conn:
        entries = {(e.asset, e.row_count) for e in ledger.history(conn)}
    assert entries == {("sales/orders", 3), ("marketing/orders", 5), ("sales/order_count", 1),
                       ("marketing/order_count", 1)}
    # Each downstream read its own upstream: 3 sales rows, 5 marketing rows, never the other team's.
    io_manager = resources[io_manager_key]
    for team, rows in (("sales", 3), ("marketing", 5)):
        target = AssetTarget.from_metadata(f"{team}/order_count", sales[1].specs_by_key[sales[1].key].metadata)
        frame = io_manager.sink().read(target, [DAY])
        assert frame[["n", "teams"]].to_dict("records") == [{"n": rows, "teams": team}]


def test_a_prefix_cannot_name_the_ledger_schema(store_resources):
    bad = orders_of("idem", "warehouse_io", 1)
    with pytest.raises(Exception, match="prefix names schema 'idem'"):
        dg.materialize(bad[:1], partition_key=DAY, resources=store_resources)



def test_orders_and_orders_p20260105_are_two_assets(store_resources, postgres, monkeypatch):
    """`orders_p20260105` is a valid asset name and once was the name of `orders`'s day partition: both assets
    materialize, in one run and again, each on its own table (the swap path here; the in-place path and the
    old layout: test_lookalike_names.py)."""
    monkeypatch.setenv("IDEM_PG_SWAP_MIN_ROWS", "1")

    def asset_named(name: str, rows: int) -> dg.AssetsDefinition:
        @idem_asset(name=name, columns={"id": "int", "owner": "string"}, key=["id"], io_manager_key="warehouse_io",
                    start="2026-01-01", end="2026-01-31")
        def _asset(context, day: str) -> pd.DataFrame:
            return pd.DataFrame({"id": range(rows), "owner": name})

        return _asset

    assets = [asset_named("orders", 3), asset_named("orders_p20260105", 5)]
    for _ in range(2):
        dg.materialize(assets, partition_key=DAY, resources=store_resources)
    for asset, rows in ((assets[0], 3), (assets[1], 5)):
        target = AssetTarget.from_metadata(asset.key.to_user_string(), asset.specs_by_key[asset.key].metadata)
        frame = store_resources["warehouse_io"].sink().read(target, [DAY])
        assert frame[["id", "owner"]].to_dict("records") == [{"id": i, "owner": target.name} for i in range(rows)]


def asset_at(key: list[str], io_manager_key: str) -> dg.AssetsDefinition:
    @idem_asset(name=key[-1], key_prefix=key[:-1], columns={"id": "int"}, key=["id"], io_manager_key=io_manager_key,
                start="2026-01-01", end="2026-01-31")
    def _asset(context, day: str) -> pd.DataFrame:
        return pd.DataFrame({"id": [1]})

    return _asset


@pytest.mark.parametrize(("first", "second", "io_manager_key", "container"), [
    (["a_b", "orders"], ["a", "b", "orders"], "warehouse_io", "PostgreSQL table a_b.orders"),
    (["Orders"], ["orders"], "search_io", "search indices and aliases orders*"),
    (["Sales", "orders"], ["sales", "orders"], "search_io", "search indices and aliases sales.orders*"),
])
def test_two_keys_that_would_share_a_table_or_an_index_are_refused_when_the_code_location_loads(
        first, second, io_manager_key, container):
    """Who else touches the same names: `a_b/orders` and `a/b/orders` both name table `a_b.orders` (prefix segments
    are joined by `_`); index names are lower case, so `Orders` and `orders` share their indices. Each asset has
    its own partition locks and ledger rows, so the two would replace each other's days: the code location is
    refused when it loads, naming both assets and the table or index."""
    from idem_platform import DeclarationError, idem_definitions

    with pytest.raises(DeclarationError) as refused:
        idem_definitions(assets=[asset_at(first, io_manager_key), asset_at(second, io_manager_key)])
    message = str(refused.value)
    assert "/".join(first) in message and "/".join(second) in message and container in message, message


def test_the_same_name_through_two_io_managers_is_refused_only_where_they_name_the_same_table(postgres):
    """Two IO managers of one server with other schemas keep `orders` apart (accepted); prefixed keys name their
    schema themselves, so `a_b/orders` through one and `a/b/orders` through the other still share table
    `a_b.orders` on that server (refused)."""
    from idem_platform import DeclarationError, idem_definitions
    from idem_platform.storage.postgres_store import PostgresPartitionIOManager

    resources = {"warehouse_io": PostgresPartitionIOManager(postgres=postgres, db_schema="one"),
                 "other_io": PostgresPartitionIOManager(postgres=postgres, db_schema="two")}
    idem_definitions(assets=[asset_at(["orders"], "warehouse_io"), asset_at(["orders_copy"], "other_io")],
                     resources=resources)
    idem_definitions(assets=[asset_at(["team_a", "orders"], "warehouse_io"), asset_at(["orders"], "other_io")],
                     resources=resources)
    with pytest.raises(DeclarationError, match="'a_b/orders' and 'a/b/orders'.*PostgreSQL table a_b.orders"):
        idem_definitions(assets=[asset_at(["a_b", "orders"], "warehouse_io"), asset_at(["a", "b", "orders"], "other_io")],
                         resources=resources)
