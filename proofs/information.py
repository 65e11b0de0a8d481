"""Information theory (claims A1–A7 of ``CLAIMS.md``; seed 002)."""

from __future__ import annotations

import jax.numpy as jnp
from hypothesis import strategies as st

import vfe
from proofs.catalogue import Claim
from vfe import testing as vt
from vfe.derivation import Derivation, Step, Terms

CLAIMS = (
    Claim(
        id="A1", title="Cross-entropy = entropy + KL divergence", seeds=("002",),
        wording="「H(p,q)=H(p)+D_{\\mathrm{KL}}(p|q) が成り立つ」 (\"H(p,q) = H(p) + KL(p‖q) holds\"), "
                "after defining H(p,q) = −Σ p log q",
        statement=r"$H(p,q) = -\sum_i p_i\log q_i = H(p) + \mathrm{KL}(p\,\|\,q)$, with $0\log 0 = 0$, "
                  r"and $+\infty$ on both sides when $q_i = 0 < p_i$",
        functions=("vfe.cross_entropy", "vfe.entropy", "vfe.kl_divergence"),
    ),
)


def _pairs(pq):
    p, q = pq
    return {"p": p, "q": q}


def _plogp_over(p, q):
    """``p log(p/q)`` elementwise with ``0 log(0/q) = 0`` (``+inf`` where ``q = 0 < p``)."""
    return jnp.where(p > 0, p * (jnp.log(jnp.where(p > 0, p, 1.0)) - jnp.log(q)), 0.0)


def _neg_plogq(p, q):
    return jnp.where(p > 0, -p * jnp.log(q), 0.0)


A1 = Derivation(
    claim="A1",
    title="Cross-entropy = entropy + KL divergence",
    statement=r"H(p,q) = -\sum_i p_i\log q_i = H(p) + \mathrm{KL}(p\,\|\,q)",
    inputs=st.one_of(*(vt.distribution_pairs(support=s) for s in ("shared", "nested", "partial", "near"))).map(_pairs),
    steps=[
        Step(r"H(p,q)", "vfe.cross_entropy", lambda p, q: vfe.cross_entropy(p, q)),
        Step(r"-\sum_i p_i \log q_i", r"definition of cross-entropy, with $0 \log q = 0$",
             lambda p, q: jnp.sum(_neg_plogq(p, q))),
        Step(r"-\sum_i p_i\log p_i + \sum_i p_i\log\frac{p_i}{q_i}",
             r"add and subtract $\sum_i p_i \log p_i$ (finite: $0 \le -p\log p \le 1/e$)",
             lambda p, q: Terms(jnp.sum(_neg_plogq(p, p)), jnp.sum(_plogp_over(p, q)))),
        Step(r"H(p) + \mathrm{KL}(p\,\|\,q)", "definitions of entropy and KL; vfe.entropy, vfe.kl_divergence",
             lambda p, q: Terms(vfe.entropy(p), vfe.kl_divergence(p, q))),
    ],
)
