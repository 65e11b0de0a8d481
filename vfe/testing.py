"""Hypothesis strategies for property-testing code on discrete distributions.

Every strategy here returns NumPy arrays (``float64`` unless ``dtype=np.float32`` is
asked for) whose last axis is the distribution's support, and is built the way the
builders of :mod:`hypothesis.extra.numpy` are: keyword-only, validated arguments
(a bad one raises :class:`hypothesis.errors.InvalidArgument` when the strategy is
*built*, not when it is drawn), composed from Hypothesis primitives with
:func:`hypothesis.strategies.composite`, the shape drawn first and the data second.

**Fixed shape buckets.** Shapes are drawn from a short, fixed list: the support size
from ``sizes`` (default ``(2, 3, 5, 8, 16, 64)``) and the leading batch shape from
``batch_shape`` (default ``()``; a tuple of shapes such as ``((), (4,), (2, 3))``
gives several buckets). A ``jax.jit``-compiled function under test therefore traces
and compiles at most ``len(sizes) * len(batch shapes)`` times (once per bucket and
dtype), never once per example, so property tests of jitted code stay fast.

**Determinism and shrinking.** Everything is a function of Hypothesis's draws; no
global random state is used. The structural choices (shape, kind, scale exponents,
the ``ε`` of a nearly one-hot vector, a temperature) are drawn directly, so they
shrink towards the first bucket, the first kind and the simplest scale. The bulk
of the floats comes from ``np.random.default_rng(seed)`` with ``seed`` drawn by
``st.integers(0, 2**32 - 1)``; that part shrinks only towards ``seed = 0``, i.e.
towards one fixed, reproducible array, not towards "simpler" numbers.

**Rounding.** Probability vectors are normalised in float64 and then cast to the
requested dtype, so every entry is non-negative and the exact (``math.fsum``) sum
of each row of ``n`` entries is within ``n * eps(dtype)`` of 1; a sum computed in
``dtype`` itself adds its own rounding, at most another ``n * eps(dtype)``.

Example::

    import numpy as np
    from hypothesis import given
    from vfe import testing as vt

    @given(vt.probability_vectors(kind="sparse", batch_shape=((), (4,))))
    def test_entropy_is_non_negative(p):
        assert np.all(my_entropy(p) >= 0)

    @given(vt.distribution_pairs(support="near"), vt.temperatures())
    def test_something(pq, temperature):
        p, q = pq
        ...
"""

from __future__ import annotations

import math
import numbers
from collections.abc import Sequence
from typing import Any

import numpy as np
from hypothesis import strategies as st
from hypothesis.errors import InvalidArgument

__all__ = [
    "PROBABILITY_KINDS",
    "SUPPORTS",
    "JOINT_KINDS",
    "BELIEF_KINDS",
    "probability_vectors",
    "logits",
    "distribution_pairs",
    "temperatures",
    "joint_tables",
    "log_joint_rows",
    "belief_and_log_joint",
]

#: Kinds accepted by :func:`probability_vectors` (``"any"`` mixes the others).
PROBABILITY_KINDS = ("uniform_like", "dirichlet", "sparse", "one_hot_like", "any")
#: Supports accepted by :func:`distribution_pairs`.
SUPPORTS = ("shared", "nested", "partial", "near")
#: Kinds accepted by :func:`joint_tables` (``"any"`` mixes the others).
JOINT_KINDS = ("positive", "sparse", "peaked", "any")
#: Kinds of belief ``q`` accepted by :func:`belief_and_log_joint`.
BELIEF_KINDS = ("posterior", "uniform_like", "dirichlet", "sparse", "one_hot_like", "any")

_DEFAULT_SIZES = (2, 3, 5, 8, 16, 64)
_DEFAULT_X_SIZES = (2, 3, 5, 8)
_DEFAULT_THETA_SIZES = (2, 3, 5, 8, 16)
_SEEDS = st.integers(0, 2**32 - 1)
_CONCRETE_KINDS = ("uniform_like", "dirichlet", "sparse", "one_hot_like")


# --------------------------------------------------------------------------- validation


def _check_sizes(sizes: Any, name: str, min_size: int = 1) -> tuple[int, ...]:
    if isinstance(sizes, (str, bytes)) or not isinstance(sizes, Sequence):
        raise InvalidArgument(f"{name}={sizes!r} must be a non-empty tuple of integers")
    if len(sizes) == 0:
        raise InvalidArgument(f"{name}=() is empty: give at least one size")
    out = []
    for s in sizes:
        if isinstance(s, bool) or not isinstance(s, numbers.Integral):
            raise InvalidArgument(f"{name} contains {s!r}, which is not an integer")
        if s < min_size:
            raise InvalidArgument(f"{name} contains {s}, but every size must be >= {min_size}")
        out.append(int(s))
    return tuple(out)


