"""vfe.variational against the oracle, and the variational identities as direct property tests:
F(q) = KL(q‖posterior) - log p(x); F ≥ -log p(x) with equality at the posterior; the point mass;
MAP versus MLE; the Gaussian free energy against its closed form.

Tolerances (stated once): ``oracle.rtol(dtype, n) = K · n · eps(dtype)``, ``K = 64``, times the scale
of the terms: ``Σ q (|log q| + |log p(x,θ)| + 1)`` for F, ``max|log p(x,θ)| + 1 + log n`` for
the evidence and log-posterior, 1 for probabilities.
"""

from __future__ import annotations

import math

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from jax.test_util import check_grads

import oracle as O
import strategies as S
import vfe

FLOATS = S.FLOATS
N = S.DERIV_SIZE




def _log(x):
    with np.errstate(divide="ignore"):
        return np.log(x)


@st.composite
def model(draw, n=None, dtype=np.float64):
    """``(log q, log p(x, θ))``: q with zeros; the joint -inf (impossible θ) only where q = 0."""
    n = draw(S.sizes()) if n is None else n
    q = draw(S.probs(n))
    lj = draw(S.logits(n, scales=(1.0, 30.0, 1e3)))
    lj = np.where(q == 0, lj, O.finite_part(lj)) - 5.0
    return S.cast(_log(q), dtype), S.cast(lj, dtype)


def _f_scale(lq, lj):
    q = np.exp(lq.astype(np.float64))
    return np.sum(np.where(q > 0, q * (np.abs(O.finite_part(lq)) + np.abs(O.finite_part(lj)) + 1), 0), -1)


@pytest.mark.parametrize("dtype", FLOATS)
@settings(max_examples=S.examples(15))
@given(data=st.data())
def test_free_energy_elbo_evidence_posterior_match_oracle(dtype, data):
    lq, lj = data.draw(model(dtype=dtype))
    n = lq.shape[-1]
    f, e = vfe.free_energy(lq, lj), vfe.elbo(lq, lj)
    assert f.dtype == dtype
    exact = O.rowwise(O.free_energy, lq, lj)
    tol = O.rtol(dtype, n) * _f_scale(lq, lj)
    O.assert_close(f, exact, tol, "free_energy")
    O.assert_close(e, -exact, tol, "elbo")
    mag = np.max(np.abs(O.finite_part(lj)), -1) + 1 + np.log(n)
    O.assert_close(vfe.log_evidence(lj), O.rowwise(O.log_evidence, lj), O.rtol(dtype, n) * mag, "log_evidence")
    O.assert_close(vfe.posterior(lj), O.rowwise(O.posterior, lj), O.rtol(dtype, n), "posterior")
    O.assert_close(vfe.log_posterior(lj), O.rowwise(O.log_posterior, lj), O.rtol(dtype, n) * mag[:, None],
                   "log_posterior")


@pytest.mark.parametrize("dtype", FLOATS)
@settings(max_examples=S.examples(15))
@given(data=st.data())
def test_free_energy_is_kl_to_posterior_minus_log_evidence(dtype, data):
    """F(q) = KL(q ‖ p(θ|x)) - log p(x) ≥ -log p(x) (claims B2, B3)."""
    lq, lj = data.draw(model(dtype=dtype))
    n = lq.shape[-1]
    f = np.asarray(vfe.free_energy(lq, lj), np.float64)
    kl = np.asarray(vfe.kl_divergence_from_logits(lq, lj), np.float64)
    ev = np.asarray(vfe.log_evidence(lj), np.float64)
    tol = O.rtol(dtype, n) * (_f_scale(lq, lj) + np.max(np.abs(O.finite_part(lj)), -1) + np.log(n))
    O.assert_close(f, kl - ev, tol, "F = KL - log p(x)")
    assert np.all(f >= -ev - tol)


@pytest.mark.parametrize("dtype", FLOATS)
@settings(max_examples=S.examples(15))
@given(data=st.data())
def test_free_energy_at_the_posterior_is_minus_log_evidence(dtype, data):
    """Equality in F ≥ -log p(x) iff q is the posterior (claim B4)."""
    _, lj = data.draw(model(dtype=dtype))
    n = lj.shape[-1]
    lpost = vfe.log_posterior(lj)
    f = np.asarray(vfe.free_energy(lpost, lj), np.float64)
    ev = np.asarray(vfe.log_evidence(lj), np.float64)
    mag = np.max(np.abs(O.finite_part(lj)), -1) + 1 + np.log(n)
    O.assert_close(f, -ev, O.rtol(dtype, n) * mag, "F(posterior)")


