"""@idem_asset: per-asset days, the day as the user's unit, and errors that say what to return.

Every materialization goes through the real PostgreSQL warehouse (the `store_resources` fixture)."""

import dagster as dg
import pandas as pd
import pytest

from idem_platform import DeclarationError, InvalidPartitionKey, SchemaError, idem_asset
from idem_platform.storage import ledger
from idem_platform.storage.partition_store import AssetTarget, publish_partitions

COLUMNS = {"id": "int", "at": "timestamp"}


def _materialize(assets, store_resources, partition=None, partition_range=None, raise_on_error=True):
    tags = {}
    if partition_range:
        first, last = partition_range
        tags = {"dagster/asset_partition_range_start": first, "dagster/asset_partition_range_end": last}
    return dg.materialize(assets, partition_key=partition, tags=tags, resources=store_resources,
                          raise_on_error=raise_on_error)


def test_per_asset_start_end_timezone():
    @idem_asset(columns=COLUMNS, key=["id"], io_manager_key="warehouse_io",
                start="2025-01-01", end="2025-01-31", timezone="Europe/Paris")
    def january(context) -> pd.DataFrame: ...

    days = january.partitions_def
    assert days.get_first_partition_key() == "2025-01-01" and days.get_last_partition_key() == "2025-01-31"
    assert days.timezone == "Europe/Paris"


def test_partitions_def_must_be_daily_and_not_mixed_with_start():
    with pytest.raises(DeclarationError, match="'hourly'.*DailyPartitionsDefinition"):
        @idem_asset(columns=COLUMNS, key=["id"], io_manager_key="warehouse_io",
                    partitions_def=dg.HourlyPartitionsDefinition(start_date="2025-01-01-00:00"))
        def hourly(context) -> pd.DataFrame: ...
    with pytest.raises(DeclarationError, match="not both"):
        @idem_asset(columns=COLUMNS, key=["id"], io_manager_key="warehouse_io", start="2025-01-01",
                    partitions_def=dg.DailyPartitionsDefinition(start_date="2025-01-01"))
        def both(context) -> pd.DataFrame: ...
    with pytest.raises(DeclarationError, match="'backwards'.*before start"):
        @idem_asset(columns=COLUMNS, key=["id"], io_manager_key="warehouse_io", start="2025-02-01", end="2025-01-01")
        def backwards(context) -> pd.DataFrame: ...


def test_day_parameter_computes_one_day_and_fills_partition_date(store_resources, postgres):
    calls = []

    @idem_asset(columns=COLUMNS, key=["id"], io_manager_key="warehouse_io", start="2025-01-01", end="2025-01-31")
    def events(context, day: str) -> pd.DataFrame:
        calls.append(day)
        return pd.DataFrame({"id": [1, 2], "at": [pd.Timestamp(f"{day}T10:00Z")] * 2})

    @idem_asset(columns={"rows": "int", "first_id": "int"}, key=["rows"], io_manager_key="warehouse_io",
                start="2025-01-01", end="2025-01-31")
    def per_day(context, day: str, events: pd.DataFrame) -> pd.DataFrame:
        assert set(events["partition_date"].dt.strftime("%Y-%m-%d")) == {day}  # the upstream cut to the day
        return pd.DataFrame({"rows": [len(events)], "first_id": [int(events["id"].min())]})

    _materialize([events, per_day], store_resources, partition_range=("2025-01-03", "2025-01-05"))
    assert calls == ["2025-01-03", "2025-01-04", "2025-01-05"]
    with postgres.connect() as conn:
        entries = ledger.history(conn)
        rows = conn.execute("SELECT partition_date::text, rows FROM warehouse.per_day ORDER BY 1").fetchall()
    assert {(e.asset, e.partition, e.row_count) for e in entries} == {
        (a, f"2025-01-0{d}", n) for a, n in (("events", 2), ("per_day", 1)) for d in (3, 4, 5)
    }
    assert rows == [("2025-01-03", 2), ("2025-01-04", 2), ("2025-01-05", 2)]


@pytest.mark.parametrize("own_day", [None, "2025-01-04"], ids=["platform fills every day", "one day fills its own"])
def test_a_range_of_a_per_day_function_gives_each_row_its_own_day(store_resources, postgres, own_day):
    """Days of different sizes, an empty one among them, run as one range: every row lands in the day that returned
    it, whether the platform fills `partition_date` for the whole range at once or a day returns the column
    itself."""
    sizes = {"2025-01-03": 3, "2025-01-04": 0, "2025-01-05": 1, "2025-01-06": 2}

    @idem_asset(columns=COLUMNS, key=["id"], io_manager_key="warehouse_io", start="2025-01-01", end="2025-01-31")
    def uneven(context, day: str) -> pd.DataFrame:
        n = sizes[day] if day != own_day else 2
        frame = pd.DataFrame({"id": range(100, 100 + n), "at": [pd.Timestamp(f"{day}T10:00Z")] * n})
        return frame.assign(partition_date=day) if day == own_day else frame

    _materialize([uneven], store_resources, partition_range=("2025-01-03", "2025-01-06"))
    with postgres.connect() as conn:
        rows = conn.execute("SELECT partition_date::text, id, at::date::text FROM warehouse.uneven ORDER BY 1, 2").fetchall()
        counts = {e.partition: e.row_count for e in ledger.history(conn, asset="uneven")}
    expected = {day: (2 if day == own_day else n) for day, n in sizes.items()}
    assert counts == expected
    assert rows == [(day, 100 + i, day) for day, n in expected.items() for i in range(n)]


