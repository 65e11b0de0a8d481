"""vfe.sharding: vocabulary-sharded reductions equal the unsharded ones and never gather the logits.

Two levels:

* in this process (one CPU device): the per-device functions run on P simulated devices
  (``jax.vmap`` with ``axis_name``, whose ``pmax``/``psum``/``axis_index`` are those of
  ``shard_map``) and are compared with :mod:`vfe.streaming` on the whole rows, with Hypothesis;
* in a fresh interpreter with ``XLA_FLAGS=--xla_force_host_platform_device_count=4`` (the flag
  must be set before jax is imported): the public functions under ``shard_map`` on meshes
  ``(model=4)`` and ``(data=2, model=2)``, values and gradients against the unsharded functions, and
  the compiled programs (``jax.jit(f).lower(...).compile().as_text()``) searched for collectives:
  no all-gather or all-to-all, and every all-reduce has a per-token shape (no vocabulary axis).

Tolerance (float64): ``oracle.rtol(float64, V)`` times ``1 + |value|`` (or the largest gradient
entry): the sharded and unsharded sums differ only in the order of their V terms.
"""

from __future__ import annotations

import functools
import os
import subprocess
import sys
import textwrap
from pathlib import Path

import jax
import jax.numpy as jnp
import numpy as np
import oracle as O
import pytest
import strategies as S
from hypothesis import given, settings
from hypothesis import strategies as st
from hypothesis.extra import numpy as hnp

from vfe import linear_cross_entropy as LCE
from vfe import sharding as SH
from vfe import streaming as ST

V = 24  # classes: shards of 12, 8, 6 and 4


# each simulated device reduces its slice (12, 8 or 6 classes) in blocks of 2: the two-level sum
# (block partials, then their sum) is what the psum completes
SLICE_ROWS = ST.Rows("blocked", 2)


def _split(x, p):
    """``x``'s last axis cut into the slices of ``p`` devices: ``[p, ..., V/p]``."""
    return jnp.moveaxis(x.reshape(*x.shape[:-1], p, -1), -2, 0)


def _joined(x):
    """The inverse of :func:`_split`: ``[p, ..., V/p]`` → ``[..., V]``."""
    return jnp.moveaxis(x, 0, -2).reshape(*x.shape[1:-1], -1)


def _simulate(f, x, p, *, in_axes=0):
    """``f`` on ``p`` simulated devices, each given its slice of ``x``'s last axis (``[p, ..., V/p]``)."""
    return jax.vmap(f, axis_name="vocab", in_axes=in_axes)(_split(x, p))


def _close(got, want, what):
    want = np.asarray(want, np.float64)
    O.assert_close(got, want, O.rtol(np.float64, V) * (1 + np.abs(O.finite_part(want))), what)


@functools.partial(jax.jit, static_argnums=2)
def _per_device(z, y, p):
    """(lse, H, NLL, gradient slices of Σ g·NLL) on ``p`` simulated devices, and the unsharded values."""
    m, log_s = _simulate(lambda zl: SH.shard_log_normaliser(zl, "vocab"), z, p)
    entropy = _simulate(lambda zl: SH.shard_entropy(zl, "vocab")[2], z, p)
    loss = _simulate(lambda zl: SH.shard_cross_entropy_with_integer_labels(zl, y, "vocab")[0], z, p)
    g = jnp.cos(jnp.arange(z.shape[0]))
    stats = ST._log_normaliser(z, ST.rows_for(V, None))
    grad = _simulate(lambda zl: SH.shard_softmax_grad(zl, y, stats[0][:, 0], stats[1][:, 0], g, "vocab"), z, p)
    whole = jax.grad(lambda z: jnp.sum(g * ST.cross_entropy_with_integer_labels(z, y)))(z)
    sharded = (m + log_s, entropy, loss, jnp.moveaxis(grad, 0, -2).reshape(z.shape))
    return m, sharded, (ST.logsumexp(z), ST.entropy_from_logits(z), ST.cross_entropy_with_integer_labels(z, y), whole)


@pytest.mark.parametrize("p", [2, 3, 4, 6])
@settings(max_examples=S.examples(10))
@given(data=st.data())
def test_per_device_functions_on_simulated_devices_equal_the_unsharded_ones(p, data):
    """Masks, ties and logits of 1e4 included; every simulated device holds the same statistics."""
    z = data.draw(S.logits(V, batch=3))
    y = data.draw(S.labels(V, batch=3))
    m, (lse, entropy, loss, grad), (lse1, entropy1, loss1, grad1) = _per_device(z, y, p)
    assert np.all(np.asarray(m) == np.asarray(m)[:1])
    _close(lse[0, :, 0], lse1, "lse")
    _close(entropy[0, :, 0], entropy1, "H")
    _close(loss[0], loss1, "nll")
    O.assert_close(grad, grad1, O.rtol(np.float64, V) * (1 + np.max(np.abs(grad1))), "grad slices, side by side")


