"""Errors planted in the proofs of claims D1–D5 (proofs/sequences.py) are caught at their step.

``tests/test_proofs.py`` runs every registered derivation as it is; here each check kind used
by the D proofs (identity, inequality, variational, distributional, and the refuted seed
reading) gets wrong variants — a missing term, swapped KL arguments, a wrong minimiser, too
little training, a sampler that ignores the temperature, does not feed tokens back, or
tempers globally — and the checker must report FAILED at the planted step.
"""

from __future__ import annotations

import dataclasses

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from planted import planted
from strategies import examples

import vfe
from proofs import sequences as ps
from vfe import methods
from vfe import sequences as vs
from vfe.derivation import FAILED, PROVED, REFUTED, Terms

N = examples(10)  # examples per planted check: each compiles and may train or sample


def _assert_caught(derivation, number, n=N):
    report = derivation.check(max_examples=n)
    assert report.status == FAILED, report.text()
    assert report.failure is not None and not report.failure.is_error, report.text()
    assert report.failure.step_number == number, report.text()


# --- identities -----------------------------------------------------------------------------

def _last_token_dropped(table):
    seqs = ps._all(table)
    where = jnp.arange(seqs.shape[-1]) < seqs.shape[-1] - 1
    return ps._shape(table, vs.sequence_log_prob(ps._teacher_forced(table, seqs), seqs, where=where))


def _unnormalised_product(table):
    seqs = ps._all(table)
    return jnp.sum(jnp.prod(ps._pick(jnp.exp(ps._teacher_forced(table, seqs)), seqs), axis=-1))


def _resumed_at_the_root(table, prompt):
    """Generation that ignores the prompt: the continuation's law from the start of the model."""
    state, start = ps._start(table)
    return vs.autoregressive_log_joint(ps._tree_step, state, start, ps._length(table) - prompt.shape[-1])


def _not_renormalised(table, prompt):
    return ps._joint_at_prompt(table, prompt)


IDENTITIES = {
    "D1 last token dropped from the chain rule": (ps.D1_LOG, 3, _last_token_dropped),
    "D1 conditionals not normalised (exp z for softmax z)": (ps.D1_NORMALISED, 2, _unnormalised_product),
    "D3 flat prior's log|Θ| dropped": (ps.D3, 3, lambda grid, corpus: -ps._log_likelihoods(grid, corpus)),
    "D4 per-step normalisers dropped": (ps.D4_PER_STEP, 4, lambda table, T: ps._log_joint(table) / T),
    "D5 joint not renormalised (no Bayes denominator)": (ps.D5, 2, _not_renormalised),
    "D5 generation ignores the prompt": (ps.D5, 4, _resumed_at_the_root),
}


@pytest.mark.parametrize("name", sorted(IDENTITIES))
def test_planted_identity_error_is_caught(name):
    derivation, number, wrong = IDENTITIES[name]
    _assert_caught(planted(derivation, number, wrong), number)


# --- inequalities ---------------------------------------------------------------------------

def _swapped_kl(data, theta):
    p, q = jnp.exp(ps._log_joint(data)).ravel(), jnp.exp(ps._log_joint(theta)).ravel()
    return Terms(vfe.entropy(p), vfe.kl_divergence(q, p))


def _unweighted_gap(weights, transition):
    return Terms(ps._entropy_rate(transition),
                 jnp.mean(vfe.kl_divergence_from_logits(jnp.log(transition), weights)))


INEQUALITIES = {
    "D2 swapped KL arguments": (ps.D2, 3, _swapped_kl),
    "D2 cross-entropy below the entropy (sign flip of KL)": (
        ps.D2, 3, lambda data, theta: Terms(vfe.entropy(jnp.exp(ps._log_joint(data)).ravel()),
                                            -vfe.kl_divergence(jnp.exp(ps._log_joint(data)).ravel(),
                                                               jnp.exp(ps._log_joint(theta)).ravel()))),
    "D2 Markov gap not weighted by π": (ps.D2_MARKOV, 3, _unweighted_gap),
    "D2 entropy rate with the uniform law for π": (
        ps.D2_MARKOV, 3, lambda weights, transition: Terms(jnp.mean(vfe.entropy(transition)),
                                                           ps._kl_gap(weights, transition))),
}


@pytest.mark.parametrize("name", sorted(INEQUALITIES))
def test_planted_inequality_error_is_caught(name):
    derivation, number, wrong = INEQUALITIES[name]
    _assert_caught(planted(derivation, number, wrong), number)


def test_a_planted_bound_above_the_loss_is_caught():
    """Claiming ℓ(W) ≥ h + 0.01 fails at the ≥ step when the model is near the source."""
    bound = lambda weights, transition: ps._entropy_rate(transition) + 0.01
    derivation = dataclasses.replace(ps.D2_MARKOV, examples=[{"transition": np.array([[0.9, 0.1], [0.2, 0.8]]),
                                                             "weights": np.log([[0.9, 0.1], [0.2, 0.8]])}])
    _assert_caught(planted(derivation, 4, bound), 4, n=1)


# --- variational ----------------------------------------------------------------------------

def _undertrained(transition):
    """Only the first checkpoint's training (10 Adam steps): far from the rate."""
    return ps._per_token_loss(ps._train(transition)[1], transition)


