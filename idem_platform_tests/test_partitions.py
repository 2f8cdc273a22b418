import datetime as dt

import pytest

from idem_platform import partitions
from idem_platform.partitions import InvalidPartitionKey


def test_window_is_utc_half_open_day():
    start, end = partitions.partition_window("2026-01-05")
    assert start == dt.datetime(2026, 1, 5, tzinfo=dt.timezone.utc)
    assert end - start == dt.timedelta(days=1)
    assert start.utcoffset() == dt.timedelta(0)


@pytest.mark.parametrize("key", ["2026-1-5", "20260105", "2026-02-30", "yesterday", "", "2026-01-05 ", "2026-01-05;drop"])
def test_malformed_key_is_named_with_valid_range(key):
    first, last = partitions.valid_range()
    with pytest.raises(InvalidPartitionKey) as err:
        partitions.parse_partition_key(key)
    assert repr(key) in str(err.value)
    assert first in str(err.value) and last in str(err.value)


@pytest.mark.parametrize("key", ["1999-12-31", "2999-01-01"])
def test_out_of_range_key_is_named_with_valid_range(key):
    with pytest.raises(InvalidPartitionKey, match=f"'{key}' is outside its partitions"):
        partitions.parse_partition_key(key)


def test_last_partition_is_yesterday():
    first, last = partitions.valid_range()
    assert first == partitions.settings.current().partitions_start
    assert last == (dt.datetime.now(dt.timezone.utc).date() - dt.timedelta(days=1)).isoformat()


def test_days_between_and_last_n_days():
    assert partitions.days_between("2026-01-30", "2026-02-02") == ["2026-01-30", "2026-01-31", "2026-02-01", "2026-02-02"]
    with pytest.raises(InvalidPartitionKey, match="ends before it starts"):
        partitions.days_between("2026-01-02", "2026-01-01")
    assert partitions.last_n_days(3, today=dt.date(2026, 3, 1)) == ["2026-02-26", "2026-02-27", "2026-02-28"]
