"""What every reliability scenario shares: test content, the stores under test, readers, writer processes, end states.

- **Content.** `frame_for(gen, rows_by_day)`: rows of one *generation* (`old`, `new`, `w3`...) whose keys carry the
  generation, so a reader can tell exactly which write it sees: a day is complete when its rows are all of one
  generation and number exactly that generation's rows of the day. Strings carry quotes, commas, semicolons,
  newlines and non-ASCII text, so the COPY, the bulk JSON and Parquet all meet them.
- **Stores.** `StoreSpec` names one store of one scenario (its own PostgreSQL schema, lake root or index prefix,
  and a unique asset name) in a picklable form, so writer and reader processes can rebuild it. It builds the
  platform's own sink (`PostgresTableSink`, `LakeSink`, `ElasticsearchIndexSink`), a reader probe that reads
  the way a user would (SQL on the table, a search on the day alias and on the read alias, the lake file), and the
  leftover check (staging relations, temp files, orphan indices, open transactions, held locks).
- **Readers.** `Reader` polls a set of stores in a thread or a separate process until stopped, judges every sample
  against the complete states a day may be in, and summarises for the scorecard.
- **Writers.** `write_child` runs `publish_partitions` in a child process of a forkserver that has imported the
  platform once (a child starts in milliseconds instead of the ~1.5 s a fresh interpreter takes), with
  `IDEM_FAULT`/`IDEM_FAULT_MODE`/`IDEM_FAULT_ASSET` set in its own environment only. `os._exit(137)` and SIGKILL
  are what they are in any process: no cleanup, the PostgreSQL connection drops, the open transaction is rolled
  back by the server.
"""

from __future__ import annotations

import functools
import multiprocessing
import os
import re
import threading
import time
import traceback
from collections import Counter
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pandas as pd
import psycopg
import pyarrow.parquet as pq
from psycopg import sql

from idem_platform.resources import LakeResource, PostgresResource
from idem_platform.storage import ledger, postgres_store
from idem_platform.storage.audit import AuditRules
from idem_platform.storage.elasticsearch_store import ElasticsearchIndexSink
from idem_platform.storage.search_client import ElasticsearchResource
from idem_platform.storage.lake_store import LakeSink
from idem_platform.storage.fingerprint import PartitionDigest, partition_digests
from idem_platform.storage.partition_store import AssetTarget, PartitionSink, publish_partitions
from idem_platform.storage.schema import PARTITION_COLUMN, TableDeclaration

STORES = ("postgres", "lake", "elasticsearch")
DECL = TableDeclaration.build(
    {"id": "string", "gen": "string", "n": "int", "x": "float", "note": "string", "at": "timestamp"}, key=["id"]
)
NOTES = ("plain", 'say "hi"; DROP TABLE victim; --', "comma, semicolon; quote '", "naïve café ✓ 日本", "two\nlines", "\\.", "")


def declaration(name: str) -> TableDeclaration:
    """The declared columns a store spec names: the suite's own, or a platform asset's."""
    if name == "reliability":
        return DECL
    from idem_platform.pipelines import people

    columns = {"people": people.PEOPLE_COLUMNS, "people_search": people.PEOPLE_COLUMNS, "raw_people": people.RAW_PEOPLE_COLUMNS}
    return TableDeclaration.build(columns[name], ["person_id"])


# ------------------------------------------------------------------------------------------------------- content


@functools.lru_cache(maxsize=256)
def _frame(gen: str, rows_by_day: tuple[tuple[str, int], ...]) -> pd.DataFrame:
    records = []
    for day, rows in rows_by_day:
        for i in range(rows):
            records.append({
                "id": f"{gen}-{day}-{i:05d}", "gen": gen, "n": None if i % 7 == 3 else i * 1_000_003,
                "x": i / 7, "note": NOTES[i % len(NOTES)], "at": pd.Timestamp(f"{day}T00:00:00Z") + pd.Timedelta(seconds=i),
                PARTITION_COLUMN: day,
            })
    frame = pd.DataFrame.from_records(records, columns=[*DECL.names]) if records else DECL.empty_frame()
    return DECL.coerce(frame)


def frame_for(gen: str, rows_by_day: dict[str, int]) -> pd.DataFrame:
    """`rows_by_day[day]` rows of generation `gen` for each day (0 rows: the day is published empty)."""
    return _frame(gen, tuple(sorted(rows_by_day.items()))).copy()


def digests_for(gen: str, rows_by_day: dict[str, int]) -> dict[str, PartitionDigest]:
    return partition_digests(frame_for(gen, rows_by_day), DECL, sorted(rows_by_day))


