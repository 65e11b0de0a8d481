"""The machinery derivations of proofs/streaming.py (S1–S3) hold, and wrong rules planted in them
are caught at the step where they enter."""

from __future__ import annotations


import jax
import jax.numpy as jnp
import pytest
from planted import planted
from strategies import examples

from proofs import streaming as PS
from vfe import sharding
from vfe import streaming as ST
from vfe.derivation import FAILED, PROVED

DERIVATIONS = [PS.S1, PS.S2, PS.S2_ENTROPY, PS.S3, PS.S3_LINEAR, PS.S3_LINEAR_SUM, PS.S3_KL]


@pytest.mark.parametrize("derivation", DERIVATIONS, ids=lambda d: f"{d.claim}-{d.title[:30]}")
def test_machinery_derivation_is_proved(derivation):
    report = derivation.verify(max_examples=examples(40))
    assert report.status == PROVED
    assert report.n_examples >= examples(40)


def test_every_derivation_cites_a_declared_machinery_claim():
    declared = {c.id for c in PS.CLAIMS}
    assert declared == {"S1", "S2", "S3"}
    assert {d.claim for d in DERIVATIONS} == declared


# --- planted errors -----------------------------------------------------------------------------


def _combine_without_rescale(a, b):
    """The online rule with the rescaling of ``s`` by ``e^{m - m'}`` forgotten."""
    return jnp.maximum(a[0], b[0]), a[1] + b[1]


def _library_style_online_lse(z, combine):
    m0 = jnp.maximum(z, jnp.finfo(z.dtype).min)

    def step(carry, x):
        out = combine(carry, x)
        return out, out

    init = (jnp.finfo(z.dtype).min * jnp.ones((), z.dtype), jnp.zeros((), z.dtype))
    m, s = jax.lax.scan(step, init, (m0, jnp.exp(z - m0)))[1]
    return m + jnp.log(s)


def _online_entropy_without_shift(z):
    """``t`` carried over without the ``(m - m')s`` term."""
    def step(carry, x):
        m, s, t = carry
        m_new = jnp.maximum(m, x)
        r = jnp.exp(jnp.where(m == m_new, 0.0, m - m_new))
        e = jnp.where(jnp.isneginf(x), 0.0, jnp.exp(x - m_new))
        d = jnp.where(jnp.isneginf(x), 0.0, x - m_new)
        out = (m_new, s * r + e, r * t + e * d)
        return out, out

    zero = jnp.zeros((), z.dtype)
    _, s, t = jax.lax.scan(step, (jnp.full((), -jnp.inf, z.dtype), zero, zero), z)[1]
    return jnp.log(s) - t / s


def _shards_summing_maxima(z, y, p):
    """A sharded NLL that combines the shard maxima with a sum (psum) where a max (pmax) belongs."""
    zs = PS._shards(z, p)
    m = jnp.sum(jnp.max(zs, axis=-1))
    held = PS._shards(jnp.arange(PS._N) == y, p)
    return jnp.log(jnp.sum(jnp.exp(zs - m))) - jnp.sum(jnp.where(held, zs - m, 0.0))


def _label_from_every_shard(z, y, p):
    """Every device adds its own local logit at ``y mod n/P`` (no check that it holds ``y``)."""
    def body(zl):
        m, log_s = sharding.shard_log_normaliser(zl, "vocab")
        local = jnp.take(zl, y % zl.shape[-1])
        return log_s[0] - jax.lax.psum(local - m[0], "vocab")

    return jax.vmap(body, axis_name="vocab")(PS._shards(z, p))[0]


def _per_token_head_loss(h, w, y):
    z = h @ w
    return jax.nn.logsumexp(z, axis=-1) - jnp.take_along_axis(z, y[:, None], -1)[:, 0]


def _overlap_token_counted_twice(h, w, y):
    """The summed head with chunks (0, 1), (2, 3), (3, 4): token 3, covered by the early-starting last
    chunk, added again (value and gradients)."""
    return PS._sum_and_gradients(lambda h, w, y: jnp.sum(_per_token_head_loss(h, w, y))
                                 + _per_token_head_loss(h, w, y)[3])(h, w, y)


def _dh_from_one_shard(h, w, y):
    """∂h = G_1 W_1ᵀ of the first of 4 shards only (the psum over the vocabulary forgotten)."""
    z = h @ w
    grad = jax.nn.softmax(z) - jax.nn.one_hot(y, z.shape[-1], dtype=z.dtype)
    n = w.shape[1] // 4
    dh, dw = grad[:, :n] @ w[:, :n].T, h.T @ grad
    return jnp.concatenate([jnp.sum(_per_token_head_loss(h, w, y))[None], dh.ravel(), dw.ravel()])


def _kl_of_each_shard_alone(a, b):
    """The accurate KL passes on 4 devices with no collective: device 0's KL of its own 3 classes."""
    def device(al, bl):
        return ST._KL_FORWARD["accurate"](ST.Stream((al, bl), ST.rows_for(al.shape[-1], None)))[0]

    return jax.vmap(device)(PS._shards(a, 4), PS._shards(b, 4))[0]


PLANTED = {
    "S1 sum of the partial lse": (PS.S1, 4, lambda z, k: jnp.sum(jnp.stack(PS._split(z, k)))),
    "S2 no rescale of s": (PS.S2, 3, lambda z: PS._online_lse(z, rescale=False)),
    "S2 library combine without rescale": (PS.S2, 4, lambda z: _library_style_online_lse(z, _combine_without_rescale)),
    "S2 entropy without the (m - m')s term": (PS.S2_ENTROPY, 2, _online_entropy_without_shift),
    "S3 psum of the shard maxima": (PS.S3, 2, lambda z, y: _shards_summing_maxima(z, y, 4)),
    "S3 label logit from every shard": (PS.S3, 3, lambda z, y: _label_from_every_shard(z, y, 4)),
    "S3 summed head counts the overlap twice": (PS.S3_LINEAR_SUM, 2, _overlap_token_counted_twice),
    "S3 summed head, dh of one shard": (PS.S3_LINEAR_SUM, 3, _dh_from_one_shard),
    "S3 KL, each shard's passes alone": (PS.S3_KL, 2, _kl_of_each_shard_alone),
    "S3 KL direct, arguments swapped": (PS.S3_KL, 4, lambda a, b: PS._kl_simulated(b, a, 4, "direct")),
}


@pytest.mark.parametrize("name", sorted(PLANTED))
def test_planted_wrong_rule_is_caught_at_its_step(name):
    derivation, number, wrong = PLANTED[name]
    report = planted(derivation, number, wrong).check(max_examples=examples(40))
    assert report.status == FAILED, report.text()
    assert report.failure.step_number == number, report.text()
