"""The stores under test, and the end state a write leaves in them.

`StoreSpec` names one store of one scenario (its own PostgreSQL schema, lake root or index prefix, and a unique asset
name) in a picklable form, so writer and reader processes can rebuild it. It builds the platform's own sink
(`PostgresTableSink`, `LakeSink`, `ElasticsearchIndexSink`), a reader probe (probes.py), and the leftover check
(staging relations, temp files, orphan indices, open transactions, held locks). `visible`, `latest_ledger`,
`stale_publishes` and `ledger_chain_breaks` read the end state back: what each day publishes, and what the ledger
says of it.
"""

from __future__ import annotations

import os
import re
from dataclasses import dataclass
from pathlib import Path

import psycopg

from idem_platform.resources import LakeResource, PostgresResource
from idem_platform.storage import lake_store, ledger, postgres_store
from idem_platform.storage.audit import AuditRules
from idem_platform.storage.elasticsearch_store import ElasticsearchIndexSink
from idem_platform.storage.search_client import ElasticsearchResource
from idem_platform.storage.lake_store import LakeSink
from idem_platform.storage.fingerprint import PartitionDigest, partition_digests
from idem_platform.storage.partition_store import AssetTarget, PartitionSink, published_entries
from idem_platform.storage.schema import PARTITION_COLUMN, TableDeclaration
from idem_platform.storage.search_layout import VERSION_FIELD, marker_kind
from idem_platform_tests.reliability.content import DECL
from idem_platform_tests.reliability.probes import LakeProbe, PostgresProbe, Probe, SearchProbe

STORES = ("postgres", "lake", "elasticsearch")


def declaration(name: str) -> TableDeclaration:
    """The declared columns a store spec names: the suite's own, or a platform asset's."""
    if name == "reliability":
        return DECL
    from idem_platform.pipelines import people

    columns = {"people": people.PEOPLE_COLUMNS, "people_search": people.PEOPLE_COLUMNS, "raw_people": people.RAW_PEOPLE_COLUMNS}
    return TableDeclaration.build(columns[name], ["person_id"])


@dataclass(frozen=True)
class StoreSpec:
    """One store of one scenario, picklable: writer and reader processes rebuild sinks and probes from it."""

    kind: str  # postgres | lake | elasticsearch
    dsn: str  # PostgreSQL: ledger and lock (every sink), the table (postgres)
    asset: str
    schema: str = "warehouse"  # postgres
    lake_root: str = ""  # lake
    es_url: str | None = None  # elasticsearch: None = the environment's IDEM_ES_URL (credentials stay there)
    key: str = "id"
    gen_column: str | None = "gen"  # None: every row is of one unnamed generation "*"
    es_bulk_chunk: int = 50  # small chunks: mid_stage really is mid-bulk
    pg_copy_chunk: int = 50  # small chunks: mid_stage really is mid-COPY
    pg_swap_min_rows: int = 100  # days of this many rows are staged and swapped in, smaller ones written in place
    es_replicas: int = 0
    declaration: str = "reliability"  # see `declaration()`
    reader_isolation: str = ""  # postgres readers: "" (READ COMMITTED, autocommit), REPEATABLE READ, SERIALIZABLE

    @property
    def postgres(self) -> PostgresResource:
        return PostgresResource(dsn=self.dsn)

    def es(self) -> ElasticsearchResource:
        return ElasticsearchResource(url=self.es_url, plain_json=True) if self.es_url else ElasticsearchResource()

    def target(self) -> AssetTarget:
        return AssetTarget(self.asset, declaration(self.declaration), AuditRules())

    def sink(self) -> PartitionSink:
        if self.kind == "postgres":
            return postgres_store.PostgresTableSink(self.postgres, self.schema, swap_min_rows=self.pg_swap_min_rows)
        if self.kind == "lake":
            return LakeSink(LakeResource(root=self.lake_root))
        if self.kind == "elasticsearch":
            return ElasticsearchIndexSink(self.es(), replicas=self.es_replicas, bulk_chunk_docs=self.es_bulk_chunk)
        raise ValueError(self.kind)

    def probe(self) -> Probe:
        return {"postgres": PostgresProbe, "lake": LakeProbe, "elasticsearch": SearchProbe}[self.kind](self)

    # --- end state ---------------------------------------------------------------------------------------------

    def leftovers(self, days: list[str]) -> list[str]:
        """Anything a write may leave behind that a clean run does not: must be [] once a write has succeeded."""
        return {"postgres": _pg_leftovers, "lake": _lake_leftovers, "elasticsearch": _es_leftovers}[self.kind](self, days)

    def ledger(self) -> list[ledger.LedgerEntry]:
        with self.postgres.connect() as conn:
            if not ledger.ledger_exists(conn):
                return []
            return [e for e in ledger.history(conn, self.asset) if e.sink == self.kind and self.owns(e.location)]

    def owns(self, location: str) -> bool:
        """Whether a ledger location is this store's (CLI scenarios share assets' names across scenarios)."""
        if self.kind == "postgres":
            return location.startswith(f"{self.schema}.")
        if self.kind == "lake":
            return location.startswith(self.lake_root)
        return True


