"""The lean write path (docs/benchmarks.md, recommended changes 4 and 5) gives exactly the old results.

- `partitions.valid_range()` reads the first and last key of the definition instead of enumerating every key;
- `TableDeclaration.coerce` returns a frame that is already canonical as it is (no copy);
- `fingerprint.row_hashes` hashes in slices, strings vectorized over their Arrow bytes (same values as hashing
  the whole frame at once, every string by a pure-Python reference of the definition);
- `audit.audit_frame` runs a cheap pass first and the detailed audit (the errors) only when it finds a failure.

Every expectation below is computed from real frames: the unsliced computation is rebuilt inline (the private
per-column helper for non-string columns, a pure-Python hash per string for string columns), and the detailed audit is the reference for the verdict and the message.
"""

from __future__ import annotations

import datetime as dt
import functools
import zoneinfo

import dagster as dg
import numpy as np
import pandas as pd
import pytest
from dagster._core.definitions.partitions.context import partition_loading_context

from idem_platform import partitions
from idem_platform.partitions import InvalidPartitionKey
from idem_platform.storage import fingerprint as fp
from idem_platform.storage.audit import AuditError, AuditRules, _audit_detailed, _passes, audit_frame
from idem_platform.storage.fingerprint import HASH_SLICE_ROWS, PartitionDigest, combine, partition_digests, row_hashes
from idem_platform.storage.schema import Column, TableDeclaration, canonical_dtype

DAYS = ["2026-01-05", "2026-01-06", "2026-01-07"]
DECL = TableDeclaration.build(
    {"id": "int", "name": "string", "x": "float", "ok": "bool", "born": "date", "seen_at": "timestamp", "note": "string"},
    key=["id"],
)


# ------------------------------------------------------------------------------------------- partitions


@pytest.mark.parametrize(
    "now",
    [
        dt.datetime(2026, 3, 1, 0, 0, 0, tzinfo=dt.timezone.utc),  # the first second of a day
        dt.datetime(2026, 2, 28, 23, 59, 59, 999999, tzinfo=dt.timezone.utc),  # the last instant of a day
        dt.datetime(2024, 2, 29, 12, 0, tzinfo=dt.timezone.utc),  # a leap day
        dt.datetime(2025, 12, 31, 23, 30, tzinfo=dt.timezone(dt.timedelta(hours=-5))),  # already Jan 1 in UTC
        dt.datetime(2024, 1, 2, 0, 0, tzinfo=dt.timezone.utc),  # exactly one partition
    ],
)
def test_valid_range_is_the_first_and_last_enumerated_key(now):
    with partition_loading_context(effective_dt=now):
        keys = partitions.daily_partitions().get_partition_keys()
        assert partitions.valid_range() == (keys[0], keys[-1])
    assert keys[-1] == (now.astimezone(dt.timezone.utc).date() - dt.timedelta(days=1)).isoformat()  # yesterday UTC


def test_end_offset_0_definition_last_key_is_yesterday_utc():
    """A fresh end_offset=0 definition, at the real current time: the O(1) key equals the enumerated one."""
    definition = dg.DailyPartitionsDefinition(start_date="2023-06-01", timezone="UTC", end_offset=0)
    yesterday = (dt.datetime.now(dt.timezone.utc).date() - dt.timedelta(days=1)).isoformat()
    assert definition.get_last_partition_key() == definition.get_partition_keys()[-1] == yesterday
    assert definition.get_first_partition_key() == definition.get_partition_keys()[0] == "2023-06-01"
    first, last = partitions.valid_range()
    assert (first, last) == (partitions.daily_partitions().get_partition_keys()[0], partitions.daily_partitions().get_partition_keys()[-1])
    assert last == yesterday


def test_no_partition_yet_is_a_named_error():
    before_start = dt.datetime.fromisoformat(partitions.settings.current().partitions_start).replace(tzinfo=dt.timezone.utc) - dt.timedelta(days=3)
    with partition_loading_context(effective_dt=before_start):
        assert partitions.daily_partitions().get_partition_keys() == []
        with pytest.raises(InvalidPartitionKey, match="no partition exists yet"):
            partitions.valid_range()
        assert partitions.validate_partition_keys([]) == []


