"""Variational free energy (claims B1–B8 of ``CLAIMS.md``; seed 000)."""

from __future__ import annotations

import jax.numpy as jnp
import numpy as np
from hypothesis import strategies as st

import vfe
from vfe import testing as vt
from vfe.derivation import Derivation, Step, Terms

_SIZES = (2, 3, 5, 8, 16)


def _q_log_joint(pair):
    q, log_joint = pair
    return {"q": q, "log_joint": log_joint}


def _sum_q_times(q, x):
    """``Σ_θ q(θ) x(θ)`` with ``q(θ) = 0`` terms exactly 0 (even where ``x = ±inf``)."""
    return jnp.sum(jnp.where(q > 0, q * jnp.where(q > 0, x, 0.0), 0.0))


def _log_posterior(log_joint):
    """Bayes' rule written out: ``log p(θ|x) = log p(x,θ) - log Σ_θ' p(x,θ')``."""
    top = jnp.max(log_joint)
    return log_joint - (top + jnp.log(jnp.sum(jnp.exp(log_joint - top))))


def _log_evidence(log_joint):
    top = jnp.max(log_joint)
    return top + jnp.log(jnp.sum(jnp.exp(log_joint - top)))


B2 = Derivation(
    claim="B2",
    title="Free energy = KL to the posterior − log evidence",
    statement=(r"F(q) = \mathbb{E}_q[\log q(\theta)] - \mathbb{E}_q[\log p(x,\theta)]"
               r" = \mathrm{KL}(q\,\|\,p(\theta|x)) - \log p(x)"),
    inputs=vt.belief_and_log_joint(sizes=_SIZES, support="any").map(_q_log_joint),
    steps=[
        Step(r"F(q)", "vfe.free_energy", lambda q, log_joint: vfe.free_energy(jnp.log(q), log_joint)),
        Step(r"\sum_\theta q(\theta)\log q(\theta) - \sum_\theta q(\theta)\log p(x,\theta)",
             "definition, expectations written as sums over the support of q",
             lambda q, log_joint: Terms(_sum_q_times(q, jnp.log(q)), -_sum_q_times(q, log_joint))),
        Step(r"\sum_\theta q(\theta)\big[\log q(\theta) - \log p(\theta|x)\big] - \log p(x)\sum_\theta q(\theta)",
             r"Bayes: $\log p(x,\theta) = \log p(\theta|x) + \log p(x)$; linearity of the sum",
             lambda q, log_joint: Terms(_sum_q_times(q, jnp.log(q) - _log_posterior(log_joint)),
                                        -_log_evidence(log_joint) * jnp.sum(q))),
        Step(r"\mathrm{KL}(q\,\|\,p(\theta|x)) - \log p(x)",
             r"definition of KL; $\sum_\theta q(\theta) = 1$; vfe.kl_divergence, vfe.posterior, vfe.log_evidence",
             lambda q, log_joint: Terms(vfe.kl_divergence(q, vfe.posterior(log_joint)), -vfe.log_evidence(log_joint))),
    ],
)


@st.composite
def _belief_likelihood_prior(draw, *, prior_kind="any"):
    """``q``, ``p(x|θ)`` (values in [0, 1]) and ``p(θ)`` over one support of a bucketed size."""
    n = draw(st.sampled_from(_SIZES))
    row = lambda kind: draw(vt.probability_vectors(sizes=(n,), kind=kind))  # noqa: E731
    likelihood = row("any")
    return {"q": row("any"), "likelihood": likelihood / likelihood.max(), "prior": row(prior_kind)}


