"""Langevin Monte Carlo and its discretisation bias (claim E3 of ``CLAIMS.md``; seed 001).

The unadjusted Langevin algorithm (ULA) on a Gaussian target is an AR(1) recursion, so its
stationary law is known in closed form: the mean is exact, the variance is
``σ²/(1 − η/(2σ²)) = σ² + η/2 + O(η²)`` for the step ``x' = x + η∇log p + √(2η)ξ``, i.e.
``σ²/(1 − ε/(4σ²))`` in Song & Ermon's convention ``x' = x + (ε/2)∇log p + √ε ξ`` (the form
``CLAIMS.md`` quotes). The derivations check the fixed point, the ``η → 0`` limit and its
first-order bias, the law of actual ULA samples (DKW band), and refute the quoted formula read
in the other convention.
"""

from __future__ import annotations

import math

import jax
import jax.numpy as jnp
import numpy as np
from hypothesis import strategies as st

from proofs.catalogue import Claim
from vfe import langevin, methods
from vfe.derivation import Derivation, Step, Terms, geometric

CLAIMS = (
    Claim(
        id="E3", title="Langevin Monte Carlo samples the target, up to an O(η) bias", seeds=("001",),
        wording="「局所解に陥らないよう各強度の撹乱後分布でランジュバンモンテカルロを使ってサンプリングする"
                "スコアベースドモデル [Song+ 2019]」 (\"score-based models [Song+ 2019], which sample from the "
                "perturbed distribution at each noise level with Langevin Monte Carlo so as not to get stuck in "
                "local optima\")",
        statement=r"ULA $x_{k+1} = x_k + \eta\nabla\log p(x_k) + \sqrt{2\eta}\,\xi_k$ on $p = \mathcal N(\mu, \sigma^2)$ "
                  r"has, for $0 < \eta < 2\sigma^2$, the stationary law $\mathcal N\big(\mu,\ \sigma^2/(1 - \eta/(2\sigma^2))\big)$, "
                  r"the fixed point of $v' = (1 - \eta/\sigma^2)^2 v + 2\eta$; in Song & Ermon's step "
                  r"$\varepsilon = 2\eta$ ($x' = x + \tfrac{\varepsilon}{2}\nabla\log p + \sqrt{\varepsilon}\,\xi$) the variance "
                  r"reads $\sigma^2/(1 - \varepsilon/(4\sigma^2))$. The variance is $\sigma^2 + \eta/2 + O(\eta^2)$: "
                  r"exact only as $\eta \to 0$; for $\eta \ge 2\sigma^2$ the chain diverges",
        verdict="correct in Song & Ermon's step convention (drift ε/2, noise √ε), where the stationary variance is "
                "σ²/(1 − ε/(4σ²)); with the step written x' = x + η∇log p + √(2η)ξ it is σ²/(1 − η/(2σ²)), and the "
                "quoted formula read in that convention is refuted. Either way the variance is biased, by η/2 = ε/4 to first order",
        functions=("vfe.langevin.ula_step", "vfe.langevin.ula_chain", "vfe.langevin.langevin_update",
                   "vfe.langevin.gaussian_score", "vfe.langevin.ula_stationary_variance",
                   "vfe.langevin.ula_gaussian_marginal"),
    ),
)


def _log_uniform(lo: float, hi: float) -> st.SearchStrategy[float]:
    """``10**u`` with ``u`` uniform in ``[log10 lo, log10 hi]`` (shrinks towards ``lo``)."""
    return st.floats(math.log10(lo), math.log10(hi)).map(lambda u: 10.0**u)


@st.composite
def _target_and_step(draw, h_min: float, h_max: float, std_min: float = 0.1, std_max: float = 10.0):
    """``{"mean", "std", "eta"}`` with ``η = h σ²``, ``h`` (the step in units of the variance) in ``[h_min, h_max]``."""
    std = draw(_log_uniform(std_min, std_max))
    h = draw(st.floats(h_min, h_max))
    return {"mean": draw(st.floats(-5.0, 5.0)), "std": std, "eta": h * std * std}