def _is_int(x: Any) -> bool:
    return isinstance(x, numbers.Integral) and not isinstance(x, bool)


def _check_batch_shape(batch_shape: Any) -> tuple[tuple[int, ...], ...]:
    """A shape (tuple of ints) -> one bucket; a tuple of shapes -> several buckets."""
    if isinstance(batch_shape, (str, bytes)) or not isinstance(batch_shape, Sequence):
        raise InvalidArgument(
            f"batch_shape={batch_shape!r} must be a shape such as (4,) or a tuple of "
            "shapes such as ((), (4,), (2, 3))"
        )
    if all(_is_int(d) for d in batch_shape):
        buckets = (tuple(batch_shape),)
    elif all(
        isinstance(b, Sequence) and not isinstance(b, (str, bytes)) and all(_is_int(d) for d in b)
        for b in batch_shape
    ):
        buckets = tuple(tuple(b) for b in batch_shape)
    else:
        raise InvalidArgument(
            f"batch_shape={batch_shape!r} mixes integers and shapes: give one shape such "
            "as (4,) or a tuple of shapes such as ((), (4,))"
        )
    for b in buckets:
        if any(d < 1 for d in b):
            raise InvalidArgument(f"batch shape {b!r} has a dimension < 1")
    return tuple(tuple(int(d) for d in b) for b in buckets)


def _check_kind(kind: Any, allowed: tuple[str, ...], name: str = "kind") -> str:
    if kind not in allowed:
        raise InvalidArgument(f"{name}={kind!r} is not one of {allowed!r}")
    return kind


def _check_dtype(dtype: Any) -> np.dtype:
    try:
        dt = np.dtype(dtype)
    except TypeError as err:
        raise InvalidArgument(f"dtype={dtype!r} is not a NumPy dtype") from err
    if dt not in (np.dtype(np.float32), np.dtype(np.float64)):
        raise InvalidArgument(f"dtype={dt} is not supported: use np.float32 or np.float64")
    return dt


def _check_real(x: Any, name: str) -> float:
    if isinstance(x, bool) or not isinstance(x, numbers.Real):
        raise InvalidArgument(f"{name}={x!r} must be a real number")
    x = float(x)
    if not math.isfinite(x):
        raise InvalidArgument(f"{name}={x!r} must be finite")
    return x


def _min_log_prob(dtype: np.dtype, share: float = 1.0) -> float:
    """A log-probability floor whose exp stays a normal number of ``dtype``.

    With ``share=0.5`` the product of two such probabilities is still normal.
    """
    return share * (math.log(float(np.finfo(dtype).tiny)) + 2.0)


# --------------------------------------------------------------------------- float64 builders


def _from_log_weights(logw: np.ndarray, min_log_prob: float) -> np.ndarray:
    """Normalise log-weights (``-inf`` = exact zero) along the last axis.

    Finite entries are floored at ``max + min_log_prob + log(n)``, so each finite entry
    of the result is at least ``exp(min_log_prob)``: never underflows to zero.
    """
    n = logw.shape[-1]
    finite = np.isfinite(logw)
    m = np.max(np.where(finite, logw, -np.inf), axis=-1, keepdims=True)
    logw = np.where(finite, np.maximum(logw, m + min_log_prob + math.log(n)), -np.inf)
    w = np.exp(logw - m)
    return w / np.sum(w, axis=-1, keepdims=True)


def _dirichlet_log_weights(rng: np.random.Generator, alpha: float, shape) -> np.ndarray:
    # log Gamma(alpha) = log Gamma(alpha + 1) + log(U) / alpha, stable for tiny alpha.
    g = rng.gamma(alpha + 1.0, size=shape)
    u = 1.0 - rng.random(size=shape)  # in (0, 1]
    return np.log(g) + np.log(u) / alpha


def _random_ranks(rng: np.random.Generator, shape) -> np.ndarray:
    """A uniformly random permutation of 0..n-1 along the last axis of each row."""
    return np.argsort(np.argsort(rng.random(size=shape), axis=-1), axis=-1)


def _draw_alpha(draw) -> float:
    # Dirichlet concentration over six decades; shrinks to alpha = 1 (flat Dirichlet).
    return 10.0 ** draw(st.one_of(st.just(0.0), st.floats(-3.0, 3.0)))


