"""The Elasticsearch index sink against a real HTTP search server (osmem by default, IDEM_ES_URL if set).

Every test writes one day (2026-01-05) of 1,000 realistic people (the people pipeline's Faker generator and
cleaning) through the whole write path: `dagster.materialize` with the IO manager, or `publish_partitions`
with the sink where a test needs many writers or a crash. Fixtures: `es` and `search_asset_name` from
`idem_platform_tests.search_server`, `postgres`/`store_resources` (lock, ledger, warehouse) from conftest.py.

No `from __future__ import annotations` here: Dagster must resolve the asset function's `config:` annotation,
and through `idem_asset`'s wrapper a string annotation does not resolve.
"""

import functools
import json
import subprocess
import sys
import textwrap
import threading
import time
import uuid
from pathlib import Path

import dagster as dg
import pandas as pd
import pytest
from elasticsearch import helpers

from idem_platform.pipelines.people import PEOPLE_COLUMNS, RAW_PEOPLE_COLUMNS, clean_people, generate_people
from idem_platform.declare import idem_asset
from idem_platform.storage import ledger
from idem_platform.storage.audit import AuditRules
from idem_platform.storage.elasticsearch_store import (
    ElasticsearchIndexSink,
    ElasticsearchPartitionIOManager,
    PartitionNotFound,
)
from idem_platform.storage.search_layout import VERSION_FIELD
from idem_platform.storage.search_client import ElasticsearchResource
from idem_platform.storage.search_transport import PlainJsonHttpNode
from idem_platform.storage.fingerprint import fingerprint
from idem_platform.storage.partition_store import AssetTarget, publish_partitions
from idem_platform.storage.postgres_store import PostgresTableSink
from idem_platform.storage.schema import TableDeclaration
from idem_platform_tests.search_server import external_search_url

REPO_ROOT = Path(__file__).resolve().parents[1]
DAY = "2026-01-05"
ROWS = 1000
PEOPLE_DECL = TableDeclaration.build(PEOPLE_COLUMNS, ["person_id"])
RAW_DECL = TableDeclaration.build(RAW_PEOPLE_COLUMNS, ["person_id"])
PRE_EPOCH = pd.Timestamp("1969-07-20T20:17:40Z")  # date_nanos (the declared timestamp mapping) refuses it


@functools.lru_cache(maxsize=64)
def _people(day: str, rows: int) -> pd.DataFrame:
    return PEOPLE_DECL.coerce(clean_people(RAW_DECL.coerce(generate_people(day, rows))))


def people_frame(day: str = DAY, rows: int = ROWS) -> pd.DataFrame:
    """The cleaned people of a day in declared dtypes (a copy: callers may change it)."""
    return _people(day, rows).copy()


class SearchPeopleConfig(dg.Config):
    rows_per_day: int = ROWS
    pre_epoch_rows: int = 0  # rows whose created_at the search mapping cannot index


def people_assets(name: str) -> tuple[dg.AssetsDefinition, dg.AssetsDefinition]:
    """The same people asset twice: in the search index (`name`) and in the warehouse (`<name>_wh`)."""

    def compute(context: dg.AssetExecutionContext, config: SearchPeopleConfig) -> pd.DataFrame:
        days = context.partition_keys
        frame = pd.concat([people_frame(day, config.rows_per_day) for day in days], ignore_index=True)
        if config.pre_epoch_rows:
            frame.loc[frame.index[: config.pre_epoch_rows], "created_at"] = PRE_EPOCH
        return frame

    declared = {"columns": PEOPLE_COLUMNS, "key": ["person_id"]}
    search = idem_asset(**declared, io_manager_key="search_io", name=name)(compute)
    warehouse = idem_asset(**declared, io_manager_key="warehouse_io", name=f"{name}_wh")(compute)
    return search, warehouse