def _one_step(x, mean, std, eta, noise):
    """One ULA step on N(μ, σ²) as a function of the state and the noise: vfe.langevin.langevin_update."""
    return langevin.langevin_update(x, langevin.gaussian_score(x, mean, std), eta, noise)


def _step_variance_terms(mean, std, eta):
    """``(∂x'/∂x)² v∞`` and ``(∂x'/∂ξ)²``: the variance of one step from ``N(μ, v∞)``, as two terms."""
    v = langevin.ula_stationary_variance(std, eta)
    d_x = jax.grad(_one_step, argnums=0)(mean, mean, std, eta, 0.0)
    d_noise = jax.grad(_one_step, argnums=4)(mean, mean, std, eta, 0.0)
    return Terms(d_x**2 * v, d_noise**2)


E3_FIXED_POINT = Derivation(
    claim="E3",
    title="ULA on N(μ, σ²) keeps the variance σ²/(1 − η/(2σ²)) = σ²/(1 − ε/(4σ²))",
    statement=(r"v_\infty = (1 - \eta/\sigma^2)^2 v_\infty + 2\eta \iff v_\infty = \frac{\sigma^2}{1 - \eta/(2\sigma^2)}"
               r" = \frac{\sigma^2}{1 - \varepsilon/(4\sigma^2)},\quad \varepsilon = 2\eta,\ 0 < \eta < 2\sigma^2"),
    inputs=_target_and_step(1e-3, 1.99),
    steps=[
        Step(r"v_\infty", "vfe.langevin.ula_stationary_variance",
             lambda mean, std, eta: langevin.ula_stationary_variance(std, eta)),
        Step(r"\Big(\frac{\partial x'}{\partial x}\Big)^2 v_\infty + \Big(\frac{\partial x'}{\partial \xi}\Big)^2",
             r"variance after one step from $\mathcal N(\mu, v_\infty)$: $x'$ is affine in the independent $x$ and $\xi$;"
             r" jax.grad of vfe.langevin.langevin_update with vfe.langevin.gaussian_score",
             _step_variance_terms),
        Step(r"(1 - \eta/\sigma^2)^2 v_\infty + 2\eta",
             r"$x' = x - \eta(x - \mu)/\sigma^2 + \sqrt{2\eta}\,\xi$: the coefficients are $1 - \eta/\sigma^2$ and $\sqrt{2\eta}$",
             lambda mean, std, eta: Terms((1 - eta / std**2) ** 2 * langevin.ula_stationary_variance(std, eta), 2 * eta)),
        Step(r"\frac{2\eta}{1 - (1 - \eta/\sigma^2)^2}",
             r"the unique solution of the linear fixed-point equation $v = a^2 v + 2\eta$, $|a| = |1 - \eta/\sigma^2| < 1$",
             lambda mean, std, eta: 2 * eta / (1 - (1 - eta / std**2) ** 2)),
        Step(r"\frac{2\eta}{(\eta/\sigma^2)(2 - \eta/\sigma^2)}", r"difference of squares $1 - a^2 = (1 - a)(1 + a)$",
             lambda mean, std, eta: 2 * eta / ((eta / std**2) * (2 - eta / std**2))),
        Step(r"\frac{\sigma^2}{1 - \eta/(2\sigma^2)}", r"cancel $\eta/\sigma^2$, divide by 2",
             lambda mean, std, eta: std**2 / (1 - eta / (2 * std**2))),
        Step(r"\frac{\sigma^2}{1 - \varepsilon/(4\sigma^2)},\ \varepsilon = 2\eta",
             r"Song & Ermon's step $\varepsilon$: $x' = x + \tfrac{\varepsilon}{2}\nabla\log p + \sqrt{\varepsilon}\,\xi$ is this step with $\eta = \varepsilon/2$",
             lambda mean, std, eta: std**2 / (1 - (2 * eta) / (4 * std**2))),
    ],
)

