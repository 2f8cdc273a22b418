"""idem_platform: daily-partitioned Dagster assets whose partitions are replaced atomically in every sink."""
