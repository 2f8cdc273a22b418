"""Who else touches the same locks: writers of other days and other assets, and readers of the ledger.

The threat (issue 15): every write waited for every other write (ledger DDL on each write), a session idle in a
transaction after reading the ledger stopped all writes, and writers of different days of one asset deadlocked
on the swap path. Each test reproduces the situation with real sessions on a real server."""

import threading
import time

import psycopg
import pytest

from idem_platform.storage import ledger
from idem_platform.storage.lake_store import LakeSink
from idem_platform.storage.partition_store import AssetTarget, LockWaitTimeout, publish_partitions
from idem_platform.storage.postgres_store import PostgresTableSink

from .test_postgres_layout import DECL, SCHEMA, TARGET, frame, table_state, write

DAYS = [f"2026-01-{d:02d}" for d in range(1, 9)]


def _in_thread(fn, timeout: float):
    """Run fn; fail the test (instead of hanging) if it does not finish in time. The thread is a daemon: a
    write blocked for good is released when the test's sessions close."""
    result: dict = {}

    def run():
        try:
            result["value"] = fn()
        except BaseException as exc:  # noqa: BLE001 - re-raised in the test's thread
            result["error"] = exc

    thread = threading.Thread(target=run, daemon=True)
    thread.start()
    thread.join(timeout)
    if thread.is_alive():
        pytest.fail(f"the write was still waiting after {timeout:g} s")
    if "error" in result:
        raise result["error"]
    return result["value"]


@pytest.fixture
def idle_ledger_reader(pg_dsn, postgres):
    write(postgres, {DAYS[0]: 3})  # the ledger exists
    reader = psycopg.connect(pg_dsn)
    reader.execute("SELECT count(*) FROM idem.ledger").fetchone()  # ... and the session stays in its transaction
    yield reader
    reader.close()


@pytest.mark.parametrize("sink_kind", ["postgres", "lake"])
def test_a_session_idle_after_reading_the_ledger_does_not_stop_writes(idle_ledger_reader, postgres, lake, sink_kind):
    other = AssetTarget("other_asset", DECL, TARGET.rules)
    sink = PostgresTableSink(postgres, SCHEMA) if sink_kind == "postgres" else LakeSink(lake)
    rows = frame({DAYS[1]: 4})
    [entry] = _in_thread(lambda: publish_partitions(sink, postgres, other, [DAYS[1]], rows, "run-2"), timeout=30)
    assert entry.row_count == 4
    assert idle_ledger_reader.info.transaction_status == psycopg.pq.TransactionStatus.INTRANS  # still idle inside


def test_an_open_writer_of_another_asset_does_not_stop_a_write(pg_dsn, postgres):
    write(postgres, {DAYS[0]: 3})
    # What a writer of another asset holds while its write is open: the ledger row inserted, the rows deleted.
    open_writer = psycopg.connect(pg_dsn)
    open_writer.execute("INSERT INTO idem.ledger (asset, partition, sink, location, run_id, row_count, fingerprint, "
                        "changed) VALUES ('elsewhere', %s, 'postgres', '-', 'r', 0, '0', true)", (DAYS[3],))
    open_writer.execute("DELETE FROM wh.events WHERE partition_date = %s", (DAYS[0],))
    try:
        [entry] = _in_thread(lambda: write(postgres, {DAYS[2]: 5}, run_id="run-3"), timeout=30)
        assert entry.row_count == 5
    finally:
        open_writer.rollback()
        open_writer.close()


