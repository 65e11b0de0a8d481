"""The proofs of claim E3 catch errors planted in them, one per check kind.

Each test replaces one step of a derivation of ``proofs/langevin.py`` by a plausible mistake —
the quoted variance σ²/(1 − η/(4σ²)) used with the step η∇log p + √(2η)ξ, a limit σ²/2 (the
limit of a chain with noise √η), Song & Ermon's bias coefficient ¼ where ½ belongs, and the target
variance σ² taken for the stationary one — and asserts that the checker reports FAILED at that
very step. (tests/test_proofs.py runs the correct derivations.)
"""

from __future__ import annotations


import pytest
from planted import assert_caught_at_its_step

from proofs import langevin as lg
from vfe.derivation import Derivation


PLANTED = {
    # identity: the quoted formula with this convention's step η
    "E3 quoted formula with step η": (lg.E3_FIXED_POINT, 6, lambda mean, std, eta: std**2 / (1 - eta / (4 * std**2))),
    # limit: σ²/2, the limit of the chain whose noise is √η
    "E3 limit σ²/2": (lg.E3_SMALL_STEP, 3, lambda std, eta: std**2 / 2 + 0 * eta),
    # derivative: the first-order bias ε/4 of Song & Ermon's step read as η/4
    "E3 bias coefficient 1/4": (lg.E3_BIAS, 1, lambda std, eta: 0.25 / (1 - eta / (2 * std**2)) ** 2),
    # distributional: ULA samples the target itself (no discretisation bias)
    "E3 stationary law N(μ, σ²)": (lg.E3_LAW, 1, lambda mean, std, eta: lg._normal_cdf(lg._grid(mean, std), mean, std**2)),
}


@pytest.mark.parametrize("name", sorted(PLANTED))
def test_planted_error_is_caught_at_its_step(name):
    assert_caught_at_its_step(*PLANTED[name])


def test_every_claim_is_declared_and_proved_by_some_derivation():
    assert {c.id for c in lg.CLAIMS} == {"E3"}
    assert {d.claim for d in vars(lg).values() if isinstance(d, Derivation)} == {"E3"}
