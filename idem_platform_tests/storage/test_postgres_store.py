"""PostgresPartitionIOManager against a real PostgreSQL: reruns, empty days, failed audits, loading, schema changes."""

import dagster as dg
import pandas as pd
import psycopg
import pytest

from idem_platform.pipelines.people import people, raw_people
from idem_platform.declare import idem_asset
from idem_platform.storage import ledger
from idem_platform.storage.audit import AuditError
from idem_platform.storage.fingerprint import fingerprint
from idem_platform.storage.partition_store import AssetTarget, load_partitions
from idem_platform.storage.postgres_store import PostgresTableSink

DAY = "2026-01-05"


class ItemsConfig(dg.Config):
    rows: int = 10
    duplicate_keys: bool = False
    wrong_day: str = ""
    value: str = "v"


@idem_asset(columns={"item_id": "int", "label": "string"}, key=["item_id"], io_manager_key="warehouse_io", max_rows=500)
def items(context: dg.AssetExecutionContext, config: ItemsConfig) -> pd.DataFrame:
    frames = []
    for day in context.partition_keys:
        ids = [1] * config.rows if config.duplicate_keys else list(range(config.rows))
        frames.append(pd.DataFrame({"item_id": ids, "label": config.value, "partition_date": config.wrong_day or day}))
    return pd.concat(frames, ignore_index=True)


def run(assets, resources, partition=DAY, config=None, range_=None, raise_on_error=True):
    tags = {}
    if range_:
        tags = {"dagster/asset_partition_range_start": range_[0], "dagster/asset_partition_range_end": range_[1]}
        partition = None
    return dg.materialize(
        assets, partition_key=partition, tags=tags, resources=resources, instance=dg.DagsterInstance.ephemeral(),
        run_config={"ops": {"items": {"config": config}}} if config else None, raise_on_error=raise_on_error,
    )


def day_counts(dsn, table, key="item_id", schema="warehouse"):
    with psycopg.connect(dsn) as conn:
        rows = conn.execute(f'SELECT partition_date::text, count(*), count(DISTINCT {key}) FROM {schema}."{table}" GROUP BY 1').fetchall()
    return {day: (n, distinct) for day, n, distinct in rows}


def ledger_rows(dsn, asset):
    with psycopg.connect(dsn) as conn:
        return ledger.history(conn, asset=asset)


def materialized(result, asset):
    return {
        ev.materialization.partition: {k: v.value for k, v in ev.materialization.metadata.items()}
        for ev in result.get_asset_materialization_events()
        if ev.materialization.asset_key.path[-1] == asset
    }


def test_three_reruns_keep_one_copy_and_the_same_fingerprint(store_resources, pg_dsn):
    versions = []
    for _ in range(3):
        result = run([raw_people, people], store_resources)
        meta = materialized(result, "people")[DAY]
        versions.append(result.asset_materializations_for_node("people")[0].tags["dagster/data_version"])
        assert meta["row_count"] == 1000
    with psycopg.connect(pg_dsn) as conn:
        n, distinct = conn.execute("SELECT count(*), count(DISTINCT person_id) FROM warehouse.people WHERE partition_date = %s", (DAY,)).fetchone()
    assert (n, distinct) == (1000, 1000)
    rows = ledger_rows(pg_dsn, "people")
    assert [r.changed for r in rows] == [True, False, False]
    assert len({r.fingerprint for r in rows}) == 1
    assert versions == [rows[0].fingerprint] * 3  # the fingerprint is the DataVersion
    # what the table holds now hashes to what the ledger recorded
    target = AssetTarget.from_metadata("people", people.specs_by_key[dg.AssetKey("people")].metadata)
    sink = PostgresTableSink(store_resources["postgres"], "warehouse")
    assert fingerprint(sink.read(target, [DAY]), target.decl) == rows[-1].fingerprint


def test_zero_row_rerun_clears_the_day_and_spares_the_others(store_resources, pg_dsn):
    run([items], store_resources, range_=("2026-01-04", "2026-01-06"))
    assert day_counts(pg_dsn, "items") == {d: (10, 10) for d in ("2026-01-04", "2026-01-05", "2026-01-06")}
    result = run([items], store_resources, config={"rows": 0})
    assert materialized(result, "items")[DAY]["row_count"] == 0
    assert day_counts(pg_dsn, "items") == {"2026-01-04": (10, 10), "2026-01-06": (10, 10)}
    last = ledger_rows(pg_dsn, "items")[-1]
    assert (last.partition, last.row_count, last.changed) == (DAY, 0, True)


