"""Diffusion models: the ELBO (claim E1) and scores, Tweedie's formula and noise prediction (claim E2);
seed 001.

Every expectation over the forward process here is either exact or a stated Monte Carlo check:
the integrands of the ELBO identities are quadratic polynomials of Gaussian variables, so
Gauss–Hermite quadrature with :data:`NODES` nodes per variable computes their expectations exactly
(to rounding); the sampling checks state their tolerance and false-alarm rate.
"""

from __future__ import annotations

import math

import jax
import jax.numpy as jnp
import numpy as np
from hypothesis import strategies as st
from hypothesis.extra import numpy as hnp

import vfe
from proofs.catalogue import Claim
from vfe import diffusion as D
from vfe import methods
from vfe.derivation import Derivation, Step, Terms

CLAIMS = (
    Claim(
        id="E1", title="Diffusion models are trained by an ELBO", seeds=("001",),
        wording="「拡散モデルは複数の確率層からなるVAE」「データの対数尤度の変分下限（ELBO）最大化で学習」 (\"a diffusion "
                "model is a VAE made of several stochastic layers\"; \"it is trained by maximising the variational lower "
                "bound (ELBO) of the data's log-likelihood\")",
        statement=r"For the forward chain $q(x_t|x_{t-1}) = \mathcal N(\sqrt{1-\beta_t}\,x_{t-1}, \beta_t I)$: "
                  r"$q(x_t|x_0) = \mathcal N(\sqrt{\bar\alpha_t}x_0, (1-\bar\alpha_t)I)$, $\bar\alpha_t = \prod_{s\le t}(1-\beta_s)$ "
                  r"(composition of the one-step kernels); $q(x_{t-1}|x_t,x_0) = \mathcal N(\tilde\mu_t, \tilde\beta_t I)$ with "
                  r"$\tilde\mu_t = \frac{\sqrt{\bar\alpha_{t-1}}\beta_t}{1-\bar\alpha_t}x_0 + \frac{\sqrt{\alpha_t}(1-\bar\alpha_{t-1})}{1-\bar\alpha_t}x_t"
                  r" = \frac{1}{\sqrt{\alpha_t}}\big(x_t - \frac{\beta_t}{\sqrt{1-\bar\alpha_t}}\varepsilon\big)$, "
                  r"$\tilde\beta_t = \frac{1-\bar\alpha_{t-1}}{1-\bar\alpha_t}\beta_t$; and for a model "
                  r"$p_\theta(x_{0:T}) = \mathcal N(x_T;0,I)\prod_t\mathcal N(x_{t-1};\mu_\theta(x_t,t),\sigma_t^2I)$, "
                  r"$\mathbb E_q\big[\log\frac{q(x_{1:T}|x_0)}{p_\theta(x_{0:T})}\big] = L_T + \sum_{t=2}^T\mathbb E_q L_{t-1}"
                  r" + \mathbb E_q L_0 \ge -\log p_\theta(x_0)$ with $L_T = \mathrm{KL}(q(x_T|x_0)\|\mathcal N(0,I))$, "
                  r"$L_{t-1} = \mathrm{KL}(q(x_{t-1}|x_t,x_0)\|p_\theta(x_{t-1}|x_t))$, $L_0 = -\log p_\theta(x_0|x_1)$; with "
                  r"$\mu_\theta = \frac{1}{\sqrt{\alpha_t}}(x_t - \frac{\beta_t}{\sqrt{1-\bar\alpha_t}}\varepsilon_\theta)$: "
                  r"$L_{t-1} = \frac{\beta_t^2}{2\sigma_t^2\alpha_t(1-\bar\alpha_t)}\|\varepsilon-\varepsilon_\theta\|^2 + C_t$, "
                  r"$C_t = \frac d2\big(\frac{\tilde\beta_t}{\sigma_t^2} - 1 - \log\frac{\tilde\beta_t}{\sigma_t^2}\big)$ "
                  r"(0 iff $\sigma_t^2 = \tilde\beta_t$)",
        verdict="correct (with a continuous Gaussian decoder L_0 the bound is on the log-density; Ho et al. discretise "
                "the decoder to the 256 pixel values to bound a log-probability instead)",
        functions=("vfe.diffusion.noise_schedule", "vfe.diffusion.schedule_from_betas", "vfe.diffusion.q_marginal",
                   "vfe.diffusion.q_step", "vfe.diffusion.q_sample", "vfe.diffusion.q_posterior",
                   "vfe.diffusion.q_posterior_mean_from_noise", "vfe.diffusion.prior_term", "vfe.diffusion.denoising_term",
                   "vfe.diffusion.decoder_term", "vfe.diffusion.noise_weight", "vfe.diffusion.denoising_term_from_noise",
                   "vfe.gaussian_kl", "vfe.gaussian_log_density", "vfe.normal_posterior"),
    ),
    Claim(
        id="E2", title="Score-based and diffusion models agree up to the weights of the objective", seeds=("001",),
        wording="「…スコアベースドモデル [Song+ 2019]と拡散モデルは目的関数の係数などを除いて一致する [Ho+ 2020]」 "
                "(\"score-based models [Song+ 2019] and diffusion models agree except for things like the coefficients "
                "of the objective [Ho+ 2020]\")",
        statement=r"With $x_t = \sqrt{\bar\alpha_t}x_0 + \sqrt{1-\bar\alpha_t}\,\varepsilon$ and $p_t$ the law of $x_t$: "
                  r"Tweedie's formula $\mathbb E[x_0|x_t] = (x_t + (1-\bar\alpha_t)\nabla\log p_t(x_t))/\sqrt{\bar\alpha_t}$; "
                  r"the optimal noise predictor $\varepsilon^* = \arg\min_{\varepsilon_\theta}\mathbb E\|\varepsilon - "
                  r"\varepsilon_\theta(x_t)\|^2 = \mathbb E[\varepsilon|x_t] = -\sqrt{1-\bar\alpha_t}\,\nabla\log p_t$ "
                  r"(exact for Gaussian and Gaussian-mixture data); denoising score matching "
                  r"$\mathbb E\|s_\theta - \nabla\log q(x_t|x_0)\|^2 = \mathbb E\|s_\theta - \nabla\log p_t\|^2 + \text{const}$; "
                  r"and with $\varepsilon_\theta = -\sqrt{1-\bar\alpha_t}\,s_\theta$: $\|\varepsilon - \varepsilon_\theta\|^2 = "
                  r"(1-\bar\alpha_t)\|s_\theta - \nabla\log q(x_t|x_0)\|^2$, so Ho et al.'s simplified loss is Song & Ermon's "
                  r"score-matching loss with weight $\lambda(\sigma_t) = \sigma_t^2 = 1-\bar\alpha_t$, and the ELBO's "
                  r"$L_{t-1}$ is the same per-step loss with weight $\beta_t^2/(2\sigma_t^2\alpha_t)$ (plus a constant)",
        verdict="correct, made precise: the objectives are one per-step loss with different weights λ_t, and the "
                "score and noise parametrisations differ by the factor −√(1−ᾱ_t). (The seed's other half, that Song "
                "et al. sample with annealed Langevin dynamics while DDPM samples ancestrally, concerns the samplers "
                "and is not this claim; Langevin sampling is E3.)",
        functions=("vfe.diffusion.tweedie_denoiser", "vfe.diffusion.noise_from_score", "vfe.diffusion.conditional_score",
                   "vfe.diffusion.gaussian_data_score", "vfe.diffusion.gaussian_data_denoiser",
                   "vfe.diffusion.gaussian_data_noise", "vfe.diffusion.mixture_data_log_density",
                   "vfe.diffusion.mixture_data_score", "vfe.diffusion.mixture_data_denoiser",
                   "vfe.diffusion.mixture_data_noise", "vfe.diffusion.predict_x0", "vfe.gaussian_mixture_log_density"),
    ),
)

# ----------------------------------------------------------------------------- inputs and helpers

T = 6
"""Steps of the random schedules of the proofs (one fixed shape: each chain compiles once)."""

NODES = 6
"""Gauss–Hermite nodes per Gaussian variable: exact for polynomials of degree ≤ 11."""

_GH_X, _GH_W = np.polynomial.hermite_e.hermegauss(NODES)
_GH_W = _GH_W / _GH_W.sum()  # E[f(Z)], Z ~ N(0, 1)  ≈  Σ_j w_j f(g_j)


