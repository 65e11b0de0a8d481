"""The proofs of claims E4 and E5 catch errors planted in them, one per check kind.

Each test replaces one step of a derivation of ``proofs/scaling.py`` by a plausible mistake — the
exponents of N and D swapped (checked by autodiff, and by the optimiser), exact match exp(−CE)
without the length, a transition that narrows like 1/L, a slope without the factor L or a steepest
slope that grows with L, a linear metric bounded the wrong way — and asserts that the checker
reports FAILED at that very step (one or more per check kind; tests/test_proofs.py runs the correct
derivations).
"""

from __future__ import annotations

import math

import jax.numpy as jnp
import pytest
from planted import assert_caught_at_its_step, planted
from strategies import examples

import vfe
from proofs import scaling as sc
from vfe import emergence, scaling
from vfe.derivation import FAILED, Derivation, Terms


_K = scaling.KAPLAN


def _swapped_log_n_opt(log_c, e, a, b, alpha, beta):
    """log N_opt with the exponent of D: log G + α/(α+β) log(C/6)."""
    return (jnp.log(alpha * a) - jnp.log(beta * b)) / (alpha + beta) + alpha / (alpha + beta) * (log_c - sc._LOG6)


def _swapped_optimum(log_c, **c):
    u = _swapped_log_n_opt(log_c, **c)
    return jnp.stack([u, sc._isoflop_loss(u, log_c, **c)])


PLANTED = {
    # derivative: a = α/(α+β) (Kaplan-style: the larger exponent on N)
    "E4 exponents swapped": (sc.E4_EXPONENTS, 1, lambda alpha, beta, **_: jnp.stack([alpha, beta]) / (alpha + beta)),
    # identity: exact match exp(−CE): the length forgotten
    "E5 exact match without L": (sc.E5_EXACT_MATCH, 4, lambda logits, tokens, mask: jnp.log(
        emergence.exact_match(vfe.mean_token_nll(logits, tokens, where=mask), 1.0))),
    # identity: a width that shrinks like 1/L
    "E5 width shrinks like 1/L": (sc.E5_WIDTH_IN_LOG_N, 4, lambda length, alpha, log_n_c: sc._GUMBEL_WIDTH / (alpha * length)),
    # derivative: dEM/dlogN without the factor L
    "E5 slope without L": (sc.E5_SLOPE, 1, lambda length, alpha, log_n_c, u:
                           alpha * sc._ce(u, alpha, log_n_c) * jnp.exp(-length * sc._ce(u, alpha, log_n_c))),
    # derivative: a steepest slope that grows with L
    "E5 steepest slope αL/e": (sc.E5_STEEPEST_SLOPE, 1, lambda length, alpha, log_n_c: alpha * length / math.e),
    # inequality: the geometric mean replaced by the largest probability (the bound goes the other way)
    "E5 linear metric bound reversed": (sc.E5_LINEAR_METRIC, 3, lambda p, mask: Terms(
        jnp.sum(mask), -jnp.sum(mask) * jnp.max(jnp.where(mask, p, 0.0)))),
}


@pytest.mark.parametrize("name", sorted(PLANTED))
def test_planted_error_is_caught_at_its_step(name):
    assert_caught_at_its_step(*PLANTED[name])


def test_e4_a_wrong_closed_form_is_caught_by_the_optimiser():
    """Variational: the closed form with the exponents of N and D swapped, stated consistently in steps 1
    and 2 (so only L-BFGS can object), is beaten by the optimiser at step 3 on the loss component."""
    d = planted(sc.E4_COMPUTE_OPTIMAL, 1, _swapped_optimum)
    d = planted(d, 2, _swapped_optimum)
    report = d.check(max_examples=examples(5))
    assert report.status == FAILED and report.failure.step_number == 3, report.text()
    assert report.failure.value[1] <= report.failure.previous[1]


def test_every_claim_is_declared_and_proved_by_some_derivation():
    assert {c.id for c in sc.CLAIMS} == {"E4", "E5"}
    assert {d.claim for d in vars(sc).values() if isinstance(d, Derivation)} == {"E4", "E5"}
    loose = [c for c in sc.CLAIMS if not c.verdict.startswith("correct")]
    for claim in loose:
        assert any(d.claim == claim.id and d.expect == "refuted" for d in vars(sc).values() if isinstance(d, Derivation))
