"""vfe.gaussian against 50-digit mpmath oracles written here from the textbook formulas (the KL
closed form is itself checked by numerical integration; the conjugate evidence by the dense
multivariate normal density with covariance s²I + τ²11ᵀ, not by sufficient statistics), the
accuracy claim of gaussian_kl for close Gaussians, derivatives, identities between the
functions, low precision and argument errors.

Tolerances (stated once): ``oracle.rtol(dtype, n) = K · n · eps(dtype)``, ``K = 64``, times the
scale of the terms stated next to each test. KL is accurate relative to the divergence itself.
Results below ``finfo(dtype).tiny`` are flushed to zero by XLA on CPU: an absolute ``tiny`` is
added where a result can be that small.

Speed: elementwise functions are tested on one shape ``(B, 5)`` per dtype and the conjugate model
on two sample sizes, so that each jitted kernel compiles a few times only.
"""

from __future__ import annotations

import functools

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
from vfe import gaussian as G
from vfe.variational import gaussian_entropy

FLOATS = S.FLOATS
B = S.BATCH
SHAPE = (B, 5)  # the one shape of the elementwise tests
NS = (2, 10)  # sample sizes of the conjugate-model tests
MP = O.MP
HALF_LOG_2PI = MP.log(2 * MP.pi) / 2


# ----------------------------------------------------------------------------- oracles (mpmath)


def o_log_density(x, m, s):
    x, m, s = O.mpf(x), O.mpf(m), O.mpf(s)
    return float(-((x - m) / s) ** 2 / 2 - MP.log(s) - HALF_LOG_2PI)


def o_kl(mp, sp, mq, sq):
    """The textbook form, in 400 digits: it cancels down to KL, which for distinct float64
    arguments is either above 1e-340 or flushed to 0 in any case (below finfo.tiny)."""
    with MP.workdps(400):
        mp, sp, mq, sq = (O.mpf(v) for v in (mp, sp, mq, sq))
        return float(MP.log(sq / sp) + (sp ** 2 + (mp - mq) ** 2) / (2 * sq ** 2) - MP.mpf(1) / 2)


def o_cross_entropy(mp, sp, mq, sq):
    mp, sp, mq, sq = (O.mpf(v) for v in (mp, sp, mq, sq))
    return float(HALF_LOG_2PI + MP.log(sq) + (sp ** 2 + (mp - mq) ** 2) / (2 * sq ** 2))


def o_posterior(x, mu0, tau, s):
    """Precision-weighted form: 1/v = 1/τ² + n/s², m = v (μ0/τ² + Σx/s²)."""
    xs = [O.mpf(v) for v in x]
    mu0, tau, s = O.mpf(mu0), O.mpf(tau), O.mpf(s)
    v = 1 / (1 / tau ** 2 + len(xs) / s ** 2)
    return float(v * (mu0 / tau ** 2 + MP.fsum(xs) / s ** 2)), float(MP.sqrt(v))


def o_log_evidence(x, mu0, tau, s):
    """The dense multivariate normal: -½(n log 2π + log det C + rᵀC⁻¹r), C = s²I + τ²11ᵀ."""
    n = len(x)
    if n == 0:
        return 0.0
    # C's condition number is about nτ²/s²: carry that many more digits
    with MP.workdps(50 + 2 * max(0, int(abs(math.log10(float(tau) / float(s)))) + 2)):
        mu0, t2, s2 = O.mpf(mu0), O.mpf(tau) ** 2, O.mpf(s) ** 2
        c = MP.matrix(n, n)
        for i in range(n):
            for j in range(n):
                c[i, j] = t2 + (s2 if i == j else 0)
        r = MP.matrix([O.mpf(v) - mu0 for v in x])
        quad = (r.T * MP.lu_solve(c, r))[0]
        return float(-(n * MP.log(2 * MP.pi) + MP.log(MP.det(c)) + quad) / 2)


def o_mixture(x, w, m, s):
    terms = [MP.log(O.mpf(a)) - ((O.mpf(x) - O.mpf(b)) / O.mpf(c)) ** 2 / 2 - MP.log(O.mpf(c)) - HALF_LOG_2PI
             for a, b, c in zip(w, m, s) if a > 0]
    return float(O._lse(terms))


def o_moment_match(w, m, s):
    w, m, s = ([O.mpf(v) for v in a] for a in (w, m, s))
    total = MP.fsum(w)
    mean = MP.fsum(a * b for a, b in zip(w, m)) / total
    var = MP.fsum(a * (c ** 2 + (b - mean) ** 2) for a, b, c in zip(w, m, s)) / total
    return float(mean), float(MP.sqrt(var))


def _map(fn, *arrays):
    """Apply a scalar oracle elementwise over equal-shaped arrays."""
    arrays = np.broadcast_arrays(*[np.asarray(a, np.float64) for a in arrays])
    return np.vectorize(lambda *v: fn(*v), otypes=[np.float64])(*arrays)


# ----------------------------------------------------------------------------- strategies


def _unit(shape):
    return hnp.arrays(np.float64, shape, elements=st.floats(-1.0, 1.0, allow_subnormal=False))


def _log_uniform(shape, lo, hi):
    a, b = math.log10(lo), math.log10(hi)
    return hnp.arrays(np.float64, shape, elements=st.floats(a, b)).map(lambda u: 10.0 ** u)