@pytest.mark.parametrize("dtype", FLOATS)
@settings(max_examples=S.examples(15))
@given(data=st.data())
def test_point_mass_free_energy_is_free_energy_of_one_hot(dtype, data):
    n = data.draw(S.sizes())
    lj = S.cast(data.draw(S.logits(n, masks=False)), dtype)
    idx = data.draw(S.labels(n))
    one_hot_log = S.cast(np.where(np.eye(n)[idx] > 0, 0.0, -np.inf), dtype)
    pm = np.asarray(vfe.point_mass_free_energy(lj, idx), np.float64)
    O.assert_close(pm, np.asarray(vfe.free_energy(one_hot_log, lj), np.float64), 0.0, "point mass")
    O.assert_close(pm, -lj.astype(np.float64)[np.arange(S.BATCH), idx], 0.0, "point mass = -log p(x, θ̂)")
    # and the MAP index minimises it over θ̂
    best = np.asarray(vfe.map_estimate(lj))
    all_pm = np.stack([np.asarray(vfe.point_mass_free_energy(lj, np.full(S.BATCH, k, np.int32)))
                       for k in range(n)], -1)
    assert np.array_equal(np.argmin(all_pm, -1), best)


def test_map_and_mle_differ_under_an_informative_prior_and_agree_under_a_flat_one():
    log_lik = np.log(np.array([0.5, 0.3, 0.2]))
    prior = np.log(np.array([0.1, 0.1, 0.8]))
    flat = np.log(np.full(3, 1 / 3))
    assert int(vfe.mle_estimate(log_lik)) == 0
    assert int(vfe.map_estimate(log_lik + prior)) == 2  # 0.05, 0.03, 0.16
    assert int(vfe.map_estimate(log_lik + flat)) == int(vfe.mle_estimate(log_lik))


@settings(max_examples=S.examples(15))
@given(mu0=st.floats(-3, 3), s0=st.floats(0.3, 3), sl=st.floats(0.3, 3), x=st.floats(-3, 3),
       m=st.floats(-3, 3), s=st.floats(0.1, 3))
def test_gaussian_free_energy_matches_closed_form(mu0, s0, sl, x, m, s):
    """Prior N(μ0, s0²), likelihood N(x; θ, sl²), belief N(m, s²): E_q[log p(x,θ)] is exact,
    F = -E_q log N(θ; μ0, s0²) - E_q log N(x; θ, sl²) - H(q); at the posterior F = -log p(x)."""
    def lj(theta):
        return (-0.5 * ((theta - mu0) / s0) ** 2 - math.log(s0 * math.sqrt(2 * math.pi))
                - 0.5 * ((x - theta) / sl) ** 2 - math.log(sl * math.sqrt(2 * math.pi)))

    def e_log_normal(mean, sd, c):  # E_{θ~N(m, s²)} log N(c; θ, sd²) with mean θ: symmetric
        return -0.5 * (((m - c) ** 2 + s ** 2) / sd ** 2) - math.log(sd * math.sqrt(2 * math.pi))

    closed = -e_log_normal(m, s0, mu0) - e_log_normal(m, sl, x) - (0.5 * math.log(2 * math.pi * math.e * s * s))
    got = float(vfe.gaussian_free_energy(lj, jnp.asarray(m), jnp.asarray(s)))
    assert abs(got - closed) <= O.rtol(np.float64, 64) * (abs(closed) + 1)
    # the exact posterior makes F equal to -log evidence (conjugate Gaussian)
    prec = 1 / s0 ** 2 + 1 / sl ** 2
    pm, ps = (mu0 / s0 ** 2 + x / sl ** 2) / prec, math.sqrt(1 / prec)
    var = s0 ** 2 + sl ** 2
    log_ev = -0.5 * (x - mu0) ** 2 / var - 0.5 * math.log(2 * math.pi * var)
    f_post = float(vfe.gaussian_free_energy(lj, jnp.asarray(pm), jnp.asarray(ps)))
    assert abs(f_post + log_ev) <= O.rtol(np.float64, 64) * (abs(log_ev) + 1)
    ent = float(vfe.gaussian_entropy(jnp.asarray(s)))
    assert abs(ent - O.gaussian_entropy(s)) <= O.rtol(np.float64, 1) * (abs(ent) + 1)


# ============================================================================ derivatives, transformations


FE_GRAD = jax.jit(jax.grad(lambda a, b: jnp.sum(vfe.free_energy(a, b)), argnums=(0, 1)))
FE_JAC = jax.jit(jax.jacfwd(vfe.free_energy, argnums=(0, 1)))
EV_GRAD = jax.jit(jax.grad(lambda a: jnp.sum(vfe.log_evidence(a))))
POST_JAC = jax.jit(jax.jacfwd(vfe.posterior))
LPOST_JAC = jax.jit(jax.jacrev(vfe.log_posterior))


