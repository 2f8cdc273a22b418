"""Reader probes: read a store's days the way a user would, one sample at a time.

SQL on the table, a search on the day alias and on the read alias, the lake file: each probe turns what it reads into
an `Observed` (total rows, distinct keys, rows per generation) per day, for a judge (readers.py) to classify.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING

import psycopg
import pyarrow.parquet as pq
from psycopg import sql

from idem_platform.storage.schema import PARTITION_COLUMN

if TYPE_CHECKING:
    from idem_platform_tests.reliability.stores import StoreSpec


@dataclass(frozen=True)
class Observed:
    """One reader sample of one day: total rows, distinct keys, rows per generation."""

    total: int
    distinct: int
    gens: dict[str, int]


class Probe:
    """Reads days the way a user of the store would; `None` for a day that is not there."""

    paths: tuple[str, ...] = ("",)

    def __init__(self, spec: StoreSpec):
        self.spec = spec

    def sample(self, days: list[str]) -> dict[tuple[str, str], Observed | None]:  # (path, day) -> observed
        raise NotImplementedError

    def close(self) -> None:
        pass


class PostgresProbe(Probe):
    """`SELECT partition_date, gen, count(*), count(DISTINCT key)` on the table: one statement, one snapshot."""

    def __init__(self, spec):
        super().__init__(spec)
        self.conn = psycopg.connect(spec.dsn, autocommit=True, application_name="idem_reliability_reader")
        gen = sql.Identifier(spec.gen_column) if spec.gen_column else sql.Literal("*")
        self.query = sql.SQL(
            "SELECT {p}::text, {g}, count(*), count(DISTINCT {k}) FROM {t} WHERE {p} = ANY(%s::date[]) GROUP BY 1, 2"
        ).format(p=sql.Identifier(PARTITION_COLUMN), g=gen, k=sql.Identifier(spec.key),
                 t=sql.Identifier(spec.schema, spec.asset))

    def sample(self, days):
        try:
            rows = self.conn.execute(self.query, (days,)).fetchall()
        except psycopg.errors.UndefinedTable:
            return {("", d): None for d in days}
        out: dict[str, list] = {d: [0, 0, {}] for d in days}
        for day, gen, n, distinct in rows:
            out[day][0] += n
            out[day][1] += distinct  # keys carry their generation: distinct per generation adds up
            out[day][2][gen] = n
        # A day with no rows in the table is either published empty or not there: the judge decides.
        return {("", d): Observed(*v) for d, v in out.items()}

    def close(self):
        self.conn.close()


class LakeProbe(Probe):
    """Read the day's Parquet file through one open file descriptor.

    One descriptor matters: `pq.read_table(path)` / `pd.read_parquet(path)` open the file twice (footer, then
    pages), and an `os.replace` between the two opens mixes two files' bytes into a read error
    (test_findings.py; `LakeSink.read` reads through one descriptor too). Through one descriptor a reader
    holds one inode: the old file or the new one.
    """

    def sample(self, days):
        out = {}
        for day in days:
            path = Path(self.spec.lake_root) / self.spec.asset / f"{day}.parquet"
            columns = [self.spec.key] + ([self.spec.gen_column] if self.spec.gen_column else [])
            try:
                with open(path, "rb") as fh:
                    frame = pq.read_table(fh, columns=columns).to_pandas()
            except FileNotFoundError:
                out[("", day)] = None
                continue
            gens = frame[self.spec.gen_column].value_counts().to_dict() if self.spec.gen_column else (
                {"*": len(frame)} if len(frame) else {})
            out[("", day)] = Observed(len(frame), frame[self.spec.key].nunique(), {str(k): int(v) for k, v in gens.items()})
        return out


class SearchProbe(Probe):
    """A search on the day alias, and on the read alias filtered to the day: each must show one complete day.

    Each is one request, judged on its own (two requests could straddle a publish). A day published twice under
    the read alias shows there as twice the rows, or as repeated keys.
    """

    paths = ("day-alias", "read-alias")

    def __init__(self, spec):
        super().__init__(spec)
        self.sink = spec.sink()
        self.target = spec.target()
        self.aggs = {"keys": {"cardinality": {"field": spec.key}}}
        if spec.gen_column:
            self.aggs["gens"] = {"terms": {"field": spec.gen_column, "size": 100}}

    def _observe(self, index: str, query: dict | None) -> Observed | None:
        from elasticsearch import NotFoundError

        try:
            body = self.sink.client.search(index=index, size=0, track_total_hits=True, aggs=self.aggs, query=query).body
        except NotFoundError:
            return None
        total = body["hits"]["total"]["value"]
        distinct = int(body["aggregations"]["keys"]["value"])
        if self.spec.gen_column:
            gens = {b["key"]: b["doc_count"] for b in body["aggregations"]["gens"]["buckets"]}
        else:
            gens = {"*": total} if total else {}
        return Observed(total, distinct, gens)

    def sample(self, days):
        out = {}
        read_alias = self.sink.read_alias(self.target)
        for day in days:
            out[("day-alias", day)] = self._observe(self.sink.day_alias(self.target, day), None)
            read = self._observe(read_alias, {"term": {PARTITION_COLUMN: day}})
            # The read alias exists once any day is published; a day not yet published shows there as 0 rows.
            out[("read-alias", day)] = read
        return out

    def close(self):
        self.sink.client.close()