def test_per_device_normalisers_shift_by_the_guess_in_one_pass():
    """The shift of shard_log_normaliser is the maximum of the row's first classes (each slice's first
    256, then a pmax) and that of the integer cross-entropy the label's own logit, not the row maximum
    (which takes a pass of its own): one pass over the slices. Where a shifted sum overflows
    (``max - guess > 709``) or the label is masked, every row is shifted by its maximum instead; the
    values equal the unsharded ones either way."""
    p, local = 4, 300
    rng = np.random.default_rng(0)
    z = rng.standard_normal((3, p * local))
    z[:, 2 * local + 299] = 10.0  # each row's maximum, outside every slice's first 256 classes
    y = jnp.array([5, 700, 1199], jnp.int32)
    run = jax.jit(lambda z: (_simulate(lambda zl: SH.shard_log_normaliser(zl, "vocab"), z, p),
                             _simulate(lambda zl: SH.shard_cross_entropy_with_integer_labels(zl, y, "vocab"), z, p)))

    def check(z, lse_shift, nll_shift):
        (c, log_s), (loss, c_y, _) = run(jnp.asarray(z))
        np.testing.assert_array_equal(c[0, :, 0], lse_shift)
        np.testing.assert_array_equal(c_y[0], nll_shift)
        _close((c + log_s)[0, :, 0], ST.logsumexp(z), "lse")
        _close(loss[0], ST.cross_entropy_with_integer_labels(z, y), "nll")

    heads = np.max(z.reshape(3, p, local)[..., :256], axis=(1, 2))
    check(z, heads, z[np.arange(3), y])
    over = z.copy()
    over[1, 3 * local + 280] = 800.0  # outside the heads too
    check(over, over.max(-1), over.max(-1))
    masked = z.copy()
    masked[0, 5] = -np.inf
    check(masked, heads, masked.max(-1))


def test_a_label_out_of_range_gives_nan_on_simulated_devices_as_unsharded():
    """A label outside ``[0, V)`` is held by no device: its token's loss is NaN (the unsharded functions'
    gather gives NaN), not the log-normaliser alone; the other tokens are unaffected."""
    rng = np.random.default_rng(1)
    z, h, w = rng.standard_normal((3, V)), rng.standard_normal((3, 3)), rng.standard_normal((3, V))
    y = jnp.array([-100, 5, V + 3], jnp.int32)
    counted = jnp.array([False, True, False])
    nll = _simulate(lambda zl: SH.shard_cross_entropy_with_integer_labels(zl, y, "vocab")[0], z, 4)[0]
    linear = _simulate(lambda wl: SH.shard_linear_cross_entropy(h, wl, y, "vocab", (2, 5))[0], w, 4)[0]
    totals = [_simulate(lambda wl: SH.shard_linear_total(h, wl, y, c, "vocab", (3, 11))[0], w, 4)[0]
              for c in (jnp.ones(3, bool), counted)]
    for got, want in ((nll, ST.cross_entropy_with_integer_labels(z, y)), (linear, LCE.linear_cross_entropy(h, w, y))):
        assert np.all(np.isnan(np.asarray(got)[[0, 2]])) and np.all(np.isnan(np.asarray(want)[[0, 2]]))
        _close(got[1], want[1], "the valid token")
    assert np.isnan(totals[0])
    _close(totals[1], ST.cross_entropy_with_integer_labels(h @ w, y)[1], "only the valid token counted")


@st.composite
def _heads(draw):
    h = draw(hnp.arrays(np.float64, (5, 3), elements=st.floats(-3, 3)))
    w = draw(hnp.arrays(np.float64, (3, V), elements=st.floats(-3, 3)))
    return h, w, draw(hnp.arrays(np.int32, (5,), elements=st.integers(0, V - 1)))


@functools.partial(jax.jit, static_argnums=3)
def _linear_per_device(h, w, y, p):
    blocks = (2, 5)
    loss = _simulate(lambda wl: SH.shard_linear_cross_entropy(h, wl, y, "vocab", blocks)[0], w, p)
    g = jnp.cos(jnp.arange(h.shape[0]))
    m, s = LCE._statistics(h, w, (5, V))
    dh, dw = _simulate(lambda wl: SH.shard_linear_backward(h, wl, y, m, jnp.log(s), g, "vocab", blocks), w, p)
    whole = jax.grad(lambda h, w: jnp.sum(g * LCE.linear_cross_entropy(h, w, y)), (0, 1))(h, w)
    return (loss[0], dh[0], jnp.moveaxis(dw, 0, -2).reshape(w.shape)), (LCE.linear_cross_entropy(h, w, y), *whole)


