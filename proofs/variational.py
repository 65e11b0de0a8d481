"""Variational free energy (claims B1–B8 of ``CLAIMS.md``; seed 000)."""

from __future__ import annotations

import jax
import jax.numpy as jnp
import numpy as np
from hypothesis import strategies as st

import vfe
from proofs.catalogue import Claim
from vfe import methods
from vfe import mixture as vm
from vfe import testing as vt
from vfe.derivation import Derivation, Step, Terms, geometric

CLAIMS = (
    Claim(
        id="B1", title="The generative model, ancestral sampling and Bayes' rule", seeds=("000",),
        wording="「p(x,\\theta) = p(x\\mid \\theta)\\,p(\\theta)」, 「まず  $\\theta$  をサンプルし」「次に  $x$  をサンプルする」 "
                "(\"p(x,θ) = p(x|θ) p(θ)\"; \"first sample θ, then sample x\")",
        statement=r"$p(x,\theta) = p(x|\theta)\,p(\theta) = p(\theta|x)\,p(x)$ with $p(\theta) = \sum_x p(x,\theta)$, "
                  r"$p(x) = \sum_\theta p(x,\theta)$; drawing $\theta \sim p(\theta)$ and then $x \sim p(x|\theta)$ "
                  r"draws $(x,\theta) \sim p(x,\theta)$; Bayes' rule $p(\theta|x) = p(x,\theta)/p(x)$",
        functions=("vfe.posterior", "vfe.log_evidence", "vfe.testing.joint_tables"),
    ),
    Claim(
        id="B2", title="Free energy = KL to the posterior − log evidence", seeds=("000",),
        wording="「\\mathcal{F}(q) = \\mathbb{E}_q[\\log q(\\theta)] - \\mathbb{E}_q[\\log p(x,\\theta)]」 "
                "(the definition of the variational free energy)",
        statement=r"$F(q) = \mathbb{E}_q[\log q] - \mathbb{E}_q[\log p(x,\theta)] = \mathrm{KL}(q\,\|\,p(\theta|x)) - \log p(x)"
                  r" = -\mathbb{E}_q[\log p(x|\theta)] + \mathrm{KL}(q\,\|\,p(\theta))$ (accuracy and complexity), "
                  r"with $0\log 0 = 0$ and $F = +\infty$ when $q > 0$ where $p(x,\theta) = 0$",
        functions=("vfe.free_energy", "vfe.kl_divergence", "vfe.posterior", "vfe.log_evidence"),
    ),
    Claim(
        id="B3", title="The free energy bounds the surprise: ELBO ≤ log evidence", seeds=("000",),
        wording="paraphrase: implicit in the seed's definition of $F(q)$ and its reading that minimising it means "
                "「驚き（ $-\\log p(x)$ ）を下げる」 (\"lowering the surprise −log p(x)\")",
        statement=r"$F(q) \ge -\log p(x)$, i.e. $\mathrm{ELBO}(q) = -F(q) \le \log p(x)$, for every belief $q$, with "
                  r"equality iff $q = p(\theta|x)$; quantitatively $F(q) + \log p(x) = \mathrm{KL}(q\,\|\,p(\theta|x))"
                  r" \ge \tfrac12\|q - p(\theta|x)\|_1^2$ (Pinsker)",
        functions=("vfe.free_energy", "vfe.elbo", "vfe.kl_divergence", "vfe.posterior", "vfe.log_evidence"),
    ),
    Claim(
        id="B4", title="The free energy is minimised by the exact posterior, at minus the log evidence", seeds=("000",),
        wording="「q^* = \\arg\\min_q \\mathrm{KL}(q(\\theta)\\,\\|\\,p(\\theta\\mid x))」 (the optimal belief "
                "minimises the KL divergence to the posterior)",
        statement=r"$\arg\min_q F(q) = \arg\min_q \mathrm{KL}(q\,\|\,p(\theta|x)) = p(\theta|x)$ and "
                  r"$\min_q F(q) = -\log p(x)$, the surprise",
        functions=("vfe.free_energy", "vfe.posterior", "vfe.log_posterior", "vfe.log_evidence"),
    ),
    Claim(
        id="B5", title="A point-mass belief gives the MAP estimate, not the MLE", seeds=("000",),
        wording="「q(\\theta) = \\delta(\\theta-\\hat{\\theta})」, 「\\mathbb{E}_q[\\log q(\\theta)] = 0」, then "
                "「これは **最尤推定そのもの**です。」 (\"with a point mass the entropy term is 0; what remains, "
                "−log p(x, θ̂), is maximum-likelihood estimation itself\")",
        statement=r"Discrete $\theta$: $F(\delta_{\hat\theta}) = -\log p(x,\hat\theta)$, minimised by the MAP estimate "
                  r"$\arg\max_\theta p(\theta|x)$, which is the MLE only under a flat prior. Continuous $\theta$: a "
                  r"Dirac has no density; $F(\mathcal N(\hat\theta,\sigma^2)) = -\log p(x,\hat\theta) + O(\sigma^2)"
                  r" - \tfrac12\log(2\pi e\sigma^2) \to +\infty$ as $\sigma \to 0$",
        verdict="loose: the minimiser of −log p(x, θ̂) is the MAP estimate, equal to the MLE only under a flat "
                "prior (counterexample prior (0.2, 0.8), likelihood (0.6, 0.4)); for continuous θ the entropy of "
                "a narrowing Gaussian tends to −∞, not 0, so F → +∞",
        functions=("vfe.point_mass_free_energy", "vfe.map_estimate", "vfe.mle_estimate", "vfe.gaussian_entropy",
                   "vfe.gaussian_free_energy"),
    ),
    Claim(
        id="B6", title="The β-weighted free energy is minimised by the Boltzmann distribution; β = 1 is the VFE",
        seeds=("000",),
        wording="「\\mathcal{F}_\\beta(q) = \\mathbb{E}_q[E] - \\beta^{-1} H(q)」 (the free energy with inverse "
                "temperature β)",
        statement=r"$F_\beta(q) = \mathbb{E}_q[E] - \beta^{-1}H(q) = \beta^{-1}\mathrm{KL}(q\,\|\,q_\beta) - \beta^{-1}\log Z(\beta)"
                  r" \ge -\beta^{-1}\log Z(\beta)$ with $q_\beta = e^{-\beta E}/Z(\beta)$ the unique minimiser; with "
                  r"$E(\theta) = -\log p(x,\theta)$ and $\beta = 1$: $F_1 = F$ (the VFE), $q_1 = p(\theta|x)$ and "
                  r"$\min F_1 = -\log Z(1) = -\log p(x)$: the evidence is the partition function",
        functions=("vfe.gibbs_free_energy", "vfe.boltzmann", "vfe.log_partition", "vfe.helmholtz_free_energy",
                   "vfe.free_energy", "vfe.posterior", "vfe.log_evidence"),
    ),
    Claim(
        id="B7", title="β → ∞ concentrates the belief on the MAP; β → 0 makes it uniform", seeds=("000",),
        wording="「事後は鋭く、MAPに近づく」 (β ↑: \"the posterior sharpens and approaches the MAP\"); "
                "「エントロピー優先、探索的」 (β ↓: \"entropy first, exploratory\")",
        statement=r"As $\beta\to\infty$, $q_\beta \to$ the uniform distribution on $\arg\min E$ (a point mass on the "
                  r"MAP estimate when it is unique) and $-\beta^{-1}\log Z(\beta) \to \min E = -\log p(x,\theta_\mathrm{MAP})$; "
                  r"as $\beta\to 0$, $q_\beta \to$ the uniform distribution on the states of finite energy",
        verdict="correct; ties in the minimum share the mass uniformly",
        functions=("vfe.boltzmann", "vfe.helmholtz_free_energy", "vfe.map_estimate", "vfe.point_mass_free_energy"),
    ),
    Claim(
        id="B8", title="Learning vs inference: EM never increases the free energy", seeds=("000",),
        wording="「生成モデルを固定したまま、観測を最もよく説明する信念分布を探す」のが変分推論であり、"
                "「生成モデルそのもののパラメータを改善する」のが学習 (\"searching for the belief that best explains "
                "the observations with the generative model fixed is variational inference; improving the parameters "
                "of the generative model itself is learning\")",
        statement=r"Alternating the inference step $q_{t+1} = p(z|x,\theta_t)$ and the learning step "
                  r"$\theta_{t+1} = \arg\min_\theta F(q_{t+1},\theta)$ (EM) gives $F(q_{t+1},\theta_{t+1}) \le F(q_{t+1},\theta_t)"
                  r" = -\log p(x|\theta_t) \le F(q_t,\theta_t) \le F(q_t,\theta_{t-1})$: $F$ never increases and never "
                  r"falls below $-\log p(x|\theta)$ (equality right after each E-step); checked on 1-D Gaussian mixtures",
        functions=("vfe.mixture.em", "vfe.mixture.responsibilities", "vfe.mixture.m_step",
                   "vfe.mixture.mixture_free_energy", "vfe.mixture.mixture_log_likelihood"),
    ),
)

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


