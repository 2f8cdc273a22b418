"""LakePartitionIOManager: one Parquet file per (asset, day), replaced atomically, read back identical."""

import os
import subprocess
import sys
import textwrap

import pandas as pd
import pandas.testing as pdt
import pytest

from idem_platform.storage import ledger
from idem_platform.storage.audit import AuditRules
from idem_platform.storage.lake_store import LakeSink
from idem_platform.storage.fingerprint import fingerprint
from idem_platform.storage.partition_store import AssetTarget, load_partitions, publish_partitions
from idem_platform.storage.schema import TableDeclaration

DAY = "2026-01-05"
DECL = TableDeclaration.build(
    {"id": "string", "n": "int", "x": "float", "ok": "bool", "born": "date", "at": "timestamp"}, key=["id"]
)
TARGET = AssetTarget("things", DECL, AuditRules())


def things(day=DAY, rows=5, tag="a"):
    return DECL.coerce(pd.DataFrame({
        "id": [f"{tag}{i}" for i in range(rows)], "n": [i if i % 2 else None for i in range(rows)],
        "x": [i / 3 for i in range(rows)], "ok": [bool(i % 2) for i in range(rows)],
        "born": ["1990-05-17"] * rows, "at": [f"{day}T12:00:0{i % 10}.123456+02:00" for i in range(rows)],
        "partition_date": [day] * rows,
    }))


def test_round_trip_gives_the_same_frame_and_dtypes(postgres, lake):
    sink = LakeSink(lake)
    frame = things()
    [entry] = publish_partitions(sink, postgres, TARGET, [DAY], frame, "run-1")
    back = load_partitions(sink, postgres, TARGET, [DAY])
    pdt.assert_frame_equal(back, frame)
    assert fingerprint(back, DECL) == entry.fingerprint
    # the day's file and the record of the declared types (no temp file left behind)
    assert sorted(os.listdir(lake.asset_dir("things"))) == [f"{DAY}.parquet", "_idem_schema.json"]


def test_rerun_replaces_the_file_and_an_empty_day_is_an_empty_file(postgres, lake):
    sink = LakeSink(lake)
    publish_partitions(sink, postgres, TARGET, [DAY], things(tag="a"), "run-1")
    publish_partitions(sink, postgres, TARGET, [DAY], things(tag="b", rows=3), "run-2")
    assert load_partitions(sink, postgres, TARGET, [DAY])["id"].tolist() == ["b0", "b1", "b2"]
    [entry] = publish_partitions(sink, postgres, TARGET, [DAY], DECL.empty_frame(), "run-3")
    assert entry.row_count == 0 and entry.changed
    assert len(load_partitions(sink, postgres, TARGET, [DAY])) == 0


def test_crashed_write_leaves_the_old_file_and_the_next_write_removes_its_temp(postgres, lake, pg_dsn):
    sink = LakeSink(lake)
    publish_partitions(sink, postgres, TARGET, [DAY], things(tag="old"), "run-1")
    script = textwrap.dedent(f"""
        import os
        from idem_platform.resources import LakeResource, PostgresResource
        from idem_platform.storage.lake_store import LakeSink
        from idem_platform.storage.partition_store import publish_partitions
        from idem_platform_tests.storage.test_lake_store import TARGET, things

        class Dies(LakeSink):
            def verify_staged(self, *a):
                os._exit(137)  # killed after staging, before publish

        publish_partitions(Dies(LakeResource(root={lake.root!r})), PostgresResource(dsn={pg_dsn!r}),
                           TARGET, [{DAY!r}], things(tag="new"), "crashed-run")
    """)
    assert subprocess.run([sys.executable, "-c", script]).returncode == 137
    assert len(sink.orphans(TARGET, DAY)) == 1
    assert load_partitions(sink, postgres, TARGET, [DAY])["id"].str.startswith("old").all()
    publish_partitions(sink, postgres, TARGET, [DAY], things(tag="new"), "run-3")
    assert sink.orphans(TARGET, DAY) == []
    assert load_partitions(sink, postgres, TARGET, [DAY])["id"].str.startswith("new").all()


def test_missing_day_is_an_error_naming_asset_and_day(postgres, lake):
    with pytest.raises(Exception, match="asset 'things' has no published partition 2026-01-07"):
        load_partitions(LakeSink(lake), postgres, TARGET, ["2026-01-07"])


def test_a_rerun_that_repairs_an_edited_file_is_recorded_changed(postgres, lake):
    """`changed` is about what the sink held, not only what the ledger said: an out-of-band edit repaired by the
    rerun is a change; the rerun after it is not."""
    sink = LakeSink(lake)
    [first] = publish_partitions(sink, postgres, TARGET, [DAY], things(), "run-1")
    edited = things()
    edited.loc[0, "n"] = 999
    edited.to_parquet(sink.path(TARGET, DAY), index=False)  # behind the pipeline's back
    [repair] = publish_partitions(sink, postgres, TARGET, [DAY], things(), "run-2")
    assert repair.fingerprint == first.fingerprint == repair.previous_fingerprint
    assert repair.changed is True
    [again] = publish_partitions(sink, postgres, TARGET, [DAY], things(), "run-3")
    assert again.changed is False
    with postgres.connect() as conn:
        assert [e.changed for e in ledger.history(conn, asset="things")] == [True, True, False]
