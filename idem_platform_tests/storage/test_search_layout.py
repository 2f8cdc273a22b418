"""The search sink's layout at cluster scale (issue 17): shards bounded by years, not days.

Counted through `_cat/indices` as a cluster operator would, and read through the aliases as a reader would:

- a 3-year backfill of two assets leaves one physical index (one shard) per asset per year; every day alias
  returns exactly its day, the read alias every published day once, and the indices hold no other documents;
- writers of different days of one year index, with and without the partition lock (a stale writer holds no
  lock), never lose another day from the read alias;
- a deployment of the earlier layout (one index per day) keeps reading, and `idem search-migrate` moves its days
  into the year index with the same content, while readers see every day whole throughout.

No `from __future__ import annotations`: Dagster resolves the asset functions' `context` annotation.
"""

import threading
import uuid

import dagster as dg
import pandas as pd
import pytest
from elasticsearch import helpers

from idem_platform.declare import idem_asset
from idem_platform.search_migration import migrate_asset, search_assets
from idem_platform.storage.audit import AuditRules
from idem_platform.storage.elasticsearch_store import ElasticsearchIndexSink, ElasticsearchPartitionIOManager
from idem_platform.storage.fingerprint import partition_digests
from idem_platform.storage.partition_store import AssetTarget, StalePublish, publish_partitions
from idem_platform.storage.schema import PARTITION_COLUMN, TableDeclaration
from idem_platform.storage.search_layout import VERSION_FIELD

DECL = TableDeclaration.build({"id": "int", "who": "string"}, key=["id"])
PER_DAY = 2


def days_between(first: str, last: str) -> list[str]:
    return [d.strftime("%Y-%m-%d") for d in pd.date_range(first, last)]


def day_frame(days, who: str = "a", rows: int = PER_DAY) -> pd.DataFrame:
    return DECL.coerce(pd.DataFrame({
        "id": [i for _ in days for i in range(rows)], "who": [who] * (rows * len(days)),
        PARTITION_COLUMN: [d for d in days for _ in range(rows)],
    }))


def cat_indices(sink: ElasticsearchIndexSink, base: str) -> dict[str, dict]:
    rows = sink.client.cat.indices(index=f"{base}-*", format="json").body
    return {row["index"]: row for row in rows}


def day_counts(sink: ElasticsearchIndexSink, index_or_alias: str) -> dict[str, int]:
    """Documents per partition_date through an index or alias (one aggregation)."""
    body = sink.client.search(index=index_or_alias, size=0, aggs={"d": {"terms": {
        "field": PARTITION_COLUMN, "size": 5000, "format": "yyyy-MM-dd"}}}).body
    return {b["key_as_string"]: b["doc_count"] for b in body["aggregations"]["d"]["buckets"]}


def assert_alias_semantics(sink: ElasticsearchIndexSink, target: AssetTarget, days: list[str], per_day: int) -> None:
    names = sink.names(target)
    for day in days:
        assert day_counts(sink, names.day_alias(day)) == {day: per_day}, day
    assert day_counts(sink, names.read_alias) == {day: per_day for day in days}
    read = sink.read(target, days)
    assert not read.duplicated([PARTITION_COLUMN, "id"]).any() and len(read) == per_day * len(days)


@pytest.fixture
def sink(es):
    sink = ElasticsearchIndexSink(es, replicas=0)
    yield sink
    sink.client.close()