@pytest.mark.parametrize("p", [2, 4])
@settings(max_examples=S.examples(6))
@given(heads=_heads())
def test_linear_head_on_simulated_devices_equals_the_unsharded_one(p, heads):
    (loss, dh, dw), (loss1, dh1, dw1) = _linear_per_device(*heads, p)
    _close(loss, loss1, "linear loss")
    big = 1 + max(np.max(np.abs(dh1)), np.max(np.abs(dw1)))
    O.assert_close(dh, dh1, O.rtol(np.float64, V) * big, "dh")
    O.assert_close(dw, dw1, O.rtol(np.float64, V) * big, "dW slices, side by side")


@functools.partial(jax.jit, static_argnums=(4, 5))
def _linear_total_per_device(h, w, y, counted, p, blocks):
    """``(Σ ℓ, ∂h, ∂W)`` over the counted tokens from :func:`SH.shard_linear_total` on ``p`` simulated
    devices, and those of the materialised logits."""
    total, dh, dw = _simulate(lambda wl: SH.shard_linear_total(h, wl, y, counted, "vocab", blocks), w, p)
    exact = lambda h, w: jnp.sum(jnp.where(counted, ST.cross_entropy_with_integer_labels(h @ w, y), 0.0))
    whole = jax.value_and_grad(exact, (0, 1))(h, w)
    return (total[0], dh[0], jnp.moveaxis(dw, 0, -2).reshape(w.shape)), (whole[0], *whole[1])


@pytest.mark.parametrize("p", [2, 4])
@pytest.mark.parametrize("blocks", [(1, 1), (3, 11)], ids=str)
@settings(max_examples=S.examples(6))
@given(heads=_heads(), counted=hnp.arrays(np.bool_, (5,)))
def test_summed_linear_loss_with_gradients_from_the_forward_pass_on_simulated_devices(p, blocks, heads, counted):
    """``reduction="sum"``'s per-device pass: one-token chunks, and (3 · 11 // (V/p)) tokens whose last
    chunk overlaps the one before, some tokens not counted; every simulated device holds the same
    total and ``∂h``."""
    (total, dh, dw), (total1, dh1, dw1) = _linear_total_per_device(*heads, counted, p, blocks)
    _close(total, total1, "summed linear loss")
    big = 1 + max(np.max(np.abs(dh1)), np.max(np.abs(dw1)))
    O.assert_close(dh, dh1, O.rtol(np.float64, V) * big, "dh")
    O.assert_close(dw, dw1, O.rtol(np.float64, V) * big, "dW slices, side by side")


@functools.partial(jax.jit, static_argnums=(2, 3))
def _kl_per_device(a, b, p, formula):
    """KL and its gradients (of Σ g·KL) on ``p`` simulated devices, and the unsharded ones."""
    g = jnp.cos(jnp.arange(a.shape[0]))

    def body(al, bl):
        value, stats = ST._KL_FORWARD[formula](ST.Stream((al, bl), SLICE_ROWS, "vocab"))
        return (value, *ST._kl_bwd(None, formula, (al, bl, value, stats), g))

    value, da, db = jax.vmap(body, axis_name="vocab")(_split(a, p), _split(b, p))
    whole = functools.partial(ST.kl_divergence_from_logits, formula=formula)
    return (value[0], _joined(da), _joined(db)), (whole(a, b), *jax.grad(lambda a, b: jnp.sum(g * whole(a, b)),
                                                                         (0, 1))(a, b))


@pytest.mark.parametrize("formula", ST.KL_FORMULAS)
@pytest.mark.parametrize("p", [2, 3, 4])
@settings(max_examples=S.examples(8))
@given(data=st.data())
def test_kl_on_simulated_devices_equals_the_unsharded_one(formula, p, data):
    """Both KL formulas with every reduction completed over the simulated devices (masks, ties, logits
    of 1e4, rows where b masks a class a allows: +inf): value and both gradients. ``∂KL/∂a_i =
    p_i(d_i - KL)`` is a difference of two terms of size ``|KL|``, so its rounding scales with the
    row's KL (1e4 for a = [-30, 0, …], b = [1e4, 0, …]: 2e-11 between two summation orders)."""
    a, b = data.draw(S.logits(V, batch=3)), data.draw(S.logits(V, batch=3))
    sharded, whole = _kl_per_device(a, b, p, formula)
    _close(sharded[0], whole[0], f"KL {formula}")
    kl = np.abs(O.finite_part(np.asarray(whole[0], np.float64)))[:, None]
    da = np.asarray(whole[1], np.float64)
    O.assert_close(sharded[1], da, O.rtol(np.float64, V) * (1 + np.abs(da) + kl), f"dKL/da {formula}")
    _close(sharded[2], whole[2], f"dKL/db {formula}")  # q - p: no cancellation against KL