def materialize(assets, resources, *, day=DAY, last_day=None, raise_on_error=True, **config):
    """Materialize `day` (or the range `day`...`last_day` as one run) in-process; `config` goes to every asset."""
    tags = None
    if last_day:
        tags = {"dagster/asset_partition_range_start": day, "dagster/asset_partition_range_end": last_day}
    return dg.materialize(
        assets,
        partition_key=None if last_day else day,
        tags=tags,
        resources=resources,
        run_config={"ops": {a.op.name: {"config": config} for a in assets}} if config else None,
        instance=dg.DagsterInstance.ephemeral(),
        raise_on_error=raise_on_error,
    )


def target_of(asset: dg.AssetsDefinition) -> AssetTarget:
    return AssetTarget.from_metadata(asset.key.path[-1], asset.metadata_by_key[asset.key])


def target_named(name: str) -> AssetTarget:
    return AssetTarget(name, PEOPLE_DECL, AuditRules())


def write(sink, postgres, target, frame, *, run_id: str | None = None) -> list[ledger.LedgerEntry]:
    """One write of DAY straight through the store's driver (what the IO manager calls)."""
    return publish_partitions(sink, postgres, target, [DAY], frame, run_id or str(uuid.uuid4()))


def published_version(sink: ElasticsearchIndexSink, target: AssetTarget, day: str = DAY) -> tuple[str, str]:
    """The physical index and version under the day alias (exactly one)."""
    held = sink.layout(target).days.get(day, {})
    assert len(held) == 1, held
    return next(iter(held.items()))


def garbage(sink: ElasticsearchIndexSink, target: AssetTarget, day: str = DAY) -> int:
    """Documents of the day in its period index that belong to no published version (after a refresh)."""
    names = sink.names(target)
    index = names.period_index(day)
    sink.client.indices.refresh(index=index)
    keep = list((sink.layout(target).days.get(day) or {}).values())
    query = {"bool": {"filter": [{"term": {"partition_date": day}}], "must_not": [{"terms": {VERSION_FIELD: keep}}]}}
    return sink.client.count(index=index, query=query).body["count"]


def count(sink: ElasticsearchIndexSink, name: str) -> int:
    return sink.client.count(index=name).body["count"]


def ledger_rows(postgres, asset: str) -> list[ledger.LedgerEntry]:
    with postgres.connect() as conn:
        return ledger.history(conn, asset)


def assert_one_published_index(sink, target, day: str = DAY, docs: int = ROWS) -> str:
    """The day holds `docs` documents through both aliases: one version in the day's period index, which the read
    alias selects on that index; returns `<index>/<version>` (the ledger's location)."""
    index, version = published_version(sink, target, day)
    assert index == sink.names(target).period_index(day)
    assert count(sink, sink.day_alias(target, day)) == docs
    query = {"term": {"partition_date": day}}
    assert sink.client.count(index=sink.read_alias(target), query=query).body["count"] == docs
    read_filter = sink.client.indices.get_alias(index=index, name=sink.read_alias(target)).body[index]["aliases"]
    assert version in read_filter[sink.read_alias(target)]["filter"]["terms"][VERSION_FIELD]
    return f"{index}/{version}"


@pytest.fixture
def search_io(postgres, es) -> ElasticsearchPartitionIOManager:
    return ElasticsearchPartitionIOManager(postgres=postgres, es=es)


@pytest.fixture
def resources(store_resources, search_io) -> dict:
    return {**store_resources, "search_io": search_io}


@pytest.fixture
def sink(es) -> ElasticsearchIndexSink:
    return ElasticsearchIndexSink(es)