def _log_uniform(lo, hi):
    return st.floats(math.log10(lo), math.log10(hi)).map(lambda u: 10.0**u)


def _betas(lo=1e-4, hi=0.6):
    """``β_1..β_T``, log-uniform in ``[lo, hi]``."""
    return hnp.arrays(np.float64, (T,), elements=_log_uniform(lo, hi))


def _vec(n, lo=-5.0, hi=5.0):
    return hnp.arrays(np.float64, (n,), elements=st.floats(lo, hi))


_POINT = st.floats(-5.0, 5.0)
_STEP = st.integers(2, T)  # a step with a non-degenerate posterior


def _gh(fn):
    """``E[fn(Z)]`` for ``Z ~ N(0, 1)``, ``fn`` vectorised over the node axis (the last)."""
    return jnp.sum(jnp.asarray(_GH_W) * fn(jnp.asarray(_GH_X)), axis=-1)


def _gh2(fn):
    """``E[fn(Z, W)]`` for independent standard normal ``Z, W`` (nodes on the last two axes)."""
    g, h = jnp.meshgrid(jnp.asarray(_GH_X), jnp.asarray(_GH_X), indexing="ij")
    w = jnp.outer(jnp.asarray(_GH_W), jnp.asarray(_GH_W))
    return jnp.sum(w * fn(g, h), axis=(-2, -1))


def _cumulative(betas):
    """``(ᾱ_t, 1 - ᾱ_t)`` for ``t = 0..T``: ᾱ as the running product of ``1 - β_s``; ``1 - ᾱ`` as
    ``-expm1(Σ log(1 - β_s))``, because the difference ``1 - Π`` loses digits where ``ᾱ ≈ 1``."""
    log_prod = jnp.concatenate([jnp.zeros(1), jnp.cumsum(jnp.log1p(-betas))])
    return jnp.concatenate([jnp.ones(1), jnp.cumprod(1.0 - betas)]), -jnp.expm1(log_prod)


def _linear_betas(n=1000):
    return np.linspace(1e-4, 0.02, n)


# ----------------------------------------------------------------------------- E1: the forward marginal


def _stack_marginal(betas, x0):
    s = D.schedule_from_betas(betas)
    steps = jnp.arange(betas.shape[0] + 1)
    mean, var = D.q_marginal(s, jnp.full(steps.shape, x0), steps)
    return jnp.stack([mean, var])


def _compose_kernels(betas, x0):
    """Mean and variance of x_t by iterating x_t = √(1-β_t) x_{t-1} + √β_t ε_t from x_0 (a constant)."""
    def step(carry, beta):
        m, v = carry
        m, v = jnp.sqrt(1.0 - beta) * m, (1.0 - beta) * v + beta
        return (m, v), (m, v)
    _, (m, v) = jax.lax.scan(step, (x0, jnp.zeros_like(x0)), betas)
    return jnp.stack([jnp.concatenate([x0[None], m]), jnp.concatenate([jnp.zeros(1), v])])


def _closed_form_marginal(betas, x0):
    prod, one_minus = _cumulative(betas)
    return jnp.stack([jnp.sqrt(prod) * x0, one_minus])


E1_MARGINAL = Derivation(
    claim="E1",
    title="The forward marginal q(x_t|x_0) is the composition of the one-step kernels",
    statement=r"x_t = \sqrt{1-\beta_t}\,x_{t-1} + \sqrt{\beta_t}\,\varepsilon_t\ (t = 1..T)\implies "
              r"x_t \mid x_0 \sim \mathcal N\big(\sqrt{\bar\alpha_t}\,x_0,\ 1-\bar\alpha_t\big),\quad \bar\alpha_t = \prod_{s\le t}(1-\beta_s)",
    variables={"betas": _betas(), "x0": _POINT},
    examples=[{"betas": _linear_betas(), "x0": 1.0}],
    steps=[
        Step(r"\big(\mathbb E[x_t|x_0],\ \mathrm{Var}[x_t|x_0]\big)_{t=0..T}",
             "vfe.diffusion.q_marginal of vfe.diffusion.schedule_from_betas (ᾱ via the cumulative sum of log(1-β))",
             _stack_marginal),
        Step(r"\big(m_t, v_t\big):\ m_t = \sqrt{1-\beta_t}\,m_{t-1},\ v_t = (1-\beta_t)v_{t-1} + \beta_t,\ (m_0, v_0) = (x_0, 0)",
             r"a linear map of a Gaussian plus independent Gaussian noise is Gaussian: means map, variances add",
             _compose_kernels),
        Step(r"\big(\sqrt{\bar\alpha_t}\,x_0,\ 1 - \bar\alpha_t\big)",
             r"unroll the recursion: $m_t = \prod_{s\le t}\sqrt{\alpha_s}\,x_0$ and $1 - v_t = \alpha_t(1 - v_{t-1})$",
             _closed_form_marginal),
    ],
)

SAMPLES = 2**17
"""Monte Carlo sample size of the sampling checks."""

_GRID = np.linspace(-3.0, 3.0, 25)  # standardised points where the CDFs are compared


def _normal_cdf_at_grid(betas, x0):
    return jnp.broadcast_to(jax.scipy.stats.norm.cdf(jnp.asarray(_GRID)), (betas.shape[0], _GRID.size))


def _forward_chain(betas, x0, key):
    """SAMPLES runs of the forward chain from x0 by the one-step kernels (vfe.diffusion.q_step); (T, SAMPLES)."""
    s = D.schedule_from_betas(betas)

    def step(x, t):
        mean, var = D.q_step(s, x, t)
        x = mean + jnp.sqrt(var) * jax.random.normal(jax.random.fold_in(key, t), x.shape)
        return x, x
    _, xs = jax.lax.scan(step, jnp.full(SAMPLES, x0), jnp.arange(1, betas.shape[0] + 1))
    return xs


def _chain_cdf_at_grid(betas, x0):
    return _cdf_at_grid(_forward_chain(betas, x0, jax.random.key(0, impl="rbg")), betas, x0)


def _cdf_at_grid(xs, betas, x0):
    """Empirical CDF of samples ``xs`` (T, n) of x_1..x_T at the points √ᾱ_t x_0 + √(1-ᾱ_t) g_j."""
    s = D.schedule_from_betas(betas)
    mean, var = D.q_marginal(s, jnp.full(betas.shape[0], x0), jnp.arange(1, betas.shape[0] + 1))
    z = (xs - mean[:, None]) / jnp.sqrt(var)[:, None]  # standardised samples, (T, SAMPLES)
    # bin k(z) = the first grid point >= z (len(_GRID) if none): #{z <= g_j} = #{k(z) <= j}
    step = _GRID[1] - _GRID[0]
    bins = jnp.clip(jnp.ceil((z - _GRID[0]) / step), 0, _GRID.size).astype(jnp.int32)
    counts = jax.vmap(lambda b: jnp.bincount(b, length=_GRID.size + 1))(bins)
    return jnp.cumsum(counts, axis=1)[:, :-1] / xs.shape[1]


E1_MARGINAL_SAMPLES = Derivation(
    claim="E1",
    title="Samples of the forward chain follow q(x_t|x_0) at every t",
    statement=r"P\big(x_t \le \sqrt{\bar\alpha_t}x_0 + \sqrt{1-\bar\alpha_t}\,g\big) = \Phi(g)\ \text{for the chain "
              r"run with } q(x_t|x_{t-1}),\ t = 1..T",
    kind="distributional", variables={"betas": _betas(), "x0": _POINT}, max_examples=5,
    steps=[
        Step(r"\Phi(g_j),\ g_j \in \{-3, -2.75, \dots, 3\}",
             r"the CDF of $\mathcal N(\sqrt{\bar\alpha_t}x_0, 1-\bar\alpha_t)$ at $\sqrt{\bar\alpha_t}x_0 + \sqrt{1-\bar\alpha_t}\,g_j$",
             _normal_cdf_at_grid),
        Step(r"\hat F_{t,n}\big(\sqrt{\bar\alpha_t}x_0 + \sqrt{1-\bar\alpha_t}\,g_j\big)",
             f"empirical CDF of {SAMPLES} runs of the chain by vfe.diffusion.q_step, at each t "
             f"(DKW band at false-alarm 1e-9/T, union over the T marginals)",
             _chain_cdf_at_grid, tol=methods.dkw_tolerance(SAMPLES, methods.FALSE_ALARM / T)),
    ],
)


