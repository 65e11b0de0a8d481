"""The proofs of claims E1 and E2 catch errors planted in them, at least one per check kind.

Each test replaces one step of a derivation of ``proofs/diffusion.py`` by a plausible mistake — a
posterior precision without α_t (identity), the noise and score losses equated without their weight
(identity), a forward chain whose mean does not shrink (distributional), the bound written the wrong
way round (inequality), a wrong optimal noise predictor that the optimiser undercuts (variational) —
and asserts that the checker reports FAILED at that very step.
(tests/test_proofs.py runs the correct derivations.)
"""

from __future__ import annotations

import dataclasses

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from planted import assert_caught_at_its_step, planted
from strategies import examples

from proofs import diffusion as df
from vfe.derivation import FAILED, Derivation


def _posterior_without_alpha(betas, t, x0, xt):
    """Bayes with the likelihood's precision 1/β_t instead of α_t/β_t (x_t's scale √α_t forgotten)."""
    prod = jnp.concatenate([jnp.ones(1), jnp.cumprod(1.0 - betas)])
    ab_prev, beta = prod[t - 1], betas[t - 1]
    precision = 1.0 / (1.0 - ab_prev) + 1.0 / beta
    mean = (jnp.sqrt(ab_prev) * x0 / (1.0 - ab_prev) + xt / beta) / precision
    return jnp.stack([mean, jnp.broadcast_to(1.0 / precision, mean.shape)])


def _exploding_chain_cdf(betas, x0):
    """x_t = x_{t-1} + √β_t ε (no shrinking of the mean), compared at the points of q(x_t|x_0)."""
    key = jax.random.key(0, impl="rbg")

    def step(x, t):
        x = x + jnp.sqrt(betas[t - 1]) * jax.random.normal(jax.random.fold_in(key, t), x.shape)
        return x, x
    _, xs = jax.lax.scan(step, jnp.full(df.SAMPLES, x0), jnp.arange(1, betas.shape[0] + 1))
    return df._cdf_at_grid(xs, betas, x0)


def _wrong_affine(betas, t, m, s):
    """ε*(x) with the sign of its intercept flipped: a + b x' claimed optimal, with its own loss."""
    a, b = df._optimal_affine(betas, t, m, s)
    return jnp.stack([a, -b])


PLANTED = {
    # identity: the posterior precision forgets α_t
    "E1 posterior precision without alpha": (df.E1_POSTERIOR, 2, _posterior_without_alpha),
    # identity: "the noise loss IS the score-matching loss" — without the weight (1-ᾱ_t) it is not
    "E2 losses equal without weights": (df.E2_SIMPLE_LOSS, 2, lambda betas, t, x0, eps, score:
                                        df._weighted_dsm(betas, t, x0, eps, score) / df._omabar(betas, t)),
}


@pytest.mark.parametrize("name", sorted(PLANTED))
def test_planted_error_is_caught_at_its_step(name):
    assert_caught_at_its_step(*PLANTED[name])


def test_e1_a_chain_without_shrinking_fails_the_distributional_check():
    """Distributional (DKW band): a variance-exploding chain x_t = x_{t-1} + √β_t ε is not the forward
    process. Checked on one explicit input, which the checker evaluates before any search (each
    example costs 6 × 2^17 draws, and a Hypothesis counterexample would be shrunk at that price)."""
    d = dataclasses.replace(planted(df.E1_MARGINAL_SAMPLES, 2, _exploding_chain_cdf),
                            examples=[{"betas": np.full(df.T, 0.1), "x0": 1.0}])
    report = d.check(max_examples=1)
    assert report.status == FAILED and report.failure.step_number == 2, report.text()
    assert report.failure.error > 10 * d.steps[1].tolerance  # far outside the band, not a borderline miss


def test_e1_the_bound_the_wrong_way_round_is_refuted():
    """Inequality: −ELBO ≤ −log p_θ(x_0) is false (the gap is a KL divergence, > 0 here)."""
    report = planted(df.E1_ELBO, 3, relation="<=").check(max_examples=examples(20))
    assert report.status == FAILED and report.failure.step_number == 3, report.text()


def test_e2_a_wrong_noise_predictor_is_undercut_by_the_optimiser():
    """Variational: claim a wrong (a, b) and its own loss as the optimum: only L-BFGS can object."""
    def claimed(betas, t, m, s):
        params = _wrong_affine(betas, t, m, s)
        return jnp.concatenate([df._noise_loss(params, betas, t, m, s)[None], params])
    d = planted(planted(df.E2_NOISE_OPTIMUM, 1, claimed), 2, claimed)
    report = d.check(max_examples=examples(10))
    assert report.status == FAILED and report.failure.step_number == 3, report.text()
    assert report.failure.value[0] < report.failure.previous[0]  # a lower loss than the claimed minimum


def test_every_claim_e1_e2_is_declared_and_proved_by_some_derivation():
    ids = {c.id for c in df.CLAIMS}
    assert ids == {"E1", "E2"}
    found = [d for d in vars(df).values() if isinstance(d, Derivation)]
    assert {d.claim for d in found} == ids
    assert {d.kind for d in found} == {"identity", "inequality", "distributional", "variational"}
