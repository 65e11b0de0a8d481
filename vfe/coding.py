r"""Code lengths: log-likelihood as bits, Shannon code lengths, the Kraft sum (claim A7).

A symbol of probability ``p`` costs ``-log₂ p`` bits under an ideal code; a prefix code can
realise the integer lengths :math:`\ell_i = \lceil -\log_2 p_i\rceil` (Shannon), because they
satisfy the Kraft inequality :math:`\sum_i 2^{-\ell_i} \le \sum_i p_i = 1`, and their expected
length is within one bit of the entropy: :math:`H_2(p) \le \mathbb E_p[\ell] < H_2(p) + 1`.

Conventions:

* Lengths and expected lengths are in **bits**; :func:`code_length_bits` converts a
  log-probability in nats.
* ``p = 0`` gets length ``+inf`` (the symbol needs no codeword): it contributes
  ``2^{-inf} = 0`` to the Kraft sum and ``0 · inf = 0`` to the expected length.
* Exactness: :func:`shannon_code_lengths` is exact for every positive normal float (it reads
  the binary exponent; ``p = 2^{-k}`` gives exactly ``k``). ``ceil(-log2(p))`` in floating
  point is off by one for ``p`` one ulp below a power of two (``-log₂ p`` rounds to the
  integer), and on XLA:CPU in float64 even at some exact powers of two. :func:`kraft_sum`
  forms ``2^{-ℓ}`` exactly for integer ``ℓ`` (``exp2`` in XLA is not exact).
* Subnormal probabilities (``0 < p < finfo(dtype).tiny``), which XLA on CPU flushes to zero,
  are treated as 0 (length ``+inf``). Lengths above ``-log₂ tiny`` (126 in float32, 1022 in
  float64) likewise give ``2^{-ℓ} = 0``.
* bfloat16/float16 inputs are computed in float32; results have dtype
  ``promote_types(dtype, float32)``; integer lengths are accepted by :func:`kraft_sum` and
  :func:`expected_code_length`.

References:
  Cover & Thomas, *Elements of Information Theory*, 2nd ed., §5.2 (Kraft), §5.4 (Shannon
  code, Theorem 5.4.1); C. E. Shannon (1948), §9.
"""

from __future__ import annotations

import functools
import math

import jax
import jax.numpy as jnp
from jaxtyping import Array, Float

from vfe import _checks
from vfe._numerics import compute_dtype, mul_no_nan, upcast

__all__ = [
    "code_length_bits",
    "expected_code_length",
    "kraft_sum",
    "shannon_code_lengths",
]

_jit_axis = functools.partial(jax.jit, static_argnames=("axis",))


def _lengths(func: str, lengths) -> jax.Array:
    """Lengths as a floating array: floating dtypes as given, integers in the default float dtype."""
    dtype = lengths.dtype if hasattr(lengths, "dtype") else jnp.result_type(lengths)
    if jnp.issubdtype(dtype, jnp.integer) and not jnp.issubdtype(dtype, jnp.bool_):
        return jnp.asarray(lengths).astype(jnp.result_type(float))
    return _checks.floating(func, "lengths", lengths)


def code_length_bits(log_prob_nats: Float[Array, "*shape"]) -> Float[Array, "*shape"]:
    r"""Ideal code length in bits of an outcome with log-probability ``log p`` (nats).

    .. math:: L(x) = -\log_2 p(x) = -\frac{\log p(x)}{\log 2}

    A model's negative log-likelihood is the length of the data under the code it defines
    (arithmetic coding attains it within 2 bits for a whole sequence). ``-inf`` gives
    ``+inf``. Perplexity is :math:`2^{L/T}` for ``T`` tokens.

    Args:
      log_prob_nats: ``log p(x)`` in nats, any shape.

    Returns:
      ``-log₂ p(x)``, same shape.
    """
    x = upcast(_checks.floating("code_length_bits", "log_prob_nats", log_prob_nats))
    return -x / math.log(2.0)


def shannon_code_lengths(probs: Float[Array, "*shape"]) -> Float[Array, "*shape"]:
    r"""Shannon code lengths :math:`\ell = \lceil -\log_2 p\rceil`, exactly, elementwise.

    .. math:: \ell = \lceil -\log_2 p\rceil = 1 - e,\qquad p = m\,2^{e},\ m\in[\tfrac12, 1)

    (``frexp``): for ``m = 1/2`` the logarithm is the integer ``1 - e``, and otherwise
    ``-\log_2 p = -e - \log_2 m`` with ``-\log_2 m \in (0, 1)``. No logarithm is rounded, so
    ``p = 2^{-k}`` gives exactly ``k`` and ``p`` one ulp below it gives ``k + 1``.

    Edge cases: ``p = 0`` (and subnormal ``p``) gives ``+inf``; ``p > 1`` gives the formula's
    non-positive value; negative or NaN ``p`` gives NaN; ``p = +inf`` gives ``-inf``.

    Args:
      probs: probabilities, any shape (elementwise; no axis).

    Returns:
      the lengths in bits, as floats (to hold ``+inf``), same shape, dtype
      ``promote_types(probs.dtype, float32)``. Their derivative is 0 (a step function).

    References: Cover & Thomas, §5.4 (the Shannon code) and Theorem 5.4.1.
    """
    p = _checks.floating("shannon_code_lengths", "probs", probs)
    return _shannon(p)


