"""The bad-input suite: one test per kind of bad inbox file, against a real PostgreSQL warehouse.

Every test first publishes a good file for a day of its own (30 trips), then drops the bad input for that day and
materializes the day twice. Each asserts:

- the outcome: a run failure whose message names file, day and rule (file-level), or exactly these quarantine rows
  (file, line, every rule broken) while the rest publishes (row-level);
- that the previously published trips partition is untouched: for file-level failures nothing of the day changes
  (trips, quarantine, summary, ledger); for row-level failures the bad rows are *added* to the good file, so the
  trips partition stays exactly as it was (same rows, same fingerprint, ledger `changed = false`);
- that the rerun reproduces the quarantine rows exactly (same rows, no duplicates, ledger `changed = false`).
"""

import codecs
import csv
import datetime as dt
import io
import json
import os

import pytest

from idem_platform.pipelines.scooters import reading as scooter_reading
from idem_platform.partitions import InvalidPartitionKey, valid_range
from idem_platform.pipelines.scooters.inbox import InboxNameError, parse_inbox_name
from idem_platform.pipelines.scooters.reading import read_inbox_day
from idem_platform.pipelines.scooters.simulator import HEADER
from idem_platform.pipelines.scooters.sensor import InboxCursor, plan_inbox
from idem_platform_tests.pipelines.scooters.fixtures import (  # noqa: F401 (fixtures)
    GOOD_ROWS,
    csv_bytes,
    failure_message,
    good_rows,
    materialized_metadata,
    next_day,
    scooter_db,
    warehouse,
)

FIRST_EXTRA_LINE = GOOD_ROWS + 2  # header is line 1, the good rows are lines 2..31


@pytest.fixture
def day(warehouse):
    """A day of this test's own, with a good file published: (day, good rows, snapshot of what is published)."""
    day = next_day()
    rows = warehouse.publish_good_day(day)
    before = warehouse.snapshot(day)
    assert len(before["trips"]) == GOOD_ROWS and before["rejected"] == []
    return day, rows, before


def extra_rows(day, n):
    """Good rows that are not in the published file (fresh trip ids)."""
    return good_rows(day, GOOD_ROWS + n)[GOOD_ROWS:]


def assert_file_error(warehouse, day, before, file, rule, *details):
    """The run fails naming file, day and rule; nothing of the day changes; the rerun fails the same way."""
    messages = []
    for _ in range(2):
        result = warehouse.materialize(day)
        assert not result.success
        message = failure_message(result)
        assert "InboxFileError" in message
        assert f"inbox file '{file}' for day {day}: rule '{rule}' failed" in message, message
        assert "Nothing was published" in message
        for detail in details:
            assert detail in message, message
        assert warehouse.snapshot(day) == before
        messages.append(message.split("\n")[0])
    assert messages[0] == messages[1]


def assert_quarantined(warehouse, day, before, expected, *, trips_unchanged=True):
    """The run publishes; the quarantine holds exactly `expected` [(file, line, rules)]; the rerun reproduces it."""
    result = warehouse.materialize(day)
    assert result.success, failure_message(result)
    rejected = warehouse.rejected(day)
    assert [(r["file"], r["line"], r["rules"]) for r in rejected] == expected
    assert all(r["rule_count"] == len(r["rules"]) for r in rejected)
    if trips_unchanged:
        assert warehouse.trips(day) == before["trips"]
        assert warehouse.ledger("scooter_trips", day)[-1].changed is False
    trips_after = warehouse.trips(day)
    summary = warehouse.summary(day)[0]
    assert (summary[1], summary[2]) == (len(trips_after), len(expected))  # trips, rejected_rows

    rerun = warehouse.materialize(day)
    assert rerun.success, failure_message(rerun)
    assert warehouse.rejected(day) == rejected
    last = warehouse.ledger("scooter_trips_rejected", day)[-1]
    assert (last.row_count, last.changed) == (len(expected), False)
    assert warehouse.trips(day) == trips_after
    assert warehouse.ledger("scooter_trips", day)[-1].changed is False
    return result, rejected


def rows_line(row, header=HEADER):
    return csv_bytes([row], header).split(b"\n", 1)[1]


# --- file-level: the run fails, nothing changes -----------------------------------------------------------------


def test_empty_file(warehouse, day):
    day, _, before = day
    warehouse.write(f"{day}.csv", b"")
    assert_file_error(warehouse, day, before, f"{day}.csv", "file is not empty")


