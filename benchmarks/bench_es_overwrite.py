"""Overwrite of one day partition in the search index: through the store vs a raw bulk into a plain index.

    .venv/bin/python benchmarks/bench_es_overwrite.py [--docs 30000] [--repeat 3] [--warmup-docs 1000]

Same server, same documents, same bulk chunk size, interleaved repetitions, medians:

- store: `publish_partitions` with `ElasticsearchIndexSink`: coerce, audit and fingerprint the frame, partition
  lock, orphan sweep, new index, documents generated from the frame and bulk-loaded, refresh + count audit,
  settings restore, one alias swap, old index deleted, ledger row.
- raw: create a plain index with the settings the sink creates its indices with (`INDEX_SETTINGS`: 1 shard,
  0 replicas, refresh off; benchmarks/search_common.py) and the sink's mappings (read back from the index the
  warm-up published: dynamic mapping would index every string as analysed text as well, which is slower and
  would flatter the store), `helpers.bulk` the same documents (built as JSON-ready dicts with `_id` = the key,
  before the clock starts) with the sink's chunk size, explicit refresh, default refresh interval restored (as
  the sink does before its alias swap). Before this, the raw index kept the default 1 s refresh while the
  store turned refresh off (issues 17, 18): an unfair baseline. The index is deleted outside the clock.

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
import statistics
import sys
import time
import uuid
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from benchmarks.common import (  # noqa: E402
    fresh_database, frame_bytes, interleaved, load_average, machine, peak_rss_bytes, print_ratio, print_report,
    print_times, reset_peak_rss, rss_bytes,
)
from benchmarks.search_common import (  # noqa: E402
    BULK_CHUNK_DOCS, INDEX_SETTINGS, INDEX_SETTINGS_SOURCE, raw_bulk, raw_documents, search_server, sink_mappings,
)
from idem_platform.pipelines.people import PEOPLE_COLUMNS, RAW_PEOPLE_COLUMNS, clean_people, generate_people  # noqa: E402
from idem_platform.resources import PostgresResource  # noqa: E402
from idem_platform.storage.audit import AuditRules  # noqa: E402
from idem_platform.storage.elasticsearch_store import ElasticsearchIndexSink  # noqa: E402
from idem_platform.storage.partition_store import AssetTarget, publish_partitions  # noqa: E402
from idem_platform.storage.schema import TableDeclaration  # noqa: E402

DAY = "2026-01-05"
TARGET_RATIO = 0.8


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

    with search_server() as server, fresh_database() as dsn:
        es, where = server.es, server.where
        postgres = PostgresResource(dsn=dsn)
        client = es.client()
        # The raw side gets the same rows as documents, built before its clock starts.
        docs = raw_documents(frame, decl, "bench_raw")
        warmup_docs = raw_documents(warmup, decl, "bench_raw")

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
            elapsed = raw_bulk(client, "bench_raw", documents, mappings)
            client.indices.delete(index="bench_raw")
            return elapsed

        store(warmup, measure_memory=False)  # warm-up: template, ledger table, connection pools
        names = ElasticsearchIndexSink(es, replicas=0)  # for the alias names only
        mappings = sink_mappings(client, names.read_alias(target))
        raw(warmup_docs)
        times = interleaved({"store": store, "raw": raw}, args.repeat)
        assert client.count(index=names.day_alias(target, DAY)).body["count"] == len(frame)

    print(f"\nserver: {where}; {len(frame):,} documents; bulk chunk {BULK_CHUNK_DOCS}; raw index settings "
          f"{INDEX_SETTINGS} from {INDEX_SETTINGS_SOURCE}; {args.repeat} repetitions; {load_average()}\n")
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