def test_validate_partition_keys_computes_the_range_once(monkeypatch):
    real, calls = partitions.valid_range, []

    def counted(*args):
        calls.append(1)
        return real(*args)

    monkeypatch.setattr(partitions, "valid_range", counted)
    days = partitions.days_between("2025-01-01", "2025-12-31")
    calls.clear()
    assert partitions.validate_partition_keys(days) == [dt.date.fromisoformat(d) for d in days]
    assert len(calls) == 1
    # the errors still name the key and the valid range
    first, last = real()
    with pytest.raises(InvalidPartitionKey) as err:
        partitions.validate_partition_keys([*days[:5], "2025-02-30", *days[5:]])
    assert str(err.value) == (
        f"partition key '2025-02-30' is not a day in YYYY-MM-DD form; valid partitions are {first} .. {last}"
    )
    with pytest.raises(InvalidPartitionKey) as err:
        partitions.validate_partition_keys([*days, "2999-01-01"])
    assert str(err.value) == (
        f"partition key '2999-01-01' is outside its partitions; valid partitions are {first} .. {last}"
        " (move them with @idem_asset(start=..., end=...) or IDEM_PARTITIONS_START)"
    )
    # the explicit range parameter and the default agree
    assert partitions.parse_partition_key("2025-06-01", real()) == partitions.parse_partition_key("2025-06-01")


# ------------------------------------------------------------------------------------------- fingerprint


def mixed(rows: int, seed: int = 3, days=DAYS) -> pd.DataFrame:
    """`rows` canonical rows over `days`, every type, nulls in every nullable column, non-ASCII text."""
    rng = np.random.default_rng(seed)

    def holes(values, p=0.07):
        s = pd.Series(values)
        return s.mask(rng.random(rows) < p)

    return DECL.coerce(pd.DataFrame({
        "id": np.arange(rows),
        "name": holes(pd.Series(rng.integers(0, 5_000, rows)).map("näme-{}".format)),
        "x": holes(np.where(rng.random(rows) < 0.01, -0.0, rng.normal(0, 1e6, rows))),
        "ok": holes(pd.Series(rng.random(rows) < 0.5, dtype="boolean"), 0.05),
        "born": holes(pd.Timestamp("1950-01-01") + pd.to_timedelta(rng.integers(-5_000, 20_000, rows), "D")),
        "seen_at": holes(pd.Timestamp("2026-01-05", tz="UTC") + pd.to_timedelta(rng.integers(0, 3 * 86_400_000_000, rows), "us")),
        "note": holes(np.where(rng.random(rows) < 0.1, "", "n" + pd.Series(rng.integers(0, 9, rows)).astype(str)), 0.3),
        "partition_date": np.array(days)[rng.integers(0, len(days), rows)],
    }))


_MASK = (1 << 64) - 1


def _py_splitmix64(x: int) -> int:
    x ^= x >> 30
    x = (x * 0xBF58476D1CE4E5B9) & _MASK
    x ^= x >> 27
    x = (x * 0x94D049BB133111EB) & _MASK
    return x ^ (x >> 31)


@functools.cache
def reference_string_hash(text: str) -> int:
    """The module docstring's definition, one string at a time in Python ints:
    splitmix64(sum_i (b_i + 1) * K**(i + 1) + n * L) over the n UTF-8 bytes b_i, modulo 2**64."""
    data = text.encode("utf-8")
    poly = sum((b + 1) * pow(fp._STRING_K, i + 1, 1 << 64) for i, b in enumerate(data))
    return _py_splitmix64((poly + len(data) * int(fp._STRING_LEN)) & _MASK)


def reference_string_hashes(series: pd.Series) -> np.ndarray:
    return np.array(
        [int(fp._NULL_HASH) if value is pd.NA or value is None or value != value else reference_string_hash(value)
         for value in series.astype(object)],
        dtype=np.uint64,
    )