# ----------------------------------------------------------------------------- E1: the forward posterior


def _posterior_stack(betas, t, x0, xt):
    mean, var = D.q_posterior(D.schedule_from_betas(betas), x0, xt, t)
    return jnp.stack([mean, var])


def _bayes_posterior(betas, t, x0, xt):
    """Precision-weighted product of the prior q(x_{t-1}|x_0) and the likelihood q(x_t|x_{t-1})."""
    prod, one_minus = _cumulative(betas)
    ab_prev, omab_prev, beta = prod[t - 1], one_minus[t - 1], betas[t - 1]
    precision = 1.0 / omab_prev + (1.0 - beta) / beta
    mean = (jnp.sqrt(ab_prev) * x0 / omab_prev + jnp.sqrt(1.0 - beta) * xt / beta) / precision
    return jnp.stack([mean, jnp.broadcast_to(1.0 / precision, mean.shape)])


def _normal_posterior_form(betas, t, x0, xt):
    """vfe.normal_posterior with prior N(√ᾱ_{t-1} x_0, 1-ᾱ_{t-1}) and one observation x_t/√α_t ~ N(x_{t-1}, β_t/α_t)."""
    prod, one_minus = _cumulative(betas)
    ab_prev, omab_prev, beta = prod[t - 1], one_minus[t - 1], betas[t - 1]
    mean, std = vfe.normal_posterior((xt / jnp.sqrt(1.0 - beta))[..., None], jnp.sqrt(ab_prev) * x0,
                                     jnp.sqrt(omab_prev), jnp.sqrt(beta / (1.0 - beta)))
    return jnp.stack([mean, std**2])


def _noise_form(betas, t, x0, xt):
    s = D.schedule_from_betas(betas)
    prod, one_minus = _cumulative(betas)
    noise = (xt - jnp.sqrt(prod[t]) * x0) / jnp.sqrt(one_minus[t])
    mean = D.q_posterior_mean_from_noise(s, xt, t, noise)
    var = one_minus[t - 1] / one_minus[t] * betas[t - 1]
    return jnp.stack([mean, jnp.broadcast_to(var, mean.shape)])


E1_POSTERIOR = Derivation(
    claim="E1",
    title="The forward posterior q(x_{t-1}|x_t,x_0) in closed form (Ho et al. eqs. 6-7, 10)",
    statement=r"q(x_{t-1}|x_t,x_0) = \mathcal N(\tilde\mu_t, \tilde\beta_t),\ "
              r"\tilde\mu_t = \tfrac{\sqrt{\bar\alpha_{t-1}}\beta_t}{1-\bar\alpha_t}x_0 + \tfrac{\sqrt{\alpha_t}(1-\bar\alpha_{t-1})}{1-\bar\alpha_t}x_t"
              r" = \tfrac{1}{\sqrt{\alpha_t}}\big(x_t - \tfrac{\beta_t}{\sqrt{1-\bar\alpha_t}}\varepsilon\big),\ "
              r"\tilde\beta_t = \tfrac{1-\bar\alpha_{t-1}}{1-\bar\alpha_t}\beta_t",
    variables={"betas": _betas(), "t": _STEP, "x0": _vec(3), "xt": _vec(3)},
    steps=[
        Step(r"(\tilde\mu_t, \tilde\beta_t)", "vfe.diffusion.q_posterior (the x_0 form)", _posterior_stack),
        Step(r"\Big(\frac{\frac{\sqrt{\bar\alpha_{t-1}}}{1-\bar\alpha_{t-1}}x_0 + \frac{\sqrt{\alpha_t}}{\beta_t}x_t}{\lambda},\ \frac1\lambda\Big),"
             r"\ \lambda = \frac{1}{1-\bar\alpha_{t-1}} + \frac{\alpha_t}{\beta_t}",
             r"Bayes: prior $q(x_{t-1}|x_0) = \mathcal N(\sqrt{\bar\alpha_{t-1}}x_0, 1-\bar\alpha_{t-1})$ times likelihood "
             r"$q(x_t|x_{t-1}) = \mathcal N(\sqrt{\alpha_t}x_{t-1}, \beta_t)$: precisions add, means are precision-weighted",
             _bayes_posterior),
        Step(r"\mathrm{normal\_posterior}\big(x_t/\sqrt{\alpha_t};\ \sqrt{\bar\alpha_{t-1}}x_0,\ 1-\bar\alpha_{t-1},\ \beta_t/\alpha_t\big)",
             r"the same conjugate update written as one observation $x_t/\sqrt{\alpha_t} \sim \mathcal N(x_{t-1}, \beta_t/\alpha_t)$; "
             r"vfe.normal_posterior",
             _normal_posterior_form),
        Step(r"\Big(\frac{1}{\sqrt{\alpha_t}}\big(x_t - \frac{\beta_t}{\sqrt{1-\bar\alpha_t}}\varepsilon\big),\ "
             r"\frac{1-\bar\alpha_{t-1}}{1-\bar\alpha_t}\beta_t\Big),\ \varepsilon = \frac{x_t - \sqrt{\bar\alpha_t}x_0}{\sqrt{1-\bar\alpha_t}}",
             r"substitute $x_0 = (x_t - \sqrt{1-\bar\alpha_t}\varepsilon)/\sqrt{\bar\alpha_t}$ and use "
             r"$1-\bar\alpha_t = \beta_t + \alpha_t(1-\bar\alpha_{t-1})$; vfe.diffusion.q_posterior_mean_from_noise",
             _noise_form),
    ],
)


def _log_bayes_ratio(betas, t, x0, xt, x_prev):
    s = D.schedule_from_betas(betas)
    prior_mean, prior_var = D.q_marginal(s, x0, t - 1)
    like_mean, like_var = D.q_step(s, x_prev, t)
    ev_mean, ev_var = D.q_marginal(s, x0, t)
    return Terms(vfe.gaussian_log_density(x_prev, prior_mean, jnp.sqrt(prior_var)),
                 vfe.gaussian_log_density(xt, like_mean, jnp.sqrt(like_var)),
                 -vfe.gaussian_log_density(xt, ev_mean, jnp.sqrt(ev_var)))


def _log_posterior_density(betas, t, x0, xt, x_prev):
    mean, var = D.q_posterior(D.schedule_from_betas(betas), x0, xt, t)
    return vfe.gaussian_log_density(x_prev, mean, jnp.sqrt(var))


E1_POSTERIOR_DENSITY = Derivation(
    claim="E1",
    title="The closed-form posterior is Bayes' rule on the forward chain, at every point",
    statement=r"\frac{q(x_{t-1}|x_0)\,q(x_t|x_{t-1})}{q(x_t|x_0)} = \mathcal N(x_{t-1};\tilde\mu_t,\tilde\beta_t)",
    variables={"betas": _betas(), "t": _STEP, "x0": _vec(3), "xt": _vec(3), "x_prev": _vec(3)},
    steps=[
        Step(r"\log q(x_{t-1}|x_0) + \log q(x_t|x_{t-1}) - \log q(x_t|x_0)",
             "vfe.gaussian_log_density of vfe.diffusion.q_marginal (at t-1 and t) and vfe.diffusion.q_step",
             _log_bayes_ratio),
        Step(r"\log\mathcal N(x_{t-1};\tilde\mu_t,\tilde\beta_t)",
             r"Bayes' rule ($x_t \perp x_0 \mid x_{t-1}$: the chain is Markov); vfe.diffusion.q_posterior",
             _log_posterior_density),
    ],
)


# ----------------------------------------------------------------------------- E1: the negative ELBO


def _elbo_kl_form(betas, a, b, sigma, x0):
    r"""``L_T + Σ_{t≥2} E L_{t-1} + E L_0`` for the reverse model ``N(a_t x_t + b_t, σ_t²)``; expectations by G–H."""
    s = D.schedule_from_betas(betas)
    steps = jnp.arange(1, betas.shape[0] + 1)
    mean, var = D.q_marginal(s, jnp.full(steps.shape, x0), steps)
    # x_t at the nodes: shape (T, NODES), t on the leading axis
    xt = mean[:, None] + jnp.sqrt(var)[:, None] * jnp.asarray(_GH_X)
    w = jnp.asarray(_GH_W)
    denoise = D.denoising_term(s, jnp.full(xt[1:].shape, x0), xt[1:], steps[1:], a[1:, None] * xt[1:] + b[1:, None],
                               sigma[1:, None])
    decode = D.decoder_term(jnp.full(xt[0].shape, x0), a[0] * xt[0] + b[0], sigma[0])
    return Terms(D.prior_term(s, x0), jnp.sum(denoise @ w), decode @ w)


