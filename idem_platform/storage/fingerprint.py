"""Content fingerprints: an order-independent, duplicate-sensitive 64-bit hash of a partition's rows.

Each row is hashed in a canonical form: columns sorted by name, every value hashed by its declared type
(strings as UTF-8 text, integers and booleans as integers, floats by their exact value, -0.0 apart from 0.0
(since algorithm 2, `ALGORITHM`: every sink keeps the sign), dates as seconds and
timestamps as UTC microseconds since the epoch, every null as one marker). The canonical numbers are an exact,
faster equivalent of "UTC ISO text": two timestamps hash equal exactly when their UTC instants are equal.
Row hashes are added modulo 2**64 (never XORed: two equal rows would cancel), so:

- row order does not matter, a duplicated row does;
- the fingerprint of a range is the sum of its days' fingerprints;
- the same content read back from PostgreSQL, Elasticsearch or a lake file gives the same value, because
  every sink's reader returns frames through `TableDeclaration.coerce`.

Strings are hashed from their UTF-8 bytes, read in place from the Arrow buffers (offsets + data) of the
column (pyarrow-backed strings are zero-copy; python-backed ones are converted to Arrow first), so the value
depends only on the text, never on the storage (pyarrow or python strings, string or large_string, chunked or
sliced arrays). A string of n bytes b_0 .. b_{n-1} hashes as

    splitmix64(sum_i (b_i + 1) * K**(i + 1) + n * L)    (mod 2**64, K and L odd 64-bit constants)

a polynomial over the bytes (order-sensitive: "ab" != "ba"; "a" != "a\\x00" since every byte counts at least 1)
with the byte length mixed in, then finalized (splitmix64 is a bijection, so only equal pre-images collide;
the empty string hashes to 0, a null to the null marker). It is computed in numpy, in blocks of about
STRING_BLOCK_BYTES bytes of whole strings: each byte is multiplied by K**(its position in the block + 1), one
`np.add.reduceat` per block sums every non-empty string's bytes (empty strings are set apart: reduceat would
give them the next byte), multiplying by K**-start (K is odd, hence invertible modulo 2**64) turns the block
positions into positions within the string, and sum_{i=1..n} K**i + n * L (the "+ 1" of every byte, and the
length) comes from a table indexed by n. A string longer than a block is summed alone, block-sized piece by
piece (the piece starting at position q scaled by K**q). A polynomial hash modulo 2**64 is not collision-resistant against
crafted input (e.g. Thue-Morse strings); it is a content check, not a security boundary.
Other types are hashed by pandas' vectorized `hash_array`; the rest is a handful of numpy operations per column.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import pandas as pd
import pyarrow as pa
from pandas.util import hash_array

from .schema import PARTITION_COLUMN, TableDeclaration

# The version of the canonical form below, recorded with every ledger row (`fingerprint_algo`). A ledger row
# without one was made by algorithm 1, which hashed -0.0 as 0.0; algorithm 2 tells them apart (as every sink
# does) and hashes every other value as algorithm 1 did. Bump it with any change to a value's hash.
ALGORITHM = "2"
PREVIOUS_ALGORITHM = "1"  # what a ledger row from before `fingerprint_algo` was recorded with
_NULL_HASH = np.uint64(0x9E3779B97F4A7C15)
_NEGATIVE_ZERO_HASH = np.uint64(0xD6E8FEB86659FD93)
_ROW_PRIME = np.uint64(0x100000001B3)
# String hashing (see the module docstring): odd multipliers, and the bytes hashed per numpy block.
_STRING_K = 0x9FB21C651E98DF25
_STRING_LEN = np.uint64(0xC2B2AE3D27D4EB4F)
STRING_BLOCK_BYTES = 1 << 16
# Rows hashed at a time (128 Ki): the whole-frame temporaries become slice-sized, and slices fit in cache.
HASH_SLICE_ROWS = 131_072


@dataclass(frozen=True)
class PartitionDigest:
    """What one day partition holds: its row count and content fingerprint."""

    rows: int
    fingerprint: str


def _name_hash(name: str) -> np.uint64:
    return hash_array(np.array([name], dtype=object))[0]


def _column_hashes(series: pd.Series, type_name: str) -> np.ndarray:
    null = series.isna().to_numpy()
    if type_name == "string":
        hashes = _string_hashes(series)
    elif type_name in ("int", "bool"):
        hashes = hash_array(series.to_numpy(dtype="int64", na_value=0))
    elif type_name == "float":
        values = series.to_numpy(dtype="float64", na_value=0.0)
        hashes = hash_array(values)  # hash_array hashes -0.0 as 0.0: set it apart (algorithm 2)
        negative_zero = (values == 0.0) & np.signbit(values)
        if negative_zero.any():
            hashes = hashes.copy()
            hashes[negative_zero] = _NEGATIVE_ZERO_HASH
    elif type_name in ("date", "timestamp"):
        if series.dt.tz is not None:
            series = series.dt.tz_convert("UTC").dt.tz_localize(None)
        hashes = hash_array(series.to_numpy().view("int64"))
    else:  # pragma: no cover - TableDeclaration rejects unknown types
        raise ValueError(type_name)
    if null.any():
        hashes = hashes.copy()
        hashes[null] = _NULL_HASH
    return hashes


def _powers(base: int, count: int) -> np.ndarray:
    """base**0 .. base**(count-1) modulo 2**64, as uint64 (by doubling: out[m:2m] = out[:m] * base**m)."""
    out = np.empty(count, dtype=np.uint64)
    out[:1] = 1
    done = 1
    with np.errstate(over="ignore"):
        while done < count:
            more = min(done, count - done)
            np.multiply(out[:more], np.uint64(pow(base, done, 1 << 64)), out=out[done : done + more])
            done += more
    return out


# For strings within a block: K**i, K**-i, and by byte length n: sum_{i=1..n} K**i + n * L (all mod 2**64).
_POW = _powers(_STRING_K, STRING_BLOCK_BYTES + 1)
_INV_POW = _powers(pow(_STRING_K, -1, 1 << 64), STRING_BLOCK_BYTES + 1)
with np.errstate(over="ignore"):
    _BY_LENGTH = np.cumsum(_POW) - np.uint64(1) + np.arange(STRING_BLOCK_BYTES + 1, dtype=np.uint64) * _STRING_LEN


def _long_string_sum(data: np.ndarray) -> np.uint64:
    """sum_i (b_i + 1) * K**(i + 1) + n * L of one string longer than a block, one block-sized piece at a time."""
    total, scale, mask = 0, 1, (1 << 64) - 1
    piece_scale = pow(_STRING_K, STRING_BLOCK_BYTES, 1 << 64)  # piece j starts at position j * block
    with np.errstate(over="ignore"):
        for start in range(0, len(data), STRING_BLOCK_BYTES):
            piece = data[start : start + STRING_BLOCK_BYTES].astype(np.uint64) + np.uint64(1)
            piece *= _POW[1 : len(piece) + 1]
            total = (total + scale * int(piece.sum(dtype=np.uint64))) & mask
            scale = (scale * piece_scale) & mask
    return np.uint64((total + len(data) * int(_STRING_LEN)) & mask)


def _arrow_string_chunks(series: pd.Series) -> list[pa.Array]:
    """The column's values as Arrow string or large_string arrays (zero-copy for pyarrow-backed strings)."""
    values = series.array if isinstance(series.dtype, pd.StringDtype) else series.astype("string").array
    arrow = values.__arrow_array__() if hasattr(values, "__arrow_array__") else pa.array(values, from_pandas=True)
    chunks = arrow.chunks if isinstance(arrow, pa.ChunkedArray) else [arrow]
    return [c if c.type in (pa.string(), pa.large_string()) else c.cast(pa.large_string()) for c in chunks]


