"""A range of day partitions written to the search index in one call: through the sink vs a raw bulk into ONE index.

    .venv/bin/python benchmarks/bench_es_range.py [--days 365] [--docs-per-day 40] [--repeat 3] [--start 2025-01-01]

Issue 17's acceptance: "a 365-day range of ~1,000 documents a day through the sink vs raw `helpers.bulk` of the
same documents into one index with the same refresh settings: ratio >= 0.7; ... the local server's peak RSS
during the range <= 3x that of the raw bulk."

- store: ONE `publish_partitions(ElasticsearchIndexSink(es, replicas=0), ...)` call for the whole range, as a
  Dagster range run does: coerce, audit and fingerprint, partition locks, the sink's stage / verify / publish for
  every day, ledger rows. Whatever physical layout the sink uses (one index per day, per year, ...): only its
  public interface is used.
- raw: create ONE index with the sink's index settings (`INDEX_SETTINGS`: 1 shard, 0 replicas, no periodic
  refresh; see benchmarks/search_common.py) and the sink's mappings (read back from its index), `helpers.bulk`
  the same rows (built as JSON-ready dicts with `_id` = key, before the clock starts) with the sink's chunk size,
  then one explicit refresh (as the sink refreshes before counting).

ratio = raw time / store time (target >= 0.7), medians of interleaved repetitions.

Server memory: every measured side (each repetition of each path) gets a FRESH local osmem server, warmed up
(template, ledger table, connection: a one-day write of --warmup-docs through the same path, on the day before
the range), then the server's peak RSS is taken over the timed write only: its VmHWM reset through
`/proc/<pid>/clear_refs` just before (where permitted; else VmHWM is the fresh server's lifetime peak) and
VmRSS sampled every 50 ms, the larger kept. ratio = store peak / raw peak (target <= 3.0), medians. With
IDEM_ES_URL set both paths share that cluster (the store's and the raw indices are deleted between repetitions,
outside the clock) and no memory is measured.

Documents: `benchmarks.common.mixed_frame` rows (10 typed columns + partition_date), ids unique over the range,
so the raw side's single index holds every document.

Default size: 365 days x 40 documents (14,600), 3 repetitions: ~100 s in all (2026-12-02, 2 cores, load 3-5),
not the issue's ~1,000 a day. The local osmem server indexes these documents at ~350-1,300/s on that VM, so
the issue's 365,000 documents took 8 min (store) and 18 min (raw) per write, far over `make bench`'s 10-minute
budget (and ~6 GB of server RSS each). The default keeps the 365 days (where a layout's per-day costs show: index creation,
refresh, count and alias actions per day) and shrinks the days; `--docs-per-day 1000 --repeat 1` runs the
issue's size (docs/benchmarks.md has such a run).

PostgreSQL (locks and ledger only): a fresh database on IDEM_PG_DSN, else on
postgresql://postgres@127.0.0.1:5432/postgres, else an embedded PostgreSQL; dropped at the end.
"""

from __future__ import annotations

import argparse
import statistics
import sys
import time
import uuid
from collections.abc import Callable
from pathlib import Path

import pandas as pd

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from benchmarks.common import (  # noqa: E402
    MIXED, fresh_database, interleaved, load_average, machine, mixed_frame, print_ratio, print_report, print_times,
)
from benchmarks.search_common import (  # noqa: E402
    BULK_CHUNK_DOCS, INDEX_SETTINGS, INDEX_SETTINGS_SOURCE, SearchServer, ServerMemory, delete_indices, raw_bulk,
    raw_documents, search_server, shared_server, sink_mappings,
)
from idem_platform.resources import PostgresResource  # noqa: E402
from idem_platform.storage.audit import AuditRules  # noqa: E402
from idem_platform.storage.elasticsearch_store import ElasticsearchIndexSink  # noqa: E402
from idem_platform.storage.partition_store import AssetTarget, publish_partitions  # noqa: E402

TARGET_RATIO = 0.7
TARGET_RSS = 3.0
ASSET = "bench_range"
RAW_INDEX = "raw-baseline-range"  # outside the sink's `<asset>-*` names and template
RAW_WARMUP_INDEX = "raw-baseline-warmup"