E3_QUOTED_FORM_IN_THE_OTHER_CONVENTION = Derivation(
    claim="E3",
    title="σ²/(1 − η/(4σ²)) is not the variance of x' = x + η∇log p + √(2η)ξ",
    statement=r"\text{for } x' = x + \eta\nabla\log p + \sqrt{2\eta}\,\xi:\quad v_\infty \ne \frac{\sigma^2}{1 - \eta/(4\sigma^2)}",
    inputs=_target_and_step(1e-3, 1.99),
    examples=({"mean": 0.0, "std": 1.0, "eta": 1.0},),
    expect="refuted",
    steps=[
        Step(r"\frac{2\eta}{1 - (1 - \eta/\sigma^2)^2}",
             "fixed point of this step's variance recursion (previous derivation)",
             lambda mean, std, eta: 2 * eta / (1 - (1 - eta / std**2) ** 2)),
        Step(r"\frac{\sigma^2}{1 - \eta/(4\sigma^2)}", "the quoted formula with the step η of this convention",
             lambda mean, std, eta: std**2 / (1 - eta / (4 * std**2))),
    ],
)

E3_SMALL_STEP = Derivation(
    claim="E3",
    title="The stationary variance tends to σ² as η → 0, with bias η/2 + O(η²)",
    statement=r"v_\infty(\eta) = \sigma^2 + \frac{\eta/2}{1 - \eta/(2\sigma^2)} \xrightarrow[\eta\to0]{} \sigma^2",
    variables={"std": _log_uniform(0.5, 10.0)},
    schedule=geometric("eta", 0.1, 1e-13, 13, r"\eta \to 0"),
    steps=[
        Step(r"v_\infty(\eta)", "vfe.langevin.ula_stationary_variance", lambda std, eta: langevin.ula_stationary_variance(std, eta)),
        Step(r"\sigma^2 + \frac{\eta/2}{1 - \eta/(2\sigma^2)}",
             r"$\frac{\sigma^2}{1 - h} = \sigma^2 + \frac{\sigma^2 h}{1 - h}$ with $h = \eta/(2\sigma^2)$",
             lambda std, eta: Terms(std**2, (eta / 2) / (1 - eta / (2 * std**2)))),
        Step(r"\sigma^2", r"the bias $\frac{\eta/2}{1 - \eta/(2\sigma^2)} = \frac{\eta}{2} + O(\eta^2) \to 0$, at rate $\eta^1$",
             lambda std, eta: std**2 + 0 * eta, relation="->"),
    ],
)


def _v_of_eta(eta, std):
    return langevin.ula_stationary_variance(std, eta)


E3_BIAS = Derivation(
    claim="E3",
    title="First-order bias: ∂v∞/∂η = ½(1 − η/(2σ²))⁻², = ½ at η = 0",
    statement=r"\frac{\partial v_\infty}{\partial\eta} = \frac{1}{2(1 - \eta/(2\sigma^2))^2},\qquad "
              r"v_\infty = \sigma^2 + \frac{\eta}{2} + O(\eta^2)",
    kind="derivative",
    inputs=_target_and_step(0.0, 1.5, std_min=0.5).map(lambda d: {"std": d["std"], "eta": d["eta"]}),
    examples=({"std": 1.0, "eta": 0.0}, {"std": 3.0, "eta": 0.0}),
    steps=[
        Step(r"\frac{1}{2(1 - \eta/(2\sigma^2))^2}", r"derivative of $\sigma^2(1 - \eta/(2\sigma^2))^{-1}$ in $\eta$; $\tfrac12$ at $\eta = 0$",
             lambda std, eta: 0.5 / (1 - eta / (2 * std**2)) ** 2),
        Step(r"\partial_\eta v_\infty", "jax.grad in η of vfe.langevin.ula_stationary_variance", methods.grad(_v_of_eta, "eta")),
        Step(r"\Delta_h v_\infty", "central differences in η", methods.finite_difference(_v_of_eta, "eta"), tol=1e-7),
    ],
)


