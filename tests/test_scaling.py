"""vfe.scaling (claim E4): Kaplan's power laws, Chinchilla's parametric loss and compute-optimal
allocation, the log-log fit.

Oracles: 50-digit mpmath evaluations of the published formulas with the published constants,
a dense NumPy grid search over log N on the budget's curve (independent of the closed form),
and ``numpy.polyfit`` in log-log coordinates. Published numbers reproduced (and how close):
Kaplan's ``L(N = 1e9) = 2.3756`` nats (≈ 2.38); Chinchilla's Approach-3 exponents from the printed
α = 0.34, β = 0.28: ``a = 0.4516``, ``b = 0.5484`` (paper: 0.46, 0.54); Gopher's budget
``C = 5.76e23``: ``N_opt = 3.22e10`` (the paper quotes about 40B for Approach 3).
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

from vfe import scaling as sc

MP = O.MP
GOPHER_FLOPS = 5.76e23


def mp_optimum(c, e=1.69, a=406.4, b=410.7, alpha=0.34, beta=0.28):
    """Chinchilla eq. (4) in 50 digits."""
    c, a, b, alpha, beta = (MP.mpf(v) for v in (c, a, b, alpha, beta))
    g = (alpha * a / (beta * b)) ** (1 / (alpha + beta))
    return float(g * (c / 6) ** (beta / (alpha + beta))), float((c / 6) ** (alpha / (alpha + beta)) / g)


def test_kaplan_published_value_at_a_billion_parameters():
    """L(N = 1e9) = (8.8e13/1e9)^0.076 = 2.3756… nats (≈ 2.38), L(D = 1e10) = (5.4e13/1e10)^0.095."""
    want_n = float((MP.mpf("8.8e13") / MP.mpf("1e9")) ** MP.mpf("0.076"))
    want_d = float((MP.mpf("5.4e13") / MP.mpf("1e10")) ** MP.mpf("0.095"))
    assert float(sc.kaplan_loss_n(1e9)) == pytest.approx(want_n, rel=1e-14)
    assert round(want_n, 2) == 2.38
    assert float(sc.kaplan_loss_d(1e10)) == pytest.approx(want_d, rel=1e-14)
    assert float(sc.kaplan_loss_n(np.float32(1e9))) == pytest.approx(want_n, rel=1e-6)


def test_chinchilla_published_exponents_and_gopher_budget():
    """a = β/(α+β) = 0.28/0.62, b = 0.34/0.62 from the printed constants (the paper's Table 2 rounds its
    own fit to 0.46/0.54: 0.01 away); N_opt and D_opt at Gopher's 5.76e23 FLOPs against mpmath."""
    a, b = sc.compute_optimal_exponents()
    assert float(a) == pytest.approx(0.28 / 0.62, rel=1e-15) and float(b) == pytest.approx(0.34 / 0.62, rel=1e-15)
    assert abs(float(a) - 0.46) < 0.01 and abs(float(b) - 0.54) < 0.01
    n, d = sc.compute_optimal(GOPHER_FLOPS)
    want_n, want_d = mp_optimum(GOPHER_FLOPS)
    assert float(n) == pytest.approx(want_n, rel=1e-13) and float(d) == pytest.approx(want_d, rel=1e-13)
    assert 3.2e10 < float(n) < 3.25e10  # 32B with the printed (rounded) constants; ~40B quoted in the paper
    assert float(sc.training_flops(n, d)) == pytest.approx(GOPHER_FLOPS, rel=1e-13)


@pytest.mark.parametrize("c", [1e18, 5.76e23, 1e26])
def test_compute_optimal_against_a_grid_search(c):
    """The closed form against the best of 200,001 points log N on the budget's curve (NumPy, float64):
    the minimiser within one grid step, the minimum within the grid's quadratic error."""
    log_n_opt, log_d_opt = (math.log(float(v)) for v in sc.compute_optimal(c))
    u = np.linspace(log_n_opt - 5.0, log_n_opt + 5.0, 200_001)
    e, a, b, alpha, beta = sc.CHINCHILLA
    loss = e + a * np.exp(-alpha * u) + b * np.exp(-beta * (math.log(c / 6) - u))
    best = np.argmin(loss)
    assert abs(u[best] - log_n_opt) <= u[1] - u[0]
    closed = float(sc.chinchilla_loss(math.exp(log_n_opt), math.exp(log_d_opt)))
    assert closed <= loss[best] + 1e-12 and closed == pytest.approx(loss[best], abs=1e-9)


