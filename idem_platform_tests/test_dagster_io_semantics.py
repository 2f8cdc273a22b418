"""Dagster's database IO-manager partition scenarios, replayed against every sink (issue 16).

Modelled on dagster-duckdb-pandas' `test_type_handler.py` and the generic `DbIOManager` behaviour
(`dagster/_core/storage/db_io_manager.py`): time-window write and rewrite, fewer and zero rows, window mappings with
offsets, weekly downstream of daily, a self-dependent asset, schema changes, column subsets, rows outside the
partition, bad outputs, an unpartitioned downstream and `dagster/partition_row_count`. Each scenario runs on the
PostgreSQL table, the lake file and the search index through `dagster.materialize`, and asserts the rows read back.

No `from __future__ import annotations`: Dagster resolves the asset functions' annotations (`config:`).
"""

import dagster as dg
import pandas as pd
import pytest

from idem_platform.declare import idem_asset
from idem_platform.storage.elasticsearch_store import ElasticsearchPartitionIOManager
from idem_platform.storage.partition_store import AssetTarget, load_partitions

SINKS = ["warehouse_io", "lake_io", "search_io"]
START = "2026-01-04"  # a Sunday: the first day of the first week of a WeeklyPartitionsDefinition
D1, D2, D3 = "2026-01-04", "2026-01-05", "2026-01-06"


@pytest.fixture
def resources(store_resources, postgres, es) -> dict:
    return {**store_resources, "search_io": ElasticsearchPartitionIOManager(postgres=postgres, es=es, replicas=0)}


@pytest.fixture(params=SINKS)
def sink(request) -> str:
    return request.param


@pytest.fixture
def name(search_asset_name) -> str:
    return search_asset_name("sem")


@pytest.fixture
def instance():
    with dg.instance_for_test() as instance:
        yield instance


class Value(dg.Config):
    value: str = "1"
    rows: int = 3


def values_asset(name: str, sink: str, **kwargs) -> dg.AssetsDefinition:
    """Like dagster-duckdb-pandas' `daily_partitioned`: `rows` rows of the configured value, keys 0..rows-1."""

    @idem_asset(columns={"k": "int", "a": "string", "b": "int"}, key=["k"], io_manager_key=sink, name=name,
                start=START, **kwargs)
    def asset(context: dg.AssetExecutionContext, config: Value, day: str) -> pd.DataFrame:
        return pd.DataFrame({"k": range(config.rows), "a": [config.value] * config.rows, "b": [4 + i for i in range(config.rows)]})

    return asset


def run(assets, resources, instance, partition=None, config=None, raise_on_error=True, tags=None, selection=None):
    run_config = {"ops": {op: {"config": c} for op, c in (config or {}).items()}}
    return dg.materialize(assets, partition_key=partition, resources=resources, instance=instance,
                          run_config=run_config, raise_on_error=raise_on_error, tags=tags, selection=selection)


def read(resources, sink: str, asset: dg.AssetsDefinition, days) -> pd.DataFrame:
    io_manager = resources[sink]
    target = AssetTarget.from_metadata(asset.key.to_user_string(), asset.specs_by_key[asset.key].metadata)
    return load_partitions(io_manager.sink(), io_manager.postgres, target, days)


def error_of(result) -> str:
    return next(e for e in result.all_events if e.event_type_value == "STEP_FAILURE").step_failure_data.error.to_string()


def test_time_window_write_and_rewrite(resources, sink, name, instance):
    asset = values_asset(name, sink)
    run([asset], resources, instance, D1, {name: {"value": "1"}})
    assert read(resources, sink, asset, [D1])["a"].tolist() == ["1", "1", "1"]
    run([asset], resources, instance, D2, {name: {"value": "2"}})
    assert sorted(read(resources, sink, asset, [D1, D2])["a"]) == ["1", "1", "1", "2", "2", "2"]
    run([asset], resources, instance, D1, {name: {"value": "3"}})
    assert sorted(read(resources, sink, asset, [D1, D2])["a"]) == ["2", "2", "2", "3", "3", "3"]


def test_fewer_and_zero_rows_replace_the_day(resources, sink, name, instance):
    asset = values_asset(name, sink)
    for rows in (3, 1, 0):
        run([asset], resources, instance, D1, {name: {"rows": rows}})
        frame = read(resources, sink, asset, [D1])
        assert len(frame) == rows and frame["k"].tolist() == list(range(rows))