def unsliced_row_hashes(frame: pd.DataFrame, decl: TableDeclaration) -> np.ndarray:
    """row_hashes without slicing: every column of the whole frame at once, strings one by one in Python."""
    combined = np.zeros(len(frame), dtype=np.uint64)
    with np.errstate(over="ignore"):
        for name in sorted(decl.names):
            type_name = decl.column(name).type
            if type_name == "string":
                values = reference_string_hashes(frame[name])
            else:
                values = fp._column_hashes(frame[name], type_name)
            combined = combined * fp._ROW_PRIME + (values ^ fp._name_hash(name))
        return fp._splitmix64(combined)


def unsliced_digests(frame: pd.DataFrame, decl: TableDeclaration, days: list[str]) -> dict[str, PartitionDigest]:
    hashes = unsliced_row_hashes(frame, decl)
    day_keys = frame["partition_date"].dt.strftime("%Y-%m-%d").to_numpy()
    out = {}
    with np.errstate(over="ignore"):
        for day in days:
            mine = hashes[day_keys == day]
            out[day] = PartitionDigest(len(mine), f"{int(mine.sum(dtype=np.uint64)):016x}")
    return out


@pytest.fixture(scope="module")
def big() -> pd.DataFrame:
    return mixed(300_000)


def test_sliced_row_hashes_equal_the_whole_frame_computation(big):
    assert len(big) > 2 * HASH_SLICE_ROWS
    assert big.isna().any().all() or big.drop(columns=["id", "partition_date"]).isna().any().all()
    hashes = row_hashes(big, DECL)
    assert hashes.dtype == np.uint64 and hashes.shape == (len(big),)
    np.testing.assert_array_equal(hashes, unsliced_row_hashes(big, DECL))


def test_digests_of_a_frame_larger_than_a_slice_are_unchanged(big):
    digests = partition_digests(big, DECL, DAYS + ["2026-01-08"])
    assert digests == unsliced_digests(big, DECL, DAYS + ["2026-01-08"])
    assert digests["2026-01-08"] == PartitionDigest(0, "0" * 16)
    assert sum(d.rows for d in digests.values()) == len(big)
    assert combine(list(digests.values())).fingerprint == fp.fingerprint(big, DECL)


def test_digests_are_invariant_under_slicing_and_row_order(big):
    """digests(frame) == digests(first half) + digests(second half), at a cut that is not a slice boundary."""
    cut = HASH_SLICE_ROWS + 12_345
    whole = partition_digests(big, DECL, DAYS)
    first = partition_digests(big.iloc[:cut].reset_index(drop=True), DECL, DAYS)
    second = partition_digests(big.iloc[cut:].reset_index(drop=True), DECL, DAYS)
    assert {d: combine([first[d], second[d]]) for d in DAYS} == whole
    shuffled = big.sample(frac=1, random_state=5)  # shuffled index: the slices are positional
    assert partition_digests(shuffled, DECL, DAYS) == whole
    np.testing.assert_array_equal(row_hashes(shuffled, DECL), unsliced_row_hashes(big, DECL)[shuffled.index.to_numpy()])


@pytest.mark.parametrize("rows", [0, 1, HASH_SLICE_ROWS - 1, HASH_SLICE_ROWS, HASH_SLICE_ROWS + 1, 2 * HASH_SLICE_ROWS])
def test_slice_boundaries(big, rows):
    part = big.iloc[:rows].reset_index(drop=True)
    np.testing.assert_array_equal(row_hashes(part, DECL), unsliced_row_hashes(part, DECL))
    assert partition_digests(part, DECL, DAYS) == unsliced_digests(part, DECL, DAYS)


# ------------------------------------------------------------------------------------------- coerce


def small_raw() -> pd.DataFrame:
    return pd.DataFrame({
        "id": [1, 2, 3],
        "name": ["a", None, "ç"],
        "x": [0.1, float("nan"), -0.0],
        "ok": [True, None, False],
        "born": ["1990-01-01", None, "1969-12-31"],
        "seen_at": ["2026-01-05T01:00:00Z", None, "2026-01-05T23:59:59.999999+00:00"],
        "note": ["", "b", None],
        "partition_date": ["2026-01-05"] * 3,
    })


def assert_identical(a: pd.DataFrame, b: pd.DataFrame):
    """Same columns, index, dtypes (tz objects included) and values (float bits included)."""
    pd.testing.assert_frame_equal(a, b, check_exact=True)
    assert list(a.dtypes.map(repr)) == list(b.dtypes.map(repr))
    assert [repr(getattr(t, "tz", None)) for t in a.dtypes] == [repr(getattr(t, "tz", None)) for t in b.dtypes]
    np.testing.assert_array_equal(a["x"].to_numpy().view("uint64"), b["x"].to_numpy().view("uint64"))


