"""Declared column schemas: the one description of an asset's table that every sink and the fingerprint share.

An asset declares its columns with six logical types. From that declaration come the Dagster `TableSchema`
(shown in the UI), the PostgreSQL DDL, the Elasticsearch mapping and the canonical pandas dtypes. Every frame
that enters or leaves a sink goes through `TableDeclaration.coerce`, so the same content has the same dtypes,
and therefore the same fingerprint, whether it came from the asset function, a lake file, a table or an index.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field

import dagster as dg
import numpy as np
import pandas as pd

PARTITION_COLUMN = "partition_date"


@dataclass(frozen=True)
class LogicalType:
    name: str
    postgres: str
    pandas_dtype: str
    elasticsearch: dict


LOGICAL_TYPES: dict[str, LogicalType] = {
    t.name: t
    for t in (
        LogicalType("string", "text", "string", {"type": "keyword"}),
        LogicalType("int", "bigint", "Int64", {"type": "long"}),
        LogicalType("float", "double precision", "float64", {"type": "double"}),
        LogicalType("bool", "boolean", "boolean", {"type": "boolean"}),
        # Dates are midnight-naive datetimes at second resolution: pandas has no date dtype of its own.
        LogicalType("date", "date", "datetime64[s]", {"type": "date", "format": "strict_date"}),
        # Timestamps are UTC at microsecond resolution, the precision PostgreSQL keeps.
        LogicalType(
            "timestamp", "timestamptz", "datetime64[us, UTC]",
            {"type": "date_nanos", "format": "strict_date_optional_time_nanos"},
        ),
    )
}


class SchemaError(ValueError):
    """A frame or table that does not match the asset's declared columns."""


@dataclass(frozen=True)
class Column:
    name: str
    type: str
    nullable: bool = True
    description: str = ""

    def __post_init__(self):
        if self.type not in LOGICAL_TYPES:
            raise SchemaError(
                f"column {self.name!r} has type {self.type!r}; declared types are {sorted(LOGICAL_TYPES)}"
            )

    @property
    def logical(self) -> LogicalType:
        return LOGICAL_TYPES[self.type]


