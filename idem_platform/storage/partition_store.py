"""Stage, Audit, Publish, Record: the one write path every sink goes through.

A sink (PostgreSQL table, lake file, search index) implements four verbs: `stage` the new content where no
reader looks, `verify_staged` it, `publish` it in one atomic step, `discard` it on failure; plus `read`.
Everything else is here, once: audit rules, fingerprints, the partition lock and the ledger.

    lock (asset, day...) ascending  ->  stage  ->  verify  ->  [intent]  ->  publish  ->  ledger row  ->  COMMIT

The lock, the ledger rows and (for PostgreSQL) the staged rows share one transaction: for the table sink the
COMMIT is the publish. A lake file or an index is published outside that transaction, so for those sinks:

- **intent, confirm**: the ledger row is first committed as an unconfirmed intent naming the version about to be
  published (on a second connection), and confirmed in the locked transaction after the publish. A crash between
  the two is resolved from the sink (`published_entries`): the intent's version is live, so it was published.
- **fencing**: the lock lives in the writer's PostgreSQL session; if that session ends (terminated backend,
  failover, idle timeout) another writer may take the day. So the sink's `stage` observes, under the lock, which
  version of each day is live, and its publish is a compare-and-swap on it (the lake replaces a file only if it
  still holds that version; the index moves its aliases only off that exact index, `must_exist`); right before it,
  the writer checks its session still answers. A writer that lost its lock fails with `PartitionLockLost` and
  publishes nothing; one whose swap finds another version live while its own lock holds (a stale writer slipped
  in) retries the batch.

A failure anywhere before the publish discards the stage and leaves the published partition and its ledger row
untouched. The audit passes before
any publish; for PostgreSQL it runs in a thread while the rows are staged (the rollback discards them if it
fails), which hides its cost behind the COPY. Very long ranges are published in several transactions
(`max_days_per_transaction`, each day atomic), which bounds the locks one transaction holds.

`PartitionIOManager` is the Dagster face of this: it reads the asset's declaration from its definition
metadata, runs the write for every partition of the run (a range run publishes every day of the range, empty
days included) and attaches per-partition metadata (`dagster/partition_row_count`, fingerprint, changed) to the
materializations, and to one of them (the last day's) `recent_publishes`: the asset's last ledger rows as a table,
read in one query per run. It loads inputs as Dagster's database IO managers do (`load_input`): no mapped day is
an empty frame, `AssetIn(metadata={"columns": [...]})` a column subset, an unpartitioned downstream the published
days.
"""

from __future__ import annotations

import abc
import datetime as dt
import logging
import threading
from collections.abc import Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from typing import Any, ClassVar

import dagster as dg
import pandas as pd
import psycopg

from .. import settings
from ..partitions import validate_partition_keys
from ..resources import PostgresResource
from . import ledger
from .dry_run import CAPTURE_TAG
from .dry_run import capture as capture_dry_run_frame
from .audit import AuditRules, ValueLimit, audit_frame
from .faults import fault_point
from .fingerprint import PartitionDigest, partition_digests
from .schema import PARTITION_COLUMN, SchemaError, TableDeclaration

DIGESTS_ATTR = "idem.partition_digests"
KEY_METADATA = "idem/key"
AUDIT_METADATA = "idem/audit"
SCHEMA_METADATA = "dagster/column_schema"
SAME_ROWS_METADATA = "idem/same_rows_as"

_log = logging.getLogger("idem_platform.storage")


@dataclass(frozen=True)
class AssetTarget:
    """What a sink needs to know about the asset it writes.

    `asset` is the asset key as Dagster prints it (`orders`, `sales/orders`): the ledger's and the partition
    lock's key. Sinks name their containers from `prefix` and `name`, so `sales/orders` and `marketing/orders`
    never share a table, a lake folder or an index.
    """

    asset: str
    decl: TableDeclaration
    rules: AuditRules

    @property
    def name(self) -> str:
        return self.asset.split("/")[-1]

    @property
    def prefix(self) -> tuple[str, ...]:
        return tuple(self.asset.split("/")[:-1])

    def narrowed(self, columns: Sequence[str]) -> AssetTarget:
        """The same asset, declaring only `columns` plus what a read needs (the day and the key): what a sink
        reads for `AssetIn(metadata={"columns": [...]})`."""
        if isinstance(columns, str) or not all(isinstance(c, str) for c in columns):
            raise dg.DagsterInvariantViolationError(
                f"asset {self.asset!r}: the input metadata 'columns' must be a list of column names, not {columns!r}"
            )
        unknown = [c for c in columns if c not in self.decl.names]
        if unknown:
            raise dg.DagsterInvariantViolationError(
                f"asset {self.asset!r} has no column(s) {unknown} (input metadata 'columns'); "
                f"its declared columns are {self.decl.names}"
            )
        keep = {*columns, *self.decl.partition_key}
        decl = TableDeclaration(tuple(c for c in self.decl.columns if c.name in keep), self.decl.key)
        return AssetTarget(self.asset, decl, self.rules)

    @classmethod
    def from_metadata(cls, asset: str, metadata: dict[str, Any]) -> AssetTarget:
        schema = metadata.get(SCHEMA_METADATA)
        key = metadata.get(KEY_METADATA)
        if schema is None or key is None:
            raise dg.DagsterInvariantViolationError(
                f"asset {asset!r} has no declared columns and key; declare it with @idem_asset(columns=..., key=...)"
            )
        return cls(asset, TableDeclaration.from_table_schema(schema, key), AuditRules.from_metadata(metadata.get(AUDIT_METADATA)))