def _locations(data, shape, scales=(1.0, 10.0, 1e3)):
    return data.draw(st.sampled_from(scales)) * data.draw(_unit(shape))


def _gaussian_pairs(data, dtype, shape, lo=1e-3, hi=1e3):
    """``(μ_p, σ_p, μ_q, σ_q)`` cast to ``dtype``: independent, or ``q = p``, or σ shared."""
    mp, mq = _locations(data, shape), _locations(data, shape)
    sp, sq = data.draw(_log_uniform(shape, lo, hi)), data.draw(_log_uniform(shape, lo, hi))
    kind = data.draw(st.sampled_from(["independent", "equal", "same_std", "same_mean"]))
    if kind == "equal":
        mq, sq = mp, sp
    elif kind == "same_std":
        sq = sp
    elif kind == "same_mean":
        mq = mp
    return tuple(S.cast(a, dtype) for a in (mp, sp, mq, sq))


def _j(x):
    return jnp.asarray(x)


# ============================================================================ single Gaussians


@pytest.mark.parametrize("dtype", FLOATS)
@settings(max_examples=S.examples(15))
@given(data=st.data())
def test_log_density_matches_oracle(dtype, data):
    shape = SHAPE
    x, m = (S.cast(_locations(data, shape), dtype) for _ in range(2))
    s = S.cast(data.draw(_log_uniform(shape, 1e-3, 1e3)), dtype)
    got = G.gaussian_log_density(_j(x), _j(m), _j(s))
    assert got.dtype == dtype and got.shape == shape
    z2 = ((x.astype(np.float64) - m) / s) ** 2
    # z = (x-μ)/σ carries a relative error of a few eps, log σ an absolute one of eps·|log σ|
    O.assert_close(got, _map(o_log_density, x, m, s), O.rtol(dtype) * (1 + z2 + np.abs(np.log(s))), "log_density")


@pytest.mark.parametrize("dtype", FLOATS)
@settings(max_examples=S.examples(20))
@given(data=st.data())
def test_kl_matches_oracle_relative_to_itself(dtype, data):
    """Both terms ψ(d) and δ² are ≥ 0 and computed to a few ulps: the error is relative to KL."""
    shape = SHAPE
    args = _gaussian_pairs(data, dtype, shape)
    got = G.gaussian_kl(*map(_j, args))
    assert got.dtype == dtype and got.shape == shape
    exact = _map(o_kl, *args)
    assert np.all(np.asarray(got) >= 0)
    O.assert_close(got, exact, O.rtol(dtype) * exact + np.finfo(dtype).tiny, "gaussian_kl")
    same = (args[0] == args[2]) & (args[1] == args[3])
    assert np.all(np.asarray(got)[same] == 0)


@st.composite
def close_gaussians(draw, shape, rel=1e-6):
    """``(μ_p, σ_p, μ_q, σ_q)`` float64 with ``σ_q = σ_p(1 + rel·u)`` and ``μ_q = μ_p + rel·σ_p·v``."""
    mp = draw(st.sampled_from([1.0, 1e3])) * draw(_unit(shape))
    sp = draw(_log_uniform(shape, 1e-3, 1e3))
    u, v = draw(_unit(shape)), draw(_unit(shape))
    return mp, sp, mp + rel * sp * v, sp * (1 + rel * u)


@pytest.mark.parametrize("dtype", FLOATS)
@settings(max_examples=S.examples(20))
@given(data=st.data())
def test_kl_accurate_and_non_negative_for_close_gaussians(dtype, data):
    """The documented claim: relative accuracy (≤ K·eps of KL) for Gaussians agreeing to 6 digits."""
    args = [S.cast(a, dtype) for a in data.draw(close_gaussians(SHAPE))]
    got = np.asarray(G.gaussian_kl(*map(_j, args)), np.float64)
    exact = _map(o_kl, *args)
    assert np.all(got >= 0), got
    O.assert_close(got, exact, O.rtol(dtype) * exact + np.finfo(dtype).tiny, "gaussian_kl, p ≈ q")


def test_naive_kl_is_inaccurate_in_float32_where_vfe_is_not():
    """The problem the design solves: the textbook form in float32 cancels for close Gaussians."""
    rng = np.random.default_rng(0)
    mp, sp = rng.normal(size=64), np.exp(rng.uniform(-2, 2, 64))
    mq, sq = mp + 1e-5 * sp * rng.uniform(-1, 1, 64), sp * (1 + 1e-5 * rng.uniform(-1, 1, 64))
    args = [a.astype(np.float32) for a in (mp, sp, mq, sq)]
    a = [jnp.asarray(v) for v in args]
    naive = jax.jit(lambda mp, sp, mq, sq: jnp.log(sq / sp) + (sp ** 2 + (mp - mq) ** 2) / (2 * sq ** 2) - 0.5)
    naive = np.asarray(naive(*a), np.float64)
    exact = _map(o_kl, *args)
    ours = np.asarray(G.gaussian_kl(*a), np.float64)
    O.assert_close(ours, exact, O.rtol(np.float32) * exact, "gaussian_kl float32")
    assert np.max(np.abs(naive - exact) / exact) > 0.1  # the naive form misses by more than 10 %