@pytest.mark.parametrize("dtype", FLOATS)
@settings(max_examples=S.examples(10))
@given(data=st.data())
def test_derivatives_finite_and_match_oracle(dtype, data):
    """∂F/∂log q = q(log q - log p + 1), ∂F/∂log p = -q, ∂log p(x)/∂log p(x,θ) = posterior;
    no NaN on masked inputs; finite where the value is."""
    lq, lj = data.draw(model(N, dtype=dtype))
    value = vfe.free_energy(lq, lj)
    gq, gj = FE_GRAD(lq, lj)
    for g in (gq, gj, *FE_JAC(lq, lj)):
        O.assert_derivative_finite(value, g, "free_energy")
    d = [O.d_free_energy(lq[r], lj[r]) for r in range(S.BATCH)]
    for got, k in ((gq, 0), (gj, 1)):
        ex = np.stack([x[k] for x in d])
        O.assert_close(got, ex, O.rtol(dtype, N) * (1 + _f_scale(lq, lj))[:, None], f"∂F/∂arg{k}")
    ge = EV_GRAD(lj)
    O.assert_close(ge, O.rowwise(O.posterior, lj), O.rtol(dtype, N), "∂ log p(x)")
    O.assert_derivative_finite(vfe.posterior(lj), POST_JAC(lj), "posterior")
    O.assert_derivative_finite(vfe.log_posterior(lj), LPOST_JAC(lj), "log_posterior")


@settings(max_examples=S.examples(3))
@given(data=st.data())
def test_check_grads_float64_interior(data):
    q = data.draw(S.probs(N, zeros=False, min_log=-5.0))
    lj = data.draw(S.logits(N, masks=False, scales=(1.0, 3.0)))
    lq = np.log(q)
    for f, args in ((vfe.free_energy, (lq, lj)), (vfe.log_evidence, (lj,)), (vfe.posterior, (lj,)),
                    (vfe.log_posterior, (lj,)), (vfe.gaussian_entropy, (np.abs(lj) + 0.5,))):
        check_grads(f, args, order=1, modes=("fwd", "rev"))


@pytest.mark.parametrize("dtype", FLOATS)
@settings(max_examples=S.examples(3))
@given(data=st.data())
def test_jit_vmap_axis(dtype, data):
    lq, lj = data.draw(model(5, dtype=dtype).map(lambda t: t))
    lq2, lj2 = data.draw(model(5, dtype=dtype))
    lq3 = np.concatenate([lq, lq2, lq])[:6].reshape(2, 3, 5)
    lj3 = np.concatenate([lj, lj2, lj])[:6].reshape(2, 3, 5)
    tol = lambda r: O.rtol(dtype, 5) * (1 + np.abs(O.finite_part(r))) * (1 + np.max(np.abs(O.finite_part(lj3))))  # noqa: E731
    for f, args in ((vfe.free_energy, (lq3, lj3)), (vfe.log_evidence, (lj3,)), (vfe.posterior, (lj3,)),
                    (vfe.log_posterior, (lj3,))):
        ref = np.asarray(f(*args))
        O.assert_close(jax.jit(f)(*args), ref, tol(ref), f"jit {f.__name__}")
        O.assert_close(jax.vmap(f)(*args), ref, tol(ref), f"vmap {f.__name__}")
        for axis in (0, 1, -1):
            out = np.asarray(f(*[np.moveaxis(a, -1, axis) for a in args], axis=axis))
            out = np.moveaxis(out, axis, -1) if out.ndim == 3 else out
            O.assert_close(out, ref, tol(ref), f"axis={axis} {f.__name__}")


@pytest.mark.parametrize("low", [jnp.bfloat16, jnp.float16])
def test_low_precision_inputs(low):
    lq = np.array([[np.log(0.5), np.log(0.25), np.log(0.25), -np.inf], np.log([0.125, 0.125, 0.25, 0.5])])
    lj = np.array([[-1.0, -2.0, -3.0, -np.inf], [-1.0, -0.5, -4.0, -2.0]])
    lo = lambda x: jnp.asarray(x, low)  # noqa: E731
    up = lambda x: np.asarray(jnp.asarray(x, low), np.float32)  # noqa: E731
    for f, args, dist in ((vfe.free_energy, (lq, lj), False), (vfe.log_evidence, (lj,), False),
                          (vfe.posterior, (lj,), True)):
        got = f(*map(lo, args))
        ref = np.asarray(f(*map(up, args)))
        assert got.dtype == (low if dist else jnp.float32)
        eps = float(jnp.finfo(low).eps) if dist else O.rtol(np.float32, 4)
        O.assert_close(np.asarray(got, np.float64), ref, eps * (1 + np.abs(ref)), f.__name__)