def test_a_range_whose_day_returns_no_frame_names_the_day(store_resources):
    @idem_asset(columns=COLUMNS, key=["id"], io_manager_key="warehouse_io", start="2025-01-01", end="2025-01-31")
    def gappy(context, day: str) -> pd.DataFrame:
        return None if day == "2025-01-04" else pd.DataFrame({"id": [1], "at": [pd.Timestamp(f"{day}T10:00Z")]})

    with pytest.raises(dg.DagsterInvariantViolationError, match=r"'gappy' returned None, not a pandas DataFrame, for partition 2025-01-04 \(of the run 2025-01-03\.\.\.2025-01-05\)"):
        _materialize([gappy], store_resources, partition_range=("2025-01-03", "2025-01-05"))


def test_an_unpartitioned_upstream_is_the_same_frame_every_day_of_a_range(store_resources):
    seen = {}

    @dg.asset
    def lookup() -> pd.DataFrame:  # unpartitioned, kept by Dagster's default IO manager
        return pd.DataFrame({"partition_date": pd.to_datetime(["2025-01-03"]), "code": [7]})

    @idem_asset(columns={"id": "int"}, key=["id"], io_manager_key="warehouse_io", start="2025-01-01",
                end="2025-01-31")
    def uses_lookup(context, day: str, lookup: pd.DataFrame) -> pd.DataFrame:
        seen[day] = len(lookup)
        return pd.DataFrame({"id": [1]})

    range_tags = {"dagster/asset_partition_range_start": "2025-01-03", "dagster/asset_partition_range_end": "2025-01-04"}
    with dg.instance_for_test() as instance:  # lookup's value is stored in this instance's storage
        dg.materialize([lookup], resources=store_resources, instance=instance)
        dg.materialize([lookup, uses_lookup], selection=[uses_lookup.key], resources=store_resources,
                       instance=instance, tags=range_tags)
    assert seen == {"2025-01-03": 1, "2025-01-04": 1}


def test_day_column_is_read_in_the_asset_timezone(store_resources, postgres):
    @idem_asset(columns=COLUMNS, key=["id"], io_manager_key="warehouse_io", start="2025-01-01", end="2025-01-31",
                timezone="America/New_York", day_column="at")
    def nyc(context) -> pd.DataFrame:
        # 2025-01-06 03:00 UTC is still 2025-01-05 in New York
        return pd.DataFrame({"id": [1, 2], "at": pd.to_datetime(["2025-01-05T15:00Z", "2025-01-06T03:00Z"])})

    _materialize([nyc], store_resources, partition="2025-01-05")
    with postgres.connect() as conn:
        days = conn.execute("SELECT DISTINCT partition_date::text FROM warehouse.nyc").fetchall()
    assert days == [("2025-01-05",)]


def test_a_frame_without_its_days_says_what_to_return(store_resources):
    @idem_asset(columns=COLUMNS, key=["id"], io_manager_key="warehouse_io", start="2025-01-01", end="2025-01-31")
    def dayless(context) -> pd.DataFrame:
        return pd.DataFrame({"id": [1], "at": [pd.Timestamp("2025-01-05T10:00Z")]})

    with pytest.raises(SchemaError) as err:
        _materialize([dayless], store_resources, partition_range=("2025-01-05", "2025-01-06"))
    message = str(err.value)
    assert "'dayless'" in message and "2025-01-05...2025-01-06" in message
    assert "partition_date" in message and "day_column=" in message and "`day` parameter" in message


def test_an_output_that_is_not_a_frame_is_named(store_resources):
    @idem_asset(columns=COLUMNS, key=["id"], io_manager_key="warehouse_io", start="2025-01-01", end="2025-01-31")
    def nothing(context):
        return None

    with pytest.raises(dg.DagsterInvariantViolationError, match="'nothing' returned None, not a pandas DataFrame.*2025-01-05"):
        _materialize([nothing], store_resources, partition="2025-01-05")


def test_a_key_outside_the_asset_days_names_asset_and_range(store_resources):
    @idem_asset(columns=COLUMNS, key=["id"], io_manager_key="warehouse_io", start="2025-01-01", end="2025-01-31")
    def short(context, day: str) -> pd.DataFrame:
        return pd.DataFrame({"id": [1], "at": [pd.Timestamp(f"{day}T10:00Z")]})

    # Dagster refuses an unknown key before the asset runs; the store refuses it too, below Dagster.
    target = AssetTarget.from_metadata("short", short.specs_by_key[short.key].metadata)
    with pytest.raises(InvalidPartitionKey, match="asset 'short'.*'2025-02-01'.*2025-01-01 .. 2025-01-31"):
        publish_partitions(store_resources["warehouse_io"].sink(), store_resources["postgres"], target,
                           ["2025-02-01"], pd.DataFrame(), "run-x", partitions_def=short.partitions_def)