def test_kl_closed_form_oracle_agrees_with_numerical_integration():
    """The oracle's closed form against ∫ p log(p/q) dx by mpmath quadrature (20 digits)."""
    import mpmath
    ctx = mpmath.MPContext()
    ctx.dps = 20
    for mp, sp, mq, sq in [(0.3, 1.2, -0.5, 0.8), (2.0, 0.1, -1.0, 2.5), (1.0, 2.0, 1.5, 2.0)]:
        a, b, c, d = (ctx.mpf(v) for v in (mp, sp, mq, sq))

        def integrand(x, a=a, b=b, c=c, d=d):
            lp = -((x - a) / b) ** 2 / 2 - ctx.log(b) - ctx.log(2 * ctx.pi) / 2
            lq = -((x - c) / d) ** 2 / 2 - ctx.log(d) - ctx.log(2 * ctx.pi) / 2
            return ctx.exp(lp) * (lp - lq)

        integral = ctx.quad(integrand, [-ctx.inf, a - 8 * b, a, a + 8 * b, ctx.inf])
        assert abs(float(integral) - o_kl(mp, sp, mq, sq)) <= 1e-15 * (1 + abs(float(integral)))
        assert abs(float(G.gaussian_kl(mp, sp, mq, sq)) - float(integral)) <= O.rtol(np.float64) * float(integral)


@pytest.mark.parametrize("dtype", FLOATS)
@settings(max_examples=S.examples(15))
@given(data=st.data())
def test_cross_entropy_matches_oracle_and_equals_entropy_plus_kl(dtype, data):
    shape = SHAPE
    args = _gaussian_pairs(data, dtype, shape)
    got = G.gaussian_cross_entropy(*map(_j, args))
    assert got.dtype == dtype
    exact = _map(o_cross_entropy, *args)
    a = [np.asarray(v, np.float64) for v in args]
    # terms: ½log 2π, log σ_q, ½(σ_p/σ_q)², ½δ² — each with a relative error of a few eps
    scale = 1 + np.abs(np.log(a[3])) + (a[1] / a[3]) ** 2 + ((a[0] - a[2]) / a[3]) ** 2
    O.assert_close(got, exact, O.rtol(dtype) * scale, "gaussian_cross_entropy")
    # claim A1 for densities: H(p, q) = H(p) + KL(p‖q)
    rhs = np.asarray(gaussian_entropy(_j(args[1])), np.float64) + np.asarray(G.gaussian_kl(*map(_j, args)))
    O.assert_close(got, rhs, 2 * O.rtol(dtype) * (scale + np.abs(np.log(a[1]))), "H(p,q) = H(p) + KL")


# ----------------------------------------------------------------------------- derivatives


def _kl_grads_oracle(mp, sp, mq, sq):
    """(∂/∂μ_p, ∂/∂σ_p, ∂/∂μ_q, ∂/∂σ_q) of KL(N_p‖N_q)."""
    dm = mp - mq
    return dm / sq ** 2, -1 / sp + sp / sq ** 2, -dm / sq ** 2, 1 / sq - (sp ** 2 + dm ** 2) / sq ** 3


KL_GRAD = jax.jit(jax.grad(lambda *a: jnp.sum(G.gaussian_kl(*a)), argnums=(0, 1, 2, 3)))
LD_GRAD = jax.jit(jax.grad(lambda *a: jnp.sum(G.gaussian_log_density(*a)), argnums=(0, 1, 2)))


@pytest.mark.parametrize("dtype", FLOATS)
@settings(max_examples=S.examples(10))
@given(data=st.data())
def test_derivatives_match_oracle(dtype, data):
    """Interior points (σ in [0.1, 10], |μ| ≤ 10): the scale is the size of the derivative's terms."""
    args = _gaussian_pairs(data, dtype, SHAPE, lo=0.1, hi=10.0)
    args = (S.cast(args[0] / 100, dtype), args[1], S.cast(args[2] / 100, dtype), args[3])
    a = [np.asarray(v, np.float64) for v in args]
    exact = _kl_grads_oracle(*a)
    scale = 1 / a[1] + a[1] / a[3] ** 2 + 1 / a[3] + (a[1] ** 2 + (a[0] - a[2]) ** 2 + np.abs(a[0] - a[2])) / a[3] ** 3
    for g, e in zip(KL_GRAD(*map(_j, args)), exact):
        assert g.dtype == dtype
        O.assert_close(g, e, O.rtol(dtype) * scale, "d gaussian_kl")
    x = args[0]
    z = (a[0] - a[2]) / a[3]
    for g, e in zip(LD_GRAD(_j(x), _j(args[2]), _j(args[3])), (-z / a[3], z / a[3], (z * z - 1) / a[3])):
        O.assert_close(g, e, O.rtol(dtype) * (1 + z * z) / a[3], "d gaussian_log_density")


@pytest.mark.parametrize("dtype", FLOATS)
def test_kl_gradient_is_zero_at_equal_gaussians(dtype):
    m = jnp.asarray(np.linspace(-3, 3, 10).reshape(SHAPE), dtype)
    s = jnp.asarray(np.geomspace(0.01, 100, 10).reshape(SHAPE), dtype)
    for g in KL_GRAD(m, s, m, s):
        assert np.all(np.asarray(g) == 0), g