def _elbo_path_form(betas, a, b, sigma, x0):
    r"""``E_q[log q(x_{1:T}|x_0) - log p_θ(x_{0:T})]`` along the forward chain, pair by pair (exact G–H)."""
    s = D.schedule_from_betas(betas)
    steps = jnp.arange(1, betas.shape[0] + 1)
    prev_mean, prev_var = D.q_marginal(s, jnp.full(steps.shape, x0), steps - 1)

    def pair(g, h):  # x_{t-1} = its marginal at node g, x_t = q_step at node h; shapes (T, n, n)
        x_prev = prev_mean[:, None, None] + jnp.sqrt(prev_var)[:, None, None] * g
        step_mean, step_var = D.q_step(s, x_prev, steps)
        x_t = step_mean + jnp.sqrt(step_var) * h
        log_q = vfe.gaussian_log_density(x_t, step_mean, jnp.sqrt(step_var))
        log_p = vfe.gaussian_log_density(x_prev, a[:, None, None] * x_t + b[:, None, None], sigma[:, None, None])
        return log_q - log_p
    ab_T, omab_T = s.alpha_bars[-1], s.one_minus_alpha_bars[-1]
    log_prior = _gh(lambda g: vfe.gaussian_log_density(jnp.sqrt(ab_T) * x0 + jnp.sqrt(omab_T) * g, 0.0, 1.0))
    return Terms(jnp.sum(_gh2(pair)), -log_prior)


def _reverse_marginal(a, b, sigma):
    """Mean and variance of x_0 under p_θ: x_T ~ N(0, 1), x_{t-1} = a_t x_t + b_t + σ_t z."""
    def step(carry, params):
        m, v = carry
        a_t, b_t, s_t = params
        return (a_t * m + b_t, a_t**2 * v + s_t**2), None
    (m, v), _ = jax.lax.scan(step, (jnp.zeros(()), jnp.ones(())), (a, b, sigma), reverse=True)
    return m, v


def _neg_log_evidence(betas, a, b, sigma, x0):
    m, v = _reverse_marginal(a, b, sigma)
    return -vfe.gaussian_log_density(x0, m, jnp.sqrt(v))


_REVERSE_MODEL = {
    "betas": _betas(1e-3, 0.6),
    "a": hnp.arrays(np.float64, (T,), elements=st.floats(0.2, 1.5)),
    "b": hnp.arrays(np.float64, (T,), elements=st.floats(-1.0, 1.0)),
    "sigma": hnp.arrays(np.float64, (T,), elements=st.floats(0.1, 2.0)),
    "x0": st.floats(-3.0, 3.0),
}

E1_ELBO = Derivation(
    claim="E1",
    title="The negative ELBO is L_T + Σ L_{t-1} + L_0 and bounds −log p_θ(x_0)",
    statement=r"L_T + \sum_{t=2}^T\mathbb E_q L_{t-1} + \mathbb E_q L_0 = \mathbb E_q\Big[\log\frac{q(x_{1:T}|x_0)}{p_\theta(x_{0:T})}\Big]"
              r" \ge -\log p_\theta(x_0)",
    variables=_REVERSE_MODEL,
    steps=[
        Step(r"L_T + \sum_{t=2}^T\mathbb E_{q(x_t|x_0)}L_{t-1} + \mathbb E_{q(x_1|x_0)}L_0",
             "vfe.diffusion.prior_term, denoising_term and decoder_term for the linear-Gaussian reverse model "
             r"$p_\theta(x_{t-1}|x_t) = \mathcal N(a_tx_t + b_t, \sigma_t^2)$; expectations over $x_t$ by Gauss–Hermite "
             "(exact: the integrands are quadratic in x_t)",
             _elbo_kl_form),
        Step(r"\mathbb E_q\big[\log q(x_{1:T}|x_0) - \log p_\theta(x_{0:T})\big]",
             r"$q(x_{1:T}|x_0) = q(x_T|x_0)\prod_{t\ge2}q(x_{t-1}|x_t,x_0)$ (Bayes, E1 posterior) regroups the log-ratio "
             r"into the KL terms; computed here along the chain $\prod_t q(x_t|x_{t-1})$, each pair $(x_{t-1}, x_t)$ by "
             "two-dimensional Gauss–Hermite, with vfe.gaussian_log_density",
             _elbo_path_form),
        Step(r"-\log p_\theta(x_0) = -\log\mathcal N(x_0; m_0, v_0)",
             r"Jensen: $\mathbb E_q\log\frac{q}{p_\theta} \ge -\log\mathbb E_q\frac{p_\theta(x_{0:T})}{q(x_{1:T}|x_0)} = -\log p_\theta(x_0)$; "
             r"the reverse chain is linear-Gaussian: $m_{t-1} = a_tm_t + b_t$, $v_{t-1} = a_t^2v_t + \sigma_t^2$ from $(m_T, v_T) = (0, 1)$",
             _neg_log_evidence, relation=">="),
    ],
)

ELBO_SAMPLES = 2**17
"""Forward-chain trajectories of the Monte Carlo ELBO check."""

ELBO_MC_TOL = 6.1 / math.sqrt(ELBO_SAMPLES)
"""Tolerance of the Monte Carlo ELBO: 6.1 standard errors (a two-sided normal tail of 1e-9 under the
central limit theorem) when the integrand's standard deviation is at most the value's scale
``max(|−ELBO|, 1)``. Over :data:`_MC_MODEL`'s domain the largest ratio found (random search over
the box and its corners, 6000 parameter draws) is 0.74, so the bound 1 leaves a margin."""


def _elbo_monte_carlo(betas, a, b, sigma, x0):
    s = D.schedule_from_betas(betas)
    key = jax.random.key(1, impl="rbg")

    def step(carry, params):
        x_prev, total = carry
        t, a_t, b_t, s_t = params
        mean, var = D.q_step(s, x_prev, t)
        x_t = mean + jnp.sqrt(var) * jax.random.normal(jax.random.fold_in(key, t), x_prev.shape)
        total = total + vfe.gaussian_log_density(x_t, mean, jnp.sqrt(var)) \
            - vfe.gaussian_log_density(x_prev, a_t * x_t + b_t, s_t)
        return (x_t, total), None
    steps = jnp.arange(1, betas.shape[0] + 1)
    (x_T, total), _ = jax.lax.scan(step, (jnp.full(ELBO_SAMPLES, x0), jnp.zeros(ELBO_SAMPLES)), (steps, a, b, sigma))
    return jnp.mean(total - vfe.gaussian_log_density(x_T, 0.0, 1.0))


_MC_MODEL = {
    "betas": _betas(0.01, 0.5),
    "a": hnp.arrays(np.float64, (T,), elements=st.floats(0.5, 1.5)),
    "b": hnp.arrays(np.float64, (T,), elements=st.floats(-1.0, 1.0)),
    "sigma": hnp.arrays(np.float64, (T,), elements=st.floats(0.5, 2.0)),
    "x0": st.floats(-3.0, 3.0),
}

E1_ELBO_SAMPLES = Derivation(
    claim="E1",
    title="The KL terms are the Monte Carlo mean of log q(x_{1:T}|x_0) − log p_θ(x_{0:T})",
    statement=r"L_T + \sum_{t=2}^T\mathbb E_q L_{t-1} + \mathbb E_q L_0 \approx \frac1n\sum_{i=1}^n"
              r"\big[\log q(x^{(i)}_{1:T}|x_0) - \log p_\theta(x_0, x^{(i)}_{1:T})\big],\ x^{(i)}_{1:T} \sim q(\cdot|x_0)",
    kind="distributional", variables=_MC_MODEL, max_examples=5,
    steps=[
        Step(r"L_T + \sum_{t=2}^T\mathbb E_q L_{t-1} + \mathbb E_q L_0",
             "the KL form (previous derivation): vfe.diffusion.prior_term, denoising_term, decoder_term",
             _elbo_kl_form),
        Step(r"\frac1n\sum_i\big[\log q(x^{(i)}_{1:T}|x_0) - \log p_\theta(x^{(i)}_{0:T})\big]",
             f"{ELBO_SAMPLES} trajectories of the chain by vfe.diffusion.q_step (fixed key); tolerance 6.1 standard "
             "errors of an integrand whose standard deviation is at most the value's scale on this domain",
             _elbo_monte_carlo, tol=ELBO_MC_TOL),
    ],
)


