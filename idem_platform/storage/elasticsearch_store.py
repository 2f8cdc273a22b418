"""Elasticsearch sink: one physical index per asset per year, days published by moving filtered aliases.

    people_search-2026                     the physical index of 2026 (`index_period="month"`: people_search-2026.01)
    people_search-2026.01.05               the day alias: filtered to the day's published version
    people_search                          the read alias: every published day of the asset, once

Names, markers and the layout read back are in `search_layout`. The shard count grows with the years, not the
days: Elasticsearch's default `cluster.max_shards_per_node` (1,000) allows hundreds of asset-years, where one
index per day reached it with two assets backfilled for 18 months.

- prepare: put the asset's index template (`<asset>-*`, 1 shard, `dynamic: strict` mappings from the declared
  columns plus `idem_version`). Schema evolution: a declared type that differs from the template's mapping is
  refused (the message every sink gives); a new column is added to the template and to the existing indices
  (older days read it as null); a dropped column stays in the template (so it cannot come back with another type)
  and is left out of reads. A key change needs no migration: a day's version is written whole.
- stage (under the partition lock): claim the days (their marker aliases replaced by this write's, in one request
  conditional on the markers read: a writer that staged a day before its lock was lost can no longer publish it),
  delete the days' garbage (documents of any version but the published one: leftovers of crashed or stale
  writes), then stream the frame into the period indices with `helpers.streaming_bulk`: one stream for all the
  transaction's days, documents generated in row batches with `idem_version` = `<day>@<write token>` and a
  deterministic `_id` (version + key), so a retried chunk overwrites instead of duplicating. Rejected documents
  fail the write naming asset, day, first ids and the server's reason; the staged versions are deleted.
- verify: refresh, then one aggregation counts every staged version: each equals the frame's rows of its day
  (ids come from the key, so equal counts also prove the key unique).
- publish: ONE `_aliases` request, under a PostgreSQL advisory lock per period index (writers of other days of the
  same year take turns, `ledger.lock_containers`): every day alias re-filtered to its new version, the read alias
  re-filtered on each period index to the published version of each of its days, the markers renewed. Readers
  of the day alias and of the read alias see the old day or the new one, never both, never neither. The request
  is conditional (`remove ... must_exist: true`) on this write's claims and on each index's generation marker, so
  a stale writer's publish fails whole (`StalePublish`). If it fails ambiguously (a timeout) the aliases are read
  back: a swap that did happen is a success. Then the superseded versions are deleted (`delete_by_query`);
  nothing after the swap raises: what is left is garbage the next write of the day deletes.
- discard: delete the staged versions' documents (never a published version).
- read: `helpers.scan` (scroll; point-in-time search is not portable) through the day aliases, 40 per request
  (Elasticsearch ORs the filters of several aliases of one index), through `TableDeclaration.coerce`.

Compaction: a rewritten day's old documents are deleted right after the swap; Lucene's merges reclaim their
space as the index takes writes (nothing to schedule). An index per period is never rolled over by size: choose
`index_period="month"` for an asset whose year would exceed a shard's sensible size (10-50 GB).

Days published by the earlier layout (one index per day and write) keep reading through the same aliases; the
next write of such a day moves it into its period index, in the same one request, and deletes the old index.
`idem search-migrate` rewrites every such day that way, atomically per day.

A day without rows is published as a version without documents, so its old documents disappear.
Index and alias names are the asset key lower-cased, prefix segments joined by `.` (`sales/orders` ->
`sales.orders`; Elasticsearch names are lower-case).

Values travel as JSON by declared type: dates `YYYY-MM-DD`, timestamps UTC ISO with microseconds
(`2026-01-05T01:02:03.123456Z`), missing values (NA, NaT, NaN) `null`. Infinite floats go as the strings
`Infinity`/`-Infinity`, so the JSON stays valid and the mapping decides: a `double` field rejects them, which
fails the write naming the documents instead of silently storing null. Likewise `date_nanos` (the declared
timestamp mapping) rejects instants before 1970 or after 2262. The audit refuses all three (and keyword values
longer than Lucene's term) before anything is written: `VALUE_LIMITS`.
"""

from __future__ import annotations

import hashlib
import json
import logging
import re
import secrets
from collections.abc import Iterator, Sequence
from typing import Any, ClassVar