def _probs64(draw, rng, shape, kind: str, min_log_prob: float) -> np.ndarray:
    """Draw float64 probability vectors of one concrete ``kind``."""
    n = shape[-1]
    batch = shape[:-1]
    if kind == "uniform_like":
        # Relative perturbations from 1e-1 down to 1e-12, or exactly uniform.
        log_delta = draw(st.one_of(st.just(None), st.floats(-12.0, -1.0)))
        delta = 0.0 if log_delta is None else 10.0**log_delta
        w = 1.0 + delta * rng.uniform(-1.0, 1.0, size=shape)
        return w / np.sum(w, axis=-1, keepdims=True)
    if kind == "dirichlet":
        alpha = _draw_alpha(draw)
        return _from_log_weights(_dirichlet_log_weights(rng, alpha, shape), min_log_prob)
    if kind == "sparse":
        alpha = _draw_alpha(draw)
        k_zero = rng.integers(1, n, size=batch)[..., None]  # 1..n-1 exact zeros per row
        support = _random_ranks(rng, shape) >= k_zero
        logw = np.where(support, _dirichlet_log_weights(rng, alpha, shape), -np.inf)
        return _from_log_weights(logw, min_log_prob)
    if kind == "one_hot_like":
        # eps log-uniform over 1e-300..1e-1, or exactly one-hot (eps = 0).
        log_eps = draw(st.one_of(st.just(None), st.floats(-300.0, -1.0)))
        eps = 0.0 if log_eps is None else 10.0**log_eps
        hot = rng.integers(0, n, size=batch)[..., None]
        is_hot = np.arange(n) == hot
        if n == 1:
            return np.ones(shape)
        share = np.where(is_hot, 0.0, rng.uniform(0.5, 1.0, size=shape))
        share = share / np.sum(share, axis=-1, keepdims=True)
        return np.where(is_hot, 1.0 - eps, eps * share)
    raise AssertionError(kind)  # pragma: no cover


def _concrete_kind(draw, kind: str, n: int) -> str:
    if kind != "any":
        return kind
    kinds = _CONCRETE_KINDS if n >= 2 else tuple(k for k in _CONCRETE_KINDS if k != "sparse")
    return draw(st.sampled_from(kinds))


def _draw_shape(draw, sizes, buckets) -> tuple[int, ...]:
    n = draw(st.sampled_from(sizes))
    batch = draw(st.sampled_from(buckets))
    return tuple(batch) + (n,)


# --------------------------------------------------------------------------- probability_vectors


@st.composite
def _probability_vectors(draw, sizes, buckets, kind, dtype):
    shape = _draw_shape(draw, sizes, buckets)
    concrete = _concrete_kind(draw, kind, shape[-1])
    rng = np.random.default_rng(draw(_SEEDS))
    return _probs64(draw, rng, shape, concrete, _min_log_prob(dtype)).astype(dtype)


def probability_vectors(
    *,
    sizes: Sequence[int] = _DEFAULT_SIZES,
    batch_shape: Sequence[int] | Sequence[Sequence[int]] = (),
    kind: str = "any",
    dtype: Any = np.float64,
) -> st.SearchStrategy[np.ndarray]:
    """Arrays of probability vectors: the last axis is a distribution.

    Each row is non-negative and sums to 1: it is normalised in float64 and then cast,
    so the exact sum of a row of ``n`` entries is within ``n * eps(dtype)`` of 1.

    * ``sizes`` (default ``(2, 3, 5, 8, 16, 64)``): the support sizes (last axis), a
      fixed set of buckets; draws shrink towards the first one.
    * ``batch_shape`` (default ``()``): the leading shape, either one shape such as
      ``(4,)`` or a tuple of shapes such as ``((), (4,), (2, 3))`` drawn as buckets;
      shrinks towards the first one.
    * ``kind`` (default ``"any"``): ``"dirichlet"`` (Dirichlet-distributed with
      concentration ``10**a``, ``a`` in [-3, 3], strictly positive: entries below the
      dtype's smallest normal number are floored there, so small concentrations give
      entries near ``1e-307`` in float64); ``"sparse"`` (1 to ``n - 1`` exact zeros
      per row, the rest positive; needs every size >= 2); ``"one_hot_like"`` (one
      entry ``1 - ε``, the others sharing ``ε``, with ``ε`` log-uniform over
      ``1e-300..1e-1`` or exactly 0, so the largest entry is >= 0.9); ``"uniform_like"``
      (uniform times ``1 + δu``, ``|u| <= 1``, ``δ`` log-uniform over ``1e-12..1e-1``
      or exactly 0); ``"any"`` draws one of these per example and shrinks towards
      ``"uniform_like"``.
    * ``dtype`` (default ``np.float64``): ``np.float64`` or ``np.float32``.

    Shrinking: towards the first size and batch shape, the first kind, concentration
    1 / ``ε = 0`` / ``δ = 0``, and the random bulk of the entries towards seed 0.
    """
    sizes = _check_sizes(sizes, "sizes", min_size=2 if kind == "sparse" else 1)
    buckets = _check_batch_shape(batch_shape)
    kind = _check_kind(kind, PROBABILITY_KINDS)
    dtype = _check_dtype(dtype)
    return _probability_vectors(sizes, buckets, kind, dtype)