def test_range_run_publishes_every_day_including_emptied_ones(store_resources, pg_dsn):
    run([items], store_resources, range_=("2026-01-01", "2026-01-10"))
    result = run([items], store_resources, range_=("2026-01-01", "2026-01-10"), config={"rows": 0})
    assert day_counts(pg_dsn, "items") == {}
    meta = materialized(result, "items")
    assert sorted(meta) == [f"2026-01-{d:02d}" for d in range(1, 11)]
    assert all(m["row_count"] == 0 and m["changed"] for m in meta.values())


@pytest.mark.parametrize(
    "bad_config, rule",
    [
        ({"duplicate_keys": True}, "unique key (item_id)"),
        ({"wrong_day": "2026-01-04"}, "partition_date within the partitions written"),
        ({"rows": 501}, "row count bounds"),
    ],
)
def test_failed_audit_leaves_published_rows_and_ledger_untouched(store_resources, pg_dsn, bad_config, rule):
    run([items], store_resources, config={"value": "good"})
    before_rows, before_ledger = day_counts(pg_dsn, "items"), ledger_rows(pg_dsn, "items")
    result = run([items], store_resources, config={**bad_config, "value": "bad"}, raise_on_error=False)
    assert not result.success
    failure = next(ev for ev in result.all_events if ev.event_type_value == "STEP_FAILURE")
    message = str(failure.step_failure_data.error.to_string())
    assert "AuditError" in message and f"rule '{rule}'" in message and "'items'" in message
    assert DAY in message or "2026-01-04" in message
    assert day_counts(pg_dsn, "items") == before_rows
    assert ledger_rows(pg_dsn, "items") == before_ledger
    with psycopg.connect(pg_dsn) as conn:
        assert conn.execute("SELECT DISTINCT label FROM warehouse.items").fetchall() == [("good",)]


def test_loading_a_range_returns_exactly_those_days(store_resources):
    run([items], store_resources, range_=("2026-01-01", "2026-01-09"))
    target = AssetTarget.from_metadata("items", items.specs_by_key[dg.AssetKey("items")].metadata)
    sink = store_resources["warehouse_io"].sink()
    frame = load_partitions(sink, store_resources["postgres"], target, ["2026-01-03", "2026-01-04", "2026-01-05"])
    assert sorted(frame["partition_date"].dt.strftime("%Y-%m-%d").unique()) == ["2026-01-03", "2026-01-04", "2026-01-05"]
    assert len(frame) == 30
    assert str(frame["item_id"].dtype) == "Int64" and str(frame["partition_date"].dtype) == "datetime64[s]"
    with pytest.raises(dg.DagsterInvariantViolationError, match="no published partition 2026-01-20"):
        load_partitions(sink, store_resources["postgres"], target, ["2026-01-20"])


def test_downstream_asset_loads_its_upstream_partition(store_resources, pg_dsn):
    run([raw_people, people], store_resources, range_=("2026-01-01", "2026-01-03"))
    assert day_counts(pg_dsn, "people", "person_id") == {f"2026-01-0{d}": (1000, 1000) for d in (1, 2, 3)}
    with psycopg.connect(pg_dsn) as conn:
        bad = conn.execute(
            "SELECT count(*) FROM warehouse.people WHERE email <> lower(email) OR first_name <> initcap(first_name)"
            " OR created_at < partition_date OR created_at >= partition_date + 1 OR age < 18"
        ).fetchone()[0]
    assert bad == 0


def test_new_declared_column_is_added_and_type_change_is_refused(store_resources, pg_dsn):
    run([items], store_resources)

    @idem_asset(columns={"item_id": "int", "label": "string", "weight": "float"}, key=["item_id"], io_manager_key="warehouse_io", name="items")
    def items_v2(context: dg.AssetExecutionContext) -> pd.DataFrame:
        return pd.DataFrame({"item_id": [1], "label": ["x"], "weight": [1.5], "partition_date": [context.partition_key]})

    run([items_v2], store_resources)
    with psycopg.connect(pg_dsn) as conn:
        assert conn.execute("SELECT item_id, weight FROM warehouse.items").fetchall() == [(1, 1.5)]

    @idem_asset(columns={"item_id": "int", "label": "int"}, key=["item_id"], io_manager_key="warehouse_io", name="items")
    def items_v3(context: dg.AssetExecutionContext) -> pd.DataFrame:
        return pd.DataFrame({"item_id": [1], "label": [2], "partition_date": [context.partition_key]})

    result = run([items_v3], store_resources, raise_on_error=False)
    failure = next(ev for ev in result.all_events if ev.event_type_value == "STEP_FAILURE")
    assert "column 'label' changed type from string to int; table warehouse.items holds it as string" in failure.step_failure_data.error.to_string()


