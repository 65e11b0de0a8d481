"""Argument checks that run before any computation, on shapes, dtypes and Python numbers.

These only look at static information (shape, dtype, the value of a Python scalar), so they
work on tracers too: inside a user's ``jit`` they still catch a shape mismatch. Checks on
array *values* (negative probabilities, NaN, rows not summing to one) cannot run under
``jit``; they live in :mod:`vfe.validate`.
"""

from __future__ import annotations

import numbers

import jax
import jax.numpy as jnp
import numpy as np


def _numpy(func: str, name: str, x, dtype=None) -> np.ndarray:
    """``np.asarray(x, dtype)``, or a ``TypeError`` naming ``name`` (a ragged list, a non-number)."""
    try:
        return np.asarray(x, dtype=dtype)
    except (TypeError, ValueError) as err:
        raise TypeError(f"{func}: argument `{name}` is not an array: {err}") from None


def floating(func: str, name: str, x) -> jax.Array:
    """``x`` as a JAX array of a floating dtype; ``TypeError`` naming ``name`` otherwise."""
    if isinstance(x, (bool, np.bool_)):
        raise TypeError(f"{func}: argument `{name}` must be a floating-point array, got a bool")
    if isinstance(x, numbers.Number) and not isinstance(x, numbers.Real):
        raise TypeError(f"{func}: argument `{name}` must be real, got {type(x).__name__}")
    if not hasattr(x, "dtype"):  # a list, tuple or Python scalar
        x = _numpy(func, name, x, float if isinstance(x, numbers.Real) else None)
    dtype = x.dtype
    if not jnp.issubdtype(dtype, jnp.floating):
        raise TypeError(
            f"{func}: argument `{name}` must have a floating dtype (float16, bfloat16, float32, "
            f"float64), got {dtype}; cast it first, e.g. x.astype(jnp.float32)"
        )
    return jnp.asarray(x)


def integer(func: str, name: str, x) -> jax.Array:
    """``x`` (an array, list, tuple or Python int) as a JAX array of an integer dtype; ``TypeError``
    naming ``name`` otherwise (bools included)."""
    if not hasattr(x, "dtype"):
        x = _numpy(func, name, x)
    if not jnp.issubdtype(x.dtype, jnp.integer):
        raise TypeError(f"{func}: argument `{name}` must have an integer dtype, got {x.dtype}")
    return jnp.asarray(x)


def mask(func: str, where, shape: tuple[int, ...], of: str) -> jax.Array | None:
    """``where`` (None, or a boolean mask) broadcast to ``shape``, the shape of argument ``of``.

    ``TypeError`` naming ``where`` for a non-boolean dtype; ``ValueError`` when it does not broadcast.
    """
    if where is None:
        return None
    dtype = where.dtype if hasattr(where, "dtype") else np.asarray(where).dtype
    if dtype != np.bool_:
        raise TypeError(f"{func}: argument `where` must be a boolean mask, got dtype {dtype}")
    try:
        fits = np.broadcast_shapes(np.shape(where), shape) == tuple(shape)
    except ValueError:
        fits = False
    if not fits:
        raise ValueError(f"{func}: argument `where` of shape {np.shape(where)} does not broadcast to "
                         f"{of}'s shape {tuple(shape)}")
    return jnp.broadcast_to(jnp.asarray(where), shape)


def one_of(func: str, name: str, value, options: tuple[str, ...]) -> str:
    """``value`` if it is one of ``options``, else a ``ValueError`` naming the argument and the options."""
    if value not in options:
        raise ValueError(f"{func}: argument `{name}` must be one of {options}, got {value!r}")
    return value


def axis(func: str, value, ndim: int) -> int:
    """A normalised (non-negative) axis; ``ValueError``/``TypeError`` for a bad one."""
    if isinstance(value, (bool, np.bool_)) or not isinstance(value, (int, np.integer)):
        raise TypeError(f"{func}: argument `axis` must be an int, got {value!r}")
    if ndim == 0:
        raise ValueError(f"{func}: the input is a scalar; it needs at least one axis to reduce over")
    if not -ndim <= value < ndim:
        raise ValueError(f"{func}: argument `axis`={value} is out of range for an array of {ndim} dimensions")
    return int(value) % ndim


def class_axis(func: str, name: str, x: jax.Array, value) -> int:
    """:func:`axis` of ``x``, after a ``ValueError`` if ``x`` has no entries along it: a distribution
    (over classes, states, hypotheses) needs at least one."""
    ax = axis(func, value, x.ndim)
    if x.shape[ax] == 0:
        raise ValueError(f"{func}: argument `{name}` has no classes along axis {ax} (shape {x.shape}); "
                         f"a distribution needs at least one")
    return ax


def same_shape(func: str, names: tuple[str, str], a: jax.Array, b: jax.Array) -> None:
    """``ValueError`` naming both arguments if their shapes differ."""
    if a.shape != b.shape:
        raise ValueError(
            f"{func}: arguments `{names[0]}` and `{names[1]}` must have the same shape, "
            f"got {a.shape} and {b.shape}"
        )


