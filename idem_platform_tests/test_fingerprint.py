"""The fingerprint: order-independent, duplicate-sensitive, canonical across representations."""

import datetime as dt

import numpy as np
import pandas as pd
import pytest

from idem_platform.storage.fingerprint import combine, fingerprint, partition_digests
from idem_platform.storage.schema import SchemaError, TableDeclaration

DECL = TableDeclaration.build(
    {"id": "string", "n": "int", "x": "float", "ok": "bool", "born": "date", "seen_at": "timestamp"}, key=["id"]
)


def frame(**overrides):
    data = {
        "id": ["a", "b", "c"],
        "n": [1, None, 3],
        "x": [0.1, float("nan"), 2.5],
        "ok": [True, None, False],
        "born": ["1990-01-01", "1985-06-30", None],
        "seen_at": ["2026-01-05T01:00:00Z", "2026-01-05T02:00:00.123456Z", "2026-01-05T23:59:59.999999Z"],
        "partition_date": ["2026-01-05"] * 3,
    }
    data.update(overrides)
    return DECL.coerce(pd.DataFrame(data))


def test_row_order_does_not_matter_but_duplicates_do():
    f = frame()
    assert fingerprint(f, DECL) == fingerprint(f.iloc[::-1].reset_index(drop=True), DECL)
    doubled = pd.concat([f, f.iloc[[0]]], ignore_index=True)
    assert fingerprint(doubled, DECL) != fingerprint(f, DECL)
    # two equal rows must not cancel out (the XOR trap)
    twice = pd.concat([f.iloc[[0]], f.iloc[[0]]], ignore_index=True)
    assert fingerprint(twice, DECL) != fingerprint(f.iloc[[]], DECL)


def test_same_instant_in_other_representations_gives_same_fingerprint():
    base = fingerprint(frame(), DECL)
    other_tz = frame(seen_at=[
        pd.Timestamp("2026-01-05T02:00:00+01:00"),
        pd.Timestamp("2026-01-04T21:00:00.123456-05:00"),
        dt.datetime(2026, 1, 5, 23, 59, 59, 999999, tzinfo=dt.timezone.utc),
    ])
    assert fingerprint(other_tz, DECL) == base
    as_dates = frame(born=[dt.date(1990, 1, 1), dt.date(1985, 6, 30), None])
    assert fingerprint(as_dates, DECL) == base


@pytest.mark.parametrize(
    "change",
    [
        {"id": ["a", "b", "d"]},
        {"n": [1, 0, 3]},  # null is not zero
        {"x": [0.1, float("nan"), 2.5000000000000004]},  # exact float bits
        {"ok": [True, False, False]},
        {"seen_at": ["2026-01-05T01:00:00.000001Z", "2026-01-05T02:00:00.123456Z", "2026-01-05T23:59:59.999999Z"]},
        {"id": ["a", "b", ""]},
    ],
)
def test_any_value_change_changes_the_fingerprint(change):
    assert fingerprint(frame(**change), DECL) != fingerprint(frame(), DECL)


def test_null_and_empty_string_differ():
    assert fingerprint(frame(id=["a", "b", None]), DECL) != fingerprint(frame(id=["a", "b", ""]), DECL)


def test_per_day_digests_add_up_to_the_whole():
    f = frame(partition_date=["2026-01-05", "2026-01-06", "2026-01-06"])
    digests = partition_digests(f, DECL, ["2026-01-05", "2026-01-06", "2026-01-07"])
    assert [d.rows for d in digests.values()] == [1, 2, 0]
    assert digests["2026-01-07"].fingerprint == "0" * 16
    assert combine(list(digests.values())).fingerprint == fingerprint(f, DECL)


def test_coerce_names_the_bad_column():
    with pytest.raises(SchemaError, match="column 'n' cannot be read as int"):
        frame(n=["1", "two", "3"])
    with pytest.raises(SchemaError, match=r"missing \['ok'\]"):
        DECL.coerce(frame().drop(columns=["ok"]))
    with pytest.raises(SchemaError, match=r"undeclared \['surprise'\]"):
        DECL.coerce(frame().assign(surprise=1))


def test_fingerprint_is_vectorized_enough_for_a_large_frame():
    n = 200_000
    big = DECL.coerce(pd.DataFrame({
        "id": np.arange(n).astype(str), "n": np.arange(n), "x": np.linspace(0, 1, n), "ok": np.ones(n, bool),
        "born": ["1990-01-01"] * n, "seen_at": pd.Timestamp("2026-01-05", tz="UTC") + pd.to_timedelta(np.arange(n), "s"),
        "partition_date": ["2026-01-05"] * n,
    }))
    assert fingerprint(big, DECL) == fingerprint(big.sample(frac=1, random_state=1), DECL)
