"""vfe.mixture: E-step, M-step, free energy and likelihood against 50-digit mpmath oracles written
here, and EM's guarantees (claim B8) as property tests: along the trajectory F never increases,
F ≥ -log p(x|θ) at every half-step with equality right after each E-step, and the
log-likelihood never decreases; the gradient of -log p(x|θ) equals that of F(q*, θ) at the
posterior q* (the E-step makes F tangent to the surprise).

Tolerances (stated once): ``oracle.rtol(dtype, n) = K · n · eps(dtype)``, ``K = 64``, times the scale
of the terms. For F and log p(x|θ) the scale is ``Σ_i Σ_k q_ik (1 + |log q_ik| + |log π_k| +
|log N(x_i; μ_k, σ_k)|)`` with the exact posterior ``q`` (:func:`_scale`): a rounding of
``log N`` is relative to its size. Monotonicity along the EM trajectory is checked up to that
rounding, ``rtol(dtype, n·K)`` times the scale of the two values compared.

Speed: one bucket of shapes, ``n = 8`` observations and ``K = 3`` components (``BATCH`` rows),
so that each jitted kernel, and the EM scan, compiles once per dtype.
"""

from __future__ import annotations

import math

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from hypothesis.extra import numpy as hnp
from jax.test_util import check_grads

import oracle as O
import strategies as S
from vfe import mixture as M
from vfe.mixture import MixtureParams

FLOATS = S.FLOATS
B, N, K = S.BATCH, 8, 3
STEPS = 20
MP = O.MP
HALF_LOG_2PI = MP.log(2 * MP.pi) / 2


# ----------------------------------------------------------------------------- oracles (mpmath)


def _log_n(x, m, s):
    x, m, s = O.mpf(x), O.mpf(m), O.mpf(s)
    return -((x - m) / s) ** 2 / 2 - MP.log(s) - HALF_LOG_2PI


def _log_joint(x, w, m, s):
    """``[[log π_k + log N(x_i; μ_k, σ_k)]_k]_i`` (``-inf`` where ``π_k = 0``), 50 digits."""
    return [[MP.log(O.mpf(a)) + _log_n(xi, b, c) if a > 0 else -MP.inf for a, b, c in zip(w, m, s)] for xi in x]


def o_responsibilities(x, w, m, s):
    out = []
    for row in _log_joint(x, w, m, s):
        lse = O._lse(row)
        out.append([float(MP.exp(v - lse)) if v != -MP.inf else 0.0 for v in row])
    return np.array(out)


def o_log_likelihood(x, w, m, s):
    return float(MP.fsum(O._lse(row) for row in _log_joint(x, w, m, s)))


def o_free_energy(x, r, w, m, s):
    terms = []
    for ri, row in zip(r, _log_joint(x, w, m, s)):
        for q, lj in zip(ri, row):
            if q == 0:
                continue
            if lj == -MP.inf:
                return math.inf
            q = O.mpf(q)
            terms.append(q * (MP.log(q) - lj))
    return float(MP.fsum(terms))


def o_m_step(x, r):
    x = [O.mpf(v) for v in x]
    r = [[O.mpf(v) for v in row] for row in r]
    n = len(x)
    counts = [MP.fsum(row[k] for row in r) for k in range(len(r[0]))]
    total = MP.fsum(counts)
    data_mean = MP.fsum(x) / n
    data_std = MP.sqrt(MP.fsum((v - data_mean) ** 2 for v in x) / n)
    w, m, s = [], [], []
    for k, nk in enumerate(counts):
        w.append(nk / total)
        if nk == 0:
            m.append(data_mean)
            s.append(data_std)
            continue
        mk = MP.fsum(row[k] * v for row, v in zip(r, x)) / nk
        m.append(mk)
        s.append(MP.sqrt(MP.fsum(row[k] * (v - mk) ** 2 for row, v in zip(r, x)) / nk))
    return [np.array([float(v) for v in a]) for a in (w, m, s)]