def test_header_only(warehouse, day):
    day, _, before = day
    warehouse.write(f"{day}.csv", ",".join(HEADER) + "\n")
    assert_file_error(warehouse, day, before, f"{day}.csv", "at least one data row")


def test_wrong_delimiter(warehouse, day):
    day, rows, before = day
    buf = io.StringIO()
    writer = csv.writer(buf, delimiter=";", lineterminator="\n")
    writer.writerow(HEADER)
    writer.writerows([[r[h] for h in HEADER] for r in rows])
    warehouse.write(f"{day}.csv", buf.getvalue())
    assert_file_error(warehouse, day, before, f"{day}.csv", "comma-separated values", "looks ';'-separated")


def test_utf16_file(warehouse, day):
    day, rows, before = day
    warehouse.write(f"{day}.csv", csv_bytes(rows).decode().encode("utf-16"))
    assert_file_error(warehouse, day, before, f"{day}.csv", "UTF-8 text", "UTF-16")


def test_missing_required_column(warehouse, day):
    day, rows, before = day
    header = [h for h in HEADER if h != "End_Lon"]
    warehouse.write(f"{day}.csv", csv_bytes(rows, header))
    assert_file_error(warehouse, day, before, f"{day}.csv", "required columns present", "missing end_lon")


def test_duplicate_column_names_after_normalizing(warehouse, day):
    day, rows, before = day
    header = [*HEADER, "trip id"]
    data = [dict(r, **{"trip id": r["Trip_ID"]}) for r in rows]
    warehouse.write(f"{day}.csv", csv_bytes(data, header))
    assert_file_error(warehouse, day, before, f"{day}.csv", "unique column names", "'Trip_ID' and 'trip id'")


def test_more_than_the_declared_share_of_bad_rows(warehouse, day):
    day, rows, before = day
    bad = [dict(r, Start_Lat="north") for r in extra_rows(day, 4)]  # 4 of 34 rows: 11.8% > 10%
    warehouse.write(f"{day}.csv", csv_bytes(rows + bad))
    assert_file_error(
        warehouse, day, before, f"{day}.csv", "at most 10% of rows rejected",
        "4 of 34 data lines (11.8%)", "'start_lat is a number' x4", f"line {FIRST_EXTRA_LINE}: start_lat is a number",
    )


def test_unterminated_quote_swallowing_the_rest_of_the_file(warehouse, day):
    day, rows, before = day
    plain = [dict(r, start_location_name="Central Ave", end_location_name="Gold Ave") for r in rows]
    plain[4]["start_location_name"] = '"Central Ave'  # opens a quote that never closes
    data = csv_bytes(plain).replace(b'"""Central Ave"', b'"Central Ave')
    warehouse.write(f"{day}.csv", data)
    assert_file_error(
        warehouse, day, before, f"{day}.csv", "at most 10% of rows rejected", "26 of 30 data lines",
        "row is well-formed CSV",
    )


def test_day_without_any_inbox_file(warehouse, day):
    day, _, before = day
    warehouse.remove(f"{day}.csv")
    assert_file_error(warehouse, day, before, f"scooter_trips/{day}.csv", "an inbox file for the day")


def test_file_replaced_while_being_read(warehouse, day, monkeypatch):
    day, rows, before = day
    name = f"{day}.csv"
    replacement = csv_bytes(rows + [dict(extra_rows(day, 1)[0], END_LAT="95")])
    original = scooter_reading._read_file

    def read_then_replace(path, read_day):
        read = original(path, read_day)
        if path.name == name and not replaced:
            replaced.append(True)
            warehouse.write(name, replacement)  # a producer renames a new version into place mid-read
        return read

    replaced: list = []
    monkeypatch.setattr(scooter_reading, "_read_file", read_then_replace)
    result = warehouse.materialize(day)
    assert replaced and not result.success
    message = failure_message(result)
    assert f"inbox file '{name}' for day {day}: rule 'files unchanged while being read' failed" in message
    assert "replaced or rewritten while the day was being read" in message
    assert warehouse.snapshot(day) == before
    monkeypatch.setattr(scooter_reading, "_read_file", original)

    # the replacement is what the next run (the sensor requests one for the new content) publishes, reproducibly
    assert_quarantined(warehouse, day, before, [(name, FIRST_EXTRA_LINE, ["end_lat between -90 and 90"])])


# --- row-level: quarantined, the rest publishes ----------------------------------------------------------------