def test_audit_error_message_names_asset_partition_and_rule():
    err = AuditError("people", ["2026-01-05"], "unique key (person_id)", "2 rows share 1 keys")
    assert str(err).startswith("audit failed for asset 'people', partition 2026-01-05: rule 'unique key (person_id)'")


@pytest.mark.parametrize("swap", [False, True], ids=["in place", "swap"])
@pytest.mark.parametrize("edit", [
    None,
    "UPDATE {t} SET label = 'x' WHERE item_id = 3 AND partition_date = '{d}'",
    "UPDATE {t} SET label = label WHERE item_id = 3 AND partition_date = '{d}'",  # same value, new row version
    "DELETE FROM {t} WHERE item_id = 3 AND partition_date = '{d}'",
    "INSERT INTO {t} (item_id, label, partition_date) VALUES (99, 'v', '{d}')",
    "DELETE FROM {t} WHERE partition_date = '{d}'; INSERT INTO {t} (item_id, label, partition_date) "
    "SELECT g, 'v', '{d}' FROM generate_series(0, 9) g",  # the same rows, written by someone else
    "VACUUM (FREEZE) {t}",
], ids=["untouched", "update", "update to the same value", "delete", "insert", "same rows rewritten", "vacuum freeze"])
def test_an_identical_rerun_is_changed_exactly_when_the_day_no_longer_holds_what_was_published(
    store_resources, pg_dsn, edit, swap, monkeypatch
):
    """The rerun of an unchanged day records `changed` from what the table holds: True after any out-of-band
    edit (which it repairs), False when nobody wrote the day. The transaction-id proof that spares the read-back
    must not hide an edit that leaves the same content or count."""
    if swap:
        monkeypatch.setenv("IDEM_PG_SWAP_MIN_ROWS", "1")
    run([items], store_resources)
    first = ledger_rows(pg_dsn, "items")[-1]
    if edit:
        with psycopg.connect(pg_dsn, autocommit=True) as conn:
            for statement in edit.format(t="warehouse.items", d=DAY).split("; "):
                conn.execute(statement)
    before = row_versions(pg_dsn, DAY)
    reads = []
    original = PostgresTableSink.read
    monkeypatch.setattr(PostgresTableSink, "read", lambda self, *a, **k: reads.append(a) or original(self, *a, **k))
    run([items], store_resources)
    last = ledger_rows(pg_dsn, "items")[-1]
    content_changed = edit is not None and "VACUUM" not in edit and "SET label = label" not in edit \
        and "generate_series" not in edit
    assert last.changed is content_changed, (edit, last)
    assert day_counts(pg_dsn, "items")[DAY] == (10, 10)
    # untouched (or only frozen): proven without reading the day back; any writer since: read back
    assert bool(reads) is (edit is not None and "VACUUM" not in edit)
    # ... and only a day someone wrote since is rewritten (and so repaired): an untouched one keeps its rows and
    # its ledger version, a touched one holds the published content again, every row written by this rerun
    after = row_versions(pg_dsn, DAY)
    assert {key: label for key, (label, _) in after.items()} == {i: "v" for i in range(10)}
    if edit is None or "VACUUM" in edit:
        assert after == before and last.version == first.version
    else:
        assert last.version != first.version
        assert {xmin for _, xmin in after.values()} == {str(int(last.version.removeprefix("xid:")) % 2**32)}


def row_versions(dsn, day, table="warehouse.items"):
    """{item_id: (label, xmin)} of the day: which transaction wrote each row."""
    with psycopg.connect(dsn) as conn:
        rows = conn.execute(f"SELECT item_id, label, xmin::text FROM {table} WHERE partition_date = %s", (day,)).fetchall()
    return {key: (label, xmin) for key, label, xmin in rows}