@dataclass(frozen=True)
class TableDeclaration:
    """Columns (in table order) and the key that identifies a row within a day partition."""

    columns: tuple[Column, ...]
    key: tuple[str, ...]
    description: str = ""
    _by_name: Mapping[str, Column] = field(init=False, repr=False, compare=False)

    def __post_init__(self):
        names = [c.name for c in self.columns]
        if len(set(names)) != len(names):
            raise SchemaError(f"duplicate column names in {names}")
        if PARTITION_COLUMN not in names:
            raise SchemaError(f"every partitioned table needs a {PARTITION_COLUMN!r} column of type date")
        missing = [k for k in self.key if k not in names]
        if missing or not self.key:
            raise SchemaError(f"key columns {list(self.key)} must be declared columns (missing: {missing})")
        object.__setattr__(self, "_by_name", {c.name: c for c in self.columns})

    @classmethod
    def build(cls, columns: Mapping[str, str] | Iterable[Column], key: Iterable[str], description: str = ""):
        """Declare from `{"name": "type"}` (key columns and partition_date become NOT NULL) or Columns."""
        key = tuple(key)
        if isinstance(columns, Mapping):
            cols = [Column(n, t, nullable=n not in key) for n, t in columns.items()]
        else:
            cols = list(columns)
        if PARTITION_COLUMN not in {c.name for c in cols}:
            cols.append(Column(PARTITION_COLUMN, "date", nullable=False, description="the day partition"))
        return cls(tuple(cols), key, description)

    @property
    def partition_key(self) -> tuple[str, ...]:
        """What identifies a row in the table: the day, then the declared key (which may itself name the day)."""
        return (PARTITION_COLUMN, *(k for k in self.key if k != PARTITION_COLUMN))

    @property
    def names(self) -> list[str]:
        return [c.name for c in self.columns]

    def column(self, name: str) -> Column:
        return self._by_name[name]

    def table_schema(self) -> dg.TableSchema:
        """The Dagster TableSchema shown on the asset page (and the source of the DDL)."""
        return dg.TableSchema(
            columns=[
                dg.TableColumn(
                    c.name,
                    c.type,
                    description=c.description or None,
                    constraints=dg.TableColumnConstraints(nullable=c.nullable, unique=False),
                )
                for c in self.columns
            ],
            constraints=dg.TableConstraints(other=[f"primary key ({', '.join(self.partition_key)})"]),
        )

    @classmethod
    def from_table_schema(cls, schema: dg.TableSchema, key: Iterable[str]) -> TableDeclaration:
        cols = [
            Column(c.name, c.type, nullable=c.constraints.nullable, description=c.description or "")
            for c in schema.columns
        ]
        return cls(tuple(cols), tuple(key))

    def empty_frame(self) -> pd.DataFrame:
        return self.coerce(pd.DataFrame({n: [] for n in self.names}))

    def coerce(self, frame: pd.DataFrame, *, what: str = "frame") -> pd.DataFrame:
        """The frame with exactly the declared columns, in order, in the canonical dtypes.

        Missing or undeclared columns and values that cannot be cast are errors naming the column: a silent
        drop would lose data, a silent cast would change what is published.

        A frame that is already canonical (`is_canonical`) is returned itself, not a copy: the result may be
        the caller's frame, so it is never modified in place.
        """
        missing = [n for n in self.names if n not in frame.columns]
        extra = [n for n in frame.columns if n not in self._by_name]
        if missing or extra:
            raise SchemaError(
                f"{what} does not match the declared columns: missing {missing}, undeclared {extra}"
                " (declare new columns on the asset; they are added to the table as nullable columns)"
            )
        if self.is_canonical(frame):
            return frame  # already what the casts below would produce: no copy of every column
        out = {}
        for col in self.columns:
            series = frame[col.name]
            if _is_canonical_column(series, col.type):  # what _cast would return: the values as they are
                out[col.name] = series.reset_index(drop=True)
                continue
            try:
                out[col.name] = _cast(series, col.type)
            except (TypeError, ValueError, OverflowError) as exc:
                raise SchemaError(f"{what}: column {col.name!r} cannot be read as {col.type}: {exc}") from exc
        # copy=False: the columns are not consolidated into 2-D blocks (pandas would copy every float, int and
        # datetime column into one array per dtype: 0.3 s of a 1M-row, 20-column frame). Copy-on-write (always on
        # since pandas 3) keeps the caller's frame and this one apart where they share a column.
        return pd.DataFrame(out, index=pd.RangeIndex(len(frame)), copy=False)

    def is_canonical(self, frame: pd.DataFrame) -> bool:
        """Whether `coerce` would return an equal frame: then it returns the frame itself.

        Canonical is what the cast path builds: exactly the declared columns in order (a column index of the
        same dtype, unnamed), a default unnamed RangeIndex, no `attrs`, every column of exactly its canonical
        dtype (`_cast` returns a column of that dtype unchanged) and dates at midnight (`_cast` floors them).
        """
        if (
            frame.attrs
            or not frame.flags.allows_duplicate_labels
            or list(frame.columns) != self.names
            or frame.columns.name is not None
            or frame.columns.dtype != pd.Index(self.names).dtype
            or not isinstance(frame.index, pd.RangeIndex)
            or frame.index.start != 0
            or frame.index.step != 1
            or frame.index.name is not None
        ):
            return False
        return all(_is_canonical_column(frame[col.name], col.type) for col in self.columns)


def canonical_dtype(type_name: str):
    """The pandas dtype `_cast` gives a column of a logical type (resolved now: "string" follows pandas' options)."""
    return pd.api.types.pandas_dtype(LOGICAL_TYPES[type_name].pandas_dtype)


def _is_canonical_column(series: pd.Series, type_name: str) -> bool:
    """Whether `_cast` would return the column's values unchanged: exactly the canonical dtype, and for dates
    every value at midnight (`_cast` floors them)."""
    if not _is_canonical_dtype(series.dtype, type_name):
        return False
    if type_name == "date":
        values = series.to_numpy()  # datetime64[s]: a view, no copy
        seconds = values.view("int64")[~np.isnat(values)]
        if (seconds % 86_400).any():
            return False
    return True


