"""Elasticsearch index sink: one physical index per (asset, day, write), published by moving two aliases.

    people_search-2026.01.05-1a2b3c4d-9f8e7d   the physical index one write of one day created
    people_search-2026.01.05                   the day alias: the published day partition
    people_search                              the read alias: every published day of the asset

- prepare: put the asset's index template (`<asset>-*`, 1 shard, `dynamic: strict` mappings from the declared
  columns). Composable templates never merge, so the create call below repeats the mappings: a higher-priority
  template of someone else cannot silently change the types. Schema evolution: a declared type that differs from
  the template's mapping is refused (the message every sink gives); a new column is added (older days' documents
  read it as null); a dropped column stays in the template (so it cannot come back with another type) and is
  left out of reads. A key change needs no migration: each day is a new index whose `_id`s come from the key.
- stage: first delete the day's orphans (physical indices of the day under neither alias: leftovers of crashed
  writes; the partition lock is held, so no live writer owns them). Then create a new index per day (0 replicas,
  refresh off) and stream the frame into it with `helpers.streaming_bulk`: documents are generated in row
  batches, never built as one body, with a deterministic `_id` from the declared key (so a retried chunk
  overwrites instead of duplicating). Rejected documents fail the write with the asset, day, first failing ids
  and the server's reason; the staged indices are deleted.
- verify: refresh, then every staged index counts exactly the frame's rows of its day. With deterministic ids,
  duplicated keys would collapse into fewer documents, so equal counts also prove the key unique.
- publish: restore refresh interval and replicas on the staged indices, then ONE `_aliases` request moves the
  day alias and the read alias of every day from the old physical index to the new one: readers see the old
  day or the new one, never a mix and never a gap. The request is a compare-and-swap: `stage` noted, under the
  partition lock, which index each day alias pointed at; the request removes the aliases from exactly that index
  with `must_exist: true`, so if another writer moved them since (a writer whose lock was lost, or the new owner
  of a lost lock) the whole request fails and nothing moves (`StalePublish`). A day that had no index has nothing
  to condition on: its alias is read once more right before the request. Then the old physical indices are deleted. The settings are
  restored *before* the swap so the alias only ever points at an index in its final state (a crash between the
  two leaves an orphan, which the next write removes, instead of a live index without replicas); all documents
  are already visible (explicit refresh), so the refresh interval changes nothing a reader sees. If the alias
  request fails ambiguously (a timeout), the aliases are read back: a swap that did happen is a success, so
  `discard` never deletes a live index. Nothing after the swap raises: a failed delete leaves an orphan.
- discard: delete the staged indices (never one a day alias points at).
- read: `helpers.scan` (scroll; point-in-time search is not portable to OpenSearch) through the day aliases,
  through `TableDeclaration.coerce`: the same frame, so the same fingerprint, as the one published.

A day without rows is published as an empty index under the day alias, so its old documents disappear.
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
from elastic_transport import ApiError, TransportError
from elasticsearch import NotFoundError, helpers

from .audit import ValueLimit, non_finite_floats, outside_instants, string_bytes_over
from .faults import fault_point
from .search_client import ElasticsearchResource
from .partition_store import (
    AssetTarget,
    PartitionIOManager,
    PartitionSink,
    StagedVersions,
    StalePublish,
    type_change_refused,
)
from .schema import LOGICAL_TYPES, PARTITION_COLUMN, TableDeclaration

# Above the built-in templates of Elasticsearch (priority 100, e.g. `logs-*-*`): patterns that overlap at equal
# priority are refused, and an asset called `logs` must not have its indices turned into a data stream.
TEMPLATE_PRIORITY = 500
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


class ElasticsearchIndexSink(PartitionSink):
    name = "elasticsearch"
    value_limits = VALUE_LIMITS

    def __init__(self, es: ElasticsearchResource, *, replicas: int = 1, bulk_chunk_docs: int = BULK_CHUNK_DOCS):
        self.es, self.replicas, self.bulk_chunk_docs = es, replicas, bulk_chunk_docs
        self.client = es.client()
        self._staged: dict[tuple[str, str], str] = {}  # (asset, day) -> the index this sink staged (publishes)

    # names ------------------------------------------------------------------------------------------------

    @staticmethod
    def read_alias(target: AssetTarget) -> str:
        """The asset key, prefix segments joined by `.` (`sales/orders` -> `sales.orders`): no asset name holds a
        `.`, so distinct keys give distinct indices."""
        name = ".".join(target.asset.split("/")).lower()
        if not re.fullmatch(r"[a-z0-9][a-z0-9_]*(\.[a-z0-9_]+)*", name):
            raise ValueError(f"asset {target.asset!r} cannot name an index: it must start with a letter or digit")
        return name

    def day_alias(self, target: AssetTarget, day: str) -> str:
        return f"{self.read_alias(target)}-{day.replace('-', '.')}"

    def template_name(self, target: AssetTarget) -> str:
        return f"idem-{self.read_alias(target)}"

    def new_index(self, target: AssetTarget, day: str, run_id: str) -> str:
        run = re.sub(r"[^a-z0-9]", "", run_id.lower())[:8] or "run"
        return f"{self.day_alias(target, day)}-{run}-{secrets.token_hex(3)}"

    def store(self, target: AssetTarget) -> str:
        """The asset's read alias (physical indices change on every write; the alias does not)."""
        return self.read_alias(target)

    def location(self, target: AssetTarget, day: str) -> str:
        """The physical index that holds the day: the one this write staged (and publishes), else the live one."""
        staged = self._staged.get((target.asset, day))
        if staged:
            return staged
        current = self.client.indices.get_alias(index=self.day_alias(target, day), ignore_unavailable=True).body
        return next(iter(current), self.day_alias(target, day))

    @staticmethod
    def mappings(decl: TableDeclaration) -> dict:
        return {"dynamic": "strict", "properties": {c.name: dict(c.logical.elasticsearch) for c in decl.columns}}

    # verbs ------------------------------------------------------------------------------------------------

    def prepare(self, conn, target: AssetTarget) -> None:
        mappings = self.mappings(target.decl)
        mappings["properties"] = {**self._refuse_type_changes(target), **mappings["properties"]}
        self.client.indices.put_index_template(
            name=self.template_name(target),
            index_patterns=[f"{self.read_alias(target)}-*"],
            priority=TEMPLATE_PRIORITY,
            template={"settings": {"number_of_shards": 1}, "mappings": mappings},
        )

    def _refuse_type_changes(self, target: AssetTarget) -> dict:
        """A declared type must be the one the asset's template maps (the published days' indices were made from
        it): the same refusal, with the same message, as the other sinks. Fields the template has and the
        declaration does not (dropped columns) stay in the template, so declaring one again with another type is
        refused too; new columns are added. Returns the dropped columns' mappings (kept in the template)."""
        try:
            found = self.client.indices.get_index_template(name=self.template_name(target)).body
        except NotFoundError:
            return {}
        templates = found.get("index_templates") or []
        if not templates:
            return {}
        properties = templates[0]["index_template"].get("template", {}).get("mappings", {}).get("properties", {})
        by_mapping = {json.dumps(t.elasticsearch, sort_keys=True): name for name, t in LOGICAL_TYPES.items()}
        for col in target.decl.columns:
            mapped = properties.get(col.name)
            if mapped is None or mapped == col.logical.elasticsearch:
                continue
            old = by_mapping.get(json.dumps(mapped, sort_keys=True), json.dumps(mapped, sort_keys=True))
            raise type_change_refused(target.asset, col.name, old, col.type, f"the index template {self.template_name(target)}")
        return {name: m for name, m in properties.items() if name not in target.decl.names}

    def orphans(self, target: AssetTarget, day: str) -> list[str]:
        """Physical indices of the day under neither alias: leftovers of crashed writes."""
        live = {self.day_alias(target, day), self.read_alias(target)}
        pattern = f"{self.day_alias(target, day)}-*"
        found = self.client.indices.get_alias(index=pattern, expand_wildcards="open,closed").body
        return sorted(index for index, info in found.items() if not live & set(info.get("aliases", {})))

    def versions(self, target: AssetTarget, days: Sequence[str]) -> dict[str, str | None]:
        """The physical index under each day alias (None: none; several, comma-joined, only if someone else added
        the alias to more)."""
        aliases = {self.day_alias(target, day): day for day in days}
        holders: dict[str, list[str]] = {day: [] for day in days}
        for names in _batched(list(aliases)):
            found = self.client.indices.get_alias(index=names, ignore_unavailable=True).body
            for index, info in found.items():
                for alias in info.get("aliases", {}):
                    if alias in aliases:
                        holders[aliases[alias]].append(index)
        return {day: ",".join(sorted(indices)) or None for day, indices in holders.items()}

    def stage(self, conn, target, days, frame, run_id) -> StagedVersions:
        staged = StagedVersions(where={}, versions={}, expected=self.versions(target, days))
        try:
            for day in days:
                orphans = self.orphans(target, day)
                if orphans:
                    _log.info(f"{target.asset} {day}: deleting orphan indices of crashed writes: {orphans}")
                    for names in _batched(orphans):
                        self.client.indices.delete(index=names, ignore_unavailable=True)
                staged.where[day] = staged.versions[day] = self.new_index(target, day, run_id)
                self._staged[(target.asset, day)] = staged.where[day]
                self.client.indices.create(
                    index=staged.where[day],
                    settings={"number_of_shards": 1, "number_of_replicas": 0, "refresh_interval": "-1"},
                    mappings=self.mappings(target.decl),
                )
            self._bulk_load(target, staged.where, frame)
        except BaseException:
            self.discard(target, staged)
            raise
        return staged

    def _actions(self, target: AssetTarget, staged: dict[str, str], frame: pd.DataFrame) -> Iterator[dict]:
        decl = target.decl
        names = decl.names
        for start in range(0, len(frame), ROW_BATCH):
            batch = frame.iloc[start : start + ROW_BATCH]
            columns = {c.name: json_values(batch[c.name], c.type) for c in decl.columns}
            ids = document_ids([columns[k] for k in decl.key])
            indices = [staged[day] for day in columns[PARTITION_COLUMN]]
            for index, doc_id, *values in zip(indices, ids, *(columns[n] for n in names)):
                yield {"_index": index, "_id": doc_id, "_source": dict(zip(names, values))}

    def _bulk_load(self, target: AssetTarget, staged: dict[str, str], frame: pd.DataFrame) -> None:
        day_of = {index: day for day, index in staged.items()}
        failed: dict[str, int] = {}
        shown: list[str] = []
        results = helpers.streaming_bulk(
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
                day = day_of.get(result.get("_index"), "?")
                failed[day] = failed.get(day, 0) + 1
                if len(shown) < SHOWN_FAILURES:
                    shown.append(f"{day} id {result.get('_id')!r}: {_reason(result.get('error'))}")
        except (ApiError, TransportError) as exc:
            raise BulkIndexingError(
                f"asset {target.asset!r}: bulk load of {', '.join(staged)} failed: {exc}. Nothing was published."
            ) from exc
        if failed:
            per_day = ", ".join(f"{day}: {n}" for day, n in sorted(failed.items()))
            raise BulkIndexingError(
                f"asset {target.asset!r}: the search cluster rejected {sum(failed.values())} documents "
                f"(per day: {per_day}); first failures: " + "; ".join(shown)
                + ". Nothing was published; fix the values or the declared column types and rerun."
            )

    def verify_staged(self, conn, target, staged: StagedVersions, digests) -> None:
        staged = staged.where
        indices = list(staged.values())
        for names in _batched(indices):
            self.client.indices.refresh(index=names)
        wrong = {}
        for day, index in staged.items():
            response = self.client.count(index=index).body
            if response["count"] != digests[day].rows or response.get("_shards", {}).get("failed"):
                wrong[day] = (response["count"], digests[day].rows)
        if wrong:
            raise StagingMismatch(
                f"asset {target.asset!r}: staged document counts differ from the frame's rows "
                f"(day: (count, rows)): {wrong}; duplicate keys collapse into one document, check the key"
            )

    def publish(self, conn, target, staged: StagedVersions) -> None:
        read_alias = self.read_alias(target)
        indices = staged.where
        day_aliases = {day: self.day_alias(target, day) for day in indices}
        try:
            for names in _batched(list(indices.values())):
                self.client.indices.put_settings(
                    index=names, settings={"index": {"refresh_interval": None, "number_of_replicas": self.replicas}}
                )
        except NotFoundError as exc:  # a newer owner of the day deleted this write's staged index as an orphan
            raise self._stale(target, {day: "staged index removed" for day in indices}, exc) from None
        first = [day for day in indices if staged.expected[day] is None]
        now = self.versions(target, first)
        moved = {day: now[day] for day in first if now[day] is not None}
        if moved:
            raise self._stale(target, moved)
        actions: list[dict] = []
        old = sorted({index for day in indices if staged.expected[day] for index in staged.expected[day].split(",")})
        holding = self.client.indices.get_alias(index=",".join(old), ignore_unavailable=True).body if old else {}
        for day, expected in staged.expected.items():
            for index in (expected or "").split(",") if expected else ():
                actions.append({"remove": {"index": index, "alias": day_aliases[day], "must_exist": True}})
        for index in old:
            if read_alias in holding.get(index, {}).get("aliases", {}):
                actions.append({"remove": {"index": index, "alias": read_alias, "must_exist": True}})
        for day, index in indices.items():
            actions.append({"add": {"index": index, "alias": day_aliases[day]}})
            actions.append({"add": {"index": index, "alias": read_alias}})
        try:
            self.client.indices.update_aliases(actions=actions)
        except (ApiError, TransportError) as exc:
            # An ambiguous failure (a timeout) may have moved the aliases: read them back before deciding.
            if not self._aliases_point_at(indices, day_aliases):
                if isinstance(exc, ApiError) and exc.status_code in (404, 409):  # a `must_exist` removal refused
                    raise self._stale(target, {day: "moved" for day in indices}, exc) from None
                raise
            _log.warning(f"{target.asset}: the alias request failed, but the aliases did move: published")
        superseded = sorted(set(old) - set(indices.values()))
        try:
            for names in _batched(superseded):
                self.client.indices.delete(index=names, ignore_unavailable=True)
        except (ApiError, TransportError) as exc:
            _log.warning(f"{target.asset}: superseded {superseded} not deleted ({exc}); the next write will")

    @staticmethod
    def _stale(target: AssetTarget, moved: dict, cause: BaseException | None = None) -> StalePublish:
        reason = f" ({str(cause).splitlines()[0][:200]})" if cause else ""
        return StalePublish(
            f"asset {target.asset!r}: another writer moved the day alias of {', '.join(sorted(moved))} since this write "
            f"took the partition lock{reason}; the alias request was refused whole, nothing was published"
        )

    def _aliases_point_at(self, staged: dict[str, str], day_aliases: dict[str, str]) -> bool:
        try:
            current: dict[str, dict] = {}
            for names in _batched(list(day_aliases.values())):
                current.update(self.client.indices.get_alias(index=names, ignore_unavailable=True).body)
        except (ApiError, TransportError):
            return False
        return all(day_aliases[day] in current.get(index, {}).get("aliases", {}) for day, index in staged.items())

    def discard(self, target, staged: StagedVersions) -> None:
        """Delete the staged indices, best effort (an index left behind is an orphan the next write removes)."""
        staged = staged.where if staged else {}
        if not staged:
            return
        try:
            live = set()
            for names in _batched(list(staged.values())):
                found = self.client.indices.get_alias(index=names, ignore_unavailable=True).body
                live |= {index for index, info in found.items() if info.get("aliases")}
            doomed = [index for index in staged.values() if index not in live]
            for names in _batched(doomed):
                self.client.indices.delete(index=names, ignore_unavailable=True)
        except (ApiError, TransportError) as exc:
            _log.warning(f"{target.asset}: could not delete staged indices {sorted(staged.values())} ({exc})")

    def read(self, target: AssetTarget, days: Sequence[str]) -> pd.DataFrame:
        decl = target.decl
        if not days:
            return decl.empty_frame()
        missing = [day for day in days if not self.client.indices.exists_alias(name=self.day_alias(target, day))]
        if missing:
            raise PartitionNotFound(
                f"asset {target.asset!r}: no index under the day alias {self.day_alias(target, missing[0])} "
                f"for day(s) {', '.join(missing)}; materialize the partition first"
            )
        sources: list[dict] = []
        for day in days:
            hits = helpers.scan(self.client, index=self.day_alias(target, day), size=SCAN_PAGE, scroll="2m")
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
        what = f"index {self.read_alias(target)}, days {days[0]}..{days[-1]}"
        frame = decl.coerce(pd.DataFrame(columns), what=what)
        return frame.sort_values(list(decl.partition_key), ignore_index=True)


def _reason(error: Any) -> str:
    if isinstance(error, dict):
        cause = error.get("caused_by") or {}
        text = f"{error.get('type')}: {error.get('reason')}"
        return text + (f" ({cause.get('reason')})" if cause.get("reason") else "")
    return str(error)[:300]


class ElasticsearchPartitionIOManager(PartitionIOManager):
    """Daily partitions of an asset as Elasticsearch indices: `<asset>-YYYY.MM.DD` per day, `<asset>` for all."""

    enforces_key: ClassVar[bool] = True  # one row per key by construction: no `unique_key` check

    es: ElasticsearchResource
    replicas: int = 1
    bulk_chunk_docs: int = BULK_CHUNK_DOCS

    def sink(self) -> ElasticsearchIndexSink:
        return ElasticsearchIndexSink(self.es, replicas=self.replicas, bulk_chunk_docs=self.bulk_chunk_docs)
