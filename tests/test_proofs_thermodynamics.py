"""The proofs of claims C1–C9 catch errors planted in them, one per check kind.

Each test replaces one step's function of a catalogue derivation (``proofs/thermodynamics.py``)
by a plausible mistake — a wrong limit, a dropped exponent, a flipped inequality, a wrong
minimiser or minimum, a wrong derivative, a parameter update that depends on T, a wrong sampler —
and asserts that the checker reports FAILED at that very step. (tests/test_proofs.py runs the
correct derivations.)
"""

from __future__ import annotations


import jax
import jax.numpy as jnp
import pytest
from planted import planted
from strategies import examples

import vfe
from proofs import thermodynamics as th
from vfe import methods
from vfe.derivation import FAILED, Derivation, Terms


def _tempered_loss(theta, tokens, T):
    """The mistake C8 rules out: training on the tempered distribution."""
    logits = jnp.broadcast_to(theta, (tokens.size, theta.size)) / T
    return jnp.mean(vfe.cross_entropy_with_integer_labels(logits, tokens))


def _uniform_noise_sampler(z, T):
    """argmax(z/T + U) with uniform noise instead of Gumbel noise: not the softmax law."""
    u = jax.random.uniform(jax.random.key(0, impl="rbg"), (th.SAMPLES, z.size))
    s = jnp.where(jnp.isneginf(z), -jnp.inf, (z - jnp.max(z)) / T)
    return jnp.argmax(s + u, axis=-1)


PLANTED = {
    # limit: T -> 0 one-hot on the first maximiser (ignores ties)
    "C2 cold limit without ties": (th.C2_COLD, 2, lambda z, T: jax.nn.one_hot(jnp.argmax(z), z.size)),
    # limit: T -> inf uniform over all tokens, masked ones included
    "C2 hot limit counts masked tokens": (th.C2_HOT, 2, lambda z, T: jnp.full(z.shape, 1.0 / z.size)),
    # identity: p^T instead of p^(1/T)
    "C3 power T instead of 1/T": (th.C3, 3, lambda z, T: th._normalised_exp(vfe.tempered_log_softmax(z, 1.0) * T, 1.0)),
    # inequality: temperature reverses the order (p at -z)
    "C3 order reversed": (th.C3_ORDER, 2, lambda z, T: jnp.diff(vfe.tempered_softmax(-z, T)[jnp.argsort(z)])),
    # derivative: Var/T^2 where Var/T^3 belongs
    "C4 wrong power of T": (th.C4, 1, lambda z, T: th._var(vfe.tempered_softmax(z, T), z) / T**2),
    # identity: F = <E> + TS (sign of the entropy term)
    "C5 sign of TS": (th.C5, 2, lambda E, T: Terms(th._mean(th._boltzmann_at(E, T), E),
                                                   -T * th._mean(th._boltzmann_at(E, T), jnp.log(th._boltzmann_at(E, T))))),
    # variational: the claimed minimiser at beta = T instead of 1/T
    "C5 wrong minimiser": (th.C5_GIBBS_ARGMIN, 1, lambda E, T: vfe.boltzmann(E, T)),
    # derivative: Hessian without the outer product
    "C6 hessian without pp^T": (th.C6_HESSIAN, 1, lambda z: jnp.diag(vfe.tempered_softmax(z, 1.0))),
    # derivative: <E> = +d log Z / d beta (sign)
    "C6 mean energy sign": (th.C6_MEAN, 3, lambda E, beta: methods.grad(th._log_z, "beta")(E=E, beta=beta)),
    # derivative: C = Var/T (one power of T missing)
    "C6 capacity Var/T": (th.C6_CAPACITY, 1, lambda E, T: th.energy_variance(E, T) / T),
    # derivative: C7's derivative written Var/T^3 (the C4 form)
    "C7 derivative Var/T^3": (th.C7, 1, lambda z, T: th._var(vfe.tempered_softmax(z, T), z) / T**3),
    # identity: a training step on the tempered loss depends on T
    "C8 training on the tempered loss": (th.C8, 3, lambda theta, tokens, T:
                                         theta - th._ETA * jax.grad(_tempered_loss)(theta, tokens, T)),
    # distributional: Gumbel-max sampler ignoring T
    "C9 sampler ignores T": (th.C9_GUMBEL, 2, lambda z, T: methods.empirical_cdf(th._gumbel_samples(z, 1.0), z.size)),
    # distributional: uniform noise instead of Gumbel noise
    "C9 uniform noise": (th.C9_GUMBEL, 2, lambda z, T: methods.empirical_cdf(_uniform_noise_sampler(z, T), z.size)),
    # distributional: inverse-CDF sampler of the untempered distribution
    "C9 inverse CDF of p_1": (th.C9_INVERSE_CDF, 2, lambda z, T: methods.empirical_cdf(th._inverse_cdf_samples(z, 1.0), z.size)),
}


@pytest.mark.parametrize("name", sorted(PLANTED))
def test_planted_error_is_caught_at_its_step(name):
    derivation, number, wrong = PLANTED[name]
    report = planted(derivation, number, wrong).check(max_examples=examples(30))
    assert report.status == FAILED, report.text()
    assert report.failure is not None and report.failure.step_number == max(number, 2), report.text()


def test_c4_entropy_at_a_lower_temperature_is_refuted():
    """H at T/r (r > 1) is below H at T: the '<=' step fails."""
    d = planted(th.C4_ENTROPY, 2, lambda z, T, r: th._entropy_at(z, T / r))
    report = d.check(max_examples=examples(30))
    assert report.status == FAILED and report.failure.step_number == 2, report.text()


def test_c5_minimum_too_high_is_undercut_by_the_optimiser():
    """Claim min G = -T log Z + 0.01, and a point attaining it: only the optimiser can object."""
    d = planted(th.C5_GIBBS, 1, lambda E, T: 0.01 - T * vfe.log_partition(E, 1.0 / T))
    d = planted(d, 2, lambda E, T: vfe.gibbs_free_energy(th._boltzmann_at(E, T), E, T) + 0.01)
    report = d.check(max_examples=examples(8))
    assert report.status == FAILED and report.failure.step_number == 3, report.text()
    assert report.failure.value < report.failure.previous


def test_c7_surprise_at_a_lower_temperature_is_refuted():
    d = planted(th.C7_MONOTONE, 3, lambda z, T, r: Terms(th._lse(z), -th._mean(vfe.tempered_softmax(z, T / r), z)))
    report = d.check(max_examples=examples(30))
    assert report.status == FAILED and report.failure.step_number == 3, report.text()


def test_every_claim_c1_to_c9_is_declared_and_proved_by_some_derivation():
    ids = {c.id for c in th.CLAIMS}
    assert ids == {f"C{k}" for k in range(1, 10)}
    proved = {d.claim for d in vars(th).values() if isinstance(d, Derivation)}
    assert proved == ids