@settings(max_examples=S.examples(2))
@given(data=st.data())
def test_check_grads_float64(data):
    """Finite differences (jax.test_util.check_grads, float64 tolerances 1e-5), fwd and rev, with
    steps of 1e-6 rather than the default 1e-4: central differences err by h² times a third
    derivative / 6, and at σ = 0.3 the third derivatives along a random direction reach ~1e4 (an
    error of 1e-5 at h = 1e-4 for a real draw: equal Gaussians with σ = 0.316), while at h = 1e-6 the
    truncation is ~1e-9 and the rounding ~eps/h ~1e-10."""
    mp, sp, mq, sq = _gaussian_pairs(data, np.float64, SHAPE, lo=0.3, hi=3.0)
    mp, mq = mp / 100, mq / 100
    check = functools.partial(check_grads, order=1, modes=("fwd", "rev"), eps=1e-6)
    check(G.gaussian_kl, (mp, sp, mq, sq))
    check(G.normal_log_evidence, (mp, mq[:, 0], sp[:, 0], sq[:, 0]))
    check(lambda x, w, m, s: G.gaussian_mixture_log_density(x, w / jnp.sum(w), m, s),
          (mp[:, 0], sp[0, :3], mq[0, :3], sq[0, :3]))


# ============================================================================ conjugate normal model


def _conjugate(data, dtype, n):
    """``(x, μ0, τ, s)`` cast to ``dtype``: x of shape (B, n), the parameters of shape (B,)."""
    mu0 = _locations(data, (B,), scales=(1.0, 100.0))
    tau, s = data.draw(_log_uniform((B,), 1e-2, 1e2)), data.draw(_log_uniform((B,), 1e-2, 1e2))
    centre = _locations(data, (B, 1), scales=(1.0, 100.0))
    x = centre + data.draw(_log_uniform((B, 1), 1e-2, 1e2)) * data.draw(_unit((B, n)))
    return tuple(S.cast(a, dtype) for a in (x, mu0, tau, s))


def _rows(fn, x, *params):
    return np.array([fn(x[i], *(p[i] for p in params)) for i in range(x.shape[0])], dtype=np.float64)


@pytest.mark.parametrize("dtype", FLOATS)
@settings(max_examples=S.examples(15))
@given(data=st.data())
def test_normal_posterior_matches_oracle(dtype, data):
    n = data.draw(st.sampled_from(NS))
    x, mu0, tau, s = _conjugate(data, dtype, n)
    mean, std = G.normal_posterior(*map(_j, (x, mu0, tau, s)))
    assert mean.dtype == std.dtype == dtype and mean.shape == std.shape == (B,)
    exact = _rows(o_posterior, x, mu0, tau, s)
    # a convex combination of μ0 and the mean of x with weights of relative error a few eps; a mean
    # below the smallest normal number is flushed to 0 (XLA on CPU flushes subnormals: x = 1.2e-38,
    # μ0 = 0 gives 7.8e-39 in float32), an absolute error up to finfo.tiny
    scale = np.abs(mu0) + np.max(np.abs(x), axis=-1)
    O.assert_close(mean, exact[:, 0], O.rtol(dtype, n) * scale + np.finfo(dtype).tiny, "posterior mean")
    O.assert_close(std, exact[:, 1], O.rtol(dtype) * exact[:, 1], "posterior std")


@pytest.mark.parametrize("dtype", FLOATS)
@settings(max_examples=S.examples(10))
@given(data=st.data())
def test_normal_log_evidence_matches_dense_multivariate_normal(dtype, data):
    """Against -½(n log 2π + log det C + rᵀC⁻¹r) with C = s²I + τ²11ᵀ in 50 digits. Scale: the
    terms of the sufficient-statistic form, n(1 + |log s| + log 2π) + |log h| + Σ((x_i - x̄)/s)² + u²,
    and the effect of x̄'s rounding on u = √n(x̄ - μ0)/h: |u|·√n(max|x| + |μ0|)/h."""
    n = data.draw(st.sampled_from(NS))
    x, mu0, tau, s = _conjugate(data, dtype, n)
    got = G.normal_log_evidence(*map(_j, (x, mu0, tau, s)))
    assert got.dtype == dtype and got.shape == (B,)
    exact = _rows(o_log_evidence, x, mu0, tau, s)
    O.assert_close(got, exact, O.rtol(dtype, n) * _evidence_scale(x, mu0, tau, s), "normal_log_evidence")


def _evidence_scale(x, mu0, tau, s):
    """The scale of test_normal_log_evidence_matches_dense_multivariate_normal's docstring."""
    x, mu0, tau, s = (np.asarray(a, np.float64) for a in (x, mu0, tau, s))
    n = x.shape[-1]
    xbar = x.mean(-1)
    h = np.hypot(s, np.sqrt(n) * tau)
    u = np.sqrt(n) * (xbar - mu0) / h
    within = np.sum(((x - xbar[:, None]) / s[:, None]) ** 2, -1)
    return (n * (1 + np.abs(np.log(s)) + np.log(2 * np.pi)) + np.abs(np.log(h)) + within + u ** 2
            + np.abs(u) * np.sqrt(n) * (np.max(np.abs(x), -1) + np.abs(mu0)) / h)