def state(gen: str, rows: int) -> dict[str, int]:
    """The complete state of a day that holds `rows` rows of `gen` (`{}`: published empty)."""
    return {gen: rows} if rows else {}


# -------------------------------------------------------------------------------------------------------- stores


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
        # the table, its key, and one published partition (+ key) per day: a staging table (`..._<run>`) is a leftover
        published = re.compile(rf"{re.escape(spec.asset)}(_p\d{{8}})?(_pkey)?")
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
    return [f"file {folder / n}" for n in names if n.startswith(".") or not n.endswith(".parquet")]


def _es_leftovers(spec: StoreSpec, days: list[str]) -> list[str]:
    sink = spec.sink()
    target = spec.target()
    found = []
    read_alias = sink.read_alias(target)
    indices = sink.client.indices.get_alias(index=f"{read_alias}-*", expand_wildcards="open,closed").body
    per_day: dict[str, list[str]] = {}
    for index, info in indices.items():
        aliases = set(info.get("aliases", {}))
        day = next((d for d in days if index.startswith(sink.day_alias(target, d) + "-")), None)
        if day is None:
            continue  # a day this check was not asked about
        if aliases != {sink.day_alias(target, day), read_alias}:
            found.append(f"index {index} with aliases {sorted(aliases)}")
        else:
            per_day.setdefault(day, []).append(index)
    for day in days:
        if len(per_day.get(day, [])) > 1:
            found.append(f"day {day} published in {len(per_day[day])} physical indices: {per_day[day]}")
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


def ledger_chain_breaks(entries: list[ledger.LedgerEntry]) -> list[str]:
    """Serialized writers form a chain per day: each row's previous fingerprint is the row before's fingerprint."""
    breaks, last = [], {}
    for e in entries:
        if e.partition in last and e.previous_fingerprint != last[e.partition]:
            breaks.append(f"{e.partition} run {e.run_id}: previous {e.previous_fingerprint} != {last[e.partition]}")
        last[e.partition] = e.fingerprint
    return breaks


# -------------------------------------------------------------------------------------------------------- probes


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


# ------------------------------------------------------------------------------------------------------- readers


@dataclass
class Expectation:
    """The complete states each day may be in while a scenario runs (`{}`: published empty)."""

    accepted: dict[str, list[dict[str, int]]]
    present_from_start: bool = True  # the days were published before the reader started

    @property
    def days(self) -> list[str]:
        return sorted(self.accepted)


@dataclass
class Judge:
    expectation: Expectation
    samples: int = 0
    partial: int = 0
    duplicates: int = 0
    lost: int = 0
    states: Counter = field(default_factory=Counter)
    examples: list[str] = field(default_factory=list)
    seen: dict = field(default_factory=dict)
    by_store: dict = field(default_factory=dict)  # store -> Counter of samples, partial, duplicates, lost

    def judge(self, store: str, path: str, day: str, obs: Observed | None) -> str:
        accepted = self.expectation.accepted[day]
        key = (store, path, day)
        seen = self.seen.get(key, self.expectation.present_from_start)
        if obs is not None and obs.total == 0 and {} not in accepted:
            obs = None  # no rows and not a day published empty: not there (a table or a read alias)
        if obs is None:
            verdict = "lost" if seen else "absent"
        elif obs.distinct != obs.total:
            verdict = "duplicate"
        elif obs.gens in accepted:
            verdict = "complete"
        else:
            verdict = "partial"
        if obs is not None:
            self.seen[key] = True
        self.samples += 1
        self.states[verdict] += 1
        mine = self.by_store.setdefault(store, Counter())
        mine["samples"] += 1
        if verdict in ("lost", "duplicate", "partial"):
            self.partial += verdict != "lost"
            self.duplicates += verdict == "duplicate"
            self.lost += verdict == "lost"
            mine["partial"] += verdict != "lost"
            mine["duplicates"] += verdict == "duplicate"
            mine["lost"] += verdict == "lost"
            if len(self.examples) < 5:
                self.examples.append(f"{verdict}: {store}{'/' + path if path else ''} {day} saw {obs} "
                                     f"(complete states: {accepted})")
        return verdict

    def error(self, store: str, exc: Exception) -> None:
        self.samples += 1
        self.partial += 1
        self.states["error"] += 1
        mine = self.by_store.setdefault(store, Counter())
        mine["samples"] += 1
        mine["partial"] += 1
        if len(self.examples) < 5:
            self.examples.append(f"reader error: {store} {exc!r}"[:300])

    def summary(self) -> dict:
        return {"samples": self.samples, "partial": self.partial, "duplicates": self.duplicates, "lost": self.lost,
                "states": dict(self.states), "examples": self.examples,
                "by_store": {k: dict(v) for k, v in self.by_store.items()}}