def test_three_reruns_replace_the_day_with_one_fingerprint(resources, postgres, sink, search_asset_name):
    search, warehouse = people_assets(search_asset_name())
    target = target_of(search)
    indices = []
    for _ in range(3):
        result = materialize([search], resources)
        indices.append(assert_one_published_index(sink, target))
        assert count(sink, sink.read_alias(target)) == ROWS
        metadata = result.asset_materializations_for_node(search.op.name)[0].metadata
        assert metadata["row_count"].value == ROWS and metadata["location"].value == indices[-1]
    assert len(set(indices)) == 3, "every write publishes its own version"
    assert len({i.split("/")[0] for i in indices}) == 1, "in the one physical index of the year"
    assert garbage(sink, target) == 0

    rows = ledger_rows(postgres, target.asset)
    assert [(e.sink, e.row_count, e.changed) for e in rows] == [
        ("elasticsearch", ROWS, True), ("elasticsearch", ROWS, False), ("elasticsearch", ROWS, False)
    ]
    assert [e.location for e in rows] == indices
    published = rows[-1].fingerprint
    assert {e.fingerprint for e in rows} == {published}

    # The same frame through the PostgreSQL store, and what both sinks read back, hash the same.
    materialize([warehouse], resources)
    [pg_entry] = ledger_rows(postgres, warehouse.key.path[-1])
    assert pg_entry.fingerprint == published
    from_index = sink.read(target, [DAY])
    from_table = PostgresTableSink(postgres, "warehouse").read(target_of(warehouse), [DAY])
    assert fingerprint(from_index, target.decl) == published == fingerprint(people_frame(), PEOPLE_DECL)
    pd.testing.assert_frame_equal(from_index, from_table)