DAYS = ["2026-01-05", "2026-01-06", "2026-01-07", "2026-01-08"]


def test_a_range_rerun_rewrites_only_the_days_whose_content_or_table_rows_changed(store_resources, pg_dsn):
    """A range rerun with the same content leaves the untouched days as they are (not rewritten), rewrites the day
    someone edited behind the platform's back (repairing it) and the day whose content changed; a later identical
    rerun then rewrites nothing. Readers see the published content of every day throughout."""
    run([items], store_resources, range_=(DAYS[0], DAYS[-1]))
    with psycopg.connect(pg_dsn, autocommit=True) as conn:
        conn.execute("UPDATE warehouse.items SET label = 'edited' WHERE item_id = 4 AND partition_date = %s", (DAYS[1],))
    before = {day: row_versions(pg_dsn, day) for day in DAYS}
    # the same content for every day, except one more row on the last day
    @idem_asset(columns={"item_id": "int", "label": "string"}, key=["item_id"], io_manager_key="warehouse_io", name="items")
    def items_more(context: dg.AssetExecutionContext) -> pd.DataFrame:
        return pd.concat([pd.DataFrame({"item_id": list(range(11 if day == DAYS[-1] else 10)), "label": "v",
                                        "partition_date": day}) for day in context.partition_keys], ignore_index=True)

    run([items_more], store_resources, range_=(DAYS[0], DAYS[-1]))
    after = {day: row_versions(pg_dsn, day) for day in DAYS}
    rows = {e.partition: e for e in ledger_rows(pg_dsn, "items")[-len(DAYS):]}
    assert {d: rows[d].changed for d in DAYS} == {DAYS[0]: False, DAYS[1]: True, DAYS[2]: False, DAYS[3]: True}
    assert after[DAYS[0]] == before[DAYS[0]] and after[DAYS[2]] == before[DAYS[2]]  # not rewritten
    assert after[DAYS[1]] != before[DAYS[1]] and after[DAYS[3]] != before[DAYS[3]]
    assert {d: sorted(label for label, _ in after[d].values()) for d in DAYS} == {
        d: ["v"] * (11 if d == DAYS[-1] else 10) for d in DAYS
    }
    assert day_counts(pg_dsn, "items") == {d: (11, 11) if d == DAYS[-1] else (10, 10) for d in DAYS}

    run([items_more], store_resources, range_=(DAYS[0], DAYS[-1]))
    assert {day: row_versions(pg_dsn, day) for day in DAYS} == after  # nothing rewritten
    again = {e.partition: e for e in ledger_rows(pg_dsn, "items")[-len(DAYS):]}
    assert [again[d].changed for d in DAYS] == [False] * len(DAYS)
    assert {d: again[d].version for d in DAYS} == {d: rows[d].version for d in DAYS}


def test_an_outside_edit_committed_during_an_identical_rerun_is_drift_the_next_rerun_repairs(store_resources, pg_dsn):
    """Who else touches the rows: a session outside the platform holds an uncommitted UPDATE of the day while an
    identical rerun runs. The rerun does not wait for it (the day is proven from committed rows and not rewritten);
    the edit commits after the run, so it is ordered after it: the sink then differs from the ledger (drift, as
    `idem verify` reports it) and the next rerun repairs it."""
    run([items], store_resources)
    with psycopg.connect(pg_dsn) as outside:
        outside.execute("UPDATE warehouse.items SET label = 'late' WHERE item_id = 2 AND partition_date = %s", (DAY,))
        run([items], store_resources)  # would block on the row lock if it rewrote the day
        assert ledger_rows(pg_dsn, "items")[-1].changed is False
        outside.commit()
    assert row_versions(pg_dsn, DAY)[2][0] == "late"
    run([items], store_resources)
    last = ledger_rows(pg_dsn, "items")[-1]
    assert last.changed is True
    assert {label for label, _ in row_versions(pg_dsn, DAY).values()} == {"v"}


ODD_LABELS = ["plain", "", None, "comma, inside", 'quote " inside', "new\nline", "über ✓", "  spaces  "]
SIZES = {"2026-02-01": 13, "2026-02-02": 0, "2026-02-03": 1, "2026-02-04": 7, "2026-02-05": 22}


