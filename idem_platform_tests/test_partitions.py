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


@pytest.mark.parametrize("text", ["2026-01-01...2026-01-07", "[2026-01-01...2026-01-07]", " [ 2026-01-01...2026-01-07 ] "])
def test_one_range_syntax_the_cli_s_and_the_dagster_ui_s(text):
    assert partitions.parse_range(text) == ("2026-01-01", "2026-01-07")


@pytest.mark.parametrize("text", ["2026-01-01", "2026-01-01..2026-01-07", "[...2026-01-07]", "2026-01-01-2026-01-07"])
def test_a_range_of_another_form_is_named(text):
    with pytest.raises(InvalidPartitionKey, match="is not of the form A...B"):
        partitions.parse_range(text)


def test_every_place_that_takes_a_range_says_both_forms():
    """verify_job's config (the Launchpad shows each field's description) and every `--range` of the command line."""
    import argparse

    from idem_platform.cli import build_parser
    from idem_platform.verification import verify_job

    fields = verify_job.graph.node_defs[0].config_schema.config_type.fields
    assert all(field.description for field in fields.values()), {n: f.description for n, f in fields.items()}
    assert "`A...B`" in fields["partition_range"].description and "`[A...B]`" in fields["partition_range"].description

    helps = []

    def walk(parser: argparse.ArgumentParser) -> None:
        for action in parser._actions:
            if "--range" in action.option_strings:
                helps.append(action.help)
            if isinstance(action, argparse._SubParsersAction):
                for sub in action.choices.values():
                    walk(sub)

    walk(build_parser())
    assert len(helps) >= 3 and all("A...B" in h and "[A...B]" in h for h in helps), helps
