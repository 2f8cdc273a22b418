"""Overwrite of one day partition in the search index: through the store vs a raw bulk into a plain index.

    .venv/bin/python benchmarks/bench_es_overwrite.py [--docs 30000] [--repeat 3] [--warmup-docs 1000]

Same server, same documents, same bulk chunk size, interleaved repetitions, medians:

- store: `publish_partitions` with `ElasticsearchIndexSink`: coerce, audit and fingerprint the frame, partition
  lock, orphan sweep, new index, documents generated from the frame and bulk-loaded, refresh + count audit,
  settings restore, one alias swap, old index deleted, ledger row.
- raw: create a plain index (1 shard, 0 replicas, the same mappings: dynamic mapping would index every string as
  analysed text as well, which is slower and would flatter the store), `helpers.bulk` the same documents (already
  built as JSON-ready dicts, with the same `_id`s, before the clock starts), refresh. The index is deleted outside
  the clock.

ratio = raw time / store time (target >= 0.8).

Default size: 15,000 documents, not the 100,000 of the issue. The local osmem server indexes ~1,000 to 3,500
people documents/s on 2 cores (depending on the machine) and both paths spend >90% of their time waiting for it (profiled: `recv_into`), so a
100k-document write takes ~30 s and the six timed writes plus the Faker frame (~20 s for 100k) alone would use
half of `make bench`'s 10-minute budget. The ratio does not depend on the size (server-bound, same documents
on both sides); `--docs 100000` measures the issue's size (docs/benchmarks.md has such a run). The warm-up
(template, ledger table, connection pools) writes --warmup-docs documents on both paths.

Also printed: the client's peak RSS during a store write above its RSS just before it (the frame and the raw
side's documents are already resident): what streaming the bulk costs in memory.

Search server: IDEM_ES_URL (as `ElasticsearchResource()`), else a local osmem server started here. PostgreSQL
(lock and ledger only): a fresh database on IDEM_PG_DSN, else on postgresql://postgres@127.0.0.1:5432/postgres,
else an embedded PostgreSQL; the database is dropped at the end.
"""

from __future__ import annotations

import argparse
import contextlib
import os
import statistics
import sys
import time
import uuid
from collections.abc import Iterator
from pathlib import Path

from elasticsearch import helpers

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from benchmarks.common import (  # noqa: E402
    fresh_database, frame_bytes, interleaved, load_average, machine, peak_rss_bytes, print_ratio, print_report,
    print_times, reset_peak_rss, rss_bytes,
)
from idem_platform.pipelines.people import PEOPLE_COLUMNS, RAW_PEOPLE_COLUMNS, clean_people, generate_people  # noqa: E402
from idem_platform.resources import PostgresResource  # noqa: E402
from idem_platform.storage.audit import AuditRules  # noqa: E402
from idem_platform.storage.elasticsearch_store import (  # noqa: E402
    BULK_CHUNK_DOCS,
    ElasticsearchIndexSink,
)
from idem_platform.storage.search_client import ElasticsearchResource  # noqa: E402
from idem_platform.storage.partition_store import AssetTarget, publish_partitions  # noqa: E402
from idem_platform.storage.schema import TableDeclaration  # noqa: E402

DAY = "2026-01-05"
TARGET_RATIO = 0.8


@contextlib.contextmanager
def search_server() -> Iterator[tuple[ElasticsearchResource, str]]:
    if os.environ.get("IDEM_ES_URL"):
        yield ElasticsearchResource(), "IDEM_ES_URL"
        return
    from osmem_server import OsmemServer

    with OsmemServer.start(freeze=False, japanese=False) as server:
        yield ElasticsearchResource(url=server.url, plain_json=True), f"local osmem {server.version}"


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--docs", type=int, default=15_000)
    parser.add_argument("--repeat", type=int, default=3)
    parser.add_argument("--warmup-docs", type=int, default=1_000)
    args = parser.parse_args()

    print(f"{machine()}; {load_average()}", flush=True)
    decl = TableDeclaration.build(PEOPLE_COLUMNS, ["person_id"])
    raw_decl = TableDeclaration.build(RAW_PEOPLE_COLUMNS, ["person_id"])
    print(f"generating {args.docs:,} people for {DAY} ...", flush=True)
    frame = decl.coerce(clean_people(raw_decl.coerce(generate_people(DAY, args.docs))))
    warmup = frame.head(args.warmup_docs).reset_index(drop=True)
    target = AssetTarget("bench_people", decl, AuditRules())
    peaks: list[int] = []

    with search_server() as (es, where), fresh_database() as dsn:
        postgres = PostgresResource(dsn=dsn)
        client = es.client()
        staging_sink = ElasticsearchIndexSink(es, replicas=0)
        # The raw side gets the very documents the store sends, built before its clock starts.
        docs = list(staging_sink._actions(target, {DAY: "bench_raw"}, frame))
        warmup_docs = docs[: len(warmup)]
        mappings = staging_sink.mappings(decl)

        def store(rows=frame, measure_memory: bool = True) -> float:
            sink = ElasticsearchIndexSink(es, replicas=0)
            before = rss_bytes()
            reset_peak_rss()
            start = time.perf_counter()
            publish_partitions(sink, postgres, target, [DAY], rows, str(uuid.uuid4()))
            elapsed = time.perf_counter() - start
            if measure_memory:
                peaks.append(peak_rss_bytes() - before)
            return elapsed

        def raw(documents=docs) -> float:
            client.indices.delete(index="bench_raw", ignore_unavailable=True)
            start = time.perf_counter()
            client.indices.create(
                index="bench_raw", settings={"number_of_shards": 1, "number_of_replicas": 0}, mappings=mappings
            )
            indexed, errors = helpers.bulk(client, documents, chunk_size=BULK_CHUNK_DOCS)
            client.indices.refresh(index="bench_raw")
            elapsed = time.perf_counter() - start
            assert indexed == len(documents) and not errors
            return elapsed

        store(warmup, measure_memory=False), raw(warmup_docs)  # warm-up: template, ledger table, connection pools
        times = interleaved({"store": store, "raw": raw}, args.repeat)
        assert client.count(index=staging_sink.day_alias(target, DAY)).body["count"] == len(frame)
        client.indices.delete(index="bench_raw", ignore_unavailable=True)

    print(f"\nserver: {where}; {len(frame):,} documents; bulk chunk {BULK_CHUNK_DOCS}; {args.repeat} repetitions; "
          f"{load_average()}\n")
    print_times(times, units=len(frame), unit="docs")
    ratio = statistics.median(times["raw"]) / statistics.median(times["store"])
    print()
    print_ratio(f"es overwrite {len(frame):,} docs: raw bulk / store", ratio, f">= {TARGET_RATIO}", ratio >= TARGET_RATIO)
    print_report(
        f"es overwrite {len(frame):,} docs: client peak RSS during a store write",
        f"+{statistics.median(peaks) / 1e6:.0f} MB over the RSS before it (frame {frame_bytes(frame) / 1e6:.0f} MB, "
        f"already resident)",
    )
    return 0


if __name__ == "__main__":
    sys.exit(main())
