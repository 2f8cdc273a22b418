"""`@idem_asset`: idempotency by declaration, one decorator per asset.

    @idem_asset(columns={"person_id": "string", ...}, key=["person_id"], io_manager_key="warehouse_io")
    def people(context, raw_people: pd.DataFrame) -> pd.DataFrame:
        return clean(raw_people)

wraps `@dg.asset` with what every asset of the platform needs:

- an owner (`IDEM_DEFAULT_OWNER`, default `team:data-platform`) unless the asset names its own;
- the daily partitions and `BackfillPolicy.single_run()` (so `--partition-range` runs are one run);
- the declared columns as Dagster `TableSchema` metadata (the stores build DDL and mappings from it), the key and
  the audit bounds as metadata;
- the returned frame coerced to the declared dtypes and fingerprinted once per day; the digests travel to the
  IO manager on the frame (`DataFrame.attrs`) so nothing is hashed twice;
- `same_rows_as=<upstream>`: a generated check that each day has as many rows as the upstream's day;
- the fingerprint as the output's `DataVersion` (for a range run, Dagster stamps one version on every partition
  of the range: the fingerprint of the whole range; per-day fingerprints are exact in metadata and the ledger).
"""

from __future__ import annotations

import functools
import inspect
import os
from collections.abc import Callable, Mapping, Sequence

import dagster as dg
import pandas as pd

from .partitions import daily_partitions, validate_partition_keys
from .storage.audit import AuditRules
from .storage.fingerprint import combine, partition_digests
from .storage.partition_store import (
    AUDIT_METADATA,
    DIGESTS_ATTR,
    KEY_METADATA,
    SAME_ROWS_METADATA,
    SCHEMA_METADATA,
)
from .storage.schema import Column, TableDeclaration


DEFAULT_OWNERS = [os.environ.get("IDEM_DEFAULT_OWNER", "team:data-platform")]


def idem_asset(
    *,
    columns: Mapping[str, str] | Sequence[Column],
    key: Sequence[str],
    io_manager_key: str,
    min_rows: int | None = None,
    max_rows: int | None = None,
    same_rows_as: str | None = None,
    metadata: Mapping[str, object] | None = None,
    **asset_kwargs,
) -> Callable[[Callable[..., pd.DataFrame]], dg.AssetsDefinition]:
    """Declare a daily-partitioned asset whose partitions are replaced atomically in its sink."""
    decl = TableDeclaration.build(columns, key)
    rules = AuditRules(min_rows=min_rows, max_rows=max_rows)
    asset_kwargs.setdefault("owners", DEFAULT_OWNERS)

    def decorator(fn: Callable[..., pd.DataFrame]) -> dg.AssetsDefinition:
        asset_name = asset_kwargs.get("name") or fn.__name__

        @functools.wraps(fn)
        def compute(context: dg.AssetExecutionContext, *args, **kwargs):
            days = list(context.partition_keys)
            validate_partition_keys(days)
            context.log.info(f"{asset_name}: computing {len(days)} partition(s) {days[0]}..{days[-1]}")
            frame = decl.coerce(fn(context, *args, **kwargs), what=f"the frame returned by asset {asset_name!r}")
            digests = partition_digests(frame, decl, days)
            frame.attrs[DIGESTS_ATTR] = digests
            total = combine(list(digests.values()))
            return dg.Output(frame, data_version=dg.DataVersion(total.fingerprint))

        # Dagster reads inputs and config from the user's signature; the output is an Output[DataFrame].
        compute.__signature__ = inspect.signature(fn).replace(return_annotation=dg.Output[pd.DataFrame])

        return dg.asset(
            partitions_def=daily_partitions,
            backfill_policy=dg.BackfillPolicy.single_run(),
            io_manager_key=io_manager_key,
            metadata={
                **(metadata or {}),
                SCHEMA_METADATA: decl.table_schema(),
                KEY_METADATA: list(decl.key),
                AUDIT_METADATA: rules.as_metadata(),
                **({SAME_ROWS_METADATA: same_rows_as} if same_rows_as else {}),
            },
            **asset_kwargs,
        )(compute)

    return decorator