@settings(max_examples=S.examples(15))
@given(data=st.data(), theta=st.floats(-5.0, 5.0))
def test_evidence_is_likelihood_times_prior_over_posterior_for_every_theta(data, theta):
    """Bayes' rule solved for the evidence: log p(x) = log p(x|θ) + log p(θ) - log p(θ|x), any θ
    (float64; the three densities from gaussian_log_density, the posterior from normal_posterior)."""
    x, mu0, tau, s = _conjugate(data, np.float64, NS[0])
    th = mu0 + theta * tau
    post_mean, post_std = G.normal_posterior(x, mu0, tau, s)
    lik = np.sum(np.asarray(G.gaussian_log_density(x, th[:, None], s[:, None])), -1)
    rhs = lik + np.asarray(G.gaussian_log_density(th, mu0, tau)) - np.asarray(
        G.gaussian_log_density(th, post_mean, post_std))
    got = np.asarray(G.normal_log_evidence(x, mu0, tau, s))
    # each log-density: 1 + z² + |log σ|; the posterior's, also the rounding of (μ_n, σ_n) as
    # bounded in test_normal_posterior_matches_oracle, amplified by z/σ_n; the evidence: its scale
    m, sd = np.asarray(post_mean), np.asarray(post_std)
    z_post = (th - m) / sd
    scale = (np.sum(1 + ((x - th[:, None]) / s[:, None]) ** 2 + np.abs(np.log(s[:, None])), -1)
             + 1 + theta ** 2 + np.abs(np.log(tau))
             + 1 + z_post ** 2 * 2 + np.abs(np.log(sd)) + np.abs(z_post) * (np.abs(mu0) + np.max(np.abs(x), -1)) / sd
             + _evidence_scale(x, mu0, tau, s))
    O.assert_close(got, rhs, O.rtol(np.float64, NS[0]) * scale, "evidence identity")


def test_no_observations_give_the_prior_and_zero_log_evidence():
    x = jnp.zeros((3, 0), jnp.float32)
    mean, std = G.normal_posterior(x, jnp.asarray([1.0, -2.0, 0.5]), 2.0, 0.3)
    assert np.array_equal(np.asarray(mean), [1.0, -2.0, 0.5]) and np.array_equal(np.asarray(std), [2.0] * 3)
    assert np.array_equal(np.asarray(G.normal_log_evidence(x, 0.0, 2.0, 0.3)), [0.0] * 3)


@pytest.mark.parametrize("dtype", FLOATS)
def test_single_observation_evidence_is_the_marginal_gaussian(dtype):
    """n = 1: x ~ N(μ0, s² + τ²)."""
    x = np.asarray([[0.3], [-4.0], [12.0]], dtype)
    got = np.asarray(G.normal_log_evidence(x, 1.0, 2.0, 0.5))
    exact = np.array([o_log_density(v, 1.0, math.sqrt(4.25)) for v in x[:, 0]])
    O.assert_close(got, exact, O.rtol(dtype) * (1 + np.abs(exact)), "n = 1")


@pytest.mark.parametrize("dtype", FLOATS)
def test_conjugate_model_extreme_scales_do_not_overflow(dtype):
    """τ = 1e30, s = 1e-30 (τ² and s² overflow and underflow in float32; here only hypot is formed)."""
    x = np.asarray([[1.0, 1.5, 2.0, 2.5]], dtype)
    tau, s = np.asarray([1e30], dtype), np.asarray([1e-30], dtype)
    mean, std = G.normal_posterior(x, 0.0, tau, s)
    exact = o_posterior(x[0], 0.0, tau[0], s[0])
    O.assert_close(mean, [exact[0]], O.rtol(dtype, 4) * 2.5, "posterior mean, extreme")
    O.assert_close(std, [exact[1]], O.rtol(dtype) * exact[1], "posterior std, extreme")
    got = G.normal_log_evidence(x, 0.0, tau, s)
    exact_ev = o_log_evidence(x[0], 0.0, tau[0], s[0])
    # the within-sample term is ~1.25e60: in float32 it overflows (the true value is below -1e60)
    if dtype == np.float32:
        assert float(got[0]) == -np.inf
    else:
        O.assert_close(got, [exact_ev], O.rtol(dtype, 4) * abs(exact_ev), "evidence, extreme")
    big = G.normal_log_evidence(np.asarray([[3.0, 3.0]], dtype), 0.0, tau, np.asarray([1e-3], dtype))
    exact_big = o_log_evidence([3.0, 3.0], 0.0, 1e30 if dtype == np.float64 else float(tau[0]), float(dtype(1e-3)))
    O.assert_close(big, [exact_big], O.rtol(dtype, 2) * (4 + abs(exact_big)), "evidence, huge prior")


# ============================================================================ mixtures


def _mixture(data, dtype, k, zeros=True):
    w = data.draw(S.probs(k, zeros=zeros))
    m = _locations(data, (B, k), scales=(1.0, 10.0))
    s = data.draw(_log_uniform((B, k), 1e-2, 1e2))
    x = _locations(data, (B,), scales=(1.0, 10.0, 1e3))
    return tuple(S.cast(a, dtype) for a in (x, w, m, s))


