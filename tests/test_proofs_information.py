"""Errors planted in the proofs of claims A2–A7 are caught at their step.

Each case replaces one step's function (``dataclasses.replace``, as ``_planted`` in
tests/test_proofs.py) by a plausible mistake, and the checker must report FAILED at that step.
"""

from __future__ import annotations


import jax
import jax.numpy as jnp
import pytest
from planted import planted
from strategies import examples

import vfe
from proofs import information as info
from vfe import coding, gaussian
from vfe.derivation import FAILED, Terms


PLANTED = {
    # identity
    "A2 label off by one": (info.A2, 3, lambda q, y: -jnp.log(info._picked(q, (y + 1) % q.shape[-1]))),
    "A2 mean where the NLL sums": (info.A2_NLL, 4,
                                   lambda z, y: jnp.sum(jnp.mean(vfe.cross_entropy_with_integer_labels(z, y), axis=-1))),
    "A5 frequencies not normalised": (info.A5_AVERAGE_NLL, 2,
                                      lambda x, z: jnp.sum(info._neg_plogq(jnp.bincount(x, length=z.shape[-1]) * 1.0,
                                                                           jax.nn.softmax(z)))),
    "A7 log2 where ln belongs": (info.A7_PERPLEXITY, 3, lambda z, y: jnp.exp2(info._mean_nll(z, y))),
    # inequality
    "A3 swapped KL": (info.A3, 2, lambda p, q: Terms(vfe.entropy(p), vfe.kl_divergence(q, p))),
    "A3 Pinsker without the 1/2": (info.A3_STRICT, 1,
                                   lambda p, q: vfe.kl_divergence(p, q) / (2 * info._half_l1_squared(p, q))),
    "A6 reverse KL bounded by -log max p": (info.A6_ASYMMETRY, 4, lambda p, q: -jnp.log(jnp.max(p))),
    "A7 floor where the ceiling belongs": (info.A7_KRAFT, 1,
                                           lambda p: coding.kraft_sum(jnp.maximum(coding.shannon_code_lengths(p) - 1, 0))),
    "A7 E[l] below the entropy": (info.A7_SHANNON, 3,
                                  lambda p: coding.expected_code_length(p, jnp.maximum(coding.shannon_code_lengths(p) - 1, 0))),
    # variational
    "A4 uniform minimiser": (info.A4_ARGMIN, 1, lambda p: jnp.full_like(p, 1 / p.shape[-1])),
    "A4 minimum too high": (info.A4, 1, lambda p: vfe.entropy(p) + 1e-6),
    "A5 Laplace-smoothed MLE": (info.A5_MLE, 1,
                                lambda x, z: (jnp.bincount(x, length=info._A5_K) + 1) / (x.shape[0] + info._A5_K)),
    "A6 forward optimum claimed at the heavier mode": (
        info.A6_FORWARD, 2, lambda weights, means, stds: jnp.stack([means[jnp.argmax(weights)], stds[jnp.argmax(weights)]])),
    "A6 reverse optimum claimed at the moment match": (
        info.A6_REVERSE, 1, lambda weights, means, stds: jnp.stack(gaussian.moment_match(weights, means, stds))),
}


@pytest.mark.parametrize("name", sorted(PLANTED))
def test_planted_error_is_caught_at_its_step(name):
    derivation, number, wrong = PLANTED[name]
    report = planted(derivation, number, wrong).check(max_examples=examples(20))
    assert report.status == FAILED, report.text()
    expected = number + 1 if number == 1 else number  # a wrong first step shows against step 2
    assert report.failure.step_number == expected, report.text()