def _host(func: str, name: str, value):
    """A list, tuple or string as a NumPy array (so that its values are checked as NumPy's are);
    anything else unchanged."""
    return _numpy(func, name, value) if isinstance(value, (list, tuple, str)) else value


def positive_scale(func: str, name: str, value, batch_shape: tuple[int, ...], *, allow_zero: bool = False
                   ) -> jax.Array:
    """A temperature or inverse temperature as a floating array broadcastable to ``batch_shape``.

    A Python/NumPy number (or a list of them) is checked here: it must be ``> 0`` (or ``≥ 0`` with
    ``allow_zero``) and finite. JAX array values are not inspected (use :mod:`vfe.validate`).
    """
    value = _host(func, name, value)
    if isinstance(value, (numbers.Real, np.ndarray, np.generic)) and not isinstance(value, (bool, np.bool_)):
        arr = np.asarray(value)
        if not np.issubdtype(arr.dtype, np.number):
            raise TypeError(f"{func}: argument `{name}` must be a number or a floating array, got {arr.dtype}")
        if np.any(np.isnan(arr)):
            raise ValueError(f"{func}: argument `{name}` is NaN")
        bad = arr < 0 if allow_zero else arr <= 0
        if np.any(bad):
            bound = "≥ 0" if allow_zero else "> 0"
            raise ValueError(f"{func}: argument `{name}` must be {bound}, got {value!r}")
        if np.any(np.isinf(arr)):
            raise ValueError(f"{func}: argument `{name}` must be finite, got {value!r}")
    elif isinstance(value, (bool, np.bool_)):
        raise TypeError(f"{func}: argument `{name}` must be a number, got a bool")
    arr = jnp.asarray(value)
    if jnp.issubdtype(arr.dtype, jnp.integer):
        arr = arr.astype(jnp.promote_types(arr.dtype, jnp.float32))
    arr = floating(func, name, arr)
    try:
        np.broadcast_shapes(arr.shape, batch_shape)
    except ValueError:
        raise ValueError(
            f"{func}: argument `{name}` of shape {arr.shape} does not broadcast against the batch shape "
            f"{batch_shape} (the input's shape without the reduced axis)"
        ) from None
    if len(arr.shape) > len(batch_shape):
        raise ValueError(
            f"{func}: argument `{name}` of shape {arr.shape} has more dimensions than the batch shape {batch_shape}"
        )
    return arr


def batch_shape(shape: tuple[int, ...], ax: int) -> tuple[int, ...]:
    """``shape`` without axis ``ax``."""
    return shape[:ax] + shape[ax + 1:]


def parameter(func: str, name: str, value, *, positive: bool = False, non_negative: bool = False,
              finite: bool = False, integers: bool = False) -> jax.Array:
    """A floating JAX array from a number or an array; a Python number becomes a weakly typed scalar.

    Values given as Python or NumPy numbers are checked here, before any work (JAX arrays are
    never inspected: their values may be traced): NaN is rejected whenever a value check is
    asked for; ``positive``: every entry ``> 0``; ``non_negative``: ``≥ 0``; ``finite``: no
    ``±inf``. ``integers``: integer arrays (counts, sizes) are cast to the default float instead
    of being rejected. A bool is always a ``TypeError``. Lists are checked as NumPy arrays.
    """
    value = _host(func, name, value)
    if isinstance(value, (bool, np.bool_)):
        raise TypeError(f"{func}: argument `{name}` must be a number or a floating array, got a bool")
    if (positive or non_negative or finite) and isinstance(value, (numbers.Real, np.ndarray, np.generic)):
        arr = np.asarray(value)
        if np.issubdtype(arr.dtype, np.number) and not np.issubdtype(arr.dtype, np.complexfloating):
            if np.any(np.isnan(arr)):
                raise ValueError(f"{func}: argument `{name}` is NaN")
            if positive and np.any(arr <= 0):
                raise ValueError(f"{func}: argument `{name}` must be > 0, got {value!r}")
            if non_negative and np.any(arr < 0):
                raise ValueError(f"{func}: argument `{name}` must be ≥ 0, got {value!r}")
            if finite and np.any(np.isinf(arr)):
                raise ValueError(f"{func}: argument `{name}` must be finite, got {value!r}")
    if isinstance(value, numbers.Real) and not hasattr(value, "dtype"):
        return jnp.asarray(float(value))  # weakly typed: does not promote the other arguments
    if integers and hasattr(value, "dtype") and jnp.issubdtype(value.dtype, jnp.integer):
        return jnp.asarray(value).astype(jnp.result_type(float))
    return floating(func, name, value)


def broadcast_shape(func: str, names, arrays) -> tuple[int, ...]:
    """The broadcast shape of ``arrays``; a ``ValueError`` naming the first one that does not fit."""
    shape: tuple[int, ...] = ()
    for i, (name, a) in enumerate(zip(names, arrays)):
        try:
            shape = np.broadcast_shapes(shape, a.shape)
        except ValueError:
            before = ", ".join(f"`{n}`" for n in names[:i])
            raise ValueError(f"{func}: argument `{name}` of shape {a.shape} does not broadcast against "
                             f"the shape {shape} of {before}") from None
    return shape
