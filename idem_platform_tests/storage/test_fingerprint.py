"""The fingerprint: order-independent, duplicate-sensitive, canonical across representations."""

import datetime as dt
import functools

import numpy as np
import pandas as pd
import pyarrow as pa
import pytest

from idem_platform.storage import fingerprint as fp
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


# ------------------------------------------------------------------------------------------- string hashing

_MASK = (1 << 64) - 1


@functools.cache
def reference_hash(text: str) -> int:
    """The module docstring's definition in Python ints: splitmix64(sum_i (b_i + 1) * K**(i + 1) + n * L)."""
    data = text.encode("utf-8")
    x = (sum((b + 1) * pow(fp._STRING_K, i + 1, 1 << 64) for i, b in enumerate(data)) + len(data) * int(fp._STRING_LEN)) & _MASK
    x ^= x >> 30
    x = (x * 0xBF58476D1CE4E5B9) & _MASK
    x ^= x >> 27
    x = (x * 0x94D049BB133111EB) & _MASK
    return x ^ (x >> 31)


BLOCK = fp.STRING_BLOCK_BYTES
TEXTS = [
    "", "a", "ab", "ba", "a\x00", "\x00", "\x00\x00", "ç", "日本語", "ÿ", "user1@x", "user10@x", "user01@x", "", "",
    "x" * (BLOCK - 1), "y" * BLOCK, "z" * (BLOCK + 1), "", "w" * (3 * BLOCK + 7), "tail", "😀" * 1000,
    "".join(chr(32 + i % 95) for i in range(2 * BLOCK + 3)), "é😀" * (BLOCK // 3),  # long, varied, in pieces
    *(f"k{i}" for i in range(BLOCK // 3)),  # many short strings: blocks cut between strings
    *[""] * (BLOCK + 5),  # a run of empty strings longer than a block
]


def hashes(values) -> list[int]:
    return [int(h) for h in fp._string_hashes(values)]


@pytest.fixture(scope="module")
def expected() -> list[int]:
    return [reference_hash(t) for t in TEXTS]


def test_string_hashes_follow_the_definition_across_blocks(expected):
    assert hashes(pd.Series(TEXTS, dtype="string")) == expected


@pytest.mark.parametrize("storage", ["pyarrow", "python"])
def test_string_hash_depends_on_the_text_only(storage, expected):
    whole = pd.Series(TEXTS, dtype=pd.StringDtype(storage))
    assert hashes(whole) == expected
    # sliced (offsets not starting at 0), chunked, and arrow string (int32 offsets) vs large_string
    assert hashes(whole.iloc[7:]) == expected[7:]
    chunked = pd.concat([whole.iloc[:5], whole.iloc[5:9], whole.iloc[9:]], ignore_index=True)
    assert hashes(chunked) == expected
    assert hashes(pd.Series(TEXTS, dtype=object)) == expected
    assert hashes(pd.Series(pa.array(TEXTS, pa.string()), dtype=pd.ArrowDtype(pa.string()))) == expected
    small = pa.array(TEXTS, pa.string())
    large = pa.array(TEXTS, pa.large_string())
    for arrow in (small, large):
        chunks = [arrow.slice(0, 3), arrow.slice(3, 100), arrow.slice(103)]
        assert [int(h) for h in fp._arrow_string_hashes(chunks, len(TEXTS))] == expected


def test_near_duplicate_strings_differ():
    texts = ["ab", "ba", "a", "a\x00", "\x00a", "", "user1@x", "user10@x", "user01@x", "user1@y", "1user@x", "ç", "c"]
    assert len(set(hashes(pd.Series(texts, dtype="string")))) == len(texts)
    # null vs empty string, in a whole row
    base = frame(id=["a", "b", ""])
    assert fingerprint(frame(id=["a", "b", None]), DECL) != fingerprint(base, DECL)
    assert fingerprint(frame(id=["a", "b", "\x00"]), DECL) != fingerprint(base, DECL)
    assert fingerprint(frame(id=["ab", "b", ""]), DECL) != fingerprint(frame(id=["ba", "b", ""]), DECL)


def test_python_and_pyarrow_strings_give_the_same_fingerprint():
    pyarrow = frame(id=["a", None, "ç"])
    python = pyarrow.assign(id=pyarrow["id"].astype(pd.StringDtype("python")))  # past coerce, which would cast back
    assert pyarrow["id"].dtype.storage == "pyarrow" and python["id"].dtype.storage == "python"
    assert fp.row_hashes(pyarrow, DECL).tolist() == fp.row_hashes(python, DECL).tolist()
    assert fingerprint(pyarrow, DECL) == fingerprint(python, DECL)


def test_no_collisions_among_a_million_distinct_strings():
    n = 1_000_000
    rng = np.random.default_rng(11)
    letters = np.frombuffer(b"abcdefghijklmnopqrstuvwxyz0123456789@._-", dtype=np.uint8)
    lengths = rng.integers(0, 12, 300_000)
    blob = letters[rng.integers(0, len(letters), int(lengths.sum()))].tobytes().decode()
    cuts = np.concatenate([[0], np.cumsum(lengths)])
    texts = pd.unique(np.array(
        [f"user{i}@example.com" for i in range(n)]
        + [f"{i:x}" for i in range(n // 2)]
        + [blob[a:b] for a, b in zip(cuts[:-1], cuts[1:])],
        dtype=object,
    ))
    assert len(texts) > n
    values = fp._string_hashes(pd.Series(texts, dtype="string"))
    assert len(np.unique(values)) == len(texts)