@dataclass
class StagedVersions:
    """What a sink outside PostgreSQL staged: per day, where the new content waits (`where`), the version it will
    publish (`versions`, recorded in the ledger's intent) and the version that was live when it was staged
    (`expected`, observed under the partition lock: the publish's compare-and-swap condition; None: nothing)."""

    where: dict[str, Any]
    versions: dict[str, str]
    expected: dict[str, str | None]


def type_change_refused(asset: str, column: str, old: str, new: str, where: str) -> SchemaError:
    """The one message every sink gives when a declared column type changes."""
    return SchemaError(
        f"asset {asset!r}: column {column!r} changed type from {old} to {new}; {where} holds it as {old}. "
        "Types are never changed implicitly: declare the column as "
        f"{old} again, or declare a new column (a new name) of type {new}"
    )


class StalePublish(RuntimeError):
    """The sink's day is no longer the version observed under the partition lock: another writer published it."""


class PartitionLockLost(RuntimeError):
    """The PostgreSQL session that held the partition lock ended; this write did not publish (see its message)."""


class PartitionSink(abc.ABC):
    """One kind of storage. Only these verbs differ between sinks."""

    name: str
    # True: the publish is the COMMIT of the transaction that writes the ledger (PostgreSQL). False: the sink
    # publishes outside PostgreSQL; `stage` returns `StagedVersions`, `publish` is a compare-and-swap on its
    # `expected` versions, `versions` says what is live (to resolve intents).
    publishes_in_transaction: bool = False

    # stage may run while the frame is still being audited (the stage is discarded if the audit fails)
    audit_during_stage: bool = False
    # publish longer ranges in several transactions of this many days (None: one transaction)
    max_days_per_transaction: int | None = None
    # values this sink cannot store or read back exactly: the audit refuses them before any write
    value_limits: tuple[ValueLimit, ...] = ()

    @abc.abstractmethod
    def location(self, target: AssetTarget, day: str) -> str: ...

    @abc.abstractmethod
    def store(self, target: AssetTarget) -> str:
        """Where this sink keeps the asset (stable across writes): the ledger's key besides asset and sink."""

    def prepare(self, conn: psycopg.Connection, target: AssetTarget) -> None:
        """Create or evolve the container (table, directory, template). Runs before the partition lock."""

    def concurrent_transactions(self, target: AssetTarget, days: Sequence[str]) -> int:
        """How many of the transactions of a range longer than `max_days_per_transaction` may run at once
        (1: one after another). Default: 1."""
        return 1

    def create_partitions(self, conn: psycopg.Connection, target: AssetTarget, days: Sequence[str]) -> None:
        """Before a transaction of `days` that runs beside others of its range: make, and commit on its own, what
        that transaction would otherwise create inside its write (a table's partitions). Default: nothing."""

    @abc.abstractmethod
    def stage(self, conn: psycopg.Connection, target: AssetTarget, days: Sequence[str], frame: pd.DataFrame, run_id: str) -> Any: ...

    @abc.abstractmethod
    def verify_staged(self, conn: psycopg.Connection, target: AssetTarget, staged: Any, digests: dict[str, PartitionDigest]) -> None: ...

    @abc.abstractmethod
    def publish(self, conn: psycopg.Connection, target: AssetTarget, staged: Any) -> None: ...

    @abc.abstractmethod
    def discard(self, target: AssetTarget, staged: Any) -> None: ...

    @abc.abstractmethod
    def read(self, target: AssetTarget, days: Sequence[str]) -> pd.DataFrame: ...

    def versions(self, target: AssetTarget, days: Sequence[str]) -> dict[str, str | None]:
        """The version of each day the sink holds now (None: nothing); only sinks outside PostgreSQL have them."""
        return {day: None for day in days}

    def transaction_version(self, conn: psycopg.Connection) -> str | None:
        """For a sink that publishes in the ledger's transaction: the version its ledger rows record (None: none)."""
        return None

    def untouched_since_publish(self, target: AssetTarget, published: dict[str, ledger.LedgerEntry]) -> set[str]:
        """The days the sink can prove, without reading them back, still hold exactly what `published` recorded
        (nobody wrote them since). Default: none; `changed_days` then reads every unchanged day back."""
        return set()


