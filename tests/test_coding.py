"""vfe.coding against exact rational arithmetic (fractions) and a 50-digit mpmath entropy: Shannon
lengths are exact (powers of two and their neighbours included), the Kraft inequality
Σ 2^{-ℓ} ≤ Σ p and the bounds H ≤ E[ℓ] < H + 1 hold exactly for the lengths vfe returns
(claim A7), and the floating sums match the exact ones.

Tolerances (stated once): the lengths are compared exactly. Kraft sums and expected lengths are
sums of n non-negative terms, each exact or rounded once: ``oracle.rtol(dtype, n)`` relative to
the exact sum. ``code_length_bits``: ``rtol(dtype)`` relative.
"""

from __future__ import annotations

import math
from fractions import Fraction

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from hypothesis.extra import numpy as hnp

import oracle as O
import strategies as S
import vfe
from vfe import coding as C

FLOATS = S.FLOATS
MP = O.MP


# ----------------------------------------------------------------------------- exact oracles


def o_length(p) -> float:
    """``⌈-log₂ p⌉`` of the exact binary value of ``p``: the least integer ``ℓ`` with ``2^{-ℓ} ≤ p``."""
    f = Fraction(float(p))
    if f == 0:
        return math.inf
    ell = f.denominator.bit_length() - f.numerator.bit_length()  # within one of the answer
    while Fraction(2) ** -ell > f:
        ell += 1
    while Fraction(2) ** -(ell - 1) <= f:
        ell -= 1
    return float(ell)


def o_kraft(lengths) -> Fraction:
    return sum((Fraction(2) ** -int(v) for v in lengths if v != math.inf), Fraction(0))


def o_expected(probs, lengths) -> Fraction:
    return sum((Fraction(float(p)) * int(v) for p, v in zip(probs, lengths) if p != 0), Fraction(0))


def o_entropy_bits(probs):
    return -MP.fsum(O.mpf(p) * MP.log(O.mpf(p), 2) for p in probs if p != 0)


def _lengths_oracle(p):
    return np.vectorize(o_length, otypes=[np.float64])(np.asarray(p, np.float64))


# ----------------------------------------------------------------------------- strategies


@st.composite
def near_powers_of_two(draw, dtype, shape=(S.BATCH, 16)):
    """``2^{-k}`` (``k`` up to 125, all normal in float32) and its neighbours one ulp below and above."""
    k = draw(hnp.arrays(np.int64, shape, elements=st.integers(0, 125)))
    p = (2.0 ** -k.astype(np.float64)).astype(dtype)
    side = draw(hnp.arrays(np.int64, shape, elements=st.integers(-1, 1)))
    below, above = np.nextafter(p, dtype(0)), np.nextafter(p, dtype(2))
    return np.where(side < 0, below, np.where(side > 0, above, p)).astype(dtype)


@st.composite
def dyadic(draw, n=8):
    """A distribution of powers of two summing to 1 exactly: split a random symbol in halves n - 1 times."""
    p = [1.0]
    for _ in range(n - 1):
        i = draw(st.integers(0, len(p) - 1))
        p[i] /= 2
        p.append(p[i])
    return np.array(draw(st.permutations(p)))


def _j(x):
    return jnp.asarray(x)


# ============================================================================ lengths


@pytest.mark.parametrize("dtype", FLOATS)
@settings(max_examples=S.examples(20))
@given(data=st.data())
def test_shannon_lengths_are_exact(dtype, data):
    """Probability rows (zeros included: +inf) and powers of two with their one-ulp neighbours."""
    p = np.concatenate([S.cast(data.draw(S.probs(16)), dtype), data.draw(near_powers_of_two(dtype))])
    got = C.shannon_code_lengths(_j(p))
    assert got.dtype == dtype and got.shape == p.shape
    assert np.array_equal(np.asarray(got, np.float64), _lengths_oracle(p))