def poll_once(probes: list[Probe], judge: Judge) -> int:
    """Sample every day in every store once; returns the number of reader errors."""
    days, errors = judge.expectation.days, 0
    for probe in probes:
        try:
            observed = probe.sample(days)
        except Exception as exc:  # a reader error is a sample too: a user would have got it
            errors += 1
            judge.error(probe.spec.kind, exc)
            continue
        for (path, day), obs in observed.items():
            judge.judge(probe.spec.kind, path, day, obs)
    return errors


def _reader_loop(specs: list[StoreSpec], expectation: Expectation, stop, interval: float) -> dict:
    probes = [spec.probe() for spec in specs]
    judge = Judge(expectation)
    errors = 0
    try:
        while True:
            last = stop.is_set()  # one more poll after stop: the end state is sampled too
            errors += poll_once(probes, judge)
            if last:
                break
            time.sleep(interval)
    finally:
        for probe in probes:
            probe.close()
    summary = judge.summary()
    summary["errors"] = errors
    return summary


def _reader_process(specs, expectation, stop, results, interval):
    try:
        results.put(_reader_loop(specs, expectation, stop, interval))
    except BaseException:
        results.put({"samples": 0, "partial": 1, "duplicates": 0, "lost": 0, "states": {}, "errors": 1,
                     "examples": [traceback.format_exc()[-500:]]})


class Reader:
    """Polls `specs` until `stop()`; in a separate process (`process=True`) or a thread of this one."""

    def __init__(self, specs: list[StoreSpec], expectation: Expectation, *, process: bool = False,
                 interval: float = 0.005):
        self.process = process
        if process:
            ctx = forkserver()
            self._stop, self._results = ctx.Event(), ctx.Queue()
            self._worker = ctx.Process(target=_reader_process, args=(specs, expectation, self._stop, self._results, interval))
        else:
            self._stop, self._result = threading.Event(), {}
            self._worker = threading.Thread(
                target=lambda: self._result.update(_reader_loop(specs, expectation, self._stop, interval)), daemon=True
            )

    def __enter__(self) -> Reader:
        self._worker.start()
        return self

    def __exit__(self, *exc) -> None:
        if not self._stop.is_set():
            self.stop()

    def stop(self) -> dict:
        self._stop.set()
        if self.process:
            summary = self._results.get(timeout=120)
            self._worker.join(timeout=30)
        else:
            self._worker.join(timeout=120)
            summary = self._result
        self.summary = summary
        return summary


# ------------------------------------------------------------------------------------------------------- writers


@dataclass(frozen=True)
class WriteSpec:
    store: StoreSpec
    gen: str
    rows_by_day: tuple[tuple[str, int], ...]
    run_id: str
    fault: str | None = None  # a fault point of faults.POINTS
    fault_mode: str = "exit"  # exit | kill

    @property
    def days(self) -> list[str]:
        return [d for d, _ in self.rows_by_day]


_FORKSERVER = None


def forkserver():
    """The suite's multiprocessing context: children forked from a server that imported the platform once."""
    global _FORKSERVER
    if _FORKSERVER is None:
        ctx = multiprocessing.get_context("forkserver")
        ctx.set_forkserver_preload([__name__])
        _FORKSERVER = ctx
    return _FORKSERVER


def write_child(spec: WriteSpec, barrier=None) -> None:
    """Publish `spec` in this (child) process; with `spec.fault` it dies there, as `IDEM_FAULT` says."""
    for name in ("IDEM_FAULT", "IDEM_FAULT_MODE", "IDEM_FAULT_ASSET"):
        os.environ.pop(name, None)
    if spec.fault:
        os.environ["IDEM_FAULT"] = f"{spec.store.kind}:{spec.fault}"
        os.environ["IDEM_FAULT_MODE"] = spec.fault_mode
        os.environ["IDEM_FAULT_ASSET"] = spec.store.asset
    original = postgres_store.csv_chunks
    postgres_store.csv_chunks = functools.partial(original, chunk_rows=spec.store.pg_copy_chunk)
    sink = spec.store.sink()
    frame = frame_for(spec.gen, dict(spec.rows_by_day))
    if barrier is not None:
        barrier.wait(timeout=120)
    publish_partitions(sink, spec.store.postgres, spec.store.target(), spec.days, frame, spec.run_id)


def start_writer(spec: WriteSpec, barrier=None):
    process = forkserver().Process(target=write_child, args=(spec, barrier), name=f"writer-{spec.run_id}")
    process.start()
    return process


