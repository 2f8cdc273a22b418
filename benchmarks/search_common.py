"""Shared parts of the search benchmarks (`bench_es_overwrite.py`, `bench_es_range.py`): the server, the raw
baseline's index settings, mappings and documents, and the search server's peak RSS.

The benchmarks use the sink only through its public interface (`ElasticsearchIndexSink(es, replicas=0)`,
`publish_partitions`, `read_alias`, `day_alias`), so they keep measuring whatever physical layout the sink uses.
The raw baseline is built without the sink's internals:

- index settings: `elasticsearch_store.INDEX_SETTINGS`, the settings the sink creates its year indices with (1
  shard, no periodic refresh), with the benchmark's 0 replicas; after its bulk the raw side refreshes explicitly,
  as the sink does before counting: the same refresh settings on both sides (issue 17/18: the raw side used to
  load with the default 1 s refresh while the store turned refresh off);
- mappings: read back from an index the sink made (`get_mapping` on its read alias), so exactly the sink's;
- documents: the frame's rows as JSON-ready dicts by declared type, encoded by the sink's own
  `elasticsearch_store.json_values` (the same trick on both sides), `_id` = the key value, built before any clock
  starts.
"""

from __future__ import annotations

import contextlib
import json
import os
import threading
import time
from collections.abc import Iterator
from dataclasses import dataclass

import pandas as pd
from elasticsearch import Elasticsearch, helpers

from idem_platform.storage import elasticsearch_store
from idem_platform.storage.schema import TableDeclaration
from idem_platform.storage.search_client import ElasticsearchResource

# The sink's index settings, with the 0 replicas both sides of the benchmarks use (`ElasticsearchIndexSink(es, replicas=0)`).
INDEX_SETTINGS: dict = {**elasticsearch_store.INDEX_SETTINGS, "number_of_replicas": 0}
INDEX_SETTINGS_SOURCE = "elasticsearch_store.INDEX_SETTINGS"
BULK_CHUNK_DOCS: int = getattr(elasticsearch_store, "BULK_CHUNK_DOCS", 2_000)


# ------------------------------------------------------------------------------------------------- server


@dataclass
class SearchServer:
    es: ElasticsearchResource
    where: str
    pid: int | None  # the local server's process (None: IDEM_ES_URL, memory not measurable)


@contextlib.contextmanager
def search_server() -> Iterator[SearchServer]:
    """IDEM_ES_URL (as `ElasticsearchResource()`), else a new local osmem server, stopped at the end."""
    if os.environ.get("IDEM_ES_URL"):
        yield SearchServer(ElasticsearchResource(), "IDEM_ES_URL", None)
        return
    from osmem_server import OsmemServer

    with OsmemServer.start(freeze=False, japanese=False) as server:
        es = ElasticsearchResource(url=server.url, plain_json=True)
        yield SearchServer(es, f"local osmem {server.version}", server.pid)


def shared_server() -> bool:
    """True when IDEM_ES_URL names a cluster: every side then runs on that one server."""
    return bool(os.environ.get("IDEM_ES_URL"))


# ------------------------------------------------------------------------------------------- server memory


def _status_kib(pid: int, field: str) -> int:
    with open(f"/proc/{pid}/status") as status:
        for line in status:
            if line.startswith(field + ":"):
                return int(line.split()[1])
    raise RuntimeError(f"{field} not in /proc/{pid}/status (Linux only)")


class ServerMemory:
    """The search server's RSS while one write runs: `start()` before it, `stop()` after it, then `peak`.

    Two readings, the larger is kept: the kernel's high-water mark (VmHWM, reset to the current RSS at `start`
    through `/proc/<pid>/clear_refs` when permitted; when not, it is the server's lifetime peak, which is why each
    measured side gets a fresh server) and VmRSS sampled every `interval` seconds in a thread."""

    def __init__(self, pid: int, interval: float = 0.05):
        self.pid, self.interval = pid, interval
        self.before = self.peak = 0
        self.hwm_reset = False
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None
        self._sampled = 0

    def start(self) -> None:
        try:
            with open(f"/proc/{self.pid}/clear_refs", "w") as clear_refs:
                clear_refs.write("5")
            self.hwm_reset = True
        except OSError:
            self.hwm_reset = False
        self.before = self._sampled = _status_kib(self.pid, "VmRSS") * 1024
        self._thread = threading.Thread(target=self._sample, daemon=True)
        self._thread.start()

    def _sample(self) -> None:
        while not self._stop.wait(self.interval):
            self._sampled = max(self._sampled, _status_kib(self.pid, "VmRSS") * 1024)

    def stop(self) -> int:
        self._stop.set()
        assert self._thread is not None
        self._thread.join()
        self._sampled = max(self._sampled, _status_kib(self.pid, "VmRSS") * 1024)
        self.peak = max(self._sampled, _status_kib(self.pid, "VmHWM") * 1024)
        return self.peak


# ------------------------------------------------------------------------------------------------- raw side


def sink_mappings(client: Elasticsearch, read_alias: str) -> dict:
    """The mappings of an index the sink made (behind its read alias): what the raw index is created with."""
    found = client.indices.get_mapping(index=read_alias).body
    return next(iter(found.values()))["mappings"]


def raw_documents(frame: pd.DataFrame, decl: TableDeclaration, index: str) -> list[dict]:
    """Every row as a bulk action into `index`, `_id` = the key value (a JSON array for a composite key)."""
    columns = {c.name: elasticsearch_store.json_values(frame[c.name], c.type) for c in decl.columns}
    keys = [columns[k] for k in decl.key]
    if len(keys) == 1:
        ids = [v if isinstance(v, str) else json.dumps(v) for v in keys[0]]
    else:
        ids = [json.dumps(list(values), ensure_ascii=False, separators=(",", ":")) for values in zip(*keys)]
    names = decl.names
    return [
        {"_index": index, "_id": doc_id, "_source": dict(zip(names, values))}
        for doc_id, *values in zip(ids, *(columns[n] for n in names))
    ]


def raw_bulk(client: Elasticsearch, index: str, documents: list[dict], mappings: dict) -> float:
    """The baseline, timed: create `index` with the sink's settings and mappings, `helpers.bulk` the documents
    (the sink's chunk size), refresh (as the sink does before counting). The index must not exist; the caller
    deletes it outside the clock."""
    start = time.perf_counter()
    client.indices.create(index=index, settings=INDEX_SETTINGS, mappings=mappings)
    indexed, errors = helpers.bulk(client, documents, chunk_size=BULK_CHUNK_DOCS)
    client.indices.refresh(index=index)
    elapsed = time.perf_counter() - start
    assert indexed == len(documents) and not errors, (indexed, errors)
    return elapsed


def delete_indices(client: Elasticsearch, pattern: str) -> None:
    """Delete every index matching `pattern` by name (clusters may refuse wildcard deletes)."""
    names = sorted(client.indices.get(index=pattern, expand_wildcards="open,closed", ignore_unavailable=True).body)
    for start in range(0, len(names), 40):
        client.indices.delete(index=",".join(names[start : start + 40]), ignore_unavailable=True)
