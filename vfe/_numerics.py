"""Numerical building blocks with derivatives that stay NaN-free at the edges.

The quantities of information theory are sums of terms ``w * x`` where ``w`` is a
probability and ``x`` a logarithm. At ``w = 0`` the term is defined as ``0`` (the
convention ``0 log 0 = 0``) even when ``x = -inf``. Written naively, the *value* can be
fixed with ``jnp.where`` but the *derivative* cannot: ``0 * inf`` or ``0 / 0`` appears
in the backward pass and poisons every gradient with NaN. The helpers here carry their
own JVP rules (so both forward and reverse mode work):

* a derivative that is mathematically ``±inf`` (e.g. ``d/dp p log p`` at ``p = 0``) is
  returned as ``±finfo(dtype).max``, so that a zero tangent times it is still ``0``;
* a term multiplied by an exactly zero weight contributes ``0`` to the derivative with
  respect to ``x``.

References:
  TensorFlow's ``tf.math.multiply_no_nan`` and ``tf.math.xlogy``; the JAX FAQ entry
  "Gradients contain NaN where using where".
"""

from __future__ import annotations

import math

import jax
import jax.numpy as jnp
from jaxtyping import Array, Float


def compute_dtype(dtype) -> jnp.dtype:
    """The dtype reductions accumulate in: at least float32 (bfloat16/float16 → float32)."""
    return jnp.promote_types(dtype, jnp.float32)


def result_compute_dtype(*arrays) -> jnp.dtype:
    """:func:`compute_dtype` of the arrays' promoted dtype (what a function of them accumulates in)."""
    return compute_dtype(jnp.result_type(*arrays))


def upcast(x: Array) -> Array:
    """``x`` cast to :func:`compute_dtype` of its dtype."""
    return x.astype(compute_dtype(x.dtype))


def two_difference(x: Array, y: Array) -> tuple[Array, Array]:
    """``(s, e)`` with ``s = fl(x - y)`` and ``s + e = x - y`` exactly, for finite ``x``, ``y`` whose
    difference does not overflow (TwoSum: D. E. Knuth, *TAOCP* vol. 2, 3rd ed., §4.2.2, Theorem B;
    six operations, no branch, whatever the magnitudes). Used to carry ``a - b`` exactly when the two
    logit tensors of a KL divergence differ by an offset."""
    s = x - y
    x_rounded = s + y
    y_rounded = x_rounded - s
    return s, (x - x_rounded) + (y_rounded - y)


def exact_gap(x: Array, y: Array, ref: Array, ref_lo: Array) -> Array:
    """``(x - y) - (ref + ref_lo)`` with ``x - y`` carried exactly (:func:`two_difference`): where
    ``x - y ≈ ref`` the subtraction of ``ref`` is exact (Sterbenz) and the result keeps its relative
    accuracy whatever the magnitudes of ``x``, ``y`` and ``ref``; elsewhere its error is relative to
    the result. The log-ratio of two logit tensors that differ by an offset."""
    s, e = two_difference(x, y)
    return ((s - ref) + e) - ref_lo


def fori_loop_carrying(count: int, body, carry, *invariants):
    """``lax.fori_loop(0, count, ...)`` of ``carry = body(i, carry, *invariants)``, the loop-invariant
    arrays carried through the loop behind one optimization barrier each rather than closed over.
    XLA:CPU computes bfloat16 dots in float32 and, for a closed-over bfloat16 weight matrix,
    converted all of it once before the loop (a temporary as large as the matrix; measured with
    jax 0.10.2 — neither a barrier on the slices nor carrying without one prevented it); this way
    each slice is converted as it is used. (One barrier per array: a joint one would make each vary
    over every mesh axis that any varies over, under :func:`jax.shard_map`.)"""
    def step(i, state):
        carry, invariants = state
        invariants = tuple(jax.lax.optimization_barrier(x) for x in invariants)
        return body(i, carry, *invariants), invariants

    return jax.lax.fori_loop(0, count, step, (carry, invariants))[0]


def shift_across(collective, x: Array, axis_name: str) -> Array:
    """``collective`` (:func:`jax.lax.pmax` or :func:`jax.lax.pmin`) of ``x`` over ``axis_name``,
    without a derivative. For a row maximum that only shifts a sum of exponentials (whose derivative
    cancels), so nothing is lost; and JAX has no derivative rule for ``pmax``/``pmin``, which a
    second derivative (reverse over reverse) would otherwise need."""
    return collective(jax.lax.stop_gradient(x), axis_name)


def from_holder(value: Array, held: Array, axis_name: str | None = None) -> Array:
    """``Σ_k [held on k] value``: the value on the device that holds a label (``psum`` over
    ``axis_name``; unsharded, ``value`` where ``held``), NaN where none holds it — a label outside
    ``[0, V)``, whose loss is NaN as the gather of the materialised logits gives — rather than a
    plausible loss without its label term."""
    total, holders = jnp.where(held, value, 0.0), held.astype(value.dtype)
    if axis_name is not None:
        total, holders = jax.lax.psum((total, holders), axis_name)
    return jnp.where(holders > 0, total, jnp.nan)