def run_writer(spec: WriteSpec, timeout: float = 120) -> int:
    """Run one writer process to its end; its exit code (137: os._exit at the fault, -9: SIGKILL, 0: done)."""
    process = start_writer(spec)
    process.join(timeout)
    if process.is_alive():
        process.kill()
        process.join()
        raise TimeoutError(f"writer {spec.run_id} still running after {timeout} s")
    return process.exitcode


def publish(spec: StoreSpec, gen: str, rows_by_day: dict[str, int], run_id: str) -> list[ledger.LedgerEntry]:
    """A clean write of a generation, in this process."""
    sink = spec.sink()
    try:
        return publish_partitions(sink, spec.postgres, spec.target(), sorted(rows_by_day), frame_for(gen, rows_by_day), run_id)
    finally:
        if isinstance(sink, ElasticsearchIndexSink):
            sink.client.close()


def wait_for(predicate, timeout: float = 10.0, interval: float = 0.05) -> Any:
    deadline = time.monotonic() + timeout
    while True:
        value = predicate()
        if value or time.monotonic() > deadline:
            return value
        time.sleep(interval)


# ------------------------------------------------------------------------------------------------ service faults


class TcpProxy:
    """A TCP proxy in front of a server, to take the server away from one client mid-request and bring it back.

    `stop()` closes the listening socket and resets every open connection: the client sees what a stopped server
    gives (connection reset, then connection refused). `start()` listens on the same port again. The server behind
    it keeps its data, as a real cluster restarted on its disks would (the in-memory test server would lose it).
    """

    def __init__(self, upstream_host: str, upstream_port: int):
        self.upstream = (upstream_host, upstream_port)
        self.port = 0
        self._listener = None
        self._conns: set = set()
        self._lock = threading.Lock()

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def start(self) -> TcpProxy:
        import socket

        listener = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
        listener.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        listener.bind(("127.0.0.1", self.port))
        listener.listen(64)
        self.port = listener.getsockname()[1]
        self._listener = listener
        threading.Thread(target=self._accept, args=(listener,), daemon=True).start()
        return self

    def _accept(self, listener) -> None:
        import socket

        while True:
            try:
                client, _ = listener.accept()
            except OSError:
                return  # stopped
            try:
                server = socket.create_connection(self.upstream, timeout=10)
            except OSError:
                client.close()
                continue
            with self._lock:
                self._conns |= {client, server}
            for src, dst in ((client, server), (server, client)):
                threading.Thread(target=self._pump, args=(src, dst), daemon=True).start()

    def _pump(self, src, dst) -> None:
        try:
            while data := src.recv(65536):
                dst.sendall(data)
        except OSError:
            pass
        finally:
            for sock in (src, dst):
                try:
                    sock.close()
                except OSError:
                    pass

    def stop(self) -> None:
        import socket
        import struct

        if self._listener is not None:
            try:  # close() alone would not wake the accept() blocked on it, and the port would keep listening
                self._listener.shutdown(socket.SHUT_RDWR)
            except OSError:
                pass
            self._listener.close()
            self._listener = None
        with self._lock:
            conns, self._conns = self._conns, set()
        for sock in conns:
            try:  # linger 0: the connection is reset, as when a server process dies
                sock.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
                sock.shutdown(socket.SHUT_RDWR)  # also wakes the pump threads blocked in recv()
            except OSError:
                pass
            try:
                sock.close()
            except OSError:
                pass


# --------------------------------------------------------------------------------------------- Dagster run path


def dagster_asset(spec: StoreSpec, io_manager_key: str, gen: str, rows_by_day: dict[str, int]):
    """The suite's content as an `@idem_asset` named `spec.asset`: materializing it runs the real IO manager path."""
    from idem_platform.declare import idem_asset

    columns = {c.name: c.type for c in DECL.columns if c.name != PARTITION_COLUMN}

    def compute(context):  # unannotated: this module has postponed annotations, Dagster would see a string
        return frame_for(gen, {d: rows_by_day[d] for d in context.partition_keys})

    return idem_asset(columns=columns, key=["id"], io_manager_key=io_manager_key, name=spec.asset)(compute)


def materialize(asset, resources: dict, days: list[str]):
    """One in-process Dagster run of `days` (a range run when several); never raises on a failed run."""
    import dagster as dg

    tags = None
    if len(days) > 1:
        tags = {"dagster/asset_partition_range_start": days[0], "dagster/asset_partition_range_end": days[-1]}
    return dg.materialize(
        [asset], partition_key=None if tags else days[0], tags=tags, resources=resources,
        instance=dg.DagsterInstance.ephemeral(), raise_on_error=False,
    )


def failure_message(result) -> str:
    return "\n".join(e.step_failure_data.error.to_string() for e in result.get_step_failure_events())
