"""vfe.langevin (claim E3): the ULA update, chains, and the exact laws on a Gaussian target.

Oracles: the variance recursion ``v' = (1 − η/σ²)² v + 2η`` iterated in NumPy (independent of the
closed forms under test), ``jax.grad`` of ``vfe.gaussian_log_density`` for the score, and Monte
Carlo with stated tolerances from fixed ``rbg`` keys (fast to compile). Every Monte Carlo
tolerance is ``6`` standard errors (false-failure rate about 2e-9 per statistic, for
approximately normal estimates).

Speed: one chain shape per test, and ``gaussian_score`` (a module-level function) as the score,
so the jitted chain compiles a few times in all.
"""

from __future__ import annotations

import jax
import jax.numpy as jnp
import numpy as np
import pytest
import strategies as S
from hypothesis import given, settings
from hypothesis import strategies as st

import vfe
from vfe import langevin as L

SIGMAS = 6.0  # Monte Carlo tolerance, in standard errors


def key(seed: int):
    return jax.random.key(seed, impl="rbg")


def recursion_fixed_point(std: float, eta: float, iterations: int = 20_000) -> float:
    """Iterate ``v' = a² v + 2η`` from 0 in float64 NumPy until it stops moving (|a| < 1)."""
    a2, v = (1.0 - eta / std**2) ** 2, 0.0
    for _ in range(iterations):
        v_next = a2 * v + 2.0 * eta
        if v_next == v:
            break
        v = v_next
    return v


# ----------------------------------------------------------------------------- closed forms


@settings(max_examples=S.examples(40))
@given(std=st.floats(0.1, 10.0), h=st.floats(0.05, 1.95))
def test_stationary_variance_is_the_fixed_point_of_the_recursion(std, h):
    """E3: σ²/(1 − η/(2σ²)) is where the iterated variance recursion settles, for η = hσ² ∈ (0, 2σ²)."""
    eta = h * std**2
    got = float(L.ula_stationary_variance(np.float64(std), np.float64(eta)))
    assert got == pytest.approx(recursion_fixed_point(std, eta), rel=1e-12)


def test_stationary_variance_in_song_ermon_convention_is_the_quoted_formula():
    """E3 as quoted in CLAIMS.md, σ²/(1 − ε/(4σ²)), holds with ε = 2η (Song & Ermon's step), not with ε = η."""
    std, eps = 1.5, 0.9
    got = float(L.ula_stationary_variance(np.float64(std), np.float64(eps / 2)))
    assert got == pytest.approx(std**2 / (1 - eps / (4 * std**2)), rel=1e-14)
    wrong = float(L.ula_stationary_variance(np.float64(std), np.float64(eps)))
    assert abs(wrong - std**2 / (1 - eps / (4 * std**2))) > 0.1


def test_stationary_variance_edges():
    """η → 0 gives σ² with slope ½; η ≥ 2σ² (divergent chain) gives +inf with a finite (zero) gradient."""
    std = jnp.float64(2.0)
    assert float(L.ula_stationary_variance(std, jnp.float64(0.0))) == 4.0
    assert float(jax.grad(L.ula_stationary_variance, argnums=1)(std, jnp.float64(0.0))) == pytest.approx(0.5)
    for eta in (8.0, 9.0, 1e30):
        assert float(L.ula_stationary_variance(std, jnp.float64(eta))) == np.inf
        g = jax.grad(L.ula_stationary_variance, argnums=(0, 1))(std, jnp.float64(eta))
        assert all(np.isfinite(np.asarray(x)) for x in g)
    # float32 and bfloat16 in, float32 out
    out = L.ula_stationary_variance(jnp.asarray([1.0, 2.0], jnp.bfloat16), jnp.float32(0.5))
    assert out.dtype == jnp.float32
    np.testing.assert_allclose(out, [1 / 0.75, 4 / (1 - 1 / 16)], rtol=1e-6)