def _string_hashes(series: pd.Series) -> np.ndarray:
    """One hash per value of a string column (nulls are left to the caller: their hash is arbitrary)."""
    return _arrow_string_hashes(_arrow_string_chunks(series), len(series))


def _arrow_string_hashes(chunks: list[pa.Array], rows: int) -> np.ndarray:
    """One hash per value of consecutive Arrow string or large_string arrays (`rows` values in all)."""
    out = np.empty(rows, dtype=np.uint64)
    at = 0
    for chunk in chunks:
        n = len(chunk)
        if n:
            offset_type = np.int64 if chunk.type == pa.large_string() else np.int32
            _, offset_buffer, data_buffer = chunk.buffers()
            offsets = np.frombuffer(offset_buffer, dtype=offset_type)[chunk.offset : chunk.offset + n + 1].astype(np.int64)
            data = np.frombuffer(data_buffer, dtype=np.uint8) if data_buffer is not None else np.empty(0, np.uint8)
            _hash_utf8(data, offsets, out[at : at + n])
        at += n
    return out


def _hash_utf8(data: np.ndarray, offsets: np.ndarray, out: np.ndarray) -> None:
    """Hashes of the strings data[offsets[j]:offsets[j+1]] into out[j], a block of about STRING_BLOCK_BYTES at a time.

    sum_i (b_i + 1) * K**(i + 1) is computed as sum_i b_i * K**(i + 1) (one multiply per byte, with the byte
    weighted by its position in the block, then one sum per string) + sum_{i=1..n} K**i (by length).
    """
    n = len(offsets) - 1
    first = 0
    weighted = np.empty(STRING_BLOCK_BYTES, dtype=np.uint64)
    with np.errstate(over="ignore"):
        while first < n:
            base = offsets[first]
            # the strings that end within the block's bytes (at least one, however long)
            last = max(int(np.searchsorted(offsets, base + STRING_BLOCK_BYTES, side="right")) - 1, first + 1)
            size = int(offsets[last] - base)
            if size > STRING_BLOCK_BYTES:  # one string longer than a block
                out[first] = _splitmix64(np.array([_long_string_sum(data[base : base + size])]))[0]
                first = last
                continue
            block = weighted[:size]
            np.multiply(data[base : base + size], _POW[1 : size + 1], out=block, dtype=np.uint64)
            starts = offsets[first:last] - base
            lengths = offsets[first + 1 : last + 1] - base - starts
            nonempty = lengths > 0
            if nonempty.all():
                sums = np.add.reduceat(block, starts)
            else:  # reduceat would give an empty string the next byte: sum the non-empty ones only
                sums = np.zeros(last - first, dtype=np.uint64)
                if size:
                    sums[nonempty] = np.add.reduceat(block, starts[nonempty])
            sums *= _INV_POW[starts]  # weights relative to the string's start instead of the block's
            sums += _BY_LENGTH[lengths]
            out[first:last] = _splitmix64(sums)
            first = last