def test_window_mapping_with_offsets_loads_the_mapped_days(resources, sink, name, instance):
    upstream = values_asset(name, sink)
    seen = {}

    @dg.asset(partitions_def=upstream.partitions_def, ins={"up": dg.AssetIn(
        key=upstream.key, partition_mapping=dg.TimeWindowPartitionMapping(start_offset=-2, end_offset=-1))})
    def lagged(context: dg.AssetExecutionContext, up: pd.DataFrame) -> None:
        seen[context.partition_key] = up

    for day, value in ((D1, "1"), (D2, "2"), (D3, "3")):
        run([upstream], resources, instance, day, {name: {"value": value}})
    run([upstream, lagged], resources, instance, D3, selection=[lagged.key])
    frame = seen[D3]
    assert sorted(frame["a"]) == ["1", "1", "1", "2", "2", "2"]  # D1 and D2, not D3
    assert sorted(frame["partition_date"].dt.strftime("%Y-%m-%d").unique()) == [D1, D2]


def test_weekly_downstream_reads_seven_daily_partitions(resources, sink, name, instance):
    daily = values_asset(name, sink)
    week = [f"2026-01-{d:02d}" for d in range(4, 11)]
    run([daily], resources, instance, tags={"dagster/asset_partition_range_start": week[0],
                                            "dagster/asset_partition_range_end": week[-1]})
    seen = {}

    @dg.asset(partitions_def=dg.WeeklyPartitionsDefinition(start_date=START), ins={"days": dg.AssetIn(key=daily.key)})
    def weekly(context: dg.AssetExecutionContext, days: pd.DataFrame) -> None:
        seen[context.partition_key] = days

    run([daily, weekly], resources, instance, week[0], selection=[weekly.key])
    frame = seen[week[0]]
    assert len(frame) == 21
    assert sorted(frame["partition_date"].dt.strftime("%Y-%m-%d").unique()) == week


def test_self_dependent_asset_first_partition_gets_an_empty_frame(resources, sink, name, instance):
    """dagster-duckdb-pandas' `test_self_dependent_asset`: the first day's previous day does not exist."""
    seen = {}

    @idem_asset(columns={"k": "int", "a": "string"}, key=["k"], io_manager_key=sink, name=name, start=START,
                ins={"previous": dg.AssetIn(key=dg.AssetKey(name), partition_mapping=dg.TimeWindowPartitionMapping(
                    start_offset=-1, end_offset=-1))})
    def asset(context: dg.AssetExecutionContext, previous: pd.DataFrame, day: str) -> pd.DataFrame:
        seen[day] = previous
        return pd.DataFrame({"k": [1, 2, 3], "a": [f"after {len(previous)} rows"] * 3})

    run([asset], resources, instance, D1)
    first = seen[D1]
    assert first.empty and list(first.columns) == ["k", "a", "partition_date"]
    run([asset], resources, instance, D2)
    assert len(seen[D2]) == 3 and (seen[D2]["partition_date"] == pd.Timestamp(D1)).all()
    assert read(resources, sink, asset, [D2])["a"].tolist() == ["after 3 rows"] * 3


def range_tags(first: str, last: str) -> dict:
    return {"dagster/asset_partition_range_start": first, "dagster/asset_partition_range_end": last}


def test_self_dependent_asset_range_chains_the_days_it_computes(resources, sink, name, instance):
    """In a range run each day's previous day is the one this run computed (or the published one before the range)."""

    @idem_asset(columns={"k": "int", "n": "int"}, key=["k"], io_manager_key=sink, name=name, start=START,
                ins={"previous": dg.AssetIn(key=dg.AssetKey(name), partition_mapping=dg.TimeWindowPartitionMapping(
                    start_offset=-1, end_offset=-1))})
    def asset(context: dg.AssetExecutionContext, previous: pd.DataFrame, day: str) -> pd.DataFrame:
        assert previous.empty or previous["partition_date"].dt.strftime("%Y-%m-%d").unique().tolist() == [
            (pd.Timestamp(day) - pd.Timedelta(days=1)).strftime("%Y-%m-%d")]
        n = 1 if previous.empty else int(previous["n"].max()) + 1
        return pd.DataFrame({"k": [1, 2], "n": [n, n]})

    run([asset], resources, instance, tags=range_tags(D1, D3))
    assert read(resources, sink, asset, [D1, D2, D3])["n"].tolist() == [1, 1, 2, 2, 3, 3]
    run([asset], resources, instance, tags=range_tags(D2, D3))  # D2's previous day is the published D1
    assert read(resources, sink, asset, [D1, D2, D3])["n"].tolist() == [1, 1, 2, 2, 3, 3]