@pytest.mark.parametrize("h", [0.3, 1.0, 1.7, 2.0, 2.5])
def test_marginal_after_n_steps_matches_the_iterated_recursions(h):
    """(m_n, v_n) of ula_gaussian_marginal against the mean and variance recursions iterated in NumPy:
    contracting (h < 1), a = 0 (h = 1), oscillating (1 < h < 2), a = −1 and divergent (h ≥ 2)."""
    mu, std, m0, v0 = 0.7, 1.3, -2.0, 0.25
    eta = h * std**2
    a = 1.0 - h
    m, v = m0, v0
    for n in range(13):
        got_m, got_v = L.ula_gaussian_marginal(np.float64(m0), np.float64(v0), np.float64(mu), np.float64(std),
                                               np.float64(eta), n)
        assert float(got_m) == pytest.approx(m, rel=1e-12, abs=1e-12)
        assert float(got_v) == pytest.approx(v, rel=1e-12)
        m, v = mu + a * (m - mu), a * a * v + 2 * eta


def test_score_is_the_gradient_of_the_gaussian_log_density():
    x = jnp.linspace(-3.0, 3.0, 7)
    grad = jax.vmap(jax.grad(lambda x: vfe.gaussian_log_density(x, 0.5, 1.7)))(x)
    np.testing.assert_allclose(L.gaussian_score(x, 0.5, 1.7), grad, rtol=1e-12)


@pytest.mark.parametrize("dtype", [jnp.float32, jnp.bfloat16])
def test_update_formula_and_low_precision(dtype):
    x = jnp.asarray([0.5, -1.0, 2.0], dtype)
    s = jnp.asarray([1.0, 0.25, -3.0], dtype)
    xi = jnp.asarray([0.1, -0.2, 0.3], dtype)
    out = L.langevin_update(x, s, 0.02, xi)
    assert out.dtype == jnp.float32
    x64, s64, xi64 = (np.asarray(a, np.float64) for a in (x, s, xi))
    np.testing.assert_allclose(out, x64 + 0.02 * s64 + np.sqrt(0.04) * xi64, rtol=1e-6)


# ----------------------------------------------------------------------------- sampling

N_CHAINS = 20_000
STEPS = 8  # every chain test runs this many steps on (N_CHAINS,) float64 states: one compilation


def trajectory(seed, x0, mu, std, eta):
    """All STEPS states of N_CHAINS chains from ``x0`` (the one compiled chain of these tests)."""
    return np.asarray(L.ula_chain(key(seed), jnp.full((N_CHAINS,), x0, jnp.float64), L.gaussian_score, eta, STEPS,
                                  score_args=(jnp.float64(mu), jnp.float64(std)), trajectory=True))


def test_one_step_has_the_langevin_transition_law_also_from_bfloat16():
    """From a fixed x, one step is N(x + η∇log p(x), 2η): sample mean and variance within 6 standard
    errors. The state is bfloat16 (x = 3 is exact): the step computes in float32."""
    mu, std, eta, x = 1.0, 2.0, 0.3, 3.0
    out = L.ula_step(key(1), jnp.full((N_CHAINS,), x, jnp.bfloat16), L.gaussian_score, eta, score_args=(mu, std))
    assert out.dtype == jnp.float32
    xs = np.asarray(out, np.float64)
    mean, var = x - eta * (x - mu) / std**2, 2 * eta
    assert abs(xs.mean() - mean) < SIGMAS * np.sqrt(var / N_CHAINS)
    assert abs(xs.var() - var) < SIGMAS * var * np.sqrt(2 / N_CHAINS)