# ----------------------------------------------------------------------------- B1: the generative model

_JOINT = vt.joint_tables(n_x_sizes=(2, 5), n_theta_sizes=(3, 8)).map(lambda joint: {"joint": joint})
_JOINT_ONE_SHAPE = vt.joint_tables(n_x_sizes=(3,), n_theta_sizes=(5,)).map(lambda joint: {"joint": joint})


def _prior(joint):
    """``p(θ) = Σ_x p(x, θ)``: the column sums of the table."""
    return jnp.sum(joint, axis=0)


def _likelihood(joint):
    """``p(x|θ) = p(x, θ) / p(θ)``, columns of the table rescaled (0 where ``p(θ) = 0``)."""
    prior = _prior(joint)
    return jnp.where(prior > 0, joint / jnp.where(prior > 0, prior, 1.0), 0.0)


def _log(p):
    return jnp.log(p)


B1_PRODUCT = Derivation(
    claim="B1",
    title="The joint factorises both ways: prior × likelihood and posterior × evidence",
    statement=r"p(x,\theta) = p(x|\theta)\,p(\theta) = p(\theta|x)\,p(x)",
    inputs=_JOINT,
    steps=[
        Step(r"p(x,\theta)", "the joint table (vfe.testing.joint_tables)", lambda joint: joint),
        Step(r"p(x|\theta)\,p(\theta)",
             r"product rule, with the marginal $p(\theta) = \sum_x p(x,\theta)$ and $p(x|\theta) = p(x,\theta)/p(\theta)$",
             lambda joint: _likelihood(joint) * _prior(joint)[None, :]),
        Step(r"p(\theta|x)\,p(x)",
             r"the same product rule with the roles of $x$ and $\theta$ exchanged; vfe.posterior, vfe.log_evidence",
             lambda joint: vfe.posterior(_log(joint)) * jnp.exp(vfe.log_evidence(_log(joint)))[:, None]),
    ],
)