B2_ACCURACY_COMPLEXITY = Derivation(
    claim="B2",
    title="Free energy = −accuracy + complexity",
    statement=r"F(q) = -\mathbb{E}_q[\log p(x|\theta)] + \mathrm{KL}(q\,\|\,p(\theta))",
    inputs=_belief_likelihood_prior(),
    steps=[
        Step(r"F(q)", r"vfe.free_energy with $\log p(x,\theta) = \log p(x|\theta) + \log p(\theta)$",
             lambda q, likelihood, prior: vfe.free_energy(jnp.log(q), jnp.log(likelihood) + jnp.log(prior))),
        Step(r"\sum_\theta q\log q - \sum_\theta q\log p(x|\theta) - \sum_\theta q\log p(\theta)",
             r"definition of $F$; product rule $p(x,\theta) = p(x|\theta)p(\theta)$",
             lambda q, likelihood, prior: Terms(_sum_q_times(q, jnp.log(q)), -_sum_q_times(q, jnp.log(likelihood)),
                                                -_sum_q_times(q, jnp.log(prior)))),
        Step(r"-\sum_\theta q\log p(x|\theta) + \sum_\theta q\log\frac{q}{p(\theta)}",
             r"collect the terms in $q\log q$ and $q\log p(\theta)$",
             lambda q, likelihood, prior: Terms(-_sum_q_times(q, jnp.log(likelihood)),
                                                _sum_q_times(q, jnp.log(q) - jnp.log(prior)))),
        Step(r"-\mathbb{E}_q[\log p(x|\theta)] + \mathrm{KL}(q\,\|\,p(\theta))", "definition of KL; vfe.kl_divergence",
             lambda q, likelihood, prior: Terms(-_sum_q_times(q, jnp.log(likelihood)), vfe.kl_divergence(q, prior))),
    ],
)


# ----------------------------------------------------------------------------- B5: point mass


@st.composite
def _log_joint_and_index(draw):
    log_joint = draw(vt.log_joint_rows(sizes=_SIZES))
    return {"log_joint": log_joint, "theta_hat": draw(st.integers(0, log_joint.shape[-1] - 1))}


def _log_one_hot(index, n):
    return jnp.where(jnp.arange(n) == index, 0.0, -jnp.inf)


B5_POINT_MASS = Derivation(
    claim="B5",
    title="A point-mass belief has free energy −log p(x, θ̂) (discrete θ)",
    statement=r"F(\delta_{\hat\theta}) = -\log p(x,\hat\theta)",
    inputs=_log_joint_and_index(),
    steps=[
        Step(r"F(\delta_{\hat\theta})", r"vfe.free_energy with $\log q = \log\delta_{\hat\theta}$ ($0$ at $\hat\theta$, $-\infty$ elsewhere)",
             lambda log_joint, theta_hat: vfe.free_energy(_log_one_hot(theta_hat, log_joint.shape[-1]), log_joint)),
        Step(r"\underbrace{1\cdot\log 1}_{-H(\delta) = 0} - 1\cdot\log p(x,\hat\theta)",
             r"only $\theta = \hat\theta$ has $q(\theta) > 0$; $0 \log 0 = 0$ elsewhere",
             lambda log_joint, theta_hat: Terms(jnp.asarray(1.0) * jnp.log(1.0), -log_joint[theta_hat])),
        Step(r"-\log p(x,\hat\theta)", "the entropy of a point mass is 0; vfe.point_mass_free_energy",
             lambda log_joint, theta_hat: vfe.point_mass_free_energy(log_joint, theta_hat)),
    ],
)

B5_MAP = Derivation(
    claim="B5",
    title="The best point mass sits on the MAP estimate",
    statement=r"\min_{\hat\theta} F(\delta_{\hat\theta}) = F(\delta_{\theta_\mathrm{MAP}}),\quad"
              r" \theta_\mathrm{MAP} = \arg\max_\theta p(x,\theta) = \arg\max_\theta p(\theta|x)",
    inputs=vt.log_joint_rows(sizes=_SIZES).map(lambda log_joint: {"log_joint": log_joint}),
    steps=[
        Step(r"\min_{\hat\theta} F(\delta_{\hat\theta})", r"$F(\delta_{\hat\theta}) = -\log p(x,\hat\theta)$ for every $\hat\theta$ (above), then the minimum",
             lambda log_joint: jnp.min(-log_joint)),
        Step(r"-\max_\theta \log p(x,\theta)", r"$\min(-f) = -\max f$", lambda log_joint: -jnp.max(log_joint)),
        Step(r"-\log p(x,\theta_\mathrm{MAP})", r"$\theta_\mathrm{MAP}$ attains the maximum; vfe.map_estimate",
             lambda log_joint: vfe.point_mass_free_energy(log_joint, vfe.map_estimate(log_joint))),
    ],
)

