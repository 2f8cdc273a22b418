"""dagster-postgres' event log storage, holding its connection instead of opening one per event.

`dagster_postgres.PostgresEventLogStorage` uses SQLAlchemy's NullPool: every event a run writes (one
ASSET_MATERIALIZATION_PLANNED and one materialization per partition, step and log events...) opens and closes
a PostgreSQL connection. A 365-day backfill run opens ~1,900 of them. This subclass keeps a small pool instead
(two connections held per process: dagster-postgres opens a second one while it writes an asset check evaluation,
which with one held connection cost a new connection per evaluation, 365 in a range run; more threads get overflow
connections that are closed on return), the same
engine settings dagster-postgres itself uses for the webserver (`optimize_for_webserver`). Connections are
checked before use (`pool_pre_ping`) and recycled hourly, so a restarted server costs one failed ping, not a
failed run. Everything else (schema, migrations, queries) is dagster-postgres' own.

**Two kinds of per-partition events are stored in one transaction per batch** (`store_event_batch`), where
dagster-postgres stores them one at a time:
- the planned events of a run (one per asset and partition, written when the run is created, ~1 s of a 365-day
  run before its first step): their rows in one INSERT, their tags, and each asset's entry, as dagster-postgres
  stores its batches of materializations;
- check evaluations: their rows in one INSERT, then their check execution rows (made by the run's planned
  events) updated as Dagster's `_update_asset_check_evaluation` updates each, by one `UPDATE ... FROM unnest(...)`;
  an evaluation with no such row goes through Dagster's own code. One at a time, each was an INSERT, a NOTIFY, a
  catalog query and an UPDATE, 4-5 ms: 1.5-2 s of a 365-day run's checks; as a batch with Dagster's update per
  evaluation, ~0.45 s; as these two statements, ~0.12 s.

A planned check's execution rows (one per day of the run, made when the run is created) are inserted as Dagster
inserts them, with the planned event serialized once instead of once per day (`_store_asset_check_evaluation_planned`).

Both statements send the rows as one array per column (`unnest`), so their text is the same for any number of
events and SQLAlchemy compiles it once; a VALUES list of bound rows (Dagster's batch INSERT) is compiled anew
for every batch, ~0.1 s for 365 events. Each event is serialized once, for its row and its execution row.

Dagster sends planned events as a batch already (with `DAGSTER_EVENT_BATCH_SIZE` set, as the platform sets it);
`check_records.log_evaluations` logs a range run's evaluations as a batch when this storage says it takes them
(`stores_check_evaluation_batches`); dagster-postgres' own storage refuses them. A batch that fails rolls back
whole, and Dagster then stores its events one at a time.
"""

from __future__ import annotations

import threading
from collections import Counter
from collections.abc import Sequence
from contextlib import contextmanager, nullcontext
from typing import Any

import sqlalchemy as db
import sqlalchemy.pool as db_pool
from dagster import DagsterEventType, DagsterInvariantViolationError, EventLogEntry
from dagster._core.storage.asset_check_execution_record import AssetCheckExecutionRecordStatus
from dagster._core.storage.event_log import SqlEventLogStorageTable
from dagster._core.storage.event_log.schema import AssetCheckExecutionsTable
from dagster._serdes import serialize_value
from dagster_postgres.event_log import PostgresEventLogStorage
from dagster_postgres.utils import create_pg_connection, create_pg_engine, get_token_provider_from_config, pg_url_from_config

POOL_RECYCLE_SECONDS = 3600


def _pooled_engine(url: str, token_provider) -> db.engine.Engine:
    return create_pg_engine(
        url,
        token_provider,
        isolation_level="AUTOCOMMIT",
        poolclass=db_pool.QueuePool,
        pool_size=2,
        max_overflow=-1,
        pool_recycle=POOL_RECYCLE_SECONDS,
        pool_pre_ping=True,
    )