@pytest.mark.parametrize("dtype", FLOATS)
@settings(max_examples=S.examples(15))
@given(data=st.data())
def test_mixture_log_density_matches_oracle(dtype, data):
    """Weights with zeros, points far in the tails (z up to 1e5: every density underflows).
    Scale: 1 + max over live components of (z² + |log σ| + |log π|), the size of the terms."""
    k = data.draw(st.sampled_from([2, 5]))
    x, w, m, s = _mixture(data, dtype, k)
    got = G.gaussian_mixture_log_density(*map(_j, (x, w, m, s)))
    assert got.dtype == dtype and got.shape == (B,)
    exact = np.array([o_mixture(x[i], w[i], m[i], s[i]) for i in range(B)])
    live = w > 0
    z2 = ((x[:, None].astype(np.float64) - m) / s) ** 2
    scale = 1 + np.max(np.where(live, z2 + np.abs(np.log(s)) + np.abs(np.log(np.where(live, w, 1.0))), 0), -1)
    O.assert_close(got, exact, O.rtol(dtype, k) * scale, "gaussian_mixture_log_density")


MIX_GRAD = jax.jit(jax.grad(lambda *a: jnp.sum(S.ROW_WEIGHTS * G.gaussian_mixture_log_density(*a)),
                            argnums=(0, 1, 2, 3)))


@pytest.mark.parametrize("dtype", FLOATS)
@settings(max_examples=S.examples(10))
@given(data=st.data())
def test_mixture_derivatives_match_oracle_and_stay_finite_at_zero_weights(dtype, data):
    """∂/∂π_k = N_k(x)/p(x) (finite also where π_k = 0), ∂/∂x = -Σ_k r_k z_k/σ_k with r_k the
    responsibilities; x is drawn within one σ of the heaviest component. Each log N_k carries an
    error eps·E_k, E_k = 1 + z_k² + |log σ_k| + |log π_k|, and log p one of eps·Σ_k r_k E_k;
    N_k/p below finfo.tiny underflows (absolute tiny)."""
    x, w, m, s = _mixture(data, dtype, 5)
    top = np.argmax(w, axis=-1)
    rows = np.arange(B)
    x = S.cast(m[rows, top] + s[rows, top] * data.draw(_unit((B,))), dtype)
    grads = MIX_GRAD(*map(_j, (x, w, m, s)))
    for g in grads:
        assert g.dtype == dtype and np.all(np.isfinite(np.asarray(g))), g
    xx, ww, mm, ss = (np.asarray(a, np.float64) for a in (x, w, m, s))
    for i in rows:
        lse = O.mpf(o_mixture(xx[i], ww[i], mm[i], ss[i]))
        dens = np.array([float(MP.exp(O.mpf(o_log_density(xx[i], a, b)) - lse)) for a, b in zip(mm[i], ss[i])])
        live = ww[i] > 0
        r = np.where(live, ww[i] * dens, 0.0)
        z = (xx[i] - mm[i]) / ss[i]
        e = 1 + z ** 2 + np.abs(np.log(ss[i])) + np.abs(np.log(np.where(live, ww[i], 1.0)))
        ep = np.sum(r * e)
        wi = S.ROW_WEIGHTS[i]
        fin = np.isfinite(dens)  # a zero-weight component centred at x can have N_k/p beyond float64
        O.assert_close(np.asarray(grads[1])[i][fin], wi * dens[fin],
                       O.rtol(dtype, 5) * dens[fin] * (e[fin] + ep) + np.finfo(dtype).tiny, "d/dπ")
        O.assert_close(np.asarray(grads[0])[i], wi * -np.sum(r * z / ss[i]),
                       O.rtol(dtype, 5) * np.sum(r * np.abs(z) / ss[i] * (e + ep)) + np.finfo(dtype).tiny, "d/dx")


@pytest.mark.parametrize("dtype", FLOATS)
@settings(max_examples=S.examples(15))
@given(data=st.data())
def test_moment_match_matches_oracle(dtype, data):
    k = data.draw(st.sampled_from([2, 5]))
    _, w, m, s = _mixture(data, dtype, k)
    mean, std = G.moment_match(*map(_j, (w, m, s)))
    assert mean.dtype == std.dtype == dtype and mean.shape == (B,)
    exact = np.array([o_moment_match(w[i], m[i], s[i]) for i in range(B)])
    scale = np.max(np.abs(m), -1) + np.max(s, -1)
    O.assert_close(mean, exact[:, 0], O.rtol(dtype, k) * scale, "moment_match mean")
    O.assert_close(std, exact[:, 1], O.rtol(dtype, k) * scale, "moment_match std")


@pytest.mark.parametrize("scale", [1e-160, 1e160])
def test_moment_match_has_no_under_or_overflow_of_the_squares(scale):
    w, m, s = np.array([0.2, 0.5, 0.3]), np.array([-1.0, 0.5, 2.0]), np.array([0.5, 1.0, 0.25])
    ref, got = G.moment_match(w, m, s), G.moment_match(w, scale * m, scale * s)
    for a, b in zip(ref, got):
        O.assert_close(np.asarray(b) / scale, a, O.rtol(np.float64, 3) * (1 + np.abs(np.asarray(a))), "scaled")


