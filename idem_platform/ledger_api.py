"""Reading the ledger from a code location: what was published, when, with which fingerprint.

    published_partitions(postgres, "service_requests", ["2026-01-05"])  # {"2026-01-05": LedgerEntry(...)}
    published_partitions(postgres, "service_requests", days, "postgres", "warehouse.service_requests")

The ledger may be shared by deployments that write the same asset into different stores (warehouse schemas, lake
roots): to read your own deployment's publishes, name the store your IO manager writes the asset to
(`PostgresPartitionIOManager(...).store_of(assets_def)`).
"""

from __future__ import annotations

from collections.abc import Sequence

from .resources import PostgresResource
from .storage import ledger


def published_partitions(
    postgres: PostgresResource, asset: str, days: Sequence[str], sink: str | None = None, store: str | None = None
) -> dict[str, ledger.LedgerEntry]:
    """The last publish of each of `days` of `asset` (in one sink: `postgres`, `lake`, `elasticsearch`, or any; in
    one store, e.g. `warehouse.service_requests`, or any: then possibly another deployment's on a shared ledger)."""
    with postgres.connect() as conn:
        return ledger.latest_entries(conn, asset, list(days), sink, store)