@pytest.mark.parametrize("swap_min_rows", [1, 50], ids=["all-swap", "mixed"])
def test_eight_writers_of_eight_days_of_one_asset_never_deadlock(pg_dsn, postgres, swap_min_rows):
    """Swap path (every day swapped) and a mix (days of 40 rows in place, 60 rows swapped), 6 rounds each."""
    write(postgres, {day: 10 for day in DAYS}, label="g0")
    errors: list[BaseException] = []
    for round_ in range(1, 7):
        sizes = {day: (60 if (i + round_) % 2 else 40) for i, day in enumerate(DAYS)}
        barrier = threading.Barrier(len(DAYS))

        def one(day):
            barrier.wait()
            try:
                write(postgres, {day: sizes[day]}, label=f"g{round_}", run_id=f"r{round_}{day[-2:]}",
                      swap_min_rows=swap_min_rows)
            except BaseException as exc:  # noqa: BLE001 - collected, asserted below
                errors.append(exc)

        threads = [threading.Thread(target=one, args=(day,)) for day in DAYS]
        for t in threads:
            t.start()
        for t in threads:
            t.join(timeout=180)
        assert not errors, errors
        assert table_state(pg_dsn) == {day: (sizes[day], {f"g{round_}"}) for day in DAYS}
    with postgres.connect() as conn:
        assert len(ledger.history(conn, asset="events")) == len(DAYS) * 7


def test_a_lock_held_too_long_fails_naming_the_session(pg_dsn, postgres, monkeypatch):
    write(postgres, {DAYS[0]: 3})
    monkeypatch.setenv("IDEM_PG_LOCK_WAIT_S", "1")
    holder = psycopg.connect(pg_dsn, application_name="someones_migration")
    holder.execute("LOCK TABLE wh.events IN ACCESS EXCLUSIVE MODE")
    try:
        started = time.monotonic()
        with pytest.raises(LockWaitTimeout) as err:
            _in_thread(lambda: write(postgres, {DAYS[0]: 4}, run_id="run-2"), timeout=60)
        assert time.monotonic() - started < 20
        message = str(err.value)
        assert "'events'" in message and DAYS[0] in message and "IDEM_PG_LOCK_WAIT_S" in message
        assert f"pid {holder.info.backend_pid}" in message and "someones_migration" in message
    finally:
        holder.rollback()
        holder.close()
    assert table_state(pg_dsn)[DAYS[0]][0] == 3  # nothing was published


@pytest.mark.parametrize("swap_min_rows", [1, 10**9], ids=["swap", "in_place"])
def test_a_table_named_like_a_day_partition_is_never_dropped(pg_dsn, postgres, swap_min_rows):
    """An asset named `events_p20260105` is a valid Dagster name; publishing `events` for 2026-01-05 must not
    take its table for the day's partition (test_lookalike_names.py: the two assets side by side)."""
    with psycopg.connect(pg_dsn, autocommit=True) as conn:
        conn.execute("CREATE SCHEMA IF NOT EXISTS wh")
        conn.execute("CREATE TABLE wh.events_p20260105 (id int)")
        conn.execute("INSERT INTO wh.events_p20260105 VALUES (1), (2)")
    write(postgres, {"2026-01-05": 5}, swap_min_rows=swap_min_rows)
    write(postgres, {"2026-01-05": 4}, run_id="run-2", swap_min_rows=swap_min_rows)
    assert table_state(pg_dsn) == {"2026-01-05": (4, {"a"})}
    with psycopg.connect(pg_dsn) as conn:
        assert conn.execute("SELECT count(*) FROM wh.events_p20260105").fetchone()[0] == 2


@pytest.mark.parametrize("isolation", ["REPEATABLE READ", "SERIALIZABLE"])
def test_a_snapshot_taken_before_a_publish_sees_the_old_day_by_default(pg_dsn, postgres, isolation):
    """A reader whose snapshot predates the publish and whose first read of the table follows it: the default
    (in place) path shows it the old day whole, never an empty one."""
    write(postgres, {DAYS[0]: 500}, label="old")
    reader = psycopg.connect(pg_dsn)
    try:
        reader.execute(f"BEGIN ISOLATION LEVEL {isolation}")
        reader.execute("SELECT 1").fetchone()  # the snapshot is taken; the table not yet touched
        write(postgres, {DAYS[0]: 400}, label="new", run_id="run-2")  # the default sink
        count, labels = reader.execute(
            "SELECT count(*), array_agg(DISTINCT split_part(label, '-', 1)) FILTER (WHERE label IS NOT NULL) "
            "FROM wh.events WHERE partition_date = %s", (DAYS[0],)
        ).fetchone()
        assert (count, labels) == (500, ["old"])
    finally:
        reader.rollback()
        reader.close()
    assert table_state(pg_dsn)[DAYS[0]] == (400, {"new"})