@pytest.mark.parametrize("frame_of", [lambda: DECL.coerce(small_raw()), lambda: mixed(2_000)], ids=["small", "mixed"])
def test_canonical_frame_is_returned_as_it_is(frame_of):
    canonical = frame_of()
    assert DECL.is_canonical(canonical)
    assert DECL.coerce(canonical) is canonical
    # and it is exactly what the cast path makes of the same content (attrs force the cast path)
    forced = canonical.copy()
    forced.attrs["force"] = "cast"
    assert not DECL.is_canonical(forced)
    cast = DECL.coerce(forced)
    assert cast is not forced and cast.attrs == {}
    assert_identical(cast, canonical)


def test_empty_canonical_frame_is_returned_as_it_is():
    empty = DECL.empty_frame()
    assert DECL.coerce(empty) is empty


def test_every_logical_type_canonical_dtype_is_a_fixed_point_of_the_cast():
    """For every logical type, `_cast` of a column in the canonical dtype keeps that exact dtype and values."""
    from idem_platform.storage.schema import LOGICAL_TYPES, _cast, _is_canonical_dtype

    canonical = DECL.coerce(small_raw())
    by_type = {c.type: c.name for c in DECL.columns}
    assert set(by_type) == set(LOGICAL_TYPES)
    for type_name, name in by_type.items():
        series = canonical[name]
        assert _is_canonical_dtype(series.dtype, type_name)
        out = _cast(series, type_name)
        assert repr(out.dtype) == repr(series.dtype) == repr(canonical_dtype(type_name))
        assert repr(getattr(out.dtype, "tz", None)) == repr(getattr(series.dtype, "tz", None))
        pd.testing.assert_series_equal(out, series, check_exact=True)


def _non_canonical_variants():
    def retyped(name, dtype):
        def make(f):
            return f.assign(**{name: f[name].astype(dtype)})
        return make

    def shifted_index(f):
        return f.set_axis(pd.RangeIndex(5, 5 + len(f)))

    def named_index(f):
        return f.rename_axis("row")

    def labelled_index(f):
        return f.set_axis(pd.Index(["r1", "r2", "r3"]))

    def reordered(f):
        return f[list(reversed(f.columns))]

    def noon_birthdays(f):
        out = f.assign(born=f["born"] + pd.Timedelta(hours=12).as_unit("s"))
        assert out["born"].dtype == canonical_dtype("date")  # the dtype is canonical, only the values are not
        return out

    def zoneinfo_utc(f):
        return f.assign(seen_at=f["seen_at"].dt.tz_convert(zoneinfo.ZoneInfo("UTC")))

    def with_attrs(f):
        out = f.copy()
        out.attrs["source"] = "x"
        return out

    return {
        "id as numpy int64": retyped("id", "int64"),
        "x as nullable Float64": retyped("x", "Float64"),
        "name as pandas 3 str (NaN-backed)": retyped("name", "str"),
        "name as python-storage string": retyped("name", pd.StringDtype("python")),
        "ok as numpy object": retyped("ok", "object"),
        "born as datetime64[ns]": retyped("born", "datetime64[ns]"),
        "seen_at in ns": retyped("seen_at", "datetime64[ns, UTC]"),
        "seen_at with ZoneInfo UTC": zoneinfo_utc,
        "index starting at 5": shifted_index,
        "named index": named_index,
        "label index": labelled_index,
        "column order": reordered,
        "date not at midnight": noon_birthdays,
        "attrs": with_attrs,
    }


