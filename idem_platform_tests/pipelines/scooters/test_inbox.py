"""`read_inbox_day` and the simulator without Dagster: cleaning, determinism, naming, the declared rules."""

import hashlib
import json

import dagster as dg
import pandas as pd
import pytest

from idem_platform.pipelines.scooters.cleaning import canonical_column, parse_duration_seconds
from idem_platform.pipelines.scooters.inbox import (
    MAX_REJECTED_SHARE,
    InboxFileError,
    day_files,
    inbox_dir,
    parse_inbox_name,
    trips_dir,
)
from idem_platform.pipelines.scooters.reading import read_inbox_day
from idem_platform.pipelines.scooters.validation import DECLARED_RULES
from idem_platform.pipelines.scooters.simulator import HEADER, main as simulate_main, render_csv, simulate_day, simulate_rows, write_inbox_file
from idem_platform.pipelines.scooters.assets import scooter_trips
from idem_platform.storage.fingerprint import fingerprint
from idem_platform.storage.partition_store import AssetTarget

DAY = "2026-01-05"


def trips_target() -> AssetTarget:
    return AssetTarget.from_metadata("scooter_trips", scooter_trips.specs_by_key[dg.AssetKey("scooter_trips")].metadata)


def test_simulator_is_seeded_by_day_and_part(tmp_path):
    assert render_csv(simulate_rows(DAY, 200)) == render_csv(simulate_rows(DAY, 200))
    assert render_csv(simulate_rows(DAY, 200)) != render_csv(simulate_rows(DAY, 200, part="b"))
    assert render_csv(simulate_rows(DAY, 200)) != render_csv(simulate_rows("2026-01-06", 200))
    first = simulate_day(tmp_path, DAY, 300, parts=2)
    again = simulate_day(tmp_path, DAY, 300, parts=2)
    assert [p.name for p in first] == [f"{DAY}__part1.csv", f"{DAY}__part2.csv"]
    assert [hashlib.sha256(p.read_bytes()).hexdigest() for p in first] == [hashlib.sha256(p.read_bytes()).hexdigest() for p in again]
    assert not list(trips_dir(tmp_path).glob(".*"))  # written under a temp name, renamed into place


def test_simulated_export_has_the_textbook_mess():
    data = render_csv(simulate_rows(DAY, 50)).decode()
    header = data.split("\n", 1)[0].split(",")
    assert header == list(HEADER)
    assert {"Trip_ID", "DURATION", "END_LAT"} <= set(header) and {"month", "region_id", "trip_ledger_id"} <= set(header)
    assert ",1/5/2026 " in data and f",{DAY}T" in data  # textbook M/D/YYYY H:MM dates, some rows in ISO 8601
    assert ",0:0" in data or ",0:1" in data  # H:MM:SS duration strings
    assert ', Albuquerque, NM ' in data and '"' in data  # quoted addresses with commas


def test_cleaning_types_and_derives(tmp_path):
    simulate_day(tmp_path, DAY, 400, bad_share=0.0)
    day = read_inbox_day(tmp_path, DAY)
    valid = day.valid
    assert len(valid) == 400 and day.rejected.empty
    assert valid["started_at"].dtype == "datetime64[us, UTC]" and valid["duration_seconds"].dtype == "Int64"
    assert (valid["started_at"].dt.strftime("%Y-%m-%d") == DAY).all()
    assert (valid["ended_at"] > valid["started_at"]).all()
    assert valid["distance_km"].between(0, 60).all() and valid["distance_km"].gt(0).any()
    assert list(valid["source_line"]) == list(range(2, 402))
    assert day.ignored_columns == {f"{DAY}.csv": ["month", "region_id", "trip_ledger_id"]}
    assert day.files == {f"{DAY}.csv": hashlib.sha256((trips_dir(tmp_path) / f"{DAY}.csv").read_bytes()).hexdigest()}


def test_textbook_duration_strings_and_header_names():
    parsed = parse_duration_seconds(pd.Series(["0:04:03", "12:30", "75", "1:00:00", "4 min", "0:61:00", None]))
    assert parsed.tolist() == [243, 750, 75, 3600, pd.NA, pd.NA, pd.NA]
    assert [canonical_column(n) for n in ("Trip_ID", "DURATION", "\ufeffmonth", " Start Lat ", "END-LNG", "start_time")] == [
        "trip_id", "duration", "month", "start_lat", "end_lon", "started_at"
    ]


