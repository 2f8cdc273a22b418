"""Exact round trips in every sink: a value the platform accepts is read back identical, or the audit refuses it.

Property-based (Hypothesis): frames over the six declared logical types, with the edge values that broke before
(int64 extremes, integers around 2**53 in an object column with None, -0.0, NaN and None, empty strings, quotes,
newlines, NUL, non-ASCII, long keys, timestamps with nanoseconds and in other zones, dates near every sink's
limits), published through `publish_partitions` to PostgreSQL, a lake file and a search index (real servers).
Then either the audit refused the frame (`AuditError` naming the column) and nothing was recorded, or the sink
reads back a frame equal to the coerced input, with the fingerprint the ledger recorded.

`IDEM_HYPOTHESIS_EXAMPLES` (a test-only knob) sets the examples per sink: 25 by default, more in a long run, e.g.
`IDEM_HYPOTHESIS_EXAMPLES=500 pytest idem_platform_tests/storage/test_round_trips.py`.
"""

import datetime as dt
import os
import uuid

import numpy as np
import pandas as pd
import pandas.testing as pdt
import psycopg
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from idem_platform.storage import ledger
from idem_platform.storage.audit import AuditError, AuditRules
from idem_platform.storage.elasticsearch_store import ElasticsearchIndexSink
from idem_platform.storage.fingerprint import fingerprint
from idem_platform.storage.lake_store import LakeSink
from idem_platform.storage.partition_store import AssetTarget, publish_partitions
from idem_platform.storage.postgres_store import PostgresTableSink
from idem_platform.storage.schema import TableDeclaration

DAY = "2026-01-05"
EXAMPLES = int(os.environ.get("IDEM_HYPOTHESIS_EXAMPLES", "25"))
DECL = TableDeclaration.build(
    {"k": "int", "ks": "string", "i": "int", "f": "float", "s": "string", "b": "bool", "d": "date", "t": "timestamp"},
    key=["k", "ks"],
)
SINKS = ["postgres", "lake", "elasticsearch"]

