"""Eager value checks: the validating path for what cannot be checked inside ``jit``.

The library's functions check shapes, dtypes, axes and Python-number temperatures before any
work, but they never look at array *values* (that would need a device-to-host transfer and
breaks ``jit``). Call these on concrete arrays, outside ``jit``, where input comes from an
untrusted source; each returns its input unchanged, so it can be used inline::

    h = vfe.entropy(vfe.validate.probs(p))

Each raises ``ValueError`` naming the argument, the problem and the first offending index.
What the fast path returns for such input is documented in each module (typically NaN for
negative probabilities or non-positive temperatures, the unnormalised formula's value for
rows that do not sum to one).
"""

from __future__ import annotations

import jax.numpy as jnp
import numpy as np

__all__ = ["probs", "logits", "temperature", "labels"]


def _first(mask: np.ndarray) -> tuple[int, ...]:
    return tuple(int(i) for i in np.argwhere(mask)[0])


def _eps(x) -> float:
    dtype = getattr(x, "dtype", np.asarray(x).dtype)
    return float(jnp.finfo(dtype).eps) if jnp.issubdtype(dtype, jnp.floating) else float(np.finfo(np.float32).eps)


def _concrete(name: str, x) -> np.ndarray:
    try:
        arr = np.asarray(x)
    except Exception as err:  # a tracer: values are not known here
        raise TypeError(f"vfe.validate: `{name}` must be a concrete array; call validate outside jit") from err
    return arr.astype(np.float64) if jnp.issubdtype(arr.dtype, jnp.floating) else arr


def probs(x, *, name: str = "probs", axis: int = -1, atol: float | None = None):
    """Check that ``x`` holds probability vectors along ``axis``: finite, ``≥ 0``, summing to 1.

    Args:
      x: the array.
      name: the argument name used in the error message.
      axis: the axis holding the distributions.
      atol: allowed deviation of each row sum from 1; default ``n · eps(dtype) · 16``.
    """
    arr = _concrete(name, x)
    if np.isnan(arr).any():
        raise ValueError(f"`{name}` contains NaN at index {_first(np.isnan(arr))}")
    if np.isinf(arr).any():
        raise ValueError(f"`{name}` contains an infinite value at index {_first(np.isinf(arr))}")
    if (arr < 0).any():
        raise ValueError(f"`{name}` has a negative probability at index {_first(arr < 0)}")
    tol = atol if atol is not None else 16 * arr.shape[axis] * _eps(x)
    sums = arr.sum(axis=axis)
    bad = np.abs(sums - 1.0) > tol
    if bad.any():
        idx = _first(bad)
        raise ValueError(f"`{name}` row {idx} sums to {float(sums[idx])!r}, not 1 (tolerance {tol:.3g})")
    return x


def logits(x, *, name: str = "logits", axis: int = -1):
    """Check logits: no NaN, no ``+inf``, and at least one finite entry in every row (``-inf`` masks)."""
    arr = _concrete(name, x)
    if np.isnan(arr).any():
        raise ValueError(f"`{name}` contains NaN at index {_first(np.isnan(arr))}")
    if np.isposinf(arr).any():
        raise ValueError(f"`{name}` contains +inf at index {_first(np.isposinf(arr))}; only -inf (masked) is allowed")
    empty = np.isneginf(arr).all(axis=axis)
    if empty.any():
        raise ValueError(f"`{name}` row {_first(empty)} is entirely masked (-inf): it is not a distribution")
    return x


def temperature(t, *, name: str = "temperature"):
    """Check that every temperature is finite and ``> 0``."""
    arr = _concrete(name, t)
    if np.isnan(arr).any() or (arr <= 0).any() or np.isinf(arr).any():
        bad = np.isnan(arr) | (arr <= 0) | np.isinf(arr)
        where = f" at index {_first(bad)}" if arr.ndim else ""
        raise ValueError(f"`{name}` must be finite and > 0; got {arr[bad].ravel()[0]!r}{where}")
    return t


def labels(y, num_classes: int, *, name: str = "labels"):
    """Check integer labels lie in ``[0, num_classes)``."""
    arr = np.asarray(y)
    if arr.dtype.kind not in "iu":
        raise ValueError(f"`{name}` must be integers, got dtype {arr.dtype}")
    bad = (arr < 0) | (arr >= num_classes)
    if bad.any():
        raise ValueError(f"`{name}` has {arr[bad].ravel()[0]} at index {_first(bad)}, outside [0, {num_classes})")
    return y