def finite_or_max(x: Array) -> Array:
    """``x`` with ``±inf`` replaced by ``±finfo.max`` and NaN by ``0``.

    Used only inside derivative rules, where an infinite slope must not turn a zero
    tangent into NaN.
    """
    big = jnp.finfo(x.dtype).max
    return jnp.nan_to_num(x, nan=0.0, posinf=big, neginf=-big)


@jax.custom_jvp
def mul_no_nan(w: Array, x: Array) -> Array:
    r"""``w * x``, and exactly ``0`` wherever ``w == 0`` (even if ``x`` is ±inf or NaN).

    .. math:: \operatorname{mul\_no\_nan}(w, x) = \begin{cases} 0 & w = 0 \\ w x & \text{else}\end{cases}

    Derivatives: ``d/dw = x`` (clamped to finite), ``d/dx = w``.
    """
    return jnp.where(w == 0, jnp.zeros_like(w * x), w * x)


@mul_no_nan.defjvp
def _mul_no_nan_jvp(primals, tangents):
    w, x = primals
    w_dot, x_dot = tangents
    out = mul_no_nan(w, x)
    return out, w_dot * finite_or_max(x) + jnp.where(w == 0, 0.0, w) * jnp.where(w == 0, 0.0, x_dot)


@jax.custom_jvp
def xlogy(x: Array, y: Array) -> Array:
    r"""``x log y`` with the convention ``0 log y = 0`` for every ``y ≥ 0``.

    .. math:: \operatorname{xlogy}(x, y) = \begin{cases} 0 & x = 0 \\ x\log y & \text{else}\end{cases}

    ``x > 0, y = 0`` gives ``-inf``. Derivatives: ``d/dx = log y`` and
    ``d/dy = x / y`` (``0`` where ``x = 0``), both clamped to ``±finfo.max``.
    """
    safe_y = jnp.where(x == 0, jnp.ones_like(y), y)
    return jnp.where(x == 0, jnp.zeros_like(x * safe_y), x * jnp.log(safe_y))


@xlogy.defjvp
def _xlogy_jvp(primals, tangents):
    x, y = primals
    x_dot, y_dot = tangents
    safe_y = jnp.where(x == 0, jnp.ones_like(y), y)
    d_dx = finite_or_max(jnp.log(y))
    d_dy = finite_or_max(jnp.where(x == 0, 0.0, x / safe_y))
    return xlogy(x, y), x_dot * d_dx + y_dot * d_dy


# Taylor coefficients (-1)^k / k! of psi(d) = e^{-d} - 1 + d = sum_{k >= 2} (-d)^k / k!. On
# |d| <= 1/2 the tail after degree K is below 2 (1/2)^(K-1) / K! relative to psi: K = 17 for
# float64 (< 1e-18), K = 10 for float32 (< 1e-9), and fewer terms are cheaper on large inputs.
_PSI_SERIES_RADIUS = 0.5


def _psi_coeffs(dtype) -> tuple[float, ...]:
    degree = 17 if jnp.finfo(dtype).bits > 32 else 10
    return tuple((-1.0) ** k / math.factorial(k) for k in range(2, degree + 1))


def kl_term(p: Float[Array, "..."], q: Float[Array, "..."], d: Float[Array, "..."]) -> Array:
    r"""One non-negative term of the KL divergence, computed without cancellation.

    .. math::
        t(p, q) = p\log\frac{p}{q} - p + q = p\,\psi(d), \qquad
        d = \log p - \log q,\quad \psi(d) = e^{-d} - 1 + d \ge 0.

    Summed over a pair of *normalised* distributions the ``-p + q`` parts cancel
    exactly, so :math:`\sum_i t_i = \mathrm{KL}(p\|q)`; but each term is ``≥ 0`` on its
    own, so the sum is never negative and, for ``p ≈ q``, it is not the small difference
    of two large sums (the cancellation that makes ``Σ p log(p/q)`` negative in float32).
    The caller supplies ``d`` computed accurately (e.g. ``-log1p((q-p)/p)``).

    Edge cases: ``p = 0`` gives ``q``; ``p > 0, q = 0`` gives ``+inf``.
    For ``|d| ≤ 1/2`` ψ is evaluated by its Taylor series (relative error a few ulps);
    elsewhere ``p (d - 1) + q`` loses at most a factor ~10 to cancellation.
    This function is used inside custom derivative rules; its own derivative is not used.
    """
    small = jnp.abs(d) <= _PSI_SERIES_RADIUS
    ds = jnp.where(small, d, 0.0)
    series = jnp.zeros_like(ds)
    for c in reversed(_psi_coeffs(ds.dtype)):
        series = series * ds + c
    series = series * ds * ds
    general = mul_no_nan(p, d - 1.0) + q
    term = jnp.where(small, p * series, general)
    term = jnp.where(p == 0, q, term)
    return jnp.maximum(term, 0.0)