def attached_digests(
    frame: pd.DataFrame, decl: TableDeclaration, days: Sequence[str]
) -> tuple[pd.DataFrame, dict[str, PartitionDigest] | None]:
    """The canonical frame and the per-day digests `idem_asset` attached to it (None: not attached, compute them).

    The digests are popped from `attrs` so they never reach a sink (pandas copies attrs into slices and files).
    """
    digests = frame.attrs.pop(DIGESTS_ATTR, None)
    if digests is not None and set(digests) == set(days):
        return frame, digests
    return decl.coerce(frame), None


def publish_partitions(
    sink: PartitionSink,
    postgres: PostgresResource,
    target: AssetTarget,
    days: Sequence[str],
    frame: pd.DataFrame,
    run_id: str,
    log: logging.Logger | dg.DagsterLogManager = _log,
    partitions_def: dg.PartitionsDefinition | None = None,
) -> list[ledger.LedgerEntry]:
    """Replace every day of `days` in the sink with the rows of `frame`; returns the ledger rows written.

    The digests and the audit run before anything is staged, or, for a sink whose stage is discarded by a
    rollback (`audit_during_stage`), in a thread while it stages: either way nothing is published before the
    audit passed. A sink with `max_days_per_transaction` publishes longer ranges in transactions of at most that
    many days (each day, and each batch, atomic), `sink.concurrent_transactions` of them at once.
    """
    days = sorted(days)
    validate_partition_keys(days, partitions_def, asset=target.asset)
    frame, digests = attached_digests(frame, target.decl, days)

    def digest_and_audit() -> dict[str, PartitionDigest]:
        known = digests or partition_digests(frame, target.decl, days)
        audit_frame(target.asset, frame, days, target.decl, target.rules, sink.value_limits)
        return known

    most = sink.max_days_per_transaction or len(days) or 1
    workers = sink.concurrent_transactions(target, days) if len(days) > most else 1
    batches = _even_batches(days, most, workers)
    wait_s = settings.current().pg_lock_wait_s
    with ThreadPoolExecutor(max_workers=1, thread_name_prefix="idem-audit") as pool:
        if sink.audit_during_stage:
            checked = pool.submit(digest_and_audit).result
        else:
            ready = digest_and_audit()
            checked = lambda: ready  # noqa: E731
        def publish(part: list[str], log) -> list[ledger.LedgerEntry]:
            rows = frame if len(batches) == 1 else _rows_of_days(frame, part)
            return _retried(
                lambda: _publish_batch(sink, postgres, target, part, rows, run_id, log, checked, wait_s, digests,
                                       beside_others=workers > 1),
                target, part, log,
            )

        if workers > 1:
            entries = _publish_concurrently(publish, batches, workers, log)
        else:
            entries = [entry for part in batches for entry in publish(part, log)]
    changed = sum(e.changed for e in entries)
    log.info(
        f"{target.asset}: published {_span(days)} to {sink.name} "
        f"({sum(e.row_count for e in entries)} rows, {changed} of {len(entries)} partitions changed)"
    )
    return entries