VARIATIONAL = {
    "D2 wrong minimiser: the uniform model": (
        ps.D2_TRAINED, 2, lambda transition: ps._per_token_loss(jnp.zeros_like(transition), transition)),
    "D2 wrong minimiser: the transposed source": (
        ps.D2_TRAINED, 2, lambda transition: ps._per_token_loss(jnp.log(transition.T), transition)),
    "D2 training stopped after 10 steps": (ps.D2_TRAINED, 3, _undertrained),
    "D2 gap with swapped KL along training": (
        ps.D2_TRAINING, 2,
        lambda transition: Terms(jnp.full(len(ps.CHECKPOINTS), ps._entropy_rate(transition)),
                                 jax.vmap(lambda w: jnp.sum(ps._stationary(transition) * vfe.kl_divergence_from_logits(
                                     w, jnp.log(transition))))(ps._train(transition)))),
    "D3 wrong minimiser: the least likely model": (
        ps.D3_MLE, 2, lambda grid, corpus: vfe.point_mass_free_energy(
            ps._flat_log_joint(grid, corpus), jnp.argmin(ps._log_likelihoods(grid, corpus)))),
    "D3 the point mass credited with the evidence": (
        ps.D3_MLE, 2, lambda grid, corpus: -vfe.log_evidence(ps._flat_log_joint(grid, corpus))),
}


@pytest.mark.parametrize("name", sorted(VARIATIONAL))
def test_planted_variational_error_is_caught(name):
    derivation, number, wrong = VARIATIONAL[name]
    # the first step's planted value is caught at step 2 (its comparison with the next)
    _assert_caught(planted(derivation, number, wrong), max(number, 2))


def test_a_claimed_minimum_below_the_optimum_is_caught_by_the_optimiser():
    """Claim min over point masses = −log p(D) (the posterior's value): the optimiser never gets there."""
    wrong = lambda grid, corpus: -vfe.log_evidence(ps._flat_log_joint(grid, corpus))
    derivation = planted(planted(ps.D3_MLE, 1, wrong), 2, wrong)
    _assert_caught(derivation, 3)


# --- distributional -------------------------------------------------------------------------

def _stuck_step(state, token):
    """A sampler that never feeds the token back: every position drawn from the root's conditional."""
    table, node = state
    return state, table[jnp.zeros_like(node)]


def _untempered(table, T):
    return methods.empirical_cdf(ps._sample(table, 1.0), table.shape[-1] ** ps._length(table))


def _not_fed_back(table, T):
    state, start = ps._start(table, (ps.SAMPLES,))
    samples = vs.sample_autoregressive(jax.random.key(0, impl="rbg"), _stuck_step, state, start, ps._length(table), T)
    return methods.empirical_cdf(ps._lexicographic(samples, table.shape[-1]), table.shape[-1] ** ps._length(table))


def _globally_tempered(table, T):
    probs = jnp.exp(vs.globally_tempered_log_joint(ps._log_joint(table), T)).ravel()
    samples = vs.sample_categorical(jax.random.key(0, impl="rbg"), jnp.broadcast_to(probs, (ps.SAMPLES, probs.size)))
    return methods.empirical_cdf(samples, probs.size)


def _ignores_prompt(table, prompt):
    state, start = ps._start(table, (ps.SAMPLES,))
    samples = vs.sample_autoregressive(jax.random.key(0, impl="rbg"), ps._tree_step, state, start,
                                       ps._length(table) - prompt.shape[-1], 1.0)
    return methods.empirical_cdf(ps._lexicographic(samples, table.shape[-1]),
                                 table.shape[-1] ** (ps._length(table) - prompt.shape[-1]))


SAMPLERS = {
    "D4 sampler ignores the temperature": (ps.D4_SAMPLING, 3, _untempered),
    "D4 sampler does not feed tokens back": (ps.D4_SAMPLING, 3, _not_fed_back),
    "D4 sampler tempers the whole sequence": (ps.D4_SAMPLING, 3, _globally_tempered),
    "D5 sampler ignores the prompt": (ps.D5_SAMPLING, 2, _ignores_prompt),
}


@pytest.mark.parametrize("name", sorted(SAMPLERS))
def test_planted_wrong_sampler_is_caught(name):
    derivation, number, wrong = SAMPLERS[name]
    _assert_caught(planted(derivation, number, wrong), number)


# --- the refuted seed reading of D4 -----------------------------------------------------------

def test_global_tempering_is_refuted_on_the_minimal_counterexample():
    report = ps.D4_SEED_GLOBAL.check(max_examples=N)
    assert report.status == REFUTED, report.text()
    assert report.failure.step_number == 2
    np.testing.assert_array_equal(report.failure.inputs["table"], ps._BRANCH_VS_FORCED["table"])
    # per-step: (1/4, 1/4, 1/2, 0) at every T; global at T = 2: (1, 1, √2, 0)/(2 + √2)
    np.testing.assert_allclose(np.exp(report.failure.previous).ravel(), [0.25, 0.25, 0.5, 0.0], rtol=1e-12)
    np.testing.assert_allclose(np.exp(report.failure.value).ravel(),
                               np.array([1.0, 1.0, np.sqrt(2), 0.0]) / (2 + np.sqrt(2)), rtol=1e-12)


def test_the_corrected_identity_holds_on_the_counterexample():
    derivation = dataclasses.replace(ps.D4_PER_STEP, examples=[ps._BRANCH_VS_FORCED])
    assert derivation.check(max_examples=1).status == PROVED


def test_every_d_claim_is_declared_once_with_its_derivations():
    ids = [c.id for c in ps.CLAIMS]
    assert ids == ["D1", "D2", "D3", "D4", "D5"]
    from vfe.derivation import collect
    assert {d.claim for d in collect(ps)} == set(ids)