def test_truncated_last_line(warehouse, day):
    day, rows, before = day
    (extra,) = extra_rows(day, 1)
    data = csv_bytes(rows + [extra])
    last_start = data.rstrip(b"\n").rfind(b"\n") + 1
    cut = last_start + [i for i, c in enumerate(data[last_start:]) if c == ord(",")][6]  # after 7 fields
    warehouse.write(f"{day}.csv", data[:cut])
    _, rejected = assert_quarantined(
        warehouse, day, before, [(f"{day}.csv", FIRST_EXTRA_LINE, ["row has as many fields as the header"])]
    )
    assert rejected[0]["raw_row"] == data[last_start:cut].decode()
    assert rejected[0]["trip_id"] == extra["Trip_ID"]  # best effort, to find the row; never published


def test_truncated_inside_a_quoted_field(warehouse, day):
    day, rows, before = day
    data = csv_bytes(rows + extra_rows(day, 1))
    cut = data.rfind(b'Albuquerque')  # inside the last row's quoted end address
    warehouse.write(f"{day}.csv", data[:cut])
    assert_quarantined(warehouse, day, before, [(f"{day}.csv", FIRST_EXTRA_LINE, ["row is well-formed CSV"])])


def test_non_utf8_bytes_in_a_row(warehouse, day):
    day, rows, before = day
    latin1 = dict(extra_rows(day, 1)[0], start_location_name="Café Central, Albuquerque")
    data = csv_bytes(rows) + rows_line(latin1).decode().encode("latin-1")
    warehouse.write(f"{day}.csv", data)
    _, rejected = assert_quarantined(warehouse, day, before, [(f"{day}.csv", FIRST_EXTRA_LINE, ["row is valid UTF-8"])])
    assert "Caf\\xe9 Central" in rejected[0]["raw_row"]


def test_utf8_bom_is_read_like_the_same_file_without_it(warehouse, day):
    day, rows, before = day
    warehouse.write(f"{day}.csv", codecs.BOM_UTF8 + csv_bytes(rows))
    assert_quarantined(warehouse, day, before, [])


def test_extra_columns_are_dropped_and_reported(warehouse, day):
    day, rows, before = day
    header = [*HEADER, "promo_code", "Notes"]
    data = [dict(r, promo_code="SPRING10", Notes="ok, thanks") for r in rows]
    warehouse.write(f"{day}.csv", csv_bytes(data, header))
    result, _ = assert_quarantined(warehouse, day, before, [])
    ignored = materialized_metadata(result, "scooter_trips")["ignored_columns"]
    assert ignored == {f"{day}.csv": ["month", "region_id", "trip_ledger_id", "promo_code", "Notes"]}


def test_renamed_columns_in_other_case(warehouse, day):
    day, rows, before = day
    renames = {"Trip_ID": "TRIP_ID", "started_at": "Start Time", "ended_at": "END_TIME", "DURATION": "duration",
               "Start_Lat": "start lat", "Start_Lon": "START-LON", "END_LAT": "End_Latitude", "End_Lon": "end_lng",
               "Vehicle_ID": "vehicleId"}
    header = [renames.get(h, h) for h in HEADER]
    data = [{renames.get(k, k): v for k, v in r.items()} for r in rows]
    warehouse.write(f"{day}.csv", csv_bytes(data, header))
    assert_quarantined(warehouse, day, before, [])


def test_crlf_line_endings_and_trailing_blank_lines(warehouse, day):
    day, rows, before = day
    warehouse.write(f"{day}.csv", csv_bytes(rows).replace(b"\n", b"\r\n") + b"\r\n   \r\n\r\n")
    assert_quarantined(warehouse, day, before, [])


def test_string_in_numeric_column(warehouse, day):
    day, rows, before = day
    a, b = extra_rows(day, 2)
    bad = [dict(a, Start_Lat="abc"), dict(b, END_LAT="35,08")]
    warehouse.write(f"{day}.csv", csv_bytes(rows + bad))
    assert_quarantined(warehouse, day, before, [
        (f"{day}.csv", FIRST_EXTRA_LINE, ["start_lat is a number"]),
        (f"{day}.csv", FIRST_EXTRA_LINE + 1, ["end_lat is a number"]),
    ])


def test_impossible_dates(warehouse, day):
    day, rows, before = day
    a, b = extra_rows(day, 2)
    bad = [dict(a, started_at="2/30/2026 10:00"), dict(b, ended_at=f"{day}T25:61:00")]
    warehouse.write(f"{day}.csv", csv_bytes(rows + bad))
    assert_quarantined(warehouse, day, before, [
        (f"{day}.csv", FIRST_EXTRA_LINE, ["started_at is a date-time"]),
        (f"{day}.csv", FIRST_EXTRA_LINE + 1, ["ended_at is a date-time"]),
    ])