def _belief_scale(x, q, w, m, s):
    """Σ_ik q_ik (1 + |log q_ik| + |log π_k| + |log N_ik|), float64: the size of F's terms."""
    x, q, w, m, s = (np.asarray(a, np.float64) for a in (x, q, w, m, s))
    log_n = -0.5 * ((x[:, None] - m) / s) ** 2 - np.log(s) - float(HALF_LOG_2PI)
    t = 1 + np.abs(np.log(np.where(q > 0, q, 1.0))) + np.abs(np.log(np.where(w > 0, w, 1.0))) + np.abs(log_n)
    return float(np.sum(np.where(q > 0, q * t, 0.0)))


def _scale(x, w, m, s):
    """:func:`_belief_scale` at the exact posterior ``q = p(z|x, θ)`` (float64)."""
    x, w, m, s = (np.asarray(a, np.float64) for a in (x, w, m, s))
    live = w > 0
    log_n = -0.5 * ((x[:, None] - m) / s) ** 2 - np.log(s) - float(HALF_LOG_2PI)
    with np.errstate(divide="ignore"):
        lj = np.where(live, np.log(np.where(live, w, 1.0)) + log_n, -np.inf)
    q = np.exp(lj - np.max(lj, -1, keepdims=True))
    return _belief_scale(x, q / q.sum(-1, keepdims=True), w, m, s)


# ----------------------------------------------------------------------------- strategies


def _unit(shape):
    return hnp.arrays(np.float64, shape, elements=st.floats(-1.0, 1.0, allow_subnormal=False))


def _log_uniform(shape, lo, hi):
    a, b = math.log10(lo), math.log10(hi)
    return hnp.arrays(np.float64, shape, elements=st.floats(a, b)).map(lambda u: 10.0 ** u)


@st.composite
def datasets(draw, n=N):
    """``(B, n)`` observations from up to K clusters (centres in ±10, spreads in [0.1, 3])."""
    centres = 10 * draw(_unit((B, K)))
    spreads = draw(_log_uniform((B, K), 0.1, 3.0))
    labels = draw(hnp.arrays(np.int64, (B, n), elements=st.integers(0, K - 1)))
    rows = np.arange(B)[:, None]
    return centres[rows, labels] + spreads[rows, labels] * draw(_unit((B, n)))


@st.composite
def params(draw, zeros=False, lo=0.1, hi=10.0, min_log=-10.0):
    w = draw(S.probs(K, zeros=zeros, min_log=min_log))
    return MixtureParams(w, 10 * draw(_unit((B, K))), draw(_log_uniform((B, K), lo, hi)))


def _cast(dtype, x, p):
    return S.cast(x, dtype), MixtureParams(*(S.cast(a, dtype) for a in p))


def _j(p):
    return MixtureParams(*(jnp.asarray(a) for a in p))


# ============================================================================ against the oracle


@pytest.mark.parametrize("dtype", FLOATS)
@settings(max_examples=S.examples(15))
@given(x=datasets(), p=params(zeros=True))
def test_responsibilities_match_oracle(dtype, x, p):
    """Zero weights give q = 0 exactly. Each log N_k has an error eps·E_k, E_k = 1 + z² + |log σ_k|
    + |log π_k|, and the normaliser one of eps·Σ_k q_k E_k; q below finfo.tiny underflows."""
    x, p = _cast(dtype, x, p)
    got = M.responsibilities(jnp.asarray(x), _j(p))
    assert got.dtype == dtype and got.shape == (B, N, K)
    for b in range(B):
        exact = o_responsibilities(x[b], p.weights[b], p.means[b], p.stds[b])
        z2 = ((x[b][:, None].astype(np.float64) - p.means[b]) / p.stds[b]) ** 2
        live = p.weights[b] > 0
        e = 1 + z2 + np.abs(np.log(p.stds[b])) + np.abs(np.log(np.where(live, p.weights[b], 1.0)))
        ep = np.sum(exact * e, -1, keepdims=True)
        O.assert_close(got[b], exact, O.rtol(dtype, K) * exact * (e + ep) + np.finfo(dtype).tiny, "responsibilities")
        assert np.all(np.asarray(got[b])[:, ~live] == 0)