import dagster as dg
import numpy as np
import pandas as pd

from pydantic import Field

from .. import settings
from . import ledger
from .audit import ValueLimit, non_finite_floats, outside_instants, string_bytes_over
from .faults import fault_point
from .search_client import ElasticsearchResource
from .search_layout import VERSION_FIELD, SearchLayout, SearchNames, marker_kind, version_token
from .partition_store import (
    TRANSIENT_ATTEMPTS,
    AssetTarget,
    PartitionIOManager,
    PartitionSink,
    StagedVersions,
    StalePublish,
    type_change_refused,
)
from .schema import LOGICAL_TYPES, PARTITION_COLUMN, SchemaError, TableDeclaration

# Above the built-in templates of Elasticsearch (priority 100, e.g. `logs-*-*`): patterns that overlap at equal
# priority are refused, and an asset called `logs` must not have its indices turned into a data stream.
TEMPLATE_PRIORITY = 500
# Every physical index: one shard (a year of a daily asset is far below Elastic's 10-50 GB per shard; `month` for
# more) and no periodic refresh: new versions become visible to the count audit by an explicit refresh, and to
# readers only when the filtered aliases move to them, so a refresh every second would only cost indexing speed.
INDEX_SETTINGS = {"number_of_shards": 1, "refresh_interval": "-1"}
BULK_CHUNK_DOCS = 2_000
ROW_BATCH = 10_000
SCAN_PAGE = 5_000
NAMES_PER_REQUEST = 40  # index names per URL: keeps request lines far below the 4 KB HTTP limit
MAX_ID_BYTES = 512
KEYWORD_MAX_BYTES = 32_766  # Lucene's longest term: a longer keyword value fails the document

VALUE_LIMITS = (
    ValueLimit(
        "elasticsearch: date_nanos within 1970-01-01..2262-04-11", outside_instants(
            "1970-01-01T00:00:00", "2262-04-11T23:47:16.854775", types=("timestamp",)
        ),
        "the declared timestamp mapping is date_nanos, which holds instants from 1970 to 2262-04-11 only",
    ),
    ValueLimit(
        "elasticsearch: finite doubles", non_finite_floats,
        "a double field holds no Infinity (JSON has none); store it as null or a sentinel in the asset",
    ),
    ValueLimit(
        f"elasticsearch: keyword values of at most {KEYWORD_MAX_BYTES:,} bytes", string_bytes_over(KEYWORD_MAX_BYTES),
        f"a keyword field holds values of at most {KEYWORD_MAX_BYTES:,} UTF-8 bytes (Lucene's term limit)",
    ),
)
SHOWN_FAILURES = 5

_log = logging.getLogger("idem_platform.storage.elasticsearch")


class _ClientLibrary:
    """The `elasticsearch` client library's names this module uses, imported at first use: a run that writes no
    search sink does not load the library (~0.15 s of every run's start-up)."""

    def __getattr__(self, name: str):
        import elastic_transport
        import elasticsearch
        from elasticsearch import helpers

        names = {"ApiError": elastic_transport.ApiError, "TransportError": elastic_transport.TransportError,
                 "NotFoundError": elasticsearch.NotFoundError, "helpers": helpers}
        if name not in names:
            raise AttributeError(name)
        setattr(self, name, names[name])
        return names[name]


_lib = _ClientLibrary()


# ------------------------------------------------------------------------------------------------ JSON values


def json_values(series: pd.Series, type_name: str) -> list:
    """A column (in its declared dtype) as JSON-ready Python values; every missing value is None."""
    if type_name in ("string", "int", "bool"):
        return series.to_numpy(dtype=object, na_value=None).tolist()
    if type_name == "float":
        values = series.to_numpy(dtype="float64")
        out = values.astype(object)
        out[np.isnan(values)] = None
        infinite = np.isinf(values)
        if infinite.any():
            out[infinite] = np.where(values[infinite] > 0, "Infinity", "-Infinity")
        return out.tolist()
    if type_name in ("date", "timestamp"):
        if type_name == "timestamp":
            stamps = series.dt.tz_convert("UTC").dt.tz_localize(None).to_numpy().astype("datetime64[us]")
            text = np.char.add(np.datetime_as_string(stamps, unit="us"), "Z")
        else:
            stamps = series.to_numpy().astype("datetime64[D]")
            text = np.datetime_as_string(stamps, unit="D")
        out = text.astype(object)
        out[np.isnat(stamps)] = None
        return out.tolist()
    raise ValueError(f"unknown logical type {type_name!r}")  # pragma: no cover - TableDeclaration rejects it


