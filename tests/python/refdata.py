"""Deterministic per-rank inputs, so each rank can compute every rank's data
and the reference result locally. Values are small integers: sums and
products of them are exact in every dtype, float16/bfloat16 included."""

import zlib

import numpy as np

SIZES = (0, 1, 7, 1000)      # element counts: empty, one, prime, larger than a line


def values(rank, count, salt, op="sum"):
    """float64 array of small integers for rank; non-zero, within [-2, 2] for
    products (so they stay exact and in range), within [-9, 9] otherwise."""
    # crc32, not hash(): str hashes differ between processes
    rng = np.random.default_rng(zlib.crc32(repr((rank, count, salt)).encode()))
    if op == "prod":
        v = rng.choice([-2.0, -1.0, 1.0, 2.0], size=count)
        v[rng.random(count) < 0.5] = 1.0
        return v
    return rng.integers(-9, 10, size=count).astype(np.float64)


def unsigned(dtype_name, v):
    """Values valid for unsigned dtypes: absolute values."""
    return np.abs(v) if dtype_name == "uint8" else v


def reference(inputs, op, integer):
    """Reduction of the per-rank inputs (float64), as dcomm defines it."""
    stack = np.stack(inputs)
    if op == "sum":
        return stack.sum(0)
    if op == "avg":
        s = stack.sum(0)
        return np.trunc(s / len(inputs)) if integer else s / len(inputs)
    if op == "min":
        return stack.min(0)
    if op == "max":
        return stack.max(0)
    return stack.prod(0)