@st.composite
def beliefs(draw, zeros=True):
    """``(B, N, K)`` rows on the simplex, some entries exactly 0, sometimes a whole empty column."""
    q = draw(S.probs(K, zeros=zeros, batch=B * N)).reshape(B, N, K)
    if zeros and draw(st.booleans()):
        q[:, :, 0] = 0.0
        q[q.sum(-1) == 0, 1] = 1.0  # rows that had all their mass on component 0
        q /= q.sum(-1, keepdims=True)
    return q


@pytest.mark.parametrize("dtype", FLOATS)
@settings(max_examples=S.examples(15))
@given(x=datasets(), q=beliefs())
def test_m_step_matches_oracle(dtype, x, q):
    """π_k relative to itself; μ_k to max|x|; σ_k relative to itself plus the second-order effect
    of the rounding of μ_k, (rtol·max|x|)²/σ_k (or rtol·max|x| where σ_k = 0). An empty
    component (N_k = 0) gets π_k = 0 and the data's mean and standard deviation. Products q·x
    below finfo.tiny are flushed to zero: an absolute n·tiny is added to the μ and σ tolerances."""
    x, q = S.cast(x, dtype), S.cast(q, dtype)
    got = M.m_step(jnp.asarray(x), jnp.asarray(q))
    assert all(a.dtype == dtype and a.shape == (B, K) for a in got)
    r, flushed = O.rtol(dtype, N), N * np.finfo(dtype).tiny
    for b in range(B):
        w, m, s = o_m_step(x[b], q[b])
        big = np.max(np.abs(x[b].astype(np.float64)))
        O.assert_close(got.weights[b], w, r * w, "weights")
        O.assert_close(got.means[b], m, r * big + flushed, "means")
        mu_err = r * big + flushed
        O.assert_close(got.stds[b], s, r * s + np.where(s > 0, mu_err ** 2 / np.where(s > 0, s, 1), mu_err), "stds")


@pytest.mark.parametrize("dtype", FLOATS)
@settings(max_examples=S.examples(15))
@given(x=datasets(), p=params(zeros=True), q=beliefs(), mass_on_zero=st.booleans())
def test_free_energy_and_log_likelihood_match_oracle(dtype, x, p, q, mass_on_zero):
    """F for an arbitrary belief (0 · log 0 = 0, also where π_k = 0; +inf for mass where π_k = 0)."""
    x, p = _cast(dtype, x, p)
    dead = p.weights == 0  # (B, K)
    if not mass_on_zero:
        q = np.where(dead[:, None, :], 0.0, q)
        q[q.sum(-1) == 0] = np.where(dead, 0.0, 1.0)[np.nonzero(q.sum(-1) == 0)[0]]
        q /= q.sum(-1, keepdims=True)
    q = S.cast(q, dtype)
    f = M.mixture_free_energy(jnp.asarray(x), jnp.asarray(q), _j(p))
    ll = M.mixture_log_likelihood(jnp.asarray(x), _j(p))
    assert f.dtype == ll.dtype == dtype and f.shape == ll.shape == (B,)
    for b in range(B):
        args = (p.weights[b], p.means[b], p.stds[b])
        exact_f = o_free_energy(x[b], q[b], *args)
        exact_ll = o_log_likelihood(x[b], *args)
        O.assert_close(f[b], exact_f, O.rtol(dtype, N * K) * _belief_scale(x[b], q[b], *args), "free energy")
        O.assert_close(ll[b], exact_ll, O.rtol(dtype, N * K) * _scale(x[b], *args), "log likelihood")
        # claim B3 for any belief (the cast rows sum to c_i = 1 + O(eps)): by the log-sum
        # inequality F ≥ Σ_i c_i (log c_i - log p(x_i|θ)), which is -log p(x|θ) when every c_i = 1
        rows = [(MP.fsum(O.mpf(v) for v in qi), O._lse(lj)) for qi, lj in zip(q[b], _log_joint(x[b], *args))]
        bound = MP.fsum(c * (MP.log(c) - lp) for c, lp in rows)
        assert exact_f >= float(bound) - 1e-40 * (1 + abs(float(bound))), (exact_f, bound)