def document_ids(key_columns: list[list]) -> list[str]:
    """Deterministic `_id`s: the key value itself, a JSON array for a composite key.

    An empty or over-long id (Elasticsearch refuses both, failing the whole bulk request) becomes `~` + the
    SHA-256 of the key; plain ids never start with `~`, so the mapping stays one-to-one.
    """
    if len(key_columns) == 1:
        ids = [v if isinstance(v, str) else json.dumps(v) for v in key_columns[0]]
    else:
        ids = [json.dumps(list(values), ensure_ascii=False, separators=(",", ":")) for values in zip(*key_columns)]
    for i, value in enumerate(ids):
        too_long = len(value) > MAX_ID_BYTES // 4 and len(value.encode()) > MAX_ID_BYTES
        if not value or value[0] == "~" or too_long:
            ids[i] = "~" + hashlib.sha256(value.encode()).hexdigest()
    return ids


def document_id(version: str, key_id: str) -> str:
    """A document's `_id`: its version and its key id (`document_ids`), so a day's versions coexist in one index
    and a retried bulk chunk overwrites its own documents. An over-long one becomes `~` + its SHA-256."""
    doc_id = f"{version}/{key_id}"
    if len(doc_id) > MAX_ID_BYTES // 4 and len(doc_id.encode()) > MAX_ID_BYTES:
        return "~" + hashlib.sha256(doc_id.encode()).hexdigest()
    return doc_id


def _batched(names: Sequence[str], size: int = NAMES_PER_REQUEST) -> Iterator[str]:
    for start in range(0, len(names), size):
        yield ",".join(names[start : start + size])


# ------------------------------------------------------------------------------------------------------- sink


class BulkIndexingError(RuntimeError):
    """The cluster rejected documents of a staged day; nothing was published."""


class StagingMismatch(RuntimeError):
    pass


class PartitionNotFound(LookupError):
    pass


class VersionMoved(RuntimeError):
    """A write pinned to the versions it read (`pinned_versions`, e.g. `idem search-migrate`) found another version
    live under the partition lock; nothing was staged."""