def test_chain_noise_is_standard_normal_and_fresh_at_every_step():
    """The noise recovered from a trajectory, ξ_k = (x_k − x_{k−1} − η s(x_{k−1}))/√(2η), has mean 0,
    variance 1, and no correlation between consecutive steps (6 standard errors each)."""
    mu, std, eta = 0.0, 1.0, 0.5
    traj = trajectory(2, 0.0, mu, std, eta)
    assert traj.shape == (STEPS, N_CHAINS)
    prev = np.concatenate([np.zeros((1, N_CHAINS)), traj[:-1]])
    xi = (traj - prev - eta * (mu - prev) / std**2) / np.sqrt(2 * eta)
    n = xi.size
    assert abs(xi.mean()) < SIGMAS / np.sqrt(n)
    assert abs(xi.var() - 1) < SIGMAS * np.sqrt(2 / n)
    corr = np.mean(xi[1:] * xi[:-1])
    assert abs(corr) < SIGMAS / np.sqrt(xi[1:].size)
    x0 = jnp.full((4,), 1.5)
    np.testing.assert_array_equal(L.ula_chain(key(2), x0, L.gaussian_score, eta, 0, score_args=(mu, std)), x0)


def test_chains_reach_the_biased_stationary_variance_not_the_target_variance():
    """E3: at η = σ² (a = 0: one step forgets the start, here 10) the states have variance
    σ²/(1 − η/(2σ²)) = 2σ² within 6 standard errors, far from σ², and mean μ."""
    mu, std = -1.0, 0.8
    eta = std**2
    xs = trajectory(3, 10.0, mu, std, eta)[-1]
    v = float(L.ula_stationary_variance(std, eta))
    assert v == pytest.approx(2 * std**2)
    assert abs(xs.var() - v) < SIGMAS * v * np.sqrt(2 / N_CHAINS)
    assert abs(xs.var() - std**2) > 20 * v * np.sqrt(2 / N_CHAINS)
    assert abs(xs.mean() - mu) < SIGMAS * np.sqrt(v / N_CHAINS)


def test_raw_keys_are_accepted():
    assert L._key("f", jax.random.PRNGKey(0)).shape == (2,)


# ----------------------------------------------------------------------------- argument errors


def test_argument_errors_name_the_argument():
    x = jnp.zeros(4)
    with pytest.raises(ValueError, match="step_size"):
        L.ula_chain(key(0), x, L.gaussian_score, 0.0, 3, score_args=(0.0, 1.0))
    with pytest.raises(ValueError, match="step_size"):
        L.ula_step(key(0), x, L.gaussian_score, -1e-3, score_args=(0.0, 1.0))
    with pytest.raises(ValueError, match="num_steps"):
        L.ula_chain(key(0), x, L.gaussian_score, 0.1, -1, score_args=(0.0, 1.0))
    with pytest.raises(TypeError, match="num_steps"):
        L.ula_chain(key(0), x, L.gaussian_score, 0.1, 2.0, score_args=(0.0, 1.0))
    with pytest.raises(TypeError, match="key"):
        L.ula_step(0, x, L.gaussian_score, 0.1, score_args=(0.0, 1.0))
    with pytest.raises(TypeError, match="x0"):
        L.ula_chain(key(0), jnp.zeros(4, jnp.int32), L.gaussian_score, 0.1, 1, score_args=(0.0, 1.0))
    with pytest.raises(ValueError, match="score_fn"):
        L.ula_chain(key(0), x, lambda x: jnp.zeros(3), 0.1, 1)
    with pytest.raises(TypeError, match="score_fn"):
        L.ula_chain(key(0), x, "score", 0.1, 1)
    with pytest.raises(TypeError, match="trajectory"):
        L.ula_chain(key(0), x, L.gaussian_score, 0.1, 1, score_args=(0.0, 1.0), trajectory="yes")
    with pytest.raises(ValueError, match="step_size"):
        L.ula_step(key(0), x, L.gaussian_score, jnp.ones(3), score_args=(0.0, 1.0))
    with pytest.raises(ValueError, match="noise"):
        L.langevin_update(x, x, 0.1, jnp.zeros(3))
    with pytest.raises(ValueError, match="std"):
        L.ula_stationary_variance(0.0, 0.1)
    with pytest.raises(ValueError, match="step_size"):
        L.ula_gaussian_marginal(0.0, 0.0, 0.0, 1.0, -0.1, 3)