@pytest.mark.parametrize("dtype", FLOATS)
def test_naive_ceil_log2_is_off_by_one_where_vfe_is_exact(dtype):
    """``ceil(-log2(p))`` rounds ``-log₂ p`` to the integer ``k`` for ``p`` one ulp below ``2^{-k}``
    (true length ``k + 1``): the exact ``-log₂ p = k + O(eps)`` is not representable next to ``k``."""
    k = np.arange(1, 120)
    exact = (2.0 ** -k).astype(dtype)
    below = np.nextafter(exact, dtype(0))
    naive = jax.jit(lambda p: jnp.ceil(-jnp.log2(p)))
    assert np.any(np.asarray(naive(below)) != k + 1)
    assert np.array_equal(np.asarray(C.shannon_code_lengths(below)), k + 1)
    assert np.array_equal(np.asarray(C.shannon_code_lengths(exact)), k)


def test_edge_values():
    p = np.array([0.0, 1e-45, 1.0, 3.0, -0.5, np.nan, np.inf], np.float32)  # 1e-45: subnormal in float32
    got = np.asarray(C.shannon_code_lengths(p))
    assert got[0] == np.inf and got[1] == np.inf and got[2] == 0 and got[3] == -1 and got[6] == -np.inf
    assert np.isnan(got[4]) and np.isnan(got[5])
    assert float(C.kraft_sum(np.array([np.inf, 1.0, np.inf]))) == 0.5
    assert float(C.expected_code_length(np.array([0.0, 1.0]), np.array([np.inf, 0.0]))) == 0.0
    assert float(C.expected_code_length(np.array([0.5, 0.5]), np.array([np.inf, 1.0]))) == np.inf


# ============================================================================ Kraft and the entropy bounds


@pytest.mark.parametrize("dtype", FLOATS)
@settings(max_examples=S.examples(20))
@given(data=st.data())
def test_kraft_inequality_and_entropy_bounds_hold_exactly(dtype, data):
    """For the lengths vfe returns, in exact arithmetic on the cast probabilities (which sum to
    Σp = 1 up to rounding): Σ 2^{-ℓ} ≤ Σ p and H ≤ E[ℓ] < H + Σ p (claim A7); and the floating
    kraft_sum and expected_code_length match the exact sums."""
    n = data.draw(S.sizes())
    p = S.cast(data.draw(S.probs(n)), dtype)
    lengths = C.shannon_code_lengths(_j(p))
    kraft = C.kraft_sum(lengths)
    expected = C.expected_code_length(_j(p), lengths)
    assert kraft.dtype == expected.dtype == dtype and kraft.shape == (S.BATCH,)
    ell = np.asarray(lengths, np.float64)
    for i in range(S.BATCH):
        total = sum((Fraction(float(v)) for v in p[i]), Fraction(0))
        k_exact, e_exact = o_kraft(ell[i]), o_expected(p[i], ell[i])
        assert k_exact <= total, (k_exact, total)
        h = o_entropy_bits(p[i])
        e_mp = MP.mpf(e_exact.numerator) / e_exact.denominator
        assert h <= e_mp < h + MP.mpf(total.numerator) / total.denominator, (h, e_mp)
        O.assert_close(kraft[i], float(k_exact), O.rtol(dtype, n) * float(k_exact), "kraft_sum")
        O.assert_close(expected[i], float(e_exact), O.rtol(dtype, n) * float(e_exact), "expected_code_length")


@settings(max_examples=S.examples(20))
@given(p=dyadic())
def test_dyadic_distributions_meet_the_entropy_bound_with_equality(p):
    """p = 2^{-ℓ}: Shannon lengths are -log₂ p, the Kraft sum is exactly 1 and E[ℓ] = H exactly."""
    lengths = np.asarray(C.shannon_code_lengths(p))
    assert np.array_equal(lengths, -np.log2(p))  # exact: p is a power of two
    assert float(C.kraft_sum(lengths)) == 1.0
    assert float(C.expected_code_length(p, lengths)) == float(o_entropy_bits(p))
    h_bits = float(vfe.nats_to_bits(vfe.entropy(p)))
    assert abs(float(C.expected_code_length(p, lengths)) - h_bits) <= O.rtol(np.float64, len(p)) * h_bits


@pytest.mark.parametrize("dtype", FLOATS)
def test_kraft_sum_is_exact_for_integer_lengths(dtype):
    """2^{-ℓ} for every ℓ down to the smallest normal number (exp2 in XLA is not exact)."""
    top = 126 if dtype == np.float32 else 1022
    ell = np.arange(-10, top + 1).astype(dtype)
    got = np.asarray(C.kraft_sum(ell[:, None]))
    assert np.array_equal(got, (2.0 ** -ell.astype(np.float64)).astype(dtype))
    assert float(C.kraft_sum(jnp.asarray([1, 2, 3, 3], jnp.int32))) == 1.0
    assert float(C.kraft_sum(np.asarray([1.5], dtype))) == pytest.approx(2 ** -1.5, rel=O.rtol(dtype))


