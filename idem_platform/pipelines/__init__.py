"""Example pipelines, written only against the public API (`from idem_platform import ...`)."""
