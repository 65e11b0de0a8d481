"""Every registered derivation of the catalogue, run under pytest (claims A1, B2, B5, C1, ...)."""

import pytest

from proofs import all_derivations
from vfe.derivation import PROVED, REFUTED

DERIVATIONS = all_derivations()


def test_the_catalogue_covers_the_foundation_claims():
    assert {"A1", "B2", "B5", "C1"} <= {d.claim for d in DERIVATIONS}


def test_the_seed_wording_of_b5_is_refuted_and_the_corrected_statement_proved():
    b5 = [d for d in DERIVATIONS if d.claim == "B5"]
    assert any(d.expect == "refuted" for d in b5)
    assert any(d.expect == "proved" for d in b5)


@pytest.mark.parametrize("derivation", DERIVATIONS, ids=lambda d: f"{d.claim}-{d.title[:40]}")
def test_derivation(derivation):
    report = derivation.verify(max_examples=60)
    assert report.status == (REFUTED if derivation.expect == "refuted" else PROVED)
    if derivation.expect == "refuted":
        assert report.failure is not None and report.failure.inputs, "a refutation shows its counterexample"