# ----------------------------------------------------------------------------- E1: noise parametrisation


def _eps_setup(betas, t, x0, eps):
    s = D.schedule_from_betas(betas)
    return s, D.q_sample(s, x0, t, eps)


def _l_via_kl(betas, t, x0, eps, eps_hat, sigma):
    s, xt = _eps_setup(betas, t, x0, eps)
    mu = D.q_posterior_mean_from_noise(s, xt, t, eps_hat)
    return jnp.sum(D.denoising_term(s, x0, xt, t, mu, sigma))


def _products(betas, t):
    """``(β_t, α_t, ᾱ_t, ᾱ_{t-1}, 1 - ᾱ_t, 1 - ᾱ_{t-1})``."""
    prod, one_minus = _cumulative(betas)
    return betas[t - 1], 1.0 - betas[t - 1], prod[t], prod[t - 1], one_minus[t], one_minus[t - 1]


def _l_written_out(betas, t, x0, eps, eps_hat, sigma):
    _, xt = _eps_setup(betas, t, x0, eps)
    beta, alpha, _, ab_prev, omab, omab_prev = _products(betas, t)
    mu_q = jnp.sqrt(ab_prev) * beta / omab * x0 + jnp.sqrt(alpha) * omab_prev / omab * xt
    mu_p = (xt - beta / jnp.sqrt(omab) * eps_hat) / jnp.sqrt(alpha)
    var_q = omab_prev / omab * beta
    return Terms(jnp.sum((mu_q - mu_p) ** 2) / (2 * sigma**2),
                 x0.size * (var_q / (2 * sigma**2) + jnp.log(sigma) - 0.5 * jnp.log(var_q) - 0.5))


def _l_weighted_noise(betas, t, x0, eps, eps_hat, sigma):
    beta, alpha, _, _, omab, omab_prev = _products(betas, t)
    var_q = omab_prev / omab * beta
    weight = beta**2 / (2 * sigma**2 * alpha * omab)
    return Terms(weight * jnp.sum((eps - eps_hat) ** 2),
                 x0.size * (var_q / (2 * sigma**2) + jnp.log(sigma) - 0.5 * jnp.log(var_q) - 0.5))


def _l_library_noise(betas, t, x0, eps, eps_hat, sigma):
    s = D.schedule_from_betas(betas)
    return Terms(D.noise_weight(s, t, sigma) * jnp.sum((eps - eps_hat) ** 2),
                 jnp.sum(D.denoising_term_from_noise(s, t, eps, eps, sigma)))


_EPS_INPUTS = {"betas": _betas(), "t": _STEP, "x0": _vec(3), "eps": _vec(3, -4, 4), "eps_hat": _vec(3, -4, 4),
               "sigma": _log_uniform(1e-2, 10.0)}

E1_NOISE_WEIGHTS = Derivation(
    claim="E1",
    title="With the noise parametrisation, L_{t-1} is a weighted noise error plus a constant",
    statement=r"L_{t-1} = \frac{\beta_t^2}{2\sigma_t^2\alpha_t(1-\bar\alpha_t)}\|\varepsilon - \varepsilon_\theta\|^2 + C_t,\ "
              r"C_t = \frac d2\Big(\frac{\tilde\beta_t}{\sigma_t^2} - 1 - \log\frac{\tilde\beta_t}{\sigma_t^2}\Big)",
    variables=_EPS_INPUTS,
    steps=[
        Step(r"\mathrm{KL}\big(q(x_{t-1}|x_t,x_0)\,\|\,\mathcal N(\mu_\theta(x_t,\varepsilon_\theta), \sigma_t^2)\big)",
             r"vfe.diffusion.denoising_term at $x_t$ = vfe.diffusion.q_sample(x_0, ε) and "
             r"$\mu_\theta$ = vfe.diffusion.q_posterior_mean_from_noise(x_t, ε_θ), summed over d = 3 coordinates",
             _l_via_kl),
        Step(r"\frac{\|\tilde\mu_t - \mu_\theta\|^2}{2\sigma_t^2} + d\Big(\frac{\tilde\beta_t}{2\sigma_t^2} + \log\frac{\sigma_t}{\sqrt{\tilde\beta_t}} - \frac12\Big)",
             "the KL divergence of two isotropic Gaussians, with the x_0 form of the posterior mean written out",
             _l_written_out),
        Step(r"\frac{\beta_t^2}{2\sigma_t^2\alpha_t(1-\bar\alpha_t)}\|\varepsilon - \varepsilon_\theta\|^2 + C_t",
             r"$\tilde\mu_t - \mu_\theta = \frac{\beta_t}{\sqrt{\alpha_t}\sqrt{1-\bar\alpha_t}}(\varepsilon_\theta - \varepsilon)$ "
             r"(both means in the noise form, E1 posterior)",
             _l_weighted_noise),
        Step(r"\lambda_t\|\varepsilon - \varepsilon_\theta\|^2 + C_t",
             r"vfe.diffusion.noise_weight; $C_t$ = vfe.diffusion.denoising_term_from_noise at $\varepsilon_\theta = \varepsilon$",
             _l_library_noise),
    ],
)


def _l_tight_kl(betas, t, x0, eps, eps_hat):
    beta, _, _, _, omab, omab_prev = _products(betas, t)
    return _l_via_kl(betas, t, x0, eps, eps_hat, jnp.sqrt(omab_prev / omab * beta))


def _l_tight_weight(betas, t, x0, eps, eps_hat):
    beta, alpha, _, _, _, omab_prev = _products(betas, t)
    return beta / (2 * alpha * omab_prev) * jnp.sum((eps - eps_hat) ** 2)


def _l_tight_library(betas, t, x0, eps, eps_hat):
    s = D.schedule_from_betas(betas)
    return jnp.sum(D.denoising_term_from_noise(s, t, eps, eps_hat, jnp.sqrt(D.q_posterior(s, 0.0, 0.0, t)[1])))


E1_NOISE_WEIGHTS_TIGHT = Derivation(
    claim="E1",
    title="With σ_t² = β̃_t the constant vanishes: L_{t-1} = β_t/(2α_t(1−ᾱ_{t−1}))·‖ε − ε_θ‖²",
    statement=r"\sigma_t^2 = \tilde\beta_t \implies L_{t-1} = \frac{\beta_t}{2\alpha_t(1-\bar\alpha_{t-1})}\|\varepsilon - \varepsilon_\theta\|^2",
    variables={k: v for k, v in _EPS_INPUTS.items() if k != "sigma"},
    steps=[
        Step(r"\mathrm{KL}\big(q(x_{t-1}|x_t,x_0)\,\|\,\mathcal N(\mu_\theta, \tilde\beta_t)\big)",
             "vfe.diffusion.denoising_term with the model variance set to the posterior variance", _l_tight_kl),
        Step(r"\frac{\beta_t}{2\alpha_t(1-\bar\alpha_{t-1})}\|\varepsilon - \varepsilon_\theta\|^2",
             r"$C_t = 0$ at $\sigma_t^2 = \tilde\beta_t$, and $\frac{\beta_t^2}{2\tilde\beta_t\alpha_t(1-\bar\alpha_t)} = \frac{\beta_t}{2\alpha_t(1-\bar\alpha_{t-1})}$",
             _l_tight_weight),
        Step(r"\lambda_t\|\varepsilon - \varepsilon_\theta\|^2 + 0", "vfe.diffusion.denoising_term_from_noise at σ_t = √β̃_t",
             _l_tight_library),
    ],
)


# ----------------------------------------------------------------------------- E2: Tweedie's formula


def _abar(betas, t):
    return _cumulative(betas)[0][t]


def _omabar(betas, t):
    """``1 - ᾱ_t`` (see :func:`_cumulative`)."""
    return _cumulative(betas)[1][t]


def _gaussian_marginal_log_density(betas, t, x, m, s):
    """Σ_i log p_t(x_i) for x_0 ~ N(m, s²): p_t = N(√ᾱ m, ᾱ s² + 1 − ᾱ) (vfe.gaussian_log_density)."""
    ab, omab = _abar(betas, t), _omabar(betas, t)
    return jnp.sum(vfe.gaussian_log_density(x, jnp.sqrt(ab) * m, jnp.sqrt(ab * s**2 + omab)))