# --------------------------------------------------------------------------- logits


def _dtype_bounds(lo: float, hi: float, dtype: np.dtype) -> tuple[Any, Any]:
    lo_d, hi_d = dtype.type(lo), dtype.type(hi)
    if float(lo_d) < lo:
        lo_d = np.nextafter(lo_d, dtype.type(np.inf))
    if float(hi_d) > hi:
        hi_d = np.nextafter(hi_d, dtype.type(-np.inf))
    return lo_d, hi_d


@st.composite
def _logits(draw, sizes, buckets, lo, hi, masked, dtype):
    shape = _draw_shape(draw, sizes, buckets)
    n, batch = shape[-1], shape[:-1]
    style = draw(st.sampled_from(("gaussian", "decades", "ties", "extreme")))
    offset = draw(st.floats(lo, hi))
    half = hi / 2 - lo / 2
    # Scale exponents: from 1e-3 up to the width of the range.
    top = math.log10(half) if half > 0 else -3.0
    log_scale = draw(st.floats(-3.0, max(top, -3.0)))
    rng = np.random.default_rng(draw(_SEEDS))
    with np.errstate(over="ignore", invalid="ignore"):
        x = _logit_values(draw, rng, style, shape, lo, hi, offset, log_scale)
    x = np.clip(x, lo, hi)
    lo_d, hi_d = _dtype_bounds(lo, hi, dtype)
    x = np.clip(x.astype(dtype), lo_d, hi_d)
    if masked:
        rate = draw(st.sampled_from((0.0, 0.3, 0.9, 1.0)))
        mask = rng.random(size=shape) < rate
        keep = rng.integers(0, n, size=batch)[..., None]
        mask &= np.arange(n) != keep  # never a fully masked row
        x = np.where(mask, dtype.type(-np.inf), x)
    return np.asarray(x, dtype=dtype)


def _logit_values(draw, rng, style, shape, lo, hi, offset, log_scale):
    batch = shape[:-1]
    half = hi / 2 - lo / 2
    max_abs = max(abs(lo), abs(hi))
    if style == "gaussian":
        x = offset + 10.0**log_scale * rng.standard_normal(size=shape)
    elif style == "decades":
        # Magnitudes log-uniform from 1e-6 up to the largest bound, random signs,
        # optionally shifted by a constant offset.
        top_abs = math.log10(max_abs) if max_abs > 0 else -6.0
        mag = 10.0 ** rng.uniform(-6.0, max(top_abs, -6.0), size=shape)
        x = np.where(rng.random(size=shape) < 0.5, -mag, mag)
        if draw(st.booleans()):
            x = x + offset
    elif style == "ties":
        k = draw(st.integers(1, 3))
        distinct = offset + 10.0**log_scale * rng.standard_normal(size=batch + (k,))
        idx = rng.integers(0, k, size=shape)
        x = np.take_along_axis(distinct, idx, axis=-1)
    else:  # "extreme": the bounds themselves, values just inside them, the offset
        candidates = np.stack(
            np.broadcast_arrays(
                np.float64(lo),
                np.float64(hi),
                lo + np.minimum(rng.uniform(0.0, 10.0, size=shape), 2 * half),
                hi - np.minimum(rng.uniform(0.0, 10.0, size=shape), 2 * half),
                np.float64(offset),
            ),
            axis=-1,
        )
        pick = rng.integers(0, candidates.shape[-1], size=shape)[..., None]
        x = np.take_along_axis(candidates, pick, axis=-1)[..., 0]
    return x


def logits(
    *,
    sizes: Sequence[int] = _DEFAULT_SIZES,
    batch_shape: Sequence[int] | Sequence[Sequence[int]] = (),
    min_value: float = -1e4,
    max_value: float = 1e4,
    masked: bool = True,
    dtype: Any = np.float64,
) -> st.SearchStrategy[np.ndarray]:
    """Arrays of wide-range logits, optionally with ``-inf`` masks.

    Finite entries lie in ``[min_value, max_value]`` (the bounds rounded inwards to
    ``dtype``). Each example is one of four styles: Gaussian around a constant offset
    with a scale from ``1e-3`` to the width of the range; magnitudes spread
    log-uniformly over the decades from ``1e-6`` to the largest bound with random signs
    (optionally offset); ties (each row takes only 1 to 3 distinct values); extreme
    values (the bounds themselves, values within 10 of them, the offset).

    * ``sizes`` (default ``(2, 3, 5, 8, 16, 64)``): support sizes (last axis), fixed
      buckets; shrinks towards the first.
    * ``batch_shape`` (default ``()``): one leading shape or a tuple of shapes used as
      buckets; shrinks towards the first.
    * ``min_value`` (default ``-1e4``): the smallest finite logit (finite, representable).
    * ``max_value`` (default ``1e4``): the largest finite logit; ``min_value <= max_value``.
    * ``masked`` (default ``True``): if true, entries are set to ``-inf`` at a rate of
      0, 0.3, 0.9 or 1 per example, except one random entry per row, so no row is ever
      fully masked (a rate of 1 leaves exactly one finite entry per row).
    * ``dtype`` (default ``np.float64``): ``np.float64`` or ``np.float32``.

    Shrinking: towards the first size and batch shape, the Gaussian style, offset 0,
    scale ``1e-3``, no mask, and the random bulk towards seed 0.
    """
    sizes = _check_sizes(sizes, "sizes")
    buckets = _check_batch_shape(batch_shape)
    dtype = _check_dtype(dtype)
    lo = _check_real(min_value, "min_value")
    hi = _check_real(max_value, "max_value")
    if lo > hi:
        raise InvalidArgument(f"min_value={lo!r} is greater than max_value={hi!r}")
    big = float(np.finfo(dtype).max)
    if max(abs(lo), abs(hi)) > big:
        raise InvalidArgument(f"min_value and max_value must be representable in {dtype}")
    if not isinstance(masked, bool):
        raise InvalidArgument(f"masked={masked!r} must be a bool")
    return _logits(sizes, buckets, lo, hi, masked, dtype)