@functools.partial(jax.jit, static_argnums=2)
def _soft_ce_per_device(q, z, p):
    """Soft-label CE and its gradients (of Σ g·CE) on ``p`` simulated devices, and the unsharded ones."""
    g = jnp.cos(jnp.arange(z.shape[0]))

    def body(ql, zl):
        value, stats = ST._soft_ce_forward(ST.Stream((zl, ql), SLICE_ROWS, "vocab"), True)
        return (value, *ST._soft_ce_bwd(None, (ql, zl, *stats), g))

    value, dq, dz = jax.vmap(body, axis_name="vocab")(_split(q, p), _split(z, p))
    whole = ST.cross_entropy_from_logits
    return (value[0], _joined(dq), _joined(dz)), (whole(q, z), *jax.grad(lambda q, z: jnp.sum(g * whole(q, z)),
                                                                          (0, 1))(q, z))


@functools.partial(jax.jit, static_argnums=(2, 3))
def _thermo_per_device(e, k, p, kind):
    """log Z (β) or F (T) and their gradients on ``p`` simulated devices, and the unsharded ones."""
    g = jnp.cos(jnp.arange(e.shape[0]))

    def body(el):
        stream = ST.Stream((el,), SLICE_ROWS, "vocab")
        value, (m, log_s) = ST._thermo_forward(stream, k[..., None], kind)
        return (value, *ST._thermo_backward(el, stream.again(), k, m, log_s, g, kind))

    value, de, dk = jax.vmap(body, axis_name="vocab")(_split(e, p))
    whole = ST.log_partition if kind == ST.BETA else ST.helmholtz_free_energy
    return (value[0], _joined(de), dk[0]), (whole(e, k), *jax.grad(lambda e, k: jnp.sum(g * whole(e, k)),
                                                                    (0, 1))(e, k))


@pytest.mark.parametrize("p", [2, 3, 4])
@settings(max_examples=S.examples(8))
@given(data=st.data())
def test_soft_labels_log_z_and_free_energy_on_simulated_devices_equal_the_unsharded_ones(p, data):
    """Soft-label cross-entropy (zeros in p, masks, +inf where p weighs a masked logit), log Z at
    β ∈ {0} ∪ [1e-30, 1e30] and F at T ∈ [1e-30, 1e30]: values and gradients."""
    z, q = data.draw(S.logits(V, batch=3)), data.draw(S.probs(V, batch=3))
    for got, want, what in zip(*_soft_ce_per_device(q, z, p), ("CE", "dCE/dp", "dCE/dz")):
        _close(got, want, what)
    e = -data.draw(S.logits(V, batch=3))
    for kind, k in ((ST.BETA, data.draw(S.betas(batch=3))), (ST.TEMPERATURE, data.draw(S.temperatures(batch=3)))):
        for got, want, what in zip(*_thermo_per_device(e, k, p, kind), ("value", "d/dE", "d/dscale")):
            _close(got, want, f"{what} {kind}")