def test_end_before_start(warehouse, day):
    day, rows, before = day
    (a,) = extra_rows(day, 1)
    warehouse.write(f"{day}.csv", csv_bytes(rows + [dict(a, started_at=a["ended_at"], ended_at=a["started_at"])]))
    assert_quarantined(warehouse, day, before, [(f"{day}.csv", FIRST_EXTRA_LINE, ["ended_at after started_at"])])


def test_trip_starting_on_another_day(warehouse, day):
    day, rows, before = day
    (a,) = extra_rows(day, 1)
    yesterday = (dt.date.fromisoformat(day) - dt.timedelta(days=1)).isoformat()
    warehouse.write(f"{day}.csv", csv_bytes(rows + [dict(a, started_at=f"{yesterday}T23:50:00Z", ended_at=f"{day}T00:05:00Z", DURATION="0:15:00")]))
    assert_quarantined(warehouse, day, before, [(f"{day}.csv", FIRST_EXTRA_LINE, ["started_at on the file's day (UTC)"])])


def test_out_of_range_coordinates(warehouse, day):
    day, rows, before = day
    a, b = extra_rows(day, 2)
    bad = [dict(a, Start_Lat="95.5"), dict(b, END_LAT="-91", End_Lon="-200.25")]
    warehouse.write(f"{day}.csv", csv_bytes(rows + bad))
    assert_quarantined(warehouse, day, before, [
        (f"{day}.csv", FIRST_EXTRA_LINE, ["start_lat between -90 and 90"]),
        (f"{day}.csv", FIRST_EXTRA_LINE + 1, ["end_lat between -90 and 90", "end_lon between -180 and 180"]),
    ])


def test_duplicate_trip_ids_inside_a_file(warehouse, day):
    day, rows, before = day
    (a,) = extra_rows(day, 1)
    warehouse.write(f"{day}.csv", csv_bytes(rows + [dict(a, Trip_ID=rows[2]["Trip_ID"])]))
    _, rejected = assert_quarantined(warehouse, day, before, [(f"{day}.csv", FIRST_EXTRA_LINE, ["trip_id unique within the day"])])
    assert rejected[0]["trip_id"] == rows[2]["Trip_ID"]
    assert warehouse.trip_ids(day).count(rows[2]["Trip_ID"]) == 1  # the first occurrence (line 4) stays published


def test_duplicate_trip_ids_across_two_files_of_the_same_day(warehouse, day):
    day, rows, _ = day
    part = good_rows(day, 10, part="b")
    warehouse.write(f"{day}__b.csv", csv_bytes(part))
    assert warehouse.materialize(day).success
    before = warehouse.snapshot(day)
    assert len(before["trips"]) == GOOD_ROWS + 10
    (a,) = extra_rows(day, 1)
    warehouse.write(f"{day}__b.csv", csv_bytes(part + [dict(a, Trip_ID=rows[0]["Trip_ID"])]))
    assert_quarantined(warehouse, day, before, [(f"{day}__b.csv", 12, ["trip_id unique within the day"])])
    kept = warehouse.query("SELECT source_file, source_line FROM warehouse.scooter_trips WHERE partition_date = %s AND trip_id = %s",
                           (day, rows[0]["Trip_ID"]))
    assert kept == [(f"{day}.csv", 2)]


def test_nan_keys(warehouse, day):
    day, rows, before = day
    a, b, c = extra_rows(day, 3)
    bad = [dict(a, Trip_ID="NaN"), dict(b, Trip_ID=""), dict(c, Trip_ID=" null ")]  # 3 of 33: 9.1%
    warehouse.write(f"{day}.csv", csv_bytes(rows + bad))
    _, rejected = assert_quarantined(warehouse, day, before, [
        (f"{day}.csv", FIRST_EXTRA_LINE + i, ["trip_id is required"]) for i in range(3)
    ])
    assert [r["trip_id"] for r in rejected] == [None, None, None]
    assert rejected[0]["raw_row"].split(",")[1] == "NaN"


