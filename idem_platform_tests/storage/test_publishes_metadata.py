"""The ledger at a glance: a materialization carries the asset's recent publishes as a table (issue 19).

One run of one day puts the table on its materialization; a range run puts it on one materialization only (the last
day's, the asset's latest event), never on every day's: the events stay small. The rows are the ledger's, newest first,
at most PUBLISHES_SHOWN of them. Real PostgreSQL, through `dagster.materialize`, on the table and the lake sink.

No `from __future__ import annotations`: Dagster resolves the asset functions' annotations (`config:`).
"""

import uuid

import dagster as dg
import pandas as pd
import psycopg
import pytest

from idem_platform.declare import idem_asset
from idem_platform.storage.partition_store import PUBLISHES_METADATA, PUBLISHES_SHOWN

D1, D2, D3 = "2026-01-04", "2026-01-05", "2026-01-06"
RANGE = {"dagster/asset_partition_range_start": D1, "dagster/asset_partition_range_end": D3}


class Rows(dg.Config):
    rows: int = 3


def rows_asset(name: str, sink: str) -> dg.AssetsDefinition:
    @idem_asset(columns={"k": "int", "v": "string"}, key=["k"], io_manager_key=sink, name=name, start=D1)
    def asset(context: dg.AssetExecutionContext, config: Rows, day: str) -> pd.DataFrame:
        return pd.DataFrame({"k": range(config.rows), "v": [day] * config.rows})

    return asset


def materializations(asset, resources, instance, rows: int, partition=None, tags=None) -> tuple[str, dict]:
    result = dg.materialize([asset], partition_key=partition, tags=tags, resources=resources, instance=instance,
                            run_config={"ops": {asset.op.name: {"config": {"rows": rows}}}})
    return result.run_id, {m.partition: m.metadata for m in result.asset_materializations_for_node(asset.op.name)}


def table_rows(metadata) -> list[dict]:
    return [record.data for record in metadata[PUBLISHES_METADATA].value.records]


def ledger_rows(dsn: str, asset: str) -> list[dict]:
    with psycopg.connect(dsn) as conn:
        rows = conn.execute(
            "SELECT partition, row_count, fingerprint, changed, run_id FROM idem.ledger WHERE asset = %s ORDER BY id DESC",
            (asset,),
        ).fetchall()
    return [{"partition": p, "rows": n, "fingerprint": f, "changed": c, "run": r[:8]} for p, n, f, c, r in rows]


@pytest.mark.parametrize("sink", ["warehouse_io", "lake_io"])
def test_materializations_show_the_recent_publishes_once_per_run(store_resources, pg_dsn, sink):
    name = f"glance_{uuid.uuid4().hex[:8]}"
    asset = rows_asset(name, sink)
    with dg.instance_for_test() as instance:
        first_run, one = materializations(asset, store_resources, instance, rows=3, partition=D1)
        shown = table_rows(one[D1])
        assert [{k: r[k] for k in ("partition", "rows", "changed", "run")} for r in shown] == [
            {"partition": D1, "rows": 3, "changed": True, "run": first_run[:8]}
        ]
        assert shown[0]["fingerprint"] == one[D1]["fingerprint"].value
        assert shown[0]["published_at"].endswith(" UTC")

        range_run, days = materializations(asset, store_resources, instance, rows=2, tags=RANGE)
        assert sorted(days) == [D1, D2, D3]
        assert [d for d, metadata in days.items() if PUBLISHES_METADATA in metadata] == [D3]  # once, the latest
        shown = table_rows(days[D3])
        assert [(r["partition"], r["rows"], r["changed"], r["run"]) for r in shown] == [
            (D3, 2, True, range_run[:8]), (D2, 2, True, range_run[:8]), (D1, 2, True, range_run[:8]),
            (D1, 3, True, first_run[:8]),
        ]
        assert [r["fingerprint"] for r in shown[:3]] == [days[d]["fingerprint"].value for d in (D3, D2, D1)]

        for _ in range(3):  # unchanged reruns: 13 publishes in all, the table keeps the newest ten
            rerun, days = materializations(asset, store_resources, instance, rows=2, tags=RANGE)
        shown = table_rows(days[D3])
        assert len(shown) == PUBLISHES_SHOWN == 10
        assert [(r["partition"], r["changed"], r["run"]) for r in shown[:3]] == [
            (D3, False, rerun[:8]), (D2, False, rerun[:8]), (D1, False, rerun[:8])
        ]
        assert [{k: r[k] for k in ("partition", "rows", "fingerprint", "changed", "run")} for r in shown] == (
            ledger_rows(pg_dsn, name)[:PUBLISHES_SHOWN]
        )