def _even_batches(days: list[str], most: int, workers: int) -> list[list[str]]:
    """`days` in consecutive batches of at most `most` days, as even as they can be and as many as a multiple of
    `workers`, so that transactions run `workers` at a time end together: 365 days, 100 at most, 2 at a time:
    4 batches of 92, 91, 91, 91 days (batches of 100, 100, 100, 65 left one connection idle for 35 days' work)."""
    if not days:
        return [days]
    count = -(-len(days) // most)
    count = -(-count // workers) * workers if workers > 1 else count
    size, extra = divmod(len(days), count)
    bounds = [i * size + min(i, extra) for i in range(count + 1)]
    return [days[bounds[i] : bounds[i + 1]] for i in range(count) if bounds[i] < bounds[i + 1]]


def _publish_concurrently(publish, batches: list[list[str]], workers: int, log) -> list[ledger.LedgerEntry]:
    """Each batch's transaction on its own connection, `workers` at a time: a day-partitioned write waits on the
    server once per COPY statement, and two transactions hide each other's waits (365 days: the writes ~1.7x
    faster). The batches hold disjoint days (their own partition locks, their own partitions), so they never wait
    for each other. Every batch runs to its end; the first failure (in day order) is then raised, and the
    batches that committed stay published (each day, and each batch, atomic), as when they ran one by one.
    Log calls from the workers go through one lock: Dagster's log manager is not made for threads."""
    safe_log = _SerializedLog(log)
    with ThreadPoolExecutor(max_workers=workers, thread_name_prefix="idem-publish") as pool:  # waits for all
        futures = [pool.submit(publish, part, safe_log) for part in batches]
    for future in futures:  # in day order: the earliest failed batch is the one reported
        if future.exception() is not None:
            raise future.exception()
    return [entry for future in futures for entry in future.result()]


class _SerializedLog:
    """A logger whose calls from several threads are made one at a time."""

    def __init__(self, log):
        self._log, self._lock = log, threading.Lock()

    def __getattr__(self, name):
        method = getattr(self._log, name)
        if not callable(method):
            return method

        def call(*args, **kwargs):
            with self._lock:
                return method(*args, **kwargs)
        return call


def _rows_of_days(frame: pd.DataFrame, days: Sequence[str]) -> pd.DataFrame:
    return frame[frame[PARTITION_COLUMN].isin(pd.to_datetime(list(days)))].reset_index(drop=True)


TRANSIENT_ATTEMPTS = 3


class LockWaitTimeout(RuntimeError):
    """A write waited longer than IDEM_PG_LOCK_WAIT_S for a lock another session holds; nothing was published."""


def _retried(write, target: AssetTarget, days: Sequence[str], log) -> list[ledger.LedgerEntry]:
    """Run one transaction's write again after a deadlock, a serialization failure or a compare-and-swap that
    found another writer's version live while this one still held the lock (the stage was discarded, so a retry is
    a clean rerun); after TRANSIENT_ATTEMPTS the error names asset and partitions."""
    for attempt in range(1, TRANSIENT_ATTEMPTS + 1):
        try:
            return write()
        except (psycopg.errors.DeadlockDetected, psycopg.errors.SerializationFailure, StalePublish) as exc:
            if attempt == TRANSIENT_ATTEMPTS:
                raise RuntimeError(
                    f"asset {target.asset!r}, partition {_span(days)}: {type(exc).__name__} in {TRANSIENT_ATTEMPTS} "
                    f"attempts ({str(exc).splitlines()[0]}); nothing was published, rerun the partition"
                ) from exc
            log.warning(f"{target.asset}: {type(exc).__name__} writing {_span(days)}, retrying ({attempt})")
    raise AssertionError("unreachable")


def _blockers(postgres: PostgresResource, waited_s: float) -> str:
    """The sessions that hold relation locks in this database inside transactions older than the wait: the
    likely blockers (read from a fresh session: the failed transaction can no longer query)."""
    with postgres.connect(autocommit=True) as conn:
        rows = conn.execute(
            """SELECT DISTINCT a.pid, a.state, a.application_name, left(a.query, 120), a.xact_start
               FROM pg_locks l JOIN pg_stat_activity a ON a.pid = l.pid
               WHERE l.granted AND l.locktype = 'relation' AND a.pid <> pg_backend_pid()
                 AND l.database = (SELECT oid FROM pg_database WHERE datname = current_database())
                 AND a.xact_start < now() - make_interval(secs => %s)
               ORDER BY a.xact_start LIMIT 5""",
            (waited_s,),
        ).fetchall()
    described = [f"pid {pid} ({state}, {app or 'no application_name'}, in a transaction since {start:%H:%M:%S}): {query!r}"
                 for pid, state, app, query, start in rows]
    return "; ".join(described) or "a session that has ended since"


def _publish_batch(sink, postgres, target, days, frame, run_id, log, checked, wait_s, known,
                   beside_others: bool = False) -> list[ledger.LedgerEntry]:
    """lock -> stage -> (audit passed?) -> verify -> [intent] -> publish -> ledger -> COMMIT, for one transaction's
    days. `known`: the digests attached to the frame (None: the audit thread computes them). `beside_others`:
    other transactions of the range run at the same time (the sink makes its DDL first, committed on its own)."""
    with postgres.connect() as conn:
        ledger.ensure_ledger(conn)
        sink.prepare(conn, target)
        conn.commit()
        if beside_others:
            try:
                sink.create_partitions(conn, target, days)
            except psycopg.errors.LockNotAvailable:
                conn.rollback()
                raise _lock_wait_timeout(sink, postgres, target, days, wait_s) from None
        log.info(f"{target.asset}: waiting for the partition lock of {_span(days)} in {sink.name}")
        ledger.lock_partitions(conn, target.asset, days)
        # Any other lock (a table another session holds) is waited for at most wait_s, then named.
        conn.execute("SELECT set_config('lock_timeout', %s, true)", (_lock_timeout(),))
        published = False
        try:
            entries, intents, kept = _write_locked(sink, postgres, conn, target, days, frame, run_id, checked, known)
            published = True
            if sink.publishes_in_transaction:
                ledger.record(conn, entries)
            else:
                ledger.confirm(conn, intents)
            fault_point(sink.name, "after_ledger", target.asset)
            conn.commit()
            if kept:
                log.info(f"{target.asset}: {len(kept)} of {len(days)} partitions in {sink.name} already hold this content, "
                         "untouched since their last publish: recorded, not rewritten")
        except psycopg.errors.LockNotAvailable:
            conn.rollback()
            raise _lock_wait_timeout(sink, postgres, target, days, wait_s) from None
        except PartitionLockLost:
            raise
        except Exception as exc:
            # Whatever failed (a COPY on a dead socket, a staged file a newer owner removed as an orphan): if the
            # session that held the lock is gone, that is the cause to report.
            if _session_alive(conn):
                raise
            raise _lock_lost(sink, target, days, exc, _outcome(sink, published)) from exc
    fault_point(sink.name, "after_commit", target.asset)
    return entries


def _lock_wait_timeout(sink, postgres, target, days, wait_s) -> LockWaitTimeout:
    return LockWaitTimeout(
        f"asset {target.asset!r}, partition {_span(days)}: waited more than {wait_s:g} s "
        f"(IDEM_PG_LOCK_WAIT_S) for a lock in {sink.name}; blocking: {_blockers(postgres, wait_s)}; "
        "nothing was published, rerun the partition once that session ends"
    )


def _lock_timeout() -> str:
    return f"{int(settings.current().pg_lock_wait_s * 1000)}ms"


def _lock_lost(sink, target, days, exc: BaseException, published: str) -> PartitionLockLost:
    return PartitionLockLost(
        f"asset {target.asset!r}, partition {_span(days)}: lost the partition lock in {sink.name}: the PostgreSQL "
        f"session that held it ended ({str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__}); "
        f"{published}; another writer may own the partition now, rerun it if none does"
    )


def _outcome(sink: PartitionSink, published: bool) -> str:
    """What a write that lost its session left, for the error message."""
    if not published:
        return "nothing was published"
    if sink.publishes_in_transaction:
        return ("its COMMIT did not complete: rolled back, unless the server committed it as the connection dropped "
                "(`idem ledger` says which)")
    return ("its new content is live and its ledger intent unconfirmed: readers, downstream loads and `idem verify` "
            "resolve it from the sink")


def _session_alive(conn: psycopg.Connection) -> bool:
    if conn.broken or conn.closed:
        return False
    try:
        conn.execute("SELECT 1")
    except psycopg.OperationalError:
        return False
    except psycopg.Error:  # an aborted transaction answers with an error: the session, and its lock, are alive
        return True
    return True


def _hold_lock(sink, conn, target, days) -> None:
    """Fence: the session that holds the partition lock still answers (else another writer may own the day)."""
    try:
        conn.execute("SELECT 1")
    except psycopg.OperationalError as exc:
        raise _lock_lost(sink, target, days, exc, "nothing was published") from None


def published_entries(
    sink: PartitionSink, conn: psycopg.Connection, target: AssetTarget, days: Sequence[str]
) -> dict[str, ledger.LedgerEntry]:
    """The ledger row of what each of `days` publishes in the sink (days never published are absent).

    The last confirmed row, unless a newer unconfirmed intent's version is what the sink holds: then that publish
    happened and its confirmation was lost (a crash between publish and confirm), and the intent is the truth.
    """
    store = sink.store(target)
    latest = ledger.latest_confirmed(conn, target.asset, sink.name, days, store)
    if sink.publishes_in_transaction:
        return latest
    pending = ledger.pending_intents(conn, target.asset, sink.name, days, store)
    if pending:
        live = sink.versions(target, sorted(pending))
        for day, intents in pending.items():
            hit = next((e for e in intents if e.version is not None and e.version == live.get(day)), None)
            if hit is not None:
                latest[day] = hit
    return latest


def _write_locked(sink, postgres, conn, target, days, frame, run_id, checked, known) -> tuple[list[ledger.LedgerEntry], list[int], set[str]]:
    """stage -> (audit passed?) -> verify -> [intent] -> publish, in the transaction that holds the lock; returns the
    ledger rows to record (PostgreSQL) or the intents to confirm (the other sinks), and the days not rewritten.

    A day whose new content is what the ledger recorded, and that the sink proves nobody wrote since
    (`identical_and_untouched`), is not staged or published again: the sink already holds exactly the new content.
    Its ledger row is recorded all the same (this run, the same fingerprint and version, `changed` False)."""
    store = sink.store(target)
    published = published_entries(sink, conn, target, days)
    ledger.confirm(conn, [e.id for e in published.values() if not e.confirmed])  # intents a crash left: they did publish
    previous = {day: e.fingerprint for day, e in published.items()}
    kept = identical_and_untouched(sink, target, days, known, published)
    write = [d for d in days if d not in kept]
    rows = frame if not kept else _rows_of_days(frame, write)
    fault_point(sink.name, "before_stage", target.asset)
    # Which days this write changes is decided while the rows are staged: a day the ledger says is unchanged is
    # read back from what readers see now (the committed old content, on another connection), overlapped with
    # the stage instead of after it.
    staged = None
    with ThreadPoolExecutor(max_workers=1, thread_name_prefix="idem-changed") as pool:
        changes = pool.submit(lambda: changed_days(sink, target, write, checked(), published, ask_sink=known is None))
        try:
            if write:
                staged = sink.stage(conn, target, write, rows, run_id)
        except BaseException:
            checked()  # bad input (e.g. a duplicate key the COPY tripped on) is reported by its audit rule
            raise
        try:
            digests = checked()  # an AuditError raised by the audit thread discards the stage
            changed = changes.result()
        except BaseException:
            if staged is not None:
                sink.discard(target, staged)
            raise
    try:
        fault_point(sink.name, "after_stage", target.asset)
        if staged is not None:
            sink.verify_staged(conn, target, staged, digests)
        fault_point(sink.name, "after_audit", target.asset)
        this_transaction = sink.transaction_version(conn) if sink.publishes_in_transaction else None

        def version(day: str) -> str | None:
            if day in kept:
                return published[day].version
            return this_transaction if sink.publishes_in_transaction else staged.versions[day]

        entries = [
            ledger.LedgerEntry(
                asset=target.asset, partition=day, sink=sink.name, location=sink.location(target, day),
                run_id=run_id, row_count=digests[day].rows, fingerprint=digests[day].fingerprint,
                previous_fingerprint=previous.get(day), store=store, changed=day in changed, version=version(day),
            )
            for day in days
        ]
        intents = []
        if not sink.publishes_in_transaction:
            with postgres.connect(autocommit=True) as side:  # committed before the publish, whatever happens next
                side.execute("SELECT set_config('lock_timeout', %s, false)", (_lock_timeout(),))
                intents = ledger.record_intents(side, entries)
        fault_point(sink.name, "after_intent", target.asset)
        if not sink.publishes_in_transaction:
            _hold_lock(sink, conn, target, days)
        if staged is not None:
            try:
                sink.publish(conn, target, staged)
            except StalePublish:
                _hold_lock(sink, conn, target, days)  # lock lost: this writer is the stale one
                raise  # lock held: a stale writer published in between; the batch is retried
    except BaseException:
        if staged is not None:
            sink.discard(target, staged)
        raise
    fault_point(sink.name, "after_publish", target.asset)
    return entries, intents, kept


def identical_and_untouched(
    sink: PartitionSink, target: AssetTarget, days: Sequence[str], known: dict[str, PartitionDigest] | None,
    published: dict[str, ledger.LedgerEntry],
) -> set[str]:
    """The days this write need not write: their new fingerprint (known before the stage, as `idem_asset` attaches
    it) is the one the ledger recorded, and the sink proves, under the partition lock, that nobody wrote them since
    that publish (`untouched_since_publish`: for PostgreSQL, one scan of row count and `xmin`). Rewriting them
    would leave the sink as it is, at the cost of a DELETE and a COPY (and dead rows to vacuum) per day: an identical
    rerun of a year costs what reading its ledger rows and proving the days costs.

    No other platform writer can publish these days until this transaction ends (the partition lock); a writer
    outside the platform that commits after the proof is ordered after this run, as it would be after a rewrite,
    and the next run (or `idem verify`) sees its edit as drift. Unknown digests, or a sink without the proof: none."""
    if known is None:
        return set()
    same = {d: published[d] for d in days if d in published and d in known and published[d].fingerprint == known[d].fingerprint}
    if not same:
        return set()
    try:
        return set(sink.untouched_since_publish(target, same)) & set(same)
    except Exception:  # noqa: BLE001 - no proof (a dropped table...): write the days
        return set()


def changed_days(
    sink: PartitionSink, target: AssetTarget, days: Sequence[str], digests: dict[str, PartitionDigest],
    published: dict[str, ledger.LedgerEntry], ask_sink: bool = True,
) -> set[str]:
    """The days this write changes in the sink: those whose ledger fingerprint differs from the new one, and
    those where the ledger says "unchanged" but the sink no longer holds what was published (drift a rerun
    repairs). Of the latter, the days the sink proves untouched since their publish (`untouched_since_publish`)
    are not read; the others are read back, under the partition lock, before the publish. `ask_sink=False`: the
    caller asked for the proof already (`identical_and_untouched`) and `days` are the ones that failed it."""
    changed = {d for d in days if d not in published or published[d].fingerprint != digests[d].fingerprint}
    same = [d for d in days if d not in changed]
    if same and ask_sink:
        try:
            untouched = sink.untouched_since_publish(target, {d: published[d] for d in same})
        except Exception:  # noqa: BLE001 - no proof (a dropped table...): read back, below
            untouched = set()
        same = [d for d in same if d not in untouched]
    if same:
        try:
            held = partition_digests(sink.read(target, same), target.decl, same)
        except Exception:  # noqa: BLE001 - the sink lost the day (a dropped table, a deleted file): the write restores it
            return set(days)
        changed |= {d for d in same if held[d].fingerprint != digests[d].fingerprint}
    return changed


def load_partitions(
    sink: PartitionSink,
    postgres: PostgresResource,
    target: AssetTarget,
    days: Sequence[str],
    *,
    columns: Sequence[str] | None = None,
    allow_missing: bool = False,
    log: logging.Logger | dg.DagsterLogManager = _log,
) -> pd.DataFrame:
    """The published rows of `days` (only `columns` and `partition_date`, when given).

    No days (the first partition of a self-dependent asset: its previous day lies before the start) is an empty
    frame of the declared columns. A day that was never published is an error, unless `allow_missing`: then the
    published days are loaded and the missing ones logged (count and the first few).
    """
    days = sorted(days)
    narrowed = target.narrowed(columns) if columns is not None else target
    if not days:
        return _selected(narrowed.decl.empty_frame(), target, columns)
    with postgres.connect() as conn:
        published = published_entries(sink, conn, target, days) if ledger.ledger_exists(conn) else {}
    missing = [d for d in days if d not in published]
    if missing and not allow_missing:
        raise dg.DagsterInvariantViolationError(
            f"asset {target.asset!r} has no published partition {_span(missing)} in {sink.name}; "
            f"materialize it first (dagster asset materialize --select {target.asset} --partition {missing[0]})"
        )
    if missing:
        shown = ", ".join(missing[:MISSING_SHOWN]) + (", ..." if len(missing) > MISSING_SHOWN else "")
        log.warning(
            f"{target.asset}: loading {len(days) - len(missing)} published of {len(days)} partitions from "
            f"{sink.name}; {len(missing)} never published: {shown}"
        )
        days = [d for d in days if d in published]
        if not days:
            return _selected(narrowed.decl.empty_frame(), target, columns)
    return _selected(sink.read(narrowed, days), target, columns)


MISSING_SHOWN = 5


def _selected(frame: pd.DataFrame, target: AssetTarget, columns: Sequence[str] | None) -> pd.DataFrame:
    """The requested columns in the requested order, `partition_date` last unless requested (it tells days apart)."""
    if columns is None:
        return frame
    names = [*columns, *([] if PARTITION_COLUMN in columns else [PARTITION_COLUMN])]
    return frame[names]


def described_value(value: object) -> str:
    """What an asset returned, for an error message: `None`, or its type and the start of its repr."""
    if value is None:
        return "None"
    text = repr(value)
    return f"{type(value).__name__} {text[:60] + '...' if len(text) > 60 else text}"


def _span(days: Sequence[str]) -> str:
    return days[0] if len(days) == 1 else f"{days[0]}...{days[-1]} ({len(days)} days)"


PUBLISHES_METADATA = "recent_publishes"
PUBLISHES_SHOWN = 10


def publishes_table(entries: Sequence[ledger.LedgerEntry]) -> dg.TableMetadataValue:
    """Ledger rows as a table the UI shows inline: the asset's recent publishes at a glance."""
    return dg.MetadataValue.table(
        records=[
            dg.TableRecord({
                "partition": e.partition,
                "published_at": e.published_at.astimezone(dt.timezone.utc).strftime("%Y-%m-%d %H:%M:%S UTC")
                if e.published_at else "",
                "rows": e.row_count,
                "fingerprint": e.fingerprint,
                "changed": bool(e.changed),
                "run": e.run_id[:8],
            })
            for e in entries
        ],
        schema=dg.TableSchema(columns=[
            dg.TableColumn("partition", "string"), dg.TableColumn("published_at", "string"),
            dg.TableColumn("rows", "int"), dg.TableColumn("fingerprint", "string"),
            dg.TableColumn("changed", "bool", description="did this publish change what the sink held?"),
            dg.TableColumn("run", "string", description="the first 8 characters of the run id"),
        ]),
    )


def recent_publishes(postgres: PostgresResource, entry: ledger.LedgerEntry, log) -> dict[str, Any]:
    """`{PUBLISHES_METADATA: table}` of the asset's last PUBLISHES_SHOWN publishes in the entry's sink and store,
    read in one query once the write committed; `{}` if that read fails (the write itself succeeded)."""
    try:
        with postgres.connect() as conn:
            entries = ledger.recent(conn, entry.asset, entry.sink, entry.store, PUBLISHES_SHOWN)
    except psycopg.Error as exc:
        log.warning(f"{entry.asset}: published, but could not read its recent publishes for the metadata: {exc}")
        return {}
    return {PUBLISHES_METADATA: publishes_table(entries)}


def partition_metadata(entry: ledger.LedgerEntry) -> dict[str, Any]:
    return {
        "dagster/row_count": entry.row_count,
        "dagster/partition_row_count": entry.row_count,
        "row_count": entry.row_count,
        "fingerprint": entry.fingerprint,
        "previous_fingerprint": entry.previous_fingerprint or "",
        "changed": entry.changed,
        "sink": entry.sink,
        "location": entry.location,
    }


class PartitionIOManager(dg.ConfigurableIOManager):
    """Base IO manager: every sink-specific IO manager only says which sink it builds."""

    postgres: PostgresResource
    dry_run: bool = False  # audit and hand the frame to `idem verify` instead of publishing
    enforces_key: ClassVar[bool] = False  # True: the sink holds one row per key itself (no `unique_key` check)

    @abc.abstractmethod
    def sink(self) -> PartitionSink: ...

    def containers_of(self, targets: Sequence[AssetTarget]) -> list[str | None]:
        """The name of what this IO manager writes each asset into (a table, an index), computed without touching
        a server or a file, for `code_location.refuse_shared_containers`; None: not known without I/O (the lake:
        one folder per asset key, never shared)."""
        return [None for _ in targets]

    def server_of(self) -> str:
        """Which server holds `containers_of`'s containers (two IO managers on one server can share a name)."""
        return repr(self.postgres)

    def store_of(self, assets_def: dg.AssetsDefinition, key: dg.AssetKey | None = None) -> str:
        """Where this IO manager keeps the asset (`key`, default the definition's only key): the ledger's `store`
        of its publishes, e.g. `warehouse.service_requests`. Deployments sharing one ledger write the same asset
        into different stores; a reader of the ledger that means this deployment's publishes filters on it
        (`published_partitions(..., store=...)`). Taken from the asset's definition, as a write takes it."""
        key = key or assets_def.key
        return self.sink().store(AssetTarget.from_metadata(key.to_user_string(), assets_def.specs_by_key[key].metadata))

    def handle_output(self, context: dg.OutputContext, obj: pd.DataFrame) -> None:
        target = AssetTarget.from_metadata(context.asset_key.to_user_string(), context.definition_metadata)
        if not context.has_asset_partitions:
            raise dg.DagsterInvariantViolationError(f"asset {target.asset!r} must be daily-partitioned")
        days = list(context.asset_partition_keys)
        if not isinstance(obj, pd.DataFrame):
            raise dg.DagsterInvariantViolationError(
                f"asset {target.asset!r} returned {described_value(obj)} for partition {_span(days)}, not a pandas "
                f"DataFrame: return the day's rows as a DataFrame (an empty DataFrame with the declared columns "
                f"{target.decl.names} for a day without rows); nothing was published"
            )
        # A verification run (tagged by `idem verify` / verify_job) never publishes, whatever the IO manager's
        # configuration: the tag, not a swapped resource, is the switch, so it works on any code location.
        if self.dry_run or CAPTURE_TAG in context.step_context.run_tags:
            frame, _ = attached_digests(obj, target.decl, days)
            audit_frame(target.asset, frame, days, target.decl, target.rules, self.sink().value_limits)
            capture_dry_run_frame(context, frame)
            return
        entries = publish_partitions(
            self.sink(), self.postgres, target, days, obj, context.run_id, context.log,
            partitions_def=context.asset_partitions_def,
        )
        publishes = recent_publishes(self.postgres, entries[-1], context.log)
        if len(entries) == 1:
            context.add_output_metadata(
                {**partition_metadata(entries[0]), SCHEMA_METADATA: target.decl.table_schema(), **publishes}
            )
            return
        # The table goes on one materialization of the range, the last day's: Dagster emits the range's events in
        # partition order, so it is the asset's latest. Output metadata would be copied into every day's event.
        for entry in entries:
            context.step_context.add_asset_metadata(
                {**partition_metadata(entry), **(publishes if entry.partition == days[-1] else {})},
                asset_key=context.asset_key, partition_key=entry.partition,
            )
        context.add_output_metadata(
            {
                SCHEMA_METADATA: target.decl.table_schema(),
                "partitions_written": len(entries),
                "partitions_changed": sum(e.changed for e in entries),
            }
        )

    def load_input(self, context: dg.InputContext) -> pd.DataFrame:
        """The upstream days Dagster mapped to this run, as Dagster's database IO managers load them:

        - no days (a self-dependent asset's first partition): an empty frame of the declared columns;
        - `AssetIn(metadata={"columns": [...]})`: only those columns (and `partition_date`);
        - an unpartitioned downstream, or `AssetIn(metadata={"allow_missing_partitions": True})`: the published
          days, the missing ones logged; otherwise a day never published is an error that says what to run.
        """
        upstream = context.upstream_output
        target = AssetTarget.from_metadata(context.asset_key.to_user_string(), upstream.definition_metadata)
        metadata = context.definition_metadata or {}
        allow_missing = bool(metadata.get("allow_missing_partitions")) or not context.has_partition_key
        return load_partitions(
            self.sink(), self.postgres, target, list(context.asset_partition_keys),
            columns=metadata.get("columns"), allow_missing=allow_missing, log=context.log,
        )