# --------------------------------------------------------------------------- distribution_pairs


@st.composite
def _distribution_pairs(draw, sizes, buckets, support, dtype):
    shape = _draw_shape(draw, sizes, buckets)
    n, batch = shape[-1], shape[:-1]
    floor = _min_log_prob(dtype)
    if support == "shared":
        kind_p = draw(st.sampled_from(("uniform_like", "dirichlet")))
        kind_q = draw(st.sampled_from(("uniform_like", "dirichlet")))
        rng = np.random.default_rng(draw(_SEEDS))
        p = _probs64(draw, rng, shape, kind_p, floor)
        q = _probs64(draw, rng, shape, kind_q, floor)
    elif support == "nested":
        alpha_p, alpha_q = _draw_alpha(draw), _draw_alpha(draw)
        rng = np.random.default_rng(draw(_SEEDS))
        ranks = _random_ranks(rng, shape)
        k_p = rng.integers(1, n, size=batch)  # 1..n-1 positives in p
        k_q = rng.integers(k_p, n + 1)  # k_p..n positives in q, on a superset
        supp_p = ranks < k_p[..., None]
        supp_q = ranks < k_q[..., None]
        p = _from_log_weights(
            np.where(supp_p, _dirichlet_log_weights(rng, alpha_p, shape), -np.inf), floor
        )
        q = _from_log_weights(
            np.where(supp_q, _dirichlet_log_weights(rng, alpha_q, shape), -np.inf), floor
        )
    elif support == "partial":
        alpha_p, alpha_q = _draw_alpha(draw), _draw_alpha(draw)
        rng = np.random.default_rng(draw(_SEEDS))
        out = []
        for alpha in (alpha_p, alpha_q):
            k = rng.integers(1, n + 1, size=batch)[..., None]  # 1..n positives
            supp = _random_ranks(rng, shape) < k
            logw = np.where(supp, _dirichlet_log_weights(rng, alpha, shape), -np.inf)
            out.append(_from_log_weights(logw, floor))
        p, q = out
    else:  # "near"
        kind = _concrete_kind(draw, "any", n)
        log_delta = draw(st.one_of(st.just(-6.0), st.floats(-8.0, -3.0)))
        rng = np.random.default_rng(draw(_SEEDS))
        p = _probs64(draw, rng, shape, kind, floor)
        u = rng.uniform(-0.5, 0.5, size=shape)
        u = u - np.sum(p * u, axis=-1, keepdims=True)  # p-weighted mean 0, |u| <= 1
        q = p * (1.0 + 10.0**log_delta * u)
        q = q / np.sum(q, axis=-1, keepdims=True)
    return p.astype(dtype), q.astype(dtype)


