"""The people pipeline's generator and cleaning: deterministic per day, in any process."""

import os
import subprocess
import sys

import pandas as pd

from idem_platform.pipelines.people import RAW_PEOPLE_COLUMNS, clean_people, generate_people
from idem_platform.storage.fingerprint import fingerprint
from idem_platform.storage.schema import TableDeclaration

RAW = TableDeclaration.build(RAW_PEOPLE_COLUMNS, key=["person_id"])
SCRIPT = (
    "from idem_platform.pipelines.people import generate_people, RAW_PEOPLE_COLUMNS;"
    "from idem_platform.storage.schema import TableDeclaration;"
    "from idem_platform.storage.fingerprint import fingerprint;"
    "d = TableDeclaration.build(RAW_PEOPLE_COLUMNS, key=['person_id']);"
    "print(fingerprint(d.coerce(generate_people('2024-02-29', 300)), d))"
)


def test_same_day_same_people_in_any_process_whatever_the_hash_seed():
    here = fingerprint(RAW.coerce(generate_people("2024-02-29", 300)), RAW)
    outputs = {
        subprocess.run([sys.executable, "-c", SCRIPT], env={**os.environ, "PYTHONHASHSEED": seed},
                       capture_output=True, text=True, check=True).stdout.strip()
        for seed in ("1", "2", "random")
    }
    assert outputs == {here}


def test_days_differ_and_rows_stay_inside_their_day():
    a, b = generate_people("2026-01-05", 200), generate_people("2026-01-06", 200)
    assert not set(a["person_id"]) & set(b["person_id"])
    created = pd.to_datetime(a["created_at"], utc=True)
    assert created.min() >= pd.Timestamp("2026-01-05", tz="UTC") and created.max() < pd.Timestamp("2026-01-06", tz="UTC")
    assert a["person_id"].is_unique and len(a) == 200


def test_cleaning_types_and_normalizes():
    raw = RAW.coerce(generate_people("2026-01-05", 1000))
    clean = clean_people(raw)
    assert (clean["email"] == clean["email"].str.lower()).all()
    assert (clean["first_name"] == clean["first_name"].str.strip().str.title()).all()
    assert clean["phone_digits"].str.fullmatch(r"\d+").all()
    assert clean["age"].between(18, 90).all()
    assert raw["first_name"].str.startswith(" ").any(), "the raw export should carry the messiness the cleaning removes"