def partition_rows(dsn: str, table: str = "items") -> dict[str, list[tuple]]:
    """day -> the rows each partition of the table holds, read from the partition itself (not through the
    parent, which would route a misplaced row back to where it belongs)."""
    with psycopg.connect(dsn) as conn:
        names = conn.execute(
            """SELECT c.relname FROM pg_inherits i JOIN pg_class c ON c.oid = i.inhrelid
               WHERE i.inhparent = %s::regclass""", (f"warehouse.{table}",)).fetchall()
        held = {}
        for (name,) in names:
            rows = conn.execute(f'SELECT partition_date::text, item_id, label FROM warehouse."{name}" ORDER BY item_id').fetchall()
            if rows:
                held.setdefault(rows[0][0], []).extend(rows)
                assert {r[0] for r in rows} == {rows[0][0]}, f"partition {name} holds rows of several days"
    return held


def test_a_range_run_copies_each_days_rows_into_that_days_partition_whatever_the_chunking(
        store_resources, pg_dsn, monkeypatch):
    """Each day's rows go straight into its own partition, encoded in chunks that do not line up with the days
    (7 rows; days of 13, 0, 1, 7 and 22 rows, given out of day order): every partition holds exactly its day's
    rows, strings with commas, quotes, newlines, empty and NULL come back as written, and a day emptied since
    is left empty."""
    from idem_platform.storage import postgres_store

    monkeypatch.setattr(postgres_store, "COPY_CHUNK_ROWS", 7)
    days = list(SIZES)

    @idem_asset(columns={"item_id": "int", "label": "string"}, key=["item_id"], io_manager_key="warehouse_io", name="items")
    def items_sized(context: dg.AssetExecutionContext) -> pd.DataFrame:
        frame = pd.concat([pd.DataFrame({"item_id": range(n), "partition_date": day,
                                         "label": [ODD_LABELS[i % len(ODD_LABELS)] for i in range(n)]})
                           for day, n in SIZES.items()], ignore_index=True)
        return frame.sample(frac=1.0, random_state=7).reset_index(drop=True)  # the days interleaved

    run([items], store_resources, range_=(days[0], days[-1]), config={"rows": 3})  # every day has rows before
    run([items_sized], store_resources, range_=(days[0], days[-1]))
    expected = {day: [(day, i, ODD_LABELS[i % len(ODD_LABELS)]) for i in range(n)] for day, n in SIZES.items() if n}
    assert partition_rows(pg_dsn) == expected
    assert {e.partition: e.row_count for e in ledger_rows(pg_dsn, "items")[-len(days):]} == SIZES


def day_partition_name(dsn: str, day: str, table: str = "warehouse.items") -> str:
    with psycopg.connect(dsn) as conn:
        return conn.execute(
            """SELECT c.relname FROM pg_inherits i JOIN pg_class c ON c.oid = i.inhrelid
               WHERE i.inhparent = %s::regclass AND pg_get_expr(c.relpartbound, c.oid) = format('FOR VALUES IN (%%L)', %s::date)""",
            (table, day)).fetchone()[0]