B1_BAYES = Derivation(
    claim="B1",
    title="Bayes' rule: posterior = joint / evidence",
    statement=r"p(\theta|x) = \frac{p(x,\theta)}{p(x)} = \frac{p(x|\theta)\,p(\theta)}{\sum_{\theta'} p(x|\theta')\,p(\theta')}",
    inputs=_JOINT,
    steps=[
        Step(r"p(\theta|x)", "vfe.posterior, row by row of the table", lambda joint: vfe.posterior(_log(joint))),
        Step(r"\frac{p(x,\theta)}{p(x)}", r"definition of the conditional, with $\log p(x)$ from vfe.log_evidence",
             lambda joint: jnp.exp(_log(joint) - vfe.log_evidence(_log(joint))[:, None])),
        Step(r"\frac{p(x|\theta)\,p(\theta)}{\sum_{\theta'} p(x|\theta')\,p(\theta')}",
             r"product rule in the numerator; $p(x) = \sum_{\theta'} p(x,\theta')$ (sum rule), product rule in each term",
             lambda joint: (_likelihood(joint) * _prior(joint)) / jnp.sum(_likelihood(joint) * _prior(joint),
                                                                         axis=1, keepdims=True)),
    ],
)

ANCESTRAL_SAMPLES = 100_000


def _ancestral_sampler(key, joint):
    """Draw ``θ ~ p(θ)``, then ``x ~ p(x|θ)``; return the flat index ``x · n_θ + θ`` (C order)."""
    k_theta, k_x = jax.random.split(key)
    theta = jax.random.categorical(k_theta, jnp.log(_prior(joint)), shape=(ANCESTRAL_SAMPLES,))
    x = jax.random.categorical(k_x, jnp.log(_likelihood(joint)).T[theta])
    return x * joint.shape[1] + theta


def ancestral_sampling(sampler=_ancestral_sampler) -> Derivation:
    """B1's distributional check, with the sampler as a parameter (tests plant wrong ones)."""
    return Derivation(
        claim="B1",
        title="Ancestral sampling (θ first, then x) draws from the joint",
        statement=r"\theta \sim p(\theta),\ x \sim p(x|\theta) \implies (x,\theta) \sim p(x,\theta)",
        kind="distributional",
        inputs=_JOINT_ONE_SHAPE,
        max_examples=30,
        steps=[
            Step(r"F_{p(x,\theta)}", "CDF of the joint table, flattened in C order (methods.cdf)",
                 lambda joint: methods.cdf(joint)),
            Step(r"\hat F_n", f"empirical CDF of {ANCESTRAL_SAMPLES} ancestral samples, fixed key (methods.empirical_cdf);"
                              " tolerance: the DKW bound",
                 lambda joint: methods.empirical_cdf(sampler(jax.random.key(0, impl="rbg"), joint), joint.size),
                 tol=methods.dkw_tolerance(ANCESTRAL_SAMPLES)),
        ],
    )


B1_ANCESTRAL = ancestral_sampling()

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
    row = lambda kind: draw(vt.probability_vectors(sizes=(n,), kind=kind))
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


# ----------------------------------------------------------------------------- B3: the bound

B3 = Derivation(
    claim="B3",
    title="The ELBO is a lower bound on the log evidence",
    statement=r"\mathrm{ELBO}(q) = -F(q) = \log p(x) - \mathrm{KL}(q\,\|\,p(\theta|x)) \le \log p(x)",
    inputs=vt.belief_and_log_joint(sizes=_SIZES, support="any").map(_q_log_joint),
    steps=[
        Step(r"\mathrm{ELBO}(q)", "vfe.elbo", lambda q, log_joint: vfe.elbo(jnp.log(q), log_joint)),
        Step(r"\log p(x) - \mathrm{KL}(q\,\|\,p(\theta|x))",
             r"$\mathrm{ELBO} = -F$ and B2; vfe.log_evidence, vfe.kl_divergence, vfe.posterior",
             lambda q, log_joint: Terms(vfe.log_evidence(log_joint), -vfe.kl_divergence(q, vfe.posterior(log_joint)))),
        Step(r"\log p(x)", r"Gibbs' inequality $\mathrm{KL} \ge 0$; vfe.log_evidence",
             lambda q, log_joint: vfe.log_evidence(log_joint), relation="<="),
    ],
)