def _is_canonical_dtype(dtype, type_name: str) -> bool:
    """Exactly the canonical dtype: equal, same class, same string storage and NA value, same tz object type.

    `==` alone is too lax: pandas treats `datetime64[us, UTC]` with a ZoneInfo("UTC") tz as equal to the
    canonical one (whose tz `_cast` rewrites to `datetime.timezone.utc`).
    """
    expected = canonical_dtype(type_name)
    return (
        type(dtype) is type(expected)
        and dtype == expected
        and repr(dtype) == repr(expected)
        and getattr(dtype, "storage", None) == getattr(expected, "storage", None)
        and repr(getattr(dtype, "na_value", None)) == repr(getattr(expected, "na_value", None))
        and repr(getattr(dtype, "tz", None)) == repr(getattr(expected, "tz", None))
    )


def _cast(series: pd.Series, type_name: str) -> pd.Series:
    series = series.reset_index(drop=True)
    if type_name == "string":
        return series.astype("string")
    if type_name == "int":
        if series.dtype == object:
            return _exact_ints(series)
        return series.astype("Int64")
    if type_name == "float":
        return pd.to_numeric(series, errors="raise").astype("float64")
    if type_name == "bool":
        return series.astype("boolean")
    if type_name == "date":
        values = _days_parsed(series)
        if getattr(values.dt, "tz", None) is not None:
            values = values.dt.tz_convert("UTC").dt.tz_localize(None)
        # to seconds first (a cast floors), then to the day: flooring nanoseconds near 1677 would overflow
        return values.astype("datetime64[s]").dt.floor("D")
    if type_name == "timestamp":
        # Naive timestamps are taken as UTC; aware ones are converted.
        values = pd.to_datetime(series, utc=True, errors="raise", format=_datetime_format(series))
        return values.astype("datetime64[us, UTC]")  # the cast floors to microseconds (never overflows near 1677)
    raise SchemaError(f"unknown logical type {type_name!r}")


def _exact_ints(series: pd.Series) -> pd.Series:
    """An object column (Python ints, None, numeric text, integral floats) as Int64, value by value, never through
    float64 (which rounds every integer above 2**53: 9007199254740993 -> ...992). A float or numeric text that is
    not an integer (1.5, "nan" is a null only as a float) is an error, as is a value outside int64."""
    values = series.to_numpy()
    mask = pd.isna(series).to_numpy()
    out = np.zeros(len(values), dtype=np.int64)
    for i in np.flatnonzero(~mask):
        out[i] = _exact_int(values[i])
    return pd.Series(pd.arrays.IntegerArray(out, mask), index=series.index)


def _exact_int(value) -> int:
    if isinstance(value, (int, np.integer)):  # bool is an int
        return int(value)
    if isinstance(value, str):
        try:
            return int(value)
        except ValueError:
            value = float(value)
    if isinstance(value, (float, np.floating)) and float(value).is_integer():
        return int(value)
    raise ValueError(f"{value!r} is not an exact integer")


def _days_parsed(series: pd.Series) -> pd.Series:
    """`pd.to_datetime` of a date column, text parsed once per distinct value: a day column repeats a few values
    (365,000 rows of 365 days: 0.045 -> 0.007 s). Values that do not parse are parsed again the plain way, so the
    error names the row's position as pandas names it."""
    format_ = _datetime_format(series)
    if format_ is None:
        return pd.to_datetime(series, errors="raise")
    codes, distinct = pd.factorize(series)
    try:
        parsed = pd.DatetimeIndex(pd.to_datetime(pd.Series(distinct, dtype=object), errors="raise", format=format_))
    except (TypeError, ValueError, OverflowError):
        return pd.to_datetime(series, errors="raise", format=format_)
    return pd.Series(parsed.take(codes, allow_fill=True, fill_value=pd.NaT), index=series.index)


def _datetime_format(series: pd.Series) -> str | None:
    """Text is read as ISO 8601 (any precision, any offset); datetime objects need no format."""
    return "ISO8601" if (series.dtype == object or pd.api.types.is_string_dtype(series.dtype)) else None