def _pg_leftovers(spec: StoreSpec, days: list[str]) -> list[str]:
    found = []
    with psycopg.connect(spec.dsn, autocommit=True) as conn:
        rels = conn.execute(
            """SELECT c.relname, c.relkind FROM pg_class c JOIN pg_namespace n ON n.oid = c.relnamespace
               WHERE n.nspname = %s""", (spec.schema,)
        ).fetchall()
        # the table, its key, and one published partition (+ key) per day: a staging table (`...$s<run>`) is a leftover
        table, base = re.escape(spec.asset), re.escape(postgres_store.PostgresTableSink._base(spec.asset))
        published = re.compile(rf"{table}|{base}(\$p\d{{8}})?\$pkey|{base}\$p\d{{8}}")
        found += [f"relation {spec.schema}.{name} ({kind})" for name, kind in rels if not published.fullmatch(name)]
        temp = conn.execute(
            """SELECT n.nspname || '.' || c.relname FROM pg_class c JOIN pg_namespace n ON n.oid = c.relnamespace
               WHERE n.nspname LIKE 'pg_temp%%' AND c.relkind = 'r'"""
        ).fetchall()
        found += [f"temp table {name}" for (name,) in temp]
        stuck = conn.execute(
            """SELECT pid, state, left(query, 60) FROM pg_stat_activity
               WHERE datname = current_database() AND pid <> pg_backend_pid() AND state LIKE 'idle in transaction%%'"""
        ).fetchall()
        found += [f"open transaction {row}" for row in stuck]
        locks = conn.execute(
            """SELECT pid, objid FROM pg_locks WHERE locktype = 'advisory' AND granted
               AND database = (SELECT oid FROM pg_database WHERE datname = current_database())"""
        ).fetchall()
        found += [f"advisory lock still held {row}" for row in locks]
    return found


def _lake_leftovers(spec: StoreSpec, days: list[str]) -> list[str]:
    folder = Path(spec.lake_root) / spec.asset
    names = sorted(os.listdir(folder)) if folder.exists() else []
    return [f"file {folder / n}" for n in names
            if n != lake_store.SCHEMA_FILE and (n.startswith(".") or not n.endswith(".parquet"))]