OVERLAPPING = {"a": DAYS, "b": DAYS[2:], "c": DAYS[:6]}  # 8, 6 and 6 days


def overlapping_writers_leave_every_day_whole(postgres, pg_dsn, round_: int) -> None:
    """The three writers of OVERLAPPING start together (2 days per transaction); then none has failed and every
    day holds exactly one writer's rows, whole (never two generations mixed, never a gap)."""
    barrier = threading.Barrier(len(OVERLAPPING))
    errors: list[BaseException] = []

    def one(name, days):
        barrier.wait()
        try:
            write(postgres, {day: 12 for day in days}, label=f"{name}{round_}", run_id=f"{name}{round_}",
                  days_per_transaction=2)
        except BaseException as exc:  # noqa: BLE001 - collected, asserted below
            errors.append(exc)

    threads = [threading.Thread(target=one, args=item) for item in OVERLAPPING.items()]
    for t in threads:
        t.start()
    for t in threads:
        t.join(timeout=180)
    assert not errors, errors
    state = table_state(pg_dsn)
    assert set(state) == set(DAYS)
    for day, (count, generations) in state.items():
        assert count == 12 and len(generations) == 1, (day, count, generations)
        assert generations <= {f"{n}{round_}" for n, days in OVERLAPPING.items() if day in days}, (day, generations)


def test_writers_of_overlapping_ranges_each_two_transactions_at_once_leave_every_day_whole(pg_dsn, postgres):
    """A range's transactions run two at a time (every day's partition present, no swap); three writers of
    overlapping ranges (8, 6 and 6 days, 2 days per transaction) start together, 4 rounds: none deadlocks or
    fails, and every day holds exactly one writer's rows, whole (never two generations mixed, never a gap)."""
    write(postgres, {day: 10 for day in DAYS}, label="g0")  # the partitions exist: the concurrent path is taken
    assert PostgresTableSink(postgres, SCHEMA, days_per_transaction=2).concurrent_transactions(TARGET, DAYS) == 2
    for round_ in range(1, 5):
        overlapping_writers_leave_every_day_whole(postgres, pg_dsn, round_)


def drop_table(dsn: str) -> None:
    with psycopg.connect(dsn, autocommit=True) as conn:
        conn.execute("DROP TABLE IF EXISTS wh.events")


def test_writers_of_overlapping_first_loads_each_creating_its_partitions_first_leave_every_day_whole(pg_dsn, postgres):
    """First loads (no day has a partition yet): each transaction of a range creates its days' missing partitions
    first, in a short transaction under the days' partition locks, while the range's other transaction writes.
    Three writers of overlapping ranges start together on an empty table, 4 rounds (the table dropped between
    them): their ATTACHes and writes interleave (one writer's ATTACH while another's transactions hold the
    table, both kinds of lock on the same days); none deadlocks or fails, every day holds exactly one writer's
    rows, whole, and no day has two partitions."""
    for round_ in range(1, 5):
        drop_table(pg_dsn)
        write(postgres, {DAYS[0]: 1}, label="seed", run_id=f"seed{round_}")  # the table, partitioned, one day
        overlapping_writers_leave_every_day_whole(postgres, pg_dsn, round_)
        with psycopg.connect(pg_dsn) as conn:
            bounds = conn.execute("SELECT pg_get_expr(c.relpartbound, c.oid) FROM pg_inherits i "
                                  "JOIN pg_class c ON c.oid = i.inhrelid WHERE i.inhparent = 'wh.events'::regclass").fetchall()
        assert len(bounds) == len(set(bounds)) == len(DAYS)