def _concurrent_writes(writers: int, es, postgres, target) -> list:
    frame, barrier, results = people_frame(), threading.Barrier(writers), [None] * writers

    def writer(i: int) -> None:
        sink = ElasticsearchIndexSink(es)
        barrier.wait()
        try:
            results[i] = write(sink, postgres, target, frame.copy(), run_id=f"writer{i:02d}-{uuid.uuid4()}")
        except BaseException as exc:  # recorded, asserted below
            results[i] = exc

    threads = [threading.Thread(target=writer, args=(i,)) for i in range(writers)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(timeout=120)
    return results


@pytest.mark.parametrize("writers", [3, 10])
def test_concurrent_writers_end_in_one_published_index(writers, es, postgres, sink, search_asset_name):
    target = target_named(search_asset_name())
    results = _concurrent_writes(writers, es, postgres, target)
    assert all(isinstance(r, list) for r in results), [str(r) for r in results if not isinstance(r, list)]

    index = assert_one_published_index(sink, target)
    assert count(sink, sink.read_alias(target)) == ROWS
    assert garbage(sink, target) == 0
    rows = ledger_rows(postgres, target.asset)
    assert len(rows) == writers and rows[-1].location == index
    assert [e.changed for e in rows] == [True] + [False] * (writers - 1)
    assert fingerprint(sink.read(target, [DAY]), target.decl) == rows[-1].fingerprint


def test_zero_row_rerun_empties_the_day(resources, postgres, sink, search_asset_name):
    search, _ = people_assets(search_asset_name())
    target = target_of(search)
    materialize([search], resources)
    materialize([search], resources, rows_per_day=0)

    assert_one_published_index(sink, target, docs=0)
    assert count(sink, sink.read_alias(target)) == 0
    last = ledger_rows(postgres, target.asset)[-1]
    assert (last.row_count, last.changed, last.fingerprint) == (0, True, "0" * 16)
    assert sink.read(target, [DAY]).empty


def test_range_run_publishes_thirty_day_aliases(resources, postgres, sink, search_asset_name):
    search, _ = people_assets(search_asset_name())
    target = target_of(search)
    days = [d.strftime("%Y-%m-%d") for d in pd.date_range("2026-01-01", "2026-01-30")]
    result = materialize([search], resources, day=days[0], last_day=days[-1], rows_per_day=20)
    assert result.success

    aliased = sink.client.indices.get_alias(index=sink.read_alias(target)).body
    assert list(aliased) == [sink.names(target).period_index(days[0])]  # one physical index for the 30 days
    assert set(sink.layout(target).days) == set(days)
    for day in days:
        assert_one_published_index(sink, target, day, docs=20)
    assert count(sink, sink.read_alias(target)) == 600
    assert sorted(e.partition for e in ledger_rows(postgres, target.asset)) == days


CRASHING_WRITER = textwrap.dedent(
    """
    import json, os, sys
    from idem_platform.resources import PostgresResource
    from idem_platform.storage.elasticsearch_store import ElasticsearchIndexSink, ElasticsearchResource
    from idem_platform.storage.search_client import ElasticsearchResource
    from idem_platform_tests.storage.test_elasticsearch_store import people_frame, target_named, write

    args = json.loads(sys.argv[1])

    class DiesAfterStaging(ElasticsearchIndexSink):
        def verify_staged(self, conn, target, staged, digests):
            os._exit(137)  # like SIGKILL: no cleanup, no rollback, the connection just drops

    es = ElasticsearchResource(**args["es"]) if args["es"] else ElasticsearchResource()
    if args["dies"] == "after_stage":
        sink = DiesAfterStaging(es)
    else:  # IDEM_FAULT=elasticsearch:mid_stage: dies once the first bulk chunk is in
        sink = ElasticsearchIndexSink(es, bulk_chunk_docs=250)
    postgres = PostgresResource(dsn=args["dsn"])
    write(sink, postgres, target_named(args["asset"]), people_frame(), run_id=args["run_id"])
    """
)


@pytest.mark.parametrize("dies", ["after_stage", "mid_stage"])
def test_write_that_dies_leaves_garbage_the_next_write_removes(
    dies, es, pg_dsn, postgres, sink, search_asset_name, monkeypatch
):
    target = target_named(search_asset_name())
    [before] = write(sink, postgres, target, people_frame())

    # On IDEM_ES_URL's cluster the child reads the same environment (credentials never pass through argv).
    es_args = None if external_search_url() else {"url": es.url, "plain_json": es.plain_json}
    args = {"es": es_args, "dsn": pg_dsn, "asset": target.asset, "run_id": f"crashed0-{uuid.uuid4()}", "dies": dies}
    if dies == "mid_stage":
        monkeypatch.setenv("IDEM_FAULT", "elasticsearch:mid_stage")
    command = [sys.executable, "-c", CRASHING_WRITER, json.dumps(args)]
    child = subprocess.run(command, capture_output=True, text=True, timeout=120, cwd=REPO_ROOT)
    monkeypatch.delenv("IDEM_FAULT", raising=False)
    assert child.returncode == 137, child.stderr

    # The published day is whole, the ledger untouched, the staged version left behind under no alias.
    assert assert_one_published_index(sink, target) == before.location
    assert count(sink, sink.day_alias(target, DAY)) == count(sink, sink.read_alias(target)) == ROWS
    assert fingerprint(sink.read(target, [DAY]), target.decl) == before.fingerprint
    assert [e.run_id for e in ledger_rows(postgres, target.asset)] == [before.run_id]
    assert garbage(sink, target) == (ROWS if dies == "after_stage" else 250)  # the child died before its refresh

    [after] = write(ElasticsearchIndexSink(es), postgres, target, people_frame())
    assert garbage(sink, target) == 0
    assert assert_one_published_index(sink, target) == after.location
    assert not after.changed


def test_readers_never_see_a_partial_day_during_reruns(es, postgres, sink, search_asset_name):
    target = target_named(search_asset_name())
    write(sink, postgres, target, people_frame())
    day_alias, read_alias = sink.day_alias(target, DAY), sink.read_alias(target)
    samples: list[tuple[str, object]] = []
    stop = threading.Event()

    def poll() -> None:
        reader = es.client()
        while not stop.is_set():
            for alias in (day_alias, read_alias):
                try:
                    samples.append((alias, reader.count(index=alias).body["count"]))
                except Exception as exc:  # an error is a sample too: a reader must never get one
                    samples.append((alias, repr(exc)))

    thread = threading.Thread(target=poll)
    thread.start()
    try:
        for _ in range(20):
            write(ElasticsearchIndexSink(es), postgres, target, people_frame())
            time.sleep(0.01)
    finally:
        stop.set()
        thread.join()

    seen = {(alias, value) for alias, value in samples}
    assert seen == {(day_alias, ROWS), (read_alias, ROWS)}, [s for s in samples if s[1] != ROWS][:5]
    assert len(samples) >= 200, len(samples)
    assert len(ledger_rows(postgres, target.asset)) == 21


def test_rejected_documents_fail_the_run_and_keep_the_published_day(resources, postgres, sink, search_asset_name, monkeypatch):
    # The audit refuses pre-epoch timestamps before any write (test_round_trips.py); without its value limits the
    # real server's rejection path is what runs here.
    monkeypatch.setattr(ElasticsearchIndexSink, "value_limits", ())
    search, _ = people_assets(search_asset_name())
    target = target_of(search)
    materialize([search], resources)
    [published] = ledger_rows(postgres, target.asset)

    result = materialize([search], resources, raise_on_error=False, pre_epoch_rows=3)
    assert not result.success
    [failure] = result.get_step_failure_events()
    message = failure.step_failure_data.error.to_string()
    rejected = people_frame()["person_id"].head(3).tolist()
    assert f"asset {target.asset!r}" in message and "rejected 3 documents" in message and f"{DAY}: 3" in message
    for person_id in rejected:
        assert f"{DAY} id {person_id!r}" in message
    assert "before the epoch" in message or "date_nanos" in message  # the server's reason is passed on

    assert assert_one_published_index(sink, target) == published.location
    assert fingerprint(sink.read(target, [DAY]), target.decl) == published.fingerprint
    assert ledger_rows(postgres, target.asset) == [published]
    assert garbage(sink, target) == 0


def test_reading_a_day_never_published_names_asset_and_day(sink, search_asset_name):
    target = target_named(search_asset_name())
    with pytest.raises(PartitionNotFound, match=rf"{target.asset}.*2026\.01\.06.*2026-01-06"):
        sink.read(target, ["2026-01-06"])


def test_plain_json_node_is_what_an_opensearch_compatible_server_needs(es):
    if external_search_url():
        pytest.skip("the 406 is specific to OpenSearch-compatible servers")
    document = {"partition_date": DAY}
    with pytest.raises(Exception, match="406|not supported"):
        ElasticsearchResource(url=es.url, plain_json=False).client().index(index="compat-check", document=document)
    client = es.client()
    assert isinstance(client.transport.node_pool.get(), PlainJsonHttpNode)
    assert client.index(index="compat-check", document=document, refresh=True).body["result"] == "created"
    assert helpers.bulk(client, [{"_index": "compat-check", "_source": document}]) == (1, [])  # x-ndjson too


def test_resource_from_env_keeps_credentials_out_of_config_and_repr(monkeypatch):
    monkeypatch.setenv("IDEM_ES_URL", "https://search.example:9200")
    monkeypatch.setenv("IDEM_ES_USERNAME", "idem")
    monkeypatch.setenv("IDEM_ES_PASSWORD", "s3cret-pa55")
    monkeypatch.delenv("IDEM_ES_API_KEY", raising=False)
    monkeypatch.delenv("IDEM_ES_PLAIN_JSON", raising=False)
    resource = ElasticsearchResource()
    # Nothing of the environment is copied into the resource's config: it is read when the client is built.
    assert resource.password is None and resource.url == ""
    assert "s3cret" not in repr(resource) and "s3cret" not in repr(resource.process_config_and_initialize())
    client = resource.client()
    assert client.transport.node_pool.get().config.host == "search.example"
    assert isinstance(client.transport.node_pool.get(), PlainJsonHttpNode)
    assert "s3cret" not in repr(client)
    monkeypatch.setenv("IDEM_ES_PLAIN_JSON", "false")
    assert not isinstance(ElasticsearchResource().client().transport.node_pool.get(), PlainJsonHttpNode)
