"""The upstream frames a per-day asset function sees for each day of a range run.

A function with a `day` parameter is called once per day. In a one-day run its inputs are what Dagster loaded for
that day. In a range run Dagster loads each input once for the whole range, so the platform cuts it back to what
the input's partition mapping maps *that one day* to: the identity mapping gives the day's own rows, an offset
mapping (`TimeWindowPartitionMapping(start_offset=-1, end_offset=-1)`) the previous day's rows, a self-dependency
the previous day as this run computed it (or as it is published, for the day before the range). Cutting to the
day's own rows regardless of the mapping would hand a lagged or self-dependent function nothing but the first day.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence

import dagster as dg
import pandas as pd

from .storage.schema import PARTITION_COLUMN


def _rows_of(value: pd.DataFrame, days: Sequence[str]) -> pd.DataFrame:
    stamps = pd.to_datetime(value[PARTITION_COLUMN])
    return value[stamps.isin(pd.to_datetime(list(days)))].reset_index(drop=True)


class DayInputs:
    """Per-day arguments of a per-day asset function in a range run (see the module docstring)."""

    def __init__(self, context: dg.AssetExecutionContext, days_def: dg.DailyPartitionsDefinition,
                 arguments: Mapping[str, object], as_loaded: Callable[[pd.DataFrame], pd.DataFrame]) -> None:
        self._arguments = dict(arguments)
        self._own_key = context.asset_key
        self._as_loaded = as_loaded
        self._computed: dict[str, pd.DataFrame] = {}
        self._mapped: dict[str, Callable[[str], list[str]]] = {}
        self._self_input: str | None = None
        input_keys = context.assets_def.keys_by_input_name
        for name, value in self._arguments.items():
            if name not in input_keys or not isinstance(value, pd.DataFrame) or PARTITION_COLUMN not in value:
                continue  # config, a resource, an unpartitioned or non-frame input: passed as it is
            upstream_key = context.asset_key_for_input(name)
            try:
                upstream_def = context.asset_partitions_def_for_input(name)
            except dg.DagsterInvariantViolationError:  # an unpartitioned upstream: the same frame every day
                continue
            mapping = context.assets_def.infer_partition_mapping(self._own_key, upstream_key, upstream_def)
            self._mapped[name] = self._mapper(mapping, days_def, upstream_def)
            if upstream_key == self._own_key:
                self._self_input = name

    @staticmethod
    def _mapper(mapping, days_def, upstream_def) -> Callable[[str], list[str]]:
        def mapped(day: str) -> list[str]:
            result = mapping.get_upstream_mapped_partitions_result_for_partitions(
                days_def.subset_with_partition_keys([day]), days_def, upstream_def
            )
            return list(result.partitions_subset.get_partition_keys())

        return mapped

    def for_day(self, day: str) -> dict[str, object]:
        """The arguments of `day`'s call: each mapped input cut to the days its mapping maps `day` to."""
        out = dict(self._arguments)
        for name, mapped in self._mapped.items():
            upstream_days = mapped(day)
            loaded = _rows_of(self._arguments[name], upstream_days)
            if name == self._self_input:
                # A day this run already computed replaces what was published before the run.
                fresh = [self._computed[d] for d in upstream_days if d in self._computed]
                kept = loaded[~pd.to_datetime(loaded[PARTITION_COLUMN]).isin(pd.to_datetime(list(self._computed)))]
                loaded = pd.concat([kept, *fresh], ignore_index=True) if fresh else loaded
            out[name] = loaded
        return out

    @property
    def keeps_computed(self) -> bool:
        """Whether a later day reads an earlier day's frame of this run (a self-dependency): `computed` needs each
        day's frame as it is published, `partition_date` filled."""
        return self._self_input is not None

    def computed(self, day: str, frame: pd.DataFrame) -> None:
        """Remember `day`'s frame, as a later day of a self-dependency would have loaded it."""
        if self._self_input is not None:
            self._computed[day] = self._as_loaded(frame)