def test_a_first_load_whose_partitions_another_writer_holds_waits_its_turn_for_those_days_only(pg_dsn, postgres):
    """Who else touches the same locks: another session holds the partition lock of one new day of the range
    (a writer of that day, mid-write). The transaction holding that day waits for it before it makes its
    partitions, as any writer waits its turn; the range's other transactions make theirs and publish meanwhile;
    once the lock is released every day is published."""
    write(postgres, {DAYS[0]: 2}, label="seed")  # the table exists; DAYS[1:] are new days
    holder = psycopg.connect(pg_dsn)
    ledger.lock_partitions(holder, TARGET.asset, [DAYS[4]])
    done: dict = {}

    def the_range():
        try:
            done["entries"] = write(postgres, {day: 7 for day in DAYS[1:]}, label="r", run_id="range",
                                    days_per_transaction=2, lock_timeout_ms=200)
        except BaseException as exc:  # noqa: BLE001 - asserted below
            done["error"] = exc

    writer = threading.Thread(target=the_range, daemon=True)
    writer.start()
    try:
        time.sleep(3)
        assert writer.is_alive(), done
        published = table_state(pg_dsn)
        assert DAYS[4] not in published and DAYS[3] not in published  # DAYS[3:5]: the waiting transaction's days
        assert {DAYS[1], DAYS[2], DAYS[5], DAYS[6], DAYS[7]} <= set(published)  # the other transactions published
    finally:
        holder.rollback()
        holder.close()
    writer.join(60)
    assert "error" not in done, done.get("error")
    assert len(done["entries"]) == 7
    assert table_state(pg_dsn) == {DAYS[0]: (2, {"seed"}), **{day: (7, {"r"}) for day in DAYS[1:]}}


HOLD_ROWS_OF_A_DAY = """
CREATE FUNCTION wh.idem_test_wait_for_the_holder() RETURNS trigger LANGUAGE plpgsql AS $$
BEGIN
  IF NEW.partition_date = %(day)s THEN PERFORM pg_advisory_xact_lock_shared(4242); END IF;
  RETURN NEW;
END $$;
CREATE TRIGGER idem_test_wait_for_the_holder BEFORE INSERT ON wh.events FOR EACH ROW
  EXECUTE FUNCTION wh.idem_test_wait_for_the_holder();
"""


def test_a_first_load_transaction_held_mid_write_holds_back_no_other_transactions_partitions(pg_dsn, postgres):
    """Who else needs the table while a first load's transaction writes: the range's next transaction, whose
    days have no partition yet. Its partitions need an ATTACH (SHARE UPDATE EXCLUSIVE on the table). The first
    transaction is held in the middle of its COPY (a row trigger the ATTACHes give every new partition waits for
    a lock another session holds): the second still makes its partitions and publishes its days, the held days
    stay as they were, and once released every day is published, once."""
    write(postgres, {DAYS[0]: 2}, label="seed")  # the table exists; DAYS[1:5] are new days
    with psycopg.connect(pg_dsn, autocommit=True) as conn:
        conn.execute(HOLD_ROWS_OF_A_DAY.replace("%(day)s", f"'{DAYS[1]}'"))
    holder = psycopg.connect(pg_dsn)
    holder.execute("SELECT pg_advisory_xact_lock(4242)")
    done: dict = {}

    def the_range():
        try:
            done["entries"] = write(postgres, {day: 6 for day in DAYS[1:5]}, label="r", run_id="range",
                                    days_per_transaction=2)
        except BaseException as exc:  # noqa: BLE001 - asserted below
            done["error"] = exc

    writer = threading.Thread(target=the_range, daemon=True)
    writer.start()
    try:
        deadline = time.monotonic() + 30
        while time.monotonic() < deadline and not {DAYS[3], DAYS[4]} <= set(table_state(pg_dsn)):
            time.sleep(0.1)
        published = table_state(pg_dsn)
        assert writer.is_alive(), done
        with psycopg.connect(pg_dsn) as conn:
            waiting = conn.execute("SELECT count(*) FROM pg_stat_activity WHERE wait_event_type = 'Lock' "
                                   "AND query LIKE 'COPY%'").fetchone()[0]
    finally:
        holder.rollback()
        holder.close()
    writer.join(60)
    assert waiting == 1  # the first transaction was held inside its COPY
    assert published == {DAYS[0]: (2, {"seed"}), DAYS[3]: (6, {"r"}), DAYS[4]: (6, {"r"})}
    assert "error" not in done, done.get("error")
    assert table_state(pg_dsn) == {DAYS[0]: (2, {"seed"}), **{day: (6, {"r"}) for day in DAYS[1:5]}}