B5_FLAT_PRIOR_MLE = Derivation(
    claim="B5",
    title="Under a flat prior the best point mass is the MLE",
    statement=r"p(\theta) = 1/n \implies F(\delta_{\theta_\mathrm{MLE}}) = \min_{\hat\theta} F(\delta_{\hat\theta})",
    inputs=_belief_likelihood_prior().map(lambda d: {"likelihood": d["likelihood"]}),
    steps=[
        Step(r"F(\delta_{\theta_\mathrm{MLE}})", "vfe.point_mass_free_energy at vfe.mle_estimate, flat prior",
             lambda likelihood: vfe.point_mass_free_energy(
                 jnp.log(likelihood) - jnp.log(likelihood.shape[-1]), vfe.mle_estimate(jnp.log(likelihood)))),
        Step(r"-\log p(x|\theta_\mathrm{MLE}) + \log n", r"product rule with $p(\theta) = 1/n$",
             lambda likelihood: Terms(-jnp.log(likelihood)[vfe.mle_estimate(jnp.log(likelihood))],
                                           jnp.log(likelihood.shape[-1]))),
        Step(r"-\max_\theta \log p(x|\theta) + \log n", "the MLE maximises the likelihood",
             lambda likelihood: Terms(-jnp.max(jnp.log(likelihood)), jnp.log(likelihood.shape[-1]))),
        Step(r"-\max_\theta \log p(x,\theta) = \min_{\hat\theta} F(\delta_{\hat\theta})",
             r"$\log n$ is constant in $\theta$, so it moves out of the max; the MAP step above",
             lambda likelihood: jnp.min(-(jnp.log(likelihood) - jnp.log(likelihood.shape[-1])))),
    ],
)

# The seed's wording: "the entropy term is 0; what remains is -log p(x, θ̂), which is MLE itself".
# With a non-flat prior the minimiser of -log p(x, θ̂) is the MAP estimate, not the MLE.
_MAP_NOT_MLE = {"q": np.array([0.5, 0.5]), "likelihood": np.array([1.0, 0.4 / 0.6]), "prior": np.array([0.2, 0.8])}

B5_SEED_MLE = Derivation(
    claim="B5",
    title="Seed: the point-mass free energy is minimised by the MLE (whatever the prior)",
    statement=r"F(\delta_{\theta_\mathrm{MLE}}) = \min_{\hat\theta} F(\delta_{\hat\theta})\ \text{for every prior}",
    inputs=_belief_likelihood_prior(prior_kind="dirichlet"),
    examples=[_MAP_NOT_MLE],
    expect="refuted",
    steps=[
        Step(r"F(\delta_{\theta_\mathrm{MLE}})", "vfe.point_mass_free_energy at vfe.mle_estimate",
             lambda likelihood, prior, **_: vfe.point_mass_free_energy(
                 jnp.log(likelihood) + jnp.log(prior), vfe.mle_estimate(jnp.log(likelihood)))),
        Step(r"\min_{\hat\theta} F(\delta_{\hat\theta})", "the seed's claim (true only for a flat prior)",
             lambda likelihood, prior, **_: jnp.min(-(jnp.log(likelihood) + jnp.log(prior)))),
    ],
)


# ----------------------------------------------------------------------------- B5: continuous θ

_GAUSSIAN_MODEL = st.fixed_dictionaries({
    "x": st.floats(-5, 5),
    "tau": st.floats(0.1, 10),      # prior θ ~ N(0, τ²)
    "s": st.floats(0.1, 10),        # likelihood x | θ ~ N(θ, s²)
    "theta_hat": st.floats(-5, 5),
    "sigma": st.floats(-12, 0).map(lambda e: 10.0 ** e),   # belief width, down to 1e-12
})