class PooledPostgresEventLogStorage(PostgresEventLogStorage):
    stores_check_evaluation_batches = True  # read by check_records.log_evaluations

    def __init__(self, postgres_url: str, should_autocreate_tables: bool = True, inst_data=None, token_provider=None):
        self._batch = threading.local()  # before dagster-postgres' __init__ connects
        super().__init__(postgres_url, should_autocreate_tables, inst_data, token_provider)
        self._engine.dispose()
        self._engine = _pooled_engine(self.postgres_url, self._token_provider)

    @property
    def supports_asset_checks(self) -> bool:
        """dagster-postgres asks the catalog on every check event whether its table exists; once it does, it stays."""
        if not getattr(self, "_has_asset_check_table", False):
            self._has_asset_check_table = super().supports_asset_checks
        return self._has_asset_check_table

    def store_event_batch(self, events: Sequence[EventLogEntry]) -> None:
        """dagster-postgres' batches, except two kinds it stores one event at a time, stored here in one
        transaction each (module docstring): check evaluations, and the per-partition planned events."""
        if not events:
            return super().store_event_batch(events)
        if all(e.dagster_event_type == DagsterEventType.ASSET_CHECK_EVALUATION for e in events):
            return self._store_evaluations(events)
        planned = [e for e in events if e.dagster_event_type == DagsterEventType.ASSET_MATERIALIZATION_PLANNED]
        if len(planned) < 2:
            return super().store_event_batch(events)
        self._store_planned(planned)
        rest = [e for e in events if e.dagster_event_type != DagsterEventType.ASSET_MATERIALIZATION_PLANNED]
        if rest:  # the run's planned check events: dagster-postgres stores them
            super().store_event_batch(rest)

    @contextmanager
    def _one_transaction(self):
        """A connection in a transaction, which every storage call of this thread uses until it ends."""
        with create_pg_connection(self._engine) as conn:
            conn = conn.execution_options(isolation_level="READ COMMITTED")
            with conn.begin():
                self._batch.connection = conn
                try:
                    yield conn
                finally:
                    self._batch.connection = None

    # The event log's rows of a batch (Dagster's `_event_to_row`) as one array per column (`unnest`): the statement
    # is the same text for any number of events. Dagster's own batch INSERT of a VALUES list of bound rows is
    # compiled anew for every batch (~0.1 s for 365 events). The ids follow the rows' order (`ORDER BY n`: the
    # sequence hands them out in the order the rows are inserted).
    _EVENT_COLUMNS = ("run_id", "event", "dagster_event_type", "timestamp", "step_key", "asset_key", "partition")
    _INSERT_EVENTS = db.text(f"""
        INSERT INTO {SqlEventLogStorageTable.name} ({", ".join(_EVENT_COLUMNS)})
        SELECT {", ".join(_EVENT_COLUMNS)}
        FROM unnest(CAST(:run_id AS TEXT[]), CAST(:event AS TEXT[]), CAST(:dagster_event_type AS TEXT[]),
                    CAST(:timestamp AS TIMESTAMP[]), CAST(:step_key AS TEXT[]), CAST(:asset_key AS TEXT[]),
                    CAST(:partition AS TEXT[])) WITH ORDINALITY AS v({", ".join(_EVENT_COLUMNS)}, n)
        ORDER BY n
        RETURNING id""")

    def _insert(self, conn, events: Sequence[EventLogEntry]) -> tuple[list[int], list[dict[str, Any]]]:
        """The events' rows of the event log, each event serialized once, in one INSERT; their ids, in the
        events' order, and the rows."""
        rows = [self._event_to_row(event) for event in events]
        ids = sorted(int(event_id) for (event_id,) in conn.execute(self._INSERT_EVENTS, _arrays(rows, self._EVENT_COLUMNS)))
        return ids, rows

    def _store_evaluations(self, events: Sequence[EventLogEntry]) -> None:
        """The event rows, then each evaluation's check execution row (the one its planned event made) updated
        as Dagster's `_update_asset_check_evaluation` updates it, all of them by one UPDATE; an evaluation with
        no such row (no planned event, or no run) is stored by Dagster's own code, which inserts it."""
        with self._one_transaction() as conn:
            ids, rows = self._insert(conn, events)
            updated = self._update_check_executions(conn, events, ids, rows)
            for position, (event, event_id) in enumerate(zip(events, ids, strict=True)):
                if position not in updated:
                    self.store_asset_check_event(event, event_id)

    # What Dagster's `_update_asset_check_evaluation` sets, for every evaluation at once: the rows come as one
    # array per column (`unnest`), so the statement is the same text for any number of them (a VALUES list of
    # bound rows is compiled anew for each batch: ~0.1 s for 365). Each row is found by equality on all four
    # columns of Dagster's unique index (asset key, check, run, partition): one index probe per evaluation, however
    # many executions the instance holds. (`partition IS NOT DISTINCT FROM` cannot use that index: the server then
    # compared every evaluation with every execution of the check ever stored, 0.7 s for 365 evaluations against
    # 4,400 executions and growing with each run.) An evaluation without a partition goes through Dagster's code.
    _UPDATE_CHECK_EXECUTIONS = db.text(f"""
        UPDATE {AssetCheckExecutionsTable.name} AS t
        SET execution_status = v.status, evaluation_event = v.event, evaluation_event_timestamp = v.ts,
            evaluation_event_storage_id = v.event_id, materialization_event_storage_id = v.materialization_id,
            partition = v.partition
        FROM unnest(CAST(:position AS INTEGER[]), CAST(:asset_key AS TEXT[]), CAST(:check_name AS TEXT[]),
                    CAST(:run_id AS TEXT[]), CAST(:partition AS TEXT[]), CAST(:status AS TEXT[]),
                    CAST(:event AS TEXT[]), CAST(:ts AS TIMESTAMP[]), CAST(:event_id AS BIGINT[]),
                    CAST(:materialization_id AS BIGINT[]))
             AS v(position, asset_key, check_name, run_id, partition, status, event, ts, event_id, materialization_id)
        WHERE t.asset_key = v.asset_key AND t.check_name = v.check_name AND t.run_id = v.run_id
          AND t.partition = v.partition
        RETURNING v.position""")

    def _update_check_executions(self, conn, events: Sequence[EventLogEntry], ids: Sequence[int],
                                 rows: Sequence[dict[str, Any]]) -> set[int]:
        """One UPDATE setting what Dagster sets per evaluation (status, event, timestamp, storage ids), matched
        on the row Dagster matches: (asset key, check name, run id, partition). The positions in `events` it
        updated. Two rows for one evaluation is Dagster's duplicate-planned-events error, raised as Dagster
        raises it (the batch rolls back). `rows`: the events' event-log rows (`_insert`: text and timestamp)."""
        if not self.supports_asset_checks:
            return set()  # Dagster's own path says to migrate
        executions = []
        for position, (event, event_id, row) in enumerate(zip(events, ids, rows, strict=True)):
            evaluation = event.dagster_event.event_specific_data
            if not event.run_id or evaluation.partition is None:
                continue  # a runless evaluation, or one without a partition: Dagster's own path stores it
            target = evaluation.target_materialization_data
            status = AssetCheckExecutionRecordStatus.SUCCEEDED if evaluation.passed else \
                AssetCheckExecutionRecordStatus.FAILED
            executions.append({
                "position": position, "asset_key": evaluation.asset_key.to_string(),
                "check_name": evaluation.check_name, "run_id": event.run_id, "partition": evaluation.partition,
                "status": status.value, "event": row["event"], "ts": row["timestamp"], "event_id": event_id,
                "materialization_id": target.storage_id if target else None,
            })
        if not executions:
            return set()
        positions = Counter(position for (position,) in conn.execute(
            self._UPDATE_CHECK_EXECUTIONS, _arrays(executions, list(executions[0]))))
        duplicated = [position for position, count in positions.items() if count > 1]
        if duplicated:
            evaluation = events[duplicated[0]].dagster_event.event_specific_data
            raise DagsterInvariantViolationError(
                f"Updated {positions[duplicated[0]]} rows for asset check evaluation {evaluation.asset_check_key} "
                "as a result of duplicate AssetCheckPlanned events."
            )
        return set(positions)

    def _store_planned(self, events: Sequence[EventLogEntry]) -> None:
        """What dagster-postgres' `store_event` does for each planned event (its row, its tags, the asset's
        entry), as its own batch of materializations does it: the asset's entry from the asset's last event
        (it records the run that plans the asset, the same for all of them)."""
        with self._one_transaction() as conn:
            ids, _ = self._insert(conn, events)
            self._store_asset_event_tags(conn, events, ids)
            last = {event.dagster_event.asset_key: (event, event_id) for event, event_id in zip(events, ids, strict=True)}
            for event, event_id in last.values():
                self._store_asset_event(conn, event, event_id)

    # What Dagster's `_store_asset_check_evaluation_planned` inserts, one row per partition of the planned check,
    # with the event serialized once: Dagster serializes it again for every partition (a range's planned event
    # carries the range: 365 serializations and a VALUES list of 365 rows, ~0.1 s of a 365-day run).
    _INSERT_PLANNED_EXECUTIONS = db.text(f"""
        INSERT INTO {AssetCheckExecutionsTable.name} (asset_key, check_name, partition, run_id, execution_status,
                                                      evaluation_event, evaluation_event_timestamp,
                                                      evaluation_event_storage_id)
        SELECT :asset_key, :check_name, v.partition, :run_id, :status, :event, :ts, :event_id
        FROM unnest(CAST(:partitions AS TEXT[])) WITH ORDINALITY AS v(partition, n)
        ORDER BY v.n""")

    def _store_asset_check_evaluation_planned(self, event: EventLogEntry, event_id: int | None) -> None:
        planned = event.dagster_event.event_specific_data
        partitions = planned.partitions_subset.get_partition_keys() if planned.partitions_subset else [None]
        with self.index_connection() as conn:
            conn.execute(self._INSERT_PLANNED_EXECUTIONS, {
                "asset_key": planned.asset_key.to_string(), "check_name": planned.check_name,
                "partitions": list(partitions), "run_id": event.run_id,
                "status": AssetCheckExecutionRecordStatus.PLANNED.value, "event": serialize_value(event),
                "ts": self._event_insert_timestamp(event), "event_id": event_id,
            })

    def _connect(self):
        held = getattr(self._batch, "connection", None)
        return nullcontext(held) if held is not None else super()._connect()

    def dispose(self) -> None:
        """Close the connections the pools hold (dagster-postgres' own engine held none)."""
        super().dispose()
        self._engine.dispose()

    @classmethod
    def from_config_value(cls, inst_data, config_value: dict[str, Any]) -> PooledPostgresEventLogStorage:
        return cls(
            postgres_url=pg_url_from_config(config_value),
            should_autocreate_tables=config_value.get("should_autocreate_tables", True),
            inst_data=inst_data,
            token_provider=get_token_provider_from_config(config_value),
        )


def _arrays(rows: Sequence[dict[str, Any]], names: Sequence[str]) -> dict[str, list]:
    """`rows` as one list per column: the `unnest` statements' parameters."""
    return {name: [row[name] for row in rows] for name in names}