def _tweedie_autodiff_gaussian(betas, t, x, m, s):
    score = jax.grad(_gaussian_marginal_log_density, argnums=2)(betas, t, x, m, s)
    return D.tweedie_denoiser(D.schedule_from_betas(betas), x, t, score)


def _tweedie_written_gaussian(betas, t, x, m, s):
    ab, omab = _abar(betas, t), _omabar(betas, t)
    score = -(x - jnp.sqrt(ab) * m) / (ab * s**2 + omab)
    return (x + omab * score) / jnp.sqrt(ab)


def _bayes_denoiser_gaussian(betas, t, x, m, s):
    """E[x_0|x_t] by conjugacy: prior N(m, s²), one observation x_t/√ᾱ ~ N(x_0, (1-ᾱ)/ᾱ)."""
    ab, omab = _abar(betas, t), _omabar(betas, t)
    mean, _ = vfe.normal_posterior((x / jnp.sqrt(ab))[..., None], m, s, jnp.sqrt(omab / ab))
    return mean


def _library_denoiser_gaussian(betas, t, x, m, s):
    return D.gaussian_data_denoiser(D.schedule_from_betas(betas), x, t, m, s)


_TIME = st.integers(0, T)
_GAUSSIAN_DATA = {"betas": _betas(), "t": _TIME, "x": _vec(3), "m": _vec(3, -3, 3), "s": _vec(3, 0.1, 3.0)}

E2_TWEEDIE_GAUSSIAN = Derivation(
    claim="E2",
    title="Tweedie's formula is the exact posterior mean for Gaussian data",
    statement=r"x_0 \sim \mathcal N(m, s^2):\ \frac{x_t + (1-\bar\alpha_t)\nabla\log p_t(x_t)}{\sqrt{\bar\alpha_t}} = \mathbb E[x_0|x_t]",
    variables=_GAUSSIAN_DATA,
    steps=[
        Step(r"\frac{x_t + (1-\bar\alpha_t)\nabla\log p_t(x_t)}{\sqrt{\bar\alpha_t}}",
             r"vfe.diffusion.tweedie_denoiser with the score by jax.grad of $\log p_t$, "
             r"$p_t = \mathcal N(\sqrt{\bar\alpha_t}m, \bar\alpha_ts^2 + 1-\bar\alpha_t)$ (vfe.gaussian_log_density)",
             _tweedie_autodiff_gaussian),
        Step(r"\frac{1}{\sqrt{\bar\alpha_t}}\Big(x_t - (1-\bar\alpha_t)\frac{x_t - \sqrt{\bar\alpha_t}m}{\bar\alpha_ts^2 + 1-\bar\alpha_t}\Big)",
             "the score of a Gaussian, written out", _tweedie_written_gaussian),
        Step(r"\mathbb E[x_0|x_t]",
             r"conjugate normal posterior: prior $\mathcal N(m, s^2)$, observation $x_t/\sqrt{\bar\alpha_t} \sim \mathcal N(x_0, "
             r"(1-\bar\alpha_t)/\bar\alpha_t)$; vfe.normal_posterior",
             _bayes_denoiser_gaussian),
        Step(r"m + \frac{\sqrt{\bar\alpha_t}s^2}{\bar\alpha_ts^2 + 1-\bar\alpha_t}(x_t - \sqrt{\bar\alpha_t}m)",
             "vfe.diffusion.gaussian_data_denoiser", _library_denoiser_gaussian),
    ],
)

K = 3
"""Components of the mixture data."""


@st.composite
def _mixture_data(draw, t_min=0):
    """A 1-D mixture of K components (a weight may be 0), points x_t and a schedule."""
    w = draw(hnp.arrays(np.float64, (K,), elements=st.floats(0.0, 1.0)))
    w[draw(st.integers(0, K - 1))] += 0.1  # never all zero
    return {"betas": draw(_betas()), "t": draw(st.integers(t_min, T)), "x": draw(_vec(4, -6, 6)),
            "w": w / w.sum(), "m": draw(_vec(K, -3, 3)), "s": draw(_vec(K, 0.1, 2.0))}


def _mixture_marginal(betas, t, w, m, s):
    ab, omab = _abar(betas, t), _omabar(betas, t)
    return w, jnp.sqrt(ab) * m, jnp.sqrt(ab * s**2 + omab)


def _mixture_score_autodiff(betas, t, x, w, m, s):
    """∇ log p_t by jax.grad of vfe.gaussian_mixture_log_density with the noisy components."""
    wk, mk, sk = _mixture_marginal(betas, t, w, m, s)
    return jax.grad(lambda y: jnp.sum(vfe.gaussian_mixture_log_density(y, jnp.broadcast_to(wk, y.shape + (K,)),
                                                                       jnp.broadcast_to(mk, y.shape + (K,)),
                                                                       jnp.broadcast_to(sk, y.shape + (K,)))))(x)


def _responsibilities(betas, t, x, w, m, s):
    """r_k(x) = π_k N(x; √ᾱ m_k, v_k)/p_t(x), shape (points, K)."""
    wk, mk, sk = _mixture_marginal(betas, t, w, m, s)
    log_joint = jnp.log(wk) + vfe.gaussian_log_density(x[:, None], mk, sk)
    return jax.nn.softmax(log_joint, axis=-1)


def _component_posterior_means(betas, t, x, m, s):
    """E[x_0|x_t, k] by vfe.normal_posterior per component, shape (points, K)."""
    ab, omab = _abar(betas, t), _omabar(betas, t)
    obs = jnp.broadcast_to((x / jnp.sqrt(ab))[:, None, None], (x.size, K, 1))
    mean, _ = vfe.normal_posterior(obs, m, s, jnp.sqrt(omab / ab))
    return mean


def _tweedie_autodiff_mixture(betas, t, x, w, m, s):
    score = _mixture_score_autodiff(betas, t, x, w, m, s)
    return D.tweedie_denoiser(D.schedule_from_betas(betas), x, t, score)


def _responsibility_denoiser(betas, t, x, w, m, s):
    r = _responsibilities(betas, t, x, w, m, s)
    return jnp.sum(r * _component_posterior_means(betas, t, x, m, s), axis=-1)


def _library_denoiser_mixture(betas, t, x, w, m, s):
    return D.mixture_data_denoiser(D.schedule_from_betas(betas), x[:, None], t, w, m[:, None], s)[:, 0]


E2_TWEEDIE_MIXTURE = Derivation(
    claim="E2",
    title="Tweedie's formula is the exact posterior mean for Gaussian-mixture data",
    statement=r"x_0 \sim \sum_k\pi_k\mathcal N(m_k, s_k^2):\ \frac{x_t + (1-\bar\alpha_t)\nabla\log p_t(x_t)}{\sqrt{\bar\alpha_t}}"
              r" = \sum_k r_k(x_t)\,\mathbb E[x_0|x_t, k]",
    inputs=_mixture_data(),
    steps=[
        Step(r"\frac{x_t + (1-\bar\alpha_t)\nabla\log p_t(x_t)}{\sqrt{\bar\alpha_t}}",
             r"vfe.diffusion.tweedie_denoiser; the score by jax.grad of vfe.gaussian_mixture_log_density of "
             r"$p_t = \sum_k\pi_k\mathcal N(\sqrt{\bar\alpha_t}m_k, \bar\alpha_ts_k^2 + 1-\bar\alpha_t)$",
             _tweedie_autodiff_mixture),
        Step(r"\sum_k r_k(x_t)\,\mathbb E[x_0|x_t,k],\ r_k = \frac{\pi_k\mathcal N_k(x_t)}{p_t(x_t)}",
             "total expectation over the component k: responsibilities by Bayes (vfe.gaussian_log_density, softmax), "
             "component posterior means by vfe.normal_posterior",
             _responsibility_denoiser),
        Step(r"\mathbb E[x_0|x_t]", "vfe.diffusion.mixture_data_denoiser", _library_denoiser_mixture),
    ],
)


# ----------------------------------------------------------------------------- E2: the optimal noise predictor


def _library_noise_gaussian(betas, t, x, m, s):
    return D.gaussian_data_noise(D.schedule_from_betas(betas), x, t, m, s)


def _scaled_score_gaussian(betas, t, x, m, s):
    score = jax.grad(_gaussian_marginal_log_density, argnums=2)(betas, t, x, m, s)
    return D.noise_from_score(D.schedule_from_betas(betas), t, score)