US = 1_000_000
DAY_US = 86_400 * US
MIN_US = int(np.datetime64("0001-01-01", "us").astype("int64"))
MAX_US = int(np.datetime64("9999-12-31T23:59:59.999999", "us").astype("int64"))
NS_LOW, NS_HIGH = int(pd.Timestamp.min.value // 1000) + 1, int(pd.Timestamp.max.value // 1000) - 1
INSTANT_EDGES = [
    0, -1, 1, MIN_US, MAX_US, MIN_US - 1, MAX_US + 1, NS_LOW, NS_HIGH,
    int(pd.Timestamp("2262-04-11T23:47:16.854775Z").value // 1000),
    int(pd.Timestamp("1969-12-31T23:59:59.999999Z").value // 1000),
    int(pd.Timestamp("2026-01-05T01:02:03.123456Z").value // 1000),
]
INT_EDGES = [0, 1, -1, 2**63 - 1, -(2**63), 2**53 - 1, 2**53, 2**53 + 1, -(2**53) - 1, 9007199254740993]
FLOAT_EDGES = [0.0, -0.0, float("nan"), 5e-324, -5e-324, 1.7976931348623157e308, 0.1, float("inf"), float("-inf")]
STRING_EDGES = ["", "'", '"', "\n", "\r\n", "a,b", "\\", "\\N", "NULL", "\t", "é漢🙂", "\x00", "a\x00b", "x" * 2_700]

text = st.text(alphabet=st.characters(exclude_categories=("Cs",)), max_size=12)
maybe = lambda values: st.one_of(st.none(), values)  # noqa: E731


@st.composite
def frames(draw) -> pd.DataFrame:
    """A day's frame in the shapes assets hand over: object columns, other zones, nanoseconds, floats for dates."""
    n = draw(st.integers(0, 6))
    ints = [draw(maybe(st.one_of(st.sampled_from(INT_EDGES), st.integers(-(2**63), 2**63 - 1)))) for _ in range(n)]
    floats = [draw(maybe(st.one_of(st.sampled_from(FLOAT_EDGES), st.floats()))) for _ in range(n)]
    strings = [draw(maybe(st.one_of(st.sampled_from(STRING_EDGES), text))) for _ in range(n)]
    keys = [draw(st.one_of(st.sampled_from(STRING_EDGES), text)) for _ in range(n)]
    bools = [draw(maybe(st.booleans())) for _ in range(n)]
    instants = [draw(maybe(st.one_of(st.sampled_from(INSTANT_EDGES), st.integers(0, NS_HIGH), st.integers(MIN_US - DAY_US, MAX_US + DAY_US))))
                for _ in range(n)]
    nanos = [draw(st.integers(0, 999)) for _ in range(n)]
    days = [draw(maybe(st.one_of(st.sampled_from(INSTANT_EDGES), st.integers(MIN_US - DAY_US, MAX_US + DAY_US))))
            for _ in range(n)]
    frame = pd.DataFrame({
        "k": range(n),
        "ks": pd.Series(keys, dtype=object),
        # Python ints with None: what an asset builds from records (never through float64)
        "i": pd.Series(ints, dtype=object) if draw(st.booleans()) else pd.array(ints, dtype="Int64"),
        "f": pd.Series(floats, dtype=object) if draw(st.booleans()) else pd.Series(floats, dtype="float64"),
        "s": pd.Series(strings, dtype=object),
        "b": pd.Series(bools, dtype=object),
        "d": _instants(days, [0] * n, draw(st.sampled_from([None, "UTC", "Asia/Tokyo", "America/New_York"]))),
        "t": _instants(instants, nanos, draw(st.sampled_from([None, "UTC", "Asia/Tokyo", "America/New_York"]))),
        "partition_date": DAY,
    })
    return frame


def _instants(micros: list[int | None], nanos: list[int], zone: str | None) -> pd.Series:
    """Microseconds since the epoch as a datetime column: nanosecond resolution (with `nanos` added) when every
    value fits pandas' nanosecond range, else microseconds; naive (`zone` None) or in that zone."""
    present = [m for m in micros if m is not None]
    if all(NS_LOW <= m <= NS_HIGH for m in present):
        values = np.array([m * 1000 + ns if m is not None else np.iinfo(np.int64).min for m, ns in zip(micros, nanos)])
        series = pd.Series(values.view("datetime64[ns]"))
    else:
        values = np.array([m if m is not None else np.iinfo(np.int64).min for m in micros], dtype=np.int64)
        series = pd.Series(values.view("datetime64[us]"))
        zone = None if zone and any(m < NS_LOW or m > NS_HIGH for m in present) else zone
    return series.dt.tz_localize("UTC").dt.tz_convert(zone) if zone else series


@pytest.fixture
def make_sink(postgres, lake, es):
    def make(kind: str):
        return {
            "postgres": lambda: PostgresTableSink(postgres, "warehouse"),
            "lake": lambda: LakeSink(lake),
            "elasticsearch": lambda: ElasticsearchIndexSink(es, replicas=0),
        }[kind]()

    return make


def assert_round_trip(sink, postgres, frame: pd.DataFrame, target: AssetTarget) -> str:
    """Publish `frame`; either the audit refuses it (naming the column, nothing recorded) or the sink reads back
    the coerced frame with the fingerprint the ledger recorded. Returns "refused" or "published"."""
    expected = DECL.coerce(frame).sort_values(["k"], ignore_index=True)
    try:
        [entry] = publish_partitions(sink, postgres, target, [DAY], frame, uuid.uuid4().hex)
    except AuditError as exc:
        assert exc.column in DECL.names and f"column {exc.column!r}" in str(exc), str(exc)
        assert DAY in str(exc) and target.asset in str(exc)
        with postgres.connect() as conn:
            assert not ledger.ledger_exists(conn) or not ledger.history(conn, asset=target.asset)
        return "refused"
    back = sink.read(target, [DAY]).sort_values(["k"], ignore_index=True)
    pdt.assert_frame_equal(back, expected, check_exact=True)
    # -0.0 and 0.0 are equal to assert_frame_equal: compare the bits
    assert np.array_equal(np.signbit(back["f"].to_numpy()), np.signbit(expected["f"].to_numpy()))
    assert fingerprint(back, DECL) == entry.fingerprint == fingerprint(expected, DECL)
    return "published"


@pytest.mark.parametrize("kind", SINKS)
def test_every_frame_is_read_back_identical_or_refused_by_the_audit(kind, make_sink, postgres):
    sink = make_sink(kind)
    outcomes = []

    @settings(max_examples=EXAMPLES, deadline=None, suppress_health_check=list(HealthCheck), derandomize=True)
    @given(frame=frames())
    def round_trip(frame):
        target = AssetTarget(f"rt_{uuid.uuid4().hex[:10]}", DECL, AuditRules())
        outcomes.append(assert_round_trip(sink, postgres, frame, target))

    round_trip()
    assert "published" in outcomes  # the property is not vacuous: some frames go through


# -- the edge values, one by one ----------------------------------------------------------------------------------

def edge_frame() -> pd.DataFrame:
    """Values every sink holds exactly (each one a row)."""
    ints = [2**63 - 1, -(2**63), 9007199254740993, 2**53, -(2**53) - 1, None, 0, 1]
    n = len(ints)
    return pd.DataFrame({
        "k": range(n),
        "ks": ["", "'", '"', "line\nbreak", "é漢🙂", "a,b", "\\N", "NULL"],
        "i": pd.Series(ints, dtype=object),
        "f": [-0.0, 0.0, float("nan"), None, 5e-324, 1.7976931348623157e308, 0.1, -1.5],
        "s": ["", None, "quote'\"", "\r\n", "tab\t", "x" * 5000, "🙂", " "],
        "b": [True, False, None, True, False, None, True, False],
        "d": ["1970-01-01", "1969-12-31", "0001-01-01", "9999-12-31", None, "2262-04-12", "2026-01-05", "2000-02-29"],
        "t": pd.to_datetime(
            ["2026-01-05T01:02:03.123456789Z", "1970-01-01T00:00:00Z", "2262-04-11T23:47:16.854775Z", None,
             "2026-01-05T23:59:59.999999999+05:30", "1970-01-01T00:00:00.000001Z", "2038-01-19T03:14:08Z",
             "2100-01-01T00:00:00-08:00"], utc=True, format="ISO8601"),
        "partition_date": DAY,
    })


@pytest.mark.parametrize("kind", SINKS)
def test_edge_values_round_trip_exactly(kind, make_sink, postgres):
    target = AssetTarget(f"edges_{uuid.uuid4().hex[:8]}", DECL, AuditRules())
    assert assert_round_trip(make_sink(kind), postgres, edge_frame(), target) == "published"
    back = make_sink(kind).read(target, [DAY]).sort_values("k", ignore_index=True)
    assert back["i"].iloc[2] == 9007199254740993 and back["i"].iloc[0] == 2**63 - 1
    assert str(back["f"].iloc[0]) == "-0.0" and str(back["f"].iloc[1]) == "0.0"
    assert back["t"].iloc[0] == pd.Timestamp("2026-01-05T01:02:03.123456Z")  # nanoseconds floored to microseconds
    assert back["t"].iloc[4] == pd.Timestamp("2026-01-05T18:29:59.999999Z")  # other offsets to UTC


def test_nullable_int64_above_2_53_reads_back_exactly_from_postgres(postgres):
    """The ADBC read: a bigint column with NULLs used to come back through float64 (...993 -> ...992)."""
    sink = PostgresTableSink(postgres, "warehouse")
    target = AssetTarget(f"big_{uuid.uuid4().hex[:8]}", DECL, AuditRules())
    frame = edge_frame()
    frame["i"] = pd.array([9007199254740993, None] * 4, dtype="Int64")
    [entry] = publish_partitions(sink, postgres, target, [DAY], frame, "run-1")
    back = sink.read(target, [DAY])
    assert back["i"].dtype == "Int64" and back["i"].iloc[0] == 9007199254740993
    assert fingerprint(back, DECL) == entry.fingerprint


def test_a_tz_aware_value_in_a_date_column_is_its_utc_date():
    frame = edge_frame()
    frame["d"] = pd.to_datetime(["2026-01-05T08:00:00+09:00"] * len(frame), format="ISO8601")  # 2026-01-04 23:00 UTC
    assert (DECL.coerce(frame)["d"] == pd.Timestamp("2026-01-04")).all()


REFUSALS = [
    # (sink, column, value, rule fragment)
    ("postgres", "s", "a\x00b", "NUL"),
    ("postgres", "ks", "k" * 3_000, "key of at most"),
    ("elasticsearch", "t", pd.Timestamp("1969-07-20T20:17:40Z"), "date_nanos"),
    ("elasticsearch", "t", pd.Timestamp("2262-04-12T00:00:00Z"), "date_nanos"),
    ("elasticsearch", "f", float("inf"), "finite"),
    ("elasticsearch", "s", "y" * 40_000, "keyword"),
    *[(kind, "d", np.datetime64("10000-01-01", "s"), "9999-12-31") for kind in SINKS],
    *[(kind, "t", np.datetime64("10000-01-01T00:00:00", "us"), "9999-12-31") for kind in SINKS],
]


@pytest.mark.parametrize(("kind", "column", "value", "rule"), REFUSALS)
def test_values_a_sink_cannot_hold_are_refused_by_the_audit(kind, column, value, rule, make_sink, postgres):
    frame = DECL.coerce(edge_frame())
    if column == "t" and isinstance(value, np.datetime64):
        frame[column] = pd.Series(np.array([value] * len(frame), dtype="datetime64[us]")).dt.tz_localize("UTC")
    elif column == "d":
        frame[column] = pd.Series(np.array([value] * len(frame), dtype="datetime64[s]"))
    else:
        frame.loc[3, column] = value
    target = AssetTarget(f"refused_{uuid.uuid4().hex[:8]}", DECL, AuditRules())
    with pytest.raises(AuditError) as refused:
        publish_partitions(make_sink(kind), postgres, target, [DAY], frame, "run-1")
    message = str(refused.value)
    assert refused.value.column == column and rule in message
    assert f"asset {target.asset!r}" in message and DAY in message and f"column {column!r}" in message
    assert "e.g." in message and "Traceback" not in message
    with postgres.connect() as conn:
        assert not ledger.ledger_exists(conn) or not ledger.history(conn, asset=target.asset)


# -- fingerprint algorithm ----------------------------------------------------------------------------------------

def test_negative_zero_and_zero_fingerprint_differently():
    frame = DECL.coerce(edge_frame())
    flipped = frame.copy()
    flipped["f"] = flipped["f"].where(flipped["k"] != 0, 0.0)  # -0.0 -> 0.0 in row 0
    assert fingerprint(frame, DECL) != fingerprint(flipped, DECL)


def test_every_ledger_row_records_its_fingerprint_algorithm(postgres, pg_dsn):
    from idem_platform.storage.fingerprint import ALGORITHM, PREVIOUS_ALGORITHM

    target = AssetTarget(f"algo_{uuid.uuid4().hex[:8]}", DECL, AuditRules())
    publish_partitions(PostgresTableSink(postgres, "warehouse"), postgres, target, [DAY], edge_frame(), "run-1")
    with psycopg.connect(pg_dsn) as conn:
        assert conn.execute("SELECT fingerprint_algo FROM idem.ledger").fetchall() == [(ALGORITHM,)]
        assert conn.execute("SELECT obj_description('idem.ledger'::regclass)").fetchone()[0] == ledger.LEDGER_VERSION
        conn.execute("UPDATE idem.ledger SET fingerprint_algo = NULL")  # a row from before v4
        [entry] = ledger.history(conn, asset=target.asset)
    assert entry.fingerprint_algo == PREVIOUS_ALGORITHM


@pytest.mark.parametrize("swap_min_rows", [None, 1], ids=["in place", "swap"])
def test_timestamps_are_the_same_instants_whatever_the_sessions_time_zone(pg_dsn, swap_min_rows):
    """Who else sets how a timestamp is read: the server, the database or the role may give sessions another
    TimeZone than UTC (here +05:45, and a zone with summer time). The rows reach the server as text: each
    instant must land as itself, not shifted by the session's zone, on both write paths; read back by the
    sink and asked of the server in UTC, every value is the frame's."""
    from idem_platform.resources import PostgresResource

    frame = edge_frame()
    expected = DECL.coerce(frame)["t"]
    for zone in ("Asia/Kathmandu", "America/New_York"):
        with psycopg.connect(pg_dsn, autocommit=True) as conn:
            database = conn.info.dbname
            conn.execute(f"ALTER DATABASE {database} SET TimeZone = '{zone}'")
        postgres = PostgresResource(dsn=pg_dsn)
        with postgres.connect() as conn:
            assert conn.execute("SHOW TimeZone").fetchone()[0] == zone
        sink = PostgresTableSink(postgres, "warehouse", swap_min_rows=swap_min_rows)
        target = AssetTarget(f"tz_{uuid.uuid4().hex[:8]}", DECL, AuditRules())
        publish_partitions(sink, postgres, target, [DAY], frame, uuid.uuid4().hex)
        back = sink.read(target, [DAY]).sort_values("k", ignore_index=True)
        pdt.assert_series_equal(back["t"], expected, check_exact=True)
        with psycopg.connect(pg_dsn) as conn:
            on_server = conn.execute(
                f"SELECT to_char(t AT TIME ZONE 'UTC', 'YYYY-MM-DD HH24:MI:SS.US') FROM warehouse.{target.asset} ORDER BY k"
            ).fetchall()
        assert [v for (v,) in on_server] == [None if pd.isna(t) else t.strftime("%Y-%m-%d %H:%M:%S.%f") for t in expected]