def test_offset_mapping_in_a_range_gives_each_day_its_mapped_day(resources, sink, name, instance):
    upstream = values_asset(name, sink)
    for day, value in ((D1, "1"), (D2, "2"), (D3, "3")):
        run([upstream], resources, instance, day, {name: {"value": value}})
    seen = {}

    @idem_asset(columns={"k": "int", "a": "string"}, key=["k"], io_manager_key=sink, name=f"{name}_lag", start=START,
                ins={"up": dg.AssetIn(key=upstream.key, partition_mapping=dg.TimeWindowPartitionMapping(
                    start_offset=-1, end_offset=-1))})
    def lagged(context: dg.AssetExecutionContext, up: pd.DataFrame, day: str) -> pd.DataFrame:
        seen[day] = sorted(up["a"])
        return up[["k", "a"]]

    run([upstream, lagged], resources, instance, tags=range_tags(D2, D3), selection=[lagged.key])
    assert seen == {D2: ["1", "1", "1"], D3: ["2", "2", "2"]}
    assert read(resources, sink, lagged, [D2, D3])["a"].tolist() == ["1", "1", "1", "2", "2", "2"]


def schema_asset(name: str, sink: str, columns: dict, key=("k",)) -> dg.AssetsDefinition:
    @idem_asset(columns=columns, key=list(key), io_manager_key=sink, name=name, start=START)
    def asset(context: dg.AssetExecutionContext) -> pd.DataFrame:
        values = {"int": [1, 2], "string": ["x", "y"], "float": [1.5, 2.5]}
        return pd.DataFrame({c: values[t] for c, t in columns.items()}).assign(partition_date=context.partition_key)

    return asset


def test_new_nullable_column_is_null_in_older_days(resources, sink, name, instance):
    run([schema_asset(name, sink, {"k": "int", "a": "string"})], resources, instance, D1)
    v2 = schema_asset(name, sink, {"k": "int", "a": "string", "b": "float"})
    run([v2], resources, instance, D2)
    assert read(resources, sink, v2, [D1])["b"].isna().all()  # the old day alone (the lake said "missing ['b']")
    frame = read(resources, sink, v2, [D1, D2])
    assert frame["k"].tolist() == [1, 2, 1, 2]
    assert frame["b"].isna().tolist() == [True, True, False, False]
    assert frame["b"].tolist()[2:] == [1.5, 2.5]


def test_dropped_column_keeps_older_days_readable(resources, sink, name, instance):
    run([schema_asset(name, sink, {"k": "int", "a": "string", "b": "float"})], resources, instance, D1)
    v2 = schema_asset(name, sink, {"k": "int", "a": "string"})
    run([v2], resources, instance, D2)
    frame = read(resources, sink, v2, [D1, D2])
    assert list(frame.columns) == ["k", "a", "partition_date"] and frame["a"].tolist() == ["x", "y", "x", "y"]


def test_type_change_is_refused_with_one_message(resources, sink, name, instance):
    v1 = schema_asset(name, sink, {"k": "int", "a": "string"})
    run([v1], resources, instance, D1)
    result = run([schema_asset(name, sink, {"k": "int", "a": "int"})], resources, instance, D2, raise_on_error=False)
    assert not result.success
    assert f"asset '{name}': column 'a' changed type from string to int" in error_of(result)
    assert read(resources, sink, v1, [D1])["a"].tolist() == ["x", "y"]  # untouched


def test_dropped_column_declared_again_with_another_type_is_refused(resources, sink, name, instance):
    run([schema_asset(name, sink, {"k": "int", "a": "string", "b": "float"})], resources, instance, D1)
    run([schema_asset(name, sink, {"k": "int", "a": "string"})], resources, instance, D2)
    result = run([schema_asset(name, sink, {"k": "int", "a": "string", "b": "string"})], resources, instance, D3,
                 raise_on_error=False)
    assert f"column 'b' changed type from float to string" in error_of(result)


def test_key_change_is_refused_or_needs_no_migration(resources, sink, name, instance):
    run([schema_asset(name, sink, {"k": "int", "a": "string"})], resources, instance, D1)
    rekeyed = schema_asset(name, sink, {"k": "int", "a": "string"}, key=("k", "a"))
    result = run([rekeyed], resources, instance, D2, raise_on_error=False)
    if sink == "warehouse_io":  # the table's primary key: refused, with the statement that migrates it
        error = error_of(result)
        assert f"asset '{name}': key changed from (partition_date, k) to (partition_date, k, a)" in error
        assert "ALTER TABLE" in error and "UniqueViolation" not in error
    else:  # a day is replaced whole, the audit checks the new key
        assert result.success
        assert read(resources, sink, rekeyed, [D1, D2])["k"].tolist() == [1, 2, 1, 2]


