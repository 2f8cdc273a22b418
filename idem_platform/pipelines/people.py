"""The people pipeline (the textbook's example): Faker records -> lake -> PostgreSQL -> Elasticsearch.

`raw_people` is generated with Faker seeded from (asset, partition), so a day always yields the same people,
in any process; its rows carry the messiness a real export has (stray spaces, mixed case, US-style dates,
phone numbers in several formats). `people` cleans and types them.
"""


import datetime as dt

import dagster as dg
import pandas as pd
from faker import Faker

from idem_platform import follows_upstream_content, idem_asset, partition_seed, partition_window, settings

RAW_PEOPLE_COLUMNS = {
    "person_id": "string",
    "first_name": "string",
    "last_name": "string",
    "email": "string",
    "phone": "string",
    "birth_date": "string",
    "city": "string",
    "state": "string",
    "created_at": "timestamp",
}

PEOPLE_COLUMNS = {
    "person_id": "string",
    "first_name": "string",
    "last_name": "string",
    "full_name": "string",
    "email": "string",
    "phone_digits": "string",
    "birth_date": "date",
    "age": "int",
    "city": "string",
    "state": "string",
    "created_at": "timestamp",
}


class RawPeopleConfig(dg.Config):
    rows_per_day: int | None = None  # None: IDEM_PEOPLE_PER_DAY (default 1,000)


def generate_people(partition_key: str, rows: int) -> pd.DataFrame:
    """`rows` fake people created during the day `partition_key`; the same arguments give the same frame."""
    fake = Faker("en_US")
    fake.seed_instance(partition_seed("raw_people", partition_key))
    start, _ = partition_window(partition_key)
    # Birth dates relative to the partition day, never to "today": the same day must give the same people forever.
    oldest = start.date() - dt.timedelta(days=int(90 * 365.25))
    youngest = start.date() - dt.timedelta(days=int(18 * 365.25) + 1)
    records = []
    for _ in range(rows):
        first, last = fake.first_name(), fake.last_name()
        if fake.random.random() < 0.1:
            first = f"  {first.upper()} "
        email = fake.email()
        records.append(
            {
                "person_id": fake.uuid4(),
                "first_name": first,
                "last_name": last.lower() if fake.random.random() < 0.1 else last,
                "email": email.upper() if fake.random.random() < 0.1 else email,
                "phone": fake.phone_number(),
                "birth_date": fake.date_between_dates(oldest, youngest).strftime("%m/%d/%Y"),
                "city": fake.city(),
                "state": fake.state_abbr(),
                "created_at": start + dt.timedelta(microseconds=fake.random.randrange(86_400_000_000)),
            }
        )
    frame = pd.DataFrame.from_records(records, columns=list(RAW_PEOPLE_COLUMNS))
    frame["partition_date"] = partition_key
    return frame


@idem_asset(
    columns=RAW_PEOPLE_COLUMNS,
    key=["person_id"],
    io_manager_key="lake_io",
    group_name="people",
    kinds={"python", "parquet"},
    description="Fake people created each day (Faker, seeded by the day): the raw export, as found, in the lake.",
)
def raw_people(context: dg.AssetExecutionContext, config: RawPeopleConfig, day: str) -> pd.DataFrame:
    rows = config.rows_per_day if config.rows_per_day is not None else settings.current().people_per_day
    return generate_people(day, rows)


def clean_people(raw: pd.DataFrame) -> pd.DataFrame:
    """Trim and case names, lower-case emails, keep phone digits, parse US dates, derive age at the partition day."""
    first = raw["first_name"].str.strip().str.title()
    last = raw["last_name"].str.strip().str.title()
    birth = pd.to_datetime(raw["birth_date"], format="%m/%d/%Y")
    day = raw["partition_date"]
    had_birthday = (day.dt.month > birth.dt.month) | ((day.dt.month == birth.dt.month) & (day.dt.day >= birth.dt.day))
    return pd.DataFrame(
        {
            "person_id": raw["person_id"],
            "first_name": first,
            "last_name": last,
            "full_name": first + " " + last,
            "email": raw["email"].str.strip().str.lower(),
            "phone_digits": raw["phone"].str.split("x").str[0].str.replace(r"\D", "", regex=True),
            "birth_date": birth,
            "age": day.dt.year - birth.dt.year - (~had_birthday).astype(int),
            "city": raw["city"],
            "state": raw["state"],
            "created_at": raw["created_at"],
            "partition_date": day,
        }
    )


@idem_asset(
    columns=PEOPLE_COLUMNS,
    key=["person_id"],
    io_manager_key="warehouse_io",
    same_rows_as="raw_people",
    group_name="people",
    kinds={"python", "postgres"},
    description="People typed and cleaned, one row per person, in the warehouse (PostgreSQL).",
)
def people(context: dg.AssetExecutionContext, raw_people: pd.DataFrame) -> pd.DataFrame:
    return clean_people(raw_people)


@idem_asset(
    columns=PEOPLE_COLUMNS,
    key=["person_id"],
    io_manager_key="search_io",
    same_rows_as="people",
    group_name="people",
    kinds={"elasticsearch"},
    automation_condition=follows_upstream_content(),
    description="People searchable by day: one physical index per day behind the `people-YYYY.MM.DD` day alias "
    "and the `people_search` read alias, swapped atomically on each write.",
)
def people_search(context: dg.AssetExecutionContext, people: pd.DataFrame) -> pd.DataFrame:
    return people