def distribution_pairs(
    *,
    sizes: Sequence[int] = _DEFAULT_SIZES,
    batch_shape: Sequence[int] | Sequence[Sequence[int]] = (),
    support: str = "shared",
    dtype: Any = np.float64,
) -> st.SearchStrategy[tuple[np.ndarray, np.ndarray]]:
    """Pairs ``(p, q)`` of probability-vector arrays of equal shape, for KL and friends.

    Both are normalised in float64 and then cast (see :func:`probability_vectors` for
    the rounding of the sums); every entry that is meant to be positive stays a
    positive normal number of ``dtype``.

    * ``sizes`` (default ``(2, 3, 5, 8, 16, 64)``): support sizes, fixed buckets;
      ``support="nested"`` needs every size >= 2. Shrinks towards the first.
    * ``batch_shape`` (default ``()``): one leading shape or a tuple of shapes used as
      buckets; shrinks towards the first.
    * ``support`` (default ``"shared"``):
      ``"shared"``: ``p`` and ``q`` both strictly positive (uniform-like or Dirichlet);
      ``"nested"``: ``supp(p) ⊆ supp(q)``, with 1 to ``n - 1`` zeros in ``p``, so
      ``KL(p‖q)`` is finite and ``0 log 0`` terms occur;
      ``"partial"``: independent random supports (each row of ``p`` and of ``q`` has at
      least one positive entry), so ``q = 0`` where ``p > 0`` happens and
      ``KL(p‖q) = +inf``;
      ``"near"``: ``p`` of any kind and ``q = p * (1 + δu)`` renormalised, with
      ``|u| <= 1`` and ``p``-weighted mean 0, and ``δ = 1e-6`` or log-uniform over
      ``1e-8..1e-3``: ``|q_i / p_i - 1| <= δ`` up to rounding and ``q`` has exactly the
      zeros of ``p``. This is the hard case for the accuracy of ``KL(p‖q) ≈ δ²/2``.
    * ``dtype`` (default ``np.float64``): ``np.float64`` or ``np.float32``.

    Shrinking: towards the first size and batch shape, concentration 1, ``δ = 1e-6``,
    and the random bulk (supports and weights) towards seed 0.
    """
    support = _check_kind(support, SUPPORTS, "support")
    sizes = _check_sizes(sizes, "sizes", min_size=2 if support == "nested" else 1)
    buckets = _check_batch_shape(batch_shape)
    dtype = _check_dtype(dtype)
    return _distribution_pairs(sizes, buckets, support, dtype)


# --------------------------------------------------------------------------- temperatures


def temperatures(
    *, min_value: float = 1e-30, max_value: float = 1e30
) -> st.SearchStrategy[float]:
    """Positive temperatures (Python floats), log-uniform over the decades.

    The decimal exponent is drawn uniformly from ``[log10(min_value), log10(max_value)]``
    and the result clipped into the bounds; the exact values ``1.0`` (when in range),
    ``min_value`` and ``max_value`` are drawn too. Use ``1 / t`` for an inverse
    temperature ``β``.

    * ``min_value`` (default ``1e-30``): the smallest temperature, finite and > 0.
    * ``max_value`` (default ``1e30``): the largest, finite and ``>= min_value``.

    Shrinking: towards ``1.0`` (or ``min_value`` when 1 is out of range), then the
    endpoints, then exponents towards 0.
    """
    lo = _check_real(min_value, "min_value")
    hi = _check_real(max_value, "max_value")
    if lo <= 0:
        raise InvalidArgument(f"min_value={lo!r} must be > 0")
    if lo > hi:
        raise InvalidArgument(f"min_value={lo!r} is greater than max_value={hi!r}")
    e_lo, e_hi = math.log10(lo), math.log10(hi)
    spread = st.floats(e_lo, e_hi).map(lambda e: min(max(10.0**e, lo), hi))
    exact = [1.0] if lo <= 1.0 <= hi else []
    return st.one_of(st.sampled_from(exact + [lo, hi]), spread)


# --------------------------------------------------------------------------- joint tables


def _joint_cond_kind(draw, kind: str, n_theta: int) -> str:
    if kind == "any":
        kinds = ("positive", "sparse", "peaked") if n_theta >= 2 else ("positive", "peaked")
        kind = draw(st.sampled_from(kinds))
    if kind == "positive":
        return draw(st.sampled_from(("uniform_like", "dirichlet")))
    if kind == "sparse":
        return "sparse"
    return "one_hot_like"


@st.composite
def _joint_tables(draw, n_x_sizes, n_theta_sizes, kind, dtype):
    n_x = draw(st.sampled_from(n_x_sizes))
    n_t = draw(st.sampled_from(n_theta_sizes))
    cond_kind = _joint_cond_kind(draw, kind, n_t)
    half = _min_log_prob(dtype, share=0.5)
    rng = np.random.default_rng(draw(_SEEDS))
    p_x = _probs64(draw, rng, (n_x,), "dirichlet", half)
    cond = _probs64(draw, rng, (n_x, n_t), cond_kind, half)
    joint = p_x[:, None] * cond
    joint = joint / np.sum(joint)
    return joint.astype(dtype)


