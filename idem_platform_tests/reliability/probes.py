"""Reader probes: read a store's days the way a user would, one sample at a time.

SQL on the table, a search on the day alias and on the read alias, the lake file: each probe turns what it reads into
an `Observed` (total rows, distinct keys, rows per generation) per day, for a judge (readers.py) to classify.
"""

from __future__ import annotations

import time
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
    """Reads days the way a user of the store would; `None` for a day that is not there.

    A probe that reads each day with requests of its own records when each was read (`timing`: (path, day) ->
    (monotonic start, end), reset by every `sample`); without it a sample's time is its whole poll's.
    """

    paths: tuple[str, ...] = ("",)

    def __init__(self, spec: StoreSpec):
        self.spec = spec
        self.timing: dict[tuple[str, str], tuple[float, float]] = {}

    def sample(self, days: list[str]) -> dict[tuple[str, str], Observed | None]:  # (path, day) -> observed
        raise NotImplementedError

    def close(self) -> None:
        pass


class PostgresProbe(Probe):
    """`SELECT partition_date, gen, count(*), count(DISTINCT key)` on the table: one statement, one snapshot.

    With `spec.reader_isolation` (REPEATABLE READ, SERIALIZABLE) every sample is a transaction of that level whose
    snapshot is taken first (`SELECT txid_current_snapshot()`, which touches no table), `SNAPSHOT_GAP_S` before
    its one read of the asset's table: a publish that lands in the gap is committed after the snapshot and before
    the table is read, the case where only an MVCC-safe publish shows the old day whole.
    """

    SNAPSHOT_GAP_S = 0.01

    def __init__(self, spec):
        super().__init__(spec)
        self.conn = psycopg.connect(spec.dsn, autocommit=True, application_name="idem_reliability_reader")
        self.isolation = spec.reader_isolation
        assert self.isolation in ("", "REPEATABLE READ", "SERIALIZABLE"), self.isolation
        gen = sql.Identifier(spec.gen_column) if spec.gen_column else sql.Literal("*")
        self.query = sql.SQL(
            "SELECT {p}::text, {g}, count(*), count(DISTINCT {k}) FROM {t} WHERE {p} = ANY(%s::date[]) GROUP BY 1, 2"
        ).format(p=sql.Identifier(PARTITION_COLUMN), g=gen, k=sql.Identifier(spec.key),
                 t=sql.Identifier(spec.schema, spec.asset))

    def read(self, days) -> list[tuple]:
        if not self.isolation:
            return self.conn.execute(self.query, (days,)).fetchall()
        self.conn.execute(f"BEGIN ISOLATION LEVEL {self.isolation} READ ONLY")
        try:
            self.conn.execute("SELECT txid_current_snapshot()").fetchone()  # the snapshot; no table touched
            time.sleep(self.SNAPSHOT_GAP_S)
            return self.conn.execute(self.query, (days,)).fetchall()
        finally:
            self.conn.execute("ROLLBACK")

    def sample(self, days):
        try:
            rows = self.read(days)
        except psycopg.errors.UndefinedTable:
            return {("", d): None for d in days}
        return self.observe(rows, days)

    def observe(self, rows: list[tuple], days: list[str]) -> dict[tuple[str, str], Observed]:
        """The samples of `days` from the rows of `self.query`."""
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
        out, self.timing = {}, {}
        for day in days:
            path = Path(self.spec.lake_root) / self.spec.asset / f"{day}.parquet"
            columns = [self.spec.key] + ([self.spec.gen_column] if self.spec.gen_column else [])
            start = time.monotonic()
            try:
                with open(path, "rb") as fh:
                    frame = pq.read_table(fh, columns=columns).to_pandas()
            except FileNotFoundError:
                out[("", day)] = None
                continue
            finally:
                self.timing[("", day)] = (start, time.monotonic())
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
        out, self.timing = {}, {}
        read_alias = self.sink.read_alias(self.target)
        for day in days:
            start = time.monotonic()
            out[("day-alias", day)] = self._observe(self.sink.day_alias(self.target, day), None)
            middle = time.monotonic()
            read = self._observe(read_alias, {"term": {PARTITION_COLUMN: day}})
            self.timing.update({("day-alias", day): (start, middle), ("read-alias", day): (middle, time.monotonic())})
            # The read alias exists once any day is published; a day not yet published shows there as 0 rows.
            out[("read-alias", day)] = read
        return out

    def close(self):
        self.sink.client.close()