@pytest.mark.parametrize("formula", ST.KL_FORMULAS)
def test_float16_slices_are_reduced_in_chunks_and_agree(formula, monkeypatch):
    """float16 logits on 3 simulated devices, each slice reduced a chunk of 2 rows at a time
    (vfe.streaming's float16 path on XLA:CPU): KL, soft-label CE and their gradients equal the
    unsharded, unchunked functions of the same inputs upcast to float32, to float32 rounding
    (values) and one float16 ulp (gradients)."""
    rng = np.random.default_rng(24)
    a = (3 * rng.standard_normal((5, V))).astype(np.float16)
    b = (a.astype(np.float32) + rng.standard_normal(a.shape)).astype(np.float16)
    a[1, :4], b[1, :4] = -np.inf, -np.inf
    q = rng.dirichlet(np.ones(V), 5).astype(np.float16)
    # float16 is traced here first (no other test reduces float16 slices): the patched chunk applies
    monkeypatch.setattr(ST, "_CHUNK", 2 * (V // 3))  # 2 rows of a slice, 1 row of the whole: several chunks
    sharded = (_kl_per_device(a, b, 3, formula)[0], _soft_ce_per_device(q, a, 3)[0])
    monkeypatch.undo()
    up = [x.astype(np.float32) for x in (a, b, q)]
    whole = (_kl_per_device(up[0], up[1], 3, formula)[1], _soft_ce_per_device(up[2], up[0], 3)[1])
    for (value, *grads), (want, *want_grads) in zip(sharded, whole):
        np.testing.assert_allclose(np.asarray(value), np.asarray(want), rtol=1e-6, atol=1e-6)
        for g, w in zip(grads, want_grads):
            assert g.dtype == jnp.float16
            np.testing.assert_allclose(np.asarray(g, np.float32), np.asarray(w.astype(jnp.float16), np.float32),
                                       rtol=2.0**-10, atol=2.0**-24)


def test_planted_wrong_combination_is_rejected():
    """Adding the shards' sums taken against their own maxima, without rescaling them to the
    global maximum, is caught by the same comparison."""
    z = np.linspace(-3, 5, 2 * V).reshape(2, V)

    def wrong(zl):
        m_k = jnp.max(zl, axis=-1, keepdims=True)
        s_k = jnp.sum(jnp.exp(zl - m_k), axis=-1, keepdims=True)
        return jax.lax.pmax(m_k, "vocab") + jnp.log(jax.lax.psum(s_k, "vocab"))

    _close(_simulate(lambda zl: sum(SH.shard_log_normaliser(zl, "vocab")), z, 4)[0, :, 0], ST.logsumexp(z), "right")
    with pytest.raises(AssertionError):
        _close(_simulate(wrong, z, 4)[0, :, 0], ST.logsumexp(z), "planted")


_PLANTED_INPUTS = (2 * np.random.default_rng(1).standard_normal((3, V)), 2 * np.random.default_rng(2).standard_normal((3, V)))
_PER_DEVICE = {  # ((sharded value, gradients...), (unsharded value, gradients...)) on 4 simulated devices
    "KL accurate": lambda a, b: _kl_per_device(a, b, 4, "accurate"),
    "KL direct": lambda a, b: _kl_per_device(a, b, 4, "direct"),
    "soft CE": lambda a, b: _soft_ce_per_device(jax.nn.softmax(b), a, 4),
    "log Z": lambda a, b: _thermo_per_device(a, jnp.full(3, 0.7), 4, ST.BETA),
    "F": lambda a, b: _thermo_per_device(a, jnp.full(3, 0.7), 4, ST.TEMPERATURE),
}


@pytest.mark.parametrize("name", sorted(_PER_DEVICE))
def test_planted_stream_that_skips_its_sums_collective_is_rejected(name, monkeypatch):
    """A sharded stream whose sums are not completed across the devices (each device's value from
    its own slice's sums, the maxima still combined) is caught by the comparisons of the tests above."""
    sharded, whole = (values[0] for values in _PER_DEVICE[name](*_PLANTED_INPUTS))  # whole: before the plant
    _close(sharded, whole, "right")
    psum = jax.lax.psum
    monkeypatch.setattr(ST.lax, "psum", lambda x, axis: x if axis == "vocab" else psum(x, axis))
    jax.clear_caches()  # retrace the jitted helpers (and the custom_vjp rules) with the plant, and drop it after
    try:
        with pytest.raises(AssertionError):
            _close(_PER_DEVICE[name](*_PLANTED_INPUTS)[0][0], whole, "planted")
    finally:
        monkeypatch.undo()
        jax.clear_caches()


# ============================================================================ four CPU devices

_SCRIPT = textwrap.dedent(r'''
    import re
    import numpy as np
    import jax, jax.numpy as jnp
    jax.config.update("jax_enable_x64", True)
    from jax.sharding import Mesh, NamedSharding, PartitionSpec as P
    from vfe import sharding as SH, streaming as ST
    from vfe.linear_cross_entropy import linear_cross_entropy

    assert jax.device_count() == 4, jax.devices()
    N, V, D = 4, 40, 3            # tokens 4 or 2 per device, classes 10 or 20: all distinct from D
    EPS = 64 * V * np.finfo(np.float64).eps

    def close(a, b, what):
        a, b = np.asarray(a, np.float64), np.asarray(b, np.float64)
        fin = np.isfinite(b)
        assert np.array_equal(a[~fin], b[~fin]), (what, a, b)
        tol = EPS * (1 + np.max(np.abs(b[fin]), initial=0))
        assert np.all(np.abs(a[fin] - b[fin]) <= tol), (what, np.max(np.abs(a[fin] - b[fin])), tol)

    def collectives(compiled_text):
        ops = re.findall(r"= (\S+) (all-gather|all-to-all|all-reduce|reduce-scatter|collective-permute)",
                         compiled_text)
        return [(shape, op) for shape, op in ops]

    def check_program(f, args, what):
        """No gather; no collective carries logits (a token axis and a class axis together). The
        data-parallel sum of the weights' gradient, [D, V/2] over `data`, is allowed."""
        txt = jax.jit(f).lower(*args).compile().as_text()
        found = collectives(txt)
        for shape, op in found:
            assert op == "all-reduce", (what, op, shape)
            dims = [int(d) for d in re.findall(r"\d+", shape.split("{")[0].split("[")[1])] if "[" in shape else []
            classes = {V, V // 2, V // 4} & set(dims)
            tokens = {N, N // 2} & set(dims)
            assert not (classes and tokens), (what, shape)
        return len(found)

    rng = np.random.default_rng(0)
    z = 3 * rng.standard_normal((N, V)); z[0, 5] = -np.inf; z[1, 30] = -np.inf
    y = np.array([3, 30, 17, 39], np.int32)
    zb = z + rng.standard_normal((N, V))  # masked where z is: a finite KL
    q = np.where(np.isinf(z), 0.0, rng.dirichlet(np.ones(V), N))  # no mass on a masked logit: a finite CE
    k = np.array([0.5, 2.0, 1.0, 3.0])  # β or T per token
    g = np.cos(np.arange(N))
    h, w = rng.standard_normal((N, D)), rng.standard_normal((D, V))
    counted = np.array([True, False, False, True])
    junk = np.where(counted, y, np.array([0, -100, V, 0], np.int32))
    meshes = {"model=4": (Mesh(np.array(jax.devices()), ("model",)), None),
              "data=2,model=2": (Mesh(np.array(jax.devices()).reshape(2, 2), ("data", "model")), "data")}
    reduces = 0
    for label, (mesh, batch) in meshes.items():
        zs = jax.device_put(z, NamedSharding(mesh, P(batch, "model")))
        bs = jax.device_put(zb, NamedSharding(mesh, P(batch, "model")))
        qs = jax.device_put(q, NamedSharding(mesh, P(batch, "model")))
        es = jax.device_put(-z, NamedSharding(mesh, P(batch, "model")))
        ks = jax.device_put(k, NamedSharding(mesh, P(batch)))
        ws = jax.device_put(w, NamedSharding(mesh, P(None, "model")))
        kw = dict(mesh=mesh, vocab_axis="model", batch_axis=batch)
        cases = {
            "lse": (lambda z: SH.sharded_logsumexp(z, **kw), ST.logsumexp, (zs,)),
            "entropy": (lambda z: SH.sharded_entropy_from_logits(z, **kw), ST.entropy_from_logits, (zs,)),
            "nll": (lambda z: SH.sharded_cross_entropy_with_integer_labels(z, y, **kw),
                    lambda z: ST.cross_entropy_with_integer_labels(z, y), (zs,)),
            "soft ce": (lambda q, z: SH.sharded_cross_entropy_from_logits(q, z, **kw), ST.cross_entropy_from_logits,
                        (qs, zs)),
            "log Z": (lambda e, k: SH.sharded_log_partition(e, k, **kw), ST.log_partition, (es, ks)),
            "F": (lambda e, k: SH.sharded_helmholtz_free_energy(e, k, **kw), ST.helmholtz_free_energy, (es, ks)),
            "kl": (lambda a, b: SH.sharded_kl_divergence_from_logits(a, b, **kw), ST.kl_divergence_from_logits,
                   (zs, bs)),
            "kl direct": (lambda a, b: SH.sharded_kl_divergence_from_logits(a, b, formula="direct", **kw),
                          lambda a, b: ST.kl_divergence_from_logits(a, b, formula="direct"), (zs, bs)),
            "linear": (lambda h, w: SH.sharded_linear_cross_entropy(h, w, y, block_tokens=2, block_vocab=3, **kw),
                       lambda h, w: linear_cross_entropy(h, w, y), (h, ws)),
            # gradients formed in the forward pass, chunks of 1 (6 // 10 or 6 // 20) and 2 tokens
            "linear mean": (lambda h, w: SH.sharded_linear_cross_entropy(h, w, y, reduction="mean", block_tokens=2,
                                                                         block_vocab=3, **kw),
                            lambda h, w: linear_cross_entropy(h, w, y, reduction="mean"), (h, ws)),
            "linear sum": (lambda h, w: SH.sharded_linear_cross_entropy(h, w, y, reduction="sum", block_tokens=4,
                                                                        block_vocab=10, **kw),
                           lambda h, w: linear_cross_entropy(h, w, y, reduction="sum"), (h, ws)),
            # tokens 1 and 2 not counted, their labels invalid
            "linear masked mean": (lambda h, w: SH.sharded_linear_cross_entropy(h, w, junk, where=counted,
                                                                                reduction="mean", **kw),
                                   lambda h, w: linear_cross_entropy(h[counted], w, y[counted], reduction="mean"),
                                   (h, ws)),
            "linear masked": (lambda h, w: SH.sharded_linear_cross_entropy(h, w, junk, where=counted, **kw),
                              lambda h, w: jnp.where(counted, linear_cross_entropy(h, w, y), 0.0), (h, ws)),
        }
        for name, (sharded, whole, args) in cases.items():
            what = f"{name} on {label}"
            close(jax.jit(sharded)(*args), whole(*[np.asarray(a) for a in args]), what)
            argnums = tuple(range(len(args)))
            gs = jax.jit(jax.grad(lambda *a: jnp.sum(g * sharded(*a)), argnums))(*args)
            gw = jax.grad(lambda *a: jnp.sum(g * whole(*a)), argnums)(*[np.asarray(a) for a in args])
            for a, b in zip(gs, gw):
                close(a, b, "grad " + what)
            reduces += check_program(sharded, args, what)
            reduces += check_program(jax.grad(lambda *a: jnp.sum(g * sharded(*a)), argnums), args, "grad " + what)
        # the gradient of the logits stays sharded like the logits
        grad = jax.jit(jax.grad(lambda z: jnp.sum(SH.sharded_cross_entropy_with_integer_labels(z, y, **kw))))(zs)
        assert grad.sharding.is_equivalent_to(NamedSharding(mesh, P(batch, "model")), 2), grad.sharding
    assert reduces > 0  # the combination really is done by collectives
    print("SHARDING-OK", reduces)
''')


def test_on_four_cpu_devices_values_gradients_and_no_gather():
    """Runs the checks of the module docstring's second level in a fresh interpreter with four
    forced host devices (XLA_FLAGS must be set before jax is imported)."""
    env = dict(os.environ)
    env["XLA_FLAGS"] = (env.get("XLA_FLAGS", "") + " --xla_force_host_platform_device_count=4").strip()
    env["JAX_PLATFORMS"] = "cpu"
    root = Path(__file__).resolve().parent.parent
    env["PYTHONPATH"] = os.pathsep.join(filter(None, [str(root), env.get("PYTHONPATH", "")]))
    out = subprocess.run([sys.executable, "-c", _SCRIPT], env=env, capture_output=True, text=True, timeout=300,
                         check=False)
    assert out.returncode == 0, out.stdout[-3000:] + out.stderr[-6000:]
    assert "SHARDING-OK" in out.stdout


# ============================================================================ argument checks


def test_arguments_are_checked():
    mesh = jax.sharding.Mesh(np.array(jax.devices()[:1]), ("model",))
    z = jnp.zeros((2, 6))
    with pytest.raises(TypeError, match="Mesh"):
        SH.sharded_logsumexp(z, mesh="model", vocab_axis="model")
    with pytest.raises(ValueError, match="not an axis"):
        SH.sharded_logsumexp(z, mesh=mesh, vocab_axis="vocab")
    with pytest.raises(ValueError, match="onepass"):
        SH.sharded_entropy_from_logits(z, mesh=mesh, vocab_axis="model", implementation="onepass")
    with pytest.raises(ValueError, match="same shape"):
        SH.sharded_kl_divergence_from_logits(z, jnp.zeros((2, 3)), mesh=mesh, vocab_axis="model")
    with pytest.raises(ValueError, match="temperature"):
        SH.sharded_helmholtz_free_energy(z, 0.0, mesh=mesh, vocab_axis="model")
    with pytest.raises(ValueError, match="beta"):
        SH.sharded_log_partition(z, -1.0, mesh=mesh, vocab_axis="model")
    with pytest.raises(ValueError, match="same shape"):
        SH.sharded_cross_entropy_from_logits(jnp.zeros((2, 3)), z, mesh=mesh, vocab_axis="model")
    with pytest.raises(ValueError, match="formula"):
        SH.sharded_kl_divergence_from_logits(z, z, mesh=mesh, vocab_axis="model", formula="exact")
    with pytest.raises(TypeError, match="q_logits"):
        SH.sharded_kl_divergence_from_logits(z, jnp.zeros((2, 6), jnp.int32), mesh=mesh, vocab_axis="model")
    with pytest.raises(ValueError, match="labels"):
        SH.sharded_cross_entropy_with_integer_labels(z, jnp.zeros(3, jnp.int32), mesh=mesh, vocab_axis="model")
    with pytest.raises(ValueError, match="reduction"):
        SH.sharded_linear_cross_entropy(z, jnp.zeros((6, 4)), jnp.zeros(2, jnp.int32), mesh=mesh, vocab_axis="model",
                                        reduction="avg")
    with pytest.raises(ValueError, match="where"):
        SH.sharded_linear_cross_entropy(z, jnp.zeros((6, 4)), jnp.zeros(2, jnp.int32), mesh=mesh, vocab_axis="model",
                                        where=jnp.ones(3, bool))
    empty = jnp.zeros((2, 0))  # no classes: refused by name (was JAX's zero-size reduction error)
    for f, args, name in ((SH.sharded_logsumexp, (empty,), "logits"), (SH.sharded_entropy_from_logits, (empty,), "logits"),
                          (SH.sharded_kl_divergence_from_logits, (empty, empty), "p_logits"),
                          (SH.sharded_cross_entropy_with_integer_labels, (empty, jnp.zeros(2, jnp.int32)), "logits"),
                          (SH.sharded_linear_cross_entropy, (z, jnp.zeros((6, 0)), jnp.zeros(2, jnp.int32)), "weight")):
        with pytest.raises(ValueError, match=f"`{name}` has no classes"):
            f(*args, mesh=mesh, vocab_axis="model")


def test_a_one_device_mesh_computes_the_unsharded_values():
    mesh = jax.sharding.Mesh(np.array(jax.devices()[:1]), ("model",))
    z = np.linspace(-2, 2, 12).reshape(2, 6)
    y = np.array([1, 5], np.int32)
    _close(SH.sharded_cross_entropy_with_integer_labels(z, y, mesh=mesh, vocab_axis="model"),
           ST.cross_entropy_with_integer_labels(z, y), "one device")


def test_second_derivatives_by_reverse_over_reverse_equal_the_unsharded_ones():
    """Hessian-vector products (a jax.grad of a jax.grad) of every sharded function under shard_map (a
    one-device mesh: the collectives are there all the same) equal the unsharded functions'. They failed
    ("no differentiation rule for pmax") until the maxima, which are only shifts, were taken without a
    derivative."""
    mesh = jax.sharding.Mesh(np.array(jax.devices()[:1]), ("model",))
    kw = dict(mesh=mesh, vocab_axis="model")
    rng = np.random.default_rng(2)
    z, b, w = (jnp.asarray(rng.standard_normal(s)) for s in ((3, 12), (3, 12), (4, 12)))
    h, y, q = jnp.asarray(rng.standard_normal((3, 4))), jnp.array([1, 5, 11], jnp.int32), jax.nn.softmax(b)
    cases = {
        "lse": (lambda t: SH.sharded_logsumexp(t, **kw), ST.logsumexp, z),
        "entropy": (lambda t: SH.sharded_entropy_from_logits(t, **kw), ST.entropy_from_logits, z),
        "nll": (lambda t: SH.sharded_cross_entropy_with_integer_labels(t, y, **kw),
                lambda t: ST.cross_entropy_with_integer_labels(t, y), z),
        "soft ce": (lambda t: SH.sharded_cross_entropy_from_logits(q, t, **kw),
                    lambda t: ST.cross_entropy_from_logits(q, t), z),
        "kl": (lambda t: SH.sharded_kl_divergence_from_logits(t, b, **kw), lambda t: ST.kl_divergence_from_logits(t, b),
               z),
        "log Z": (lambda t: SH.sharded_log_partition(t, 0.7, **kw), lambda t: ST.log_partition(t, 0.7), z),
        "linear": (lambda t: SH.sharded_linear_cross_entropy(h, t, y, **kw), lambda t: LCE.linear_cross_entropy(h, t, y),
                   w),
        "linear mean": (lambda t: SH.sharded_linear_cross_entropy(h, t, y, reduction="mean", **kw),
                        lambda t: LCE.linear_cross_entropy(h, t, y, reduction="mean"), w),
    }
    for name, (sharded, whole, x) in cases.items():
        v = jnp.asarray(rng.standard_normal(x.shape))
        got, want = (jax.jit(jax.grad(lambda x, f=f: jnp.vdot(jax.grad(lambda t: jnp.sum(f(t)))(x), v)))(x)
                     for f in (sharded, whole))
        _close(got, want, f"Hessian-vector product of {name}")


def test_no_tokens_give_an_empty_linear_loss_and_zero_sum_and_mean():
    mesh = jax.sharding.Mesh(np.array(jax.devices()[:1]), ("model",))
    h, w, y = jnp.zeros((0, 3)), jnp.ones((3, 6)), jnp.zeros((0,), jnp.int32)
    assert SH.sharded_linear_cross_entropy(h, w, y, mesh=mesh, vocab_axis="model").shape == (0,)
    for reduction in ("sum", "mean"):
        assert float(SH.sharded_linear_cross_entropy(h, w, y, mesh=mesh, vocab_axis="model", reduction=reduction)) == 0