def _conditional_noise_gaussian(betas, t, x, m, s):
    ab, omab = _abar(betas, t), _omabar(betas, t)
    return (x - jnp.sqrt(ab) * _bayes_denoiser_gaussian(betas, t, x, m, s)) / jnp.sqrt(omab)


E2_NOISE_GAUSSIAN = Derivation(
    claim="E2",
    title="The optimal noise predictor is −√(1−ᾱ_t)·score, for Gaussian data",
    statement=r"x_0 \sim \mathcal N(m, s^2):\ \varepsilon^*(x_t) = -\sqrt{1-\bar\alpha_t}\,\nabla\log p_t(x_t) = \mathbb E[\varepsilon|x_t]",
    variables={**_GAUSSIAN_DATA, "t": st.integers(1, T)},
    steps=[
        Step(r"\varepsilon^*(x_t)", "vfe.diffusion.gaussian_data_noise", _library_noise_gaussian),
        Step(r"-\sqrt{1-\bar\alpha_t}\,\nabla\log p_t(x_t)",
             "vfe.diffusion.noise_from_score of jax.grad of log p_t (vfe.gaussian_log_density)", _scaled_score_gaussian),
        Step(r"\mathbb E[\varepsilon|x_t] = \frac{x_t - \sqrt{\bar\alpha_t}\,\mathbb E[x_0|x_t]}{\sqrt{1-\bar\alpha_t}}",
             r"$\varepsilon = (x_t - \sqrt{\bar\alpha_t}x_0)/\sqrt{1-\bar\alpha_t}$ is affine in $x_0$ given $x_t$; "
             "E[x_0|x_t] by vfe.normal_posterior",
             _conditional_noise_gaussian),
    ],
)


def _library_noise_mixture(betas, t, x, w, m, s):
    return D.mixture_data_noise(D.schedule_from_betas(betas), x[:, None], t, w, m[:, None], s)[:, 0]


def _scaled_score_mixture(betas, t, x, w, m, s):
    return D.noise_from_score(D.schedule_from_betas(betas), t, _mixture_score_autodiff(betas, t, x, w, m, s))


def _conditional_noise_mixture(betas, t, x, w, m, s):
    ab, omab = _abar(betas, t), _omabar(betas, t)
    return (x - jnp.sqrt(ab) * _responsibility_denoiser(betas, t, x, w, m, s)) / jnp.sqrt(omab)


E2_NOISE_MIXTURE = Derivation(
    claim="E2",
    title="The optimal noise predictor is −√(1−ᾱ_t)·score, for Gaussian-mixture data",
    statement=r"x_0 \sim \sum_k\pi_k\mathcal N(m_k, s_k^2):\ \varepsilon^*(x_t) = -\sqrt{1-\bar\alpha_t}\,\nabla\log p_t(x_t)"
              r" = \mathbb E[\varepsilon|x_t]",
    inputs=_mixture_data(t_min=1),
    steps=[
        Step(r"\varepsilon^*(x_t)", "vfe.diffusion.mixture_data_noise", _library_noise_mixture),
        Step(r"-\sqrt{1-\bar\alpha_t}\,\nabla\log p_t(x_t)",
             "vfe.diffusion.noise_from_score of jax.grad of vfe.gaussian_mixture_log_density", _scaled_score_mixture),
        Step(r"\frac{x_t - \sqrt{\bar\alpha_t}\sum_kr_k(x_t)\mathbb E[x_0|x_t,k]}{\sqrt{1-\bar\alpha_t}}",
             "E[ε|x_t] through E[x_0|x_t] by responsibilities and vfe.normal_posterior (as in the Tweedie derivation)",
             _conditional_noise_mixture),
    ],
)


def _noise_loss(params, betas, t, m, s):
    r"""``E(ε - (a x_t + b))²`` over ``x_0 ~ N(m, s²)``, ``ε ~ N(0, 1)``, by exact 2-D Gauss–Hermite."""
    ab, omab = _abar(betas, t), _omabar(betas, t)
    a, b = params[0], params[1]
    return _gh2(lambda g, h: (h - a * (jnp.sqrt(ab) * (m + s * g) + jnp.sqrt(omab) * h) - b) ** 2)


def _optimal_affine(betas, t, m, s):
    """(a*, b*) of ε*(x) = a* x + b*: slope by jax.grad of vfe.diffusion.gaussian_data_noise, intercept ε*(0)."""
    sched = D.schedule_from_betas(betas)
    def eps(x):
        return D.gaussian_data_noise(sched, x, t, m, s)
    return jnp.stack([jax.grad(eps)(jnp.zeros(())), eps(jnp.zeros(()))])


_NOISE_FIT = methods.Minimisation(
    _noise_loss, init=lambda key, betas, t, m, s: jnp.array([1.0, -1.0]), starts=1, iterations=30)
"""L-BFGS from one fixed start: the loss is a convex quadratic in ``(a, b)`` (a random start would add the
compilation of a threefry sampler, ~1.7 s on the reference machine, for nothing)."""

_AFFINE_INPUTS = {"betas": _betas(), "t": st.integers(1, T), "m": st.floats(-3.0, 3.0), "s": st.floats(0.1, 3.0)}

def _closed_form_optimum(betas, t, m, s):
    ab, omab = _abar(betas, t), _omabar(betas, t)
    v = ab * s**2 + omab
    return jnp.stack([ab * s**2 / v, jnp.sqrt(omab) / v, -jnp.sqrt(omab) * jnp.sqrt(ab) * m / v])


def _library_optimum(betas, t, m, s):
    params = _optimal_affine(betas, t, m, s)
    return jnp.concatenate([_noise_loss(params, betas, t, m, s)[None], params])


def _optax_optimum(betas, t, m, s):
    params = _NOISE_FIT.argmin(betas=betas, t=t, m=m, s=s)
    return jnp.concatenate([_noise_loss(params, betas, t, m, s)[None], params])


E2_NOISE_OPTIMUM = Derivation(
    claim="E2",
    title="ε* = −√(1−ᾱ_t)·score minimises E‖ε − ε_θ(x_t)‖² (Gaussian data, optax over affine predictors)",
    statement=r"\min_{a,b}\ \mathbb E\big(\varepsilon - (a x_t + b)\big)^2 = \mathbb E\big(\varepsilon - \varepsilon^*(x_t)\big)^2"
              r" = \frac{\bar\alpha_ts^2}{\bar\alpha_ts^2 + 1-\bar\alpha_t},\ \text{attained at } a x + b = \varepsilon^*(x)",
    kind="variational", variables=_AFFINE_INPUTS, max_examples=10,
    steps=[
        Step(r"\Big(\frac{\bar\alpha_ts^2}{v_t},\ \frac{\sqrt{1-\bar\alpha_t}}{v_t},\ -\frac{\sqrt{1-\bar\alpha_t}\sqrt{\bar\alpha_t}m}{v_t}\Big),"
             r"\ v_t = \bar\alpha_ts^2 + 1-\bar\alpha_t",
             r"(minimum, slope, intercept) in closed form: $\varepsilon$ and $x_t$ are jointly Gaussian with $\mathrm{Cov} = "
             r"\sqrt{1-\bar\alpha_t}$ and $\mathrm{Var}(x_t) = v_t$, so $\mathbb E[\varepsilon|x_t]$ is the regression line and "
             r"the minimum is $\mathbb E\,\mathrm{Var}(\varepsilon|x_t) = 1 - (1-\bar\alpha_t)/v_t$",
             _closed_form_optimum),
        Step(r"\Big(\mathbb E\big(\varepsilon - \varepsilon^*(x_t)\big)^2,\ \partial_x\varepsilon^*,\ \varepsilon^*(0)\Big)",
             "ε* = vfe.diffusion.gaussian_data_noise (slope by jax.grad, intercept its value at 0) and the loss at it "
             "(exact Gauss–Hermite over x_0 and ε)",
             _library_optimum),
        Step(r"\Big(\min_{a,b}\mathbb E\big(\varepsilon - (a x_t + b)\big)^2,\ \arg\min_{a,b}\Big)",
             "the minimum and minimiser found by optax L-BFGS over affine predictors (fixed start, 30 iterations; "
             "one tolerance for the three numbers, that of the minimiser)",
             _optax_optimum, tol=1e-6),
    ],
)


# ----------------------------------------------------------------------------- E2: score matching and weights