# ----------------------------------------------------------------------------- the law of the samples

CHAINS = 40_000
"""Independent ULA chains per example: the DKW band is then ``ε = dkw_tolerance(CHAINS) ≈ 0.0164``."""
STEPS = 16
"""ULA steps per chain, from the far start ``x_0 = μ + 5σ``."""
H_RANGE = (0.6, 1.4)
"""The step in units of the variance, ``η/σ²``: the contraction ``|a| = |1 − η/σ²| ≤ 0.4``."""
TRANSIENT = 1e-6
"""Bound on the distance between the CDFs of the ``STEPS``-step law and the stationary law:
the mean is off by ``5σ|a|^n ≤ 5σ·0.4^16 ≈ 2.1e-6σ`` (a CDF shift ``≤ φ(0)·2.1e-6 < 1e-6``, since
the standard deviation is ``≥ σ``), the variance by the factor ``1 − a^{2n} ≥ 1 − 2e-13``."""
_GRID = np.linspace(-4.0, 4.0, 161)  # where the CDFs are compared, in units of σ around μ


def _normal_cdf(x, mean, variance):
    return 0.5 * jax.scipy.special.erfc(-(x - mean) / jnp.sqrt(2.0 * variance))


def _grid(mean, std):
    return mean + std * jnp.asarray(_GRID)


def ula_samples(mean, std, eta, *, key_seed: int = 0):
    """``CHAINS`` states after ``STEPS`` ULA steps from ``μ + 5σ`` (vfe.langevin.ula_chain, rbg key)."""
    x0 = jnp.full((CHAINS,), mean + 5.0 * std)
    key = jax.random.key(key_seed, impl="rbg")
    return langevin.ula_chain(key, x0, langevin.gaussian_score, eta, STEPS, score_args=(mean, std))


def empirical_cdf_at(samples, points):
    """Fraction of ``samples`` that are ``<= x`` for each ``x`` of ``points``."""
    return jnp.searchsorted(jnp.sort(samples), points, side="right") / samples.size


E3_LAW = Derivation(
    claim="E3",
    title="ULA samples follow N(μ, σ²/(1 − η/(2σ²))), not N(μ, σ²)",
    statement=r"x_n \sim \mathcal N\Big(\mu, \frac{\sigma^2}{1 - \eta/(2\sigma^2)}\Big) \text{ up to } |1 - \eta/\sigma^2|^n,"
              r"\quad \eta/\sigma^2 \in [0.6, 1.4]",
    kind="distributional",
    inputs=_target_and_step(*H_RANGE, std_min=0.2, std_max=5.0),
    max_examples=10,
    steps=[
        Step(r"F_{\mathcal N(\mu, v_\infty)}(x)",
             r"CDF of the stationary law at $x = \mu + \sigma z$, $z \in [-4, 4]$ (161 points); v∞ = vfe.langevin.ula_stationary_variance",
             lambda mean, std, eta: _normal_cdf(_grid(mean, std), mean, langevin.ula_stationary_variance(std, eta))),
        Step(r"\hat F_n(x)",
             f"empirical CDF of {CHAINS} chains after {STEPS} steps of vfe.langevin.ula_chain from μ + 5σ: DKW band "
             r"$\varepsilon$ (false alarm $10^{-9}$) plus $10^{-6}$ for the transient (the $n$-step law is "
             r"$\mathcal N(\mu + 5\sigma a^n, v_\infty(1 - a^{2n}))$, $|a| = |1 - \eta/\sigma^2| \le 0.4$). Power: at "
             r"$\eta \ge 0.6\sigma^2$ the CDFs of $\mathcal N(\mu, v_\infty)$ and $\mathcal N(\mu, \sigma^2)$ differ by more than "
             r"$0.043 > 2\varepsilon$, so the band rejects $\sigma^2$",
             lambda mean, std, eta: empirical_cdf_at(ula_samples(mean, std, eta), _grid(mean, std)),
             tol=methods.dkw_tolerance(CHAINS) + TRANSIENT),
    ],
)