def _es_leftovers(spec: StoreSpec, days: list[str]) -> list[str]:
    """Per day: documents of an unpublished version (a crashed or refused write's) and claims no publish
    followed; a day under the day alias of more than one index; an index of the asset under no alias."""
    sink = spec.sink()
    target = spec.target()
    names = sink.names(target)
    layout = sink.layout(target)
    found = []
    period = sorted({names.period_index(d) for d in days} & layout.indices)
    garbage: dict[str, dict[str, int]] = {}
    if period:
        sink.client.indices.refresh(index=",".join(period))
        body = sink.client.search(
            index=",".join(period), size=0, query={"terms": {PARTITION_COLUMN: days}},
            aggs={"v": {"terms": {"field": VERSION_FIELD, "size": 10_000}}},
        ).body
        for bucket in body["aggregations"]["v"]["buckets"]:
            day = bucket["key"].split("@", 1)[0]
            if bucket["key"] != layout.version(day):
                garbage.setdefault(day, {})[bucket["key"]] = bucket["doc_count"]
    for day in days:
        claims = [m for _, m in layout.markers.get(day, []) if marker_kind(m) == "c"]
        if garbage.get(day) or claims:
            found.append(f"day {day}: unpublished versions {garbage.get(day, {})}, claims {claims}")
        if len(layout.days.get(day, {})) > 1:
            found.append(f"day {day} published in {len(layout.days[day])} physical indices: {sorted(layout.days[day])}")
    aliased = {index for held in layout.days.values() for index in held} | set(period)
    found += [f"index {index} under no day alias" for index in sorted(layout.indices - aliased)
              if any(index.startswith(names.day_alias(d) + "-") for d in days)]
    sink.client.close()
    return found


def visible(spec: StoreSpec, days: list[str]) -> dict[str, PartitionDigest]:
    """What the store publishes for each day, read back through the sink and fingerprinted."""
    sink = spec.sink()
    try:
        frame = sink.read(spec.target(), days)
    finally:
        if isinstance(sink, ElasticsearchIndexSink):
            sink.client.close()
    assert not frame.duplicated([PARTITION_COLUMN, spec.key]).any(), f"{spec.kind}: duplicate keys in {days}"
    return partition_digests(frame, declaration(spec.declaration), days)


def latest_ledger(spec: StoreSpec, days: list[str]) -> dict[str, ledger.LedgerEntry]:
    latest = {}
    for entry in spec.ledger():
        if entry.partition in days:
            latest[entry.partition] = entry
    return latest


def resolved_ledger(spec: StoreSpec, days: list[str]) -> dict[str, ledger.LedgerEntry]:
    """The ledger row of each day as readers, downstream loads and `idem verify` resolve it (intents included)."""
    sink = spec.sink()
    try:
        with spec.postgres.connect() as conn:
            return published_entries(sink, conn, spec.target(), days)
    finally:
        if isinstance(sink, ElasticsearchIndexSink):
            sink.client.close()


def stale_publishes(spec: StoreSpec, days: list[str]) -> list[str]:
    """Days whose published content (rows and fingerprint read back) is not what the ledger's latest row of the
    day names: a sink holding a writer the ledger does not name as the latest, or a write that failed after it
    had published. A day with no ledger row must publish nothing. The ledger is read as readers resolve it: an
    unconfirmed intent whose version the sink holds names the day (see `resolved_ledger`)."""
    published, latest = visible(spec, days), resolved_ledger(spec, days)
    found = []
    for day in days:
        entry = latest.get(day)
        named = (entry.row_count, entry.fingerprint) if entry else (0, published[day].fingerprint)
        if (published[day].rows, published[day].fingerprint) != named:
            found.append(f"{spec.kind} {spec.asset} {day}: publishes {published[day].rows} rows "
                         f"{published[day].fingerprint}, the ledger's latest row names "
                         + (f"{entry.row_count} rows {entry.fingerprint} (run {entry.run_id})" if entry else "nothing"))
    return found


def ledger_chain_breaks(entries: list[ledger.LedgerEntry]) -> list[str]:
    """Serialized writers form a chain per day: each row's previous fingerprint is the row before's fingerprint."""
    breaks, last = [], {}
    for e in entries:
        if e.partition in last and e.previous_fingerprint != last[e.partition]:
            breaks.append(f"{e.partition} run {e.run_id}: previous {e.previous_fingerprint} != {last[e.partition]}")
        last[e.partition] = e.fingerprint
    return breaks
