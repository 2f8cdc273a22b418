"""Deterministic seeds: the same (asset, partition) gives the same number in every process.

Python's `hash()` is salted per process (PYTHONHASHSEED), so seeds come from SHA-256 instead.
"""

from __future__ import annotations

import hashlib


def partition_seed(asset: str, partition_key: str, *extra: str) -> int:
    digest = hashlib.sha256("|".join((asset, partition_key, *extra)).encode()).digest()
    return int.from_bytes(digest[:8], "big")