@pytest.mark.parametrize("variant", list(_non_canonical_variants()))
def test_non_canonical_frame_gets_the_cast_copy(variant):
    canonical = DECL.coerce(small_raw())
    frame = _non_canonical_variants()[variant](canonical.copy())
    before = frame.copy()
    assert not DECL.is_canonical(frame)
    out = DECL.coerce(frame)
    assert out is not frame
    assert DECL.is_canonical(out) and DECL.coerce(out) is out
    assert list(out.columns) == DECL.names and out.index.equals(pd.RangeIndex(3)) and out.attrs == {}
    for col in DECL.columns:
        assert repr(out[col.name].dtype) == repr(canonical_dtype(col.type))
    assert_identical(out, canonical)  # noon birthdays are floored back to midnight
    pd.testing.assert_frame_equal(frame, before)  # the input is untouched


def test_a_cast_frame_sharing_canonical_columns_with_the_input_is_still_apart_from_it():
    """Columns already canonical are taken as they are, unconsolidated: a write to either frame afterwards (the
    caller editing its frame, a later step editing the coerced one) must not show in the other."""
    canonical = DECL.coerce(small_raw())
    frame = canonical.assign(id=canonical["id"].astype("int64"))  # one column to cast, the others shared
    out = DECL.coerce(frame)
    assert out is not frame and DECL.is_canonical(out)
    kept = out.copy()
    frame.loc[0, "x"] = 99.0
    frame.loc[1, "name"] = "changed"
    pd.testing.assert_frame_equal(out, kept)
    out.loc[2, "x"] = -7.0
    assert frame.loc[2, "x"] == canonical.loc[2, "x"]


def test_object_and_text_columns_still_go_through_the_casts():
    raw = small_raw()
    out = DECL.coerce(raw)
    assert out is not raw
    assert_identical(out, DECL.coerce(out.astype(object)))


# ------------------------------------------------------------------------------------------- audit


ASSET = "lean_audit"
TEXT_KEY = TableDeclaration.build({"code": "string", "v": "float"}, key=["code"])
COMPOSITE = TableDeclaration.build({"site": "int", "code": "string", "v": "float"}, key=["site", "code"])
DATE_KEY = TableDeclaration.build({"site": "int", "on": "date", "v": "float"}, key=["site", "on"])
TS_KEY = TableDeclaration.build({"at": "timestamp", "ok": "bool", "v": "float"}, key=["at", "ok"])
# a hand-written declaration whose key column is nullable (build() makes keys NOT NULL)
NULLABLE_KEY = TableDeclaration(
    (Column("id", "int", nullable=True), Column("v", "float"), Column("partition_date", "date", nullable=False)), ("id",)
)


def clean(rows_per_day: int = 4, days=DAYS[:2]) -> pd.DataFrame:
    n = rows_per_day * len(days)
    return DECL.coerce(pd.DataFrame({
        "id": np.tile(np.arange(rows_per_day), len(days)),  # ids repeat across days: unique within a day
        "name": [f"n{i}" for i in range(n)],
        "x": np.arange(n, dtype=float),
        "ok": [True] * n,
        "born": ["1990-01-01"] * n,
        "seen_at": ["2026-01-05T01:00:00Z"] * n,
        "note": [None] * n,
        "partition_date": np.repeat(days, rows_per_day),
    }))


def audit_error(frame, days, decl=DECL, rules=AuditRules()) -> AuditError:
    with pytest.raises(AuditError) as err:
        audit_frame(ASSET, frame, days, decl, rules)
    with pytest.raises(AuditError) as detailed:
        _audit_detailed(ASSET, frame, days, decl, rules)
    # the same error as the detailed audit alone (the old audit_frame)
    assert str(err.value) == str(detailed.value)
    assert (err.value.rule, err.value.partitions, err.value.detail) == (detailed.value.rule, detailed.value.partitions, detailed.value.detail)
    return err.value


def test_clean_frame_passes():
    f = clean()
    # the cheap pass alone accepts them (the detailed audit is not needed)
    assert _passes(f, DAYS[:2], DECL, AuditRules(min_rows=4, max_rows=4))
    assert _passes(mixed(50_000), DAYS, DECL, AuditRules(min_rows=1, max_rows=50_000))
    audit_frame(ASSET, f, DAYS[:2], DECL, AuditRules(min_rows=4, max_rows=4))
    audit_frame(ASSET, f, DAYS, DECL, AuditRules(max_rows=4))  # a listed day without rows is fine without min_rows
    audit_frame(ASSET, DECL.empty_frame(), DAYS, DECL, AuditRules(max_rows=0))
    audit_frame(ASSET, mixed(50_000), DAYS, DECL, AuditRules(min_rows=1, max_rows=50_000))