def test_three_years_of_two_assets_leave_one_index_per_asset_per_year(es, postgres, search_asset_name):
    days = days_between("2023-01-01", "2025-12-31")
    assets = []
    for name in (search_asset_name("orders"), search_asset_name("refunds")):

        @idem_asset(columns={"id": "int", "who": "string"}, key=["id"], io_manager_key="search_io", name=name,
                    start="2023-01-01", end="2025-12-31")
        def asset(context: dg.AssetExecutionContext, day: str) -> pd.DataFrame:
            return pd.DataFrame({"id": range(PER_DAY), "who": [day] * PER_DAY})

        assets.append(asset)
    resources = {"search_io": ElasticsearchPartitionIOManager(postgres=postgres, es=es, replicas=0)}
    tags = {"dagster/asset_partition_range_start": days[0], "dagster/asset_partition_range_end": days[-1]}
    assert dg.materialize(assets, tags=tags, resources=resources, instance=dg.DagsterInstance.ephemeral()).success
    # A month of the middle year rewritten: its old versions do not stay behind.
    june = days_between("2024-06-01", "2024-06-30")
    tags = {"dagster/asset_partition_range_start": june[0], "dagster/asset_partition_range_end": june[-1]}
    assert dg.materialize(assets, tags=tags, resources=resources, instance=dg.DagsterInstance.ephemeral()).success

    sink = ElasticsearchIndexSink(es, replicas=0)
    for asset in assets:
        target = AssetTarget(asset.key.to_user_string(), DECL, AuditRules())
        base = sink.names(target).base
        sink.client.indices.refresh(index=f"{base}-*")
        indices = cat_indices(sink, base)
        assert sorted(indices) == [f"{base}-2023", f"{base}-2024", f"{base}-2025"]  # at most 2 per year: 1
        assert {row["pri"] for row in indices.values()} == {"1"}
        published = {index: int(row["docs.count"]) for index, row in indices.items()}
        assert published == {f"{base}-{year}": PER_DAY * len([d for d in days if d.startswith(year)])
                             for year in ("2023", "2024", "2025")}  # nothing but the published versions
        assert_alias_semantics(sink, target, days, PER_DAY)
    sink.client.close()


def test_writers_of_other_days_of_one_index_never_lose_a_day_from_the_read_alias(es, postgres, sink, search_asset_name):
    """Eight writers of eight days of one year index, three rounds, through the locked write path."""
    target = AssetTarget(search_asset_name("busy"), DECL, AuditRules())
    days = days_between("2026-03-01", "2026-03-08")
    errors = []

    def writer(day: str, who: str) -> None:
        own = ElasticsearchIndexSink(es, replicas=0)
        try:
            publish_partitions(own, postgres, target, [day], day_frame([day], who), f"w-{uuid.uuid4()}")
        except BaseException as exc:  # noqa: BLE001 - asserted below
            errors.append(exc)
        finally:
            own.client.close()

    for who in ("r1", "r2", "r3"):
        threads = [threading.Thread(target=writer, args=(day, who)) for day in days]
        for t in threads:
            t.start()
        for t in threads:
            t.join(timeout=120)
        assert not errors, errors
        assert_alias_semantics(sink, target, days, PER_DAY)
        assert set(sink.read(target, days)["who"]) == {who}


def test_unlocked_writers_of_other_days_fail_whole_or_publish_whole(es, postgres, sink, search_asset_name):
    """Writers that hold no lock (what a writer whose session ended is) drive the verbs directly, racing on one
    index: the generation condition refuses a publish whose read-alias filter was computed from a layout another
    publish has changed; refused writers retry. Every day ends in the read alias once."""
    target = AssetTarget(search_asset_name("race"), DECL, AuditRules())
    days = days_between("2026-04-01", "2026-04-06")
    refused = []

    def writer(day: str) -> None:
        own = ElasticsearchIndexSink(es, replicas=0)
        own.prepare(None, target)
        frame = day_frame([day])
        digests = partition_digests(frame, DECL, [day])
        for _ in range(30):
            staged = own.stage(None, target, [day], frame, f"u-{uuid.uuid4()}")
            own.verify_staged(None, target, staged, digests)
            try:
                own.publish(None, target, staged)
                break
            except StalePublish:
                refused.append(day)
                own.discard(target, staged)
        own.client.close()

    threads = [threading.Thread(target=writer, args=(day,)) for day in days]
    for t in threads:
        t.start()
    for t in threads:
        t.join(timeout=180)
    assert_alias_semantics(sink, target, days, PER_DAY)
    print(f"refused publishes (retried): {len(refused)}")