def range_frame(days: list[str], per_day: int, first_id: int) -> pd.DataFrame:
    """`per_day` mixed rows for each day, ids unique over the whole range."""
    parts = []
    for i, day in enumerate(days):
        part = mixed_frame(per_day, day=day, seed=i)
        part["id"] = part["id"] + first_id + i * per_day
        parts.append(part)
    return MIXED.coerce(pd.concat(parts, ignore_index=True))


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--days", type=int, default=365)
    parser.add_argument("--docs-per-day", type=int, default=40)
    parser.add_argument("--repeat", type=int, default=3)
    parser.add_argument("--start", default="2025-01-01", help="first day of the range")
    parser.add_argument("--warmup-docs", type=int, default=200)
    args = parser.parse_args()

    print(f"{machine()}; {load_average()}", flush=True)
    start = pd.Timestamp(args.start)
    days = [d.strftime("%Y-%m-%d") for d in pd.date_range(start, periods=args.days, freq="D")]
    warmup_day = (start - pd.Timedelta(days=1)).strftime("%Y-%m-%d")
    frame = range_frame(days, args.docs_per_day, first_id=args.warmup_docs)
    warmup = range_frame([warmup_day], args.warmup_docs, first_id=0)
    print(f"{len(frame):,} documents over {len(days)} days ({days[0]}..{days[-1]}); raw index settings "
          f"{INDEX_SETTINGS} from {INDEX_SETTINGS_SOURCE}", flush=True)
    target = AssetTarget(ASSET, MIXED, AuditRules())
    # The raw side's documents, built once before any clock.
    docs = raw_documents(frame, MIXED, RAW_INDEX)
    warmup_docs = raw_documents(warmup, MIXED, RAW_WARMUP_INDEX)
    mappings: dict = {}
    peaks: dict[str, list[int]] = {"store": [], "raw": []}
    growth: dict[str, list[int]] = {"store": [], "raw": []}
    where: list[str] = []

    with fresh_database() as dsn:
        postgres = PostgresResource(dsn=dsn)

        def store_write(server: SearchServer) -> float:
            warm_sink = ElasticsearchIndexSink(server.es, replicas=0)
            publish_partitions(warm_sink, postgres, target, [warmup_day], warmup, str(uuid.uuid4()))
            client = warm_sink.client
            mappings.setdefault("mappings", sink_mappings(client, warm_sink.read_alias(target)))
            memory = ServerMemory(server.pid) if server.pid else None
            sink = ElasticsearchIndexSink(server.es, replicas=0)
            if memory:
                memory.start()
            begin = time.perf_counter()
            publish_partitions(sink, postgres, target, days, frame, str(uuid.uuid4()))
            elapsed = time.perf_counter() - begin
            if memory:
                memory.stop()
                peaks["store"].append(memory.peak)
                growth["store"].append(memory.peak - memory.before)
            assert client.count(index=sink.read_alias(target)).body["count"] == len(warmup) + len(frame)
            for day in (days[0], days[-1]):
                assert client.count(index=sink.day_alias(target, day)).body["count"] == args.docs_per_day
            if shared_server():
                delete_indices(client, f"{sink.read_alias(target)}*")
            return elapsed

        def raw_write(server: SearchServer) -> float:
            assert mappings, "the store side runs first: the raw index takes the mappings of the sink's index"
            client = server.es.client()
            raw_bulk(client, RAW_WARMUP_INDEX, warmup_docs, mappings["mappings"])
            client.indices.delete(index=RAW_WARMUP_INDEX)
            memory = ServerMemory(server.pid) if server.pid else None
            client = server.es.client()
            if memory:
                memory.start()
            elapsed = raw_bulk(client, RAW_INDEX, docs, mappings["mappings"])
            if memory:
                memory.stop()
                peaks["raw"].append(memory.peak)
                growth["raw"].append(memory.peak - memory.before)
            assert client.count(index=RAW_INDEX).body["count"] == len(docs)
            client.indices.delete(index=RAW_INDEX)
            return elapsed

        def on_server(write: Callable[[SearchServer], float]) -> Callable[[], float]:
            def run() -> float:
                with search_server() as server:  # a fresh local server per side, or IDEM_ES_URL's cluster
                    if not where:
                        where.append(server.where)
                    return write(server)
            return run

        times = interleaved({"store": on_server(store_write), "raw": on_server(raw_write)}, args.repeat)

    print(f"\nserver: {where[0]} ({'shared' if shared_server() else 'a fresh one per measured side'}); "
          f"{len(frame):,} documents, {len(days)} days x {args.docs_per_day:,}; bulk chunk {BULK_CHUNK_DOCS}; "
          f"{args.repeat} repetitions; {load_average()}\n")
    print_times(times, units=len(frame), unit="docs")
    ratio = statistics.median(times["raw"]) / statistics.median(times["store"])
    label = f"es range {len(days)} days x {args.docs_per_day:,} docs"
    print()
    print_ratio(f"{label}: raw bulk (one index) / store", ratio, f">= {TARGET_RATIO}", ratio >= TARGET_RATIO)
    if peaks["store"] and peaks["raw"]:
        mb = {side: statistics.median(values) / 1e6 for side, values in peaks.items()}
        grown = {side: statistics.median(values) / 1e6 for side, values in growth.items()}
        for side in ("store", "raw"):
            print(f"server peak RSS during the {side} write: {mb[side]:,.0f} MB (median of "
                  f"{', '.join(f'{v / 1e6:,.0f}' for v in peaks[side])}; +{grown[side]:,.0f} MB over its RSS before)")
        rss_ratio = mb["store"] / mb["raw"]
        print_ratio(f"{label}: search server peak RSS, store / raw bulk", rss_ratio, f"<= {TARGET_RSS}",
                    rss_ratio <= TARGET_RSS)
        print_report(f"{label}: search server peak RSS", f"store {mb['store']:,.0f} MB, raw bulk {mb['raw']:,.0f} MB "
                     f"(growth during the write: store +{grown['store']:,.0f} MB, raw +{grown['raw']:,.0f} MB)")
    else:
        print_report(f"{label}: search server peak RSS", "not measured (IDEM_ES_URL: not a local server)")
    return 0


if __name__ == "__main__":
    sys.exit(main())