def _dsm_minus_esm(betas, t, m, s, c, e):
    """E‖s_θ(x_t) − ∇log q(x_t|x_0)‖² − E‖s_θ(x_t) − ∇log p_t(x_t)‖² for s_θ(x) = c x + e (exact G–H)."""
    sched = D.schedule_from_betas(betas)
    ab, omab = _abar(betas, t), _omabar(betas, t)

    def dsm(g, h):
        x0 = m + s * g
        xt = D.q_sample(sched, x0, t, h)
        return (c * xt + e - D.conditional_score(sched, x0, xt, t)) ** 2

    def esm(g):
        xt = jnp.sqrt(ab) * m + jnp.sqrt(ab * s**2 + omab) * g
        return (c * xt + e - D.gaussian_data_score(sched, xt, t, m, s)) ** 2
    return Terms(_gh2(dsm), -_gh(esm))


def _score_norms(betas, t, m, s, c, e):
    sched = D.schedule_from_betas(betas)
    ab, omab = _abar(betas, t), _omabar(betas, t)
    cond = _gh2(lambda g, h: D.conditional_score(sched, m + s * g, D.q_sample(sched, m + s * g, t, h), t) ** 2)
    marg = _gh(lambda g: D.gaussian_data_score(sched, jnp.sqrt(ab) * m + jnp.sqrt(ab * s**2 + omab) * g, t, m, s) ** 2)
    return Terms(cond, -marg)


E2_SCORE_MATCHING = Derivation(
    claim="E2",
    title="Denoising score matching equals score matching up to a constant (Vincent 2011)",
    statement=r"\mathbb E\|s_\theta(x_t) - \nabla\log q(x_t|x_0)\|^2 - \mathbb E\|s_\theta(x_t) - \nabla\log p_t(x_t)\|^2"
              r" = \frac{1}{1-\bar\alpha_t} - \frac{1}{\bar\alpha_ts^2 + 1-\bar\alpha_t}\ \text{for every } s_\theta",
    variables={"betas": _betas(), "t": st.integers(1, T), "m": st.floats(-3.0, 3.0), "s": st.floats(0.1, 3.0),
               "c": st.floats(-3.0, 3.0), "e": st.floats(-3.0, 3.0)},
    steps=[
        Step(r"\mathbb E\|s_\theta - \nabla\log q(x_t|x_0)\|^2 - \mathbb E\|s_\theta - \nabla\log p_t\|^2",
             r"affine $s_\theta(x) = cx + e$, Gaussian data; vfe.diffusion.conditional_score and gaussian_data_score, "
             "exact Gauss–Hermite",
             _dsm_minus_esm),
        Step(r"\mathbb E\|\nabla\log q(x_t|x_0)\|^2 - \mathbb E\|\nabla\log p_t\|^2",
             r"expand the squares: the $\|s_\theta\|^2$ terms cancel, and so do the cross terms, because "
             r"$\mathbb E[\nabla\log q(x_t|x_0)\,|\,x_t] = \nabla\log p_t(x_t)$",
             _score_norms),
        Step(r"\frac{1}{1-\bar\alpha_t} - \frac{1}{\bar\alpha_ts^2 + 1-\bar\alpha_t}",
             r"$\nabla\log q(x_t|x_0) = -\varepsilon/\sqrt{1-\bar\alpha_t}$ and $\nabla\log p_t = -(x_t - \sqrt{\bar\alpha_t}m)/v_t$ "
             r"with $\mathrm{Var}(x_t) = v_t$",
             lambda betas, t, m, s, c, e: 1 / _omabar(betas, t)
             - 1 / (_abar(betas, t) * s**2 + _omabar(betas, t))),
    ],
)


def _simple_loss(betas, t, x0, eps, score):
    eps_theta = D.noise_from_score(D.schedule_from_betas(betas), t, score)
    return jnp.sum((eps - eps_theta) ** 2)


def _weighted_dsm(betas, t, x0, eps, score):
    sched = D.schedule_from_betas(betas)
    xt = D.q_sample(sched, x0, t, eps)
    return _omabar(betas, t) * jnp.sum((score - D.conditional_score(sched, x0, xt, t)) ** 2)


_WEIGHT_INPUTS = {"betas": _betas(), "t": st.integers(1, T), "x0": _vec(3), "eps": _vec(3, -4, 4), "score": _vec(3, -20, 20)}

E2_SIMPLE_LOSS = Derivation(
    claim="E2",
    title="Ho et al.'s noise loss is Song & Ermon's score-matching loss with weight σ_t² = 1 − ᾱ_t",
    statement=r"\varepsilon_\theta = -\sqrt{1-\bar\alpha_t}\,s_\theta:\ \|\varepsilon - \varepsilon_\theta(x_t)\|^2"
              r" = (1-\bar\alpha_t)\,\|s_\theta(x_t) - \nabla_{x_t}\log q(x_t|x_0)\|^2",
    variables=_WEIGHT_INPUTS,
    steps=[
        Step(r"\|\varepsilon - \varepsilon_\theta\|^2,\ \varepsilon_\theta = -\sqrt{1-\bar\alpha_t}\,s_\theta",
             "the integrand of Ho et al.'s L_simple; vfe.diffusion.noise_from_score", _simple_loss),
        Step(r"\sigma_t^2\,\|s_\theta - \nabla\log q(x_t|x_0)\|^2,\ \sigma_t^2 = 1-\bar\alpha_t",
             r"$\nabla\log q(x_t|x_0) = -\varepsilon/\sqrt{1-\bar\alpha_t}$ at $x_t$ = vfe.diffusion.q_sample; "
             "vfe.diffusion.conditional_score; Song & Ermon's weight λ(σ) = σ²",
             _weighted_dsm),
    ],
)


def _elbo_term_of_score(betas, t, x0, eps, score, sigma):
    sched = D.schedule_from_betas(betas)
    xt = D.q_sample(sched, x0, t, eps)
    mu = D.q_posterior_mean_from_noise(sched, xt, t, D.noise_from_score(sched, t, score))
    constant = D.denoising_term_from_noise(sched, t, eps, eps, sigma)
    return Terms(jnp.sum(D.denoising_term(sched, x0, xt, t, mu, sigma)), -jnp.sum(constant))


def _elbo_weighted_noise(betas, t, x0, eps, score, sigma):
    sched = D.schedule_from_betas(betas)
    return D.noise_weight(sched, t, sigma) * _simple_loss(betas, t, x0, eps, score)


def _elbo_weighted_dsm(betas, t, x0, eps, score, sigma):
    beta = betas[t - 1]
    return beta**2 / (2 * sigma**2 * (1 - beta)) * _weighted_dsm(betas, t, x0, eps, score) / _omabar(betas, t)


E2_ELBO_WEIGHTS = Derivation(
    claim="E2",
    title="The ELBO term L_{t−1} is the same score-matching loss with weight β_t²/(2σ_t²α_t)",
    statement=r"L_{t-1} - C_t = \lambda_t\|\varepsilon - \varepsilon_\theta\|^2 = \frac{\beta_t^2}{2\sigma_t^2\alpha_t}"
              r"\|s_\theta - \nabla\log q(x_t|x_0)\|^2",
    variables={**_WEIGHT_INPUTS, "t": _STEP, "sigma": _log_uniform(1e-2, 10.0)},
    steps=[
        Step(r"L_{t-1} - C_t", r"vfe.diffusion.denoising_term with $\mu_\theta$ from $\varepsilon_\theta = -\sqrt{1-\bar\alpha_t}s_\theta$, "
             r"minus $C_t$ (vfe.diffusion.denoising_term_from_noise at $\varepsilon_\theta = \varepsilon$)",
             _elbo_term_of_score),
        Step(r"\lambda_t\|\varepsilon - \varepsilon_\theta\|^2", "E1 (noise weights); vfe.diffusion.noise_weight",
             _elbo_weighted_noise),
        Step(r"\frac{\beta_t^2}{2\sigma_t^2\alpha_t}\|s_\theta - \nabla\log q(x_t|x_0)\|^2",
             r"previous derivation: $\|\varepsilon - \varepsilon_\theta\|^2 = (1-\bar\alpha_t)\|s_\theta - \nabla\log q\|^2$, "
             r"and $\lambda_t(1-\bar\alpha_t) = \beta_t^2/(2\sigma_t^2\alpha_t)$",
             _elbo_weighted_dsm),
    ],
)
