"""Planted errors in the proofs of claims B1–B8 (``proofs/variational.py``) are caught at their step.

``tests/test_proofs.py`` runs every registered derivation; here each check kind used by the B
proofs (identity, inequality, variational, limit, distributional) gets a wrong variant — a
missing term, a sign flip, swapped KL arguments, a wrong constant, a wrong minimiser, a wrong
limit, a wrong sampler, a wrong E- or M-step — and the checker must report FAILED at that step.
"""

from __future__ import annotations


import jax
import jax.numpy as jnp
import pytest
from planted import planted
from strategies import examples

import vfe
from proofs import variational as pv
from vfe import mixture as vm
from vfe.derivation import FAILED


def _marginal_sampler(key, joint):
    """Wrong: ``x`` drawn from its marginal ``p(x)``, ignoring the ``θ`` drawn first."""
    k_theta, k_x = jax.random.split(key)
    theta = jax.random.categorical(k_theta, jnp.log(jnp.sum(joint, axis=0)), shape=(pv.ANCESTRAL_SAMPLES,))
    x = jax.random.categorical(k_x, jnp.log(jnp.sum(joint, axis=1)), shape=(pv.ANCESTRAL_SAMPLES,))
    return x * joint.shape[1] + theta


def _thetas_shifted(x, weights, means, stds):
    """Wrong M-step: the learned means moved by one unit."""
    t = pv._thetas(x, weights, means, stds)
    return vm.MixtureParams(t.weights, t.means + 1.0, t.stds)


def _wrong_m_step(x, weights, means, stds):
    t, shifted = pv._thetas(x, weights, means, stds), _thetas_shifted(x, weights, means, stds)
    q = vm.responsibilities(x, pv._at(t, pv._NOW))
    return vm.mixture_free_energy(x, q, pv._at(shifted, pv._NEXT))


def _wrong_e_step(x, weights, means, stds):
    """Wrong E-step: the belief over the latents is the prior ``π``, ignoring the data."""
    theta = pv._at(pv._thetas(x, weights, means, stds), pv._NOW)
    q = jnp.broadcast_to(theta.weights[:, None, :], theta.weights.shape[:1] + x.shape + theta.weights.shape[1:])
    return vm.mixture_free_energy(x, q, theta)


def _one_hot_argmin(E, beta):
    return jax.nn.one_hot(jnp.argmin(E), E.size)


PLANTED = {  # name -> (derivation, planted step, wrong fn[, step that must fail, if not the planted one])
    # identity
    "B1 product rule: evidence factor missing": (
        pv.B1_PRODUCT, 3, lambda joint: vfe.posterior(jnp.log(joint))),
    "B1 Bayes: prior and posterior confused": (
        pv.B1_BAYES, 2, lambda joint: jnp.broadcast_to(pv._prior(joint), joint.shape)),
    "B3 tight: log evidence sign flip": (
        pv.B3_TIGHT, 4, lambda log_joint: vfe.log_evidence(log_joint)),
    "B6 beta=1: entropy term missing": (
        pv.B6_VFE, 2, lambda q, log_joint: -pv._sum_q_times(q, log_joint)),
    # inequality
    "B3 KL sign flip": (
        pv.B3, 2, lambda q, log_joint: vfe.log_evidence(log_joint) + vfe.kl_divergence(q, vfe.posterior(log_joint))),
    "B3 Pinsker with a wrong constant": (
        pv.B3_ONLY_AT_THE_POSTERIOR, 3,
        lambda q, log_joint: 2.0 * jnp.sum(jnp.abs(q - vfe.posterior(log_joint))) ** 2),
    "B6 swapped KL arguments": (
        pv.B6, 4, lambda q, E, beta: (vfe.kl_divergence_from_logits(-beta * E, jnp.log(q)) / beta,
                                      -vfe.log_partition(E, beta) / beta)),
    "B8 wrong M-step": (pv.B8, 1, _wrong_m_step, 2),  # step 1 planted, its relation to step 2 fails
    "B8 wrong E-step": (pv.B8, 3, _wrong_e_step),
    # variational
    "B4 uniform belief claimed as the minimiser": (
        pv.B4_MINIMISER, 2, lambda log_joint: jnp.isfinite(log_joint) / jnp.sum(jnp.isfinite(log_joint))),
    "B4 minimum claimed at the best point mass (MAP)": (
        pv.B4_MINIMUM, 2, lambda log_joint: vfe.point_mass_free_energy(log_joint, vfe.map_estimate(log_joint))),
    "B6 Boltzmann at 1/beta claimed as the minimiser": (
        pv.B6_MINIMISER, 2, lambda E, beta: vfe.boltzmann(E, 1 / beta)),
    # limit
    "B7 cold limit: argmin picks one of tied minima": (pv.B7_COLD, 3, _one_hot_argmin),
    "B7 hot limit: forbidden states given mass": (pv.B7_HOT, 3, lambda E, beta: jnp.full_like(E, 1 / E.size)),
    "B7 cold free energy: limit at the mean energy": (
        pv.B7_COLD_MAP, 3, lambda E, beta: jnp.mean(jnp.where(jnp.isfinite(E), E, 0.0))),
}


@pytest.mark.parametrize("name", sorted(PLANTED))
def test_planted_error_is_caught_at_its_step(name):
    derivation, number, wrong, *fails_at = PLANTED[name]
    report = planted(derivation, number, wrong).check(max_examples=examples(30))
    assert report.status == FAILED, report.text()
    expected = fails_at[0] if fails_at else number
    assert report.failure.step_number == expected and not report.failure.is_error, report.text()


def test_ancestral_sampling_rejects_a_sampler_that_ignores_theta():
    """The distributional check's power: ``x`` from its marginal is caught (DKW tolerance)."""
    report = pv.ancestral_sampling(_marginal_sampler).check(max_examples=examples(30))
    assert report.status == FAILED and report.failure.step_number == 2, report.text()
    assert report.failure.error > 2 * pv.B1_ANCESTRAL.steps[1].tolerance


def test_b5_seed_wording_is_refuted_on_its_counterexample():
    report = pv.B5_SEED_MLE.check(max_examples=1)
    assert report.failure is not None and report.failure.inputs["prior"].tolist() == [0.2, 0.8]


def test_every_b_claim_is_declared_once_with_a_proof():
    ids = [c.id for c in pv.CLAIMS]
    assert ids == [f"B{i}" for i in range(1, 9)]
    proved = {d.claim for d in vars(pv).values() if isinstance(d, type(pv.B2))}
    assert proved == set(ids)
    assert next(c for c in pv.CLAIMS if c.id == "B5").verdict.startswith("loose")
