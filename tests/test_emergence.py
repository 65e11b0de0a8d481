"""vfe.emergence (claim E5): exact match from the per-token loss or probabilities, the linear
metric it is contrasted with, and where a power-law loss reaches a given accuracy.

Oracles: 50-digit mpmath products and exponentials, and NumPy slicing for masks. One shape per
reduction test ``(B, 16)`` so the jitted functions compile once per dtype.
"""

from __future__ import annotations

import math

import jax
import jax.numpy as jnp
import numpy as np
import oracle as O
import pytest
import strategies as S
from hypothesis import given, settings
from hypothesis import strategies as st
from hypothesis.extra import numpy as hnp

from vfe import emergence as em
from vfe import scaling

MP = O.MP
SHAPE = (S.BATCH, 16)


def _probs(low):
    return hnp.arrays(np.float64, SHAPE, elements=st.floats(low, 1.0))


@settings(max_examples=S.examples(15))
@given(p=_probs(1e-3), data=st.data())
def test_exact_match_is_the_product_and_exp_of_minus_length_times_ce(p, data):
    """E5: ∏_{i≤L} p_i (mpmath, on the slice) = exact_match_from_token_probs(p, where=first L) =
    exact_match(−mean log p, L), in float32 and float64 (results below finfo.tiny are flushed to 0)."""
    length = data.draw(st.integers(1, 16))
    mask = np.arange(16) < length
    for dtype, rtol in ((np.float64, 1e-13), (np.float32, 1e-4)):
        q = S.cast(p, dtype)
        want = np.array([float(MP.fprod(O.mpf(v) for v in row[:length])) for row in q])
        got = np.asarray(em.exact_match_from_token_probs(q, where=mask))
        tiny = np.finfo(dtype).tiny
        np.testing.assert_allclose(got, want, rtol=rtol, atol=tiny)
        ce = -np.mean(np.log(q[:, :length].astype(np.float64)), axis=-1)
        np.testing.assert_allclose(em.exact_match(ce.astype(dtype), float(length)), want, rtol=rtol * 10, atol=tiny)


def test_edges_zero_probability_empty_target_infinite_loss():
    """A zero probability gives 0 with the gradient ∏_{j≠i} p_j; L = 0 gives 1 even at CE = ∞; CE = ∞ gives 0;
    all gradients finite."""
    p = jnp.array([[0.5, 0.0, 0.25, 1.0] + [1.0] * 12, [0.5] * 16])
    assert np.asarray(em.exact_match_from_token_probs(p))[0] == 0.0
    g = jax.grad(lambda p: jnp.sum(em.exact_match_from_token_probs(p)))(p)
    np.testing.assert_allclose(g[0, :4], [0.0, 0.125, 0.0, 0.0])
    np.testing.assert_allclose(g[1, 0], 0.5**15)
    assert float(em.exact_match(jnp.inf, 0.0)) == 1.0 and float(em.exact_match(jnp.inf, 3.0)) == 0.0
    ce, n = jnp.array([jnp.inf, jnp.inf, 0.0, 2.0]), jnp.array([0.0, 3.0, 0.0, 5.0])
    d_ce, d_n = jax.grad(lambda c, m: jnp.sum(em.exact_match(c, m)), argnums=(0, 1))(ce, n)
    np.testing.assert_allclose(d_ce, [0.0, 0.0, 0.0, -5 * math.exp(-10)])  # −L·EM
    # −CE·EM: 0 where EM = 0; at L = 0, CE = ∞ (EM jumps from 1 to 0) the −∞ is clamped to −finfo.max
    np.testing.assert_allclose(d_n, [-np.finfo(np.float64).max, 0.0, 0.0, -2 * math.exp(-10)])
    assert float(em.expected_token_edit_distance(jnp.inf, 0.0)) == 0.0
    out = em.exact_match(jnp.asarray([0.1, 0.2], jnp.bfloat16), 10)
    assert out.dtype == jnp.float32
    np.testing.assert_allclose(out, np.exp(-10 * np.asarray(jnp.asarray([0.1, 0.2], jnp.bfloat16), np.float64)),
                               rtol=1e-6)