def test_rows_of_other_days():
    f = clean(days=["2026-01-05", "2026-01-09"])
    e = audit_error(f, ["2026-01-05"])
    assert e.rule == "partition_date within the partitions written" and e.partitions == ["2026-01-05"]
    assert "4 rows belong to other days, e.g. '2026-01-09'" in str(e)


def test_nulls_in_not_null_columns():
    f = clean()
    f.loc[[1, 6], "id"] = pd.NA
    e = audit_error(f, DAYS[:2])
    assert e.rule == "id not null" and e.partitions == DAYS[:2] and "2 rows have no id" in str(e)
    g = clean()
    g.loc[[2], "partition_date"] = pd.NaT
    e = audit_error(g, DAYS[:2])
    assert e.rule == "partition_date not null" and "1 rows have no partition_date" in str(e)


def test_duplicate_int_keys():
    f = clean()
    f.loc[5, "id"] = 3  # day 2: ids 0, 3, 2, 3
    e = audit_error(f, DAYS[:2])
    assert e.rule == "unique key (id)" and e.partitions == ["2026-01-06"]
    assert "2 rows share 1 keys, e.g. id=3" in str(e)


def test_duplicate_string_keys():
    f = TEXT_KEY.coerce(pd.DataFrame({
        "code": ["a", "b", "a", "a", "c"], "v": [1.0, 2, 3, 4, 5], "partition_date": ["2026-01-05"] * 3 + ["2026-01-06"] * 2,
    }))
    e = audit_error(f, DAYS[:2], TEXT_KEY)
    assert e.rule == "unique key (code)" and e.partitions == ["2026-01-05"] and "e.g. code='a'" in str(e)


def test_duplicate_composite_keys():
    f = COMPOSITE.coerce(pd.DataFrame({
        "site": [1, 1, 2, 1], "code": ["a", "b", "a", "b"], "v": [1.0, 2, 3, 4], "partition_date": ["2026-01-07"] * 4,
    }))
    e = audit_error(f, ["2026-01-07"], COMPOSITE)
    assert e.rule == "unique key (site, code)" and e.partitions == ["2026-01-07"]
    assert "2 rows share 1 keys, e.g. site=1, code='b'" in str(e)
    # same site, different codes: unique
    audit_frame(ASSET, f.iloc[:3].reset_index(drop=True), ["2026-01-07"], COMPOSITE, AuditRules())


def test_duplicate_int_and_date_keys_found_by_sorting():
    f = DATE_KEY.coerce(pd.DataFrame({
        "site": [1, 1, 2, 1, 1], "on": ["2026-01-01", "2026-01-02", "2026-01-01", "2026-01-02", "2026-01-02"],
        "v": [1.0, 2, 3, 4, 5], "partition_date": ["2026-01-05"] * 3 + ["2026-01-06"] * 2,
    }))
    e = audit_error(f, DAYS[:2], DATE_KEY)
    assert e.rule == "unique key (site, on)" and e.partitions == ["2026-01-06"]
    assert "2 rows share 1 keys, e.g. site=1, on=Timestamp('2026-01-02 00:00:00')" in str(e)
    # the same key on two different days is not a duplicate
    audit_frame(ASSET, f.iloc[:4].reset_index(drop=True), DAYS[:2], DATE_KEY, AuditRules())


def test_duplicate_timestamp_and_bool_keys():
    f = TS_KEY.coerce(pd.DataFrame({
        "at": ["2026-01-05T01:00:00Z", "2026-01-05T02:00:00+01:00", "2026-01-05T01:00:00Z"],  # rows 0 and 1: same instant
        "ok": [True, True, False], "v": [1.0, 2, 3], "partition_date": ["2026-01-05"] * 3,
    }))
    e = audit_error(f, ["2026-01-05"], TS_KEY)
    assert e.rule == "unique key (at, ok)" and "2 rows share 1 keys" in str(e)
    audit_frame(ASSET, f.iloc[[0, 2]].reset_index(drop=True), ["2026-01-05"], TS_KEY, AuditRules())