@pytest.mark.parametrize("scale", [1e-160, 1e160])
def test_m_step_has_no_under_or_overflow_of_the_squares(scale):
    """Data of size 1e-160 (squares underflow) or 1e160 (squares overflow) in float64: σ_k
    scales with the data."""
    rng = np.random.default_rng(7)
    x = rng.normal(size=(B, N))
    q = rng.dirichlet(np.ones(K), size=(B, N))
    ref, got = M.m_step(x, q), M.m_step(scale * x, q)
    for a, b in zip(ref[1:], got[1:]):
        O.assert_close(np.asarray(b) / scale, a, O.rtol(np.float64, N) * (1 + np.abs(np.asarray(a))), "scaled")


# ============================================================================ EM (claim B8)


def _check_trajectory(trace, x, init, dtype):
    f = np.asarray(trace.free_energy, np.float64)
    ll = np.asarray(trace.log_likelihood, np.float64)
    assert f.shape == ll.shape == (2 * STEPS, B)
    assert np.all(np.isfinite(f)) and np.all(np.isfinite(ll))
    thetas = [MixtureParams(*(np.asarray(a[t], np.float64) for a in trace.params)) for t in range(STEPS)]
    in_force = [init] + [th for th in thetas for _ in range(2)][:-1]  # θ_0, θ_1, θ_1, θ_2, ...
    scale = np.array([[_scale(x[b], th.weights[b], th.means[b], th.stds[b]) for b in range(B)] for th in in_force])
    r = O.rtol(dtype, N * K)
    # F never increases
    assert np.all(f[1:] <= f[:-1] + r * (scale[1:] + scale[:-1])), np.diff(f, axis=0)
    # F ≥ -log p(x|θ) at every half-step, with equality after each E-step
    assert np.all(f >= -ll - r * scale), f + ll
    assert np.all(np.abs(f[0::2] + ll[0::2]) <= r * scale[0::2]), (f + ll)[0::2]
    # the log-likelihood never decreases
    assert np.all(ll[1:] >= ll[:-1] - r * (scale[1:] + scale[:-1]))
    # the recorded values against the oracle: log p(x|θ) of the parameters in force, and F after
    # an M-step is F(q_t, θ_t) with the *previous* posterior q_t = p(z|x, θ_{t-1})
    for t in (0, 1, 2 * STEPS - 1):
        th = in_force[t]
        for b in range(B):
            exact = o_log_likelihood(x[b], th.weights[b], th.means[b], th.stds[b])
            O.assert_close(ll[t, b], exact, r * scale[t, b], f"log likelihood at half-step {t}")
    for t in (1, 2 * STEPS - 1):
        prev, th = in_force[t - 1], in_force[t]
        for b in range(B):
            # rounded to dtype as vfe's q is (a q below finfo.tiny is 0, and F counts it as such)
            q = S.cast(o_responsibilities(x[b], prev.weights[b], prev.means[b], prev.stds[b]), dtype)
            args = (th.weights[b], th.means[b], th.stds[b])
            exact = o_free_energy(x[b], q, *args)
            tol = r * (_belief_scale(x[b], q, *args) + scale[t - 1, b])  # + q's rounding: F(q_t, θ_{t-1})'s scale
            O.assert_close(f[t, b], exact, tol, f"F after M-step {t // 2 + 1}")


@pytest.mark.parametrize("dtype", FLOATS)
@settings(max_examples=S.examples(10))
@given(x=datasets(), p=params(zeros=False, lo=0.3, hi=10.0))
def test_em_free_energy_never_increases_and_bounds_the_surprise(dtype, x, p):
    x, p = _cast(dtype, x, p)
    trace = M.em(jnp.asarray(x), _j(p), STEPS, min_std=0.05)
    assert trace.free_energy.dtype == dtype and trace.params.means.shape == (STEPS, B, K)
    assert np.all(np.asarray(trace.params.stds) >= dtype(0.05))
    _check_trajectory(trace, x, MixtureParams(*(a.astype(np.float64) for a in p)), dtype)