@jax.jit
def forward_kl(w, m, s, mu, sd):
    """Σ_k π_k H(N_k, N(μ, σ²)) = KL(p‖N(μ, σ²)) + H(p)."""
    return jnp.sum(w * G.gaussian_cross_entropy(m, s, mu[..., None], sd[..., None]), -1)
FORWARD_KL_GRAD = jax.jit(jax.grad(lambda musd, w, m, s: jnp.sum(forward_kl(w, m, s, musd[0], musd[1]))))


@settings(max_examples=S.examples(15))
@given(data=st.data(), shift=_unit((2, B)))
def test_moment_match_minimises_forward_kl(data, shift):
    """Claim A6: KL(p‖N(μ, σ²)) = -H(p) + Σ_k π_k H(N_k, N(μ, σ²)) (the cross-entropy is linear in
    p); moment_match is its minimiser: zero gradient there, and every perturbed (μ, σ) is worse."""
    _, w, m, s = _mixture(data, np.float64, 5)
    mean, std = (np.asarray(a) for a in G.moment_match(w, m, s))
    g = np.asarray(FORWARD_KL_GRAD(jnp.stack([mean, std]), w, m, s))
    # ∂/∂μ = (μ - E x)/σ², ∂/∂σ = 1/σ - E(x-μ)²/σ³: terms of size (|μ| + max|μ_k|)/σ² and 1/σ
    tol = O.rtol(np.float64, 5) * np.stack([(np.abs(mean) + np.max(np.abs(m), -1) + std) / std ** 2, 2 / std])
    assert np.all(np.abs(g) <= tol), (g, tol)
    best = np.asarray(forward_kl(w, m, s, mean, std))
    other = np.asarray(forward_kl(w, m, s, mean + shift[0] * std, std * np.exp(shift[1])))
    moved = np.any(shift != 0, axis=0)
    assert np.all(other[moved] > best[moved] - O.rtol(np.float64, 5) * (1 + np.abs(best[moved])))


# ============================================================================ dtypes, transformations


def _bfloat16(a):
    return jnp.asarray(a, jnp.bfloat16)


def test_bfloat16_inputs_compute_in_float32():
    """bfloat16 arguments give the float32 result of the upcast arguments (shapes as in the
    float32 tests above, so that the reference calls reuse their compilations)."""
    rng = np.random.default_rng(2)
    m, s = rng.normal(size=SHAPE), np.exp(rng.normal(size=SHAPE))
    x = rng.normal(size=(B, NS[0]))
    w = rng.dirichlet(np.ones(5), size=B)
    w[0, 1] = 0.0
    cases = [
        (G.gaussian_log_density, (m, -m, s)),
        (G.gaussian_kl, (m, s, -m, s[:, ::-1])),
        (G.gaussian_cross_entropy, (m, s, -m, s[:, ::-1])),
        (lambda *a: G.normal_posterior(*a)[0], (x, m[:, 0], s[:, 0], s[:, 1])),
        (G.normal_log_evidence, (x, m[:, 0], s[:, 0], s[:, 1])),
        (G.gaussian_mixture_log_density, (x[:, 0], w, m, s)),
        (lambda *a: G.moment_match(*a)[1], (w, m, s)),
    ]
    for f, args in cases:
        got = f(*(_bfloat16(a) for a in args))
        ref = np.asarray(f(*(_bfloat16(a).astype(jnp.float32) for a in args)))
        assert got.dtype == jnp.float32
        O.assert_close(got, ref, O.rtol(np.float32, 4) * (1 + np.abs(ref)), str(f))


def test_python_numbers_do_not_promote_float32():
    x = jnp.asarray([0.0, 1.0], jnp.float32)
    assert G.gaussian_log_density(x, 0.0, 1.0).dtype == jnp.float32
    assert G.gaussian_kl(x, 1.0, 0.5, 2).dtype == jnp.float32
    assert G.normal_log_evidence(x[None], 0.0, 1.0, 0.5).dtype == jnp.float32
    assert G.gaussian_log_density(x.astype(jnp.float64), 0.0, 1.0).dtype == jnp.float64


def test_jit_vmap_axis_and_broadcasting():
    """jit ≡ eager ≡ vmap ≡ row by row, axis=k ≡ moveaxis; broadcasting of parameters (float64)."""
    dtype = np.float64
    rng = np.random.default_rng(1)
    x = rng.normal(size=(2, 3, 5)).astype(dtype)
    mu0, tau, s = rng.normal(size=(2, 3)).astype(dtype), np.full((3,), 2.0, dtype), np.asarray(0.5, dtype)
    ref = np.asarray(G.normal_log_evidence(x, mu0, tau, s))
    assert ref.shape == (2, 3)
    tol = O.rtol(dtype, 5) * (1 + np.abs(ref))
    O.assert_close(jax.jit(G.normal_log_evidence)(x, mu0, tau, s), ref, tol, "jit")
    O.assert_close(jax.vmap(G.normal_log_evidence, (0, 0, None, None))(x, mu0, tau, s), ref, tol, "vmap")
    O.assert_close(G.normal_log_evidence(np.moveaxis(x, -1, 0), mu0, tau, s, axis=0), ref, tol, "axis=0")
    w = np.asarray([[0.2, 0.8], [0.5, 0.5]], dtype)
    m, sd = np.asarray([[0.0, 1.0], [-1.0, 1.0]], dtype), np.asarray([[1.0, 2.0], [1.0, 0.5]], dtype)
    xs = rng.normal(size=(4, 2)).astype(dtype)  # (4, 2) points against 2 mixtures: broadcast
    got = np.asarray(G.gaussian_mixture_log_density(xs, w, m, sd))
    assert got.shape == (4, 2)
    by_col = np.stack([np.asarray(G.gaussian_mixture_log_density(xs[:, b], w[b], m[b], sd[b])) for b in range(2)], -1)
    O.assert_close(got, by_col, O.rtol(dtype, 2) * (1 + np.abs(got)), "mixture broadcast")
    moved = np.asarray(G.gaussian_mixture_log_density(xs, w.T, m.T, sd.T, axis=0))
    O.assert_close(moved, got, O.rtol(dtype, 2) * (1 + np.abs(got)), "mixture axis=0")