# ============================================================================ bits


@pytest.mark.parametrize("dtype", FLOATS)
@settings(max_examples=S.examples(15))
@given(data=st.data())
def test_code_length_bits_matches_oracle(dtype, data):
    lp = S.cast(data.draw(S.logits(16, masks=True, ties=False)).clip(max=0.0), dtype)
    got = C.code_length_bits(_j(lp))
    assert got.dtype == dtype
    exact = np.vectorize(lambda v: float(-O.mpf(v) / MP.log(2)), otypes=[np.float64])(lp)
    O.assert_close(got, exact, O.rtol(dtype) * np.abs(exact) + np.finfo(dtype).tiny, "code_length_bits")
    # perplexity = 2^{bits per token} = e^{nats per token}
    bits, nats = np.asarray(got, np.float64), -lp.astype(np.float64)
    fin = np.isfinite(nats) & (nats < 80)
    O.assert_close(2.0 ** bits[fin], np.exp(nats[fin]), 2 * O.rtol(dtype) * (1 + nats[fin]) * np.exp(nats[fin]),
                   "2^bits = e^nats")


def test_derivatives():
    g = jax.grad(lambda x: jnp.sum(C.code_length_bits(x)))(jnp.asarray([-1.0, -2.0]))
    assert np.allclose(np.asarray(g), -1 / math.log(2), rtol=O.rtol(np.float64), atol=0)
    g = jax.grad(lambda p: jnp.sum(C.shannon_code_lengths(p)))(jnp.asarray([0.0, 0.3, 0.7]))
    assert np.array_equal(np.asarray(g), [0.0, 0.0, 0.0])
    p = jnp.asarray([0.0, 0.25, 0.75])
    gp, gl = jax.grad(lambda p, ell: C.expected_code_length(p, ell), argnums=(0, 1))(p, C.shannon_code_lengths(p))
    assert np.array_equal(np.asarray(gl), np.asarray(p))
    assert np.array_equal(np.asarray(gp), [np.finfo(np.float64).max, 2.0, 1.0])  # ∂/∂p = ℓ, +inf clamped


# ============================================================================ dtypes, errors


def test_bfloat16_inputs_compute_in_float32():
    p = jnp.asarray([[0.25, 0.5, 0.125, 0.125], [0.1, 0.2, 0.3, 0.4]], jnp.bfloat16)
    up = np.asarray(p, np.float32)
    lengths = C.shannon_code_lengths(p)
    assert lengths.dtype == jnp.float32
    assert np.array_equal(np.asarray(lengths), _lengths_oracle(up))
    assert C.kraft_sum(lengths.astype(jnp.bfloat16)).dtype == jnp.float32
    assert C.expected_code_length(p, lengths).dtype == jnp.float32
    assert C.code_length_bits(jnp.log(p)).dtype == jnp.float32


@pytest.mark.parametrize("call, exc, name", [
    (lambda: C.shannon_code_lengths(jnp.ones(3, jnp.int32)), TypeError, "probs"),
    (lambda: C.shannon_code_lengths(np.ones(3, bool)), TypeError, "probs"),
    (lambda: C.kraft_sum(np.ones(3, bool)), TypeError, "lengths"),
    (lambda: C.kraft_sum(np.ones(3), axis=1), ValueError, "axis"),
    (lambda: C.expected_code_length(np.ones(3) / 3, np.ones(4)), ValueError, "lengths"),
    (lambda: C.expected_code_length(np.ones(3, np.int32), np.ones(3)), TypeError, "probs"),
    (lambda: C.code_length_bits(np.ones(3, np.int64)), TypeError, "log_prob_nats"),
])
def test_bad_input_raises_naming_the_argument(call, exc, name):
    with pytest.raises(exc) as err:
        call()
    assert f"`{name}`" in str(err.value), str(err.value)


def test_public_functions_document_a_formula():
    for name in C.__all__:
        assert ".. math::" in (getattr(C, name).__doc__ or ""), name
