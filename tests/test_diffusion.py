"""vfe.diffusion (claims E1, E2) against independent oracles: the published schedules recomputed in
40-digit mpmath from the papers' formulas (Ho et al. 2020's linear schedule, Nichol & Dhariwal 2021's
cosine schedule), the forward process, posterior, ELBO terms and exact scores written out in float64
NumPy from the textbook formulas (the mixture's responsibilities by a NumPy log-sum-exp), float32 and
float64, the endpoints t = 0, 1, T, low precision and argument errors.

Published numbers checked: √ᾱ_T = 0.0064 for the linear schedule at T = 1000, L_T ≈ 1e-5 bits per
dimension for data in [-1, 1] (Ho et al. §4), ᾱ at t/T = 1/2 for both schedules (Nichol & Dhariwal
Fig. 5).

Tolerances (stated once): ``oracle.rtol(dtype) = 64 · eps(dtype)`` times the sum of the absolute
values of the terms of the formula (each coefficient of the schedule is rounded once to the dtype).

Speed: one data shape ``(B, d) = (4, 3)`` with one time step per row, and the schedules at T = 1000
built once, so that each jitted kernel compiles once per dtype.
"""

from __future__ import annotations

import math

import jax
import jax.numpy as jnp
import mpmath
import numpy as np
import oracle as O
import pytest
import strategies as S
from hypothesis import given, settings
from hypothesis import strategies as st
from hypothesis.extra import numpy as hnp

import vfe
from vfe import diffusion as D

FLOATS = S.FLOATS
B, DIM = 4, 3
T = 1000
MP = mpmath.MPContext()
MP.dps = 40


# ----------------------------------------------------------------------------- oracles


def _mp_schedule(betas):
    """(β, ᾱ, 1 - ᾱ) of ``β_1..β_T`` (mpmath numbers) as float64 arrays of length T + 1."""
    ab, out = MP.mpf(1), [(0.0, 1.0, 0.0)]
    for b in betas:
        ab *= 1 - b
        out.append((float(b), float(ab), float(1 - ab)))
    return tuple(np.array(col) for col in zip(*out))


def _mp_linear():
    return _mp_schedule([MP.mpf(1e-4) + (MP.mpf(0.02) - MP.mpf(1e-4)) * k / (T - 1) for k in range(T)])


_S = MP.mpf("0.008")


def _mp_cosine_f(t):
    return MP.cos((MP.mpf(t) / T + _S) / (1 + _S) * MP.pi / 2) ** 2


def _mp_cosine():
    """Nichol & Dhariwal eq. (17) with the clip β ≤ 0.999, ᾱ recomputed from the clipped β."""
    f = [_mp_cosine_f(t) for t in range(T + 1)]
    return _mp_schedule([min(1 - f[t] / f[t - 1], MP.mpf("0.999")) for t in range(1, T + 1)])


ORACLE = {"linear": _mp_linear(), "cosine": _mp_cosine()}
SCHEDULES = {(name, dt): D.noise_schedule(name, T, dtype=dt) for name in D.SCHEDULES for dt in FLOATS}


def _at(name, t):
    """(β_t, ᾱ_t, 1 - ᾱ_t, ᾱ_{t-1}, 1 - ᾱ_{t-1}) of the oracle schedule, shaped (B, 1)."""
    beta, ab, omab = ORACLE[name]
    tp = np.maximum(t - 1, 0)
    return tuple(a[:, None] for a in (beta[t], ab[t], omab[t], ab[tp], omab[tp]))


def _j(x):
    return jnp.asarray(x)


# ----------------------------------------------------------------------------- strategies


def _data(dtype, lo=-5.0, hi=5.0):
    """Values in [lo, hi], those below 1e-30 in magnitude replaced by 0: products stay normal numbers
    (XLA on CPU flushes subnormal results to zero)."""
    element = st.floats(lo, hi, allow_subnormal=False).map(lambda v: 0.0 if abs(v) < 1e-30 else v)
    return hnp.arrays(np.float64, (B, DIM), elements=element).map(lambda x: S.cast(x, dtype))


def _times(lo=0):
    """One step per row; the endpoints lo, 1, 2 and T are drawn often."""
    step = st.one_of(st.sampled_from([lo, max(lo, 1), max(lo, 2), T - 1, T]), st.integers(lo, T))
    return hnp.arrays(np.int32, (B,), elements=step)