def test_em_matches_the_public_steps_and_improves_a_poor_start():
    """Three steps of em against responsibilities → m_step by hand (float64); from means that are
    nearly equal, EM separates two clusters: the log-likelihood rises by more than 1 nat."""
    rng = np.random.default_rng(3)
    x = np.concatenate([rng.normal(-4, 0.5, (B, N // 2)), rng.normal(3, 1.0, (B, N // 2))], -1)
    p = MixtureParams(np.full((B, K), 1 / K), np.tile([-0.1, 0.0, 0.1], (B, 1)), np.full((B, K), 2.0))
    trace = M.em(x, p, STEPS)
    theta = p
    for t in range(3):
        theta = M.m_step(x, M.responsibilities(x, theta))
        for got, want in zip(trace.params, theta):
            O.assert_close(got[t], want, O.rtol(np.float64, N) * (1 + np.abs(np.asarray(want))), f"step {t}")
    ll = np.asarray(trace.log_likelihood)
    assert np.all(ll[-1] > ll[0] + 1.0), ll[[0, -1]]
    _check_trajectory(trace, x, p, np.float64)


def test_zero_weight_component_stays_empty_and_free_energy_stays_finite():
    rng = np.random.default_rng(4)
    x = rng.normal(size=(B, N))
    p = MixtureParams(np.tile([0.5, 0.5, 0.0], (B, 1)), np.tile([-1.0, 1.0, 0.0], (B, 1)), np.ones((B, K)))
    trace = M.em(x, p, STEPS)
    assert np.all(np.asarray(trace.params.weights)[..., 2] == 0)
    assert np.all(np.isfinite(np.asarray(trace.free_energy)))
    _check_trajectory(trace, x, p, np.float64)


def test_a_nearly_empty_component_keeps_a_positive_weight_in_float32():
    """One point owns ~1e-38 of a far component: N_k/n underflows in float32, but the M-step keeps
    π_k ≥ finfo.tiny, so F(q, θ) (which sees q_ik > 0) stays finite (found by the thorough profile)."""
    x = np.tile(np.array([10, 10, 4.0, 10, 10, 10, 10, 10], np.float32), (B, 1))
    p = MixtureParams(*(np.tile(np.asarray(v, np.float32), (B, 1))
                        for v in ([0.0705, 0.859, 0.0705], [-9.0625, 5.0, -9.0625], [1.0, 1.0, 1.0])))
    q = np.asarray(M.responsibilities(x, p))
    assert 0 < q[0, 2, 0] < 1e-37  # the case: a responsibility just above finfo(float32).tiny
    trace = M.em(x, p, STEPS, min_std=0.05)
    assert np.all(np.asarray(trace.params.weights)[0, :, 0] >= np.finfo(np.float32).tiny)
    assert np.all(np.isfinite(np.asarray(trace.free_energy)))


def test_min_std_stops_a_collapsing_component():
    """A component centred on one isolated point collapses onto it (σ → 0, F → -∞) without the
    guard; with min_std its σ stops at min_std and F stays finite and non-increasing."""
    x = np.tile(np.array([0.0, 10.0, 10.5, 11.0, 9.5, 10.2, 9.8, 10.1]), (B, 1))
    p = MixtureParams(np.tile([0.5, 0.5, 0.0], (B, 1)), np.tile([0.0, 10.0, 5.0], (B, 1)), np.ones((B, K)))
    free = M.em(x, p, STEPS).free_energy
    assert not np.all(np.isfinite(np.asarray(free)))  # unguarded: σ_1 = 0 after the first M-step
    trace = M.em(x, p, STEPS, min_std=0.1)
    assert np.all(np.asarray(trace.params.stds)[:, :, :2] >= 0.1)
    assert np.any(np.asarray(trace.params.stds)[:, :, 0] == 0.1)
    _check_trajectory(trace, x, p, np.float64)


# ============================================================================ derivatives

LL_GRAD = jax.jit(jax.grad(lambda x, p: jnp.sum(S.ROW_WEIGHTS * M.mixture_log_likelihood(x, p)), argnums=1))
F_GRAD = jax.jit(jax.grad(lambda x, q, p: jnp.sum(S.ROW_WEIGHTS * M.mixture_free_energy(x, q, p)), argnums=(1, 2)))


@settings(max_examples=S.examples(10))
@given(x=datasets(), p=params(zeros=False))
def test_surprise_gradient_equals_free_energy_gradient_at_the_posterior(x, p):
    """∇_θ(-log p(x|θ)) = ∇_θ F(q, θ) at q = p(z|x, θ) (held fixed): F touches the surprise there
    (float64, positive weights: at π_k = 0 the fixed q_k = 0 makes F flat in π_k, while the
    surprise's slope is the limit N_k/p of q_k/π_k)."""
    q = M.responsibilities(x, p)
    g_ll = LL_GRAD(x, _j(p))
    g_q, g_f = F_GRAD(x, q, _j(p))
    for a, b, name in zip(g_ll, g_f, MixtureParams._fields):
        a, b = np.asarray(a), np.asarray(b)
        assert np.all(np.isfinite(a)) and np.all(np.isfinite(b)), name
        O.assert_close(-a, b, O.rtol(np.float64, N * K) * (1 + np.abs(a)) * (1 + _scale_max(x, p)), name)
    assert not np.isnan(np.asarray(g_q)).any()


def _scale_max(x, p):
    return max(_scale(x[b], p.weights[b], p.means[b], p.stds[b]) for b in range(B))


@pytest.mark.parametrize("dtype", FLOATS)
def test_derivatives_finite_at_zero_responsibilities_and_weights(dtype):
    x = jnp.asarray(np.linspace(-3, 3, B * N).reshape(B, N), dtype)
    p = MixtureParams(*(jnp.asarray(np.tile(v, (B, 1)), dtype)
                        for v in ([0.6, 0.4, 0.0], [-1.0, 1.0, 30.0], [1.0, 0.5, 0.01])))
    q = M.responsibilities(x, p)
    assert np.all(np.asarray(q)[..., 2] == 0)
    for g in (*LL_GRAD(x, p), F_GRAD(x, q, p)[0], *F_GRAD(x, q, p)[1]):
        g = np.asarray(g, np.float64)
        assert not np.isnan(g).any() and np.all(np.isfinite(g)), g


@settings(max_examples=S.examples(2))
@given(x=datasets(), p=params(zeros=False, lo=0.5, hi=5.0, min_log=-2.0))
def test_check_grads_float64(x, p):
    """Finite differences, fwd and rev, at interior points (check_grads' float64 tolerance 2e-5).

    Weights ≥ e^-2/K: the slope in π_k is ~1/π_k and its curvature ~1/π_k², so a weight of
    1e-5 puts the finite difference off by its own step (not the library's error).
    Step 1e-6: with points up to z ≈ 50 from a component (|x| ≤ 20, σ ≥ 0.5) the third derivative
    in σ is ~z²/σ³ times the slope, and the central difference's truncation error relative to
    the slope, (step·z/σ)²/6, exceeded 2e-5 at the default step 1e-4; its rounding error,
    1e-16·|log p|/step ≈ 1e-7, stays well below."""
    q = np.asarray(M.responsibilities(x, p))
    q = 0.5 * q + 0.5 / K  # strictly inside the simplex
    check_grads(lambda w, m, s: M.mixture_log_likelihood(x, MixtureParams(w, m, s)), tuple(p), order=1,
                modes=("fwd", "rev"), eps=1e-6)
    check_grads(lambda q, m, s: M.mixture_free_energy(x, q, MixtureParams(p.weights, m, s)), (q, p.means, p.stds),
                order=1, modes=("fwd", "rev"), eps=1e-6)


# ============================================================================ dtypes, batching, errors


def test_bfloat16_inputs_compute_in_float32():
    rng = np.random.default_rng(5)
    x = rng.normal(size=(B, N))
    p = MixtureParams(np.tile([0.25, 0.5, 0.25], (B, 1)), np.tile([-1.0, 0.0, 1.0], (B, 1)), np.ones((B, K)))
    xl = jnp.asarray(x, jnp.bfloat16)
    pl = MixtureParams(*(jnp.asarray(a, jnp.bfloat16) for a in p))
    xu, pu = xl.astype(jnp.float32), MixtureParams(*(a.astype(jnp.float32) for a in pl))
    for got, ref in [(M.responsibilities(xl, pl), M.responsibilities(xu, pu)),
                     (M.mixture_log_likelihood(xl, pl), M.mixture_log_likelihood(xu, pu)),
                     (M.em(xl, pl, STEPS).free_energy, M.em(xu, pu, STEPS).free_energy)]:
        assert got.dtype == jnp.float32
        ref = np.asarray(ref)
        O.assert_close(got, ref, O.rtol(np.float32, N * K) * (1 + np.abs(ref)), "bfloat16")


def test_batched_em_equals_separate_runs_and_params_broadcast():
    rng = np.random.default_rng(6)
    x = rng.normal(size=(B, N)) * np.array([[1.0], [3.0]])
    p = MixtureParams(np.array([0.3, 0.3, 0.4]), np.array([-1.0, 0.0, 1.0]), np.ones(K))  # shared by the rows
    trace = M.em(x, p, STEPS, min_std=0.05)
    assert trace.params.weights.shape == (STEPS, B, K)
    for b in range(B):
        one = M.em(x[b], p, STEPS, min_std=0.05)
        tol = O.rtol(np.float64, N * K) * (1 + np.abs(one.free_energy))
        O.assert_close(trace.free_energy[:, b], one.free_energy, tol, "batched em")


X = jnp.zeros((B, N))
P = MixtureParams(jnp.full((B, K), 1 / K), jnp.zeros((B, K)), jnp.ones((B, K)))
Q = jnp.full((B, N, K), 1 / K)


@pytest.mark.parametrize("call, exc, name", [
    (lambda: M.responsibilities(X, P._replace(means=jnp.zeros((B, 2)))), ValueError, "params.means"),
    (lambda: M.responsibilities(X, P._replace(stds=jnp.ones((B, K), jnp.int32))), TypeError, "params.stds"),
    (lambda: M.responsibilities(X, (P.weights, P.means)), TypeError, "params"),
    (lambda: M.responsibilities(jnp.zeros((B, N), jnp.int32), P), TypeError, "x"),
    (lambda: M.responsibilities(jnp.zeros((B, 0)), P), ValueError, "x"),
    (lambda: M.responsibilities(jnp.zeros((3, N)), P), ValueError, "x"),
    (lambda: M.m_step(X, jnp.zeros((B, N + 1, K))), ValueError, "resp"),
    (lambda: M.m_step(X, Q, min_std=-1.0), ValueError, "min_std"),
    (lambda: M.mixture_free_energy(X, jnp.zeros((B, N, K + 1)), P), ValueError, "resp"),
    (lambda: M.mixture_log_likelihood(X, P._replace(weights=jnp.ones((B, K), bool))), TypeError, "params.weights"),
    (lambda: M.em(X, P, 0), ValueError, "num_steps"),
    (lambda: M.em(X, P, 2.0), ValueError, "num_steps"),
    (lambda: M.em(X, P, 3, min_std=float("nan")), ValueError, "min_std"),
    (lambda: M.em(X, P._replace(weights=jnp.ones((B, 2))), 3), ValueError, "init_params.means"),
    (lambda: M.responsibilities(X, MixtureParams(*(jnp.ones((B, 0)),) * 3)), ValueError, "params.weights"),
])
def test_bad_input_raises_naming_the_argument(call, exc, name):
    with pytest.raises(exc) as err:
        call()
    assert f"`{name}`" in str(err.value), str(err.value)


def test_public_functions_document_a_formula():
    for name in ("responsibilities", "m_step", "mixture_free_energy", "mixture_log_likelihood", "em"):
        assert ".. math::" in (getattr(M, name).__doc__ or ""), name