@pytest.mark.parametrize("detach", ["before the delete", "concurrently, after the copy"])
def test_a_day_partition_detached_by_another_session_during_the_write_publishes_nothing(
        store_resources, pg_dsn, monkeypatch, detach):
    """Who else touches the names: another session detaches the day's partition while a run rewrites the day,
    either fully between the run's lookup of the partition and its DELETE (the run then COPYs into a table that is
    no longer the day's), or with `DETACH ... CONCURRENTLY` after the COPY (it marks the partition pending, then
    waits for the run). Either way the run fails naming asset, partition and cause, and the ledger still says
    what was published before."""
    import threading

    from idem_platform.storage import postgres_store

    run([items], store_resources)
    before = ledger_rows(pg_dsn, "items")
    name = day_partition_name(pg_dsn, DAY)
    detach_sql = f'ALTER TABLE warehouse.items DETACH PARTITION warehouse."{name}"'
    done = threading.Event()

    if detach == "before the delete":
        delete_days = postgres_store.PostgresTableSink._delete_days

        def detach_then_delete(self, cur, target, days):
            with psycopg.connect(pg_dsn, autocommit=True) as other:
                other.execute(detach_sql)
            return delete_days(self, cur, target, days)

        monkeypatch.setattr(postgres_store.PostgresTableSink, "_delete_days", detach_then_delete)
    else:
        copy_parts = postgres_store.copy_parts

        def copy_then_detach(*args, **kwargs):
            counts = copy_parts(*args, **kwargs)

            def detach_concurrently():
                with psycopg.connect(pg_dsn, autocommit=True) as other:
                    other.execute(detach_sql + " CONCURRENTLY")  # waits for the run's transaction
                done.set()

            threading.Thread(target=detach_concurrently, daemon=True).start()
            with psycopg.connect(pg_dsn, autocommit=True) as probe:
                for _ in range(200):
                    if probe.execute("SELECT bool_or(inhdetachpending) FROM pg_inherits WHERE inhrelid = %s::regclass",
                                     (f'warehouse."{name}"',)).fetchone()[0]:
                        break
                    threading.Event().wait(0.05)
                else:
                    raise AssertionError("the concurrent DETACH never marked the partition pending")
            return counts

        monkeypatch.setattr(postgres_store, "copy_parts", copy_then_detach)

    result = run([items], store_resources, config={"value": "new"}, raise_on_error=False)
    assert not result.success
    message = str(result.get_step_failure_events()[0].event_specific_data.error)
    assert "'items'" in message and DAY in message and "detached" in message, message
    assert ledger_rows(pg_dsn, "items") == before
    if detach != "before the delete":
        assert done.wait(30), "the concurrent DETACH did not finish after the run's transaction ended"
    with psycopg.connect(pg_dsn) as conn:  # the detached table holds the day as published before, never the new rows
        labels = conn.execute(f'SELECT DISTINCT label FROM warehouse."{name}"').fetchall()
    assert labels == [("v",)]


# ------------------------------------------------------------------------ a range's transactions at once

RANGE = ("2026-03-01", "2026-03-04")  # 2 transactions of 2 days (IDEM_PG_DAYS_PER_TRANSACTION=2)


def labels_by_day(dsn: str) -> dict[str, set]:
    with psycopg.connect(dsn) as conn:
        rows = conn.execute("SELECT partition_date::text, label, count(*) FROM warehouse.items "
                            "WHERE partition_date BETWEEN %s AND %s GROUP BY 1, 2", RANGE).fetchall()
    out: dict[str, set] = {}
    for day, label, count in rows:
        out.setdefault(day, set()).add((label, count))
    return out


def hold_a_row_of_the_first_day(dsn: str) -> psycopg.Connection:
    """Another session, in an open transaction, holding a row of the range's first day (an UPDATE): the run's
    DELETE of that day waits for it."""
    other = psycopg.connect(dsn)
    other.execute("UPDATE warehouse.items SET label = label WHERE partition_date = %s AND item_id = 0", (RANGE[0],))
    return other


def wait_for(condition, seconds: float = 30.0) -> bool:
    import time

    deadline = time.monotonic() + seconds
    while time.monotonic() < deadline:
        if condition():
            return True
        time.sleep(0.1)
    return False


def test_a_long_ranges_transactions_run_at_once_and_one_held_back_holds_back_no_other(
        store_resources, pg_dsn, monkeypatch):
    """Who else touches the rows: another session holds a row of the range's first day. With the days' partitions
    present, the range's two transactions run at once: the second publishes its days while the first waits, and
    once the session ends the first publishes too; every day whole, once."""
    import threading

    monkeypatch.setenv("IDEM_PG_DAYS_PER_TRANSACTION", "2")
    run([items], store_resources, range_=RANGE)  # the first load creates the partitions (one after another)
    old = {"2026-03-01": {("v", 10)}, "2026-03-02": {("v", 10)}, "2026-03-03": {("v", 10)}, "2026-03-04": {("v", 10)}}
    assert labels_by_day(pg_dsn) == old
    other = hold_a_row_of_the_first_day(pg_dsn)
    seen = {}

    def watch_then_release():  # the run itself stays on the main thread, as Dagster runs it
        try:
            seen["later_days_first"] = wait_for(
                lambda: {d: v for d, v in labels_by_day(pg_dsn).items() if d >= "2026-03-03"}
                == {"2026-03-03": {("new", 10)}, "2026-03-04": {("new", 10)}})
            seen["held_back"] = {d: v for d, v in labels_by_day(pg_dsn).items() if d <= "2026-03-02"}
        finally:
            other.rollback()

    watcher = threading.Thread(target=watch_then_release)
    watcher.start()
    try:
        result = run([items], store_resources, range_=RANGE, config={"value": "new"}, raise_on_error=False)
    finally:
        watcher.join(60)
        other.close()
    later_days_first, held_back = seen.get("later_days_first"), seen.get("held_back")
    assert later_days_first, "the second transaction did not publish while the first one waited"
    assert held_back == {"2026-03-01": {("v", 10)}, "2026-03-02": {("v", 10)}}
    assert result.success
    assert labels_by_day(pg_dsn) == {day: {("new", 10)} for day in old}
    latest = {}
    for entry in ledger_rows(pg_dsn, "items"):
        latest[entry.partition] = entry
    assert {d: (e.row_count, e.changed) for d, e in latest.items() if d in old} == {d: (10, True) for d in old}
    assert set(materialized(result, "items")) == set(old)