@jax.jit
def _shannon(p):
    p = jax.lax.stop_gradient(upcast(p))
    tiny = jnp.finfo(p.dtype).tiny
    normal = (p >= tiny) & jnp.isfinite(p)
    _, exponent = jnp.frexp(jnp.where(normal, p, 1.0))
    out = jnp.where(normal, 1 - exponent.astype(p.dtype), jnp.nan)
    out = jnp.where((p >= 0) & (p < tiny), jnp.inf, out)
    return jnp.where(jnp.isposinf(p), -jnp.inf, out)


def kraft_sum(lengths: Float[Array, "*batch n"], *, axis: int = -1) -> Float[Array, "*batch"]:
    r"""The Kraft sum :math:`\sum_i 2^{-\ell_i}` of codeword lengths.

    .. math:: K(\ell) = \sum_i 2^{-\ell_i} \;\le\; 1 \iff \text{a prefix code with lengths } \ell \text{ exists}

    For Shannon lengths :math:`K \le \sum_i p_i` (claim A7). Integer-valued lengths give
    :math:`2^{-\ell}` exactly (built from the exponent, not ``exp2``); other values use
    ``exp2``. ``+inf`` contributes 0.

    Args:
      lengths: codeword lengths in bits, shape ``(*batch, n)``, floating or integer.
      axis: the axis holding the alphabet.

    Returns:
      ``K``, shape ``(*batch,)``.

    References: Cover & Thomas, Theorem 5.2.1 (Kraft) and 5.5.1 (McMillan).
    """
    lengths = _lengths("kraft_sum", lengths)
    return _kraft(lengths, axis=_checks.axis("kraft_sum", axis, lengths.ndim))


@_jit_axis
def _kraft(lengths, axis):
    ell = upcast(lengths)
    whole = (ell == jnp.round(ell)) & jnp.isfinite(ell)
    # clip before the integer cast: 2^{-ℓ} is 0 or +inf beyond ±2000 in every dtype
    k = jnp.clip(jnp.where(whole, ell, 0.0), -2000, 2000).astype(jnp.int32)
    exact = jnp.ldexp(jnp.ones_like(ell), -k)
    return jnp.sum(jnp.where(whole, exact, jnp.exp2(-ell)), axis=axis)


def expected_code_length(probs: Float[Array, "*batch n"], lengths: Float[Array, "*batch n"], *,
                         axis: int = -1) -> Float[Array, "*batch"]:
    r"""Expected codeword length :math:`\mathbb E_p[\ell] = \sum_i p_i \ell_i` in bits.

    .. math:: \mathbb E_p[\ell] = \sum_i p_i\,\ell_i,\qquad
              H_2(p) \le \mathbb E_p[\lceil -\log_2 p\rceil] < H_2(p) + 1

    Symbols with ``p_i = 0`` contribute 0 even if ``ℓ_i = +inf``; ``p_i > 0`` with
    ``ℓ_i = +inf`` gives ``+inf``. With :func:`shannon_code_lengths` the bounds above hold
    (claim A7; ``H_2 = H / \log 2`` from :func:`vfe.information.entropy`), with equality on
    the left iff every ``p_i`` is a power of two.

    Args:
      probs: ``p``, shape ``(*batch, n)``.
      lengths: ``ℓ`` in bits, same shape, floating or integer.
      axis: the axis holding the alphabet.

    Returns:
      ``E_p[ℓ]`` in bits, shape ``(*batch,)``.

    References: Cover & Thomas, Theorem 5.4.1.
    """
    func = "expected_code_length"
    p = _checks.floating(func, "probs", probs)
    lengths = _lengths(func, lengths)
    _checks.same_shape(func, ("probs", "lengths"), p, lengths)
    return _expected(p, lengths, axis=_checks.class_axis(func, "probs", p, axis))


@_jit_axis
def _expected(p, lengths, axis):
    dtype = compute_dtype(jnp.result_type(p, lengths))
    return jnp.sum(mul_no_nan(p.astype(dtype), lengths.astype(dtype)), axis=axis)