class ElasticsearchIndexSink(PartitionSink):
    name = "elasticsearch"
    value_limits = VALUE_LIMITS

    def __init__(self, es: ElasticsearchResource, *, replicas: int = 1, bulk_chunk_docs: int = BULK_CHUNK_DOCS,
                 period: str = "year", days_per_transaction: int | None = None,
                 pinned_versions: dict[str, str | None] | None = None):
        self.es, self.replicas, self.bulk_chunk_docs, self.period = es, replicas, bulk_chunk_docs, period
        self.pinned_versions = pinned_versions  # stage refuses a day whose live version is another (VersionMoved)
        self.client = es.client()
        self.max_days_per_transaction = days_per_transaction or settings.current().pg_days_per_transaction or None
        self._staged: dict[tuple[str, str], str] = {}  # (asset, day) -> "<index>/<version>" this sink staged
        self._mappings: dict[str, dict] = {}  # asset -> the mappings of its indices (declared + dropped columns)

    # names ------------------------------------------------------------------------------------------------

    def names(self, target: AssetTarget) -> SearchNames:
        return SearchNames(index_base(target.asset), self.period)

    def read_alias(self, target: AssetTarget) -> str:
        return self.names(target).read_alias

    def day_alias(self, target: AssetTarget, day: str) -> str:
        return self.names(target).day_alias(day)

    def template_name(self, target: AssetTarget) -> str:
        return f"idem-{self.read_alias(target)}"

    def store(self, target: AssetTarget) -> str:
        """The asset's read alias (physical indices and versions change; the alias does not)."""
        return self.read_alias(target)

    def location(self, target: AssetTarget, day: str) -> str:
        """`<physical index>/<version>` of the day: the one this write staged (and publishes), else the live one."""
        staged = self._staged.get((target.asset, day))
        if staged:
            return staged
        names = self.names(target)
        held = self.layout(target).days.get(day) or {}
        return next((f"{index}/{version}" for index, version in held.items()), names.day_alias(day))

    def mappings(self, decl: TableDeclaration) -> dict:
        properties = {c.name: dict(c.logical.elasticsearch) for c in decl.columns}
        return {"dynamic": "strict", "properties": {**properties, VERSION_FIELD: {"type": "keyword"}}}

    def layout(self, target: AssetTarget) -> SearchLayout:
        """Every index and alias of the asset, in one request."""
        names = self.names(target)
        try:
            found = self.client.indices.get_alias(
                index=names.pattern, expand_wildcards="open,closed", ignore_unavailable=True, allow_no_indices=True
            ).body
        except _lib.NotFoundError:
            found = {}
        return SearchLayout.parse(names, found)

    # verbs ------------------------------------------------------------------------------------------------

    def prepare(self, conn, target: AssetTarget) -> None:
        if VERSION_FIELD in target.decl.names:
            raise SchemaError(
                f"asset {target.asset!r}: column {VERSION_FIELD!r} is reserved by the search sink (each document's "
                "write version); rename the column"
            )
        mappings = self.mappings(target.decl)
        dropped, new_columns = self._refuse_type_changes(target)
        mappings["properties"] = {**dropped, **mappings["properties"]}
        self._mappings[target.asset] = mappings
        self.client.indices.put_index_template(
            name=self.template_name(target),
            index_patterns=[self.names(target).pattern],
            priority=TEMPLATE_PRIORITY,
            template={"settings": {"number_of_shards": 1}, "mappings": mappings},
        )
        if new_columns:  # the existing period indices learn the new columns (older days read them as null)
            self.client.indices.put_mapping(
                index=self.names(target).pattern, properties={c: mappings["properties"][c] for c in new_columns},
                ignore_unavailable=True, allow_no_indices=True,
            )

    def _refuse_type_changes(self, target: AssetTarget) -> tuple[dict, list[str]]:
        """A declared type must be the one the asset's template maps (the published days' indices were made from
        it): the same refusal, with the same message, as the other sinks. Fields the template has and the
        declaration does not (dropped columns) stay in the template, so declaring one again with another type is
        refused too. Returns the dropped columns' mappings (kept) and the new columns (added to the indices)."""
        try:
            found = self.client.indices.get_index_template(name=self.template_name(target)).body
        except _lib.NotFoundError:
            return {}, []
        templates = found.get("index_templates") or []
        if not templates:
            return {}, []
        properties = templates[0]["index_template"].get("template", {}).get("mappings", {}).get("properties", {})
        by_mapping = {json.dumps(t.elasticsearch, sort_keys=True): name for name, t in LOGICAL_TYPES.items()}
        new_columns = []
        for col in target.decl.columns:
            mapped = properties.get(col.name)
            if mapped is None:
                new_columns.append(col.name)
            elif mapped != col.logical.elasticsearch:
                old = by_mapping.get(json.dumps(mapped, sort_keys=True), json.dumps(mapped, sort_keys=True))
                raise type_change_refused(target.asset, col.name, old, col.type,
                                          f"the index template {self.template_name(target)}")
        if VERSION_FIELD not in properties:
            new_columns.append(VERSION_FIELD)
        dropped = {name: m for name, m in properties.items() if name not in target.decl.names and name != VERSION_FIELD}
        return dropped, new_columns

    def versions(self, target: AssetTarget, days: Sequence[str]) -> dict[str, str | None]:
        """The version each day alias publishes (None: none)."""
        layout = self.layout(target)
        return {day: layout.version(day) for day in days}

    def stage(self, conn, target, days, frame, run_id) -> StagedVersions:
        """Under the partition lock: claim the days, delete their garbage, bulk-load the new version."""
        names = self.names(target)
        run = re.sub(r"[^a-z0-9]", "", run_id.lower())[:8] or "run"
        token = f"{run}{secrets.token_hex(4)}"
        layout = self._claim(target, days, token)
        if self.pinned_versions is not None:
            moved = [d for d in days if layout.version(d) != self.pinned_versions.get(d)]
            if moved:
                raise VersionMoved(f"asset {target.asset!r}: {', '.join(moved)} changed since read; nothing was staged")
        staged = StagedVersions(
            where={day: (names.period_index(day), names.marker(names.day_alias(day), f"c.{token}")) for day in days},
            versions={day: f"{day}@{token}" for day in days},
            expected={day: layout.version(day) for day in days},
        )
        for day in days:
            self._staged[(target.asset, day)] = f"{staged.where[day][0]}/{staged.versions[day]}"
        try:
            self._delete_garbage(target, staged)
            self._bulk_load(target, staged, frame)
        except BaseException:
            self.discard(target, staged)
            raise
        return staged

    def _claim(self, target: AssetTarget, days: Sequence[str], token: str) -> SearchLayout:
        """Replace every claim marker of `days` with this write's, in one request conditional on those markers
        (`must_exist`): a writer that staged a day earlier (its lock since lost) then fails its publish, so its
        documents are garbage this write may delete. If such a writer published meanwhile, its claim is gone and
        the request fails: the layout is read again. Creates the period indices the days need (each with its
        first generation marker). Returns the layout the claim was made on."""
        names = self.names(target)
        for attempt in range(1, TRANSIENT_ATTEMPTS + 1):
            layout = self.layout(target)
            for index in sorted({names.period_index(day) for day in days} - layout.indices):
                self._create_period_index(target, index)
            actions = [
                {"remove": {"index": index, "alias": marker, "must_exist": True}}
                for day in days for index, marker in layout.markers.get(day, []) if marker_kind(marker) == "c"
            ]
            actions += [
                {"add": {"index": names.period_index(day), "alias": names.marker(names.day_alias(day), f"c.{token}")}}
                for day in days
            ]
            try:
                self.client.indices.update_aliases(actions=actions)
                return layout
            except _lib.ApiError as exc:
                if exc.status_code not in (404, 409) or attempt == TRANSIENT_ATTEMPTS:
                    raise
                _log.info(f"{target.asset}: a day's marker moved while claiming {days[0]}..{days[-1]}; reading again")
        raise AssertionError("unreachable")

    def _create_period_index(self, target: AssetTarget, index: str) -> None:
        mappings = self._mappings.get(target.asset) or self.mappings(target.decl)
        try:
            self.client.indices.create(
                index=index,
                settings={**INDEX_SETTINGS, "number_of_replicas": self.replicas},
                mappings=mappings,
                aliases={SearchNames.marker(index, f"g.{secrets.token_hex(4)}"): {}},
            )
        except _lib.ApiError as exc:
            if exc.status_code != 400 or "already_exists" not in str(exc):
                raise  # another writer created it first: use it

    def _delete_garbage(self, target: AssetTarget, staged: StagedVersions) -> None:
        """The claimed days' documents of any version but the published one: leftovers of crashed or stale
        writes (none of them can publish any more: their claims are gone)."""
        by_index: dict[str, list[str]] = {}
        for day, (index, _) in staged.where.items():
            by_index.setdefault(index, []).append(day)
        for index, days in by_index.items():
            keep = [v for day in days for v in (staged.expected[day] or "").split(",") if v]
            query = {"bool": {"filter": [{"terms": {PARTITION_COLUMN: days}}],
                              "must_not": [{"terms": {VERSION_FIELD: keep}}] if keep else []}}
            self.client.delete_by_query(index=index, query=query, conflicts="proceed", refresh=False,
                                        ignore_unavailable=True)

    def _actions(self, target: AssetTarget, staged: StagedVersions, frame: pd.DataFrame) -> Iterator[dict]:
        decl = target.decl
        names = decl.names
        for start in range(0, len(frame), ROW_BATCH):
            batch = frame.iloc[start : start + ROW_BATCH]
            columns = {c.name: json_values(batch[c.name], c.type) for c in decl.columns}
            keys = document_ids([columns[k] for k in decl.key])
            days = columns[PARTITION_COLUMN]
            for day, key, *values in zip(days, keys, *(columns[n] for n in names)):
                version = staged.versions[day]
                source = dict(zip(names, values))
                source[VERSION_FIELD] = version
                yield {"_index": staged.where[day][0], "_id": document_id(version, key), "_source": source}

    def _bulk_load(self, target: AssetTarget, staged: StagedVersions, frame: pd.DataFrame) -> None:
        failed: dict[str, int] = {}
        shown: list[str] = []
        results = _lib.helpers.streaming_bulk(
            self.client,
            self._actions(target, staged, frame),
            chunk_size=self.bulk_chunk_docs,
            raise_on_error=False,  # collected below, to name asset, day and documents
            max_retries=3,  # on 429 only; deterministic ids make a retried document an overwrite
        )
        first_chunk_done = False
        try:
            for ok, item in results:
                if not first_chunk_done:  # results arrive once a chunk's bulk request has returned
                    first_chunk_done = True
                    fault_point(self.name, "mid_stage", target.asset)
                if ok:
                    continue
                result = next(iter(item.values()))
                version, _, key = str(result.get("_id", "")).partition("/")  # `<day>@<token>/<key id>`
                day = version.split("@", 1)[0] if key else "?"
                failed[day] = failed.get(day, 0) + 1
                if len(shown) < SHOWN_FAILURES:
                    shown.append(f"{day} id {key or result.get('_id')!r}: {_reason(result.get('error'))}")
        except (_lib.ApiError, _lib.TransportError) as exc:
            raise BulkIndexingError(
                f"asset {target.asset!r}: bulk load of {_span(list(staged.where))} failed: {exc}. Nothing was published."
            ) from exc
        if failed:
            per_day = ", ".join(f"{day}: {n}" for day, n in sorted(failed.items()))
            raise BulkIndexingError(
                f"asset {target.asset!r}: the search cluster rejected {sum(failed.values())} documents "
                f"(per day: {per_day}); first failures: " + "; ".join(shown)
                + ". Nothing was published; fix the values or the declared column types and rerun."
            )

    def verify_staged(self, conn, target, staged: StagedVersions, digests) -> None:
        """Refresh, then each day's new version counts exactly the frame's rows of the day (with ids made from the
        key, duplicated keys would collapse into fewer documents: equal counts also prove the key unique)."""
        indices = sorted({index for index, _ in staged.where.values()})
        for names in _batched(indices):
            self.client.indices.refresh(index=names)
        counts = self._version_counts(indices, list(staged.versions.values()))
        wrong = {day: (counts.get(version, 0), digests[day].rows)
                 for day, version in staged.versions.items() if counts.get(version, 0) != digests[day].rows}
        if wrong:
            raise StagingMismatch(
                f"asset {target.asset!r}: staged document counts differ from the frame's rows "
                f"(day: (count, rows)): {wrong}; duplicate keys collapse into one document, check the key"
            )

    def _version_counts(self, indices: Sequence[str], versions: Sequence[str]) -> dict[str, int]:
        counts: dict[str, int] = {}
        for names in _batched(list(indices)):
            response = self.client.search(
                index=names, size=0, query={"terms": {VERSION_FIELD: list(versions)}},
                aggs={"v": {"terms": {"field": VERSION_FIELD, "size": max(len(versions), 1)}}},
            ).body
            if response.get("_shards", {}).get("failed"):
                raise StagingMismatch(f"counting staged documents in {names} failed on a shard: {response['_shards']}")
            for bucket in response["aggregations"]["v"]["buckets"]:
                counts[bucket["key"]] = counts.get(bucket["key"], 0) + bucket["doc_count"]
        return counts

    def publish(self, conn, target, staged: StagedVersions) -> None:
        """One `_aliases` request, conditional on this write's claims and on each period index's generation:
        move every day alias to its new version, refilter the read alias on each index, renew the markers. The
        writers of other days of the same index take turns (`ledger.lock_containers`, held until COMMIT)."""
        names = self.names(target)
        touched = sorted({index for index, _ in staged.where.values()})
        if conn is not None:
            ledger.lock_containers(conn, touched)
        layout = self.layout(target)
        first = [day for day in staged.where if staged.expected[day] is None and layout.version(day) is not None]
        if first:  # a first publish has no version to condition on: published by another writer meanwhile?
            raise self._stale(target, {day: "published" for day in first})
        actions = self._publish_actions(target, names, layout, staged, touched)
        try:
            self.client.indices.update_aliases(actions=actions)
        except (_lib.ApiError, _lib.TransportError) as exc:
            # An ambiguous failure (a timeout) may have moved the aliases: read them back before deciding.
            if not self._published(target, staged):
                if isinstance(exc, _lib.ApiError) and exc.status_code in (404, 409):  # a `must_exist` removal refused
                    raise self._stale(target, {day: "claimed by another writer" for day in staged.where}, exc) from None
                raise
            _log.warning(f"{target.asset}: the alias request failed, but the aliases did move: published")
        self._delete_superseded(target, layout, staged)

    def _publish_actions(self, target, names: SearchNames, layout: SearchLayout, staged: StagedVersions,
                         touched: Sequence[str]) -> list[dict]:
        actions: list[dict] = []
        versions_of = {index: layout.published_versions(index) for index in touched}
        for day, (index, claim) in staged.where.items():
            day_alias = names.day_alias(day)
            # Conditions: this write's claim still stands, and the day still publishes the version it saw.
            actions.append({"remove": {"index": index, "alias": claim, "must_exist": True}})
            for version in (staged.expected[day] or "").split(","):
                if "@" in version:  # a version of this layout: its published marker (else the earlier layout's index)
                    actions.append({"remove": {"index": index, "alias": names.marker(day_alias, "p." + version_token(version)),
                                               "must_exist": True}})
            actions.append({"add": {"index": index, "alias": names.marker(day_alias, "p." + version_token(staged.versions[day]))}})
            for other in layout.earlier_layout_indices([day])[day]:  # the day's per-day index of the earlier layout
                actions.append({"remove": {"index": other, "alias": day_alias, "must_exist": True}})
                if other in layout.read_alias_on:
                    actions.append({"remove": {"index": other, "alias": names.read_alias, "must_exist": True}})
            actions.append({"add": {"index": index, "alias": day_alias,
                                    "filter": {"term": {VERSION_FIELD: staged.versions[day]}}}})
            versions_of[index][day] = staged.versions[day]
        for index in touched:
            for generation in layout.generations.get(index, []):
                actions.append({"remove": {"index": index, "alias": generation, "must_exist": True}})
            actions.append({"add": {"index": index, "alias": SearchNames.marker(index, f"g.{secrets.token_hex(4)}")}})
            published = sorted(versions_of[index].values())
            actions.append({"add": {"index": index, "alias": names.read_alias,
                                    "filter": {"terms": {VERSION_FIELD: published}}}})
        return actions

    def _published(self, target: AssetTarget, staged: StagedVersions) -> bool:
        try:
            layout = self.layout(target)
        except (_lib.ApiError, _lib.TransportError):
            return False
        return all(layout.version(day) == version for day, version in staged.versions.items())

    def _delete_superseded(self, target: AssetTarget, layout: SearchLayout, staged: StagedVersions) -> None:
        """The days' previous versions, and the per-day indices of the earlier layout they leave empty. Never
        raises: what is left is garbage the next write of the day deletes."""
        old: dict[str, list[str]] = {}
        earlier: list[str] = []
        for day, (index, _) in staged.where.items():
            for holder, version in (layout.days.get(day) or {}).items():
                if holder == index:
                    old.setdefault(index, []).append(version)
                else:
                    earlier.append(holder)
        try:
            for index, versions in old.items():
                self.client.delete_by_query(index=index, query={"terms": {VERSION_FIELD: versions}},
                                            conflicts="proceed", refresh=False, ignore_unavailable=True)
            for names in _batched(sorted(set(earlier))):
                self.client.indices.delete(index=names, ignore_unavailable=True)
        except (_lib.ApiError, _lib.TransportError) as exc:
            _log.warning(f"{target.asset}: superseded versions not deleted ({exc}); the next write of the day will")

    @staticmethod
    def _stale(target: AssetTarget, moved: dict, cause: BaseException | None = None) -> StalePublish:
        reason = f" ({str(cause).splitlines()[0][:200]})" if cause else ""
        return StalePublish(
            f"asset {target.asset!r}: another writer claimed or published {', '.join(sorted(moved))} since this write "
            f"took the partition lock{reason}; the alias request was refused whole, nothing was published"
        )

    def discard(self, target, staged: StagedVersions) -> None:
        """Delete the staged versions' documents and withdraw this write's claims, best effort (what is left is
        garbage the next write of the day deletes). Never a published version: only `stage`'s own, and only when
        its publish did not happen."""
        if not staged or not staged.where:
            return
        by_index: dict[str, list[str]] = {}
        for day, (index, _) in staged.where.items():
            by_index.setdefault(index, []).append(staged.versions[day])
        try:
            for index, versions in by_index.items():
                self.client.delete_by_query(index=index, query={"terms": {VERSION_FIELD: versions}},
                                            conflicts="proceed", refresh=False, ignore_unavailable=True)
            layout = self.layout(target)  # only the claims still there (a newer owner may have replaced them)
            live = {marker for markers in layout.markers.values() for _, marker in markers}
            withdrawn = [{"remove": {"index": index, "alias": claim}}
                         for index, claim in staged.where.values() if claim in live]
            if withdrawn:
                self.client.indices.update_aliases(actions=withdrawn)
        except (_lib.ApiError, _lib.TransportError) as exc:
            _log.warning(f"{target.asset}: could not delete the staged versions {sorted(staged.versions.values())} ({exc})")

    def read(self, target: AssetTarget, days: Sequence[str]) -> pd.DataFrame:
        """The published documents of `days`, through their day aliases (40 aliases per scroll)."""
        decl = target.decl
        if not days:
            return decl.empty_frame()
        names = self.names(target)
        layout = self.layout(target)
        missing = [day for day in days if day not in layout.days]
        if missing:
            raise PartitionNotFound(
                f"asset {target.asset!r}: no index under the day alias {names.day_alias(missing[0])} "
                f"for day(s) {', '.join(missing)}; materialize the partition first"
            )
        sources: list[dict] = []
        for aliases in _batched([names.day_alias(day) for day in days]):
            hits = _lib.helpers.scan(self.client, index=aliases, size=SCAN_PAGE, scroll="2m")
            sources.extend(hit["_source"] for hit in hits)
        columns = {}
        for col in decl.columns:
            values = [source.get(col.name) for source in sources]
            if col.type == "int":
                columns[col.name] = pd.array(values, dtype="Int64")  # exact: never through float64
            elif col.type in ("date", "timestamp"):
                text = pd.Series(values, dtype=object)
                columns[col.name] = pd.to_datetime(text, utc=col.type == "timestamp", format="ISO8601")
            elif col.type == "float":
                columns[col.name] = pd.to_numeric(pd.Series(values, dtype=object), errors="raise")
            else:
                columns[col.name] = pd.Series(values, dtype=object)
        what = f"index {names.read_alias}, days {days[0]}..{days[-1]}"
        frame = decl.coerce(pd.DataFrame(columns), what=what)
        return frame.sort_values(list(decl.partition_key), ignore_index=True)