def test_a_repeatable_read_reader_sees_no_row_of_a_first_load_made_after_its_snapshot(pg_dsn, postgres):
    """Who else reads while a first load makes its partitions, each transaction's in a short transaction of its
    own: a REPEATABLE READ reader whose snapshot predates the range. DDL is not MVCC-safe, so it sees the new
    partitions; it must still see what its snapshot held, no rows of those days, through every ATTACH and COMMIT of
    the range, without an error; a new snapshot sees every day whole."""
    write(postgres, {DAYS[0]: 2}, label="seed")  # the table exists; DAYS[1:] are new days
    reader = psycopg.connect(pg_dsn)
    reader.execute("SET TRANSACTION ISOLATION LEVEL REPEATABLE READ")
    count = lambda: reader.execute("SELECT count(*) FROM wh.events WHERE partition_date > %s", (DAYS[0],)).fetchone()[0]  # noqa: E731
    assert count() == 0  # the snapshot is taken
    done: dict = {}

    def the_range():
        try:
            done["entries"] = write(postgres, {day: 9 for day in DAYS[1:]}, label="r", run_id="range",
                                    days_per_transaction=2)
        except BaseException as exc:  # noqa: BLE001 - asserted below
            done["error"] = exc

    writer = threading.Thread(target=the_range, daemon=True)
    writer.start()
    seen = set()
    try:
        while writer.is_alive():
            seen.add(count())
        writer.join(60)
        seen.add(count())
    finally:
        reader.rollback()
        reader.close()
    assert "error" not in done, done.get("error")
    assert seen == {0}
    assert table_state(pg_dsn) == {DAYS[0]: (2, {"seed"}), **{day: (9, {"r"}) for day in DAYS[1:]}}


def test_a_first_load_refused_by_its_audit_publishes_nothing_and_a_rerun_publishes_it(pg_dsn, postgres):
    """The range's partitions are created before its audit has finished (it runs beside the first COPY): a
    refused range leaves every day as it was (no row, no ledger entry; at most empty partitions) and the
    corrected rerun publishes every day."""
    from idem_platform.storage.audit import AuditError

    write(postgres, {DAYS[0]: 2}, label="seed")
    bad = frame({day: 5 for day in DAYS[1:]}, "bad")
    bad.loc[bad.index[-1], "id"] = bad.loc[bad.index[-2], "id"]  # a duplicate key on the last day
    sink = PostgresTableSink(postgres, SCHEMA, days_per_transaction=2)
    with pytest.raises(AuditError):
        publish_partitions(sink, postgres, TARGET, DAYS[1:], bad, "bad-run")
    assert table_state(pg_dsn) == {DAYS[0]: (2, {"seed"})}
    with psycopg.connect(pg_dsn) as conn:
        assert [e.partition for e in ledger.history(conn, "events")] == [DAYS[0]]
    write(postgres, {day: 5 for day in DAYS[1:]}, label="good", run_id="good-run", days_per_transaction=2)
    assert table_state(pg_dsn) == {DAYS[0]: (2, {"seed"}), **{day: (5, {"good"}) for day in DAYS[1:]}}