def joint_tables(
    *,
    n_x_sizes: Sequence[int] = _DEFAULT_X_SIZES,
    n_theta_sizes: Sequence[int] = _DEFAULT_THETA_SIZES,
    kind: str = "any",
    dtype: Any = np.float64,
) -> st.SearchStrategy[np.ndarray]:
    """Joint probability tables ``p(x, θ)`` of shape ``(n_x, n_theta)``.

    Built as ``p(x) p(θ|x)`` in float64 with ``p(x)`` Dirichlet (strictly positive),
    renormalised and cast: non-negative, summing to 1 (exact sum within
    ``n_x * n_theta * eps(dtype)``), and every row ``x`` has a positive marginal (its
    largest entry is a positive normal number of ``dtype``).

    * ``n_x_sizes`` (default ``(2, 3, 5, 8)``): buckets for the number of observations
      ``x``; shrinks towards the first.
    * ``n_theta_sizes`` (default ``(2, 3, 5, 8, 16)``): buckets for the number of latent
      values ``θ``; ``kind="sparse"`` needs every size >= 2. Shrinks towards the first.
    * ``kind`` (default ``"any"``): ``"positive"`` (every entry > 0: rows of
      ``p(θ|x)`` uniform-like or Dirichlet), ``"sparse"`` (every row of ``p(θ|x)`` has
      exact zeros, so whole columns may be zero), ``"peaked"`` (rows of ``p(θ|x)``
      nearly or exactly one-hot; tiny entries may underflow to 0), ``"any"`` (one of
      these per example, shrinking towards ``"positive"``).
    * ``dtype`` (default ``np.float64``): ``np.float64`` or ``np.float32``.

    Shrinking: towards the first sizes and kind, and the random bulk towards seed 0.
    """
    kind = _check_kind(kind, JOINT_KINDS)
    n_x_sizes = _check_sizes(n_x_sizes, "n_x_sizes")
    n_theta_sizes = _check_sizes(
        n_theta_sizes, "n_theta_sizes", min_size=2 if kind == "sparse" else 1
    )
    dtype = _check_dtype(dtype)
    return _joint_tables(n_x_sizes, n_theta_sizes, kind, dtype)


def _draw_log_evidence(draw, min_log_evidence: float) -> float:
    if min_log_evidence == 0.0:
        return 0.0
    top = math.log10(-min_log_evidence)
    bottom = min(-6.0, top)
    return draw(
        st.one_of(
            st.just(0.0),
            st.floats(bottom, top).map(lambda e: max(-(10.0**e), min_log_evidence)),
        )
    )


def _log_joint64(draw, rng, shape, kind, min_log_evidence):
    """(log p(x, θ), posterior p(θ|x)) in float64; log p(x, θ) = log p(x) + log p(θ|x)."""
    log_evidence = _draw_log_evidence(draw, min_log_evidence)
    concrete = _concrete_kind(draw, kind, shape[-1])
    post = _probs64(draw, rng, shape, concrete, _min_log_prob(np.dtype(np.float64)))
    with np.errstate(divide="ignore"):
        log_post = np.log(post)
    return log_evidence + log_post, post


@st.composite
def _log_joint_rows(draw, sizes, buckets, kind, min_log_evidence, dtype):
    shape = _draw_shape(draw, sizes, buckets)
    rng = np.random.default_rng(draw(_SEEDS))
    log_joint, _ = _log_joint64(draw, rng, shape, kind, min_log_evidence)
    return log_joint.astype(dtype)


def log_joint_rows(
    *,
    sizes: Sequence[int] = _DEFAULT_SIZES,
    batch_shape: Sequence[int] | Sequence[Sequence[int]] = (),
    kind: str = "any",
    min_log_evidence: float = -1e4,
    dtype: Any = np.float64,
) -> st.SearchStrategy[np.ndarray]:
    """Vectors ``log p(x, θ)`` over ``θ`` for one observed ``x``: what a VFE takes.

    Built in float64 as ``log p(x) + log p(θ|x)`` with the log evidence ``log p(x)``
    either exactly 0 or ``-10**e``, ``e`` uniform in ``[-6, log10(-min_log_evidence)]``,
    and the posterior ``p(θ|x)`` drawn by :func:`probability_vectors` of ``kind``. So
    every entry is ``<= 0``, entries are ``-inf`` exactly where the posterior is zero
    (never a whole row), and ``Σ_θ p(x, θ) = p(x) <= 1`` up to ``n * eps`` rounding
    (exactly a normalised log-probability vector when ``log p(x) = 0``).

    * ``sizes`` (default ``(2, 3, 5, 8, 16, 64)``): sizes of ``θ``'s support, fixed
      buckets; shrinks towards the first.
    * ``batch_shape`` (default ``()``): one leading shape or a tuple of shapes used as
      buckets (one ``log p(x)`` per example); shrinks towards the first.
    * ``kind`` (default ``"any"``): the kind of the posterior, as in
      :func:`probability_vectors`; ``"sparse"`` guarantees ``-inf`` entries.
    * ``min_log_evidence`` (default ``-1e4``): the lowest ``log p(x)``, finite, ``<= 0``.
    * ``dtype`` (default ``np.float64``): ``np.float64`` or ``np.float32``.

    Shrinking: towards the first size and batch shape, ``log p(x) = 0``, the first
    kind, and the random bulk towards seed 0.
    """
    kind = _check_kind(kind, PROBABILITY_KINDS)
    sizes = _check_sizes(sizes, "sizes", min_size=2 if kind == "sparse" else 1)
    buckets = _check_batch_shape(batch_shape)
    lo = _check_real(min_log_evidence, "min_log_evidence")
    if lo > 0:
        raise InvalidArgument(f"min_log_evidence={lo!r} must be <= 0")
    dtype = _check_dtype(dtype)
    return _log_joint_rows(sizes, buckets, kind, lo, dtype)