def _splitmix64(x: np.ndarray) -> np.ndarray:
    x = x ^ (x >> np.uint64(30))
    x = x * np.uint64(0xBF58476D1CE4E5B9)
    x = x ^ (x >> np.uint64(27))
    x = x * np.uint64(0x94D049BB133111EB)
    return x ^ (x >> np.uint64(31))


def row_hashes(frame: pd.DataFrame, decl: TableDeclaration) -> np.ndarray:
    """One uint64 per row of a frame already in the declared dtypes (`decl.coerce`).

    Computed in slices of HASH_SLICE_ROWS rows into one preallocated array: a row's hash depends on that row
    only, so the values are those of hashing the whole frame at once, but at most one slice of temporaries
    is alive at a time.
    """
    columns = [(frame[name], decl.column(name).type, _name_hash(name)) for name in sorted(decl.names)]
    out = np.empty(len(frame), dtype=np.uint64)
    for start in range(0, len(frame), HASH_SLICE_ROWS):
        stop = min(start + HASH_SLICE_ROWS, len(frame))
        out[start:stop] = _slice_row_hashes([(series.iloc[start:stop], t, h) for series, t, h in columns], stop - start)
    return out


def _slice_row_hashes(columns: list[tuple[pd.Series, str, np.uint64]], rows: int) -> np.ndarray:
    """Row hashes of one slice: its columns in name order, each with its type and name hash."""
    combined = np.zeros(rows, dtype=np.uint64)
    with np.errstate(over="ignore"):
        for series, type_name, name_hash in columns:
            combined = combined * _ROW_PRIME + (_column_hashes(series, type_name) ^ name_hash)
        return _splitmix64(combined)


def _format(total: np.uint64) -> str:
    return f"{int(total):016x}"


def fingerprint(frame: pd.DataFrame, decl: TableDeclaration) -> str:
    """The fingerprint of all rows of a frame (16 hex digits; an empty frame is all zeros)."""
    with np.errstate(over="ignore"):
        return _format(row_hashes(frame, decl).sum(dtype=np.uint64))


def partition_digests(frame: pd.DataFrame, decl: TableDeclaration, days: list[str]) -> dict[str, PartitionDigest]:
    """Row count and fingerprint of every day in `days` (days without rows get the empty digest)."""
    hashes = row_hashes(frame, decl)
    digests = {day: PartitionDigest(0, _format(np.uint64(0))) for day in days}
    if len(frame):
        # group on the day's raw datetime value; only the distinct days are formatted as keys
        grouped = pd.Series(hashes).groupby(frame[PARTITION_COLUMN].to_numpy(), sort=False)
        with np.errstate(over="ignore"):
            for day, group in grouped:
                total = group.to_numpy().sum(dtype=np.uint64)
                digests[pd.Timestamp(day).strftime("%Y-%m-%d")] = PartitionDigest(len(group), _format(total))
    return digests


def combine(digests: list[PartitionDigest]) -> PartitionDigest:
    """The digest of several partitions together (the sum of their fingerprints)."""
    total = sum(int(d.fingerprint, 16) for d in digests) % (1 << 64)
    return PartitionDigest(sum(d.rows for d in digests), f"{total:016x}")