def test_nullable_key_zero_and_null_are_not_duplicates():
    """A null mapped to 0 for sorting may only raise a false alarm, which the detailed audit clears."""
    f = NULLABLE_KEY.coerce(pd.DataFrame({"id": [0, None, 1], "v": [1.0, 2, 3], "partition_date": ["2026-01-05"] * 3}))
    audit_frame(ASSET, f, ["2026-01-05"], NULLABLE_KEY, AuditRules())
    g = NULLABLE_KEY.coerce(pd.DataFrame({"id": [None, None, 1], "v": [1.0, 2, 3], "partition_date": ["2026-01-05"] * 3}))
    e = audit_error(g, ["2026-01-05"], NULLABLE_KEY)
    assert e.rule == "unique key (id)"


def test_min_and_max_rows():
    f = clean(days=DAYS[:2])
    e = audit_error(f, DAYS, rules=AuditRules(min_rows=1))
    assert e.rule == "row count bounds" and e.partitions == ["2026-01-07"]
    assert "0 rows, fewer than the declared minimum 1" in str(e)
    e = audit_error(f, DAYS[:2], rules=AuditRules(max_rows=3))
    assert e.partitions == ["2026-01-05"] and "4 rows, more than the declared maximum 3" in str(e)
    e = audit_error(f.iloc[1:].reset_index(drop=True), DAYS[:2], rules=AuditRules(min_rows=4))
    assert e.partitions == ["2026-01-05"] and "3 rows, fewer than the declared minimum 4" in str(e)


def test_days_that_are_not_canonical_text_keep_the_old_verdict():
    """The cheap pass compares values; a day string that is not exactly YYYY-MM-DD must not slip through."""
    f = clean(days=["2026-01-05"])
    e = audit_error(f, ["2026-1-5"])
    assert e.rule == "partition_date within the partitions written"


def test_random_frames_same_verdict_and_message_as_the_detailed_audit():
    """Many small frames with random nulls, duplicate keys, foreign days and bounds: audit_frame raises exactly
    when the detailed audit does, with the same message."""
    rng = np.random.default_rng(11)
    decls = [DECL, TEXT_KEY, COMPOSITE, DATE_KEY, NULLABLE_KEY]
    raised = passed = 0
    for i in range(400):
        decl = decls[i % len(decls)]
        n = int(rng.integers(0, 12))
        data = {}
        for col in decl.columns:
            if col.name == "partition_date":
                data[col.name] = rng.choice(["2026-01-05", "2026-01-06", "2026-01-08"], n, p=[0.48, 0.48, 0.04])
            elif col.type == "int":
                data[col.name] = pd.array(rng.integers(0, 6, n), dtype="Int64")
            elif col.type == "string":
                data[col.name] = rng.choice(["a", "b", "c", "d", "e", "f", "g"], n)
            elif col.type == "float":
                data[col.name] = rng.random(n)
            elif col.type == "bool":
                data[col.name] = rng.random(n) < 0.5
            elif col.type == "date":
                data[col.name] = rng.choice(["2026-01-01", "2026-01-02", "2026-01-03"], n)
            else:
                data[col.name] = pd.Timestamp("2026-01-05", tz="UTC") + pd.to_timedelta(rng.integers(0, 4, n), "h")
        frame = decl.coerce(pd.DataFrame(data))
        for col in decl.columns:
            if n and rng.random() < 0.1:
                frame.loc[int(rng.integers(0, n)), col.name] = None
        rules = AuditRules(min_rows=int(rng.integers(0, 3)) or None, max_rows=int(rng.integers(3, 9)) if rng.random() < 0.5 else None)
        days = ["2026-01-05", "2026-01-06"]
        try:
            _audit_detailed(ASSET, frame, days, decl, rules)
        except AuditError as expected:
            with pytest.raises(AuditError) as got:
                audit_frame(ASSET, frame, days, decl, rules)
            assert str(got.value) == str(expected)
            raised += 1
        else:
            audit_frame(ASSET, frame, days, decl, rules)
            if decl is not NULLABLE_KEY:  # a null key sorts as 0: the cheap pass may raise a false alarm there
                assert _passes(frame, days, decl, rules)
            passed += 1
    assert raised > 50 and passed > 50