def test_edit_distance_is_accurate_at_small_loss_and_bounds_the_expected_errors():
    """L(1 − e^{−CE}) for CE down to 1e-30 (expm1: relative error of a few ulps in float32, where
    1 − exp(−CE) is 0), and Σ(1 − p_i) ≤ L(1 − e^{−mean(−log p)}) (AM–GM), equal for equal p_i."""
    ce = np.array([1e-30, 1e-10, 1e-3, 0.5, 5.0], np.float32)
    want = [float(20 * -MP.expm1(-O.mpf(c))) for c in ce]
    np.testing.assert_allclose(em.expected_token_edit_distance(ce, 20.0), want, rtol=1e-6)
    p = np.random.default_rng(0).uniform(0.01, 1.0, SHAPE)
    p[1] = 0.3  # all equal: equality
    errors = np.asarray(em.expected_token_errors(p))
    bound = np.asarray(em.expected_token_edit_distance(-np.mean(np.log(p), axis=-1), 16.0))
    np.testing.assert_allclose(errors, np.sum(1 - p, axis=-1), rtol=1e-13)
    assert errors[0] < bound[0] - 1e-3
    assert errors[1] == pytest.approx(bound[1], rel=1e-13)
    masked = em.expected_token_errors(p, where=np.arange(16) < 4, axis=-1)
    np.testing.assert_allclose(masked, np.sum(1 - p[:, :4], axis=-1), rtol=1e-13)
    np.testing.assert_allclose(em.expected_token_errors(p.T, axis=0), errors, rtol=1e-13)


@pytest.mark.parametrize("length", [1.0, 10.0, 50.0])
def test_power_law_loss_reaches_accuracy_q_at_the_closed_form_scale(length):
    """E5: at log N_q (log_scale_at_exact_match) the exact match of CE = (N_c/N)^α is q; the 10–90% width is
    log(log 10/log(10/9))/α for every L, and the curve moves right by log(L)/α."""
    alpha, n_c = 0.3, 1e8
    q = np.array([0.1, 0.5, 0.9])
    log_n = np.asarray(em.log_scale_at_exact_match(q, length, alpha=alpha, n_c=n_c))
    got = em.exact_match(scaling.power_law(np.exp(log_n), n_c, alpha), length)
    np.testing.assert_allclose(got, q, rtol=1e-12)
    assert log_n[2] - log_n[0] == pytest.approx(math.log(math.log(10) / math.log(10 / 9)) / alpha, rel=1e-12)
    at_one = np.asarray(em.log_scale_at_exact_match(q, 1.0, alpha=alpha, n_c=n_c))
    np.testing.assert_allclose(log_n - at_one, math.log(length) / alpha, atol=1e-12)


def test_argument_errors_name_the_argument():
    with pytest.raises(ValueError, match="length"):
        em.exact_match(0.5, -1)
    with pytest.raises(ValueError, match="length"):
        em.exact_match(np.ones(3), np.ones(4))
    with pytest.raises(TypeError, match="probs"):
        em.exact_match_from_token_probs(np.ones((2, 3), np.int32))
    with pytest.raises(TypeError, match="where"):
        em.exact_match_from_token_probs(np.ones((2, 3)), where=np.ones(3))
    with pytest.raises(ValueError, match="where"):
        em.expected_token_errors(np.ones((2, 3)), where=np.ones(4, bool))
    with pytest.raises(ValueError, match="axis"):
        em.exact_match_from_token_probs(np.ones((2, 3)), axis=2)
    with pytest.raises(ValueError, match="alpha"):
        em.log_scale_at_exact_match(0.5, 10, alpha=0.0, n_c=1e8)