# ============================================================================ schedules


def test_linear_schedule_is_ho_et_al_and_reproduces_the_published_numbers():
    s = SCHEDULES["linear", np.float64]
    beta, ab, omab = ORACLE["linear"]
    assert s.num_steps == T and s.betas.shape == (T + 1,)
    assert float(s.betas[0]) == 0.0 and float(s.betas[1]) == 1e-4 and float(s.betas[-1]) == 0.02
    O.assert_close(s.betas, beta, 1e-17, "betas")
    O.assert_close(s.alpha_bars, ab, 1e-13 * ab, "alpha_bars")
    O.assert_close(s.one_minus_alpha_bars, omab, 1e-13 * omab, "1 - alpha_bars")
    # Ho et al. §4: √ᾱ_T ≈ 0.0064 at T = 1000 ...
    assert round(math.sqrt(ab[-1]), 4) == 0.0064 and abs(math.sqrt(float(s.alpha_bars[-1])) - 0.0063528) < 1e-7
    # ... and L_T = KL(q(x_T|x_0) ‖ N(0, I)) ≈ 1e-5 bits per dimension for data in [-1, 1]
    x0 = np.linspace(-1.0, 1.0, 2001)
    l_t = np.asarray(D.prior_term(s, _j(x0)))
    a_T = MP.mpf(ab[-1])
    exact = np.array([float((a_T * MP.mpf(float(x)) ** 2 - a_T - MP.log(1 - a_T)) / 2) for x in x0])
    O.assert_close(l_t, exact, 1e-12 * exact, "L_T")
    bits_per_dim = float(np.mean(l_t)) / math.log(2)
    assert 0.5e-5 < bits_per_dim < 2e-5, bits_per_dim  # 9.7e-6 bits for x0 uniform on [-1, 1]
    # Nichol & Dhariwal Fig. 5: the linear ᾱ is nearly 0 well before t = T
    assert 0.078 < ab[T // 2] < 0.079 and ab[int(0.75 * T)] < 0.004


def test_cosine_schedule_is_nichol_dhariwal():
    s = SCHEDULES["cosine", np.float64]
    beta, ab, omab = ORACLE["cosine"]
    O.assert_close(s.betas, beta, 16 * np.finfo(np.float64).eps * beta, "betas")
    O.assert_close(s.alpha_bars, ab, 1e-13 * ab, "alpha_bars")
    O.assert_close(s.one_minus_alpha_bars, omab, 1e-13 * omab, "1 - alpha_bars")
    # unclipped steps: ᾱ_t = f(t)/f(0) exactly (t < T); the last step is clipped at 0.999
    f = np.array([float(_mp_cosine_f(t) / _mp_cosine_f(0)) for t in range(T)])
    O.assert_close(s.alpha_bars[:T], f, 1e-13 * f, "f(t)/f(0)")
    assert float(s.betas[-1]) == 0.999 and np.all(np.asarray(s.betas) <= 0.999)
    assert np.all(np.diff(np.asarray(s.alpha_bars)) < 0)
    assert 2.4e-9 < float(s.alpha_bars[-1]) < 2.5e-9
    assert 0.4938 < ab[T // 2] < 0.4939  # ᾱ at t/T = 1/2, against the linear schedule's 0.0786


@pytest.mark.parametrize("name", D.SCHEDULES)
def test_float32_schedules_keep_relative_accuracy_at_both_ends(name):
    s = SCHEDULES[name, np.float32]
    beta, ab, omab = ORACLE[name]
    assert s.alpha_bars.dtype == jnp.float32
    # α_T = 1 - β_T = 0.001 for the cosine schedule: 1 - float32(0.999) would be off by 1.3e-5 relative
    O.assert_close(s.alphas, 1 - beta, O.rtol(np.float32) * (1 - beta), "alphas float32")
    # 1 - ᾱ_1 = β_1 (1e-4 or 4e-5) to float32 accuracy: no cancellation of 1 - 0.9999...
    O.assert_close(s.one_minus_alpha_bars, omab, 4 * O.rtol(np.float32) * omab, "1 - alpha_bars float32")
    O.assert_close(s.alpha_bars, ab, 4 * O.rtol(np.float32) * ab, "alpha_bars float32")


def test_schedule_errors_are_clear():
    with pytest.raises(ValueError, match="unknown schedule 'quadratic'.*linear, cosine"):
        D.noise_schedule("quadratic", 10)
    with pytest.raises(TypeError, match="`name`"):
        D.noise_schedule(1, 10)
    for bad, exc in ((0, ValueError), (True, TypeError), (1.5, TypeError)):
        with pytest.raises(exc, match="`num_steps`"):
            D.noise_schedule("linear", bad)
    with pytest.raises(ValueError, match="`beta_start`"):
        D.linear_schedule(10, beta_start=0.0)
    with pytest.raises(ValueError, match="`beta_end`"):
        D.linear_schedule(10, beta_end=1.5)
    with pytest.raises(ValueError, match="`max_beta`"):
        D.cosine_schedule(10, max_beta=1.0)
    with pytest.raises(ValueError, match="`offset`"):
        D.cosine_schedule(10, offset=-0.1)
    with pytest.raises(TypeError, match="`dtype`"):
        D.linear_schedule(10, dtype=jnp.int32)
    with pytest.raises(ValueError, match="`betas`"):
        D.schedule_from_betas(jnp.ones((2, 3)) * 0.1)
    with pytest.raises(TypeError, match="`betas`"):
        D.schedule_from_betas(jnp.arange(3))
    for bad in ([0.1, 1.0], np.array([0.0, 0.2]), [0.1, float("nan")]):  # host values are checked
        with pytest.raises(ValueError, match="`betas` must lie in"):
            D.schedule_from_betas(bad)
    assert D.schedule_from_betas([0.1, 0.2]).betas.shape == (3,)


def test_schedule_from_betas_is_traceable_and_matches_the_named_schedules():
    s = SCHEDULES["cosine", np.float64]
    again = jax.jit(D.schedule_from_betas)(s.betas[1:])
    for a, b in zip(again, s):
        O.assert_close(a, b, 1e-14 * np.abs(np.asarray(b)), "schedule_from_betas")
    # derivatives through the schedule (incl. t = 0, where 1 - ᾱ = 0 sits under a square root)
    def loss(betas):
        sched = D.schedule_from_betas(betas)
        return jnp.sum(D.q_sample(sched, jnp.ones(7), jnp.arange(7), jnp.ones(7)))
    g = jax.jit(jax.grad(loss))(jnp.full(6, 0.1))
    assert np.all(np.isfinite(np.asarray(g))) and np.any(np.asarray(g) != 0)


# ============================================================================ forward process and posterior


def _forward_oracle(name, t, x0, xt, noise):
    beta, ab, omab, ab_p, omab_p = _at(name, t)
    x0, xt, noise = (np.asarray(a, np.float64) for a in (x0, xt, noise))
    c0, ct = np.sqrt(ab_p) * beta / omab, np.sqrt(1 - beta) * omab_p / omab
    return {
        "marginal": ((np.sqrt(ab) * x0, np.broadcast_to(omab, x0.shape)), np.abs(x0)),
        "step": ((np.sqrt(1 - beta) * x0, np.broadcast_to(beta, x0.shape)), np.abs(x0)),
        "sample": (np.sqrt(ab) * x0 + np.sqrt(omab) * noise, np.abs(x0) + np.abs(noise)),
        "predict_x0": ((xt - np.sqrt(omab) * noise) / np.sqrt(ab), (np.abs(xt) + np.abs(noise)) / np.sqrt(ab)),
        "posterior": ((c0 * x0 + ct * xt, np.broadcast_to(omab_p * beta / omab, x0.shape)),
                      np.abs(c0 * x0) + np.abs(ct * xt)),
        "from_noise": ((xt - beta / np.sqrt(omab) * noise) / np.sqrt(1 - beta),
                       np.abs(xt) + beta / np.sqrt(omab) * np.abs(noise)),
    }


@jax.jit
def _FORWARD(s, x0, xt, noise, t):
    """Every forward-process function at once (one compilation per dtype)."""
    xs = D.q_sample(s, x0, t, noise)
    return {
        "marginal": D.q_marginal(s, x0, t),
        "step": D.q_step(s, x0, t),
        "sample": xs,
        "predict_x0": D.predict_x0(s, xt, t, noise),
        "posterior": D.q_posterior(s, x0, xt, t),
        "from_noise": D.q_posterior_mean_from_noise(s, xt, t, noise),
        "x0 form": D.q_posterior(s, x0, xs, t)[0],
        "noise form": D.q_posterior_mean_from_noise(s, xs, t, noise),
    }


@pytest.mark.parametrize("dtype", FLOATS)
@settings(max_examples=S.examples(10))
@given(data=st.data())
def test_forward_process_and_posterior_match_oracle(dtype, data):
    name = data.draw(st.sampled_from(D.SCHEDULES))
    s = SCHEDULES[name, dtype]
    t = data.draw(_times(lo=1))
    x0, xt, noise = (data.draw(_data(dtype)) for _ in range(3))
    got = _FORWARD(s, _j(x0), _j(xt), _j(noise), _j(t))
    tol = O.rtol(dtype)
    for key, (exact, scale) in _forward_oracle(name, t, x0, xt, noise).items():
        pairs = zip(got[key], exact) if isinstance(exact, tuple) else [(got[key], exact)]
        for i, (g, e) in enumerate(pairs):
            assert g.dtype == dtype and g.shape == (B, DIM), key
            O.assert_close(g, e, tol * (scale if i == 0 else np.abs(e)), f"{name} {key}")
    # the two forms of the posterior mean agree at x_t = q_sample(x0, t, ε)
    beta = _at(name, t)[0]
    O.assert_close(got["x0 form"], got["noise form"], 8 * tol * (np.abs(x0) + np.abs(noise)) / np.sqrt(1 - beta),
                   "x0 form = noise form")


def test_endpoints_t0_t1_T_are_finite_with_finite_gradients():
    s = SCHEDULES["cosine", np.float32]
    t = jnp.array([0, 1, T - 1, T], jnp.int32)
    x0 = jnp.asarray(np.linspace(-2, 2, B * DIM).reshape(B, DIM), jnp.float32)
    mean, var = D.q_marginal(s, x0, t)
    assert np.array_equal(mean[0], x0[0]) and np.all(var[0] == 0)
    post_mean, post_var = D.q_posterior(s, x0, x0 + 1, t)
    # t = 1: the posterior is the point mass at x0; an array t = 0 returns the same
    assert np.allclose(post_mean[:2], x0[:2], rtol=1e-6) and np.all(post_var[:2] == 0)
    assert np.array_equal(D.predict_x0(s, x0, t, x0)[0], x0[0])
    assert np.all(np.asarray(D.noise_weight(s, t, 1.0))[0] == 0)

    def everything(x):
        out = [D.q_sample(s, x, t, x), D.predict_x0(s, x, t, x), D.q_posterior(s, x, x, t)[0],
               D.q_posterior_mean_from_noise(s, x, t, x), D.tweedie_denoiser(s, x, t, x), D.noise_from_score(s, t, x),
               D.conditional_score(s, x, 2 * x, t), D.gaussian_data_score(s, x, t, 0.5, 2.0),
               D.gaussian_data_denoiser(s, x, t, 0.5, 2.0), D.gaussian_data_noise(s, x, t, 0.5, 2.0),
               D.prior_term(s, x)]
        return sum(jnp.sum(o) for o in out)
    value, grad = jax.jit(jax.value_and_grad(everything))(x0)
    assert np.isfinite(float(value)) and np.all(np.isfinite(np.asarray(grad)))


# ============================================================================ ELBO terms


@pytest.mark.parametrize("dtype", FLOATS)
def test_prior_term_is_accurate_relative_to_itself(dtype):
    """L_T ~ 1e-9 nats (cosine) in float32: the KL is accurate to ~eps relative to its own size."""
    x0 = np.linspace(-3, 3, 13).astype(dtype)
    for name in D.SCHEDULES:
        ab = ORACLE[name][1][-1]
        exact = np.array([float((MP.mpf(ab) * MP.mpf(float(x)) ** 2 - MP.mpf(ab) - MP.log(1 - MP.mpf(ab))) / 2)
                          for x in x0])
        got = D.prior_term(SCHEDULES[name, dtype], _j(x0))
        assert got.dtype == dtype and np.all(np.asarray(got) > 0)
        O.assert_close(got, exact, 8 * O.rtol(dtype) * exact, f"L_T {name}")


def _kl_oracle(mp, vp, mq, sq):
    """KL(N(mp, vp) ‖ N(mq, sq²)) in 40-digit mpmath (the textbook form cancels for close Gaussians)."""
    def one(a, v, c, d):
        a, v, c, d = (MP.mpf(float(x)) for x in (a, v, c, d))
        return float(MP.log(d) - MP.log(v) / 2 + (v + (a - c) ** 2) / (2 * d**2) - MP.mpf(1) / 2)
    return np.vectorize(one, otypes=[np.float64])(*np.broadcast_arrays(mp, vp, mq, sq))


@jax.jit
def _ELBO_TERMS(s, x0, xt, t, model_mean, sigma, eps, eps_hat):
    return {"kl": D.denoising_term(s, x0, xt, t, model_mean, sigma), "weight": D.noise_weight(s, t, sigma[:, 0]),
            "noise form": D.denoising_term_from_noise(s, t, eps, eps_hat, sigma),
            "decoder": D.decoder_term(x0, model_mean, sigma)}


@pytest.mark.parametrize("dtype", FLOATS)
@settings(max_examples=S.examples(10))
@given(data=st.data())
def test_elbo_terms_match_oracle(dtype, data):
    name = data.draw(st.sampled_from(D.SCHEDULES))
    s = SCHEDULES[name, dtype]
    t = data.draw(_times(lo=2))
    x0, eps, eps_hat = (data.draw(_data(dtype)) for _ in range(3))
    sigma = S.cast(data.draw(hnp.arrays(np.float64, (B, 1), elements=st.floats(0.01, 1.0))), dtype)
    beta, ab, omab, ab_p, omab_p = _at(name, t)
    xt = np.sqrt(ab) * x0 + np.sqrt(omab) * eps
    post_mean = np.sqrt(ab_p) * beta / omab * x0 + np.sqrt(1 - beta) * omab_p / omab * xt
    post_var = omab_p * beta / omab
    model_mean = S.cast(post_mean + 0.1 * eps_hat, dtype)
    out = _ELBO_TERMS(s, _j(x0), _j(S.cast(xt, dtype)), _j(t), _j(model_mean), _j(sigma), _j(eps), _j(eps_hat))
    got = out["kl"]
    exact = _kl_oracle(post_mean, post_var, model_mean, sigma)
    # KL = ½[ψ(d) + δ²]: accurate relative to itself, given its float inputs (x_t and μ̃ rounded once)
    delta_scale = (np.abs(post_mean) + np.abs(model_mean)) * np.abs(post_mean - model_mean) / sigma**2
    O.assert_close(got, exact, 16 * O.rtol(dtype) * (exact + delta_scale + 1e-30), "L_{t-1}")
    # the noise form: λ_t (ε - ε_θ)² + C_t, with λ_t and C_t against their formulas
    lam = np.asarray(out["weight"])[:, None]
    lam_exact = beta**2 / (2 * sigma**2 * (1 - beta) * omab)
    O.assert_close(lam, lam_exact, 4 * O.rtol(dtype) * lam_exact, "noise_weight")
    from_noise = out["noise form"]
    c_t = _kl_oracle(0.0, post_var, 0.0, sigma)  # ½(r - 1 - log r), r = β̃/σ², without cancellation
    exact_noise = lam_exact * (eps - eps_hat) ** 2 + c_t
    O.assert_close(from_noise, exact_noise, 16 * O.rtol(dtype) * exact_noise, "L_{t-1} noise form")
    # L_0: the Gaussian decoder's negative log-density
    l0 = out["decoder"]
    exact_l0 = 0.5 * ((x0 - model_mean) / sigma) ** 2 + np.log(sigma) + 0.5 * math.log(2 * math.pi)
    O.assert_close(l0, exact_l0, 4 * O.rtol(dtype) * (np.abs(exact_l0) + 1 + ((x0 - model_mean) / sigma) ** 2), "L_0")


def test_denoising_terms_at_t1_are_infinite_and_the_kl_and_noise_forms_agree_in_float64():
    s = SCHEDULES["linear", np.float64]
    x0 = jnp.ones((B, DIM))
    eps, eps_hat, sigma = jnp.full((B, DIM), 0.3), jnp.full((B, DIM), -1.1), jnp.full((B, 1), 0.05)

    @jax.jit
    def both_forms(t):
        xt = D.q_sample(s, x0, t, eps)
        return (D.denoising_term(s, x0, xt, t, D.q_posterior_mean_from_noise(s, xt, t, eps_hat), sigma),
                D.denoising_term_from_noise(s, t, eps, eps_hat, sigma))
    assert all(np.all(np.isposinf(v)) for v in both_forms(jnp.ones(B, jnp.int32)))  # t = 1: β̃_1 = 0
    via_kl, via_noise = both_forms(jnp.array([2, 10, 500, T], jnp.int32))
    O.assert_close(via_kl, via_noise, 1e-11 * np.abs(np.asarray(via_kl)), "KL form = noise form")


# ============================================================================ scores, Tweedie, noise


@jax.jit
def _GAUSSIAN_DATA(s, x, t, m, sd):
    score = D.gaussian_data_score(s, x, t, m, sd)
    return {"score": score, "denoiser": D.gaussian_data_denoiser(s, x, t, m, sd),
            "noise": D.gaussian_data_noise(s, x, t, m, sd), "tweedie": D.tweedie_denoiser(s, x, t, score),
            "noise from score": D.noise_from_score(s, t, score)}


@pytest.mark.parametrize("dtype", FLOATS)
@settings(max_examples=S.examples(10))
@given(data=st.data())
def test_gaussian_data_score_denoiser_and_noise_match_oracle(dtype, data):
    name = data.draw(st.sampled_from(D.SCHEDULES))
    s = SCHEDULES[name, dtype]
    t = data.draw(_times())
    x, m = data.draw(_data(dtype)), data.draw(_data(dtype, -2.0, 2.0))
    sd = S.cast(data.draw(hnp.arrays(np.float64, (DIM,), elements=st.floats(0.1, 3.0))), dtype)
    _, ab, omab, _, _ = _at(name, t)
    v = ab * sd**2 + omab
    resid = x - np.sqrt(ab) * m
    scale = (np.abs(x) + np.abs(m)) / v
    out = _GAUSSIAN_DATA(s, _j(x), _j(t), _j(m), _j(sd))
    score = out["score"]
    O.assert_close(score, -resid / v, 8 * O.rtol(dtype) * scale, "score")
    den = out["denoiser"]
    O.assert_close(den, m + np.sqrt(ab) * sd**2 * resid / v, 8 * O.rtol(dtype) * (np.abs(m) + sd**2 * scale), "denoiser")
    noise = out["noise"]
    O.assert_close(noise, np.sqrt(omab) * resid / v, 8 * O.rtol(dtype) * scale, "noise")
    # claim E2 in the working precision: Tweedie of the exact score = the denoiser; ε* = -√(1-ᾱ) score.
    # Tweedie divides by √ᾱ (down to 4.9e-5 at the cosine schedule's T): its error is relative to 1/√ᾱ
    tweedie = out["tweedie"]
    O.assert_close(tweedie, den, 16 * O.rtol(dtype) * (np.abs(x) + np.abs(m)) / np.sqrt(ab), "Tweedie")
    O.assert_close(out["noise from score"], noise, 8 * O.rtol(dtype) * scale, "noise from score")


def _np_mixture(name, t, x, w, m, sd):
    """(log p_t, score, E[x0|x_t], ε*) in float64 NumPy; x (B, d), w (K,), m (K, d), sd (K,)."""
    _, ab, omab, _, _ = _at(name, t)  # (B, 1)
    ab, omab = ab[:, :, None], omab[:, :, None]  # (B, 1, 1)
    x, w, m, sd = (np.asarray(a, np.float64) for a in (x, w, m, sd))
    v = ab * sd[None, :, None] ** 2 + omab  # (B, K, 1)
    resid = x[:, None, :] - np.sqrt(ab) * m[None]  # (B, K, d)
    log_comp = np.sum(-0.5 * resid**2 / v - 0.5 * np.log(2 * np.pi * v), axis=-1)
    with np.errstate(divide="ignore"):
        joint = np.log(w)[None] + log_comp
    top = np.max(joint, axis=-1, keepdims=True)
    log_p = top[:, 0] + np.log(np.sum(np.exp(joint - top), axis=-1))
    r = np.exp(joint - log_p[:, None])[:, :, None]
    score = -np.sum(r * resid / v, axis=1)
    den = np.sum(r * (m[None] + np.sqrt(ab) * sd[None, :, None] ** 2 * resid / v), axis=1)
    return log_p, score, den, -np.sqrt(omab[:, 0]) * score


MIX_W = np.array([0.3, 0.0, 0.7])
MIX_M = np.array([[-2.0, 0.5, 1.0], [0.0, 0.0, 0.0], [1.5, -1.0, 0.3]])
MIX_S = np.array([0.4, 1.0, 0.8])


@jax.jit
def _MIXTURE_DATA(s, *args):
    return [f(s, *args) for f in (D.mixture_data_log_density, D.mixture_data_score, D.mixture_data_denoiser,
                                  D.mixture_data_noise)]


@pytest.mark.parametrize("dtype", FLOATS)
@settings(max_examples=S.examples(10))
@given(data=st.data())
def test_mixture_data_functions_match_oracle(dtype, data):
    name = data.draw(st.sampled_from(D.SCHEDULES))
    s = SCHEDULES[name, dtype]
    t = data.draw(_times())
    x = data.draw(_data(dtype))
    w, m, sd = (S.cast(a, dtype) for a in (MIX_W, MIX_M, MIX_S))
    args = (_j(x), _j(t), _j(w), _j(m), _j(sd))
    log_p, score, den, noise = _np_mixture(name, t, x, w, m, sd)
    got = _MIXTURE_DATA(s, *args)
    assert got[0].shape == (B,) and all(g.shape == (B, DIM) for g in got[1:])
    assert all(g.dtype == dtype for g in got)
    # responsibilities carry an error of eps·|log-density terms| (up to ~50 for |x| ≤ 5, s = 0.4)
    spread = 1 + np.abs(log_p)[:, None] + np.sum(np.abs(x), axis=-1, keepdims=True) ** 2 / 0.16
    O.assert_close(got[0], log_p, 8 * O.rtol(dtype) * spread[:, 0], "log p_t")
    big = (np.abs(x) + 3) / 0.16 + 3
    O.assert_close(got[1], score, 8 * O.rtol(dtype) * spread * big, "score")
    O.assert_close(got[2], den, 8 * O.rtol(dtype) * spread * big, "denoiser")
    O.assert_close(got[3], noise, 8 * O.rtol(dtype) * spread * big, "noise")


def test_mixture_log_density_is_vfe_gaussian_mixture_for_1d_and_its_gradient_is_the_score():
    s = SCHEDULES["cosine", np.float64]
    t = jnp.array([0, 300, 700, T], jnp.int32)
    x = jnp.array([[-2.5], [0.1], [1.7], [40.0]])
    w, m, sd = jnp.asarray(MIX_W), jnp.asarray(MIX_M[:, :1]), jnp.asarray(MIX_S)
    ab = s.alpha_bars[t][:, None]
    x3 = jnp.asarray(np.linspace(-3, 3, B * DIM).reshape(B, DIM))

    @jax.jit
    def compute():
        ref = vfe.gaussian_mixture_log_density(x[:, 0], jnp.broadcast_to(w, (B, 3)), jnp.sqrt(ab) * m[:, 0],
                                               jnp.sqrt(ab * sd**2 + 1 - ab))
        grad = jax.grad(lambda y: jnp.sum(D.mixture_data_log_density(s, y, t, w, jnp.asarray(MIX_M), sd)))(x3)
        return ref, D.mixture_data_log_density(s, x, t, w, m, sd), grad, D.mixture_data_score(
            s, x3, t, w, jnp.asarray(MIX_M), sd)
    ref, got, grad, score = compute()
    O.assert_close(got, ref, 1e-13 * (1 + np.abs(np.asarray(ref))), "d = 1")
    # the 3-D mixture: jax.grad of the log-density is the closed-form score
    O.assert_close(grad, score, 1e-12 * (1 + np.abs(np.asarray(score))), "grad log p_t")


def test_mixture_far_in_the_tails_and_with_a_zero_weight_is_finite_with_finite_gradients():
    s = SCHEDULES["cosine", np.float32]
    t = jnp.array([0, 1, 500, T], jnp.int32)
    x = jnp.asarray([[1e4, -1e4, 0.0], [-300.0, 5.0, 1.0], [1e3, 1e3, 1e3], [0.0, 0.0, 0.0]], jnp.float32)
    args = (t, jnp.asarray(MIX_W, jnp.float32), jnp.asarray(MIX_M, jnp.float32), jnp.asarray(MIX_S, jnp.float32))

    def total(y):
        return sum(jnp.sum(f(s, y, *args)) for f in (D.mixture_data_log_density, D.mixture_data_score,
                                                        D.mixture_data_denoiser, D.mixture_data_noise))
    value, grad = jax.jit(jax.value_and_grad(total))(x)
    assert np.isfinite(float(value)) and np.all(np.isfinite(np.asarray(grad)))
    # far out, the widest component takes all the responsibility: score = -(x - √ᾱ m_k)/v_k of it
    score = np.asarray(D.mixture_data_score(s, x, *args))
    v = float(s.alpha_bars[500]) * 0.8**2 + float(s.one_minus_alpha_bars[500])
    O.assert_close(score[2], -(1e3 - math.sqrt(float(s.alpha_bars[500])) * MIX_M[2]) / v, 1e-3, "tail score")


def test_low_precision_inputs_are_computed_in_float32():
    s = SCHEDULES["linear", np.float32]
    t = jnp.array([0, 10, 500, T], jnp.int32)
    x = jnp.asarray(np.linspace(-2, 2, B * DIM).reshape(B, DIM), jnp.bfloat16)
    mix = [jnp.asarray(a, jnp.bfloat16) for a in (MIX_W, MIX_M, MIX_S)]
    x32, mix32 = x.astype(jnp.float32), [a.astype(jnp.float32) for a in mix]  # the same values, in float32
    def some(y, half, two, mix):
        return [D.q_sample(s, y, t, y), D.gaussian_data_noise(s, y, t, half, two), D.mixture_data_score(s, y, t, *mix),
                D.prior_term(s, y)]
    some = jax.jit(some)
    pairs = zip(some(x, jnp.bfloat16(0.5), jnp.bfloat16(2.0), mix), some(x32, jnp.float32(0.5), jnp.float32(2.0), mix32))
    for low, ref in pairs:
        assert low.dtype == jnp.float32
        O.assert_close(low, ref, 1e-6 * (1 + np.abs(np.asarray(ref))), "bfloat16 in, float32 out")


# ============================================================================ argument errors


def test_argument_errors_name_the_argument():
    s = SCHEDULES["linear", np.float32]
    x = jnp.zeros((B, DIM))
    t = jnp.zeros(B, jnp.int32)
    with pytest.raises(TypeError, match="`schedule`"):
        D.q_marginal((s.betas, s.alpha_bars), x, t)
    with pytest.raises(TypeError, match="`t`.*integer"):
        D.q_marginal(s, x, jnp.zeros(B))
    with pytest.raises(TypeError, match="`t`.*bool"):
        D.q_marginal(s, x, True)
    with pytest.raises(ValueError, match=r"`t` must lie in \[0, 1000\]"):
        D.q_marginal(s, x, 1001)
    with pytest.raises(ValueError, match=r"`t` must lie in \[1, 1000\]"):
        D.q_posterior(s, x, x, 0)
    with pytest.raises(ValueError, match=r"`t` must lie in \[2, 1000\]"):
        D.denoising_term(s, x, x, np.array([1, 2, 3, 4]), x, 1.0)
    with pytest.raises(ValueError, match="`t` of shape"):
        D.q_sample(s, x, jnp.zeros(B + 1, jnp.int32), x)
    with pytest.raises(ValueError, match="`noise`"):
        D.q_sample(s, x, t, jnp.zeros((B, DIM + 1)))
    with pytest.raises(ValueError, match="`model_std` must be > 0"):
        D.denoising_term(s, x, x, 2, x, 0.0)
    with pytest.raises(ValueError, match="`std` must be > 0"):
        D.gaussian_data_score(s, x, t, 0.0, -1.0)
    with pytest.raises(TypeError, match="`x0`"):
        D.q_marginal(s, jnp.zeros((B, DIM), jnp.int32), t)
    w, m, sd = jnp.asarray(MIX_W), jnp.asarray(MIX_M), jnp.asarray(MIX_S)
    with pytest.raises(ValueError, match="`means` must have shape"):
        D.mixture_data_score(s, x, t, w, m[:, :2], sd)
    with pytest.raises(ValueError, match="`stds` must have shape"):
        D.mixture_data_score(s, x, t, w, m, sd[:2])
    with pytest.raises(ValueError, match="`weights` must have shape"):
        D.mixture_data_score(s, x, t, w[None], m, sd)
    with pytest.raises(ValueError, match="`xt` must have a last"):
        D.mixture_data_score(s, jnp.zeros(()), 0, w, m, sd)
    with pytest.raises(ValueError, match="`t` of shape"):
        D.mixture_data_score(s, x, jnp.zeros((B, DIM), jnp.int32), w, m, sd)