def _span(days: Sequence[str]) -> str:
    return days[0] if len(days) == 1 else f"{days[0]}...{days[-1]} ({len(days)} days)"


def _reason(error: Any) -> str:
    if isinstance(error, dict):
        cause = error.get("caused_by") or {}
        text = f"{error.get('type')}: {error.get('reason')}"
        return text + (f" ({cause.get('reason')})" if cause.get("reason") else "")
    return str(error)[:300]


def index_base(asset: str) -> str:
    """The asset key, prefix segments joined by `.` (`sales/orders` -> `sales.orders`), lower-cased (index names
    must be): no asset name holds a `.` or a `-`, so keys that differ other than by case give distinct indices and
    aliases (`Orders` and `orders` would share them: `code_location.refuse_shared_containers` refuses that)."""
    base = ".".join(asset.split("/")).lower()
    if not re.fullmatch(r"[a-z0-9][a-z0-9_]*(\.[a-z0-9_]+)*", base):
        raise ValueError(f"asset {asset!r} cannot name an index: it must start with a letter or digit")
    return base


class ElasticsearchPartitionIOManager(PartitionIOManager):
    """Daily partitions of an asset in Elasticsearch: one index per asset per year (or month, `index_period`), a
    filtered alias per day (`<asset>-YYYY.MM.DD`) and one for the asset (`<asset>`)."""

    enforces_key: ClassVar[bool] = True  # one row per key by construction: no `unique_key` check

    es: ElasticsearchResource
    replicas: int = 1
    bulk_chunk_docs: int = BULK_CHUNK_DOCS
    index_period: str = Field(default="year", description="one physical index per asset per `year` or `month`: "
                              "a month for assets whose year would exceed ~50 GB (a shard's sensible size)")

    def sink(self) -> ElasticsearchIndexSink:
        return ElasticsearchIndexSink(self.es, replicas=self.replicas, bulk_chunk_docs=self.bulk_chunk_docs,
                                      period=self.index_period)

    def containers_of(self, targets: Sequence[AssetTarget]) -> list[str | None]:
        return [f"search indices and aliases {index_base(target.asset)}*" for target in targets]

    def server_of(self) -> str:
        return repr(self.es)