def test_float32_large_scales_do_not_overflow_and_match_float64():
    """N ~ 1e12, D ~ 1e13, C ~ 1e25 in float32 (and bfloat16 inputs, computed in float32)."""
    n32, d32 = sc.compute_optimal(jnp.float32(1e25))
    n64, d64 = sc.compute_optimal(1e25)
    assert n32.dtype == jnp.float32 and np.isfinite(n32) and np.isfinite(d32)
    assert float(n32) == pytest.approx(float(n64), rel=1e-5) and float(d32) == pytest.approx(float(d64), rel=1e-5)
    loss32 = sc.chinchilla_loss(jnp.float32(1e12), jnp.float32(1e13))
    assert loss32.dtype == jnp.float32
    assert float(loss32) == pytest.approx(1.69 + 406.4 * 1e12**-0.34 + 410.7 * 1e13**-0.28, rel=1e-6)
    bf = sc.kaplan_loss_n(jnp.asarray([1e9, 1e12], jnp.bfloat16))
    assert bf.dtype == jnp.float32
    np.testing.assert_allclose(bf, (8.8e13 / np.asarray(jnp.asarray([1e9, 1e12], jnp.bfloat16), np.float64)) ** 0.076,
                               rtol=1e-6)
    g = jax.grad(lambda n: sc.chinchilla_loss(n, jnp.float32(1e13)))(jnp.float32(1e12))
    assert np.isfinite(g) and g < 0
    # integer counts are accepted
    assert float(sc.kaplan_loss_n(np.asarray([10**9]))[0]) == pytest.approx(float(sc.kaplan_loss_n(1e9)), rel=1e-12)


@settings(max_examples=S.examples(30))
@given(alpha=st.floats(0.01, 2.0), log_x_c=st.floats(0.0, 40.0),
       log_x=hnp.arrays(np.float64, (4, 7), elements=st.floats(0.0, 40.0)),
       noise=hnp.arrays(np.float64, (4, 7), elements=st.floats(-0.1, 0.1)))
def test_fit_matches_polyfit_in_log_log(alpha, log_x_c, log_x, noise):
    """fit_power_law = numpy.polyfit(log x, log L, 1) (α = −slope, log x_c = intercept/α), row by row."""
    log_x = log_x + np.arange(7) * 0.5  # distinct abscissae in every row
    log_loss = alpha * (log_x_c - log_x) + noise
    fit = sc.fit_power_law(np.exp(log_x), np.exp(log_loss))
    for row in range(4):
        slope, intercept = np.polyfit(log_x[row], log_loss[row], 1)
        assert float(fit.alpha[row]) == pytest.approx(-slope, rel=1e-9, abs=1e-12)
        assert float(fit.log_x_c[row]) == pytest.approx(intercept / -slope, rel=1e-7, abs=1e-7)


def test_fit_axis_and_where_are_moveaxis_and_slicing():
    rng = np.random.default_rng(0)
    x = np.exp(rng.uniform(0, 20, (4, 7)))
    y = np.exp(rng.uniform(-1, 1, (4, 7)))
    x[0] = np.geomspace(1e6, 1e12, 7)
    y[0] = (8.8e13 / x[0]) ** 0.076  # Kaplan's L(N): recovered exactly
    full = sc.fit_power_law(x, y)
    assert float(full.alpha[0]) == pytest.approx(0.076, rel=1e-12)
    assert float(full.x_c[0]) == pytest.approx(8.8e13, rel=1e-10)
    along0 = sc.fit_power_law(x.T, y.T, axis=0)
    np.testing.assert_allclose(along0.alpha, full.alpha, rtol=1e-12)
    mask = np.arange(7) < 5
    masked = sc.fit_power_law(x, y, where=mask)
    sliced = sc.fit_power_law(x[:, :5], y[:, :5])
    np.testing.assert_allclose(masked.alpha, sliced.alpha, rtol=1e-12)
    np.testing.assert_allclose(masked.log_x_c, sliced.log_x_c, rtol=1e-10)


def test_argument_errors_name_the_argument():
    with pytest.raises(ValueError, match="`n`"):
        sc.kaplan_loss_n(0.0)
    with pytest.raises(ValueError, match="`d`"):
        sc.chinchilla_loss(1e9, -1.0)
    with pytest.raises(ValueError, match="`c`"):
        sc.compute_optimal(np.array([1e20, 0.0]))
    with pytest.raises(TypeError, match="constants"):
        sc.compute_optimal(1e20, constants=(1.69, 406.4, 410.7, 0.34, 0.28))
    with pytest.raises(ValueError, match="constants.alpha"):
        sc.compute_optimal(1e20, constants=sc.CHINCHILLA._replace(alpha=0.0))
    with pytest.raises(ValueError, match="`d`"):
        sc.chinchilla_loss(np.ones(3), np.ones(4))
    with pytest.raises(ValueError, match="same shape"):
        sc.fit_power_law(np.ones(3), np.ones(4))
    with pytest.raises(TypeError, match="where"):
        sc.fit_power_law(np.ones(3), np.ones(3), where=np.ones(3))
    with pytest.raises(TypeError, match="`x`"):
        sc.power_law(True, 1.0, 1.0)