def _gaussian_log_joint(x, tau, s):
    def log_joint(theta):
        log_prior = -0.5 * jnp.log(2 * jnp.pi * tau**2) - theta**2 / (2 * tau**2)
        log_likelihood = -0.5 * jnp.log(2 * jnp.pi * s**2) - (x - theta) ** 2 / (2 * s**2)
        return log_prior + log_likelihood
    return log_joint


B5_GAUSSIAN = Derivation(
    claim="B5",
    title="Continuous θ: a Gaussian belief of width σ → 0 has F → +∞; its θ̂-part → −log p(x, θ̂)",
    statement=(r"F(\mathcal N(\hat\theta,\sigma^2)) = -\log p(x,\hat\theta) + \frac{\sigma^2}{2}"
               r"\Big(\frac{1}{\tau^2} + \frac{1}{s^2}\Big) - \tfrac12\log(2\pi e\sigma^2)"
               r"\ \xrightarrow{\sigma\to 0}\ +\infty"),
    inputs=_GAUSSIAN_MODEL,
    steps=[
        Step(r"F(\mathcal N(\hat\theta,\sigma^2))", "vfe.gaussian_free_energy (Gauss–Hermite, exact for a quadratic log p)",
             lambda x, tau, s, theta_hat, sigma: vfe.gaussian_free_energy(_gaussian_log_joint(x, tau, s), theta_hat, sigma)),
        Step(r"\tfrac12\log(2\pi\tau^2) + \frac{\mathbb{E}_q\theta^2}{2\tau^2} + \tfrac12\log(2\pi s^2)"
             r" + \frac{\mathbb{E}_q(x-\theta)^2}{2s^2} - \tfrac12\log(2\pi e\sigma^2)",
             r"$F = -\mathbb{E}_q\log p(\theta) - \mathbb{E}_q\log p(x|\theta) - H(q)$; Gaussian entropy;"
             r" $\mathbb{E}_q\theta^2 = \hat\theta^2 + \sigma^2$, $\mathbb{E}_q(x-\theta)^2 = (x-\hat\theta)^2 + \sigma^2$",
             lambda x, tau, s, theta_hat, sigma: Terms(
                 0.5 * jnp.log(2 * jnp.pi * tau**2), (theta_hat**2 + sigma**2) / (2 * tau**2),
                 0.5 * jnp.log(2 * jnp.pi * s**2), ((x - theta_hat) ** 2 + sigma**2) / (2 * s**2),
                 -0.5 * jnp.log(2 * jnp.pi * jnp.e * sigma**2))),
        Step(r"-\log p(x,\hat\theta) + \frac{\sigma^2}{2}\Big(\frac{1}{\tau^2} + \frac{1}{s^2}\Big)"
             r" - \tfrac12\log(2\pi e\sigma^2)",
             r"collect the $\sigma^2$ terms; the rest is $-\log p(x,\hat\theta)$; as $\sigma\to 0$ the middle term"
             r" $\to 0$ and the last $\to +\infty$",
             lambda x, tau, s, theta_hat, sigma: Terms(
                 -_gaussian_log_joint(x, tau, s)(theta_hat), sigma**2 / 2 * (1 / tau**2 + 1 / s**2),
                 -vfe.gaussian_entropy(sigma))),
    ],
)

B5_SEED_ENTROPY = Derivation(
    claim="B5",
    title="Seed: the entropy of a point-mass belief is 0 (continuous θ, as a narrow Gaussian)",
    statement=r"H(\mathcal N(\hat\theta,\sigma^2)) = 0\ \text{for small}\ \sigma",
    variables={"sigma": st.floats(-12, -3).map(lambda e: 10.0 ** e)},
    expect="refuted",
    steps=[
        Step(r"H(\mathcal N(\hat\theta,\sigma^2)) = \tfrac12\log(2\pi e\sigma^2)", "vfe.gaussian_entropy",
             lambda sigma: vfe.gaussian_entropy(sigma)),
        Step(r"0", r"the seed's claim; false: the entropy of a density tends to $-\infty$, not 0",
             lambda sigma: jnp.zeros_like(sigma)),
    ],
)
