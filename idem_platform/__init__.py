"""idem_platform: daily-partitioned Dagster assets whose partitions are replaced atomically in every sink.

The public API, enough for a whole code location (see the README's "Your own assets"):

    from idem_platform import idem_asset, idem_definitions

    @idem_asset(columns={"id": "int", "v": "string"}, key=["id"], io_manager_key="warehouse_io", start="2025-01-01")
    def numbers(context, day: str) -> pd.DataFrame: ...

    defs = idem_definitions(assets=[numbers])

Everything else in the package is the platform's own and may change.
"""

from . import settings
from .automation import follows_upstream_content
from .checks import checks_for
from .code_location import LAKE_IO, POSTGRES, SEARCH_IO, WAREHOUSE_IO, idem_definitions, platform_resources
from .declare import DeclarationError, idem_asset
from .partitions import (
    InvalidPartitionKey,
    daily_partitions,
    days_between,
    last_n_days,
    parse_partition_key,
    parse_range,
    partition_window,
    valid_range,
)
from .resources import LakeResource, PostgresResource, ServiceNotFound
from .seeding import partition_seed
from .storage.audit import AuditError
from .storage.elasticsearch_store import ElasticsearchPartitionIOManager
from .storage.lake_store import LakePartitionIOManager
from .storage.ledger import LedgerEntry
from .storage.partition_store import LockWaitTimeout, PartitionLockLost
from .storage.postgres_store import PostgresPartitionIOManager
from .storage.schema import Column, SchemaError
from .storage.search_client import ElasticsearchResource, UnsupportedSearchCluster
from .ledger_api import published_partitions
from .verification import PartitionVerdict, verify_job, verify_partitions

__all__ = [
    "AuditError",
    "Column",
    "DeclarationError",
    "ElasticsearchPartitionIOManager",
    "ElasticsearchResource",
    "InvalidPartitionKey",
    "LAKE_IO",
    "LakePartitionIOManager",
    "LakeResource",
    "LedgerEntry",
    "LockWaitTimeout",
    "POSTGRES",
    "PartitionLockLost",
    "PartitionVerdict",
    "PostgresPartitionIOManager",
    "PostgresResource",
    "SEARCH_IO",
    "SchemaError",
    "ServiceNotFound",
    "UnsupportedSearchCluster",
    "WAREHOUSE_IO",
    "checks_for",
    "daily_partitions",
    "days_between",
    "follows_upstream_content",
    "idem_asset",
    "idem_definitions",
    "last_n_days",
    "parse_partition_key",
    "parse_range",
    "partition_seed",
    "partition_window",
    "platform_resources",
    "published_partitions",
    "settings",
    "valid_range",
    "verify_job",
    "verify_partitions",
]