def old_layout_day(sink: ElasticsearchIndexSink, target: AssetTarget, day: str, who: str) -> str:
    """A day as the earlier layout published it: its own index, the day alias and the read alias unfiltered."""
    names = sink.names(target)
    index = f"{names.day_alias(day)}-oldrun00-{uuid.uuid4().hex[:6]}"
    mappings = sink.mappings(DECL)
    mappings["properties"].pop(VERSION_FIELD)
    sink.client.indices.create(index=index, mappings=mappings, settings={"number_of_shards": 1, "number_of_replicas": 0})
    helpers.bulk(sink.client, ({"_index": index, "_id": str(i), "_source": {"id": i, "who": who, PARTITION_COLUMN: day}}
                               for i in range(PER_DAY)), refresh=True)
    sink.client.indices.update_aliases(actions=[{"add": {"index": index, "alias": names.day_alias(day)}},
                                                {"add": {"index": index, "alias": names.read_alias}}])
    return index


def test_earlier_layout_keeps_reading_and_migrates_day_by_day(es, postgres, sink, search_asset_name):
    name = search_asset_name("legacy")
    days = days_between("2025-12-30", "2026-01-03")  # across a year boundary: two year indices
    target = AssetTarget(name, DECL, AuditRules())
    sink.prepare(None, target)
    for day in days:
        old_layout_day(sink, target, day, "old")
    assert len(cat_indices(sink, name)) == 5
    before = sink.read(target, days)
    assert len(before) == PER_DAY * 5
    # A new write of one day moves that day alone, in the same one alias request.
    publish_partitions(sink, postgres, target, [days[0]], day_frame([days[0]], "old"), "one-day")
    assert sorted(cat_indices(sink, name)) == sorted([f"{name}-2025", *[i for i in cat_indices(sink, name) if "oldrun" in i]])
    assert_alias_semantics(sink, target, days, PER_DAY)

    @idem_asset(columns={"id": "int", "who": "string"}, key=["id"], io_manager_key="search_io", name=name,
                start="2025-12-01", end="2026-01-31")
    def legacy(context: dg.AssetExecutionContext, day: str) -> pd.DataFrame:
        raise AssertionError("migration reads the index, it never recomputes")

    defs = dg.Definitions(assets=[legacy], resources={
        "search_io": ElasticsearchPartitionIOManager(postgres=postgres, es=es, replicas=0)})
    assert search_assets(defs) == [name]
    samples, stop = [], threading.Event()

    def poll() -> None:
        reader = es.client()
        while not stop.is_set():
            samples.append(day_counts_safe(reader, sink.names(target).read_alias))

    thread = threading.Thread(target=poll)
    thread.start()
    try:
        migrated = migrate_asset(defs, name)
    finally:
        stop.set()
        thread.join()
    assert (migrated.days, migrated.indices_after) == (4, 2), migrated
    assert sorted(cat_indices(sink, name)) == [f"{name}-2025", f"{name}-2026"]
    pd.testing.assert_frame_equal(sink.read(target, days), before)
    assert_alias_semantics(sink, target, days, PER_DAY)
    assert samples and all(s == {d: PER_DAY for d in days} for s in samples), [s for s in samples if s != {d: PER_DAY for d in days}][:3]
    assert migrate_asset(defs, name).days == 0  # nothing left to move


def day_counts_safe(client, alias: str) -> dict[str, int] | str:
    try:
        body = client.search(index=alias, size=0, aggs={"d": {"terms": {
            "field": PARTITION_COLUMN, "size": 100, "format": "yyyy-MM-dd"}}}).body
    except Exception as exc:  # noqa: BLE001 - an error is a sample too: a reader must never get one
        return repr(exc)
    return {b["key_as_string"]: b["doc_count"] for b in body["aggregations"]["d"]["buckets"]}