def test_same_files_give_the_same_rows_and_fingerprint(tmp_path):
    simulate_day(tmp_path, DAY, 500, parts=2, bad_share=0.03)
    first, second = read_inbox_day(tmp_path, DAY), read_inbox_day(tmp_path, DAY)
    pd.testing.assert_frame_equal(first.valid, second.valid)
    pd.testing.assert_frame_equal(first.rejected, second.rejected)
    target = trips_target()
    assert fingerprint(target.decl.coerce(first.valid), target.decl) == fingerprint(target.decl.coerce(second.valid), target.decl)
    assert first.manifest == second.manifest


def test_simulated_defects_are_quarantined_and_nothing_vanishes(tmp_path):
    simulate_day(tmp_path, DAY, 1000, bad_share=0.03)
    day = read_inbox_day(tmp_path, DAY)
    assert 0 < len(day.rejected) < MAX_REJECTED_SHARE * 1000
    assert len(day.valid) + len(day.rejected) == 1000 == day.rows_read[f"{DAY}.csv"]
    rules = {rule for text in day.rejected["failed_rules"] for rule in json.loads(text)}
    assert rules == {
        "ended_at after started_at", "start_lat between -90 and 90", "end_lon is a number", "trip_id is required",
        "trip_id unique within the day", "started_at is a date-time",
    }
    assert set(rules) <= set(DECLARED_RULES)
    assert day.rejected["source_line"].is_monotonic_increasing


def test_parts_are_read_in_name_order_and_uploads_wait(tmp_path):
    write_inbox_file(tmp_path, f"{DAY}__b.csv", render_csv(simulate_rows(DAY, 5, part="b", bad_share=0)))
    write_inbox_file(tmp_path, f"{DAY}.csv", render_csv(simulate_rows(DAY, 5, bad_share=0)))
    write_inbox_file(tmp_path, f"{DAY}__a.csv", render_csv(simulate_rows(DAY, 5, part="a", bad_share=0)))
    for upload in (f".{DAY}.csv.tmp", f"{DAY}__c.csv.part", f"~{DAY}__d.csv"):
        (trips_dir(tmp_path) / upload).write_text("half a file")
    assert [p.name for p in day_files(tmp_path, DAY)] == [f"{DAY}.csv", f"{DAY}__a.csv", f"{DAY}__b.csv"]
    valid = read_inbox_day(tmp_path, DAY).valid
    assert valid["source_file"].drop_duplicates().tolist() == [f"{DAY}.csv", f"{DAY}__a.csv", f"{DAY}__b.csv"]


def test_inbox_names():
    assert parse_inbox_name(f"{DAY}.csv").part is None
    assert parse_inbox_name(f"{DAY}__export-2.v1.csv").part == "export-2.v1"
    assert parse_inbox_name(f"{DAY}__morning.csv").day == DAY


def test_inbox_dir_from_environment(monkeypatch, tmp_path):
    monkeypatch.setenv("IDEM_INBOX_DIR", str(tmp_path / "box"))
    assert inbox_dir() == str(tmp_path / "box")
    monkeypatch.delenv("IDEM_INBOX_DIR")
    monkeypatch.setenv("IDEM_STATE_DIR", str(tmp_path / "state"))
    assert inbox_dir() == str(tmp_path / "state" / "inbox")


def test_declared_share_is_a_parameter(tmp_path):
    rows = simulate_rows(DAY, 20, bad_share=0)
    rows[3]["Start_Lat"] = "?"
    rows[4]["Start_Lat"] = "?"
    write_inbox_file(tmp_path, f"{DAY}.csv", render_csv(rows))
    assert len(read_inbox_day(tmp_path, DAY).rejected) == 2  # 10% is allowed
    with pytest.raises(InboxFileError, match="rule 'at most 5% of rows rejected' failed: 2 of 20 data lines"):
        read_inbox_day(tmp_path, DAY, max_rejected_share=0.05)


def test_simulate_scooters_command(tmp_path, capsys):
    assert simulate_main(["--range", "2026-01-01...2026-01-03", "--trips", "20", "--inbox", str(tmp_path)]) == 0
    out = capsys.readouterr().out
    assert out.count("sha256") == 3
    assert sorted(p.name for p in trips_dir(tmp_path).iterdir()) == ["2026-01-01.csv", "2026-01-02.csv", "2026-01-03.csv"]
    assert simulate_main(["--day", "1999-01-01", "--inbox", str(tmp_path)]) == 2
    assert "outside its partitions" in capsys.readouterr().err