def test_ten_megabyte_field(warehouse, day):
    day, rows, before = day
    a, b = extra_rows(day, 2)
    bad = [dict(a, start_location_name="x" * 10_000_000), dict(b, end_location_name="y" * 600)]
    warehouse.write(f"{day}.csv", csv_bytes(rows + bad))
    _, rejected = assert_quarantined(warehouse, day, before, [
        (f"{day}.csv", FIRST_EXTRA_LINE, ["every field at most 131,072 characters"]),
        (f"{day}.csv", FIRST_EXTRA_LINE + 1, ["end_location_name has at most 500 characters"]),
    ])
    full_length = len(rows_line(bad[0]).decode().rstrip("\n"))
    assert rejected[0]["truncated"] is True and len(rejected[0]["raw_row"]) < 10_100
    assert rejected[0]["raw_row"].endswith(f"[truncated: the row has {full_length} characters]")
    assert rejected[1]["truncated"] is False


def test_sql_like_strings_are_stored_verbatim(warehouse, day):
    day, rows, before = day
    other = next_day()
    warehouse.publish_good_day(other)
    other_before = warehouse.snapshot(other)
    evil = ["'; DROP TABLE warehouse.scooter_trips; --", "1); DELETE FROM idem.ledger; --", "x' OR '1'='1", 'a"b\\c\tE\'d']
    a, b = extra_rows(day, 2)
    data = [dict(a, start_location_name=evil[0], Vehicle_ID=evil[1]), dict(b, Trip_ID=evil[2], end_location_name=evil[3])]
    warehouse.write(f"{day}.csv", csv_bytes(rows + data))
    assert_quarantined(warehouse, day, before, [], trips_unchanged=False)
    stored = warehouse.query(
        "SELECT trip_id, vehicle_id, start_location_name, end_location_name FROM warehouse.scooter_trips"
        " WHERE partition_date = %s AND source_line >= %s ORDER BY source_line", (day, FIRST_EXTRA_LINE),
    )
    assert stored == [(a["Trip_ID"], evil[1], evil[0], a["end_location_name"]), (evil[2], b["Vehicle_ID"], b["start_location_name"], evil[3])]
    assert warehouse.trips(day)[:GOOD_ROWS] == before["trips"]  # the good rows are as they were
    assert warehouse.snapshot(other) == other_before  # and nothing else moved
    assert len(warehouse.ledger("scooter_trips", other)) == 1


# --- names: never read for any partition, reported ---------------------------------------------------------------


def test_file_for_a_day_outside_the_partition_range(warehouse, day):
    day, rows, before = day
    today = dt.datetime.now(dt.timezone.utc).date().isoformat()
    for name in ("2019-06-01.csv", f"{today}.csv"):
        warehouse.write(name, csv_bytes(rows))
        with pytest.raises(InboxNameError, match="rule 'day within the partitions' failed: day .* is outside the partitions"):
            parse_inbox_name(name)
    with pytest.raises(InvalidPartitionKey, match="outside its partitions"):
        read_inbox_day(warehouse.inbox, "2019-06-01")
    plan = plan_inbox(warehouse.inbox, InboxCursor(), settle_seconds=0)
    assert [r.day for r in plan.requests] == [day]  # only the test's own, in-range day
    reports = {r.file: (r.kind, r.message) for r in plan.reports}
    assert reports["2019-06-01.csv"][0] == "file_ignored" and f"outside the partitions {valid_range()[0]}" in reports["2019-06-01.csv"][1]
    assert reports[f"{today}.csv"][0] == "file_waiting" and "once it is complete" in reports[f"{today}.csv"][1]
    assert plan_inbox(warehouse.inbox, plan.cursor, settle_seconds=0).reports == []  # reported once
    assert_quarantined(warehouse, day, before, [])  # the day's own partition is not affected


def test_file_name_that_is_not_a_date(warehouse, day):
    day, rows, before = day
    for name in ("trips_january.csv", "2026-13-45.csv", f"{day}.CSV", f"{day}_b.csv"):
        warehouse.write(name, csv_bytes(rows))
        with pytest.raises(InboxNameError, match=f"inbox file '{name}': rule 'file name is"):
            parse_inbox_name(name)
    plan = plan_inbox(warehouse.inbox, InboxCursor(), settle_seconds=0)
    assert [r.day for r in plan.requests] == [day]
    assert sorted(r.file for r in plan.reports if r.kind == "file_ignored") == sorted(
        ["trips_january.csv", "2026-13-45.csv", f"{day}.CSV", f"{day}_b.csv"]
    )
    assert all(r.day is None for r in plan.reports)
    assert_quarantined(warehouse, day, before, [])
    assert os.path.exists(warehouse.inbox / "scooter_trips" / "trips_january.csv")  # never deleted by the pipeline
    assert json.loads(plan.cursor.dump())["reported"].keys() >= {"trips_january.csv"}