def test_a_failed_transaction_of_a_range_is_reported_by_its_days_and_the_others_stay_published(
        store_resources, pg_dsn, monkeypatch):
    """The held row outlasts IDEM_PG_LOCK_WAIT_S: the first transaction fails naming asset, its days and the
    blocking session; the second, which ran at the same time, is published; the first's days and their ledger
    rows are as they were."""
    monkeypatch.setenv("IDEM_PG_DAYS_PER_TRANSACTION", "2")
    run([items], store_resources, range_=RANGE)
    before = {(e.partition, e.fingerprint) for e in ledger_rows(pg_dsn, "items")}
    monkeypatch.setenv("IDEM_PG_LOCK_WAIT_S", "2")
    other = hold_a_row_of_the_first_day(pg_dsn)
    try:
        result = run([items], store_resources, range_=RANGE, config={"value": "new"}, raise_on_error=False)
    finally:
        other.rollback()
        other.close()
    assert not result.success
    message = str(result.get_step_failure_events()[0].event_specific_data.error)
    assert "'items'" in message and "2026-03-01" in message and "IDEM_PG_LOCK_WAIT_S" in message, message
    assert "2026-03-03" not in message, message
    assert labels_by_day(pg_dsn) == {"2026-03-01": {("v", 10)}, "2026-03-02": {("v", 10)},
                                     "2026-03-03": {("new", 10)}, "2026-03-04": {("new", 10)}}
    after = {(e.partition, e.fingerprint) for e in ledger_rows(pg_dsn, "items")}
    assert {p for p, _ in after - before} == {"2026-03-03", "2026-03-04"}


def test_a_range_transaction_whose_session_is_terminated_loses_only_its_days(store_resources, pg_dsn, monkeypatch):
    """Who else touches the locks: while the range's first transaction waits for a row another session holds, an
    operator terminates its session (`pg_terminate_backend`): that transaction fails as a lost partition lock
    naming its days, the second transaction, running at the same time, is published, the first's days keep
    what they held."""
    import threading

    monkeypatch.setenv("IDEM_PG_DAYS_PER_TRANSACTION", "2")
    run([items], store_resources, range_=RANGE)
    other = hold_a_row_of_the_first_day(pg_dsn)
    blocker = other.execute("SELECT pg_backend_pid()").fetchone()[0]
    terminated = {}

    def terminate_the_waiting_writer():
        with psycopg.connect(pg_dsn, autocommit=True) as admin:
            def waiting():
                rows = admin.execute("SELECT pid FROM pg_stat_activity WHERE %s = ANY(pg_blocking_pids(pid))",
                                     (blocker,)).fetchall()
                return rows[0][0] if rows else None
            if wait_for(lambda: waiting() is not None):
                terminated["pid"] = waiting()
                admin.execute("SELECT pg_terminate_backend(%s)", (terminated["pid"],))

    killer = threading.Thread(target=terminate_the_waiting_writer)
    killer.start()
    try:
        result = run([items], store_resources, range_=RANGE, config={"value": "new"}, raise_on_error=False)
    finally:
        killer.join(60)
        other.rollback()
        other.close()
    assert terminated, "the first transaction never waited for the held row"
    assert not result.success
    message = str(result.get_step_failure_events()[0].event_specific_data.error)
    assert "'items'" in message and "2026-03-01" in message and "lost the partition lock" in message, message
    assert labels_by_day(pg_dsn) == {"2026-03-01": {("v", 10)}, "2026-03-02": {("v", 10)},
                                     "2026-03-03": {("new", 10)}, "2026-03-04": {("new", 10)}}