# ============================================================================ argument errors

Z3 = jnp.zeros(3)


@pytest.mark.parametrize("call, exc, name", [
    (lambda: G.gaussian_log_density(Z3, 0.0, 0.0), ValueError, "std"),
    (lambda: G.gaussian_log_density(Z3, 0.0, -1.0), ValueError, "std"),
    (lambda: G.gaussian_log_density(Z3, 0.0, float("nan")), ValueError, "std"),
    (lambda: G.gaussian_log_density(Z3, 0.0, float("inf")), ValueError, "std"),
    (lambda: G.gaussian_log_density(Z3, 0.0, np.array([1.0, 0.0, 1.0])), ValueError, "std"),
    (lambda: G.gaussian_log_density(Z3, jnp.zeros(4), 1.0), ValueError, "mean"),
    (lambda: G.gaussian_log_density(jnp.arange(3), 0.0, 1.0), TypeError, "x"),
    (lambda: G.gaussian_log_density(Z3, True, 1.0), TypeError, "mean"),
    (lambda: G.gaussian_kl(0.0, 1.0, 0.0, 0), ValueError, "std_q"),
    (lambda: G.gaussian_kl(0.0, -2.0, 0.0, 1.0), ValueError, "std_p"),
    (lambda: G.gaussian_kl(Z3, 1.0, jnp.zeros(2), 1.0), ValueError, "mean_q"),
    (lambda: G.gaussian_kl(Z3, jnp.ones(3, jnp.int32), Z3, 1.0), TypeError, "std_p"),
    (lambda: G.gaussian_cross_entropy(Z3, 1.0, Z3, -1.0), ValueError, "std_q"),
    (lambda: G.normal_posterior(jnp.zeros((2, 3)), 0.0, 0.0, 1.0), ValueError, "prior_std"),
    (lambda: G.normal_posterior(jnp.zeros((2, 3)), 0.0, 1.0, -1.0), ValueError, "noise_std"),
    (lambda: G.normal_posterior(jnp.zeros((2, 3)), jnp.zeros(3), 1.0, 1.0), ValueError, "prior_mean"),
    (lambda: G.normal_posterior(jnp.zeros((2, 3)), jnp.zeros((2, 1)), 1.0, 1.0), ValueError, "prior_mean"),
    (lambda: G.normal_log_evidence(jnp.zeros((2, 3), jnp.int32), 0.0, 1.0, 1.0), TypeError, "x"),
    (lambda: G.normal_log_evidence(jnp.zeros((2, 3)), 0.0, jnp.ones(2, jnp.int32), 1.0), TypeError, "prior_std"),
    (lambda: G.normal_log_evidence(jnp.zeros((2, 3)), 0.0, 1.0, 1.0, axis=2), ValueError, "axis"),
    (lambda: G.gaussian_mixture_log_density(Z3, jnp.ones(2) / 2, jnp.zeros(3), jnp.ones(2)), ValueError, "means"),
    (lambda: G.gaussian_mixture_log_density(Z3, jnp.ones(2) / 2, jnp.zeros(2), jnp.ones(3)), ValueError, "stds"),
    (lambda: G.gaussian_mixture_log_density(Z3, jnp.ones((2, 2)) / 2, jnp.zeros((2, 2)), jnp.ones((2, 2))),
     ValueError, "x"),
    (lambda: G.gaussian_mixture_log_density(0.0, jnp.ones(2) / 2, jnp.zeros(2), np.array([1.0, 0.0])),
     ValueError, "stds"),
    (lambda: G.gaussian_mixture_log_density(0.0, jnp.ones(2, jnp.int32), jnp.zeros(2), jnp.ones(2)),
     TypeError, "weights"),
    (lambda: G.moment_match(jnp.ones(2) / 2, jnp.zeros(2), jnp.ones(3)), ValueError, "stds"),
])
def test_bad_input_raises_naming_the_argument(call, exc, name):
    with pytest.raises(exc) as err:
        call()
    assert f"`{name}`" in str(err.value), str(err.value)


def test_public_functions_document_a_formula():
    for name in G.__all__:
        doc = getattr(G, name).__doc__ or ""
        assert ".. math::" in doc, name