def test_column_subset_loads_only_those_columns(resources, sink, name, instance):
    upstream = values_asset(name, sink)
    run([upstream], resources, instance, D1, {name: {"value": "7"}})
    seen = {}

    @dg.asset(partitions_def=upstream.partitions_def, ins={"up": dg.AssetIn(key=upstream.key, metadata={"columns": ["b", "a"]})})
    def subset(context: dg.AssetExecutionContext, up: pd.DataFrame) -> None:
        seen["up"] = up

    run([upstream, subset], resources, instance, D1, selection=[subset.key])
    assert list(seen["up"].columns) == ["b", "a", "partition_date"]
    assert seen["up"]["a"].tolist() == ["7"] * 3 and seen["up"]["b"].tolist() == [4, 5, 6]

    @dg.asset(partitions_def=upstream.partitions_def, ins={"up": dg.AssetIn(key=upstream.key, metadata={"columns": ["nope"]})})
    def unknown(up: pd.DataFrame) -> None: ...

    result = run([upstream, unknown], resources, instance, D1, selection=[unknown.key], raise_on_error=False)
    assert f"asset '{name}' has no column(s) ['nope']" in error_of(result)


def test_rows_outside_the_partition_are_refused(resources, sink, name, instance):
    asset = values_asset(name, sink)
    run([asset], resources, instance, D1, {name: {"value": "1"}})

    @idem_asset(columns={"k": "int", "a": "string", "b": "int"}, key=["k"], io_manager_key=sink, name=name, start=START)
    def stray(context: dg.AssetExecutionContext) -> pd.DataFrame:
        return pd.DataFrame({"k": [1, 2], "a": ["x", "y"], "b": [1, 2], "partition_date": [D1, D2]})

    result = run([stray], resources, instance, D1, raise_on_error=False)
    assert not result.success and "rule 'partition_date within the partitions written'" in error_of(result)
    assert read(resources, sink, asset, [D1])["a"].tolist() == ["1", "1", "1"]


@pytest.mark.parametrize("returned", [None, [1, 2], {"k": [1]}], ids=["None", "list", "dict"])
def test_bad_output_names_the_asset_and_what_was_returned(resources, sink, name, instance, returned):
    @idem_asset(columns={"k": "int"}, key=["k"], io_manager_key=sink, name=name, start=START)
    def declared(context: dg.AssetExecutionContext) -> pd.DataFrame:
        return returned

    what = "None" if returned is None else type(returned).__name__
    result = run([declared], resources, instance, D1, raise_on_error=False)
    error = error_of(result)
    assert f"asset '{name}' returned {what}" in error and "AttributeError" not in error

    # A plain @dg.asset bound to the platform's IO manager (with the declaration as metadata) gets the same.
    plain = dg.asset(name=f"{name}_plain", partitions_def=declared.partitions_def, io_manager_key=sink,
                     metadata=dict(declared.specs_by_key[declared.key].metadata))(lambda: returned)
    result = run([plain], resources, instance, D1, raise_on_error=False)
    error = error_of(result)
    assert f"asset '{name}_plain' returned {what}" in error and "AttributeError" not in error


def test_unpartitioned_downstream_loads_published_days_and_logs_the_missing(resources, sink, name, instance):
    daily = values_asset(name, sink, end=D3)
    run([daily], resources, instance, D1, {name: {"value": "1"}})
    run([daily], resources, instance, D3, {name: {"value": "3"}})
    seen = {}

    @dg.asset(ins={"days": dg.AssetIn(key=daily.key)})
    def everything(days: pd.DataFrame) -> None:
        seen["days"] = days

    result = run([daily, everything], resources, instance, selection=[everything.key])
    assert sorted(seen["days"]["a"]) == ["1", "1", "1", "3", "3", "3"]
    logs = [e.user_message for e in instance.all_logs(result.run_id)]
    assert any("2 published of 3 partitions" in m and f"1 never published: {D2}" in m for m in logs), logs


def test_partition_row_count_metadata_per_partition(resources, sink, name, instance):
    asset = values_asset(name, sink)
    result = run([asset], resources, instance, D1, {name: {"rows": 2}})
    [one] = result.asset_materializations_for_node(name)
    assert one.metadata["dagster/partition_row_count"].value == 2
    result = run([asset], resources, instance, tags={"dagster/asset_partition_range_start": D1,
                                                     "dagster/asset_partition_range_end": D2})
    counts = {m.partition: m.metadata["dagster/partition_row_count"].value
              for m in result.asset_materializations_for_node(name)}
    assert counts == {D1: 3, D2: 3}
