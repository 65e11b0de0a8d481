"""The proofs of claims E6 and E7 catch errors planted in them, one or more per check kind.

Each test replaces one step's function of a derivation of ``proofs/in_context.py`` by a plausible
mistake — the projection's sign flipped, the 1/N dropped, the KL divergence reversed, a limit
that ignores indistinguishable intents, a bound of ε/2 — and asserts that the checker reports FAILED at that very step.
(tests/test_proofs.py runs the correct derivations.)
"""

from __future__ import annotations


import jax
import jax.numpy as jnp
import numpy as np
import pytest
from planted import assert_caught_at_its_step

import vfe
from proofs import in_context as icp
from vfe import in_context as ic
from vfe.derivation import Derivation


def _lsa_with(x, y, x_query, eta, w0, where, *, sign=1.0, per_n=True):
    """The LSA readout with one part of the construction changed."""
    dim_x = x.shape[-1]
    n = icp._n(where) if per_n else 1.0
    w = ic.gd_weights(dim_x, y.shape[-1], eta, 1, w0=w0)
    context, queries = icp._tokens(x, y, x_query, w0)
    return -ic.linear_self_attention(context, queries, w.w_k, w.w_q, w.w_v, sign * w.proj / n, where=where)[:, dim_x:]


def _e7_odds_step4(log_prior, log_emissions, star, k, *, reverse=False, shift=0):
    p = jnp.exp(log_emissions)
    p_star = jnp.broadcast_to(p[star], p.shape)
    kl = vfe.kl_divergence(p, p_star) if reverse else vfe.kl_divergence(p_star, p)
    odds = (log_prior[star] - log_prior) + (k + shift) * kl
    return jnp.where(jnp.arange(icp.K) == star, 0.0, odds)


PLANTED = {
    # identity: P = -(η/N) I (the update moves y the wrong way)
    "E6 sign of P flipped": (icp.E6_LSA_IS_GD, 1, lambda **a: _lsa_with(**a, sign=-1.0)),
    # identity: P = η I (the sum is not averaged)
    "E6 missing 1/N": (icp.E6_LSA_IS_GD, 1, lambda **a: _lsa_with(**a, per_n=False)),
    # identity: KL(p_θ ‖ p_θ*) instead of KL(p_θ* ‖ p_θ)
    "E7 KL reversed": (icp.E7_ODDS, 4, lambda **a: _e7_odds_step4(**a, reverse=True)),
    # limit: the posterior tends to 1 even when another intent is indistinguishable
    "E7 limit ignores indistinguishable intents": (icp.E7_CONCENTRATION, 2, lambda **_: jnp.ones(())),
    # inequality: Bayes error at most ε/2
    "E7 Bayes error below eps/2": (icp.E7_BAYES_ERROR, 4, lambda log_prior, log_emissions, star:
                                   ic.ambiguity(log_prior, log_emissions) / 2),
}


@pytest.mark.parametrize("name", sorted(PLANTED))
def test_planted_error_is_caught_at_its_step(name):
    """E6, E7: each planted mistake is reported FAILED at the step it was planted in."""
    assert_caught_at_its_step(*PLANTED[name])


def test_concentration_is_not_reached_at_small_k():
    """E7: the limit is a real one: with overlapping intents (b_θ* in [0.05, 0.3], the others in
    [0.65, 0.95] or equal to b_θ*) and positive priors, the expected posterior at k = 1 is off its
    limit by more than 1e-6, so the '->' check is not met all along the schedule; at the end of the
    schedule (k = 2048) it is within 1e-9."""
    rng = np.random.default_rng(7)
    for _ in range(10):
        b = np.array([rng.uniform(0.05, 0.3), rng.uniform(0.65, 0.95), rng.uniform(0.65, 0.95)])
        b[2] = b[0] if rng.random() < 0.5 else b[2]
        prior = rng.dirichlet(np.ones(3))
        args = (jnp.log(prior), jnp.log(np.stack([1 - b, b], -1)), jnp.asarray(0))
        e1, limit = _at_k(*args, jnp.asarray(1.0))
        far, _ = _at_k(*args, jnp.asarray(float(icp._K_MAX)))
        assert abs(float(e1) - float(limit)) > 1e-6, (e1, limit, b, prior)
        assert abs(float(far) - float(limit)) < 1e-9, (far, limit, b, prior)


@jax.jit
def _at_k(log_prior, log_emissions, star, k):
    return (icp._expected_posterior(log_prior, log_emissions, star, k),
            icp._indistinguishable_share(log_prior, log_emissions, star))


def test_every_derivation_cites_e6_or_e7():
    ids = {c.id for c in icp.CLAIMS}
    assert ids == {"E6", "E7"}
    proved = {d.claim for d in vars(icp).values() if isinstance(d, Derivation)}
    assert proved == ids