B3_TIGHT = Derivation(
    claim="B3",
    title="The bound is attained at the posterior",
    statement=r"F(p(\theta|x)) = -\log p(x)",
    inputs=vt.log_joint_rows(sizes=_SIZES).map(lambda log_joint: {"log_joint": log_joint}),
    steps=[
        Step(r"F(p(\theta|x))", "vfe.free_energy at vfe.log_posterior",
             lambda log_joint: vfe.free_energy(vfe.log_posterior(log_joint), log_joint)),
        Step(r"\sum_\theta p(\theta|x)\big[\log p(\theta|x) - \log p(x,\theta)\big]",
             r"definition of $F$, the posterior written out by Bayes' rule",
             lambda log_joint: _sum_q_times(jnp.exp(_log_posterior(log_joint)),
                                            _log_posterior(log_joint) - log_joint)),
        Step(r"-\log p(x)\sum_\theta p(\theta|x)", r"Bayes: $\log p(\theta|x) - \log p(x,\theta) = -\log p(x)$ for every $\theta$",
             lambda log_joint: -_log_evidence(log_joint) * jnp.sum(jnp.exp(_log_posterior(log_joint)))),
        Step(r"-\log p(x)", r"the posterior sums to 1; vfe.log_evidence", lambda log_joint: -vfe.log_evidence(log_joint)),
    ],
)

B3_ONLY_AT_THE_POSTERIOR = Derivation(
    claim="B3",
    title="The bound is attained only at the posterior (Pinsker)",
    statement=r"F(q) + \log p(x) = \mathrm{KL}(q\,\|\,p(\theta|x)) \ge \tfrac12\,\|q - p(\theta|x)\|_1^2 \ge 0",
    inputs=vt.belief_and_log_joint(sizes=_SIZES, support="any").map(_q_log_joint),
    steps=[
        Step(r"F(q) + \log p(x)", "vfe.free_energy, vfe.log_evidence",
             lambda q, log_joint: Terms(vfe.free_energy(jnp.log(q), log_joint), vfe.log_evidence(log_joint))),
        Step(r"\mathrm{KL}(q\,\|\,p(\theta|x))", "B2; vfe.kl_divergence, vfe.posterior",
             lambda q, log_joint: vfe.kl_divergence(q, vfe.posterior(log_joint))),
        Step(r"\tfrac12\,\|q - p(\theta|x)\|_1^2", "Pinsker's inequality",
             lambda q, log_joint: 0.5 * jnp.sum(jnp.abs(q - vfe.posterior(log_joint))) ** 2, relation=">="),
        Step(r"0", r"a square; it is $0$ only if $q = p(\theta|x)$, so $F(q) = -\log p(x)$ forces $q = p(\theta|x)$",
             lambda q, log_joint: jnp.zeros(()), relation=">="),
    ],
)


# ----------------------------------------------------------------------------- B4: the variational principle

_VARIATIONAL_SIZE = 5  # one shape bucket: every compilation of an optimiser costs seconds


def _masked(logits, allowed):
    """Logits restricted to the allowed states (``-inf`` elsewhere): a belief with ``F < ∞``."""
    return jnp.where(allowed, logits, -jnp.inf)


def _vfe_objective(logits, log_joint):
    return vfe.free_energy(jax.nn.log_softmax(_masked(logits, jnp.isfinite(log_joint))), log_joint)


VFE_MINIMISATION = methods.Minimisation(
    _vfe_objective,
    init=lambda key, log_joint: 3.0 * jax.random.normal(key, log_joint.shape),
    point=lambda logits, log_joint: jax.nn.softmax(_masked(logits, jnp.isfinite(log_joint))),
    starts=4, iterations=100,
)
"""``min_q F(q)`` over softmax-parametrised beliefs on the support of ``p(x, θ)`` (optax L-BFGS)."""

_LOG_JOINT_5 = vt.log_joint_rows(sizes=(_VARIATIONAL_SIZE,), min_log_evidence=-100.0).map(
    lambda log_joint: {"log_joint": log_joint})

B4_MINIMUM = Derivation(
    claim="B4",
    title="The minimum of the free energy is the surprise −log p(x)",
    statement=r"\min_q F(q) = F(p(\theta|x)) = -\log p(x)",
    kind="variational",
    inputs=_LOG_JOINT_5,
    max_examples=30,
    steps=[
        Step(r"-\log p(x)", "vfe.log_evidence", lambda log_joint: -vfe.log_evidence(log_joint)),
        Step(r"F(p(\theta|x))", "the objective at the claimed minimiser (B3: the bound is attained there);"
                                " vfe.free_energy, vfe.log_posterior",
             lambda log_joint: vfe.free_energy(vfe.log_posterior(log_joint), log_joint)),
        Step(r"\min_q F(q)", r"optax L-BFGS over $q = \mathrm{softmax}(\ell)$ from 4 random starts",
             lambda log_joint: VFE_MINIMISATION.minimum(log_joint=log_joint), tol=1e-9),
    ],
)

