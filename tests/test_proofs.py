"""Errors planted in the catalogue's proofs are caught at their step (claims A1, B2, B5, C1); each
derivation's own status is checked with its claim in test_catalogue.py."""

import pytest

from proofs import all_derivations
from planted import planted
from strategies import examples

DERIVATIONS = all_derivations()


def test_the_seed_wording_of_b5_is_refuted_and_the_corrected_statement_proved():
    b5 = [d for d in DERIVATIONS if d.claim == "B5"]
    assert any(d.expect == "refuted" for d in b5)
    assert any(d.expect == "proved" for d in b5)


# --- the catalogue's own proofs catch errors planted in them ----------------------------------


import jax.numpy as jnp  # noqa: E402

import vfe  # noqa: E402
from proofs import information, thermodynamics, variational  # noqa: E402
from vfe.derivation import FAILED, Terms  # noqa: E402


PLANTED_IN_CATALOGUE = {
    "A1 swapped KL": (information.A1, 4,
                      lambda p, q: Terms(vfe.entropy(p), vfe.kl_divergence(q, p))),
    "B2 dropped log evidence": (variational.B2, 4,
                                lambda q, log_joint: vfe.kl_divergence(q, vfe.posterior(log_joint))),
    "B2 sign flip": (variational.B2, 2,
                     lambda q, log_joint: Terms(jnp.sum(jnp.where(q > 0, q * jnp.log(q), 0.0)),
                                                +jnp.sum(jnp.where(q > 0, q * log_joint, 0.0)))),
    "C1 T where 1/T belongs": (thermodynamics.C1, 4, lambda z, T: vfe.boltzmann(-z, T)),
    "B5 argmin where argmax belongs": (variational.B5_MAP, 3,
                       lambda log_joint: vfe.point_mass_free_energy(log_joint, jnp.argmin(log_joint))),
}


@pytest.mark.parametrize("name", sorted(PLANTED_IN_CATALOGUE))
def test_planted_error_in_a_catalogue_proof_is_caught_at_its_step(name):
    derivation, number, wrong = PLANTED_IN_CATALOGUE[name]
    report = planted(derivation, number, wrong).check(max_examples=examples(60))
    assert report.status == FAILED
    assert report.failure.step_number == number, report.text()