@st.composite
def _belief_and_log_joint(draw, sizes, buckets, kind, joint_kind, support, min_log_ev, dtype):
    shape = _draw_shape(draw, sizes, buckets)
    n = shape[-1]
    rng = np.random.default_rng(draw(_SEEDS))
    log_joint, post = _log_joint64(draw, rng, shape, joint_kind, min_log_ev)
    if kind == "any":
        kinds = ("posterior",) + tuple(k for k in _CONCRETE_KINDS if n >= 2 or k != "sparse")
        kind = draw(st.sampled_from(kinds))
    if kind == "posterior":
        q = post
    else:
        q = _probs64(draw, rng, shape, kind, _min_log_prob(dtype))
        if support == "covered":
            q = np.where(np.isfinite(log_joint), q, 0.0)
            empty = np.sum(q, axis=-1, keepdims=True) == 0
            q = np.where(empty, post, q)
            q = q / np.sum(q, axis=-1, keepdims=True)
    return q.astype(dtype), log_joint.astype(dtype)


def belief_and_log_joint(
    *,
    sizes: Sequence[int] = _DEFAULT_SIZES,
    batch_shape: Sequence[int] | Sequence[Sequence[int]] = (),
    kind: str = "any",
    joint_kind: str = "any",
    support: str = "covered",
    min_log_evidence: float = -1e4,
    dtype: Any = np.float64,
) -> st.SearchStrategy[tuple[np.ndarray, np.ndarray]]:
    """Pairs ``(q, log_joint)`` of equal shape for variational free energy tests.

    ``log_joint`` is drawn as in :func:`log_joint_rows` (``log p(x, θ)`` over ``θ``,
    entries ``<= 0``, some possibly ``-inf`` but never all) and ``q`` is a probability
    vector over the same ``θ`` (normalised in float64, then cast; it may contain zeros).

    * ``sizes`` (default ``(2, 3, 5, 8, 16, 64)``): sizes of ``θ``'s support, fixed
      buckets; shrinks towards the first.
    * ``batch_shape`` (default ``()``): one leading shape or a tuple of shapes used as
      buckets; shrinks towards the first.
    * ``kind`` (default ``"any"``): the kind of ``q``: ``"posterior"`` (``q`` is exactly
      the posterior ``p(θ|x)`` in float64, so ``F(q) = -log p(x)``: the equality case),
      or a kind of :func:`probability_vectors`; ``"any"`` shrinks towards
      ``"posterior"``. With ``support="covered"`` a non-posterior ``q`` is zeroed
      where ``log_joint = -inf`` and renormalised (falling back to the posterior if
      nothing is left), so its kind-specific shape may change.
    * ``joint_kind`` (default ``"any"``): the kind of the posterior inside
      ``log_joint``, as in :func:`log_joint_rows`.
    * ``support`` (default ``"covered"``): ``"covered"``: ``q = 0`` wherever
      ``log_joint = -inf``, so ``F(q)`` is finite; ``"any"``: no such constraint, so
      ``F(q) = +inf`` happens.
    * ``min_log_evidence`` (default ``-1e4``): the lowest ``log p(x)``, finite, ``<= 0``.
    * ``dtype`` (default ``np.float64``): ``np.float64`` or ``np.float32``.

    Shrinking: towards the first size and batch shape, ``log p(x) = 0``, ``q`` the
    posterior, and the random bulk towards seed 0.
    """
    kind = _check_kind(kind, BELIEF_KINDS)
    joint_kind = _check_kind(joint_kind, PROBABILITY_KINDS, "joint_kind")
    support = _check_kind(support, ("covered", "any"), "support")
    needs_two = kind == "sparse" or joint_kind == "sparse"
    sizes = _check_sizes(sizes, "sizes", min_size=2 if needs_two else 1)
    buckets = _check_batch_shape(batch_shape)
    lo = _check_real(min_log_evidence, "min_log_evidence")
    if lo > 0:
        raise InvalidArgument(f"min_log_evidence={lo!r} must be <= 0")
    dtype = _check_dtype(dtype)
    return _belief_and_log_joint(sizes, buckets, kind, joint_kind, support, lo, dtype)
