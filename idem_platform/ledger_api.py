"""Reading the ledger from a code location: what was published, when, with which fingerprint.

    published_partitions(postgres, "service_requests", ["2026-01-05"])  # {"2026-01-05": LedgerEntry(...)}
"""

from __future__ import annotations

from collections.abc import Sequence

from .resources import PostgresResource
from .storage import ledger


def published_partitions(
    postgres: PostgresResource, asset: str, days: Sequence[str], sink: str | None = None
) -> dict[str, ledger.LedgerEntry]:
    """The last publish of each of `days` of `asset` (in one sink: `postgres`, `lake`, `elasticsearch`, or any)."""
    with postgres.connect() as conn:
        return ledger.latest_entries(conn, asset, list(days), sink)