B4_MINIMISER = Derivation(
    claim="B4",
    title="The minimiser of the free energy is the exact posterior",
    statement=r"\arg\min_q F(q) = \arg\min_q \mathrm{KL}(q\,\|\,p(\theta|x)) = p(\theta|x)",
    kind="variational",
    inputs=_LOG_JOINT_5,
    max_examples=30,
    steps=[
        Step(r"p(\theta|x)", "vfe.posterior", lambda log_joint: vfe.posterior(log_joint)),
        Step(r"e^{\log p(x,\theta) - \log p(x)}", r"Bayes' rule, $\log p(x) = \log\sum_\theta p(x,\theta)$ written out",
             lambda log_joint: jnp.exp(_log_posterior(log_joint))),
        Step(r"\arg\min_q F(q)", r"optax L-BFGS over $q = \mathrm{softmax}(\ell)$ from 4 random starts"
                                 r" ($F = \mathrm{KL}(q\,\|\,p(\theta|x)) - \log p(x)$ by B2: the same minimiser)",
             lambda log_joint: VFE_MINIMISATION.argmin(log_joint=log_joint), tol=1e-6),
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


# ----------------------------------------------------------------------------- B6: the β-weighted free energy

@st.composite
def _q_energy_beta(draw, sizes=(2, 5, 16), scale=1e4, betas=(1e-3, 1e3)):
    """A belief ``q``, energies ``E = -z`` (``+inf`` for forbidden states) and ``β``, on one support."""
    n = draw(st.sampled_from(sizes))
    return {"q": draw(vt.probability_vectors(sizes=(n,))),
            "E": -draw(vt.logits(sizes=(n,), min_value=-scale, max_value=scale)),
            "beta": draw(vt.temperatures(min_value=betas[0], max_value=betas[1]))}


def _centred_exponent(E, beta):
    """``-β(E - min E)``, ``-inf`` for forbidden states (``E = +inf``)."""
    return jnp.where(jnp.isposinf(E), -jnp.inf, -beta * (E - jnp.min(E)))


def _log_z(E, beta):
    """``log Z(β) = -β min E + log Σ_θ e^{-β(E(θ) - min E)}`` written out."""
    return -beta * jnp.min(E) + jnp.log(jnp.sum(jnp.exp(_centred_exponent(E, beta))))


def _log_boltzmann(E, beta):
    """``log q_β = -βE - log Z(β)`` written out (log-sum-exp about ``min E``)."""
    s = _centred_exponent(E, beta)
    return s - jnp.log(jnp.sum(jnp.exp(s)))


B6 = Derivation(
    claim="B6",
    title="The β-weighted free energy is β⁻¹ KL to the Boltzmann distribution minus β⁻¹ log Z",
    statement=(r"F_\beta(q) = \mathbb{E}_q[E] - \beta^{-1}H(q) = \beta^{-1}\mathrm{KL}(q\,\|\,q_\beta) - \beta^{-1}\log Z(\beta)"
               r" \ge -\beta^{-1}\log Z(\beta),\quad q_\beta = e^{-\beta E}/Z(\beta)"),
    inputs=_q_energy_beta(),
    steps=[
        Step(r"F_\beta(q)", r"vfe.gibbs_free_energy at $T = 1/\beta$", lambda q, E, beta: vfe.gibbs_free_energy(q, E, 1 / beta)),
        Step(r"\sum_\theta q(\theta)E(\theta) + \beta^{-1}\sum_\theta q(\theta)\log q(\theta)",
             r"definition, $H(q) = -\sum_\theta q\log q$ (with $0\log 0 = 0$)",
             lambda q, E, beta: Terms(_sum_q_times(q, E), _sum_q_times(q, jnp.log(q)) / beta)),
        Step(r"\beta^{-1}\sum_\theta q(\theta)\big[\log q(\theta) - \log q_\beta(\theta)\big] - \beta^{-1}\log Z(\beta)",
             r"substitute $E = -\beta^{-1}\big(\log q_\beta + \log Z(\beta)\big)$; $\sum_\theta q = 1$",
             lambda q, E, beta: Terms(_sum_q_times(q, jnp.log(q) - _log_boltzmann(E, beta)) / beta,
                                      -_log_z(E, beta) / beta)),
        Step(r"\beta^{-1}\mathrm{KL}(q\,\|\,q_\beta) - \beta^{-1}\log Z(\beta)",
             "definition of KL; vfe.kl_divergence_from_logits, vfe.log_partition",
             lambda q, E, beta: Terms(vfe.kl_divergence_from_logits(jnp.log(q), -beta * E) / beta,
                                      -vfe.log_partition(E, beta) / beta)),
        Step(r"-\beta^{-1}\log Z(\beta)",
             r"Gibbs' inequality $\mathrm{KL} \ge 0$, with equality iff $q = q_\beta$; vfe.helmholtz_free_energy",
             lambda q, E, beta: vfe.helmholtz_free_energy(E, 1 / beta), relation=">="),
    ],
)


def _gibbs_objective(logits, E, beta):
    return vfe.gibbs_free_energy(jax.nn.softmax(_masked(logits, jnp.isfinite(E))), E, 1 / beta)


GIBBS_MINIMISATION = methods.Minimisation(
    _gibbs_objective,
    init=lambda key, E, beta: 3.0 * jax.random.normal(key, E.shape),
    point=lambda logits, E, beta: jax.nn.softmax(_masked(logits, jnp.isfinite(E))),
    starts=4, iterations=100,
)
"""``min_q F_β(q)`` over softmax-parametrised beliefs on the finite-energy states (optax L-BFGS)."""

_ENERGY_BETA_5 = st.fixed_dictionaries({
    "E": vt.logits(sizes=(_VARIATIONAL_SIZE,), min_value=-30.0, max_value=30.0).map(lambda z: -z),
    "beta": vt.temperatures(min_value=0.1, max_value=10.0),
})

B6_MINIMUM = Derivation(
    claim="B6",
    title="min F_β = −β⁻¹ log Z(β), attained at q_β",
    statement=r"\min_q F_\beta(q) = F_\beta(q_\beta) = -\beta^{-1}\log Z(\beta)",
    kind="variational",
    inputs=_ENERGY_BETA_5,
    max_examples=30,
    steps=[
        Step(r"-\beta^{-1}\log Z(\beta)", r"vfe.helmholtz_free_energy at $T = 1/\beta$",
             lambda E, beta: vfe.helmholtz_free_energy(E, 1 / beta)),
        Step(r"F_\beta(q_\beta)", "the objective at the claimed minimiser (KL = 0 above); vfe.gibbs_free_energy, vfe.boltzmann",
             lambda E, beta: vfe.gibbs_free_energy(vfe.boltzmann(E, beta), E, 1 / beta)),
        Step(r"\min_q F_\beta(q)", r"optax L-BFGS over $q = \mathrm{softmax}(\ell)$ from 4 random starts",
             lambda E, beta: GIBBS_MINIMISATION.minimum(E=E, beta=beta), tol=1e-9),
    ],
)

B6_MINIMISER = Derivation(
    claim="B6",
    title="The minimiser of F_β is the Boltzmann distribution q_β ∝ e^{−βE}",
    statement=r"\arg\min_q F_\beta(q) = q_\beta = e^{-\beta E}/Z(\beta)",
    kind="variational",
    inputs=_ENERGY_BETA_5,
    max_examples=30,
    steps=[
        Step(r"q_\beta", "vfe.boltzmann", lambda E, beta: vfe.boltzmann(E, beta)),
        Step(r"\frac{e^{-\beta(E - E_{\min})}}{\sum_\theta e^{-\beta(E(\theta) - E_{\min})}}",
             r"definition, numerator and denominator multiplied by $e^{\beta E_{\min}}$",
             lambda E, beta: jnp.exp(_log_boltzmann(E, beta))),
        Step(r"\arg\min_q F_\beta(q)", r"optax L-BFGS over $q = \mathrm{softmax}(\ell)$ from 4 random starts",
             lambda E, beta: GIBBS_MINIMISATION.argmin(E=E, beta=beta), tol=1e-6),
    ],
)

_LOG_JOINT_ROWS = vt.log_joint_rows(sizes=_SIZES).map(lambda log_joint: {"log_joint": log_joint})

B6_VFE = Derivation(
    claim="B6",
    title="With E = −log p(x, θ) and β = 1, F_β is the variational free energy",
    statement=r"F_1(q)\big|_{E = -\log p(x,\theta)} = \mathbb{E}_q[-\log p(x,\theta)] - H(q) = F(q)",
    inputs=vt.belief_and_log_joint(sizes=_SIZES, support="any").map(_q_log_joint),
    steps=[
        Step(r"F_1(q)", r"vfe.gibbs_free_energy with $E = -\log p(x,\theta)$, $T = 1$",
             lambda q, log_joint: vfe.gibbs_free_energy(q, -log_joint, 1.0)),
        Step(r"-\sum_\theta q\log p(x,\theta) + \sum_\theta q\log q", r"definition of $F_\beta$ at $\beta = 1$",
             lambda q, log_joint: Terms(-_sum_q_times(q, log_joint), _sum_q_times(q, jnp.log(q)))),
        Step(r"F(q)", "definition of the variational free energy (B2); vfe.free_energy",
             lambda q, log_joint: vfe.free_energy(jnp.log(q), log_joint)),
    ],
)

B6_POSTERIOR = Derivation(
    claim="B6",
    title="At β = 1 the Boltzmann distribution of E = −log p(x, θ) is the posterior",
    statement=r"q_1 = \frac{e^{\log p(x,\theta)}}{\sum_{\theta'} e^{\log p(x,\theta')}} = p(\theta|x)",
    inputs=_LOG_JOINT_ROWS,
    steps=[
        Step(r"q_1", r"vfe.boltzmann with $E = -\log p(x,\theta)$, $\beta = 1$",
             lambda log_joint: vfe.boltzmann(-log_joint, 1.0)),
        Step(r"\frac{p(x,\theta)}{\sum_{\theta'} p(x,\theta')}", r"$e^{-E} = p(x,\theta)$, written out",
             lambda log_joint: jnp.exp(_log_boltzmann(-log_joint, 1.0))),
        Step(r"p(\theta|x)", "Bayes' rule (B1); vfe.posterior", lambda log_joint: vfe.posterior(log_joint)),
    ],
)

B6_EVIDENCE = Derivation(
    claim="B6",
    title="At β = 1 the partition function is the evidence: min F_1 = −log p(x)",
    statement=r"\min_q F_1(q) = -\log Z(1) = -\log\sum_\theta p(x,\theta) = -\log p(x)",
    inputs=_LOG_JOINT_ROWS,
    steps=[
        Step(r"\min_q F_1(q) = -T\log Z\big|_{T = 1}", r"B6 above; vfe.helmholtz_free_energy with $E = -\log p(x,\theta)$",
             lambda log_joint: vfe.helmholtz_free_energy(-log_joint, 1.0)),
        Step(r"-\log Z(1)", "vfe.log_partition", lambda log_joint: -vfe.log_partition(-log_joint, 1.0)),
        Step(r"-\log\sum_\theta e^{\log p(x,\theta)}", r"definition of $Z$ with $e^{-E} = p(x,\theta)$, written out",
             lambda log_joint: -_log_evidence(log_joint)),
        Step(r"-\log p(x)", "sum rule; vfe.log_evidence", lambda log_joint: -vfe.log_evidence(log_joint)),
    ],
)


# ----------------------------------------------------------------------------- B7: the limits of β


@st.composite
def _level_energies(draw, sizes=(2, 5, 16)):
    """Energies ``E = c + s·k`` on integer levels ``k ∈ {0..4}`` (ties common), ``c ∈ [0, 1000]``, gap
    ``s ∈ [0.1, 100]``, some states forbidden (``+inf``, never all); ``-E`` is a valid ``log p(x, θ)``."""
    n = draw(st.sampled_from(sizes))
    levels = np.array(draw(st.lists(st.integers(0, 4), min_size=n, max_size=n)), dtype=np.float64)
    forbidden = np.array(draw(st.lists(st.booleans(), min_size=n, max_size=n)))
    forbidden[draw(st.integers(0, n - 1))] = False
    energy = draw(st.floats(0.0, 1000.0)) + draw(st.floats(0.1, 100.0)) * levels
    return {"E": np.where(forbidden, np.inf, energy)}


def _argmin_set(E):
    """The uniform distribution on ``argmin E``."""
    lowest = E == jnp.min(E)
    return lowest / jnp.sum(lowest)


_COLD = geometric("beta", 1.0, 1e12, 13, r"\beta \to \infty")
_HOT = geometric("beta", 1.0, 1e-15, 16, r"\beta \to 0")

B7_COLD = Derivation(
    claim="B7",
    title="β → ∞: q_β concentrates on argmin E (ties share the mass)",
    statement=r"q_\beta \xrightarrow{\beta\to\infty} \frac{\mathbb 1[E = E_{\min}]}{|\arg\min E|}",
    inputs=_level_energies(),
    schedule=_COLD,
    steps=[
        Step(r"q_\beta", "vfe.boltzmann", lambda E, beta: vfe.boltzmann(E, beta)),
        Step(r"\frac{e^{-\beta(E - E_{\min})}}{\sum_\theta e^{-\beta(E(\theta) - E_{\min})}}",
             r"multiply numerator and denominator by $e^{\beta E_{\min}}$", lambda E, beta: jnp.exp(_log_boltzmann(E, beta))),
        Step(r"\frac{\mathbb 1[E = E_{\min}]}{|\arg\min E|}",
             r"$e^{-\beta(E - E_{\min})} \to 0$ where $E > E_{\min}$ and $= 1$ on $\arg\min E$",
             lambda E, beta: _argmin_set(E), relation="->"),
    ],
)

B7_COLD_MAP = Derivation(
    claim="B7",
    title="β → ∞ with E = −log p(x, θ): min F_β → −log p(x, θ_MAP)",
    statement=(r"-\beta^{-1}\log Z(\beta) = E_{\min} - \beta^{-1}\log\sum_\theta e^{-\beta(E(\theta) - E_{\min})}"
               r" \xrightarrow{\beta\to\infty} E_{\min} = -\log p(x,\theta_\mathrm{MAP})"),
    inputs=_level_energies(),
    schedule=_COLD,
    steps=[
        Step(r"\min_q F_\beta(q) = -\beta^{-1}\log Z(\beta)", r"B6; vfe.helmholtz_free_energy at $T = 1/\beta$",
             lambda E, beta: vfe.helmholtz_free_energy(E, 1 / beta)),
        Step(r"E_{\min} - \beta^{-1}\log\sum_\theta e^{-\beta(E(\theta) - E_{\min})}", r"factor $e^{-\beta E_{\min}}$ out of $Z$",
             lambda E, beta: Terms(jnp.min(E), -jnp.log(jnp.sum(jnp.exp(_centred_exponent(E, beta)))) / beta)),
        Step(r"E_{\min} = -\max_\theta \log p(x,\theta)",
             r"the sum lies in $[1, n]$, so the second term is $O(\log n/\beta)$",
             lambda E, beta: jnp.min(E), relation="->"),
        Step(r"-\log p(x,\theta_\mathrm{MAP}) = F(\delta_{\theta_\mathrm{MAP}})",
             r"$\log p(x,\theta) = -E(\theta)$; vfe.map_estimate, vfe.point_mass_free_energy (B5)",
             lambda E, beta: vfe.point_mass_free_energy(-E, vfe.map_estimate(-E))),
    ],
)

B7_HOT = Derivation(
    claim="B7",
    title="β → 0: q_β tends to the uniform distribution on the allowed states",
    statement=r"q_\beta \xrightarrow{\beta\to 0} \frac{\mathbb 1[E < \infty]}{|\{\theta: E(\theta) < \infty\}|}",
    inputs=_level_energies(),
    schedule=_HOT,
    steps=[
        Step(r"q_\beta", "vfe.boltzmann", lambda E, beta: vfe.boltzmann(E, beta)),
        Step(r"\frac{e^{-\beta(E - E_{\min})}}{\sum_\theta e^{-\beta(E(\theta) - E_{\min})}}",
             r"multiply numerator and denominator by $e^{\beta E_{\min}}$", lambda E, beta: jnp.exp(_log_boltzmann(E, beta))),
        Step(r"\frac{\mathbb 1[E < \infty]}{|\{\theta: E(\theta) < \infty\}|}",
             r"$e^{-\beta(E - E_{\min})} \to 1$ for finite $E$; forbidden states stay at $e^{-\infty} = 0$",
             lambda E, beta: jnp.isfinite(E) / jnp.sum(jnp.isfinite(E)), relation="->"),
    ],
)


# ----------------------------------------------------------------------------- B8: EM on a Gaussian mixture

EM_STEPS = 12
MIN_STD = 1e-2
_MIXTURE_POINTS = 24


@st.composite
def _mixture_problem(draw, k):
    """24 points from a random 1-D mixture of ``k`` components, and a random EM start of as many."""
    rng = np.random.default_rng(draw(st.integers(0, 2**32 - 1)))
    z = rng.integers(0, k, size=_MIXTURE_POINTS)
    x = rng.uniform(-5, 5, size=k)[z] + rng.uniform(0.3, 2.0, size=k)[z] * rng.standard_normal(_MIXTURE_POINTS)
    init = (rng.dirichlet(np.ones(k)), np.sort(rng.choice(x, size=k, replace=False)) + 0.1 * rng.standard_normal(k),
            rng.uniform(0.5, 2.0, size=k) * np.std(x))
    return {"x": x, "weights": init[0], "means": init[1], "stds": init[2]}


def _thetas(x, weights, means, stds):
    """θ_0 (the start) … θ_T (after T EM steps, vfe.mixture.em), stacked on a leading axis."""
    trace = vm.em(x, vm.MixtureParams(weights, means, stds), EM_STEPS, min_std=MIN_STD)
    return vm.MixtureParams(*(jnp.concatenate([a[None], b]) for a, b in zip((weights, means, stds), trace.params)))


def _at(thetas, where):
    return vm.MixtureParams(*(a[where] for a in thetas))


def _free(x, q_of, theta_of):
    """``F(q_s, θ_t)`` for every step: ``q_s = p(z|x, θ_{s-1})`` (E-step), ``θ_t`` from the trace."""
    def f(x, weights, means, stds):
        thetas = _thetas(x, weights, means, stds)
        q = vm.responsibilities(x, _at(thetas, q_of))
        return vm.mixture_free_energy(x, q, _at(thetas, theta_of))
    return f


_NEXT, _NOW, _BEFORE = slice(2, None), slice(1, -1), slice(0, -2)  # θ_{t+1}, θ_t, θ_{t-1} for t = 1 … T-1

B8 = Derivation(
    claim="B8",
    title="EM never increases F and keeps it above −log p(x|θ)",
    statement=(r"F(q_{t+1},\theta_{t+1}) \le F(q_{t+1},\theta_t) = -\log p(x|\theta_t) \le F(q_t,\theta_t)"
               r" \le F(q_t,\theta_{t-1}) = -\log p(x|\theta_{t-1})"),
    inputs=_mixture_problem(3),
    max_examples=40,
    steps=[
        Step(r"F(q_{t+1},\theta_{t+1})", r"after the M-step of step $t+1$; vfe.mixture.em, vfe.mixture.mixture_free_energy",
             _free(None, _NOW, _NEXT)),
        Step(r"F(q_{t+1},\theta_t)",
             r"the M-step $\theta_{t+1} = \arg\min_\theta F(q_{t+1},\theta)$ (vfe.mixture.m_step) beats $\theta_t$",
             _free(None, _NOW, _NOW), relation="<="),
        Step(r"-\log p(x|\theta_t)",
             r"the E-step $q_{t+1} = p(z|x,\theta_t)$ (vfe.mixture.responsibilities) attains the bound (B3);"
             r" vfe.mixture.mixture_log_likelihood",
             lambda x, weights, means, stds: -vm.mixture_log_likelihood(x, _at(_thetas(x, weights, means, stds), _NOW))),
        Step(r"F(q_t,\theta_t)", r"$F(q,\theta) \ge -\log p(x|\theta)$ for every $q$ (B3)",
             _free(None, _BEFORE, _NOW), relation="<="),
        Step(r"F(q_t,\theta_{t-1})", r"the M-step of step $t$ beats $\theta_{t-1}$", _free(None, _BEFORE, _BEFORE),
             relation="<="),
        Step(r"-\log p(x|\theta_{t-1})", "the E-step of step $t$ attains the bound",
             lambda x, weights, means, stds: -vm.mixture_log_likelihood(x, _at(_thetas(x, weights, means, stds), _BEFORE))),
    ],
)


def _trace(x, weights, means, stds):
    return vm.em(x, vm.MixtureParams(weights, means, stds), EM_STEPS, min_std=MIN_STD)


B8_TRACE = Derivation(
    claim="B8",
    title="The free energy recorded by EM decreases, bounded below by −log p(x|θ)",
    statement=r"-\log p(x|\theta^{(k+1)}) \le F^{(k+1)} \le F^{(k)}\quad\text{for every half-step } k",
    inputs=_mixture_problem(2),
    max_examples=40,
    steps=[
        Step(r"-\log p(x|\theta^{(k+1)})", "the surprise of the parameters in force (vfe.mixture.em's log_likelihood)",
             lambda x, weights, means, stds: -_trace(x, weights, means, stds).log_likelihood[1:]),
        Step(r"F^{(k+1)}", "B3: $F \\ge -\\log p(x|\\theta)$ (vfe.mixture.em's free_energy)",
             lambda x, weights, means, stds: _trace(x, weights, means, stds).free_energy[1:], relation="<="),
        Step(r"F^{(k)}", "each half-step minimises $F$ over $q$ (E-step) or over $\\theta$ (M-step)",
             lambda x, weights, means, stds: _trace(x, weights, means, stds).free_energy[:-1], relation="<="),
    ],
)
